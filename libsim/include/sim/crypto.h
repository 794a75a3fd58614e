#pragma once
/// @file
/// The cryptographic primitives libsim composes, as a small facade over Botan.
///
/// Botan itself is included only in `libsim/src/crypto/`; nothing here exposes a Botan type, so moving to Botan 3
/// touches one folder. Every function takes and returns plain byte containers; secrets come back in `SecureBytes`.

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

namespace sim::crypto {

// ---------------------------------------------------------------- X25519 (RFC 7748)

inline constexpr std::size_t x25519_key_size = 32;

struct X25519KeyPair {
    SecureBytes private_key;  ///< 32 bytes
    Bytes public_key;         ///< 32 bytes
};

/// A fresh key pair from `rng`.
X25519KeyPair x25519_generate(Rng& rng);
/// The key pair whose private key is `private_key` (32 bytes, else Errc::invalid_key).
Result<X25519KeyPair> x25519_from_private(ByteView private_key);
/// X25519(private_key, peer_public). Errc::invalid_key for wrong sizes or an all-zero shared secret
/// (a low-order peer point, RFC 7748 s6.1).
Result<SecureBytes> x25519(ByteView private_key, ByteView peer_public);

// ---------------------------------------------------------------- SHA-256, HMAC, HKDF (RFC 2104, RFC 5869)

inline constexpr std::size_t sha256_size = 32;

Bytes sha256(ByteView data);
/// SHA-256 over the concatenation of two inputs (saves a copy in hot paths such as Noise's MixHash).
Bytes sha256(ByteView a, ByteView b);
SecureBytes hmac_sha256(ByteView key, ByteView message);

/// HMAC-SHA256 under a fixed key, for MACs computed many times with one key (record ciphers): the key's inner and
/// outer pads are computed once. Not thread-safe.
class HmacSha256 {
public:
    virtual ~HmacSha256() = default;
    /// HMAC over the concatenation of `a` and `b` (e.g. a header and a body), without copying them together.
    virtual SecureBytes mac(ByteView a, ByteView b) = 0;
};
/// Any key length (RFC 2104).
std::unique_ptr<HmacSha256> make_hmac_sha256(ByteView key);
/// RFC 5869 HKDF-Extract with SHA-256.
SecureBytes hkdf_sha256_extract(ByteView salt, ByteView ikm);
/// RFC 5869 HKDF-Expand with SHA-256. Errc::invalid_argument when `length` > 255 * 32.
Result<SecureBytes> hkdf_sha256_expand(ByteView prk, ByteView info, std::size_t length);
/// Extract then Expand.
Result<SecureBytes> hkdf_sha256(ByteView salt, ByteView ikm, ByteView info, std::size_t length);

// ---------------------------------------------------------------- SHA-512, Ed25519 (RFC 8032) and its X25519 form

inline constexpr std::size_t sha512_size = 64;
inline constexpr std::size_t ed25519_key_size = 32;  ///< seed, public key
inline constexpr std::size_t ed25519_signature_size = 64;

Bytes sha512(ByteView data);
/// SHA-512 over the concatenation of two inputs.
Bytes sha512(ByteView a, ByteView b);

struct Ed25519KeyPair {
    SecureBytes private_key;  ///< the 32-byte seed of RFC 8032 s5.1.5
    Bytes public_key;         ///< 32 bytes
};

/// A fresh key pair: a 32-byte seed from `rng`.
Ed25519KeyPair ed25519_generate(Rng& rng);
/// The key pair of a 32-byte seed (else Errc::invalid_key).
Result<Ed25519KeyPair> ed25519_from_seed(ByteView seed);
/// PureEdDSA signature (64 bytes) of `message` under the key pair of `seed` (32 bytes, else Errc::invalid_key).
Result<Bytes> ed25519_sign(ByteView seed, ByteView message);
/// True when `signature` is a valid PureEdDSA signature of `message` by `public_key`; false for anything else,
/// including keys and signatures of the wrong size or that do not decode.
[[nodiscard]] bool ed25519_verify(ByteView public_key, ByteView message, ByteView signature);

/// RFC 7748 s4.1 birational map of an Ed25519 public key to its X25519 public key: u = (1 + y) / (1 - y) mod p
/// (p = 2^255 - 19; the sign bit of x is ignored). Errc::invalid_key for a key that is not 32 bytes, a
/// non-canonical y (y >= p), y = 1 (the neutral element; no image) and a result u = 0 (y = -1, low order).
Result<Bytes> ed25519_public_to_x25519(ByteView ed25519_public);
/// X25519 private key of an Ed25519 seed: the first 32 bytes of SHA-512(seed) (RFC 8032 s5.1.5 step 1; X25519
/// clamps them as Ed25519 does). Errc::invalid_key when the seed is not 32 bytes.
Result<SecureBytes> ed25519_seed_to_x25519(ByteView seed);

// ---------------------------------------------------------------- AEAD

/// AEAD algorithms. `aes128_gcm` (16-byte key) exists for HPKE / MLS ciphersuite 1 (RFC 9180 s7.3, aead_id 1);
/// the others take 32-byte keys.
enum class AeadAlgorithm : std::uint8_t { aes256_gcm, chacha20_poly1305, aes128_gcm };

inline constexpr std::size_t aead_key_size = 32;        ///< key size of aes256_gcm and chacha20_poly1305
inline constexpr std::size_t aes128_gcm_key_size = 16;  ///< key size of aes128_gcm

/// The key size of `alg` in bytes.
[[nodiscard]] constexpr std::size_t aead_key_size_of(AeadAlgorithm alg) noexcept {
    return alg == AeadAlgorithm::aes128_gcm ? aes128_gcm_key_size : aead_key_size;
}
inline constexpr std::size_t aead_nonce_size = 12;
inline constexpr std::size_t aead_tag_size = 16;

/// A keyed AEAD with 96-bit nonces and 128-bit tags. Not thread-safe; one per direction.
class Aead {
public:
    virtual ~Aead() = default;
    /// ciphertext || tag. Errc::invalid_argument for a nonce that is not 12 bytes.
    virtual Result<Bytes> seal(ByteView nonce, ByteView ad, ByteView plaintext) = 0;
    /// Seal into `out` (appended), avoiding an allocation when `out` has capacity.
    virtual Status seal_into(ByteView nonce, ByteView ad, ByteView plaintext, Bytes& out) = 0;
    /// Plaintext, or Errc::auth_failed when the tag does not verify (nothing is released then).
    virtual Result<Bytes> open(ByteView nonce, ByteView ad, ByteView ciphertext_and_tag) = 0;
    /// Replace the key (aead_key_size_of(algorithm) bytes, else Errc::invalid_key).
    virtual Status rekey(ByteView key) = 0;
};

/// Create an AEAD with `key` (aead_key_size_of(alg) bytes: 16 for aes128_gcm, else 32; Errc::invalid_key otherwise).
Result<std::unique_ptr<Aead>> make_aead(AeadAlgorithm alg, ByteView key);

// ---------------------------------------------------------------- HPKE (RFC 9180), base mode, one suite
//
// DHKEM(X25519, HKDF-SHA256) (kem_id 0x0020), HKDF-SHA256 (kdf_id 0x0001), AES-128-GCM (aead_id 0x0001): the HPKE
// of MLS ciphersuite 1 (RFC 9420 s17.1). Only mode_base (no PSK, no sender authentication). Every X25519 output is
// checked: an all-zero shared secret (a low-order or zero public key) is refused with Errc::invalid_key
// (RFC 9180 s7.1.4).

inline constexpr std::size_t hpke_enc_size = 32;          ///< Nenc: the encapsulated key (an X25519 public key)
inline constexpr std::size_t hpke_public_key_size = 32;   ///< Npk
inline constexpr std::size_t hpke_private_key_size = 32;  ///< Nsk
inline constexpr std::size_t hpke_key_size = 16;          ///< Nk (AES-128-GCM)
inline constexpr std::size_t hpke_nonce_size = 12;        ///< Nn
inline constexpr std::size_t hpke_secret_size = 32;       ///< Nh, Nsecret
inline constexpr std::size_t hpke_max_export = 255 * 32;  ///< largest Export length (255 * Nh)

/// RFC 9180 s7.1.3 DeriveKeyPair for X25519: the key pair derived from `ikm` (at least 32 bytes recommended; any
/// length is accepted as in the RFC). Never fails for X25519 but returns a Result for uniformity.
Result<X25519KeyPair> hpke_derive_key_pair(ByteView ikm);

/// An HPKE encryption context (RFC 9180 s5.2): a key, a base nonce, a sequence number and the exporter secret.
/// Seal and Open use the nonce base_nonce XOR seq and advance seq only on success. Not thread-safe; one role
/// (sender or receiver) per context. Move-only; its secrets are wiped when it is destroyed.
class HpkeContext {
public:
    HpkeContext(HpkeContext&&) noexcept;
    HpkeContext& operator=(HpkeContext&&) noexcept;
    HpkeContext(const HpkeContext&) = delete;
    HpkeContext& operator=(const HpkeContext&) = delete;
    ~HpkeContext();

