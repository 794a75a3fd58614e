// End-to-end mode against a misbehaving server (docs/security.md, "What the server can and cannot do in end-to-end
// mode"). `EvilServer` speaks the real protocol (the channel handshake, then the inner frames of docs/protocol.md
// sections 5 and 6) to real ClientCores over in-memory pipes, and can drop, duplicate, reorder, replay, rewrite and
// tamper with messages, drop acknowledgements, and hand out its own keys for a user. Deterministic: a manual clock,
// a deterministic RNG; nothing sleeps.
#include "harness.h"

#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/e2e.h>
#include <sim/frame.h>
#include <sim/messages.h>
#include <sim/testing.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
using sim_test::TestClient;
namespace e2e = sim::e2e;

namespace {

sim::MessageId envelope_id(const sim::Frame& f) {
    auto m = sim::decode_submission(f.payload);
    REQUIRE(m);
    return m->id;
}

/// `f` (a message as a client sent it) made to look as if it came from `source`: the frame's source and the
/// conversation id of the client's message both rewritten, as a server that forges consistently would.
sim::Frame readdressed(sim::Frame f, const std::string& source) {
    auto m = sim::decode_submission(f.payload);
    REQUIRE(m);
    m->conversation = sim::pair_conversation_id(source, f.destination);
    f.source = source;
    f.payload = sim::encode_submission(*m);
    return f;
}

/// The id of a message as the server delivers it (delivery header, then the envelope).
sim::MessageId delivered_id(const sim::Frame& f) {
    auto d = sim::decode_delivered(f.payload);
    REQUIRE(d);
    return d->envelope.id;
}

/// A server that follows the protocol where the test does not tell it otherwise, and keeps everything it relays.
class EvilServer {
public:
    EvilServer(sim::Rng& rng, const sim::Clock& clock) : m_rng(rng), m_clock(clock), m_static(rng.secure_bytes(32)) {
        fake_identity = e2e::generate_identity(rng);
        fake_spk = e2e::generate_signed_prekey(fake_identity, 77, rng);
        for (std::uint32_t i = 0; i < 4; ++i) {
            fake_opks.push_back(e2e::generate_one_time_prekey(900 + i, rng));
        }
    }

    // ------------------------------------------------------------ what the test controls and sees

    /// Every `message` frame the clients sent, in order, as sent.
    std::vector<sim::Frame> log;
    /// Return true to keep a client's message instead of relaying it (it stays in `log`; deliver() sends it later).
    std::function<bool(const sim::Frame&)> withhold;
    /// Drop `ack` frames instead of acting on them (the recipient's client never learns).
    bool drop_acks = false;
    /// Refuse a message with the returned code instead of relaying it, as docs/protocol.md 6.6 says: a refusal names
    /// it and its number, and later numbers of the stream are refused (out_of_order) until it comes again.
    std::function<std::optional<sim::Errc>(const sim::Frame&)> refuse;
    /// The `limits` frame sent at each login (this server refuses nothing, so a wide window by default).
    sim::ServerLimits limits{100000, 100000, 4000};
    /// Every `ack` frame received: (recipient, ids).
    std::vector<std::pair<std::string, std::vector<sim::MessageId>>> acks;
    /// Users whose prekey bundle is replaced by the server's own keys.
    std::set<std::string, std::less<>> substitute;
    /// Users whose bundle keeps the real identity key but carries the server's signed prekey (badly signed).
    std::set<std::string, std::less<>> forge_signed_prekey;
    /// The server's own identity, signed prekey and one-time prekeys (a man in the middle's keys).
    e2e::IdentityKeyPair fake_identity;
    e2e::SignedPrekey fake_spk;
    std::vector<e2e::OneTimePrekey> fake_opks;
    /// Key conversations itself (KEYGEN mode 1, docs/protocol.md 5.1: the seed's server-assigned mode) instead of
    /// handing out prekey bundles: a new key for a pair when both are online, sent to both once; the conversation
    /// ends when either connection closes.
    bool server_assigned = false;
    /// What each user uploaded (public keys only: all the server ever gets).
    std::map<std::string, sim::PrekeyUpload, std::less<>> uploads;

    /// The receive time this server states in the delivery header of what it delivers (docs/protocol.md 6.5).
    sim::WallTime receive_time{std::chrono::milliseconds{1'750'000'000'000}};
    /// Rewrites a delivered payload (delivery header, then the envelope) before it goes out, and stays so.
    std::function<void(sim::Bytes&)> rewrite;

    /// Send `frame` (as a client sent it) to its destination as a relayed message, behind a delivery header stating
    /// `receive_time`, now if online, and again at each login until acked.
    void deliver(const sim::Frame& frame) {
        sim::Frame out = frame;
        const auto s = sim::decode_submission(frame.payload);
        REQUIRE(s);
        out.payload = sim::encode_delivered(receive_time, s->conversation, s->sender_device,
                                            sim::device_envelope(*s, 0));
        if (rewrite) {
            rewrite(out.payload);
        }
        m_unacked[frame.destination].push_back(out);
        if (auto* c = online(frame.destination)) {
            c->send_inner(out);
        }
    }
    /// Messages delivered to `user` and not acknowledged.
    [[nodiscard]] std::size_t unacked(const std::string& user) const {
        const auto it = m_unacked.find(user);
        return it == m_unacked.end() ? 0 : it->second.size();
    }
    /// The identity key `user` uploaded.
    [[nodiscard]] sim::Bytes identity_of(const std::string& user) const { return uploads.at(user).identity_key; }
    /// A bundle of `user`'s real keys, taking one of its one-time prekeys (as the protocol says: handed out once).
    e2e::PrekeyBundle real_bundle(const std::string& user) {
        auto& up = uploads.at(user);
        e2e::PrekeyBundle b{up.identity_key, up.signed_prekey_id, up.signed_prekey, up.signed_prekey_signature, {}, {}};
        if (!up.one_time_prekeys.empty()) {
            b.one_time_prekey_id = up.one_time_prekeys.front().first;
            b.one_time_prekey = up.one_time_prekeys.front().second;
            up.one_time_prekeys.erase(up.one_time_prekeys.begin());
        }
        return b;
    }
    e2e::PrekeyBundle fake_bundle() {
        e2e::PrekeyBundle b{fake_identity.public_key, fake_spk.id, fake_spk.public_key, fake_spk.signature, {}, {}};
        if (m_next_fake_opk < fake_opks.size()) {
            b.one_time_prekey_id = fake_opks[m_next_fake_opk].id;
            b.one_time_prekey = fake_opks[m_next_fake_opk].public_key;
            ++m_next_fake_opk;
        }
        return b;
    }
    [[nodiscard]] const e2e::OneTimePrekey* fake_opk(std::uint32_t id) const {
        for (const auto& k : fake_opks) {
            if (k.id == id) {
                return &k;
            }
        }
        return nullptr;
    }

    // ------------------------------------------------------------ connections

    struct Conn final : sim::ConnectionHandler {
        EvilServer& server;
        std::shared_ptr<sim::ConnectionOutput> out;
        std::optional<sim::ServerHandshake> hs;
        std::optional<sim::SendSession> send;
        std::optional<sim::RecvSession> recv;
        sim::FrameDecoder decoder;
        std::string user;

        Conn(EvilServer& s, std::shared_ptr<sim::ConnectionOutput> o) : server(s), out(std::move(o)) {}

        void send_inner(const sim::Frame& f) {
            auto inner = sim::encode_frame(f, sim::max_inner_frame_size(sim::default_max_frame_size));
            REQUIRE(inner);
            auto record = send->seal(*inner);
            REQUIRE(record);
            auto bytes = sim::encode_frame(sim::Frame{sim::FrameType::record, 0, {}, {}, std::move(*record)});
            REQUIRE(bytes);
            out->send(std::move(*bytes));
        }

        void on_bytes(sim::ByteView data) override {
            decoder.feed(data);
            for (;;) {
                auto next = decoder.next();
                REQUIRE(next);
                if (!next->has_value()) {
                    return;
                }
                on_frame(std::move(**next));
            }
        }

        void on_frame(sim::Frame f) {
            if (hs) {
                REQUIRE(f.type == sim::FrameType::handshake);
                REQUIRE(hs->read_message(f.payload));
                while (hs->next_action() == sim::ChannelAction::write_message) {
                    auto msg = hs->write_message();
                    REQUIRE(msg);
                    auto bytes = sim::encode_frame(sim::Frame{sim::FrameType::handshake, 0, {}, {}, std::move(*msg)},
                                                   sim::max_channel_handshake_message + 64);
                    REQUIRE(bytes);
                    out->send(std::move(*bytes));
                }
                if (hs->next_action() == sim::ChannelAction::complete) {
                    auto est = hs->finish();
                    REQUIRE(est);
                    send.emplace(std::move(est->send));
                    recv.emplace(std::move(est->recv));
                    hs.reset();
                }
                return;
            }
            REQUIRE(f.type == sim::FrameType::record);
            auto plain = recv->open(f.payload);
            REQUIRE(plain);
            auto inner = sim::decode_frame(*plain, sim::max_inner_frame_size(sim::default_max_frame_size));
            REQUIRE(inner);
            server.on_inner(*this, std::move(*inner));
        }

