// RFC 9420 s6.1-s6.3: signatures, PublicMessage, PrivateMessage, MLSMessage.
#include "message_protection.h"

#include "codec.h"
#include "primitives.h"

#include <sim/crypto.h>

#include <utility>

namespace sim::mls {

namespace {

constexpr std::string_view sign_label = "FramedContentTBS";
constexpr std::size_t reuse_guard_size = 4;

bool context_in_tbs(SenderType t) {
    return t == SenderType::member || t == SenderType::new_member_commit;
}

// s6.1 FramedContentTBS.
Result<Bytes> content_tbs(WireFormat wire_format, const FramedContent& content, const GroupContext& context) {
    TlsWriter w;
    w.u16(protocol_version);
    w.u16(static_cast<std::uint16_t>(wire_format));
    SIM_TRY_STATUS(content.encode_into(w));
    if (context_in_tbs(content.sender.type)) {
        SIM_TRY(const auto gc, context.encode());
        w.raw(gc);
    }
    return std::move(w).bytes();
}

// s6.2 AuthenticatedContentTBM, MACed with the membership key.
Result<SecureBytes> membership_tag(const AuthenticatedContent& ac, const GroupContext& context,
                                   ByteView membership_key) {
    SIM_TRY(auto tbm, content_tbs(ac.wire_format, ac.content, context));
    TlsWriter w;
    w.raw(tbm);
    SIM_TRY_STATUS(encode_auth_data(w, ac.auth, ac.content.content_type));
    return mac(membership_key, w.bytes());
}

Status check_group_and_epoch(ByteView group_id, std::uint64_t epoch, const GroupContext& context) {
    if (!constant_time_equal(group_id, context.group_id)) {
        return Error{Errc::bad_field, "message for another group"};
    }
    if (epoch < context.epoch) {
        return Errc::stale_epoch;
    }
    if (epoch > context.epoch) {
        return Errc::epoch_too_far;
    }
    return ok();
}

// The MLSMessage header (s6): version and wire format.
Status read_header(TlsReader& r, WireFormat expected) {
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

Result<Bytes> verify_and_lookup(const AuthenticatedContent& ac, const GroupContext& context,
                                const SignatureKeyLookup& signature_key) {
    SIM_TRY(auto key, signature_key(ac.content.sender));
    if (!verify_content(ac, context, key)) {
        return Error{Errc::auth_failed, "content signature does not verify"};
    }
    return key;
}

// s6.3.1 PrivateContentAAD, s6.3.2 SenderDataAAD.
Result<Bytes> content_aad(ByteView group_id, std::uint64_t epoch, ContentType type, ByteView authenticated_data) {
    TlsWriter w;
    SIM_TRY_STATUS(w.vector(group_id));
    w.u64(epoch);
    w.u8(static_cast<std::uint8_t>(type));
    SIM_TRY_STATUS(w.vector(authenticated_data));
    return std::move(w).bytes();
}

Result<Bytes> sender_data_aad(ByteView group_id, std::uint64_t epoch, ContentType type) {
    TlsWriter w;
    SIM_TRY_STATUS(w.vector(group_id));
    w.u64(epoch);
    w.u8(static_cast<std::uint8_t>(type));
    return std::move(w).bytes();
}

Result<std::unique_ptr<crypto::Aead>> aead_of(ByteView key) {
    return crypto::make_aead(crypto::AeadAlgorithm::aes128_gcm, key);
}

// s6.3.1: the first four bytes of the nonce XOR the reuse guard.
SecureBytes guarded_nonce(ByteView nonce, ByteView reuse_guard) {
    SecureBytes out(nonce.begin(), nonce.end());
    for (std::size_t i = 0; i < reuse_guard_size; ++i) {
        out[i] ^= reuse_guard[i];
    }
    return out;
}

}  // namespace

Result<AuthenticatedContent> sign_content(WireFormat wire_format, FramedContent content, const GroupContext& context,
                                          ByteView signature_private, ByteView confirmation_tag) {
    if ((content.content_type == ContentType::commit) == confirmation_tag.empty()) {
        return Error{Errc::invalid_argument, "a confirmation tag belongs to commits only, and every commit has one"};
    }
    SIM_TRY(const auto tbs, content_tbs(wire_format, content, context));
    SIM_TRY(auto signature, sign_with_label(signature_private, sign_label, tbs));
    AuthenticatedContent ac;
    ac.wire_format = wire_format;
    ac.content = std::move(content);
    ac.auth.signature = std::move(signature);
    ac.auth.confirmation_tag = to_bytes(confirmation_tag);
    return ac;
}

bool verify_content(const AuthenticatedContent& ac, const GroupContext& context, ByteView signature_public) {
    const auto tbs = content_tbs(ac.wire_format, ac.content, context);
    return tbs && verify_with_label(signature_public, sign_label, *tbs, ac.auth.signature);
}

Result<Bytes> protect_public(const AuthenticatedContent& ac, const GroupContext& context, ByteView membership_key) {
    if (ac.content.content_type == ContentType::application) {
        return Error{Errc::invalid_argument, "application data is never sent as a PublicMessage (s6.2)"};
    }
    if (ac.wire_format != WireFormat::public_message) {
        return Error{Errc::invalid_argument, "content was signed for another wire format"};
    }
    TlsWriter w;
    w.u16(protocol_version);
    w.u16(static_cast<std::uint16_t>(WireFormat::public_message));
    SIM_TRY_STATUS(ac.content.encode_into(w));
    SIM_TRY_STATUS(encode_auth_data(w, ac.auth, ac.content.content_type));
    if (ac.content.sender.type == SenderType::member) {
        SIM_TRY(const auto tag, membership_tag(ac, context, membership_key));
        SIM_TRY_STATUS(w.vector(tag));
    }
    return std::move(w).bytes();
}

Result<AuthenticatedContent> unprotect_public(ByteView message, const GroupContext& context, ByteView membership_key,
                                              const SignatureKeyLookup& signature_key) {
    if (message.size() > max_message_size) {
        return Errc::frame_too_large;
    }
    TlsReader r(message);
    SIM_TRY_STATUS(read_header(r, WireFormat::public_message));
    AuthenticatedContent ac;
    ac.wire_format = WireFormat::public_message;
    SIM_TRY(ac.content, decode_framed_content(r));
    SIM_TRY(ac.auth, decode_auth_data(r, ac.content.content_type));
    Bytes tag;
    if (ac.content.sender.type == SenderType::member) {
        SIM_TRY(const auto t, r.vector(hash_size));
        if (t.size() != hash_size) {
            return Error{Errc::bad_length, "membership tag is not a MAC of Nh bytes"};
        }
        tag = to_bytes(t);
    }
    SIM_TRY_STATUS(r.finish());
    if (ac.content.content_type == ContentType::application) {
        return Error{Errc::bad_field, "application data in a PublicMessage"};
    }
    SIM_TRY_STATUS(check_group_and_epoch(ac.content.group_id, ac.content.epoch, context));
    if (ac.content.sender.type == SenderType::member) {
        SIM_TRY(const auto expected, membership_tag(ac, context, membership_key));
        if (!constant_time_equal(expected, tag)) {
            return Error{Errc::auth_failed, "membership tag does not verify"};
        }
    }
    SIM_TRY_STATUS(status_of(verify_and_lookup(ac, context, signature_key)));
    return ac;
}

Result<Bytes> protect_private(const AuthenticatedContent& ac, const GroupContext& context, SecretTree& tree,
                              ByteView sender_data_secret, ByteView reuse_guard, std::size_t padding) {
    const auto& content = ac.content;
    if (content.sender.type != SenderType::member || ac.wire_format != WireFormat::private_message) {
        return Error{Errc::invalid_argument, "PrivateMessage needs a member sender and private_message signing"};
    }
    if (reuse_guard.size() != reuse_guard_size || padding > max_padding) {
        return Error{Errc::invalid_argument, "reuse guard must be 4 bytes, padding at most 4096"};
    }
    SIM_TRY_STATUS(check_group_and_epoch(content.group_id, content.epoch, context));

    // PrivateMessageContent: the content arm, the auth data, zero padding.
    TlsWriter pt;
    if (content.content_type == ContentType::application) {
        SIM_TRY_STATUS(pt.vector(content.content));
    } else {
        pt.raw(content.content);
    }
    SIM_TRY_STATUS(encode_auth_data(pt, ac.auth, content.content_type));
    pt.raw(Bytes(padding, 0));

    const auto kind =
        content.content_type == ContentType::application ? RatchetKind::application : RatchetKind::handshake;
    SIM_TRY(auto* ratchet, tree.ratchet(content.sender.index, kind));
    SIM_TRY(const auto kn, ratchet->next());
    SIM_TRY(const auto aad,
            content_aad(content.group_id, content.epoch, content.content_type, content.authenticated_data));
    SIM_TRY(auto content_aead, aead_of(kn.key));
    SIM_TRY(const auto ciphertext, content_aead->seal(guarded_nonce(kn.nonce, reuse_guard), aad, pt.bytes()));

    TlsWriter sd;
    sd.u32(content.sender.index);
    sd.u32(kn.generation);
    sd.raw(reuse_guard);
    SIM_TRY(const auto sd_kn, sender_data_key_nonce(sender_data_secret, ciphertext));
    SIM_TRY(const auto sd_aad, sender_data_aad(content.group_id, content.epoch, content.content_type));
    SIM_TRY(auto sd_aead, aead_of(sd_kn.key));
    SIM_TRY(const auto encrypted_sender_data, sd_aead->seal(sd_kn.nonce, sd_aad, sd.bytes()));

    TlsWriter w;
    w.u16(protocol_version);
    w.u16(static_cast<std::uint16_t>(WireFormat::private_message));
    SIM_TRY_STATUS(w.vector(content.group_id));
    w.u64(content.epoch);
    w.u8(static_cast<std::uint8_t>(content.content_type));
    SIM_TRY_STATUS(w.vector(content.authenticated_data));
    SIM_TRY_STATUS(w.vector(encrypted_sender_data));
    SIM_TRY_STATUS(w.vector(ciphertext));
    return std::move(w).bytes();
}

Result<AuthenticatedContent> unprotect_private(ByteView message, const GroupContext& context, SecretTree& tree,
                                               ByteView sender_data_secret, const SignatureKeyLookup& signature_key) {
    if (message.size() > max_message_size) {
        return Errc::frame_too_large;
    }
    TlsReader r(message);
    SIM_TRY_STATUS(read_header(r, WireFormat::private_message));
    SIM_TRY(const auto group_id, r.vector(max_group_id_size));
    SIM_TRY(const auto epoch, r.u64());
    SIM_TRY(const auto type_byte, r.u8());
    if (type_byte < 1 || type_byte > 3) {
        return Error{Errc::bad_field, "unknown content type"};
    }
    const auto type = static_cast<ContentType>(type_byte);
    SIM_TRY(const auto authenticated_data, r.vector(max_authenticated_data_size));
    SIM_TRY(const auto encrypted_sender_data, r.vector(max_key_size));
    SIM_TRY(const auto ciphertext, r.vector(max_message_size));
    SIM_TRY_STATUS(r.finish());
    SIM_TRY_STATUS(check_group_and_epoch(group_id, epoch, context));

    // s6.3.2: sender data.
    SIM_TRY(const auto sd_kn, sender_data_key_nonce(sender_data_secret, ciphertext));
    SIM_TRY(const auto sd_aad, sender_data_aad(group_id, epoch, type));
    SIM_TRY(auto sd_aead, aead_of(sd_kn.key));
    SIM_TRY(const auto sender_data, sd_aead->open(sd_kn.nonce, sd_aad, encrypted_sender_data));
    TlsReader sd(sender_data);
    SIM_TRY(const auto leaf, sd.u32());
    SIM_TRY(const auto generation, sd.u32());
    SIM_TRY(const auto reuse_guard, sd.fixed(reuse_guard_size));
    SIM_TRY_STATUS(sd.finish());

    // s6.3.1: the content key of that generation, tried on a copy of the ratchet so that a failure changes nothing.
    const auto kind = type == ContentType::application ? RatchetKind::application : RatchetKind::handshake;
    SIM_TRY(auto* ratchet, tree.ratchet(leaf, kind));
    HashRatchet trial = *ratchet;
    SIM_TRY(const auto kn, trial.get(generation));
    SIM_TRY(const auto aad, content_aad(group_id, epoch, type, authenticated_data));
    SIM_TRY(auto content_aead, aead_of(kn.key));
    SIM_TRY(const auto plaintext, content_aead->open(guarded_nonce(kn.nonce, reuse_guard), aad, ciphertext));

    AuthenticatedContent ac;
    ac.wire_format = WireFormat::private_message;
    ac.content.group_id = to_bytes(group_id);
    ac.content.epoch = epoch;
    ac.content.sender = Sender{SenderType::member, leaf};
    ac.content.authenticated_data = to_bytes(authenticated_data);
    ac.content.content_type = type;
    TlsReader pt(plaintext);
    switch (type) {
        case ContentType::application: {
            SIM_TRY(const auto data, pt.vector(max_message_size));
            ac.content.content = to_bytes(data);
            break;
        }
        case ContentType::proposal: {
            SIM_TRY(const auto proposal, read_proposal(pt));
            ac.content.content = to_bytes(proposal);
            break;
        }
        case ContentType::commit: {
            SIM_TRY(const auto commit, read_commit(pt));
            ac.content.content = to_bytes(commit);
            break;
        }
    }
    SIM_TRY(ac.auth, decode_auth_data(pt, type));
    SIM_TRY(const auto padding, pt.fixed(pt.remaining()));
    std::uint8_t nonzero = 0;
    for (const auto b : padding) {
        nonzero = static_cast<std::uint8_t>(nonzero | b);
    }
    if (nonzero != 0) {
        return Error{Errc::bad_field, "PrivateMessage padding is not all zero"};
    }
    SIM_TRY_STATUS(status_of(verify_and_lookup(ac, context, signature_key)));
    *ratchet = std::move(trial);  // only now is the key consumed
    return ac;
}

}  // namespace sim::mls
