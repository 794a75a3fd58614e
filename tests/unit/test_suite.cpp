// Record suites: names, policy, and the per-epoch RecordCipher of each suite (docs/protocol.md section 4).
#include <sim/crypto.h>
#include <sim/session.h>
#include <sim/suite.h>

#include <doctest/doctest.h>

#include <array>
#include <cctype>
#include <string>
#include <vector>

namespace {

using sim::Bytes;
using sim::ByteView;
using sim::Errc;
using sim::SuiteId;

constexpr std::array<SuiteId, 3> all_suites{SuiteId::tdes_cbc_hmac_sha256, SuiteId::aes256_gcm,
                                            SuiteId::chacha20_poly1305};

Bytes pattern(std::size_t n, std::uint8_t seed) {
    Bytes b(n);
    for (std::size_t i = 0; i < n; ++i) {
        b[i] = static_cast<std::uint8_t>(seed + i * 131U);
    }
    return b;
}

std::unique_ptr<sim::Rng> test_rng(std::uint8_t seed = 1) {
    const std::array<std::uint8_t, 32> s{seed};
    return sim::make_deterministic_rng(s);
}

std::unique_ptr<sim::RecordCipher> cipher(SuiteId id, ByteView key, sim::Rng& rng) {
    auto c = sim::make_record_cipher(id, key, rng);
    REQUIRE(c.has_value());
    return std::move(c).value();
}

Bytes header_for(SuiteId id, std::uint64_t seq) {
    Bytes h(sim::record_header_size, 0);
    h[0] = 1;
    h[1] = static_cast<std::uint8_t>(id);
    for (std::size_t i = 0; i < 8; ++i) {
        h[8 + i] = static_cast<std::uint8_t>(seq >> (8U * (7 - i)));
    }
    return h;
}

sim::SecureBytes derive(ByteView key, std::string_view label, std::size_t len) {
    const auto prk = sim::crypto::hkdf_sha256_extract({}, key);
    auto out = sim::crypto::hkdf_sha256_expand(prk, sim::as_bytes(label), len);
    REQUIRE(out.has_value());
    return std::move(out).value();
}

}  // namespace

TEST_CASE("suite names and wire ids") {
    CHECK(sim::suite_name(SuiteId::tdes_cbc_hmac_sha256) == "TDES-CBC-HMAC-SHA256");
    CHECK(sim::suite_name(SuiteId::aes256_gcm) == "AES-256-GCM");
    CHECK(sim::suite_name(SuiteId::chacha20_poly1305) == "ChaCha20-Poly1305");

    for (const auto id : all_suites) {
        const auto name = std::string(sim::suite_name(id));
        CHECK(sim::suite_from_name(name) == id);
        std::string upper = name;
        std::string lower = name;
        for (auto& c : upper) {
            c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
        }
        for (auto& c : lower) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        CHECK(sim::suite_from_name(upper) == id);
        CHECK(sim::suite_from_name(lower) == id);
        CHECK(sim::suite_from_name(std::to_string(static_cast<int>(id))) == id);
        CHECK(sim::suite_from_wire(static_cast<std::uint8_t>(id)) == id);
    }
    for (const char* bad : {"", "0", "4", "255", "256", "1000", "01x", " 2", "2 ", "AES", "AES-256", "AES-256-GCM ",
                            "ChaCha20", "TDES", "-1", "+2"}) {
        CAPTURE(bad);
        CHECK_FALSE(sim::suite_from_name(bad).has_value());
    }
    CHECK(sim::suite_from_name("002") == SuiteId::aes256_gcm);
    CHECK_FALSE(sim::suite_from_wire(0).has_value());
    CHECK_FALSE(sim::suite_from_wire(4).has_value());
    CHECK_FALSE(sim::suite_from_wire(255).has_value());

    CHECK(sim::suite_key_size(SuiteId::tdes_cbc_hmac_sha256) == 24);
    CHECK(sim::suite_key_size(SuiteId::aes256_gcm) == 32);
    CHECK(sim::suite_key_size(SuiteId::chacha20_poly1305) == 32);
}

