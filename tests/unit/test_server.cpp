// Server core and client core together over in-memory pipes: the seed's flow, its three attacks, rotation,
// tokens and bad input. Deterministic: a manual clock, a deterministic RNG, a queue executor; nothing sleeps.
#include <sim/auth.h>
#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/crypto.h>
#include <sim/e2e.h>
#include <sim/frame.h>
#include <sim/messages.h>
#include <sim/server.h>
#include <sim/store.h>
#include <sim/testing.h>

#include "harness.h"
#include "e2e/link.h"
#include "proto/devices.h"
#include "proto/presence.h"

#include <doctest/doctest.h>

#include <functional>
#include <tuple>

#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

using sim_test::Pipe;
using sim_test::PipeOutput;
using sim_test::TestClient;

/// The memory backend's message store, counting transactions (group commit tests).
class CountingMessages final : public sim::store::MessageStore {
public:
    explicit CountingMessages(sim::store::MessageStore& inner) : m_inner(inner) {}
    sim::Result<Applied> apply(const Changes& changes) override {
        if (!changes.appends.empty()) {
            ++appends;
            if (auto hook = std::exchange(during_append, nullptr)) {
                hook();
            }
            if (fail_appends > 0) {
                --fail_appends;
                return sim::Error{sim::Errc::storage_error, "disk full"};
            }
            appended += changes.appends.size();
        }
        removes += changes.removals.empty() ? 0 : 1;
        return m_inner.apply(changes);
    }
    sim::Result<std::vector<sim::store::StoredMessage>> pending(std::string_view r, sim::DeviceId device,
                                                                std::uint64_t after, std::size_t limit) override {
        return m_inner.pending(r, device, after, limit);
    }
    sim::Result<sim::store::StoredUsage> usage(std::string_view r, sim::DeviceId device) override {
        return m_inner.usage(r, device);
    }
    sim::Result<std::map<std::string, sim::store::StoredUsage>> usage_by_sender() override {
        return m_inner.usage_by_sender();
    }
    std::size_t appends = 0;
    std::size_t appended = 0;
    std::size_t removes = 0;
    /// This many of the next appends fail as on a full disk (nothing is stored).
    int fail_appends = 0;
    /// Runs inside append, before it writes (lets a test make the server act while a commit is under way).
    std::function<void()> during_append;

private:
    sim::store::MessageStore& m_inner;
};

using sim_test::RawClient;

struct RawConn {
    std::shared_ptr<RawClient> client;
    std::unique_ptr<Pipe> pipe;
};

struct World {
    sim::ManualClock clock;
    std::unique_ptr<sim::Rng> rng;
    std::unique_ptr<sim::store::Backend> backend = sim::store::make_memory_backend();
    std::unique_ptr<sim::auth::PasswordHasher> hasher;
    std::unique_ptr<sim::auth::Authenticator> authenticator;
    std::unique_ptr<sim::auth::SessionTokens> tokens;
    std::unique_ptr<sim::auth::ConversationKeyVault> vault;
    sim::testing::QueueExecutor workers;
    std::unique_ptr<sim::ServerCore> server;
    sim::Bytes server_public;
    sim::MemoryKnownServers known;  // shared by the clients of this world (one "device")
    std::vector<std::unique_ptr<TestClient>> clients;

    std::unique_ptr<CountingMessages> messages = std::make_unique<CountingMessages>(*backend);
    std::vector<RawConn> raws;

    explicit World(sim::SuitePolicy conversation_policy = sim::SuitePolicy::require_tdes(),
                   std::string_view seed = "server world",
                   sim::ConversationMode mode = sim::ConversationMode::server_assigned,
                   std::size_t max_stored = 100'000, const std::function<void(sim::ServerConfig&)>& configure = {})
        : rng(sim::make_deterministic_rng(sim::as_bytes(seed))) {
        sim::auth::HashPolicy hp;
        hp.bcrypt.cost = 4;  // tests: fast hashing
        hasher = std::move(sim::auth::make_password_hasher(hp).value());
        authenticator = std::move(sim::auth::Authenticator::create(*backend, *hasher, *rng, clock).value());
        tokens = std::make_unique<sim::auth::SessionTokens>(*backend, *rng);
        const sim::SecureBytes master(32, 0x11);
        vault = std::move(sim::auth::ConversationKeyVault::create(*backend, master, *rng).value());
        base.static_private_key = rng->secure_bytes(32);
        base.conversation_policy = std::move(conversation_policy);
        base.conversation_mode = mode;
        base.max_stored_per_recipient = max_stored;
        base.wall_clock = [] { return sim::store::WallTime{std::chrono::milliseconds{1'800'000'000'000}}; };
        if (configure) {
            configure(base);
        }
        start({});
    }

    /// A new server on the same store, configured as at first and then by `configure` (every connection of
    /// the old one is dropped first, as a restart would).
    void restart(const std::function<void(sim::ServerConfig&)>& configure = {}) {
        for (auto& rc : raws) {
            drop(*rc.client);
        }
        raws.clear();
        clients.clear();
        server.reset();
        start(configure);
    }

    sim::ServerConfig base;  // the configuration every (re)start begins from

    void start(const std::function<void(sim::ServerConfig&)>& configure) {
        sim::ServerConfig cfg = base;
        if (configure) {
            configure(cfg);
        }
        server = std::move(sim::ServerCore::create(std::move(cfg), *authenticator, *tokens, vault.get(), backend.get(),
                                                   messages.get(), workers, *rng, clock, backend.get(), backend.get())
                               .value());
        server_public = sim::to_bytes(server->static_public_key());
    }

    TestClient& connect(sim::ClientConfig config = {}) {
        if (config.handshake.server_id.empty()) {
            config.handshake.server_id = "test-server:1";
        }
        auto tc = sim_test::make_test_client(config, known, *rng, clock, [this](auto output) {
            return server->accept(std::move(output), "127.0.0.1:40000");
        });
        REQUIRE(tc != nullptr);
        clients.push_back(std::move(tc));
        settle();
        return *clients.back();
    }

    /// A raw client (channel only), handshake done; `features` offered in the handshake.
    RawClient& connect_raw(std::vector<sim::ChannelFeature> features = {}) {
        RawConn rc;
        rc.pipe = std::make_unique<Pipe>();
        rc.client = std::make_shared<RawClient>(known, *rng, clock, "test-server:1", sim::ByteView{}, std::move(features));
        rc.pipe->client = rc.client;
        rc.pipe->server = server->accept(std::make_shared<PipeOutput>(*rc.pipe, false), "127.0.0.1:40001");
        REQUIRE(rc.pipe->server != nullptr);
        rc.client->start(std::make_shared<PipeOutput>(*rc.pipe, true));
        raws.push_back(std::move(rc));
        settle();
        REQUIRE(raws.back().client->ready);
        return *raws.back().client;
    }

    /// Send a password init from a raw client (not settled).
    static void send_init(RawClient& c, const std::string& user, const std::string& password,
                          const std::string& destination = {}) {
        c.send(sim::Frame{sim::FrameType::init, 0, user, destination,
                          sim::encode_credentials({sim::CredentialKind::password,
                                                   sim::to_bytes<sim::SecureBytes>(sim::as_bytes(password))})});
    }

    /// A raw client logged in as `user` (password = user name + "-pw"), inbox emptied of the login frames.
    RawClient& raw_login(const std::string& user, const std::string& destination = {},
                         std::vector<sim::ChannelFeature> features = {}) {
        auto& c = connect_raw(std::move(features));
        send_init(c, user, user + "-pw", destination);
        settle();
        const auto first = std::find_if(c.inbox.begin(), c.inbox.end(),
                                        [](const sim::Frame& f) { return f.type == sim::FrameType::ack_init; });
        REQUIRE(first != c.inbox.end());
        REQUIRE(first->sid == 1);
        c.inbox.erase(first);
        // The limits come before ack_init 1 (docs/protocol.md 6.6).
        REQUIRE_FALSE(c.inbox.empty());
        REQUIRE(c.inbox.front().type == sim::FrameType::limits);
        c.limits = sim::decode_server_limits(c.inbox.front().payload).value();
        c.inbox.erase(c.inbox.begin());
        return c;
    }

    /// Close a raw client's connection (as a dropped TCP connection).
    void drop(RawClient& c) {
        for (auto& rc : raws) {
            if (rc.client.get() == &c && !rc.pipe->closed) {
                rc.pipe->close_requested = true;
                rc.pipe->close_reason = sim::Errc::closed;
            }
        }
        settle();
    }

    /// Move bytes only (no executor jobs: logins and commits wait).
    void pump_pipes() {
        for (int i = 0; i < 1000; ++i) {
            bool moved = false;
            for (auto& c : clients) {
                moved = c->pipe->pump() || moved;
            }
            for (auto& rc : raws) {
                moved = rc.pipe->pump() || moved;
            }
            if (!moved) {
                return;
            }
        }
    }

    /// Move bytes and run login jobs until nothing changes.
    void settle() {
        for (int i = 0; i < 1000; ++i) {
            bool moved = false;
            for (auto& c : clients) {
                moved = c->pipe->pump() || moved;
            }
            for (auto& rc : raws) {
                moved = rc.pipe->pump() || moved;
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
        auto st = c.core->login(
            user, {sim::CredentialKind::password, sim::to_bytes<sim::SecureBytes>(sim::as_bytes(password))},
            destination);
        settle();
        return st;
    }
};

}  // namespace

TEST_CASE("a delivery window a client cannot dedupe after a crash is refused") {
    World w;
    for (const std::size_t window : {std::size_t{0}, sim::remembered_ids_per_sender + 1}) {
        sim::ServerConfig cfg = w.base;
        cfg.delivery_window = window;
        const auto r = sim::ServerCore::create(std::move(cfg), *w.authenticator, *w.tokens, w.vault.get(),
                                               w.backend.get(), w.messages.get(), w.workers, *w.rng, w.clock);
        REQUIRE_FALSE(r);
        CHECK(r.code() == sim::Errc::invalid_argument);
    }
    sim::ServerConfig cfg = w.base;
    cfg.delivery_window = sim::remembered_ids_per_sender;
    CHECK(sim::ServerCore::create(std::move(cfg), *w.authenticator, *w.tokens, w.vault.get(), w.backend.get(),
                                  w.messages.get(), w.workers, *w.rng, w.clock));
}

TEST_CASE("the seed's flow: login, waiting, KEYGEN, conversation, leaving") {
    World w;
    auto& alice = w.connect();
    REQUIRE(alice.saw<sim::ChannelReadyEvent>());
    CHECK(std::get<sim::ChannelReadyEvent>(alice.events.front()).first_contact);
    REQUIRE(w.login(alice, "Alice", "alice's password", "bob"));
    // ack_init sid 1 (authenticated, canonical name), then ack_init sid 3 (bob offline: waiting). bob has never
    // logged in, so there is no account to store messages for: no key yet, as in the seed
    REQUIRE(alice.saw<sim::AuthenticatedEvent>("alice"));
    CHECK(alice.saw<sim::WaitingEvent>("bob"));
    CHECK(alice.of<sim::KeyAssignedEvent>().empty());
    CHECK(w.server->stats().waiting == 1);
    CHECK(alice.core->session_token().token.size() == sim::auth::session_token_size);

    // probing while waiting is answered with ack_init 3 again
    alice.events.clear();
    REQUIRE(alice.core->probe("bob"));
    w.settle();
    CHECK(alice.saw<sim::WaitingEvent>("bob"));

    auto& bob = w.connect();
    REQUIRE(w.login(bob, "bob", "bob's password"));
    // bob logs in (and so registers): alice is told at once (ack_init sid 2), and both get a KEYGEN (sid 9999,
    // the TDES suite)
    CHECK(alice.saw<sim::PeerOnlineEvent>("bob"));
    CHECK(alice.of<sim::KeyAssignedEvent>("bob").size() == 1);
    REQUIRE(bob.saw<sim::KeyAssignedEvent>("alice"));
    CHECK(alice.core->conversation_suite("bob") == sim::SuiteId::tdes_cbc_hmac_sha256);
    CHECK(w.server->stats().conversations == 1);
    // the conversation key is in the vault, encrypted at rest, while the conversation lives
    CHECK(w.vault->get("alice", "bob")->has_value());

    const auto system_now = [] {
        return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    };
    const auto before_send = system_now();
    REQUIRE(alice.core->send("bob", "Hello Bob!"));
    REQUIRE(alice.core->send("bob", "second"));
    const auto after_send = system_now();
    w.settle();
    const auto got = bob.of<sim::MessageEvent>();
    REQUIRE(got.size() == 2);
    CHECK(got[0].peer == "alice");
    CHECK(got[0].text == "Hello Bob!");
    CHECK(got[0].seq == 1);
    CHECK(got[1].seq == 2);
    // Forwarded at once (bob online, nothing stored for him): the sender's timestamp from alice's clock (the
    // system's, by default), the receive time from the server's wall clock.
    for (const auto& m : got) {
        CHECK(m.sent_at >= before_send);
        CHECK(m.sent_at <= after_send);
        CHECK(m.received_at == w.base.wall_clock());
    }
    REQUIRE(bob.core->send("alice", "Hi Alice"));
    w.settle();
    CHECK(alice.of<sim::MessageEvent>().at(0).text == "Hi Alice");
    CHECK(w.server->stats().messages_routed == 3);

    // the largest texts go through both layers; one that cannot fit a frame is refused before sending
    const std::string big(60000, 'x');
    REQUIRE(alice.core->send("bob", big));
    w.settle();
    CHECK(bob.of<sim::MessageEvent>().back().text == big);
    CHECK(alice.core->send("bob", std::string(70000, 'x')).code() == sim::Errc::frame_too_large);

    // leaving ends the conversation and deletes its key
    REQUIRE(alice.core->leave("bob"));
    w.settle();
    CHECK(bob.saw<sim::PeerLeftEvent>("alice"));
    CHECK(w.server->stats().conversations == 0);
    w.server->release_keys();  // no stored message needs the key: it goes
    CHECK_FALSE(w.vault->get("alice", "bob")->has_value());
    // Writing to bob again starts a new conversation: the message waits in the outbox, the client asks for bob
    // (init), both get a new KEYGEN and the message goes out under the new key.
    bob.events.clear();
    REQUIRE(alice.core->send("bob", "again"));
    w.settle();
    CHECK(bob.saw<sim::KeyAssignedEvent>("alice"));
    CHECK(bob.texts("alice") == std::vector<std::string>{"again"});
    CHECK(alice.core->outbox_size() == 0);
}

TEST_CASE("server-assigned mode: a message whose receipt was lost is sent again under the next key and shown once") {
    World w;
    auto alice_state = sim::make_memory_client_state();
    sim::ClientConfig alice_config;
    alice_config.state = alice_state.get();
    auto& bob = w.connect();
    REQUIRE(w.login(bob, "bob", "bob's password"));
    auto& alice = w.connect(alice_config);
    REQUIRE(w.login(alice, "alice", "alice's password", "bob"));
    REQUIRE(alice.saw<sim::KeyAssignedEvent>("bob"));
    const auto id = alice.core->send("bob", "once");
    REQUIRE(id);
    CHECK(alice.core->outbox_size() == 1);
    // alice's message reaches bob, bob keeps and acknowledges it, and alice's connection drops before her
    // 'delivered' receipt arrives: the message is still in her outbox.
    alice.pipe->pump();
    (void)w.workers.run_pending();  // the commit: stored, then drained into bob's connection
    bob.pipe->pump();
    REQUIRE(bob.texts("alice") == std::vector<std::string>{"once"});
    alice.pipe->close_now();
    w.settle();
    CHECK(bob.saw<sim::PeerLeftEvent>("alice"));
    // A new connection with the same state: the outbox asks for a key, gets a new conversation with bob and sends
    // the message again sealed under it; bob acknowledges it again but shows it once.
    auto& again = w.connect(alice_config);
    CHECK(again.core->outbox_size() == 1);
    REQUIRE(w.login(again, "alice", "alice's password"));
    CHECK(again.saw<sim::KeyAssignedEvent>("bob"));
    CHECK(again.core->outbox_size() == 0);
    CHECK(bob.texts("alice") == std::vector<std::string>{"once"});
    CHECK(bob.core->inbox_status().next == 1);
    CHECK_FALSE(bob.saw<sim::ErrorEvent>());
    // The new conversation works both ways.
    REQUIRE(again.core->send("bob", "twice"));
    w.settle();
    CHECK(bob.texts("alice") == std::vector<std::string>{"once", "twice"});
}

TEST_CASE("changing the password over the protocol: the old one is checked, tokens are replaced, the state re-sealed") {
    World w;
    char tmpl[] = "/tmp/libsim-passwd-test.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string path = std::string(tmpl) + "/alice.db";
    sim::ClientStateParams cheap;
    cheap.argon2_memory_kib = 64;
    cheap.argon2_iterations = 1;
    {
        auto state = sim::open_client_state(path, "old password 1", cheap);
        REQUIRE(state);
        sim::ClientConfig config;
        config.state = state->get();
        auto& alice = w.connect(config);
        REQUIRE(w.login(alice, "alice", "old password 1"));
        REQUIRE(alice.saw<sim::AuthenticatedEvent>());
        const auto old_token = alice.core->session_token().token;
        REQUIRE_FALSE(old_token.empty());

        // Refused before anything is sent: empty or too long.
        CHECK(alice.core->change_password("old password 1", "").code() == sim::Errc::bad_password);
        CHECK(alice.core->change_password("old password 1", std::string(2000, 'x')).code() == sim::Errc::bad_password);
        // A wrong old password: refused by the server, the connection stays, nothing changes.
        REQUIRE(alice.core->change_password("not my password", "new password 2"));
        w.settle();
        const auto refused = alice.of<sim::ErrorEvent>();
        REQUIRE(refused.size() == 1);
        CHECK(refused[0].error.code == sim::Errc::auth_rejected);
        CHECK_FALSE(alice.saw<sim::PasswordChangedEvent>());
        CHECK_FALSE(alice.pipe->closed);
        const auto now = sim::store::WallTime{std::chrono::milliseconds{1'800'000'000'000}};
        CHECK(w.tokens->validate(old_token, now));

        REQUIRE(alice.core->change_password("old password 1", "new password 2"));
        w.settle();
        REQUIRE(alice.saw<sim::PasswordChangedEvent>());
        const auto new_token = alice.core->session_token().token;
        CHECK(new_token != old_token);
        CHECK_FALSE(w.tokens->validate(old_token, now));  // every earlier session of alice ends
        CHECK(w.tokens->validate(new_token, now).value().username == "alice");
        // The server takes the new password only.
        auto& old_login = w.connect();
        (void)w.login(old_login, "alice", "old password 1");
        CHECK_FALSE(old_login.saw<sim::AuthenticatedEvent>());
        auto& new_login = w.connect();
        REQUIRE(w.login(new_login, "alice", "new password 2"));
        CHECK(new_login.saw<sim::AuthenticatedEvent>());
    }
    // The state opens with the new password only.
    CHECK(sim::open_client_state(path, "old password 1", cheap).code() == sim::Errc::auth_failed);
    CHECK(sim::open_client_state(path, "new password 2", cheap));
    std::filesystem::remove_all(tmpl);
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
    CHECK(carol.of<sim::MessageEvent>().at(0).text == "to carol");
    CHECK(bob.of<sim::MessageEvent>().at(0).text == "to bob");

    // alice's connection drops: both peers learn she left
    alice.pipe->close_requested = true;
    w.settle();
    CHECK(bob.saw<sim::PeerLeftEvent>("alice"));
    CHECK(carol.saw<sim::PeerLeftEvent>("alice"));
    CHECK(w.server->stats().conversations == 0);
    CHECK(w.server->stats().online_users == 2);
    CHECK(w.server->online_users() == std::vector<std::string>{"bob", "carol"});

    // reconnecting with the session token works and starts a new conversation
    const auto token = alice.core->session_token();
    auto& alice2 = w.connect();
    REQUIRE(alice2.core->login("alice", {sim::CredentialKind::token, token.token}, "bob"));
    w.settle();
    CHECK(alice2.saw<sim::AuthenticatedEvent>("alice"));
    CHECK(alice2.saw<sim::KeyAssignedEvent>("bob"));
    CHECK(alice2.core->session_token().token.empty());  // a token login issues no new token
}

TEST_CASE("attack 1: Trudy sends init as Alice without Alice's password") {
    World w;
    auto& alice = w.connect();
    REQUIRE(w.login(alice, "alice", "alice's real password"));
    auto& trudy = w.connect();
    REQUIRE(w.login(trudy, "alice", "a guess", "bob"));
    CHECK_FALSE(trudy.saw<sim::AuthenticatedEvent>());
    const auto errors = trudy.of<sim::ErrorEvent>();
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].error.code == sim::Errc::auth_rejected);
    CHECK(trudy.saw<sim::ClosedEvent>());
    CHECK(trudy.pipe->closed);
    // alice is unaffected
    CHECK_FALSE(alice.pipe->closed);
    CHECK(w.server->stats().online_users == 1);
    CHECK(w.server->online_users() == std::vector<std::string>{"alice"});
    CHECK(w.server->stats().logins_failed == 1);

    // a forged token does not work either
    auto& trudy2 = w.connect();
    REQUIRE(trudy2.core->login("alice", {sim::CredentialKind::token, sim::SecureBytes(32, 0xAB)}));
    w.settle();
    CHECK(trudy2.of<sim::ErrorEvent>().at(0).error.code == sim::Errc::auth_rejected);
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
    REQUIRE(alice.saw<sim::KeyAssignedEvent>("bob"));
    REQUIRE(trudy.saw<sim::KeyAssignedEvent>("bob"));
    bob.events.clear();

    // The seed's attack frame, s:"Alice" d:"Bob", sent inside Trudy's own valid channel: refused, not forwarded.
    REQUIRE(sim::testing::send_raw(*trudy.core, sim::Frame{sim::FrameType::message, 9, "alice", "bob",
                                                           sim::to_bytes(sim::as_bytes("Hello Bob!"))}));
    w.settle();
    CHECK(trudy.of<sim::ErrorEvent>().at(0).error.code == sim::Errc::source_mismatch);
    CHECK(bob.events.empty());
    CHECK_FALSE(trudy.pipe->closed);  // refused, but Trudy's own connection stays usable
    CHECK(w.server->stats().messages_refused >= 1);

