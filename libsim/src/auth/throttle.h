#pragma once
// Failed-login throttling arithmetic and the in-memory table for keys without a store row. Private to libsim.

#include <sim/auth.h>
#include <sim/store.h>

#include <mutex>
#include <string>
#include <unordered_map>

namespace sim::auth::detail {

/// The failure count that still counts at `now`: zero once the last failure is `forget_after` old or lies in the
/// future (a restarted monotonic clock).
std::uint32_t effective_count(const ThrottleLimits& limits, const store::FailureState& state, TimePoint now);

/// The delay that must pass after the last of `count` failures before the next attempt (zero while free).
Duration delay_after(const ThrottleLimits& limits, std::uint32_t count);

/// How long the caller must still wait at `now` (zero when an attempt is allowed).
Duration wait_time(const ThrottleLimits& limits, const store::FailureState& state, TimePoint now);

/// The state after one more failure at `now` (the rule every CredentialStore::record_failure implements).
store::FailureState after_failure(const store::FailureState& state, TimePoint now, Duration forget_after);

/// Errc::invalid_argument when a policy is out of range or lets an account see more failures per hour than
/// allowed.
Status validate(const ThrottlePolicy& policy);

/// Thread-safe bounded map from a key (a source address, or a name without an account) to its failure state.
class ThrottleTable {
public:
    ThrottleTable(ThrottleLimits limits, std::size_t max_entries) : m_limits(limits), m_max(max_entries) {}
    /// Wait time for `key` at `now`.
    Duration wait(const std::string& key, TimePoint now) const;
    /// Count a failure of `key` at `now`.
    void record(const std::string& key, TimePoint now);
    /// Forget `key`.
    void clear(const std::string& key);
    /// Entries held (tests).
    std::size_t size() const;

private:
    void make_room(TimePoint now);

    ThrottleLimits m_limits;
    std::size_t m_max;
    mutable std::mutex m_mutex;
    std::unordered_map<std::string, store::FailureState> m_entries;
};

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
