// libsim's channel handshake: suites, pinning, MITM refusal, tampering and malformed input at every step.
#include <sim/channel.h>
#include <sim/crypto.h>
#include <sim/handshake.h>

#include <doctest/doctest.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

using namespace sim;

namespace {

constexpr std::size_t offer_offset = 1 + 32 + 2;  // id byte, e, version, count: first suite byte of msg1

const HandshakeProtocol all_protocols[] = {HandshakeProtocol::noise_xx_25519_chachapoly_sha256,
                                           HandshakeProtocol::noise_xx_25519_aesgcm_sha256};
const SuiteId all_suites[] = {SuiteId::tdes_cbc_hmac_sha256, SuiteId::aes256_gcm, SuiteId::chacha20_poly1305};

SuitePolicy only(SuiteId id) {
    const SuiteId list[] = {id};
    auto p = SuitePolicy::from_list(list);
    REQUIRE(p.has_value());
    return *p;
}

Bytes public_of(const SecureBytes& priv) {
    auto pair = crypto::x25519_from_private(priv);
    REQUIRE(pair.has_value());
    return pair->public_key;
}

struct Env {
    std::unique_ptr<Rng> rng;
    ManualClock clock;
    MemoryKnownServers known;
    SecureBytes server_key;

    explicit Env(std::string_view seed) : rng(make_deterministic_rng(as_bytes(seed))) {
        server_key = crypto::x25519_generate(*rng).private_key;
    }

    ClientHandshakeConfig client_config() const {
        ClientHandshakeConfig c;
        c.server_id = "example.org:7000";
        return c;
    }
    ServerHandshakeConfig server_config(const SecureBytes& key) const {
        ServerHandshakeConfig s;
        s.static_private_key = key;
        return s;
    }
    ClientHandshake client(ClientHandshakeConfig c) {
        auto h = ClientHandshake::create(std::move(c), known, *rng, clock);
        REQUIRE(h.has_value());
        return std::move(*h);
    }
    ClientHandshake client() { return client(client_config()); }
    ServerHandshake server(ServerHandshakeConfig s) {
        auto h = ServerHandshake::create(std::move(s), *rng, clock);
        REQUIRE(h.has_value());
        return std::move(*h);
    }
    ServerHandshake server() { return server(server_config(server_key)); }
};

struct Run {
    std::vector<Bytes> messages;  // as sent (before tampering)
    std::optional<ChannelEstablished> client;
    std::optional<ChannelEstablished> server;
    Errc client_error = Errc::ok;
    Errc server_error = Errc::ok;
    bool asked = false;
};

using Tamper = std::function<void(std::size_t index, Bytes& message)>;

/// Drive both sides by their next_action() until neither can move; messages pass through `tamper`.
Run drive(ClientHandshake& c, ServerHandshake& s, const Tamper& tamper = {}, std::optional<bool> trust = {}) {
    Run run;
    for (int guard = 0; guard < 10; ++guard) {
        if (c.next_action() == ChannelAction::write_message) {
            auto m = c.write_message();
            REQUIRE(m.has_value());
            run.messages.push_back(*m);
            if (tamper) {
                tamper(run.messages.size() - 1, *m);
            }
            if (s.next_action() == ChannelAction::read_message) {
                (void)s.read_message(*m);
            }
        } else if (s.next_action() == ChannelAction::write_message) {
            auto m = s.write_message();
            REQUIRE(m.has_value());
            run.messages.push_back(*m);
            if (tamper) {
                tamper(run.messages.size() - 1, *m);
            }
            if (c.next_action() == ChannelAction::read_message) {
                (void)c.read_message(*m);
            }
        } else if (c.next_action() == ChannelAction::awaiting_trust && trust.has_value()) {
            run.asked = true;
            (void)c.trust(*trust);
        } else {
            break;
        }
    }
    if (c.next_action() == ChannelAction::complete) {
        auto r = c.finish();
        REQUIRE(r.has_value());
        run.client.emplace(std::move(*r));
    }
    if (s.next_action() == ChannelAction::complete) {
        auto r = s.finish();
        REQUIRE(r.has_value());
        run.server.emplace(std::move(*r));
    }
    run.client_error = c.failure().code;
    run.server_error = s.failure().code;
    return run;
}

/// One message each way through the sessions, and a record in the wrong direction is refused.
void check_sessions(ChannelEstablished& client, ChannelEstablished& server) {
    auto r1 = client.send.seal(as_bytes("hello server"));
    REQUIRE(r1.has_value());
    auto p1 = server.recv.open(*r1);
    REQUIRE(p1.has_value());
    CHECK(to_string(*p1) == "hello server");
    auto r2 = server.send.seal(as_bytes("hello client"));
    REQUIRE(r2.has_value());
    auto p2 = client.recv.open(*r2);
    REQUIRE(p2.has_value());
    CHECK(to_string(*p2) == "hello client");
    // The client's own record does not open under the key of the other direction.
    auto r3 = client.send.seal(as_bytes("reflected"));
    REQUIRE(r3.has_value());
    CHECK_FALSE(client.recv.open(*r3).has_value());
}

void check_client_dead(ClientHandshake& c) {
    CHECK(c.next_action() == ChannelAction::failed);
    CHECK(c.failure().code != Errc::ok);
    CHECK(c.write_message().code() == Errc::invalid_state);
    CHECK(c.read_message(Bytes(80, 1)).code() == Errc::invalid_state);
    CHECK(c.finish().code() == Errc::invalid_state);
}

void check_server_dead(ServerHandshake& s) {
    CHECK(s.next_action() == ChannelAction::failed);
    CHECK(s.failure().code != Errc::ok);
    CHECK(s.write_message().code() == Errc::invalid_state);
    CHECK(s.read_message(Bytes(80, 1)).code() == Errc::invalid_state);
    CHECK(s.finish().code() == Errc::invalid_state);
}

/// A raw Noise peer speaking the channel's outer format, for crafting messages the real objects never send.
struct RawPeer {
    noise::HandshakeState hs;
    std::uint8_t id;

