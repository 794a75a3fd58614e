// RFC 9420 s8: GroupContext and the key schedule.
#include "key_schedule.h"

#include "codec.h"
#include "primitives.h"

#include <algorithm>
#include <set>

namespace sim::mls {

Status encode_extensions(const std::vector<Extension>& extensions, Bytes& out) {
    TlsWriter list;
    for (const auto& e : extensions) {
        list.u16(e.type);
        SIM_TRY_STATUS(list.vector(e.data));
    }
    TlsWriter w;
    SIM_TRY_STATUS(w.vector(list.bytes()));
    out.insert(out.end(), w.bytes().begin(), w.bytes().end());
    return ok();
}

Result<std::vector<Extension>> decode_extensions(ByteView vector_body, std::size_t max_ratchet_tree_data) {
    TlsReader r(vector_body);
    std::vector<Extension> out;
    std::set<std::uint16_t> seen;
    while (!r.empty()) {
        SIM_TRY(const auto type, r.u16());
        const auto bound =
            type == extension_ratchet_tree ? std::max(max_extensions_size, max_ratchet_tree_data) : max_extensions_size;
        SIM_TRY(const auto data, r.vector(bound));
        if (!seen.insert(type).second) {
            return Error{Errc::bad_field, "repeated extension type"};
        }
        out.push_back(Extension{type, to_bytes(data)});
    }
    return out;
}

Result<Bytes> GroupContext::encode() const {
    TlsWriter w;
    w.u16(protocol_version);
    w.u16(cipher_suite);
    SIM_TRY_STATUS(w.vector(group_id));
    w.u64(epoch);
    SIM_TRY_STATUS(w.vector(tree_hash));
    SIM_TRY_STATUS(w.vector(confirmed_transcript_hash));
    Bytes out = std::move(w).bytes();
    SIM_TRY_STATUS(encode_extensions(extensions, out));
    return out;
}

Result<GroupContext> GroupContext::decode(ByteView data) {
    TlsReader r(data);
    SIM_TRY(const auto version, r.u16());
    if (version != protocol_version) {
        return Errc::unsupported_version;
    }
    SIM_TRY(const auto suite, r.u16());
    if (suite != cipher_suite) {
        return Errc::suite_not_allowed;
    }
    GroupContext gc;
    SIM_TRY(const auto group_id, r.vector(max_group_id_size));
    gc.group_id = to_bytes(group_id);
    SIM_TRY(gc.epoch, r.u64());
    SIM_TRY(const auto tree_hash, r.vector(hash_size));
    gc.tree_hash = to_bytes(tree_hash);
    SIM_TRY(const auto cth, r.vector(hash_size));
    gc.confirmed_transcript_hash = to_bytes(cth);
    SIM_TRY(const auto ext, r.vector(max_extensions_size));
    SIM_TRY(gc.extensions, decode_extensions(ext));
    SIM_TRY_STATUS(r.finish());
    return gc;
}

Result<EpochSecrets> derive_epoch_secrets_from_joiner(ByteView joiner_secret, ByteView psk_secret,
                                                      ByteView group_context) {
    if (joiner_secret.size() != hash_size || psk_secret.size() != hash_size) {
        return Error{Errc::invalid_argument, "joiner_secret and psk_secret must be Nh bytes"};
    }
    EpochSecrets s;
    s.joiner_secret = to_bytes<SecureBytes>(joiner_secret);
    // member secret = KDF.Extract(joiner_secret, psk_secret); it is never kept.
    const auto member = extract(joiner_secret, psk_secret);
    SIM_TRY(s.welcome_secret, derive_secret(member, "welcome"));
    SIM_TRY(s.epoch_secret, expand_with_label(member, "epoch", group_context, hash_size));
    SIM_TRY(s.sender_data_secret, derive_secret(s.epoch_secret, "sender data"));
    SIM_TRY(s.encryption_secret, derive_secret(s.epoch_secret, "encryption"));
    SIM_TRY(s.exporter_secret, derive_secret(s.epoch_secret, "exporter"));
    SIM_TRY(s.epoch_authenticator, derive_secret(s.epoch_secret, "authentication"));
    SIM_TRY(s.external_secret, derive_secret(s.epoch_secret, "external"));
    SIM_TRY(s.confirmation_key, derive_secret(s.epoch_secret, "confirm"));
    SIM_TRY(s.membership_key, derive_secret(s.epoch_secret, "membership"));
    SIM_TRY(s.resumption_psk, derive_secret(s.epoch_secret, "resumption"));
    SIM_TRY(s.init_secret, derive_secret(s.epoch_secret, "init"));
    return s;
}

Result<EpochSecrets> derive_epoch_secrets(ByteView init_secret, ByteView commit_secret, ByteView psk_secret,
                                          ByteView group_context) {
    if (init_secret.size() != hash_size || commit_secret.size() != hash_size) {
        return Error{Errc::invalid_argument, "init_secret and commit_secret must be Nh bytes"};
    }
    const auto prk = extract(init_secret, commit_secret);
    SIM_TRY(const auto joiner, expand_with_label(prk, "joiner", group_context, hash_size));
    return derive_epoch_secrets_from_joiner(joiner, psk_secret, group_context);
}

Result<SecureBytes> mls_exporter(ByteView exporter_secret, ByteView label, ByteView context, std::size_t length) {
    SIM_TRY(const auto derived, derive_secret(exporter_secret, label));
    return expand_with_label(derived, "exported", hash(context), length);
}

}  // namespace sim::mls
