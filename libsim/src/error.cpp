#include <sim/error.h>

namespace sim {

const char* errc_name(Errc code) noexcept {
    switch (code) {
        case Errc::ok: return "ok";
        case Errc::truncated: return "truncated";
        case Errc::frame_too_large: return "frame_too_large";
        case Errc::unsupported_version: return "unsupported_version";
        case Errc::unknown_frame_type: return "unknown_frame_type";
        case Errc::bad_length: return "bad_length";
        case Errc::trailing_bytes: return "trailing_bytes";
        case Errc::bad_field: return "bad_field";
        case Errc::invalid_key: return "invalid_key";
        case Errc::auth_failed: return "auth_failed";
        case Errc::replayed: return "replayed";
        case Errc::out_of_window: return "out_of_window";
        case Errc::epoch_too_far: return "epoch_too_far";
        case Errc::stale_epoch: return "stale_epoch";
        case Errc::key_expired: return "key_expired";
        case Errc::suite_not_allowed: return "suite_not_allowed";
        case Errc::no_common_suite: return "no_common_suite";
        case Errc::limit_reached: return "limit_reached";
        case Errc::invalid_state: return "invalid_state";
        case Errc::handshake_failed: return "handshake_failed";
        case Errc::server_key_mismatch: return "server_key_mismatch";
        case Errc::server_key_unknown: return "server_key_unknown";
        case Errc::identity_changed: return "identity_changed";
        case Errc::bad_username: return "bad_username";
        case Errc::bad_password: return "bad_password";
        case Errc::auth_rejected: return "auth_rejected";
        case Errc::user_exists: return "user_exists";
        case Errc::user_not_found: return "user_not_found";
        case Errc::throttled: return "throttled";
        case Errc::registration_closed: return "registration_closed";
        case Errc::bad_hash: return "bad_hash";
        case Errc::token_invalid: return "token_invalid";
        case Errc::device_unknown: return "device_unknown";
        case Errc::storage_error: return "storage_error";
        case Errc::schema_too_new: return "schema_too_new";
        case Errc::corrupt_database: return "corrupt_database";
        case Errc::store_full: return "store_full";
        case Errc::not_authenticated: return "not_authenticated";
        case Errc::source_mismatch: return "source_mismatch";
        case Errc::destination_offline: return "destination_offline";
        case Errc::bad_destination: return "bad_destination";
        case Errc::no_conversation: return "no_conversation";
        case Errc::rate_limited: return "rate_limited";
        case Errc::queue_full: return "queue_full";
        case Errc::timeout: return "timeout";
        case Errc::closed: return "closed";
        case Errc::busy: return "busy";
        case Errc::out_of_order: return "out_of_order";
        case Errc::quota_exceeded: return "quota_exceeded";
        case Errc::device_pending: return "device_pending";
        case Errc::devices_changed: return "devices_changed";
        case Errc::invalid_argument: return "invalid_argument";
        case Errc::not_implemented: return "not_implemented";
        case Errc::io_error: return "io_error";
        case Errc::internal: return "internal";
    }
    return "unknown";
}

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
        case Errc::device_unknown: return "this device is not an active device of the account";
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
        case Errc::device_pending: return "this device is waiting to be linked";
        case Errc::devices_changed: return "the recipient's devices changed";
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
