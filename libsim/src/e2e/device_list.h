#pragma once
// Private: a user's device list, signed by the account key and by the device that issued it (docs/architecture.md,
// "Multi-device accounts"; docs/security.md, "Multi-device: where the account key lives"). Pure: bytes in, bytes out.
//
//   list   = user len u8 | user | version u64 | issuer u32 | count u8 | count x (device u32 | device key 32)
//   signed = list | account signature (64) | issuer signature (64)
//   each signature: Ed25519 over "libsim device list v1" || 0x00 || list
//
// A verifier that knows list N takes list M only when M's version is higher, both signatures verify, the issuer is a
// device of list N (its key from list N) and no device of list N has another key in M. The first list a verifier
// sees needs only the pinned account key and an issuer listed in it.

#include <sim/bytes.h>
#include <sim/e2e.h>
#include <sim/error.h>
#include <sim/messages.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sim::e2e {

/// The most devices a list can hold on the wire (a message carries at most 64 bodies: docs/protocol.md 6.5). A
/// server's own limit (default 5) is lower.
inline constexpr std::size_t max_listed_devices = 64;
inline constexpr std::size_t device_key_size = 32;
inline constexpr std::size_t device_list_signature_size = 64;
/// The largest signed list on the wire: a 255-byte user name and max_listed_devices devices.
inline constexpr std::size_t max_signed_device_list_size =
    1 + 255 + 8 + 4 + 1 + max_listed_devices * (4 + device_key_size) + 2 * device_list_signature_size;

struct ListedDevice {
    DeviceId device = first_device;
    Bytes key;  ///< its Ed25519 device key (32 bytes)
    bool operator==(const ListedDevice&) const = default;
};

struct DeviceList {
    std::string user;
    std::uint64_t version = 1;
    DeviceId issuer = first_device;      ///< the device that made and signed this version
    std::vector<ListedDevice> devices;  ///< 1..max_listed_devices, ids non-zero and strictly increasing
    /// The entry of `device`, or nullptr.
    [[nodiscard]] const ListedDevice* find(DeviceId device) const;
    bool operator==(const DeviceList&) const = default;
};

struct SignedDeviceList {
    DeviceList list;
    Bytes account_signature;  ///< by the account key
    Bytes issuer_signature;   ///< by the issuing device's key
};

/// The list's bytes (what is signed, after the label). Errc::invalid_argument for a list that breaks the rules above
/// or a user name longer than 255 bytes.
Result<Bytes> encode_device_list(const DeviceList& list);

/// Sign `list` with the account key and the issuer's device key. Errc::invalid_argument when the list breaks the
/// rules above or lists its issuer with another key than `issuer`'s (an issuer not in the list, removing itself,
/// is allowed).
Result<SignedDeviceList> sign_device_list(DeviceList list, const IdentityKeyPair& account,
                                          const IdentityKeyPair& issuer);

Result<Bytes> encode_signed_device_list(const SignedDeviceList& signed_list);

/// Parse a signed list from the network, without checking signatures: Errc::truncated, Errc::trailing_bytes,
/// Errc::bad_field (no device or more than `max_devices`, a device id 0, ids not strictly increasing, an empty user).
Result<SignedDeviceList> decode_signed_device_list(ByteView data, std::size_t max_devices = max_listed_devices);

/// Whether the list's issuer signature verifies under `issuer_key` (what a server, which does not hold the account
/// key, can check of an upload). Errc::auth_failed when it does not; Errc::bad_field for a list that breaks the rules.
Status verify_issuer_signature(const SignedDeviceList& signed_list, ByteView issuer_key);

/// What `accept_device_list` found.
enum class ListVerdict : std::uint8_t {
    newer,  ///< a valid newer list: use it from now on
    same,   ///< the list already known (the same bytes): nothing changes
};

/// Check `next` for `user`, whose account key the verifier pinned, against the newest list it accepted so far
/// (`known`, nullopt before the first). Errors, each leaving the known list in force:
///  - Errc::bad_field: another user's list; the issuer not in `known` (nor, for a first list, in `next`); a known
///    device listed with another key;
///  - Errc::auth_failed: a signature does not verify; a different list with the known version (a server showing two
///    histories);
///  - Errc::replayed: an older version than the known one.
Result<ListVerdict> accept_device_list(std::string_view user, ByteView account_key,
                                       const std::optional<DeviceList>& known, const SignedDeviceList& next);

}  // namespace sim::e2e
