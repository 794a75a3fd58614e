// Noise (rev 34) handshake: replay of the cacophony and snow vectors, then negative tests.
#include <sim/crypto.h>
#include <sim/handshake.h>

#include <doctest/doctest.h>

#include "vec_reader.h"

#include <functional>
#include <map>
#include <optional>
#include <string>

using sim::Bytes;
using sim::ByteView;
using sim::Errc;
using sim::SecureBytes;
using namespace sim::noise;

namespace {

SecureBytes secure(const Bytes& b) {
    return SecureBytes(b.begin(), b.end());
}

Bytes public_of(const Bytes& priv) {
    auto pair = sim::crypto::x25519_from_private(priv);
    REQUIRE(pair.has_value());
    return pair->public_key;
}

struct Protocol {
    Pattern pattern;
    Cipher cipher;
};

std::optional<Protocol> parse_protocol(const std::string& name) {
    for (const auto p : {Pattern::XX, Pattern::IK}) {
        for (const auto c : {Cipher::aes_gcm, Cipher::chacha_poly}) {
            if (protocol_name(p, c) == name) {
                return Protocol{p, c};
            }
        }
    }
    return std::nullopt;
}

std::size_t handshake_messages(Pattern p) {
    return p == Pattern::XX ? 3 : 2;
}

/// Replays one vector; returns the number of transport messages checked.
std::size_t replay(const simtest::VecRecord& rec) {
    INFO("vector at " << rec.where() << " (" << rec.section << ")");
    const auto proto = parse_protocol(rec.section);
    REQUIRE(proto.has_value());
    auto rng = sim::make_deterministic_rng(sim::as_bytes("unused: ephemerals are fixed"));

    HandshakeConfig ic;
    ic.pattern = proto->pattern;
    ic.cipher = proto->cipher;
    ic.role = Role::initiator;
    ic.prologue = rec.hex("init_prologue");
    ic.local_static_private = secure(rec.hex("init_static"));
    ic.fixed_ephemeral_private = secure(rec.hex("init_ephemeral"));
    if (rec.has("init_remote_static")) {
        ic.remote_static_public = rec.hex("init_remote_static");
    }
    HandshakeConfig rc;
    rc.pattern = proto->pattern;
    rc.cipher = proto->cipher;
    rc.role = Role::responder;
    rc.prologue = rec.hex("resp_prologue");
    rc.local_static_private = secure(rec.hex("resp_static"));
    rc.fixed_ephemeral_private = secure(rec.hex("resp_ephemeral"));

    auto init = HandshakeState::create(ic, *rng);
    auto resp = HandshakeState::create(rc, *rng);
    REQUIRE(init.has_value());
    REQUIRE(resp.has_value());

    const std::size_t count = std::stoul(rec.get("msg_count"));
    const std::size_t hs = handshake_messages(proto->pattern);
    REQUIRE(count >= hs);
    for (std::size_t i = 0; i < hs; ++i) {
        INFO("handshake message " << i);
        const bool from_initiator = i % 2 == 0;
        HandshakeState& writer = from_initiator ? *init : *resp;
        HandshakeState& reader = from_initiator ? *resp : *init;
        REQUIRE(writer.next_action() == Action::write_message);
        REQUIRE(reader.next_action() == Action::read_message);
        const Bytes payload = rec.hex("msg" + std::to_string(i) + "_payload");
        const Bytes expected = rec.hex("msg" + std::to_string(i) + "_ciphertext");
        auto msg = writer.write_message(payload);
        REQUIRE(msg.has_value());
        CHECK(sim::to_hex(*msg) == sim::to_hex(expected));
        auto got = reader.read_message(expected);
        REQUIRE(got.has_value());
        CHECK(sim::to_hex(*got) == sim::to_hex(payload));
    }
    REQUIRE(init->next_action() == Action::split);
    REQUIRE(resp->next_action() == Action::split);
    CHECK(sim::to_hex(init->handshake_hash()) == sim::to_hex(resp->handshake_hash()));
    CHECK(init->handshake_hash().size() == hash_size);
    if (rec.has("handshake_hash")) {
        CHECK(sim::to_hex(init->handshake_hash()) == rec.get("handshake_hash"));
    }
    CHECK(sim::to_hex(init->remote_static()) == sim::to_hex(public_of(rec.hex("resp_static"))));
    CHECK(sim::to_hex(resp->remote_static()) == sim::to_hex(public_of(rec.hex("init_static"))));

    auto ic_split = init->split();
    auto rc_split = resp->split();
    REQUIRE(ic_split.has_value());
    REQUIRE(rc_split.has_value());
    CHECK(init->next_action() == Action::complete);
    CHECK(init->handshake_hash().size() == hash_size);
    CHECK(sim::to_hex(ic_split->initiator_to_responder.key()) == sim::to_hex(rc_split->initiator_to_responder.key()));
    CHECK(sim::to_hex(ic_split->responder_to_initiator.key()) == sim::to_hex(rc_split->responder_to_initiator.key()));
    CHECK(ic_split->initiator_to_responder.key().size() == key_size);

    std::size_t transport = 0;
    for (std::size_t i = hs; i < count; ++i) {
        INFO("transport message " << i);
        const bool from_initiator = i % 2 == 0;
        CipherState& enc = from_initiator ? ic_split->initiator_to_responder : rc_split->responder_to_initiator;
        CipherState& dec = from_initiator ? rc_split->initiator_to_responder : ic_split->responder_to_initiator;
        const Bytes payload = rec.hex("msg" + std::to_string(i) + "_payload");
        const Bytes expected = rec.hex("msg" + std::to_string(i) + "_ciphertext");
        auto ct = enc.encrypt_with_ad({}, payload);
        REQUIRE(ct.has_value());
        CHECK(sim::to_hex(*ct) == sim::to_hex(expected));
        auto pt = dec.decrypt_with_ad({}, expected);
        REQUIRE(pt.has_value());
        CHECK(sim::to_hex(*pt) == sim::to_hex(payload));
        ++transport;
    }
    return transport;
}

struct Pair {
    HandshakeState init;
    HandshakeState resp;
};

HandshakeConfig make_config(Pattern p, Cipher c, Role role, sim::Rng& rng) {
    HandshakeConfig cfg;
    cfg.pattern = p;
    cfg.cipher = c;
    cfg.role = role;
    cfg.prologue = Bytes{'t', 'e', 's', 't'};
    cfg.local_static_private = sim::crypto::x25519_generate(rng).private_key;
    return cfg;
}

/// A fresh initiator/responder pair with random keys; for IK the initiator knows the responder's key.
Pair make_pair(Pattern p, Cipher c, sim::Rng& rng) {
    auto rc = make_config(p, c, Role::responder, rng);
    auto ic = make_config(p, c, Role::initiator, rng);
    if (p == Pattern::IK) {
        ic.remote_static_public = public_of(Bytes(rc.local_static_private.begin(), rc.local_static_private.end()));
    }
    auto init = HandshakeState::create(ic, rng);
    auto resp = HandshakeState::create(rc, rng);
    REQUIRE(init.has_value());
    REQUIRE(resp.has_value());
    return Pair{std::move(*init), std::move(*resp)};
}

/// Run a handshake, applying `tamper` to message `target` in transit. Returns the index of the first message whose
/// read failed (and checks the failed party), or nullopt when every read succeeded.
std::optional<std::size_t> run_with_tamper(Pair& pair, Pattern p, std::size_t target,
                                           const std::function<void(Bytes&)>& tamper, Errc* code = nullptr) {
    for (std::size_t i = 0; i < handshake_messages(p); ++i) {
        const bool from_initiator = i % 2 == 0;
        HandshakeState& writer = from_initiator ? pair.init : pair.resp;
        HandshakeState& reader = from_initiator ? pair.resp : pair.init;
        auto msg = writer.write_message(Bytes{'p', static_cast<std::uint8_t>('0' + i)});
        if (!msg) {
            if (code != nullptr) {
                *code = msg.code();
            }
            CHECK(writer.next_action() == Action::failed);
            return i;
        }
        if (i == target) {
            tamper(*msg);
        }
        auto got = reader.read_message(*msg);
        if (!got) {
            if (code != nullptr) {
                *code = got.code();
            }
            CHECK(reader.next_action() == Action::failed);
            return i;
        }
    }
    return std::nullopt;
}

/// After a failure every call reports invalid_state and no secret or hash is visible.
void check_dead(HandshakeState& hs) {
    CHECK(hs.next_action() == Action::failed);
    CHECK(hs.failure().code != Errc::ok);
    CHECK(hs.handshake_hash().empty());
    CHECK(hs.remote_static().empty());
    CHECK(hs.write_message({}).code() == Errc::invalid_state);
    CHECK(hs.read_message(Bytes(48)).code() == Errc::invalid_state);
    CHECK(hs.split().code() == Errc::invalid_state);
}

HandshakeState& party(Pair& pair, std::size_t msg_index, bool reader) {
    const bool from_initiator = msg_index % 2 == 0;
    return (from_initiator != reader) ? pair.init : pair.resp;
}

const Pattern patterns[] = {Pattern::XX, Pattern::IK};
const Cipher ciphers[] = {Cipher::aes_gcm, Cipher::chacha_poly};

}  // namespace

