// X25519, SHA-256, HMAC-SHA256 and HKDF-SHA256 over Botan.
#include <sim/crypto.h>

#include <botan/curve25519.h>
#include <botan/hash.h>
#include <botan/kdf.h>
#include <botan/mac.h>

#include <algorithm>
#include <array>

namespace sim::crypto {

X25519KeyPair x25519_generate(Rng& rng) {
    auto priv = rng.secure_bytes(x25519_key_size);
    auto pair = x25519_from_private(priv);
    return std::move(pair).value();  // cannot fail: the size is right
}

Result<X25519KeyPair> x25519_from_private(ByteView private_key) {
    if (private_key.size() != x25519_key_size) {
        return Error{Errc::invalid_key, "X25519 private key must be 32 bytes"};
    }
    X25519KeyPair pair;
    pair.private_key.assign(private_key.begin(), private_key.end());
    pair.public_key.resize(x25519_key_size);
    Botan::curve25519_basepoint(pair.public_key.data(), pair.private_key.data());
    return pair;
}

Result<SecureBytes> x25519(ByteView private_key, ByteView peer_public) {
    if (private_key.size() != x25519_key_size || peer_public.size() != x25519_key_size) {
        return Error{Errc::invalid_key, "X25519 keys must be 32 bytes"};
    }
    SecureBytes shared(x25519_key_size);
    Botan::curve25519_donna(shared.data(), private_key.data(), peer_public.data());
    // RFC 7748 s6.1: an all-zero output means a low-order peer point; refuse it (checked in constant time).
    std::uint8_t acc = 0;
    for (const auto b : shared) {
        acc = static_cast<std::uint8_t>(acc | b);
    }
    if (acc == 0) {
        return Error{Errc::invalid_key, "X25519 shared secret is zero (low-order public key)"};
    }
    return shared;
}

Bytes sha256(ByteView data) { return sha256(data, {}); }

namespace {

constexpr std::size_t sha256_block_size = 64;

void sha256_into(ByteView a, ByteView b, std::uint8_t* out) {
    thread_local const auto hash = Botan::HashFunction::create_or_throw("SHA-256");
    hash->update(a.data(), a.size());
    hash->update(b.data(), b.size());
    hash->final(out);
}

}  // namespace

Bytes sha256(ByteView a, ByteView b) {
    Bytes out(sha256_size);
    sha256_into(a, b, out.data());
    return out;
}

namespace {

class BotanHmacSha256 final : public HmacSha256 {
public:
    explicit BotanHmacSha256(ByteView key) : m_mac(Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)")) {
        // RFC 2104 s2: a key longer than the hash block is replaced by its hash. HMAC does this itself, but Botan 2
        // refuses keys over 4096 bytes with an exception; hashing first gives the same MAC for every length.
        SecureBytes hashed_key;
        if (key.size() > sha256_block_size) {
            hashed_key.resize(sha256_size);
            sha256_into(key, {}, hashed_key.data());
            key = hashed_key;
        }
        m_mac->set_key(key.data(), key.size());
    }
    SecureBytes mac(ByteView a, ByteView b) override {
        m_mac->update(a.data(), a.size());
        m_mac->update(b.data(), b.size());
        SecureBytes out(sha256_size);
        m_mac->final(out.data());
        return out;
    }

private:
    std::unique_ptr<Botan::MessageAuthenticationCode> m_mac;
};

}  // namespace

std::unique_ptr<HmacSha256> make_hmac_sha256(ByteView key) { return std::make_unique<BotanHmacSha256>(key); }

SecureBytes hmac_sha256(ByteView key, ByteView message) { return BotanHmacSha256(key).mac(message, {}); }

SecureBytes hkdf_sha256_extract(ByteView salt, ByteView ikm) {
    // RFC 5869 s2.2: PRK = HMAC-Hash(salt, IKM); an absent salt is HashLen zeros.
    static const std::array<std::uint8_t, sha256_size> zeros{};
    return hmac_sha256(salt.empty() ? ByteView{zeros} : salt, ikm);
}

Result<SecureBytes> hkdf_sha256_expand(ByteView prk, ByteView info, std::size_t length) {
    if (length > 255 * sha256_size) {
        return Error{Errc::invalid_argument, "HKDF output longer than 255 * HashLen"};
    }
    const auto kdf = Botan::KDF::create_or_throw("HKDF-Expand(SHA-256)");
    SecureBytes out(length);
    if (length != 0) {
        kdf->kdf(out.data(), out.size(), prk.data(), prk.size(), nullptr, 0, info.data(), info.size());
    }
    return out;
}

Result<SecureBytes> hkdf_sha256(ByteView salt, ByteView ikm, ByteView info, std::size_t length) {
    const auto prk = hkdf_sha256_extract(salt, ikm);
    return hkdf_sha256_expand(prk, info, length);
}

}  // namespace sim::crypto
