#pragma once
/// @file
/// Delays between reconnection attempts: exponential back-off with "decorrelated jitter" (each delay is drawn
/// uniformly between the initial delay and three times the previous one, capped). Spreading the attempts at random
/// keeps clients that lost the same server at the same moment from all knocking at once when it comes back.
/// No clock and no sockets: the caller waits; the randomness is injected, so tests are deterministic.

#include <sim/clock.h>
#include <sim/rng.h>

namespace sim::tools {

/// The bounds of the delays.
struct BackoffPolicy {
    Duration initial = std::chrono::milliseconds(500);  ///< the smallest delay, and the first one's lower bound
    Duration cap = std::chrono::seconds(30);            ///< no delay is longer
};

/// The delays of one series of attempts (one per lost connection); reset() after a success.
class Backoff {
public:
    /// A non-positive `initial` counts as 1 ms; a `cap` below `initial` as `initial`.
    explicit Backoff(BackoffPolicy policy) noexcept;

    /// The delay before the next attempt: uniform in [initial, min(cap, 3 * previous delay)], the first one in
    /// [initial, min(cap, 3 * initial)].
    [[nodiscard]] Duration next(Rng& rng);
    /// After a success: the next delay starts from `initial` again.
    void reset() noexcept { m_previous = m_policy.initial; }

    [[nodiscard]] const BackoffPolicy& policy() const noexcept { return m_policy; }

private:
    BackoffPolicy m_policy;
    Duration m_previous;
};

}  // namespace sim::tools
