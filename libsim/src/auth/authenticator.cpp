// The login flow: registration policy, throttling, dummy-hash verification for unknown names, transparent
// re-hashing. See docs/accounts.md.
#include "rng_util.h"
#include "throttle.h"

#include <sim/auth.h>

#include <algorithm>
#include <chrono>

// Like SIM_TRY_STATUS, for functions that return a LoginResult.
#define SIM_TRY_LOGIN(expr)                                \
    do {                                                   \
        if (auto sim_login_st_ = (expr); !sim_login_st_) { \
            return failure(sim_login_st_.error());         \
        }                                                  \
    } while (false)

namespace sim::auth {
namespace {

constexpr std::size_t max_source_length = 255;

LoginResult failure(Error e) {
    LoginResult r;
    r.outcome = std::move(e);
    return r;
}

LoginResult throttled(Duration wait) {
    LoginResult r;
    r.outcome = Error{Errc::throttled, "too many failed attempts"};
    r.retry_after = wait;
    return r;
}

LoginResult success(LoginOutcome outcome) {
    LoginResult r;
    r.outcome = std::move(outcome);
    return r;
}

// Same code and detail for a wrong password and an unknown name.
Error rejected() {
    return Error{Errc::auth_rejected, "wrong username or password"};
}

Status check_source(std::string_view source) {
    if (source.empty() || source.size() > max_source_length) {
        return Error{Errc::invalid_argument, "source address must be 1..255 bytes"};
    }
    return ok();
}

store::WallTime system_wall_clock() {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

}  // namespace

struct Authenticator::Impl {
    Impl(store::CredentialStore& s, const PasswordHasher& h, Rng& r, const Clock& c, AuthConfig cfg)
        : store(s),
          hasher(h),
          rng(r),
          clock(c),
          config(std::move(cfg)),
          known(config.throttle.known_address_ttl, config.throttle.max_tracked) {
        if (!config.wall_clock) {
            config.wall_clock = system_wall_clock;
        }
    }

    store::CredentialStore& store;
    const PasswordHasher& hasher;
    detail::LockedRng rng;
    const Clock& clock;
    AuthConfig config;
    std::string dummy_hash;
    detail::RecentSuccesses known;  // pair_key() of recent successful logins: the owner's known addresses

    // Throttle keys in the credential store, shared by every node on it; a name never holds a space, and each
    // kind has its own prefix.
    static std::string pair_key(const std::string& name, const std::string& source) {
        return "p " + name + ' ' + source;  // per (account, source address)
    }
    static std::string address_key(const std::string& source) { return "a " + source; }
    static std::string unknown_name_key(const std::string& name) { return "n " + name; }

    /// How long `key` must still wait at `now` under `limits`.
    Result<Duration> key_wait(const std::string& key, const ThrottleLimits& limits, store::WallTime now) {
        SIM_TRY(const auto state, store.find_key_failures(key));
        return detail::wait_time(limits, state, now);
    }

    /// Count a failure of `key`.
    Status record_key(const std::string& key, const ThrottleLimits& limits, store::WallTime now) {
        SIM_TRY_STATUS(store.record_key_failure(key, now, limits.forget_after));
        return ok();
    }

    /// A successful login or registration of `name` from `source`: its own pair count goes, the address becomes
    /// known. The account-wide count stays (it is a guesser's, from addresses the owner does not use).
    Status note_success(const std::string& name, const std::string& source) {
        const auto key = pair_key(name, source);
        known.remember(key, clock.now());
        return store.clear_key_failures(key);
    }

    /// Validate a login's input before any database work.
    Result<std::string> check_input(std::string_view username, std::string_view password, std::string_view source) {
        SIM_TRY(auto name, canonical_username(username));
        SIM_TRY_STATUS(check_password(password));
        SIM_TRY_STATUS(check_source(source));
        return name;
    }

    /// Count a failed attempt against the source, and the account (or the unknown name) from that source; from
    /// an address the account does not know, also against the account as a whole. Then forget the keys no limit
    /// remembers any more, which bounds the store's table to the failures of the longest forget_after.
    Status count_failure(const std::string& name, bool has_account, const std::string& source, bool known_source,
                         store::WallTime now) {
        SIM_TRY_STATUS(count_failure_keys(name, has_account, source, known_source, now));
        const auto longest = std::max(config.throttle.account.forget_after, config.throttle.address.forget_after);
        SIM_TRY_STATUS(store.purge_key_failures(now - std::chrono::ceil<std::chrono::milliseconds>(longest)));
        return ok();
    }

