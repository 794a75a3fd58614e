#pragma once
/// @file
/// Error codes and the Result type used by every fallible libsim call.
///
/// Nothing fed by a peer throws: decoders, handshakes and sessions report failures as a `sim::Error`
/// inside a `sim::Result<T>`. Every code is documented here; `docs/protocol.md` maps the wire-visible ones.

#include <cstdint>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace sim {

/// Every error libsim reports. Values are stable: they travel in error frames.
enum class Errc : std::uint16_t {
    ok = 0,
    // --- framing (1xx)
    truncated = 100,            ///< input ended before a complete structure
    frame_too_large = 101,      ///< declared frame length exceeds the configured maximum
    unsupported_version = 102,  ///< frame or record version is not one we speak
    unknown_frame_type = 103,   ///< frame type byte is not defined
    bad_length = 104,           ///< a length field is inconsistent with the data around it
    trailing_bytes = 105,       ///< bytes left over after a complete structure
    bad_field = 106,            ///< a field holds a value outside its allowed set (e.g. reserved bits set)
    // --- crypto (2xx)
    invalid_key = 200,          ///< key of the wrong size or a rejected public key (e.g. low-order point)
    auth_failed = 201,          ///< a MAC or AEAD tag did not verify
    replayed = 202,             ///< a record sequence number was seen before
    out_of_window = 203,        ///< a record is too old or too far ahead for the replay window
    epoch_too_far = 204,        ///< a record's key epoch is more than the allowed number of epochs ahead
    stale_epoch = 205,          ///< a record uses a key epoch that has already been rotated away
    key_expired = 206,          ///< a key was used past its allowed lifetime
    suite_not_allowed = 207,    ///< a cipher suite is unknown or refused by the policy
    no_common_suite = 208,      ///< the peers' suite offers do not intersect
    limit_reached = 209,        ///< a counter (records, nonces) would overflow
    // --- handshake and state (3xx)
    invalid_state = 300,        ///< the call does not fit the object's state (including after a failure)
    handshake_failed = 301,     ///< the handshake could not complete
    server_key_mismatch = 302,  ///< the server's static key differs from the pinned one
    server_key_unknown = 303,   ///< no pinned key and trust on first use was not allowed
    identity_changed = 304,     ///< a peer's identity key differs from the pinned one and was not accepted yet
    // --- accounts (4xx)
    bad_username = 400,         ///< username violates the documented character set or length
    bad_password = 401,         ///< password empty or too long
    auth_rejected = 402,        ///< wrong password or unknown user (deliberately indistinguishable)
    user_exists = 403,          ///< registration of a name that is taken
    user_not_found = 404,       ///< admin operation on a user that does not exist
    throttled = 405,            ///< too many failed attempts; retry later
    registration_closed = 406,  ///< the registration policy forbids creating this account
    bad_hash = 407,             ///< a stored password hash cannot be parsed
    token_invalid = 408,        ///< session token unknown, expired or revoked
    device_unknown = 409,       ///< a login names a device the account does not have active
    // --- storage (5xx)
    storage_error = 500,        ///< the backing store failed (I/O, connection, constraint)
    schema_too_new = 501,       ///< the database was written by a newer libsim
    corrupt_database = 502,     ///< the database file is not a libsim database or is damaged
    store_full = 503,           ///< the server's message store reached its byte cap or its disk's free-space reserve
    // --- server / routing (6xx)
    not_authenticated = 600,    ///< a request that needs a logged-in user came before login
    source_mismatch = 601,      ///< a message's source field is not the authenticated user
    destination_offline = 602,  ///< the destination is not online
    bad_destination = 603,      ///< destination is the server itself or invalid
    no_conversation = 604,      ///< no key has been assigned for this pair yet
    rate_limited = 605,         ///< too many requests from this connection
    queue_full = 606,           ///< the peer does not read; its queue is full
    timeout = 607,              ///< a deadline passed
    closed = 608,               ///< the connection or object is closed
    busy = 609,                 ///< the server is at its connection limit
    out_of_order = 610,         ///< a sequenced message skipped ahead: the one the server expects must come first
    quota_exceeded = 611,       ///< the sender has too much stored for recipients who have not read it yet
    device_pending = 612,       ///< a device being linked asked for something only an active device may do
    devices_changed = 613,      ///< a message does not cover the current devices: fetch the lists, send again
    // --- generic (9xx)
    invalid_argument = 900,     ///< a caller passed a value outside the documented range
    not_implemented = 901,      ///< the feature is not implemented in this build
    io_error = 902,             ///< an operating-system I/O call failed
    internal = 999,             ///< a bug: an invariant did not hold
};

