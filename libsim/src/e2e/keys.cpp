// Identity keys, prekeys, bundles and safety numbers (docs/protocol.md 6.1, 6.4).
#include <sim/crypto.h>
#include <sim/e2e.h>

#include <algorithm>
#include <array>

namespace sim::e2e {

IdentityKeyPair generate_identity(Rng& rng) {
    auto pair = crypto::ed25519_generate(rng);
    return IdentityKeyPair{std::move(pair.private_key), std::move(pair.public_key)};
}

Result<IdentityKeyPair> identity_from_private(ByteView seed) {
    SIM_TRY(auto pair, crypto::ed25519_from_seed(seed));
    return IdentityKeyPair{std::move(pair.private_key), std::move(pair.public_key)};
}

Result<Bytes> identity_dh_public(ByteView ed25519_public) {
    return crypto::ed25519_public_to_x25519(ed25519_public);
}

Result<SecureBytes> identity_dh_private(ByteView ed25519_seed) {
    return crypto::ed25519_seed_to_x25519(ed25519_seed);
}

Result<Bytes> sign(const IdentityKeyPair& identity, ByteView message) {
    return crypto::ed25519_sign(identity.private_key, message);
}

bool verify(ByteView ed25519_public, ByteView message, ByteView signature) {
    return crypto::ed25519_verify(ed25519_public, message, signature);
}

Bytes encode_public_key(ByteView x25519_public) {
    // X3DH s2.5: Encode(PK) = a single byte naming the curve (0x05 for X25519, as Signal does) || the u-coordinate.
    Bytes out;
    out.reserve(1 + x25519_public.size());
    out.push_back(0x05);
    out.insert(out.end(), x25519_public.begin(), x25519_public.end());
    return out;
}

SignedPrekey generate_signed_prekey(const IdentityKeyPair& identity, std::uint32_t id, Rng& rng) {
    auto pair = crypto::x25519_generate(rng);
    SignedPrekey spk;
    spk.id = id;
    spk.signature = sign(identity, encode_public_key(pair.public_key)).value();  // a valid identity cannot fail
    spk.private_key = std::move(pair.private_key);
    spk.public_key = std::move(pair.public_key);
    return spk;
}

OneTimePrekey generate_one_time_prekey(std::uint32_t id, Rng& rng) {
    auto pair = crypto::x25519_generate(rng);
    return OneTimePrekey{id, std::move(pair.private_key), std::move(pair.public_key)};
}

Status verify_bundle(const PrekeyBundle& bundle) {
    if (bundle.identity_key.size() != key_size || bundle.signed_prekey.size() != key_size) {
        return Error{Errc::invalid_key, "prekey bundle keys must be 32 bytes"};
    }
    if (bundle.signed_prekey_signature.size() != signature_size) {
        return Error{Errc::invalid_key, "signed prekey signature must be 64 bytes"};
    }
    if (bundle.one_time_prekey_id.has_value() != !bundle.one_time_prekey.empty()) {
        return Error{Errc::invalid_key, "one-time prekey id and key must come together"};
    }
    if (bundle.one_time_prekey_id.has_value() &&
        (bundle.one_time_prekey.size() != key_size || *bundle.one_time_prekey_id == no_one_time_prekey)) {
        return Error{Errc::invalid_key, "one-time prekey must be 32 bytes with a valid id"};
    }
    if (!verify(bundle.identity_key, encode_public_key(bundle.signed_prekey), bundle.signed_prekey_signature)) {
        return Error{Errc::auth_failed, "signed prekey signature does not verify"};
    }
    // The identity must also have an X25519 form, since X3DH uses it for DH2.
    SIM_TRY(auto ik_dh, identity_dh_public(bundle.identity_key));
    (void)ik_dh;
    return ok();
}

namespace {

constexpr int fingerprint_iterations = 5200;
constexpr std::size_t fingerprint_chunks = 6;
constexpr std::size_t fingerprint_chunk_bytes = 5;
constexpr std::uint64_t fingerprint_modulus = 100000;

// Signal's NumericFingerprintGenerator, version 0: 30 digits for one side.
std::string fingerprint_half(std::string_view name, ByteView identity) {
    Bytes input{0x00, 0x00};
    input.insert(input.end(), identity.begin(), identity.end());
    const auto name_bytes = as_bytes(name);
    input.insert(input.end(), name_bytes.begin(), name_bytes.end());
    // libsignal's NumericFingerprintGenerator hashes the version || key || identifier block together with the key
    // in its first iteration (no separate initial hash): 5,200 SHA-512 calls in all, which its test vector checks.
    Bytes h = crypto::sha512(input, identity);
    for (int i = 1; i < fingerprint_iterations; ++i) {
        h = crypto::sha512(h, identity);
    }
    std::string out;
    for (std::size_t c = 0; c < fingerprint_chunks; ++c) {
        std::uint64_t v = 0;
        for (std::size_t j = 0; j < fingerprint_chunk_bytes; ++j) {
            v = (v << 8U) | h[c * fingerprint_chunk_bytes + j];
        }
        v %= fingerprint_modulus;
        std::array<char, 5> digits{};
        for (std::size_t d = digits.size(); d-- > 0;) {
            digits[d] = static_cast<char>('0' + v % 10);
            v /= 10;
        }
        out.append(digits.data(), digits.size());
    }
    return out;
}

}  // namespace

std::string safety_number(std::string_view name_a, ByteView identity_a, std::string_view name_b, ByteView identity_b) {
    const auto a = fingerprint_half(name_a, identity_a);
    const auto b = fingerprint_half(name_b, identity_b);
    const std::string digits = std::min(a, b) + std::max(a, b);
    std::string out;
    for (std::size_t i = 0; i < digits.size(); i += 5) {
        if (i != 0) {
            out.push_back(' ');
        }
        out.append(digits, i, 5);
    }
    return out;
}

}  // namespace sim::e2e