TEST_CASE("suite policies") {
    const auto def = sim::SuitePolicy::default_policy();
    const std::vector<SuiteId> def_pref(def.preference().begin(), def.preference().end());
    CHECK(def_pref ==
          std::vector<SuiteId>{SuiteId::aes256_gcm, SuiteId::chacha20_poly1305, SuiteId::tdes_cbc_hmac_sha256});
    for (const auto id : all_suites) {
        CHECK(def.allows(id));
    }

    const auto tdes = sim::SuitePolicy::require_tdes();
    CHECK(tdes.allows(SuiteId::tdes_cbc_hmac_sha256));
    CHECK_FALSE(tdes.allows(SuiteId::aes256_gcm));
    CHECK_FALSE(tdes.allows(SuiteId::chacha20_poly1305));
    CHECK(tdes.preference().size() == 1);

    const auto no_tdes = sim::SuitePolicy::forbid_tdes();
    CHECK_FALSE(no_tdes.allows(SuiteId::tdes_cbc_hmac_sha256));
    CHECK(no_tdes.allows(SuiteId::aes256_gcm));
    CHECK(no_tdes.allows(SuiteId::chacha20_poly1305));

    SUBCASE("choose takes the first of our preference that the peer offers") {
        const std::vector<SuiteId> peer{SuiteId::tdes_cbc_hmac_sha256, SuiteId::chacha20_poly1305, SuiteId::aes256_gcm};
        CHECK(def.choose(peer).value() == SuiteId::aes256_gcm);
        const std::vector<SuiteId> peer2{SuiteId::tdes_cbc_hmac_sha256, SuiteId::chacha20_poly1305};
        CHECK(def.choose(peer2).value() == SuiteId::chacha20_poly1305);
        CHECK(tdes.choose(peer).value() == SuiteId::tdes_cbc_hmac_sha256);

        const std::vector<SuiteId> aes_only{SuiteId::aes256_gcm};
        CHECK(tdes.choose(aes_only).code() == Errc::no_common_suite);
        CHECK(no_tdes.choose(tdes.preference()).code() == Errc::no_common_suite);
        CHECK(def.choose({}).code() == Errc::no_common_suite);
    }

    SUBCASE("from_list") {
        const std::vector<SuiteId> list{SuiteId::chacha20_poly1305, SuiteId::aes256_gcm, SuiteId::chacha20_poly1305};
        const auto p = sim::SuitePolicy::from_list(list);
        REQUIRE(p.has_value());
        const std::vector<SuiteId> pref(p->preference().begin(), p->preference().end());
        CHECK(pref == std::vector<SuiteId>{SuiteId::chacha20_poly1305, SuiteId::aes256_gcm});
        CHECK_FALSE(p->allows(SuiteId::tdes_cbc_hmac_sha256));
        const std::vector<SuiteId> peer{SuiteId::aes256_gcm, SuiteId::chacha20_poly1305};
        CHECK(p->choose(peer).value() == SuiteId::chacha20_poly1305);

        CHECK(sim::SuitePolicy::from_list({}).code() == Errc::invalid_argument);
        const std::vector<SuiteId> bogus{SuiteId::aes256_gcm, static_cast<SuiteId>(9)};
        CHECK(sim::SuitePolicy::from_list(bogus).code() == Errc::suite_not_allowed);
    }
}

TEST_CASE("make_record_cipher checks suite and key size") {
    auto rng = test_rng();
    for (const auto id : all_suites) {
        const auto n = sim::suite_key_size(id);
        CHECK(sim::make_record_cipher(id, pattern(n - 1, 1), *rng).code() == Errc::invalid_key);
        CHECK(sim::make_record_cipher(id, pattern(n + 1, 1), *rng).code() == Errc::invalid_key);
        CHECK(sim::make_record_cipher(id, {}, *rng).code() == Errc::invalid_key);
        const auto c = sim::make_record_cipher(id, pattern(n, 1), *rng);
        REQUIRE(c.has_value());
        CHECK((*c)->id() == id);
    }
    CHECK(sim::make_record_cipher(static_cast<SuiteId>(0), pattern(32, 1), *rng).code() == Errc::suite_not_allowed);
    CHECK(sim::make_record_cipher(static_cast<SuiteId>(4), pattern(32, 1), *rng).code() == Errc::suite_not_allowed);
}

TEST_CASE("record ciphers round-trip and reject tampering") {
    for (const auto id : all_suites) {
        CAPTURE(sim::suite_name(id));
        auto rng = test_rng();
        const auto key = pattern(sim::suite_key_size(id), 7);
        const auto c = cipher(id, key, *rng);
        const auto other = cipher(id, pattern(sim::suite_key_size(id), 8), *rng);
        for (const std::size_t n : {0U, 1U, 7U, 8U, 9U, 1000U}) {
            CAPTURE(n);
            const auto pt = pattern(n, static_cast<std::uint8_t>(n));
            const auto hdr = header_for(id, 42);
            Bytes body;
            REQUIRE(c->seal(hdr, 42, pt, body).has_value());
            CHECK(body.size() > n);
            CHECK(body.size() <= n + c->max_overhead());

            const auto back = c->open(hdr, 42, body);
            REQUIRE(back.has_value());
            CHECK(*back == pt);

            CHECK(other->open(hdr, 42, body).code() == Errc::auth_failed);
            auto hdr2 = hdr;
            hdr2[15] ^= 1U;
            CHECK(c->open(hdr2, 43, body).code() == Errc::auth_failed);
            for (std::size_t i = 0; i < body.size(); ++i) {
                auto bad = body;
                bad[i] ^= 0x80U;
                CHECK(c->open(hdr, 42, bad).code() == Errc::auth_failed);
            }
            auto longer = body;
            longer.push_back(0);
            CHECK_FALSE(c->open(hdr, 42, longer).has_value());
            CHECK_FALSE(c->open(hdr, 42, ByteView{body}.first(body.size() - 1)).has_value());
        }
        CHECK(c->open(header_for(id, 0), 0, {}).code() == Errc::truncated);
    }
}

