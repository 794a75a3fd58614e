#pragma once
/// @file
/// Byte containers. `SecureBytes` wipes its memory when it is released; use it for every secret.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sim {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;
using MutableByteView = std::span<std::uint8_t>;

/// Overwrite memory with zeros in a way the compiler may not remove.
void secure_zero(void* data, std::size_t len) noexcept;

/// Compare two byte ranges in time that depends only on their lengths.
[[nodiscard]] bool constant_time_equal(ByteView a, ByteView b) noexcept;

/// Allocator that zeroes memory before giving it back.
template <typename T>
struct ZeroizingAllocator {
    using value_type = T;
    ZeroizingAllocator() noexcept = default;
    template <typename U>
    ZeroizingAllocator(const ZeroizingAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
    T* allocate(std::size_t n) {
        if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) {
            throw std::bad_alloc();
        }
        return static_cast<T*>(::operator new(n * sizeof(T)));
    }
    void deallocate(T* p, std::size_t n) noexcept {
        secure_zero(p, n * sizeof(T));
        ::operator delete(p);
    }
    template <typename U>
    bool operator==(const ZeroizingAllocator<U>&) const noexcept { return true; }
};

/// A byte vector for secrets: zeroed on release. Never format or log one.
using SecureBytes = std::vector<std::uint8_t, ZeroizingAllocator<std::uint8_t>>;

/// Copy a view into a new byte vector of the chosen type.
template <typename Vec = Bytes>
Vec to_bytes(ByteView v) { return Vec(v.begin(), v.end()); }

/// View of a string's bytes.
inline ByteView as_bytes(std::string_view s) noexcept {
    return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

/// Bytes as a std::string (for text that travels in byte fields).
inline std::string to_string(ByteView v) { return {v.begin(), v.end()}; }

/// Lower-case hex encoding.
[[nodiscard]] std::string to_hex(ByteView v);

/// Decode hex (either case, even length). Returns false on bad input and leaves `out` empty.
[[nodiscard]] bool from_hex(std::string_view hex, Bytes& out);

}  // namespace sim