    static RawPeer make(noise::Role role, Rng& rng, std::optional<SecureBytes> key = {},
                        HandshakeProtocol proto = HandshakeProtocol::noise_xx_25519_chachapoly_sha256) {
        noise::HandshakeConfig cfg;
        cfg.pattern = noise::Pattern::XX;
        cfg.cipher = proto == HandshakeProtocol::noise_xx_25519_aesgcm_sha256 ? noise::Cipher::aes_gcm
                                                                              : noise::Cipher::chacha_poly;
        cfg.role = role;
        const ByteView pro = as_bytes(channel_prologue);
        cfg.prologue.assign(pro.begin(), pro.end());
        cfg.local_static_private = key ? *key : crypto::x25519_generate(rng).private_key;
        auto hs = noise::HandshakeState::create(cfg, rng);
        REQUIRE(hs.has_value());
        return RawPeer{std::move(*hs), static_cast<std::uint8_t>(proto)};
    }
    Bytes write(ByteView payload) {
        auto m = hs.write_message(payload);
        REQUIRE(m.has_value());
        Bytes out(1 + m->size());
        out[0] = id;
        std::copy(m->begin(), m->end(), out.begin() + 1);
        return out;
    }
    Result<Bytes> read(ByteView message) { return hs.read_message(message.subspan(1)); }
};

Bytes flip(Bytes m, std::size_t pos) {
    m.at(pos) ^= 0x01;
    return m;
}

}  // namespace

TEST_CASE("fingerprint format") {
    const Bytes key(32, 0);
    const std::string fp = fingerprint(key);
    // SHA-256 of 32 zero bytes is 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925.
    CHECK(fp == "6668 7aad f862 bd77 6c8f c18b 8e9f 8e20 0897 1485 6ee2 33b3 902a 591d 0d5f 2925");
    CHECK(fp.size() == 64 + 15);
    CHECK(fingerprint(Bytes(32, 1)) != fp);
}

TEST_CASE("full handshake with every protocol and suite; a message each way") {
    for (const auto proto : all_protocols) {
        for (const auto suite : all_suites) {
            INFO(handshake_protocol_name(proto) << " / " << suite_name(suite));
            Env env("channel full");
            auto cc = env.client_config();
            cc.protocol = proto;
            auto c = env.client(std::move(cc));
            auto sc = env.server_config(env.server_key);
            sc.suites = only(suite);
            auto s = env.server(std::move(sc));
            auto run = drive(c, s);
            REQUIRE(run.client.has_value());
            REQUIRE(run.server.has_value());
            CHECK(run.messages.size() == 3);
            CHECK(run.messages[0][0] == static_cast<std::uint8_t>(proto));
            CHECK(run.client->suite == suite);
            CHECK(run.server->suite == suite);
            CHECK(run.client->protocol == proto);
            CHECK(run.server->protocol == proto);
            CHECK(run.client->handshake_hash.size() == 32);
            CHECK(run.client->handshake_hash == run.server->handshake_hash);
            CHECK(run.client->peer_static == public_of(env.server_key));
            CHECK(run.server->peer_static.size() == 32);
            CHECK(run.client->server_fingerprint == fingerprint(public_of(env.server_key)));
            CHECK(run.server->server_fingerprint == run.client->server_fingerprint);
            CHECK(run.client->send.status().suite == suite);
            CHECK(run.server->recv.status().suite == suite);
            // TOFU pinned the key.
            CHECK(env.known.lookup("example.org:7000") == public_of(env.server_key));
            check_sessions(*run.client, *run.server);
            // After finish(), nothing more.
            CHECK(c.next_action() == ChannelAction::complete);
            CHECK(c.finish().code() == Errc::invalid_state);
        }
    }
}

