// RFC 9420 s9: secret tree, hash ratchets with a bounded window; s6.3.2 sender-data keys.
#include "secret_tree.h"

#include "primitives.h"
#include "tree_math.h"

#include <algorithm>
#include <limits>

namespace sim::mls {

Result<KeyAndNonce> HashRatchet::derive_current() const {
    KeyAndNonce kn;
    kn.generation = m_next;
    SIM_TRY(kn.key, derive_tree_secret(m_secret, "key", m_next, aead_key_size));
    SIM_TRY(kn.nonce, derive_tree_secret(m_secret, "nonce", m_next, aead_nonce_size));
    return kn;
}

Status HashRatchet::advance() {
    if (m_next == std::numeric_limits<std::uint32_t>::max()) {
        // The last generation is used; no further secret is derived and the current one is wiped.
        m_exhausted = true;
        m_secret.clear();
        m_secret.shrink_to_fit();
        return ok();
    }
    SIM_TRY(auto next_secret, derive_tree_secret(m_secret, "secret", m_next, hash_size));
    m_secret = std::move(next_secret);  // the old secret's buffer is zeroed on release
    ++m_next;
    return ok();
}

Result<KeyAndNonce> HashRatchet::next() {
    if (m_exhausted) {
        return Error{Errc::limit_reached, "ratchet generations exhausted"};
    }
    SIM_TRY(auto kn, derive_current());
    SIM_TRY_STATUS(advance());
    return kn;
}

Result<KeyAndNonce> HashRatchet::get(std::uint32_t generation) {
    if (generation < m_next || (m_exhausted && generation == m_next)) {
        const auto it = m_skipped.find(generation);
        if (it == m_skipped.end()) {
            return Error{Errc::replayed, "ratchet generation already used or dropped"};
        }
        auto kn = std::move(it->second);
        m_skipped.erase(it);
        return kn;
    }
    if (m_exhausted) {
        return Error{Errc::limit_reached, "ratchet generations exhausted"};
    }
    if (generation - m_next > max_generation_jump) {
        return Error{Errc::out_of_window, "ratchet generation too far ahead"};
    }
    while (m_next < generation) {
        SIM_TRY(auto skipped, derive_current());
        m_skipped.emplace(skipped.generation, std::move(skipped));
        if (m_skipped.size() > max_skipped_keys) {
            m_skipped.erase(m_skipped.begin());  // the oldest skipped key
        }
        SIM_TRY_STATUS(advance());
    }
    return next();
}

SecretTree::SecretTree(SecureBytes root, std::uint32_t n_leaves) : m_leaves(n_leaves) {
    m_nodes.emplace(tree::root(n_leaves), std::move(root));
}

Result<SecretTree> SecretTree::create(ByteView encryption_secret, std::uint32_t n_leaves) {
    if (encryption_secret.size() != hash_size) {
        return Error{Errc::invalid_argument, "encryption_secret must be Nh bytes"};
    }
    if (n_leaves == 0 || n_leaves > tree::max_leaves || (n_leaves & (n_leaves - 1)) != 0) {
        return Error{Errc::invalid_argument, "secret tree size must be a power of two"};
    }
    return SecretTree(to_bytes<SecureBytes>(encryption_secret), n_leaves);
}

Status SecretTree::derive_leaf(std::uint32_t leaf) {
    const auto leaf_node = tree::leaf_to_node(leaf);
    // The nodes from the leaf up to the root; find the lowest one that still holds a secret.
    std::vector<std::uint32_t> path{leaf_node};
    for (const auto p : tree::direct_path(leaf_node, m_leaves)) {
        path.push_back(p);
    }
    std::size_t top = 0;
    while (top < path.size() && m_nodes.count(path[top]) == 0) {
        ++top;
    }
    if (top == path.size()) {
        return Error{Errc::internal, "secret tree path already consumed"};
    }
    // Derive down to the leaf: both children of each node, then erase the node (s9.2).
    for (std::size_t i = top; i > 0; --i) {
        const auto node = path[i];
        const auto l = *tree::left(node);
        const auto r = *tree::right(node);
        const auto& secret = m_nodes.at(node);
        SIM_TRY(auto left_secret, expand_with_label(secret, "tree", as_bytes("left"), hash_size));
        SIM_TRY(auto right_secret, expand_with_label(secret, "tree", as_bytes("right"), hash_size));
        m_nodes.erase(node);
        m_nodes.insert_or_assign(l, std::move(left_secret));
        m_nodes.insert_or_assign(r, std::move(right_secret));
    }
    const auto leaf_it = m_nodes.find(leaf_node);
    SIM_TRY(auto handshake, expand_with_label(leaf_it->second, "handshake", {}, hash_size));
    SIM_TRY(auto application, expand_with_label(leaf_it->second, "application", {}, hash_size));
    m_nodes.erase(leaf_it);
    m_handshake.emplace(leaf, HashRatchet(std::move(handshake)));
    m_application.emplace(leaf, HashRatchet(std::move(application)));
    return ok();
}

Result<HashRatchet*> SecretTree::ratchet(std::uint32_t leaf, RatchetKind kind) {
    if (leaf >= m_leaves) {
        return Error{Errc::invalid_argument, "leaf outside the secret tree"};
    }
    auto& ratchets = kind == RatchetKind::handshake ? m_handshake : m_application;
    auto it = ratchets.find(leaf);
    if (it == ratchets.end()) {
        SIM_TRY_STATUS(derive_leaf(leaf));
        it = ratchets.find(leaf);
    }
    return &it->second;
}

Result<KeyAndNonce> sender_data_key_nonce(ByteView sender_data_secret, ByteView ciphertext) {
    if (sender_data_secret.size() != hash_size) {
        return Error{Errc::invalid_argument, "sender_data_secret must be Nh bytes"};
    }
    const auto sample = ciphertext.first(std::min(ciphertext.size(), hash_size));
    KeyAndNonce kn;
    SIM_TRY(kn.key, expand_with_label(sender_data_secret, "key", sample, aead_key_size));
    SIM_TRY(kn.nonce, expand_with_label(sender_data_secret, "nonce", sample, aead_nonce_size));
    return kn;
}

}  // namespace sim::mls
