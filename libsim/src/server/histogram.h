#pragma once
// Private: a fixed-bucket latency histogram that many threads update without a lock (one atomic counter per
// bucket), read as a sim::HistogramSnapshot (the Prometheus histogram: buckets, sum, count).

#include <sim/server.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace sim::server_detail {

class LatencyHistogram {
public:
    /// Upper bounds of the buckets (sorted here; duplicates dropped); an observation above the last one goes to the
    /// overflow bucket.
    explicit LatencyHistogram(std::vector<Duration> bounds);

    /// Bounds 1, 2.5 and 5 times `lowest`, `lowest` * 10, ... up to `highest` (the usual latency buckets).
    [[nodiscard]] static std::vector<Duration> steps_1_2_5(Duration lowest, Duration highest);

    /// Count one duration (a negative one as zero). Lock-free, callable from any thread.
    void observe(Duration d) noexcept;

    /// The counts now. Each bucket is read once; `count` is the sum of the buckets read, so a snapshot taken while
    /// other threads observe is consistent in its counts (the sum may include an observation not yet counted).
    [[nodiscard]] HistogramSnapshot snapshot() const;

private:
    std::vector<Duration> m_bounds;
    std::unique_ptr<std::atomic<std::uint64_t>[]> m_counts;  // m_bounds.size() + 1
    std::atomic<std::uint64_t> m_sum_ns{0};
};

}  // namespace sim::server_detail