TEST_CASE("session keys follow the documented derivation") {
    // A raw Noise responder plays the server; the test derives key_i2r itself and opens the client's record.
    Env env("channel derivation");
    auto c = env.client();
    RawPeer server = RawPeer::make(noise::Role::responder, *env.rng, env.server_key);
    auto m1 = c.write_message();
    REQUIRE(m1.has_value());
    REQUIRE(server.read(*m1).has_value());
    const Bytes hello{1, static_cast<std::uint8_t>(SuiteId::chacha20_poly1305)};
    REQUIRE(c.read_message(server.write(hello)).has_value());
    auto m3 = c.write_message();
    REQUIRE(m3.has_value());
    auto p3 = server.read(*m3);
    REQUIRE(p3.has_value());
    CHECK(p3->empty());
    auto est = c.finish();
    REQUIRE(est.has_value());
    const Bytes h(server.hs.handshake_hash().begin(), server.hs.handshake_hash().end());
    CHECK(est->handshake_hash == h);
    auto split = server.hs.split();
    REQUIRE(split.has_value());
    Bytes info_i2r(as_bytes("libsim v1 record i2r").begin(), as_bytes("libsim v1 record i2r").end());
    info_i2r.push_back(3);
    Bytes info_r2i(as_bytes("libsim v1 record r2i").begin(), as_bytes("libsim v1 record r2i").end());
    info_r2i.push_back(3);
    auto k_i2r = crypto::hkdf_sha256(h, split->initiator_to_responder.key(), info_i2r, 32);
    auto k_r2i = crypto::hkdf_sha256(h, split->responder_to_initiator.key(), info_r2i, 32);
    REQUIRE(k_i2r.has_value());
    REQUIRE(k_r2i.has_value());
    auto cfg = default_channel_session_config();
    cfg.suite = SuiteId::chacha20_poly1305;
    auto recv = RecvSession::create(cfg, *k_i2r, *env.rng, env.clock);
    auto send = SendSession::create(cfg, *k_r2i, *env.rng, env.clock);
    REQUIRE(recv.has_value());
    REQUIRE(send.has_value());
    auto rec = est->send.seal(as_bytes("derived"));
    REQUIRE(rec.has_value());
    auto pt = recv->open(*rec);
    REQUIRE(pt.has_value());
    CHECK(to_string(*pt) == "derived");
    auto back = send->seal(as_bytes("back"));
    REQUIRE(back.has_value());
    auto pt2 = est->recv.open(*back);
    REQUIRE(pt2.has_value());
    CHECK(to_string(*pt2) == "back");
}

TEST_CASE("suite negotiation") {
    SUBCASE("server requires TDES, client default: TDES") {
        Env env("neg tdes");
        auto sc = env.server_config(env.server_key);
        sc.suites = SuitePolicy::require_tdes();
        auto c = env.client();
        auto s = env.server(std::move(sc));
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
        REQUIRE(run.server.has_value());
        CHECK(run.client->suite == SuiteId::tdes_cbc_hmac_sha256);
        check_sessions(*run.client, *run.server);
    }
    SUBCASE("the server's preference wins among offered suites") {
        Env env("neg pref");
        auto cc = env.client_config();
        const SuiteId client_pref[] = {SuiteId::chacha20_poly1305, SuiteId::aes256_gcm};
        cc.suites = *SuitePolicy::from_list(client_pref);
        auto c = env.client(std::move(cc));
        auto s = env.server();  // default: AES-256-GCM first
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
        CHECK(run.client->suite == SuiteId::aes256_gcm);
        CHECK(run.messages[0][offer_offset] == static_cast<std::uint8_t>(SuiteId::chacha20_poly1305));
    }
    SUBCASE("disjoint policies: no_common_suite on both sides") {
        Env env("neg disjoint");
        auto cc = env.client_config();
        cc.suites = SuitePolicy::forbid_tdes();
        auto sc = env.server_config(env.server_key);
        sc.suites = SuitePolicy::require_tdes();
        auto c = env.client(std::move(cc));
        auto s = env.server(std::move(sc));
        auto run = drive(c, s);
        CHECK_FALSE(run.client.has_value());
        CHECK_FALSE(run.server.has_value());
        CHECK(run.messages.size() == 2);  // msg1 and the refusal; no msg3
        CHECK(run.server_error == Errc::no_common_suite);
        CHECK(run.client_error == Errc::no_common_suite);
        check_client_dead(c);
        check_server_dead(s);
    }
    SUBCASE("server accepts only one handshake protocol") {
        Env env("neg proto");
        auto cc = env.client_config();
        cc.protocol = HandshakeProtocol::noise_xx_25519_aesgcm_sha256;
        auto sc = env.server_config(env.server_key);
        sc.protocols = {HandshakeProtocol::noise_xx_25519_chachapoly_sha256};
        auto c = env.client(std::move(cc));
        auto s = env.server(std::move(sc));
        auto run = drive(c, s);
        CHECK(run.server_error == Errc::suite_not_allowed);
        check_server_dead(s);
    }
}