        void on_closed(sim::Errc) override {
            const auto it = server.m_online.find(user);
            if (it != server.m_online.end() && it->second == this) {
                server.m_online.erase(it);
                std::erase_if(server.m_keyed,
                              [&](const auto& pair) { return pair.first == user || pair.second == user; });
            }
        }
    };

    std::shared_ptr<sim::ConnectionHandler> accept(std::shared_ptr<sim::ConnectionOutput> out) {
        auto c = std::make_shared<Conn>(*this, std::move(out));
        sim::ServerHandshakeConfig cfg;
        cfg.static_private_key = m_static;
        auto hs = sim::ServerHandshake::create(std::move(cfg), m_rng, m_clock);
        REQUIRE(hs);
        c->hs.emplace(std::move(*hs));
        return c;
    }

private:
    std::map<std::string, std::uint32_t> m_held;  // user -> the number its stream must send next

    Conn* online(const std::string& user) {
        const auto it = m_online.find(user);
        return it == m_online.end() ? nullptr : it->second;
    }

    static sim::Frame from_server(sim::FrameType type, std::uint32_t sid, const std::string& to, sim::Bytes payload) {
        return sim::Frame{type, sid, std::string(sim::server_name), to, std::move(payload)};
    }

    void on_inner(Conn& c, sim::Frame f) {
        switch (f.type) {
            case sim::FrameType::init:
                on_init(c, f);
                return;
            case sim::FrameType::prekeys: {
                auto up = sim::decode_prekey_upload(f.payload);
                REQUIRE(up);
                auto it = uploads.find(c.user);
                if (up->replace || it == uploads.end()) {
                    uploads[c.user] = std::move(*up);
                } else {
                    it->second.signed_prekey_id = up->signed_prekey_id;
                    it->second.signed_prekey = up->signed_prekey;
                    it->second.signed_prekey_signature = up->signed_prekey_signature;
                    for (auto& k : up->one_time_prekeys) {
                        it->second.one_time_prekeys.push_back(std::move(k));
                    }
                }
                return;
            }
            case sim::FrameType::message: {
                log.push_back(f);
                const auto refusal = [&](sim::Errc code, std::uint32_t expected) {
                    c.send_inner(from_server(sim::FrameType::receipt,
                                             static_cast<std::uint32_t>(sim::ReceiptStatus::refused), c.user,
                                             sim::encode_refusal({f.destination, envelope_id(f), code, expected})));
                };
                if (const auto held = m_held.find(c.user); held != m_held.end() && f.sid != 0) {
                    if (f.sid > held->second) {
                        refusal(sim::Errc::out_of_order, held->second);
                        return;
                    }
                    if (f.sid == held->second) {
                        m_held.erase(held);
                    }
                }
                if (const auto code = refuse ? refuse(f) : std::nullopt; code && f.sid != 0) {
                    m_held[c.user] = f.sid;
                    refusal(*code, f.sid);
                    return;
                }
                if (!withhold || !withhold(f)) {
                    deliver(f);
                }
                return;
            }
            case sim::FrameType::ack: {
                auto ids = sim::decode_ack(f.payload);
                REQUIRE(ids);
                acks.emplace_back(c.user, *ids);
                if (drop_acks) {
                    return;
                }
                auto& q = m_unacked[c.user];
                std::erase_if(q, [&](const sim::Frame& m) {
                    return m.source == f.destination &&
                           std::find(ids->begin(), ids->end(), delivered_id(m)) != ids->end();
                });
                if (auto* sender = online(f.destination)) {
                    sender->send_inner(from_server(sim::FrameType::receipt,
                                                   static_cast<std::uint32_t>(sim::ReceiptStatus::delivered),
                                                   f.destination, sim::encode_receipt({c.user, sim::first_device, *ids})));
                }
                return;
            }
            case sim::FrameType::probe:
                if (!f.destination.empty()) {
                    c.send_inner(from_server(sim::FrameType::ack_init, online(f.destination) != nullptr ? 2U : 3U,
                                             c.user, sim::to_bytes(sim::as_bytes(f.destination))));
                }
                return;
            default:
                return;
        }
    }

    void on_init(Conn& c, const sim::Frame& f) {
        auto cred = sim::decode_credentials(f.payload);
        REQUIRE(cred);
        if (cred->kind != sim::CredentialKind::none) {
            // Any password will do: this server authenticates users, so it could log in as them too.
            c.user = f.source;
            m_online[c.user] = &c;
            c.send_inner(from_server(sim::FrameType::limits, 0, c.user, sim::encode_server_limits(limits)));
            c.send_inner(from_server(sim::FrameType::ack_init, 1, c.user, {}));
            sim::PrekeyStatus status;
            if (const auto it = uploads.find(c.user); it != uploads.end()) {
                status.identity_key = it->second.identity_key;
                status.one_time_count = static_cast<std::uint32_t>(it->second.one_time_prekeys.size());
            }
            c.send_inner(from_server(sim::FrameType::prekeys, 0, c.user, sim::encode_prekey_status(status)));
            for (const auto& m : m_unacked[c.user]) {  // stored messages, again until acknowledged
                c.send_inner(m);
            }
        }
        if (f.destination.empty()) {
            return;
        }
        const std::string& peer = f.destination;
        c.send_inner(from_server(sim::FrameType::ack_init, online(peer) != nullptr ? 2U : 3U, c.user,
                                 sim::to_bytes(sim::as_bytes(peer))));
        if (server_assigned) {
            auto* other = online(peer);
            if (other == nullptr || !m_keyed.insert(std::minmax(c.user, peer)).second) {
                return;  // offline, or keyed already: one KEYGEN per conversation
            }
            sim::KeyAssignment k;
            k.mode = sim::ConversationMode::server_assigned;
            k.suite = sim::SuiteId::aes256_gcm;
            k.key = m_rng.secure_bytes(32);
            k.peer = peer;
            c.send_inner(from_server(sim::FrameType::keygen, sim::keygen_sid, c.user, sim::encode_key_assignment(k)));
            k.peer = c.user;
            other->send_inner(
                from_server(sim::FrameType::keygen, sim::keygen_sid, peer, sim::encode_key_assignment(k)));
            return;
        }
        if (!substitute.contains(peer) && !uploads.contains(peer)) {
            c.send_inner(sim::make_error_frame(sim::Errc::no_conversation, "peer has no prekeys"));
            return;
        }
        sim::KeyAssignment k;
        k.mode = sim::ConversationMode::end_to_end;
        k.peer = peer;
        k.suite = sim::SuiteId::aes256_gcm;
        k.bundle = substitute.contains(peer) ? fake_bundle() : real_bundle(peer);
        if (forge_signed_prekey.contains(peer)) {
            k.bundle->signed_prekey_id = fake_spk.id;
            k.bundle->signed_prekey = fake_spk.public_key;
            k.bundle->signed_prekey_signature = fake_spk.signature;
        }
        c.send_inner(from_server(sim::FrameType::keygen, sim::keygen_sid, c.user, sim::encode_key_assignment(k)));
    }

    sim::Rng& m_rng;
    const sim::Clock& m_clock;
    sim::SecureBytes m_static;
    std::map<std::string, Conn*, std::less<>> m_online;
    std::map<std::string, std::vector<sim::Frame>, std::less<>> m_unacked;
    std::set<std::pair<std::string, std::string>> m_keyed;  // server-assigned conversations (names in order)
    std::size_t m_next_fake_opk = 0;
};

/// Clients (each with its own ClientState, kept across restarts) around one EvilServer.
struct World {
    sim::ManualClock clock;
    /// The clients' wall clock: what a message carries as its sender's timestamp.
    sim::WallTime wall{std::chrono::milliseconds{1'700'000'000'000}};
    std::unique_ptr<sim::Rng> rng;
    EvilServer server;
    sim::MemoryKnownServers known;
    std::map<std::string, std::unique_ptr<sim::ClientState>> states;
    std::vector<std::unique_ptr<TestClient>> clients;  // every client ever started (old ones stay for their events)

    explicit World(std::string_view seed = "misbehaving server")
        : rng(sim::make_deterministic_rng(sim::as_bytes(seed))), server(*rng, clock) {}

    /// Start a client for `user` on its state (created on first use; `state` instead when given), log in, optionally
    /// open `peer`.
    TestClient& start(const std::string& user, const std::string& peer = {}, sim::ClientState* state = nullptr) {
        auto& own = states[user];
        if (!own) {
            own = sim::make_memory_client_state();
        }
        sim::ClientConfig cfg;
        cfg.handshake.server_id = "evil:1";
        cfg.state = state != nullptr ? state : own.get();
        cfg.one_time_prekeys = 30;
        cfg.wall_clock = [this] { return wall; };
        auto tc = sim_test::make_test_client(std::move(cfg), known, *rng, clock,
                                             [this](auto out) { return server.accept(std::move(out)); });
        REQUIRE(tc);
        clients.push_back(std::move(tc));
        auto& c = *clients.back();
        settle();
        REQUIRE(c.saw<sim::ChannelReadyEvent>());
        REQUIRE(c.core->login(user, {sim::CredentialKind::password, sim::SecureBytes{'p', 'w'}}, peer));
        settle();
        REQUIRE(c.saw<sim::AuthenticatedEvent>(user));
        return c;
    }

