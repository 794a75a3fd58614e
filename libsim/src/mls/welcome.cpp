// RFC 9420 s12.4.3: Welcome, GroupSecrets, GroupInfo.
#include "welcome.h"

#include "framing.h"
#include "primitives.h"
#include "ratchet_tree.h"

#include <sim/crypto.h>

#include <utility>

namespace sim::mls {

namespace {

constexpr std::size_t max_welcome_entries = 4096;
/// A GroupInfo's extensions may carry a `ratchet_tree` as large as a tree from a peer may be.
constexpr std::size_t max_group_info_extensions_size = max_ratchet_tree_size + max_extensions_size;
/// The rest of a GroupInfo is bounded by its fields; allow the default vector bound for it.
constexpr std::size_t max_encrypted_group_info_size = max_group_info_extensions_size + max_vector_size;

Status encode_group_info_tbs(TlsWriter& w, const GroupInfo& gi) {
    SIM_TRY(const auto gc, gi.group_context.encode());
    w.raw(gc);
    Bytes ext;
    SIM_TRY_STATUS(encode_extensions(gi.extensions, ext));
    w.raw(ext);
    SIM_TRY_STATUS(w.vector(gi.confirmation_tag));
    w.u32(gi.signer);
    return ok();
}

Status read_message_header(TlsReader& r, WireFormat expected) {
    SIM_TRY(const auto version, r.u16());
    if (version != protocol_version) {
        return Errc::unsupported_version;
    }
    SIM_TRY(const auto wire_format, r.u16());
    if (wire_format != static_cast<std::uint16_t>(expected)) {
        return Error{Errc::bad_field, "unexpected wire format"};
    }
    return ok();
}

}  // namespace

Result<Bytes> GroupInfo::to_be_signed() const {
    TlsWriter w;
    SIM_TRY_STATUS(encode_group_info_tbs(w, *this));
    return std::move(w).bytes();
}

Result<Bytes> GroupInfo::encode() const {
    TlsWriter w;
    SIM_TRY_STATUS(encode_group_info_tbs(w, *this));
    SIM_TRY_STATUS(w.vector(signature));
    return std::move(w).bytes();
}

bool GroupInfo::verify(ByteView signer_public) const {
    const auto tbs = to_be_signed();
    return tbs && verify_with_label(signer_public, "GroupInfoTBS", *tbs, signature);
}

Result<GroupInfo> decode_group_info(ByteView data) {
    TlsReader r(data);
    // GroupContext has no length prefix of its own: decode it from a reader positioned here, then continue.
    const auto start = r.position();
    SIM_TRY_STATUS(status_of(r.u16()));  // version
    SIM_TRY_STATUS(status_of(r.u16()));  // cipher_suite
    SIM_TRY_STATUS(status_of(r.vector(max_group_id_size)));
    SIM_TRY_STATUS(status_of(r.u64()));
    SIM_TRY_STATUS(status_of(r.vector(hash_size)));
    SIM_TRY_STATUS(status_of(r.vector(hash_size)));
    SIM_TRY_STATUS(status_of(r.vector(max_extensions_size)));
    GroupInfo gi;
    SIM_TRY(gi.group_context, GroupContext::decode(r.consumed_since(start)));
    // The extensions may carry the ratchet tree (s12.4.3.3), bounded like a tree from a peer.
    SIM_TRY(const auto ext, r.vector(max_group_info_extensions_size));
    SIM_TRY(gi.extensions, decode_extensions(ext, max_ratchet_tree_size));
    SIM_TRY(const auto tag, r.vector(hash_size));
    if (tag.size() != hash_size) {
        return Error{Errc::bad_length, "confirmation tag is not a MAC of Nh bytes"};
    }
    gi.confirmation_tag = to_bytes(tag);
    SIM_TRY(gi.signer, r.u32());
    SIM_TRY(const auto signature, r.vector(max_signature_size));
    gi.signature = to_bytes(signature);
    SIM_TRY_STATUS(r.finish());
    return gi;
}

Result<Welcome> decode_welcome_message(ByteView data) {
    TlsReader r(data);
    SIM_TRY_STATUS(read_message_header(r, WireFormat::welcome));
    SIM_TRY(const auto suite, r.u16());
    if (suite != cipher_suite) {
        return Errc::suite_not_allowed;
    }
    Welcome w;
    SIM_TRY(auto secrets, r.sub_reader());
    while (!secrets.empty()) {
        if (w.secrets.size() >= max_welcome_entries) {
            return Error{Errc::frame_too_large, "too many Welcome entries"};
        }
        EncryptedGroupSecrets e;
        SIM_TRY(const auto ref, secrets.vector(hash_size));
        e.new_member = to_bytes(ref);
        SIM_TRY(const auto kem_output, secrets.vector(max_key_size));
        e.kem_output = to_bytes(kem_output);
        SIM_TRY(const auto ciphertext, secrets.vector(max_vector_size));
        e.ciphertext = to_bytes(ciphertext);
        w.secrets.push_back(std::move(e));
    }
    SIM_TRY(const auto egi, r.vector(max_encrypted_group_info_size));
    w.encrypted_group_info = to_bytes(egi);
    SIM_TRY_STATUS(r.finish());
    return w;
}

Result<KeyPackage> decode_key_package_message(ByteView data) {
    TlsReader r(data);
    SIM_TRY_STATUS(read_message_header(r, WireFormat::key_package));
    SIM_TRY(auto kp, decode_key_package(r));
    SIM_TRY_STATUS(r.finish());
    if (kp.version != protocol_version) {
        return Errc::unsupported_version;
    }
    if (kp.cipher_suite != cipher_suite) {
        return Errc::suite_not_allowed;
    }
    return kp;
}

Result<SecureBytes> GroupSecrets::encode() const {
    TlsWriter w;
    SIM_TRY_STATUS(w.vector(joiner_secret));
    w.u8(path_secret ? 1 : 0);
    if (path_secret) {
        SIM_TRY_STATUS(w.vector(*path_secret));
    }
    SIM_TRY_STATUS(w.vector(psks));
    Bytes raw = std::move(w).bytes();
    SecureBytes out(raw.begin(), raw.end());
    secure_zero(raw.data(), raw.size());
    return out;
}

Result<GroupSecrets> decode_group_secrets(ByteView data) {
    TlsReader r(data);
    GroupSecrets gs;
    SIM_TRY(const auto joiner, r.vector(hash_size));
    if (joiner.size() != hash_size) {
        return Error{Errc::bad_length, "joiner_secret is not Nh bytes"};
    }
    gs.joiner_secret = to_bytes<SecureBytes>(joiner);
    SIM_TRY(const bool has_path, r.optional());
    if (has_path) {
        SIM_TRY(const auto path, r.vector(hash_size));
        gs.path_secret = to_bytes<SecureBytes>(path);
    }
    SIM_TRY(auto psks, r.sub_reader());
    const auto psks_start = psks.position();
    while (!psks.empty()) {
        SIM_TRY_STATUS(status_of(read_psk_id(psks)));
    }
    gs.psks = to_bytes(psks.consumed_since(psks_start));
    SIM_TRY_STATUS(r.finish());
    return gs;
}

Result<Bytes> encode_welcome_message(const Welcome& welcome) {
    TlsWriter w;
    w.u16(protocol_version);
    w.u16(static_cast<std::uint16_t>(WireFormat::welcome));
    w.u16(cipher_suite);
    TlsWriter entries;
    for (const auto& e : welcome.secrets) {
        SIM_TRY_STATUS(entries.vector(e.new_member));
        SIM_TRY_STATUS(entries.vector(e.kem_output));
        SIM_TRY_STATUS(entries.vector(e.ciphertext));
    }
    SIM_TRY_STATUS(w.vector(entries.bytes()));
    SIM_TRY_STATUS(w.vector(welcome.encrypted_group_info));
    return std::move(w).bytes();
}

Result<Bytes> encode_key_package_message(const KeyPackage& key_package) {
    TlsWriter w;
    w.u16(protocol_version);
    w.u16(static_cast<std::uint16_t>(WireFormat::key_package));
    SIM_TRY_STATUS(key_package.encode_into(w));
    return std::move(w).bytes();
}

Result<Bytes> encode_group_info_message(const GroupInfo& group_info) {
    TlsWriter w;
    w.u16(protocol_version);
    w.u16(static_cast<std::uint16_t>(WireFormat::group_info));
    SIM_TRY(const auto body, group_info.encode());
    w.raw(body);
    return std::move(w).bytes();
}

Result<GroupInfo> decode_group_info_message(ByteView data) {
    TlsReader r(data);
    SIM_TRY_STATUS(read_message_header(r, WireFormat::group_info));
    return decode_group_info(data.subspan(r.position()));
}

namespace {

// s12.4.3.1: the AEAD key and nonce that protect the GroupInfo, from the joiner secret (psk_secret = 0).
Result<std::pair<SecureBytes, SecureBytes>> welcome_key_nonce(ByteView joiner_secret) {
    if (joiner_secret.size() != hash_size) {
        return Error{Errc::invalid_argument, "joiner_secret must be Nh bytes"};
    }
    const SecureBytes zero_psk(hash_size, 0);
    const auto member = extract(joiner_secret, zero_psk);
    SIM_TRY(const auto welcome_secret, derive_secret(member, "welcome"));
    SIM_TRY(auto key, expand_with_label(welcome_secret, "key", {}, aead_key_size));
    SIM_TRY(auto nonce, expand_with_label(welcome_secret, "nonce", {}, aead_nonce_size));
    return std::pair{std::move(key), std::move(nonce)};
}

}  // namespace

Status sign_group_info(GroupInfo& group_info, std::uint32_t signer, ByteView signature_private) {
    group_info.signer = signer;
    SIM_TRY(const auto tbs, group_info.to_be_signed());
    SIM_TRY(group_info.signature, sign_with_label(signature_private, "GroupInfoTBS", tbs));
    return ok();
}

Result<Welcome> create_welcome(const GroupInfo& group_info, ByteView joiner_secret,
                               const std::vector<WelcomeRecipient>& recipients, Rng& rng) {
    if (recipients.empty()) {
        return Error{Errc::invalid_argument, "a Welcome needs at least one recipient"};
    }
    SIM_TRY(const auto key_nonce, welcome_key_nonce(joiner_secret));
    SIM_TRY(auto aead, crypto::make_aead(crypto::AeadAlgorithm::aes128_gcm, key_nonce.first));
    SIM_TRY(const auto group_info_bytes, group_info.encode());
    Welcome w;
    SIM_TRY(w.encrypted_group_info, aead->seal(key_nonce.second, {}, group_info_bytes));
    for (const auto& recipient : recipients) {
        GroupSecrets gs;
        gs.joiner_secret = to_bytes<SecureBytes>(joiner_secret);
        gs.path_secret = recipient.path_secret;
        SIM_TRY(const auto plain, gs.encode());
        SIM_TRY(auto ct,
                encrypt_with_label(recipient.key_package.init_key, "Welcome", w.encrypted_group_info, plain, rng));
        EncryptedGroupSecrets e;
        SIM_TRY(e.new_member, recipient.key_package.ref());
        e.kem_output = std::move(ct.kem_output);
        e.ciphertext = std::move(ct.ciphertext);
        w.secrets.push_back(std::move(e));
    }
    return w;
}

Result<GroupSecrets> decrypt_group_secrets(const Welcome& welcome, const KeyPackage& key_package,
                                           ByteView init_private) {
    SIM_TRY(const auto ref, key_package.ref());
    const EncryptedGroupSecrets* mine = nullptr;
    for (const auto& e : welcome.secrets) {
        if (constant_time_equal(e.new_member, ref)) {
            mine = &e;
            break;
        }
    }
    if (mine == nullptr) {
        return Error{Errc::invalid_argument, "the Welcome has no entry for this KeyPackage"};
    }
    SIM_TRY(auto plain, decrypt_with_label(init_private, "Welcome", welcome.encrypted_group_info, mine->kem_output,
                                           mine->ciphertext));
    const SecureBytes secret_plain(plain.begin(), plain.end());
    secure_zero(plain.data(), plain.size());
    SIM_TRY(auto gs, decode_group_secrets(secret_plain));
    if (!gs.psks.empty()) {
        return Error{Errc::not_implemented, "pre-shared keys are not supported"};
    }
    return gs;
}

Result<GroupInfo> decrypt_group_info(const Welcome& welcome, ByteView joiner_secret) {
    SIM_TRY(const auto key_nonce, welcome_key_nonce(joiner_secret));
    SIM_TRY(auto aead, crypto::make_aead(crypto::AeadAlgorithm::aes128_gcm, key_nonce.first));
    SIM_TRY(const auto plain, aead->open(key_nonce.second, {}, welcome.encrypted_group_info));
    return decode_group_info(plain);
}

}  // namespace sim::mls