/// The `std::error_category` of `sim::Errc` (name "sim").
const std::error_category& error_category() noexcept;

/// Short, stable English description of a code (never contains user data).
const char* describe(Errc code) noexcept;

/// The code's enumerator name ("queue_full"), stable, for machine-readable output such as metric labels; "unknown"
/// for a value that is not an `Errc`.
const char* errc_name(Errc code) noexcept;

inline std::error_code make_error_code(Errc e) noexcept {
    return {static_cast<int>(e), error_category()};
}

/// An error: a code plus an optional human-readable detail that never contains secrets or user content.
struct Error {
    Errc code = Errc::internal;
    std::string detail;

    Error() = default;
    Error(Errc c) : code(c) {}  // NOLINT(google-explicit-constructor): lets `return Errc::x;` read naturally
    Error(Errc c, std::string d) : code(c), detail(std::move(d)) {}

    /// "description: detail" (or just the description).
    [[nodiscard]] std::string message() const;
    friend bool operator==(const Error& a, Errc b) noexcept { return a.code == b; }
};

/// Either a value of type T or an Error. Must be checked (class is [[nodiscard]]).
template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : m_v(std::in_place_index<0>, std::move(value)) {}  // NOLINT(google-explicit-constructor)
    Result(Error err) : m_v(std::in_place_index<1>, std::move(err)) {}  // NOLINT(google-explicit-constructor)
    Result(Errc code) : m_v(std::in_place_index<1>, Error{code}) {}     // NOLINT(google-explicit-constructor)

    [[nodiscard]] bool has_value() const noexcept { return m_v.index() == 0; }
    explicit operator bool() const noexcept { return has_value(); }

    T& value() & { return std::get<0>(m_v); }
    const T& value() const& { return std::get<0>(m_v); }
    T&& value() && { return std::get<0>(std::move(m_v)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T&& operator*() && { return std::move(*this).value(); }

    [[nodiscard]] const Error& error() const& { return std::get<1>(m_v); }
    [[nodiscard]] Error&& error() && { return std::get<1>(std::move(m_v)); }
    [[nodiscard]] Errc code() const noexcept { return has_value() ? Errc::ok : std::get<1>(m_v).code; }

private:
    std::variant<T, Error> m_v;
};

/// Result of an operation that produces no value.
template <>
class [[nodiscard]] Result<void> {
public:
    Result() = default;
    Result(Error err) : m_err(std::move(err)), m_failed(true) {}  // NOLINT(google-explicit-constructor)
    Result(Errc code) : m_err(code), m_failed(code != Errc::ok) {} // NOLINT(google-explicit-constructor)

    [[nodiscard]] bool has_value() const noexcept { return !m_failed; }
    explicit operator bool() const noexcept { return has_value(); }
    [[nodiscard]] const Error& error() const& { return m_err; }
    [[nodiscard]] Errc code() const noexcept { return m_failed ? m_err.code : Errc::ok; }

private:
    Error m_err;
    bool m_failed = false;
};

using Status = Result<void>;

/// Success value for `Status`.
inline Status ok() { return {}; }

/// The success or the error of a Result, without its value.
template <typename T>
Status status_of(const Result<T>& r) {
    return r ? ok() : Status(r.error());
}

}  // namespace sim

template <>
struct std::is_error_code_enum<sim::Errc> : std::true_type {};

/// Propagate an error from a Result-returning expression: `SIM_TRY(auto x, f());` or `SIM_TRY_STATUS(g());`.
#define SIM_CONCAT_INNER(a, b) a##b
#define SIM_CONCAT(a, b) SIM_CONCAT_INNER(a, b)
#define SIM_TRY_IMPL(tmp, decl, expr)      \
    auto tmp = (expr);                     \
    if (!tmp.has_value()) {                \
        return std::move(tmp).error();     \
    }                                      \
    decl = std::move(tmp).value()
#define SIM_TRY(decl, expr) SIM_TRY_IMPL(SIM_CONCAT(sim_try_, __LINE__), decl, expr)
#define SIM_TRY_STATUS(expr)                          \
    do {                                              \
        if (auto sim_st_ = (expr); !sim_st_) {        \
            return sim_st_.error();                   \
        }                                             \
    } while (false)
