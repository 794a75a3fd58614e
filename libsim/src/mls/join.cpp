// RFC 9420 s12.4.3.1: joining via a Welcome.
#include "join.h"

#include "framing.h"
#include "primitives.h"
#include "tree_math.h"

#include <sim/crypto.h>

#include <algorithm>

namespace sim::mls {

namespace {

// The lowest common ancestor of two distinct leaves (node indices).
std::uint32_t common_ancestor(std::uint32_t a_node, std::uint32_t b_node, std::uint32_t n_leaves) {
    auto x = a_node;
    while (true) {
        const auto k = tree::level(x);
        const std::uint32_t span = (1U << k) - 1;
        if (b_node >= x - span && b_node <= x + span) {
            return x;
        }
        x = *tree::parent(x, n_leaves);
    }
}

}  // namespace

Result<JoinedGroup> join_from_welcome(const Welcome& welcome, const JoinKeys& keys,
                                      const std::optional<Bytes>& ratchet_tree,
                                      const CredentialValidator& credentials) {
    SIM_TRY(const auto group_secrets, decrypt_group_secrets(welcome, keys.key_package, keys.init_private));
    SIM_TRY(auto group_info, decrypt_group_info(welcome, group_secrets.joiner_secret));

    // The tree: given out of band, or in the GroupInfo.
    std::optional<RatchetTree> tree;
    if (ratchet_tree) {
        SIM_TRY(tree, RatchetTree::decode(*ratchet_tree));
    } else {
        for (const auto& e : group_info.extensions) {
            if (e.type == extension_ratchet_tree) {
                SIM_TRY(tree, RatchetTree::decode(e.data));
            }
        }
    }
    if (!tree) {
        return Error{Errc::invalid_argument, "no ratchet tree given and none in the GroupInfo"};
    }
    const auto& gc = group_info.group_context;
    const auto n_leaves = tree->leaf_count();

    // GroupInfo signature by its signer's leaf.
    if (group_info.signer >= n_leaves || !tree->leaf(group_info.signer)) {
        return Error{Errc::bad_field, "GroupInfo signer is not a member"};
    }
    if (!group_info.verify(tree->leaf(group_info.signer)->signature_key)) {
        return Error{Errc::auth_failed, "GroupInfo signature does not verify"};
    }
    // The tree: hash, parent hashes, every leaf.
    SIM_TRY(const auto root_hash, tree->tree_hash(tree::root(n_leaves)));
    if (!constant_time_equal(root_hash, gc.tree_hash)) {
        return Error{Errc::auth_failed, "ratchet tree does not match the GroupContext's tree hash"};
    }
    SIM_TRY_STATUS(tree->verify_parent_hashes());
    for (std::uint32_t i = 0; i < n_leaves; ++i) {
        if (!tree->leaf(i)) {
            continue;
        }
        LeafNodeContext ctx;
        ctx.expected_source = tree->leaf(i)->source;
        ctx.group_id = gc.group_id;
        ctx.leaf_index = i;
        ctx.tree = &*tree;
        ctx.replaces = i;
        ctx.in_tree = true;
        SIM_TRY_STATUS(validate_leaf_node(*tree->leaf(i), ctx, credentials));
    }

    // Our own leaf: the KeyPackage's leaf node.
    JoinedGroup joined;
    bool found = false;
    for (std::uint32_t i = 0; i < n_leaves; ++i) {
        if (tree->leaf(i) && *tree->leaf(i) == keys.key_package.leaf_node) {
            joined.own_leaf = i;
            found = true;
            break;
        }
    }
    if (!found) {
        return Error{Errc::invalid_argument, "our KeyPackage's leaf is not in the tree"};
    }
    joined.own_private.leaf = joined.own_leaf;
    joined.own_private.leaf_private = keys.encryption_private;

    // The path secret: the common ancestor of us and the committer (the signer), then up its filtered direct path.
    if (group_secrets.path_secret) {
        if (group_info.signer == joined.own_leaf) {
            return Error{Errc::bad_field, "a path secret from ourselves"};
        }
        const auto ancestor =
            common_ancestor(tree::leaf_to_node(joined.own_leaf), tree::leaf_to_node(group_info.signer), n_leaves);
        const auto fdp = tree->filtered_direct_path(group_info.signer);
        auto it = std::find(fdp.begin(), fdp.end(), ancestor);
        if (it == fdp.end()) {
            return Error{Errc::bad_field, "the common ancestor is not on the committer's path"};
        }
        SecureBytes secret = *group_secrets.path_secret;
        for (; it != fdp.end(); ++it) {
            joined.own_private.path_secrets.emplace(*it, secret);
            SIM_TRY(secret, derive_secret(secret, "path"));
        }
    }
    if (!private_state_consistent(*tree, joined.own_private)) {
        return Error{Errc::auth_failed, "our private keys do not match the tree"};
    }

    // The key schedule and the confirmation tag.
    SIM_TRY(const auto encoded_context, gc.encode());
    const SecureBytes zero_psk(hash_size, 0);
    SIM_TRY(joined.secrets, derive_epoch_secrets_from_joiner(group_secrets.joiner_secret, zero_psk, encoded_context));
    const auto tag = mac(joined.secrets.confirmation_key, gc.confirmed_transcript_hash);
    if (!constant_time_equal(tag, group_info.confirmation_tag)) {
        return Error{Errc::auth_failed, "GroupInfo confirmation tag does not verify"};
    }
    SIM_TRY(joined.interim_transcript_hash, interim_transcript_hash(gc.confirmed_transcript_hash, tag));
    joined.context = gc;
    joined.tree = std::move(*tree);
    return joined;
}

}  // namespace sim::mls
