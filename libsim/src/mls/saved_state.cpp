// The saved-state encoding of a member's group state (docs/protocol.md 7.6): the secret tree with its ratchets and
// the GroupState. Everything written here is secret, so it goes through SecureTlsWriter; everything read is
// bounded and checked, since a saved state comes back from storage the core does not control.
#include "group_state.h"
#include "primitives.h"
#include "secret_tree.h"
#include "tree_math.h"

#include <sim/crypto.h>

#include <algorithm>
#include <utility>

namespace sim::mls {

namespace {

/// The epoch secrets in their saved order.
constexpr SecureBytes EpochSecrets::*epoch_secret_fields[] = {
    &EpochSecrets::joiner_secret,       &EpochSecrets::welcome_secret,    &EpochSecrets::epoch_secret,
    &EpochSecrets::sender_data_secret,  &EpochSecrets::encryption_secret, &EpochSecrets::exporter_secret,
    &EpochSecrets::epoch_authenticator, &EpochSecrets::external_secret,   &EpochSecrets::confirmation_key,
    &EpochSecrets::membership_key,      &EpochSecrets::resumption_psk,    &EpochSecrets::init_secret,
};

/// `Entry list<V>` of the entries of `map`, each written by `write_entry(writer, key, value)`.
template <typename Map, typename WriteEntry>
Status write_list(SecureTlsWriter& w, const Map& map, WriteEntry write_entry) {
    SecureTlsWriter list;
    for (const auto& [key, value] : map) {
        SIM_TRY_STATUS(write_entry(list, key, value));
    }
    return w.vector(list.bytes());
}

/// Read an `Entry list<V>` into the empty `map`, each entry by `read_entry(reader)` -> Result<pair<key, value>>:
/// at most `max_entries`, keys strictly increasing (one encoding per state, no duplicates). Errc::bad_field.
template <typename Map, typename ReadEntry>
Status read_list(TlsReader& r, Map& map, std::size_t max_entries, ReadEntry read_entry) {
    SIM_TRY(auto list, r.sub_reader(max_saved_state_size));
    while (!list.empty()) {
        SIM_TRY(auto entry, read_entry(list));
        if (map.size() >= max_entries || (!map.empty() && !(map.rbegin()->first < entry.first))) {
            return Error{Errc::bad_field, "saved list too long or not in increasing order"};
        }
        map.emplace_hint(map.end(), std::move(entry.first), std::move(entry.second));
    }
    return ok();
}

/// `struct { uint32 index; opaque secret<V>; }`: a node secret of the secret tree or a path secret.
Status write_indexed_secret(SecureTlsWriter& w, std::uint32_t index, const SecureBytes& secret) {
    w.u32(index);
    return w.vector(secret);
}

Result<std::pair<std::uint32_t, SecureBytes>> read_indexed_secret(TlsReader& r) {
    SIM_TRY(const auto index, r.u32());
    SIM_TRY(const auto secret, r.exact_vector(hash_size));
    return std::pair{index, to_bytes<SecureBytes>(secret)};
}

}  // namespace

Status HashRatchet::save(SecureTlsWriter& w) const {
    SIM_TRY_STATUS(w.vector(m_secret));
    w.u32(m_next);
    w.u8(m_exhausted ? 1 : 0);
    return write_list(w, m_skipped, [](SecureTlsWriter& l, std::uint32_t generation, const KeyAndNonce& kn) -> Status {
        l.u32(generation);
        SIM_TRY_STATUS(l.vector(kn.key));
        return l.vector(kn.nonce);
    });
}

Result<HashRatchet> HashRatchet::load(TlsReader& r) {
    SIM_TRY(const auto secret, r.vector(hash_size));
    SIM_TRY(const auto next, r.u32());
    SIM_TRY(const bool exhausted, r.optional());
    if (secret.size() != (exhausted ? 0 : hash_size)) {
        return Error{Errc::bad_length, "saved ratchet secret of the wrong size"};
    }
    HashRatchet h(to_bytes<SecureBytes>(secret));
    h.m_next = next;
    h.m_exhausted = exhausted;
    SIM_TRY_STATUS(read_list(r, h.m_skipped, max_skipped_keys,
                             [next](TlsReader& l) -> Result<std::pair<std::uint32_t, KeyAndNonce>> {
                                 KeyAndNonce kn;
                                 SIM_TRY(kn.generation, l.u32());
                                 SIM_TRY(const auto key, l.exact_vector(aead_key_size));
                                 SIM_TRY(const auto nonce, l.exact_vector(aead_nonce_size));
                                 if (kn.generation >= next) {
                                     return Error{Errc::bad_field, "saved skipped key not below the next generation"};
                                 }
                                 kn.key = to_bytes<SecureBytes>(key);
                                 kn.nonce = to_bytes<SecureBytes>(nonce);
                                 return std::pair{kn.generation, std::move(kn)};
                             }));
    return h;
}

Status SecretTree::save(SecureTlsWriter& w) const {
    w.u32(m_leaves);
    SIM_TRY_STATUS(write_list(w, m_nodes, write_indexed_secret));
    for (const auto* ratchets : {&m_handshake, &m_application}) {
        SIM_TRY_STATUS(write_list(w, *ratchets, [](SecureTlsWriter& l, std::uint32_t leaf, const HashRatchet& h) {
            l.u32(leaf);
            return h.save(l);
        }));
    }
    return ok();
}

Result<SecretTree> SecretTree::load(TlsReader& r) {
    SIM_TRY(const auto leaves, r.u32());
    if (leaves == 0 || leaves > tree::max_leaves || (leaves & (leaves - 1)) != 0) {
        return Error{Errc::bad_field, "saved secret tree size is not a power of two"};
    }
    SecretTree t({}, leaves);
    t.m_nodes.clear();
    const auto node_count = tree::node_width(leaves);
    SIM_TRY_STATUS(read_list(r, t.m_nodes, node_count, read_indexed_secret));
    if (!t.m_nodes.empty() && t.m_nodes.rbegin()->first >= node_count) {
        return Error{Errc::bad_field, "saved secret tree node outside the tree"};
    }
    for (auto* ratchets : {&t.m_handshake, &t.m_application}) {
        SIM_TRY_STATUS(
            read_list(r, *ratchets, leaves, [leaves](TlsReader& l) -> Result<std::pair<std::uint32_t, HashRatchet>> {
                SIM_TRY(const auto leaf, l.u32());
                if (leaf >= leaves) {
                    return Error{Errc::bad_field, "saved ratchet of a leaf outside the secret tree"};
                }
                SIM_TRY(auto h, HashRatchet::load(l));
                return std::pair{leaf, std::move(h)};
            }));
    }
    // derive_leaf creates both ratchets of a leaf at once.
    const auto same_leaves = [](const auto& a, const auto& b) {
        return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                                  [](const auto& x, const auto& y) { return x.first == y.first; });
    };
    if (!same_leaves(t.m_handshake, t.m_application)) {
        return Error{Errc::bad_field, "saved secret tree with a leaf's ratchets missing"};
    }
    return t;
}

