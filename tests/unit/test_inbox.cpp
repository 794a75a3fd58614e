// The client inbox (libsim/src/client/inbox.h) on its own: what it writes reads back, and a damaged header or entry
// (a bad disk, an edited file) gives Errc::corrupt_database, never a crash or a made-up message.
#include "client/inbox.h"

#include <doctest/doctest.h>

#include <sim/client_state.h>

#include <random>
#include <string>
#include <vector>

using sim::Errc;
using sim::InboxEntry;
using sim::client_detail::Inbox;

namespace {

const std::string self = "carol";  // whose client state it is

InboxEntry entry(const std::string& peer, std::uint8_t n, const std::string& text) {
    InboxEntry e;
    e.peer = peer;
    e.message_id.fill(n);
    e.seq = n;
    e.text = text;
    // Distinct times per message: the sender's clock, and the server's a little later.
    e.sent_at = sim::WallTime{std::chrono::milliseconds{1'700'000'000'000 + 1000 * std::int64_t{n}}};
    e.received_at = e.sent_at + std::chrono::milliseconds{250};
    e.conversation = sim::pair_conversation_id(self, peer);
    e.conversation[0] ^= n;  // not derivable from the names: what is written is what is read
    e.sender_device = 100 + n;
    return e;
}

/// An inbox of three messages (alice, bob, alice) committed to `state`, the first one read.
Inbox filled(sim::ClientState& state) {
    Inbox inbox;
    REQUIRE(inbox.load(state, self));
    std::uint64_t index = 0;
    for (const auto& e : {entry("alice", 1, "one"), entry("bob", 2, "two"), entry("alice", 3, "three")}) {
        REQUIRE(state.write(inbox.add(e, index)));
    }
    REQUIRE(state.write(inbox.mark_read(1)));
    return inbox;
}

sim::SecureBytes get(const sim::ClientState& state, const std::string& key) {
    auto v = state.get(key).value();
    REQUIRE(v.has_value());
    return *v;
}

void put(sim::ClientState& state, const std::string& key, sim::SecureBytes value) {
    REQUIRE(state.write({{key, std::move(value)}}));
}

}  // namespace

TEST_CASE("inbox: what is added reads back in order, by peer, with the read cursor, after a reload") {
    auto state = sim::make_memory_client_state();
    filled(*state);
    Inbox again;
    REQUIRE(again.load(*state, self));
    CHECK(again.status().next == 3);
    CHECK(again.status().first_unread == 1);
    const auto all = again.read(*state, 0, 10, "").value();
    REQUIRE(all.size() == 3);
    CHECK(all[0].text == "one");
    CHECK(all[0].read);
    CHECK_FALSE(all[1].read);
    CHECK(all[2].index == 2);
    CHECK(all[2].message_id == entry("alice", 3, "").message_id);
    CHECK(all[1].peer == "bob");
    for (std::size_t i = 0; i < all.size(); ++i) {
        const auto n = static_cast<std::uint8_t>(i + 1);
        CHECK(all[i].sent_at == entry("", n, "").sent_at);
        CHECK(all[i].received_at == entry("", n, "").received_at);
        CHECK(all[i].conversation == entry(all[i].peer, n, "").conversation);
        CHECK(all[i].sender_device == 100 + n);
    }
    const auto from_alice = again.read(*state, 0, 10, "alice").value();
    REQUIRE(from_alice.size() == 2);
    CHECK(from_alice[1].text == "three");
    CHECK(again.read(*state, 1, 1, "").value().at(0).text == "two");
    CHECK(again.read(*state, 3, 10, "").value().empty());
    CHECK(again.mark_read(0).empty());  // the cursor never moves back
}

TEST_CASE("inbox: a damaged header is refused") {
    auto state = sim::make_memory_client_state();
    filled(*state);
    const auto good = get(*state, "inbox");
    const auto refused = [&](sim::SecureBytes header) {
        put(*state, "inbox", std::move(header));
        Inbox inbox;
        return inbox.load(*state, self).code() == Errc::corrupt_database;
    };
    for (std::size_t n = 0; n < good.size(); ++n) {
        CHECK(refused(sim::SecureBytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n))));
    }
    auto longer = good;
    longer.push_back(0);
    CHECK(refused(longer));
    auto version = good;
    version[0] = 2;
    CHECK(refused(version));
    auto cursor_ahead = good;
    cursor_ahead.back() = 9;  // first unread 9 > next 3
    CHECK(refused(cursor_ahead));
}