    // A forged body that does reach Bob (here under Trudy's own name, so the server forwards it) fails his
    // decryption: an error event, never a displayed message.
    sim::Envelope forged;
    forged.mode = sim::ConversationMode::server_assigned;
    forged.body = w.rng->bytes(80);
    REQUIRE(sim::testing::send_raw(*trudy.core, sim::Frame{sim::FrameType::message, 0, "trudy", "bob",
                                                           sim::encode_pair_submission(forged, "trudy", "bob")}));
    w.settle();
    CHECK(bob.of<sim::MessageEvent>().empty());
    REQUIRE(bob.of<sim::ErrorEvent>().size() == 1);
    CHECK(bob.of<sim::ErrorEvent>()[0].peer == "trudy");
    // ... and Bob's conversations survive it
    REQUIRE(alice.core->send("bob", "real message"));
    w.settle();
    CHECK(bob.of<sim::MessageEvent>().at(0).text == "real message");

    // Other forged fields are refused too: the server as destination, a message before a key, an ack from a client.
    REQUIRE(sim::testing::send_raw(*trudy.core, sim::Frame{sim::FrameType::message, 0, "trudy", "Server", {1, 2, 3}}));
    REQUIRE(sim::testing::send_raw(*trudy.core, sim::Frame{sim::FrameType::message, 0, "trudy", "carol",
                                                           sim::encode_pair_submission(forged, "trudy", "carol")}));
    w.settle();
    const auto errs = trudy.of<sim::ErrorEvent>();
    REQUIRE(errs.size() == 3);
    CHECK(errs[1].error.code == sim::Errc::bad_destination);
    CHECK(errs[2].error.code == sim::Errc::no_conversation);
    REQUIRE(sim::testing::send_raw(*trudy.core, sim::Frame{sim::FrameType::keygen, 9999, "Server", "bob", {}}));
    w.settle();
    CHECK(trudy.pipe->closed);
}

TEST_CASE("attack 3: a man in the middle with its own key is refused; replayed frames are rejected") {
    World w;
    // First contact pins the real server's key (trust on first use).
    auto& first = w.connect();
    REQUIRE(first.saw<sim::ChannelReadyEvent>());

    // A MITM answers with its own static key: another server core on the same pipe name.
    World mitm(sim::SuitePolicy::require_tdes(), "a different server");
    sim::ClientConfig cfg;
    cfg.handshake.server_id = "test-server:1";
    auto tc = sim_test::make_test_client(cfg, w.known /* the victim's pins */, *w.rng, w.clock, [&](auto output) {
        return mitm.server->accept(std::move(output), "127.0.0.1:1");
    });
    REQUIRE(tc != nullptr);
    // the client queues its login before the handshake completes, as an app would
    REQUIRE(tc->core->login(
        "alice", {sim::CredentialKind::password, sim::to_bytes<sim::SecureBytes>(sim::as_bytes("secret password"))}));
    for (int i = 0; i < 10; ++i) {
        tc->pipe->pump();
        mitm.workers.run_pending();
    }
    REQUIRE(tc->saw<sim::ClosedEvent>());
    CHECK(tc->of<sim::ClosedEvent>().at(0).reason.code == sim::Errc::server_key_mismatch);
    CHECK_FALSE(tc->saw<sim::ChannelReadyEvent>());
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
    CHECK_FALSE(alice.saw<sim::KeyRotatedEvent>());
    w.clock.advance(31s);
    REQUIRE(alice.core->send("bob", "epoch one"));
    w.settle();
    REQUIRE(alice.saw<sim::KeyRotatedEvent>("bob"));
    CHECK(alice.of<sim::KeyRotatedEvent>().at(0).epoch == 1);
    REQUIRE(bob.saw<sim::KeyRotatedEvent>("alice"));
    const auto msgs = bob.of<sim::MessageEvent>();
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
        REQUIRE(sim::testing::send_raw(*c.core, sim::Frame{sim::FrameType::probe, 0, "x", "y", {}}));
        w.settle();
        CHECK(c.of<sim::ErrorEvent>().at(0).error.code == sim::Errc::not_authenticated);
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
        CHECK(c.of<sim::ErrorEvent>().at(0).error.code == sim::Errc::bad_username);
        CHECK(c.pipe->closed);
    }
    SUBCASE("a flood is rate limited and finally closed") {
        auto& alice = w.connect();
        auto& bob = w.connect();
        REQUIRE(w.login(bob, "bob", "pw-bob-123"));
        REQUIRE(w.login(alice, "alice", "pw-alice-123", "bob"));
        // Raw unsequenced frames: the library's own client paces its outbox to the announced limits.
        for (int i = 0; i < 6000 && !alice.pipe->closed; ++i) {
            sim::Envelope flood{{}, sim::ConversationMode::server_assigned, sim::Bytes(40, 7)};
            std::memcpy(flood.id.data(), &i, sizeof i);
            (void)sim::testing::send_raw(*alice.core, sim::Frame{sim::FrameType::message, 0, "alice", "bob",
                                                                 sim::encode_pair_submission(flood, "alice", "bob")});
            alice.pipe->pump();
        }
        w.settle();
        CHECK(bob.of<sim::ErrorEvent>().size() <= 4001);  // forged bodies: dropped, but forwarded
        bool limited = false;
        for (const auto& e : alice.of<sim::ErrorEvent>()) {
            limited = limited || e.error.code == sim::Errc::rate_limited;
        }
        CHECK(limited);
        CHECK(alice.pipe->closed);
        CHECK_FALSE(bob.pipe->closed);
    }
}

TEST_CASE("a login naming its device (docs/protocol.md 6.9): active devices are served, others are refused") {
    World w;
    const auto init = [&](const std::string& user, sim::CredentialKind kind, const sim::SecureBytes& secret,
                          std::optional<sim::DeviceId> device) -> RawClient& {
        auto& c = w.connect_raw();
        c.send(sim::Frame{sim::FrameType::init, 0, user, {}, sim::encode_credentials({kind, secret, device})});
        w.settle();
        return c;
    };
    const auto pw = [](const std::string& user) { return sim::to_bytes<sim::SecureBytes>(sim::as_bytes(user + "-pw")); };
    const auto authenticated = [](const RawClient& c) -> std::optional<sim::IssuedSessionToken> {
        for (const auto& f : c.inbox) {
            if (f.type == sim::FrameType::ack_init && f.sid == 1) {
                return sim::decode_session_token(f.payload).value();
            }
        }
        return std::nullopt;
    };
    const auto refused = [&](const RawClient& c) {
        REQUIRE_FALSE(c.inbox.empty());
        CHECK(w.raws.back().pipe->closed);
        CHECK_FALSE(authenticated(c).has_value());
        return sim::parse_error_frame(c.inbox.back()).value().code;
    };

    // A new installation whose login registers the account is its device 1, with a token for it.
    auto& fresh = init("quinn", sim::CredentialKind::password, pw("quinn"), sim::DeviceId{0});
    const auto first = authenticated(fresh);
    REQUIRE(first.has_value());
    CHECK(first->device == sim::first_device);
    CHECK(first->token.size() == 32);
    // Naming device 1 logs it in; no device field is device 1 with the answer of clients before devices.
    CHECK(authenticated(init("quinn", sim::CredentialKind::password, pw("quinn"), sim::first_device))->device ==
          sim::first_device);
    CHECK_FALSE(authenticated(init("quinn", sim::CredentialKind::password, pw("quinn"), std::nullopt))->device);
    // The token logs in the device it was issued to, with its device named or not.
    auto by_token = authenticated(init("quinn", sim::CredentialKind::token, first->token, sim::first_device));
    REQUIRE(by_token.has_value());
    CHECK(by_token->device == sim::first_device);
    CHECK(by_token->token.empty());
    CHECK(refused(init("quinn", sim::CredentialKind::token, first->token, sim::DeviceId{2})) == sim::Errc::bad_field);
    // A device the account does not have.
    CHECK(refused(init("quinn", sim::CredentialKind::password, pw("quinn"), sim::DeviceId{2})) ==
          sim::Errc::device_unknown);
    // The password is checked first: a wrong one says nothing about devices.
    CHECK(refused(init("quinn", sim::CredentialKind::password, pw("guess"), sim::DeviceId{2})) ==
          sim::Errc::auth_rejected);
    CHECK(w.server->stats().logins_failed == 3);  // the token naming another device, device 2, the guess
}

namespace {

/// Device steps over raw connections (docs/protocol.md 6.9), as a third-party client would send them.
struct DeviceSteps {
    World& w;

    RawClient& login(const std::string& user, sim::CredentialKind kind, const sim::SecureBytes& secret,
                     std::optional<sim::DeviceId> device) {
        auto& c = w.connect_raw();
        c.send(sim::Frame{sim::FrameType::init, 0, user, {}, sim::encode_credentials({kind, secret, device})});
        w.settle();
        return c;
    }
    RawClient& password(const std::string& user, std::optional<sim::DeviceId> device) {
        return login(user, sim::CredentialKind::password, sim::to_bytes<sim::SecureBytes>(sim::as_bytes(user + "-pw")),
                     device);
    }
    /// The last ack_init stage 1 a client got, decoded.
    static std::optional<sim::IssuedSessionToken> authenticated(const RawClient& c) {
        std::optional<sim::IssuedSessionToken> last;
        for (const auto& f : c.inbox) {
            if (f.type == sim::FrameType::ack_init && f.sid == 1) {
                last = sim::decode_session_token(f.payload).value();
            }
        }
        return last;
    }
    static std::vector<sim::Frame> of(const RawClient& c, sim::FrameType type) {
        std::vector<sim::Frame> out;
        std::copy_if(c.inbox.begin(), c.inbox.end(), std::back_inserter(out),
                     [&](const sim::Frame& f) { return f.type == type; });
        return out;
    }
    static sim::Errc last_error(const RawClient& c) {
        const auto errors = of(c, sim::FrameType::error);
        return errors.empty() ? sim::Errc::ok : sim::parse_error_frame(errors.back()).value().code;
    }
    void link(RawClient& c, const std::string& user, sim::LinkStep step, sim::DeviceId to, const sim::Bytes& data) {
        c.send(sim::Frame{sim::FrameType::link, 0, user, user, sim::encode_link({step, to, data, {}})});
        w.settle();
    }
    void devices(RawClient& c, const std::string& user, const sim::DevicesRequest& r, const std::string& whose = {}) {
        c.send(sim::Frame{sim::FrameType::devices, 0, user, whose.empty() ? user : whose,
                          sim::encode_devices_request(r).value()});
        w.settle();
    }
    /// The link frame `c` got last, decoded.
    static sim::LinkMessage last_link(const RawClient& c) {
        const auto links = of(c, sim::FrameType::link);
        REQUIRE_FALSE(links.empty());
        return sim::decode_link(links.back().payload).value();
    }
    static sim::DevicesReply last_devices(const RawClient& c) {
        const auto replies = of(c, sim::FrameType::devices);
        REQUIRE_FALSE(replies.empty());
        return sim::decode_devices_reply(replies.back().payload).value();
    }
};

}  // namespace

TEST_CASE("linking a second device through the server: relay, approval, activation, its token; removal ends it") {
    World w;
    DeviceSteps d{w};
    auto rng = sim::make_system_rng();
    const auto account = sim::e2e::generate_identity(*rng);  // device 1's key is the account key (an upgrade)
    const auto phone_key = sim::e2e::generate_identity(*rng);

    auto& laptop = d.password("alice", sim::DeviceId{0});  // registers: device 1
    REQUIRE(d.authenticated(laptop)->device == sim::first_device);
    // A new installation of the existing account is a pending device 2: no token, nothing of the account.
    auto& phone = d.password("alice", sim::DeviceId{0});
    const auto pending = d.authenticated(phone);
    REQUIRE(pending.has_value());
    CHECK(pending->device == sim::DeviceId{2});
    CHECK(pending->token.empty());
    CHECK(w.server->online_users() == std::vector<std::string>{"alice"});

    // The link exchange, relayed by the server with the sender's device named.
    auto joiner = sim::e2e::LinkJoiner::start(*rng, 2, phone_key.public_key).value();
    d.link(phone, "alice", sim::LinkStep::request, 0, joiner.request());
    const auto request = d.last_link(laptop);
    CHECK(request.step == sim::LinkStep::request);
    CHECK(request.device == sim::DeviceId{2});
    auto approver = sim::e2e::LinkApprover::start(*rng, request.data).value();
    d.link(laptop, "alice", sim::LinkStep::offer, 2, approver.offer());
    const auto offer = d.last_link(phone);
    CHECK(offer.device == sim::first_device);
    d.link(phone, "alice", sim::LinkStep::reveal, 1, joiner.reveal(offer.data).value());
    REQUIRE(approver.reveal(d.last_link(laptop).data));
    sim::e2e::DeviceList next{"alice", 1, 1, {{1, account.public_key}, {2, phone_key.public_key}}};
    const sim::e2e::LinkGrant grant{account.private_key, sim::e2e::sign_device_list(next, account, account).value()};
    d.link(laptop, "alice", sim::LinkStep::grant, 2, approver.approve(joiner.code(), grant).value());
    REQUIRE(joiner.accept("alice", d.last_link(phone).data));

    // Until the list is stored the phone is still pending: anything but linking closes it ... (checked below on a
    // second pending device). The laptop stores the list: the phone becomes device 2 with its first token.
    const auto list = sim::e2e::encode_signed_device_list(grant.list).value();
    d.devices(laptop, "alice", {sim::DevicesOp::put, list, 0, {}});
    CHECK(d.last_error(laptop) == sim::Errc::ok);
    CHECK(d.last_devices(laptop).op == sim::DevicesOp::changed);
    const auto activated = d.authenticated(phone);
    REQUIRE(activated.has_value());
    CHECK(activated->device == sim::DeviceId{2});
    REQUIRE(activated->token.size() == 32);
    CHECK(d.last_devices(phone).signed_list == list);  // the phone is attached now: it hears the change
    // Its token logs in device 2 (and only it); a peer reads the list.
    const auto token = activated->token;
    auto& phone_again = d.login("alice", sim::CredentialKind::token, token, std::nullopt);
    auto& phone_again_pipe = *w.raws.back().pipe;
    REQUIRE(d.authenticated(phone_again).has_value());
    CHECK(phone.inbox.back().type == sim::FrameType::error);  // displaced by the newer connection of device 2
    auto& bob = d.password("bob", std::nullopt);
    d.devices(bob, "bob", {sim::DevicesOp::list, {}, 0, {}}, "alice");
    CHECK(d.last_devices(bob).user == "alice");
    CHECK(d.last_devices(bob).signed_list == list);
    // The owner's view.
    d.devices(laptop, "alice", {sim::DevicesOp::rename, {}, 2, "phone"});
    const auto info = d.last_devices(laptop);
    REQUIRE(info.devices.size() == 2);
    CHECK(info.devices[1].name == "phone");
    CHECK(info.devices[1].status == sim::DeviceStatus::active);

    // Bad uploads change nothing: an old version, a list the uploader did not issue.
    d.devices(laptop, "alice", {sim::DevicesOp::put, list, 0, {}});
    CHECK(d.last_error(laptop) == sim::Errc::stale_epoch);
    sim::e2e::DeviceList by_phone{"alice", 2, 2, {{1, account.public_key}, {2, phone_key.public_key}}};
    const auto phone_list =
        sim::e2e::encode_signed_device_list(sim::e2e::sign_device_list(by_phone, account, phone_key).value()).value();
    d.devices(laptop, "alice", {sim::DevicesOp::put, phone_list, 0, {}});
    CHECK(d.last_error(laptop) == sim::Errc::bad_field);

    // The laptop removes the phone: its connection is closed, its token no longer logs in.
    laptop.inbox.clear();
    sim::e2e::DeviceList without{"alice", 3, 1, {{1, account.public_key}}};
    d.devices(laptop, "alice",
              {sim::DevicesOp::put,
               sim::e2e::encode_signed_device_list(sim::e2e::sign_device_list(without, account, account).value()).value(),
               0,
               {}});
    CHECK(d.last_error(laptop) == sim::Errc::ok);
    CHECK(d.last_error(phone_again) == sim::Errc::device_unknown);
    CHECK(phone_again_pipe.closed);
    auto& stolen = d.login("alice", sim::CredentialKind::token, token, std::nullopt);
    CHECK_FALSE(d.authenticated(stolen).has_value());
    CHECK(d.last_error(stolen) == sim::Errc::auth_rejected);
    auto& by_password = d.password("alice", sim::DeviceId{2});
    CHECK(d.last_error(by_password) == sim::Errc::device_unknown);
}

TEST_CASE("a device being linked may only link; the server relays link steps only between it and active devices") {
    World w;
    DeviceSteps d{w};
    auto& laptop = d.password("carol", sim::DeviceId{0});
    REQUIRE(d.authenticated(laptop).has_value());
    SUBCASE("anything else closes it") {
        auto& pending = d.password("carol", sim::DeviceId{0});
        pending.send(sim::Frame{sim::FrameType::probe, 0, "carol", "dave", {}});
        w.settle();
        CHECK(d.last_error(pending) == sim::Errc::device_pending);
        CHECK(w.raws.back().pipe->closed);
    }
    SUBCASE("its owner's view and a rename are not for it; its own list is") {
        auto& pending = d.password("carol", sim::DeviceId{0});
        d.devices(pending, "carol", {sim::DevicesOp::list, {}, 0, {}});
        CHECK(d.last_devices(pending).signed_list.empty());  // no list stored yet
        d.devices(pending, "carol", {sim::DevicesOp::list, {}, 0, {}}, "dave");
        CHECK(d.last_error(pending) == sim::Errc::device_pending);
        CHECK(w.raws.back().pipe->closed);
    }
    SUBCASE("an active device cannot send a request, a pending one cannot grant") {
        d.link(laptop, "carol", sim::LinkStep::request, 0, sim::Bytes(68, 1));
        CHECK(d.last_error(laptop) == sim::Errc::bad_field);
        auto& pending = d.password("carol", sim::DeviceId{0});
        d.link(pending, "carol", sim::LinkStep::grant, 1, sim::Bytes(100, 1));
        CHECK(d.last_error(pending) == sim::Errc::bad_field);
    }
    SUBCASE("a request names device 0 (every active device), every other step one device") {
        auto& pending = d.password("carol", sim::DeviceId{0});
        d.link(pending, "carol", sim::LinkStep::request, 1, sim::Bytes(68, 1));
        CHECK(d.last_error(pending) == sim::Errc::bad_field);
        auto& again = d.password("carol", sim::DeviceId{0});
        d.link(again, "carol", sim::LinkStep::reveal, 0, sim::Bytes(32, 1));
        CHECK(d.last_error(again) == sim::Errc::bad_field);
    }
    SUBCASE("another user's devices hear nothing of it") {
        auto& erin = d.password("erin", std::nullopt);
        auto& pending = d.password("carol", sim::DeviceId{0});
        d.link(pending, "carol", sim::LinkStep::request, 0, sim::Bytes(68, 1));
        CHECK(d.of(laptop, sim::FrameType::link).size() == 1);
        CHECK(d.of(erin, sim::FrameType::link).empty());
    }
    SUBCASE("a link not approved in time ends") {
        auto& pending = d.password("carol", sim::DeviceId{0});
        w.clock.advance(std::chrono::minutes(10) + std::chrono::seconds(1));
        d.link(pending, "carol", sim::LinkStep::request, 0, sim::Bytes(68, 1));
        CHECK(d.last_error(pending) == sim::Errc::timeout);
        CHECK(w.raws.back().pipe->closed);
        CHECK(d.of(laptop, sim::FrameType::link).empty());
    }
    SUBCASE("the account's device limit counts pending devices") {
        for (int i = 0; i < 4; ++i) {
            REQUIRE(d.authenticated(d.password("carol", sim::DeviceId{0})).has_value());
        }
        auto& sixth = d.password("carol", sim::DeviceId{0});
        CHECK(d.last_error(sixth) == sim::Errc::limit_reached);
    }
}

TEST_CASE("without a device store, link and devices frames are answered not_implemented; the login lives") {
    World w;
    w.base.max_devices = 5;
    w.server = std::move(sim::ServerCore::create(w.base, *w.authenticator, *w.tokens, w.vault.get(), w.backend.get(),
                                                 w.messages.get(), w.workers, *w.rng, w.clock)
                             .value());
    auto& c = w.raw_login("rhea");
    c.inbox.clear();
    sim::Bytes request{1, 0, 0, 0, 0};  // step 1 (request) to device 0, then 68 bytes of request
    request.resize(request.size() + 68, 7);
    c.send(sim::Frame{sim::FrameType::link, 0, "rhea", "rhea", request});
    c.send(sim::Frame{sim::FrameType::devices, 0, "rhea", "rhea", sim::Bytes{2}});  // op 2: info
    w.settle();
    REQUIRE(c.inbox.size() == 2);
    for (const auto& f : c.inbox) {
        CHECK(sim::parse_error_frame(f).value().code == sim::Errc::not_implemented);
    }
    CHECK_FALSE(w.raws.back().pipe->closed);
}

TEST_CASE("the core tells the transport when a connection has logged in, and only then") {
    World w;
    auto& c = w.connect_raw();
    auto& pipe = *w.raws.back().pipe;
    CHECK_FALSE(pipe.authenticated);  // the handshake alone is not a login
    World::send_init(c, "olga", "olga-pw");
    w.pump_pipes();
    CHECK_FALSE(pipe.authenticated);  // the login is still being checked
    w.settle();
    CHECK(pipe.authenticated);
    // A failed login never reports it.
    (void)w.raw_login("pavel");
    auto& wrong = w.connect_raw();
    auto& wrong_pipe = *w.raws.back().pipe;
    World::send_init(wrong, "pavel", "not-it");
    w.settle();
    CHECK(wrong_pipe.closed);
    CHECK_FALSE(wrong_pipe.authenticated);
}

TEST_CASE("a probe with a payload is refused (the spec says empty)") {
    World w;
    auto& c = w.raw_login("quinn");
    c.send(sim::Frame{sim::FrameType::probe, 0, "quinn", "rita", sim::Bytes(64, 0x41)});
    w.settle();
    CHECK(c.errors() == std::vector<sim::Errc>{sim::Errc::bad_field});
    CHECK(w.raws.back().pipe->closed);
    // An empty one (a keepalive, or asking for a peer) is fine.
    auto& d = w.raw_login("sara");
    d.send(sim::Frame{sim::FrameType::probe, 0, "sara", {}, {}});
    d.send(sim::Frame{sim::FrameType::probe, 0, "sara", "rita", {}});
    w.settle();
    CHECK(d.errors().empty());
    CHECK_FALSE(w.raws.back().pipe->closed);
}

