// Server core and client core together over in-memory pipes: the seed's flow, its three attacks, rotation,
// tokens and bad input. Deterministic: a manual clock, a deterministic RNG, a queue executor; nothing sleeps.
#include <sim/auth.h>
#include <sim/client.h>
#include <sim/crypto.h>
#include <sim/frame.h>
#include <sim/server.h>
#include <sim/store.h>

#include <doctest/doctest.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <thread>
#include <memory>
#include <vector>

using namespace std::chrono_literals;

namespace {

/// One direction of an in-memory connection: bytes are queued and delivered by the harness's pump.
struct Pipe;

class PipeOutput final : public sim::ConnectionOutput {
public:
    explicit PipeOutput(Pipe& pipe, bool client_side) : m_pipe(pipe), m_client_side(client_side) {}
    void send(sim::Bytes data) override;
    void close(sim::Errc reason) override;
    void established() override {}

private:
    Pipe& m_pipe;
    bool m_client_side;
};

struct Pipe {
    std::shared_ptr<sim::ConnectionHandler> client;
    std::shared_ptr<sim::ConnectionHandler> server;
    std::deque<sim::Bytes> to_server;
    std::deque<sim::Bytes> to_client;
    std::vector<sim::Bytes> captured_to_server;  // what an eavesdropper on the wire saw
    bool closed = false;
    bool close_requested = false;
    sim::Errc close_reason = sim::Errc::ok;

    /// Deliver queued bytes both ways; returns whether anything moved.
    bool pump() {
        bool moved = false;
        while (!closed && (!to_server.empty() || !to_client.empty())) {
            moved = true;
            if (!to_server.empty()) {
                auto b = std::move(to_server.front());
                to_server.pop_front();
                server->on_bytes(b);
            }
            if (!to_client.empty()) {
                auto b = std::move(to_client.front());
                to_client.pop_front();
                client->on_bytes(b);
            }
        }
        if (close_requested && !closed && to_server.empty() && to_client.empty()) {
            closed = true;
            server->on_closed(close_reason);
            client->on_closed(close_reason);
            moved = true;
        }
        return moved;
    }
};

void PipeOutput::send(sim::Bytes data) {
    if (m_pipe.closed || m_pipe.close_requested) {
        return;
    }
    if (m_client_side) {
        m_pipe.captured_to_server.push_back(data);
        m_pipe.to_server.push_back(std::move(data));
    } else {
        m_pipe.to_client.push_back(std::move(data));
    }
}

void PipeOutput::close(sim::Errc reason) {
    if (!m_pipe.close_requested) {
        m_pipe.close_requested = true;
        m_pipe.close_reason = reason;
    }
}

struct TestClient {
    std::shared_ptr<sim::ClientCore> core;
    std::vector<sim::ClientEvent> events;
    std::unique_ptr<Pipe> pipe;

    [[nodiscard]] bool saw(sim::ClientEventKind kind, const std::string& peer = {}) const {
        for (const auto& e : events) {
            if (e.kind == kind && (peer.empty() || e.peer == peer)) {
                return true;
            }
        }
        return false;
    }
    [[nodiscard]] std::vector<sim::ClientEvent> of(sim::ClientEventKind kind) const {
        std::vector<sim::ClientEvent> out;
        for (const auto& e : events) {
            if (e.kind == kind) {
                out.push_back(e);
            }
        }
        return out;
    }
};

struct World {
    sim::ManualClock clock;
    std::unique_ptr<sim::Rng> rng;
    std::unique_ptr<sim::store::Backend> backend = sim::store::make_memory_backend();
    std::unique_ptr<sim::auth::PasswordHasher> hasher;
    std::unique_ptr<sim::auth::Authenticator> authenticator;
    std::unique_ptr<sim::auth::SessionTokens> tokens;
    std::unique_ptr<sim::auth::ConversationKeyVault> vault;
    sim::QueueExecutor workers;
    std::unique_ptr<sim::ServerCore> server;
    sim::Bytes server_public;
    sim::MemoryKnownServers known;  // shared by the clients of this world (one "device")
    std::vector<std::unique_ptr<TestClient>> clients;

