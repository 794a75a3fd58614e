#pragma once
/// @file
/// Accounts: username rules, password hashing, the login flow with registration policy and throttling,
/// session tokens, and encrypted conversation keys. See `docs/accounts.md` for the design and its trade-offs.
///
/// The authentication logic knows neither the database (`sim/store.h` interfaces) nor the hash algorithm
/// (`PasswordHasher`). Hashing and verification are slow on purpose; every call here runs synchronously on the
/// caller's thread, so a server calls them from worker threads, never from its I/O threads.
///
/// Thread safety: `Authenticator`, `SessionTokens`, `ConversationKeyVault` and the hashers from
/// `make_password_hasher` are safe to use from several threads at once, provided the stores passed in are (all
/// libsim backends are) and the `Clock` is (`SteadyClock` is; `ManualClock` is for single-threaded tests). The
/// `Rng` passed in is only ever used under an internal lock.
///
/// Nothing here logs. Error details never contain passwords, hashes, tokens, keys or usernames.

#include <sim/bytes.h>
#include <sim/clock.h>
#include <sim/error.h>
#include <sim/rng.h>
#include <sim/store.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace sim::auth {

// ---------------------------------------------------------------- usernames and passwords

inline constexpr std::size_t min_username_length = 3;     ///< bytes
inline constexpr std::size_t max_username_length = 32;    ///< bytes
inline constexpr std::size_t max_password_length = 1024;  ///< bytes

/// The canonical (stored) form of a username, or Errc::bad_username.
///
/// Rules: 3 to 32 characters from ASCII letters, digits, '.', '_' and '-'; the first and last characters are a
/// letter or a digit. Comparison is case-insensitive: the canonical form is lower case. Names reserved by the
/// protocol ("server", the seed's name for the server itself) are refused. Nothing else (no Unicode, so no
/// look-alike names) is accepted. The detail says which rule failed, never the name.
[[nodiscard]] Result<std::string> canonical_username(std::string_view name);

/// Errc::bad_password when a password is empty, longer than `max_password_length` bytes, or contains a NUL byte
/// (C bcrypt implementations stop at NUL; refusing it keeps every stored hash portable). Any other byte is allowed
/// and used as given (no Unicode normalisation).
[[nodiscard]] Status check_password(std::string_view password);

// ---------------------------------------------------------------- password hashing

/// Hashes passwords into self-describing strings and checks passwords against them.
class PasswordHasher {
public:
    virtual ~PasswordHasher() = default;

    /// A new hash of `password` under the hasher's current policy, salted from `rng`. Errc::bad_password for a
    /// password `check_password` refuses.
    [[nodiscard]] virtual Result<std::string> hash(std::string_view password, Rng& rng) const = 0;

    /// Whether `password` matches `stored`. Errc::bad_hash when `stored` is not a supported, well-formed hash
    /// string or asks for more work than the hasher's limits allow.
    [[nodiscard]] virtual Result<bool> verify(std::string_view password, std::string_view stored) const = 0;

    /// Whether a stored hash (one that verified) should be replaced: another algorithm or construction, or other
    /// parameters than the current policy's.
    [[nodiscard]] virtual bool needs_rehash(std::string_view stored) const = 0;
};

/// Algorithm for new hashes.
enum class HashAlgorithm : std::uint8_t {
    /// bcrypt over a pre-hash, passlib's "bcrypt_sha256" v2 construction:
    /// `$bcrypt-sha256$v=2,t=2b,r=COST$SALT22$DIGEST31`, where bcrypt's input is
    /// base64(HMAC-SHA256(key = SALT22 as ASCII, password)). Every password byte counts (no 72-byte truncation).
    bcrypt,
    /// Argon2id (RFC 9106) in the PHC string format `$argon2id$v=19$m=KIB,t=T,p=P$SALT$HASH`.
    argon2id,
};

/// bcrypt settings.
struct BcryptParams {
    unsigned cost = 12;  ///< log2 of the rounds, 4..18 (Botan's limit); 12 as in the seed
};

/// Argon2id settings. Defaults: OWASP Password Storage Cheat Sheet (19 MiB, 2 passes, 1 lane).
struct Argon2Params {
    std::uint32_t memory_kib = 19456;  ///< 8 * parallelism .. 4 GiB
    std::uint32_t iterations = 2;      ///< 1 .. 1000
    std::uint32_t parallelism = 1;     ///< 1 .. 64 (computed on one thread)
    std::uint32_t salt_size = 16;      ///< bytes, 8 .. 64
    std::uint32_t output_size = 32;    ///< bytes, 16 .. 64
};

