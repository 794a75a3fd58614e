#pragma once
/// @file
/// Welcome, GroupSecrets and GroupInfo (RFC 9420 s12.4.3), and the MLSMessage wrappers of KeyPackage and
/// Welcome (s6). Internal to libsim.
///
/// Joining with pre-shared keys is left out: GroupSecrets that name PSKs are refused with Errc::not_implemented.

#include "codec.h"
#include "key_schedule.h"
#include "proposals.h"

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace sim::mls {

/// s12.4.3.1 GroupInfo.
struct GroupInfo {
    GroupContext group_context;
    std::vector<Extension> extensions;
    Bytes confirmation_tag;
    std::uint32_t signer = 0;
    Bytes signature;

    [[nodiscard]] Result<Bytes> to_be_signed() const;
    [[nodiscard]] Result<Bytes> encode() const;
    /// True when `signature` is SignWithLabel(signer_public, "GroupInfoTBS", to_be_signed()).
    [[nodiscard]] bool verify(ByteView signer_public) const;
};

/// Decode a whole GroupInfo. Errc::bad_length for a confirmation tag that is not Nh bytes; errors of
/// GroupContext::decode and the codec.
Result<GroupInfo> decode_group_info(ByteView data);

/// s12.4.3.1 EncryptedGroupSecrets.
struct EncryptedGroupSecrets {
    Bytes new_member;  ///< KeyPackageRef
    Bytes kem_output;
    Bytes ciphertext;
};

/// s12.4.3.1 Welcome.
struct Welcome {
    std::vector<EncryptedGroupSecrets> secrets;
    Bytes encrypted_group_info;
};

/// s12.4.3.1 GroupSecrets. `psks` is the encoded body of the PreSharedKeyID list (checked structurally; joining
/// with PSKs is refused by decrypt_group_secrets).
struct GroupSecrets {
    SecureBytes joiner_secret;
    std::optional<SecureBytes> path_secret;
    Bytes psks;

    [[nodiscard]] Result<SecureBytes> encode() const;
};

/// Decode a whole GroupSecrets. Errc::bad_length for a joiner secret that is not Nh bytes, Errc::bad_field for a
/// malformed PSK list; codec errors.
Result<GroupSecrets> decode_group_secrets(ByteView data);

/// MLSMessage encoders of Welcome, KeyPackage and GroupInfo.
Result<Bytes> encode_welcome_message(const Welcome& welcome);
Result<Bytes> encode_key_package_message(const KeyPackage& key_package);
Result<Bytes> encode_group_info_message(const GroupInfo& group_info);
/// Decode an MLSMessage carrying a GroupInfo. Errors as decode_welcome_message and decode_group_info.
Result<GroupInfo> decode_group_info_message(ByteView data);

/// Decode an MLSMessage carrying a Welcome. Errc::unsupported_version, Errc::bad_field (wire format),
/// Errc::suite_not_allowed (cipher suite), codec errors.
Result<Welcome> decode_welcome_message(ByteView data);
/// Decode an MLSMessage carrying a KeyPackage. Errors as decode_welcome_message plus those of the KeyPackage.
Result<KeyPackage> decode_key_package_message(ByteView data);

/// Sign `group_info` as member `signer` (sets `signer` and `signature`, s12.4.3). Errc::invalid_key.
Status sign_group_info(GroupInfo& group_info, std::uint32_t signer, ByteView signature_private);

/// A new member of a Welcome: its KeyPackage and, when the commit had a path, the path secret of the lowest
/// common ancestor of the committer and the new member.
struct WelcomeRecipient {
    KeyPackage key_package;
    std::optional<SecureBytes> path_secret;
};

/// s12.4.3.1: a Welcome carrying `group_info` (already signed) encrypted under the welcome secret of
/// `joiner_secret` (no PSKs), and the GroupSecrets for each recipient encrypted to its KeyPackage's init key with
/// EncryptWithLabel("Welcome", encrypted_group_info). Errc::invalid_argument for a joiner secret that is not Nh
/// bytes or no recipients; HPKE errors (Errc::invalid_key for a bad init key).
Result<Welcome> create_welcome(const GroupInfo& group_info, ByteView joiner_secret,
                               const std::vector<WelcomeRecipient>& recipients, Rng& rng);

/// Decrypt the GroupSecrets addressed to `key_package` with its init private key: the entry whose new_member is
/// the KeyPackageRef. Errc::invalid_argument when no entry names it, Errc::auth_failed / Errc::invalid_key from
/// HPKE, Errc::not_implemented when PSKs are named, codec errors.
Result<GroupSecrets> decrypt_group_secrets(const Welcome& welcome, const KeyPackage& key_package,
                                           ByteView init_private);
/// Decrypt the GroupInfo with the welcome_secret of `joiner_secret` (no PSKs): Errc::auth_failed, codec errors.
Result<GroupInfo> decrypt_group_info(const Welcome& welcome, ByteView joiner_secret);

}  // namespace sim::mls