    explicit World(sim::SuitePolicy conversation_policy = sim::SuitePolicy::require_tdes(),
                   std::string_view seed = "server world")
        : rng(sim::make_deterministic_rng(sim::as_bytes(seed))) {
        sim::auth::HashPolicy hp;
        hp.bcrypt.cost = 4;  // tests: fast hashing
        hasher = std::move(sim::auth::make_password_hasher(hp).value());
        authenticator = std::move(sim::auth::Authenticator::create(*backend, *hasher, *rng, clock).value());
        tokens = std::make_unique<sim::auth::SessionTokens>(*backend, *rng);
        const sim::SecureBytes master(32, 0x11);
        vault = std::move(sim::auth::ConversationKeyVault::create(*backend, master, *rng).value());
        sim::ServerConfig cfg;
        cfg.static_private_key = rng->secure_bytes(32);
        cfg.conversation_policy = std::move(conversation_policy);
        cfg.wall_clock = [] { return sim::store::WallTime{std::chrono::milliseconds{1'800'000'000'000}}; };
        server = std::move(
            sim::ServerCore::create(std::move(cfg), *authenticator, *tokens, vault.get(), workers, *rng, clock)
                .value());
        server_public = sim::to_bytes(server->static_public_key());
    }

    TestClient& connect(sim::ClientConfig config = {}) {
        auto tc = std::make_unique<TestClient>();
        tc->pipe = std::make_unique<Pipe>();
        if (config.handshake.server_id.empty()) {
            config.handshake.server_id = "test-server:1";
        }
        auto* raw = tc.get();
        tc->core = std::move(sim::ClientCore::create(config, known, *rng, clock,
                                                     [raw](const sim::ClientEvent& e) { raw->events.push_back(e); })
                                 .value());
        tc->pipe->client = tc->core;
        tc->pipe->server = server->accept(std::make_shared<PipeOutput>(*tc->pipe, false), "127.0.0.1:40000");
        REQUIRE(tc->pipe->server != nullptr);
        REQUIRE(tc->core->attach(std::make_shared<PipeOutput>(*tc->pipe, true)));
        clients.push_back(std::move(tc));
        settle();
        return *clients.back();
    }

    /// Move bytes and run login jobs until nothing changes.
    void settle() {
        for (int i = 0; i < 1000; ++i) {
            bool moved = false;
            for (auto& c : clients) {
                moved = c->pipe->pump() || moved;
            }
            moved = workers.run_pending() != 0 || moved;
            if (!moved) {
                return;
            }
        }
        FAIL("the world did not settle");
    }

    sim::Status login(TestClient& c, const std::string& user, const std::string& password,
                      const std::string& destination = {}) {
        auto st = c.core->login(user, {sim::CredentialKind::password, sim::to_bytes<sim::SecureBytes>(sim::as_bytes(password))},
                                destination);
        settle();
        return st;
    }
};

}  // namespace

