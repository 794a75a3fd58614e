#pragma once
// Private: payloads of the `link` and `devices` frames (docs/protocol.md 6.9). Strict decoders: every length is
// checked, trailing bytes are refused, names are bounded and free of control bytes.

#include "../e2e/device_list.h"
#include "../e2e/link.h"

#include <sim/bytes.h>
#include <sim/clock.h>
#include <sim/error.h>
#include <sim/messages.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sim {

// ---------------------------------------------------------------- link (0x1C)

enum class LinkStep : std::uint8_t { request = 1, offer = 2, reveal = 3, grant = 4, abort = 5 };

/// AES-256-GCM tag of a grant.
inline constexpr std::size_t link_grant_tag_size = 16;
/// The largest grant: the account key seed and the largest signed list, sealed.
inline constexpr std::size_t max_link_grant_size = 32 + e2e::max_signed_device_list_size + link_grant_tag_size;

struct LinkMessage {
    LinkStep step = LinkStep::request;
    /// From a client: the device the step is for (0 in a request: every active device). From the server: the
    /// device that sent it.
    DeviceId device = 0;
    Bytes data;      ///< request, offer, reveal or grant bytes (empty in an abort)
    Errc reason{};   ///< abort only: why the link ended
    friend bool operator==(const LinkMessage&, const LinkMessage&) = default;
};

Bytes encode_link(const LinkMessage& m);
/// Errc::truncated, Errc::trailing_bytes; Errc::bad_field for an unknown step, a data size that is not the step's
/// (request 68, offer and reveal 32, grant up to max_link_grant_size), an abort with code 0. (Which device a step
/// may name depends on its direction: the server checks that.)
Result<LinkMessage> decode_link(ByteView payload);

// ---------------------------------------------------------------- devices (0x1D)

enum class DevicesOp : std::uint8_t { list = 1, info = 2, put = 3, rename = 4, changed = 5 };

/// A client's request. op list and info: no field; put: `signed_list`; rename: `device` and `name`. (changed is
/// never sent by a client.)
struct DevicesRequest {
    DevicesOp op = DevicesOp::list;
    Bytes signed_list;
    DeviceId device = 0;
    std::string name;
    friend bool operator==(const DevicesRequest&, const DevicesRequest&) = default;
};

/// The server's answer or push. op list and changed: `user` and `signed_list` (empty: none yet, list only);
/// info: `devices`. (put and rename are answered with an error frame or nothing.)
struct DevicesReply {
    DevicesOp op = DevicesOp::list;
    std::string user;
    Bytes signed_list;
    std::vector<DeviceInfo> devices;
    friend bool operator==(const DevicesReply&, const DevicesReply&) = default;
};

/// Errc::invalid_argument for a request the decoder would refuse (so nothing malformed is sent).
Result<Bytes> encode_devices_request(const DevicesRequest& r);
/// Errc::truncated, Errc::trailing_bytes; Errc::bad_field for an unknown op or changed, an empty or oversized list
/// in put, device 0 or a name that is too long or has a control byte in rename.
Result<DevicesRequest> decode_devices_request(ByteView payload);

/// Errc::invalid_argument for a reply the decoder would refuse.
Result<Bytes> encode_devices_reply(const DevicesReply& r);
/// Errc::truncated, Errc::trailing_bytes; Errc::bad_field for an unknown op, put or rename, an empty user, an
/// oversized list, an empty list in changed, more than max_listed_devices devices, device 0, devices not strictly
/// increasing, an unknown status, a bad name, a time above 2^63 - 1.
Result<DevicesReply> decode_devices_reply(ByteView payload);

}  // namespace sim
