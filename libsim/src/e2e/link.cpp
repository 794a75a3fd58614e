// Linking a new device (link.h).
#include "link.h"

#include "../proto/wire.h"

#include <algorithm>
#include <cctype>

namespace sim::e2e {
namespace {

constexpr std::string_view commit_label = "libsim link commit";
constexpr std::string_view link_label = "libsim link v1";
constexpr std::size_t okm_size = link_key_size + 5;  // the sealing key, then 40 bits of code

Bytes commitment(ByteView ephemeral_public, ByteView device_key) {
    Bytes in;
    detail::WireWriter w(in);
    w.text(commit_label);
    w.u8(0);
    w.bytes(ephemeral_public);
    w.bytes(device_key);
    return crypto::sha256(in);
}

Bytes transcript(ByteView request, ByteView offer, ByteView reveal) {
    Bytes in;
    detail::WireWriter w(in);
    w.text(link_label);
    w.u8(0);
    w.bytes(request);
    w.bytes(offer);
    w.bytes(reveal);
    return crypto::sha256(in);
}

/// The sealing key and the code of a link, from its transcript hash and the two ephemeral keys' DH.
Status derive(ByteView transcript_hash, ByteView own_private, ByteView peer_public, SecureBytes& key,
              std::string& code) {
    SIM_TRY(const SecureBytes dh, crypto::x25519(own_private, peer_public));
    SIM_TRY(SecureBytes okm, crypto::hkdf_sha256(transcript_hash, dh, as_bytes(link_label), okm_size));
    static constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";  // RFC 4648 base32
    std::uint64_t bits = 0;
    for (std::size_t i = link_key_size; i < okm_size; ++i) {
        bits = (bits << 8U) | okm[i];
    }
    code.clear();
    for (std::size_t i = 0; i < link_code_length; ++i) {
        code.push_back(alphabet[(bits >> (5U * (link_code_length - 1 - i))) & 31U]);
        if (i == link_code_length / 2 - 1) {
            code.push_back('-');
        }
    }
    key.assign(okm.begin(), okm.begin() + link_key_size);
    return {};
}

/// The code as typed, in the shown alphabet: letters upper case, spaces and '-' dropped.
std::string normalise(std::string_view typed) {
    std::string out;
    for (const char c : typed) {
        if (c != ' ' && c != '-') {
            out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
        }
    }
    return out;
}

const Bytes zero_nonce(crypto::aead_nonce_size, 0);

Error out_of_turn() {
    return Error{Errc::invalid_state, "link step out of turn, or the link failed before"};
}

}  // namespace

Result<LinkJoiner> LinkJoiner::start(Rng& rng, DeviceId device, ByteView device_key) {
    if (device == 0 || device_key.size() != device_key_size) {
        return Error{Errc::invalid_argument, "a link needs a device id and a 32-byte device key"};
    }
    LinkJoiner j;
    j.m_device = device;
    j.m_device_key.assign(device_key.begin(), device_key.end());
    j.m_ephemeral = crypto::x25519_generate(rng);
    detail::WireWriter w(j.m_request);
    w.u32(device);
    w.bytes(device_key);
    w.bytes(commitment(j.m_ephemeral.public_key, device_key));
    return j;
}

Result<Bytes> LinkJoiner::reveal(ByteView offer) {
    if (m_step != Step::requested) {
        return out_of_turn();
    }
    m_step = Step::done;  // a failure below ends the link
    if (offer.size() != crypto::x25519_key_size) {
        return Error{Errc::bad_length, "a link offer is one 32-byte key"};
    }
    m_transcript = transcript(m_request, offer, m_ephemeral.public_key);
    SIM_TRY_STATUS(derive(m_transcript, m_ephemeral.private_key, offer, m_key, m_code));
    m_step = Step::revealed;
    return m_ephemeral.public_key;
}

Result<LinkGrant> LinkJoiner::accept(std::string_view user, ByteView grant) {
    if (m_step != Step::revealed) {
        return out_of_turn();
    }
    m_step = Step::done;
    SIM_TRY(auto aead, crypto::make_aead(crypto::AeadAlgorithm::aes256_gcm, m_key));
    SIM_TRY(Bytes plain, aead->open(zero_nonce, m_transcript, grant));
    const SecureBytes secret(plain.begin(), plain.end());
    secure_zero(plain.data(), plain.size());  // it held the account key
    if (secret.size() < 32) {
        return Error{Errc::truncated, "a link grant starts with the 32-byte account key"};
    }
    LinkGrant out;
    out.account_seed.assign(secret.begin(), secret.begin() + 32);
    SIM_TRY(out.list, decode_signed_device_list(ByteView(secret).subspan(32)));
    SIM_TRY(const auto account, identity_from_private(out.account_seed));
    // The list must be the account's (signed by the key it came with) and admit this device with its key.
    SIM_TRY_STATUS(accept_device_list(user, account.public_key, std::nullopt, out.list));
    const auto* self = out.list.list.find(m_device);
    if (self == nullptr || self->key != m_device_key) {
        return Error{Errc::bad_field, "the granted device list does not hold this device with its key"};
    }
    return out;
}

Result<LinkApprover> LinkApprover::start(Rng& rng, ByteView request) {
    detail::WireReader r(request);
    LinkApprover a;
    ByteView key;
    ByteView commit;
    if (!r.u32(a.m_device) || !r.take(device_key_size, key) || !r.take(32, commit)) {
        return Error{Errc::truncated, "link request cut short"};
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after a link request"};
    }
    if (a.m_device == 0) {
        return Error{Errc::bad_field, "a link request for device 0"};
    }
    a.m_device_key.assign(key.begin(), key.end());
    a.m_commitment.assign(commit.begin(), commit.end());
    a.m_request.assign(request.begin(), request.end());
    a.m_ephemeral = crypto::x25519_generate(rng);
    a.m_offer = a.m_ephemeral.public_key;
    return a;
}

Status LinkApprover::reveal(ByteView reveal) {
    if (m_step != Step::offered) {
        return out_of_turn();
    }
    m_step = Step::done;
    if (reveal.size() != crypto::x25519_key_size) {
        return Error{Errc::bad_length, "a link reveal is one 32-byte key"};
    }
    if (!constant_time_equal(commitment(reveal, m_device_key), m_commitment)) {
        return Error{Errc::auth_failed, "the new device's key does not match its commitment"};
    }
    m_transcript = transcript(m_request, m_offer, reveal);
    SIM_TRY_STATUS(derive(m_transcript, m_ephemeral.private_key, reveal, m_key, m_code));
    m_step = Step::revealed;
    return {};
}

Result<Bytes> LinkApprover::approve(std::string_view typed, const LinkGrant& grant) {
    if (m_step != Step::revealed) {
        return out_of_turn();
    }
    m_step = Step::done;  // one try, whatever the outcome
    if (!constant_time_equal(as_bytes(normalise(typed)), as_bytes(normalise(m_code)))) {
        return Error{Errc::auth_failed, "wrong link code: the link is cancelled; start it again on the new device"};
    }
    if (grant.account_seed.size() != 32) {
        return Error{Errc::invalid_argument, "the account key seed is 32 bytes"};
    }
    SIM_TRY(const Bytes list, encode_signed_device_list(grant.list));
    SecureBytes plain(grant.account_seed.begin(), grant.account_seed.end());
    plain.insert(plain.end(), list.begin(), list.end());
    SIM_TRY(auto aead, crypto::make_aead(crypto::AeadAlgorithm::aes256_gcm, m_key));
    return aead->seal(zero_nonce, m_transcript, plain);
}

}  // namespace sim::e2e