    /// The client crashes or disconnects (nothing queued gets through).
    void stop(TestClient& c) { c.pipe->close_now(); }

    void settle() {
        for (int i = 0; i < 10000; ++i) {
            bool moved = false;
            for (auto& c : clients) {
                moved = c->pipe->pump() || moved;
            }
            if (!moved) {
                return;
            }
        }
        FAIL("the world did not settle");
    }

    void send(TestClient& from, const std::string& to, const std::string& text) {
        REQUIRE(from.core->send(to, text));
        settle();
    }
};

/// Alice and Bob with an end-to-end session in both directions (one message each way).
struct Pair {
    World w;
    TestClient* alice = nullptr;
    TestClient* bob = nullptr;

    explicit Pair(std::string_view seed = "pair") : w(seed) {
        bob = &w.start("bob");
        alice = &w.start("alice", "bob");
        REQUIRE(alice->saw<sim::KeyAssignedEvent>("bob"));
        w.send(*alice, "bob", "hello bob");
        REQUIRE(bob->texts("alice") == std::vector<std::string>{"hello bob"});
        w.send(*bob, "alice", "hello alice");
        REQUIRE(alice->texts("bob") == std::vector<std::string>{"hello alice"});
        alice->events.clear();
        bob->events.clear();
    }
};

/// `f` with one bit of its payload flipped.
sim::Frame tampered(sim::Frame f, std::size_t at, std::uint8_t bit = 0x01) {
    f.payload.at(at) ^= bit;
    return f;
}

// Offsets in a client's message payload (6.5): id 16, mode 1, conversation 16, sender device 4, count 1, device 4,
// body length 4; then a normal RatchetMessage (type 1, session id 8, ratchet key 32, pn 4, n 4, ciphertext).
constexpr std::size_t body_at = 16 + 1 + 16 + 4 + 1 + 4 + 4;
constexpr std::size_t session_id_at = body_at + 1;
constexpr std::size_t ratchet_key_at = body_at + 9;
constexpr std::size_t n_last_byte_at = body_at + 9 + 32 + 4 + 3;

}  // namespace

TEST_CASE("honest relay: each message shown once, receipts come back, the server sees only ciphertext") {
    Pair p;
    const auto before = p.w.server.log.size();
    p.w.send(*p.alice, "bob", "the secret word is swordfish");
    REQUIRE(p.w.server.log.size() == before + 1);
    const auto& payload = p.w.server.log.back().payload;
    const std::string needle = "swordfish";
    CHECK(std::search(payload.begin(), payload.end(), needle.begin(), needle.end()) == payload.end());
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"the secret word is swordfish"});
    CHECK(p.alice->of<sim::ReceiptEvent>("bob").size() == 1);
    CHECK(p.alice->core->outbox_size() == 0);
    CHECK_FALSE(p.bob->saw<sim::ErrorEvent>());
    CHECK_FALSE(p.bob->saw<sim::GapEvent>());
}

TEST_CASE("duplicates and replays are shown once, also after the recipient reloaded its state") {
    Pair p;
    p.w.send(*p.alice, "bob", "one");
    const auto first = p.w.server.log.back();
    p.w.server.deliver(first);  // duplicate at once
    p.w.settle();
    p.w.send(*p.alice, "bob", "two");
    p.w.server.deliver(first);  // replay later
    p.w.settle();
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"one", "two"});
    CHECK_FALSE(p.bob->saw<sim::GapEvent>());
    // the retries were acknowledged so the server could drop them, not shown
    CHECK(p.w.server.unacked("bob") == 0);

    // Bob's client restarts from its stored state; the server replays both old messages.
    p.w.stop(*p.bob);
    auto& bob2 = p.w.start("bob");
    p.w.server.deliver(first);
    p.w.server.deliver(p.w.server.log.back());
    p.w.settle();
    CHECK(bob2.texts().empty());
    CHECK(p.w.server.unacked("bob") == 0);

    // The same ciphertext under a fresh envelope id: the ratchet refuses it (its key is gone).
    auto renamed = first;
    p.w.rng->fill(sim::MutableByteView{renamed.payload.data(), sizeof(sim::MessageId)});
    p.w.server.deliver(renamed);
    p.w.settle();
    CHECK(bob2.texts().empty());
    CHECK(bob2.saw<sim::ErrorEvent>("alice"));

    // and the conversation goes on
    p.w.send(*p.alice, "bob", "three");
    CHECK(bob2.texts("alice") == std::vector<std::string>{"three"});
    CHECK_FALSE(bob2.saw<sim::GapEvent>());
}

TEST_CASE("withheld messages are reported as a gap; late ones are shown without a second gap") {
    Pair p;
    int n = 0;
    p.w.server.withhold = [&n](const sim::Frame&) {
        ++n;
        return n == 2 || n == 3;
    };
    for (const auto* text : {"m1", "m2", "m3"}) {
        p.w.send(*p.alice, "bob", text);
    }
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"m1"});
    CHECK_FALSE(p.bob->saw<sim::GapEvent>());
    p.w.send(*p.alice, "bob", "m4");
    const auto gaps = p.bob->of<sim::GapEvent>("alice");
    REQUIRE(gaps.size() == 1);
    CHECK(gaps[0].count == 2);
    p.w.send(*p.alice, "bob", "m5");
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"m1", "m4", "m5"});

    const auto size = p.w.server.log.size();
    p.w.server.deliver(p.w.server.log[size - 4]);  // m2
    p.w.server.deliver(p.w.server.log[size - 3]);  // m3
    p.w.settle();
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"m1", "m4", "m5", "m2", "m3"});
    CHECK(p.bob->of<sim::GapEvent>().size() == 1);
    CHECK_FALSE(p.bob->saw<sim::ErrorEvent>());
    // every message was acknowledged, so every one got a delivered receipt
    CHECK(p.alice->of<sim::ReceiptEvent>("bob").size() == 5);
    CHECK(p.alice->core->outbox_size() == 0);
}

TEST_CASE("reordered messages within the skip bound open, each once") {
    Pair p;
    p.w.server.withhold = [](const sim::Frame&) { return true; };
    for (const auto* text : {"r1", "r2", "r3", "r4"}) {
        p.w.send(*p.alice, "bob", text);
    }
    CHECK(p.bob->texts().empty());
    const auto size = p.w.server.log.size();
    for (const std::size_t i : {3U, 1U, 0U, 2U, 1U}) {  // r4 r2 r1 r3, then r2 again
        p.w.server.deliver(p.w.server.log[size - 4 + i]);
    }
    p.w.settle();
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"r4", "r2", "r1", "r3"});
    const auto gaps = p.bob->of<sim::GapEvent>();
    REQUIRE(gaps.size() == 1);
    CHECK(gaps[0].count == 3);
    CHECK_FALSE(p.bob->saw<sim::ErrorEvent>());
}

TEST_CASE("a jump beyond MAX_SKIP is refused; in-range messages still open afterwards") {
    Pair p;
    p.w.server.withhold = [](const sim::Frame&) { return true; };
    const auto start = p.w.server.log.size();
    constexpr std::size_t total = e2e::max_skip + 2;
    for (std::size_t i = 0; i < total; ++i) {
        REQUIRE(p.alice->core->send("bob", "bulk " + std::to_string(i)));
    }
    p.w.settle();
    REQUIRE(p.w.server.log.size() == start + total);
    // only the last one: it would need 1,001 skipped keys
    p.w.server.deliver(p.w.server.log.back());
    p.w.settle();
    CHECK(p.bob->texts().empty());
    const auto errors = p.bob->of<sim::ErrorEvent>("alice");
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].error.code == sim::Errc::limit_reached);
    CHECK_FALSE(p.bob->saw<sim::GapEvent>());  // nothing of it was believed

    // the session is intact: the withheld messages open in order, and then the last one is in range
    for (std::size_t i = 0; i < total; ++i) {
        p.w.server.deliver(p.w.server.log[start + i]);
    }
    p.w.settle();
    const auto texts = p.bob->texts("alice");
    REQUIRE(texts.size() == total);
    CHECK(texts.front() == "bulk 0");
    CHECK(texts.back() == "bulk " + std::to_string(total - 1));
    CHECK(p.bob->of<sim::ErrorEvent>().size() == 1);
    CHECK_FALSE(p.bob->saw<sim::GapEvent>());

    // a replay of the first of them, whose id has left the bounded seen set: the ratchet still refuses it
    p.w.server.deliver(p.w.server.log[start]);
    p.w.settle();
    CHECK(p.bob->texts("alice").size() == total);
    CHECK(p.bob->of<sim::ErrorEvent>().size() == 2);
}

