#include "common/backoff.h"

#include <algorithm>
#include <array>
#include <cstdint>

namespace sim::tools {

Backoff::Backoff(BackoffPolicy policy) noexcept : m_policy(policy), m_previous(policy.initial) {
    if (m_policy.initial <= Duration::zero()) {
        m_policy.initial = std::chrono::milliseconds(1);
    }
    m_policy.cap = std::max(m_policy.cap, m_policy.initial);
    m_previous = m_policy.initial;
}

Duration Backoff::next(Rng& rng) {
    const auto low = m_policy.initial.count();
    // 3 * previous cannot overflow: previous <= cap, and a cap near the limit of nanoseconds is decades.
    const auto high = std::min(m_policy.cap.count(), std::max(low, m_previous.count()) * 3);
    std::array<std::uint8_t, 8> raw{};
    rng.fill(raw);
    std::uint64_t r = 0;
    for (const auto b : raw) {
        r = (r << 8U) | b;
    }
    // The modulo bias is below 2^-30 for any span shorter than a year: irrelevant for spreading attempts.
    const auto span = static_cast<std::uint64_t>(high - low) + 1;
    m_previous = Duration(low + static_cast<Duration::rep>(r % span));
    return m_previous;
}

}  // namespace sim::tools
