#pragma once
// Argument checks and helpers shared by the storage backends. Private to libsim.

#include <sim/store.h>

#include <cstdint>
#include <string>
#include <utility>

namespace sim::store::detail {

inline Status check_name(std::string_view name) {
    if (name.empty() || name.size() > max_username_length) {
        return Error{Errc::invalid_argument, "username must be 1..64 bytes"};
    }
    return ok();
}

inline Status check_hash(std::string_view hash) {
    if (hash.empty() || hash.size() > max_hash_length) {
        return Error{Errc::invalid_argument, "password hash must be 1..255 bytes"};
    }
    return ok();
}

/// Devices are numbered from 1 (sim::first_device): 0 is no device, so it names no mailbox.
inline Status check_device(DeviceId device) {
    if (device == 0) {
        return Error{Errc::invalid_argument, "device must be 1 or more"};
    }
    return ok();
}

/// A device number read back from a database: anything outside 1..2^32-1 was not written by libsim.
inline Result<DeviceId> stored_device(std::int64_t value) {
    if (value < 1 || value > static_cast<std::int64_t>(UINT32_MAX)) {
        return Error{Errc::corrupt_database, "stored device number is out of range"};
    }
    return static_cast<DeviceId>(value);
}

inline Status check_token_hash(ByteView token_hash) {
    if (token_hash.size() != token_hash_size) {
        return Error{Errc::invalid_argument, "token hash must be 32 bytes"};
    }
    return ok();
}

/// The pair in stored order (smaller name first). Errc::invalid_argument for bad names or a user with itself.
inline Result<std::pair<std::string, std::string>> ordered_pair(std::string_view user1, std::string_view user2) {
    SIM_TRY_STATUS(check_name(user1));
    SIM_TRY_STATUS(check_name(user2));
    if (user1 == user2) {
        return Error{Errc::invalid_argument, "a conversation needs two different users"};
    }
    if (user2 < user1) {
        std::swap(user1, user2);
    }
    return std::pair{std::string(user1), std::string(user2)};
}

inline Status check_sealed(ByteView sealed) {
    if (sealed.empty() || sealed.size() > max_sealed_key_size) {
        return Error{Errc::invalid_argument, "sealed conversation key must be 1..512 bytes"};
    }
    return ok();
}

/// Epochs are stored as signed 64-bit SQL integers.
inline Status check_epoch(std::uint64_t epoch) {
    if (epoch > static_cast<std::uint64_t>(INT64_MAX)) {
        return Error{Errc::invalid_argument, "epoch must be below 2^63"};
    }
    return ok();
}

/// Key sizes of a prekey upload (the wire decoder fixes them; a direct caller may not).
inline Status check_upload(const PrekeyUpload& u) {
    if (u.identity_key.size() != e2e::key_size || u.signed_prekey.size() != e2e::key_size ||
        u.signed_prekey_signature.size() != e2e::signature_size) {
        return Error{Errc::invalid_argument, "prekey upload: wrong key or signature size"};
    }
    if (u.one_time_prekeys.size() > max_prekeys_stored) {
        return Error{Errc::limit_reached, "more than 1000 one-time prekeys"};
    }
    for (const auto& [id, key] : u.one_time_prekeys) {
        if (key.size() != e2e::key_size || id == e2e::no_one_time_prekey) {
            return Error{Errc::invalid_argument, "prekey upload: wrong one-time prekey"};
        }
    }
    return ok();
}

/// The arguments of MessageStore::apply: names, devices, and envelopes of 1..max_stored_envelope_size bytes.
inline Status check_changes(const MessageStore::Changes& changes) {
    for (const auto& m : changes.appends) {
        SIM_TRY_STATUS(check_name(m.recipient));
        SIM_TRY_STATUS(check_device(m.recipient_device));
        SIM_TRY_STATUS(check_name(m.sender));
        SIM_TRY_STATUS(check_device(m.sender_device));
        if (m.envelope.empty() || m.envelope.size() > max_stored_envelope_size) {
            return Error{Errc::invalid_argument, "stored message must be 1..65536 bytes"};
        }
    }
    for (const auto& r : changes.removals) {
        SIM_TRY_STATUS(check_name(r.recipient));
        SIM_TRY_STATUS(check_device(r.recipient_device));
        SIM_TRY_STATUS(check_name(r.sender));
    }
    return ok();
}

inline Error identity_differs() {
    return Error{Errc::bad_field, "identity key differs from the stored one (upload with replace)"};
}
inline Error too_many_prekeys() {
    return Error{Errc::limit_reached, "more than 1000 one-time prekeys would be stored"};
}

inline Error no_user() {
    return Error{Errc::user_not_found, "no such account"};
}
inline Error stale() {
    return Error{Errc::stale_epoch, "a key with an equal or higher epoch is stored"};
}

/// The newest last-failure time whose failures are forgotten at `now` (saturating instead of overflowing).
inline std::int64_t forget_threshold(TimePoint now, Duration forget_after) {
    const std::int64_t n = now.time_since_epoch().count();
    const std::int64_t f = forget_after.count();
    if (f < 0) {
        return n > INT64_MAX + f ? INT64_MAX : n - f;
    }
    return n < INT64_MIN + f ? INT64_MIN : n - f;
}

/// TimePoint <-> integer nanoseconds, WallTime <-> integer milliseconds (the SQL column values).
inline std::int64_t to_ns(TimePoint t) {
    return t.time_since_epoch().count();
}
inline TimePoint from_ns(std::int64_t v) {
    return TimePoint{Duration{v}};
}
inline std::int64_t to_ms(WallTime t) {
    return t.time_since_epoch().count();
}
inline WallTime from_ms(std::int64_t v) {
    return WallTime{std::chrono::milliseconds{v}};
}

/// How long the session-end log keeps an entry (entries older than this are dropped when one is written).
inline constexpr std::int64_t session_end_retention_ms = 24 * 60 * 60 * 1000;
/// The wall clock now, as a SQL column value.
inline std::int64_t now_ms() {
    return to_ms(std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now()));
}

}  // namespace sim::store::detail
