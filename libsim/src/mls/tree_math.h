#pragma once
/// @file
/// Array-based left-balanced binary tree arithmetic (RFC 9420 s4.2 and Appendix C). Internal to libsim.
///
/// Nodes are numbered in-order: leaves at even indices (leaf i is node 2i), parents at odd indices. MLS trees
/// always have a power-of-two number of leaves (s7.7: the tree is extended by doubling). Functions that have no
/// answer for a node (the children of a leaf, the parent or sibling of the root, a node outside the tree) return
/// std::nullopt instead of throwing.

#include <cstdint>
#include <optional>
#include <vector>

namespace sim::mls::tree {

/// Largest number of leaves accepted anywhere (2^30: node indices then fit in 31 bits).
inline constexpr std::uint32_t max_leaves = std::uint32_t{1} << 30;

/// Floor of log2(x); 0 for x = 0.
[[nodiscard]] std::uint32_t log2(std::uint32_t x) noexcept;
/// Level of a node: 0 for leaves, the number of trailing one bits otherwise.
[[nodiscard]] std::uint32_t level(std::uint32_t x) noexcept;
/// Number of nodes of a tree with `n_leaves` leaves: 2n - 1 (0 for 0). `n_leaves` at most max_leaves.
[[nodiscard]] std::uint32_t node_width(std::uint32_t n_leaves) noexcept;
/// Root node of a tree with `n_leaves` (> 0) leaves.
[[nodiscard]] std::uint32_t root(std::uint32_t n_leaves) noexcept;
/// Left / right child of `x`; nullopt for a leaf.
[[nodiscard]] std::optional<std::uint32_t> left(std::uint32_t x) noexcept;
[[nodiscard]] std::optional<std::uint32_t> right(std::uint32_t x) noexcept;
/// Parent of `x` in a tree of `n_leaves` leaves; nullopt for the root and for nodes outside the tree.
[[nodiscard]] std::optional<std::uint32_t> parent(std::uint32_t x, std::uint32_t n_leaves) noexcept;
/// Sibling of `x`; nullopt for the root and for nodes outside the tree.
[[nodiscard]] std::optional<std::uint32_t> sibling(std::uint32_t x, std::uint32_t n_leaves) noexcept;
/// Direct path of `x` (its parent up to and including the root, s4.1); empty for the root or outside the tree.
[[nodiscard]] std::vector<std::uint32_t> direct_path(std::uint32_t x, std::uint32_t n_leaves);
/// Copath of `x` (the siblings of `x` and of each node of its direct path except the root).
[[nodiscard]] std::vector<std::uint32_t> copath(std::uint32_t x, std::uint32_t n_leaves);
/// Node index of leaf `leaf_index`.
[[nodiscard]] constexpr std::uint32_t leaf_to_node(std::uint32_t leaf_index) noexcept {
    return 2 * leaf_index;
}

}  // namespace sim::mls::tree
