#pragma once
/// @file
/// Content authentication and message protection (RFC 9420 s6.1-s6.3): signing FramedContent, PublicMessage
/// with its membership tag, PrivateMessage with encrypted sender data and padding, inside an MLSMessage. Internal.
///
/// Unprotecting is all-or-nothing: the secret tree's ratchet moves (and its key is consumed) only after the
/// content decrypted, decoded and its signature verified; any failure leaves the tree as it was.

#include "framing.h"
#include "key_schedule.h"
#include "secret_tree.h"

#include <sim/bytes.h>
#include <sim/error.h>

#include <functional>
#include <memory>

namespace sim::mls {

/// Bound on a whole MLSMessage.
inline constexpr std::size_t max_message_size = max_vector_size;
/// Largest padding protect_private adds.
inline constexpr std::size_t max_padding = 4096;

/// The signature public key of a sender, or an error (e.g. Errc::invalid_argument for an empty leaf).
using SignatureKeyLookup = std::function<Result<Bytes>(const Sender&)>;

/// s6.1: sign `content` as sent in `wire_format` (FramedContentTBS with `context` for member senders) and attach
/// `confirmation_tag` (commits only). Errc::invalid_key for a bad signature key, Errc::invalid_argument for a
/// confirmation tag on a non-commit or a commit without one.
Result<AuthenticatedContent> sign_content(WireFormat wire_format, FramedContent content, const GroupContext& context,
                                          ByteView signature_private, ByteView confirmation_tag = {});
/// s6.1: true when the signature of `ac` verifies under `signature_public` and `context`.
[[nodiscard]] bool verify_content(const AuthenticatedContent& ac, const GroupContext& context,
                                  ByteView signature_public);

/// s6.2: an MLSMessage(PublicMessage) of `ac` with its membership tag (member senders). Errc::invalid_argument
/// for application content (s6.2 forbids it) or a wire format other than public_message.
Result<Bytes> protect_public(const AuthenticatedContent& ac, const GroupContext& context, ByteView membership_key);
/// s6.2: decode an MLSMessage(PublicMessage) and authenticate it: group id and epoch of `context`
/// (Errc::stale_epoch / Errc::bad_field), no application content (Errc::bad_field), membership tag and signature
/// (Errc::auth_failed), codec errors, Errc::unsupported_version.
Result<AuthenticatedContent> unprotect_public(ByteView message, const GroupContext& context, ByteView membership_key,
                                              const SignatureKeyLookup& signature_key);

/// s6.3: an MLSMessage(PrivateMessage) of `ac` (member sender, wire format private_message) encrypted with the
/// sender's next key from `tree`, `reuse_guard` (4 random bytes) and `padding` zero bytes (at most max_padding).
/// Errc::invalid_argument for a wrong sender or wire format, sizes; errors of the ratchet.
Result<Bytes> protect_private(const AuthenticatedContent& ac, const GroupContext& context, SecretTree& tree,
                              ByteView sender_data_secret, ByteView reuse_guard, std::size_t padding);
/// s6.3: decrypt and authenticate an MLSMessage(PrivateMessage): group id and epoch, sender data, the
/// generation's key (Errc::replayed, Errc::out_of_window), content, zero padding (Errc::bad_field), signature
/// (Errc::auth_failed). The tree changes only on success.
Result<AuthenticatedContent> unprotect_private(ByteView message, const GroupContext& context, SecretTree& tree,
                                               ByteView sender_data_secret, const SignatureKeyLookup& signature_key);

}  // namespace sim::mls
