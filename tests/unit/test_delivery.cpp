// The delivery core (libsim/src/server/delivery.h) with several devices per user, driven directly (no device
// directory: the copies name their devices; test_server.cpp drives the same through linked devices): these cases
// build a Delivery on a memory store, a queue executor for the group commit and the in-process routing bus, with
// fake connections.
#include "server/delivery.h"
#include "server/group_commit.h"
#include "server/router.h"
#include "server/routing.h"

#include "fake_peer.h"

#include <sim/rng.h>
#include <sim/store.h>
#include <sim/testing.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

using sim::server_detail::Delivery;
using sim::server_detail::GroupCommit;
using sim::server_detail::MailboxId;
using sim_test::FakePeer;

namespace {

sim::MessageId mid(std::uint8_t n) {
    sim::MessageId id{};
    id[15] = n;
    return id;
}

struct World {
    std::unique_ptr<sim::store::Backend> store = sim::store::make_memory_backend();
    sim::testing::QueueExecutor executor;  // the group commit's
    sim::ManualClock clock;
    std::shared_ptr<GroupCommit> commit = std::make_shared<GroupCommit>(*store, executor, clock);
    std::unique_ptr<sim::server_detail::RoutingBus> bus = sim::server_detail::make_local_bus();
    std::unique_ptr<sim::Rng> rng = sim::make_system_rng();
    sim::server_detail::Router router{*bus,
                                      sim::SuitePolicy::default_policy(),
                                      nullptr,
                                      *rng,
                                      [] { return sim::store::WallTime{std::chrono::milliseconds(1'000'000)}; },
                                      [](sim::LogLevel, std::string_view) {}};
    std::shared_ptr<Delivery> delivery;
    std::shared_ptr<Delivery::Streams> streams = std::make_shared<Delivery::Streams>();  // alice's connection's

    explicit World(Delivery::Limits limits = {}) {
        delivery = std::make_shared<Delivery>(
            *store, commit, router, *bus, limits,
            [] { return sim::store::WallTime{std::chrono::milliseconds(1'000'000)}; },
            [](sim::LogLevel, std::string_view) {});
    }

    /// Run every queued job (commits and reads) until none is left.
    void settle() {
        executor.run_pending();
    }

    /// `peer` logs in as this device.
    void attach(const MailboxId& device, const std::shared_ptr<FakePeer>& peer) {
        (void)bus->attach(device, peer);
        delivery->login(device, peer.get());
    }

    /// Message `n` from alice's device 1 to bob, one copy per device in `devices` (body: the device number).
    sim::Status send(std::uint8_t n, const std::vector<sim::DeviceId>& devices,
                     const std::shared_ptr<FakePeer>& sender) {
        std::vector<Delivery::Copy> copies;
        for (const auto d : devices) {
            sim::Envelope e{mid(n), sim::ConversationMode::end_to_end, sim::Bytes{static_cast<std::uint8_t>(d)}};
            copies.push_back({d, sim::encode_envelope(e)});
        }
        std::uint32_t expected = 0;
        return delivery->submit(Delivery::Origin{"alice", 1, 7, sender, n, streams}, "bob",
                                sim::pair_conversation_id("alice", "bob"), mid(n), std::move(copies), expected);
    }

    /// What bob's device holds in the store, as message numbers.
    std::vector<std::uint8_t> stored(sim::DeviceId device) {
        const auto rows = store->pending("bob", device, 0, 100);
        REQUIRE(rows);
        std::vector<std::uint8_t> out;
        for (const auto& row : *rows) {
            out.push_back(row.id[15]);
        }
        return out;
    }
};

/// The (message number, body) of each `message` frame taken from `peer`.
std::vector<std::pair<std::uint8_t, std::uint8_t>> messages(FakePeer& peer) {
    std::vector<std::pair<std::uint8_t, std::uint8_t>> out;
    for (const auto& f : peer.take(sim::FrameType::message)) {
        const auto d = sim::decode_delivered(f.payload);
        REQUIRE(d);
        CHECK(d->sender_device == 1);
        CHECK(d->conversation == sim::pair_conversation_id("alice", "bob"));
        out.emplace_back(d->envelope.id[15], d->envelope.body.at(0));
    }
    return out;
}

std::vector<sim::Receipt> receipts(FakePeer& peer, sim::ReceiptStatus status) {
    std::vector<sim::Receipt> out;
    for (const auto& f : peer.take(sim::FrameType::receipt, status)) {
        out.push_back(sim::decode_receipt(f.payload).value());
    }
    return out;
}

}  // namespace

