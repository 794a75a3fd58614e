// The routing seam (libsim/src/server/routing.h) as a conformance suite: every implementation of RoutingBus runs
// the same cases. The in-process bus runs here; an implementation over a broker adds its maker to `buses()` (with
// the broker started by its fixture) and must pass unchanged.
#include "server/routing.h"

#include "fake_peer.h"

#include <doctest/doctest.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

using sim::server_detail::MailboxId;
using sim_test::FakePeer;
using sim::server_detail::RoutingBus;

namespace {

sim::Frame frame_to(const std::string& user, std::uint32_t sid) {
    return sim::Frame{sim::FrameType::receipt, sid, "Server", user, {1, 2, 3}};
}

std::vector<std::pair<std::string, std::function<std::unique_ptr<RoutingBus>()>>> buses() {
    return {{"in-process", [] { return sim::server_detail::make_local_bus(); }}};
}

const MailboxId A{"alice", 1};
const MailboxId B{"bob", 1};
const MailboxId C{"carol", 1};

}  // namespace

TEST_CASE("RoutingBus conformance") {
    for (const auto& [name, make] : buses()) {
        CAPTURE(name);
        auto bus = make();
        auto alice = std::make_shared<FakePeer>();
        auto alice2 = std::make_shared<FakePeer>();
        auto bob = std::make_shared<FakePeer>();

        // Nobody attached: nothing is carried, nobody is present.
        CHECK_FALSE(bus->attached(A));
        CHECK_FALSE(bus->deliver(A, frame_to("alice", 1)));
        CHECK(bus->local(A) == nullptr);
        CHECK(bus->attached_here().empty());
        CHECK_FALSE(bus->detach(A, alice.get()));

        // Attached: frames reach that connection only, in order.
        CHECK(bus->attach(A, alice) == nullptr);
        CHECK(bus->attach(B, bob) == nullptr);
        CHECK(bus->attached(A));
        CHECK(bus->local(A) == alice);
        REQUIRE(bus->deliver(A, frame_to("alice", 1)));
        REQUIRE(bus->deliver(A, frame_to("alice", 2)));
        REQUIRE(alice->frames.size() == 2);
        CHECK(alice->frames[0].sid == 1);
        CHECK(alice->frames[1].sid == 2);
        CHECK(bob->frames.empty());
        CHECK(bus->attached_here() == std::vector<MailboxId>{A, B});

        // Attaching the same connection again displaces nobody; a new connection displaces the old one.
        CHECK(bus->attach(A, alice) == nullptr);
        CHECK(bus->attach(A, alice2) == alice);
        REQUIRE(bus->deliver(A, frame_to("alice", 3)));
        CHECK(alice->frames.size() == 2);
        CHECK(alice2->frames.size() == 1);
        // The displaced connection's late detach changes nothing; the holder's does.
        CHECK_FALSE(bus->detach(A, alice.get()));
        CHECK(bus->attached(A));
        CHECK(bus->detach(A, alice2.get()));
        CHECK_FALSE(bus->attached(A));
        CHECK_FALSE(bus->deliver(A, frame_to("alice", 4)));

        // A connection that went away without detaching is not present (nothing is kept alive by the bus).
        {
            auto carol = std::make_shared<FakePeer>();
            CHECK(bus->attach(C, carol) == nullptr);
            CHECK(bus->attached(C));
        }
        CHECK_FALSE(bus->attached(C));
        CHECK_FALSE(bus->deliver(C, frame_to("carol", 1)));
        CHECK(bus->attached_here() == std::vector<MailboxId>{B});

        // Shutdown: everything attached here is handed back, and nothing is attached any more.
        const auto all = bus->detach_all();
        REQUIRE(all.size() == 1);
        CHECK(all[0] == bob);
        CHECK_FALSE(bus->attached(B));
        CHECK(bus->attached_here().empty());
    }
}

TEST_CASE("RoutingBus conformance: a user's devices are mailboxes of their own") {
    for (const auto& [name, make] : buses()) {
        CAPTURE(name);
        auto bus = make();
        auto phone = std::make_shared<FakePeer>();
        auto laptop = std::make_shared<FakePeer>();
        auto bob = std::make_shared<FakePeer>();
        const MailboxId alice1{"alice", 1};
        const MailboxId alice2{"alice", 2};
        // "alicea" sorts right after alice's devices: a prefix of a name is not the name
        const MailboxId alicea{"alicea", 1};

        CHECK(bus->attached_devices("alice").empty());
        CHECK_FALSE(sim::server_detail::online(*bus, "alice"));
        CHECK(bus->attach(alice2, laptop) == nullptr);
        CHECK(bus->attach(alice1, phone) == nullptr);  // a second device displaces nobody
        CHECK(bus->attach(alicea, bob) == nullptr);
        CHECK(bus->attached_devices("alice") == std::vector<sim::DeviceId>{1, 2});
        CHECK(bus->attached_devices("alicea") == std::vector<sim::DeviceId>{1});
        CHECK(bus->attached_here() == std::vector<MailboxId>{alice1, alice2, alicea});

        // A device's frame reaches that device only; a user's frame every device of that user, and nobody else.
        REQUIRE(bus->deliver(alice2, frame_to("alice", 1)));
        CHECK(phone->frames.empty());
        REQUIRE(laptop->frames.size() == 1);
        REQUIRE(sim::server_detail::deliver_to_user(*bus, "alice", frame_to("alice", 2)));
        REQUIRE(phone->frames.size() == 1);
        CHECK(phone->frames[0].sid == 2);
        REQUIRE(laptop->frames.size() == 2);
        CHECK(laptop->frames[1].sid == 2);
        CHECK(bob->frames.empty());

        // One device leaves: the user is still present on the other.
        CHECK(bus->detach(alice1, phone.get()));
        CHECK(bus->attached_devices("alice") == std::vector<sim::DeviceId>{2});
        CHECK(sim::server_detail::online(*bus, "alice"));
        CHECK(bus->local(alice1) == nullptr);
        CHECK(bus->local(alice2) == laptop);
        CHECK(bus->detach(alice2, laptop.get()));
        CHECK_FALSE(sim::server_detail::online(*bus, "alice"));
        CHECK_FALSE(sim::server_detail::deliver_to_user(*bus, "alice", frame_to("alice", 3)));
        CHECK(sim::server_detail::online(*bus, "alicea"));
    }
}
