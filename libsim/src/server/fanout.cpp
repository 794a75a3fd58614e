#include "fanout.h"

#include "../proto/wire.h"

#include <algorithm>

namespace sim::server_detail {

namespace {

bool same_devices(const std::vector<DeviceBody>& bodies, const std::vector<DeviceId>& devices) {
    return bodies.size() == devices.size() && std::equal(devices.begin(), devices.end(), bodies.begin(),
                                                         [](DeviceId d, const DeviceBody& b) { return d == b.device; });
}

}  // namespace

Coverage check_coverage(const Submission& s, const std::vector<DeviceId>& recipient_devices,
                        const std::vector<DeviceId>& sender_devices) {
    std::vector<DeviceId> others;
    others.reserve(sender_devices.size());
    std::copy_if(sender_devices.begin(), sender_devices.end(), std::back_inserter(others),
                 [&](DeviceId d) { return d != s.sender_device; });
    return Coverage{same_devices(s.bodies, recipient_devices), same_devices(s.own_bodies, others)};
}

Bytes encode_own_copy(const Submission& s, std::size_t i, std::string_view peer) {
    const auto& body = s.own_bodies.at(i).body;
    const auto name = peer.substr(0, max_own_copy_peer_size);
    Bytes out;
    out.reserve(s.id.size() + 2 + name.size() + body.size());
    detail::WireWriter w(out);
    w.bytes(s.id);
    w.u8(static_cast<std::uint8_t>(s.mode));
    w.u8(static_cast<std::uint8_t>(name.size()));
    w.text(name);
    w.bytes(body);
    return out;
}

Result<OwnCopy> decode_own_copy(ByteView stored) {
    detail::WireReader r(stored);
    ByteView head;
    std::uint8_t len = 0;
    ByteView peer;
    if (!r.take(sizeof(MessageId) + 1, head) || !r.u8(len) || !r.take(len, peer)) {
        return Error{Errc::truncated, "own copy truncated"};
    }
    if (len == 0) {
        return Error{Errc::bad_field, "own copy without its peer"};
    }
    const auto body = r.rest();
    if (body.empty()) {
        return Error{Errc::bad_field, "own copy without a body"};
    }
    OwnCopy c;
    c.peer.assign(reinterpret_cast<const char*>(peer.data()), peer.size());
    c.envelope.reserve(head.size() + body.size());
    c.envelope.insert(c.envelope.end(), head.begin(), head.end());
    c.envelope.insert(c.envelope.end(), body.begin(), body.end());
    return c;
}

}  // namespace sim::server_detail
