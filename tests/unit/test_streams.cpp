// Ordered streams (docs/protocol.md 6.6) as pure logic: the server's StreamOrder and the client's Outbox. The server
// and client tests drive them through the real cores; these pin the rules one by one.
#include "client/outbox.h"
#include "server/stream_order.h"

#include <doctest/doctest.h>

#include <chrono>
#include <vector>

using sim::client_detail::Outbox;
using sim::server_detail::StreamOrder;

namespace {

sim::MessageId id_of(std::uint32_t n) {
    sim::MessageId id{};
    id[14] = static_cast<std::uint8_t>(n >> 8U);
    id[15] = static_cast<std::uint8_t>(n);
    return id;
}

std::uint32_t number_of(const sim::Frame& f) {
    const auto env = sim::decode_envelope(f.payload);
    REQUIRE(env);
    return (std::uint32_t{env->id[14]} << 8U) | env->id[15];
}

sim::Bytes payload_of(std::uint32_t n) {
    return sim::encode_envelope(sim::Envelope{id_of(n), sim::ConversationMode::end_to_end, sim::Bytes(8, 1)});
}

/// (message number, wire seq) of each frame.
std::vector<std::pair<std::uint32_t, std::uint32_t>> sent(const std::vector<sim::Frame>& frames) {
    std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
    for (const auto& f : frames) {
        CHECK(f.type == sim::FrameType::message);
        CHECK(f.source == "alice");
        out.emplace_back(number_of(f), f.sid);
    }
    return out;
}

using Pairs = std::vector<std::pair<std::uint32_t, std::uint32_t>>;

/// Every payload goes as it is (end-to-end envelopes).
const Outbox::Seal as_is = [](const std::string&, sim::ByteView payload) -> sim::Result<std::optional<sim::Bytes>> {
    return std::optional<sim::Bytes>{sim::Bytes(payload.begin(), payload.end())};
};

}  // namespace

TEST_CASE("StreamOrder: a stream is accepted in order; a refusal holds the later numbers until it comes again") {
    StreamOrder s;
    const StreamOrder::Key k{"alice", 1, "bob"};
    CHECK(s.check(k, 0) == 0);  // unsequenced
    CHECK(s.check(k, 7) == 0);  // the first number of a stream sets its start
    s.accepted(k, 7);
    CHECK(s.check(k, 8) == 0);
    CHECK(s.check(k, 9) == 8);  // skipping ahead
    s.accepted(k, 8);
    CHECK(s.check(k, 5) == 0);  // a re-send of an accepted number: a duplicate, let through
    s.refused(k, 9);
    CHECK(s.check(k, 10) == 9);
    CHECK(s.check(k, 9) == 0);
    s.accepted(k, 9);
    CHECK(s.check(k, 10) == 0);
    // Other connections and recipients are other streams.
    CHECK(s.check({"alice", 2, "bob"}, 50) == 0);
    CHECK(s.check({"alice", 1, "carol"}, 50) == 0);
    CHECK(s.size() == 1);
}

TEST_CASE("StreamOrder: a failed commit holds the stream and skips what was queued behind it") {
    StreamOrder s;
    const StreamOrder::Key k{"alice", 1, "bob"};
    for (std::uint32_t n = 1; n <= 6; ++n) {
        s.accepted(k, n);
    }
    CHECK(s.admit(k, 1) == 0);
    s.committed(k, 1, StreamOrder::Outcome::written);
    CHECK(s.admit(k, 2) == 0);
    s.committed(k, 2, StreamOrder::Outcome::failed);
    s.committed(k, 3, StreamOrder::Outcome::failed);  // same batch
    CHECK(s.next(k) == 2);
    CHECK(s.check(k, 7) == 2);
    CHECK(s.admit(k, 4) == 2);  // queued before the failure was known
    s.committed(k, 4, StreamOrder::Outcome::skipped);
    CHECK(s.next(k) == 2);  // a skipped one does not move the stream
    // The sender sends again from 2: 5 and 6 from the old run are still skipped, the new 2 clears the hold.
    CHECK(s.check(k, 2) == 0);
    s.accepted(k, 2);
    CHECK(s.admit(k, 5) == 2);
    s.committed(k, 5, StreamOrder::Outcome::skipped);
    CHECK(s.admit(k, 2) == 0);
    CHECK(s.admit(k, 3) == 0);
    s.committed(k, 6, StreamOrder::Outcome::skipped);
    s.committed(k, 2, StreamOrder::Outcome::written);
    CHECK(s.next(k) == 3);  // the re-sent 2 is written: 3 comes next
}