TEST_CASE("forged, tampered and id-swapped messages are never shown; the genuine one still is") {
    Pair p;
    p.w.server.withhold = [](const sim::Frame&) { return true; };
    p.w.send(*p.alice, "bob", "genuine");
    const auto genuine = p.w.server.log.back();

    // a flipped bit in the tag, in the ciphertext, in the header's n, in its ratchet key (a DH step that must not
    // happen), in the session id; then a body of random bytes under the real session id
    const auto size = genuine.payload.size();
    for (const std::size_t at : {size - 1, size - 20, n_last_byte_at, ratchet_key_at + 5, session_id_at}) {
        p.w.server.deliver(tampered(genuine, at));
    }
    auto forged = genuine;
    p.w.rng->fill(sim::MutableByteView{forged.payload.data() + ratchet_key_at, size - ratchet_key_at});
    p.w.server.deliver(forged);
    p.w.settle();
    CHECK(p.bob->texts().empty());
    CHECK(p.bob->of<sim::ErrorEvent>("alice").size() == 6);

    p.w.server.deliver(genuine);
    p.w.settle();
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"genuine"});

    // the envelope id swapped on a fresh message: it opens, but its sealed id differs, so it is dropped
    p.w.send(*p.alice, "bob", "swapped");
    auto swapped = p.w.server.log.back();
    p.w.rng->fill(sim::MutableByteView{swapped.payload.data(), sizeof(sim::MessageId)});
    p.w.server.deliver(swapped);
    p.w.settle();
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"genuine"});
    CHECK(p.bob->of<sim::ErrorEvent>("alice").size() == 7);
    // and the genuine message after it: the forgery used up its key, so it is lost (and reported as missing)
    p.w.server.withhold = nullptr;
    p.w.send(*p.alice, "bob", "after");
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"genuine", "after"});
    CHECK(p.bob->of<sim::GapEvent>("alice").size() == 1);
}

TEST_CASE("a blind sink (benchmarking hook) acknowledges deliveries without opening them; the sender gets receipts") {
    Pair p;
    auto& w = p.w;
    sim::testing::set_blind_sink(*p.bob->core, true);
    const auto inbox_before = p.bob->core->inbox_status().next;
    const auto acks_before = w.server.acks.size();
    w.server.withhold = [](const sim::Frame&) { return true; };
    w.send(*p.alice, "bob", "unread");
    const auto genuine = w.server.log.back();
    w.server.withhold = nullptr;
    // A body that would not open, under an id of its own: a sink does not look, so it acknowledges it all the same.
    auto forged = tampered(genuine, genuine.payload.size() - 1);
    w.rng->fill(sim::MutableByteView{forged.payload.data(), sizeof(sim::MessageId)});
    w.server.deliver(genuine);
    w.server.deliver(forged);
    w.settle();

    CHECK(p.bob->texts().empty());
    CHECK_FALSE(p.bob->saw<sim::ErrorEvent>());
    CHECK_FALSE(p.bob->saw<sim::GapEvent>());
    CHECK(p.bob->core->inbox_status().next == inbox_before);
    CHECK(sim::testing::blind_acked(*p.bob->core) == 2);
    std::vector<sim::MessageId> acked;
    for (std::size_t i = acks_before; i < w.server.acks.size(); ++i) {
        CHECK(w.server.acks[i].first == "bob");
        acked.insert(acked.end(), w.server.acks[i].second.begin(), w.server.acks[i].second.end());
    }
    CHECK(acked == std::vector<sim::MessageId>{envelope_id(genuine), envelope_id(forged)});
    CHECK(w.server.unacked("bob") == 0);
    const auto receipts = p.alice->of<sim::ReceiptEvent>("bob");
    REQUIRE(receipts.size() == 1);
    CHECK(receipts[0].status == sim::ReceiptStatus::delivered);
    CHECK(receipts[0].message_id == envelope_id(genuine));
    CHECK(p.alice->core->outbox_size() == 0);

    // Turned off, the sink is a client again: the session goes on past the message it never opened.
    sim::testing::set_blind_sink(*p.bob->core, false);
    w.send(*p.alice, "bob", "read");
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"read"});
    CHECK(sim::testing::blind_acked(*p.bob->core) == 2);
}

TEST_CASE("a rewritten source field is never shown as the other user's message") {
    World w;
    auto& bob = w.start("bob");
    auto& carol = w.start("carol", "bob");
    w.send(carol, "bob", "carol here");
    REQUIRE(bob.texts("carol") == std::vector<std::string>{"carol here"});
    w.send(bob, "carol", "hi carol");
    auto& alice = w.start("alice", "bob");
    w.server.withhold = [](const sim::Frame&) { return true; };

    // alice's first message (an initial X3DH message) and a normal one after bob replied
    w.send(alice, "bob", "from alice");
    auto initial = readdressed(w.server.log.back(), "carol");
    w.server.deliver(initial);
    w.settle();
    CHECK(bob.texts("carol") == std::vector<std::string>{"carol here"});
    CHECK(bob.texts("alice").empty());
    // carol's pinned key is not alice's: shown as a key change, held, not acknowledged
    REQUIRE(bob.saw<sim::IdentityChangedEvent>("carol"));
    CHECK(w.server.unacked("bob") == 1);
    // even if bob accepts the "new key", the session is bound to the name alice used: it does not open
    REQUIRE(bob.core->accept_identity("carol"));
    w.settle();
    CHECK(bob.texts("carol") == std::vector<std::string>{"carol here"});
    CHECK(bob.saw<sim::ErrorEvent>("carol"));
    CHECK(w.server.unacked("bob") == 0);

    // the real message reaches bob under alice's name
    w.server.withhold = nullptr;
    w.server.deliver(w.server.log.back());
    w.settle();
    REQUIRE(bob.texts("alice") == std::vector<std::string>{"from alice"});
    w.send(bob, "alice", "hi alice");
    REQUIRE(alice.texts("bob") == std::vector<std::string>{"hi alice"});

    // a normal message of alice's session, relabelled as carol's
    w.server.withhold = [](const sim::Frame&) { return true; };
    const auto errors_before = bob.of<sim::ErrorEvent>("carol").size();
    w.send(alice, "bob", "second from alice");
    auto normal = readdressed(w.server.log.back(), "carol");
    w.server.deliver(normal);
    w.settle();
    CHECK(bob.texts("carol") == std::vector<std::string>{"carol here"});
    CHECK(bob.of<sim::ErrorEvent>("carol").size() == errors_before + 1);
    CHECK(bob.texts("alice") == std::vector<std::string>{"from alice"});
    CHECK(w.server.unacked("bob") == 0);
}

TEST_CASE("a substituted bundle on first contact changes the safety number") {
    World w;
    auto& bob = w.start("bob");
    auto& carol = w.start("carol");
    w.server.substitute.insert("bob");
    auto& alice = w.start("alice", "bob");
    REQUIRE(alice.saw<sim::KeyAssignedEvent>("bob"));
    CHECK(alice.of<sim::KeyAssignedEvent>("bob").at(0).first_contact);

    // What alice sees and what bob computes from the real keys differ: comparing them reveals the substitution.
    const auto seen_by_alice = alice.core->peer_identity("bob");
    REQUIRE(seen_by_alice);
    const auto real = e2e::safety_number("bob", w.server.identity_of("bob"), "alice", w.server.identity_of("alice"));
    CHECK(seen_by_alice->safety_number != real);
    CHECK(seen_by_alice->identity_key == w.server.fake_identity.public_key);
    CHECK(alice.of<sim::KeyAssignedEvent>("bob").at(0).safety_number == seen_by_alice->safety_number);

    // which matters: the server holds the keys and reads what alice sends
    w.server.withhold = [](const sim::Frame&) { return true; };
    w.send(alice, "bob", "for bob only");
    const auto sent = sim::decode_submission(w.server.log.back().payload);
    REQUIRE(sent);
    const auto* env = &sent->bodies.at(0);
    const auto info = e2e::inspect(env->body);
    REQUIRE(info);
    REQUIRE(info->initial);
    auto mitm =
        e2e::Session::respond(w.server.fake_identity, "bob", w.server.fake_spk,
                              w.server.fake_opk(info->initial->one_time_prekey_id), *info->initial, "alice", *w.rng);
    REQUIRE(mitm);
    auto plain = mitm->open(env->body);
    REQUIRE(plain);
    CHECK(sim::decode_e2e_content(*plain)->text == "for bob only");
    // relayed to bob anyway, it does not open (not his keys)
    w.server.deliver(w.server.log.back());
    w.settle();
    CHECK(bob.texts().empty());
    CHECK(bob.saw<sim::ErrorEvent>("alice"));

    // an honest first contact, by contrast: both sides compute the same number
    w.server.withhold = nullptr;
    REQUIRE(alice.core->open("carol"));
    w.settle();
    w.send(alice, "carol", "hi carol");
    REQUIRE(carol.texts("alice") == std::vector<std::string>{"hi carol"});
    const auto a = alice.core->peer_identity("carol");
    const auto c = carol.core->peer_identity("alice");
    REQUIRE(a);
    REQUIRE(c);
    CHECK(a->safety_number == c->safety_number);
    CHECK(a->safety_number ==
          e2e::safety_number("carol", w.server.identity_of("carol"), "alice", w.server.identity_of("alice")));
}

