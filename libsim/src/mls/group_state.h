#pragma once
/// @file
/// A member's view of one group epoch and the processing of incoming proposals and commits (RFC 9420 s12.2-s12.4.2)
/// as a receiver. Internal to libsim: the public Group API (creating commits, sending, state export) builds on it.
///
/// Processing is all-or-nothing: a message that fails any check leaves the state exactly as it was.

#include "join.h"
#include "message_protection.h"
#include "proposals.h"
#include "secret_tree.h"

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace sim::mls {

/// Largest number of proposals cached for one epoch.
inline constexpr std::size_t max_cached_proposals = 1024;

/// One epoch of a group as seen by a member that receives messages.
class GroupState {
public:
    /// The state right after joining. Errc::invalid_argument when the tree's leaf count is not a power of two.
    static Result<GroupState> from_join(JoinedGroup joined, const CredentialValidator& credentials);

    /// s12.1: authenticate a proposal sent in its own message (PublicMessage or PrivateMessage) and keep it for a
    /// commit of this epoch to reference. Errc::not_implemented for left-out proposal types and senders; the
    /// errors of unprotect_public / unprotect_private and of LeafNode validation.
    Status cache_proposal(ByteView message);
    /// s12.4.2: authenticate and apply a commit: proposals by value and by reference, the UpdatePath, the new
    /// epoch's GroupContext, key schedule and confirmation tag. Errc::bad_field for unknown references or an invalid
    /// proposal list, Errc::auth_failed for failed checks, Errc::not_implemented for left-out features.
    Status process_commit(ByteView message);

    [[nodiscard]] const GroupContext& context() const noexcept { return m_context; }
    [[nodiscard]] const EpochSecrets& secrets() const noexcept { return m_secrets; }
    [[nodiscard]] const RatchetTree& tree() const noexcept { return m_tree; }
    [[nodiscard]] std::uint32_t own_leaf() const noexcept { return m_own_leaf; }
    /// False once a commit removed us.
    [[nodiscard]] bool member() const noexcept { return m_member; }

private:
    struct CachedProposal {
        Proposal proposal;
        Sender sender;
    };

    GroupState(JoinedGroup joined, SecretTree secret_tree, const CredentialValidator& credentials);
    Result<AuthenticatedContent> unprotect(ByteView message);
    Status apply_commit(ByteView message);

    GroupContext m_context;
    RatchetTree m_tree;
    EpochSecrets m_secrets;
    std::uint32_t m_own_leaf = 0;
    TreePrivate m_private;
    Bytes m_interim_transcript_hash;
    SecretTree m_secret_tree;
    std::map<Bytes, CachedProposal> m_proposals;  // by ProposalRef
    const CredentialValidator* m_credentials;
    bool m_member = true;
};

}  // namespace sim::mls