TEST_CASE("Outbox: per stream in order, at most a window without receipt, numbered from 1 per connection") {
    Outbox box(std::chrono::seconds(10));
    const sim::TimePoint t0{};
    box.set_limits({100000, 100000, 3}, t0);
    box.restart(t0);
    for (std::uint32_t n = 1; n <= 5; ++n) {
        box.add(id_of(n), "bob", payload_of(n));
    }
    box.add(id_of(100), "carol", payload_of(100));
    const auto first = sent(box.take_due(t0, "alice", as_is).frames);
    CHECK(first == Pairs{{1, 1}, {2, 2}, {3, 3}, {100, 1}});
    CHECK(box.take_due(t0, "alice", as_is).frames.empty());
    const auto next = box.next_due(t0);  // only the re-send timer: the window waits for receipts
    REQUIRE(next);
    CHECK(*next == t0 + std::chrono::seconds(10));
    CHECK(box.remove(id_of(1)));
    CHECK_FALSE(box.remove(id_of(1)));
    CHECK(sent(box.take_due(t0, "alice", as_is).frames) == Pairs{{4, 4}});
    // A new connection: everything left is sent again, numbered from 1.
    box.restart(t0);
    CHECK(sent(box.take_due(t0, "alice", as_is).frames) == Pairs{{2, 1}, {3, 2}, {4, 3}, {100, 1}});
    CHECK(box.size() == 5);
    CHECK(box.ids_in_order() == std::vector<sim::MessageId>{id_of(2), id_of(3), id_of(4), id_of(5), id_of(100)});
}

TEST_CASE("Outbox: a refusal sends the stream again from the expected number, after a back-off, in the same order") {
    Outbox box(std::chrono::seconds(10));
    const sim::TimePoint t0{};
    box.set_limits({100000, 100000, 100}, t0);
    box.restart(t0);
    for (std::uint32_t n = 1; n <= 6; ++n) {
        box.add(id_of(n), "bob", payload_of(n));
    }
    box.add(id_of(100), "carol", payload_of(100));
    CHECK(sent(box.take_due(t0, "alice", as_is).frames).size() == 7);
    // 3 refused for the rate (the server expects 3), 4-6 out of order: nothing to bob for a second.
    CHECK_FALSE(box.refused({"bob", id_of(3), sim::Errc::rate_limited, 3}, t0));
    CHECK_FALSE(box.refused({"bob", id_of(4), sim::Errc::out_of_order, 3}, t0));
    CHECK(box.take_due(t0 + std::chrono::milliseconds(500), "alice", as_is).frames.empty());
    const auto due = box.next_due(t0 + std::chrono::milliseconds(500));
    REQUIRE(due);
    CHECK(*due == t0 + std::chrono::seconds(1));
    box.add(id_of(7), "bob", payload_of(7));
    CHECK(sent(box.take_due(t0 + std::chrono::seconds(1), "alice", as_is).frames) ==
          Pairs{{3, 3}, {4, 4}, {5, 5}, {6, 6}, {7, 7}});
    // A refusal that will not pass by itself is reported, and the stream waits long.
    CHECK(box.remove(id_of(100)));  // carol's stream never waited: its message got its receipt
    CHECK(box.refused({"bob", id_of(3), sim::Errc::no_conversation, 3}, t0 + std::chrono::seconds(1)));
    CHECK(box.take_due(t0 + std::chrono::seconds(20), "alice", as_is).frames.empty());
    // Then the whole stream goes again, 1 and 2 too: their receipts never came.
    CHECK(sent(box.take_due(t0 + std::chrono::seconds(31), "alice", as_is).frames) ==
          Pairs{{1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}, {6, 6}, {7, 7}});
}

TEST_CASE("Outbox: paced to the announced rate, and sent again from the oldest when no receipt comes") {
    Outbox box(std::chrono::seconds(10));
    const sim::TimePoint t0{};
    box.set_limits({100, 20, 1000}, t0);  // uses 80 % of the rate and half the burst: 80/s, 10 at once
    box.restart(t0);
    for (std::uint32_t n = 1; n <= 300; ++n) {
        box.add(id_of(n), "bob", payload_of(n));
    }
    CHECK(box.take_due(t0, "alice", as_is).frames.size() == 10);
    const auto due = box.next_due(t0);
    REQUIRE(due);
    CHECK(*due > t0);
    CHECK(*due <= t0 + std::chrono::milliseconds(13));
    // Capped by the burst.
    CHECK(box.take_due(t0 + std::chrono::milliseconds(500), "alice", as_is).frames.size() == 10);
    std::size_t total = 20;
    for (int ms = 600; ms <= 2000; ms += 100) {
        total += box.take_due(t0 + std::chrono::milliseconds(ms), "alice", as_is).frames.size();
    }
    CHECK(total >= 20 + 100);  // 1.5 s at 80/s
    CHECK(total <= 20 + 130);
    // Receipts for 1-5 only; after resend_after the stream goes again from the oldest unreceipted one (6, as 6).
    for (std::uint32_t n = 1; n <= 5; ++n) {
        CHECK(box.remove(id_of(n)));
    }
    const auto again = sent(box.take_due(t0 + std::chrono::seconds(11), "alice", as_is).frames);
    REQUIRE_FALSE(again.empty());
    CHECK(again.front() == std::pair<std::uint32_t, std::uint32_t>{6, 6});
}

