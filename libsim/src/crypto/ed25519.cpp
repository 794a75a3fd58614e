// SHA-512, Ed25519 (RFC 8032, PureEdDSA) and the RFC 7748 s4.1 map from Ed25519 to X25519, over Botan.
#include <sim/crypto.h>

#include <botan/bigint.h>
#include <botan/ed25519.h>
#include <botan/hash.h>
#include <botan/numthry.h>
#include <botan/pubkey.h>
#include <botan/rng.h>

#include <algorithm>
#include <array>
#include <exception>

namespace sim::crypto {

namespace {

void sha512_into(ByteView a, ByteView b, std::uint8_t* out) {
    thread_local const auto hash = Botan::HashFunction::create_or_throw("SHA-512");
    hash->update(a.data(), a.size());
    hash->update(b.data(), b.size());
    hash->final(out);
}

// Ed25519 signing is deterministic (RFC 8032 s5.1.6) and never asks for randomness; Botan's API wants an RNG
// anyway. Null_RNG throws if it is ever used, which the callers turn into Errc::internal.
Botan::Null_RNG& null_rng() {
    thread_local Botan::Null_RNG rng;
    return rng;
}

}  // namespace

Bytes sha512(ByteView data) {
    return sha512(data, {});
}

Bytes sha512(ByteView a, ByteView b) {
    Bytes out(sha512_size);
    sha512_into(a, b, out.data());
    return out;
}

Ed25519KeyPair ed25519_generate(Rng& rng) {
    const auto seed = rng.secure_bytes(ed25519_key_size);
    auto pair = ed25519_from_seed(seed);
    return std::move(pair).value();  // cannot fail: the size is right
}

Result<Ed25519KeyPair> ed25519_from_seed(ByteView seed) {
    if (seed.size() != ed25519_key_size) {
        return Error{Errc::invalid_key, "Ed25519 seed must be 32 bytes"};
    }
    const Botan::secure_vector<std::uint8_t> secret(seed.begin(), seed.end());
    const Botan::Ed25519_PrivateKey key(secret);
    Ed25519KeyPair pair;
    pair.private_key.assign(seed.begin(), seed.end());
    const auto& pub = key.get_public_key();
    pair.public_key.assign(pub.begin(), pub.end());
    return pair;
}

Result<Bytes> ed25519_sign(ByteView seed, ByteView message) {
    if (seed.size() != ed25519_key_size) {
        return Error{Errc::invalid_key, "Ed25519 seed must be 32 bytes"};
    }
    try {
        const Botan::secure_vector<std::uint8_t> secret(seed.begin(), seed.end());
        const Botan::Ed25519_PrivateKey key(secret);
        Botan::PK_Signer signer(key, null_rng(), "Pure");
        const auto sig = signer.sign_message(message.data(), message.size(), null_rng());
        if (sig.size() != ed25519_signature_size) {
            return Error{Errc::internal, "Ed25519 signature has an unexpected size"};
        }
        return Bytes(sig.begin(), sig.end());
    } catch (const std::exception&) {
        return Error{Errc::internal, "Ed25519 signing failed"};
    }
}

namespace {

const Botan::BigInt& field_prime() {
    static const Botan::BigInt p = Botan::BigInt::power_of_2(255) - 19;
    return p;
}

/// y of an encoded point (RFC 8032 s5.1.3: little-endian, the top bit is the sign of x).
Botan::BigInt decode_y(ByteView point) {
    std::array<std::uint8_t, ed25519_key_size> be{};
    std::reverse_copy(point.begin(), point.end(), be.begin());
    be[0] = static_cast<std::uint8_t>(be[0] & 0x7FU);
    return Botan::BigInt::decode(be.data(), be.size());
}

/// A public key Ed25519 verification may use: canonical (y < p, RFC 8032 s5.1.3 step 1) and not one of the eight
/// points of small order (y in {0, 1, p - 1, +-y8}); those would let a signature verify for many messages, and
/// y = +-1 also covers the "x = 0 with the sign bit set" encodings of step 4.
bool usable_public_key(ByteView public_key) {
    // y of the points of order 8 (the others are y = 0, order 4; y = 1, order 1; y = p - 1, order 2).
    static const Botan::BigInt y8("2707385501144840649318225287225658788936804267575313519463743609750303402022");
    const auto& p = field_prime();
    const Botan::BigInt y = decode_y(public_key);
    return y < p && !y.is_zero() && y != 1 && y != p - 1 && y != y8 && y != p - y8;
}

/// RFC 8032 s5.1.7 step 1: S (the second half of the signature, little-endian) must be below the group order L.
bool canonical_s(ByteView signature) {
    // L = 2^252 + 27742317777372353535851937790883648493, little-endian.
    static constexpr std::array<std::uint8_t, 32> order = {
        0xED, 0xD3, 0xF5, 0x5C, 0x1A, 0x63, 0x12, 0x58, 0xD6, 0x9C, 0xF7, 0xA2, 0xDE, 0xF9, 0xDE, 0x14,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};
    const auto s = signature.subspan(32);
    for (std::size_t i = order.size(); i-- > 0;) {
        if (s[i] != order[i]) {
            return s[i] < order[i];
        }
    }
    return false;  // S == L
}

}  // namespace

bool ed25519_verify(ByteView public_key, ByteView message, ByteView signature) {
    if (public_key.size() != ed25519_key_size || signature.size() != ed25519_signature_size) {
        return false;
    }
    // Botan 2.19 checks neither S < L nor the key's encoding; RFC 8032 requires the first, and the second keeps
    // small-order keys (under which signatures are not binding) out.
    if (!canonical_s(signature) || !usable_public_key(public_key)) {
        return false;
    }
    try {
        const Botan::Ed25519_PublicKey key(public_key.data(), public_key.size());
        Botan::PK_Verifier verifier(key, "Pure");
        return verifier.verify_message(message.data(), message.size(), signature.data(), signature.size());
    } catch (const std::exception&) {
        return false;
    }
}

Result<Bytes> ed25519_public_to_x25519(ByteView ed25519_public) {
    if (ed25519_public.size() != ed25519_key_size) {
        return Error{Errc::invalid_key, "Ed25519 public key must be 32 bytes"};
    }
    const Botan::BigInt y = decode_y(ed25519_public);
    const auto& p = field_prime();
    if (y >= p) {
        return Error{Errc::invalid_key, "Ed25519 public key is not canonical (y >= p)"};
    }
    if (y == 1) {
        return Error{Errc::invalid_key, "Ed25519 public key is the neutral element"};
    }
    // RFC 7748 s4.1: u = (1 + y) / (1 - y) mod p. 1 - y is not 0 mod p here, so the inverse exists.
    const Botan::BigInt one(1);
    const Botan::BigInt numerator = (one + y) % p;
    const Botan::BigInt denominator = (one + p - y) % p;
    const Botan::BigInt u = (numerator * Botan::inverse_mod(denominator, p)) % p;
    if (u.is_zero()) {
        return Error{Errc::invalid_key, "Ed25519 public key maps to u = 0 (low order)"};
    }
    std::array<std::uint8_t, ed25519_key_size> be{};
    u.binary_encode(be.data(), be.size());
    Bytes out(ed25519_key_size);
    std::reverse_copy(be.begin(), be.end(), out.begin());
    return out;
}

Result<SecureBytes> ed25519_seed_to_x25519(ByteView seed) {
    if (seed.size() != ed25519_key_size) {
        return Error{Errc::invalid_key, "Ed25519 seed must be 32 bytes"};
    }
    SecureBytes digest(sha512_size);
    sha512_into(seed, {}, digest.data());
    return SecureBytes(digest.begin(), digest.begin() + x25519_key_size);
}

}  // namespace sim::crypto