    /// AEAD-encrypt `plaintext` with `aad` under the next nonce: ciphertext || tag. Errc::limit_reached when the
    /// sequence number is exhausted (2^64 - 1 messages), Errc::invalid_state on a moved-from context.
    Result<Bytes> seal(ByteView aad, ByteView plaintext);
    /// Decrypt `ciphertext` (with tag) for the next sequence number. Errc::auth_failed when the tag does not
    /// verify (the sequence number is then unchanged), Errc::limit_reached, Errc::invalid_state as for seal.
    Result<Bytes> open(ByteView aad, ByteView ciphertext);
    /// RFC 9180 s5.3 Export: `length` bytes bound to `exporter_context`. Errc::invalid_argument when `length`
    /// exceeds hpke_max_export.
    Result<SecureBytes> export_secret(ByteView exporter_context, std::size_t length) const;
    /// The sequence number of the next seal / open.
    [[nodiscard]] std::uint64_t sequence() const noexcept { return m_seq; }

private:
    friend struct HpkeAccess;
    HpkeContext(std::unique_ptr<Aead> aead, SecureBytes base_nonce, SecureBytes exporter_secret);
    Result<SecureBytes> nonce() const;

    std::unique_ptr<Aead> m_aead;
    SecureBytes m_base_nonce;
    SecureBytes m_exporter_secret;
    std::uint64_t m_seq = 0;
};

/// What the sender gets from SetupBaseS: the encapsulated key to send and its context.
struct HpkeSender {
    Bytes enc;  ///< hpke_enc_size bytes
    HpkeContext context;
};

/// RFC 9180 s5.1.1 SetupBaseS with a fresh ephemeral key from `rng`. Errc::invalid_key when `recipient_public`
/// is not 32 bytes or yields an all-zero X25519 output.
Result<HpkeSender> hpke_setup_base_sender(ByteView recipient_public, ByteView info, Rng& rng);
/// SetupBaseS with the ephemeral private key given (known-answer tests only: reusing an ephemeral key breaks
/// HPKE). Errors as hpke_setup_base_sender, plus Errc::invalid_key for an ephemeral key that is not 32 bytes.
Result<HpkeSender> hpke_setup_base_sender_with_ephemeral(ByteView recipient_public, ByteView info,
                                                         ByteView ephemeral_private);
/// RFC 9180 s5.1.1 SetupBaseR. Errc::invalid_key when `enc` or `recipient_private` is not 32 bytes or the
/// X25519 output is all zero (a low-order `enc`).
Result<HpkeContext> hpke_setup_base_receiver(ByteView enc, ByteView recipient_private, ByteView info);

/// Single-shot output of hpke_seal_base.
struct HpkeSealed {
    Bytes enc;         ///< encapsulated key
    Bytes ciphertext;  ///< ciphertext || tag
};

/// RFC 9180 s6.1 SealBase: SetupBaseS then one seal. Errors as hpke_setup_base_sender.
Result<HpkeSealed> hpke_seal_base(ByteView recipient_public, ByteView info, ByteView aad, ByteView plaintext, Rng& rng);
/// RFC 9180 s6.1 OpenBase: SetupBaseR then one open. Errors as hpke_setup_base_receiver and HpkeContext::open.
Result<Bytes> hpke_open_base(ByteView enc, ByteView recipient_private, ByteView info, ByteView aad,
                             ByteView ciphertext);

// ---------------------------------------------------------------- Triple-DES (three-key EDE)

inline constexpr std::size_t tdes_key_size = 24;
inline constexpr std::size_t tdes_block_size = 8;

/// Three-key TDES-CBC under a fixed key (the key schedule is computed once). Not thread-safe.
/// Errors as tdes_cbc_encrypt / tdes_cbc_decrypt.
class TdesCbc {
public:
    virtual ~TdesCbc() = default;
    virtual Result<Bytes> encrypt(ByteView iv, ByteView plaintext) = 0;
    virtual Result<Bytes> decrypt(ByteView iv, ByteView ciphertext) = 0;
};
/// `pkcs7` chooses PKCS#7 padding or none. Errc::invalid_key for a key that is not 24 bytes.
Result<std::unique_ptr<TdesCbc>> make_tdes_cbc(ByteView key, bool pkcs7);

/// TDES-CBC encryption. `pkcs7` adds padding; without it the input must be a whole number of blocks
/// (else Errc::invalid_argument). Key 24 bytes (Errc::invalid_key), IV 8 bytes (Errc::invalid_argument).
Result<Bytes> tdes_cbc_encrypt(ByteView key, ByteView iv, ByteView plaintext, bool pkcs7);
/// TDES-CBC decryption; Errc::auth_failed for bad padding, Errc::bad_length for a partial block.
Result<Bytes> tdes_cbc_decrypt(ByteView key, ByteView iv, ByteView ciphertext, bool pkcs7);

// ---------------------------------------------------------------- Password hashing

/// bcrypt ("$2a$/$2b$/$2y$" strings), work factor 4..18 (Botan 2's limit). The password is used as given (bcrypt reads
/// at most 72 bytes of it); callers that want long passwords pre-hash them (see auth).
Result<std::string> bcrypt_hash(std::string_view password, unsigned work_factor, Rng& rng);
/// True when `password` matches `hash`; false for a mismatch; Errc::bad_hash when `hash` is not a bcrypt string.
Result<bool> bcrypt_verify(std::string_view password, std::string_view hash);

/// Raw Argon2id (RFC 9106): tag of `out_len` bytes.
Result<SecureBytes> argon2id(std::string_view password, ByteView salt, std::size_t memory_kib, std::size_t iterations,
                             std::size_t parallelism, std::size_t out_len);

}  // namespace sim::crypto
