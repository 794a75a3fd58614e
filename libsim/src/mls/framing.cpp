// RFC 9420 s6 framing, structural checks of s12.1 Proposals and s12.4 Commits, s8.2 transcript hashes.
#include "framing.h"

#include "key_schedule.h"
#include "primitives.h"

namespace sim::mls {

namespace {

// Nesting is fixed by the grammar (a Commit holds Proposals holding KeyPackages holding LeafNodes), so these readers
// recurse to a bounded depth only.

Status skip_vector(TlsReader& r, std::size_t max = max_vector_size) {
    SIM_TRY(const auto v, r.vector(max));
    (void)v;
    return ok();
}

// A vector of uint16 values (Capabilities fields): its length must be even.
Status skip_u16_list(TlsReader& r) {
    SIM_TRY(const auto v, r.vector(max_extensions_size));
    if (v.size() % 2 != 0) {
        return Error{Errc::bad_field, "list of uint16 with an odd length"};
    }
    return ok();
}

Status skip_extensions(TlsReader& r) {
    SIM_TRY(const auto v, r.vector(max_extensions_size));
    SIM_TRY(const auto list, decode_extensions(v));
    (void)list;
    return ok();
}

// s5.3 Credential: basic (1) or x509 (2).
Status skip_credential(TlsReader& r) {
    SIM_TRY(const auto type, r.u16());
    if (type == 1) {
        return skip_vector(r, max_credential_size);
    }
    if (type == 2) {
        SIM_TRY(auto certs, r.sub_reader(max_credential_size));
        while (!certs.empty()) {
            SIM_TRY_STATUS(skip_vector(certs, max_credential_size));
        }
        return ok();
    }
    return Error{Errc::bad_field, "unknown credential type"};
}

// s7.2 LeafNode.
Status skip_leaf_node(TlsReader& r) {
    SIM_TRY_STATUS(skip_vector(r, max_key_size));  // encryption_key
    SIM_TRY_STATUS(skip_vector(r, max_key_size));  // signature_key
    SIM_TRY_STATUS(skip_credential(r));
    for (int i = 0; i < 5; ++i) {  // capabilities: versions, cipher_suites, extensions, proposals, credentials
        SIM_TRY_STATUS(skip_u16_list(r));
    }
    SIM_TRY(const auto source, r.u8());
    switch (source) {
        case 1:  // key_package: Lifetime
            SIM_TRY_STATUS(status_of(r.u64()));
            SIM_TRY_STATUS(status_of(r.u64()));
            break;
        case 2:  // update
            break;
        case 3:  // commit: parent_hash
            SIM_TRY_STATUS(skip_vector(r, hash_size));
            break;
        default:
            return Error{Errc::bad_field, "unknown leaf node source"};
    }
    SIM_TRY_STATUS(skip_extensions(r));
    return skip_vector(r, max_signature_size);
}

// s10 KeyPackage.
Status skip_key_package(TlsReader& r) {
    SIM_TRY_STATUS(status_of(r.u16()));            // version
    SIM_TRY_STATUS(status_of(r.u16()));            // cipher_suite
    SIM_TRY_STATUS(skip_vector(r, max_key_size));  // init_key
    SIM_TRY_STATUS(skip_leaf_node(r));
    SIM_TRY_STATUS(skip_extensions(r));
    return skip_vector(r, max_signature_size);
}

// s8.4 PreSharedKeyID.
Status skip_psk_id(TlsReader& r) {
    SIM_TRY(const auto type, r.u8());
    if (type == 1) {  // external
        SIM_TRY_STATUS(skip_vector(r, max_key_size));
    } else if (type == 2) {  // resumption
        SIM_TRY(const auto usage, r.u8());
        if (usage < 1 || usage > 3) {
            return Error{Errc::bad_field, "unknown resumption PSK usage"};
        }
        SIM_TRY_STATUS(skip_vector(r, max_group_id_size));
        SIM_TRY_STATUS(status_of(r.u64()));
    } else {
        return Error{Errc::bad_field, "unknown PSK type"};
    }
    return skip_vector(r, hash_size);  // psk_nonce
}

// s7.6 UpdatePath.
Status skip_update_path(TlsReader& r) {
    SIM_TRY_STATUS(skip_leaf_node(r));
    SIM_TRY(auto nodes, r.sub_reader());
    while (!nodes.empty()) {
        SIM_TRY_STATUS(skip_vector(nodes, max_key_size));  // encryption_key
        SIM_TRY(auto secrets, nodes.sub_reader());
        while (!secrets.empty()) {
            SIM_TRY_STATUS(skip_vector(secrets, max_key_size));  // kem_output
            SIM_TRY_STATUS(skip_vector(secrets, max_key_size));  // ciphertext
        }
    }
    return ok();
}

Status skip_proposal(TlsReader& r) {
    SIM_TRY(const auto type, r.u16());
    switch (type) {
        case 1:  // add
            return skip_key_package(r);
        case 2:  // update
            return skip_leaf_node(r);
        case 3:  // remove
            return status_of(r.u32());
        case 4:  // psk
            return skip_psk_id(r);
        case 5:  // reinit
            SIM_TRY_STATUS(skip_vector(r, max_group_id_size));
            SIM_TRY_STATUS(status_of(r.u16()));
            SIM_TRY_STATUS(status_of(r.u16()));
            return skip_extensions(r);
        case 6:  // external_init
            return skip_vector(r, max_key_size);
        case 7:  // group_context_extensions
            return skip_extensions(r);
        default:
            return Error{Errc::bad_field, "unknown proposal type"};
    }
}

Status skip_commit(TlsReader& r) {
    SIM_TRY(auto proposals, r.sub_reader());
    while (!proposals.empty()) {
        SIM_TRY(const auto kind, proposals.u8());
        if (kind == 1) {
            SIM_TRY_STATUS(skip_proposal(proposals));
        } else if (kind == 2) {
            SIM_TRY_STATUS(skip_vector(proposals, hash_size));  // ProposalRef
        } else {
            return Error{Errc::bad_field, "unknown ProposalOrRef type"};
        }
    }
    SIM_TRY(const bool has_path, r.optional());
    if (has_path) {
        SIM_TRY_STATUS(skip_update_path(r));
    }
    return ok();
}

}  // namespace

Result<ByteView> read_psk_id(TlsReader& r) {
    const auto start = r.position();
    SIM_TRY_STATUS(skip_psk_id(r));
    return r.consumed_since(start);
}

Result<ByteView> read_proposal(TlsReader& r) {
    const auto start = r.position();
    SIM_TRY_STATUS(skip_proposal(r));
    return r.consumed_since(start);
}

Result<ByteView> read_commit(TlsReader& r) {
    const auto start = r.position();
    SIM_TRY_STATUS(skip_commit(r));
    return r.consumed_since(start);
}

Status FramedContent::encode_into(TlsWriter& w) const {
    SIM_TRY_STATUS(w.vector(group_id));
    w.u64(epoch);
    w.u8(static_cast<std::uint8_t>(sender.type));
    if (sender.type == SenderType::member || sender.type == SenderType::external) {
        w.u32(sender.index);
    }
    SIM_TRY_STATUS(w.vector(authenticated_data));
    w.u8(static_cast<std::uint8_t>(content_type));
    if (content_type == ContentType::application) {
        SIM_TRY_STATUS(w.vector(content));
    } else {
        w.raw(content);
    }
    return ok();
}

Result<Bytes> FramedContent::encode() const {
    TlsWriter w;
    SIM_TRY_STATUS(encode_into(w));
    return std::move(w).bytes();
}

Result<FramedContent> decode_framed_content(TlsReader& r) {
    FramedContent fc;
    SIM_TRY(const auto group_id, r.vector(max_group_id_size));
    fc.group_id = to_bytes(group_id);
    SIM_TRY(fc.epoch, r.u64());
    SIM_TRY(const auto sender_type, r.u8());
    switch (sender_type) {
        case 1:
        case 2: {
            fc.sender.type = static_cast<SenderType>(sender_type);
            SIM_TRY(fc.sender.index, r.u32());
            break;
        }
        case 3:
        case 4:
            fc.sender.type = static_cast<SenderType>(sender_type);
            break;
        default:
            return Error{Errc::bad_field, "unknown sender type"};
    }
    SIM_TRY(const auto aad, r.vector(max_authenticated_data_size));
    fc.authenticated_data = to_bytes(aad);
    SIM_TRY(const auto content_type, r.u8());
    switch (content_type) {
        case 1: {
            SIM_TRY(const auto data, r.vector());
            fc.content = to_bytes(data);
            break;
        }
        case 2: {
            SIM_TRY(const auto proposal, read_proposal(r));
            fc.content = to_bytes(proposal);
            break;
        }
        case 3: {
            SIM_TRY(const auto commit, read_commit(r));
            fc.content = to_bytes(commit);
            break;
        }
        default:
            return Error{Errc::bad_field, "unknown content type"};
    }
    fc.content_type = static_cast<ContentType>(content_type);
    return fc;
}

Result<FramedContentAuthData> decode_auth_data(TlsReader& r, ContentType type) {
    FramedContentAuthData auth;
    SIM_TRY(const auto signature, r.vector(max_signature_size));
    auth.signature = to_bytes(signature);
    if (type == ContentType::commit) {
        // A MAC is exactly Nh bytes; an empty tag would also be indistinguishable from "no tag" when re-encoding.
        SIM_TRY(const auto tag, r.vector(hash_size));
        if (tag.size() != hash_size) {
            return Error{Errc::bad_length, "confirmation tag is not a MAC of Nh bytes"};
        }
        auth.confirmation_tag = to_bytes(tag);
    }
    return auth;
}

Status encode_auth_data(TlsWriter& w, const FramedContentAuthData& auth, ContentType type) {
    if ((type == ContentType::commit) != !auth.confirmation_tag.empty()) {
        return Error{Errc::invalid_argument, "a confirmation tag belongs to commits only, and every commit has one"};
    }
    SIM_TRY_STATUS(w.vector(auth.signature));
    if (type == ContentType::commit) {
        SIM_TRY_STATUS(w.vector(auth.confirmation_tag));
    }
    return ok();
}

Result<Bytes> AuthenticatedContent::encode() const {
    TlsWriter w;
    w.u16(static_cast<std::uint16_t>(wire_format));
    SIM_TRY_STATUS(content.encode_into(w));
    SIM_TRY_STATUS(encode_auth_data(w, auth, content.content_type));
    return std::move(w).bytes();
}

Result<AuthenticatedContent> AuthenticatedContent::decode(ByteView data) {
    TlsReader r(data);
    AuthenticatedContent ac;
    SIM_TRY(const auto wire_format, r.u16());
    if (wire_format != static_cast<std::uint16_t>(WireFormat::public_message) &&
        wire_format != static_cast<std::uint16_t>(WireFormat::private_message)) {
        return Error{Errc::bad_field, "AuthenticatedContent wire format must be a public or private message"};
    }
    ac.wire_format = static_cast<WireFormat>(wire_format);
    SIM_TRY(ac.content, decode_framed_content(r));
    SIM_TRY(ac.auth, decode_auth_data(r, ac.content.content_type));
    SIM_TRY_STATUS(r.finish());
    return ac;
}

namespace {

Status read_mls_header(TlsReader& r, WireFormat expected) {
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

void write_mls_header(TlsWriter& w, WireFormat wire_format) {
    w.u16(protocol_version);
    w.u16(static_cast<std::uint16_t>(wire_format));
}

}  // namespace

Result<Bytes> PublicMessage::encode_message() const {
    TlsWriter w;
    write_mls_header(w, WireFormat::public_message);
    SIM_TRY_STATUS(content.content.encode_into(w));
    SIM_TRY_STATUS(encode_auth_data(w, content.auth, content.content.content_type));
    if (content.content.sender.type == SenderType::member) {
        SIM_TRY_STATUS(w.vector(membership_tag));
    }
    return std::move(w).bytes();
}

Result<PublicMessage> decode_public_message(ByteView message) {
    TlsReader r(message);
    SIM_TRY_STATUS(read_mls_header(r, WireFormat::public_message));
    PublicMessage m;
    m.content.wire_format = WireFormat::public_message;
    SIM_TRY(m.content.content, decode_framed_content(r));
    SIM_TRY(m.content.auth, decode_auth_data(r, m.content.content.content_type));
    if (m.content.content.sender.type == SenderType::member) {
        SIM_TRY(const auto tag, r.vector(hash_size));
        if (tag.size() != hash_size) {
            return Error{Errc::bad_length, "membership tag is not a MAC of Nh bytes"};
        }
        m.membership_tag = to_bytes(tag);
    }
    SIM_TRY_STATUS(r.finish());
    return m;
}

Result<Bytes> PrivateMessage::encode_message() const {
    TlsWriter w;
    write_mls_header(w, WireFormat::private_message);
    SIM_TRY_STATUS(w.vector(group_id));
    w.u64(epoch);
    w.u8(static_cast<std::uint8_t>(content_type));
    SIM_TRY_STATUS(w.vector(authenticated_data));
    SIM_TRY_STATUS(w.vector(encrypted_sender_data));
    SIM_TRY_STATUS(w.vector(ciphertext));
    return std::move(w).bytes();
}

Result<PrivateMessage> decode_private_message(ByteView message) {
    TlsReader r(message);
    SIM_TRY_STATUS(read_mls_header(r, WireFormat::private_message));
    PrivateMessage m;
    SIM_TRY(const auto group_id, r.vector(max_group_id_size));
    m.group_id = to_bytes(group_id);
    SIM_TRY(m.epoch, r.u64());
    SIM_TRY(const auto type, r.u8());
    if (type < 1 || type > 3) {
        return Error{Errc::bad_field, "unknown content type"};
    }
    m.content_type = static_cast<ContentType>(type);
    SIM_TRY(const auto authenticated_data, r.vector(max_authenticated_data_size));
    m.authenticated_data = to_bytes(authenticated_data);
    SIM_TRY(const auto encrypted_sender_data, r.vector(max_key_size));
    m.encrypted_sender_data = to_bytes(encrypted_sender_data);
    SIM_TRY(const auto ciphertext, r.vector());
    m.ciphertext = to_bytes(ciphertext);
    SIM_TRY_STATUS(r.finish());
    return m;
}

Result<Bytes> confirmed_transcript_hash(ByteView interim_before, const AuthenticatedContent& commit) {
    if (commit.content.content_type != ContentType::commit) {
        return Error{Errc::invalid_argument, "transcript hashes cover commits only"};
    }
    TlsWriter w;
    w.raw(interim_before);
    w.u16(static_cast<std::uint16_t>(commit.wire_format));
    SIM_TRY_STATUS(commit.content.encode_into(w));
    SIM_TRY_STATUS(w.vector(commit.auth.signature));
    return hash(w.bytes());
}

Result<Bytes> interim_transcript_hash(ByteView confirmed, ByteView confirmation_tag) {
    TlsWriter w;
    w.raw(confirmed);
    SIM_TRY_STATUS(w.vector(confirmation_tag));
    return hash(w.bytes());
}

}  // namespace sim::mls
