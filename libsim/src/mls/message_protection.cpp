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
    PublicMessage m{ac, {}};
    if (ac.content.sender.type == SenderType::member) {
        SIM_TRY(const auto tag, membership_tag(ac, context, membership_key));
        m.membership_tag = to_bytes(tag);
    }
    return m.encode_message();
}

Result<AuthenticatedContent> unprotect_public(ByteView message, const GroupContext& context, ByteView membership_key,
                                              const SignatureKeyLookup& signature_key) {
    if (message.size() > max_message_size) {
        return Errc::frame_too_large;
    }
    SIM_TRY(auto m, decode_public_message(message));
    auto& ac = m.content;
    if (ac.content.content_type == ContentType::application) {
        return Error{Errc::bad_field, "application data in a PublicMessage"};
    }
    SIM_TRY_STATUS(check_group_and_epoch(ac.content.group_id, ac.content.epoch, context));
    if (ac.content.sender.type == SenderType::member) {
        SIM_TRY(const auto expected, membership_tag(ac, context, membership_key));
        if (!constant_time_equal(expected, m.membership_tag)) {
            return Error{Errc::auth_failed, "membership tag does not verify"};
        }
    }
    SIM_TRY_STATUS(status_of(verify_and_lookup(ac, context, signature_key)));
    return std::move(ac);
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

    const PrivateMessage m{content.group_id,           content.epoch,         content.content_type,
                           content.authenticated_data, encrypted_sender_data, ciphertext};
    return m.encode_message();
}

Result<AuthenticatedContent> unprotect_private(ByteView message, const GroupContext& context, SecretTree& tree,
                                               ByteView sender_data_secret, const SignatureKeyLookup& signature_key) {
    if (message.size() > max_message_size) {
        return Errc::frame_too_large;
    }
    SIM_TRY(const auto m, decode_private_message(message));
    const ByteView group_id = m.group_id;
    const auto epoch = m.epoch;
    const auto type = m.content_type;
    const ByteView authenticated_data = m.authenticated_data;
    const ByteView encrypted_sender_data = m.encrypted_sender_data;
    const ByteView ciphertext = m.ciphertext;
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
