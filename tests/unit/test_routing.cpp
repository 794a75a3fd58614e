// The routing seam (libsim/src/server/routing.h) as a conformance suite: every implementation of RoutingBus runs
// the same cases. The in-process bus runs here; an implementation over a broker adds its maker to `buses()` (with
// the broker started by its fixture) and must pass unchanged.
#include "server/routing.h"

#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using sim::server_detail::Peer;
using sim::server_detail::RoutingBus;

namespace {

struct FakePeer final : Peer {
    std::vector<sim::Frame> frames;
    std::vector<sim::Errc> kicks;
    void deliver(const sim::Frame& frame) override { frames.push_back(frame); }
    void kick(sim::Errc code, std::string_view) override { kicks.push_back(code); }
};

sim::Frame frame_to(const std::string& user, std::uint32_t sid) {
    return sim::Frame{sim::FrameType::receipt, sid, "Server", user, {1, 2, 3}};
}

std::vector<std::pair<std::string, std::function<std::unique_ptr<RoutingBus>()>>> buses() {
    return {{"in-process", [] { return sim::server_detail::make_local_bus(); }}};
}

}  // namespace

TEST_CASE("RoutingBus conformance") {
    for (const auto& [name, make] : buses()) {
        CAPTURE(name);
        auto bus = make();
        auto alice = std::make_shared<FakePeer>();
        auto alice2 = std::make_shared<FakePeer>();
        auto bob = std::make_shared<FakePeer>();

        // Nobody attached: nothing is carried, nobody is present.
        CHECK_FALSE(bus->attached("alice"));
        CHECK_FALSE(bus->deliver("alice", frame_to("alice", 1)));
        CHECK(bus->local("alice") == nullptr);
        CHECK(bus->attached_here().empty());
        CHECK_FALSE(bus->detach("alice", alice.get()));

        // Attached: frames reach that connection only, in order.
        CHECK(bus->attach("alice", alice) == nullptr);
        CHECK(bus->attach("bob", bob) == nullptr);
        CHECK(bus->attached("alice"));
        CHECK(bus->local("alice") == alice);
        REQUIRE(bus->deliver("alice", frame_to("alice", 1)));
        REQUIRE(bus->deliver("alice", frame_to("alice", 2)));
        REQUIRE(alice->frames.size() == 2);
        CHECK(alice->frames[0].sid == 1);
        CHECK(alice->frames[1].sid == 2);
        CHECK(bob->frames.empty());
        CHECK(bus->attached_here() == std::vector<std::string>{"alice", "bob"});

        // Attaching the same connection again displaces nobody; a new connection displaces the old one.
        CHECK(bus->attach("alice", alice) == nullptr);
        CHECK(bus->attach("alice", alice2) == alice);
        REQUIRE(bus->deliver("alice", frame_to("alice", 3)));
        CHECK(alice->frames.size() == 2);
        CHECK(alice2->frames.size() == 1);
        // The displaced connection's late detach changes nothing; the holder's does.
        CHECK_FALSE(bus->detach("alice", alice.get()));
        CHECK(bus->attached("alice"));
        CHECK(bus->detach("alice", alice2.get()));
        CHECK_FALSE(bus->attached("alice"));
        CHECK_FALSE(bus->deliver("alice", frame_to("alice", 4)));

        // A connection that went away without detaching is not present (nothing is kept alive by the bus).
        {
            auto carol = std::make_shared<FakePeer>();
            CHECK(bus->attach("carol", carol) == nullptr);
            CHECK(bus->attached("carol"));
        }
        CHECK_FALSE(bus->attached("carol"));
        CHECK_FALSE(bus->deliver("carol", frame_to("carol", 1)));
        CHECK(bus->attached_here() == std::vector<std::string>{"bob"});

        // Shutdown: everything attached here is handed back, and nothing is attached any more.
        const auto all = bus->detach_all();
        REQUIRE(all.size() == 1);
        CHECK(all[0] == bob);
        CHECK_FALSE(bus->attached("bob"));
        CHECK(bus->attached_here().empty());
    }
}
