// RFC 9420 s7 (ratchet tree nodes, tree hash, parent hash), s4.1.1 (resolution), s12.4.3.3 (ratchet_tree).
#include "ratchet_tree.h"

#include "framing.h"
#include "primitives.h"
#include "tree_math.h"

#include <algorithm>

namespace sim::mls {

namespace {

constexpr std::uint8_t node_type_leaf = 1;
constexpr std::uint8_t node_type_parent = 2;
constexpr std::uint16_t credential_basic = 1;
constexpr std::uint16_t credential_x509 = 2;

Status write_u16_list(TlsWriter& w, const std::vector<std::uint16_t>& list) {
    TlsWriter inner;
    for (const auto v : list) {
        inner.u16(v);
    }
    return w.vector(inner.bytes());
}

Result<std::vector<std::uint16_t>> read_u16_list(TlsReader& r) {
    SIM_TRY(auto inner, r.sub_reader(max_extensions_size));
    if (inner.remaining() % 2 != 0) {
        return Error{Errc::bad_field, "list of uint16 with an odd length"};
    }
    std::vector<std::uint16_t> out;
    while (!inner.empty()) {
        SIM_TRY(const auto v, inner.u16());
        out.push_back(v);
    }
    return out;
}

Status encode_leaf_content(TlsWriter& w, const LeafNode& leaf) {
    SIM_TRY_STATUS(w.vector(leaf.encryption_key));
    SIM_TRY_STATUS(w.vector(leaf.signature_key));
    w.u16(leaf.credential.type);
    if (leaf.credential.type == credential_basic) {
        SIM_TRY_STATUS(w.vector(leaf.credential.identity));
    } else if (leaf.credential.type == credential_x509) {
        TlsWriter certs;
        for (const auto& c : leaf.credential.certificates) {
            SIM_TRY_STATUS(certs.vector(c));
        }
        SIM_TRY_STATUS(w.vector(certs.bytes()));
    } else {
        return Error{Errc::invalid_argument, "unknown credential type"};
    }
    for (const auto* list :
         {&leaf.capabilities.versions, &leaf.capabilities.cipher_suites, &leaf.capabilities.extensions,
          &leaf.capabilities.proposals, &leaf.capabilities.credentials}) {
        SIM_TRY_STATUS(write_u16_list(w, *list));
    }
    w.u8(static_cast<std::uint8_t>(leaf.source));
    if (leaf.source == LeafNodeSource::key_package) {
        w.u64(leaf.not_before);
        w.u64(leaf.not_after);
    } else if (leaf.source == LeafNodeSource::commit) {
        SIM_TRY_STATUS(w.vector(leaf.parent_hash));
    }
    Bytes ext;
    SIM_TRY_STATUS(encode_extensions(leaf.extensions, ext));
    w.raw(ext);
    return ok();
}

}  // namespace

Status LeafNode::encode_into(TlsWriter& w) const {
    SIM_TRY_STATUS(encode_leaf_content(w, *this));
    return w.vector(signature);
}

Result<Bytes> LeafNode::to_be_signed(ByteView group_id, std::uint32_t leaf_index) const {
    TlsWriter w;
    SIM_TRY_STATUS(encode_leaf_content(w, *this));
    if (source != LeafNodeSource::key_package) {
        SIM_TRY_STATUS(w.vector(group_id));
        w.u32(leaf_index);
    }
    return std::move(w).bytes();
}

bool LeafNode::verify(ByteView group_id, std::uint32_t leaf_index) const {
    const auto tbs = to_be_signed(group_id, leaf_index);
    return tbs && verify_with_label(signature_key, "LeafNodeTBS", *tbs, signature);
}

Status LeafNode::sign(ByteView signature_private, ByteView group_id, std::uint32_t leaf_index) {
    SIM_TRY(const auto tbs, to_be_signed(group_id, leaf_index));
    SIM_TRY(signature, sign_with_label(signature_private, "LeafNodeTBS", tbs));
    return ok();
}

Result<LeafNode> decode_leaf_node(TlsReader& r) {
    LeafNode leaf;
    SIM_TRY(const auto encryption_key, r.vector(max_key_size));
    leaf.encryption_key = to_bytes(encryption_key);
    SIM_TRY(const auto signature_key, r.vector(max_key_size));
    leaf.signature_key = to_bytes(signature_key);
    SIM_TRY(leaf.credential.type, r.u16());
    if (leaf.credential.type == credential_basic) {
        SIM_TRY(const auto identity, r.vector(max_credential_size));
        leaf.credential.identity = to_bytes(identity);
    } else if (leaf.credential.type == credential_x509) {
        SIM_TRY(auto certs, r.sub_reader(max_credential_size));
        while (!certs.empty()) {
            SIM_TRY(const auto cert, certs.vector(max_credential_size));
            leaf.credential.certificates.push_back(to_bytes(cert));
        }
    } else {
        return Error{Errc::bad_field, "unknown credential type"};
    }
    SIM_TRY(leaf.capabilities.versions, read_u16_list(r));
    SIM_TRY(leaf.capabilities.cipher_suites, read_u16_list(r));
    SIM_TRY(leaf.capabilities.extensions, read_u16_list(r));
    SIM_TRY(leaf.capabilities.proposals, read_u16_list(r));
    SIM_TRY(leaf.capabilities.credentials, read_u16_list(r));
    SIM_TRY(const auto source, r.u8());
    switch (source) {
        case 1: {
            leaf.source = LeafNodeSource::key_package;
            SIM_TRY(leaf.not_before, r.u64());
            SIM_TRY(leaf.not_after, r.u64());
            break;
        }
        case 2:
            leaf.source = LeafNodeSource::update;
            break;
        case 3: {
            leaf.source = LeafNodeSource::commit;
            SIM_TRY(const auto parent_hash, r.vector(hash_size));
            leaf.parent_hash = to_bytes(parent_hash);
            break;
        }
        default:
            return Error{Errc::bad_field, "unknown leaf node source"};
    }
    SIM_TRY(const auto ext, r.vector(max_extensions_size));
    SIM_TRY(leaf.extensions, decode_extensions(ext));
    SIM_TRY(const auto signature, r.vector(max_signature_size));
    leaf.signature = to_bytes(signature);
    return leaf;
}

Status ParentNode::encode_into(TlsWriter& w) const {
    SIM_TRY_STATUS(w.vector(encryption_key));
    SIM_TRY_STATUS(w.vector(parent_hash));
    TlsWriter list;
    for (const auto l : unmerged_leaves) {
        list.u32(l);
    }
    return w.vector(list.bytes());
}

Result<ParentNode> decode_parent_node(TlsReader& r) {
    ParentNode p;
    SIM_TRY(const auto encryption_key, r.vector(max_key_size));
    p.encryption_key = to_bytes(encryption_key);
    SIM_TRY(const auto parent_hash, r.vector(hash_size));
    p.parent_hash = to_bytes(parent_hash);
    SIM_TRY(auto list, r.sub_reader(4 * std::size_t{max_tree_leaves}));
    if (list.remaining() % 4 != 0) {
        return Error{Errc::bad_field, "unmerged_leaves is not a list of uint32"};
    }
    while (!list.empty()) {
        SIM_TRY(const auto l, list.u32());
        p.unmerged_leaves.push_back(l);
    }
    return p;
}

std::uint32_t RatchetTree::node_count() const noexcept {
    return tree::node_width(leaf_count());
}

bool RatchetTree::blank(std::uint32_t node) const {
    return node % 2 == 0 ? !m_leaves[node / 2].has_value() : !m_parents[node / 2].has_value();
}

Result<RatchetTree> RatchetTree::decode(ByteView data) {
    TlsReader outer(data);
    SIM_TRY(auto r, outer.sub_reader(max_ratchet_tree_size));
    SIM_TRY_STATUS(outer.finish());
    RatchetTree t;
    std::uint32_t index = 0;
    bool last_blank = true;
    while (!r.empty()) {
        if (index >= 2 * max_tree_leaves) {
            return Error{Errc::frame_too_large, "ratchet tree has too many nodes"};
        }
        SIM_TRY(const bool present, r.optional());
        const bool is_leaf = index % 2 == 0;
        if (!present) {
            if (is_leaf) {
                t.m_leaves.emplace_back();
            } else {
                t.m_parents.emplace_back();
            }
        } else {
            SIM_TRY(const auto type, r.u8());
            if (type != (is_leaf ? node_type_leaf : node_type_parent)) {
                return Error{Errc::bad_field, "ratchet tree node type does not match its position"};
            }
            if (is_leaf) {
                SIM_TRY(auto leaf, decode_leaf_node(r));
                t.m_leaves.emplace_back(std::move(leaf));
            } else {
                SIM_TRY(auto parent, decode_parent_node(r));
                t.m_parents.emplace_back(std::move(parent));
            }
        }
        last_blank = !present;
        ++index;
    }
    if (index % 2 == 0 || last_blank) {
        return Error{Errc::bad_field, "ratchet tree must end with a non-blank leaf"};
    }
    // Pad to a power of two leaves (s12.4.3.3: trailing blank nodes are omitted on the wire).
    std::uint32_t leaves = 1;
    while (leaves < t.m_leaves.size()) {
        leaves *= 2;
    }
    if (leaves > max_tree_leaves) {
        return Error{Errc::frame_too_large, "ratchet tree has too many leaves"};
    }
    t.m_leaves.resize(leaves);
    t.m_parents.resize(leaves - 1);
    // Unmerged leaves: non-blank leaves below their parent, no repeats.
    for (std::uint32_t x = 1; x < t.node_count(); x += 2) {
        const auto& p = t.m_parents[x / 2];
        if (!p) {
            continue;
        }
        const auto k = tree::level(x);
        const std::uint32_t first_leaf = (x - ((1U << k) - 1)) / 2;
        const std::uint32_t last_leaf = first_leaf + (1U << k) - 1;
        std::set<std::uint32_t> seen;
        for (const auto l : p->unmerged_leaves) {
            if (l < first_leaf || l > last_leaf || !t.m_leaves[l] || !seen.insert(l).second) {
                return Error{Errc::bad_field, "unmerged leaf outside its parent, blank or repeated"};
            }
        }
    }
    return t;
}

Result<Bytes> RatchetTree::encode() const {
    std::uint32_t end = node_count();
    while (end > 0 && blank(end - 1)) {
        --end;
    }
    TlsWriter nodes;
    for (std::uint32_t x = 0; x < end; ++x) {
        if (blank(x)) {
            nodes.u8(0);
            continue;
        }
        nodes.u8(1);
        if (x % 2 == 0) {
            nodes.u8(node_type_leaf);
            SIM_TRY_STATUS(m_leaves[x / 2]->encode_into(nodes));
        } else {
            nodes.u8(node_type_parent);
            SIM_TRY_STATUS(m_parents[x / 2]->encode_into(nodes));
        }
    }
    TlsWriter w;
    SIM_TRY_STATUS(w.vector(nodes.bytes()));
    return std::move(w).bytes();
}

std::vector<std::uint32_t> RatchetTree::resolution(std::uint32_t node) const {
    if (node % 2 == 0) {
        return blank(node) ? std::vector<std::uint32_t>{} : std::vector<std::uint32_t>{node};
    }
    if (const auto& p = m_parents[node / 2]) {
        std::vector<std::uint32_t> out{node};
        for (const auto l : p->unmerged_leaves) {
            out.push_back(tree::leaf_to_node(l));
        }
        return out;
    }
    auto out = resolution(*tree::left(node));
    const auto right = resolution(*tree::right(node));
    out.insert(out.end(), right.begin(), right.end());
    return out;
}

Result<Bytes> RatchetTree::tree_hash_excluding(std::uint32_t node, const std::set<std::uint32_t>& excluded) const {
    TlsWriter w;
    if (node % 2 == 0) {
        const auto leaf_index = node / 2;
        w.u8(node_type_leaf);
        w.u32(leaf_index);
        const auto& leaf = m_leaves[leaf_index];
        if (leaf && excluded.count(leaf_index) == 0) {
            w.u8(1);
            SIM_TRY_STATUS(leaf->encode_into(w));
        } else {
            w.u8(0);
        }
        return hash(w.bytes());
    }
    SIM_TRY(const auto left, tree_hash_excluding(*tree::left(node), excluded));
    SIM_TRY(const auto right, tree_hash_excluding(*tree::right(node), excluded));
    w.u8(node_type_parent);
    if (const auto& p = m_parents[node / 2]) {
        w.u8(1);
        ParentNode copy = *p;
        std::erase_if(copy.unmerged_leaves, [&](std::uint32_t l) { return excluded.count(l) != 0; });
        SIM_TRY_STATUS(copy.encode_into(w));
    } else {
        w.u8(0);
    }
    SIM_TRY_STATUS(w.vector(left));
    SIM_TRY_STATUS(w.vector(right));
    return hash(w.bytes());
}

Result<Bytes> RatchetTree::tree_hash(std::uint32_t node) const {
    return tree_hash_excluding(node, {});
}

Result<std::vector<Bytes>> RatchetTree::tree_hashes() const {
    std::vector<Bytes> out;
    for (std::uint32_t x = 0; x < node_count(); ++x) {
        SIM_TRY(auto h, tree_hash(x));
        out.push_back(std::move(h));
    }
    return out;
}

// s7.9: Hash(ParentHashInput{P.encryption_key, P.parent_hash, original sibling tree hash}), the sibling's tree hash
// computed as if P's unmerged leaves had not been added.
Result<Bytes> RatchetTree::parent_hash(std::uint32_t parent, std::uint32_t copath_child) const {
    const auto& p = *m_parents[parent / 2];
    const std::set<std::uint32_t> excluded(p.unmerged_leaves.begin(), p.unmerged_leaves.end());
    SIM_TRY(const auto sibling_hash, tree_hash_excluding(copath_child, excluded));
    TlsWriter w;
    SIM_TRY_STATUS(w.vector(p.encryption_key));
    SIM_TRY_STATUS(w.vector(p.parent_hash));
    SIM_TRY_STATUS(w.vector(sibling_hash));
    return hash(w.bytes());
}

// s7.9.2: D's parent hash is valid with respect to P, C being P's child on D's side.
bool RatchetTree::parent_hash_valid(std::uint32_t d, std::uint32_t p, std::uint32_t c, ByteView expected) const {
    const Bytes* d_hash = nullptr;
    if (d % 2 == 0) {
        const auto& leaf = m_leaves[d / 2];
        if (!leaf || leaf->source != LeafNodeSource::commit) {
            return false;
        }
        d_hash = &leaf->parent_hash;
    } else {
        d_hash = &m_parents[d / 2]->parent_hash;
    }
    if (!constant_time_equal(*d_hash, expected)) {
        return false;
    }
    // The intersection of P's unmerged leaves with the subtree under C equals resolution(C) without D.
    const auto res = resolution(c);
    std::set<std::uint32_t> rest(res.begin(), res.end());
    if (rest.erase(d) != 1) {
        return false;
    }
    const auto k = tree::level(c);
    const std::uint32_t lo = c - ((1U << k) - 1);
    const std::uint32_t hi = c + ((1U << k) - 1);
    std::set<std::uint32_t> unmerged_under_c;
    for (const auto l : m_parents[p / 2]->unmerged_leaves) {
        const auto n = tree::leaf_to_node(l);
        if (n >= lo && n <= hi) {
            unmerged_under_c.insert(n);
        }
    }
    return rest == unmerged_under_c;
}

Status RatchetTree::verify_parent_hashes() const {
    for (std::uint32_t p = 1; p < node_count(); p += 2) {
        if (blank(p)) {
            continue;
        }
        const auto l = *tree::left(p);
        const auto r = *tree::right(p);
        std::size_t valid = 0;
        for (const auto& [c, s] : {std::pair{l, r}, std::pair{r, l}}) {
            SIM_TRY(const auto expected, parent_hash(p, s));
            for (const auto d : resolution(c)) {
                if (parent_hash_valid(d, p, c, expected)) {
                    ++valid;
                }
            }
        }
        if (valid != 1) {
            return Error{Errc::auth_failed, "a parent node is not parent-hash valid"};
        }
    }
    return ok();
}

std::vector<std::uint32_t> RatchetTree::filtered_direct_path(std::uint32_t leaf_index) const {
    std::vector<std::uint32_t> out;
    if (leaf_index >= leaf_count()) {
        return out;
    }
    const auto leaf_node = tree::leaf_to_node(leaf_index);
    auto child = leaf_node;
    for (const auto p : tree::direct_path(leaf_node, leaf_count())) {
        const auto copath_child = *tree::sibling(child, leaf_count());
        if (!resolution(copath_child).empty()) {
            out.push_back(p);
        }
        child = p;
    }
    return out;
}

void RatchetTree::blank_direct_path(std::uint32_t leaf_index) {
    for (const auto p : tree::direct_path(tree::leaf_to_node(leaf_index), leaf_count())) {
        m_parents[p / 2].reset();
    }
}

Result<std::uint32_t> RatchetTree::add_leaf(LeafNode leaf) {
    std::uint32_t index = 0;
    while (index < leaf_count() && m_leaves[index]) {
        ++index;
    }
    if (index == leaf_count()) {
        if (leaf_count() >= max_tree_leaves) {
            return Error{Errc::frame_too_large, "ratchet tree is full"};
        }
        // Doubling keeps every existing node index (in-order numbering of a left-balanced tree).
        const auto leaves = leaf_count() * 2;
        m_leaves.resize(leaves);
        m_parents.resize(leaves - 1);
    }
    m_leaves[index] = std::move(leaf);
    for (const auto p : tree::direct_path(tree::leaf_to_node(index), leaf_count())) {
        if (auto& parent = m_parents[p / 2]) {
            parent->unmerged_leaves.push_back(index);
        }
    }
    return index;
}

Status RatchetTree::update_leaf(std::uint32_t leaf_index, LeafNode leaf) {
    if (leaf_index >= leaf_count() || !m_leaves[leaf_index]) {
        return Error{Errc::invalid_argument, "update of a blank or absent leaf"};
    }
    m_leaves[leaf_index] = std::move(leaf);
    blank_direct_path(leaf_index);
    return ok();
}

Status RatchetTree::remove_leaf(std::uint32_t leaf_index) {
    if (leaf_index >= leaf_count() || !m_leaves[leaf_index]) {
        return Error{Errc::invalid_argument, "removal of a blank or absent leaf"};
    }
    m_leaves[leaf_index].reset();
    blank_direct_path(leaf_index);
    // Truncate: drop the right half (and the root) while it holds no non-blank leaf.
    while (leaf_count() > 1) {
        const auto half = leaf_count() / 2;
        if (std::any_of(m_leaves.begin() + half, m_leaves.end(), [](const auto& l) { return l.has_value(); })) {
            break;
        }
        m_leaves.resize(half);
        m_parents.resize(half - 1);
    }
    return ok();
}

Status RatchetTree::verify_leaf_signatures(ByteView group_id) const {
    for (std::uint32_t i = 0; i < leaf_count(); ++i) {
        if (m_leaves[i] && !m_leaves[i]->verify(group_id, i)) {
            return Error{Errc::auth_failed, "a leaf node signature does not verify"};
        }
    }
    return ok();
}

}  // namespace sim::mls
