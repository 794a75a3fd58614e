#pragma once
/// @file
/// Time is injected: the core reads it only through `Clock`, so tests drive it and nothing sleeps.

#include <chrono>
#include <memory>

namespace sim {

using Duration = std::chrono::nanoseconds;
/// A point on a monotonic time line; only differences are meaningful.
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

/// A point in civil time: milliseconds since the Unix epoch (the wire's timestamps, docs/protocol.md 5.2, 6.3,
/// 6.5). The epoch itself (`WallTime{}`) stands for "unknown".
using WallTime = std::chrono::sys_time<std::chrono::milliseconds>;

/// Monotonic clock.
class Clock {
public:
    virtual ~Clock() = default;
    [[nodiscard]] virtual TimePoint now() const = 0;
};

/// `std::chrono::steady_clock`.
class SteadyClock final : public Clock {
public:
    [[nodiscard]] TimePoint now() const override {
        return std::chrono::time_point_cast<Duration>(std::chrono::steady_clock::now());
    }
};

/// A clock that moves only when told to (tests).
class ManualClock final : public Clock {
public:
    [[nodiscard]] TimePoint now() const override { return m_now; }
    void advance(Duration d) { m_now += d; }
    void set(TimePoint t) { m_now = t; }

private:
    TimePoint m_now{};
};

/// A process-wide steady clock instance, for defaults.
const Clock& steady_clock();

}  // namespace sim