/// Work a stored hash may ask for before `verify` refuses it as Errc::bad_hash (a planted hash must not be able
/// to stall a server).
struct VerifyLimits {
    unsigned max_bcrypt_cost = 18;
    std::uint32_t max_argon2_memory_kib = 1U << 20U;  ///< 1 GiB
    std::uint32_t max_argon2_iterations = 100;
    std::uint32_t max_argon2_parallelism = 64;
};

/// What `make_password_hasher` builds: new hashes use `algorithm` with its parameters; `verify` accepts every
/// supported format, whatever the algorithm: raw bcrypt `$2a$`/`$2b$`/`$2y$` (the seed's hashes; bcrypt reads at
/// most 72 bytes of the password there), `$bcrypt-sha256$` v2 and `$argon2id$`.
struct HashPolicy {
    HashAlgorithm algorithm = HashAlgorithm::bcrypt;
    BcryptParams bcrypt;
    Argon2Params argon2;
    VerifyLimits limits;
};

/// The standard hasher for a policy. Thread-safe (it keeps no mutable state). Errc::invalid_argument for
/// parameters outside the documented ranges.
[[nodiscard]] Result<std::unique_ptr<PasswordHasher>> make_password_hasher(const HashPolicy& policy);

// ---------------------------------------------------------------- throttling

/// Growing delays after failed logins, for one kind of key (an account, an account from one source address, or a
/// source address).
///
/// After `free_failures` failures, each further attempt must wait `base_delay * 2^(failures - free_failures)`,
/// capped at `max_delay`, after the previous failure. A quiet period of `forget_after` clears a count; a success
/// clears only the count of the (account, source address) it came from. The delay is returned to the caller
/// (Errc::throttled + retry-after); nothing here sleeps.
struct ThrottleLimits {
    std::uint32_t free_failures = 5;
    Duration base_delay = std::chrono::seconds(1);
    Duration max_delay = std::chrono::seconds(60);
    Duration forget_after = std::chrono::hours(1);
};

/// Throttling of failed logins (docs/security.md, "Login throttling").
///
/// Three counts, each with its own delays: per (account, source address) and per source address, both with the
/// limits below; and per account across the addresses it has never logged in from (`account`). An address
/// becomes *known* for an account when a login from it succeeds, and stays known for `known_address_ttl`; a login
/// from a known address ignores the account-wide count, so a guesser elsewhere cannot lock the owner out. A
/// success clears only its own (account, address) count: the guesser's budget is not reset.
///
/// Validated so that the account-wide count lets no more than `max_failures_per_hour` failures in any hour (OWASP
/// ASVS 4.0 2.2.1 asks for at most 100); a real user is never kept out longer than `account.max_delay` after the
/// last failure.
struct ThrottlePolicy {
    /// The account-wide count and each (account, address) count.
    ThrottleLimits account{};
    ThrottleLimits address{20, std::chrono::seconds(1), std::chrono::seconds(60), std::chrono::hours(1)};
    std::uint32_t max_failures_per_hour = 100;
    /// How long an address stays known for an account after a successful login from it.
    Duration known_address_ttl = std::chrono::hours(24 * 30);
    /// Most known addresses kept in memory (per node); the oldest are evicted. The failure counts themselves are
    /// kept in the credential store, shared by every node on it.
    std::size_t max_tracked = 100000;
};

/// The most failures one key can accumulate within any one hour under `limits`, attacking as fast as allowed.
[[nodiscard]] std::uint64_t worst_case_failures_per_hour(const ThrottleLimits& limits);

// ---------------------------------------------------------------- the authenticator

/// Who may create accounts.
enum class RegistrationPolicy : std::uint8_t {
    /// The seed's behaviour: a login with an unknown name creates the account. Reveals which names exist and
    /// turns a mistyped name into a new account.
    open,
    /// Accounts are created by a separate `register_user` request; a login with an unknown name fails exactly
    /// like a wrong password.
    explicit_request,
    /// Only `admin_create_user` creates accounts.
    closed,
};

/// Settings of an `Authenticator`.
struct AuthConfig {
    RegistrationPolicy registration = RegistrationPolicy::open;
    ThrottlePolicy throttle{};
    /// Wall-clock time for the failure counts kept in the credential store: they are shared by every node on the
    /// same database and outlive a restart, so they cannot be monotonic. Empty: the system clock. Must be safe to
    /// call from several threads.
    std::function<store::WallTime()> wall_clock;
};