TEST_CASE("a user who logs in naming a peer that waits for them gets one KEYGEN, not two") {
    World w;
    auto& alice = w.connect();
    auto& bob = w.connect();
    REQUIRE(w.login(alice, "alice", "pw-alice-123", "bob"));
    REQUIRE(alice.saw<sim::WaitingEvent>("bob"));
    REQUIRE(w.login(bob, "bob", "pw-bob-123", "alice"));
    CHECK(alice.of<sim::KeyAssignedEvent>().size() == 1);
    CHECK(bob.of<sim::KeyAssignedEvent>().size() == 1);
    CHECK(bob.saw<sim::PeerOnlineEvent>("alice"));
    REQUIRE(bob.core->send("alice", "one key"));
    w.settle();
    CHECK(alice.of<sim::MessageEvent>().at(0).text == "one key");
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

// ---------------------------------------------------------------- end-to-end mode and offline delivery (raw clients)

namespace {

sim::PrekeyUpload signed_upload(const sim::e2e::IdentityKeyPair& ik, bool replace, std::uint32_t first_opk,
                                std::size_t opks, sim::Rng& rng) {
    const auto spk = sim::e2e::generate_signed_prekey(ik, 7, rng);
    sim::PrekeyUpload u;
    u.replace = replace;
    u.identity_key = ik.public_key;
    u.signed_prekey_id = spk.id;
    u.signed_prekey = spk.public_key;
    u.signed_prekey_signature = spk.signature;
    for (std::size_t i = 0; i < opks; ++i) {
        const auto opk = sim::e2e::generate_one_time_prekey(first_opk + static_cast<std::uint32_t>(i), rng);
        u.one_time_prekeys.emplace_back(opk.id, opk.public_key);
    }
    return u;
}

sim::Frame prekeys_frame(const std::string& user, const sim::PrekeyUpload& u) {
    return sim::Frame{sim::FrameType::prekeys, 0, user, "", sim::encode_prekey_upload(u)};
}

sim::MessageId mid(std::uint32_t n) {
    sim::MessageId id{};
    id[0] = 0xAB;
    id[12] = static_cast<std::uint8_t>(n >> 24U);
    id[13] = static_cast<std::uint8_t>(n >> 16U);
    id[14] = static_cast<std::uint8_t>(n >> 8U);
    id[15] = static_cast<std::uint8_t>(n);
    return id;
}

sim::Envelope envelope(std::uint32_t n, sim::ConversationMode mode = sim::ConversationMode::end_to_end) {
    return sim::Envelope{mid(n), mode, sim::Bytes(40, static_cast<std::uint8_t>(n))};
}

sim::Frame message(const std::string& from, const std::string& to, std::uint32_t n,
                   sim::ConversationMode mode = sim::ConversationMode::end_to_end) {
    return sim::Frame{sim::FrameType::message, 0, from, to, sim::encode_pair_submission(envelope(n, mode), from, to)};
}

/// What `to`'s device is sent of message(from, to, n, mode), stored at `at`.
sim::Bytes delivered(sim::WallTime at, const std::string& from, const std::string& to, std::uint32_t n,
                     sim::ConversationMode mode = sim::ConversationMode::end_to_end) {
    return sim::encode_delivered(at, sim::pair_conversation_id(from, to), sim::first_device,
                                 sim::encode_envelope(envelope(n, mode)));
}

sim::Frame ack(const std::string& from, const std::string& to, const std::vector<std::uint32_t>& ns) {
    std::vector<sim::MessageId> ids;
    for (const auto n : ns) {
        ids.push_back(mid(n));
    }
    return sim::Frame{sim::FrameType::ack, 0, from, to, sim::encode_ack(ids)};
}

/// The numbers of the message ids in received message frames (and their sources).
std::vector<std::uint32_t> numbers(const std::vector<sim::Frame>& frames, const std::string& source = "alice") {
    std::vector<std::uint32_t> out;
    for (const auto& f : frames) {
        CHECK(f.source == source);
        const auto e = sim::decode_delivered(f.payload).value().envelope;
        out.push_back((std::uint32_t{e.id[12]} << 24U) | (std::uint32_t{e.id[13]} << 16U) |
                      (std::uint32_t{e.id[14]} << 8U) | e.id[15]);
    }
    return out;
}

/// The ids of receipts with this status, as numbers.
std::vector<std::uint32_t> receipts(RawClient& c, sim::ReceiptStatus status, const std::string& peer = "bob") {
    std::vector<std::uint32_t> out;
    for (const auto& f : c.take(sim::FrameType::receipt)) {
        CHECK(f.source == "Server");
        if (f.sid != static_cast<std::uint32_t>(status)) {
            continue;
        }
        const auto r = sim::decode_receipt(f.payload).value();
        CHECK(r.peer == peer);
        // delivered names the device that acknowledged; stored covers every device the message was for
        CHECK(r.device == (status == sim::ReceiptStatus::delivered ? sim::first_device : 0U));
        for (const auto& id : r.ids) {
            out.push_back((std::uint32_t{id[14]} << 8U) | id[15]);
        }
    }
    return out;
}

World e2e_world(std::size_t max_stored = 100'000, const std::function<void(sim::ServerConfig&)>& configure = {}) {
    return World(sim::SuitePolicy::default_policy(), "e2e world", sim::ConversationMode::end_to_end, max_stored,
                 configure);
}

/// Message `n` as number `seq` of the sender's stream (docs/protocol.md 6.6).
sim::Frame sequenced(const std::string& from, const std::string& to, std::uint32_t n, std::uint32_t seq) {
    auto f = message(from, to, n);
    f.sid = seq;
    return f;
}

/// Refusals received (and removed): (message number, code, expected).
std::vector<std::tuple<std::uint32_t, sim::Errc, std::uint32_t>> refusals(RawClient& c) {
    std::vector<std::tuple<std::uint32_t, sim::Errc, std::uint32_t>> out;
    std::erase_if(c.inbox, [&](const sim::Frame& f) {
        if (f.type != sim::FrameType::receipt || f.sid != static_cast<std::uint32_t>(sim::ReceiptStatus::refused)) {
            return false;
        }
        const auto r = sim::decode_refusal(f.payload).value();
        out.emplace_back((std::uint32_t{r.id[14]} << 8U) | r.id[15], r.code, r.expected);
        return true;
    });
    return out;
}

/// The message numbers stored for `user`, in store order.
std::vector<std::uint32_t> stored_order(World& w, const std::string& user) {
    std::vector<std::uint32_t> out;
    const auto rows = w.backend->pending(user, sim::first_device, 0, 100'000);
    REQUIRE(rows);
    for (const auto& m : *rows) {
        out.push_back((std::uint32_t{m.id[14]} << 8U) | m.id[15]);
    }
    return out;
}

/// `user` logs in once and publishes prekeys with `opks` one-time prekeys, then goes offline.
sim::e2e::IdentityKeyPair publish(World& w, const std::string& user, std::size_t opks, bool stay = false) {
    auto ik = sim::e2e::generate_identity(*w.rng);
    auto& c = w.raw_login(user);
    c.send(prekeys_frame(user, signed_upload(ik, true, 1, opks, *w.rng)));
    w.settle();
    REQUIRE(c.errors().empty());
    if (!stay) {
        w.drop(c);
    }
    return ik;
}

}  // namespace

TEST_CASE("e2e: prekey status after login; upload, bad signature, identity check, replace") {
    auto w = e2e_world();
    auto& alice = w.connect_raw();
    alice.send(sim::Frame{sim::FrameType::init, 0, "alice", "",
                          sim::encode_credentials({sim::CredentialKind::password,
                                                   sim::to_bytes<sim::SecureBytes>(sim::as_bytes("alice-pw"))})});
    w.settle();
    REQUIRE(alice.inbox.size() >= 3);
    CHECK(alice.inbox[0].type == sim::FrameType::limits);  // first, so the client knows its pace before it sends
    const auto limits = sim::decode_server_limits(alice.inbox[0].payload).value();
    CHECK(limits.messages_per_second == 2000);
    CHECK(limits.message_burst == 4000);
    CHECK(limits.window == 256);
    CHECK(alice.inbox[1].type == sim::FrameType::prekeys);  // right before ack_init 1
    CHECK(alice.inbox[2].type == sim::FrameType::ack_init);
    auto st = sim::decode_prekey_status(alice.inbox[1].payload).value();
    CHECK_FALSE(st.identity_key.has_value());
    CHECK(st.one_time_count == 0);
    alice.inbox.clear();

    const auto ik = sim::e2e::generate_identity(*w.rng);
    alice.send(prekeys_frame("alice", signed_upload(ik, true, 1, 5, *w.rng)));
    w.settle();
    CHECK(alice.errors().empty());
    st = w.backend->prekey_status("alice", sim::first_device).value();
    CHECK(st.identity_key == ik.public_key);
    CHECK(st.one_time_count == 5);

    // A bad signature is refused with auth_failed; nothing changes and the connection stays.
    auto bad = signed_upload(ik, false, 10, 5, *w.rng);
    bad.signed_prekey_signature[3] ^= 0x01;
    alice.send(prekeys_frame("alice", bad));
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::auth_failed});
    CHECK(w.backend->prekey_status("alice", sim::first_device).value().one_time_count == 5);
    CHECK_FALSE(alice.closed);

    // Adding under another identity is refused; a malformed upload too; as another user's source also.
    const auto other = sim::e2e::generate_identity(*w.rng);
    alice.send(prekeys_frame("alice", signed_upload(other, false, 10, 5, *w.rng)));
    alice.send(sim::Frame{sim::FrameType::prekeys, 0, "alice", "", {1, 2, 3}});
    alice.send(prekeys_frame("bob", signed_upload(other, true, 10, 5, *w.rng)));
    w.settle();
    CHECK(alice.errors() ==
          std::vector<sim::Errc>{sim::Errc::bad_field, sim::Errc::truncated, sim::Errc::source_mismatch});
    CHECK_FALSE(w.backend->prekey_status("bob", sim::first_device).value().identity_key.has_value());

    // Adding under the same identity adds; replace swaps the identity and drops the old one-time prekeys.
    alice.send(prekeys_frame("alice", signed_upload(ik, false, 10, 3, *w.rng)));
    w.settle();
    CHECK(w.backend->prekey_status("alice", sim::first_device).value().one_time_count == 8);
    alice.send(prekeys_frame("alice", signed_upload(other, true, 100, 2, *w.rng)));
    w.settle();
    CHECK(alice.errors().empty());
    st = w.backend->prekey_status("alice", sim::first_device).value();
    CHECK(st.identity_key == other.public_key);
    CHECK(st.one_time_count == 2);

    // The next login reports the stored identity and stock.
    w.drop(alice);
    auto& again = w.connect_raw();
    again.send(sim::Frame{sim::FrameType::init, 0, "alice", "",
                          sim::encode_credentials({sim::CredentialKind::password,
                                                   sim::to_bytes<sim::SecureBytes>(sim::as_bytes("alice-pw"))})});
    w.settle();
    const auto status = again.take(sim::FrameType::prekeys);
    REQUIRE(status.size() == 1);
    st = sim::decode_prekey_status(status[0].payload).value();
    CHECK(st.identity_key == other.public_key);
    CHECK(st.one_time_count == 2);
}

TEST_CASE("e2e: KEYGEN mode 2 hands the initiator a bundle with each one-time prekey once; low stock is reported") {
    auto w = e2e_world();
    const auto bob_ik = publish(w, "bob", 21, true);
    auto& bob = *w.raws.back().client;
    bob.inbox.clear();
    auto& alice = w.raw_login("alice", "bob");  // init with a destination at login
    auto& carol = w.raw_login("carol");
    std::vector<std::uint32_t> handed;
    const auto check_keygen = [&](RawClient& c) {
        const auto acks = c.take(sim::FrameType::ack_init);
        REQUIRE(acks.size() == 1);
        CHECK(acks[0].sid == 2);  // bob is online (informative)
        const auto kg = c.take(sim::FrameType::keygen);
        REQUIRE(kg.size() == 1);
        CHECK(kg[0].sid == sim::keygen_sid);
        const auto k = sim::decode_key_assignment(kg[0].payload).value();
        CHECK(k.mode == sim::ConversationMode::end_to_end);
        CHECK(k.peer == "bob");
        CHECK(k.key.empty());
        REQUIRE(k.bundle.has_value());
        CHECK(k.bundle->identity_key == bob_ik.public_key);
        CHECK(sim::e2e::verify_bundle(*k.bundle).has_value());
        REQUIRE(k.bundle->one_time_prekey_id.has_value());
        handed.push_back(*k.bundle->one_time_prekey_id);
    };
    check_keygen(alice);
    CHECK(bob.take(sim::FrameType::keygen).empty());   // only the initiator gets a KEYGEN
    CHECK(bob.take(sim::FrameType::prekeys).empty());  // 20 left: not low yet
    carol.send(sim::Frame{sim::FrameType::init, 0, "carol", "bob", sim::encode_credentials({})});
    w.settle();
    check_keygen(carol);
    CHECK(handed == std::vector<std::uint32_t>{1, 2});
    // 19 left: below the low-water mark, bob (online) is asked for more
    const auto low = bob.take(sim::FrameType::prekeys);
    REQUIRE(low.size() == 1);
    CHECK(sim::decode_prekey_status(low[0].payload).value().one_time_count == 19);

    // A peer without prekeys: no_conversation, and no KEYGEN.
    alice.send(sim::Frame{sim::FrameType::init, 0, "alice", "carol", sim::encode_credentials({})});
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::no_conversation});
    CHECK(alice.take(sim::FrameType::keygen).empty());
    // Nor can anyone message carol.
    alice.send(message("alice", "carol", 1));
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::no_conversation});
}

TEST_CASE("the longest text send() accepts arrives, in both modes; one byte more is refused before sending") {
    for (const auto mode : {sim::ConversationMode::server_assigned, sim::ConversationMode::end_to_end}) {
        CAPTURE(mode);
        auto w = mode == sim::ConversationMode::end_to_end ? e2e_world() : World();
        auto bob_state = sim::make_memory_client_state();
        auto alice_state = sim::make_memory_client_state();
        sim::ClientConfig bob_config;
        bob_config.state = bob_state.get();
        sim::ClientConfig alice_config;
        alice_config.state = alice_state.get();
        auto& bob = w.connect(bob_config);
        REQUIRE(w.login(bob, "bob", "bob's password"));
        auto& alice = w.connect(alice_config);
        REQUIRE(w.login(alice, "alice", "alice's password", "bob"));
        REQUIRE(alice.saw<sim::KeyAssignedEvent>("bob"));
        // The boundary, found by asking: every accepted probe is a real message.
        std::size_t ok = 1000;
        std::size_t refused = 70000;
        std::vector<std::size_t> sent;
        while (refused - ok > 1) {
            const auto mid = (ok + refused) / 2;
            const auto r = alice.core->send("bob", std::string(mid, 'x'));
            if (r) {
                ok = mid;
                sent.push_back(mid);
            } else {
                CHECK(r.code() == sim::Errc::frame_too_large);
                refused = mid;
            }
        }
        REQUIRE_FALSE(sent.empty());
        CHECK(ok == sent.back());
        w.settle();
        CHECK_FALSE(alice.saw<sim::ErrorEvent>());
        CHECK(alice.core->outbox_size() == 0);
        std::vector<std::size_t> got;
        for (const auto& m : bob.of<sim::MessageEvent>("alice")) {
            got.push_back(m.text.size());
        }
        CHECK(got == sent);
        CHECK_FALSE(bob.saw<sim::ErrorEvent>());
    }
}

TEST_CASE("a queued message too large for the channel's frames is dropped from the outbox, with an error naming it") {
    for (const auto mode : {sim::ConversationMode::server_assigned, sim::ConversationMode::end_to_end}) {
        CAPTURE(mode);
        auto w = mode == sim::ConversationMode::end_to_end ? e2e_world() : World();
        // Server-assigned: the login names bob, so that his KEYGEN comes when he registers.
        const std::string destination = mode == sim::ConversationMode::end_to_end ? "" : "bob";
        auto alice_state = sim::make_memory_client_state();
        sim::ClientConfig config;
        config.state = alice_state.get();
        config.max_frame_size = 2 * sim::default_max_frame_size;
        auto* alice = &w.connect(config);
        REQUIRE(w.login(*alice, "alice", "alice's password", destination));
        // bob has no account yet: both wait in alice's outbox, unsealed.
        const auto too_large = alice->core->send("bob", std::string(sim::default_max_frame_size, 'x'));
        REQUIRE(too_large);
        REQUIRE(alice->core->send("bob", "the one behind it"));
        w.settle();
        CHECK(alice->core->outbox_size() == 2);
        // The next run carries the default frames: the first message can never go.
        alice->pipe->close_now();
        w.settle();
        config.max_frame_size = sim::default_max_frame_size;
        alice = &w.connect(config);
        REQUIRE(w.login(*alice, "alice", "alice's password", destination));
        auto& bob = w.connect();
        REQUIRE(w.login(bob, "bob", "bob's password"));
        w.settle();
        REQUIRE(alice->saw<sim::KeyAssignedEvent>("bob"));
        const auto errors = alice->of<sim::ErrorEvent>();
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].peer == "bob");
        CHECK(errors[0].error.code == sim::Errc::frame_too_large);
        CHECK(errors[0].message_id == *too_large);
        CHECK(bob.texts("alice") == std::vector<std::string>{"the one behind it"});
        CHECK(alice->core->outbox_size() == 0);
        // Forgotten in the state too: the run after that has nothing left to send.
        alice->pipe->close_now();
        w.settle();
        alice = &w.connect(config);
        CHECK(alice->core->outbox_size() == 0);
    }
}

TEST_CASE("e2e: messages to someone without keys wait in the outbox and go by themselves once they have keys") {
    auto w = e2e_world();
    auto alice_state = sim::make_memory_client_state();
    sim::ClientConfig alice_config;
    alice_config.state = alice_state.get();
    auto* alice = &w.connect(alice_config);
    REQUIRE(w.login(*alice, "alice", "alice's password"));
    // bob has never logged in: the messages are accepted into the outbox; the client asks for bob's keys once and
    // hears that there are none yet (about bob).
    REQUIRE(alice->core->send("bob", "first"));
    REQUIRE(alice->core->send("bob", "second"));
    w.settle();
    CHECK(alice->core->outbox_size() == 2);
    // ack_init 3 (bob is offline), then why there is no conversation yet.
    const auto waiting = alice->of<sim::WaitingEvent>("bob");
    REQUIRE(waiting.size() == 2);
    REQUIRE(waiting[1].reason);
    CHECK(waiting[1].reason->code == sim::Errc::no_conversation);
    CHECK_FALSE(alice->saw<sim::ErrorEvent>());
    CHECK(w.server->stats().messages_routed == 0);
    SUBCASE("bob logs in while alice is online: the server hands alice his keys") {}
    SUBCASE("alice reconnects before bob comes: her outbox asks again on the new connection") {
        alice->pipe->close_now();
        w.settle();
        alice = &w.connect(alice_config);
        CHECK(alice->core->outbox_size() == 2);
        REQUIRE(w.login(*alice, "alice", "alice's password"));
        CHECK(alice->of<sim::WaitingEvent>("bob").size() == 2);  // asked again
    }
    REQUIRE(alice->core->send("bob", "third"));
    auto& bob = w.connect();
    REQUIRE(w.login(bob, "bob", "bob's password"));  // registers, publishes prekeys
    w.settle();
    CHECK(alice->saw<sim::KeyAssignedEvent>("bob"));
    CHECK(bob.texts("alice") == std::vector<std::string>{"first", "second", "third"});
    CHECK(alice->core->outbox_size() == 0);
    CHECK_FALSE(bob.saw<sim::ErrorEvent>());
    CHECK_FALSE(bob.saw<sim::GapEvent>());
}

TEST_CASE("e2e: offline messages are stored, delivered in order at login, deleted only after the ack") {
    auto w = e2e_world();
    publish(w, "bob", 3);
    auto& alice = w.raw_login("alice");
    for (const std::uint32_t n : {1, 2, 3}) {
        alice.send(message("alice", "bob", n));
    }
    alice.send(message("alice", "bob", 2));  // a retry: stored once, receipt all the same
    w.settle();
    CHECK(alice.errors().empty());
    auto stored = receipts(alice, sim::ReceiptStatus::stored);
    std::sort(stored.begin(), stored.end());
    CHECK(stored == std::vector<std::uint32_t>{1, 2, 2, 3});
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 3);

    // bob logs in: the three, in order, unchanged; not deleted yet.
    auto& bob = w.raw_login("bob");
    auto got = bob.take(sim::FrameType::message);
    CHECK(numbers(got) == std::vector<std::uint32_t>{1, 2, 3});
    // The envelope unchanged, behind the delivery header with the time the server stored it (its wall clock).
    CHECK(got[1].payload == delivered(w.base.wall_clock(), "alice", "bob", 2));
    CHECK(got[1].destination == "bob");
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 3);
    // He drops before acknowledging: the next login delivers them again.
    w.drop(bob);
    auto& bob2 = w.raw_login("bob");
    CHECK(numbers(bob2.take(sim::FrameType::message)) == std::vector<std::uint32_t>{1, 2, 3});

    // Acknowledge two: deleted, alice learns they were delivered.
    bob2.send(ack("bob", "alice", {1, 2}));
    w.settle();
    CHECK(bob2.errors().empty());
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 1);
    CHECK(receipts(alice, sim::ReceiptStatus::delivered) == std::vector<std::uint32_t>{1, 2});

    // While one is still waiting, a new message is stored behind it (order kept) and then delivered.
    alice.send(message("alice", "bob", 4));
    w.settle();
    CHECK(receipts(alice, sim::ReceiptStatus::stored) == std::vector<std::uint32_t>{4});
    CHECK(numbers(bob2.take(sim::FrameType::message)) == std::vector<std::uint32_t>{4});
    bob2.send(ack("bob", "alice", {3, 4}));
    w.settle();
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
    CHECK(receipts(alice, sim::ReceiptStatus::delivered) == std::vector<std::uint32_t>{3, 4});

    // Nothing waits now and bob is online: the next message still takes the one path into his mailbox. His
    // mailbox is caught up, so it is drained as it fills: the message reaches him while it is being committed
    // (before any disk write), and is stored all the same, with its receipt; his ack deletes it.
    const auto appends = w.messages->appended;
    alice.send(message("alice", "bob", 5));
    w.pump_pipes();
    CHECK(numbers(bob2.take(sim::FrameType::message)) == std::vector<std::uint32_t>{5});
    CHECK(w.messages->appended == appends);
    CHECK(receipts(alice, sim::ReceiptStatus::stored).empty());
    w.settle();
    CHECK(bob2.take(sim::FrameType::message).empty());  // not sent twice
    CHECK(w.messages->appended == appends + 1);
    CHECK(receipts(alice, sim::ReceiptStatus::stored) == std::vector<std::uint32_t>{5});
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 1);
    bob2.send(ack("bob", "alice", {5}));
    w.settle();
    CHECK(receipts(alice, sim::ReceiptStatus::delivered) == std::vector<std::uint32_t>{5});
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);

    // Bad acks are refused, the connection stays.
    bob2.send(sim::Frame{sim::FrameType::ack, 0, "bob", "alice", {0, 0}});
    bob2.send(sim::Frame{sim::FrameType::ack, 0, "alice", "bob", sim::encode_ack({mid(1)})});
    w.settle();
    CHECK(bob2.errors() == std::vector<sim::Errc>{sim::Errc::bad_field, sim::Errc::source_mismatch});
    CHECK_FALSE(bob2.closed);
}

