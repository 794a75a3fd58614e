#include <sim/error.h>

namespace sim {

const char* describe(Errc code) noexcept {
    switch (code) {
        case Errc::ok: return "success";
        case Errc::truncated: return "input truncated";
        case Errc::frame_too_large: return "frame exceeds the maximum size";
        case Errc::unsupported_version: return "unsupported protocol version";
        case Errc::unknown_frame_type: return "unknown frame type";
        case Errc::bad_length: return "inconsistent length field";
        case Errc::trailing_bytes: return "trailing bytes after structure";
        case Errc::bad_field: return "field value not allowed";
        case Errc::invalid_key: return "invalid key";
        case Errc::auth_failed: return "authentication failed (bad MAC or tag)";
        case Errc::replayed: return "record replayed";
        case Errc::out_of_window: return "record outside the replay window";
        case Errc::epoch_too_far: return "key epoch too far ahead";
        case Errc::stale_epoch: return "key epoch already rotated away";
        case Errc::key_expired: return "key used past its lifetime";
        case Errc::suite_not_allowed: return "cipher suite not allowed";
        case Errc::no_common_suite: return "no cipher suite in common";
        case Errc::limit_reached: return "counter limit reached";
        case Errc::invalid_state: return "call not valid in the current state";
        case Errc::handshake_failed: return "handshake failed";
        case Errc::server_key_mismatch: return "server key does not match the pinned key";
        case Errc::server_key_unknown: return "server key is not known and trust on first use is off";
        case Errc::identity_changed: return "the peer's identity key changed and was not accepted";
        case Errc::bad_username: return "username not allowed";
        case Errc::bad_password: return "password not allowed";
        case Errc::auth_rejected: return "wrong username or password";
        case Errc::user_exists: return "user already exists";
        case Errc::user_not_found: return "user not found";
        case Errc::throttled: return "too many failed attempts, retry later";
        case Errc::registration_closed: return "registration is closed";
        case Errc::bad_hash: return "stored password hash is malformed";
        case Errc::token_invalid: return "session token invalid or expired";
        case Errc::storage_error: return "storage error";
        case Errc::schema_too_new: return "database schema is newer than this libsim";
        case Errc::corrupt_database: return "database is corrupt or not a libsim database";
        case Errc::store_full: return "server message store full";
        case Errc::not_authenticated: return "not authenticated";
        case Errc::source_mismatch: return "source is not the authenticated user";
        case Errc::destination_offline: return "destination is offline";
        case Errc::bad_destination: return "invalid destination";
        case Errc::no_conversation: return "no conversation key assigned";
        case Errc::rate_limited: return "rate limited";
        case Errc::queue_full: return "outgoing queue full";
        case Errc::timeout: return "timed out";
        case Errc::closed: return "closed";
        case Errc::busy: return "server busy";
        case Errc::out_of_order: return "message out of order";
        case Errc::quota_exceeded: return "stored-message quota exceeded";
        case Errc::invalid_argument: return "invalid argument";
        case Errc::not_implemented: return "not implemented";
        case Errc::io_error: return "I/O error";
        case Errc::internal: return "internal error";
    }
    return "unknown error";
}

namespace {
class Category final : public std::error_category {
public:
    [[nodiscard]] const char* name() const noexcept override { return "sim"; }
    [[nodiscard]] std::string message(int ev) const override { return describe(static_cast<Errc>(ev)); }
};
}  // namespace

const std::error_category& error_category() noexcept {
    static const Category category;
    return category;
}

std::string Error::message() const {
    std::string m = describe(code);
    if (!detail.empty()) {
        m += ": ";
        m += detail;
    }
    return m;
}

}  // namespace sim