TEST_CASE("tampering with the offer in flight makes the client's read of msg2 fail") {
    for (std::size_t pos = offer_offset - 2; pos < offer_offset + 3; ++pos) {
        INFO("msg1 byte " << pos);
        Env env("tamper offer");
        auto c = env.client();
        auto s = env.server();
        // Replace the suite byte by another valid suite (or the version/count by something the server accepts
        // where possible): the server reads it, but the transcripts differ.
        auto run = drive(c, s, [&](std::size_t i, Bytes& m) {
            if (i == 0) {
                if (pos >= offer_offset) {
                    m[pos] = m[pos] == 1 ? 3 : 1;  // another valid suite id
                } else {
                    m[pos] ^= 0x01;
                }
            }
        });
        CHECK_FALSE(run.client.has_value());
        CHECK_FALSE(run.server.has_value());
        if (pos >= offer_offset) {
            // The server accepted the altered offer and answered; the client refuses that answer and sends no msg3.
            CHECK(run.server_error == Errc::ok);
            CHECK(run.client_error == Errc::auth_failed);
            CHECK(run.messages.size() == 2);
            check_client_dead(c);
        } else {
            // A changed version or count no longer parses: the server refuses msg1.
            CHECK(run.server_error != Errc::ok);
            check_server_dead(s);
        }
    }
}

TEST_CASE("tampered protocol ids are refused") {
    Env env("tamper id");
    {
        // msg1 claims AESGCM: the server follows it, and the client sees a different id in msg2.
        auto c = env.client();
        auto s = env.server();
        auto run = drive(c, s, [](std::size_t i, Bytes& m) {
            if (i == 0) {
                m[0] = 2;
            }
        });
        CHECK(run.client_error == Errc::bad_field);
        CHECK(run.messages.size() == 2);
    }
    {
        // Both msg1 and msg2 ids rewritten: the protocol name is in the transcript, so the tag fails.
        auto c = env.client();
        auto s = env.server();
        auto run = drive(c, s, [](std::size_t i, Bytes& m) {
            if (i == 0) {
                m[0] = 2;
            } else if (i == 1) {
                m[0] = 1;
            }
        });
        CHECK(run.client_error == Errc::auth_failed);
    }
    {
        auto c = env.client();
        auto s = env.server();
        auto run = drive(c, s, [](std::size_t i, Bytes& m) {
            if (i == 2) {
                m[0] = 2;
            }
        });
        CHECK(run.server_error == Errc::bad_field);
        CHECK_FALSE(run.server.has_value());
    }
}

TEST_CASE("a man in the middle with its own key is refused once the server is pinned") {
    Env env("mitm");
    {
        auto c = env.client();
        auto s = env.server();
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
    }
    const Bytes pinned = *env.known.lookup("example.org:7000");

    SUBCASE("MITM answers with its own static key") {
        const SecureBytes mitm_key = crypto::x25519_generate(*env.rng).private_key;
        auto c = env.client();
        auto mitm = env.server(env.server_config(mitm_key));
        auto m1 = c.write_message();
        REQUIRE(m1.has_value());
        REQUIRE(mitm.read_message(*m1).has_value());
        auto m2 = mitm.write_message();
        REQUIRE(m2.has_value());
        const auto st = c.read_message(*m2);
        CHECK(st.code() == Errc::server_key_mismatch);
        // The client sends nothing more: no msg3 can be produced.
        CHECK(c.next_action() == ChannelAction::failed);
        CHECK(c.write_message().code() == Errc::invalid_state);
        CHECK(c.server_fingerprint().empty());
        check_client_dead(c);
        CHECK(*env.known.lookup("example.org:7000") == pinned);
    }
    SUBCASE("MITM relays to the real server, swapping in its own ephemeral key") {
        auto c = env.client();
        auto s = env.server();
        const auto mitm_e = crypto::x25519_generate(*env.rng);
        auto run = drive(c, s, [&](std::size_t i, Bytes& m) {
            if (i == 0) {
                std::copy(mitm_e.public_key.begin(), mitm_e.public_key.end(), m.begin() + 1);
            }
        });
        CHECK(run.client_error == Errc::auth_failed);
        CHECK(run.messages.size() == 2);
        CHECK_FALSE(run.server.has_value());
    }
    SUBCASE("the server's key changed") {
        const SecureBytes new_key = crypto::x25519_generate(*env.rng).private_key;
        auto cc = env.client_config();
        cc.trust = TrustMode::ask;  // even a mode that would ask refuses outright: the pin differs
        auto c = env.client(std::move(cc));
        auto s = env.server(env.server_config(new_key));
        auto run = drive(c, s, {}, true);
        CHECK_FALSE(run.asked);
        CHECK(run.client_error == Errc::server_key_mismatch);
        CHECK(run.messages.size() == 2);
        CHECK(*env.known.lookup("example.org:7000") == pinned);
    }
}

