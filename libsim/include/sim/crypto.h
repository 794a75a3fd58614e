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
inline constexpr std::size_t ed25519_key_size = 32;        ///< seed, public key
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

enum class AeadAlgorithm : std::uint8_t { aes256_gcm, chacha20_poly1305 };

inline constexpr std::size_t aead_key_size = 32;
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
    /// Replace the key (32 bytes, else Errc::invalid_key).
    virtual Status rekey(ByteView key) = 0;
};

/// Create an AEAD with `key` (32 bytes, else Errc::invalid_key).
Result<std::unique_ptr<Aead>> make_aead(AeadAlgorithm alg, ByteView key);

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
/// TDES-ECB over whole blocks, for known-answer tests only. Key 24 bytes (Errc::invalid_key); `blocks` must be a
/// whole number of 8-byte blocks (Errc::bad_length).
Result<Bytes> tdes_ecb_encrypt(ByteView key, ByteView blocks);
/// TDES-ECB decryption; same errors as tdes_ecb_encrypt.
Result<Bytes> tdes_ecb_decrypt(ByteView key, ByteView blocks);

// ---------------------------------------------------------------- Password hashing

/// bcrypt ("$2a$/$2b$/$2y$" strings), work factor 4..18 (Botan 2's limit). The password is used as given (bcrypt reads at most
/// 72 bytes of it); callers that want long passwords pre-hash them (see auth).
Result<std::string> bcrypt_hash(std::string_view password, unsigned work_factor, Rng& rng);
/// True when `password` matches `hash`; false for a mismatch; Errc::bad_hash when `hash` is not a bcrypt string.
Result<bool> bcrypt_verify(std::string_view password, std::string_view hash);

/// Raw Argon2id (RFC 9106): tag of `out_len` bytes.
Result<SecureBytes> argon2id(std::string_view password, ByteView salt, std::size_t memory_kib,
                             std::size_t iterations, std::size_t parallelism, std::size_t out_len);

}  // namespace sim::crypto