TEST_CASE("a bundle whose signed prekey is not signed by the identity key is refused") {
    World w;
    w.start("bob");
    w.server.forge_signed_prekey.insert("bob");
    auto& alice = w.start("alice", "bob");
    CHECK_FALSE(alice.saw<sim::KeyAssignedEvent>("bob"));
    const auto errors = alice.of<sim::ErrorEvent>("bob");
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].error.code == sim::Errc::auth_failed);
    // A message waits in the outbox for a session; asking for bob's keys again gets the forged bundle again, which
    // is refused again: nothing is sent.
    REQUIRE(alice.core->send("bob", "hello?"));
    w.settle();
    CHECK(alice.core->outbox_size() == 1);
    CHECK(alice.of<sim::ErrorEvent>("bob").size() == 2);
    CHECK(w.server.log.empty());
    CHECK_FALSE(alice.core->peer_identity("bob"));  // nothing pinned from a refused bundle
}

TEST_CASE("a substituted bundle after a real session: identity_changed, nothing sent until accepted") {
    Pair p;
    auto& w = p.w;
    const auto old = p.alice->core->peer_identity("bob");
    REQUIRE(old);
    REQUIRE(p.alice->core->verify_peer("bob"));
    w.server.substitute.insert("bob");
    REQUIRE(p.alice->core->open("bob"));
    w.settle();
    const auto changed = p.alice->of<sim::IdentityChangedEvent>("bob");
    REQUIRE(changed.size() == 1);
    CHECK(changed[0].safety_number != old->safety_number);
    CHECK(changed[0].safety_number ==
          e2e::safety_number("alice", w.server.identity_of("alice"), "bob", w.server.fake_identity.public_key));
    const auto pending = p.alice->core->peer_identity("bob");
    REQUIRE(pending);
    CHECK(pending->change_pending);
    CHECK(pending->identity_key == old->identity_key);  // still pinned to the old key

    const auto log_before = w.server.log.size();
    CHECK(p.alice->core->send("bob", "are you there?").code() == sim::Errc::identity_changed);
    CHECK(p.alice->core->verify_peer("bob").code() == sim::Errc::identity_changed);
    w.clock.advance(1min);
    p.alice->core->tick();
    w.settle();
    CHECK(w.server.log.size() == log_before);
    CHECK(p.alice->core->outbox_size() == 0);

    REQUIRE(p.alice->core->accept_identity("bob"));
    w.settle();
    const auto now = p.alice->core->peer_identity("bob");
    REQUIRE(now);
    CHECK_FALSE(now->change_pending);
    CHECK_FALSE(now->verified);
    CHECK(now->identity_key == w.server.fake_identity.public_key);
    REQUIRE(p.alice->core->send("bob", "after accepting"));
    w.settle();
    CHECK(w.server.log.size() == log_before + 1);
}

TEST_CASE("an initial message from a changed identity is held, not shown and not acknowledged, until accepted") {
    SUBCASE("the server's own key, posing as alice") {
        Pair p;
        auto& w = p.w;
        auto bundle = w.server.real_bundle("bob");
        auto s =
            e2e::Session::initiate(w.server.fake_identity, "alice", bundle, "bob", sim::SuiteId::aes256_gcm, *w.rng);
        REQUIRE(s);
        sim::MessageId id{};
        w.rng->fill(id);
        const auto acks_before = w.server.acks.size();
        // seq 1: a new identity counts from 1 again
        const sim::ContentAddress to_bob{sim::pair_conversation_id("alice", "bob"), 1, 1};
        auto body =
            s->seal(sim::encode_e2e_content({sim::ContentKind::text, 1, id, "send me your password", {}, to_bob}));
        REQUIRE(body);
        const sim::Frame forged{
            sim::FrameType::message, 0, "alice", "bob",
            sim::encode_pair_submission({id, sim::ConversationMode::end_to_end, *body}, "alice", "bob")};
        w.server.deliver(forged);
        w.settle();
        CHECK(p.bob->texts().empty());
        REQUIRE(p.bob->of<sim::IdentityChangedEvent>("alice").size() == 1);
        CHECK(w.server.unacked("bob") == 1);
        CHECK(w.server.acks.size() == acks_before);
        CHECK(p.bob->core->send("alice", "hm").code() == sim::Errc::identity_changed);
        // delivered again at the next login: still held, announced once per client run
        w.stop(*p.bob);
        auto& bob2 = w.start("bob");
        CHECK(bob2.texts().empty());
        CHECK(bob2.of<sim::IdentityChangedEvent>("alice").size() == 1);
        CHECK(w.server.unacked("bob") == 1);
        // the user accepts (wrongly, here): only now is it shown and acknowledged
        REQUIRE(bob2.core->accept_identity("alice"));
        w.settle();
        CHECK(bob2.texts("alice") == std::vector<std::string>{"send me your password"});
        CHECK(w.server.unacked("bob") == 0);

        // Now an accepted peer, the server can seal what it likes; sequence numbers are still checked: a number
        // already shown is dropped silently even under a new id, a missing one is shown once when it comes.
        const auto forge = [&](std::uint64_t seq, const std::string& text) {
            sim::MessageId mid{};
            w.rng->fill(mid);
            auto sealed = s->seal(sim::encode_e2e_content({sim::ContentKind::text, seq, mid, text, {}, to_bob}));
            REQUIRE(sealed);
            w.server.deliver(
                {sim::FrameType::message, 0, "alice", "bob",
                 sim::encode_pair_submission({mid, sim::ConversationMode::end_to_end, *sealed}, "alice", "bob")});
            w.settle();
        };
        forge(1, "seq 1 again");
        forge(3, "seq 3");
        forge(2, "seq 2");
        forge(2, "seq 2 again");
        forge(3, "seq 3 again");
        CHECK(bob2.texts("alice") == std::vector<std::string>{"send me your password", "seq 3", "seq 2"});
        CHECK(bob2.of<sim::GapEvent>("alice").size() == 1);
        CHECK_FALSE(bob2.saw<sim::ErrorEvent>());
    }
    SUBCASE("alice lost her state: a new identity starts again from sequence number 1") {
        Pair p;
        auto& w = p.w;
        w.send(*p.alice, "bob", "before the crash");
        w.stop(*p.alice);
        w.states.erase("alice");
        auto& alice2 = w.start("alice", "bob");
        REQUIRE(alice2.saw<sim::KeyAssignedEvent>("bob"));
        w.send(alice2, "bob", "new phone, who dis");
        CHECK(p.bob->texts("alice") == std::vector<std::string>{"before the crash"});
        REQUIRE(p.bob->saw<sim::IdentityChangedEvent>("alice"));
        CHECK(w.server.unacked("bob") == 1);
        REQUIRE(p.bob->core->accept_identity("alice"));
        w.settle();
        CHECK(p.bob->texts("alice") == std::vector<std::string>{"before the crash", "new phone, who dis"});
        CHECK_FALSE(p.bob->saw<sim::GapEvent>());
        CHECK(w.server.unacked("bob") == 0);
        // and the other way: bob's next seq to the new alice starts at 1 as well (no false gap at alice)
        w.send(*p.bob, "alice", "welcome back");
        CHECK(alice2.texts("bob") == std::vector<std::string>{"welcome back"});
        CHECK_FALSE(alice2.saw<sim::GapEvent>());
    }
}

TEST_CASE("ratchet-only replies on tick make the sender's DH steps advance while only it sends text") {
    SUBCASE("with ticks") {
        Pair p;
        for (int round = 0; round < 4; ++round) {
            p.w.send(*p.alice, "bob", "tick " + std::to_string(round));
            p.bob->core->tick();
            p.w.settle();
        }
        CHECK(p.bob->texts("alice").size() == 4);
        CHECK(p.alice->texts().empty());  // ratchet-only messages are not shown
        std::vector<std::uint32_t> epochs;
        for (const auto& e : p.alice->of<sim::KeyRotatedEvent>("bob")) {
            epochs.push_back(e.epoch);
        }
        // a receiving step for each ratchet-only reply, and a new sending chain for each text
        REQUIRE(epochs.size() >= 4);
        CHECK(std::is_sorted(epochs.begin(), epochs.end()));
        CHECK(epochs.back() >= epochs.front() + 3);
        CHECK_FALSE(p.bob->saw<sim::ErrorEvent>());
        CHECK_FALSE(p.alice->saw<sim::ErrorEvent>());
    }
    SUBCASE("idle clients do not answer ratchet-only messages with more of them") {
        Pair p;
        p.w.send(*p.alice, "bob", "one text");
        for (int round = 0; round < 6; ++round) {
            p.bob->core->tick();
            p.alice->core->tick();
            p.w.settle();
        }
        const auto steps = [&] {
            return p.alice->of<sim::KeyRotatedEvent>("bob").size() + p.bob->of<sim::KeyRotatedEvent>("alice").size();
        };
        const auto settled = steps();
        CHECK(settled >= 1);  // bob's ratchet-only answer to the text made alice step
        for (int round = 0; round < 6; ++round) {
            p.bob->core->tick();
            p.alice->core->tick();
            p.w.settle();
        }
        CHECK(steps() == settled);  // and then nothing more goes back and forth
    }
    SUBCASE("without ticks the sender stays on one chain") {
        Pair p;
        for (int round = 0; round < 4; ++round) {
            p.w.send(*p.alice, "bob", "no tick " + std::to_string(round));
        }
        CHECK(p.bob->texts("alice").size() == 4);
        CHECK(p.alice->of<sim::KeyRotatedEvent>("bob").empty());
    }
}

