#include "histogram.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

namespace sim::server_detail {

LatencyHistogram::LatencyHistogram(std::vector<Duration> bounds) : m_bounds(std::move(bounds)) {
    std::sort(m_bounds.begin(), m_bounds.end());
    m_bounds.erase(std::unique(m_bounds.begin(), m_bounds.end()), m_bounds.end());
    m_counts = std::make_unique<std::atomic<std::uint64_t>[]>(m_bounds.size() + 1);
}

std::vector<Duration> LatencyHistogram::steps_1_2_5(Duration lowest, Duration highest) {
    std::vector<Duration> out;
    for (Duration d = lowest; d > Duration::zero() && d <= highest; d *= 10) {
        for (const Duration b : {d, d * 5 / 2, d * 5}) {
            if (b <= highest) {
                out.push_back(b);
            }
        }
    }
    return out;
}

void LatencyHistogram::observe(Duration d) noexcept {
    d = std::max(d, Duration::zero());
    // The first bucket whose bound is not below d (Prometheus buckets are `le`, less than or equal).
    const auto bucket =
        static_cast<std::size_t>(std::lower_bound(m_bounds.begin(), m_bounds.end(), d) - m_bounds.begin());
    m_counts[bucket].fetch_add(1, std::memory_order_relaxed);
    m_sum_ns.fetch_add(static_cast<std::uint64_t>(d.count()), std::memory_order_relaxed);
}

HistogramSnapshot LatencyHistogram::snapshot() const {
    HistogramSnapshot s;
    s.bounds = m_bounds;
    s.counts.resize(m_bounds.size() + 1);
    for (std::size_t i = 0; i < s.counts.size(); ++i) {
        s.counts[i] = m_counts[i].load(std::memory_order_relaxed);
        s.count += s.counts[i];
    }
    s.sum = Duration(static_cast<Duration::rep>(m_sum_ns.load(std::memory_order_relaxed)));
    return s;
}

}  // namespace sim::server_detail