TEST_CASE("the seed's flow: login, waiting, KEYGEN, conversation, leaving") {
    World w;
    auto& alice = w.connect();
    REQUIRE(alice.saw(sim::ClientEventKind::channel_ready));
    CHECK(alice.events.front().first_contact);
    REQUIRE(w.login(alice, "Alice", "alice's password", "bob"));
    // ack_init sid 1 (authenticated, canonical name), then ack_init sid 3 (bob offline: waiting)
    REQUIRE(alice.saw(sim::ClientEventKind::authenticated, "alice"));
    CHECK(alice.saw(sim::ClientEventKind::waiting, "bob"));
    CHECK_FALSE(alice.saw(sim::ClientEventKind::key_assigned));
    CHECK(w.server->stats().waiting == 1);
    CHECK(alice.core->session_token().token.size() == sim::auth::session_token_size);

    // probing while waiting is answered with ack_init 3 again
    alice.events.clear();
    alice.core->tick();
    w.settle();
    CHECK(alice.saw(sim::ClientEventKind::waiting, "bob"));

    auto& bob = w.connect();
    REQUIRE(w.login(bob, "bob", "bob's password"));
    // bob logs in: alice is told at once (ack_init sid 2), both get KEYGEN (sid 9999) for the TDES suite
    CHECK(alice.saw(sim::ClientEventKind::peer_online, "bob"));
    REQUIRE(alice.saw(sim::ClientEventKind::key_assigned, "bob"));
    REQUIRE(bob.saw(sim::ClientEventKind::key_assigned, "alice"));
    CHECK(alice.core->conversation_suite("bob") == sim::SuiteId::tdes_cbc_hmac_sha256);
    CHECK(w.server->stats().conversations == 1);
    // the conversation key is in the vault, encrypted at rest, while the conversation lives
    CHECK(w.vault->get("alice", "bob")->has_value());

    REQUIRE(alice.core->send("bob", "Hello Bob!"));
    REQUIRE(alice.core->send("bob", "second"));
    w.settle();
    const auto got = bob.of(sim::ClientEventKind::message);
    REQUIRE(got.size() == 2);
    CHECK(got[0].peer == "alice");
    CHECK(got[0].text == "Hello Bob!");
    CHECK(got[0].sid == 1);
    CHECK(got[1].sid == 2);
    REQUIRE(bob.core->send("alice", "Hi Alice"));
    w.settle();
    CHECK(alice.of(sim::ClientEventKind::message).at(0).text == "Hi Alice");
    CHECK(w.server->stats().messages_routed == 3);

    // the largest texts go through both layers; one that cannot fit a frame is refused before sending
    const std::string big(60000, 'x');
    REQUIRE(alice.core->send("bob", big));
    w.settle();
    CHECK(bob.of(sim::ClientEventKind::message).back().text == big);
    CHECK(alice.core->send("bob", std::string(70000, 'x')).code() == sim::Errc::frame_too_large);

    // leaving ends the conversation and deletes its key
    REQUIRE(alice.core->leave("bob"));
    w.settle();
    CHECK(bob.saw(sim::ClientEventKind::peer_left, "alice"));
    CHECK(w.server->stats().conversations == 0);
    CHECK_FALSE(w.vault->get("alice", "bob")->has_value());
    CHECK(alice.core->send("bob", "gone").code() == sim::Errc::no_conversation);
}

TEST_CASE("a client holds several conversations; disconnecting ends them") {
    World w(sim::SuitePolicy::default_policy());
    auto& alice = w.connect();
    auto& bob = w.connect();
    auto& carol = w.connect();
    REQUIRE(w.login(bob, "bob", "pw-bob-123"));
    REQUIRE(w.login(carol, "carol", "pw-carol-123"));
    REQUIRE(w.login(alice, "alice", "pw-alice-123", "bob"));
    REQUIRE(alice.core->open("carol"));
    w.settle();
    CHECK(alice.core->conversations().size() == 2);
    CHECK(alice.core->conversation_suite("carol") == sim::SuiteId::aes256_gcm);
    REQUIRE(alice.core->send("carol", "to carol"));
    REQUIRE(alice.core->send("bob", "to bob"));
    w.settle();
    CHECK(carol.of(sim::ClientEventKind::message).at(0).text == "to carol");
    CHECK(bob.of(sim::ClientEventKind::message).at(0).text == "to bob");

    // alice's connection drops: both peers learn she left
    alice.pipe->close_requested = true;
    w.settle();
    CHECK(bob.saw(sim::ClientEventKind::peer_left, "alice"));
    CHECK(carol.saw(sim::ClientEventKind::peer_left, "alice"));
    CHECK(w.server->stats().conversations == 0);
    CHECK(w.server->stats().online_users == 2);

    // reconnecting with the session token works and starts a new conversation
    const auto token = alice.core->session_token();
    auto& alice2 = w.connect();
    REQUIRE(alice2.core->login("alice", {sim::CredentialKind::token, token.token}, "bob"));
    w.settle();
    CHECK(alice2.saw(sim::ClientEventKind::authenticated, "alice"));
    CHECK(alice2.saw(sim::ClientEventKind::key_assigned, "bob"));
    CHECK(alice2.core->session_token().token.empty());  // a token login issues no new token
}