    Status count_failure_keys(const std::string& name, bool has_account, const std::string& source,
                              bool known_source, store::WallTime now) {
        const auto& limits = config.throttle;
        SIM_TRY_STATUS(record_key(address_key(source), limits.address, now));
        if (!has_account) {
            return record_key(unknown_name_key(name), limits.account, now);
        }
        SIM_TRY_STATUS(record_key(pair_key(name, source), limits.account, now));
        if (known_source) {
            return ok();
        }
        auto st = store.record_failure(name, now, limits.account.forget_after);
        if (!st && st.code() == Errc::user_not_found) {
            return record_key(unknown_name_key(name), limits.account, now);  // deleted meanwhile
        }
        if (!st) {
            return std::move(st).error();
        }
        return ok();
    }

    /// Verify `password` for `name`: throttling, dummy work for unknown names, failure bookkeeping. On success
    /// `stored` holds the hash that verified. `create_unknown` implements open registration.
    LoginResult authenticate(const std::string& name, std::string_view password, const std::string& source,
                             bool create_unknown, std::string& stored) {
        const auto now = config.wall_clock();
        const auto& limits = config.throttle;
        auto address_wait = key_wait(address_key(source), limits.address, now);
        if (!address_wait) {
            return failure(std::move(address_wait).error());
        }
        const bool known_source = known.contains(pair_key(name, source), clock.now());
        auto found = store.find_user(name);
        if (!found) {
            return failure(std::move(found).error());
        }
        auto& user = found.value();
        if (!user && create_unknown) {
            if (address_wait.value() > Duration::zero()) {
                return throttled(address_wait.value());
            }
            auto created = create(name, password);
            if (created) {
                SIM_TRY_LOGIN(note_success(name, source));
                return success(LoginOutcome{name, true, false});
            }
            if (created.code() != Errc::user_exists) {
                return failure(created.error());
            }
            // Another login created the name meanwhile: verify against that account instead.
            auto again = store.find_user(name);
            if (!again) {
                return failure(std::move(again).error());
            }
            user = std::move(again.value());
            if (!user) {
                return failure(Error{Errc::storage_error, "account vanished during registration"});
            }
        }
        auto account_wait = key_wait(user ? pair_key(name, source) : unknown_name_key(name), limits.account, now);
        if (!account_wait) {
            return failure(std::move(account_wait).error());
        }
        auto wait = std::max(address_wait.value(), account_wait.value());
        if (user && !known_source) {
            wait = std::max(wait, detail::wait_time(limits.account, user->failures, now));
        }
        if (wait > Duration::zero()) {
            return throttled(wait);
        }
        if (!user) {
            // The same work as a real check, so the time taken does not tell whether the name exists.
            (void)hasher.verify(password, dummy_hash);
            SIM_TRY_LOGIN(count_failure(name, false, source, known_source, now));
            return failure(rejected());
        }
        auto verified = hasher.verify(password, user->password_hash);
        if (!verified) {
            return failure(std::move(verified).error());
        }
        if (!verified.value()) {
            SIM_TRY_LOGIN(count_failure(name, true, source, known_source, now));
            return failure(rejected());
        }
        SIM_TRY_LOGIN(note_success(name, source));
        stored = user->password_hash;
        return success(LoginOutcome{name, false, false});
    }

    /// Hash and create an account.
    Status create(const std::string& name, std::string_view password) {
        SIM_TRY(const auto hash, hasher.hash(password, rng));
        return store.create_user(name, hash);
    }