TEST_CASE("one message for two devices: one transaction, one stored receipt, each device its own copy and ack") {
    World w;
    auto alice = std::make_shared<FakePeer>();
    auto phone = std::make_shared<FakePeer>();
    auto laptop = std::make_shared<FakePeer>();
    w.attach(MailboxId{"alice", 1}, alice);
    w.attach(MailboxId{"bob", 1}, phone);
    w.attach(MailboxId{"bob", 2}, laptop);

    REQUIRE(w.send(1, {1, 2}, alice));
    // Both devices are caught up: each gets its own copy at once, while it is committed.
    using Copies = std::vector<std::pair<std::uint8_t, std::uint8_t>>;
    CHECK(messages(*phone) == Copies{{1, 1}});
    CHECK(messages(*laptop) == Copies{{1, 2}});
    CHECK(receipts(*alice, sim::ReceiptStatus::stored).empty());  // not before the commit
    const auto commits_before = w.commit->commits();
    w.settle();
    CHECK(w.commit->commits() == commits_before + 1);  // both copies in one transaction
    CHECK(w.commit->committed_messages() == 2);
    CHECK(w.stored(1) == std::vector<std::uint8_t>{1});
    CHECK(w.stored(2) == std::vector<std::uint8_t>{1});
    const auto stored = receipts(*alice, sim::ReceiptStatus::stored);
    REQUIRE(stored.size() == 1);  // one per message, not per copy
    CHECK(stored[0].device == 0);
    CHECK(stored[0].ids == std::vector<sim::MessageId>{mid(1)});

    // The laptop acknowledges: its copy goes, the phone's stays; the receipt names the laptop.
    REQUIRE(w.delivery->ack(MailboxId{"bob", 2}, "alice", {mid(1)}));
    w.settle();
    CHECK(w.stored(1) == std::vector<std::uint8_t>{1});
    CHECK(w.stored(2).empty());
    auto delivered = receipts(*alice, sim::ReceiptStatus::delivered);
    REQUIRE(delivered.size() == 1);
    CHECK(delivered[0].device == 2);
    CHECK(w.delivery->backlog(MailboxId{"bob", 1}).value().messages == 1);
    CHECK(w.delivery->backlog(MailboxId{"bob", 2}).value().messages == 0);
    CHECK(w.delivery->backlog(std::string("bob")).value().messages == 1);

    // The phone reconnects: only its own copy comes again, and its ack names it.
    auto phone2 = std::make_shared<FakePeer>();
    w.attach(MailboxId{"bob", 1}, phone2);
    CHECK(messages(*phone2) == Copies{{1, 1}});
    CHECK(messages(*laptop).empty());
    REQUIRE(w.delivery->ack(MailboxId{"bob", 1}, "alice", {mid(1)}));
    w.settle();
    CHECK(w.stored(1).empty());
    delivered = receipts(*alice, sim::ReceiptStatus::delivered);
    REQUIRE(delivered.size() == 1);
    CHECK(delivered[0].device == 1);
}

