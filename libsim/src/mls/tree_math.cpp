// RFC 9420 Appendix C, written for a power-of-two number of leaves and with bounds checks instead of exceptions.
#include "tree_math.h"

namespace sim::mls::tree {

std::uint32_t log2(std::uint32_t x) noexcept {
    std::uint32_t k = 0;
    while ((x >> k) > 1) {
        ++k;
    }
    return k;
}

std::uint32_t level(std::uint32_t x) noexcept {
    std::uint32_t k = 0;
    while (k < 32 && ((x >> k) & 1U) == 1U) {
        ++k;
    }
    return k;
}

std::uint32_t node_width(std::uint32_t n_leaves) noexcept {
    return n_leaves == 0 ? 0 : 2 * (n_leaves - 1) + 1;
}

std::uint32_t root(std::uint32_t n_leaves) noexcept {
    const auto w = node_width(n_leaves);
    return (std::uint32_t{1} << log2(w)) - 1;
}

std::optional<std::uint32_t> left(std::uint32_t x) noexcept {
    const auto k = level(x);
    if (k == 0) {
        return std::nullopt;
    }
    return x ^ (std::uint32_t{1} << (k - 1));
}

std::optional<std::uint32_t> right(std::uint32_t x) noexcept {
    const auto k = level(x);
    if (k == 0) {
        return std::nullopt;
    }
    return x ^ (std::uint32_t{3} << (k - 1));
}

std::optional<std::uint32_t> parent(std::uint32_t x, std::uint32_t n_leaves) noexcept {
    if (n_leaves == 0 || n_leaves > max_leaves || x >= node_width(n_leaves) || x == root(n_leaves)) {
        return std::nullopt;
    }
    const auto k = level(x);
    const auto b = (x >> (k + 1)) & 1U;
    return (x | (std::uint32_t{1} << k)) ^ (b << (k + 1));
}

std::optional<std::uint32_t> sibling(std::uint32_t x, std::uint32_t n_leaves) noexcept {
    const auto p = parent(x, n_leaves);
    if (!p) {
        return std::nullopt;
    }
    return x < *p ? right(*p) : left(*p);
}

std::vector<std::uint32_t> direct_path(std::uint32_t x, std::uint32_t n_leaves) {
    std::vector<std::uint32_t> out;
    for (auto p = parent(x, n_leaves); p; p = parent(*p, n_leaves)) {
        out.push_back(*p);
    }
    return out;
}

std::vector<std::uint32_t> copath(std::uint32_t x, std::uint32_t n_leaves) {
    std::vector<std::uint32_t> out;
    for (auto node = std::optional<std::uint32_t>{x}; node; node = parent(*node, n_leaves)) {
        if (const auto s = sibling(*node, n_leaves)) {
            out.push_back(*s);
        }
    }
    return out;
}

}  // namespace sim::mls::tree
