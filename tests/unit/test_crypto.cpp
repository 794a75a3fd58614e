// Known-answer and negative tests for the crypto facade (sim/crypto.h).
//
// Vectors come from files under tests/vectors/ (see tests/vectors/SOURCES.md): Project Wycheproof (converted by
// scripts/import_vectors.py), NIST CAVP Triple-DES MMT files and Botan's test data (copied unchanged).
// Every file-driven test counts the records it checked and requires the count to be non-zero, so a missing or
// emptied file fails instead of passing silently.
#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/error.h>
#include <sim/rng.h>
#include <sim/testing.h>

#include "vec_reader.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <set>
#include <sstream>
#include <string>
#include <vector>

using sim::Bytes;
using sim::ByteView;
using sim::Errc;
using sim::to_hex;
using simtest::read_vec_file;
using simtest::VecRecord;
namespace crypto = sim::crypto;

namespace {

Bytes cat(ByteView a, ByteView b) {
    Bytes out(a.begin(), a.end());
    out.insert(out.end(), b.begin(), b.end());
    return out;
}

Bytes hex(std::string_view s) {
    Bytes out;
    REQUIRE_MESSAGE(sim::from_hex(s, out), "bad hex literal in the test");
    return out;
}

/// A record's field decoded from hex, or empty when the field is absent (Botan's .vec convention).
Bytes hex_or_empty(const VecRecord& r, const std::string& key) {
    return r.has(key) ? r.hex(key) : Bytes{};
}

/// Wycheproof flags are written comma-separated by scripts/import_vectors.py.
std::set<std::string> flags_of(const VecRecord& r) {
    std::set<std::string> out;
    std::stringstream ss(r.get("flags"));
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (!item.empty()) {
            out.insert(item);
        }
    }
    return out;
}

std::string label(const VecRecord& r) {
    return r.where() + (r.has("tcId") ? " tcId " + r.get("tcId") : std::string{});
}

std::vector<VecRecord> section(const std::string& file, const std::string& name) {
    std::vector<VecRecord> out;
    for (auto& r : read_vec_file(file)) {
        if (r.section == name) {
            out.push_back(std::move(r));
        }
    }
    return out;
}

bool all_zero(ByteView v) {
    return std::all_of(v.begin(), v.end(), [](std::uint8_t b) { return b == 0; });
}

/// A 24-byte three-key TDES key from a NIST record: KEY1/KEY2/KEY3, or a single `KEYs` used three times.
Bytes nist_tdes_key(const VecRecord& r) {
    if (r.has("KEYs")) {
        const auto k = r.hex("KEYs");
        return cat(cat(k, k), k);
    }
    return cat(cat(r.hex("KEY1"), r.hex("KEY2")), r.hex("KEY3"));
}

/// Keying option 2 (K1 || K2 || K1) for 16-byte keys; 24-byte keys unchanged.
Bytes tdes_key_24(Bytes key) {
    if (key.size() == 16) {
        key.insert(key.end(), key.begin(), key.begin() + 8);
    }
    return key;
}

}  // namespace

// ================================================================ X25519

TEST_CASE("Wycheproof X25519") {
    const auto records = section("wycheproof/x25519.vec", "X25519");
    std::size_t total = 0;
    std::size_t matched = 0;
    std::size_t rejected_zero = 0;
    std::size_t rejected_invalid = 0;
    for (const auto& r : records) {
        INFO(label(r));
        ++total;
        const auto flags = flags_of(r);
        const auto& result = r.get("result");
        const auto expected = r.hex("shared");
        const auto got = crypto::x25519(r.hex("private"), r.hex("public"));
        // Our x25519() refuses an all-zero shared secret (RFC 7748 s6.1); with a clamped scalar that is exactly
        // what a low-order public point produces.
        const bool must_reject_zero = flags.count("ZeroSharedSecret") != 0 || flags.count("LowOrderPublic") != 0;
        if (result == "invalid") {
            CHECK_FALSE(got.has_value());
            ++rejected_invalid;
        } else if (result == "valid" || (result == "acceptable" && !must_reject_zero)) {
            REQUIRE(got.has_value());
            CHECK(to_hex(*got) == to_hex(expected));
            ++matched;
        } else if (result == "acceptable") {
            CHECK(all_zero(expected));  // the file agrees this case yields the zero secret
            REQUIRE_FALSE(got.has_value());
            CHECK(got.code() == Errc::invalid_key);
            ++rejected_zero;
        } else {
            FAIL("unknown result '" << result << "'");
        }
    }
    MESSAGE("X25519: " << total << " cases, " << matched << " matched, " << rejected_zero
                       << " rejected as zero/low-order, " << rejected_invalid << " invalid rejected");
    CHECK(total > 0);
    CHECK(matched > 0);
    CHECK(rejected_zero > 0);
}