Status GroupState::save(SecureTlsWriter& w) const {
    if (!m_member) {
        return Errc::invalid_state;
    }
    SIM_TRY(const auto context, m_context.encode());
    SIM_TRY_STATUS(w.vector(context));
    SIM_TRY(const auto tree, m_tree.encode());
    SIM_TRY_STATUS(w.vector(tree));
    w.u32(m_own_leaf);
    for (const auto field : epoch_secret_fields) {
        SIM_TRY_STATUS(w.vector(m_secrets.*field));
    }
    SIM_TRY_STATUS(w.vector(m_private.leaf_private));
    SIM_TRY_STATUS(write_list(w, m_private.path_secrets, write_indexed_secret));
    SIM_TRY_STATUS(w.vector(m_interim_transcript_hash));
    SIM_TRY_STATUS(m_secret_tree.save(w));
    // Cached proposals come from members only (unprotect refuses other senders): their leaf index is enough.
    SIM_TRY_STATUS(write_list(w, m_proposals, [](SecureTlsWriter& l, const Bytes& ref, const CachedProposal& cp) {
        l.u32(cp.sender.index);
        l.raw(cp.proposal.encoding);
        return l.vector(ref);
    }));
    return write_list(w, m_pending_updates, [](SecureTlsWriter& l, const Bytes& ref, const SecureBytes& key) -> Status {
        SIM_TRY_STATUS(l.vector(ref));
        return l.vector(key);
    });
}