TEST_CASE("a message one device acknowledged before its commit is still stored for the other, with one receipt") {
    World w;
    auto alice = std::make_shared<FakePeer>();
    auto phone = std::make_shared<FakePeer>();
    w.attach(MailboxId{"alice", 1}, alice);
    w.attach(MailboxId{"bob", 1}, phone);  // the laptop (device 2) is offline

    REQUIRE(w.send(1, {1, 2}, alice));
    using Copies = std::vector<std::pair<std::uint8_t, std::uint8_t>>;
    CHECK(messages(*phone) == Copies{{1, 1}});
    REQUIRE(w.delivery->ack(MailboxId{"bob", 1}, "alice", {mid(1)}));  // before the commit
    w.settle();
    CHECK(w.stored(1).empty());                            // the phone's copy was never written
    CHECK(w.stored(2) == std::vector<std::uint8_t>{1});  // the laptop's was
    CHECK(receipts(*alice, sim::ReceiptStatus::stored).size() == 1);
    CHECK(receipts(*alice, sim::ReceiptStatus::delivered).size() == 1);
    CHECK(w.delivery->backlog(MailboxId{"bob", 1}).value().messages == 0);
    CHECK(w.delivery->backlog(MailboxId{"bob", 2}).value().messages == 1);

    // Both copies acknowledged before the commit: nothing written, no `stored` (both got `delivered`).
    auto laptop = std::make_shared<FakePeer>();
    w.attach(MailboxId{"bob", 2}, laptop);
    CHECK(messages(*laptop) == Copies{{1, 2}});
    REQUIRE(w.delivery->ack(MailboxId{"bob", 2}, "alice", {mid(1)}));
    w.settle();
    (void)receipts(*alice, sim::ReceiptStatus::delivered);
    REQUIRE(w.send(2, {1, 2}, alice));
    CHECK(messages(*phone) == Copies{{2, 1}});
    CHECK(messages(*laptop) == Copies{{2, 2}});
    REQUIRE(w.delivery->ack(MailboxId{"bob", 1}, "alice", {mid(2)}));
    REQUIRE(w.delivery->ack(MailboxId{"bob", 2}, "alice", {mid(2)}));
    w.settle();
    CHECK(w.stored(1).empty());
    CHECK(w.stored(2).empty());
    CHECK(receipts(*alice, sim::ReceiptStatus::stored).empty());
    CHECK(receipts(*alice, sim::ReceiptStatus::delivered).size() == 2);
}

TEST_CASE("a message that one device's mailbox cannot take is refused for every device") {
    Delivery::Limits limits;
    limits.max_stored_per_recipient = 1;
    World w(limits);
    auto alice = std::make_shared<FakePeer>();
    w.attach(MailboxId{"alice", 1}, alice);
    REQUIRE(w.send(1, {2}, alice));  // the laptop's mailbox is full now
    w.settle();
    const auto st = w.send(2, {1, 2}, alice);
    REQUIRE_FALSE(st);
    CHECK(st.code() == sim::Errc::queue_full);
    w.settle();
    CHECK(w.stored(1).empty());  // not stored for the phone either: all or none
    CHECK(w.stored(2) == std::vector<std::uint8_t>{1});
    CHECK(w.delivery->backlog(MailboxId{"bob", 1}).value().messages == 0);
    CHECK(w.delivery->sender_bytes("alice").value() == sim::encode_envelope({mid(1), sim::ConversationMode::end_to_end, sim::Bytes{2}}).size());
}

TEST_CASE("acknowledged messages count against the window until their deletion commits") {
    // After a crash the server sends again what it has not deleted; the client shows each id once only among the
    // last remembered_ids_per_sender of a sender, so no more than the window may be sent and not deleted.
    Delivery::Limits limits;
    limits.window = 2;
    World w(limits);
    auto alice = std::make_shared<FakePeer>();
    auto phone = std::make_shared<FakePeer>();
    w.attach(MailboxId{"alice", 1}, alice);
    w.attach(MailboxId{"bob", 1}, phone);
    using Copies = std::vector<std::pair<std::uint8_t, std::uint8_t>>;
    REQUIRE(w.send(1, {1}, alice));
    REQUIRE(w.send(2, {1}, alice));
    CHECK(messages(*phone) == Copies{{1, 1}, {2, 1}});  // caught up: sent as they are queued
    w.settle();
    REQUIRE(w.delivery->ack(MailboxId{"bob", 1}, "alice", {mid(1), mid(2)}));
    REQUIRE(w.send(3, {1}, alice));
    CHECK(messages(*phone).empty());  // 1 and 2 are acknowledged, not deleted yet: 3 waits
    w.settle();                       // the deletions (and 3's append) commit
    CHECK(messages(*phone) == Copies{{3, 1}});
    CHECK(w.stored(1) == std::vector<std::uint8_t>{3});
}

