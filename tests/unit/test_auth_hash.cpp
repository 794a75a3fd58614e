// Password hashing: known-answer tests (Botan bcrypt and Argon2 vectors, passlib bcrypt_sha256 v2), the 72-byte
// case, re-hash decisions, malformed and oversized hash strings.
#include <doctest/doctest.h>

#include "vec_reader.h"

#include <sim/auth.h>
#include <sim/crypto.h>

#include <cstring>
#include <stdexcept>
#include <string>

namespace {

using sim::auth::HashAlgorithm;
using sim::auth::HashPolicy;
using sim::auth::PasswordHasher;

/// Hands out the given bytes (a chosen salt) and fails the test if asked for more.
class ScriptedRng final : public sim::Rng {
public:
    explicit ScriptedRng(sim::Bytes bytes) : m_bytes(std::move(bytes)) {}
    void fill(sim::MutableByteView out) override {
        if (out.size() > m_bytes.size() - m_used) {
            throw std::runtime_error("ScriptedRng exhausted");
        }
        std::memcpy(out.data(), m_bytes.data() + m_used, out.size());
        m_used += out.size();
    }

private:
    sim::Bytes m_bytes;
    std::size_t m_used = 0;
};

std::string text(const sim::Bytes& b) {
    return {b.begin(), b.end()};
}

std::unique_ptr<PasswordHasher> hasher(HashPolicy policy) {
    auto h = sim::auth::make_password_hasher(policy);
    REQUIRE(h.has_value());
    return std::move(h).value();
}

HashPolicy fast_bcrypt(unsigned cost = 4) {
    HashPolicy p;
    p.algorithm = HashAlgorithm::bcrypt;
    p.bcrypt.cost = cost;
    return p;
}

HashPolicy fast_argon2(std::uint32_t memory_kib = 64) {
    HashPolicy p;
    p.algorithm = HashAlgorithm::argon2id;
    p.argon2.memory_kib = memory_kib;
    p.argon2.iterations = 1;
    p.argon2.parallelism = 1;
    return p;
}

/// bcrypt's base64 decoder, written independently of libsim's (so the two check each other).
sim::Bytes bcrypt64_decode(const std::string& s) {
    const std::string alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    sim::Bytes out;
    unsigned acc = 0;
    unsigned bits = 0;
    for (const char c : s) {
        const auto v = alphabet.find(c);
        REQUIRE(v != std::string::npos);
        acc = (acc << 6U) | static_cast<unsigned>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xFFU));
        }
    }
    return out;
}

/// The hash with one character of its digest changed to another valid one (all six bits of that character are
/// data, so the string stays well-formed).
std::string flip_last(std::string s) {
    auto& c = s[s.size() - 5];
    c = c == 'A' ? 'B' : 'A';
    return s;
}

}  // namespace

TEST_CASE("bcrypt known answers (Botan bcrypt.vec) verify through the public hasher") {
    const auto h = hasher(fast_bcrypt());
    const auto records = simtest::read_vec_file("botan/passhash/bcrypt.vec");
    REQUIRE(records.size() == 93);
    for (const auto& r : records) {
        INFO(r.where());
        const auto password = text(r.hex("Password"));
        const auto& stored = r.get("Passhash");
        const auto good = h->verify(password, stored);
        REQUIRE(good.has_value());
        CHECK(good.value());
        const auto flipped = h->verify(password, flip_last(stored));
        REQUIRE(flipped.has_value());
        CHECK_FALSE(flipped.value());
        // Raw bcrypt (the seed's format) reads at most 72 bytes: an extra byte changes nothing past that point.
        const auto longer = h->verify(password + "x", stored);
        REQUIRE(longer.has_value());
        CHECK(longer.value() == (password.size() >= 72));
        // A legacy hash always asks to be upgraded after a successful login.
        CHECK(h->needs_rehash(stored));
    }
}

