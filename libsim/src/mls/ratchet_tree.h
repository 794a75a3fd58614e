#pragma once
/// @file
/// The public ratchet tree (RFC 9420 s7): LeafNode and ParentNode, the `ratchet_tree` encoding (s12.4.3.3),
/// resolutions (s4.1.1), tree hashes (s7.8), parent-hash validity (s7.9.2) and leaf signatures (s7.2).
/// Internal to libsim. Private keys never live here.

#include "codec.h"
#include "key_schedule.h"

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <set>
#include <vector>

namespace sim::mls {

/// Largest tree accepted from a peer (leaves, after padding to a power of two).
inline constexpr std::uint32_t max_tree_leaves = std::uint32_t{1} << 16;
/// Largest encoded `ratchet_tree` accepted (16 MiB: about 250 bytes per leaf of the largest tree).
inline constexpr std::size_t max_ratchet_tree_size = std::size_t{16} << 20;

/// s5.3 Credential: basic (1) carries `identity`, x509 (2) `certificates`.
struct Credential {
    std::uint16_t type = 1;
    Bytes identity;
    std::vector<Bytes> certificates;
    friend bool operator==(const Credential&, const Credential&) = default;
};

/// s7.2 Capabilities.
struct Capabilities {
    std::vector<std::uint16_t> versions;
    std::vector<std::uint16_t> cipher_suites;
    std::vector<std::uint16_t> extensions;
    std::vector<std::uint16_t> proposals;
    std::vector<std::uint16_t> credentials;
    friend bool operator==(const Capabilities&, const Capabilities&) = default;
};

/// s7.2 LeafNodeSource.
enum class LeafNodeSource : std::uint8_t { key_package = 1, update = 2, commit = 3 };

/// s7.2 LeafNode. `not_before` / `not_after` only for key_package, `parent_hash` only for commit.
struct LeafNode {
    Bytes encryption_key;
    Bytes signature_key;
    Credential credential;
    Capabilities capabilities;
    LeafNodeSource source = LeafNodeSource::key_package;
    std::uint64_t not_before = 0;
    std::uint64_t not_after = 0;
    Bytes parent_hash;
    std::vector<Extension> extensions;
    Bytes signature;

    /// Append the TLS encoding. Errc::frame_too_large for oversized fields.
    Status encode_into(TlsWriter& w) const;
    /// s7.2 LeafNodeTBS; `group_id` and `leaf_index` are used for the update and commit sources only.
    [[nodiscard]] Result<Bytes> to_be_signed(ByteView group_id, std::uint32_t leaf_index) const;
    /// True when `signature` is SignWithLabel(signature_key, "LeafNodeTBS", to_be_signed(...)).
    [[nodiscard]] bool verify(ByteView group_id, std::uint32_t leaf_index) const;
    /// Set `signature` with the Ed25519 seed `signature_private`. Errc::invalid_key.
    Status sign(ByteView signature_private, ByteView group_id, std::uint32_t leaf_index);
    friend bool operator==(const LeafNode&, const LeafNode&) = default;
};

/// Decode a LeafNode. Errc::bad_field for unknown credential types or leaf node sources, odd-length capability
/// lists, repeated extensions; codec errors otherwise.
Result<LeafNode> decode_leaf_node(TlsReader& r);

/// s7.1 ParentNode.
struct ParentNode {
    Bytes encryption_key;
    Bytes parent_hash;
    std::vector<std::uint32_t> unmerged_leaves;  ///< leaf indices

    Status encode_into(TlsWriter& w) const;
    friend bool operator==(const ParentNode&, const ParentNode&) = default;
};

/// Decode a ParentNode. Codec errors; Errc::bad_field when unmerged_leaves is not a whole number of uint32.
Result<ParentNode> decode_parent_node(TlsReader& r);

/// The public part of a ratchet tree: leaves at even node indices, parents at odd ones; blank nodes empty.
class RatchetTree {
public:
    /// Decode the `ratchet_tree` extension data (`optional<Node> ratchet_tree<V>`): node types must match their
    /// positions (Errc::bad_field), the last node must be a non-blank leaf (trailing blanks are omitted on the
    /// wire, Errc::bad_field), unmerged leaves must lie below their parent (Errc::bad_field), at most
    /// max_tree_leaves leaves after padding to a power of two (Errc::frame_too_large); codec errors.
    static Result<RatchetTree> decode(ByteView data);
    /// The `ratchet_tree` extension data (trailing blank nodes omitted).
    [[nodiscard]] Result<Bytes> encode() const;

