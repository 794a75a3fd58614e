#pragma once
// Private: the server's check of a device list a client uploads (docs/protocol.md 6.9, `devices` op 3), and what
// storing it changes. Pure: the caller reads the account's devices and applies the result in its store.
//
// The server does not hold the account key, so it cannot check the list's account signature (peers do). What it
// checks keeps its own records honest: the uploader issued the list and signed it with its own key, the version
// grows, every listed device is one the account has (active with the same key, or pending and now activated), and
// an active device left out is removed.

#include "../e2e/device_list.h"

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/messages.h>
#include <sim/store.h>

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

namespace sim::server_detail {

/// What storing the list changes.
struct ListChange {
    e2e::SignedDeviceList list;
    std::vector<std::pair<DeviceId, Bytes>> activate;  ///< pending devices (or keyless active ones) and their keys
    std::vector<DeviceId> remove;  ///< active devices the list leaves out (a pending one not listed stays pending)
};

/// Check `signed_list` uploaded by `uploader` of `user`, whose devices are `devices` (as the device store lists them;
/// a device's key is empty until a list gave it one) and whose stored list has
/// `stored_version` (0: none). Errors, nothing to store:
///  - Errc::truncated, Errc::trailing_bytes, Errc::bad_field: not a list, more than `max_devices`, another user's,
///    issued by another device than the uploader, a device the account does not have (unknown or removed), a device
///    with another key than its stored one;
///  - Errc::stale_epoch: a version not above the stored one;
///  - Errc::auth_failed: the issuer signature does not verify under the uploader's key (stored, or for a device
///    without one, the key the list gives it).
Result<ListChange> check_list_upload(std::string_view user, DeviceId uploader,
                                     const std::vector<store::DeviceRecord>& devices, std::uint64_t stored_version,
                                     ByteView signed_list, std::size_t max_devices);

}  // namespace sim::server_detail