TEST_CASE("attack 1: Trudy sends init as Alice without Alice's password") {
    World w;
    auto& alice = w.connect();
    REQUIRE(w.login(alice, "alice", "alice's real password"));
    auto& trudy = w.connect();
    REQUIRE(w.login(trudy, "alice", "a guess", "bob"));
    CHECK_FALSE(trudy.saw(sim::ClientEventKind::authenticated));
    const auto errors = trudy.of(sim::ClientEventKind::error);
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].error.code == sim::Errc::auth_rejected);
    CHECK(trudy.saw(sim::ClientEventKind::closed));
    CHECK(trudy.pipe->closed);
    // alice is unaffected
    CHECK_FALSE(alice.pipe->closed);
    CHECK(w.server->stats().online_users == 1);
    CHECK(w.server->stats().logins_failed == 1);

    // a forged token does not work either
    auto& trudy2 = w.connect();
    REQUIRE(trudy2.core->login("alice", {sim::CredentialKind::token, sim::SecureBytes(32, 0xAB)}));
    w.settle();
    CHECK(trudy2.of(sim::ClientEventKind::error).at(0).error.code == sim::Errc::auth_rejected);
    CHECK(trudy2.pipe->closed);
}

TEST_CASE("attack 2: Trudy, logged in as herself, sends a message with source Alice") {
    World w;
    auto& alice = w.connect();
    auto& bob = w.connect();
    auto& trudy = w.connect();
    REQUIRE(w.login(bob, "bob", "pw-bob-123"));
    REQUIRE(w.login(alice, "alice", "pw-alice-123", "bob"));
    REQUIRE(w.login(trudy, "trudy", "pw-trudy-123", "bob"));
    REQUIRE(alice.saw(sim::ClientEventKind::key_assigned, "bob"));
    REQUIRE(trudy.saw(sim::ClientEventKind::key_assigned, "bob"));
    bob.events.clear();

    // The seed's attack frame, s:"Alice" d:"Bob", sent inside Trudy's own valid channel: refused, not forwarded.
    REQUIRE(trudy.core->send_raw(
        sim::Frame{sim::FrameType::message, 9, "alice", "bob", sim::to_bytes(sim::as_bytes("Hello Bob!"))}));
    w.settle();
    CHECK(trudy.of(sim::ClientEventKind::error).at(0).error.code == sim::Errc::source_mismatch);
    CHECK(bob.events.empty());
    CHECK_FALSE(trudy.pipe->closed);  // refused, but Trudy's own connection stays usable
    CHECK(w.server->stats().messages_refused >= 1);

    // A forged body that does reach Bob (here under Trudy's own name, so the server forwards it) fails his
    // decryption: an error event, never a displayed message.
    REQUIRE(trudy.core->send_raw(sim::Frame{sim::FrameType::message, 0, "trudy", "bob", w.rng->bytes(80)}));
    w.settle();
    CHECK(bob.of(sim::ClientEventKind::message).empty());
    REQUIRE(bob.of(sim::ClientEventKind::error).size() == 1);
    CHECK(bob.of(sim::ClientEventKind::error)[0].peer == "trudy");
    // ... and Bob's conversations survive it
    REQUIRE(alice.core->send("bob", "real message"));
    w.settle();
    CHECK(bob.of(sim::ClientEventKind::message).at(0).text == "real message");

    // Other forged fields are refused too: the server as destination, a message before a key, an ack from a client.
    REQUIRE(trudy.core->send_raw(sim::Frame{sim::FrameType::message, 0, "trudy", "Server", {1, 2, 3}}));
    REQUIRE(trudy.core->send_raw(sim::Frame{sim::FrameType::message, 0, "trudy", "carol", {1, 2, 3}}));
    w.settle();
    const auto errs = trudy.of(sim::ClientEventKind::error);
    REQUIRE(errs.size() == 3);
    CHECK(errs[1].error.code == sim::Errc::bad_destination);
    CHECK(errs[2].error.code == sim::Errc::no_conversation);
    REQUIRE(trudy.core->send_raw(sim::Frame{sim::FrameType::keygen, 9999, "Server", "bob", {}}));
    w.settle();
    CHECK(trudy.pipe->closed);
}