TEST_CASE("RFC 7748 s5.2 iterated X25519 (1 and 1,000 iterations)") {
    // k = u = 9; each step: k, u = X25519(k, u), k. The all-zero check cannot trigger: u is never low-order.
    Bytes k(crypto::x25519_key_size, 0);
    k[0] = 9;
    Bytes u = k;
    for (int i = 1; i <= 1000; ++i) {
        auto next = crypto::x25519(k, u);
        REQUIRE(next.has_value());
        u = k;
        k.assign(next->begin(), next->end());
        if (i == 1) {
            CHECK(to_hex(k) == "422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079");
        }
    }
    CHECK(to_hex(k) == "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");
}

TEST_CASE("X25519 key pairs agree with the scalar multiplication and with each other") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("x25519 key pair test"));
    const auto a = crypto::x25519_generate(*rng);
    const auto b = crypto::x25519_generate(*rng);
    REQUIRE(a.private_key.size() == crypto::x25519_key_size);
    REQUIRE(a.public_key.size() == crypto::x25519_key_size);
    CHECK(a.public_key != b.public_key);

    Bytes base(crypto::x25519_key_size, 0);
    base[0] = 9;
    const auto pub_a = crypto::x25519(a.private_key, base);
    REQUIRE(pub_a.has_value());
    CHECK(to_hex(*pub_a) == to_hex(a.public_key));

    const auto again = crypto::x25519_from_private(a.private_key);
    REQUIRE(again.has_value());
    CHECK(again->public_key == a.public_key);

    const auto ab = crypto::x25519(a.private_key, b.public_key);
    const auto ba = crypto::x25519(b.private_key, a.public_key);
    REQUIRE(ab.has_value());
    REQUIRE(ba.has_value());
    CHECK(to_hex(*ab) == to_hex(*ba));
}

TEST_CASE("X25519 rejects wrong sizes and the zero point") {
    const Bytes k32(32, 0x42);
    CHECK(crypto::x25519(Bytes(31, 1), k32).code() == Errc::invalid_key);
    CHECK(crypto::x25519(Bytes(33, 1), k32).code() == Errc::invalid_key);
    CHECK(crypto::x25519(k32, Bytes(31, 1)).code() == Errc::invalid_key);
    CHECK(crypto::x25519(k32, Bytes{}).code() == Errc::invalid_key);
    CHECK(crypto::x25519(k32, Bytes(32, 0)).code() == Errc::invalid_key);  // u = 0: zero shared secret
    CHECK(crypto::x25519_from_private(Bytes(31, 1)).code() == Errc::invalid_key);
    CHECK(crypto::x25519_from_private(Bytes{}).code() == Errc::invalid_key);
}

// ================================================================ AEAD

