// RFC 9180 HPKE, mode_base, for DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM.
//
// Composed from the facade's X25519, HKDF-SHA256 and AES-128-GCM; it needs no Botan header of its own but lives
// here with the other primitives. x25519() already refuses an all-zero output, which is the DH check RFC 9180
// s7.1.4 requires of DHKEM(X25519).
#include <sim/crypto.h>

#include <limits>
#include <utility>

namespace sim::crypto {

namespace {

constexpr std::uint16_t kem_id = 0x0020;
constexpr std::uint16_t kdf_id = 0x0001;
constexpr std::uint16_t aead_id = 0x0001;
constexpr std::uint8_t mode_base = 0x00;
constexpr std::string_view version_label = "HPKE-v1";

void put_u16(Bytes& out, std::uint16_t v) {
    out.push_back(static_cast<std::uint8_t>(v >> 8));
    out.push_back(static_cast<std::uint8_t>(v & 0xff));
}

void append(Bytes& out, ByteView v) {
    out.insert(out.end(), v.begin(), v.end());
}

// suite_id of the KEM (s4.1) or of the whole HPKE suite (s5.1).
Bytes kem_suite_id() {
    Bytes id{'K', 'E', 'M'};
    put_u16(id, kem_id);
    return id;
}

Bytes hpke_suite_id() {
    Bytes id{'H', 'P', 'K', 'E'};
    put_u16(id, kem_id);
    put_u16(id, kdf_id);
    put_u16(id, aead_id);
    return id;
}

// s4: LabeledExtract(salt, label, ikm) = Extract(salt, "HPKE-v1" || suite_id || label || ikm).
SecureBytes labeled_extract(ByteView suite_id, ByteView salt, std::string_view label, ByteView ikm) {
    SecureBytes labeled_ikm;
    labeled_ikm.reserve(version_label.size() + suite_id.size() + label.size() + ikm.size());
    const auto version = as_bytes(version_label);
    labeled_ikm.insert(labeled_ikm.end(), version.begin(), version.end());
    labeled_ikm.insert(labeled_ikm.end(), suite_id.begin(), suite_id.end());
    const auto lab = as_bytes(label);
    labeled_ikm.insert(labeled_ikm.end(), lab.begin(), lab.end());
    labeled_ikm.insert(labeled_ikm.end(), ikm.begin(), ikm.end());
    return hkdf_sha256_extract(salt, labeled_ikm);
}

// s4: LabeledExpand(prk, label, info, L) = Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info, L).
Result<SecureBytes> labeled_expand(ByteView suite_id, ByteView prk, std::string_view label, ByteView info,
                                   std::size_t length) {
    if (length > std::numeric_limits<std::uint16_t>::max()) {
        return Error{Errc::invalid_argument, "HPKE LabeledExpand length exceeds 2^16 - 1"};
    }
    Bytes labeled_info;
    put_u16(labeled_info, static_cast<std::uint16_t>(length));
    append(labeled_info, as_bytes(version_label));
    append(labeled_info, suite_id);
    append(labeled_info, as_bytes(label));
    append(labeled_info, info);
    return hkdf_sha256_expand(prk, labeled_info, length);
}

// s4.1 ExtractAndExpand(dh, kem_context).
Result<SecureBytes> extract_and_expand(ByteView dh, ByteView kem_context) {
    const auto suite = kem_suite_id();
    const auto eae_prk = labeled_extract(suite, {}, "eae_prk", dh);
    return labeled_expand(suite, eae_prk, "shared_secret", kem_context, hpke_secret_size);
}

// s4.1 Encap with a given ephemeral key pair: (shared_secret, enc).
Result<std::pair<SecureBytes, Bytes>> encap(ByteView pk_r, const X25519KeyPair& ephemeral) {
    if (pk_r.size() != hpke_public_key_size) {
        return Error{Errc::invalid_key, "HPKE recipient public key must be 32 bytes"};
    }
    SIM_TRY(const auto dh, x25519(ephemeral.private_key, pk_r));
    Bytes kem_context = ephemeral.public_key;
    append(kem_context, pk_r);
    SIM_TRY(auto shared, extract_and_expand(dh, kem_context));
    return std::pair{std::move(shared), ephemeral.public_key};
}

// s4.1 Decap.
Result<SecureBytes> decap(ByteView enc, ByteView sk_r) {
    if (enc.size() != hpke_enc_size || sk_r.size() != hpke_private_key_size) {
        return Error{Errc::invalid_key, "HPKE enc and recipient private key must be 32 bytes"};
    }
    SIM_TRY(const auto dh, x25519(sk_r, enc));
    SIM_TRY(const auto recipient, x25519_from_private(sk_r));
    Bytes kem_context(enc.begin(), enc.end());
    append(kem_context, recipient.public_key);
    return extract_and_expand(dh, kem_context);
}

}  // namespace

// Lets the free setup functions use HpkeContext's private constructor without making it public.
struct HpkeAccess {
    // s5.1 KeySchedule for mode_base (psk and psk_id empty).
    static Result<HpkeContext> key_schedule(ByteView shared_secret, ByteView info) {
        const auto suite = hpke_suite_id();
        const auto psk_id_hash = labeled_extract(suite, {}, "psk_id_hash", {});
        const auto info_hash = labeled_extract(suite, {}, "info_hash", info);
        Bytes context{mode_base};
        append(context, psk_id_hash);
        append(context, info_hash);
        const auto secret = labeled_extract(suite, shared_secret, "secret", {});
        SIM_TRY(auto key, labeled_expand(suite, secret, "key", context, hpke_key_size));
        SIM_TRY(auto base_nonce, labeled_expand(suite, secret, "base_nonce", context, hpke_nonce_size));
        SIM_TRY(auto exporter, labeled_expand(suite, secret, "exp", context, hpke_secret_size));
        SIM_TRY(auto aead, make_aead(AeadAlgorithm::aes128_gcm, key));
        return HpkeContext(std::move(aead), std::move(base_nonce), std::move(exporter));
    }
};

HpkeContext::HpkeContext(std::unique_ptr<Aead> aead, SecureBytes base_nonce, SecureBytes exporter_secret)
    : m_aead(std::move(aead)), m_base_nonce(std::move(base_nonce)), m_exporter_secret(std::move(exporter_secret)) {}
HpkeContext::HpkeContext(HpkeContext&&) noexcept = default;
HpkeContext& HpkeContext::operator=(HpkeContext&&) noexcept = default;
HpkeContext::~HpkeContext() = default;

// s5.2 ComputeNonce: base_nonce XOR I2OSP(seq, Nn).
Result<SecureBytes> HpkeContext::nonce() const {
    if (!m_aead) {
        return Error{Errc::invalid_state, "HPKE context was moved from"};
    }
    // s5.2: seq must stay below 2^(8*Nn) - 1; with a 64-bit counter the last usable value is 2^64 - 2.
    if (m_seq == std::numeric_limits<std::uint64_t>::max()) {
        return Error{Errc::limit_reached, "HPKE sequence number exhausted"};
    }
    SecureBytes nonce = m_base_nonce;
    for (std::size_t i = 0; i < 8; ++i) {
        nonce[hpke_nonce_size - 1 - i] ^= static_cast<std::uint8_t>(m_seq >> (8 * i));
    }
    return nonce;
}

Result<Bytes> HpkeContext::seal(ByteView aad, ByteView plaintext) {
    SIM_TRY(const auto n, nonce());
    SIM_TRY(auto ct, m_aead->seal(n, aad, plaintext));
    ++m_seq;
    return ct;
}

Result<Bytes> HpkeContext::open(ByteView aad, ByteView ciphertext) {
    SIM_TRY(const auto n, nonce());
    SIM_TRY(auto pt, m_aead->open(n, aad, ciphertext));
    ++m_seq;
    return pt;
}

Result<SecureBytes> HpkeContext::export_secret(ByteView exporter_context, std::size_t length) const {
    if (!m_aead) {
        return Error{Errc::invalid_state, "HPKE context was moved from"};
    }
    if (length > hpke_max_export) {
        return Error{Errc::invalid_argument, "HPKE export longer than 255 * Nh"};
    }
    return labeled_expand(hpke_suite_id(), m_exporter_secret, "sec", exporter_context, length);
}

Result<X25519KeyPair> hpke_derive_key_pair(ByteView ikm) {
    // s7.1.3: for X25519, sk = LabeledExpand(dkp_prk, "sk", "", Nsk); X25519 clamps it when used.
    const auto suite = kem_suite_id();
    const auto dkp_prk = labeled_extract(suite, {}, "dkp_prk", ikm);
    SIM_TRY(const auto sk, labeled_expand(suite, dkp_prk, "sk", {}, hpke_private_key_size));
    return x25519_from_private(sk);
}

Result<HpkeSender> hpke_setup_base_sender_with_ephemeral(ByteView recipient_public, ByteView info,
                                                         ByteView ephemeral_private) {
    SIM_TRY(const auto ephemeral, x25519_from_private(ephemeral_private));
    SIM_TRY(const auto shared_and_enc, encap(recipient_public, ephemeral));
    SIM_TRY(auto context, HpkeAccess::key_schedule(shared_and_enc.first, info));
    return HpkeSender{shared_and_enc.second, std::move(context)};
}

Result<HpkeSender> hpke_setup_base_sender(ByteView recipient_public, ByteView info, Rng& rng) {
    const auto ephemeral = x25519_generate(rng);
    return hpke_setup_base_sender_with_ephemeral(recipient_public, info, ephemeral.private_key);
}

Result<HpkeContext> hpke_setup_base_receiver(ByteView enc, ByteView recipient_private, ByteView info) {
    SIM_TRY(const auto shared, decap(enc, recipient_private));
    return HpkeAccess::key_schedule(shared, info);
}

Result<HpkeSealed> hpke_seal_base(ByteView recipient_public, ByteView info, ByteView aad, ByteView plaintext,
                                  Rng& rng) {
    SIM_TRY(auto sender, hpke_setup_base_sender(recipient_public, info, rng));
    SIM_TRY(auto ct, sender.context.seal(aad, plaintext));
    return HpkeSealed{std::move(sender.enc), std::move(ct)};
}

Result<Bytes> hpke_open_base(ByteView enc, ByteView recipient_private, ByteView info, ByteView aad,
                             ByteView ciphertext) {
    SIM_TRY(auto context, hpke_setup_base_receiver(enc, recipient_private, info));
    return context.open(aad, ciphertext);
}

}  // namespace sim::crypto