TEST_CASE("AEAD record cipher matches the documented construction") {
    const std::array<std::pair<SuiteId, sim::crypto::AeadAlgorithm>, 2> algs{
        std::pair{SuiteId::aes256_gcm, sim::crypto::AeadAlgorithm::aes256_gcm},
        std::pair{SuiteId::chacha20_poly1305, sim::crypto::AeadAlgorithm::chacha20_poly1305}};
    for (const auto& [id, alg] : algs) {
        CAPTURE(sim::suite_name(id));
        auto rng = test_rng();
        const auto key = pattern(32, 3);
        const auto c = cipher(id, key, *rng);
        const std::uint64_t seq = 0x0102030405060708ULL;
        const auto hdr = header_for(id, seq);
        const auto pt = pattern(100, 9);
        Bytes body;
        REQUIRE(c->seal(hdr, seq, pt, body).has_value());

        const auto aead_key = derive(key, "libsim v1 aead key", 32);
        auto aead = sim::crypto::make_aead(alg, aead_key);
        REQUIRE(aead.has_value());
        const Bytes nonce{0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8};
        const auto expect = (*aead)->seal(nonce, hdr, pt);
        REQUIRE(expect.has_value());
        CHECK(body == *expect);
        CHECK(body.size() == pt.size() + 16);
    }
}

TEST_CASE("TDES record cipher matches the documented construction") {
    const auto key = pattern(24, 5);
    auto rng = test_rng(9);
    auto rng_copy = test_rng(9);  // the same stream: predicts the IV
    const auto c = cipher(SuiteId::tdes_cbc_hmac_sha256, key, *rng);
    const auto hdr = header_for(SuiteId::tdes_cbc_hmac_sha256, 5);
    const auto pt = pattern(13, 2);
    Bytes body;
    REQUIRE(c->seal(hdr, 5, pt, body).has_value());

    const auto enc = derive(key, "libsim v1 tdes enc", 24);
    const auto mac_key = derive(key, "libsim v1 tdes mac", 32);
    const auto iv = rng_copy->bytes(8);
    const auto ct = sim::crypto::tdes_cbc_encrypt(enc, iv, pt, true);
    REQUIRE(ct.has_value());
    Bytes mac_input = hdr;
    mac_input.insert(mac_input.end(), iv.begin(), iv.end());
    mac_input.insert(mac_input.end(), ct->begin(), ct->end());
    const auto tag = sim::crypto::hmac_sha256(mac_key, mac_input);

    Bytes expect = iv;
    expect.insert(expect.end(), ct->begin(), ct->end());
    expect.insert(expect.end(), tag.begin(), tag.end());
    CHECK(body == expect);
    CHECK(body.size() == 8 + 16 + 32);

    SUBCASE("a valid MAC over bad padding is still auth_failed") {
        // One block whose last plaintext byte is 0: never valid PKCS#7.
        const Bytes block{1, 2, 3, 4, 5, 6, 7, 0};
        const auto raw = sim::crypto::tdes_cbc_encrypt(enc, iv, block, false);
        REQUIRE(raw.has_value());
        Bytes forged = iv;
        forged.insert(forged.end(), raw->begin(), raw->end());
        Bytes in = hdr;
        in.insert(in.end(), forged.begin(), forged.end());
        const auto t = sim::crypto::hmac_sha256(mac_key, in);
        forged.insert(forged.end(), t.begin(), t.end());
        const auto r = c->open(hdr, 5, forged);
        CHECK(r.code() == Errc::auth_failed);
    }
    SUBCASE("a valid MAC over a partial block is still auth_failed") {
        Bytes forged = iv;
        const auto junk = pattern(13, 4);  // 8 + 13 bytes: not whole blocks after the IV
        forged.insert(forged.end(), junk.begin(), junk.end());
        Bytes in = hdr;
        in.insert(in.end(), forged.begin(), forged.end());
        const auto t = sim::crypto::hmac_sha256(mac_key, in);
        forged.insert(forged.end(), t.begin(), t.end());
        CHECK(c->open(hdr, 5, forged).code() == Errc::auth_failed);
    }
    SUBCASE("bodies below IV + one block + MAC are truncated") {
        CHECK(c->open(hdr, 5, ByteView{body}.first(47)).code() == Errc::truncated);
        CHECK(c->open(hdr, 5, ByteView{body}.first(48)).code() == Errc::auth_failed);
    }
}

TEST_CASE("TDES IVs are fresh per record") {
    auto rng = test_rng();
    const auto c = cipher(SuiteId::tdes_cbc_hmac_sha256, pattern(24, 1), *rng);
    const auto hdr = header_for(SuiteId::tdes_cbc_hmac_sha256, 1);
    const auto pt = pattern(32, 0);
    Bytes a;
    Bytes b;
    REQUIRE(c->seal(hdr, 1, pt, a).has_value());
    REQUIRE(c->seal(hdr, 1, pt, b).has_value());
    REQUIRE(a.size() == b.size());
    CHECK(a != b);
    CHECK(Bytes(a.begin(), a.begin() + 8) != Bytes(b.begin(), b.begin() + 8));
    CHECK(c->open(hdr, 1, a).value() == pt);
    CHECK(c->open(hdr, 1, b).value() == pt);
}