TEST_CASE("trust modes for an unknown server") {
    SUBCASE("pinned_only refuses an unknown key and sends no msg3") {
        Env env("pinned only");
        auto cc = env.client_config();
        cc.trust = TrustMode::pinned_only;
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto run = drive(c, s);
        CHECK(run.client_error == Errc::server_key_unknown);
        CHECK(run.messages.size() == 2);
        CHECK(env.known.size() == 0);
        check_client_dead(c);
    }
    SUBCASE("pinned_only accepts a pinned key") {
        Env env("pinned only known");
        REQUIRE(env.known.remember("example.org:7000", public_of(env.server_key)).has_value());
        auto cc = env.client_config();
        cc.trust = TrustMode::pinned_only;
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
        REQUIRE(run.server.has_value());
        check_sessions(*run.client, *run.server);
    }
    SUBCASE("ask: accepted") {
        Env env("ask yes");
        auto cc = env.client_config();
        cc.trust = TrustMode::ask;
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto m1 = c.write_message();
        REQUIRE(m1.has_value());
        REQUIRE(s.read_message(*m1).has_value());
        auto m2 = s.write_message();
        REQUIRE(m2.has_value());
        REQUIRE(c.read_message(*m2).has_value());
        CHECK(c.next_action() == ChannelAction::awaiting_trust);
        CHECK(c.server_fingerprint() == fingerprint(public_of(env.server_key)));
        CHECK(env.known.size() == 0);
        CHECK(c.trust(true).has_value());
        CHECK(env.known.lookup("example.org:7000") == public_of(env.server_key));
        auto m3 = c.write_message();
        REQUIRE(m3.has_value());
        REQUIRE(s.read_message(*m3).has_value());
        auto ce = c.finish();
        auto se = s.finish();
        REQUIRE(ce.has_value());
        REQUIRE(se.has_value());
        check_sessions(*ce, *se);
    }
    SUBCASE("ask: refused") {
        Env env("ask no");
        auto cc = env.client_config();
        cc.trust = TrustMode::ask;
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto run = drive(c, s, {}, false);
        CHECK(run.asked);
        CHECK(run.client_error == Errc::server_key_unknown);
        CHECK(run.messages.size() == 2);
        CHECK(env.known.size() == 0);
        check_client_dead(c);
    }
    SUBCASE("ask: other calls while the question is pending fail the handshake") {
        Env env("ask order");
        auto cc = env.client_config();
        cc.trust = TrustMode::ask;
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto m1 = c.write_message();
        REQUIRE(m1.has_value());
        REQUIRE(s.read_message(*m1).has_value());
        auto m2 = s.write_message();
        REQUIRE(m2.has_value());
        REQUIRE(c.read_message(*m2).has_value());
        CHECK(c.write_message().code() == Errc::invalid_state);
        check_client_dead(c);
        CHECK(env.known.size() == 0);
    }
    SUBCASE("trust() without a pending question") {
        Env env("ask none");
        auto c = env.client();
        CHECK(c.trust(true).code() == Errc::invalid_state);
        check_client_dead(c);
    }
}

TEST_CASE("expected fingerprint from configuration") {
    SUBCASE("matching (any case, colons) with pinned_only: trusted and pinned") {
        Env env("fp ok");
        std::string fp = fingerprint(public_of(env.server_key));
        for (char& ch : fp) {
            ch = ch == ' ' ? ':' : static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        }
        auto cc = env.client_config();
        cc.trust = TrustMode::pinned_only;
        cc.expected_fingerprint = fp;
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
        CHECK(env.known.lookup("example.org:7000") == public_of(env.server_key));
    }
    SUBCASE("different: refused even under tofu, nothing pinned") {
        Env env("fp bad");
        auto cc = env.client_config();
        cc.expected_fingerprint = fingerprint(Bytes(32, 7));
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto run = drive(c, s);
        CHECK(run.client_error == Errc::server_key_mismatch);
        CHECK(run.messages.size() == 2);
        CHECK(env.known.size() == 0);
    }
    SUBCASE("malformed fingerprints are a configuration error") {
        Env env("fp malformed");
        for (const char* bad : {"abcd", "zz", "6668 7aad"}) {
            auto cc = env.client_config();
            cc.expected_fingerprint = bad;
            CHECK(ClientHandshake::create(std::move(cc), env.known, *env.rng, env.clock).code() ==
                  Errc::invalid_argument);
        }
    }
}