TEST_CASE("protocol names") {
    CHECK(protocol_name(Pattern::XX, Cipher::chacha_poly) == "Noise_XX_25519_ChaChaPoly_SHA256");
    CHECK(protocol_name(Pattern::XX, Cipher::aes_gcm) == "Noise_XX_25519_AESGCM_SHA256");
    CHECK(protocol_name(Pattern::IK, Cipher::chacha_poly) == "Noise_IK_25519_ChaChaPoly_SHA256");
    CHECK(protocol_name(Pattern::IK, Cipher::aes_gcm) == "Noise_IK_25519_AESGCM_SHA256");
}

TEST_CASE("cacophony and snow vectors replay byte for byte") {
    std::map<std::string, int> per_protocol;
    std::size_t vectors = 0;
    std::size_t transport = 0;
    std::size_t with_hash = 0;
    for (const char* file : {"noise/cacophony.vec", "noise/snow.vec"}) {
        const auto records = simtest::read_vec_file(file);
        for (const auto& rec : records) {
            transport += replay(rec);
            ++vectors;
            ++per_protocol[rec.section];
            with_hash += rec.has("handshake_hash") ? 1 : 0;
        }
    }
    // 4 protocols x (1 cacophony + 1 snow) vectors; cacophony carries handshake_hash, snow does not.
    CHECK(vectors == 8);
    CHECK(with_hash == 4);
    CHECK(per_protocol.size() == 4);
    for (const auto& entry : per_protocol) {
        CHECK_MESSAGE(entry.second == 2, entry.first);
    }
    // cacophony: XX 3 + IK 4 transport messages per cipher; snow: XX 2 + IK 2.
    CHECK(transport == 2 * (3 + 4) + 2 * (2 + 2));
}