namespace {

struct AeadCounts {
    std::size_t total = 0;
    std::size_t valid = 0;
    std::size_t auth_failed = 0;
    std::size_t bad_nonce = 0;
};

AeadCounts run_wycheproof_aead(const std::string& file, const std::string& name, crypto::AeadAlgorithm alg) {
    AeadCounts counts;
    for (const auto& r : section(file, name)) {
        INFO(label(r));
        ++counts.total;
        const auto key = r.hex("key");
        const auto iv = r.hex("iv");
        const auto aad = r.hex("aad");
        const auto msg = r.hex("msg");
        const auto ct_tag = cat(r.hex("ct"), r.hex("tag"));
        const auto& result = r.get("result");
        REQUIRE(iv.size() * 8 == std::stoul(r.get("ivSize")));

        auto made = crypto::make_aead(alg, key);
        if (key.size() != crypto::aead_key_size_of(alg)) {
            CHECK(made.code() == Errc::invalid_key);
            continue;
        }
        REQUIRE(made.has_value());
        auto& aead = **made;

        if (iv.size() != crypto::aead_nonce_size) {
            // The facade cannot express other nonce sizes; it must refuse them in both directions.
            CHECK(result != "valid");
            CHECK(aead.seal(iv, aad, msg).code() == Errc::invalid_argument);
            CHECK(aead.open(iv, aad, ct_tag).code() == Errc::invalid_argument);
            ++counts.bad_nonce;
        } else if (result == "valid") {
            const auto sealed = aead.seal(iv, aad, msg);
            REQUIRE(sealed.has_value());
            CHECK(to_hex(*sealed) == to_hex(ct_tag));
            const auto opened = aead.open(iv, aad, ct_tag);
            REQUIRE(opened.has_value());
            CHECK(to_hex(*opened) == to_hex(msg));
            ++counts.valid;
        } else if (result == "invalid") {
            const auto opened = aead.open(iv, aad, ct_tag);
            CHECK_FALSE(opened.has_value());
            CHECK(opened.code() == Errc::auth_failed);
            // Sealing the same message must produce a different (the correct) tag.
            const auto sealed = aead.seal(iv, aad, msg);
            REQUIRE(sealed.has_value());
            CHECK(*sealed != ct_tag);
            ++counts.auth_failed;
        } else {
            FAIL("unexpected result '" << result << "'");
        }
    }
    MESSAGE(name << ": " << counts.total << " cases, " << counts.valid << " valid, " << counts.auth_failed
                 << " auth_failed, " << counts.bad_nonce << " refused nonce sizes");
    return counts;
}

}  // namespace

TEST_CASE("Wycheproof AES-256-GCM (96-bit nonces)") {
    const auto c = run_wycheproof_aead("wycheproof/aes256_gcm.vec", "AES-256/GCM", crypto::AeadAlgorithm::aes256_gcm);
    CHECK(c.total > 0);
    CHECK(c.valid > 0);
    CHECK(c.auth_failed > 0);
}

TEST_CASE("Wycheproof AES-128-GCM (96-bit nonces)") {
    const auto c = run_wycheproof_aead("wycheproof/aes128_gcm.vec", "AES-128/GCM", crypto::AeadAlgorithm::aes128_gcm);
    CHECK(c.total > 0);
    CHECK(c.valid > 0);
    CHECK(c.auth_failed > 0);
    // A 32-byte key is refused for AES-128-GCM, a 16-byte key for AES-256-GCM: the sizes cannot be mixed up.
    CHECK(crypto::make_aead(crypto::AeadAlgorithm::aes128_gcm, Bytes(32, 1)).code() == Errc::invalid_key);
    CHECK(crypto::make_aead(crypto::AeadAlgorithm::aes256_gcm, Bytes(16, 1)).code() == Errc::invalid_key);
    auto made = crypto::make_aead(crypto::AeadAlgorithm::aes128_gcm, Bytes(16, 1));
    REQUIRE(made.has_value());
    CHECK((*made)->rekey(Bytes(32, 1)).code() == Errc::invalid_key);
    CHECK((*made)->rekey(Bytes(16, 2)).has_value());
}

TEST_CASE("Wycheproof ChaCha20-Poly1305") {
    const auto c = run_wycheproof_aead("wycheproof/chacha20_poly1305.vec", "ChaCha20Poly1305",
                                       crypto::AeadAlgorithm::chacha20_poly1305);
    CHECK(c.total > 0);
    CHECK(c.valid > 0);
    CHECK(c.auth_failed > 0);
    CHECK(c.bad_nonce > 0);
}

