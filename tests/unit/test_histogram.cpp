// The server's lock-free latency histogram (server/histogram.h): Prometheus bucket edges, sum and count, and
// concurrent observers losing nothing.
#include "server/histogram.h"

#include <doctest/doctest.h>

#include <chrono>
#include <initializer_list>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using sim::server_detail::LatencyHistogram;

TEST_CASE("observations go to the first bucket whose bound is not below them") {
    LatencyHistogram h({10ms, 1ms, 5ms, 5ms});  // sorted, the duplicate dropped
    for (const sim::Duration d : std::initializer_list<sim::Duration>{0ns, 1ms, 1ms + 1ns, 5ms, 7ms, 10ms, 11ms, 1h}) {
        h.observe(d);
    }
    h.observe(-3ms);  // a clock that went back counts as zero
    const auto s = h.snapshot();
    CHECK(s.bounds == std::vector<sim::Duration>{1ms, 5ms, 10ms});
    CHECK(s.counts == std::vector<std::uint64_t>{3, 2, 2, 2});
    CHECK(s.count == 9);
    CHECK(s.sum == 1ms + 1ms + 1ns + 5ms + 7ms + 10ms + 11ms + 1h);
}

TEST_CASE("steps_1_2_5: 1, 2.5 and 5 per decade, up to the highest") {
    CHECK(LatencyHistogram::steps_1_2_5(100us, 1s) ==
          std::vector<sim::Duration>{100us, 250us, 500us, 1ms, 2500us, 5ms, 10ms, 25ms, 50ms, 100ms, 250ms, 500ms, 1s});
    CHECK(LatencyHistogram::steps_1_2_5(1ms, 4ms) == std::vector<sim::Duration>{1ms, 2500us});
    CHECK(LatencyHistogram::steps_1_2_5(0ms, 1s).empty());
}

TEST_CASE("an empty histogram has zero counts in every bucket") {
    const LatencyHistogram h({1ms, 2ms});
    const auto s = h.snapshot();
    CHECK(s.counts == std::vector<std::uint64_t>{0, 0, 0});
    CHECK(s.count == 0);
    CHECK(s.sum == 0ns);
}

TEST_CASE("concurrent observers: every observation counted once") {
    LatencyHistogram h({1us, 100us, 1s});
    constexpr int threads = 4;
    constexpr int per_thread = 20'000;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&h, t] {
            for (int i = 0; i < per_thread; ++i) {
                h.observe(std::chrono::microseconds((i + t) % 4 == 0 ? 500 : 2));
            }
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    const auto s = h.snapshot();
    CHECK(s.count == threads * per_thread);
    CHECK(s.counts[0] == 0);
    CHECK(s.counts[1] + s.counts[2] == s.count);
    CHECK(s.counts[1] == threads * per_thread * 3 / 4);
    CHECK(s.sum == std::chrono::microseconds(s.counts[1] * 2 + s.counts[2] * 500));
}
