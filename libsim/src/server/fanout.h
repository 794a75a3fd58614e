#pragma once
// Private: the server's part of fan-out to several devices (docs/protocol.md 6.5, 6.9; docs/architecture.md
// "Fan-out"): whether a message covers the current devices of its recipient and of its sender, and the stored form
// of a copy for one of the sender's own other devices. Pure functions: no store, no lock.

#include <sim/error.h>
#include <sim/messages.h>

#include <string>
#include <string_view>
#include <vector>

namespace sim::server_detail {

/// Which lists of a message match the current devices (docs/protocol.md 6.5).
struct Coverage {
    bool recipient = true;  ///< one body for each active device of the recipient, no other
    bool own = true;        ///< one own body for each other active device of the sender, no other (none: absent)
    [[nodiscard]] bool ok() const noexcept { return recipient && own; }
};
/// `recipient_devices` and `sender_devices`: the active devices of each, in increasing order (the sender's include
/// the sending device, which its own list leaves out).
[[nodiscard]] Coverage check_coverage(const Submission& s, const std::vector<DeviceId>& recipient_devices,
                                      const std::vector<DeviceId>& sender_devices);

/// Most bytes of a peer name in a stored own copy (a canonical user name is shorter).
inline constexpr std::size_t max_own_copy_peer_size = 255;

/// What the mailbox of the sender's own device keeps for own body `i` of `s` sent to `peer`: the envelope with the
/// peer named, `id (16) | mode u8 | peer len u8 | peer | body`, as the delivery needs the peer (the stored row names
/// the sender and the device's user, which are the same). `peer` at most max_own_copy_peer_size bytes.
[[nodiscard]] Bytes encode_own_copy(const Submission& s, std::size_t i, std::string_view peer);
/// A stored own copy split into the peer and the envelope it is delivered as (`id | mode | body`, 6.5).
struct OwnCopy {
    std::string peer;
    Bytes envelope;
};
/// Errc::truncated, Errc::bad_field (no peer, no body).
[[nodiscard]] Result<OwnCopy> decode_own_copy(ByteView stored);

}  // namespace sim::server_detail
