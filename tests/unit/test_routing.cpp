// The routing seam (libsim/src/server/routing.h) as a conformance suite: every implementation of RoutingBus runs
// the same cases. The in-process bus runs here; an implementation over a broker adds its maker to `buses()` (with
// the broker started by its fixture) and must pass unchanged.
#include "server/routing.h"

#include "fake_peer.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

using sim::server_detail::MailboxId;
using sim_test::FakePeer;
using sim::server_detail::RoutingBus;

namespace {

sim::Frame frame_to(const std::string& user, std::uint32_t sid) {
    return sim::Frame{sim::FrameType::receipt, sid, "Server", user, {1, 2, 3}};
}

/// The NATS server the fixture started (tests/auth/run-with-db-server.sh nats ...), or nullptr.
const char* nats_url() {
    const char* kind = std::getenv("SIM_TEST_BACKEND");
    return kind != nullptr && std::string_view(kind) == "nats" ? std::getenv("SIM_TEST_DB_URL") : nullptr;
}

std::unique_ptr<RoutingBus> nats_bus(const std::string& node,
                                     std::chrono::milliseconds second_look = std::chrono::hours(1)) {
    sim::server_detail::NatsBusOptions o;
    o.servers = nats_url();
    o.node_id = node;
    // Short, so that a dead node is noticed quickly; not shorter, because a node whose own heartbeat is three late
    // (a loaded machine) closes every connection it holds.
    o.heartbeat = std::chrono::milliseconds(250);
    o.second_look = second_look;  // by default not within a case: they count the wake-ups handed to the core
    auto bus = sim::server_detail::make_nats_bus(o);
    REQUIRE_MESSAGE(bus, bus.error().message());
    return std::move(*bus);
}

std::vector<std::pair<std::string, std::function<std::unique_ptr<RoutingBus>()>>> buses() {
    std::vector<std::pair<std::string, std::function<std::unique_ptr<RoutingBus>()>>> out{
        {"in-process", [] { return sim::server_detail::make_local_bus(); }}};
    if (nats_url() != nullptr) {
        out.emplace_back("nats", [] { return nats_bus("conformance"); });
    }
    return out;
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

namespace {

/// A connection that frames reach from the bus's own threads (NATS delivers on its pool).
struct LockedPeer final : sim::server_detail::Peer {
    std::mutex mutex;
    std::vector<std::uint32_t> sids;
    std::vector<sim::Errc> kicks;
    void deliver(const sim::Frame& frame) override {
        const std::lock_guard lock(mutex);
        sids.push_back(frame.sid);
    }
    void kick(sim::Errc code, std::string_view) override {
        const std::lock_guard lock(mutex);
        kicks.push_back(code);
    }
    std::size_t frames() {
        const std::lock_guard lock(mutex);
        return sids.size();
    }
    std::size_t kicked() {
        const std::lock_guard lock(mutex);
        return kicks.size();
    }
};

/// Whether `condition` holds within 5 s (announcements between nodes take a round trip through NATS).
template <typename F>
bool eventually(F condition) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!condition()) {
        if (std::chrono::steady_clock::now() > until) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

}  // namespace

TEST_CASE("RoutingBus over NATS: nodes see each other's devices, carry frames in order and displace") {
    if (nats_url() == nullptr) {
        MESSAGE("no NATS server given: the 'routing-nats' test runs this with one");
        return;
    }
    auto n1 = nats_bus("n1");
    auto n2 = nats_bus("n2");
    auto alice = std::make_shared<LockedPeer>();
    CHECK(n1->attach(A, alice) == nullptr);
    REQUIRE(eventually([&] { return n2->attached(A); }));
    CHECK(n2->attached_devices("alice") == std::vector<sim::DeviceId>{1});
    CHECK(n2->local(A) == nullptr);
    CHECK(n2->attached_here().empty());

    // Frames from the other node arrive, in the order they were sent.
    for (std::uint32_t i = 0; i < 200; ++i) {
        REQUIRE(n2->deliver(A, frame_to("alice", i)));
    }
    REQUIRE(eventually([&] { return alice->frames() == 200; }));
    {
        const std::lock_guard lock(alice->mutex);
        for (std::uint32_t i = 0; i < 200; ++i) {
            REQUIRE(alice->sids[i] == i);
        }
    }
    // A user's frame reaches their devices on both nodes.
    auto laptop = std::make_shared<LockedPeer>();
    const MailboxId alice2{"alice", 2};
    CHECK(n2->attach(alice2, laptop) == nullptr);
    REQUIRE(eventually([&] { return n1->attached_devices("alice") == std::vector<sim::DeviceId>{1, 2}; }));
    REQUIRE(sim::server_detail::deliver_to_user(*n1, "alice", frame_to("alice", 500)));
    CHECK(eventually([&] { return alice->frames() == 201 && laptop->frames() == 1; }));

    // The same device logs in on the other node: the first connection is closed there, and the device is served
    // by one node only.
    auto alice_again = std::make_shared<LockedPeer>();
    CHECK(n2->attach(A, alice_again) == nullptr);
    REQUIRE(eventually([&] { return alice->kicked() == 1; }));
    CHECK(n1->local(A) == nullptr);
    CHECK(n1->attached(A));
    CHECK(n2->local(A) == alice_again);
    REQUIRE(n1->deliver(A, frame_to("alice", 600)));
    CHECK(eventually([&] { return alice_again->frames() == 1; }));
    CHECK(alice->frames() == 201);
    // The displaced connection's late detach changes nothing.
    CHECK_FALSE(n1->detach(A, alice.get()));

    // A detach is seen by the other node.
    CHECK(n2->detach(A, alice_again.get()));
    CHECK(eventually([&] { return !n1->attached(A); }));
    CHECK_FALSE(n1->deliver(A, frame_to("alice", 700)));

    // A node that dies without a word: its devices are gone after three missed heartbeats.
    {
        auto n3 = nats_bus("n3");
        auto carol = std::make_shared<LockedPeer>();
        CHECK(n3->attach(C, carol) == nullptr);
        REQUIRE(eventually([&] { return n1->attached(C); }));
        n3.reset();  // closes its NATS connection without detaching anything
    }
    CHECK(eventually([&] { return !n1->attached(C); }));

    // A node that starts late learns what the others hold.
    auto n4 = nats_bus("n4");
    CHECK(eventually([&] { return n4->attached(alice2); }));
}

TEST_CASE("RoutingBus over NATS: a wake-up reaches the node holding the device, and nobody else") {
    if (nats_url() == nullptr) {
        MESSAGE("skipped: no NATS server (the routing-nats test runs this case against a throwaway one)");
        return;
    }
    auto n1 = nats_bus("w1");
    auto n2 = nats_bus("w2");
    std::mutex mutex;
    std::vector<MailboxId> woken1;
    std::vector<MailboxId> woken2;
    n1->on_woken([&](const MailboxId& m) {
        const std::lock_guard lock(mutex);
        woken1.push_back(m);
    });
    n2->on_woken([&](const MailboxId& m) {
        const std::lock_guard lock(mutex);
        woken2.push_back(m);
    });
    const auto count = [&](const std::vector<MailboxId>& v) {
        const std::lock_guard lock(mutex);
        return v.size();
    };
    auto bob = std::make_shared<FakePeer>();
    CHECK(n2->attach(B, bob) == nullptr);
    n2->sync_attachments();
    n1->wake(B);
    REQUIRE(eventually([&] { return n1->stats().wakes_answered == 1; }));
    CHECK(count(woken2) == 1);
    CHECK(n2->stats().woken == 1);
    CHECK(n1->stats().round_trip.count == 1);
    // Nobody holds carol: "no responders", at once, and nothing is handed to anyone.
    n1->wake(C);
    REQUIRE(eventually([&] { return n1->stats().no_responders == 1; }));
    CHECK(n1->stats().wakes == 2);
    CHECK(n1->stats().timeouts == 0);
    // A wake-up for a device attached on the waking node itself goes nowhere (its own commit drains it).
    n2->wake(B);
    CHECK(n2->stats().wakes == 0);
    // After a detach nobody answers for bob.
    CHECK(n2->detach(B, bob.get()));
    n2->sync_attachments();
    n1->wake(B);
    REQUIRE(eventually([&] { return n1->stats().no_responders == 2; }));
    CHECK(count(woken2) == 1);
    CHECK(count(woken1) == 0);
}

TEST_CASE("RoutingBus over NATS: a device attached here is drained once more a little later (second look)") {
    if (nats_url() == nullptr) {
        MESSAGE("skipped: no NATS server (the routing-nats test runs this case against a throwaway one)");
        return;
    }
    auto n1 = nats_bus("s1", std::chrono::milliseconds(200));
    std::atomic<int> woken{0};
    std::atomic<bool> other{false};
    n1->on_woken([&](const MailboxId& m) {
        if (m == B) {
            ++woken;
        } else {
            other = true;
        }
    });
    auto bob = std::make_shared<FakePeer>();
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(n1->attach(B, bob) == nullptr);
    REQUIRE(eventually([&] { return woken.load() == 1; }));
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(200));
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    CHECK(woken.load() == 1);  // once
    // Detached before it is due: nothing.
    CHECK(n1->detach(B, bob.get()));
    CHECK(n1->attach(A, bob) == nullptr);
    CHECK(n1->detach(A, bob.get()));
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    CHECK(woken.load() == 1);
    CHECK_FALSE(other.load());
}