TEST_CASE("e2e: acknowledged messages are deleted through the group commit, many acks in one transaction") {
    auto w = e2e_world();
    publish(w, "bob", 3);
    auto& alice = w.raw_login("alice");
    for (std::uint32_t n = 1; n <= 40; ++n) {
        alice.send(message("alice", "bob", n));
    }
    w.settle();
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 40);
    auto& bob = w.raw_login("bob");
    CHECK(bob.take(sim::FrameType::message).size() == 40);
    (void)receipts(alice, sim::ReceiptStatus::stored);
    // Ten ack frames arrive together; the connection handles them without touching the store.
    for (std::uint32_t first = 1; first <= 40; first += 4) {
        bob.send(ack("bob", "alice", {first, first + 1, first + 2, first + 3}));
    }
    const auto removes = w.messages->removes;
    for (bool moved = true; moved;) {  // the connections only, not the commit executor
        moved = false;
        for (auto& rc : w.raws) {
            moved = rc.pipe->pump() || moved;
        }
    }
    CHECK(w.messages->removes == removes);                                     // nothing deleted on the I/O path
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 40);  // not yet
    CHECK(receipts(alice, sim::ReceiptStatus::delivered).size() == 40);        // the sender hears at once
    w.settle();                                                                // the commit job runs
    CHECK(w.messages->removes == removes + 1);                                 // one transaction for the ten acks
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
    // A message after that goes through the mailbox too, and its ack deletes it.
    alice.send(message("alice", "bob", 41));
    w.settle();
    CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{41});
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 1);
    bob.send(ack("bob", "alice", {41}));
    w.settle();
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
}

TEST_CASE("e2e: an ack the commit executor refuses (busy) can be sent again and then deletes the messages") {
    // The commit executor, refusing every job while `refuse` is set (full or stopping).
    struct Gate final : sim::Executor {
        sim::Executor* inner = nullptr;
        bool refuse = false;
        [[nodiscard]] bool submit(std::function<void()> job) override {
            return !refuse && inner->submit(std::move(job));
        }
    };
    Gate gate;
    auto w = e2e_world(100'000, [&](sim::ServerConfig& c) { c.commit_executor = &gate; });
    gate.inner = &w.workers;
    publish(w, "bob", 3);
    auto& alice = w.raw_login("alice");
    auto& bob = w.raw_login("bob");
    for (std::uint32_t n = 1; n <= 3; ++n) {
        alice.send(message("alice", "bob", n));
    }
    w.settle();
    CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{1, 2, 3});
    (void)receipts(alice, sim::ReceiptStatus::stored);
    gate.refuse = true;
    bob.send(ack("bob", "alice", {1, 2, 3}));
    w.settle();
    CHECK(bob.errors() == std::vector<sim::Errc>{sim::Errc::busy});
    CHECK(receipts(alice, sim::ReceiptStatus::delivered).empty());  // not recorded: not delivered yet
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 3);
    // The same ack again, once the executor takes jobs: the messages are still the ones in flight, so it counts.
    gate.refuse = false;
    bob.send(ack("bob", "alice", {1, 2, 3}));
    w.settle();
    CHECK(bob.errors().empty());
    CHECK(receipts(alice, sim::ReceiptStatus::delivered).size() == 3);
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
}

TEST_CASE("a caught-up mailbox is drained as it fills; one that is behind drains from the store, in order, once") {
    auto w = e2e_world(100'000, [](sim::ServerConfig& c) { c.delivery_window = 3; });
    publish(w, "bob", 1);
    auto& alice = w.raw_login("alice");
    auto& bob = w.raw_login("bob");
    std::vector<std::uint32_t> seen;
    const auto take = [&] {
        const auto got = numbers(bob.take(sim::FrameType::message));
        seen.insert(seen.end(), got.begin(), got.end());
        return got;
    };
    // Caught up: 1-3 reach bob before their commit; the window (3) is full then.
    for (std::uint32_t n = 1; n <= 3; ++n) {
        alice.send(sequenced("alice", "bob", n, n));
    }
    w.pump_pipes();
    CHECK(take() == std::vector<std::uint32_t>{1, 2, 3});
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);  // nothing committed yet
    // 4 and 5 do not fit the window: they wait for the store. An ack opens the window, but 6 must not overtake 4
    // and 5, which are still being committed: nothing goes to bob before the commit.
    alice.send(sequenced("alice", "bob", 4, 4));
    alice.send(sequenced("alice", "bob", 5, 5));
    bob.send(ack("bob", "alice", {1}));
    w.pump_pipes();
    alice.send(sequenced("alice", "bob", 6, 6));
    w.pump_pipes();
    CHECK(take().empty());
    // The commit: 4 comes from the store (1 acknowledged, 2 and 3 in flight are not sent again), then the window is
    // full again.
    w.settle();
    CHECK(take() == std::vector<std::uint32_t>{4});
    bob.send(ack("bob", "alice", {2, 3, 4}));
    w.settle();
    CHECK(take() == std::vector<std::uint32_t>{5, 6});
    bob.send(ack("bob", "alice", {5, 6}));
    w.settle();
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
    // Caught up again: 7 goes at once.
    alice.send(sequenced("alice", "bob", 7, 7));
    w.pump_pipes();
    CHECK(take() == std::vector<std::uint32_t>{7});
    w.settle();
    CHECK(take().empty());
    CHECK(seen == std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6, 7});
    // 1 was acknowledged before its commit: never written (nothing to delete), and its sender was told
    // `delivered`, not `stored`. Every other message was written and got both receipts.
    std::map<std::uint32_t, std::vector<std::uint32_t>> by_status;
    for (const auto& f : alice.take(sim::FrameType::receipt)) {
        const auto r = sim::decode_receipt(f.payload);
        REQUIRE(r);
        for (const auto& id : r->ids) {
            by_status[f.sid].push_back((std::uint32_t{id[14]} << 8U) | id[15]);
        }
    }
    for (auto& [status, ns] : by_status) {
        std::sort(ns.begin(), ns.end());
    }
    CHECK(by_status[static_cast<std::uint32_t>(sim::ReceiptStatus::stored)] ==
          std::vector<std::uint32_t>{2, 3, 4, 5, 6, 7});
    CHECK(by_status[static_cast<std::uint32_t>(sim::ReceiptStatus::delivered)] ==
          std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6});
    CHECK(w.server->stats().stored_messages == 6);
    // A new login of bob while 8 is being committed: 8 was sent to the old connection, the new one gets it from
    // the store after the commit.
    alice.send(sequenced("alice", "bob", 8, 8));
    w.pump_pipes();
    CHECK(take() == std::vector<std::uint32_t>{8});
    auto& bob2 = w.raw_login("bob");  // displaces bob; settles, so 8 is committed and drained
    CHECK(numbers(bob2.take(sim::FrameType::message)) == std::vector<std::uint32_t>{7, 8});
    // alice sends 8 again (no receipt reached her, say) and bob acknowledges 7 and 8 before that re-send is
    // committed: the re-send is not written, and the copy stored earlier is deleted all the same.
    alice.send(sequenced("alice", "bob", 8, 8));
    w.pump_pipes();
    (void)bob2.take(sim::FrameType::message);
    bob2.send(ack("bob", "alice", {7, 8}));
    w.settle();
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
}

TEST_CASE("e2e: at most 1000 stored messages are in flight; more follow as acks arrive") {
    auto w = e2e_world();
    publish(w, "bob", 1);
    std::vector<sim::store::StoredMessage> batch;
    for (std::uint32_t n = 1; n <= 1100; ++n) {
        sim::store::StoredMessage m;
        m.recipient = "bob";
        m.sender = "alice";
        m.id = mid(n);
        m.envelope = message("alice", "bob", n).payload;
        batch.push_back(std::move(m));
    }
    REQUIRE(w.backend->append(batch).has_value());
    auto& bob = w.raw_login("bob");
    auto first = numbers(bob.take(sim::FrameType::message));
    REQUIRE(first.size() == 1000);
    CHECK(first.front() == 1);
    CHECK(first.back() == 1000);
    std::vector<std::uint32_t> some;
    for (std::uint32_t n = 1; n <= 60; ++n) {
        some.push_back(n);
    }
    bob.send(ack("bob", "alice", some));
    w.settle();
    const auto more = numbers(bob.take(sim::FrameType::message));
    REQUIRE(more.size() == 60);
    CHECK(more.front() == 1001);
    CHECK(more.back() == 1060);
}

TEST_CASE("e2e: group commit stores concurrent messages in one transaction") {
    auto w = e2e_world();
    publish(w, "bob", 1);
    auto& alice = w.raw_login("alice");
    const auto before = w.messages->appends;
    for (std::uint32_t n = 1; n <= 50; ++n) {
        alice.send(message("alice", "bob", n));
    }
    w.pump_pipes();                                              // all 50 arrive before the commit job runs
    CHECK(receipts(alice, sim::ReceiptStatus::stored).empty());  // nothing is acknowledged before it is durable
    w.settle();
    CHECK(w.messages->appends == before + 1);
    CHECK(w.server->stats().store_commits == 1);
    CHECK(w.server->stats().stored_messages == 50);
    CHECK(receipts(alice, sim::ReceiptStatus::stored).size() == 50);
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 50);
    CHECK(w.server->stats().store_bytes == w.backend->usage("bob", sim::first_device).value().bytes);
    CHECK(w.server->stats().store_bytes > 0);
    // Alone, a message gets its own commit at once.
    alice.send(message("alice", "bob", 51));
    w.settle();
    CHECK(w.messages->appends == before + 2);
    // The order of the store is the order of arrival.
    const auto p = w.backend->pending("bob", sim::first_device, 0, 100).value();
    REQUIRE(p.size() == 51);
    for (std::size_t i = 0; i < p.size(); ++i) {
        CHECK(p[i].id == mid(static_cast<std::uint32_t>(i + 1)));
    }
}

TEST_CASE("streams: a rate refusal blocks the later messages of the stream until the refused one comes again") {
    auto w = e2e_world(100'000, [](sim::ServerConfig& c) {
        c.messages_per_second = 1;
        c.message_burst = 5;
    });
    publish(w, "bob", 5);
    auto& alice = w.raw_login("alice");
    CHECK(alice.limits.message_burst == 5);
    for (std::uint32_t n = 1; n <= 10; ++n) {
        alice.send(sequenced("alice", "bob", n, n));
    }
    w.settle();
    // 1-5 within the burst; 6 refused for the rate; 7-10 refused as out of order, expecting 6 (costing no token).
    using R = std::tuple<std::uint32_t, sim::Errc, std::uint32_t>;
    CHECK(refusals(alice) == std::vector<R>{{6, sim::Errc::rate_limited, 6},
                                            {7, sim::Errc::out_of_order, 6},
                                            {8, sim::Errc::out_of_order, 6},
                                            {9, sim::Errc::out_of_order, 6},
                                            {10, sim::Errc::out_of_order, 6}});
    CHECK(alice.errors().empty());  // sequenced messages are refused by receipt, not by error frame
    CHECK(stored_order(w, "bob") == std::vector<std::uint32_t>{1, 2, 3, 4, 5});
    // A later message alone cannot jump the queue, even once tokens are back.
    w.clock.advance(std::chrono::seconds(10));
    alice.send(sequenced("alice", "bob", 11, 11));
    w.settle();
    CHECK(refusals(alice) == std::vector<R>{{11, sim::Errc::out_of_order, 6}});
    // The sender goes on from 6, in order (paced to the burst): everything is stored in the order it was sent.
    for (std::uint32_t n = 6; n <= 10; ++n) {
        alice.send(sequenced("alice", "bob", n, n));
    }
    w.settle();
    w.clock.advance(std::chrono::seconds(10));
    alice.send(sequenced("alice", "bob", 11, 11));
    w.settle();
    CHECK(refusals(alice).empty());
    CHECK(stored_order(w, "bob") == std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    // Re-sending an accepted number is a duplicate, stored once; a new connection numbers from 1 again.
    alice.send(sequenced("alice", "bob", 3, 3));
    w.settle();
    CHECK(refusals(alice).empty());
    w.drop(alice);
    w.clock.advance(std::chrono::seconds(10));
    auto& again = w.raw_login("alice");
    again.send(sequenced("alice", "bob", 12, 1));
    again.send(sequenced("alice", "bob", 13, 2));
    w.settle();
    CHECK(refusals(again).empty());
    CHECK(stored_order(w, "bob") == std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13});
}

TEST_CASE("streams: a failed commit skips the later messages queued behind it; sent again, all are stored in order") {
    auto w = e2e_world();
    publish(w, "bob", 5);
    auto& alice = w.raw_login("alice");
    auto& pipe = *w.raws.back().pipe;
    for (std::uint32_t n = 1; n <= 3; ++n) {
        alice.send(sequenced("alice", "bob", n, n));
    }
    // While the first batch (1-3) is being written and fails (a full disk), 4-6 arrive and are queued.
    w.messages->fail_appends = 1;  // the disk is full for this batch only: the next one would be written
    w.messages->during_append = [&] {
        for (std::uint32_t n = 4; n <= 6; ++n) {
            alice.send(sequenced("alice", "bob", n, n));
        }
        while (pipe.pump()) {
        }
    };
    w.settle();
    CHECK(w.messages->appends == 1);  // 4-6 were left out of the next batch: nothing else was written
    using R = std::tuple<std::uint32_t, sim::Errc, std::uint32_t>;
    // One refusal for the run (its first message); 4-6 were accepted before the failure was known and are left out.
    CHECK(refusals(alice) == std::vector<R>{{1, sim::Errc::storage_error, 1}});
    CHECK(receipts(alice, sim::ReceiptStatus::stored).empty());
    CHECK(stored_order(w, "bob").empty());
    // Something newer cannot overtake them.
    alice.send(sequenced("alice", "bob", 7, 7));
    w.settle();
    CHECK(refusals(alice) == std::vector<R>{{7, sim::Errc::out_of_order, 1}});
    for (std::uint32_t n = 1; n <= 7; ++n) {
        alice.send(sequenced("alice", "bob", n, n));
    }
    w.settle();
    CHECK(refusals(alice).empty());
    CHECK(receipts(alice, sim::ReceiptStatus::stored) == std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6, 7});
    CHECK(stored_order(w, "bob") == std::vector<std::uint32_t>{1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("streams: endless out-of-order messages close the connection; unsequenced ones keep the old rules") {
    auto w = e2e_world(100'000, [](sim::ServerConfig& c) { c.send_window = 2; });
    publish(w, "bob", 5);
    auto& alice = w.raw_login("alice");
    alice.send(sequenced("alice", "bob", 1, 1));
    alice.send(message("alice", "bob", 2));  // seq 0: not ordered, refusals as error frames
    w.settle();
    CHECK(refusals(alice).empty());
    CHECK(stored_order(w, "bob") == std::vector<std::uint32_t>{1, 2});
    for (std::uint32_t n = 0; n < 8; ++n) {
        alice.send(sequenced("alice", "bob", 100 + n, 50 + n));  // never the expected 2
    }
    w.settle();
    CHECK(refusals(alice).size() == 8);
    CHECK_FALSE(alice.closed);
    alice.send(sequenced("alice", "bob", 200, 60));
    w.settle();
    CHECK(alice.closed);  // more than four windows in a row
}

TEST_CASE("e2e: per-recipient limit, bad envelopes, wrong mode and source rewriting are refused") {
    auto w = e2e_world(3);
    publish(w, "bob", 1);
    auto& alice = w.raw_login("alice");
    auto& trudy = w.raw_login("trudy");
    for (const std::uint32_t n : {1, 2, 3, 4}) {
        alice.send(message("alice", "bob", n));
    }
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::queue_full});
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 3);
    // An envelope that does not decode, or of the other mode.
    alice.send(sim::Frame{sim::FrameType::message, 0, "alice", "bob", sim::Bytes(10, 1)});
    alice.send(message("alice", "bob", 9, sim::ConversationMode::server_assigned));
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::truncated, sim::Errc::bad_field});
    CHECK_FALSE(alice.closed);
    // Trudy cannot send as alice (the seed's attack 2), and nothing of hers is stored.
    trudy.send(message("alice", "bob", 7));
    w.settle();
    CHECK(trudy.errors() == std::vector<sim::Errc>{sim::Errc::source_mismatch});
    const auto p = w.backend->pending("bob", sim::first_device, 0, 10).value();
    for (const auto& m : p) {
        CHECK(m.sender == "alice");
        CHECK(m.id != mid(7));
    }
}

TEST_CASE("e2e: byte quotas: a recipient's mailbox, a sender's stored bytes and the whole store") {
    const std::uint64_t n = sim::encode_envelope(envelope(1)).size();  // every test message stores this size
    std::vector<std::string> warnings;
    auto w = e2e_world(100'000, [&](sim::ServerConfig& c) {
        c.max_mailbox_bytes = 3 * n;
        c.max_sender_bytes = 4 * n;
        c.max_store_bytes = 6 * n;
        c.log = [&](sim::LogLevel l, std::string_view m) {
            if (l == sim::LogLevel::warning) {
                warnings.emplace_back(m);
            }
        };
    });
    for (const auto* u : {"bob", "carol", "dave"}) {
        publish(w, u, 1);
    }
    auto& alice = w.raw_login("alice");
    auto& trudy = w.raw_login("trudy");

    SUBCASE("a mailbox holds its byte limit; one acknowledged message makes room for one more") {
        for (const std::uint32_t k : {1, 2, 3, 4}) {
            alice.send(message("alice", "bob", k));
        }
        w.settle();
        CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::queue_full});
        CHECK(w.backend->usage("bob", sim::first_device).value() == sim::store::StoredUsage{3, 3 * n});
        auto& bob = w.raw_login("bob");
        CHECK(bob.take(sim::FrameType::message).size() == 3);
        bob.send(ack("bob", "alice", {1}));
        w.drop(bob);
        alice.send(message("alice", "bob", 4));
        w.settle();
        CHECK(alice.errors().empty());
        CHECK(w.backend->usage("bob", sim::first_device).value() == sim::store::StoredUsage{3, 3 * n});
    }

    SUBCASE("one sender cannot fill the disk through many mailboxes; others still can send") {
        for (const std::uint32_t k : {1, 2}) {
            alice.send(message("alice", "bob", k));
            alice.send(message("alice", "carol", k));
        }
        alice.send(message("alice", "dave", 1));
        w.settle();
        CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::quota_exceeded});
        CHECK(w.backend->usage("dave", sim::first_device).value().messages == 0);
        trudy.send(message("trudy", "dave", 1));
        w.settle();
        CHECK(trudy.errors().empty());
        CHECK(w.backend->usage("dave", sim::first_device).value().messages == 1);
        // bob reads his two: alice's quota has room again.
        auto& bob = w.raw_login("bob");
        CHECK(bob.take(sim::FrameType::message).size() == 2);
        bob.send(ack("bob", "alice", {1, 2}));
        w.settle();
        alice.send(message("alice", "dave", 1));
        w.settle();
        CHECK(alice.errors().empty());
        CHECK(w.backend->usage("dave", sim::first_device).value().messages == 2);
    }

    SUBCASE("the store's cap refuses everyone once reached, logs one warning, and holds after a restart") {
        for (const std::uint32_t k : {1, 2, 3}) {
            alice.send(message("alice", k < 3 ? "bob" : "carol", k));
            trudy.send(message("trudy", "dave", k));
        }
        w.settle();
        CHECK(alice.errors().empty());
        CHECK(trudy.errors().empty());
        trudy.send(message("trudy", "carol", 4));
        alice.send(message("alice", "carol", 4));
        w.settle();
        CHECK(trudy.errors() == std::vector<sim::Errc>{sim::Errc::store_full});
        CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::store_full});
        CHECK(warnings.size() == 1);  // once a minute, not once per message
        CHECK(w.backend->usage("carol", sim::first_device).value().messages == 1);

        // A restarted server counts what the store holds: still full; with a larger store alice's own quota
        // (3 of 4 used) still holds.
        w.restart();
        auto& trudy2 = w.raw_login("trudy");
        trudy2.send(message("trudy", "carol", 4));
        w.settle();
        CHECK(trudy2.errors() == std::vector<sim::Errc>{sim::Errc::store_full});
        w.restart([n](sim::ServerConfig& c) { c.max_store_bytes = 100 * n; });
        auto& alice2 = w.raw_login("alice");
        alice2.send(message("alice", "carol", 4));
        alice2.send(message("alice", "carol", 5));
        w.settle();
        CHECK(alice2.errors() == std::vector<sim::Errc>{sim::Errc::quota_exceeded});
        CHECK(w.backend->usage("carol", sim::first_device).value().messages == 2);
    }

    SUBCASE("a failed or repeated commit gives back what it reserved") {
        w.messages->fail_appends = 1;
        for (const std::uint32_t k : {1, 2, 3, 4}) {
            alice.send(message("alice", "bob", k));
        }
        w.settle();
        // The first commit failed (the three behind it were skipped with it); nothing is stored or counted.
        CHECK_FALSE(alice.errors().empty());
        CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
        alice.send(message("alice", "carol", 1));
        w.settle();
        alice.send(message("alice", "carol", 1));  // a retry: stored once, counted once when its commit is done
        w.settle();
        alice.send(message("alice", "carol", 2));
        alice.send(message("alice", "carol", 3));
        alice.send(message("alice", "dave", 1));
        w.settle();
        CHECK(alice.errors().empty());
        CHECK(w.backend->usage("carol", sim::first_device).value() == sim::store::StoredUsage{3, 3 * n});
        alice.send(message("alice", "dave", 2));  // 5 stored would pass her quota of 4
        w.settle();
        CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::quota_exceeded});
    }
}