/// A successful login or registration.
struct LoginOutcome {
    std::string username;   ///< canonical name
    bool created = false;   ///< the account was created by this call
    bool rehashed = false;  ///< the stored hash was upgraded to the current policy
};

/// What `login` and friends return: the outcome or the error, and with Errc::throttled how long to wait.
struct [[nodiscard]] LoginResult {
    Result<LoginOutcome> outcome{Errc::internal};
    Duration retry_after{0};  ///< > 0 only with Errc::throttled

    [[nodiscard]] bool ok() const noexcept { return outcome.has_value(); }
    [[nodiscard]] Errc code() const noexcept { return outcome.code(); }
};

/// The login flow over a credential store and a password hasher.
///
/// Errors of `login`: Errc::bad_username / Errc::bad_password for input that breaks the rules (no database work
/// is done); Errc::invalid_argument for an empty or oversized `source`; Errc::throttled with `retry_after`;
/// Errc::auth_rejected for a wrong password and for an unknown name alike (same detail, and the same work: the
/// password is checked against a dummy hash); Errc::storage_error / Errc::bad_hash from below.
class Authenticator {
public:
    /// An authenticator over `store`, `hasher`, `rng` and `clock` (all must outlive it). Computes the dummy hash
    /// once (one hash's worth of time). Errc::invalid_argument when the throttle policy allows more than
    /// `max_failures_per_hour` failures per hour or is otherwise out of range.
    [[nodiscard]] static Result<std::unique_ptr<Authenticator>> create(store::CredentialStore& store,
                                                                       const PasswordHasher& hasher, Rng& rng,
                                                                       const Clock& clock, AuthConfig config = {});
    ~Authenticator();
    Authenticator(const Authenticator&) = delete;
    Authenticator& operator=(const Authenticator&) = delete;

    /// Log in from `source` (the peer's address as the caller wants it grouped, e.g. an IPv4 address or an IPv6
    /// /64 prefix; 1..255 bytes). Under RegistrationPolicy::open an unknown name creates the account. A login
    /// whose stored hash no longer matches the hasher's policy re-hashes the password.
    LoginResult login(std::string_view username, std::string_view password, std::string_view source);

    /// Create an account on the user's request (RegistrationPolicy::open or explicit_request). Errc::user_exists,
    /// Errc::registration_closed, plus the input errors of `login`.
    LoginResult register_user(std::string_view username, std::string_view password, std::string_view source);

    /// Change a password, proving the old one (throttled and rejected like `login`).
    LoginResult change_password(std::string_view username, std::string_view old_password, std::string_view new_password,
                                std::string_view source);

    /// Create an account whatever the registration policy. Errc::user_exists, input and storage errors.
    [[nodiscard]] Status admin_create_user(std::string_view username, std::string_view password);

    /// Set a password without knowing the old one; also clears the failure count. Errc::user_not_found.
    [[nodiscard]] Status admin_set_password(std::string_view username, std::string_view password);

    /// Delete an account (its tokens and conversation keys go with it). Errc::user_not_found.
    [[nodiscard]] Status delete_user(std::string_view username);

    /// All canonical usernames, sorted.
    [[nodiscard]] Result<std::vector<std::string>> list_users();