TEST_CASE("copies not in strictly increasing device order are refused, nothing queued") {
    World w;
    auto alice = std::make_shared<FakePeer>();
    w.attach(MailboxId{"alice", 1}, alice);
    for (const auto& devices : {std::vector<sim::DeviceId>{2, 1}, std::vector<sim::DeviceId>{1, 1},
                                std::vector<sim::DeviceId>{}}) {
        const auto st = w.send(1, devices, alice);
        REQUIRE_FALSE(st);
        CHECK(st.code() == sim::Errc::bad_field);
    }
    w.settle();
    CHECK(w.stored(1).empty());
    CHECK(w.stored(2).empty());
    REQUIRE(w.send(1, {1, 2}, alice));  // the stream expects 1 again
}

namespace {

/// Two server nodes on one store, joined by a test bus: each node's connections are in its own in-process bus, and
/// a wake-up or a frame for a device attached on the other node goes straight to that node's bus (as the NATS bus
/// carries them). For the wake-up path of several nodes without a broker.
class PairedBus final : public sim::server_detail::RoutingBus {
public:
    PairedBus* other = nullptr;
    std::unique_ptr<RoutingBus> here = sim::server_detail::make_local_bus();
    Woken woken;
    std::vector<MailboxId> wakes_sent;

    std::shared_ptr<sim::server_detail::Peer> attach(const MailboxId& m,
                                                     const std::shared_ptr<sim::server_detail::Peer>& p) override {
        return here->attach(m, p);
    }
    bool detach(const MailboxId& m, const sim::server_detail::Peer* p) override { return here->detach(m, p); }
    bool deliver(const MailboxId& m, const sim::Frame& f) override {
        return here->deliver(m, f) || other->here->deliver(m, f);
    }
    bool attached(const MailboxId& m) override { return here->attached(m) || other->here->attached(m); }
    std::vector<sim::DeviceId> attached_devices(const std::string& user) override {
        auto out = here->attached_devices(user);
        for (const auto d : other->here->attached_devices(user)) {
            out.push_back(d);
        }
        std::sort(out.begin(), out.end());
        return out;
    }
    std::shared_ptr<sim::server_detail::Peer> local(const MailboxId& m) override { return here->local(m); }
    std::vector<MailboxId> attached_here() override { return here->attached_here(); }
    std::vector<std::shared_ptr<sim::server_detail::Peer>> detach_all() override { return here->detach_all(); }
    void on_woken(Woken handler) override { woken = std::move(handler); }
    void wake(const MailboxId& m) override {
        wakes_sent.push_back(m);
        if (other->here->attached(m) && other->woken) {
            other->woken(m);  // no responders otherwise
        }
    }
};

/// The mailboxes of a backend, with the messages of the senders in `hidden` not visible to pending(): another
/// node's transaction that took its sequence numbers and has not committed yet.
struct HidingStore final : sim::store::MessageStore {
    sim::store::MessageStore& inner;
    std::set<std::string> hidden;
    explicit HidingStore(sim::store::MessageStore& s) : inner(s) {}
    sim::Result<std::vector<sim::store::StoredMessage>> pending(std::string_view recipient, sim::DeviceId device,
                                                              std::uint64_t after_seq, std::size_t limit) override {
        SIM_TRY(auto rows, inner.pending(recipient, device, after_seq, limit + 100));
        std::erase_if(rows, [&](const auto& row) { return hidden.count(row.sender) != 0; });
        rows.resize(std::min(rows.size(), limit));
        return rows;
    }
    sim::Result<Applied> apply(const Changes& changes) override { return inner.apply(changes); }
    sim::Result<sim::store::StoredUsage> usage(std::string_view recipient, sim::DeviceId device) override {
        return inner.usage(recipient, device);
    }
    sim::Result<std::map<std::string, sim::store::StoredUsage>> usage_by_sender() override {
        return inner.usage_by_sender();
    }
};

struct Node {
    sim::store::MessageStore& store;
    sim::testing::QueueExecutor commits;
    sim::testing::QueueExecutor workers;  // where wake-ups are drained
    sim::ManualClock clock;
    std::shared_ptr<GroupCommit> commit = std::make_shared<GroupCommit>(store, commits, clock);
    PairedBus bus;
    std::unique_ptr<sim::Rng> rng = sim::make_system_rng();
    sim::server_detail::Router router{bus,
                                      sim::SuitePolicy::default_policy(),
                                      nullptr,
                                      *rng,
                                      [] { return sim::store::WallTime{std::chrono::milliseconds(1'000'000)}; },
                                      [](sim::LogLevel, std::string_view) {}};
    std::shared_ptr<Delivery> delivery = std::make_shared<Delivery>(
        store, commit, router, bus, Delivery::Limits{},
        [] { return sim::store::WallTime{std::chrono::milliseconds(1'000'000)}; },
        [](sim::LogLevel, std::string_view) {});

