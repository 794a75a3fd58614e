#pragma once
/// @file
/// MLS message framing structures (RFC 9420 s6) and the transcript hashes (s8.2). Internal to libsim.
///
/// Proposals and Commits are checked structurally here (every length, enumerated value and nested structure of
/// s12.1 and s12.4, bounded) and kept as their exact encoding; their meaning is checked where they are applied.
/// Nothing here verifies a signature or a MAC; see message_protection.h.

#include "codec.h"

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstddef>
#include <cstdint>

namespace sim::mls {

/// s6 WireFormat.
enum class WireFormat : std::uint16_t {
    public_message = 1,
    private_message = 2,
    welcome = 3,
    group_info = 4,
    key_package = 5,
};

/// s6 SenderType.
enum class SenderType : std::uint8_t { member = 1, external = 2, new_member_proposal = 3, new_member_commit = 4 };

/// s6 ContentType.
enum class ContentType : std::uint8_t { application = 1, proposal = 2, commit = 3 };

/// Bounds of framing fields when decoding.
inline constexpr std::size_t max_authenticated_data_size = 64 * 1024;
inline constexpr std::size_t max_signature_size = 256;
inline constexpr std::size_t max_key_size = 256;
inline constexpr std::size_t max_credential_size = 64 * 1024;

/// s6 Sender. `index` is the leaf index (member) or sender index (external); 0 for new members.
struct Sender {
    SenderType type = SenderType::member;
    std::uint32_t index = 0;
    friend bool operator==(const Sender&, const Sender&) = default;
};

/// s6 FramedContent. `content` holds the application data (application) or the exact encoding of the Proposal or
/// Commit.
struct FramedContent {
    Bytes group_id;
    std::uint64_t epoch = 0;
    Sender sender;
    Bytes authenticated_data;
    ContentType content_type = ContentType::application;
    Bytes content;

    /// TLS encoding. Errc::frame_too_large for fields too long for an MLS vector.
    [[nodiscard]] Result<Bytes> encode() const;
    /// Append the encoding to `w`.
    Status encode_into(TlsWriter& w) const;
};

/// s6.1 FramedContentAuthData: the signature, and the confirmation tag of a Commit (empty otherwise).
struct FramedContentAuthData {
    Bytes signature;
    Bytes confirmation_tag;
};

/// s6.1 AuthenticatedContent.
struct AuthenticatedContent {
    WireFormat wire_format = WireFormat::public_message;
    FramedContent content;
    FramedContentAuthData auth;

    [[nodiscard]] Result<Bytes> encode() const;
    /// Decode a whole AuthenticatedContent (wire_format public_message or private_message only). Codec errors,
    /// Errc::bad_field for unknown enumerated values.
    static Result<AuthenticatedContent> decode(ByteView data);
};

/// Decode a FramedContent from `r`. Errc::bad_field for unknown sender or content types, invalid Proposals or
/// Commits; codec errors otherwise.
Result<FramedContent> decode_framed_content(TlsReader& r);
/// Decode FramedContentAuthData for `type` (a confirmation tag only for commits, exactly Nh bytes, else
/// Errc::bad_length).
Result<FramedContentAuthData> decode_auth_data(TlsReader& r, ContentType type);
/// Append FramedContentAuthData for `type`. Errc::invalid_argument when a commit lacks its confirmation tag or
/// another content type carries one.
Status encode_auth_data(TlsWriter& w, const FramedContentAuthData& auth, ContentType type);

/// Check one Proposal (s12.1) structurally at `r` and return its exact encoding. Errc::bad_field for an unknown
/// proposal type or invalid nested values.
Result<ByteView> read_proposal(TlsReader& r);
/// The same for a Commit (s12.4).
Result<ByteView> read_commit(TlsReader& r);

/// Check one PreSharedKeyID (s8.4) structurally at `r` and return its exact encoding. Errc::bad_field for unknown
/// PSK types or resumption usages.
Result<ByteView> read_psk_id(TlsReader& r);

/// s6.2 PublicMessage inside an MLSMessage, as syntax only (no MAC or signature is checked here).
struct PublicMessage {
    AuthenticatedContent content;  ///< wire_format public_message
    Bytes membership_tag;          ///< member senders only (exactly Nh bytes), empty otherwise

    /// The MLSMessage encoding. Errors of the field encoders.
    [[nodiscard]] Result<Bytes> encode_message() const;
};
/// Decode an MLSMessage(PublicMessage). Errc::unsupported_version, Errc::bad_field (wire format, enumerations),
/// Errc::bad_length (tags), codec errors (truncated, frame_too_large, trailing_bytes).
Result<PublicMessage> decode_public_message(ByteView message);

/// s6.3 PrivateMessage inside an MLSMessage, as syntax only.
struct PrivateMessage {
    Bytes group_id;
    std::uint64_t epoch = 0;
    ContentType content_type = ContentType::application;
    Bytes authenticated_data;
    Bytes encrypted_sender_data;
    Bytes ciphertext;

    [[nodiscard]] Result<Bytes> encode_message() const;
};
/// Decode an MLSMessage(PrivateMessage). Errors as decode_public_message.
Result<PrivateMessage> decode_private_message(ByteView message);

/// s8.2 confirmed_transcript_hash_[n] = Hash(interim_transcript_hash_[n-1] || ConfirmedTranscriptHashInput), the
/// input being wire_format || FramedContent (a commit) || signature<V>. Errc::invalid_argument when the content
/// is not a commit.
Result<Bytes> confirmed_transcript_hash(ByteView interim_before, const AuthenticatedContent& commit);
/// s8.2 interim_transcript_hash_[n] = Hash(confirmed_transcript_hash_[n] || confirmation_tag<V>).
Result<Bytes> interim_transcript_hash(ByteView confirmed, ByteView confirmation_tag);

}  // namespace sim::mls
