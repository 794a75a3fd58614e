#pragma once
// Private: the payload of the `presence` frame (0x1E, docs/protocol.md 6.10). A strict decoder: every length is
// checked, trailing bytes are refused, names are bounded and free of control bytes.

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sim {

enum class PresenceOp : std::uint8_t {
    set = 1,     ///< client: subscribe this connection to its contacts' presence, and show or hide the user
    status = 2,  ///< server: the presence of some contacts (a snapshot after `set`, then each change)
    query = 3,   ///< client: the presence of the frame's destination (answered with `status`)
};

/// Most entries in one `status` payload (a larger snapshot is split over several frames).
inline constexpr std::size_t max_presence_entries = 256;
/// Longest user name in a `status` entry (the frame header's name limit, docs/protocol.md 2.1).
inline constexpr std::size_t max_presence_name = 64;

struct PresenceEntry {
    std::string user;
    bool online = false;
    friend bool operator==(const PresenceEntry&, const PresenceEntry&) = default;
};

struct PresenceMessage {
    PresenceOp op = PresenceOp::set;
    bool hidden = false;                 ///< `set` only
    std::vector<PresenceEntry> entries;  ///< `status` only
    friend bool operator==(const PresenceMessage&, const PresenceMessage&) = default;
};

/// Errc::invalid_argument for a `status` with more than max_presence_entries entries or a name that the decoder
/// would refuse.
Result<Bytes> encode_presence(const PresenceMessage& m);
/// Errc::truncated, Errc::trailing_bytes; Errc::bad_field for an unknown op, a flag byte other than 0 or 1, more
/// than max_presence_entries entries, or an empty, over-long or control-character name.
Result<PresenceMessage> decode_presence(ByteView payload);

}  // namespace sim