TEST_CASE("handshakes with random keys complete and agree") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise random handshakes"));
    for (const auto p : patterns) {
        for (const auto c : ciphers) {
            INFO(protocol_name(p, c));
            auto pair = make_pair(p, c, *rng);
            CHECK_FALSE(run_with_tamper(pair, p, 99, [](Bytes&) {}).has_value());
            REQUIRE(pair.init.next_action() == Action::split);
            REQUIRE(pair.resp.next_action() == Action::split);
            CHECK(sim::to_hex(pair.init.remote_static()) == sim::to_hex(pair.resp.local_static()));
            CHECK(sim::to_hex(pair.resp.remote_static()) == sim::to_hex(pair.init.local_static()));
            CHECK(sim::to_hex(pair.init.handshake_hash()) == sim::to_hex(pair.resp.handshake_hash()));
            auto a = pair.init.split();
            auto b = pair.resp.split();
            REQUIRE(a.has_value());
            REQUIRE(b.has_value());
            auto ct = a->initiator_to_responder.encrypt_with_ad(Bytes{1}, Bytes{'h', 'i'});
            REQUIRE(ct.has_value());
            auto pt = b->initiator_to_responder.decrypt_with_ad(Bytes{1}, *ct);
            REQUIRE(pt.has_value());
            CHECK(*pt == Bytes{'h', 'i'});
            // Direction keys differ: the responder cannot decrypt with its sending key.
            CHECK(sim::to_hex(a->initiator_to_responder.key()) != sim::to_hex(a->responder_to_initiator.key()));
        }
    }
}

