// Tests for end-to-end crypto (sim/e2e.h, docs/protocol.md 6.1-6.4) and the Ed25519 / SHA-512 / Ed25519-to-X25519
// additions to the crypto facade.
//
// Known answers come from files under tests/vectors/ (see tests/vectors/SOURCES.md): Botan's Ed25519 KATs and
// Wycheproof's Ed25519 verify tests (converted by scripts/import_ed25519_vectors.py), libsodium's ed25519_convert
// test and Signal's numeric fingerprint test (transcribed into tests/vectors/e2e/). Every file-driven test counts
// what it checked and requires a non-zero count.
#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/e2e.h>
#include <sim/error.h>
#include <sim/rng.h>
#include <sim/suite.h>

#include "vec_reader.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

using sim::Bytes;
using sim::ByteView;
using sim::Errc;
using sim::SecureBytes;
using sim::SuiteId;
using simtest::read_vec_file;
namespace crypto = sim::crypto;
namespace e2e = sim::e2e;

namespace {

Bytes sb(const SecureBytes& s) {
    return Bytes(s.begin(), s.end());
}
Bytes text(std::string_view s) {
    return sim::to_bytes(sim::as_bytes(s));
}

std::unique_ptr<sim::Rng> test_rng(std::string_view label) {
    return sim::make_deterministic_rng(sim::as_bytes(label));
}

/// One user: identity, signed prekey, one-time prekeys.
struct User {
    std::string name;
    e2e::IdentityKeyPair identity;
    e2e::SignedPrekey spk;
    std::vector<e2e::OneTimePrekey> opks;

    User(std::string n, sim::Rng& rng) : name(std::move(n)), identity(e2e::generate_identity(rng)) {
        spk = e2e::generate_signed_prekey(identity, 7, rng);
        for (std::uint32_t i = 0; i < 3; ++i) {
            opks.push_back(e2e::generate_one_time_prekey(100 + i, rng));
        }
    }

    [[nodiscard]] e2e::PrekeyBundle bundle(bool with_opk) const {
        e2e::PrekeyBundle b;
        b.identity_key = identity.public_key;
        b.signed_prekey_id = spk.id;
        b.signed_prekey = spk.public_key;
        b.signed_prekey_signature = spk.signature;
        if (with_opk) {
            b.one_time_prekey_id = opks[0].id;
            b.one_time_prekey = opks[0].public_key;
        }
        return b;
    }

    [[nodiscard]] const e2e::OneTimePrekey* opk(std::uint32_t id) const {
        for (const auto& k : opks) {
            if (k.id == id) {
                return &k;
            }
        }
        return nullptr;
    }
};

/// Bob's side of the first message: inspect, respond with what it names.
sim::Result<e2e::Session> respond_to(const User& bob, ByteView first, std::string_view alice_name, sim::Rng& rng) {
    auto info = e2e::inspect(first);
    REQUIRE(info);
    REQUIRE(info->type == e2e::MessageType::initial);
    REQUIRE(info->initial);
    const auto& h = *info->initial;
    return e2e::Session::respond(bob.identity, bob.name, bob.spk, bob.opk(h.one_time_prekey_id), h, alice_name, rng);
}

struct Conversation {
    e2e::Session alice;
    e2e::Session bob;
};

/// Alice initiates and sends "hello"; Bob responds and opens it.
Conversation establish(const User& alice, const User& bob, sim::Rng& rng, SuiteId suite = SuiteId::aes256_gcm,
                       bool with_opk = true) {
    auto a = e2e::Session::initiate(alice.identity, alice.name, bob.bundle(with_opk), bob.name, suite, rng);
    REQUIRE(a);
    auto first = a->seal(sim::as_bytes("hello"));
    REQUIRE(first);
    auto b = respond_to(bob, *first, alice.name, rng);
    REQUIRE(b);
    auto pt = b->open(*first);
    REQUIRE(pt);
    CHECK(sb(*pt) == text("hello"));
    return Conversation{std::move(a).value(), std::move(b).value()};
}

Bytes seal(e2e::Session& s, std::string_view msg) {
    auto out = s.seal(sim::as_bytes(msg));
    REQUIRE(out);
    return std::move(out).value();
}

void expect_open(e2e::Session& s, ByteView msg, std::string_view expected) {
    auto pt = s.open(msg);
    REQUIRE_MESSAGE(pt, pt.error().message());
    CHECK(sb(*pt) == text(expected));
}

/// The message number n sits after type, session id, [initial header], ratchet key and pn.
std::size_t n_offset(ByteView msg) {
    return 1 + e2e::session_id_size + (msg[0] == 1 ? 32 + 32 + 4 + 4 + 1 : 0) + 32 + 4;
}

void put_u32(Bytes& b, std::size_t at, std::uint32_t v) {
    b[at] = static_cast<std::uint8_t>(v >> 24U);
    b[at + 1] = static_cast<std::uint8_t>(v >> 16U);
    b[at + 2] = static_cast<std::uint8_t>(v >> 8U);
    b[at + 3] = static_cast<std::uint8_t>(v);
}

void clamp(Bytes& k) {
    k[0] = static_cast<std::uint8_t>(k[0] & 248U);
    k[31] = static_cast<std::uint8_t>((k[31] & 127U) | 64U);
}

}  // namespace

// ---------------------------------------------------------------- crypto facade: SHA-512, Ed25519, the map

