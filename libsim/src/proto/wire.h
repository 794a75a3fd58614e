#pragma once
// Private: the one bounded reader and the writer helpers for big-endian wire fields. Every decoder of peer input
// in libsim/src/proto reads through WireReader, so no read can pass the end of its input.

#include <sim/bytes.h>
#include <sim/clock.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

namespace sim::detail {

inline std::uint16_t load_u16(const std::uint8_t* p) noexcept {
    return static_cast<std::uint16_t>((static_cast<unsigned>(p[0]) << 8U) | p[1]);
}

inline std::uint32_t load_u32(const std::uint8_t* p) noexcept {
    return (static_cast<std::uint32_t>(p[0]) << 24U) | (static_cast<std::uint32_t>(p[1]) << 16U) |
           (static_cast<std::uint32_t>(p[2]) << 8U) | static_cast<std::uint32_t>(p[3]);
}

inline std::uint64_t load_u64(const std::uint8_t* p) noexcept {
    return (static_cast<std::uint64_t>(load_u32(p)) << 32U) | load_u32(p + 4);
}

/// A wall-clock time as u64 milliseconds since the Unix epoch (times before it are written as 0).
inline std::uint64_t to_wire_ms(WallTime t) noexcept {
    const auto ms = t.time_since_epoch().count();
    return ms < 0 ? 0 : static_cast<std::uint64_t>(ms);
}
/// The largest wire time a decoder accepts (above it: Errc::bad_field).
inline constexpr std::uint64_t max_wire_ms = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
/// Clamped so that no wire value overflows the signed representation.
inline WallTime from_wire_ms(std::uint64_t ms) noexcept {
    return WallTime{std::chrono::milliseconds{static_cast<std::int64_t>(std::min(ms, max_wire_ms))}};
}

/// A control byte (C0 or DEL): never allowed in names and texts a peer shows.
constexpr bool is_control(std::uint8_t c) noexcept { return c < 0x20U || c == 0x7FU; }

inline bool has_control(std::string_view s) noexcept {
    for (const char c : s) {
        if (is_control(static_cast<std::uint8_t>(c))) {
            return true;
        }
    }
    return false;
}

/// A bounded cursor: every read is checked against the end of the input and fails (returns false) past it.
class WireReader {
public:
    explicit WireReader(ByteView data) noexcept : m_data(data) {}

    [[nodiscard]] std::size_t remaining() const noexcept { return m_data.size() - m_pos; }
    [[nodiscard]] bool at_end() const noexcept { return m_pos == m_data.size(); }

    [[nodiscard]] bool u8(std::uint8_t& v) noexcept {
        if (remaining() < 1) {
            return false;
        }
        v = m_data[m_pos++];
        return true;
    }
    [[nodiscard]] bool u16(std::uint16_t& v) noexcept { return fixed(2, v, load_u16); }
    [[nodiscard]] bool u32(std::uint32_t& v) noexcept { return fixed(4, v, load_u32); }
    [[nodiscard]] bool u64(std::uint64_t& v) noexcept { return fixed(8, v, load_u64); }

    [[nodiscard]] bool take(std::size_t n, ByteView& out) noexcept {
        if (remaining() < n) {
            return false;
        }
        out = m_data.subspan(m_pos, n);
        m_pos += n;
        return true;
    }
    /// Everything that is left.
    ByteView rest() noexcept {
        ByteView out = m_data.subspan(m_pos);
        m_pos = m_data.size();
        return out;
    }

private:
    template <typename T, typename Load>
    bool fixed(std::size_t n, T& v, Load load) noexcept {
        if (remaining() < n) {
            return false;
        }
        v = load(m_data.data() + m_pos);
        m_pos += n;
        return true;
    }

    ByteView m_data;
    std::size_t m_pos = 0;
};

/// Appends big-endian fields to a byte vector (of any allocator).
template <typename Vec>
class WireWriter {
public:
    explicit WireWriter(Vec& out) noexcept : m_out(out) {}
    void u8(std::uint8_t v) { m_out.push_back(v); }
    void u16(std::uint16_t v) { be(v, 2); }
    void u32(std::uint32_t v) { be(v, 4); }
    void u64(std::uint64_t v) { be(v, 8); }
    void bytes(ByteView v) { m_out.insert(m_out.end(), v.begin(), v.end()); }
    void text(std::string_view s) { bytes(as_bytes(s)); }

private:
    void be(std::uint64_t v, unsigned n) {
        for (unsigned i = n; i-- > 0;) {
            m_out.push_back(static_cast<std::uint8_t>(v >> (8U * i)));
        }
    }
    Vec& m_out;
};

}  // namespace sim::detail