TEST_CASE("e2e: the free-space reserve: refused before the disk is full, asked again a second later") {
    const std::uint64_t n = sim::encode_envelope(envelope(1)).size();  // every test message stores this size
    auto now = std::make_shared<sim::store::WallTime>(std::chrono::milliseconds{1'800'000'000'000});
    auto free = std::make_shared<std::uint64_t>(1000 * n + 2 * n);
    auto asked = std::make_shared<int>(0);
    auto unknown = std::make_shared<bool>(false);
    auto w = e2e_world(100'000, [&](sim::ServerConfig& c) {
        c.min_free_bytes = 1000 * n;
        c.wall_clock = [now] { return *now; };
        c.store_free_space = [free, asked, unknown]() -> std::optional<std::uint64_t> {
            ++*asked;
            if (*unknown) {
                return std::nullopt;
            }
            return *free;
        };
    });
    publish(w, "bob", 1);
    auto& alice = w.raw_login("alice");
    for (const std::uint32_t k : {1, 2, 3}) {
        alice.send(message("alice", "bob", k));
    }
    w.settle();
    // Two fit above the reserve; the third is refused although the file system was asked only once (what was
    // stored since is taken off the last answer).
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::store_full});
    CHECK(*asked == 1);
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 2);
    // The operator frees space; a second later the server sees it.
    *free = 2000 * n;
    alice.send(message("alice", "bob", 3));
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::store_full});
    *now += std::chrono::seconds(1);
    alice.send(message("alice", "bob", 3));
    w.settle();
    CHECK(alice.errors().empty());
    CHECK(*asked == 2);
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 3);
    // A file system that cannot answer is not asked again for every message; the byte caps still apply.
    *now += std::chrono::seconds(1);
    *unknown = true;
    for (const std::uint32_t k : {4, 5, 6}) {
        alice.send(message("alice", "bob", k));
    }
    w.settle();
    CHECK(alice.errors().empty());
    CHECK(*asked == 3);
}

TEST_CASE("end_sessions: an administrator's revocation closes the user's live connection, nobody else's") {
    auto w = e2e_world();
    auto& alice = w.raw_login("alice");
    auto& bob = w.raw_login("bob");
    // A removed device's entry closes that device's connection only: alice is on her first device.
    CHECK_FALSE(w.server->end_sessions("alice", 2));
    w.settle();
    CHECK_FALSE(alice.closed);
    CHECK(w.server->end_sessions("alice", sim::first_device));
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::token_invalid});
    CHECK(alice.closed);
    CHECK_FALSE(bob.closed);
    CHECK_FALSE(w.server->end_sessions("alice"));  // gone already
    CHECK_FALSE(w.server->end_sessions("nobody"));
    // She may log in again.
    auto& alice2 = w.raw_login("alice");
    CHECK_FALSE(alice2.closed);
}

// ---------------------------------------------------------------- server-assigned mode: offline delivery (6.7)

namespace {

/// The frame types of a raw client's inbox, in arrival order.
std::vector<sim::FrameType> types(const RawClient& c) {
    std::vector<sim::FrameType> out;
    for (const auto& f : c.inbox) {
        out.push_back(f.type);
    }
    return out;
}

World sa_world(std::size_t max_stored = 100'000) {
    return World(sim::SuitePolicy::default_policy(), "sa world", sim::ConversationMode::server_assigned, max_stored);
}

/// `user` logs in once (and so has an account) and goes offline.
void register_offline(World& w, const std::string& user) {
    w.drop(w.raw_login(user));
    w.settle();
}

}  // namespace

TEST_CASE("server-assigned mode: an offline destination's messages are stored behind its KEYGEN") {
    auto w = sa_world();
    register_offline(w, "bob");
    auto& alice = w.raw_login("alice", "bob");
    CHECK(alice.take(sim::FrameType::prekeys).empty());  // no prekey status in this mode
    const auto waiting = alice.take(sim::FrameType::ack_init);
    REQUIRE(waiting.size() == 1);
    CHECK(waiting[0].sid == 3);  // bob is offline...
    const auto ka = alice.take(sim::FrameType::keygen);
    REQUIRE(ka.size() == 1);  // ... and the pair is keyed at once
    const auto k = sim::decode_key_assignment(ka[0].payload).value();
    CHECK(k.mode == sim::ConversationMode::server_assigned);
    CHECK(k.peer == "bob");
    CHECK(w.vault->get("alice", "bob")->has_value());  // sealed at rest, for as long as messages need it

    // No conversation, no message; an envelope of the other mode is refused too.
    alice.send(message("alice", "carol", 9, sim::ConversationMode::server_assigned));
    alice.send(message("alice", "bob", 9, sim::ConversationMode::end_to_end));
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::no_conversation, sim::Errc::bad_field});

    // Stored, durably, with a receipt each; a retry is stored once.
    for (const std::uint32_t n : {1, 2, 3, 2}) {
        alice.send(message("alice", "bob", n, sim::ConversationMode::server_assigned));
    }
    w.settle();
    CHECK(alice.errors().empty());
    auto stored = receipts(alice, sim::ReceiptStatus::stored);
    std::sort(stored.begin(), stored.end());
    CHECK(stored == std::vector<std::uint32_t>{1, 2, 2, 3});
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 3);

    // bob logs in: his KEYGEN (the same key) comes first, then the stored messages in order, unchanged.
    auto& bob = w.raw_login("bob");
    REQUIRE(types(bob) == std::vector<sim::FrameType>{sim::FrameType::keygen, sim::FrameType::message,
                                                      sim::FrameType::message, sim::FrameType::message});
    const auto kb = sim::decode_key_assignment(bob.take(sim::FrameType::keygen).at(0).payload).value();
    CHECK(kb.peer == "alice");
    CHECK(kb.key == k.key);
    CHECK(kb.suite == k.suite);
    CHECK(w.vault->get("alice", "bob")->has_value());
    const auto got = bob.take(sim::FrameType::message);
    CHECK(numbers(got) == std::vector<std::uint32_t>{1, 2, 3});
    CHECK(got[0].payload == delivered(w.base.wall_clock(), "alice", "bob", 1, sim::ConversationMode::server_assigned));
    const auto online = alice.take(sim::FrameType::ack_init);
    REQUIRE(online.size() == 1);
    CHECK(online[0].sid == 2);                          // alice is told bob is online
    CHECK(alice.take(sim::FrameType::keygen).empty());  // and keeps her key: one KEYGEN each

    // Acknowledged: deleted, alice learns they were delivered; later messages take the same path both ways.
    bob.send(ack("bob", "alice", {1, 2, 3}));
    w.settle();
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
    CHECK(receipts(alice, sim::ReceiptStatus::delivered) == std::vector<std::uint32_t>{1, 2, 3});
    const auto appends = w.messages->appended;
    alice.send(message("alice", "bob", 4, sim::ConversationMode::server_assigned));
    bob.send(message("bob", "alice", 5, sim::ConversationMode::server_assigned));
    w.settle();
    CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{4});
    CHECK(numbers(alice.take(sim::FrameType::message), "bob") == std::vector<std::uint32_t>{5});
    CHECK(w.messages->appended == appends + 2);
    bob.send(ack("bob", "alice", {4}));
    alice.send(ack("alice", "bob", {5}));
    w.settle();
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
    CHECK(w.backend->usage("alice", sim::first_device).value().messages == 0);

    // bob, who has his key, drops: the seed's rule ends the conversation, and its key is gone.
    w.drop(bob);
    CHECK(alice.take(sim::FrameType::close).size() == 1);
    alice.send(message("alice", "bob", 6, sim::ConversationMode::server_assigned));
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::no_conversation});
    w.server->release_keys();  // no stored message needs the key: it goes
    CHECK_FALSE(w.vault->get("alice", "bob")->has_value());
    CHECK(w.server->stats().conversations == 0);
}

TEST_CASE("server-assigned mode: a sender who leaves before delivery; the conversation ends after it") {
    auto w = sa_world();
    register_offline(w, "bob");
    register_offline(w, "carol");
    // Without stored messages, a dropped initiator ends the conversation as in the seed.
    auto& a0 = w.raw_login("alice", "carol");
    CHECK(a0.take(sim::FrameType::keygen).size() == 1);
    w.drop(a0);
    CHECK(w.server->stats().conversations == 0);
    auto& carol = w.raw_login("carol");
    CHECK(carol.take(sim::FrameType::keygen).empty());

    // With stored messages it lives on until bob has them.
    auto& alice = w.raw_login("alice", "bob");
    const auto k1 = sim::decode_key_assignment(alice.take(sim::FrameType::keygen).at(0).payload).value();
    for (const std::uint32_t n : {1, 2}) {
        alice.send(message("alice", "bob", n, sim::ConversationMode::server_assigned));
    }
    w.settle();
    w.drop(alice);
    CHECK(w.server->stats().conversations == 1);

    // alice comes back and asks for bob again: she waits (no KEYGEN: the old conversation is still delivering).
    auto& alice2 = w.raw_login("alice", "bob");
    CHECK(alice2.take(sim::FrameType::ack_init).at(0).sid == 3);
    CHECK(alice2.take(sim::FrameType::keygen).empty());
    alice2.send(message("alice", "bob", 3, sim::ConversationMode::server_assigned));
    w.settle();
    CHECK(alice2.errors() == std::vector<sim::Errc>{sim::Errc::no_conversation});

    // bob logs in: KEYGEN (the old key), the two messages; he cannot answer the one who left.
    auto& bob = w.raw_login("bob");
    REQUIRE(types(bob) ==
            std::vector<sim::FrameType>{sim::FrameType::keygen, sim::FrameType::message, sim::FrameType::message});
    CHECK(sim::decode_key_assignment(bob.take(sim::FrameType::keygen).at(0).payload).value().key == k1.key);
    CHECK(w.vault->get("alice", "bob")->has_value());
    CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{1, 2});
    CHECK(alice2.inbox.empty());
    bob.send(message("bob", "alice", 7, sim::ConversationMode::server_assigned));
    w.settle();
    CHECK(bob.errors() == std::vector<sim::Errc>{sim::Errc::no_conversation});

    // His ack delivers them: then the old conversation ends (bob is told alice left) and, as alice asked again,
    // a new one starts with a new key.
    bob.send(ack("bob", "alice", {1}));
    w.settle();
    CHECK(bob.inbox.empty());  // one is still stored
    bob.send(ack("bob", "alice", {2}));
    w.settle();
    REQUIRE(types(bob) == std::vector<sim::FrameType>{sim::FrameType::close, sim::FrameType::keygen});
    CHECK(bob.inbox[0].source == "alice");
    const auto kb = sim::decode_key_assignment(bob.take(sim::FrameType::keygen).at(0).payload).value();
    CHECK(alice2.take(sim::FrameType::ack_init).at(0).sid == 2);
    const auto ka = sim::decode_key_assignment(alice2.take(sim::FrameType::keygen).at(0).payload).value();
    CHECK(ka.key == kb.key);
    CHECK(ka.key != k1.key);
    CHECK(w.server->stats().conversations == 1);
    alice2.send(message("alice", "bob", 8, sim::ConversationMode::server_assigned));
    w.settle();
    CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{8});
}

TEST_CASE("server-assigned mode: clients read an offline delivery across rotations and answer an hour later") {
    World w;  // TDES conversations, as in the seed
    {
        auto& bob = w.connect();
        REQUIRE(w.login(bob, "bob", "pw-bob-123"));
        bob.pipe->close_now();
        w.settle();
    }
    auto& alice = w.connect();
    REQUIRE(w.login(alice, "alice", "pw-alice-123", "bob"));
    REQUIRE(alice.saw<sim::WaitingEvent>("bob"));
    REQUIRE(alice.saw<sim::KeyAssignedEvent>("bob"));
    for (int i = 0; i < 5; ++i) {
        REQUIRE(alice.core->send("bob", "offline " + std::to_string(i)));
        w.settle();
        w.clock.advance(31s);  // the next send rotates first
    }
    CHECK(alice.of<sim::KeyRotatedEvent>().size() == 4);
    CHECK(alice.of<sim::ErrorEvent>().empty());
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 5);
    w.clock.advance(1h);

    auto& bob = w.connect();
    REQUIRE(w.login(bob, "bob", "pw-bob-123"));
    // KEYGEN, then the five in order, following alice's epochs 0..4
    REQUIRE(bob.saw<sim::KeyAssignedEvent>("alice"));
    std::size_t first_message = bob.events.size();
    std::size_t keyed_at = bob.events.size();
    for (std::size_t i = 0; i < bob.events.size(); ++i) {
        if (std::holds_alternative<sim::MessageEvent>(bob.events[i]) && first_message == bob.events.size()) {
            first_message = i;
        }
        if (std::holds_alternative<sim::KeyAssignedEvent>(bob.events[i])) {
            keyed_at = i;
        }
    }
    CHECK(keyed_at < first_message);
    const auto got = bob.of<sim::MessageEvent>();
    REQUIRE(got.size() == 5);
    for (std::size_t i = 0; i < got.size(); ++i) {
        CHECK(got[i].text == "offline " + std::to_string(i));
        CHECK(got[i].seq == i + 1);
    }
    CHECK(bob.of<sim::KeyRotatedEvent>().size() == 4);
    CHECK(bob.of<sim::ErrorEvent>().empty());
    // bob's acknowledgements (after display) delete them
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);

    // bob's answer, under his epoch 0 that began an hour after alice got the key, is read (no key_expired)
    REQUIRE(bob.core->send("alice", "back now"));
    w.settle();
    CHECK(alice.of<sim::ErrorEvent>().empty());
    REQUIRE(alice.of<sim::MessageEvent>().size() == 1);
    CHECK(alice.of<sim::MessageEvent>()[0].text == "back now");
    REQUIRE(alice.core->send("bob", "welcome"));
    w.settle();
    CHECK(bob.of<sim::MessageEvent>().back().text == "welcome");
}

TEST_CASE("server-assigned mode: a name nobody has is not keyed; messages to it wait in the sender's outbox") {
    World w;
    auto& alice = w.connect();
    REQUIRE(w.login(alice, "alice", "alice's password", "bbo"));  // a typo of bob
    CHECK(alice.saw<sim::WaitingEvent>("bbo"));
    CHECK_FALSE(alice.saw<sim::KeyAssignedEvent>("bbo"));
    REQUIRE(alice.core->send("bbo", "hello?"));
    w.settle();
    CHECK(alice.core->outbox_size() == 1);  // kept by the client, not stored on the server for nobody
    CHECK(w.messages->appended == 0);
    CHECK(w.server->stats().conversations == 0);
    CHECK_FALSE(alice.saw<sim::ErrorEvent>());
    // If that name registers after all, it is keyed at its login and the message goes.
    auto& bbo = w.connect();
    REQUIRE(w.login(bbo, "bbo", "bbo's password"));
    CHECK(alice.saw<sim::KeyAssignedEvent>("bbo"));
    CHECK(bbo.texts("alice") == std::vector<std::string>{"hello?"});
    CHECK(alice.core->outbox_size() == 0);
}

TEST_CASE("server-assigned mode: a recipient who drops before acknowledging reads the stored messages next time") {
    auto w = sa_world();
    register_offline(w, "bob");
    auto& alice = w.raw_login("alice", "bob");
    const auto k = sim::decode_key_assignment(alice.take(sim::FrameType::keygen).at(0).payload).value();
    for (const std::uint32_t n : {1, 2}) {
        alice.send(message("alice", "bob", n, sim::ConversationMode::server_assigned));
    }
    w.settle();
    CHECK(receipts(alice, sim::ReceiptStatus::stored).size() == 2);
    // bob gets his KEYGEN and the two messages, and drops before acknowledging them: the conversation ends (alice
    // is told), but the key stays while the messages need it.
    auto& bob = w.raw_login("bob");
    CHECK(bob.take(sim::FrameType::keygen).size() == 1);
    CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{1, 2});
    w.drop(bob);
    w.settle();
    CHECK(alice.take(sim::FrameType::close).size() == 1);
    w.server->release_keys();
    CHECK(w.vault->get("alice", "bob")->has_value());
    // Next time he gets the same key back, before the same messages; his acks deliver them; then the key goes.
    auto& bob2 = w.raw_login("bob");
    REQUIRE(types(bob2) ==
            std::vector<sim::FrameType>{sim::FrameType::keygen, sim::FrameType::message, sim::FrameType::message});
    CHECK(sim::decode_key_assignment(bob2.take(sim::FrameType::keygen).at(0).payload).value().key == k.key);
    CHECK(numbers(bob2.take(sim::FrameType::message)) == std::vector<std::uint32_t>{1, 2});
    bob2.send(ack("bob", "alice", {1, 2}));
    w.settle();
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 0);
    w.server->release_keys();
    CHECK_FALSE(w.vault->get("alice", "bob")->has_value());
}

TEST_CASE("server-assigned mode: a late reader follows up to max_epoch_skip epochs per record, no further") {
    auto w = sa_world();
    register_offline(w, "bob");
    auto& alice = w.raw_login("alice", "bob");
    const auto k = sim::decode_key_assignment(alice.take(sim::FrameType::keygen).at(0).payload).value();
    sim::SessionConfig cfg;
    cfg.suite = k.suite;
    auto send =
        sim::SendSession::create(cfg, sim::conversation_direction_key(k.key, "alice", "bob"), *w.rng, w.clock).value();
    const auto seal = [&](std::uint32_t n, std::uint32_t rotations) {
        for (std::uint32_t i = 0; i < rotations; ++i) {
            REQUIRE(send.rotate());
        }
        auto body = sim::encode_conversation_body({n, "record " + std::to_string(n)});
        sim::Envelope e;
        e.id = mid(n);
        e.mode = sim::ConversationMode::server_assigned;
        e.body = send.seal(body).value();
        alice.send(
            sim::Frame{sim::FrameType::message, 0, "alice", "bob", sim::encode_pair_submission(e, "alice", "bob")});
    };
    seal(1, 0);                        // epoch 0
    seal(2, 20);                       // 20 ahead: more than a channel follows (8)
    seal(3, sim::max_epoch_skip);      // exactly the bound
    seal(4, sim::max_epoch_skip + 1);  // one too far: never shown
    w.settle();
    CHECK(alice.errors().empty());
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 4);

    auto& bob = w.connect();
    REQUIRE(w.login(bob, "bob", "bob-pw"));  // register_offline's password
    const auto got = bob.of<sim::MessageEvent>();
    REQUIRE(got.size() == 3);
    CHECK(got[0].text == "record 1");
    CHECK(got[1].text == "record 2");
    CHECK(got[2].text == "record 3");
    const auto rotated = bob.of<sim::KeyRotatedEvent>();
    REQUIRE(rotated.size() == 2);
    CHECK(rotated[1].epoch == 20 + sim::max_epoch_skip);
    const auto errors = bob.of<sim::ErrorEvent>();
    REQUIRE(errors.size() == 1);
    CHECK(errors[0].error.code == sim::Errc::epoch_too_far);
    CHECK(errors[0].peer == "alice");
    // the three shown are acknowledged and deleted; the unreadable one stays stored
    CHECK(w.backend->usage("bob", sim::first_device).value().messages == 1);
    CHECK(receipts(alice, sim::ReceiptStatus::delivered) == std::vector<std::uint32_t>{1, 2, 3});
}

TEST_CASE("stats: connections by phase, logins by result, refusals by reason, store depth, latencies") {
    auto w = e2e_world();
    publish(w, "bob", 1);
    auto s = w.server->stats();
    CHECK(s.connections == 0);
    CHECK(s.connections_handshake + s.connections_unauthenticated + s.connections_authenticated == 0);
    CHECK(s.logins_ok == 1);
    CHECK(s.handshake_latency.count == 1);
    CHECK(s.login_latency.count == 1);

    // One connection in each phase: a handshake under way, a channel up without a login, a user logged in.
    Pipe idle;
    auto half = w.server->accept(std::make_shared<PipeOutput>(idle, false), "127.0.0.1:40002");
    REQUIRE(half != nullptr);
    auto& anon = w.connect_raw();
    auto& alice = w.connect_raw();
    World::send_init(alice, "alice", "alice-pw");
    w.pump_pipes();         // the login is queued for a worker...
    w.clock.advance(40ms);  // ...which takes 40 ms of the core's clock to answer
    w.settle();
    s = w.server->stats();
    CHECK(s.connections == 3);
    CHECK(s.connections_handshake == 1);
    CHECK(s.connections_unauthenticated == 1);
    CHECK(s.connections_authenticated == 1);
    CHECK(s.logins_ok == 2);
    CHECK(s.handshake_latency.count == 3);
    const auto& login = s.login_latency;
    CHECK(login.count == 2);
    CHECK(login.sum == 40ms);
    REQUIRE(login.counts.size() == login.bounds.size() + 1);
    const auto le50 = std::find(login.bounds.begin(), login.bounds.end(), 50ms) - login.bounds.begin();
    REQUIRE(le50 > 0);
    CHECK(login.counts[static_cast<std::size_t>(le50)] == 1);  // 25 ms < 40 ms <= 50 ms
    half->on_closed(sim::Errc::closed);
    w.drop(anon);
    s = w.server->stats();
    CHECK(s.connections == 1);
    CHECK(s.connections_handshake == 0);
    CHECK(s.connections_unauthenticated == 0);
    CHECK(s.connections_authenticated == 1);

    // Two messages for bob (offline) are stored; their commit comes 7 ms after they were accepted.
    alice.send(message("alice", "bob", 1));
    alice.send(message("alice", "bob", 2));
    w.pump_pipes();
    w.clock.advance(7ms);
    w.settle();
    s = w.server->stats();
    CHECK(s.store_messages == 2);
    CHECK(s.store_bytes > 0);
    CHECK(s.store_commit_latency.count == 2);
    CHECK(s.store_commit_latency.sum == 14ms);

    // Refusals by reason: two to herself, one under another user's name.
    alice.send(message("alice", "alice", 3));
    alice.send(message("alice", "alice", 4));
    alice.send(message("mallory", "bob", 5));
    w.settle();
    s = w.server->stats();
    CHECK(s.messages_refused == 3);
    CHECK(s.refused_by_reason == std::vector<std::pair<sim::Errc, std::uint64_t>>{{sim::Errc::source_mismatch, 1},
                                                                                  {sim::Errc::bad_destination, 2}});

    // bob reads and acknowledges both: delivered, and the store is empty again.
    auto& bob = w.raw_login("bob");
    CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{1, 2});
    bob.send(ack("bob", "alice", {1, 2}));
    w.settle();
    s = w.server->stats();
    CHECK(s.messages_delivered == 2);
    CHECK(s.messages_routed == 2);
    CHECK(s.store_messages == 0);
    CHECK(s.store_bytes == 0);

    // Wrong passwords: refused, then throttled (the clock does not move, so no back-off runs out).
    for (int i = 0; i < 8; ++i) {
        auto& guess = w.connect_raw();
        World::send_init(guess, "alice", "a guess");
        w.settle();
    }
    s = w.server->stats();
    CHECK(s.logins_failed >= 1);
    CHECK(s.logins_throttled >= 1);
    CHECK(s.logins_failed + s.logins_throttled == 8);
    CHECK(s.login_latency.count == s.logins_ok + s.logins_failed + s.logins_throttled);
    CHECK(s.connections_unauthenticated == 0);  // the refused ones were closed
    w.drop(alice);
    w.drop(bob);
    s = w.server->stats();
    CHECK(s.connections == 0);
    CHECK(s.connections_authenticated == 0);
}