TEST_CASE("garbage, truncated and oversized handshake messages fail cleanly at each step") {
    // Honest transcripts to cut from.
    Env ref("garbage ref");
    std::vector<Bytes> honest;
    {
        auto c = ref.client();
        auto s = ref.server();
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
        honest = run.messages;
    }
    REQUIRE(honest.size() == 3);

    std::vector<std::pair<std::string, std::function<Bytes(const Bytes&)>>> mutations = {
        {"empty", [](const Bytes&) { return Bytes{}; }},
        {"id only", [](const Bytes& m) { return Bytes{m[0]}; }},
        {"unknown id",
         [](const Bytes& m) {
             auto x = m;
             x[0] = 9;
             return x;
         }},
        {"id zero",
         [](const Bytes& m) {
             auto x = m;
             x[0] = 0;
             return x;
         }},
        {"oversized",
         [](const Bytes& m) {
             auto x = m;
             x.resize(max_channel_handshake_message + 1, 0xAA);
             return x;
         }},
        {"huge noise",
         [](const Bytes& m) {
             auto x = m;
             x.resize(max_channel_handshake_message, 0xAA);
             return x;
         }},
        {"cut 1", [](const Bytes& m) { return Bytes(m.begin(), m.end() - 1); }},
        {"cut to 20", [](const Bytes& m) { return Bytes(m.begin(), m.begin() + 20); }},
        {"cut to half", [](const Bytes& m) { return Bytes(m.begin(), m.begin() + static_cast<long>(m.size() / 2)); }},
        {"extra byte",
         [](const Bytes& m) {
             auto x = m;
             x.push_back(0);
             return x;
         }},
        {"flip last", [](const Bytes& m) { return flip(m, m.size() - 1); }},
        {"flip middle", [](const Bytes& m) { return flip(m, m.size() / 2); }},
        {"random",
         [](const Bytes& m) {
             auto rng = make_deterministic_rng(as_bytes("garbage bytes"));
             Bytes x = rng->bytes(m.size());
             x[0] = m[0];
             return x;
         }},
    };

    for (std::size_t step = 0; step < 3; ++step) {
        for (const auto& mutation : mutations) {
            const std::string& name = mutation.first;
            const auto& mutate = mutation.second;
            INFO("message " << step << ": " << name);
            Env env("garbage run");
            auto c = env.client();
            auto s = env.server();
            auto run = drive(c, s, [&](std::size_t i, Bytes& m) {
                if (i == step) {
                    m = mutate(m);
                }
            });
            CHECK_FALSE(run.server.has_value());
            if (step == 0) {
                // Either the server refuses msg1, or (a change it cannot see, e.g. in e or an offered suite id) the
                // transcripts differ and the client refuses msg2.
                CHECK_FALSE(run.client.has_value());
                if (run.server_error != Errc::ok) {
                    check_server_dead(s);
                } else {
                    CHECK(run.client_error == Errc::auth_failed);
                    check_client_dead(c);
                }
            } else if (step == 1) {
                CHECK_FALSE(run.client.has_value());
                CHECK(run.client_error != Errc::ok);
                CHECK(run.messages.size() == 2);  // no msg3
                check_client_dead(c);
            } else {
                // XX: the client is done once msg3 is written; only the server can notice.
                CHECK(run.server_error != Errc::ok);
                check_server_dead(s);
            }
            if (name == "empty") {
                CHECK((step == 1 ? run.client_error : run.server_error) == Errc::truncated);
            }
            if (name == "oversized") {
                CHECK((step == 1 ? run.client_error : run.server_error) == Errc::frame_too_large);
            }
            if (name == "unknown id" || name == "id zero") {
                CHECK((step == 1 ? run.client_error : run.server_error) == Errc::bad_field);
            }
        }
    }
}

TEST_CASE("malformed ClientHello from a raw Noise client") {
    struct Case {
        const char* name;
        Bytes hello;
        Errc server_error;
    };
    const std::vector<Case> cases = {
        {"empty payload", {}, Errc::truncated},
        {"version only", {1}, Errc::truncated},
        {"version 2", {2, 1, 2}, Errc::unsupported_version},
        {"count 0", {1, 0}, Errc::bad_field},
        {"count too big", {1, 3, 2, 3}, Errc::truncated},
        {"trailing", {1, 1, 2, 3}, Errc::trailing_bytes},
    };
    for (const auto& tc : cases) {
        INFO(tc.name);
        Env env("raw client");
        auto s = env.server();
        auto raw = RawPeer::make(noise::Role::initiator, *env.rng);
        CHECK(s.read_message(raw.write(tc.hello)).code() == tc.server_error);
        check_server_dead(s);
    }
    {
        // Unknown suite ids are skipped; a known one among them is chosen.
        Env env("raw client unknown ids");
        auto s = env.server();
        auto raw = RawPeer::make(noise::Role::initiator, *env.rng);
        REQUIRE(s.read_message(raw.write(Bytes{1, 3, 9, 200, 3})).has_value());
        auto m2 = s.write_message();
        REQUIRE(m2.has_value());
        auto hello = raw.read(*m2);
        REQUIRE(hello.has_value());
        CHECK(*hello == Bytes{1, 3});
    }
    {
        // Only unknown ids: the server answers with the refusal.
        Env env("raw client only unknown");
        auto s = env.server();
        auto raw = RawPeer::make(noise::Role::initiator, *env.rng);
        REQUIRE(s.read_message(raw.write(Bytes{1, 2, 9, 200})).has_value());
        auto m2 = s.write_message();
        REQUIRE(m2.has_value());
        auto hello = raw.read(*m2);
        REQUIRE(hello.has_value());
        CHECK(*hello == Bytes{1, 0});
        CHECK(s.failure().code == Errc::no_common_suite);
        check_server_dead(s);
    }
    {
        // msg3 with a payload.
        Env env("raw client msg3");
        auto s = env.server();
        auto raw = RawPeer::make(noise::Role::initiator, *env.rng);
        REQUIRE(s.read_message(raw.write(Bytes{1, 1, 2})).has_value());
        auto m2 = s.write_message();
        REQUIRE(m2.has_value());
        REQUIRE(raw.read(*m2).has_value());
        CHECK(s.read_message(raw.write(Bytes{0})).code() == Errc::bad_field);
        check_server_dead(s);
    }
}