TEST_CASE("Outbox: a stream whose next message cannot be sealed is held, others go; release() lets it go on in order") {
    Outbox box(std::chrono::seconds(10));
    const sim::TimePoint t0{};
    box.set_limits({100000, 100000, 100}, t0);
    box.restart(t0);
    for (std::uint32_t n = 1; n <= 3; ++n) {
        box.add(id_of(n), "bob", payload_of(n));
    }
    box.add(id_of(100), "carol", payload_of(100));
    bool bob_keyed = false;
    std::vector<std::string> asked;
    const Outbox::Seal seal = [&](const std::string& peer,
                                  sim::ByteView payload) -> sim::Result<std::optional<sim::Bytes>> {
        asked.push_back(peer);
        if (peer == "bob" && !bob_keyed) {
            return std::optional<sim::Bytes>{};
        }
        sim::Bytes out(payload.begin(), payload.end());
        out.push_back(0xAA);  // what the sealer made of it goes on the wire
        return std::optional<sim::Bytes>{std::move(out)};
    };
    const auto first = box.take_due(t0, "alice", seal).frames;
    CHECK(sent(first) == Pairs{{100, 1}});
    REQUIRE(first.size() == 1);
    CHECK(first[0].payload.back() == 0xAA);
    CHECK(box.unsent() == 3);
    // Held: not asked again, and no wake-up is due for it (no busy loop while the key is missing).
    asked.clear();
    CHECK(box.take_due(t0 + std::chrono::seconds(1), "alice", seal).frames.empty());
    CHECK(asked.empty());
    const auto due = box.next_due(t0 + std::chrono::seconds(1));
    REQUIRE(due);
    CHECK(*due == t0 + std::chrono::seconds(10));  // carol's re-send timer; nothing for bob
    box.add(id_of(4), "bob", payload_of(4));
    CHECK(box.take_due(t0 + std::chrono::seconds(1), "alice", seal).frames.empty());
    bob_keyed = true;
    box.release("bob");
    CHECK(sent(box.take_due(t0 + std::chrono::seconds(1), "alice", seal).frames) ==
          Pairs{{1, 1}, {2, 2}, {3, 3}, {4, 4}});
    // A new connection releases every stream too.
    bob_keyed = false;
    box.restart(t0 + std::chrono::seconds(2));
    CHECK(sent(box.take_due(t0 + std::chrono::seconds(2), "alice", seal).frames) == Pairs{{100, 1}});  // no receipt yet
    CHECK(box.remove(id_of(100)));
    bob_keyed = true;
    box.restart(t0 + std::chrono::seconds(3));
    CHECK(sent(box.take_due(t0 + std::chrono::seconds(3), "alice", seal).frames) ==
          Pairs{{1, 1}, {2, 2}, {3, 3}, {4, 4}});
}

TEST_CASE("Outbox: a message its Seal refuses is dropped and handed back; the ones behind it go on, numbered on") {
    Outbox box(std::chrono::seconds(10));
    const auto t0 = sim::TimePoint{} + std::chrono::hours(1);
    box.restart(t0);
    for (std::uint32_t n = 1; n <= 3; ++n) {
        box.add(id_of(n), "bob", payload_of(n));
    }
    box.add(id_of(100), "carol", payload_of(100));
    const Outbox::Seal seal = [&](const std::string&, sim::ByteView payload) -> sim::Result<std::optional<sim::Bytes>> {
        const auto env = sim::decode_envelope(payload);
        REQUIRE(env);
        if (env->id == id_of(2) || env->id == id_of(100)) {
            return sim::Error{sim::Errc::frame_too_large, "too large"};
        }
        return std::optional<sim::Bytes>{sim::Bytes(payload.begin(), payload.end())};
    };
    const auto due = box.take_due(t0, "alice", seal);
    CHECK(sent(due.frames) == Pairs{{1, 1}, {3, 2}});
    REQUIRE(due.dropped.size() == 2);
    CHECK(due.dropped[0].id == id_of(2));
    CHECK(due.dropped[0].order == 1);
    CHECK(due.dropped[0].peer == "bob");
    CHECK(due.dropped[0].error.code == sim::Errc::frame_too_large);
    CHECK(due.dropped[1].id == id_of(100));
    CHECK(due.dropped[1].peer == "carol");
    CHECK(box.size() == 2);
    CHECK(box.ids_in_order() == std::vector<sim::MessageId>{id_of(1), id_of(3)});
    CHECK_FALSE(box.remove(id_of(2)));
    // Gone for good: not offered again on the next connection, and carol's emptied stream waits for nothing.
    box.restart(t0 + std::chrono::seconds(1));
    const auto again = box.take_due(t0 + std::chrono::seconds(1), "alice", seal);
    CHECK(sent(again.frames) == Pairs{{1, 1}, {3, 2}});
    CHECK(again.dropped.empty());
    CHECK(box.remove(id_of(1)));
    CHECK(box.remove(id_of(3)));
    CHECK_FALSE(box.next_due(t0 + std::chrono::seconds(2)));
}