    [[nodiscard]] std::uint32_t leaf_count() const noexcept { return static_cast<std::uint32_t>(m_leaves.size()); }
    [[nodiscard]] std::uint32_t node_count() const noexcept;
    [[nodiscard]] const std::optional<LeafNode>& leaf(std::uint32_t leaf_index) const { return m_leaves[leaf_index]; }
    [[nodiscard]] const std::optional<ParentNode>& parent_node(std::uint32_t node) const { return m_parents[node / 2]; }
    [[nodiscard]] bool blank(std::uint32_t node) const;

    /// s4.1.1 resolution of `node` (node indices).
    [[nodiscard]] std::vector<std::uint32_t> resolution(std::uint32_t node) const;
    /// s7.8 tree hash of `node`.
    [[nodiscard]] Result<Bytes> tree_hash(std::uint32_t node) const;
    /// Tree hashes of every node (index = node index).
    [[nodiscard]] Result<std::vector<Bytes>> tree_hashes() const;
    /// s7.9.2: every non-blank parent node has exactly one descendant whose parent hash is valid with respect to
    /// it. Errc::auth_failed otherwise.
    [[nodiscard]] Status verify_parent_hashes() const;
    /// s7.2: every non-blank leaf's signature verifies (update / commit sources bound to `group_id` and the leaf
    /// index). Errc::auth_failed otherwise.
    [[nodiscard]] Status verify_leaf_signatures(ByteView group_id) const;

    /// s7.7 Add: put `leaf` into the leftmost blank leaf (doubling the tree when there is none) and record it as
    /// unmerged in every non-blank parent above it. Returns its leaf index. Errc::frame_too_large beyond
    /// max_tree_leaves.
    Result<std::uint32_t> add_leaf(LeafNode leaf);
    /// s12.1.2 Update: replace the leaf and blank its direct path. Errc::invalid_argument for a blank or absent leaf.
    Status update_leaf(std::uint32_t leaf_index, LeafNode leaf);
    /// s7.7 Remove: blank the leaf and its direct path, then truncate the tree while its right half holds no
    /// non-blank leaf. Errc::invalid_argument for a blank or absent leaf.
    Status remove_leaf(std::uint32_t leaf_index);

    /// s4.1.2 filtered direct path of a leaf: its direct path without the nodes whose copath child has an empty
    /// resolution. Empty for a leaf outside the tree.
    [[nodiscard]] std::vector<std::uint32_t> filtered_direct_path(std::uint32_t leaf_index) const;
    /// s7.9 parent hash of the non-blank parent node `parent` with copath child `copath_child`.
    [[nodiscard]] Result<Bytes> parent_hash(std::uint32_t parent, std::uint32_t copath_child) const;
    /// Set or blank a leaf / a parent node (the caller keeps the tree's invariants; used by TreeKEM).
    void set_leaf(std::uint32_t leaf_index, std::optional<LeafNode> leaf) { m_leaves[leaf_index] = std::move(leaf); }
    void set_parent(std::uint32_t node, std::optional<ParentNode> parent) { m_parents[node / 2] = std::move(parent); }
    std::optional<ParentNode>& parent_node_mut(std::uint32_t node) { return m_parents[node / 2]; }
    /// Blank every parent node on the direct path of a leaf.
    void blank_direct_path(std::uint32_t leaf_index);

private:
    Result<Bytes> tree_hash_excluding(std::uint32_t node, const std::set<std::uint32_t>& excluded_leaves) const;
    [[nodiscard]] bool parent_hash_valid(std::uint32_t d, std::uint32_t p, std::uint32_t c, ByteView expected) const;

    std::vector<std::optional<LeafNode>> m_leaves;
    std::vector<std::optional<ParentNode>> m_parents;  // parent node x is m_parents[x / 2]
};

}  // namespace sim::mls