TEST_CASE("inbox: a damaged, missing or foreign entry is refused, never shown") {
    auto state = sim::make_memory_client_state();
    const auto inbox = filled(*state);
    const auto good = get(*state, "inbox/1");
    const auto read_with = [&](sim::SecureBytes record) {
        put(*state, "inbox/1", std::move(record));
        return inbox.read(*state, 0, 10, "");
    };
    // Cut inside the fixed part (version, mode, name, id, seq, sent_at, received_at, conversation, sender device,
    // from_me): refused. The text is the rest, so a cut there only shortens it.
    const std::size_t fixed = 1 + 1 + 1 + 3 + 16 + 8 + 8 + 8 + 16 + 4 + 1;  // peer "bob"
    for (std::size_t n = 0; n < fixed; ++n) {
        CHECK(read_with(sim::SecureBytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n))).code() ==
              Errc::corrupt_database);
    }
    CHECK(read_with(sim::SecureBytes(good.begin(), good.begin() + fixed)).value().at(1).text.empty());
    for (const std::uint8_t v : {0, 5, 255}) {
        auto version = good;
        version[0] = v;
        CHECK(read_with(version).code() == Errc::corrupt_database);
    }
    for (const std::uint8_t mode : {0, 3, 255}) {
        auto m = good;
        m[1] = mode;
        CHECK(read_with(m).code() == Errc::corrupt_database);
    }
    auto device_zero = good;
    std::fill_n(device_zero.begin() + fixed - 4, 4, 0);
    CHECK(read_with(device_zero).code() == Errc::corrupt_database);
    auto long_name = good;
    long_name[2] = 200;  // a name longer than the record
    CHECK(read_with(long_name).code() == Errc::corrupt_database);
    // Random records: refused or read, never more than the record holds, never a crash.
    std::mt19937 rng(7);
    for (int i = 0; i < 2000; ++i) {
        sim::SecureBytes junk(rng() % 64);
        for (auto& b : junk) {
            b = static_cast<std::uint8_t>(rng());
        }
        const auto r = read_with(junk);
        if (r) {
            CHECK(r->at(1).peer.size() + r->at(1).text.size() +
                      (junk[0] == 3   ? 63U
                       : junk[0] == 2 ? 43U
                                      : 27U) <=
                  junk.size());
        } else {
            CHECK(r.code() == Errc::corrupt_database);
        }
    }
    // An entry the header counts but the store does not hold.
    REQUIRE(state->write({{"inbox/1", std::nullopt}}));
    CHECK(inbox.read(*state, 0, 10, "").code() == Errc::corrupt_database);
    CHECK(inbox.read(*state, 2, 10, "").value().size() == 1);  // the entries after it still read
}

TEST_CASE("inbox: an entry of version 1 (before timestamps) still reads, with both times unknown") {
    auto state = sim::make_memory_client_state();
    const auto inbox = filled(*state);
    // Version 1 as the earlier release wrote it: version | mode | peer len | peer | id | seq | text.
    sim::SecureBytes v1{1, static_cast<std::uint8_t>(sim::ConversationMode::server_assigned), 3, 'b', 'o', 'b'};
    v1.insert(v1.end(), 16, 0x42);
    v1.insert(v1.end(), {0, 0, 0, 0, 0, 0, 0, 9});
    v1.insert(v1.end(), {'o', 'l', 'd'});
    put(*state, "inbox/1", v1);
    const auto all = inbox.read(*state, 0, 10, "").value();
    REQUIRE(all.size() == 3);
    const auto& old = all[1];
    CHECK(old.peer == "bob");
    CHECK(old.mode == sim::ConversationMode::server_assigned);
    CHECK(old.message_id == entry("", 0x42, "").message_id);
    CHECK(old.seq == 9);
    CHECK(old.text == "old");
    CHECK(old.sent_at == sim::WallTime{});
    CHECK(old.received_at == sim::WallTime{});
    CHECK(old.conversation == sim::pair_conversation_id(self, "bob"));
    CHECK(old.sender_device == sim::first_device);
    // its neighbours, of version 2, keep theirs
    CHECK(all[0].sent_at == entry("", 1, "").sent_at);
    CHECK(all[2].received_at == entry("", 3, "").received_at);
}

TEST_CASE("inbox: an entry of version 2 (before devices) reads with the pair's conversation and device 1") {
    auto state = sim::make_memory_client_state();
    const auto inbox = filled(*state);
    // Version 2 as the earlier release wrote it: version 4's record without conversation, sender device and
    // from_me.
    auto v2 = get(*state, "inbox/1");
    const std::size_t devices_at = 1 + 1 + 1 + 3 + 16 + 8 + 8 + 8;  // peer "bob"
    v2.erase(v2.begin() + devices_at, v2.begin() + devices_at + 16 + 4 + 1);
    v2[0] = 2;
    put(*state, "inbox/1", v2);
    const auto all = inbox.read(*state, 0, 10, "").value();
    REQUIRE(all.size() == 3);
    CHECK(all[1].text == "two");
    CHECK(all[1].sent_at == entry("", 2, "").sent_at);
    CHECK(all[1].conversation == sim::pair_conversation_id(self, "bob"));
    CHECK(all[1].sender_device == sim::first_device);
    CHECK(all[2].sender_device == 103);  // its neighbours, of version 4, keep theirs
}

TEST_CASE("inbox: an own copy keeps its from_me flag; an entry of version 3 reads as not from us") {
    auto state = sim::make_memory_client_state();
    Inbox inbox;
    REQUIRE(inbox.load(*state, self));
    std::uint64_t index = 0;
    auto mine = entry("bob", 1, "sent from my phone");
    mine.from_me = true;
    REQUIRE(state->write(inbox.add(mine, index)));
    REQUIRE(state->write(inbox.add(entry("bob", 2, "from bob"), index)));
    auto all = inbox.read(*state, 0, 10, "bob").value();
    REQUIRE(all.size() == 2);
    CHECK(all[0].from_me);
    CHECK(all[0].text == "sent from my phone");
    CHECK_FALSE(all[1].from_me);
    // Version 3 as the earlier release wrote it: version 4's record without the flag.
    auto v3 = get(*state, "inbox/0");
    const std::size_t flag_at = 1 + 1 + 1 + 3 + 16 + 8 + 8 + 8 + 16 + 4;  // peer "bob"
    v3.erase(v3.begin() + flag_at);
    v3[0] = 3;
    put(*state, "inbox/0", v3);
    all = inbox.read(*state, 0, 10, "").value();
    CHECK_FALSE(all[0].from_me);
    CHECK(all[0].text == "sent from my phone");
    // A flag other than 0 or 1 is damage.
    auto bad = get(*state, "inbox/1");
    bad.at(flag_at) = 2;
    put(*state, "inbox/1", bad);
    CHECK(inbox.read(*state, 0, 10, "").code() == Errc::corrupt_database);
}
