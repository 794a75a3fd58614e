#pragma once
/// @file
/// The labelled cryptographic operations of RFC 9420 s5 for ciphersuite 0x0001,
/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (the only suite libsim speaks). Internal to libsim.
///
/// Hash SHA-256, KDF HKDF-SHA256 (Nh = 32), AEAD AES-128-GCM (Nk = 16, Nn = 12), HPKE DHKEM(X25519) base mode,
/// signatures Ed25519. Every function composes sim/crypto.h; none includes Botan.

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace sim::mls {

/// The one ciphersuite (RFC 9420 s17.1).
inline constexpr std::uint16_t cipher_suite = 0x0001;
/// ProtocolVersion mls10 (s6).
inline constexpr std::uint16_t protocol_version = 0x0001;
inline constexpr std::size_t hash_size = 32;        ///< Nh, also KDF.Nh and the MAC length
inline constexpr std::size_t aead_key_size = 16;    ///< AEAD.Nk
inline constexpr std::size_t aead_nonce_size = 12;  ///< AEAD.Nn
inline constexpr std::size_t aead_tag_size = 16;
/// Longest label accepted by the labelled functions; labels are constants of the protocol, never peer data.
inline constexpr std::size_t max_label_size = 255;

/// Hash(data) (SHA-256).
[[nodiscard]] Bytes hash(ByteView data);
/// MAC(key, data) (HMAC-SHA256).
[[nodiscard]] SecureBytes mac(ByteView key, ByteView data);
/// KDF.Extract(salt, ikm).
[[nodiscard]] SecureBytes extract(ByteView salt, ByteView ikm);

/// s5.2 RefHash(label, value) = Hash(RefHashInput{label<V>, value<V>}). Errc::frame_too_large for a value
/// longer than an MLS vector can be.
Result<Bytes> ref_hash(std::string_view label, ByteView value);

/// s8 ExpandWithLabel(secret, label, context, length) = KDF.Expand(secret, KDFLabel, length) with
/// KDFLabel{uint16 length, opaque label<V> = "MLS 1.0 " + label, opaque context<V>}.
/// Errc::invalid_argument when `length` exceeds 255 * Nh or `label` max_label_size.
Result<SecureBytes> expand_with_label(ByteView secret, ByteView label, ByteView context, std::size_t length);
/// ExpandWithLabel with a text label (the protocol's constants).
Result<SecureBytes> expand_with_label(ByteView secret, std::string_view label, ByteView context, std::size_t length);
/// s8 DeriveSecret(secret, label) = ExpandWithLabel(secret, label, "", Nh). Errors as expand_with_label.
Result<SecureBytes> derive_secret(ByteView secret, ByteView label);
Result<SecureBytes> derive_secret(ByteView secret, std::string_view label);
/// s9 DeriveTreeSecret(secret, label, generation, length) = ExpandWithLabel(secret, label, uint32 generation,
/// length).
Result<SecureBytes> derive_tree_secret(ByteView secret, std::string_view label, std::uint32_t generation,
                                       std::size_t length);

/// s5.1.2 SignWithLabel(priv, label, content): Ed25519 over SignContent{label<V> = "MLS 1.0 " + label,
/// content<V>}. `signature_private` is the 32-byte Ed25519 seed (else Errc::invalid_key).
Result<Bytes> sign_with_label(ByteView signature_private, std::string_view label, ByteView content);
/// s5.1.2 VerifyWithLabel: true only for a valid signature; false for any malformed key or signature.
[[nodiscard]] bool verify_with_label(ByteView signature_public, std::string_view label, ByteView content,
                                     ByteView signature);

/// Output of EncryptWithLabel: an HPKECiphertext (s5.1.3).
struct HpkeCiphertext {
    Bytes kem_output;
    Bytes ciphertext;
};

/// s5.1.3 EncryptWithLabel(pub, label, context, plaintext) = SealBase(pub, EncryptContext{label<V> = "MLS 1.0 "
/// + label, context<V>}, "", plaintext). Errc::invalid_key for a malformed or low-order public key.
Result<HpkeCiphertext> encrypt_with_label(ByteView public_key, std::string_view label, ByteView context,
                                          ByteView plaintext, Rng& rng);
/// s5.1.3 DecryptWithLabel. Errc::invalid_key (bad sizes, low-order kem_output), Errc::auth_failed.
Result<Bytes> decrypt_with_label(ByteView private_key, std::string_view label, ByteView context, ByteView kem_output,
                                 ByteView ciphertext);

/// The HPKE key pair KEM.DeriveKeyPair(secret) (RFC 9180 s7.1.3), e.g. external_pub from external_secret (s8).
struct HpkeKeyPair {
    SecureBytes private_key;
    Bytes public_key;
};
Result<HpkeKeyPair> derive_key_pair(ByteView secret);

}  // namespace sim::mls