TEST_CASE("different prologues make the handshake fail") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise prologue"));
    for (const auto p : patterns) {
        auto rc = make_config(p, Cipher::chacha_poly, Role::responder, *rng);
        auto ic = make_config(p, Cipher::chacha_poly, Role::initiator, *rng);
        ic.prologue = Bytes{'o', 't', 'h', 'e', 'r'};
        if (p == Pattern::IK) {
            ic.remote_static_public = public_of(Bytes(rc.local_static_private.begin(), rc.local_static_private.end()));
        }
        auto init = HandshakeState::create(ic, *rng);
        auto resp = HandshakeState::create(rc, *rng);
        REQUIRE(init.has_value());
        REQUIRE(resp.has_value());
        Pair pair{std::move(*init), std::move(*resp)};
        Errc code = Errc::ok;
        const auto failed_at = run_with_tamper(
            pair, p, 99, [](Bytes&) {}, &code);
        REQUIRE(failed_at.has_value());
        CHECK(code == Errc::auth_failed);
        // XX's first message carries no tag: the mismatch shows at the first authenticated message.
        CHECK(*failed_at == (p == Pattern::XX ? 1U : 0U));
    }
}

TEST_CASE("a flipped bit anywhere in any handshake message fails the handshake") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise flips"));
    for (const auto p : patterns) {
        for (const auto c : ciphers) {
            for (std::size_t target = 0; target < handshake_messages(p); ++target) {
                // Message length is the same in every run with the same payload.
                std::size_t len = 0;
                {
                    auto pair = make_pair(p, c, *rng);
                    REQUIRE_FALSE(run_with_tamper(pair, p, target, [&](Bytes& m) { len = m.size(); }).has_value());
                }
                REQUIRE(len > 0);
                for (std::size_t pos = 0; pos < len; ++pos) {
                    for (const std::uint8_t mask : {std::uint8_t{0x01}, std::uint8_t{0x80}}) {
                        INFO(protocol_name(p, c) << " message " << target << " byte " << pos << " mask " << int(mask));
                        auto pair = make_pair(p, c, *rng);
                        const auto failed_at = run_with_tamper(pair, p, target, [&](Bytes& m) { m[pos] ^= mask; });
                        REQUIRE(failed_at.has_value());
                        // The tampered message's reader fails, except XX message 0 (no key yet: clear e and
                        // payload) where the initiator notices when it reads message 1.
                        const std::size_t expected = (p == Pattern::XX && target == 0) ? 1 : target;
                        CHECK(*failed_at == expected);
                        check_dead(party(pair, *failed_at, true));
                    }
                }
            }
        }
    }
}

TEST_CASE("truncated and extended handshake messages fail") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise truncation"));
    for (const auto p : patterns) {
        for (const auto c : ciphers) {
            for (std::size_t target = 0; target < handshake_messages(p); ++target) {
                for (const std::size_t cut : {std::size_t{1}, std::size_t{16}, std::size_t{17}, std::size_t{1000}}) {
                    INFO(protocol_name(p, c) << " message " << target << " cut " << cut);
                    auto pair = make_pair(p, c, *rng);
                    Errc code = Errc::ok;
                    std::size_t remaining = 0;
                    const auto failed_at = run_with_tamper(
                        pair, p, target,
                        [&](Bytes& m) {
                            m.resize(m.size() > cut ? m.size() - cut : 0);
                            remaining = m.size();
                        },
                        &code);
                    REQUIRE(failed_at.has_value());
                    // XX message 0 is e || clear payload: while e is whole, its reader cannot tell.
                    const bool unnoticed = p == Pattern::XX && target == 0 && remaining >= dh_size;
                    const std::size_t expected = unnoticed ? 1 : target;
                    CHECK(*failed_at == expected);
                    CHECK((code == Errc::truncated || code == Errc::auth_failed));
                    check_dead(party(pair, *failed_at, true));
                }
                INFO(protocol_name(p, c) << " message " << target << " extended");
                auto pair = make_pair(p, c, *rng);
                const auto failed_at = run_with_tamper(pair, p, target, [](Bytes& m) { m.push_back(0); });
                REQUIRE(failed_at.has_value());
                CHECK(*failed_at == ((p == Pattern::XX && target == 0) ? 1U : target));
            }
        }
    }
}