TEST_CASE("e2e crypto: SHA-512 known answers (FIPS 180-2 B.1, B.3 of SHA-512's examples)") {
    CHECK(sim::to_hex(crypto::sha512(sim::as_bytes("abc"))) ==
          "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
          "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
    CHECK(sim::to_hex(crypto::sha512({})) ==
          "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce"
          "47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e");
    CHECK(crypto::sha512(sim::as_bytes("ab"), sim::as_bytes("c")) == crypto::sha512(sim::as_bytes("abc")));
}

TEST_CASE("e2e crypto: Ed25519 sign+verify KATs (Botan, PureEdDSA)") {
    std::size_t checked = 0;
    for (const auto& r : read_vec_file("botan/pubkey/ed25519_pure.vec")) {
        CAPTURE(r.where());
        const auto seed = r.hex("Privkey");
        const auto pub = r.hex("Pubkey");
        const auto msg = r.hex("Msg");
        const auto sig = r.hex("Signature");
        auto pair = crypto::ed25519_from_seed(seed);
        REQUIRE(pair);
        CHECK(pair->public_key == pub);
        auto mine = crypto::ed25519_sign(seed, msg);
        REQUIRE(mine);
        CHECK(*mine == sig);
        CHECK(crypto::ed25519_verify(pub, msg, sig));
        auto bad_sig = sig;
        bad_sig[checked % bad_sig.size()] ^= 0x01U;
        CHECK_FALSE(crypto::ed25519_verify(pub, msg, bad_sig));
        auto bad_msg = msg;
        bad_msg.push_back(0x00);
        CHECK_FALSE(crypto::ed25519_verify(pub, bad_msg, sig));
        // The e2e wrappers are the same functions.
        auto id = e2e::identity_from_private(seed);
        REQUIRE(id);
        CHECK(id->public_key == pub);
        CHECK(e2e::verify(pub, msg, sig));
        ++checked;
    }
    CHECK(checked > 100);
}

TEST_CASE("e2e crypto: Ed25519 verify must-fail cases (Botan)") {
    std::size_t checked = 0;
    for (const auto& r : read_vec_file("botan/pubkey/ed25519_verify.vec")) {
        CAPTURE(r.where());
        REQUIRE(r.get("Valid") == "0");
        CHECK_FALSE(crypto::ed25519_verify(r.hex("Pubkey"), r.hex("Msg"), r.hex("Signature")));
        ++checked;
    }
    CHECK(checked > 50);
}

TEST_CASE("e2e crypto: Ed25519 Wycheproof verify tests") {
    std::size_t valid = 0;
    std::size_t invalid = 0;
    for (const auto& r : read_vec_file("wycheproof/ed25519.vec")) {
        CAPTURE(r.where());
        CAPTURE(r.get("comment"));
        const bool ok = crypto::ed25519_verify(r.hex("pk"), r.hex("msg"), r.hex("sig"));
        if (r.get("result") == "valid") {
            CHECK(ok);
            ++valid;
        } else {
            REQUIRE(r.get("result") == "invalid");
            CHECK_FALSE(ok);
            ++invalid;
        }
    }
    CHECK(valid == 88);
    CHECK(invalid == 63);
}

TEST_CASE("e2e crypto: Ed25519 wrong sizes") {
    auto rng = test_rng("ed25519 sizes");
    const auto pair = crypto::ed25519_generate(*rng);
    const auto sig = crypto::ed25519_sign(pair.private_key, sim::as_bytes("m"));
    REQUIRE(sig);
    CHECK(crypto::ed25519_verify(pair.public_key, sim::as_bytes("m"), *sig));
    CHECK(crypto::ed25519_sign(ByteView{pair.private_key}.first(31), sim::as_bytes("m")).code() == Errc::invalid_key);
    CHECK(crypto::ed25519_from_seed(Bytes(33, 1)).code() == Errc::invalid_key);
    CHECK_FALSE(crypto::ed25519_verify(ByteView{pair.public_key}.first(31), sim::as_bytes("m"), *sig));
    CHECK_FALSE(crypto::ed25519_verify(pair.public_key, sim::as_bytes("m"), ByteView{*sig}.first(63)));
    Bytes longer = *sig;
    longer.push_back(0);
    CHECK_FALSE(crypto::ed25519_verify(pair.public_key, sim::as_bytes("m"), longer));
}

TEST_CASE("e2e crypto: Ed25519 to X25519 known answer (libsodium ed25519_convert)") {
    std::size_t checked = 0;
    for (const auto& r : read_vec_file("e2e/ed25519_convert.vec")) {
        CAPTURE(r.where());
        auto id = e2e::identity_from_private(r.hex("seed"));
        REQUIRE(id);
        auto pub = e2e::identity_dh_public(id->public_key);
        REQUIRE(pub);
        CHECK(*pub == r.hex("x25519_public"));
        auto priv = e2e::identity_dh_private(id->private_key);
        REQUIRE(priv);
        Bytes clamped = sb(*priv);
        clamp(clamped);
        CHECK(clamped == r.hex("x25519_private_clamped"));
        ++checked;
    }
    CHECK(checked == 1);
}

TEST_CASE("e2e crypto: the map agrees with X25519 of the converted private key") {
    auto check_seed = [](ByteView seed) {
        auto id = e2e::identity_from_private(seed);
        REQUIRE(id);
        auto priv = e2e::identity_dh_private(seed);
        REQUIRE(priv);
        auto derived = crypto::x25519_from_private(*priv);
        REQUIRE(derived);
        auto mapped = e2e::identity_dh_public(id->public_key);
        REQUIRE(mapped);
        CHECK(derived->public_key == *mapped);
    };
    std::size_t from_vectors = 0;
    for (const auto& r : read_vec_file("botan/pubkey/ed25519_pure.vec")) {
        if (from_vectors == 20) {
            break;
        }
        CAPTURE(r.where());
        check_seed(r.hex("Privkey"));
        ++from_vectors;
    }
    CHECK(from_vectors == 20);
    auto rng = test_rng("map consistency");
    for (int i = 0; i < 50; ++i) {
        check_seed(rng->secure_bytes(32));
    }
    // And DH between two converted identities is symmetric.
    const auto a = e2e::generate_identity(*rng);
    const auto b = e2e::generate_identity(*rng);
    auto ab =
        crypto::x25519(e2e::identity_dh_private(a.private_key).value(), e2e::identity_dh_public(b.public_key).value());
    auto ba =
        crypto::x25519(e2e::identity_dh_private(b.private_key).value(), e2e::identity_dh_public(a.public_key).value());
    REQUIRE(ab);
    REQUIRE(ba);
    CHECK(*ab == *ba);
}

TEST_CASE("e2e crypto: the map rejects bad encodings") {
    // p = 2^255 - 19, little-endian: ed ff .. ff 7f.
    Bytes p(32, 0xFF);
    p[0] = 0xED;
    p[31] = 0x7F;
    CHECK(e2e::identity_dh_public(p).code() == Errc::invalid_key);  // y = p
    Bytes p_plus_1 = p;
    p_plus_1[0] = 0xEE;
    CHECK(e2e::identity_dh_public(p_plus_1).code() == Errc::invalid_key);
    Bytes all_ff(32, 0xFF);  // y = 2^255 - 1 (sign bit ignored)
    CHECK(e2e::identity_dh_public(all_ff).code() == Errc::invalid_key);
    Bytes one(32, 0);
    one[0] = 1;
    CHECK(e2e::identity_dh_public(one).code() == Errc::invalid_key);  // neutral element
    Bytes one_signed = one;
    one_signed[31] = 0x80;
    CHECK(e2e::identity_dh_public(one_signed).code() == Errc::invalid_key);
    Bytes minus_one = p;
    minus_one[0] = 0xEC;  // y = p - 1 -> u = 0
    CHECK(e2e::identity_dh_public(minus_one).code() == Errc::invalid_key);
    CHECK(e2e::identity_dh_public(Bytes(31, 2)).code() == Errc::invalid_key);
    CHECK(e2e::identity_dh_public(Bytes(33, 2)).code() == Errc::invalid_key);
    CHECK(e2e::identity_dh_private(Bytes(31, 2)).code() == Errc::invalid_key);
    // y = p - 2 is canonical and fine; y = 0 maps to u = 1.
    Bytes p_minus_2 = p;
    p_minus_2[0] = 0xEB;
    CHECK(e2e::identity_dh_public(p_minus_2));
    auto zero = e2e::identity_dh_public(Bytes(32, 0));
    REQUIRE(zero);
    CHECK(*zero == one);
}

// ---------------------------------------------------------------- prekeys and bundles

TEST_CASE("e2e prekeys: signed prekey verifies; bundle checks") {
    auto rng = test_rng("bundle");
    const User bob("bob", *rng);
    CHECK(e2e::verify(bob.identity.public_key, e2e::encode_public_key(bob.spk.public_key), bob.spk.signature));
    CHECK(e2e::encode_public_key(bob.spk.public_key).size() == 33);
    CHECK(e2e::encode_public_key(bob.spk.public_key)[0] == 0x05);
    CHECK(e2e::verify_bundle(bob.bundle(true)));
    CHECK(e2e::verify_bundle(bob.bundle(false)));

    auto b = bob.bundle(true);
    b.signed_prekey_signature[5] ^= 0x10U;
    CHECK(e2e::verify_bundle(b).code() == Errc::auth_failed);
    b = bob.bundle(true);
    b.signed_prekey[0] ^= 0x01U;
    CHECK(e2e::verify_bundle(b).code() == Errc::auth_failed);
    b = bob.bundle(true);
    b.signed_prekey.pop_back();
    CHECK(e2e::verify_bundle(b).code() == Errc::invalid_key);
    b = bob.bundle(true);
    b.one_time_prekey.clear();
    CHECK(e2e::verify_bundle(b).code() == Errc::invalid_key);
    b = bob.bundle(false);
    b.one_time_prekey = bob.opks[0].public_key;
    CHECK(e2e::verify_bundle(b).code() == Errc::invalid_key);
    b = bob.bundle(true);
    b.signed_prekey_signature.push_back(0);
    CHECK(e2e::verify_bundle(b).code() == Errc::invalid_key);
}

// ---------------------------------------------------------------- X3DH

TEST_CASE("e2e X3DH: both sides agree, with and without a one-time prekey") {
    for (const bool with_opk : {true, false}) {
        CAPTURE(with_opk);
        auto rng = test_rng(with_opk ? "x3dh opk" : "x3dh no opk");
        const User alice("alice", *rng);
        const User bob("bob", *rng);
        auto a = e2e::Session::initiate(alice.identity, alice.name, bob.bundle(with_opk), bob.name, SuiteId::aes256_gcm,
                                        *rng);
        REQUIRE(a);
        CHECK_FALSE(a->received_any());
        const auto first = seal(*a, "first");
        auto info = e2e::inspect(first);
        REQUIRE(info);
        CHECK(info->type == e2e::MessageType::initial);
        REQUIRE(info->initial);
        CHECK(info->initial->identity_key == alice.identity.public_key);
        CHECK(info->initial->signed_prekey_id == bob.spk.id);
        CHECK(info->initial->one_time_prekey_id == (with_opk ? bob.opks[0].id : e2e::no_one_time_prekey));
        CHECK(info->initial->suite == SuiteId::aes256_gcm);
        // session id = first 8 bytes of SHA-256(EK_A)
        const auto h = crypto::sha256(info->initial->ephemeral_key);
        CHECK(info->session_id == Bytes(h.begin(), h.begin() + 8));
        CHECK(Bytes(a->session_id().begin(), a->session_id().end()) == info->session_id);

        auto b = respond_to(bob, first, alice.name, *rng);
        REQUIRE(b);
        CHECK(Bytes(b->session_id().begin(), b->session_id().end()) == info->session_id);
        CHECK(Bytes(b->peer_identity().begin(), b->peer_identity().end()) == alice.identity.public_key);
        CHECK(Bytes(a->peer_identity().begin(), a->peer_identity().end()) == bob.identity.public_key);
        expect_open(*b, first, "first");
        const auto reply = seal(*b, "reply");
        CHECK(e2e::inspect(reply)->type == e2e::MessageType::normal);
        expect_open(*a, reply, "reply");
        CHECK(a->received_any());
        CHECK(e2e::inspect(seal(*a, "after"))->type == e2e::MessageType::normal);
    }
}

TEST_CASE("e2e X3DH: the initiator sends initial messages until it has received one") {
    auto rng = test_rng("initial until received");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c = establish(alice, bob, *rng);
    const auto second = seal(c.alice, "second");
    CHECK(e2e::inspect(second)->type == e2e::MessageType::initial);
    expect_open(c.bob, second, "second");
    // The responder cannot seal before... it has received (it has): its messages are normal.
    const auto reply = seal(c.bob, "r");
    CHECK(e2e::inspect(reply)->type == e2e::MessageType::normal);
    expect_open(c.alice, reply, "r");
    CHECK(e2e::inspect(seal(c.alice, "third"))->type == e2e::MessageType::normal);
}

TEST_CASE("e2e X3DH: a bad signed prekey signature aborts with auth_failed") {
    auto rng = test_rng("bad spk");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    const User carol("carol", *rng);
    auto b = bob.bundle(true);
    b.signed_prekey_signature[63] ^= 0x01U;
    CHECK(e2e::Session::initiate(alice.identity, "alice", b, "bob", SuiteId::aes256_gcm, *rng).code() ==
          Errc::auth_failed);
    // A prekey signed by someone else.
    b = bob.bundle(true);
    b.signed_prekey_signature = carol.spk.signature;
    b.signed_prekey = carol.spk.public_key;
    CHECK(e2e::Session::initiate(alice.identity, "alice", b, "bob", SuiteId::aes256_gcm, *rng).code() ==
          Errc::auth_failed);
    // A bundle whose identity key has no X25519 form.
    b = bob.bundle(false);
    b.identity_key = Bytes(32, 0);
    b.identity_key[0] = 1;
    CHECK_FALSE(e2e::Session::initiate(alice.identity, "alice", b, "bob", SuiteId::aes256_gcm, *rng));
}

TEST_CASE("e2e X3DH: wrong identities or names do not open") {
    auto rng = test_rng("wrong identity");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    const User carol("carol", *rng);
    auto a = e2e::Session::initiate(alice.identity, alice.name, bob.bundle(true), bob.name, SuiteId::aes256_gcm, *rng);
    REQUIRE(a);
    const auto first = seal(*a, "hi");
    const auto info = e2e::inspect(first);
    REQUIRE(info);
    const auto& h = *info->initial;
    const auto* opk = bob.opk(h.one_time_prekey_id);

    SUBCASE("another initiator name") {
        auto b = e2e::Session::respond(bob.identity, bob.name, bob.spk, opk, h, "mallory", *rng);
        REQUIRE(b);
        CHECK(b->open(first).code() == Errc::auth_failed);
    }
    SUBCASE("another responder name") {
        auto b = e2e::Session::respond(bob.identity, "bobby", bob.spk, opk, h, alice.name, *rng);
        REQUIRE(b);
        CHECK(b->open(first).code() == Errc::auth_failed);
    }
    SUBCASE("another responder identity") {
        auto b = e2e::Session::respond(carol.identity, bob.name, bob.spk, opk, h, alice.name, *rng);
        REQUIRE(b);
        CHECK(b->open(first).code() == Errc::auth_failed);
    }
    SUBCASE("another initiator identity in the header") {
        auto forged = h;
        forged.identity_key = carol.identity.public_key;
        auto b = e2e::Session::respond(bob.identity, bob.name, bob.spk, opk, forged, alice.name, *rng);
        REQUIRE(b);
        CHECK(b->open(first).code() == Errc::auth_failed);
    }
    SUBCASE("the named prekeys are not the ones given") {
        CHECK(e2e::Session::respond(bob.identity, bob.name, bob.spk, nullptr, h, alice.name, *rng).code() ==
              Errc::invalid_key);
        CHECK(e2e::Session::respond(bob.identity, bob.name, bob.spk, &bob.opks[1], h, alice.name, *rng).code() ==
              Errc::invalid_key);
        auto other_spk = e2e::generate_signed_prekey(bob.identity, 8, *rng);
        CHECK(e2e::Session::respond(bob.identity, bob.name, other_spk, opk, h, alice.name, *rng).code() ==
              Errc::invalid_key);
    }
    SUBCASE("a mismatched identity pair is refused") {
        e2e::IdentityKeyPair mixed{bob.identity.private_key, carol.identity.public_key};
        CHECK(e2e::Session::respond(mixed, bob.name, bob.spk, opk, h, alice.name, *rng).code() == Errc::invalid_key);
        CHECK(e2e::Session::initiate(mixed, bob.name, alice.bundle(false), alice.name, SuiteId::aes256_gcm, *rng)
                  .code() == Errc::invalid_key);
    }
    SUBCASE("names longer than 255 bytes are refused") {
        const std::string long_name(256, 'x');
        CHECK(e2e::Session::initiate(alice.identity, long_name, bob.bundle(false), bob.name, SuiteId::aes256_gcm, *rng)
                  .code() == Errc::invalid_argument);
    }
}

// ---------------------------------------------------------------- Double Ratchet

TEST_CASE("e2e ratchet: ping-pong with DH steps") {
    auto rng = test_rng("ping pong");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c = establish(alice, bob, *rng);
    CHECK(c.bob.dh_steps() == 1);
    CHECK(c.bob.reply_pending());
    CHECK(c.alice.dh_steps() == 0);
    std::uint64_t last_a = 0;
    std::uint64_t last_b = c.bob.dh_steps();
    for (int round = 0; round < 6; ++round) {
        const auto m1 = seal(c.bob, "b" + std::to_string(round));
        CHECK_FALSE(c.bob.reply_pending());
        const auto m2 = seal(c.bob, "b2-" + std::to_string(round));
        expect_open(c.alice, m1, "b" + std::to_string(round));
        CHECK(c.alice.reply_pending());
        expect_open(c.alice, m2, "b2-" + std::to_string(round));
        CHECK(c.alice.dh_steps() == last_a + 1);
        last_a = c.alice.dh_steps();
        const auto m3 = seal(c.alice, "a" + std::to_string(round));
        CHECK_FALSE(c.alice.reply_pending());
        expect_open(c.bob, m3, "a" + std::to_string(round));
        CHECK(c.bob.dh_steps() == last_b + 1);
        last_b = c.bob.dh_steps();
        CHECK(c.bob.reply_pending());
    }
    CHECK(c.alice.dh_steps() == 6);
    CHECK(c.bob.dh_steps() == 7);
    // Ratchet keys change with every step.
    const auto k1 = seal(c.bob, "x");
    expect_open(c.alice, k1, "x");
    const auto k2 = seal(c.alice, "y");
    expect_open(c.bob, k2, "y");
    const auto k3 = seal(c.bob, "z");
    const std::size_t at = 1 + e2e::session_id_size;
    CHECK_FALSE(std::equal(k1.begin() + at, k1.begin() + at + 32, k3.begin() + at));
}

TEST_CASE("e2e ratchet: out-of-order delivery within the skip bound") {
    auto rng = test_rng("out of order");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c = establish(alice, bob, *rng);
    expect_open(c.alice, seal(c.bob, "reply"), "reply");

    std::vector<Bytes> msgs;
    for (int i = 0; i < 10; ++i) {
        msgs.push_back(seal(c.alice, "m" + std::to_string(i)));
    }
    for (const int i : {9, 3, 0, 5, 8, 1, 2, 7, 4, 6}) {
        expect_open(c.bob, msgs[static_cast<std::size_t>(i)], "m" + std::to_string(i));
    }
    CHECK(c.bob.skipped_keys() == 0);

    // Across a DH step: an old-chain message arrives after the new chain.
    const auto old0 = seal(c.alice, "old0");
    const auto old1 = seal(c.alice, "old1");
    expect_open(c.bob, old1, "old1");
    expect_open(c.alice, seal(c.bob, "turn"), "turn");
    const auto new0 = seal(c.alice, "new0");
    const auto new1 = seal(c.alice, "new1");
    expect_open(c.bob, new1, "new1");
    CHECK(c.bob.skipped_keys() == 2);  // old0 and new0
    expect_open(c.bob, old0, "old0");
    expect_open(c.bob, new0, "new0");
    CHECK(c.bob.skipped_keys() == 0);

    // Exactly max_skip skipped keys is allowed.
    std::vector<Bytes> many;
    for (std::uint32_t i = 0; i <= e2e::max_skip; ++i) {
        many.push_back(seal(c.alice, "k"));
    }
    expect_open(c.bob, many.back(), "k");
    CHECK(c.bob.skipped_keys() == e2e::max_skip);
    expect_open(c.bob, many.front(), "k");
}

TEST_CASE("e2e ratchet: a header needing more than max_skip keys is rejected and changes nothing") {
    auto rng = test_rng("max skip");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c = establish(alice, bob, *rng);
    expect_open(c.alice, seal(c.bob, "reply"), "reply");
    const auto msg = seal(c.alice, "normal");
    const auto before = c.bob.serialize();

    SUBCASE("n = 1,000,000 on the current chain") {
        auto bad = msg;
        put_u32(bad, n_offset(bad), 1000000);
        CHECK(c.bob.open(bad).code() == Errc::limit_reached);
    }
    SUBCASE("n = max_skip + 1 on the current chain") {
        auto bad = msg;
        put_u32(bad, n_offset(bad), e2e::max_skip + 1);
        CHECK(c.bob.open(bad).code() == Errc::limit_reached);
    }
    SUBCASE("n = 2^32 - 1") {
        auto bad = msg;
        put_u32(bad, n_offset(bad), 0xFFFFFFFFU);
        CHECK(c.bob.open(bad).code() == Errc::limit_reached);
    }
    SUBCASE("a new ratchet key with n = 1,000,000") {
        auto bad = msg;
        const auto other = crypto::x25519_generate(*rng);
        std::copy(other.public_key.begin(), other.public_key.end(), bad.begin() + 1 + e2e::session_id_size);
        put_u32(bad, n_offset(bad), 1000000);
        CHECK(c.bob.open(bad).code() == Errc::limit_reached);
    }
    SUBCASE("a new ratchet key with pn = 1,000,000") {
        auto bad = msg;
        const auto other = crypto::x25519_generate(*rng);
        std::copy(other.public_key.begin(), other.public_key.end(), bad.begin() + 1 + e2e::session_id_size);
        put_u32(bad, n_offset(bad) - 4, 1000000);
        CHECK(c.bob.open(bad).code() == Errc::limit_reached);
    }
    CHECK(c.bob.serialize() == before);
    expect_open(c.bob, msg, "normal");
}

TEST_CASE("e2e ratchet: replays fail and change nothing") {
    auto rng = test_rng("replay");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto a = e2e::Session::initiate(alice.identity, alice.name, bob.bundle(true), bob.name, SuiteId::aes256_gcm, *rng);
    REQUIRE(a);
    const auto first = seal(*a, "first");
    auto b = respond_to(bob, first, alice.name, *rng);
    REQUIRE(b);
    expect_open(*b, first, "first");
    auto state = b->serialize();
    CHECK(b->open(first).code() == Errc::auth_failed);
    CHECK(b->serialize() == state);

    const auto m0 = seal(*a, "m0");
    const auto m1 = seal(*a, "m1");
    expect_open(*b, m1, "m1");
    expect_open(*b, m0, "m0");  // from the skipped store
    state = b->serialize();
    CHECK(b->open(m0).code() == Errc::auth_failed);  // skipped key used up
    CHECK(b->open(m1).code() == Errc::auth_failed);
    CHECK(b->serialize() == state);
    const auto reply = seal(*b, "reply");
    expect_open(*a, reply, "reply");
    const auto a_state = a->serialize();
    CHECK(a->open(reply).code() == Errc::auth_failed);
    CHECK(a->serialize() == a_state);
}

TEST_CASE("e2e ratchet: bit flips anywhere fail and leave the state unchanged") {
    auto rng = test_rng("bit flips");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    for (const SuiteId suite : {SuiteId::aes256_gcm, SuiteId::tdes_cbc_hmac_sha256}) {
        CAPTURE(static_cast<int>(suite));
        auto c = establish(alice, bob, *rng, suite);
        // An initial message (the initiator has not received yet) and, after a reply, a normal one.
        const auto initial = seal(c.alice, "an initial message");
        for (int round = 0; round < 2; ++round) {
            const auto msg = round == 0 ? initial : seal(c.alice, "a normal message");
            if (round == 1) {
                CHECK(e2e::inspect(msg)->type == e2e::MessageType::normal);
            }
            const auto before = c.bob.serialize();
            for (std::size_t i = 0; i < msg.size(); ++i) {
                auto bad = msg;
                bad[i] ^= static_cast<std::uint8_t>(1U << (i % 8));
                CAPTURE(i);
                CHECK_FALSE(c.bob.open(bad));
            }
            CHECK_FALSE(c.bob.open(ByteView{msg}.first(msg.size() - 1)));
            auto longer = msg;
            longer.push_back(0);
            CHECK_FALSE(c.bob.open(longer));
            CHECK(c.bob.serialize() == before);
            expect_open(c.bob, msg, round == 0 ? "an initial message" : "a normal message");
            if (round == 0) {
                expect_open(c.alice, seal(c.bob, "reply"), "reply");
            }
        }
    }
}

TEST_CASE("e2e ratchet: messages of another session do not open") {
    auto rng = test_rng("other session");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c1 = establish(alice, bob, *rng);
    auto c2 = establish(alice, bob, *rng);
    CHECK(c1.bob.open(seal(c2.alice, "x")).code() == Errc::auth_failed);
}

TEST_CASE("e2e ratchet: the responder cannot seal before it has received") {
    auto rng = test_rng("responder first");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto a = e2e::Session::initiate(alice.identity, alice.name, bob.bundle(false), bob.name, SuiteId::aes256_gcm, *rng);
    REQUIRE(a);
    const auto first = seal(*a, "x");
    auto b = respond_to(bob, first, alice.name, *rng);
    REQUIRE(b);
    CHECK(b->seal(sim::as_bytes("too early")).code() == Errc::invalid_state);
}

TEST_CASE("e2e ratchet: serialize and deserialize mid-conversation") {
    auto rng = test_rng("persist");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c = establish(alice, bob, *rng);
    // Alice's state while she still sends initial messages.
    {
        auto restored = e2e::Session::deserialize(c.alice.serialize(), *rng);
        REQUIRE(restored);
        CHECK(restored->serialize() == c.alice.serialize());
        c.alice = std::move(restored).value();
    }
    const auto late = seal(c.alice, "late initial");
    CHECK(e2e::inspect(late)->type == e2e::MessageType::initial);
    expect_open(c.bob, seal(c.alice, "skipped ahead"), "skipped ahead");  // `late` is now a skipped key
    expect_open(c.alice, seal(c.bob, "reply"), "reply");

    for (int round = 0; round < 3; ++round) {
        auto a = e2e::Session::deserialize(c.alice.serialize(), *rng);
        auto b = e2e::Session::deserialize(c.bob.serialize(), *rng);
        REQUIRE(a);
        REQUIRE(b);
        CHECK(a->session_id().size() == e2e::session_id_size);
        CHECK(std::equal(a->session_id().begin(), a->session_id().end(), c.alice.session_id().begin()));
        CHECK(a->dh_steps() == c.alice.dh_steps());
        CHECK(b->skipped_keys() == c.bob.skipped_keys());
        CHECK(b->reply_pending() == c.bob.reply_pending());
        CHECK(a->received_any());
        CHECK(a->suite() == c.alice.suite());
        c.alice = std::move(a).value();
        c.bob = std::move(b).value();
        expect_open(c.bob, seal(c.alice, "a"), "a");
        expect_open(c.alice, seal(c.bob, "b"), "b");
    }
    expect_open(c.bob, late, "late initial");  // the skipped key survived three round trips through storage
}

TEST_CASE("e2e ratchet: truncated or garbage serialized state is rejected") {
    auto rng = test_rng("bad state");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c = establish(alice, bob, *rng);
    const auto skipped_msg = seal(c.alice, "0");
    expect_open(c.bob, seal(c.alice, "1"), "1");
    const auto state = c.bob.serialize();
    REQUIRE(c.bob.skipped_keys() == 1);
    REQUIRE(e2e::Session::deserialize(state, *rng));
    for (std::size_t len = 0; len < state.size(); ++len) {
        CAPTURE(len);
        CHECK_FALSE(e2e::Session::deserialize(ByteView{state}.first(len), *rng));
    }
    auto longer = state;
    longer.push_back(0);
    CHECK(e2e::Session::deserialize(longer, *rng).code() == Errc::trailing_bytes);
    auto bad = state;
    bad[0] = 2;
    CHECK(e2e::Session::deserialize(bad, *rng).code() == Errc::unsupported_version);
    bad = state;
    bad[1] = 9;
    CHECK(e2e::Session::deserialize(bad, *rng).code() == Errc::bad_field);
    bad = state;
    bad[2] = 0x80;
    CHECK(e2e::Session::deserialize(bad, *rng).code() == Errc::bad_field);
    // Flipping a presence flag shifts every later field: the length checks must catch it.
    for (const std::uint8_t flag : {0x04, 0x08, 0x10, 0x20}) {
        bad = state;
        bad[2] ^= flag;
        CHECK_FALSE(e2e::Session::deserialize(bad, *rng));
    }
    // The skipped-key count is the two bytes before the skipped entries (one entry of 68 bytes).
    bad = state;
    const std::size_t count_at = bad.size() - 68 - 2;
    bad[count_at] = 0xFF;
    bad[count_at + 1] = 0xFF;
    CHECK(e2e::Session::deserialize(bad, *rng).code() == Errc::bad_length);
    bad[count_at] = 0x00;
    bad[count_at + 1] = 0x02;
    CHECK(e2e::Session::deserialize(bad, *rng).code() == Errc::truncated);
    // The AD length (after version, suite, flags, session id and peer identity).
    bad = state;
    bad[3 + 8 + 32] = 0xFF;
    CHECK(e2e::Session::deserialize(bad, *rng).code() == Errc::bad_length);
    // Random garbage, including garbage behind a plausible prefix.
    for (int i = 0; i < 200; ++i) {
        auto junk = rng->bytes(static_cast<std::size_t>(i) * 3);
        if (i % 2 == 0 && junk.size() >= 3) {
            junk[0] = 1;
            junk[1] = 2;
            junk[2] = 0;
        }
        CHECK_FALSE(e2e::Session::deserialize(junk, *rng));
    }
    // The good state still works after all that.
    auto restored = e2e::Session::deserialize(state, *rng);
    REQUIRE(restored);
    expect_open(*restored, skipped_msg, "0");
}

TEST_CASE("e2e ratchet: the skipped-key store is bounded") {
    auto rng = test_rng("skipped bound");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c = establish(alice, bob, *rng);
    expect_open(c.alice, seal(c.bob, "reply"), "reply");
    std::vector<Bytes> first_chain;
    for (int chain = 0; chain < 3; ++chain) {
        std::vector<Bytes> msgs;
        for (std::uint32_t i = 0; i <= e2e::max_skip; ++i) {
            msgs.push_back(seal(c.alice, "c" + std::to_string(chain)));
        }
        expect_open(c.bob, msgs.back(), "c" + std::to_string(chain));
        CHECK(c.bob.skipped_keys() == std::min<std::size_t>(e2e::max_stored_skipped, (chain + 1) * e2e::max_skip));
        if (chain == 0) {
            first_chain = msgs;
        }
        if (chain < 2) {
            expect_open(c.alice, seal(c.bob, "turn"), "turn");
        } else {
            // The oldest keys (chain 0) were dropped; chain 2's are kept.
            CHECK(c.bob.open(first_chain.front()).code() == Errc::auth_failed);
            CHECK(c.bob.open(first_chain[first_chain.size() - 2]).code() == Errc::auth_failed);
            expect_open(c.bob, msgs.front(), "c2");
            CHECK(c.bob.skipped_keys() == e2e::max_stored_skipped - 1);
        }
    }
}

TEST_CASE("e2e ratchet: all three suites") {
    for (const SuiteId suite : {SuiteId::tdes_cbc_hmac_sha256, SuiteId::aes256_gcm, SuiteId::chacha20_poly1305}) {
        CAPTURE(static_cast<int>(suite));
        auto rng = test_rng("suite " + std::to_string(static_cast<int>(suite)));
        const User alice("alice", *rng);
        const User bob("bob", *rng);
        auto c = establish(alice, bob, *rng, suite);
        CHECK(c.alice.suite() == suite);
        CHECK(c.bob.suite() == suite);
        for (int round = 0; round < 3; ++round) {
            expect_open(c.alice, seal(c.bob, "from bob " + std::to_string(round)), "from bob " + std::to_string(round));
            expect_open(c.bob, seal(c.alice, std::string(100 + round, 'a')), std::string(100 + round, 'a'));
        }
        expect_open(c.bob, seal(c.alice, ""), "");
    }
    auto rng = test_rng("bad suite");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    CHECK(e2e::Session::initiate(alice.identity, alice.name, bob.bundle(false), bob.name, static_cast<SuiteId>(9), *rng)
              .code() == Errc::suite_not_allowed);
}

// ---------------------------------------------------------------- inspect

TEST_CASE("e2e inspect: truncated and garbage input") {
    auto rng = test_rng("inspect");
    const User alice("alice", *rng);
    const User bob("bob", *rng);
    auto c = establish(alice, bob, *rng);
    const auto initial = seal(c.alice, "initial");
    expect_open(c.bob, initial, "initial");
    expect_open(c.alice, seal(c.bob, "r"), "r");
    const auto normal = seal(c.alice, "normal");
    for (const auto& msg : {initial, normal}) {
        REQUIRE(e2e::inspect(msg));
        const std::size_t header = n_offset(msg) + 4;
        for (std::size_t len = 0; len < header + 16; ++len) {
            CAPTURE(len);
            CHECK(e2e::inspect(ByteView{msg}.first(len)).code() == Errc::truncated);
        }
        auto bad = msg;
        bad[0] = 3;
        CHECK(e2e::inspect(bad).code() == Errc::bad_field);
        bad[0] = 0;
        CHECK(e2e::inspect(bad).code() == Errc::bad_field);
    }
    auto bad = initial;
    bad[1 + 8 + 32 + 32 + 4 + 4] = 0;  // suite byte
    CHECK(e2e::inspect(bad).code() == Errc::bad_field);
    bad = initial;
    std::fill(bad.begin() + 9, bad.begin() + 9 + 32, std::uint8_t{0});
    bad[9] = 1;  // IK_A = the neutral element
    CHECK(e2e::inspect(bad).code() == Errc::invalid_key);
    for (int i = 0; i < 500; ++i) {
        const auto junk = rng->bytes(static_cast<std::size_t>(i % 200));
        const auto info = e2e::inspect(junk);
        if (info) {
            CHECK(junk.size() >= 1 + 8 + 32 + 8 + 16);
            CHECK((junk[0] == 1 || junk[0] == 2));
        }
        CHECK_FALSE(c.bob.open(junk));
    }
    expect_open(c.bob, normal, "normal");
}

// ---------------------------------------------------------------- safety numbers

TEST_CASE("e2e safety number: Signal's numeric fingerprint v0 known answer") {
    std::size_t checked = 0;
    for (const auto& r : read_vec_file("e2e/fingerprint.vec")) {
        CAPTURE(r.where());
        const auto a = r.hex("local_key");
        const auto b = r.hex("remote_key");
        const auto& expected = r.get("displayable");
        std::string grouped;
        for (std::size_t i = 0; i < expected.size(); i += 5) {
            grouped += (i == 0 ? "" : " ") + expected.substr(i, 5);
        }
        CHECK(e2e::safety_number(r.get("local_id"), a, r.get("remote_id"), b) == grouped);
        CHECK(e2e::safety_number(r.get("remote_id"), b, r.get("local_id"), a) == grouped);
        ++checked;
    }
    CHECK(checked == 1);
}

TEST_CASE("e2e safety number: symmetric, 60 digits, sensitive to every input") {
    auto rng = test_rng("safety");
    const auto a = e2e::generate_identity(*rng);
    const auto b = e2e::generate_identity(*rng);
    const auto c = e2e::generate_identity(*rng);
    const auto n = e2e::safety_number("alice", a.public_key, "bob", b.public_key);
    CHECK(n == e2e::safety_number("bob", b.public_key, "alice", a.public_key));
    REQUIRE(n.size() == 71);
    std::size_t digits = 0;
    for (std::size_t i = 0; i < n.size(); ++i) {
        if (i % 6 == 5) {
            CHECK(n[i] == ' ');
        } else {
            CHECK((n[i] >= '0' && n[i] <= '9'));
            ++digits;
        }
    }
    CHECK(digits == 60);
    CHECK(e2e::safety_number("alice", c.public_key, "bob", b.public_key) != n);
    CHECK(e2e::safety_number("alice", a.public_key, "bob", c.public_key) != n);
    CHECK(e2e::safety_number("alicf", a.public_key, "bob", b.public_key) != n);
    CHECK(e2e::safety_number("alice", a.public_key, "bo", b.public_key) != n);
    // The halves do not depend on which side is "a": swapping keys between names changes the number.
    CHECK(e2e::safety_number("alice", b.public_key, "bob", a.public_key) != n);
}