TEST_CASE("typed events: each kind carries its own fields through the client core") {
    for (const auto mode : {sim::ConversationMode::server_assigned, sim::ConversationMode::end_to_end}) {
        CAPTURE(mode);
        const bool e2e = mode == sim::ConversationMode::end_to_end;
        auto w = e2e ? e2e_world() : World();
        const sim::WallTime alice_clock{std::chrono::milliseconds{1'700'000'000'123}};
        const sim::WallTime server_clock{std::chrono::milliseconds{1'800'000'000'000}};  // World's wall clock

        // TrustMode::ask: the question carries the fingerprint that channel_ready then confirms.
        sim::ClientConfig alice_config;
        alice_config.handshake.trust = sim::TrustMode::ask;
        alice_config.wall_clock = [alice_clock] { return alice_clock; };
        auto& alice = w.connect(alice_config);
        const auto asked = alice.of<sim::TrustRequiredEvent>();
        REQUIRE(asked.size() == 1);
        CHECK_FALSE(alice.saw<sim::ChannelReadyEvent>());
        REQUIRE(alice.core->trust(true));
        w.settle();
        const auto ready = alice.of<sim::ChannelReadyEvent>();
        REQUIRE(ready.size() == 1);
        CHECK(ready[0].fingerprint == asked[0].fingerprint);
        CHECK(ready[0].first_contact);
        CHECK(sim::kind_of(alice.events.back()) == sim::ClientEventKind::channel_ready);

        REQUIRE(w.login(alice, "Alice", "alice's password", "bob"));
        CHECK(alice.of<sim::AuthenticatedEvent>().at(0).user == "alice");  // the canonical name
        const auto waiting = alice.of<sim::WaitingEvent>("bob");
        REQUIRE_FALSE(waiting.empty());
        if (!e2e) {
            CHECK_FALSE(waiting[0].reason.has_value());  // bob is offline, that is all
        }

        auto& bob = w.connect();
        REQUIRE(w.login(bob, "bob", "bob's password"));
        CHECK(alice.saw<sim::PeerOnlineEvent>("bob") != e2e);  // end to end, bob's prekeys answer instead
        const auto keyed = alice.of<sim::KeyAssignedEvent>("bob");
        REQUIRE(keyed.size() == 1);
        CHECK(keyed[0].mode == mode);
        if (e2e) {
            CHECK(keyed[0].safety_number == alice.core->peer_identity("bob")->safety_number);
            CHECK(keyed[0].first_contact);
        } else {
            CHECK(keyed[0].suite == sim::SuiteId::tdes_cbc_hmac_sha256);
            CHECK(keyed[0].safety_number.empty());
        }

        const auto id = alice.core->send("bob", "typed");
        REQUIRE(id);
        w.settle();
        const auto got = bob.of<sim::MessageEvent>("alice");
        REQUIRE(got.size() == 1);
        CHECK(got[0].text == "typed");
        CHECK(got[0].message_id == *id);
        CHECK(got[0].seq == 1);
        CHECK(got[0].mode == mode);
        CHECK(got[0].sent_at == alice_clock);
        CHECK(got[0].received_at == server_clock);
        CHECK(got[0].conversation == sim::pair_conversation_id("alice", "bob"));
        CHECK(got[0].sender_device == sim::first_device);
        CHECK(got[0].inbox_index == 0);
        // Receipts: the status is an enum; bob is online, so the last one says delivered.
        const auto receipts = alice.of<sim::ReceiptEvent>("bob");
        REQUIRE_FALSE(receipts.empty());
        CHECK(receipts.back().message_id == *id);
        CHECK(receipts.back().status == sim::ReceiptStatus::delivered);

        // The key moves on: which way, and how far.
        alice.events.clear();
        bob.events.clear();
        if (e2e) {
            REQUIRE(bob.core->send("alice", "reply"));  // bob's first DH ratchet step
            w.settle();
            REQUIRE(alice.core->send("bob", "again"));  // and alice's
            w.settle();
        } else {
            w.clock.advance(31s);
            REQUIRE(alice.core->send("bob", "epoch one"));
            w.settle();
        }
        const auto moved = [](const std::vector<sim::KeyRotatedEvent>& events, sim::KeyDirection direction) {
            return std::any_of(events.begin(), events.end(), [direction](const sim::KeyRotatedEvent& e) {
                return e.direction == direction && e.epoch >= 1;
            });
        };
        auto rotated = alice.of<sim::KeyRotatedEvent>("bob");
        for (const auto& e : bob.of<sim::KeyRotatedEvent>("alice")) {
            rotated.push_back(e);
        }
        REQUIRE_FALSE(rotated.empty());
        CHECK(rotated[0].mode == mode);
        // Server-assigned: alice's sending key and bob's receiving key move to epoch 1. End to end: a DH ratchet step
        // is taken when a reply with a new ratchet key arrives (its receiving side).
        if (!e2e) {
            CHECK(moved(rotated, sim::KeyDirection::sending));
        }
        CHECK(moved(rotated, sim::KeyDirection::receiving));

        CHECK_FALSE(alice.saw<sim::ErrorEvent>());
        CHECK_FALSE(bob.saw<sim::ErrorEvent>());
        CHECK_FALSE(bob.saw<sim::GapEvent>());

        // Leaving, then the end of the connection.
        REQUIRE(alice.core->leave("bob"));
        w.settle();
        if (!e2e) {
            CHECK(bob.saw<sim::PeerLeftEvent>("alice"));
        }
        REQUIRE(alice.core->logout());
        w.settle();
        const auto closed = alice.of<sim::ClosedEvent>();
        REQUIRE(closed.size() == 1);
        CHECK(sim::error_of(sim::ClientEvent{closed[0]})->code == closed[0].reason.code);
        CHECK(sim::peer_of(sim::ClientEvent{closed[0]}).empty());
    }
}

TEST_CASE("typed events: kinds and names follow the variant") {
    CHECK(sim::client_event_kind<sim::ChannelReadyEvent> == sim::ClientEventKind::channel_ready);
    CHECK(sim::client_event_kind<sim::MessageEvent> == sim::ClientEventKind::message);
    CHECK(sim::client_event_kind<sim::PasswordChangedEvent> == sim::ClientEventKind::password_changed);
    CHECK(sim::client_event_kind<sim::DeviceInfoEvent> == sim::ClientEventKind::device_info);
    CHECK(std::variant_size_v<sim::ClientEvent> == static_cast<std::size_t>(sim::ClientEventKind::presence) + 1);
    CHECK(sim::client_event_name(sim::ClientEventKind::link_code) == "link_code");
    CHECK(sim::client_event_kind<sim::PresenceEvent> == sim::ClientEventKind::presence);
    CHECK(sim::client_event_name(sim::ClientEventKind::presence) == "presence");
    const sim::ClientEvent gap = sim::GapEvent{"bob", 3};
    CHECK(sim::kind_of(gap) == sim::ClientEventKind::gap);
    CHECK(sim::client_event_name(sim::kind_of(gap)) == "gap");
    CHECK(sim::peer_of(gap) == "bob");
    CHECK_FALSE(sim::error_of(gap));
    CHECK(sim::peer_of(sim::AuthenticatedEvent{"alice"}) == "alice");
    CHECK(sim::error_of(sim::ErrorEvent{sim::Errc::rate_limited, "bob", std::nullopt})->code ==
          sim::Errc::rate_limited);
}

// ---------------------------------------------------------------- linking with libsim's client (issue 12)

namespace {
sim::Credentials new_installation(const std::string& password) {
    return {sim::CredentialKind::password, sim::to_bytes<sim::SecureBytes>(sim::as_bytes(password)), sim::DeviceId{0}};
}

/// Client states that outlive their connections (a device's), for the tests of devices.
struct States {
    std::vector<std::unique_ptr<sim::ClientState>> all;
    sim::ClientState& add() {
        all.push_back(sim::make_memory_client_state());
        return *all.back();
    }
};

/// A client of `w` on `state` (a later connection on the same state is the same device).
TestClient& connect_on(World& w, sim::ClientState& state) {
    sim::ClientConfig config;
    config.state = &state;
    return w.connect(config);
}

/// A new installation on `state`, linked to `user`'s account with the approval of `first` (an active device).
TestClient& link_new_device(World& w, TestClient& first, const std::string& user, sim::ClientState& state) {
    auto& device = connect_on(w, state);
    REQUIRE(device.core->login(user, new_installation(user + "'s password")));
    w.settle();
    REQUIRE(first.core->approve_device(device.of<sim::LinkCodeEvent>().at(0).code));
    w.settle();
    REQUIRE(device.saw<sim::AuthenticatedEvent>(user));
    return device;
}

/// The device key in a client state (its identity record ends with the key's seed).
sim::e2e::IdentityKeyPair device_key_in(const sim::ClientState& state) {
    return sim::e2e::identity_from_private(sim::ByteView(state.get("identity").value().value()).last(32)).value();
}
}  // namespace

TEST_CASE("client: a new installation links through an existing device's approval and logs in as itself after") {
    auto w = e2e_world();
    auto laptop_state = sim::make_memory_client_state();
    sim::ClientConfig laptop_config;
    laptop_config.state = laptop_state.get();
    auto& laptop = w.connect(laptop_config);
    REQUIRE(w.login(laptop, "alice", "alice's password"));  // registers: device 1
    CHECK(laptop.core->device() == sim::first_device);

    auto phone_state = sim::make_memory_client_state();
    sim::ClientConfig phone_config;
    phone_config.state = phone_state.get();
    auto* phone = &w.connect(phone_config);
    REQUIRE(phone->core->login("alice", new_installation("alice's password")));
    w.settle();
    // Pending: the laptop offered at once, the phone shows a code; the laptop shows the phone's fingerprint.
    CHECK_FALSE(phone->saw<sim::AuthenticatedEvent>());
    const auto codes = phone->of<sim::LinkCodeEvent>();
    REQUIRE(codes.size() == 1);
    CHECK(codes[0].device == sim::DeviceId{2});
    CHECK(codes[0].code.size() == 9);
    const auto asks = laptop.of<sim::LinkRequestEvent>();
    REQUIRE(asks.size() == 1);
    CHECK(asks[0].device == sim::DeviceId{2});
    CHECK(asks[0].fingerprint == codes[0].fingerprint);
    CHECK(phone->core->send("bob", "too early").code() == sim::Errc::not_authenticated);

    SUBCASE("the right code: the phone becomes device 2 of alice, with the account key") {
        REQUIRE(laptop.core->approve_device(codes[0].code));
        w.settle();
        CHECK(phone->saw<sim::AuthenticatedEvent>("alice"));
        CHECK(phone->core->device() == sim::DeviceId{2});
        CHECK(phone->core->session_token().device == sim::DeviceId{2});
        const auto changed = laptop.of<sim::DevicesChangedEvent>("alice");
        REQUIRE_FALSE(changed.empty());
        CHECK(changed.back().devices == std::vector<sim::DeviceId>{1, 2});
        CHECK_FALSE(laptop.saw<sim::ErrorEvent>());
        CHECK_FALSE(phone->saw<sim::ErrorEvent>());
        // The owner's view names both.
        REQUIRE(laptop.core->request_devices());
        w.settle();
        const auto info = laptop.of<sim::DeviceInfoEvent>();
        REQUIRE(info.size() == 1);
        REQUIRE(info[0].devices.size() == 2);
        CHECK(info[0].devices[1].status == sim::DeviceStatus::active);

        // A list the account key did not sign (the server, or a device key without the account key, made it) is
        // stored by the server, which cannot tell, but refused by the laptop, which keeps the list it had.
        const auto identity_record = phone_state->get("identity").value().value();
        const auto phone_key = sim::e2e::identity_from_private(sim::ByteView(identity_record).last(32)).value();
        const auto laptop_key = sim::e2e::identity_from_private(
                                    sim::ByteView(laptop_state->get("identity").value().value()).last(32))
                                    .value();
        const auto forger = sim::e2e::generate_identity(*w.rng);
        const sim::e2e::DeviceList forged{"alice", 2, 2, {{1, laptop_key.public_key}, {2, phone_key.public_key}}};
        const auto forged_bytes =
            sim::e2e::encode_signed_device_list(sim::e2e::sign_device_list(forged, forger, phone_key).value()).value();
        REQUIRE(sim::testing::send_raw(*phone->core, sim::Frame{sim::FrameType::devices, 0, "alice", "alice",
                                                                 sim::encode_devices_request(
                                                                     {sim::DevicesOp::put, forged_bytes, 0, {}})
                                                                     .value()}));
        const auto before = laptop.of<sim::DevicesChangedEvent>().size();
        w.settle();
        CHECK(laptop.of<sim::DevicesChangedEvent>().size() == before);
        const auto refused = laptop.of<sim::ErrorEvent>();
        REQUIRE(refused.size() == 1);
        CHECK(refused[0].error.code == sim::Errc::auth_failed);
        CHECK(phone->of<sim::ErrorEvent>().size() == 1);  // the phone refuses it too

        // The next run of the phone logs in as device 2 from its state, with the password alone.
        phone->pipe->close_now();
        w.settle();
        phone = &w.connect(phone_config);
        REQUIRE(w.login(*phone, "alice", "alice's password"));
        CHECK(phone->saw<sim::AuthenticatedEvent>("alice"));
        CHECK(phone->core->device() == sim::DeviceId{2});
        // A used state cannot link again.
        auto& again = w.connect(phone_config);
        CHECK(again.core->login("alice", new_installation("alice's password")).code() == sim::Errc::invalid_state);

        // The laptop removes the phone: it is closed, and its state no longer logs in.
        REQUIRE(laptop.core->remove_device(2));
        w.settle();
        CHECK(laptop.of<sim::DevicesChangedEvent>("alice").back().devices == std::vector<sim::DeviceId>{1});
        const auto closed = phone->of<sim::ClosedEvent>();
        REQUIRE_FALSE(closed.empty());
        CHECK(closed.back().reason.code == sim::Errc::device_unknown);
        auto& removed = w.connect(phone_config);
        REQUIRE(w.login(removed, "alice", "alice's password"));
        CHECK_FALSE(removed.saw<sim::AuthenticatedEvent>());
        CHECK(removed.of<sim::ClosedEvent>().back().reason.code == sim::Errc::device_unknown);
        CHECK(laptop.core->remove_device(1).code() == sim::Errc::invalid_argument);  // the only one left
    }
    SUBCASE("a request from someone with the password that does not name its device: reported, nothing closes") {
        DeviceSteps d{w};
        auto& evil = d.login("alice", sim::CredentialKind::password,
                             sim::to_bytes<sim::SecureBytes>(sim::as_bytes("alice's password")), sim::DeviceId{0});
        REQUIRE(d.authenticated(evil)->device == sim::DeviceId{3});
        const auto key = sim::e2e::generate_identity(*w.rng);
        const auto lying = sim::e2e::LinkJoiner::start(*w.rng, 9, key.public_key).value();
        d.link(evil, "alice", sim::LinkStep::request, 0, lying.request());
        CHECK_FALSE(laptop.saw<sim::ClosedEvent>());
        const auto errors = laptop.of<sim::ErrorEvent>();
        REQUIRE(errors.size() == 1);
        CHECK(errors[0].error.code == sim::Errc::bad_field);
        CHECK(laptop.of<sim::LinkRequestEvent>().size() == 1);  // the phone's only
        REQUIRE(laptop.core->approve_device(codes[0].code));  // the phone's link goes on
        w.settle();
        CHECK(phone->saw<sim::AuthenticatedEvent>("alice"));
    }
    SUBCASE("a wrong code ends the link and changes nothing") {
        const auto wrong = codes[0].code == "AAAA-AAAA" ? std::string("BBBB-BBBB") : std::string("AAAA-AAAA");
        CHECK(laptop.core->approve_device(wrong).code() == sim::Errc::auth_failed);
        w.settle();
        CHECK_FALSE(phone->saw<sim::AuthenticatedEvent>());
        const auto closed = phone->of<sim::ClosedEvent>();
        REQUIRE_FALSE(closed.empty());
        CHECK(closed.back().reason.code == sim::Errc::auth_failed);
        CHECK(laptop.core->approve_device(codes[0].code).code() == sim::Errc::invalid_state);  // one try
        CHECK_FALSE(laptop.saw<sim::DevicesChangedEvent>());
        CHECK_FALSE(phone_state->get("identity").value().has_value());  // no keys were given
    }
}

// ---------------------------------------------------------------- fan-out to several devices (6.5, 6.9)

namespace {

/// An account with two active devices: device 1 logged in with raw_login, device 2 linked through the server with
/// the real link exchange (as in "linking a second device" above), the list naming both stored; inboxes emptied.
struct TwoDevices {
    RawClient* first = nullptr;
    RawClient* second = nullptr;
    sim::e2e::IdentityKeyPair account;  // also device 1's key (an upgraded account)
    sim::e2e::IdentityKeyPair second_key;
    sim::Bytes list;  // version 1: devices 1 and 2
};

TwoDevices link_second_device(World& w, const std::string& user) {
    DeviceSteps d{w};
    TwoDevices t;
    t.account = sim::e2e::generate_identity(*w.rng);
    t.second_key = sim::e2e::generate_identity(*w.rng);
    t.first = &w.raw_login(user);
    t.second = &d.password(user, sim::DeviceId{0});
    REQUIRE(d.authenticated(*t.second)->device == sim::DeviceId{2});
    auto joiner = sim::e2e::LinkJoiner::start(*w.rng, 2, t.second_key.public_key).value();
    d.link(*t.second, user, sim::LinkStep::request, 0, joiner.request());
    auto approver = sim::e2e::LinkApprover::start(*w.rng, d.last_link(*t.first).data).value();
    d.link(*t.first, user, sim::LinkStep::offer, 2, approver.offer());
    d.link(*t.second, user, sim::LinkStep::reveal, 1, joiner.reveal(d.last_link(*t.second).data).value());
    REQUIRE(approver.reveal(d.last_link(*t.first).data));
    const sim::e2e::DeviceList next{user, 1, 1, {{1, t.account.public_key}, {2, t.second_key.public_key}}};
    const sim::e2e::LinkGrant grant{t.account.private_key,
                                    sim::e2e::sign_device_list(next, t.account, t.account).value()};
    d.link(*t.first, user, sim::LinkStep::grant, 2, approver.approve(joiner.code(), grant).value());
    REQUIRE(joiner.accept(user, d.last_link(*t.second).data));
    t.list = sim::e2e::encode_signed_device_list(grant.list).value();
    d.devices(*t.first, user, {sim::DevicesOp::put, t.list, 0, {}});
    REQUIRE(d.last_error(*t.first) == sim::Errc::ok);
    REQUIRE(d.authenticated(*t.second)->device == sim::DeviceId{2});
    t.first->inbox.clear();
    t.second->inbox.clear();
    return t;
}

/// A list of `user` naming device 1 only, signed by device 1 (= the account key): it removes the others.
sim::Bytes only_first_device(const std::string& user, const TwoDevices& t, std::uint64_t version) {
    const sim::e2e::DeviceList only{user, version, 1, {{1, t.account.public_key}}};
    return sim::e2e::encode_signed_device_list(sim::e2e::sign_device_list(only, t.account, t.account).value()).value();
}

/// Message `n` from (`from`, device `from_device`) to `to` with a body for each of `to_devices` and for each of
/// `own_devices`; body = device number repeated, so each device's copy is told apart.
sim::Frame fanned(const std::string& from, sim::DeviceId from_device, const std::string& to, std::uint32_t n,
                  std::uint32_t seq, const std::vector<sim::DeviceId>& to_devices,
                  const std::vector<sim::DeviceId>& own_devices = {}) {
    sim::Submission s{mid(n), sim::ConversationMode::end_to_end, sim::pair_conversation_id(from, to), from_device, {},
                      {}};
    for (const auto d : to_devices) {
        s.bodies.push_back({d, sim::Bytes(20, static_cast<std::uint8_t>(d))});
    }
    for (const auto d : own_devices) {
        s.own_bodies.push_back({d, sim::Bytes(30, static_cast<std::uint8_t>(0x80U + d))});
    }
    return sim::Frame{sim::FrameType::message, seq, from, to, sim::encode_submission(s)};
}

/// The signed lists a client was sent as op 1 answers (and removes them), by user.
std::map<std::string, sim::Bytes> lists_sent(RawClient& c) {
    std::map<std::string, sim::Bytes> out;
    for (const auto& f : c.take(sim::FrameType::devices)) {
        const auto r = sim::decode_devices_reply(f.payload).value();
        if (r.op == sim::DevicesOp::list) {
            out[r.user] = r.signed_list;
        }
    }
    return out;
}

std::uint64_t stored_for(World& w, const std::string& user, sim::DeviceId device) {
    return w.backend->usage(user, device).value().messages;
}

}  // namespace

TEST_CASE("fan-out: a message that misses a linked device is refused with devices_changed and the current list") {
    auto w = e2e_world();
    publish(w, "bob", 3);
    const auto bob = link_second_device(w, "bob");
    auto& alice = w.raw_login("alice");

    // Sequenced: a refusal receipt, the stream waits for that number again; the list comes first.
    alice.send(fanned("alice", 1, "bob", 1, 1, {1}));
    w.settle();
    CHECK(refusals(alice) ==
          std::vector<std::tuple<std::uint32_t, sim::Errc, std::uint32_t>>{{1, sim::Errc::devices_changed, 1}});
    CHECK(lists_sent(alice) == std::map<std::string, sim::Bytes>{{"bob", bob.list}});
    CHECK(stored_for(w, "bob", 1) == 0);
    CHECK(bob.first->take(sim::FrameType::message).empty());
    // A later number of the stream is out of order behind it (6.6): the refused one comes first.
    alice.send(fanned("alice", 1, "bob", 2, 2, {1, 2}));
    w.settle();
    CHECK(refusals(alice) ==
          std::vector<std::tuple<std::uint32_t, sim::Errc, std::uint32_t>>{{2, sim::Errc::out_of_order, 1}});

    // Unsequenced: an error frame, the connection lives.
    alice.send(fanned("alice", 1, "bob", 3, 0, {1}));
    w.settle();
    CHECK(alice.errors() == std::vector<sim::Errc>{sim::Errc::devices_changed});
    CHECK(lists_sent(alice).count("bob") == 1);
    CHECK_FALSE(alice.closed);

    // Too many devices is as wrong as too few.
    alice.send(fanned("alice", 1, "bob", 4, 1, {1, 2, 3}));
    w.settle();
    CHECK(refusals(alice).size() == 1);
    CHECK(stored_for(w, "bob", 1) == 0);
    CHECK(stored_for(w, "bob", 2) == 0);
}

