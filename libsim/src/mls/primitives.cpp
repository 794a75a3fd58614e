// RFC 9420 s5 and s8 labelled operations for ciphersuite 1, over the crypto facade.
#include "primitives.h"

#include "codec.h"

#include <sim/crypto.h>

#include <limits>

namespace sim::mls {

namespace {

constexpr std::string_view label_prefix = "MLS 1.0 ";

// "MLS 1.0 " + label as an opaque<V>.
Status write_label(TlsWriter& w, ByteView label) {
    if (label.size() > max_label_size) {
        return Error{Errc::invalid_argument, "MLS label too long"};
    }
    SIM_TRY_STATUS(w.varint(label_prefix.size() + label.size()));
    w.raw(as_bytes(label_prefix));
    w.raw(label);
    return ok();
}

// SignContent / EncryptContext: {opaque label<V>; opaque content<V>;} (s5.1.2, s5.1.3).
Result<Bytes> labelled_pair(std::string_view label, ByteView content) {
    TlsWriter w;
    SIM_TRY_STATUS(write_label(w, as_bytes(label)));
    SIM_TRY_STATUS(w.vector(content));
    return std::move(w).bytes();
}

}  // namespace

Bytes hash(ByteView data) {
    return crypto::sha256(data);
}

SecureBytes mac(ByteView key, ByteView data) {
    return crypto::hmac_sha256(key, data);
}

SecureBytes extract(ByteView salt, ByteView ikm) {
    return crypto::hkdf_sha256_extract(salt, ikm);
}

Result<Bytes> ref_hash(std::string_view label, ByteView value) {
    TlsWriter w;
    SIM_TRY_STATUS(w.vector(as_bytes(label)));
    SIM_TRY_STATUS(w.vector(value));
    return hash(w.bytes());
}

Result<SecureBytes> expand_with_label(ByteView secret, ByteView label, ByteView context, std::size_t length) {
    if (length > 255 * hash_size) {
        return Error{Errc::invalid_argument, "ExpandWithLabel length exceeds 255 * Nh"};
    }
    TlsWriter w;
    w.u16(static_cast<std::uint16_t>(length));
    SIM_TRY_STATUS(write_label(w, label));
    SIM_TRY_STATUS(w.vector(context));
    return crypto::hkdf_sha256_expand(secret, w.bytes(), length);
}

Result<SecureBytes> expand_with_label(ByteView secret, std::string_view label, ByteView context, std::size_t length) {
    return expand_with_label(secret, as_bytes(label), context, length);
}

Result<SecureBytes> derive_secret(ByteView secret, ByteView label) {
    return expand_with_label(secret, label, {}, hash_size);
}

Result<SecureBytes> derive_secret(ByteView secret, std::string_view label) {
    return derive_secret(secret, as_bytes(label));
}

Result<SecureBytes> derive_tree_secret(ByteView secret, std::string_view label, std::uint32_t generation,
                                       std::size_t length) {
    TlsWriter w;
    w.u32(generation);
    return expand_with_label(secret, label, w.bytes(), length);
}

Result<Bytes> sign_with_label(ByteView signature_private, std::string_view label, ByteView content) {
    SIM_TRY(const auto tbs, labelled_pair(label, content));
    return crypto::ed25519_sign(signature_private, tbs);
}

bool verify_with_label(ByteView signature_public, std::string_view label, ByteView content, ByteView signature) {
    const auto tbs = labelled_pair(label, content);
    return tbs && crypto::ed25519_verify(signature_public, *tbs, signature);
}

Result<HpkeCiphertext> encrypt_with_label(ByteView public_key, std::string_view label, ByteView context,
                                          ByteView plaintext, Rng& rng) {
    SIM_TRY(const auto info, labelled_pair(label, context));
    SIM_TRY(auto sealed, crypto::hpke_seal_base(public_key, info, {}, plaintext, rng));
    return HpkeCiphertext{std::move(sealed.enc), std::move(sealed.ciphertext)};
}

Result<Bytes> decrypt_with_label(ByteView private_key, std::string_view label, ByteView context, ByteView kem_output,
                                 ByteView ciphertext) {
    SIM_TRY(const auto info, labelled_pair(label, context));
    return crypto::hpke_open_base(kem_output, private_key, info, {}, ciphertext);
}

Result<HpkeKeyPair> derive_key_pair(ByteView secret) {
    SIM_TRY(auto pair, crypto::hpke_derive_key_pair(secret));
    return HpkeKeyPair{std::move(pair.private_key), std::move(pair.public_key)};
}

}  // namespace sim::mls
