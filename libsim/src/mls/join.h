#pragma once
/// @file
/// Joining a group from a Welcome (RFC 9420 s12.4.3.1): everything a new member checks and derives before it
/// holds the group's first epoch. Internal to libsim; the Group state machine builds on it.

#include "key_schedule.h"
#include "ratchet_tree.h"
#include "treekem.h"
#include "validation.h"
#include "welcome.h"

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstdint>
#include <optional>

namespace sim::mls {

/// The private material of the KeyPackage a Welcome is addressed to.
struct JoinKeys {
    KeyPackage key_package;
    SecureBytes init_private;
    SecureBytes encryption_private;
};

/// What a new member holds after joining.
struct JoinedGroup {
    GroupContext context;
    RatchetTree tree;
    EpochSecrets secrets;
    std::uint32_t own_leaf = 0;
    TreePrivate own_private;
    Bytes interim_transcript_hash;
};

/// s12.4.3.1: decrypt the Welcome with `keys` (Errc::not_implemented when it names PSKs), decrypt the GroupInfo,
/// take the ratchet tree from `ratchet_tree` or else from the GroupInfo's ratchet_tree extension
/// (Errc::invalid_argument when neither has one), and check: the tree hash against the GroupContext, parent
/// hashes, every leaf (s7.3, through `credentials`), the GroupInfo signature by its signer's leaf, our own leaf in
/// the tree, the path secret against the tree's public keys, and the confirmation tag (Errc::auth_failed for
/// failed checks). Returns the first epoch's state.
Result<JoinedGroup> join_from_welcome(const Welcome& welcome, const JoinKeys& keys,
                                      const std::optional<Bytes>& ratchet_tree, const CredentialValidator& credentials);

}  // namespace sim::mls