TEST_CASE("fan-out: a message with a body per device is stored in each mailbox and delivered to each device") {
    auto w = e2e_world();
    publish(w, "bob", 3);
    const auto bob = link_second_device(w, "bob");
    auto& alice = w.raw_login("alice");

    alice.send(fanned("alice", 1, "bob", 1, 1, {1, 2}));
    w.settle();
    CHECK(refusals(alice).empty());
    CHECK(alice.errors().empty());
    CHECK(receipts(alice, sim::ReceiptStatus::stored) == std::vector<std::uint32_t>{1});  // one for the message
    CHECK(stored_for(w, "bob", 1) == 1);
    CHECK(stored_for(w, "bob", 2) == 1);
    for (const auto& [conn, device] :
         {std::pair{bob.first, sim::DeviceId{1}}, std::pair{bob.second, sim::DeviceId{2}}}) {
        const auto got = conn->take(sim::FrameType::message);
        REQUIRE(got.size() == 1);
        CHECK(got[0].source == "alice");
        CHECK(got[0].destination == "bob");
        const auto d = sim::decode_delivered(got[0].payload).value();
        CHECK(d.conversation == sim::pair_conversation_id("alice", "bob"));
        CHECK(d.envelope.id == mid(1));
        CHECK(d.envelope.body == sim::Bytes(20, static_cast<std::uint8_t>(device)));  // its own body only
    }
    // Each device acknowledges from its own mailbox; alice hears which device has it.
    bob.second->send(ack("bob", "alice", {1}));
    w.settle();
    CHECK(stored_for(w, "bob", 1) == 1);
    CHECK(stored_for(w, "bob", 2) == 0);
    const auto delivered = alice.take(sim::FrameType::receipt);
    REQUIRE(delivered.size() == 1);
    CHECK(sim::decode_receipt(delivered[0].payload).value().device == sim::DeviceId{2});

    // Offline: device 2 gets its copy from the store at its next login.
    w.drop(*bob.second);
    alice.send(fanned("alice", 1, "bob", 2, 2, {1, 2}));
    w.settle();
    CHECK(stored_for(w, "bob", 2) == 1);
    DeviceSteps d{w};
    auto& again = d.password("bob", sim::DeviceId{2});
    REQUIRE(d.authenticated(again).has_value());
    CHECK(numbers(again.take(sim::FrameType::message)) == std::vector<std::uint32_t>{2});
}

TEST_CASE("fan-out: the sender's own other devices get their copy; an own list that misses or adds one is refused") {
    auto w = e2e_world();
    publish(w, "bob", 3);
    publish(w, "alice", 3);
    auto& bob = w.raw_login("bob");
    const auto alice = link_second_device(w, "alice");

    // A sender from before own copies (no own list) with a second device: refused, alice's own list comes.
    alice.first->send(fanned("alice", 1, "bob", 1, 1, {1}));
    w.settle();
    CHECK(refusals(*alice.first) ==
          std::vector<std::tuple<std::uint32_t, sim::Errc, std::uint32_t>>{{1, sim::Errc::devices_changed, 1}});
    CHECK(lists_sent(*alice.first) == std::map<std::string, sim::Bytes>{{"alice", alice.list}});
    // A device that is not hers, or both wrong: refused the same way.
    alice.first->send(fanned("alice", 1, "bob", 1, 1, {1}, {3}));
    alice.first->send(fanned("alice", 1, "bob", 1, 1, {1, 2}, {2, 3}));
    w.settle();
    CHECK(refusals(*alice.first).size() == 2);
    CHECK(lists_sent(*alice.first).size() == 2);  // bob's and alice's
    CHECK(stored_for(w, "bob", 1) == 0);
    CHECK(stored_for(w, "alice", 2) == 0);

    // With device 2's body: bob's mailbox and alice's device 2's mailbox, one commit, one `stored`.
    alice.first->send(fanned("alice", 1, "bob", 1, 1, {1}, {2}));
    w.settle();
    CHECK(refusals(*alice.first).empty());
    CHECK(receipts(*alice.first, sim::ReceiptStatus::stored) == std::vector<std::uint32_t>{1});
    CHECK(stored_for(w, "bob", 1) == 1);
    CHECK(stored_for(w, "alice", 2) == 1);
    CHECK(stored_for(w, "alice", 1) == 0);
    CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{1});
    // Device 2 tells it apart: it comes from alice herself, to bob, in the pair's conversation, from device 1.
    const auto check_own = [&](const sim::Frame& f) {
        CHECK(f.source == "alice");
        CHECK(f.destination == "bob");
        const auto dl = sim::decode_delivered(f.payload).value();
        CHECK(dl.conversation == sim::pair_conversation_id("alice", "bob"));
        CHECK(dl.sender_device == sim::first_device);
        CHECK(dl.envelope.id == mid(1));
        CHECK(dl.envelope.body == sim::Bytes(30, 0x82));
    };
    auto own = alice.second->take(sim::FrameType::message);
    REQUIRE(own.size() == 1);
    check_own(own[0]);
    // From the store after a reconnect, the same frame.
    w.drop(*alice.second);
    DeviceSteps d{w};
    auto& second = d.password("alice", sim::DeviceId{2});
    own = second.take(sim::FrameType::message);
    REQUIRE(own.size() == 1);
    check_own(own[0]);
    // It acknowledges to the user itself: deleted from its mailbox.
    second.send(ack("alice", "alice", {1}));
    w.settle();
    CHECK(second.errors().empty());
    CHECK(stored_for(w, "alice", 2) == 0);
    CHECK(stored_for(w, "bob", 1) == 1);

    // bob answers: alice's devices both get it from bob (bob has one device: no own list, as before).
    bob.send(fanned("bob", 1, "alice", 7, 1, {1, 2}));
    w.settle();
    CHECK(refusals(bob).empty());
    CHECK(numbers(alice.first->take(sim::FrameType::message), "bob") == std::vector<std::uint32_t>{7});
    CHECK(numbers(second.take(sim::FrameType::message), "bob") == std::vector<std::uint32_t>{7});
}

TEST_CASE("fan-out: a removed device gets nothing afterwards; messages for it are refused") {
    auto w = e2e_world();
    publish(w, "bob", 3);
    const auto bob = link_second_device(w, "bob");
    auto& alice = w.raw_login("alice");
    DeviceSteps d{w};
    const auto removal = only_first_device("bob", bob, 2);
    d.devices(*bob.first, "bob", {sim::DevicesOp::put, removal, 0, {}});
    REQUIRE(d.last_error(*bob.first) == sim::Errc::ok);

    alice.send(fanned("alice", 1, "bob", 1, 1, {1, 2}));
    w.settle();
    CHECK(refusals(alice).size() == 1);
    CHECK(lists_sent(alice) == std::map<std::string, sim::Bytes>{{"bob", removal}});
    alice.send(fanned("alice", 1, "bob", 1, 1, {1}));
    w.settle();
    CHECK(refusals(alice).empty());
    CHECK(stored_for(w, "bob", 1) == 1);
    CHECK(stored_for(w, "bob", 2) == 0);
    CHECK(bob.second->take(sim::FrameType::message).empty());
}

TEST_CASE("fan-out: a list stored behind this server's back (another node) is read again before a refusal") {
    auto w = e2e_world();
    publish(w, "bob", 3);
    const auto bob = link_second_device(w, "bob");
    auto& alice = w.raw_login("alice");
    alice.send(fanned("alice", 1, "bob", 1, 1, {1, 2}));
    w.settle();
    CHECK(receipts(alice, sim::ReceiptStatus::stored) == std::vector<std::uint32_t>{1});

    // Another node removes device 2 in the shared store (its op 5 does not reach this node: bob's devices are
    // attached here only in this test). This node's directory still says {1, 2}.
    REQUIRE(w.backend->remove_device("bob", 2).value());
    REQUIRE(w.backend->put_device_list("bob", {2, only_first_device("bob", bob, 2)}));
    alice.send(fanned("alice", 1, "bob", 2, 2, {1}));
    w.settle();
    CHECK(refusals(alice).empty());
    CHECK(receipts(alice, sim::ReceiptStatus::stored) == std::vector<std::uint32_t>{2});
    // And the re-read is kept: the old set is refused now.
    alice.send(fanned("alice", 1, "bob", 3, 3, {1, 2}));
    w.settle();
    CHECK(refusals(alice).size() == 1);
}

TEST_CASE("fan-out: one-device senders and recipients keep the wire of before; own copies need end-to-end mode") {
    SUBCASE("end to end: no own list, one body") {
        auto w = e2e_world();
        publish(w, "bob", 3);
        auto& alice = w.raw_login("alice");
        auto& bob = w.raw_login("bob");
        alice.send(sequenced("alice", "bob", 1, 1));
        w.settle();
        CHECK(receipts(alice, sim::ReceiptStatus::stored) == std::vector<std::uint32_t>{1});
        CHECK(numbers(bob.take(sim::FrameType::message)) == std::vector<std::uint32_t>{1});
        // An own list naming a device she does not have.
        alice.send(fanned("alice", 1, "bob", 2, 2, {1}, {2}));
        w.settle();
        CHECK(refusals(alice).size() == 1);
    }
    SUBCASE("server-assigned mode: an own list is bad_field; the recipient's devices are checked as in end to end") {
        World w;
        const auto bob = link_second_device(w, "bob");
        auto& alice = w.raw_login("alice", "bob");
        // Both of bob's attached devices got the conversation key (the router's deliver_to_user).
        CHECK(bob.first->take(sim::FrameType::keygen).size() == 1);
        CHECK(bob.second->take(sim::FrameType::keygen).size() == 1);
        CHECK(alice.take(sim::FrameType::keygen).size() == 1);
        auto own = fanned("alice", 1, "bob", 1, 1, {1, 2}, {2});
        own.payload[16] = static_cast<std::uint8_t>(sim::ConversationMode::server_assigned);
        alice.send(own);
        auto one = fanned("alice", 1, "bob", 1, 1, {1});
        one.payload[16] = static_cast<std::uint8_t>(sim::ConversationMode::server_assigned);
        alice.send(one);
        w.settle();
        const auto r = refusals(alice);
        REQUIRE(r.size() == 2);
        CHECK(std::get<1>(r[0]) == sim::Errc::bad_field);
        CHECK(std::get<1>(r[1]) == sim::Errc::devices_changed);
    }
}

// ---------------------------------------------------------------- presence (docs/protocol.md 6.10)

namespace {

const std::vector<sim::ChannelFeature> with_presence{sim::ChannelFeature::presence};

sim::Frame presence_set(const std::string& user, bool hidden) {
    sim::PresenceMessage m;
    m.op = sim::PresenceOp::set;
    m.hidden = hidden;
    return sim::Frame{sim::FrameType::presence, 0, user, {}, sim::encode_presence(m).value()};
}

sim::Frame presence_query(const std::string& user, const std::string& about) {
    sim::PresenceMessage m;
    m.op = sim::PresenceOp::query;
    return sim::Frame{sim::FrameType::presence, 0, user, about, sim::encode_presence(m).value()};
}

/// The presence entries `c` received (removed from its inbox), in order.
std::vector<sim::PresenceEntry> presence_seen(RawClient& c) {
    std::vector<sim::PresenceEntry> out;
    for (const auto& f : c.take(sim::FrameType::presence)) {
        CHECK(f.source == sim::server_name);
        const auto m = sim::decode_presence(f.payload).value();
        CHECK(m.op == sim::PresenceOp::status);
        out.insert(out.end(), m.entries.begin(), m.entries.end());
    }
    return out;
}

using Seen = std::vector<sim::PresenceEntry>;

/// A raw client of `user` that speaks presence, logged in with `set` sent right behind its init.
RawClient& presence_login(World& w, const std::string& user, bool hidden = false) {
    auto& c = w.connect_raw(with_presence);
    REQUIRE(c.features == with_presence);
    World::send_init(c, user, user + "-pw");
    c.send(presence_set(user, hidden));
    w.settle();
    REQUIRE(c.take(sim::FrameType::ack_init).size() == 1);
    c.take(sim::FrameType::limits);
    return c;
}

void named(World& w, RawClient& c, const std::string& from, const std::string& to) {
    c.send(sim::Frame{sim::FrameType::init, 0, from, to, sim::encode_credentials({sim::CredentialKind::none, {}})});
    w.settle();
}

}  // namespace

TEST_CASE("presence: contacts are told of each other's first device and last; hiding shows a user offline") {
    World w;
    auto& alice = presence_login(w, "alice");
    CHECK(presence_seen(alice) == Seen{});  // the snapshot: no contacts yet
    auto& bob = presence_login(w, "bob");
    CHECK(presence_seen(bob) == Seen{});

    // alice names bob: one-sided, nobody is told anything.
    named(w, alice, "alice", "bob");
    CHECK(presence_seen(alice).empty());
    CHECK(presence_seen(bob).empty());
    alice.send(presence_query("alice", "bob"));
    w.settle();
    CHECK(presence_seen(alice) == Seen{{"bob", false}});

    // bob names alice: contacts now, each told the other's state.
    named(w, bob, "bob", "alice");
    CHECK(presence_seen(alice) == Seen{{"bob", true}});
    CHECK(presence_seen(bob) == Seen{{"alice", true}});
    alice.send(presence_query("alice", "bob"));
    w.settle();
    CHECK(presence_seen(alice) == Seen{{"bob", true}});

    // Hiding: the contacts see bob go offline, and a query says offline too; showing again.
    bob.send(presence_set("bob", true));
    w.settle();
    CHECK(presence_seen(bob) == Seen{{"alice", true}});  // the snapshot that answers every `set`
    CHECK(presence_seen(alice) == Seen{{"bob", false}});
    alice.send(presence_query("alice", "bob"));
    w.settle();
    CHECK(presence_seen(alice) == Seen{{"bob", false}});
    bob.send(presence_set("bob", false));
    w.settle();
    CHECK(presence_seen(alice) == Seen{{"bob", true}});
    presence_seen(bob);

    // A newer connection of the device takes over: nothing changes for the contacts; when it leaves, bob is gone.
    auto& bob2 = presence_login(w, "bob");
    CHECK(bob.closed);
    CHECK(presence_seen(bob2) == Seen{{"alice", true}});
    CHECK(presence_seen(alice).empty());
    w.drop(bob2);
    CHECK(presence_seen(alice) == Seen{{"bob", false}});
    auto& bob3 = presence_login(w, "bob");
    CHECK(presence_seen(bob3) == Seen{{"alice", true}});
    CHECK(presence_seen(alice) == Seen{{"bob", true}});
    CHECK_FALSE(alice.closed);
}

TEST_CASE("presence: a stranger learns nothing, not by naming a user, not by asking") {
    World w;
    auto& alice = presence_login(w, "alice");
    auto& bob = presence_login(w, "bob");
    named(w, alice, "alice", "bob");
    named(w, bob, "bob", "alice");
    presence_seen(alice);
    presence_seen(bob);

    auto& trudy = presence_login(w, "trudy");
    named(w, trudy, "trudy", "alice");  // trudy names alice; alice never names trudy
    trudy.send(presence_query("trudy", "alice"));  // alice is online
    trudy.send(presence_query("trudy", "carol"));  // carol has no account
    w.settle();
    const auto seen = presence_seen(trudy);
    REQUIRE(seen.size() == 2);
    CHECK(seen[0] == sim::PresenceEntry{"alice", false});  // the same answer as for a user who is not there
    CHECK(seen[1] == sim::PresenceEntry{"carol", false});
    w.drop(alice);
    auto& alice2 = presence_login(w, "alice");
    CHECK(presence_seen(trudy).empty());  // alice coming and going is not told to trudy
    CHECK(presence_seen(alice2) == Seen{{"bob", true}});
    CHECK(presence_seen(alice).empty());  // the dropped connection got nothing more
}

TEST_CASE("presence: a user who logs in hidden is never shown online; clients that do not speak it get nothing") {
    World w;
    auto& alice = presence_login(w, "alice");
    auto& bob = presence_login(w, "bob");
    named(w, alice, "alice", "bob");
    named(w, bob, "bob", "alice");
    presence_seen(alice);
    w.drop(bob);
    CHECK(presence_seen(alice) == Seen{{"bob", false}});
    auto& hidden = presence_login(w, "bob", true);  // `set` hidden is behind the init: known before anyone is told
    CHECK(presence_seen(hidden) == Seen{{"alice", true}});
    CHECK(presence_seen(alice).empty());

    // A client that did not offer presence in its handshake: never sent a presence frame, and counts as online.
    auto& old = w.connect_raw();
    CHECK(old.features.empty());
    World::send_init(old, "carol", "carol-pw");
    w.settle();
    named(w, old, "carol", "alice");
    named(w, alice, "alice", "carol");
    CHECK(presence_seen(alice) == Seen{{"carol", true}});
    w.drop(old);
    CHECK(presence_seen(alice) == Seen{{"carol", false}});
    CHECK(old.take(sim::FrameType::presence).empty());

    // Sending one without having agreed on it closes the connection, as for a server that does not know the type.
    auto& rude = w.raw_login("dave");
    rude.send(presence_set("dave", false));
    w.settle();
    CHECK(rude.errors() == std::vector<sim::Errc>{sim::Errc::bad_field});
    CHECK(rude.closed);
    // A status from a client, a bad flag: protocol errors.
    auto& eve = presence_login(w, "eve");
    eve.send(sim::Frame{sim::FrameType::presence, 0, "eve", {}, sim::Bytes{2, 0, 0}});
    w.settle();
    CHECK(eve.errors() == std::vector<sim::Errc>{sim::Errc::bad_field});
    CHECK(eve.closed);
}

namespace {

/// The ack_init stages about `peer` that `c` received (removed from its inbox), in order.
std::vector<std::uint32_t> ack_stages(RawClient& c, const std::string& peer) {
    std::vector<std::uint32_t> out;
    for (const auto& f : c.take(sim::FrameType::ack_init)) {
        CHECK(f.payload == sim::to_bytes(sim::as_bytes(peer)));
        out.push_back(f.sid);
    }
    return out;
}

std::vector<std::uint32_t> probed(World& w, RawClient& c, const std::string& from, const std::string& to) {
    c.send(sim::Frame{sim::FrameType::probe, 0, from, to, {}});
    w.settle();
    return ack_stages(c, to);
}

constexpr auto online_stage = static_cast<std::uint32_t>(sim::AckStage::destination_online);
constexpr auto waiting_stage = static_cast<std::uint32_t>(sim::AckStage::destination_offline);

}  // namespace

TEST_CASE("presence: the seed's init and probe answer a hidden user as waiting (ack_init 3), a shown one online") {
    World w;  // server-assigned: an online destination is keyed at once, whatever the answer
    auto& bob = presence_login(w, "bob", true);
    auto& alice = presence_login(w, "alice");
    auto& trudy = presence_login(w, "trudy");
    bob.take(sim::FrameType::presence);

    // alice asks for bob, who is online but hides: "waiting", as for an offline bob; both are keyed all the same.
    named(w, alice, "alice", "bob");
    CHECK(ack_stages(alice, "bob") == std::vector<std::uint32_t>{waiting_stage});
    CHECK(alice.take(sim::FrameType::keygen).size() == 1);
    CHECK(bob.take(sim::FrameType::keygen).size() == 1);
    CHECK(probed(w, alice, "alice", "bob") == std::vector<std::uint32_t>{waiting_stage});
    CHECK(probed(w, trudy, "trudy", "bob") == std::vector<std::uint32_t>{waiting_stage});
    // A contact now (bob names alice back): hiding hides from contacts too.
    named(w, bob, "bob", "alice");
    CHECK(ack_stages(bob, "alice") == std::vector<std::uint32_t>{online_stage});
    CHECK(bob.take(sim::FrameType::keygen).empty());  // the pair's conversation is live: no second key
    CHECK(probed(w, alice, "alice", "bob") == std::vector<std::uint32_t>{waiting_stage});

    // bob shows: alice, still waiting for bob since her init, is told at once; probes answer "online" (the seed's
    // answer, to anyone who names a user who shows: docs/security.md).
    bob.send(presence_set("bob", false));
    w.settle();
    CHECK(ack_stages(alice, "bob") == std::vector<std::uint32_t>{online_stage});
    CHECK(probed(w, alice, "alice", "bob") == std::vector<std::uint32_t>{online_stage});
    CHECK(probed(w, trudy, "trudy", "bob") == std::vector<std::uint32_t>{online_stage});
    // Hiding again: "waiting" again.
    bob.send(presence_set("bob", true));
    w.settle();
    CHECK(probed(w, alice, "alice", "bob") == std::vector<std::uint32_t>{waiting_stage});
    CHECK(probed(w, trudy, "trudy", "bob") == std::vector<std::uint32_t>{waiting_stage});
    CHECK(alice.errors().empty());
    CHECK_FALSE(bob.closed);

    // dave hides; alice asks for him and waits. His last device leaves: the conversation ends (its close), and
    // alice no longer waits for him, so his next login, hidden, keys nothing and tells her nothing.
    auto& dave = presence_login(w, "dave", true);
    named(w, alice, "alice", "dave");
    CHECK(ack_stages(alice, "dave") == std::vector<std::uint32_t>{waiting_stage});
    CHECK(alice.take(sim::FrameType::keygen).size() == 1);
    w.drop(dave);
    CHECK(alice.take(sim::FrameType::close).size() == 1);
    auto& dave2 = presence_login(w, "dave", true);
    CHECK(alice.take(sim::FrameType::keygen).empty());
    CHECK(alice.take(sim::FrameType::ack_init).empty());
    CHECK(probed(w, alice, "alice", "dave") == std::vector<std::uint32_t>{waiting_stage});
    CHECK_FALSE(dave2.closed);

    // A client that does not speak presence counts from its login: alice, waiting for carol (no account yet), is
    // told at once, as in the seed.
    named(w, alice, "alice", "carol");
    CHECK(ack_stages(alice, "carol") == std::vector<std::uint32_t>{waiting_stage});
    auto& carol = w.raw_login("carol");
    CHECK(ack_stages(alice, "carol") == std::vector<std::uint32_t>{online_stage});
    CHECK(alice.take(sim::FrameType::keygen).size() == 1);
    CHECK(carol.take(sim::FrameType::keygen).size() == 1);
}