    /// Opportunistic upgrade of a hash that verified; a failure here never fails the login.
    bool maybe_rehash(const std::string& name, std::string_view password, const std::string& stored) {
        if (!hasher.needs_rehash(stored)) {
            return false;
        }
        auto fresh = hasher.hash(password, rng);
        if (!fresh) {
            return false;
        }
        // Compare-and-swap: a password changed concurrently is not overwritten with the old one.
        auto replaced = store.replace_hash(name, fresh.value(), stored);
        return replaced && replaced.value();
    }
};

Authenticator::Authenticator(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
Authenticator::~Authenticator() = default;

Result<std::unique_ptr<Authenticator>> Authenticator::create(store::CredentialStore& store,
                                                             const PasswordHasher& hasher, Rng& rng, const Clock& clock,
                                                             AuthConfig config) {
    SIM_TRY_STATUS(detail::validate(config.throttle));
    auto impl = std::make_unique<Impl>(store, hasher, rng, clock, std::move(config));
    // A random password nobody knows: verifying against its hash costs what a real check costs.
    const auto secret = impl->rng.bytes(24);
    std::string dummy_password;
    for (const auto b : secret) {
        dummy_password.push_back(static_cast<char>('a' + b % 26));
    }
    auto dummy = hasher.hash(dummy_password, impl->rng);
    secure_zero(dummy_password.data(), dummy_password.size());
    if (!dummy) {
        return std::move(dummy).error();
    }
    impl->dummy_hash = std::move(dummy.value());
    return std::unique_ptr<Authenticator>(new Authenticator(std::move(impl)));
}

LoginResult Authenticator::login(std::string_view username, std::string_view password, std::string_view source) {
    auto& d = *m_impl;
    auto name = d.check_input(username, password, source);
    if (!name) {
        return failure(std::move(name).error());
    }
    const bool open = d.config.registration == RegistrationPolicy::open;
    std::string stored;
    auto result = d.authenticate(name.value(), password, std::string(source), open, stored);
    if (result.ok() && !result.outcome->created) {
        result.outcome->rehashed = d.maybe_rehash(name.value(), password, stored);
    }
    return result;
}

LoginResult Authenticator::register_user(std::string_view username, std::string_view password,
                                         std::string_view source) {
    auto& d = *m_impl;
    if (d.config.registration == RegistrationPolicy::closed) {
        return failure(Error{Errc::registration_closed, "accounts are created by an administrator"});
    }
    auto name = d.check_input(username, password, source);
    if (!name) {
        return failure(std::move(name).error());
    }
    auto wait = d.key_wait(Impl::address_key(std::string(source)), d.config.throttle.address, d.config.wall_clock());
    if (!wait) {
        return failure(std::move(wait).error());
    }
    if (wait.value() > Duration::zero()) {
        return throttled(wait.value());
    }
    SIM_TRY_LOGIN(d.create(name.value(), password));
    SIM_TRY_LOGIN(d.note_success(name.value(), std::string(source)));
    return success(LoginOutcome{std::move(name.value()), true, false});
}

LoginResult Authenticator::change_password(std::string_view username, std::string_view old_password,
                                           std::string_view new_password, std::string_view source) {
    auto& d = *m_impl;
    SIM_TRY_LOGIN(check_password(new_password));
    auto name = d.check_input(username, old_password, source);
    if (!name) {
        return failure(std::move(name).error());
    }
    std::string stored;
    auto result = d.authenticate(name.value(), old_password, std::string(source), false, stored);
    if (!result.ok()) {
        return result;
    }
    auto fresh = d.hasher.hash(new_password, d.rng);
    if (!fresh) {
        return failure(std::move(fresh).error());
    }
    auto replaced = d.store.replace_hash(name.value(), fresh.value(), stored);
    if (!replaced) {
        return failure(std::move(replaced).error());
    }
    if (!replaced.value()) {
        return failure(Error{Errc::invalid_state, "password was changed concurrently; try again"});
    }
    return result;
}

Status Authenticator::admin_create_user(std::string_view username, std::string_view password) {
    SIM_TRY(const auto name, canonical_username(username));
    SIM_TRY_STATUS(check_password(password));
    return m_impl->create(name, password);
}

Status Authenticator::admin_set_password(std::string_view username, std::string_view password) {
    auto& d = *m_impl;
    SIM_TRY(const auto name, canonical_username(username));
    SIM_TRY_STATUS(check_password(password));
    SIM_TRY(const auto user, d.store.find_user(name));
    if (!user) {
        return Error{Errc::user_not_found, "no such account"};
    }
    SIM_TRY(const auto hash, d.hasher.hash(password, d.rng));
    SIM_TRY(const bool replaced, d.store.replace_hash(name, hash, std::nullopt));
    if (!replaced) {
        return Error{Errc::user_not_found, "no such account"};
    }
    return d.store.clear_failures(name);
}

Status Authenticator::delete_user(std::string_view username) {
    SIM_TRY(const auto name, canonical_username(username));
    return m_impl->store.delete_user(name);
}

Result<std::vector<std::string>> Authenticator::list_users() {
    return m_impl->store.list_users();
}

const AuthConfig& Authenticator::config() const noexcept {
    return m_impl->config;
}

}  // namespace sim::auth
