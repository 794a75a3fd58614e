#pragma once
// A connection as the server core sees it (server_detail::Peer), recording what it is sent: for the tests that
// drive the routing bus and the delivery core without sockets.
#include "server/routing.h"

#include <sim/messages.h>

#include <optional>
#include <vector>

namespace sim_test {

struct FakePeer final : sim::server_detail::Peer {
    std::vector<sim::Frame> frames;
    std::vector<sim::Errc> kicks;
    void deliver(const sim::Frame& frame) override { frames.push_back(frame); }
    void kick(sim::Errc code, std::string_view) override { kicks.push_back(code); }

    /// The frames of `type` (and receipt status `status`, when given) received since the last call, taken.
    std::vector<sim::Frame> take(sim::FrameType type, std::optional<sim::ReceiptStatus> status = std::nullopt) {
        std::vector<sim::Frame> out;
        std::erase_if(frames, [&](const sim::Frame& f) {
            if (f.type != type || (status && f.sid != static_cast<std::uint32_t>(*status))) {
                return false;
            }
            out.push_back(f);
            return true;
        });
        return out;
    }
};

}  // namespace sim_test
