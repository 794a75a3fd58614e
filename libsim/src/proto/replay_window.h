#pragma once
// Private: the anti-replay window of a RecvSession (docs/protocol.md s4.5).
//
// RFC 4303 s3.4.3 semantics (a record is fresh when it is newer than the highest accepted one, or within `size`
// sequence numbers behind it and not yet seen), stored as in RFC 6479: a ring of 64-bit words indexed by seq / 64,
// so advancing the window clears whole words instead of shifting a bitmap.

#include <sim/error.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace sim::detail {

class ReplayWindow {
public:
    /// `size` = 0: strictly in order. Otherwise up to `size` sequence numbers behind the highest may arrive late.
    explicit ReplayWindow(std::uint32_t size)
        : m_size(size), m_words(size == 0 ? 0 : (static_cast<std::size_t>(size) + 63) / 64 + 1, 0) {}

    /// Would `seq` be accepted? Errc::replayed for a duplicate (or, in strict mode, anything older than expected),
    /// Errc::out_of_window for a record too old to judge (or, in strict mode, one that skips ahead).
    [[nodiscard]] Status check(std::uint64_t seq) const {
        if (m_size == 0) {
            if (seq < m_next) {
                return Error{Errc::replayed, "record sequence number already used (strict order)"};
            }
            if (seq > m_next) {
                return Error{Errc::out_of_window, "record sequence number skips ahead (strict order)"};
            }
            return ok();
        }
        if (seq >= m_next) {
            return ok();
        }
        const std::uint64_t behind = m_next - 1 - seq;  // 0 = the highest accepted
        if (behind >= m_size) {
            return Error{Errc::out_of_window, "record sequence number is behind the replay window"};
        }
        if ((m_words[word_index(seq)] & bit(seq)) != 0) {
            return Error{Errc::replayed, "record sequence number already seen"};
        }
        return ok();
    }

    /// Record `seq` as seen. Call only after check(seq) passed and the record authenticated.
    /// `seq` must be below UINT64_MAX (the session rejects that value earlier).
    void accept(std::uint64_t seq) {
        if (m_size == 0) {
            m_next = seq + 1;
            return;
        }
        if (seq >= m_next) {
            // Clear the words of the blocks we move into: from the block after the current top to seq's block.
            const std::uint64_t first = m_next == 0 ? 0 : ((m_next - 1) >> 6U) + 1;
            const std::uint64_t last = seq >> 6U;
            if (last >= first) {
                const std::uint64_t count = std::min<std::uint64_t>(last - first + 1, m_words.size());
                for (std::uint64_t i = 0; i < count; ++i) {
                    m_words[static_cast<std::size_t>((first + i) % m_words.size())] = 0;
                }
            }
            m_next = seq + 1;
        }
        m_words[word_index(seq)] |= bit(seq);
    }

    /// The sequence number after the highest accepted (0 before any).
    [[nodiscard]] std::uint64_t next() const noexcept { return m_next; }

private:
    [[nodiscard]] std::size_t word_index(std::uint64_t seq) const noexcept {
        return static_cast<std::size_t>((seq >> 6U) % m_words.size());
    }
    static std::uint64_t bit(std::uint64_t seq) noexcept { return std::uint64_t{1} << (seq & 63U); }

    std::uint32_t m_size;
    std::vector<std::uint64_t> m_words;
    std::uint64_t m_next = 0;
};

}  // namespace sim::detail