TEST_CASE("malformed ServerHello from a raw Noise server") {
    struct Case {
        const char* name;
        Bytes hello;
        Errc client_error;
    };
    const std::vector<Case> cases = {
        {"empty", {}, Errc::truncated},
        {"one byte", {1}, Errc::truncated},
        {"three bytes", {1, 2, 0}, Errc::trailing_bytes},
        {"version 2", {2, 2}, Errc::unsupported_version},
        {"unknown suite", {1, 9}, Errc::suite_not_allowed},
        {"suite not offered", {1, 1}, Errc::suite_not_allowed},
        {"refusal", {1, 0}, Errc::no_common_suite},
    };
    for (const auto& tc : cases) {
        INFO(tc.name);
        Env env("raw server");
        auto cc = env.client_config();
        cc.suites = SuitePolicy::forbid_tdes();
        auto c = env.client(std::move(cc));
        auto raw = RawPeer::make(noise::Role::responder, *env.rng, env.server_key);
        auto m1 = c.write_message();
        REQUIRE(m1.has_value());
        REQUIRE(raw.read(*m1).has_value());
        CHECK(c.read_message(raw.write(tc.hello)).code() == tc.client_error);
        check_client_dead(c);
        CHECK(env.known.size() == 0);  // nothing pinned from a failed handshake
    }
}

TEST_CASE("calls in the wrong order") {
    Env env("order");
    {
        auto c = env.client();
        CHECK(c.next_action() == ChannelAction::write_message);
        CHECK(c.read_message(Bytes(50, 1)).code() == Errc::invalid_state);
        check_client_dead(c);
    }
    {
        auto c = env.client();
        CHECK(c.finish().code() == Errc::invalid_state);
        check_client_dead(c);
    }
    {
        auto c = env.client();
        REQUIRE(c.write_message().has_value());
        CHECK(c.write_message().code() == Errc::invalid_state);
        check_client_dead(c);
    }
    {
        auto s = env.server();
        CHECK(s.next_action() == ChannelAction::read_message);
        CHECK(s.write_message().code() == Errc::invalid_state);
        check_server_dead(s);
    }
    {
        auto c = env.client();
        auto s = env.server();
        auto m1 = c.write_message();
        REQUIRE(m1.has_value());
        REQUIRE(s.read_message(*m1).has_value());
        CHECK(s.read_message(*m1).code() == Errc::invalid_state);  // msg1 again
        check_server_dead(s);
    }
    {
        // A replayed msg1 in place of msg3.
        auto c = env.client();
        auto s = env.server();
        auto m1 = c.write_message();
        REQUIRE(m1.has_value());
        REQUIRE(s.read_message(*m1).has_value());
        REQUIRE(s.write_message().has_value());
        CHECK_FALSE(s.read_message(*m1).has_value());
        check_server_dead(s);
    }
}