TEST_CASE("AEAD facade rejects bad keys, nonces and tampered input") {
    for (const auto alg : {crypto::AeadAlgorithm::aes256_gcm, crypto::AeadAlgorithm::chacha20_poly1305}) {
        INFO("algorithm " << static_cast<int>(alg));
        for (const std::size_t n : {0, 16, 24, 31, 33, 64}) {
            CHECK(crypto::make_aead(alg, Bytes(n, 7)).code() == Errc::invalid_key);
        }
        const Bytes key(32, 0x11);
        auto made = crypto::make_aead(alg, key);
        REQUIRE(made.has_value());
        auto& aead = **made;
        CHECK(aead.rekey(Bytes(16, 1)).code() == Errc::invalid_key);

        const Bytes nonce(12, 0x22);
        const Bytes ad = hex("0102030405");
        const Bytes msg = hex("48656c6c6f2c20776f726c64212048656c6c6f2c20776f726c6421");
        for (const std::size_t n : {0, 8, 11, 13, 16, 24}) {
            CHECK(aead.seal(Bytes(n, 0x22), ad, msg).code() == Errc::invalid_argument);
            CHECK(aead.open(Bytes(n, 0x22), ad, Bytes(40, 0)).code() == Errc::invalid_argument);
        }

        const auto sealed_r = aead.seal(nonce, ad, msg);
        REQUIRE(sealed_r.has_value());
        const Bytes& sealed = *sealed_r;
        REQUIRE(sealed.size() == msg.size() + crypto::aead_tag_size);

        // Shorter than a tag, and truncated by one byte.
        for (std::size_t n = 0; n < crypto::aead_tag_size; ++n) {
            CHECK(aead.open(nonce, ad, ByteView(sealed).first(n)).code() == Errc::auth_failed);
        }
        CHECK(aead.open(nonce, ad, ByteView(sealed).first(sealed.size() - 1)).code() == Errc::auth_failed);
        // Every single bit flip, in the ciphertext and in the tag.
        for (std::size_t i = 0; i < sealed.size() * 8; ++i) {
            Bytes bad = sealed;
            bad[i / 8] = static_cast<std::uint8_t>(bad[i / 8] ^ (1U << (i % 8)));
            CHECK(aead.open(nonce, ad, bad).code() == Errc::auth_failed);
        }
        // Wrong associated data, wrong nonce, extra trailing byte.
        CHECK(aead.open(nonce, hex("0102030406"), sealed).code() == Errc::auth_failed);
        CHECK(aead.open(nonce, {}, sealed).code() == Errc::auth_failed);
        Bytes nonce2 = nonce;
        nonce2[11] ^= 1U;
        CHECK(aead.open(nonce2, ad, sealed).code() == Errc::auth_failed);
        CHECK(aead.open(nonce, ad, cat(sealed, hex("00"))).code() == Errc::auth_failed);

        // The object still works after failures, and seal_into appends.
        const auto opened = aead.open(nonce, ad, sealed);
        REQUIRE(opened.has_value());
        CHECK(*opened == msg);
        Bytes out = hex("aabb");
        REQUIRE(aead.seal_into(nonce, ad, msg, out).has_value());
        CHECK(out == cat(hex("aabb"), sealed));

        // After rekey the old ciphertext no longer opens; rekeying back restores it.
        REQUIRE(aead.rekey(Bytes(32, 0x12)).has_value());
        CHECK(aead.open(nonce, ad, sealed).code() == Errc::auth_failed);
        REQUIRE(aead.rekey(key).has_value());
        CHECK(aead.open(nonce, ad, sealed).has_value());
    }
}

// ================================================================ HKDF, HMAC, SHA-256

TEST_CASE("Wycheproof HKDF-SHA256") {
    std::size_t total = 0;
    std::size_t valid = 0;
    std::size_t invalid = 0;
    for (const auto& r : section("wycheproof/hkdf_sha256.vec", "HKDF-SHA-256")) {
        INFO(label(r));
        ++total;
        const auto size = std::stoul(r.get("size"));
        const auto got = crypto::hkdf_sha256(r.hex("salt"), r.hex("ikm"), r.hex("info"), size);
        if (r.get("result") == "valid") {
            REQUIRE(got.has_value());
            CHECK(to_hex(*got) == to_hex(r.hex("okm")));
            ++valid;
        } else if (r.get("result") == "invalid") {
            CHECK(flags_of(r).count("SizeTooLarge") == 1);  // the only kind of invalid case HKDF can have
            CHECK(got.code() == Errc::invalid_argument);
            ++invalid;
        } else {
            FAIL("unexpected result '" << r.get("result") << "'");
        }
    }
    CHECK(total > 0);
    CHECK(valid > 0);
    CHECK(invalid > 0);
}