TEST_CASE("presence: a hidden user looks waiting in both modes and gets every message; a shown one looks online") {
    for (const auto mode : {sim::ConversationMode::server_assigned, sim::ConversationMode::end_to_end}) {
        CAPTURE(mode);
        const bool e2e = mode == sim::ConversationMode::end_to_end;
        auto w = e2e ? e2e_world() : World();
        sim::ClientConfig hidden;
        hidden.hide_presence = true;
        auto& bob = w.connect(hidden);
        REQUIRE(w.login(bob, "bob", "bob's password"));
        REQUIRE(bob.core->presence_supported());
        auto& carol = w.connect();
        REQUIRE(w.login(carol, "carol", "carol's password"));
        auto& alice = w.connect();
        REQUIRE(w.login(alice, "alice", "alice's password", "bob"));
        CHECK(alice.saw<sim::WaitingEvent>("bob"));
        CHECK_FALSE(alice.saw<sim::PeerOnlineEvent>("bob"));
        REQUIRE(alice.saw<sim::KeyAssignedEvent>("bob"));

        // Nothing is lost: both ways, at once.
        REQUIRE(alice.core->send("bob", "to a hidden bob"));
        w.settle();
        CHECK(bob.texts("alice") == std::vector<std::string>{"to a hidden bob"});
        REQUIRE(bob.core->send("alice", "from hiding"));
        w.settle();
        CHECK(alice.texts("bob") == std::vector<std::string>{"from hiding"});
        CHECK(alice.core->outbox_size() == 0);
        CHECK(bob.core->outbox_size() == 0);
        REQUIRE(alice.core->probe("bob"));
        w.settle();
        CHECK_FALSE(alice.saw<sim::PeerOnlineEvent>("bob"));

        // carol does not hide: the seed's answer, online at once.
        REQUIRE(alice.core->open("carol"));
        w.settle();
        CHECK(alice.saw<sim::PeerOnlineEvent>("carol"));
        CHECK_FALSE(alice.saw<sim::ErrorEvent>());
    }
}

TEST_CASE("presence: contacts survive a server restart (a new core on the same SQLite file)") {
    const auto dir = std::filesystem::temp_directory_path() /
                     ("sim-presence-" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    World w;
    // The world on a SQLite file, opened again (a new backend object) at each start.
    const auto close_all = [&] {
        for (auto& rc : w.raws) {
            w.drop(*rc.client);
        }
        w.raws.clear();
        w.server.reset();
        w.messages.reset();
        w.vault.reset();
        w.tokens.reset();
        w.authenticator.reset();
        w.backend.reset();
    };
    const auto on_file = [&] {
        close_all();
        w.backend = std::move(sim::store::open_sqlite_backend({(dir / "sim.db").string()}).value());
        w.authenticator = std::move(sim::auth::Authenticator::create(*w.backend, *w.hasher, *w.rng, w.clock).value());
        w.tokens = std::make_unique<sim::auth::SessionTokens>(*w.backend, *w.rng);
        w.vault =
            std::move(sim::auth::ConversationKeyVault::create(*w.backend, sim::SecureBytes(32, 0x11), *w.rng).value());
        w.messages = std::make_unique<CountingMessages>(*w.backend);
        w.start({});
    };
    on_file();
    {
        auto& alice = presence_login(w, "alice");
        auto& bob = presence_login(w, "bob");
        named(w, alice, "alice", "bob");
        named(w, bob, "bob", "alice");
        CHECK(presence_seen(alice) == Seen{{"bob", true}});
        presence_login(w, "carol");
        named(w, alice, "alice", "carol");  // one-sided: not a pair
    }
    on_file();  // the restart
    auto& alice = presence_login(w, "alice");
    CHECK(presence_seen(alice) == Seen{{"bob", false}});  // the snapshot names bob: a contact still
    auto& bob = presence_login(w, "bob");
    CHECK(presence_seen(bob) == Seen{{"alice", true}});
    CHECK(presence_seen(alice) == Seen{{"bob", true}});
    alice.send(presence_query("alice", "carol"));
    w.settle();
    CHECK(presence_seen(alice) == Seen{{"carol", false}});
    close_all();
    std::filesystem::remove_all(dir);
}

TEST_CASE("presence payloads (docs/protocol.md 6.10): round trips; truncated, oversized and bad fields are refused") {
    sim::PresenceMessage status;
    status.op = sim::PresenceOp::status;
    status.entries = {{"alice", true}, {"bob", false}};
    const auto wire = sim::encode_presence(status).value();
    CHECK(wire == sim::Bytes{2, 0, 2, 5, 'a', 'l', 'i', 'c', 'e', 1, 3, 'b', 'o', 'b', 0});
    CHECK(sim::decode_presence(wire).value() == status);
    for (std::size_t n = 0; n < wire.size(); ++n) {
        INFO(n);
        CHECK(sim::decode_presence(sim::ByteView(wire).first(n)).code() == sim::Errc::truncated);
    }
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_presence(longer).code() == sim::Errc::trailing_bytes);
    auto flag = wire;
    flag.back() = 2;
    CHECK(sim::decode_presence(flag).code() == sim::Errc::bad_field);
    auto control = wire;
    control[4] = 0x07;
    CHECK(sim::decode_presence(control).code() == sim::Errc::bad_field);
    CHECK(sim::decode_presence(sim::Bytes{2, 0, 1, 0, 1}).code() == sim::Errc::bad_field);  // empty name
    CHECK(sim::decode_presence(sim::Bytes{2, 1, 1}).code() == sim::Errc::bad_field);        // 257 entries
    CHECK(sim::decode_presence(sim::Bytes{9}).code() == sim::Errc::bad_field);              // unknown op
    CHECK(sim::decode_presence(sim::Bytes{1, 2}).code() == sim::Errc::bad_field);           // hidden flag 2
    CHECK(sim::decode_presence(sim::Bytes{1, 1}).value().hidden);
    CHECK(sim::decode_presence(sim::Bytes{3}).value().op == sim::PresenceOp::query);
    CHECK(sim::decode_presence(sim::Bytes{3, 0}).code() == sim::Errc::trailing_bytes);
    status.entries.assign(sim::max_presence_entries + 1, {"x", true});
    CHECK(sim::encode_presence(status).code() == sim::Errc::invalid_argument);
    status.entries.assign(sim::max_presence_entries, {std::string(sim::max_presence_name, 'x'), true});
    CHECK(sim::decode_presence(sim::encode_presence(status).value()).value() == status);
}

TEST_CASE("devices: a changed list reaches the attached devices of the account's contacts (op 5), not strangers") {
    auto w = e2e_world();
    publish(w, "bob", 3);
    auto bob = link_second_device(w, "bob");
    auto& alice = w.raw_login("alice");
    auto& carol = w.raw_login("carol");
    named(w, alice, "alice", "bob");
    named(w, *bob.first, "bob", "alice");
    named(w, carol, "carol", "bob");  // one-sided: not a contact
    alice.inbox.clear();
    carol.inbox.clear();
    bob.first->inbox.clear();
    DeviceSteps d{w};
    const auto removal = only_first_device("bob", bob, 2);
    d.devices(*bob.first, "bob", {sim::DevicesOp::put, removal, 0, {}});
    REQUIRE(d.last_error(*bob.first) == sim::Errc::ok);
    const auto told = d.last_devices(alice);
    CHECK(told.op == sim::DevicesOp::changed);
    CHECK(told.user == "bob");
    CHECK(told.signed_list == removal);
    CHECK(DeviceSteps::of(carol, sim::FrameType::devices).empty());
}

TEST_CASE("client in server-assigned mode: a message reaches both devices of the recipient; the sender learns them") {
    World w;  // the seed's server-assigned mode
    States states;
    auto& laptop = connect_on(w, states.add());
    REQUIRE(w.login(laptop, "bob", "bob's password"));
    auto& phone = link_new_device(w, laptop, "bob", states.add());

    auto& alice = w.connect();
    REQUIRE(w.login(alice, "alice", "alice's password", "bob"));  // both of bob's devices get the key too
    CHECK(laptop.saw<sim::KeyAssignedEvent>("alice"));
    CHECK(phone.saw<sim::KeyAssignedEvent>("alice"));
    REQUIRE(alice.core->send("bob", "to both"));
    w.settle();
    // The first try named device 1 only: refused, with bob's list; a second later it goes to both.
    CHECK(laptop.texts("alice").empty());
    CHECK(alice.core->outbox_size() == 1);
    CHECK_FALSE(alice.saw<sim::ErrorEvent>());
    w.clock.advance(std::chrono::seconds(1));
    alice.core->pump();
    w.settle();
    CHECK(laptop.texts("alice") == std::vector<std::string>{"to both"});
    CHECK(phone.texts("alice") == std::vector<std::string>{"to both"});
    REQUIRE(alice.core->send("bob", "and again"));
    w.settle();
    CHECK(phone.texts("alice") == std::vector<std::string>{"to both", "and again"});  // no refusal this time
    // bob's phone answers: its messages name device 2 as their sender.
    REQUIRE(phone.core->send("alice", "from the phone"));
    w.settle();
    const auto got = alice.of<sim::MessageEvent>("bob");
    REQUIRE(got.size() == 1);
    CHECK(got[0].text == "from the phone");
    CHECK(got[0].sender_device == sim::DeviceId{2});
}

TEST_CASE("client end to end with two devices per user: every message on every device; a removed device gets no more") {
    auto w = e2e_world();
    // Each account: a laptop (device 1, registers) and a phone linked with the laptop's approval.
    States states;
    struct Account {
        TestClient* laptop = nullptr;
        TestClient* phone = nullptr;
    };
    const auto account = [&](const std::string& user) {
        Account a;
        a.laptop = &connect_on(w, states.add());
        REQUIRE(w.login(*a.laptop, user, user + "'s password"));
        a.phone = &link_new_device(w, *a.laptop, user, states.add());
        return a;
    };
    auto alice = account("alice");
    auto bob = account("bob");
    const auto no_errors = [&] {
        for (auto* c : {alice.laptop, alice.phone, bob.laptop, bob.phone}) {
            for (const auto& e : c->of<sim::ErrorEvent>()) {
                FAIL_CHECK("error event: " << e.error.message());
            }
        }
    };
    // A refusal for a changed list is answered a second later (the lists come with it, keys are asked for).
    const auto deliver = [&] {
        w.settle();
        w.clock.advance(std::chrono::seconds(2));
        for (auto* c : {alice.laptop, alice.phone, bob.laptop, bob.phone}) {
            c->core->pump();
        }
        w.settle();
    };
    // The texts shown in the conversation with `peer`: ours (own copies from our other devices) or the peer's.
    const auto shown = [](TestClient& c, const std::string& peer, bool from_me) {
        std::vector<std::string> out;
        for (const auto& m : c.of<sim::MessageEvent>(peer)) {
            if (m.from_me == from_me) {
                out.push_back(m.text);
            }
        }
        return out;
    };
    const auto mine = [&](TestClient& c, const std::string& peer) { return shown(c, peer, true); };
    const auto theirs = [&](TestClient& c, const std::string& peer) { return shown(c, peer, false); };

    // alice's laptop writes to bob: both of bob's devices show it, and alice's phone shows it as hers.
    REQUIRE(alice.laptop->core->send("bob", "hello both"));
    deliver();
    CHECK(theirs(*bob.laptop, "alice") == std::vector<std::string>{"hello both"});
    CHECK(theirs(*bob.phone, "alice") == std::vector<std::string>{"hello both"});
    CHECK(mine(*alice.phone, "bob") == std::vector<std::string>{"hello both"});
    CHECK(alice.laptop->core->outbox_size() == 0);
    no_errors();
    // Safety numbers are over the account keys: the same whichever device of bob alice's devices talk to.
    CHECK(alice.laptop->core->peer_identity("bob").value().safety_number ==
          bob.phone->core->peer_identity("alice").value().safety_number);

    // bob's phone answers: both of alice's devices show it, bob's laptop shows it as bob's, from device 2.
    REQUIRE(bob.phone->core->send("alice", "hi from the phone"));
    deliver();
    const auto at_laptop = alice.laptop->of<sim::MessageEvent>("bob");
    REQUIRE(at_laptop.size() == 1);
    CHECK(at_laptop[0].text == "hi from the phone");
    CHECK(at_laptop[0].sender_device == sim::DeviceId{2});
    CHECK_FALSE(at_laptop[0].from_me);
    CHECK(theirs(*alice.phone, "bob") == std::vector<std::string>{"hi from the phone"});
    CHECK(mine(*bob.laptop, "alice") == std::vector<std::string>{"hi from the phone"});
    const auto inbox = bob.laptop->core->inbox(0, 10, "alice").value();
    REQUIRE(inbox.size() == 2);
    CHECK(inbox[1].from_me);
    CHECK(inbox[1].sender_device == sim::DeviceId{2});
    no_errors();

    // A conversation goes on in both directions (ratchets step on every device pair).
    for (int i = 0; i < 3; ++i) {
        REQUIRE(alice.phone->core->send("bob", "ping " + std::to_string(i)));
        REQUIRE(bob.laptop->core->send("alice", "pong " + std::to_string(i)));
        deliver();
    }
    CHECK(theirs(*bob.phone, "alice").size() == 4);
    CHECK(theirs(*alice.laptop, "bob").size() == 4);
    CHECK(mine(*alice.laptop, "bob").size() == 3);
    CHECK(mine(*bob.phone, "alice").size() == 3);
    CHECK_FALSE(bob.phone->saw<sim::GapEvent>());
    no_errors();

    // bob removes his phone: alice's next message is refused once (bob's list changed), sealed again for bob's
    // laptop alone and delivered; the phone, closed, gets nothing more.
    REQUIRE(bob.laptop->core->remove_device(2));
    w.settle();
    REQUIRE(alice.laptop->core->send("bob", "only the laptop"));
    deliver();
    CHECK(theirs(*bob.laptop, "alice").back() == "only the laptop");
    CHECK(theirs(*bob.phone, "alice").size() == 4);
    CHECK(alice.laptop->core->outbox_size() == 0);
    CHECK(mine(*alice.phone, "bob").back() == "only the laptop");
    for (auto* c : {alice.laptop, alice.phone, bob.laptop}) {
        for (const auto& e : c->of<sim::ErrorEvent>()) {
            FAIL_CHECK("error event: " << e.error.message());
        }
    }
}

TEST_CASE("devices end to end: a device the server adds to a list on its own is refused by the peers; nothing reaches it") {
    auto w = e2e_world();
    States states;
    auto& laptop_state = states.add();
    auto& laptop = connect_on(w, laptop_state);
    REQUIRE(w.login(laptop, "bob", "bob's password"));
    auto& phone_state = states.add();
    auto& phone = link_new_device(w, laptop, "bob", phone_state);
    auto& alice = connect_on(w, states.add());
    REQUIRE(w.login(alice, "alice", "alice's password"));
    const auto deliver = [&] {
        w.settle();
        w.clock.advance(std::chrono::seconds(2));
        alice.core->pump();
        w.settle();
    };
    REQUIRE(alice.core->send("bob", "first"));
    deliver();
    REQUIRE(phone.texts("alice") == std::vector<std::string>{"first"});

    // The server (its store) gives bob a device 3 of its own: active with a key and prekeys, and a list naming it,
    // issued by bob's phone (as if the server had that device's key too) but not signed by bob's account key.
    const auto fake = sim::e2e::generate_identity(*w.rng);
    const auto now = sim::store::WallTime{std::chrono::milliseconds{1'800'000'000'000}};
    REQUIRE(w.backend->add_device("bob", "", now, now, 8).value() == sim::DeviceId{3});
    REQUIRE(w.backend->activate_device("bob", 3, fake.public_key, now));
    const auto spk = sim::e2e::generate_signed_prekey(fake, 1, *w.rng);
    sim::PrekeyUpload up;
    up.replace = true;
    up.identity_key = fake.public_key;
    up.signed_prekey_id = spk.id;
    up.signed_prekey = spk.public_key;
    up.signed_prekey_signature = spk.signature;
    for (std::uint32_t i = 2; i < 6; ++i) {
        up.one_time_prekeys.emplace_back(i, sim::e2e::generate_one_time_prekey(i, *w.rng).public_key);
    }
    REQUIRE(w.backend->set_prekeys("bob", 3, up));
    const auto stored = w.backend->find_device_list("bob").value().value();
    const sim::e2e::DeviceList forged{
        "bob", stored.version + 1, 2,
        {{1, device_key_in(laptop_state).public_key}, {2, device_key_in(phone_state).public_key}, {3, fake.public_key}}};
    const auto forged_bytes =
        sim::e2e::encode_signed_device_list(sim::e2e::sign_device_list(forged, fake, device_key_in(phone_state)).value()).value();
    REQUIRE(w.backend->put_device_list("bob", {forged.version, forged_bytes}));
    // bob goes offline, and the server's cache of his devices expires: from now on it serves what its store says.
    laptop.pipe->close_now();
    phone.pipe->close_now();
    w.settle();
    w.clock.advance(std::chrono::seconds(31));

    // alice's next message must cover device 3, says the server; alice refuses the list that names it, and the
    // message waits (nothing is sealed for the server's device, and nothing reaches bob's real ones either).
    alice.events.clear();
    REQUIRE(alice.core->send("bob", "second"));
    deliver();
    const auto errors = alice.of<sim::ErrorEvent>("bob");
    REQUIRE_FALSE(errors.empty());
    CHECK(errors[0].error.code == sim::Errc::auth_failed);
    CHECK(errors[0].error.detail.find("device list of bob was refused") != std::string::npos);
    CHECK(alice.core->outbox_size() == 1);
    CHECK_FALSE(alice.saw<sim::ReceiptEvent>("bob"));  // not stored for anyone

    // carol, who never talked to bob, gets the forged list in her KEYGEN (with bob's real account key): refused,
    // no session with any of bob's devices, her message waits.
    auto& carol = connect_on(w, states.add());
    REQUIRE(w.login(carol, "carol", "carol's password"));
    REQUIRE(carol.core->send("bob", "hi bob"));
    w.settle();
    const auto carol_errors = carol.of<sim::ErrorEvent>("bob");
    REQUIRE_FALSE(carol_errors.empty());
    CHECK(carol_errors[0].error.detail.find("device list of bob was refused") != std::string::npos);
    CHECK_FALSE(carol.saw<sim::KeyAssignedEvent>("bob"));
    CHECK(carol.core->outbox_size() == 1);
}

TEST_CASE("devices end to end: devices linked after a conversation began get the next messages and count from there") {
    auto w = e2e_world();
    States states;
    auto& alice = connect_on(w, states.add());
    REQUIRE(w.login(alice, "alice", "alice's password"));
    auto& bob = connect_on(w, states.add());
    REQUIRE(w.login(bob, "bob", "bob's password"));
    const auto deliver = [&] {
        for (int i = 0; i < 3; ++i) {
            w.settle();
            w.clock.advance(std::chrono::seconds(2));
            for (auto& c : w.clients) {
                c->core->pump();
            }
        }
        w.settle();
    };
    REQUIRE(alice.core->send("bob", "before"));
    deliver();
    REQUIRE(bob.core->send("alice", "before too"));
    deliver();
    REQUIRE(bob.texts("alice") == std::vector<std::string>{"before"});
    auto& phone_state = states.add();
    auto& phone = link_new_device(w, bob, "bob", phone_state);
    auto& tablet = link_new_device(w, alice, "alice", states.add());
    REQUIRE(alice.core->send("bob", "after"));
    deliver();
    CHECK(bob.texts("alice") == std::vector<std::string>{"before", "after"});
    CHECK(phone.texts("alice") == std::vector<std::string>{"after"});
    const auto copies = tablet.of<sim::MessageEvent>("bob");
    REQUIRE(copies.size() == 1);
    CHECK(copies[0].from_me);
    CHECK(alice.core->outbox_size() == 0);
    CHECK_FALSE(bob.saw<sim::GapEvent>());
    CHECK_FALSE(phone.saw<sim::GapEvent>());  // it counts from the first message it got, not from 1
    // A message the server keeps from the phone (its copy deleted while the phone is away, as a server that
    // withholds the device would do) is a gap there when the next one comes.
    phone.pipe->close_now();
    w.settle();
    REQUIRE(alice.core->send("bob", "kept from the phone"));
    deliver();
    const auto stored = w.backend->pending("bob", 2, 0, 100).value();
    REQUIRE(stored.size() == 1);
    REQUIRE(w.backend->apply({{}, {{"bob", 2, "alice", {stored[0].id}}}}));
    REQUIRE(alice.core->send("bob", "the next one"));
    deliver();
    auto& phone_again = connect_on(w, phone_state);
    REQUIRE(w.login(phone_again, "bob", "bob's password"));
    deliver();
    CHECK(phone_again.texts("alice") == std::vector<std::string>{"the next one"});
    const auto gaps = phone_again.of<sim::GapEvent>("alice");
    REQUIRE(gaps.size() == 1);
    CHECK(gaps[0].count == 1);
    for (auto& c : w.clients) {
        for (const auto& e : c->of<sim::ErrorEvent>()) {
            FAIL_CHECK("error event: " << e.error.message());
        }
    }
}

TEST_CASE("client in server-assigned mode: a device linked after its user's conversation was keyed gets the key") {
    World w;  // the seed's server-assigned mode
    States states;
    auto& laptop = connect_on(w, states.add());
    REQUIRE(w.login(laptop, "bob", "bob's password"));
    auto& alice = w.connect();
    REQUIRE(w.login(alice, "alice", "alice's password", "bob"));
    REQUIRE(alice.core->send("bob", "early"));
    w.settle();
    REQUIRE(laptop.texts("alice") == std::vector<std::string>{"early"});
    // The phone attaches while the laptop holds the conversation: it gets the key, from the vault, alone (the
    // laptop is not keyed again).
    const auto laptop_keys = laptop.of<sim::KeyAssignedEvent>("alice").size();
    auto& phone = link_new_device(w, laptop, "bob", states.add());
    CHECK(phone.saw<sim::KeyAssignedEvent>("alice"));
    CHECK(laptop.of<sim::KeyAssignedEvent>("alice").size() == laptop_keys);
    REQUIRE(alice.core->send("bob", "late"));
    w.settle();
    w.clock.advance(std::chrono::seconds(2));
    alice.core->pump();
    w.settle();
    CHECK(phone.texts("alice") == std::vector<std::string>{"late"});
    CHECK(laptop.texts("alice") == std::vector<std::string>{"early", "late"});
    CHECK_FALSE(phone.saw<sim::ErrorEvent>());
}
