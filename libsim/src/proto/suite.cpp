// Record suites: names, policy, and the per-epoch record ciphers (docs/protocol.md section 4).
#include <sim/crypto.h>
#include <sim/suite.h>

#include "record_header.h"

#include <algorithm>
#include <array>
#include <cstddef>

namespace sim {

namespace {

constexpr std::array<SuiteId, 3> all_suites{SuiteId::tdes_cbc_hmac_sha256, SuiteId::aes256_gcm,
                                            SuiteId::chacha20_poly1305};

char ascii_lower(char c) noexcept {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

// ---------------------------------------------------------------- AEAD suites

// body = AEAD(key, nonce = 0x00000000 || seq (u64 BE), ad = header, plaintext) = ciphertext || 16-byte tag.
class AeadRecordCipher final : public RecordCipher {
public:
    AeadRecordCipher(SuiteId id, std::unique_ptr<crypto::Aead> aead) : m_id(id), m_aead(std::move(aead)) {}

    [[nodiscard]] SuiteId id() const noexcept override { return m_id; }

    Status seal(ByteView header, std::uint64_t seq, ByteView plaintext, Bytes& out) override {
        const auto nonce = make_nonce(seq);
        return m_aead->seal_into(nonce, header, plaintext, out);
    }

    Result<Bytes> open(ByteView header, std::uint64_t seq, ByteView body) override {
        if (body.size() < crypto::aead_tag_size) {
            return Error{Errc::truncated, "record body shorter than the AEAD tag"};
        }
        const auto nonce = make_nonce(seq);
        auto pt = m_aead->open(nonce, header, body);
        if (!pt) {
            return Error{Errc::auth_failed, "record tag did not verify"};
        }
        return pt;
    }

    [[nodiscard]] std::size_t max_overhead() const noexcept override { return crypto::aead_tag_size; }

private:
    static std::array<std::uint8_t, crypto::aead_nonce_size> make_nonce(std::uint64_t seq) noexcept {
        std::array<std::uint8_t, crypto::aead_nonce_size> n{};
        for (std::size_t i = 0; i < 8; ++i) {
            n[4 + i] = static_cast<std::uint8_t>(seq >> (8U * (7 - i)));
        }
        return n;
    }

    SuiteId m_id;
    std::unique_ptr<crypto::Aead> m_aead;
};

// ---------------------------------------------------------------- TDES-CBC-HMAC-SHA256

// body = IV (8 random bytes) || TDES-CBC-PKCS7(enc key, IV, plaintext) || HMAC-SHA256(mac key, header || IV || ct).
// Encrypt-then-MAC: the tag is checked (in constant time) before a single block is decrypted, so neither CBC
// malleability nor padding errors are observable to a forger.
class TdesRecordCipher final : public RecordCipher {
public:
    static constexpr std::size_t mac_size = crypto::sha256_size;
    static constexpr std::size_t iv_size = crypto::tdes_block_size;
    // IV, at least one ciphertext block (PKCS#7 always pads), MAC.
    static constexpr std::size_t min_body = iv_size + crypto::tdes_block_size + mac_size;

    TdesRecordCipher(std::unique_ptr<crypto::TdesCbc> cbc, std::unique_ptr<crypto::HmacSha256> mac, Rng& rng)
        : m_cbc(std::move(cbc)), m_mac(std::move(mac)), m_rng(&rng) {}

    [[nodiscard]] SuiteId id() const noexcept override { return SuiteId::tdes_cbc_hmac_sha256; }

    Status seal(ByteView header, std::uint64_t /*seq: bound through the header*/, ByteView plaintext,
                Bytes& out) override {
        std::array<std::uint8_t, iv_size> iv{};
        m_rng->fill(iv);
        SIM_TRY(const Bytes ct, m_cbc->encrypt(iv, plaintext));
        const std::size_t body_start = out.size();
        out.reserve(out.size() + iv.size() + ct.size() + mac_size);
        out.insert(out.end(), iv.begin(), iv.end());
        out.insert(out.end(), ct.begin(), ct.end());
        const auto tag = m_mac->mac(header, ByteView{out}.subspan(body_start));
        out.insert(out.end(), tag.begin(), tag.end());
        return ok();
    }

    Result<Bytes> open(ByteView header, std::uint64_t /*seq*/, ByteView body) override {
        if (body.size() < min_body) {
            return Error{Errc::truncated, "TDES record body shorter than IV, one block and MAC"};
        }
        const auto iv_ct = body.first(body.size() - mac_size);
        const auto tag = body.last(mac_size);
        const auto expected = m_mac->mac(header, iv_ct);
        if (!constant_time_equal(expected, tag)) {
            return Error{Errc::auth_failed, "record MAC did not verify"};
        }
        // The MAC was good, so the sender produced this ciphertext; a length or padding error now means a broken
        // peer. It is still reported as auth_failed so that no error path distinguishes padding from MAC failures.
        auto pt = m_cbc->decrypt(iv_ct.first(iv_size), iv_ct.subspan(iv_size));
        if (!pt) {
            return Error{Errc::auth_failed, "record ciphertext did not decrypt"};
        }
        return pt;
    }

    [[nodiscard]] std::size_t max_overhead() const noexcept override {
        return iv_size + crypto::tdes_block_size + mac_size;
    }

private:
    std::unique_ptr<crypto::TdesCbc> m_cbc;
    std::unique_ptr<crypto::HmacSha256> m_mac;
    Rng* m_rng;
};

Result<SecureBytes> expand(ByteView prk, std::string_view label, std::size_t len) {
    return crypto::hkdf_sha256_expand(prk, as_bytes(label), len);
}

}  // namespace

// ---------------------------------------------------------------- names

std::string_view suite_name(SuiteId id) noexcept {
    switch (id) {
        case SuiteId::tdes_cbc_hmac_sha256:
            return "TDES-CBC-HMAC-SHA256";
        case SuiteId::aes256_gcm:
            return "AES-256-GCM";
        case SuiteId::chacha20_poly1305:
            return "ChaCha20-Poly1305";
    }
    return "unknown";
}

std::optional<SuiteId> suite_from_name(std::string_view name) noexcept {
    for (const auto id : all_suites) {
        if (iequals(name, suite_name(id))) {
            return id;
        }
    }
    // A decimal wire id ("1".."3"); at most three digits so nothing overflows.
    if (!name.empty() && name.size() <= 3 &&
        std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        unsigned v = 0;
        for (const char c : name) {
            v = v * 10 + static_cast<unsigned>(c - '0');
        }
        if (v <= 0xFFU) {
            return suite_from_wire(static_cast<std::uint8_t>(v));
        }
    }
    return std::nullopt;
}

std::optional<SuiteId> suite_from_wire(std::uint8_t id) noexcept {
    for (const auto s : all_suites) {
        if (static_cast<std::uint8_t>(s) == id) {
            return s;
        }
    }
    return std::nullopt;
}

std::size_t suite_key_size(SuiteId id) noexcept {
    switch (id) {
        case SuiteId::tdes_cbc_hmac_sha256:
            return crypto::tdes_key_size;
        case SuiteId::aes256_gcm:
        case SuiteId::chacha20_poly1305:
            return crypto::aead_key_size;
    }
    return 0;
}

// ---------------------------------------------------------------- policy

SuitePolicy SuitePolicy::default_policy() {
    return SuitePolicy({SuiteId::aes256_gcm, SuiteId::chacha20_poly1305, SuiteId::tdes_cbc_hmac_sha256});
}

SuitePolicy SuitePolicy::require_tdes() {
    return SuitePolicy({SuiteId::tdes_cbc_hmac_sha256});
}

SuitePolicy SuitePolicy::forbid_tdes() {
    return SuitePolicy({SuiteId::aes256_gcm, SuiteId::chacha20_poly1305});
}

Result<SuitePolicy> SuitePolicy::from_list(std::span<const SuiteId> preference) {
    std::vector<SuiteId> pref;
    for (const auto id : preference) {
        if (!suite_from_wire(static_cast<std::uint8_t>(id))) {
            return Error{Errc::suite_not_allowed, "suite policy names an unknown suite id"};
        }
        if (std::find(pref.begin(), pref.end(), id) == pref.end()) {
            pref.push_back(id);
        }
    }
    if (pref.empty()) {
        return Error{Errc::invalid_argument, "suite policy is empty"};
    }
    return SuitePolicy(std::move(pref));
}

bool SuitePolicy::allows(SuiteId id) const noexcept {
    return std::find(m_pref.begin(), m_pref.end(), id) != m_pref.end();
}

Result<SuiteId> SuitePolicy::choose(std::span<const SuiteId> peer_offer) const {
    for (const auto id : m_pref) {
        if (std::find(peer_offer.begin(), peer_offer.end(), id) != peer_offer.end()) {
            return id;
        }
    }
    return Error{Errc::no_common_suite, "no suite offered by the peer is allowed by our policy"};
}

// ---------------------------------------------------------------- factory

Result<std::unique_ptr<RecordCipher>> make_record_cipher(SuiteId id, ByteView key, Rng& rng) {
    if (!suite_from_wire(static_cast<std::uint8_t>(id))) {
        return Error{Errc::suite_not_allowed, "unknown suite id"};
    }
    if (key.size() != suite_key_size(id)) {
        return Error{Errc::invalid_key, "record key has the wrong size for the suite"};
    }
    const auto prk = crypto::hkdf_sha256_extract({}, key);
    if (id == SuiteId::tdes_cbc_hmac_sha256) {
        SIM_TRY(auto enc, expand(prk, detail::label_tdes_enc, crypto::tdes_key_size));
        SIM_TRY(auto mac, expand(prk, detail::label_tdes_mac, crypto::sha256_size));
        SIM_TRY(auto cbc, crypto::make_tdes_cbc(enc, true));
        return std::unique_ptr<RecordCipher>(
            std::make_unique<TdesRecordCipher>(std::move(cbc), crypto::make_hmac_sha256(mac), rng));
    }
    SIM_TRY(const auto aead_key, expand(prk, detail::label_aead_key, crypto::aead_key_size));
    const auto alg =
        id == SuiteId::aes256_gcm ? crypto::AeadAlgorithm::aes256_gcm : crypto::AeadAlgorithm::chacha20_poly1305;
    SIM_TRY(auto aead, crypto::make_aead(alg, aead_key));
    return std::unique_ptr<RecordCipher>(std::make_unique<AeadRecordCipher>(id, std::move(aead)));
}

}  // namespace sim
