// RFC 9420 s7.4-s7.6 and s12.4.2: TreeKEM UpdatePaths.
#include "treekem.h"

#include "framing.h"
#include "tree_math.h"

#include <sim/crypto.h>

#include <algorithm>

namespace sim::mls {

namespace {

constexpr std::string_view update_path_label = "UpdatePathNode";

// The child of `parent` that is not an ancestor of (or equal to) `leaf_node`.
std::uint32_t copath_child(std::uint32_t parent, std::uint32_t leaf_node) {
    const auto l = *tree::left(parent);
    return leaf_node < parent ? *tree::right(parent) : l;
}

bool in_subtree(std::uint32_t node, std::uint32_t root_of_subtree) {
    const auto k = tree::level(root_of_subtree);
    const std::uint32_t span = (1U << k) - 1;
    return node >= root_of_subtree - span && node <= root_of_subtree + span;
}

std::vector<std::uint32_t> filtered_resolution(const RatchetTree& t, std::uint32_t node,
                                               const std::set<std::uint32_t>& excluded) {
    auto res = t.resolution(node);
    std::erase_if(res, [&](std::uint32_t n) { return n % 2 == 0 && excluded.count(n / 2) != 0; });
    return res;
}

// Blank the sender's direct path, put in the path's keys, compute the parent hashes top-down (s7.9) and return
// the parent hash the sender's leaf must carry.
Result<Bytes> install_path(RatchetTree& t, std::uint32_t sender, const std::vector<std::uint32_t>& fdp,
                           const std::vector<Bytes>& keys) {
    const auto leaf_node = tree::leaf_to_node(sender);
    t.blank_direct_path(sender);
    for (std::size_t i = 0; i < fdp.size(); ++i) {
        t.set_parent(fdp[i], ParentNode{keys[i], {}, {}});
    }
    Bytes above;  // the topmost node's parent_hash is empty
    for (std::size_t i = fdp.size(); i-- > 0;) {
        t.parent_node_mut(fdp[i])->parent_hash = above;
        SIM_TRY(above, t.parent_hash(fdp[i], copath_child(fdp[i], leaf_node)));
    }
    return above;
}

}  // namespace

Status UpdatePath::encode_into(TlsWriter& w) const {
    SIM_TRY_STATUS(leaf_node.encode_into(w));
    TlsWriter list;
    for (const auto& n : nodes) {
        SIM_TRY_STATUS(list.vector(n.encryption_key));
        TlsWriter cts;
        for (const auto& ct : n.encrypted_path_secret) {
            SIM_TRY_STATUS(cts.vector(ct.kem_output));
            SIM_TRY_STATUS(cts.vector(ct.ciphertext));
        }
        SIM_TRY_STATUS(list.vector(cts.bytes()));
    }
    return w.vector(list.bytes());
}

Result<UpdatePath> decode_update_path(TlsReader& r) {
    UpdatePath path;
    SIM_TRY(path.leaf_node, decode_leaf_node(r));
    SIM_TRY(auto nodes, r.sub_reader());
    while (!nodes.empty()) {
        UpdatePathNode n;
        SIM_TRY(const auto key, nodes.vector(max_key_size));
        n.encryption_key = to_bytes(key);
        SIM_TRY(auto cts, nodes.sub_reader());
        while (!cts.empty()) {
            HpkeCiphertext ct;
            SIM_TRY(const auto kem_output, cts.vector(max_key_size));
            ct.kem_output = to_bytes(kem_output);
            SIM_TRY(const auto ciphertext, cts.vector(max_key_size));
            ct.ciphertext = to_bytes(ciphertext);
            n.encrypted_path_secret.push_back(std::move(ct));
        }
        path.nodes.push_back(std::move(n));
    }
    return path;
}

Result<HpkeKeyPair> node_key_pair(ByteView path_secret) {
    SIM_TRY(const auto node_secret, derive_secret(path_secret, "node"));
    return derive_key_pair(node_secret);
}

bool private_state_consistent(const RatchetTree& tree, const TreePrivate& priv) {
    if (priv.leaf >= tree.leaf_count() || !tree.leaf(priv.leaf)) {
        return false;
    }
    const auto leaf_pair = crypto::x25519_from_private(priv.leaf_private);
    if (!leaf_pair || !constant_time_equal(leaf_pair->public_key, tree.leaf(priv.leaf)->encryption_key)) {
        return false;
    }
    for (const auto& [node, secret] : priv.path_secrets) {
        if (node % 2 == 0 || node >= tree.node_count() || tree.blank(node)) {
            return false;
        }
        const auto pair = node_key_pair(secret);
        if (!pair || !constant_time_equal(pair->public_key, tree.parent_node(node)->encryption_key)) {
            return false;
        }
    }
    return true;
}

Status merge_update_path(RatchetTree& tree, std::uint32_t sender, const UpdatePath& path, ByteView group_id) {
    if (sender >= tree.leaf_count() || !tree.leaf(sender)) {
        return Error{Errc::invalid_argument, "UpdatePath from a blank or absent leaf"};
    }
    const auto fdp = tree.filtered_direct_path(sender);
    if (path.nodes.size() != fdp.size()) {
        return Error{Errc::bad_field, "UpdatePath length differs from the filtered direct path"};
    }
    RatchetTree t = tree;
    std::vector<Bytes> keys;
    for (const auto& n : path.nodes) {
        keys.push_back(n.encryption_key);
    }
    SIM_TRY(const auto leaf_parent_hash, install_path(t, sender, fdp, keys));
    const auto& leaf = path.leaf_node;
    if (leaf.source != LeafNodeSource::commit || !constant_time_equal(leaf.parent_hash, leaf_parent_hash)) {
        return Error{Errc::auth_failed, "UpdatePath leaf does not carry the path's parent hash"};
    }
    if (!leaf.verify(group_id, sender)) {
        return Error{Errc::auth_failed, "UpdatePath leaf signature does not verify"};
    }
    t.set_leaf(sender, leaf);
    tree = std::move(t);
    return ok();
}

Result<PathSecrets> decrypt_update_path(const RatchetTree& merged, std::uint32_t sender, const UpdatePath& path,
                                        const TreePrivate& priv, ByteView group_context,
                                        const std::set<std::uint32_t>& excluded) {
    const auto fdp = merged.filtered_direct_path(sender);
    if (path.nodes.size() != fdp.size()) {
        return Error{Errc::bad_field, "UpdatePath length differs from the filtered direct path"};
    }
    const auto sender_node = tree::leaf_to_node(sender);
    const auto my_node = tree::leaf_to_node(priv.leaf);
    // s12.4.2: every node carries one ciphertext per member of its copath child's resolution (new members left out).
    for (std::size_t k = 0; k < fdp.size(); ++k) {
        const auto res = filtered_resolution(merged, copath_child(fdp[k], sender_node), excluded);
        if (path.nodes[k].encrypted_path_secret.size() != res.size()) {
            return Error{Errc::bad_field, "wrong number of encrypted path secrets"};
        }
    }
    for (std::size_t k = 0; k < fdp.size(); ++k) {
        const auto c = copath_child(fdp[k], sender_node);
        if (!in_subtree(my_node, c)) {
            continue;
        }
        // The first node of the copath child's resolution whose private key we hold.
        const auto res = filtered_resolution(merged, c, excluded);
        if (path.nodes[k].encrypted_path_secret.size() != res.size()) {
            return Error{Errc::bad_field, "wrong number of encrypted path secrets"};
        }
        for (std::size_t m = 0; m < res.size(); ++m) {
            SecureBytes private_key;
            if (res[m] == my_node) {
                private_key = priv.leaf_private;
            } else if (const auto it = priv.path_secrets.find(res[m]); it != priv.path_secrets.end()) {
                SIM_TRY(auto pair, node_key_pair(it->second));
                private_key = std::move(pair.private_key);
            } else {
                continue;
            }
            const auto& ct = path.nodes[k].encrypted_path_secret[m];
            SIM_TRY(const auto plain,
                    decrypt_with_label(private_key, update_path_label, group_context, ct.kem_output, ct.ciphertext));
            if (plain.size() != hash_size) {
                return Error{Errc::bad_length, "path secret is not Nh bytes"};
            }
            PathSecrets out;
            out.node = fdp[k];
            out.path_secret = to_bytes<SecureBytes>(plain);
            // s7.4: derive upwards and check every public key of the path.
            SecureBytes secret = out.path_secret;
            for (std::size_t i = k; i < fdp.size(); ++i) {
                SIM_TRY(const auto pair, node_key_pair(secret));
                if (!constant_time_equal(pair.public_key, path.nodes[i].encryption_key)) {
                    return Error{Errc::auth_failed, "path secret does not give the path's public key"};
                }
                SIM_TRY(secret, derive_secret(secret, "path"));
            }
            out.commit_secret = std::move(secret);
            return out;
        }
        return Error{Errc::invalid_argument, "no private key for this UpdatePath"};
    }
    return Error{Errc::invalid_argument, "the receiver is not below the sender's filtered direct path"};
}

Result<CreatedPath> create_update_path(const RatchetTree& tree, std::uint32_t sender, ByteView signature_private,
                                       GroupContext context, Rng& rng, const std::set<std::uint32_t>& excluded) {
    if (sender >= tree.leaf_count() || !tree.leaf(sender)) {
        return Error{Errc::invalid_argument, "UpdatePath from a blank or absent leaf"};
    }
    CreatedPath out{UpdatePath{}, tree, TreePrivate{}, SecureBytes{}, Bytes{}};
    const auto fdp = tree.filtered_direct_path(sender);
    // Path secrets: the first random, each next one DeriveSecret(previous, "path").
    std::vector<SecureBytes> secrets;
    std::vector<Bytes> keys;
    SecureBytes secret = rng.secure_bytes(hash_size);
    for (const auto node : fdp) {
        SIM_TRY(const auto pair, node_key_pair(secret));
        keys.push_back(pair.public_key);
        out.priv.path_secrets.emplace(node, secret);
        secrets.push_back(secret);
        SIM_TRY(secret, derive_secret(secret, "path"));
    }
    out.commit_secret = std::move(secret);

    SIM_TRY(const auto leaf_parent_hash, install_path(out.tree, sender, fdp, keys));
    const auto leaf_pair = crypto::x25519_generate(rng);
    LeafNode leaf = *tree.leaf(sender);
    leaf.encryption_key = leaf_pair.public_key;
    leaf.source = LeafNodeSource::commit;
    leaf.parent_hash = leaf_parent_hash;
    leaf.not_before = 0;
    leaf.not_after = 0;
    SIM_TRY_STATUS(leaf.sign(signature_private, context.group_id, sender));
    out.tree.set_leaf(sender, leaf);
    out.priv.leaf = sender;
    out.priv.leaf_private = leaf_pair.private_key;

    SIM_TRY(out.tree_hash, out.tree.tree_hash(tree::root(out.tree.leaf_count())));
    context.tree_hash = out.tree_hash;
    SIM_TRY(const auto encoded_context, context.encode());
    out.path.leaf_node = std::move(leaf);
    const auto sender_node = tree::leaf_to_node(sender);
    for (std::size_t k = 0; k < fdp.size(); ++k) {
        UpdatePathNode n;
        n.encryption_key = keys[k];
        for (const auto r : filtered_resolution(out.tree, copath_child(fdp[k], sender_node), excluded)) {
            const Bytes& public_key =
                r % 2 == 0 ? out.tree.leaf(r / 2)->encryption_key : out.tree.parent_node(r)->encryption_key;
            SIM_TRY(auto ct, encrypt_with_label(public_key, update_path_label, encoded_context, secrets[k], rng));
            n.encrypted_path_secret.push_back(std::move(ct));
        }
        out.path.nodes.push_back(std::move(n));
    }
    return out;
}

}  // namespace sim::mls