TEST_CASE("RFC 5869 A.1-A.3 (Wycheproof HKDF tcId 1-3)") {
    std::set<std::string> seen;
    for (const auto& r : section("wycheproof/hkdf_sha256.vec", "HKDF-SHA-256")) {
        const auto& id = r.get("tcId");
        if (id != "1" && id != "2" && id != "3") {
            continue;
        }
        INFO("RFC 5869 A." << id);
        CHECK(r.get("comment") == "RFC 5869");
        const auto got = crypto::hkdf_sha256(r.hex("salt"), r.hex("ikm"), r.hex("info"), std::stoul(r.get("size")));
        REQUIRE(got.has_value());
        CHECK(to_hex(*got) == to_hex(r.hex("okm")));
        seen.insert(id);
    }
    CHECK(seen.size() == 3);
}

TEST_CASE("Botan HKDF-SHA256: Extract, Expand and both (RFC 5869 A.1-A.3)") {
    const std::string file = "botan/kdf/hkdf.vec";
    std::size_t n = 0;
    for (const auto& r : section(file, "HKDF(HMAC(SHA-256))")) {
        INFO(label(r));
        const auto out = r.hex("Output");
        const auto got =
            crypto::hkdf_sha256(hex_or_empty(r, "Salt"), r.hex("Secret"), hex_or_empty(r, "Label"), out.size());
        REQUIRE(got.has_value());
        CHECK(to_hex(*got) == to_hex(out));
        ++n;
    }
    for (const auto& r : section(file, "HKDF-Extract(HMAC(SHA-256))")) {
        INFO(label(r));
        CHECK(to_hex(crypto::hkdf_sha256_extract(hex_or_empty(r, "Salt"), r.hex("Secret"))) == to_hex(r.hex("Output")));
        ++n;
    }
    for (const auto& r : section(file, "HKDF-Expand(HMAC(SHA-256))")) {
        INFO(label(r));
        const auto out = r.hex("Output");
        // In Botan's Expand records `Salt` is the info string.
        const auto got = crypto::hkdf_sha256_expand(r.hex("Secret"), hex_or_empty(r, "Salt"), out.size());
        REQUIRE(got.has_value());
        CHECK(to_hex(*got) == to_hex(out));
        ++n;
    }
    CHECK(n == 9);  // three RFC cases in each of the three sections
}

TEST_CASE("HKDF length limits") {
    const Bytes prk(32, 0x0b);
    CHECK(crypto::hkdf_sha256_expand(prk, {}, 255 * 32 + 1).code() == Errc::invalid_argument);
    CHECK(crypto::hkdf_sha256(prk, prk, {}, 255 * 32 + 1).code() == Errc::invalid_argument);
    CHECK(crypto::hkdf_sha256(prk, prk, {}, static_cast<std::size_t>(-1)).code() == Errc::invalid_argument);
    const auto max = crypto::hkdf_sha256_expand(prk, {}, 255 * 32);
    REQUIRE(max.has_value());
    CHECK(max->size() == 255 * 32);
    const auto empty = crypto::hkdf_sha256_expand(prk, {}, 0);
    REQUIRE(empty.has_value());
    CHECK(empty->empty());
    // A shorter output is a prefix of a longer one (RFC 5869 s2.3: T(1) || T(2) || ...).
    const auto short_out = crypto::hkdf_sha256_expand(prk, hex("01"), 45);
    const auto long_out = crypto::hkdf_sha256_expand(prk, hex("01"), 100);
    REQUIRE(short_out.has_value());
    REQUIRE(long_out.has_value());
    CHECK(std::equal(short_out->begin(), short_out->end(), long_out->begin()));
}

TEST_CASE("Wycheproof HMAC-SHA256 (full and truncated tags)") {
    std::size_t total = 0;
    std::size_t full_valid = 0;
    std::size_t truncated = 0;
    std::size_t invalid = 0;
    for (const auto& r : section("wycheproof/hmac_sha256.vec", "HMAC-SHA-256")) {
        INFO(label(r));
        ++total;
        const auto tag = r.hex("tag");
        REQUIRE(tag.size() * 8 == std::stoul(r.get("tagSize")));
        REQUIRE(tag.size() <= crypto::sha256_size);
        const auto full = crypto::hmac_sha256(r.hex("key"), r.hex("msg"));
        REQUIRE(full.size() == crypto::sha256_size);
        // A verifier of a truncated tag compares the leading bytes of the full MAC, in constant time.
        const bool verifies = sim::constant_time_equal(ByteView(full).first(tag.size()), tag);
        const auto& result = r.get("result");
        if (result == "valid") {
            CHECK(verifies);
            if (tag.size() == crypto::sha256_size) {
                CHECK(to_hex(full) == to_hex(tag));
                ++full_valid;
            } else {
                ++truncated;
            }
        } else if (result == "invalid") {
            CHECK_FALSE(verifies);
            ++invalid;
        } else {
            FAIL("unexpected result '" << result << "'");
        }
    }
    CHECK(total > 0);
    CHECK(full_valid > 0);
    CHECK(truncated > 0);
    CHECK(invalid > 0);
}