TEST_CASE("configuration is checked") {
    Env env("config");
    {
        auto cc = env.client_config();
        cc.server_id.clear();
        CHECK(ClientHandshake::create(std::move(cc), env.known, *env.rng, env.clock).code() == Errc::invalid_argument);
    }
    {
        auto cc = env.client_config();
        cc.static_private_key = SecureBytes(31, 1);
        CHECK(ClientHandshake::create(std::move(cc), env.known, *env.rng, env.clock).code() == Errc::invalid_key);
    }
    {
        auto cc = env.client_config();
        cc.protocol = static_cast<HandshakeProtocol>(7);
        CHECK(ClientHandshake::create(std::move(cc), env.known, *env.rng, env.clock).code() == Errc::invalid_argument);
    }
    {
        auto sc = env.server_config(SecureBytes{});
        CHECK(ServerHandshake::create(std::move(sc), *env.rng, env.clock).code() == Errc::invalid_key);
    }
    {
        auto sc = env.server_config(env.server_key);
        sc.protocols.clear();
        CHECK(ServerHandshake::create(std::move(sc), *env.rng, env.clock).code() == Errc::invalid_argument);
    }
    {
        auto sc = env.server_config(env.server_key);
        sc.protocols = {static_cast<HandshakeProtocol>(0)};
        CHECK(ServerHandshake::create(std::move(sc), *env.rng, env.clock).code() == Errc::invalid_argument);
    }
    {
        auto cc = env.client_config();
        cc.session.replay_window = max_replay_window + 1;
        CHECK(ClientHandshake::create(std::move(cc), env.known, *env.rng, env.clock).code() == Errc::invalid_argument);
        auto sc = env.server_config(env.server_key);
        sc.session.rotation.interval = std::chrono::seconds(-1);
        CHECK(ServerHandshake::create(std::move(sc), *env.rng, env.clock).code() == Errc::invalid_argument);
    }
    {
        // A fixed client key is used as given: the server sees it.
        auto cc = env.client_config();
        cc.static_private_key = crypto::x25519_generate(*env.rng).private_key;
        const Bytes pub = public_of(cc.static_private_key);
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto run = drive(c, s);
        REQUIRE(run.server.has_value());
        CHECK(run.server->peer_static == pub);
    }
}

TEST_CASE("the channel session config is applied: in-order only, fail closed") {
    Env env("session config");
    auto c = env.client();
    auto s = env.server();
    auto run = drive(c, s);
    REQUIRE(run.client.has_value());
    REQUIRE(run.server.has_value());
    auto r1 = run.client->send.seal(as_bytes("one"));
    auto r2 = run.client->send.seal(as_bytes("two"));
    REQUIRE(r1.has_value());
    REQUIRE(r2.has_value());
    REQUIRE(run.server->recv.open(*r1).has_value());
    CHECK_FALSE(run.server->recv.open(*r1).has_value());  // replay refused...
    CHECK(run.server->recv.status().dead);                // ...and the session is dead (fail_closed)
    CHECK(run.server->recv.open(*r2).code() == Errc::invalid_state);
}

TEST_CASE("features (docs/protocol.md 3.2): agreed only when both speak them; a version-1 peer sees version 1") {
    const std::vector<ChannelFeature> presence{ChannelFeature::presence};
    SUBCASE("both speak presence") {
        Env env("features both");
        auto cc = env.client_config();
        cc.features = presence;
        auto sc = env.server_config(env.server_key);
        sc.features = presence;
        auto c = env.client(std::move(cc));
        auto s = env.server(std::move(sc));
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
        REQUIRE(run.server.has_value());
        CHECK(run.client->features == presence);
        CHECK(run.server->features == presence);
        check_sessions(*run.client, *run.server);
    }
    SUBCASE("a server that does not speak it: skipped like an unknown suite, a two-byte ServerHello") {
        Env env("features client only");
        auto cc = env.client_config();
        cc.features = presence;
        auto c = env.client(std::move(cc));
        auto s = env.server();
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
        REQUIRE(run.server.has_value());
        CHECK(run.client->features.empty());
        CHECK(run.server->features.empty());
    }
    SUBCASE("a client that does not offer it gets the version-1 ServerHello") {
        Env env("features server only");
        auto sc = env.server_config(env.server_key);
        sc.features = presence;
        auto c = env.client();
        auto s = env.server(std::move(sc));
        auto run = drive(c, s);
        REQUIRE(run.client.has_value());
        REQUIRE(run.server.has_value());
        CHECK(run.client->features.empty());
        CHECK(run.server->features.empty());
    }
    SUBCASE("a ServerHello accepting a feature that was not offered, or with a bad list, is refused") {
        struct Case {
            const char* name;
            Bytes hello;
            Errc client_error;
        };
        const std::vector<Case> cases = {
            {"not offered", {1, 2, 1, 0xC2}, Errc::bad_field},
            {"twice", {1, 2, 2, 0xC1, 0xC1}, Errc::bad_field},
            {"count too large", {1, 2, 2, 0xC1}, Errc::truncated},
            {"after the list", {1, 2, 1, 0xC1, 0}, Errc::trailing_bytes},
        };
        for (const auto& tc : cases) {
            INFO(tc.name);
            Env env("raw server features");
            auto cc = env.client_config();
            cc.suites = SuitePolicy::forbid_tdes();
            cc.features = presence;
            auto c = env.client(std::move(cc));
            auto raw = RawPeer::make(noise::Role::responder, *env.rng, env.server_key);
            auto m1 = c.write_message();
            REQUIRE(m1.has_value());
            REQUIRE(raw.read(*m1).has_value());
            CHECK(c.read_message(raw.write(tc.hello)).code() == tc.client_error);
            check_client_dead(c);
        }
    }
}