TEST_CASE("bcrypt_sha256 v2 known answers (passlib)") {
    const auto h = hasher(fast_bcrypt(5));
    const auto records = simtest::read_vec_file("passlib/bcrypt_sha256.vec");
    std::vector<std::string> passwords;
    std::vector<std::string> hashes;
    for (const auto& r : records) {
        INFO(r.where());
        if (r.section == "Verify") {
            const auto password = text(r.hex("Password"));
            const auto& stored = r.get("Passhash");
            const auto good = h->verify(password, stored);
            REQUIRE(good.has_value());
            CHECK(good.value());
            const auto bad = h->verify(password + "!", stored);
            REQUIRE(bad.has_value());
            CHECK_FALSE(bad.value());
            CHECK_FALSE(h->needs_rehash(stored));  // cost 5 is the policy's
            passwords.push_back(password);
            hashes.push_back(stored);
        } else if (r.section == "Prehash") {
            const auto password = text(r.hex("Password"));
            // bcrypt's input is base64(HMAC-SHA256(key = salt string, password)), as passlib computes it.
            const auto inner = sim::crypto::bcrypt_verify(r.get("Prehash"), r.get("Bcrypt"));
            REQUIRE(inner.has_value());
            CHECK(inner.value());
            const auto full = h->verify(password, r.get("Passhash"));
            REQUIRE(full.has_value());
            CHECK(full.value());
            // Generation with the same salt gives passlib's string exactly.
            const auto cost12 = hasher(fast_bcrypt(12));
            ScriptedRng salt(bcrypt64_decode(r.get("Salt")));
            const auto made = cost12->hash(password, salt);
            REQUIRE(made.has_value());
            CHECK(made.value() == r.get("Passhash"));
            CHECK(h->needs_rehash(r.get("Passhash")));  // cost 12 is not the policy's 5
        } else {
            REQUIRE(r.section == "Malformed");
            const auto res = h->verify("password", r.get("Passhash"));
            CHECK(res.code() == sim::Errc::bad_hash);
        }
    }
    REQUIRE(passwords.size() == 6);
    // Vectors 4..6 share their first 72 bytes, yet each verifies only its own password.
    for (std::size_t i = 3; i < 6; ++i) {
        for (std::size_t j = 3; j < 6; ++j) {
            CHECK(passwords[i].substr(0, 72) == passwords[j].substr(0, 72));
            const auto res = h->verify(passwords[i], hashes[j]);
            REQUIRE(res.has_value());
            CHECK(res.value() == (i == j));
        }
    }
}

TEST_CASE("Argon2id raw known answers (Botan argon2.vec, records without secret or AD)") {
    const auto records = simtest::read_vec_file("botan/argon2.vec");
    int used = 0;
    for (const auto& r : records) {
        if (r.section != "Argon2id" || r.has("Secret") || r.has("AD")) {
            continue;
        }
        INFO(r.where());
        const auto password = text(r.hex("Passphrase"));
        const auto expected = r.hex("Output");
        const auto out = sim::crypto::argon2id(password, r.hex("Salt"), std::stoul(r.get("M")), std::stoul(r.get("T")),
                                               std::stoul(r.get("P")), expected.size());
        REQUIRE(out.has_value());
        CHECK(sim::to_hex(out.value()) == sim::to_hex(expected));
        ++used;
    }
    CHECK(used == 317);
}

TEST_CASE("Argon2 PHC strings (Botan passhash/argon2.vec)") {
    const auto h = hasher(fast_argon2());
    const auto records = simtest::read_vec_file("botan/passhash/argon2.vec");
    int verified = 0;
    int generated = 0;
    for (const auto& r : records) {
        INFO(r.where());
        const auto& stored = r.get("Passhash");
        const bool is_id = stored.rfind("$argon2id$", 0) == 0;
        if (r.section == "Verify") {
            const auto res = h->verify(r.get("Password"), stored);
            if (!is_id) {
                CHECK(res.code() == sim::Errc::bad_hash);  // only Argon2id is accepted
                continue;
            }
            REQUIRE(res.has_value());
            CHECK(res.value());
            const auto wrong = h->verify(r.get("Password") + "x", stored);
            REQUIRE(wrong.has_value());
            CHECK_FALSE(wrong.value());
            ++verified;
        } else if (r.section == "Generate" && r.get("Mode") == "2") {
            HashPolicy p = fast_argon2(static_cast<std::uint32_t>(std::stoul(r.get("M"))));
            p.argon2.iterations = static_cast<std::uint32_t>(std::stoul(r.get("T")));
            p.argon2.parallelism = static_cast<std::uint32_t>(std::stoul(r.get("P")));
            const auto salt = r.hex("Salt");
            p.argon2.salt_size = static_cast<std::uint32_t>(salt.size());
            p.argon2.output_size = static_cast<std::uint32_t>(std::stoul(r.get("OutLen")));
            const auto gen = hasher(p);
            ScriptedRng rng(salt);
            const auto made = gen->hash(r.get("Password"), rng);
            REQUIRE(made.has_value());
            CHECK(made.value() == stored);
            CHECK_FALSE(gen->needs_rehash(stored));
            ++generated;
        }
    }
    CHECK(verified == 1);
    CHECK(generated >= 1);
}