TEST_CASE("attack 3: a man in the middle with its own key is refused; replayed frames are rejected") {
    World w;
    // First contact pins the real server's key (trust on first use).
    auto& first = w.connect();
    REQUIRE(first.saw(sim::ClientEventKind::channel_ready));

    // A MITM answers with its own static key: another server core on the same pipe name.
    World mitm(sim::SuitePolicy::require_tdes(), "a different server");
    sim::ClientConfig cfg;
    cfg.handshake.server_id = "test-server:1";
    auto tc = std::make_unique<TestClient>();
    tc->pipe = std::make_unique<Pipe>();
    auto* raw = tc.get();
    tc->core = std::move(sim::ClientCore::create(cfg, w.known /* the victim's pins */, *w.rng, w.clock,
                                                 [raw](const sim::ClientEvent& e) { raw->events.push_back(e); })
                             .value());
    tc->pipe->client = tc->core;
    tc->pipe->server = mitm.server->accept(std::make_shared<PipeOutput>(*tc->pipe, false), "127.0.0.1:1");
    REQUIRE(tc->core->attach(std::make_shared<PipeOutput>(*tc->pipe, true)));
    // the client queues its login before the handshake completes, as an app would
    REQUIRE(tc->core->login("alice", {sim::CredentialKind::password, sim::to_bytes<sim::SecureBytes>(sim::as_bytes("secret password"))}));
    for (int i = 0; i < 10; ++i) {
        tc->pipe->pump();
        mitm.workers.run_pending();
    }
    REQUIRE(tc->saw(sim::ClientEventKind::closed));
    CHECK(tc->of(sim::ClientEventKind::closed).at(0).error.code == sim::Errc::server_key_mismatch);
    CHECK_FALSE(tc->saw(sim::ClientEventKind::channel_ready));
    // Nothing secret left the client: only msg1 (ephemeral key + suite offer) went out, no msg3, no record.
    REQUIRE(tc->pipe->captured_to_server.size() == 1);
    const auto msg1 = sim::decode_frame(tc->pipe->captured_to_server[0]);
    REQUIRE(msg1);
    CHECK(msg1->type == sim::FrameType::handshake);
    CHECK(mitm.server->stats().logins_ok == 0);

    // Replay: a captured record re-sent on the same connection is rejected and the channel dies.
    auto& alice = w.connect();
    REQUIRE(w.login(alice, "alice", "pw-alice-123"));
    REQUIRE(alice.core->probe("bob"));
    w.settle();
    const auto captured = alice.pipe->captured_to_server.back();
    alice.pipe->to_server.push_back(captured);
    w.settle();
    CHECK(alice.pipe->closed);
    CHECK(w.server->stats().online_users == 0);
}

TEST_CASE("conversation keys rotate every 30 seconds of the manual clock") {
    World w;
    auto& alice = w.connect();
    auto& bob = w.connect();
    REQUIRE(w.login(bob, "bob", "pw-bob-123"));
    REQUIRE(w.login(alice, "alice", "pw-alice-123", "bob"));
    REQUIRE(alice.core->send("bob", "epoch zero"));
    w.settle();
    CHECK_FALSE(alice.saw(sim::ClientEventKind::key_rotated));
    w.clock.advance(31s);
    REQUIRE(alice.core->send("bob", "epoch one"));
    w.settle();
    REQUIRE(alice.saw(sim::ClientEventKind::key_rotated, "bob"));
    CHECK(alice.of(sim::ClientEventKind::key_rotated).at(0).epoch == 1);
    REQUIRE(bob.saw(sim::ClientEventKind::key_rotated, "alice"));
    const auto msgs = bob.of(sim::ClientEventKind::message);
    REQUIRE(msgs.size() == 2);
    CHECK(msgs[1].text == "epoch one");
}