Result<GroupState> GroupState::load(TlsReader& r, const CredentialValidator& credentials) {
    JoinedGroup g;
    SIM_TRY(const auto context, r.vector());
    SIM_TRY(g.context, GroupContext::decode(context));
    SIM_TRY(const auto tree, r.vector(max_ratchet_tree_size));
    SIM_TRY(g.tree, RatchetTree::decode(tree));
    SIM_TRY(g.own_leaf, r.u32());
    for (const auto field : epoch_secret_fields) {
        SIM_TRY(const auto secret, r.exact_vector(hash_size));
        g.secrets.*field = to_bytes<SecureBytes>(secret);
    }
    g.own_private.leaf = g.own_leaf;
    SIM_TRY(const auto leaf_private, r.exact_vector(crypto::hpke_private_key_size));
    g.own_private.leaf_private = to_bytes<SecureBytes>(leaf_private);
    SIM_TRY_STATUS(read_list(r, g.own_private.path_secrets, g.tree.node_count(), read_indexed_secret));
    SIM_TRY(const auto interim, r.exact_vector(hash_size));
    g.interim_transcript_hash = to_bytes(interim);
    SIM_TRY(auto secret_tree, SecretTree::load(r));
    std::map<Bytes, CachedProposal> proposals;
    SIM_TRY_STATUS(
        read_list(r, proposals, max_cached_proposals, [](TlsReader& l) -> Result<std::pair<Bytes, CachedProposal>> {
            CachedProposal cp;
            SIM_TRY(cp.sender.index, l.u32());
            SIM_TRY(cp.proposal, decode_proposal(l));
            SIM_TRY(const auto ref, l.exact_vector(hash_size));
            return std::pair{to_bytes(ref), std::move(cp)};
        }));
    std::map<Bytes, SecureBytes> pending;
    SIM_TRY_STATUS(
        read_list(r, pending, max_cached_proposals, [](TlsReader& l) -> Result<std::pair<Bytes, SecureBytes>> {
            SIM_TRY(const auto ref, l.exact_vector(hash_size));
            SIM_TRY(const auto key, l.exact_vector(crypto::hpke_private_key_size));
            return std::pair{to_bytes(ref), to_bytes<SecureBytes>(key)};
        }));

    // One consistent state: the tree is the one the GroupContext commits to, we are in it with keys that match it,
    // the secret tree covers it, cached proposals come from its members.
    SIM_TRY(const auto tree_hash, g.tree.tree_hash(tree::root(g.tree.leaf_count())));
    if (!constant_time_equal(tree_hash, g.context.tree_hash)) {
        return Error{Errc::bad_field, "saved tree does not match the saved group context"};
    }
    if (g.own_leaf >= g.tree.leaf_count() || !g.tree.leaf(g.own_leaf)) {
        return Error{Errc::bad_field, "saved own leaf is not a member of the saved tree"};
    }
    if (!private_state_consistent(g.tree, g.own_private)) {
        return Error{Errc::invalid_key, "saved private keys do not match the saved tree"};
    }
    if (secret_tree.leaves() != g.tree.leaf_count()) {
        return Error{Errc::bad_field, "saved secret tree size does not match the saved tree"};
    }
    for (const auto& [ref, cp] : proposals) {
        if (cp.sender.index >= g.tree.leaf_count() || !g.tree.leaf(cp.sender.index)) {
            return Error{Errc::bad_field, "saved proposal from a leaf that is not a member"};
        }
    }
    for (const auto& [ref, key] : pending) {
        if (proposals.count(ref) == 0) {
            return Error{Errc::bad_field, "saved pending update without its proposal"};
        }
    }
    GroupState st(std::move(g), std::move(secret_tree), credentials);
    st.m_proposals = std::move(proposals);
    st.m_pending_updates = std::move(pending);
    return st;
}

}  // namespace sim::mls