    explicit Node(sim::store::MessageStore& s) : store(s) {
        bus.on_woken([this](const MailboxId& m) { delivery->woken(m, workers); });
    }
    void attach(const MailboxId& device, const std::shared_ptr<FakePeer>& peer) {
        (void)bus.attach(device, peer);
        delivery->login(device, peer.get());
    }
    void settle() {
        while (commits.run_pending() + workers.run_pending() != 0) {
        }
    }
};

struct Cluster {
    std::unique_ptr<sim::store::Backend> store = sim::store::make_memory_backend();
    HidingStore view{*store};
    Node a{view};
    Node b{view};
    std::shared_ptr<Delivery::Streams> streams = std::make_shared<Delivery::Streams>();
    Cluster() {
        a.bus.other = &b.bus;
        b.bus.other = &a.bus;
    }
    /// Message `n` from alice (on `node`) to bob's device 1.
    sim::Status send(Node& node, std::uint8_t n, const std::shared_ptr<FakePeer>& sender) {
        sim::Envelope e{mid(n), sim::ConversationMode::end_to_end, sim::Bytes{1}};
        std::uint32_t expected = 0;
        return node.delivery->submit(Delivery::Origin{"alice", 1, 7, sender, n, streams}, "bob",
                                     sim::pair_conversation_id("alice", "bob"), mid(n),
                                     {Delivery::Copy{1, sim::encode_envelope(e)}}, expected);
    }
};

}  // namespace