TEST_CASE("a restart between receiving and acknowledging: the message comes again and is shown once") {
    Pair p;
    auto& w = p.w;
    w.server.drop_acks = true;
    const auto acks_before = w.server.acks.size();
    w.send(*p.alice, "bob", "only once please");
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"only once please"});
    REQUIRE(w.server.acks.size() == acks_before + 1);  // sent after the commit, lost on the way
    CHECK(w.server.unacked("bob") == 1);
    CHECK(p.alice->core->outbox_size() == 1);

    w.stop(*p.bob);
    w.server.drop_acks = false;
    auto& bob2 = w.start("bob");  // a new ClientCore on the same state: the server re-delivers at login
    CHECK(bob2.texts().empty());
    CHECK_FALSE(bob2.saw<sim::ErrorEvent>());
    REQUIRE(w.server.acks.size() == acks_before + 2);
    CHECK(w.server.acks.back().second == w.server.acks[acks_before].second);
    CHECK(w.server.unacked("bob") == 0);
    CHECK(p.alice->of<sim::ReceiptEvent>("bob").size() == 1);
    CHECK(p.alice->core->outbox_size() == 0);
    // the session continues on the reloaded state
    w.send(*p.alice, "bob", "next");
    CHECK(bob2.texts("alice") == std::vector<std::string>{"next"});
    CHECK_FALSE(bob2.saw<sim::GapEvent>());
}

TEST_CASE("a sender restarted before its receipt re-sends on login; the recipient shows the message once") {
    Pair p;
    auto& w = p.w;
    w.server.withhold = [](const sim::Frame&) { return true; };
    const auto id = p.alice->core->send("bob", "sent just before the crash");
    REQUIRE(id);
    w.settle();
    w.stop(*p.alice);
    w.server.withhold = nullptr;
    const auto n = w.server.log.size();
    auto& alice2 = w.start("alice");
    REQUIRE(w.server.log.size() == n + 1);
    CHECK(w.server.log[n].payload == w.server.log[n - 1].payload);
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"sent just before the crash"});
    CHECK(alice2.of<sim::ReceiptEvent>("bob").size() == 1);
    CHECK(alice2.core->outbox_size() == 0);
    // the withheld first copy arrives too: not shown again
    w.server.deliver(w.server.log[n - 1]);
    w.settle();
    CHECK(p.bob->texts("alice").size() == 1);
    CHECK(p.bob->of<sim::MessageEvent>().at(0).message_id == *id);
}

TEST_CASE("a refused message is sent again before the ones behind it: the recipient sees every message, in order") {
    Pair p;
    auto& w = p.w;
    int texts = 0;
    int refusals = 0;
    w.server.refuse = [&](const sim::Frame&) -> std::optional<sim::Errc> {
        ++texts;
        if (texts == 4 || texts == 9) {  // the 4th for the rate; later (counting re-sends) one for a failed commit
            ++refusals;
            return refusals == 1 ? sim::Errc::rate_limited : sim::Errc::storage_error;
        }
        return std::nullopt;
    };
    std::vector<std::string> sent;
    for (int i = 1; i <= 12; ++i) {
        sent.push_back("m" + std::to_string(i));
        REQUIRE(p.alice->core->send("bob", sent.back()));
    }
    w.settle();
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"m1", "m2", "m3"});
    // The back-off: nothing goes again before a second has passed, then the stream goes on from m4.
    w.clock.advance(500ms);
    p.alice->core->pump();
    w.settle();
    CHECK(p.bob->texts("alice").size() == 3);
    for (int i = 0; i < 10; ++i) {
        w.clock.advance(1s);
        p.alice->core->pump();
        w.settle();
    }
    CHECK(refusals == 2);
    CHECK(p.bob->texts("alice") == sent);
    CHECK_FALSE(p.bob->saw<sim::GapEvent>());
    CHECK_FALSE(p.bob->saw<sim::ErrorEvent>());
    CHECK_FALSE(p.alice->saw<sim::ErrorEvent>());  // passing refusals are not the application's business
    CHECK(p.alice->core->outbox_size() == 0);
    CHECK(p.alice->of<sim::ReceiptEvent>("bob").size() == sent.size());
}

TEST_CASE("the outbox re-sends an unreceipted message after resend_after with the same id and bytes") {
    Pair p;
    auto& w = p.w;
    bool drop = true;
    w.server.withhold = [&drop](const sim::Frame&) { return std::exchange(drop, false); };
    const auto id = p.alice->core->send("bob", "are you getting these?");
    REQUIRE(id);
    w.settle();
    CHECK(p.bob->texts().empty());
    const auto n = w.server.log.size();
    CHECK(p.alice->core->outbox_size() == 1);

    w.clock.advance(9s);
    p.alice->core->tick();
    w.settle();
    CHECK(w.server.log.size() == n);  // not yet

    w.clock.advance(1s);
    p.alice->core->tick();
    w.settle();
    REQUIRE(w.server.log.size() == n + 1);
    CHECK(w.server.log[n - 1].payload == w.server.log[n].payload);
    CHECK(envelope_id(w.server.log[n]) == *id);
    CHECK(p.bob->texts("alice") == std::vector<std::string>{"are you getting these?"});
    CHECK(p.bob->of<sim::MessageEvent>().at(0).message_id == *id);
    CHECK(p.alice->of<sim::ReceiptEvent>("bob").size() == 1);
    CHECK(p.alice->core->outbox_size() == 0);

    // the first copy arrives late after all: acknowledged, not shown again; nothing more is re-sent
    w.server.deliver(w.server.log[n - 1]);
    w.clock.advance(1min);
    p.alice->core->tick();
    w.settle();
    CHECK(p.bob->texts("alice").size() == 1);
    CHECK(w.server.log.size() == n + 1);
}

TEST_CASE("an outbox in the earlier state format (one list of ids) is read, sent, and rewritten in the current one") {
    World w;
    auto& bob = w.start("bob");
    auto& alice = w.start("alice", "bob");
    w.send(alice, "bob", "hello");
    w.server.withhold = [](const sim::Frame&) { return true; };
    const auto id = alice.core->send("bob", "queued before the upgrade");
    REQUIRE(id);
    w.settle();
    w.stop(alice);
    w.server.withhold = nullptr;
    auto& state = *w.states["alice"];
    // Today's layout: a 17-byte header (version 2, first, next) and the record under its place.
    const auto header = state.get("outbox").value();
    REQUIRE(header);
    REQUIRE(header->size() == 17);
    REQUIRE((*header)[0] == 2);
    std::uint64_t place = 0;
    for (int i = 9; i < 17; ++i) {
        place = (place << 8U) | (*header)[static_cast<std::size_t>(i)];
    }
    --place;  // next - 1: the message just sent
    const auto record = state.get("outbox/o/" + std::to_string(place)).value();
    REQUIRE(record);
    REQUIRE(std::equal(id->begin(), id->end(), record->begin()));
    // Rewrite it as the earlier release kept it: u32 count + ids; (peer, envelope) under "outbox/<hex id>".
    sim::SecureBytes index{0, 0, 0, 1};
    index.insert(index.end(), id->begin(), id->end());
    const sim::SecureBytes old_record(record->begin() + 16, record->end());
    REQUIRE(state.write({{"outbox", index},
                         {"outbox/" + sim::to_hex(sim::ByteView{*id}), old_record},
                         {"outbox/o/" + std::to_string(place), std::nullopt}}));

    auto& again = w.start("alice");
    CHECK(again.core->outbox_size() == 0);  // delivered at once after the login
    CHECK(bob.texts("alice") == std::vector<std::string>{"hello", "queued before the upgrade"});
    const auto now = state.get("outbox").value();
    REQUIRE(now);
    CHECK(now->size() == 17);  // the current layout again
    CHECK_FALSE(state.get("outbox/" + sim::to_hex(sim::ByteView{*id})).value().has_value());
}

namespace {

/// A client state that can be made to refuse every write (a full disk on the client's side).
class FlakyState final : public sim::ClientState {
public:
    explicit FlakyState(sim::ClientState& inner) : m_inner(inner) {}
    sim::Result<std::optional<sim::SecureBytes>> get(std::string_view key) const override { return m_inner.get(key); }
    sim::Status write(const std::vector<sim::StateWrite>& batch) override {
        if (broken) {
            return sim::Error{sim::Errc::storage_error, "disk full"};
        }
        return m_inner.write(batch);
    }
    [[nodiscard]] bool created() const noexcept override { return m_inner.created(); }
    sim::Status change_password(std::string_view p) override { return m_inner.change_password(p); }
    bool broken = false;

private:
    sim::ClientState& m_inner;
};

}  // namespace

