#pragma once
// Argument checks and helpers shared by the storage backends. Private to libsim.

#include <sim/store.h>

#include <algorithm>
#include <chrono>
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

/// A user's device: a valid name and a device other than 0.
inline Status check_user_device(std::string_view username, DeviceId device) {
    SIM_TRY_STATUS(check_name(username));
    return check_device(device);
}

/// A device name of at most max_device_name_length bytes (empty is allowed).
inline Status check_device_name(std::string_view name) {
    if (name.size() > max_device_name_length) {
        return Error{Errc::invalid_argument, "device name must be at most 64 bytes"};
    }
    return ok();
}

inline Status check_device_key(ByteView key) {
    if (key.size() != device_key_size) {
        return Error{Errc::invalid_argument, "device key must be 32 bytes"};
    }
    return ok();
}

/// The arguments of DeviceStore::add_device other than the user.
inline Status check_new_device(std::string_view name, std::size_t max_devices) {
    SIM_TRY_STATUS(check_device_name(name));
    if (max_devices == 0) {
        return Error{Errc::invalid_argument, "max_devices must be 1 or more"};
    }
    return ok();
}

/// A signed device list: 1..max_signed_device_list_size bytes, version 1..2^63-1 (a signed SQL integer).
inline Status check_device_list(const StoredDeviceList& list) {
    if (list.signed_list.empty() || list.signed_list.size() > max_signed_device_list_size) {
        return Error{Errc::invalid_argument, "signed device list must be 1..8192 bytes"};
    }
    if (list.version == 0 || list.version > static_cast<std::uint64_t>(INT64_MAX)) {
        return Error{Errc::invalid_argument, "device list version must be 1..2^63-1"};
    }
    return ok();
}

/// A device state read back from a database.
inline Result<DeviceState> stored_state(std::int64_t value) {
    if (value < static_cast<std::int64_t>(DeviceState::pending) ||
        value > static_cast<std::int64_t>(DeviceState::removed)) {
        return Error{Errc::corrupt_database, "stored device state is out of range"};
    }
    return static_cast<DeviceState>(value);
}

/// The SQL column value of a device state.
inline std::int64_t state_value(DeviceState state) {
    return static_cast<std::int64_t>(state);
}

/// The id add_device gives after `last` (the highest ever used), or Errc::limit_reached when ids are used up.
inline Result<DeviceId> next_device_id(std::int64_t last) {
    if (last < 0 || last >= static_cast<std::int64_t>(UINT32_MAX)) {
        return Error{Errc::limit_reached, "the account has used every device id"};
    }
    return static_cast<DeviceId>(last + 1);
}

inline Error no_device() {
    return Error{Errc::user_not_found, "no such device"};
}

/// What activate_device does to a device in `state` holding `stored_key`, given `key`: Errc::user_not_found
/// (removed), Errc::bad_field (active with another key), else ok (activate, set the key, or nothing to do).
inline Status check_activation(DeviceState state, ByteView stored_key, ByteView key) {
    if (state == DeviceState::removed) {
        return no_device();
    }
    if (state == DeviceState::active && !stored_key.empty() &&
        !std::equal(stored_key.begin(), stored_key.end(), key.begin(), key.end())) {
        return Error{Errc::bad_field, "the device has another key"};
    }
    return ok();
}

inline Error too_many_devices() {
    return Error{Errc::limit_reached, "the account has its maximum number of devices"};
}
inline Error stale_device_list() {
    return Error{Errc::stale_epoch, "a device list with an equal or higher version is stored"};
}

/// The device of a SessionEnd read back from a database: 0 (every device) or a device number.
inline Result<DeviceId> stored_device_or_all(std::int64_t value) {
    return value == 0 ? Result<DeviceId>{DeviceId{0}} : stored_device(value);
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

/// The newest last-failure time (milliseconds since the epoch) whose failures are forgotten at `now`: failures at
/// least `forget_after` old (rounded up to whole milliseconds), saturating instead of overflowing.
inline std::int64_t forget_threshold(WallTime now, Duration forget_after) {
    const std::int64_t n = now.time_since_epoch().count();
    const std::int64_t f = std::chrono::ceil<std::chrono::milliseconds>(forget_after).count();
    if (f < 0) {
        return n > INT64_MAX + f ? INT64_MAX : n - f;
    }
    return n < INT64_MIN + f ? INT64_MIN : n - f;
}

inline Status check_throttle_key(std::string_view key) {
    if (key.empty() || key.size() > max_throttle_key_length) {
        return Error{Errc::invalid_argument, "throttle key must be 1..400 bytes"};
    }
    return ok();
}

/// WallTime <-> integer milliseconds (the SQL column values).
inline std::int64_t to_ms(WallTime t) {
    return t.time_since_epoch().count();
}
inline WallTime from_ms(std::int64_t v) {
    return WallTime{std::chrono::milliseconds{v}};
}

/// A failure count read back from a database.
inline FailureState stored_failures(std::int64_t count, std::int64_t last_failure_ms) {
    return FailureState{static_cast<std::uint32_t>(std::clamp<std::int64_t>(count, 0, UINT32_MAX)),
                        from_ms(last_failure_ms)};
}

/// How long the session-end log keeps an entry (entries older than this are dropped when one is written).
inline constexpr std::int64_t session_end_retention_ms = 24 * 60 * 60 * 1000;
/// The wall clock now, as a SQL column value.
inline std::int64_t now_ms() {
    return to_ms(std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now()));
}

/// A device record from its stored column values (times as Unix milliseconds).
inline Result<DeviceRecord> device_from_columns(std::string_view username, std::int64_t device, std::int64_t state,
                                                std::string name, Bytes key, std::int64_t created_ms,
                                                std::int64_t linked_ms, std::int64_t last_seen_ms) {
    DeviceRecord d;
    d.username = std::string(username);
    SIM_TRY(d.device, stored_device(device));
    SIM_TRY(d.state, stored_state(state));
    d.name = std::move(name);
    d.device_key = std::move(key);
    d.created = from_ms(created_ms);
    d.linked = from_ms(linked_ms);
    d.last_seen = from_ms(last_seen_ms);
    return d;
}

}  // namespace sim::store::detail
