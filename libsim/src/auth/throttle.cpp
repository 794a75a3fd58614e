// Throttling of failed logins (docs/accounts.md, "Throttling").
#include "throttle.h"

#include <algorithm>
#include <deque>
#include <limits>
#include <optional>

namespace sim::auth::detail {

std::uint32_t effective_count(const ThrottleLimits& limits, const store::FailureState& state, store::WallTime now) {
    if (state.count == 0 || state.last_failure > now || now - state.last_failure >= limits.forget_after) {
        return 0;
    }
    return state.count;
}

Duration delay_after(const ThrottleLimits& limits, std::uint32_t count) {
    if (count < limits.free_failures) {
        return Duration::zero();
    }
    Duration d = limits.base_delay;
    for (std::uint32_t i = limits.free_failures; i < count && d < limits.max_delay; ++i) {
        d *= 2;
    }
    return std::min(d, limits.max_delay);
}

Duration wait_time(const ThrottleLimits& limits, const store::FailureState& state, store::WallTime now) {
    const auto count = effective_count(limits, state, now);
    if (count == 0) {
        return Duration::zero();
    }
    const auto allowed_at = state.last_failure + delay_after(limits, count);
    return allowed_at > now ? std::chrono::duration_cast<Duration>(allowed_at - now) : Duration::zero();
}

store::FailureState after_failure(const store::FailureState& state, store::WallTime now, Duration forget_after) {
    store::FailureState next;
    const bool restart = state.count == 0 || state.last_failure > now || now - state.last_failure >= forget_after;
    next.count =
        restart ? 1 : (state.count == std::numeric_limits<std::uint32_t>::max() ? state.count : state.count + 1);
    next.last_failure = now;
    return next;
}

namespace {

Status check_limits(const ThrottleLimits& l, const char* what) {
    if (l.base_delay <= Duration::zero() || l.max_delay < l.base_delay || l.forget_after <= l.max_delay ||
        l.free_failures > 1000) {
        return Error{Errc::invalid_argument, std::string(what) +
                                                 " throttle: need 0 < base_delay <= max_delay < forget_after and "
                                                 "free_failures <= 1000"};
    }
    return ok();
}

}  // namespace

Status validate(const ThrottlePolicy& policy) {
    SIM_TRY_STATUS(check_limits(policy.account, "account"));
    SIM_TRY_STATUS(check_limits(policy.address, "address"));
    if (policy.max_failures_per_hour == 0 || policy.max_tracked == 0 || policy.known_address_ttl <= Duration::zero()) {
        return Error{Errc::invalid_argument,
                     "max_failures_per_hour, max_tracked and known_address_ttl must be positive"};
    }
    // A count restarts only after a quiet forget_after; at least an hour of quiet means no hour-long window
    // holds failures of two bursts, so the fastest attack below is the worst case.
    if (policy.account.forget_after < std::chrono::hours(1)) {
        return Error{Errc::invalid_argument, "account throttle: forget_after must be at least one hour"};
    }
    if (worst_case_failures_per_hour(policy.account) > policy.max_failures_per_hour) {
        return Error{Errc::invalid_argument,
                     "account throttle allows more failures per hour than max_failures_per_hour"};
    }
    return ok();
}

bool RecentSuccesses::contains(const std::string& key, TimePoint now) const {
    const std::lock_guard lock(m_mutex);
    const auto it = m_entries.find(key);
    return it != m_entries.end() && it->second <= now && now - it->second < m_ttl;
}

void RecentSuccesses::remember(const std::string& key, TimePoint now) {
    const std::lock_guard lock(m_mutex);
    if (m_entries.size() >= m_max && !m_entries.contains(key)) {
        std::erase_if(m_entries, [&](const auto& kv) { return kv.second > now || now - kv.second >= m_ttl; });
        if (m_entries.size() >= m_max) {
            m_entries.erase(std::min_element(m_entries.begin(), m_entries.end(),
                                             [](const auto& a, const auto& b) { return a.second < b.second; }));
        }
    }
    m_entries.insert_or_assign(key, now);
}

std::size_t RecentSuccesses::size() const {
    const std::lock_guard lock(m_mutex);
    return m_entries.size();
}

}  // namespace sim::auth::detail

namespace sim::auth {

std::uint64_t worst_case_failures_per_hour(const ThrottleLimits& limits) {
    using detail::after_failure;
    using detail::wait_time;
    if (limits.base_delay <= Duration::zero() || limits.max_delay <= Duration::zero()) {
        return std::numeric_limits<std::uint64_t>::max();
    }
    const Duration hour = std::chrono::hours(1);
    // An attacker who fails again the moment it is allowed. Once the delay has saturated at max_delay the pattern
    // repeats, so simulating until two hours past saturation covers every window (bounded by the event cap).
    constexpr std::size_t max_events = 1'000'000;
    std::deque<store::WallTime> window;
    std::uint64_t best = 0;
    store::FailureState state;
    store::WallTime t{};
    std::optional<store::WallTime> saturated_at;
    for (std::size_t i = 0; i < max_events; ++i) {
        t += std::chrono::ceil<std::chrono::milliseconds>(wait_time(limits, state, t));
        state = after_failure(state, t, limits.forget_after);
        window.push_back(t);
        while (t - window.front() >= hour) {
            window.pop_front();
        }
        best = std::max<std::uint64_t>(best, window.size());
        if (!saturated_at && detail::delay_after(limits, state.count) >= limits.max_delay) {
            saturated_at = t;
        }
        if (saturated_at && t - *saturated_at > 2 * hour) {
            return best;
        }
    }
    return std::numeric_limits<std::uint64_t>::max();
}

}  // namespace sim::auth