    /// The configuration in force.
    [[nodiscard]] const AuthConfig& config() const noexcept;

private:
    struct Impl;
    explicit Authenticator(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

// ---------------------------------------------------------------- session tokens

/// Size of a session token in bytes (256 random bits).
inline constexpr std::size_t session_token_size = 32;

/// A freshly issued session token. The token exists only here: the store keeps its SHA-256.
struct IssuedToken {
    SecureBytes token;  ///< `session_token_size` random bytes; hand to the client, never log
    store::WallTime expires{};
};

/// Issues and checks session tokens over a `SessionTokenStore`. Thread-safe.
class SessionTokens {
public:
    /// Both must outlive this object. `rng` is used under an internal lock.
    SessionTokens(store::SessionTokenStore& store, Rng& rng);
    ~SessionTokens();
    SessionTokens(const SessionTokens&) = delete;
    SessionTokens& operator=(const SessionTokens&) = delete;

    /// A new token for `username`'s `device` (a token logs in that device only), valid until `now + ttl`.
    /// Errc::invalid_argument for ttl <= 0 or device 0; Errc::user_not_found (no such account, or the device is
    /// not active); Errc::storage_error.
    [[nodiscard]] Result<IssuedToken> issue(std::string_view username, DeviceId device, store::WallTime now,
                                            Duration ttl);

    /// The token's owner and device (and expiry) when it is known, unrevoked and `now` is before its expiry; an
    /// expired token is deleted. Errc::token_invalid otherwise (also for a token of the wrong size);
    /// Errc::storage_error.
    [[nodiscard]] Result<store::SessionRecord> validate(ByteView token, store::WallTime now);

    /// Revoke one token; returns whether it existed. Errc::storage_error.
    [[nodiscard]] Result<bool> revoke(ByteView token);

    /// Revoke every token of a user; returns how many. Errc::storage_error.
    [[nodiscard]] Result<std::size_t> revoke_all(std::string_view username);

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

/// Follows the store's session-end log (store::SessionEnd) for a running server, so that `simd user revoke`,
/// `user passwd` and `user delete`, run from another process or another node, end the user's live sessions: the
/// host calls poll() about once a second and closes the connections the entries it returns name (a user's every
/// device, or one device that was removed: ServerCore::end_sessions). start() skips what was logged before. Each entry
/// is returned once; entries that commit out of seq order (MariaDB with several writers) are still seen, as each poll
/// reads again the last `margin` seqs. Not thread-safe (one poller).
class SessionEndFollower {
public:
    static constexpr std::uint64_t margin = 64;

    explicit SessionEndFollower(store::SessionTokenStore& store) : m_store(store) {}

    /// Note where the log is now. Errc::storage_error.
    [[nodiscard]] Status start();
    /// The entries (user and device, 0: every device) logged since the last poll (or since start), in log order,
    /// each once. Errc::storage_error.
    [[nodiscard]] Result<std::vector<store::SessionEnd>> poll();

private:
    store::SessionTokenStore& m_store;
    std::uint64_t m_start = 0;
    std::uint64_t m_high = 0;
    std::set<std::uint64_t> m_seen;  // handled seqs within the margin below m_high
};

// ---------------------------------------------------------------- conversation keys

/// Size of the server master key that seals conversation keys.
inline constexpr std::size_t master_key_size = 32;
/// Longest conversation key the vault accepts.
inline constexpr std::size_t max_conversation_key_size = 64;

/// A conversation key in the clear.
struct ConversationKey {
    std::string user_a;  ///< canonical, the smaller name
    std::string user_b;  ///< canonical, the larger name
    SecureBytes key;     ///< never log
    std::uint64_t epoch = 0;
    store::WallTime created{};
};

/// Seals conversation keys at rest under a server master key, over a `ConversationKeyStore`.
///
/// Each record gets its own key: HKDF-SHA256(salt = 32 random bytes, ikm = master key, info =
/// "libsim conversation key v1"); the key is sealed with ChaCha20-Poly1305 (nonce zero: the key is used once),
/// with the pair, epoch and creation time as associated data, so a row moved to another pair or edited does not
/// open. Blob: version byte 1 || salt || ciphertext || tag. Thread-safe.
class ConversationKeyVault {
public:
    /// A vault over `store` and `rng` (both must outlive it). Errc::invalid_key unless `master_key` is
    /// `master_key_size` bytes.
    [[nodiscard]] static Result<std::unique_ptr<ConversationKeyVault>> create(store::ConversationKeyStore& store,
                                                                              ByteView master_key, Rng& rng);
    ~ConversationKeyVault();
    ConversationKeyVault(const ConversationKeyVault&) = delete;
    ConversationKeyVault& operator=(const ConversationKeyVault&) = delete;

    /// Seal and store the key of a pair (names in either order; canonicalised). Errc::bad_username,
    /// Errc::invalid_argument (same user twice, key empty or longer than `max_conversation_key_size`), and the
    /// store's errors (Errc::stale_epoch, Errc::user_not_found, Errc::storage_error).
    [[nodiscard]] Status put(std::string_view user1, std::string_view user2, ByteView key, std::uint64_t epoch,
                             store::WallTime created);

    /// The pair's key, or empty when none is stored. Errc::auth_failed when the stored blob does not open under
    /// this master key (tampered, moved, or sealed under another key); Errc::bad_username; Errc::storage_error.
    [[nodiscard]] Result<std::optional<ConversationKey>> get(std::string_view user1, std::string_view user2);

    /// End the conversation: delete its key. Returns whether there was one.
    [[nodiscard]] Result<bool> remove(std::string_view user1, std::string_view user2);

private:
    struct Impl;
    explicit ConversationKeyVault(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace sim::auth
