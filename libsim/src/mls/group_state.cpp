// RFC 9420 s12.2-s12.4.2: receiving proposals and commits.
#include "group_state.h"

#include "framing.h"
#include "primitives.h"
#include "tree_math.h"
#include "treekem.h"

#include <sim/crypto.h>

#include <set>
#include <variant>

namespace sim::mls {

namespace {

struct DecodedCommit {
    std::vector<std::variant<Proposal, Bytes>> proposals;  // by value, or a ProposalRef
    std::optional<UpdatePath> path;
};

Result<DecodedCommit> decode_commit(ByteView encoding) {
    TlsReader r(encoding);
    DecodedCommit c;
    SIM_TRY(auto list, r.sub_reader());
    while (!list.empty()) {
        SIM_TRY(const auto kind, list.u8());
        if (kind == 1) {
            SIM_TRY(auto p, decode_proposal(list));
            c.proposals.emplace_back(std::move(p));
        } else if (kind == 2) {
            SIM_TRY(const auto ref, list.vector(hash_size));
            c.proposals.emplace_back(to_bytes(ref));
        } else {
            return Error{Errc::bad_field, "unknown ProposalOrRef type"};
        }
    }
    SIM_TRY(const bool has_path, r.optional());
    if (has_path) {
        SIM_TRY(c.path, decode_update_path(r));
    }
    SIM_TRY_STATUS(r.finish());
    return c;
}

bool left_out(ProposalType t) {
    return t == ProposalType::psk || t == ProposalType::reinit || t == ProposalType::external_init ||
           t == ProposalType::group_context_extensions;
}

}  // namespace

GroupState::GroupState(JoinedGroup joined, SecretTree secret_tree, const CredentialValidator& credentials)
    : m_context(std::move(joined.context)),
      m_tree(std::move(joined.tree)),
      m_secrets(std::move(joined.secrets)),
      m_own_leaf(joined.own_leaf),
      m_private(std::move(joined.own_private)),
      m_interim_transcript_hash(std::move(joined.interim_transcript_hash)),
      m_secret_tree(std::move(secret_tree)),
      m_credentials(&credentials) {}

Result<GroupState> GroupState::from_join(JoinedGroup joined, const CredentialValidator& credentials) {
    SIM_TRY(auto st, SecretTree::create(joined.secrets.encryption_secret, joined.tree.leaf_count()));
    return GroupState(std::move(joined), std::move(st), credentials);
}

Result<AuthenticatedContent> GroupState::unprotect(ByteView message) {
    const SignatureKeyLookup lookup = [this](const Sender& s) -> Result<Bytes> {
        if (s.type != SenderType::member) {
            return Error{Errc::not_implemented, "external and new-member senders are not supported"};
        }
        if (s.index >= m_tree.leaf_count() || !m_tree.leaf(s.index)) {
            return Error{Errc::bad_field, "sender is not a member"};
        }
        return m_tree.leaf(s.index)->signature_key;
    };
    TlsReader header(message);
    SIM_TRY_STATUS(status_of(header.u16()));
    SIM_TRY(const auto wire_format, header.u16());
    if (wire_format == static_cast<std::uint16_t>(WireFormat::public_message)) {
        return unprotect_public(message, m_context, m_secrets.membership_key, lookup);
    }
    if (wire_format == static_cast<std::uint16_t>(WireFormat::private_message)) {
        return unprotect_private(message, m_context, m_secret_tree, m_secrets.sender_data_secret, lookup);
    }
    return Error{Errc::bad_field, "not a PublicMessage or PrivateMessage"};
}

Status GroupState::validate_add(const KeyPackage& key_package, const RatchetTree& tree) const {
    if (!m_now) {
        const auto& leaf = key_package.leaf_node;
        if (leaf.not_before != 0 || leaf.not_after != ~std::uint64_t{0}) {
            return Error{Errc::key_expired, "no clock to check a limited key package lifetime against"};
        }
    }
    return validate_key_package(key_package, &tree, m_now ? std::optional(m_now()) : std::nullopt, *m_credentials);
}

Status GroupState::cache_proposal(ByteView message) {
    if (!m_member) {
        return Errc::invalid_state;
    }
    if (m_proposals.size() >= max_cached_proposals) {
        return Error{Errc::limit_reached, "too many proposals in this epoch"};
    }
    // Work on a copy of the secret tree so that a refused proposal consumes no key.
    const auto saved_tree = m_secret_tree;
    auto ac = unprotect(message);
    if (!ac) {
        m_secret_tree = saved_tree;
        return std::move(ac).error();
    }
    if (ac->content.content_type != ContentType::proposal) {
        m_secret_tree = saved_tree;
        return Error{Errc::bad_field, "not a proposal"};
    }
    TlsReader r(ac->content.content);
    auto proposal = decode_proposal(r);
    if (!proposal || left_out(proposal->type)) {
        m_secret_tree = saved_tree;
        return proposal ? Error{Errc::not_implemented, "left-out proposal type"} : std::move(proposal).error();
    }
    SIM_TRY(const auto encoded, ac->encode());
    SIM_TRY(auto ref, ref_hash("MLS 1.0 Proposal Reference", encoded));
    m_proposals.insert_or_assign(std::move(ref), CachedProposal{std::move(*proposal), ac->content.sender});
    return ok();
}

Status GroupState::process_commit(ByteView message) {
    if (!m_member) {
        return Errc::invalid_state;
    }
    // apply_commit changes the state only at its very end; the secret tree may have moved while unprotecting.
    const auto saved_secret_tree = m_secret_tree;
    auto st = apply_commit(message);
    if (!st) {
        m_secret_tree = saved_secret_tree;
    }
    return st;
}

Status GroupState::apply_commit(ByteView message) {
    auto ac = unprotect(message);
    if (!ac) {
        return std::move(ac).error();
    }
    if (ac->content.content_type != ContentType::commit) {
        return Error{Errc::bad_field, "not a commit"};
    }
    const auto committer = ac->content.sender.index;
    auto commit = decode_commit(ac->content.content);
    if (!commit) {
        return std::move(commit).error();
    }

    // Resolve the proposal list (s12.2) and check what this implementation leaves out.
    std::vector<CachedProposal> proposals;
    std::optional<SecureBytes> own_update_private;
    for (auto& p : commit->proposals) {
        if (auto* ref = std::get_if<Bytes>(&p)) {
            const auto it = m_proposals.find(*ref);
            if (it == m_proposals.end()) {
                return Error{Errc::bad_field, "commit references an unknown proposal"};
            }
            if (const auto pending = m_pending_updates.find(*ref); pending != m_pending_updates.end()) {
                own_update_private = pending->second;
            }
            proposals.push_back(it->second);
        } else {
            proposals.push_back(CachedProposal{std::move(std::get<Proposal>(p)), ac->content.sender});
        }
    }
    bool needs_path = proposals.empty();
    std::set<std::uint32_t> updated;
    std::set<std::uint32_t> removed;
    for (const auto& cp : proposals) {
        if (left_out(cp.proposal.type)) {
            return Error{Errc::not_implemented, "left-out proposal type in a commit"};
        }
        if (cp.proposal.type == ProposalType::update) {
            needs_path = true;
            if (cp.sender.index == committer || !updated.insert(cp.sender.index).second) {
                return Error{Errc::bad_field, "update by the committer or twice for one leaf"};
            }
        } else if (cp.proposal.type == ProposalType::remove) {
            needs_path = true;
            if (cp.proposal.removed == committer || !removed.insert(cp.proposal.removed).second) {
                return Error{Errc::bad_field, "removal of the committer or twice of one leaf"};
            }
        }
    }
    for (const auto leaf : updated) {
        if (removed.count(leaf) != 0) {
            return Error{Errc::bad_field, "a leaf both updated and removed"};
        }
    }
    if (needs_path && !commit->path) {
        return Error{Errc::bad_field, "this commit needs a path"};
    }

    // Apply the proposals to a copy of the tree (s12.3: updates, removes, adds).
    RatchetTree tree = m_tree;
    for (const auto& cp : proposals) {
        if (cp.proposal.type == ProposalType::update) {
            LeafNodeContext ctx;
            ctx.expected_source = LeafNodeSource::update;
            ctx.group_id = m_context.group_id;
            ctx.leaf_index = cp.sender.index;
            ctx.tree = &tree;
            ctx.replaces = cp.sender.index;
            if (auto st = validate_leaf_node(*cp.proposal.update, ctx, *m_credentials); !st) {
                return st.error();
            }
            if (auto st = tree.update_leaf(cp.sender.index, *cp.proposal.update); !st) {
                return st.error();
            }
        }
    }
    for (const auto& cp : proposals) {
        if (cp.proposal.type == ProposalType::remove) {
            if (auto st = tree.remove_leaf(cp.proposal.removed); !st) {
                return st.error();
            }
        }
    }
    std::set<std::uint32_t> added;
    for (const auto& cp : proposals) {
        if (cp.proposal.type == ProposalType::add) {
            if (auto st = validate_add(*cp.proposal.add, tree); !st) {
                return st.error();
            }
            auto index = tree.add_leaf(cp.proposal.add->leaf_node);
            if (!index) {
                return std::move(index).error();
            }
            added.insert(*index);
        }
    }
    if (removed.count(m_own_leaf) != 0) {
        // We were removed: nothing of the next epoch is ours to know (s12.4.2); forget this one.
        m_member = false;
        m_secrets = EpochSecrets{};
        m_private = TreePrivate{};
        m_proposals.clear();
        return ok();
    }

    // The UpdatePath and the commit secret (s12.4.2).
    GroupContext next = m_context;
    next.epoch = m_context.epoch + 1;
    SecureBytes commit_secret(hash_size, 0);
    TreePrivate priv = m_private;
    if (own_update_private) {
        priv.leaf_private = *own_update_private;  // our Update was applied: its key is our leaf's key now
    }
    // Path secrets of nodes that are now blank or changed are stale.
    std::erase_if(priv.path_secrets,
                  [&](const auto& entry) { return entry.first >= tree.node_count() || tree.blank(entry.first); });
    if (commit->path) {
        if (auto st = merge_update_path(tree, committer, *commit->path, m_context.group_id); !st) {
            return st.error();
        }
        LeafNodeContext ctx;
        ctx.expected_source = LeafNodeSource::commit;
        ctx.group_id = m_context.group_id;
        ctx.leaf_index = committer;
        ctx.tree = &tree;
        ctx.replaces = committer;
        if (auto st = validate_leaf_node(commit->path->leaf_node, ctx, *m_credentials); !st) {
            return st.error();
        }
        SIM_TRY(next.tree_hash, tree.tree_hash(tree::root(tree.leaf_count())));
        {
            GroupContext provisional = next;
            provisional.confirmed_transcript_hash = m_context.confirmed_transcript_hash;
            SIM_TRY(const auto encoded, provisional.encode());
            for (const auto node : tree::direct_path(tree::leaf_to_node(committer), tree.leaf_count())) {
                priv.path_secrets.erase(node);
            }
            auto secrets = decrypt_update_path(tree, committer, *commit->path, priv, encoded, added);
            if (!secrets) {
                return std::move(secrets).error();
            }
            // Record the path secrets from the decrypted node up the committer's filtered direct path.
            const auto fdp = tree.filtered_direct_path(committer);
            SecureBytes secret = secrets->path_secret;
            bool on = false;
            for (const auto node : fdp) {
                on = on || node == secrets->node;
                if (on) {
                    priv.path_secrets.insert_or_assign(node, secret);
                    SIM_TRY(secret, derive_secret(secret, "path"));
                }
            }
            commit_secret = std::move(secrets->commit_secret);
        }
    } else {
        SIM_TRY(next.tree_hash, tree.tree_hash(tree::root(tree.leaf_count())));
    }

    // The new epoch (s8): transcript hash, key schedule, confirmation tag.
    SIM_TRY(next.confirmed_transcript_hash, confirmed_transcript_hash(m_interim_transcript_hash, *ac));
    SIM_TRY(const auto encoded_next, next.encode());
    const SecureBytes zero_psk(hash_size, 0);
    SIM_TRY(auto secrets, derive_epoch_secrets(m_secrets.init_secret, commit_secret, zero_psk, encoded_next));
    const auto tag = mac(secrets.confirmation_key, next.confirmed_transcript_hash);
    if (!constant_time_equal(tag, ac->auth.confirmation_tag)) {
        return Error{Errc::auth_failed, "confirmation tag does not verify"};
    }
    SIM_TRY(auto interim, interim_transcript_hash(next.confirmed_transcript_hash, ac->auth.confirmation_tag));
    SIM_TRY(auto secret_tree, SecretTree::create(secrets.encryption_secret, tree.leaf_count()));

    // Commit the new epoch.
    m_context = std::move(next);
    m_tree = std::move(tree);
    m_secrets = std::move(secrets);
    m_private = std::move(priv);
    m_interim_transcript_hash = std::move(interim);
    m_secret_tree = std::move(secret_tree);
    m_proposals.clear();
    m_pending_updates.clear();
    return ok();
}

Result<GroupState> GroupState::create(Bytes group_id, LeafNode own_leaf, SecureBytes encryption_private,
                                      const CredentialValidator& credentials, Rng& rng) {
    if (group_id.empty() || group_id.size() > max_group_id_size) {
        return Error{Errc::invalid_argument, "group id must be 1..256 bytes"};
    }
    const auto pair = crypto::x25519_from_private(encryption_private);
    if (!pair || !constant_time_equal(pair->public_key, own_leaf.encryption_key)) {
        return Error{Errc::invalid_argument, "encryption private key does not match the leaf"};
    }
    // A one-leaf tree: its encoding is the single leaf.
    TlsWriter nodes;
    nodes.u8(1);
    nodes.u8(1);  // node type leaf
    SIM_TRY_STATUS(own_leaf.encode_into(nodes));
    TlsWriter tree_bytes;
    SIM_TRY_STATUS(tree_bytes.vector(nodes.bytes()));
    SIM_TRY(auto tree, RatchetTree::decode(tree_bytes.bytes()));

    JoinedGroup g;
    g.context.group_id = std::move(group_id);
    g.context.epoch = 0;
    SIM_TRY(g.context.tree_hash, tree.tree_hash(0));
    SIM_TRY(const auto encoded, g.context.encode());
    // s8: epoch 0 starts from a fresh random init secret, no commit secret and no PSK.
    const auto init_secret = rng.secure_bytes(hash_size);
    const SecureBytes zero(hash_size, 0);
    SIM_TRY(g.secrets, derive_epoch_secrets(init_secret, zero, zero, encoded));
    const auto tag = mac(g.secrets.confirmation_key, g.context.confirmed_transcript_hash);
    SIM_TRY(g.interim_transcript_hash, interim_transcript_hash(g.context.confirmed_transcript_hash, tag));
    g.own_leaf = 0;
    g.own_private.leaf = 0;
    g.own_private.leaf_private = std::move(encryption_private);
    g.tree = std::move(tree);
    return from_join(std::move(g), credentials);
}

Result<GroupState::CommitOutput> GroupState::commit(const std::vector<KeyPackage>& adds,
                                                    const std::vector<std::uint32_t>& removes,
                                                    ByteView signature_private, Rng& rng) {
    if (!m_member) {
        return Errc::invalid_state;
    }
    // The proposals, applied to a copy of the tree in the receivers' order: updates, removes, adds; the cached ones
    // by reference first (our own Update is left out: a committer refreshes its leaf with the path instead).
    RatchetTree tree = m_tree;
    TlsWriter list;
    std::set<std::uint32_t> removed;
    std::vector<std::pair<const Bytes*, const CachedProposal*>> by_ref;
    for (const auto& [ref, cp] : m_proposals) {
        if (cp.proposal.type == ProposalType::update && cp.sender.index == m_own_leaf) {
            continue;
        }
        by_ref.emplace_back(&ref, &cp);
    }
    for (const auto& [ref, cp] : by_ref) {
        if (cp->proposal.type == ProposalType::update) {
            SIM_TRY_STATUS(tree.update_leaf(cp->sender.index, *cp->proposal.update));
        }
    }
    for (const auto& [ref, cp] : by_ref) {
        if (cp->proposal.type == ProposalType::remove) {
            if (cp->proposal.removed == m_own_leaf || !removed.insert(cp->proposal.removed).second) {
                return Error{Errc::invalid_argument, "a cached proposal removes us or a leaf twice"};
            }
            SIM_TRY_STATUS(tree.remove_leaf(cp->proposal.removed));
        }
    }
    for (const auto& [ref, cp] : by_ref) {
        list.u8(2);
        SIM_TRY_STATUS(list.vector(*ref));
    }
    for (const auto leaf : removes) {
        if (leaf == m_own_leaf || !removed.insert(leaf).second) {
            return Error{Errc::invalid_argument, "cannot remove ourselves or a leaf twice"};
        }
        SIM_TRY_STATUS(tree.remove_leaf(leaf));
        list.u8(1);
        list.u16(static_cast<std::uint16_t>(ProposalType::remove));
        list.u32(leaf);
    }
    std::vector<std::pair<std::uint32_t, const KeyPackage*>> added;
    std::set<std::uint32_t> added_leaves;
    for (const auto& [ref, cp] : by_ref) {
        if (cp->proposal.type == ProposalType::add) {
            SIM_TRY_STATUS(validate_add(*cp->proposal.add, tree));
            SIM_TRY(const auto index, tree.add_leaf(cp->proposal.add->leaf_node));
            added.emplace_back(index, &*cp->proposal.add);
            added_leaves.insert(index);
        }
    }
    for (const auto& kp : adds) {
        SIM_TRY_STATUS(validate_add(kp, tree));
        SIM_TRY(const auto index, tree.add_leaf(kp.leaf_node));
        added.emplace_back(index, &kp);
        added_leaves.insert(index);
        list.u8(1);
        list.u16(static_cast<std::uint16_t>(ProposalType::add));
        SIM_TRY_STATUS(kp.encode_into(list));
    }

    // The UpdatePath under the provisional GroupContext (new epoch, old confirmed transcript hash).
    GroupContext provisional = m_context;
    provisional.epoch = m_context.epoch + 1;
    SIM_TRY(auto created, create_update_path(tree, m_own_leaf, signature_private, provisional, rng, added_leaves));

    TlsWriter commit_body;
    SIM_TRY_STATUS(commit_body.vector(list.bytes()));
    commit_body.u8(1);
    SIM_TRY_STATUS(created.path.encode_into(commit_body));

    FramedContent fc;
    fc.group_id = m_context.group_id;
    fc.epoch = m_context.epoch;
    fc.sender = Sender{SenderType::member, m_own_leaf};
    fc.content_type = ContentType::commit;
    fc.content = std::move(commit_body).bytes();
    // The signature does not cover the confirmation tag, which needs the new epoch: sign with a placeholder first.
    SIM_TRY(auto ac,
            sign_content(WireFormat::public_message, std::move(fc), m_context, signature_private, Bytes(hash_size, 0)));

    GroupContext next = provisional;
    next.tree_hash = created.tree_hash;
    SIM_TRY(next.confirmed_transcript_hash, confirmed_transcript_hash(m_interim_transcript_hash, ac));
    SIM_TRY(const auto encoded_next, next.encode());
    const SecureBytes zero_psk(hash_size, 0);
    SIM_TRY(auto secrets, derive_epoch_secrets(m_secrets.init_secret, created.commit_secret, zero_psk, encoded_next));
    const auto tag = mac(secrets.confirmation_key, next.confirmed_transcript_hash);
    ac.auth.confirmation_tag = to_bytes(tag);
    SIM_TRY(auto interim, interim_transcript_hash(next.confirmed_transcript_hash, tag));

    CommitOutput out;
    SIM_TRY(out.message, protect_public(ac, m_context, m_secrets.membership_key));

    if (!added.empty()) {
        GroupInfo gi;
        gi.group_context = next;
        SIM_TRY(const auto tree_ext, created.tree.encode());
        gi.extensions.push_back(Extension{extension_ratchet_tree, tree_ext});
        gi.confirmation_tag = to_bytes(tag);
        SIM_TRY_STATUS(sign_group_info(gi, m_own_leaf, signature_private));
        std::vector<WelcomeRecipient> recipients;
        const auto own_node = tree::leaf_to_node(m_own_leaf);
        for (const auto& [index, kp] : added) {
            // The path secret of the lowest common ancestor of us and the new member.
            auto x = own_node;
            const auto new_node = tree::leaf_to_node(index);
            while (true) {
                const auto span = (1U << tree::level(x)) - 1;
                if (new_node >= x - span && new_node <= x + span) {
                    break;
                }
                x = *tree::parent(x, created.tree.leaf_count());
            }
            const auto it = created.priv.path_secrets.find(x);
            if (it == created.priv.path_secrets.end()) {
                return Error{Errc::internal, "no path secret for a new member's common ancestor"};
            }
            recipients.push_back(WelcomeRecipient{*kp, it->second});
        }
        SIM_TRY(out.welcome, create_welcome(gi, secrets.joiner_secret, recipients, rng));
    }
    SIM_TRY(auto secret_tree, SecretTree::create(secrets.encryption_secret, created.tree.leaf_count()));

    m_context = std::move(next);
    m_tree = std::move(created.tree);
    m_secrets = std::move(secrets);
    m_private = std::move(created.priv);
    m_interim_transcript_hash = std::move(interim);
    m_secret_tree = std::move(secret_tree);
    m_proposals.clear();
    m_pending_updates.clear();
    return out;
}

Result<SecureBytes> GroupState::export_secret(ByteView label, ByteView context, std::size_t length) const {
    if (!m_member) {
        return Errc::invalid_state;
    }
    return mls_exporter(m_secrets.exporter_secret, label, context, length);
}

Result<Bytes> GroupState::propose_update(ByteView signature_private, Rng& rng) {
    if (!m_member) {
        return Errc::invalid_state;
    }
    const auto fresh = crypto::x25519_generate(rng);
    LeafNode leaf = *m_tree.leaf(m_own_leaf);
    leaf.encryption_key = fresh.public_key;
    leaf.source = LeafNodeSource::update;
    leaf.parent_hash.clear();
    leaf.not_before = 0;
    leaf.not_after = 0;
    SIM_TRY_STATUS(leaf.sign(signature_private, m_context.group_id, m_own_leaf));
    TlsWriter body;
    body.u16(static_cast<std::uint16_t>(ProposalType::update));
    SIM_TRY_STATUS(leaf.encode_into(body));
    FramedContent fc;
    fc.group_id = m_context.group_id;
    fc.epoch = m_context.epoch;
    fc.sender = Sender{SenderType::member, m_own_leaf};
    fc.content_type = ContentType::proposal;
    fc.content = std::move(body).bytes();
    SIM_TRY(const auto ac, sign_content(WireFormat::public_message, std::move(fc), m_context, signature_private));
    SIM_TRY(auto message, protect_public(ac, m_context, m_secrets.membership_key));
    SIM_TRY(const auto encoded, ac.encode());
    SIM_TRY(auto ref, ref_hash("MLS 1.0 Proposal Reference", encoded));
    SIM_TRY_STATUS(cache_proposal(message));
    m_pending_updates.insert_or_assign(std::move(ref), fresh.private_key);
    return message;
}

Result<Bytes> GroupState::encrypt_application(ByteView plaintext, ByteView signature_private, Rng& rng) {
    if (!m_member) {
        return Errc::invalid_state;
    }
    FramedContent fc;
    fc.group_id = m_context.group_id;
    fc.epoch = m_context.epoch;
    fc.sender = Sender{SenderType::member, m_own_leaf};
    fc.content_type = ContentType::application;
    fc.content = to_bytes(plaintext);
    SIM_TRY(const auto ac, sign_content(WireFormat::private_message, std::move(fc), m_context, signature_private));
    return protect_private(ac, m_context, m_secret_tree, m_secrets.sender_data_secret, rng.bytes(4), 0);
}

Result<Bytes> GroupState::decrypt_application(ByteView message) {
    if (!m_member) {
        return Errc::invalid_state;
    }
    const auto saved = m_secret_tree;
    auto ac = unprotect(message);
    if (!ac || ac->content.content_type != ContentType::application) {
        m_secret_tree = saved;
        return ac ? Error{Errc::bad_field, "not application data"} : std::move(ac).error();
    }
    return std::move(ac->content.content);
}

}  // namespace sim::mls