TEST_CASE("new hashes: self-describing, salted, every byte of a long password counts") {
    for (const auto& policy : {fast_bcrypt(), fast_argon2()}) {
        const auto h = hasher(policy);
        auto rng = sim::make_deterministic_rng(sim::as_bytes("auth hash test"));
        const std::string prefix =
            policy.algorithm == HashAlgorithm::bcrypt ? "$bcrypt-sha256$v=2,t=2b,r=4$" : "$argon2id$v=19$m=64,t=1,p=1$";
        const auto a = h->hash("correct horse", *rng);
        const auto b = h->hash("correct horse", *rng);
        REQUIRE(a.has_value());
        REQUIRE(b.has_value());
        CHECK(a.value().rfind(prefix, 0) == 0);
        CHECK(a.value() != b.value());  // fresh salt each time
        CHECK(h->verify("correct horse", a.value()).value());
        CHECK_FALSE(h->verify("correct horsf", a.value()).value());
        CHECK_FALSE(h->verify("correct horse", flip_last(a.value())).value());
        CHECK_FALSE(h->needs_rehash(a.value()));

        // The 72-byte case: two passwords sharing a 72-byte prefix are different passwords.
        const std::string base(72, 'p');
        const auto long1 = h->hash(base + "-one", *rng);
        REQUIRE(long1.has_value());
        CHECK(h->verify(base + "-one", long1.value()).value());
        CHECK_FALSE(h->verify(base + "-two", long1.value()).value());
        CHECK_FALSE(h->verify(base, long1.value()).value());

        // Longest allowed password, and the refusals.
        const std::string longest(sim::auth::max_password_length, 'z');
        CHECK(h->hash(longest, *rng).has_value());
        CHECK(h->hash(longest + "z", *rng).code() == sim::Errc::bad_password);
        CHECK(h->hash("", *rng).code() == sim::Errc::bad_password);
        CHECK(h->hash(std::string("nul\0inside", 10), *rng).code() == sim::Errc::bad_password);
    }
}

TEST_CASE("needs_rehash follows the policy: algorithm, cost and Argon2 parameters") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("rehash"));
    const auto b4 = hasher(fast_bcrypt(4));
    const auto b5 = hasher(fast_bcrypt(5));
    const auto a64 = hasher(fast_argon2(64));
    const auto a128 = hasher(fast_argon2(128));
    const auto h4 = b4->hash("pw", *rng).value();
    const auto h64 = a64->hash("pw", *rng).value();
    CHECK_FALSE(b4->needs_rehash(h4));
    CHECK(b5->needs_rehash(h4));
    CHECK(a64->needs_rehash(h4));
    CHECK_FALSE(a64->needs_rehash(h64));
    CHECK(a128->needs_rehash(h64));
    CHECK(b4->needs_rehash(h64));
    // Every hasher verifies every supported format, whatever its own algorithm.
    CHECK(a128->verify("pw", h4).value());
    CHECK(b5->verify("pw", h64).value());
    CHECK(b4->needs_rehash("garbage"));
}