TEST_CASE("bad input to the server: garbage, wrong order, oversize") {
    World w;
    SUBCASE("garbage bytes instead of a handshake") {
        auto& c = w.connect();
        c.pipe->to_server.push_back(sim::Bytes(64, 0xEE));
        w.settle();
        CHECK(c.pipe->closed);
    }
    SUBCASE("an inner frame before login") {
        auto& c = w.connect();
        REQUIRE(c.core->send_raw(sim::Frame{sim::FrameType::probe, 0, "x", "y", {}}));
        w.settle();
        CHECK(c.of(sim::ClientEventKind::error).at(0).error.code == sim::Errc::not_authenticated);
        CHECK(c.pipe->closed);
    }
    SUBCASE("an oversized frame header") {
        auto& c = w.connect();
        sim::Bytes header = {1, 0x02, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF};
        c.pipe->to_server.push_back(header);
        w.settle();
        CHECK(c.pipe->closed);
    }
    SUBCASE("bad user names are refused before any database work") {
        auto& c = w.connect();
        REQUIRE(w.login(c, "no spaces allowed", "password123"));
        CHECK(c.of(sim::ClientEventKind::error).at(0).error.code == sim::Errc::bad_username);
        CHECK(c.pipe->closed);
    }
    SUBCASE("a flood is rate limited and finally closed") {
        auto& alice = w.connect();
        auto& bob = w.connect();
        REQUIRE(w.login(bob, "bob", "pw-bob-123"));
        REQUIRE(w.login(alice, "alice", "pw-alice-123", "bob"));
        for (int i = 0; i < 6000 && !alice.pipe->closed; ++i) {
            (void)alice.core->send("bob", "flood");
            alice.pipe->pump();
        }
        w.settle();
        CHECK(bob.of(sim::ClientEventKind::message).size() <= 4001);
        bool limited = false;
        for (const auto& e : alice.of(sim::ClientEventKind::error)) {
            limited = limited || e.error.code == sim::Errc::rate_limited;
        }
        CHECK(limited);
        CHECK(alice.pipe->closed);
        CHECK_FALSE(bob.pipe->closed);
    }
}

TEST_CASE("a user who logs in naming a peer that waits for them gets one KEYGEN, not two") {
    World w;
    auto& alice = w.connect();
    auto& bob = w.connect();
    REQUIRE(w.login(alice, "alice", "pw-alice-123", "bob"));
    REQUIRE(alice.saw(sim::ClientEventKind::waiting, "bob"));
    REQUIRE(w.login(bob, "bob", "pw-bob-123", "alice"));
    CHECK(alice.of(sim::ClientEventKind::key_assigned).size() == 1);
    CHECK(bob.of(sim::ClientEventKind::key_assigned).size() == 1);
    CHECK(bob.saw(sim::ClientEventKind::peer_online, "alice"));
    REQUIRE(bob.core->send("alice", "one key"));
    w.settle();
    CHECK(alice.of(sim::ClientEventKind::message).at(0).text == "one key");
}

TEST_CASE("FileKnownServers: pins persist, bad files are refused, concurrent writers do not collide") {
    char tmpl[] = "/tmp/libsim-known-test.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string path = std::string(tmpl) + "/known";
    const sim::Bytes key_a(32, 0xA1);
    const sim::Bytes key_b(32, 0xB2);
    {
        auto known = sim::FileKnownServers::open(path);
        REQUIRE(known);
        CHECK_FALSE((*known)->lookup("a:1").has_value());
        REQUIRE((*known)->remember("a:1", key_a));
        REQUIRE((*known)->remember("b:2", key_b));
        REQUIRE((*known)->remember("a:1", key_b));  // replacement
        CHECK((*known)->remember("two words", key_a).code() == sim::Errc::invalid_argument);
    }
    auto again = sim::FileKnownServers::open(path);
    REQUIRE(again);
    CHECK((*again)->lookup("a:1") == key_b);
    CHECK((*again)->lookup("b:2") == key_b);

    std::vector<std::thread> writers;
    for (int i = 0; i < 8; ++i) {
        writers.emplace_back([&, i] {
            auto k = sim::FileKnownServers::open(path);
            REQUIRE(k);
            CHECK((*k)->remember("server" + std::to_string(i), key_a));
        });
    }
    for (auto& t : writers) {
        t.join();
    }
    auto merged = sim::FileKnownServers::open(path);
    REQUIRE(merged);
    for (int i = 0; i < 8; ++i) {
        CHECK((*merged)->lookup("server" + std::to_string(i)) == key_a);  // no writer lost another's pin
    }
    {
        std::ofstream bad(path, std::ios::app);
        bad << "broken-line-without-key\n";
    }
    CHECK(sim::FileKnownServers::open(path).code() == sim::Errc::bad_field);
    std::filesystem::remove_all(tmpl);
}