TEST_CASE("several nodes: a commit on one node wakes the node holding the recipient, which drains it from the store") {
    Cluster c;
    auto alice = std::make_shared<FakePeer>();
    auto bob = std::make_shared<FakePeer>();
    c.a.attach(MailboxId{"alice", 1}, alice);
    c.b.attach(MailboxId{"bob", 1}, bob);
    using Copies = std::vector<std::pair<std::uint8_t, std::uint8_t>>;

    REQUIRE(c.send(c.a, 1, alice));
    REQUIRE(c.send(c.a, 2, alice));
    CHECK(messages(*bob).empty());  // not attached on A: nothing goes out before the commit
    CHECK(c.a.commits.run_pending() != 0);
    CHECK(c.a.bus.wakes_sent == std::vector<MailboxId>{{"bob", 1}, {"bob", 1}});
    CHECK(c.b.workers.run_pending() == 1);  // the second wake-up joined the queued drain
    CHECK(messages(*bob) == Copies{{1, 1}, {2, 1}});
    CHECK(receipts(*alice, sim::ReceiptStatus::stored).size() == 2);
    CHECK(c.b.delivery->backlog(MailboxId{"bob", 1}).value().messages == 2);  // counted again from the store

    // Bob acknowledges on B: deleted there, and alice (on A) is told through the bus.
    REQUIRE(c.b.delivery->ack(MailboxId{"bob", 1}, "alice", {mid(1), mid(2)}));
    c.b.settle();
    CHECK(c.store->pending("bob", 1, 0, 10).value().empty());
    CHECK(receipts(*alice, sim::ReceiptStatus::delivered).size() == 1);
    CHECK(c.b.delivery->backlog(MailboxId{"bob", 1}).value().messages == 0);

    // A later wake-up sends nothing twice: the drain reads from the start and skips what bob has.
    REQUIRE(c.send(c.a, 3, alice));
    c.a.settle();
    c.b.settle();
    CHECK(messages(*bob) == Copies{{3, 1}});
    c.b.delivery->woken(MailboxId{"bob", 1}, c.b.workers);
    c.b.settle();
    CHECK(messages(*bob).empty());
}

TEST_CASE("several nodes: a wake-up drains rows numbered below what the holding node has read") {
    // Each node's transaction takes its sequence numbers before it commits: the holding node may read a later
    // number of its own before an earlier one of another node becomes visible. The drain after a wake-up reads the
    // mailbox from the start, so that earlier row is not skipped.
    Cluster c;
    auto alice = std::make_shared<FakePeer>();
    auto carol = std::make_shared<FakePeer>();
    c.a.attach(MailboxId{"alice", 1}, alice);
    c.b.attach(MailboxId{"carol", 1}, carol);
    c.b.attach(MailboxId{"bob", 1}, std::make_shared<FakePeer>());
    // Alice's message takes number 1 on A; its transaction is "not committed" (hidden) and its wake-up not sent.
    c.view.hidden.insert("alice");
    PairedBus* other = c.a.bus.other;
    c.a.bus.other = &c.a.bus;
    REQUIRE(c.send(c.a, 1, alice));
    c.a.settle();
    c.a.bus.other = other;
    // Carol's message on B takes number 2; bob reconnects to B and reads it: B has read up to 2.
    sim::Envelope e{mid(9), sim::ConversationMode::end_to_end, sim::Bytes{1}};
    std::uint32_t expected = 0;
    REQUIRE(c.b.delivery->submit(Delivery::Origin{"carol", 1, 8, carol, 1, std::make_shared<Delivery::Streams>()},
                                 "bob", sim::pair_conversation_id("carol", "bob"), mid(9),
                                 {Delivery::Copy{1, sim::encode_envelope(e)}}, expected));
    c.b.settle();
    auto bob = std::make_shared<FakePeer>();
    c.b.attach(MailboxId{"bob", 1}, bob);
    CHECK(bob->take(sim::FrameType::message).size() == 1);  // carol's
    // A's transaction commits and its wake-up arrives: message 1 comes, below what B had read.
    c.view.hidden.clear();
    c.a.bus.wake(MailboxId{"bob", 1});
    c.b.settle();
    using Copies = std::vector<std::pair<std::uint8_t, std::uint8_t>>;
    CHECK(messages(*bob) == Copies{{1, 1}});
}

TEST_CASE("several nodes: a device attached on neither node is woken on nobody; its login drains it") {
    Cluster c;
    auto alice = std::make_shared<FakePeer>();
    c.a.attach(MailboxId{"alice", 1}, alice);
    REQUIRE(c.send(c.a, 1, alice));
    c.a.settle();
    c.b.settle();
    CHECK(c.a.bus.wakes_sent.size() == 1);
    auto bob = std::make_shared<FakePeer>();
    c.b.attach(MailboxId{"bob", 1}, bob);
    using Copies = std::vector<std::pair<std::uint8_t, std::uint8_t>>;
    CHECK(messages(*bob) == Copies{{1, 1}});
}
