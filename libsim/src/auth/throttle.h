#pragma once
// Failed-login throttling arithmetic, and the per-node set of recent successes. Private to libsim. The failure
// counts themselves live in the credential store, so every node sharing it counts against one budget.

#include <sim/auth.h>
#include <sim/store.h>

#include <mutex>
#include <string>
#include <unordered_map>

namespace sim::auth::detail {

/// The failure count that still counts at `now`: zero once the last failure is `forget_after` old or lies in the
/// future (a clock set back, or another node's clock ahead).
std::uint32_t effective_count(const ThrottleLimits& limits, const store::FailureState& state, store::WallTime now);

/// The delay that must pass after the last of `count` failures before the next attempt (zero while free).
Duration delay_after(const ThrottleLimits& limits, std::uint32_t count);

/// How long the caller must still wait at `now` (zero when an attempt is allowed).
Duration wait_time(const ThrottleLimits& limits, const store::FailureState& state, store::WallTime now);

/// The state after one more failure at `now` (the rule every CredentialStore::record_failure implements).
store::FailureState after_failure(const store::FailureState& state, store::WallTime now, Duration forget_after);

/// Errc::invalid_argument when a policy is out of range or lets an account see more failures per hour than
/// allowed.
Status validate(const ThrottlePolicy& policy);

/// Thread-safe bounded set of keys (an account with a source address) that succeeded within `ttl`; when full,
/// the oldest success is forgotten.
class RecentSuccesses {
public:
    RecentSuccesses(Duration ttl, std::size_t max_entries) : m_ttl(ttl), m_max(max_entries) {}
    /// Whether `key` succeeded less than `ttl` before `now`.
    bool contains(const std::string& key, TimePoint now) const;
    /// Note a success of `key` at `now`.
    void remember(const std::string& key, TimePoint now);
    /// Entries held (tests).
    std::size_t size() const;

private:
    Duration m_ttl;
    std::size_t m_max;
    mutable std::mutex m_mutex;
    std::unordered_map<std::string, TimePoint> m_entries;
};

}  // namespace sim::auth::detail