TEST_CASE("empty first message is truncated") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise empty"));
    for (const auto p : patterns) {
        auto pair = make_pair(p, Cipher::chacha_poly, *rng);
        auto r = pair.resp.read_message({});
        CHECK(r.code() == Errc::truncated);
        check_dead(pair.resp);
    }
}

TEST_CASE("IK with the wrong responder static key fails at the responder") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise ik wrong key"));
    for (const auto c : ciphers) {
        auto rc = make_config(Pattern::IK, c, Role::responder, *rng);
        auto ic = make_config(Pattern::IK, c, Role::initiator, *rng);
        ic.remote_static_public = sim::crypto::x25519_generate(*rng).public_key;  // not the responder's
        auto init = HandshakeState::create(ic, *rng);
        auto resp = HandshakeState::create(rc, *rng);
        REQUIRE(init.has_value());
        REQUIRE(resp.has_value());
        auto m0 = init->write_message(Bytes{'x'});
        REQUIRE(m0.has_value());
        auto r = resp->read_message(*m0);
        CHECK(r.code() == Errc::auth_failed);
        check_dead(*resp);
    }
}

TEST_CASE("messages over 65535 bytes are refused") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise max size"));
    for (const auto p : patterns) {
        for (const auto c : ciphers) {
            INFO(protocol_name(p, c));
            {
                auto pair = make_pair(p, c, *rng);
                CHECK(pair.resp.read_message(Bytes(max_message_size + 1)).code() == Errc::frame_too_large);
                check_dead(pair.resp);
            }
            {
                auto pair = make_pair(p, c, *rng);
                CHECK(pair.init.write_message(Bytes(max_message_size)).code() == Errc::frame_too_large);
                check_dead(pair.init);
            }
            {
                // The largest payload that fits is accepted: 65535 - 32 (e) - tag(s) for message 0.
                auto pair = make_pair(p, c, *rng);
                const std::size_t overhead = p == Pattern::XX ? dh_size : dh_size + (dh_size + tag_size) + tag_size;
                auto m0 = pair.init.write_message(Bytes(max_message_size - overhead, 0x55));
                REQUIRE(m0.has_value());
                CHECK(m0->size() == max_message_size);
                auto got = pair.resp.read_message(*m0);
                REQUIRE(got.has_value());
                CHECK(got->size() == max_message_size - overhead);
            }
            {
                auto pair = make_pair(p, c, *rng);
                const std::size_t overhead = p == Pattern::XX ? dh_size : dh_size + (dh_size + tag_size) + tag_size;
                CHECK(pair.init.write_message(Bytes(max_message_size - overhead + 1)).code() == Errc::frame_too_large);
            }
        }
    }
}

TEST_CASE("calls in the wrong order fail the handshake") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise order"));
    for (const auto p : patterns) {
        INFO(protocol_name(p, Cipher::chacha_poly));
        {
            auto pair = make_pair(p, Cipher::chacha_poly, *rng);
            CHECK(pair.init.next_action() == Action::write_message);
            CHECK(pair.init.read_message(Bytes(64)).code() == Errc::invalid_state);
            check_dead(pair.init);
        }
        {
            auto pair = make_pair(p, Cipher::chacha_poly, *rng);
            CHECK(pair.resp.next_action() == Action::read_message);
            CHECK(pair.resp.write_message({}).code() == Errc::invalid_state);
            check_dead(pair.resp);
        }
        {
            auto pair = make_pair(p, Cipher::chacha_poly, *rng);
            CHECK(pair.init.split().code() == Errc::invalid_state);
            check_dead(pair.init);
        }
        {
            // Writing twice in a row.
            auto pair = make_pair(p, Cipher::chacha_poly, *rng);
            REQUIRE(pair.init.write_message({}).has_value());
            CHECK(pair.init.next_action() == Action::read_message);
            CHECK(pair.init.write_message({}).code() == Errc::invalid_state);
            check_dead(pair.init);
        }
        {
            // split twice.
            auto pair = make_pair(p, Cipher::chacha_poly, *rng);
            REQUIRE_FALSE(run_with_tamper(pair, p, 99, [](Bytes&) {}).has_value());
            REQUIRE(pair.init.split().has_value());
            CHECK(pair.init.next_action() == Action::complete);
            CHECK(pair.init.split().code() == Errc::invalid_state);
            CHECK(pair.init.next_action() == Action::failed);
            // After completion no more messages.
            REQUIRE(pair.resp.split().has_value());
            CHECK(pair.resp.write_message({}).code() == Errc::invalid_state);
        }
    }
}