TEST_CASE("received messages are in the inbox before they are acknowledged, and stay there across restarts") {
    Pair p;
    auto& w = p.w;
    const auto acks_before = w.server.acks.size();
    for (const char* t : {"one", "two", "three"}) {
        w.send(*p.alice, "bob", t);
    }
    const auto events = p.bob->of<sim::MessageEvent>("alice");
    REQUIRE(events.size() == 3);
    const auto status = p.bob->core->inbox_status();
    CHECK(status.next == 4);  // "hello bob" from the set-up, then these three
    CHECK(status.first_unread == 0);
    auto all = p.bob->core->inbox(0, 100);
    REQUIRE(all);
    REQUIRE(all->size() == 4);
    CHECK((*all)[0].text == "hello bob");
    for (std::size_t i = 0; i < 3; ++i) {
        const auto& entry = (*all)[i + 1];
        CHECK(entry.index == i + 1);
        CHECK(entry.index == events[i].inbox_index);
        CHECK(entry.peer == "alice");
        CHECK(entry.message_id == events[i].message_id);
        CHECK(entry.text == events[i].text);
        CHECK(entry.seq == i + 2);
        CHECK(entry.mode == sim::ConversationMode::end_to_end);
        CHECK_FALSE(entry.read);
    }
    CHECK(w.server.acks.size() > acks_before);
    // Paging and the read cursor.
    CHECK(p.bob->core->inbox(2, 1).value().at(0).text == "two");
    CHECK(p.bob->core->inbox(0, 10, "carol").value().empty());
    REQUIRE(p.bob->core->mark_read(2));
    REQUIRE(p.bob->core->mark_read(1));  // never back
    CHECK(p.bob->core->inbox_status().first_unread == 2);
    CHECK(p.bob->core->inbox(0, 10).value().at(1).read);
    CHECK_FALSE(p.bob->core->inbox(0, 10).value().at(2).read);

    // A restart keeps the inbox and the cursor.
    w.stop(*p.bob);
    auto& bob2 = w.start("bob");
    CHECK(bob2.core->inbox_status().next == 4);
    CHECK(bob2.core->inbox_status().first_unread == 2);
    CHECK(bob2.core->inbox(3, 10).value().at(0).text == "three");

    // A message the client could not write is neither shown nor acknowledged: the server keeps it.
    FlakyState flaky(*w.states["bob"]);
    w.stop(bob2);
    auto& bob3 = w.start("bob", {}, &flaky);
    const auto acks = w.server.acks.size();
    flaky.broken = true;
    w.send(*p.alice, "bob", "four");
    CHECK(bob3.texts("alice").empty());
    CHECK(w.server.acks.size() == acks);
    CHECK(w.server.unacked("bob") == 1);
    // Once the disk is fine again, a new process gets it (the server delivers it again at login), once.
    flaky.broken = false;
    w.stop(bob3);
    auto& bob4 = w.start("bob");
    CHECK(bob4.texts("alice") == std::vector<std::string>{"four"});
    CHECK(bob4.core->inbox_status().next == 5);
    CHECK(bob4.core->inbox(4, 10).value().at(0).text == "four");
    CHECK(w.server.unacked("bob") == 0);
}

TEST_CASE("a damaged client state is refused at login: the connection closes and nothing is sent from it") {
    const std::vector<std::pair<std::string, sim::SecureBytes>> damage{
        {"identity", sim::SecureBytes{1, 2, 3}},   // truncated
        {"prekeys", sim::SecureBytes{1}},          // truncated
        {"peers", sim::SecureBytes{0, 0, 0, 5}},   // lists peers whose records are missing
        {"outbox", sim::SecureBytes{0, 0, 0, 1}},  // lists an entry that is not there
        {"inbox", sim::SecureBytes{1, 0, 0}},      // truncated inbox header
        {"peer/bob", sim::SecureBytes(40, 0xFF)},  // a peer record of another version
    };
    for (const auto& item : damage) {
        CAPTURE(item.first);
        World w;
        w.start("bob");
        auto& alice = w.start("alice", "bob");
        w.send(alice, "bob", "hello");
        w.stop(alice);
        const auto identity = w.server.identity_of("alice");
        REQUIRE(w.states["alice"]->write({{item.first, item.second}}));

        sim::ClientConfig cfg;
        cfg.handshake.server_id = "evil:1";
        cfg.state = w.states["alice"].get();
        auto tc = sim_test::make_test_client(std::move(cfg), w.known, *w.rng, w.clock,
                                             [&w](auto out) { return w.server.accept(std::move(out)); });
        REQUIRE(tc);
        w.clients.push_back(std::move(tc));
        auto& again = *w.clients.back();
        w.settle();
        REQUIRE(again.core->login("alice", {sim::CredentialKind::password, sim::SecureBytes{'p', 'w'}}));
        w.settle();
        CHECK_FALSE(again.saw<sim::AuthenticatedEvent>());
        const auto closed = again.of<sim::ClosedEvent>();
        REQUIRE(closed.size() == 1);
        CHECK(closed.front().reason.code == sim::Errc::corrupt_database);
        CHECK(w.server.identity_of("alice") == identity);  // no new identity from a state it could not read
    }
}

// ---------------------------------------------------------------- timestamps (docs/protocol.md 5.2, 6.3, 6.5)

namespace {

/// Alice and Bob in a conversation keyed by the server (KEYGEN mode 1), both online.
struct AssignedPair {
    World w;
    TestClient* alice = nullptr;
    TestClient* bob = nullptr;

    AssignedPair() : w("assigned pair") {
        w.server.server_assigned = true;
        bob = &w.start("bob");
        alice = &w.start("alice", "bob");
        REQUIRE(alice->of<sim::KeyAssignedEvent>("bob").at(0).mode == sim::ConversationMode::server_assigned);
        REQUIRE(bob->saw<sim::KeyAssignedEvent>("alice"));
    }
};

// Offsets in a server-assigned message payload: as above, then the record header (16), then the AES-GCM
// ciphertext of sid u32 | 0xFF | sent_at u64 | text, byte for byte.
constexpr std::size_t record_plaintext_at = body_at + 16;
constexpr std::size_t record_sent_at = record_plaintext_at + 4 + 1;
// In an end-to-end message of a running session (a normal RatchetMessage: type, session id, ratchet key, pn, n),
// the ciphertext of kind u8 | seq u64 | id (16) | conversation (16) | sender device u32 | recipient device u32 |
// sent_at u64 | text.
constexpr std::size_t ratchet_plaintext_at = body_at + 1 + 8 + 32 + 4 + 4;
constexpr std::size_t ratchet_sent_at = ratchet_plaintext_at + 1 + 8 + 16 + 16 + 4 + 4;

}  // namespace

