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
#include <sim/rng.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <vector>

namespace sim::mls {

/// Largest saved state accepted by load() (a tree of max_tree_leaves with its secret tree fits).
inline constexpr std::size_t max_saved_state_size = std::size_t{64} << 20;

/// Largest number of proposals cached for one epoch.
inline constexpr std::size_t max_cached_proposals = 1024;

/// One epoch of a group as seen by a member. The CredentialValidator given to create / from_join must outlive the
/// state and its copies (they keep a pointer to it). Copies are independent states (tests use them as "saved"
/// states); each holds its own secrets, wiped when it is destroyed.
class GroupState {
public:
    /// The state right after joining. Errc::invalid_argument when the tree's leaf count is not a power of two.
    static Result<GroupState> from_join(JoinedGroup joined, const CredentialValidator& credentials);

    /// s11: a new group whose only member is us (leaf 0), at epoch 0. `own_leaf` is our LeafNode (from our own
    /// KeyPackage), `encryption_private` its HPKE private key. Errc::invalid_argument for an empty group id or a
    /// private key that does not match the leaf.
    static Result<GroupState> create(Bytes group_id, LeafNode own_leaf, SecureBytes encryption_private,
                                     const CredentialValidator& credentials, Rng& rng);

    /// What a commit we create produces.
    struct CommitOutput {
        Bytes message;                   ///< MLSMessage(PublicMessage) carrying the Commit
        std::optional<Welcome> welcome;  ///< for the added members
    };

    /// The time (seconds since the Unix epoch) against which the lifetimes of added KeyPackages are checked
    /// (s7.2). Without a clock (the default) only KeyPackages with the unlimited lifetime [0, 2^64-1] can be added.
    void set_clock(std::function<std::uint64_t()> now) { m_now = std::move(now); }

    /// s12.4.1: commit every cached proposal by reference (except an Update of our own, which a committer may not
    /// include), the removal of `removes` (leaf indices) and the addition of `adds` (validated KeyPackages) by
    /// value, always with an UpdatePath (so every commit also refreshes our own path). The new epoch applies to this
    /// state at once; the caller sends `message` to the group and `welcome` to the new members. The GroupInfo in
    /// the Welcome carries the ratchet tree. Errc::invalid_argument for removing ourselves, a blank leaf or twice;
    /// validation errors for KeyPackages; Errc::invalid_state after removal.
    Result<CommitOutput> commit(const std::vector<KeyPackage>& adds, const std::vector<std::uint32_t>& removes,
                                ByteView signature_private, Rng& rng);

    /// s12.1.2: an Update proposal for our own leaf (fresh encryption key, re-signed) as an MLSMessage(PublicMessage).
    /// It is cached here like a received one; when a commit applies it, our leaf's new private key takes effect.
    /// Errc::invalid_state after removal.
    Result<Bytes> propose_update(ByteView signature_private, Rng& rng);

    /// s6.3: `plaintext` as an application PrivateMessage from us. Errc::invalid_state after removal; ratchet
    /// errors.
    Result<Bytes> encrypt_application(ByteView plaintext, ByteView signature_private, Rng& rng);
    /// s6.3: the application data of a PrivateMessage of this epoch from a member. Errc::bad_field for other
    /// content; the errors of unprotect_private. Nothing changes on failure.
    Result<Bytes> decrypt_application(ByteView message);

    /// s12.1: authenticate a proposal sent in its own message (PublicMessage or PrivateMessage) and keep it for a
    /// commit of this epoch to reference. Errc::not_implemented for left-out proposal types and senders; the
    /// errors of unprotect_public / unprotect_private and of LeafNode validation.
    Status cache_proposal(ByteView message);
    /// s12.4.2: authenticate and apply a commit: proposals by value and by reference, the UpdatePath, the new
    /// epoch's GroupContext, key schedule and confirmation tag. Errc::bad_field for unknown references or an invalid
    /// proposal list, Errc::auth_failed for failed checks, Errc::not_implemented for left-out features.
    Status process_commit(ByteView message);

    /// The saved-state encoding of this state (docs/protocol.md 7.6). Everything in it is secret.
    /// Errc::invalid_state after removal.
    Status save(SecureTlsWriter& w) const;
    /// Read what save() wrote and check that it is one consistent state: the tree hash matches the GroupContext
    /// (Errc::bad_field), our leaf is a member (Errc::bad_field), our private keys match the tree (Errc::invalid_key),
    /// the secret tree has the tree's leaf count (Errc::bad_field), every secret has its size (Errc::bad_length),
    /// cached proposals come from members and pending updates belong to cached proposals (Errc::bad_field); the
    /// errors of the nested decoders. No clock is set.
    static Result<GroupState> load(TlsReader& r, const CredentialValidator& credentials);

    /// s8.5 MLS-Exporter of this epoch. Errc::invalid_state after removal; errors of mls_exporter.
    [[nodiscard]] Result<SecureBytes> export_secret(ByteView label, ByteView context, std::size_t length) const;

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
    /// s10.1 and s7.2 for a KeyPackage to be added to `tree`: validate_key_package at the injected time.
    [[nodiscard]] Status validate_add(const KeyPackage& key_package, const RatchetTree& tree) const;

    GroupContext m_context;
    RatchetTree m_tree;
    EpochSecrets m_secrets;
    std::uint32_t m_own_leaf = 0;
    TreePrivate m_private;
    Bytes m_interim_transcript_hash;
    SecretTree m_secret_tree;
    std::map<Bytes, CachedProposal> m_proposals;     // by ProposalRef
    std::map<Bytes, SecureBytes> m_pending_updates;  // our own Update proposals: ref -> new leaf private key
    const CredentialValidator* m_credentials;
    std::function<std::uint64_t()> m_now;
    bool m_member = true;
};

}  // namespace sim::mls