TEST_CASE("HMAC-SHA256 accepts keys of any length (RFC 2104 s2: long keys are hashed first)") {
    const Bytes msg = hex("54657374");
    for (const std::size_t n : {0, 1, 32, 64, 65, 200, 512, 513, 5000}) {
        INFO("key length " << n);
        const Bytes key(n, 0xaa);
        const auto mac = crypto::hmac_sha256(key, msg);
        CHECK(mac.size() == crypto::sha256_size);
        if (n > 64) {
            // Keys longer than the 64-byte block are replaced by their hash.
            CHECK(to_hex(mac) == to_hex(crypto::hmac_sha256(crypto::sha256(key), msg)));
        }
    }
}

TEST_CASE("SHA-256 (FIPS 180-2 examples)") {
    CHECK(to_hex(crypto::sha256({})) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(to_hex(crypto::sha256(sim::as_bytes("abc"))) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK(crypto::sha256(sim::as_bytes("ab"), sim::as_bytes("c")) == crypto::sha256(sim::as_bytes("abc")));
    CHECK(crypto::sha256({}, sim::as_bytes("abc")) == crypto::sha256(sim::as_bytes("abc")));
}

// ================================================================ Triple-DES

namespace {

/// NIST CAVP MMT file: [ENCRYPT] records are checked by encrypting, [DECRYPT] by decrypting; both also round-trip.
/// Returns {encrypt records, decrypt records}.
std::pair<std::size_t, std::size_t> run_nist_tdes(const std::string& file, bool cbc) {
    std::size_t enc = 0;
    std::size_t dec = 0;
    for (const auto& r : read_vec_file(file)) {
        INFO(r.where() << " COUNT " << r.get("COUNT"));
        const auto key = nist_tdes_key(r);
        const auto pt = r.hex("PLAINTEXT");
        const auto ct = r.hex("CIPHERTEXT");
        REQUIRE(key.size() == crypto::tdes_key_size);
        const auto e =
            cbc ? crypto::tdes_cbc_encrypt(key, r.hex("IV"), pt, false) : sim::testing::tdes_ecb_encrypt(key, pt);
        const auto d =
            cbc ? crypto::tdes_cbc_decrypt(key, r.hex("IV"), ct, false) : sim::testing::tdes_ecb_decrypt(key, ct);
        REQUIRE(e.has_value());
        REQUIRE(d.has_value());
        if (r.section == "ENCRYPT") {
            CHECK(to_hex(*e) == to_hex(ct));
            CHECK(to_hex(*d) == to_hex(pt));
            ++enc;
        } else if (r.section == "DECRYPT") {
            CHECK(to_hex(*d) == to_hex(pt));
            CHECK(to_hex(*e) == to_hex(ct));
            ++dec;
        } else {
            FAIL("unexpected section '" << r.section << "'");
        }
    }
    MESSAGE(file << ": " << enc << " encrypt, " << dec << " decrypt");
    return {enc, dec};
}

}  // namespace

TEST_CASE("NIST CAVP TDES MMT, three-key, ECB and CBC, both directions") {
    for (const auto& [file, cbc] :
         {std::pair{"nist/bc-test-data/TECBMMT3.rsp", false}, std::pair{"nist/bc-test-data/TCBCMMT3.rsp", true},
          std::pair{"nist/pyca/TCBCMMT3.rsp", true}}) {
        const auto [enc, dec] = run_nist_tdes(file, cbc);
        CHECK(enc > 0);
        CHECK(dec > 0);
    }
}

TEST_CASE("NIST CAVP TDES MMT, two-key (K1 = K3), decrypt") {
    for (const auto& [file, cbc] :
         {std::pair{"nist/bc-test-data/TECBMMT2.rsp", false}, std::pair{"nist/bc-test-data/TCBCMMT2.rsp", true}}) {
        const auto [enc, dec] = run_nist_tdes(file, cbc);
        CHECK(enc == 0);  // CAVS 18 tests two-key TDES in the decrypt direction only
        CHECK(dec > 0);
    }
}

TEST_CASE("Botan TripleDES ECB (des.vec)") {
    std::size_t n = 0;
    for (const auto& r : section("botan/block/des.vec", "TripleDES")) {
        INFO(label(r));
        const auto key = tdes_key_24(r.hex("Key"));
        const auto in = r.hex("In");
        const auto out = r.hex("Out");
        REQUIRE(key.size() == crypto::tdes_key_size);
        const auto e = sim::testing::tdes_ecb_encrypt(key, in);
        const auto d = sim::testing::tdes_ecb_decrypt(key, out);
        REQUIRE(e.has_value());
        REQUIRE(d.has_value());
        CHECK(to_hex(*e) == to_hex(out));
        CHECK(to_hex(*d) == to_hex(in));
        ++n;
    }
    CHECK(n > 0);
}

TEST_CASE("Botan TripleDES CBC, NoPadding and PKCS7 (cbc.vec)") {
    for (const auto& [name, pkcs7] :
         {std::pair{"TripleDES/CBC/NoPadding", false}, std::pair{"TripleDES/CBC/PKCS7", true}}) {
        std::size_t n = 0;
        for (const auto& r : section("botan/modes/cbc.vec", name)) {
            INFO(label(r));
            const auto key = r.hex("Key");
            const auto iv = r.hex("Nonce");
            const auto in = r.hex("In");
            const auto out = r.hex("Out");
            const auto e = crypto::tdes_cbc_encrypt(key, iv, in, pkcs7);
            const auto d = crypto::tdes_cbc_decrypt(key, iv, out, pkcs7);
            REQUIRE(e.has_value());
            REQUIRE(d.has_value());
            CHECK(to_hex(*e) == to_hex(out));
            CHECK(to_hex(*d) == to_hex(in));
            ++n;
        }
        INFO(name);
        CHECK(n > 0);
    }
}

TEST_CASE("TDES facade rejects bad keys, IVs, lengths and padding") {
    const Bytes key = hex("0123456789abcdef23456789abcdef01456789abcdef0123");
    const Bytes iv = hex("1234567890abcdef");
    const Bytes block = hex("6bc1bee22e409f96");

    for (const std::size_t n : {0, 8, 16, 23, 25, 32}) {
        const Bytes bad_key(n, 0x5a);
        CHECK(crypto::tdes_cbc_encrypt(bad_key, iv, block, false).code() == Errc::invalid_key);
        CHECK(crypto::tdes_cbc_decrypt(bad_key, iv, block, true).code() == Errc::invalid_key);
        CHECK(sim::testing::tdes_ecb_encrypt(bad_key, block).code() == Errc::invalid_key);
        CHECK(sim::testing::tdes_ecb_decrypt(bad_key, block).code() == Errc::invalid_key);
    }
    for (const std::size_t n : {0, 7, 9, 16}) {
        CHECK(crypto::tdes_cbc_encrypt(key, Bytes(n, 1), block, true).code() == Errc::invalid_argument);
        CHECK(crypto::tdes_cbc_decrypt(key, Bytes(n, 1), block, false).code() == Errc::invalid_argument);
    }
    // Partial blocks: a caller error when encrypting without padding, a bad length when decrypting.
    for (const std::size_t n : {1, 7, 9, 15}) {
        const Bytes partial(n, 0x33);
        CHECK(crypto::tdes_cbc_encrypt(key, iv, partial, false).code() == Errc::invalid_argument);
        CHECK(crypto::tdes_cbc_decrypt(key, iv, partial, false).code() == Errc::bad_length);
        CHECK(crypto::tdes_cbc_decrypt(key, iv, partial, true).code() == Errc::bad_length);
        CHECK(sim::testing::tdes_ecb_encrypt(key, partial).code() == Errc::bad_length);
        CHECK(sim::testing::tdes_ecb_decrypt(key, partial).code() == Errc::bad_length);
    }
    CHECK(crypto::tdes_cbc_decrypt(key, iv, {}, true).code() == Errc::bad_length);

    // PKCS7: any length encrypts to the next whole block; the empty message is one block of 08s.
    for (std::size_t n = 0; n <= 17; ++n) {
        const Bytes msg(n, static_cast<std::uint8_t>(n));
        const auto ct = crypto::tdes_cbc_encrypt(key, iv, msg, true);
        REQUIRE(ct.has_value());
        CHECK(ct->size() == (n / 8 + 1) * 8);
        const auto pt = crypto::tdes_cbc_decrypt(key, iv, *ct, true);
        REQUIRE(pt.has_value());
        CHECK(*pt == msg);
    }

    // Bad PKCS7 padding: encrypt chosen final blocks without padding, then decrypt with padding.
    for (const auto& last : {hex("0102030405060700"),     // pad byte 0
                             hex("0102030405060709"),     // pad byte larger than the block
                             hex("01020304050607ff"),     // pad byte 255
                             hex("0102030405060302"),     // pad 2 but the byte before is 3
                             hex("0108080808080808")}) {  // pad 8 but one byte of the run differs
        INFO("final block " << to_hex(last));
        const auto ct = crypto::tdes_cbc_encrypt(key, iv, cat(block, last), false);
        REQUIRE(ct.has_value());
        CHECK(crypto::tdes_cbc_decrypt(key, iv, *ct, true).code() == Errc::auth_failed);
    }
    // Control: the same construction with valid padding decrypts.
    const auto good = crypto::tdes_cbc_encrypt(key, iv, cat(block, hex("0102030405030303")), false);
    REQUIRE(good.has_value());
    const auto good_pt = crypto::tdes_cbc_decrypt(key, iv, *good, true);
    REQUIRE(good_pt.has_value());
    CHECK(*good_pt == cat(block, hex("0102030405")));
}

// ================================================================ RNG and byte helpers

TEST_CASE("Deterministic RNG: same seed, same bytes; different seed, different bytes") {
    const auto seed_a = sim::as_bytes("seed A");
    const auto seed_b = sim::as_bytes("seed B");
    auto a1 = sim::make_deterministic_rng(seed_a);
    auto a2 = sim::make_deterministic_rng(seed_a);
    auto b = sim::make_deterministic_rng(seed_b);
    const auto x1 = a1->bytes(64);
    const auto x2 = a2->bytes(64);
    const auto y = b->bytes(64);
    CHECK(x1 == x2);
    CHECK(x1 != y);
    // The stream continues: the next draw differs from the first, and stays reproducible.
    const auto x1_next = a1->bytes(64);
    CHECK(x1_next != x1);
    CHECK(x1_next == a2->bytes(64));
}

TEST_CASE("System RNG output is not constant") {
    auto rng = sim::make_system_rng();
    const auto a = rng->bytes(32);
    const auto b = rng->bytes(32);
    CHECK(a != b);
    CHECK(a != Bytes(32, 0));
    const auto distinct = std::set<std::uint8_t>(a.begin(), a.end()).size();
    CHECK(distinct > 8);  // 32 random bytes with <= 8 distinct values has probability < 2^-60
}

TEST_CASE("secure_zero and constant_time_equal") {
    Bytes buf = hex("0102030405060708");
    sim::secure_zero(buf.data(), buf.size());
    CHECK(buf == Bytes(8, 0));
    sim::secure_zero(nullptr, 0);  // no-op, must not crash

    const Bytes a = hex("00112233445566778899");
    Bytes b = a;
    CHECK(sim::constant_time_equal(a, b));
    CHECK(sim::constant_time_equal({}, {}));
    for (std::size_t i = 0; i < b.size() * 8; ++i) {
        Bytes c = a;
        c[i / 8] = static_cast<std::uint8_t>(c[i / 8] ^ (1U << (i % 8)));
        CHECK_FALSE(sim::constant_time_equal(a, c));
    }
    CHECK_FALSE(sim::constant_time_equal(a, ByteView(a).first(a.size() - 1)));  // prefix, different length
    CHECK_FALSE(sim::constant_time_equal(a, cat(a, hex("00"))));
    CHECK_FALSE(sim::constant_time_equal(a, {}));
}