TEST_CASE("the recipient sees the sender's timestamp and the server's receive time, in both modes") {
    const auto check = [](World& w, TestClient& alice, TestClient& bob, sim::ConversationMode mode) {
        w.wall = sim::WallTime{std::chrono::milliseconds{1'700'000'000'000 + 12'345}};
        w.server.receive_time = sim::WallTime{std::chrono::milliseconds{1'700'000'000'000 + 15'000}};
        const auto sent_at = w.wall;
        const auto received_at = w.server.receive_time;
        w.send(alice, "bob", "what time is it?");
        w.wall += std::chrono::hours(1);  // the recipient's reading of the message does not depend on it
        const auto got = bob.of<sim::MessageEvent>("alice");
        REQUIRE(got.size() == 1);
        CHECK(got[0].mode == mode);
        CHECK(got[0].sent_at == sent_at);
        CHECK(got[0].received_at == received_at);
        const auto entry = bob.core->inbox(got[0].inbox_index, 1).value().at(0);
        CHECK(entry.text == "what time is it?");
        CHECK(entry.sent_at == sent_at);
        CHECK(entry.received_at == received_at);
        // the conversation and the sender's device, in the event and in the inbox (6.5, 6.8)
        CHECK(got[0].conversation == sim::pair_conversation_id("alice", "bob"));
        CHECK(got[0].sender_device == sim::first_device);
        CHECK(entry.conversation == got[0].conversation);
        CHECK(entry.sender_device == sim::first_device);
    };
    SUBCASE("end to end") {
        Pair p;
        check(p.w, *p.alice, *p.bob, sim::ConversationMode::end_to_end);
        // and after a restart, from the client state
        const auto index = p.bob->of<sim::MessageEvent>("alice").at(0).inbox_index;
        p.w.stop(*p.bob);
        auto& bob2 = p.w.start("bob");
        const auto entry = bob2.core->inbox(index, 1).value().at(0);
        CHECK(entry.sent_at == sim::WallTime{std::chrono::milliseconds{1'700'000'012'345}});
        CHECK(entry.received_at == sim::WallTime{std::chrono::milliseconds{1'700'000'015'000}});
    }
    SUBCASE("server-assigned") {
        AssignedPair p;
        check(p.w, *p.alice, *p.bob, sim::ConversationMode::server_assigned);
    }
}

TEST_CASE("a server that rewrites the sealed sender timestamp: the message is not shown and is reported") {
    SUBCASE("server-assigned: not acknowledged either, so it stays stored") {
        AssignedPair p;
        auto& w = p.w;
        w.server.withhold = [](const sim::Frame&) { return true; };
        w.send(*p.alice, "bob", "sent at noon");
        const auto genuine = w.server.log.back();
        const auto acks_before = w.server.acks.size();
        // Each byte of the sealed timestamp, made to say another time: the record does not open.
        for (std::size_t i = 0; i < 8; ++i) {
            w.server.deliver(tampered(genuine, record_sent_at + i, 0x10));
            w.settle();
        }
        CHECK(p.bob->texts().empty());
        CHECK(p.bob->of<sim::ErrorEvent>("alice").size() == 8);
        CHECK(w.server.acks.size() == acks_before);
        CHECK(w.server.unacked("bob") == 8);
    }
    SUBCASE("end to end: dropped for good (acknowledged, 6.6), the genuine message still opens with its time") {
        Pair p;
        auto& w = p.w;
        w.server.withhold = [](const sim::Frame&) { return true; };
        const auto sent_at = w.wall;
        w.send(*p.alice, "bob", "sent at noon");
        const auto genuine = w.server.log.back();
        for (std::size_t i = 0; i < 8; ++i) {
            w.server.deliver(tampered(genuine, ratchet_sent_at + i, 0x10));
            w.settle();
        }
        CHECK(p.bob->texts().empty());
        CHECK(p.bob->of<sim::ErrorEvent>("alice").size() == 8);
        // The receive time is the server's word, not sealed: a server can state any it likes, and it is shown as
        // such (docs/protocol.md 6.5); the sender's time still comes from inside the message.
        w.server.receive_time = sim::WallTime{std::chrono::milliseconds{42}};
        w.server.deliver(genuine);
        w.settle();
        const auto got = p.bob->of<sim::MessageEvent>("alice");
        REQUIRE(got.size() == 1);
        CHECK(got[0].text == "sent at noon");
        CHECK(got[0].sent_at == sent_at);
        CHECK(got[0].received_at == sim::WallTime{std::chrono::milliseconds{42}});
    }
}

TEST_CASE("a garbled delivery header: the message is not shown, not acknowledged, and is reported") {
    Pair p;
    auto& w = p.w;
    const auto acks_before = w.server.acks.size();
    // the delivery version before device addresses, which the client no longer reads
    w.server.rewrite = [](sim::Bytes& payload) { payload[0] = 1; };
    w.send(*p.alice, "bob", "behind a bad header");
    CHECK(p.bob->texts().empty());
    const auto errors = p.bob->of<sim::ErrorEvent>("alice");
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].error.code == sim::Errc::bad_field);
    CHECK(w.server.acks.size() == acks_before);
    CHECK(w.server.unacked("bob") == 1);
}

TEST_CASE("a server that re-addresses a message (conversation id, sender device, source) is caught") {
    // Delivery header (6.5): version 1 | received_at 8 | conversation 16 | sender device u32.
    constexpr std::size_t conversation_at = 1 + 8;
    constexpr std::size_t sender_device_at = conversation_at + 16;
    SUBCASE("another pair's conversation id: not shown, not acknowledged") {
        Pair p;
        auto& w = p.w;
        const auto acks_before = w.server.acks.size();
        const auto other = sim::pair_conversation_id("alice", "carol");
        w.server.rewrite = [other](sim::Bytes& payload) {
            std::copy(other.begin(), other.end(), payload.begin() + conversation_at);
        };
        w.send(*p.alice, "bob", "for bob");
        CHECK(p.bob->texts().empty());
        const auto errors = p.bob->of<sim::ErrorEvent>("alice");
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].error.code == sim::Errc::bad_field);
        CHECK(w.server.acks.size() == acks_before);
        CHECK(w.server.unacked("bob") == 1);
    }
    SUBCASE("the source rewritten alone: the conversation id still names the real pair") {
        World w;
        auto& bob = w.start("bob");
        auto& carol = w.start("carol", "bob");
        w.send(carol, "bob", "carol here");
        auto& alice = w.start("alice", "bob");
        w.server.withhold = [](const sim::Frame&) { return true; };
        w.send(alice, "bob", "from alice");
        auto relabelled = w.server.log.back();
        relabelled.source = "carol";
        w.server.deliver(relabelled);
        w.settle();
        CHECK(bob.texts("carol") == std::vector<std::string>{"carol here"});
        CHECK_FALSE(bob.saw<sim::IdentityChangedEvent>("carol"));
        const auto errors = bob.of<sim::ErrorEvent>("carol");
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].error.code == sim::Errc::bad_field);
    }
    SUBCASE("another sender device: it opens, but its sealed address differs, so it is dropped") {
        Pair p;
        auto& w = p.w;
        w.send(*p.alice, "bob", "genuine");
        REQUIRE(p.bob->texts("alice") == std::vector<std::string>{"genuine"});
        w.server.rewrite = [](sim::Bytes& payload) { payload.at(sender_device_at + 3) = 2; };
        w.send(*p.alice, "bob", "from device 1");
        CHECK(p.bob->texts("alice") == std::vector<std::string>{"genuine"});
        const auto errors = p.bob->of<sim::ErrorEvent>("alice");
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].error.code == sim::Errc::auth_failed);
        CHECK(errors[0].error.detail.find("re-addressed") != std::string::npos);
        // delivered as sent, the next one is shown (the dropped one is reported missing)
        w.server.rewrite = nullptr;
        w.send(*p.alice, "bob", "after");
        CHECK(p.bob->texts("alice") == std::vector<std::string>{"genuine", "after"});
    }
}

TEST_CASE("server-assigned: a message sent again keeps the time it was first sent at, also after a restart") {
    AssignedPair p;
    auto& w = p.w;
    const auto first_sent = w.wall;
    bool drop = true;
    w.server.withhold = [&drop](const sim::Frame&) { return std::exchange(drop, false); };
    const auto id = p.alice->core->send("bob", "first try");
    REQUIRE(id);
    w.settle();
    const auto n = w.server.log.size();
    // An hour later on the sender's clock, the outbox sends it again: re-sealed (new record), same timestamp.
    w.wall += std::chrono::hours(1);
    w.clock.advance(10s);
    p.alice->core->tick();
    w.settle();
    REQUIRE(w.server.log.size() == n + 1);
    CHECK(envelope_id(w.server.log[n]) == *id);
    CHECK(w.server.log[n - 1].payload != w.server.log[n].payload);
    auto got = p.bob->of<sim::MessageEvent>("alice");
    REQUIRE(got.size() == 1);
    CHECK(got[0].sent_at == first_sent);

    // The same across a restart of the sender: the outbox record keeps the timestamp.
    w.server.withhold = [](const sim::Frame&) { return true; };
    const auto second_sent = w.wall;
    REQUIRE(p.alice->core->send("bob", "before the crash"));
    w.settle();
    w.stop(*p.alice);
    w.server.withhold = nullptr;
    w.wall += std::chrono::hours(5);
    const auto log_before = w.server.log.size();
    auto& alice2 = w.start("alice", "bob");
    w.settle();
    CHECK(w.server.log.size() == log_before + 1);  // sent once, after the new KEYGEN
    CHECK(alice2.core->outbox_size() == 0);
    got = p.bob->of<sim::MessageEvent>("alice");
    REQUIRE(got.size() == 2);
    CHECK(got[1].text == "before the crash");
    CHECK(got[1].sent_at == second_sent);
    CHECK(second_sent != first_sent);
}

TEST_CASE("an unsealed outbox record of the earlier format (no timestamp) is read and sent, its time unknown") {
    AssignedPair p;
    auto& w = p.w;
    w.server.withhold = [](const sim::Frame&) { return true; };
    const auto id = p.alice->core->send("bob", "queued before timestamps");
    REQUIRE(id);
    w.settle();
    w.stop(*p.alice);
    w.server.withhold = nullptr;
    auto& state = *w.states["alice"];
    const auto header = state.get("outbox").value();
    REQUIRE(header);
    REQUIRE(header->size() == 17);
    std::uint64_t place = 0;
    for (int i = 9; i < 17; ++i) {
        place = (place << 8U) | (*header)[static_cast<std::size_t>(i)];
    }
    --place;
    const auto key = "outbox/o/" + std::to_string(place);
    const auto record = state.get(key).value();
    REQUIRE(record);
    // id (16) | peer len | "bob" | today's unsealed text: id | 3 | sent_at (8) | text
    const std::size_t payload_at = 16 + 1 + 3;
    REQUIRE(record->size() > payload_at + 17 + 8);
    REQUIRE((*record)[payload_at + 16] == 3);
    // As the earlier release wrote it: id | 1 | text.
    sim::SecureBytes old(record->begin(), record->begin() + static_cast<std::ptrdiff_t>(payload_at + 16));
    old.push_back(1);
    old.insert(old.end(), record->begin() + static_cast<std::ptrdiff_t>(payload_at + 17 + 8), record->end());
    REQUIRE(state.write({{key, old}}));

    auto& alice2 = w.start("alice", "bob");
    w.settle();
    CHECK(alice2.core->outbox_size() == 0);
    const auto got = p.bob->of<sim::MessageEvent>("alice");
    REQUIRE(got.size() == 1);
    CHECK(got[0].text == "queued before timestamps");
    CHECK(got[0].message_id == *id);
    CHECK(got[0].sent_at == sim::WallTime{});
    CHECK(got[0].received_at == w.server.receive_time);
}