TEST_CASE("a replayed handshake message fails") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise replay"));
    for (const auto p : patterns) {
        auto pair = make_pair(p, Cipher::aes_gcm, *rng);
        auto m0 = pair.init.write_message({});
        REQUIRE(m0.has_value());
        REQUIRE(pair.resp.read_message(*m0).has_value());
        auto m1 = pair.resp.write_message({});
        REQUIRE(m1.has_value());
        // The initiator feeds its own first message back as the responder's reply.
        CHECK_FALSE(pair.init.read_message(*m0).has_value());
        check_dead(pair.init);
    }
}

TEST_CASE("low-order peer keys are rejected") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise low order"));
    const Bytes zero_point(32, 0);
    {
        // IK: the responder's first DH (es) with a zero ephemeral fails while reading.
        auto pair = make_pair(Pattern::IK, Cipher::chacha_poly, *rng);
        auto m0 = pair.init.write_message({});
        REQUIRE(m0.has_value());
        std::copy(zero_point.begin(), zero_point.end(), m0->begin());
        CHECK(pair.resp.read_message(*m0).code() == Errc::invalid_key);
        check_dead(pair.resp);
    }
    {
        // XX: message 0 has no DH; the responder's ee while writing message 1 fails.
        auto pair = make_pair(Pattern::XX, Cipher::chacha_poly, *rng);
        auto m0 = pair.init.write_message({});
        REQUIRE(m0.has_value());
        std::copy(zero_point.begin(), zero_point.end(), m0->begin());
        REQUIRE(pair.resp.read_message(*m0).has_value());
        CHECK(pair.resp.write_message({}).code() == Errc::invalid_key);
        check_dead(pair.resp);
    }
    {
        // IK initiator configured with a low-order responder key: es fails while writing message 0.
        auto ic = make_config(Pattern::IK, Cipher::chacha_poly, Role::initiator, *rng);
        ic.remote_static_public = zero_point;
        auto init = HandshakeState::create(ic, *rng);
        REQUIRE(init.has_value());
        CHECK(init->write_message({}).code() == Errc::invalid_key);
        check_dead(*init);
    }
}

TEST_CASE("configuration is checked") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("noise config"));
    auto good = make_config(Pattern::XX, Cipher::aes_gcm, Role::initiator, *rng);
    CHECK(HandshakeState::create(good, *rng).has_value());

    auto no_static = good;
    no_static.local_static_private.clear();
    CHECK(HandshakeState::create(no_static, *rng).code() == Errc::invalid_key);

    auto short_static = good;
    short_static.local_static_private.resize(31);
    CHECK(HandshakeState::create(short_static, *rng).code() == Errc::invalid_key);

    auto xx_remote = good;
    xx_remote.remote_static_public = Bytes(32, 9);
    CHECK(HandshakeState::create(xx_remote, *rng).code() == Errc::invalid_argument);

    auto ik_no_remote = good;
    ik_no_remote.pattern = Pattern::IK;
    CHECK(HandshakeState::create(ik_no_remote, *rng).code() == Errc::invalid_key);

    auto ik_resp_remote = good;
    ik_resp_remote.pattern = Pattern::IK;
    ik_resp_remote.role = Role::responder;
    ik_resp_remote.remote_static_public = Bytes(32, 9);
    CHECK(HandshakeState::create(ik_resp_remote, *rng).code() == Errc::invalid_argument);

    auto bad_eph = good;
    bad_eph.fixed_ephemeral_private = SecureBytes(5, 1);
    CHECK(HandshakeState::create(bad_eph, *rng).code() == Errc::invalid_key);

    auto bad_pattern = good;
    bad_pattern.pattern = static_cast<Pattern>(7);
    CHECK(HandshakeState::create(bad_pattern, *rng).code() == Errc::invalid_argument);
}