TEST_CASE("stored hashes asking for too much work or malformed are refused as bad_hash") {
    HashPolicy p = fast_bcrypt();
    p.limits.max_bcrypt_cost = 10;
    p.limits.max_argon2_memory_kib = 1024;
    const auto h = hasher(p);
    auto rng = sim::make_deterministic_rng(sim::as_bytes("limits"));
    // A planted cost-11 hash is refused before any work.
    const auto strong = hasher(fast_bcrypt(11))->hash("pw", *rng).value();
    CHECK(h->verify("pw", strong).code() == sim::Errc::bad_hash);
    // An Argon2id string asking for 4 GiB is refused without computing it.
    CHECK(h->verify("pw", "$argon2id$v=19$m=4194304,t=1,p=1$YWFhYWFhYWE$tPAla38/iYe0rtvQKVaPv04WYar67QEGlc4fhxU185s")
              .code() == sim::Errc::bad_hash);
    const auto good = hasher(fast_argon2())->hash("pw", *rng).value();
    REQUIRE(h->verify("pw", good).value());
    const std::vector<std::string> malformed = {
        "",
        "$",
        "$2b$",
        good.substr(0, good.size() - 1) + "=",  // padding is not canonical PHC
        good.substr(0, good.find("m=")) + "m=064,t=1,p=1" + good.substr(good.find("$", good.find("p="))),
        "$argon2id$v=18$m=64,t=1,p=1$YWFhYWFhYWE$tPAla38/iYe0rtvQKVaPv04WYar67QEGlc4fhxU185s",
        "$argon2id$v=19$m=64,t=0,p=1$YWFhYWFhYWE$tPAla38/iYe0rtvQKVaPv04WYar67QEGlc4fhxU185s",
        "$argon2id$v=19$m=64,t=1,p=1$YWFh$tPAla38/iYe0rtvQKVaPv04WYar67QEGlc4fhxU185s",  // 3-byte salt
        "$argon2id$v=19$m=64,t=1,p=1,keyid=x$YWFhYWFhYWE$tPAla38/iYe0rtvQKVaPv04WYar67QEGlc4fhxU185s",
        "$2b$4$DCq7YPn5Rq63x1Lad4cll.TV4S6ytwfsfvkgY8jIucDrjc8deX1s.",   // cost not two digits
        "$2x$05$DCq7YPn5Rq63x1Lad4cll.TV4S6ytwfsfvkgY8jIucDrjc8deX1s.",  // unsupported variant
        "$2b$05$DCq7YPn5Rq63x1Lad4cll.TV4S6ytwfsfvkgY8jIucDrjc8deX1s",   // truncated
        "$2b$03$DCq7YPn5Rq63x1Lad4cll.TV4S6ytwfsfvkgY8jIucDrjc8deX1s.",  // cost below 4
        "$2b$05$DCq7YPn5Rq63x1Lad4cll!TV4S6ytwfsfvkgY8jIucDrjc8deX1s.",  // bad character
        "plaintext-password",
    };
    for (const auto& m : malformed) {
        INFO(m);
        CHECK(h->verify("pw", m).code() == sim::Errc::bad_hash);
    }
}

TEST_CASE("hasher parameters are validated") {
    using sim::auth::make_password_hasher;
    CHECK(make_password_hasher(fast_bcrypt(3)).code() == sim::Errc::invalid_argument);
    CHECK(make_password_hasher(fast_bcrypt(19)).code() == sim::Errc::invalid_argument);
    CHECK(make_password_hasher(fast_bcrypt(18)).has_value());
    HashPolicy p = fast_argon2(7);
    CHECK(make_password_hasher(p).code() == sim::Errc::invalid_argument);
    p = fast_argon2();
    p.argon2.parallelism = 0;
    CHECK(make_password_hasher(p).code() == sim::Errc::invalid_argument);
    p = fast_argon2();
    p.argon2.salt_size = 4;
    CHECK(make_password_hasher(p).code() == sim::Errc::invalid_argument);
    p = fast_argon2();
    p.limits.max_argon2_memory_kib = 32;  // its own hashes would be refused
    CHECK(make_password_hasher(p).code() == sim::Errc::invalid_argument);
    // The defaults: bcrypt cost 12, Argon2id per OWASP (19 MiB, t=2, p=1).
    const HashPolicy d;
    CHECK(d.bcrypt.cost == 12);
    CHECK(d.argon2.memory_kib == 19456);
    CHECK(d.argon2.iterations == 2);
    CHECK(d.argon2.parallelism == 1);
    CHECK(make_password_hasher(d).has_value());
}

TEST_CASE("crypto facade: bcrypt work factor range and NUL bytes") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("facade"));
    CHECK(sim::crypto::bcrypt_hash("pw", 3, *rng).code() == sim::Errc::invalid_argument);
    CHECK(sim::crypto::bcrypt_hash("pw", 19, *rng).code() == sim::Errc::invalid_argument);
    CHECK(sim::crypto::bcrypt_hash(std::string("a\0b", 3), 4, *rng).code() == sim::Errc::bad_password);
    const auto h = sim::crypto::bcrypt_hash("pw", 4, *rng);
    REQUIRE(h.has_value());
    CHECK(sim::crypto::bcrypt_verify("pw", h.value()).value());
    CHECK(sim::crypto::bcrypt_verify(std::string("pw\0", 3), h.value()).code() == sim::Errc::bad_password);
    // A cost Botan refuses is a parse error, not an exception.
    auto too_costly = h.value();
    too_costly[4] = '2';
    too_costly[5] = '0';
    CHECK(sim::crypto::bcrypt_verify("pw", too_costly).code() == sim::Errc::bad_hash);
}