TEST_CASE("CipherState: keyless pass-through, nonce limits, failed decrypt keeps n, rekey") {
    CipherState empty;
    CHECK_FALSE(empty.has_key());
    auto pass = empty.encrypt_with_ad(Bytes{1}, Bytes{'a', 'b'});
    REQUIRE(pass.has_value());
    CHECK(*pass == Bytes{'a', 'b'});
    CHECK(empty.rekey().code() == Errc::invalid_state);

    CHECK(CipherState::create(Cipher::aes_gcm, Bytes(31)).code() == Errc::invalid_key);

    for (const auto c : ciphers) {
        const Bytes key(32, 0x42);
        auto a = CipherState::create(c, key);
        auto b = CipherState::create(c, key);
        REQUIRE(a.has_value());
        REQUIRE(b.has_value());
        auto ct = a->encrypt_with_ad(Bytes{}, Bytes{'m'});
        REQUIRE(ct.has_value());
        CHECK(a->nonce() == 1);
        Bytes bad = *ct;
        bad[0] ^= 1;
        CHECK(b->decrypt_with_ad(Bytes{}, bad).code() == Errc::auth_failed);
        CHECK(b->nonce() == 0);
        CHECK(b->decrypt_with_ad(Bytes{}, Bytes(15)).code() == Errc::truncated);
        auto pt = b->decrypt_with_ad(Bytes{}, *ct);
        REQUIRE(pt.has_value());
        CHECK(b->nonce() == 1);
        // Replaying the same ciphertext fails: n has moved on.
        CHECK(b->decrypt_with_ad(Bytes{}, *ct).code() == Errc::auth_failed);

        // Both sides rekey: keys change, still agree.
        const Bytes before(a->key().begin(), a->key().end());
        REQUIRE(a->rekey().has_value());
        REQUIRE(b->rekey().has_value());
        CHECK(sim::to_hex(a->key()) != sim::to_hex(before));
        CHECK(sim::to_hex(a->key()) == sim::to_hex(b->key()));
        CHECK(a->nonce() == 1);
        auto ct2 = a->encrypt_with_ad(Bytes{}, Bytes{'n'});
        REQUIRE(ct2.has_value());
        auto pt2 = b->decrypt_with_ad(Bytes{}, *ct2);
        REQUIRE(pt2.has_value());
        CHECK(*pt2 == Bytes{'n'});

        // n = 2^64-1 is reserved (s5.1): both directions refuse.
        a->set_nonce(~std::uint64_t{0});
        CHECK(a->encrypt_with_ad(Bytes{}, Bytes{'x'}).code() == Errc::limit_reached);
        b->set_nonce(~std::uint64_t{0});
        CHECK(b->decrypt_with_ad(Bytes{}, *ct2).code() == Errc::limit_reached);
        a->set_nonce(~std::uint64_t{0} - 1);
        CHECK(a->encrypt_with_ad(Bytes{}, Bytes{'x'}).has_value());

        CHECK(a->encrypt_with_ad(Bytes{}, Bytes(max_message_size - tag_size + 1)).code() == Errc::frame_too_large);
        a->clear();
        CHECK_FALSE(a->has_key());
        CHECK(a->key().empty());
    }
}

TEST_CASE("nonce encodings differ per cipher as the spec says") {
    // Encrypt with n = 1 through CipherState and through the raw AEAD with the spec's encoding.
    const Bytes key(32, 7);
    for (const auto c : ciphers) {
        auto cs = CipherState::create(c, key);
        REQUIRE(cs.has_value());
        cs->set_nonce(0x0102030405060708ULL);
        auto ct = cs->encrypt_with_ad(Bytes{'a', 'd'}, Bytes{'p'});
        REQUIRE(ct.has_value());
        Bytes nonce(12, 0);
        const Bytes be = {1, 2, 3, 4, 5, 6, 7, 8};
        const Bytes le = {8, 7, 6, 5, 4, 3, 2, 1};
        std::copy((c == Cipher::aes_gcm ? be : le).begin(), (c == Cipher::aes_gcm ? be : le).end(), nonce.begin() + 4);
        auto aead = sim::crypto::make_aead(c == Cipher::aes_gcm ? sim::crypto::AeadAlgorithm::aes256_gcm
                                                                : sim::crypto::AeadAlgorithm::chacha20_poly1305,
                                           key);
        REQUIRE(aead.has_value());
        auto ref = (*aead)->seal(nonce, Bytes{'a', 'd'}, Bytes{'p'});
        REQUIRE(ref.has_value());
        CHECK(sim::to_hex(*ct) == sim::to_hex(*ref));
    }
}
