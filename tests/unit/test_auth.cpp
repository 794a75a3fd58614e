// Accounts: username rules, the login flow (registration policies, re-hash, dummy work), throttling and its
// recovery, session tokens and sealed conversation keys, over the in-memory backend.
#include <doctest/doctest.h>

#include <sim/auth.h>
#include <sim/crypto.h>
#include <sim/store.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <thread>

using namespace std::chrono_literals;
using sim::Errc;
using sim::auth::AuthConfig;
using sim::auth::Authenticator;
using sim::auth::RegistrationPolicy;

namespace {

/// Counts the calls that reach the store (to prove that bad input does no database work).
class CountingStore final : public sim::store::CredentialStore {
public:
    explicit CountingStore(sim::store::CredentialStore& inner) : m_inner(inner) {}
    std::atomic<int> calls{0};

    sim::Status create_user(std::string_view u, std::string_view h) override {
        ++calls;
        return m_inner.create_user(u, h);
    }
    sim::Result<std::optional<sim::store::UserRecord>> find_user(std::string_view u) override {
        ++calls;
        return m_inner.find_user(u);
    }
    sim::Result<bool> replace_hash(std::string_view u, std::string_view h,
                                   std::optional<std::string_view> old) override {
        ++calls;
        return m_inner.replace_hash(u, h, old);
    }
    sim::Result<sim::store::FailureState> record_failure(std::string_view u, sim::store::WallTime now,
                                                         sim::Duration f) override {
        ++calls;
        return m_inner.record_failure(u, now, f);
    }
    sim::Result<sim::store::FailureState> record_key_failure(std::string_view k, sim::store::WallTime now,
                                                             sim::Duration f) override {
        ++calls;
        return m_inner.record_key_failure(k, now, f);
    }
    sim::Result<sim::store::FailureState> find_key_failures(std::string_view k) override {
        ++calls;
        return m_inner.find_key_failures(k);
    }
    sim::Status clear_key_failures(std::string_view k) override {
        ++calls;
        return m_inner.clear_key_failures(k);
    }
    sim::Result<std::size_t> purge_key_failures(sim::store::WallTime before) override {
        ++calls;
        return m_inner.purge_key_failures(before);
    }
    sim::Status clear_failures(std::string_view u) override {
        ++calls;
        return m_inner.clear_failures(u);
    }
    sim::Status delete_user(std::string_view u) override {
        ++calls;
        return m_inner.delete_user(u);
    }
    sim::Result<std::vector<std::string>> list_users() override {
        ++calls;
        return m_inner.list_users();
    }

private:
    sim::store::CredentialStore& m_inner;
};

/// Wraps a hasher: counts verify calls and can run a hook inside verify.
class SpyHasher final : public sim::auth::PasswordHasher {
public:
    explicit SpyHasher(const sim::auth::PasswordHasher& inner) : m_inner(inner) {}
    mutable std::atomic<int> verifies{0};
    std::function<void()> on_verify;

    sim::Result<std::string> hash(std::string_view pw, sim::Rng& rng) const override { return m_inner.hash(pw, rng); }
    sim::Result<bool> verify(std::string_view pw, std::string_view stored) const override {
        ++verifies;
        if (on_verify) {
            on_verify();
        }
        return m_inner.verify(pw, stored);
    }
    bool needs_rehash(std::string_view stored) const override { return m_inner.needs_rehash(stored); }

private:
    const sim::auth::PasswordHasher& m_inner;
};

std::unique_ptr<sim::auth::PasswordHasher> bcrypt_hasher(unsigned cost = 4) {
    sim::auth::HashPolicy p;
    p.bcrypt.cost = cost;
    return sim::auth::make_password_hasher(p).value();
}

std::unique_ptr<sim::auth::PasswordHasher> argon2_hasher() {
    sim::auth::HashPolicy p;
    p.algorithm = sim::auth::HashAlgorithm::argon2id;
    p.argon2.memory_kib = 64;
    p.argon2.iterations = 1;
    return sim::auth::make_password_hasher(p).value();
}

/// The wall clock of a test: a fixed date plus the manual clock's time, so advancing one advances the other.
std::function<sim::store::WallTime()> wall_of(const sim::ManualClock& clock) {
    return [&clock] {
        using std::chrono::milliseconds;
        return sim::store::WallTime{milliseconds{1'700'000'000'000}} +
               std::chrono::floor<milliseconds>(clock.now().time_since_epoch());
    };
}

/// Everything a test needs around an authenticator.
struct Fixture {
    explicit Fixture(RegistrationPolicy policy = RegistrationPolicy::open, AuthConfig config = {})
        : backend(sim::store::make_memory_backend()),
          hasher(bcrypt_hasher()),
          rng(sim::make_deterministic_rng(sim::as_bytes("test_auth"))) {
        config.registration = policy;
        config.wall_clock = wall_of(clock);
        auth = Authenticator::create(*backend, *hasher, *rng, clock, config).value();
    }
    std::unique_ptr<sim::store::Backend> backend;
    std::unique_ptr<sim::auth::PasswordHasher> hasher;
    std::unique_ptr<sim::Rng> rng;
    sim::ManualClock clock;
    std::unique_ptr<Authenticator> auth;

    std::string stored_hash(const std::string& name) { return backend->find_user(name).value()->password_hash; }
};

}  // namespace

TEST_CASE("usernames: documented character set and length, case-insensitive, canonical form") {
    using sim::auth::canonical_username;
    CHECK(canonical_username("Alice").value() == "alice");
    CHECK(canonical_username("a.b_c-9").value() == "a.b_c-9");
    CHECK(canonical_username("abc").value() == "abc");
    CHECK(canonical_username(std::string(32, 'X')).value() == std::string(32, 'x'));
    const std::vector<std::string> bad = {
        "",
        "ab",
        std::string(33, 'a'),
        "al ice",
        "al@ice",
        "al/ice",
        "\xc3\xa4lice",
        std::string("ali\0ce", 6),
        ".alice",
        "alice-",
        "_x_",
        "Server",
        "SERVER",
        "server",
        "alice\n",
    };
    for (const auto& name : bad) {
        INFO(name);
        const auto r = canonical_username(name);
        REQUIRE(r.code() == Errc::bad_username);
        CHECK_FALSE(r.error().detail.empty());
        if (name.size() >= 3) {
            CHECK(r.error().detail.find(name) == std::string::npos);  // the detail never quotes the name
        }
    }
}

TEST_CASE("passwords: non-empty, at most 1024 bytes, no NUL") {
    using sim::auth::check_password;
    CHECK(check_password("x").has_value());
    CHECK(check_password(std::string(1024, 'x')).has_value());
    CHECK(check_password("").code() == Errc::bad_password);
    CHECK(check_password(std::string(1025, 'x')).code() == Errc::bad_password);
    CHECK(check_password(std::string("a\0b", 3)).code() == Errc::bad_password);
}

TEST_CASE("first login registers the account (the seed's open policy)") {
    Fixture f;
    const auto first = f.auth->login("Alice", "s3cret", "10.0.0.1");
    REQUIRE(first.ok());
    CHECK(first.outcome->username == "alice");
    CHECK(first.outcome->created);
    CHECK(f.stored_hash("alice").rfind("$bcrypt-sha256$", 0) == 0);  // salted hash, not the password
    const auto again = f.auth->login("ALICE", "s3cret", "10.0.0.1");
    REQUIRE(again.ok());
    CHECK_FALSE(again.outcome->created);
    CHECK_FALSE(again.outcome->rehashed);
    const auto wrong = f.auth->login("alice", "s3cret!", "10.0.0.1");
    CHECK(wrong.code() == Errc::auth_rejected);
    CHECK(wrong.retry_after == sim::Duration::zero());
    CHECK(f.auth->list_users().value() == std::vector<std::string>{"alice"});
}

TEST_CASE("explicit registration: unknown names fail like wrong passwords, with the same work") {
    Fixture f(RegistrationPolicy::explicit_request);
    SpyHasher spy(*f.hasher);
    auto auth = Authenticator::create(*f.backend, spy, *f.rng, f.clock,
                                      AuthConfig{RegistrationPolicy::explicit_request, {}, wall_of(f.clock)})
                    .value();
    REQUIRE(auth->register_user("bob", "hunter22", "10.0.0.1").ok());
    CHECK(auth->register_user("BOB", "other", "10.0.0.1").code() == Errc::user_exists);

    spy.verifies = 0;
    const auto unknown = auth->login("nobody", "hunter22", "10.0.0.2");
    CHECK(spy.verifies == 1);  // checked against the dummy hash
    spy.verifies = 0;
    const auto wrong = auth->login("bob", "hunter23", "10.0.0.3");
    CHECK(spy.verifies == 1);
    CHECK(unknown.code() == Errc::auth_rejected);
    CHECK(wrong.code() == Errc::auth_rejected);
    CHECK(unknown.outcome.error().detail == wrong.outcome.error().detail);
    CHECK(f.backend->find_user("nobody").value() == std::nullopt);  // no account appeared

    const auto good = auth->login("Bob", "hunter22", "10.0.0.1");
    REQUIRE(good.ok());
    CHECK_FALSE(good.outcome->created);
}

TEST_CASE("closed registration: only the administrator creates accounts") {
    Fixture f(RegistrationPolicy::closed);
    CHECK(f.auth->register_user("carol", "pw-carol", "10.0.0.1").code() == Errc::registration_closed);
    CHECK(f.auth->login("carol", "pw-carol", "10.0.0.1").code() == Errc::auth_rejected);
    REQUIRE(f.auth->admin_create_user("Carol", "pw-carol").has_value());
    CHECK(f.auth->admin_create_user("carol", "x").code() == Errc::user_exists);
    CHECK(f.auth->login("carol", "pw-carol", "10.0.0.1").ok());
}

TEST_CASE("bad usernames, passwords and sources are rejected before any database work") {
    auto backend = sim::store::make_memory_backend();
    CountingStore counting(*backend);
    const auto hasher = bcrypt_hasher();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("bad input"));
    sim::ManualClock clock;
    auto auth = Authenticator::create(counting, *hasher, *rng, clock).value();
    CHECK(auth->login("a b", "pw", "10.0.0.1").code() == Errc::bad_username);
    CHECK(auth->login("x", "pw", "10.0.0.1").code() == Errc::bad_username);
    CHECK(auth->login(std::string(33, 'a'), "pw", "10.0.0.1").code() == Errc::bad_username);
    CHECK(auth->login("server", "pw", "10.0.0.1").code() == Errc::bad_username);
    CHECK(auth->login("alice", "", "10.0.0.1").code() == Errc::bad_password);
    CHECK(auth->login("alice", std::string(2000, 'p'), "10.0.0.1").code() == Errc::bad_password);
    CHECK(auth->login("alice", "pw", "").code() == Errc::invalid_argument);
    CHECK(auth->login("alice", "pw", std::string(256, '1')).code() == Errc::invalid_argument);
    CHECK(auth->register_user("-alice", "pw", "10.0.0.1").code() == Errc::bad_username);
    CHECK(auth->admin_create_user("al!ce", "pw").code() == Errc::bad_username);
    CHECK(auth->change_password("alice", "pw", "", "10.0.0.1").code() == Errc::bad_password);
    CHECK(counting.calls == 0);
}

TEST_CASE("a login re-hashes transparently when the policy changed") {
    auto backend = sim::store::make_memory_backend();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("rehash"));
    sim::ManualClock clock;
    const auto cost4 = bcrypt_hasher(4);
    const auto cost5 = bcrypt_hasher(5);
    const auto argon = argon2_hasher();
    REQUIRE(Authenticator::create(*backend, *cost4, *rng, clock).value()->login("dave", "pw-dave", "h").ok());
    const auto old_hash = backend->find_user("dave").value()->password_hash;
    CHECK(old_hash.rfind("$bcrypt-sha256$v=2,t=2b,r=4$", 0) == 0);

    auto auth5 = Authenticator::create(*backend, *cost5, *rng, clock).value();
    const auto r1 = auth5->login("dave", "pw-dave", "h");
    REQUIRE(r1.ok());
    CHECK(r1.outcome->rehashed);
    CHECK(backend->find_user("dave").value()->password_hash.rfind("$bcrypt-sha256$v=2,t=2b,r=5$", 0) == 0);
    const auto r2 = auth5->login("dave", "pw-dave", "h");
    REQUIRE(r2.ok());
    CHECK_FALSE(r2.outcome->rehashed);
    CHECK(auth5->login("dave", "wrong", "h").code() == Errc::auth_rejected);

    // bcrypt -> Argon2id, and accounts hashed either way keep working.
    auto auth_a = Authenticator::create(*backend, *argon, *rng, clock).value();
    REQUIRE(auth_a->admin_create_user("erin", "pw-erin").has_value());
    const auto r3 = auth_a->login("dave", "pw-dave", "h");
    REQUIRE(r3.ok());
    CHECK(r3.outcome->rehashed);
    CHECK(backend->find_user("dave").value()->password_hash.rfind("$argon2id$", 0) == 0);
    CHECK(auth5->login("erin", "pw-erin", "h").ok());  // an Argon2id account under a bcrypt policy

    // The seed's raw bcrypt hashes log in and are upgraded.
    const auto legacy = sim::crypto::bcrypt_hash("pw-frank", 4, *rng).value();
    REQUIRE(backend->create_user("frank", legacy).has_value());
    const auto r4 = auth5->login("frank", "pw-frank", "h");
    REQUIRE(r4.ok());
    CHECK(r4.outcome->rehashed);
    CHECK(backend->find_user("frank").value()->password_hash.rfind("$bcrypt-sha256$v=2,t=2b,r=5$", 0) == 0);
}

TEST_CASE("a re-hash never overwrites a password changed meanwhile") {
    auto backend = sim::store::make_memory_backend();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("cas"));
    sim::ManualClock clock;
    const auto cost4 = bcrypt_hasher(4);
    const auto cost5 = bcrypt_hasher(5);
    REQUIRE(Authenticator::create(*backend, *cost4, *rng, clock).value()->admin_create_user("gina", "old-pw"));
    SpyHasher spy(*cost5);
    auto auth = Authenticator::create(*backend, spy, *rng, clock).value();
    const auto changed = cost4->hash("new-pw", *rng).value();
    spy.on_verify = [&] { REQUIRE(backend->replace_hash("gina", changed, std::nullopt).value()); };
    const auto r = auth->login("gina", "old-pw", "h");
    REQUIRE(r.ok());                   // the old password was right when it was checked
    CHECK_FALSE(r.outcome->rehashed);  // but the re-hash lost the compare-and-swap
    CHECK(backend->find_user("gina").value()->password_hash == changed);
}

TEST_CASE("the 72-byte case through the login flow") {
    Fixture f;
    const std::string prefix(72, 'k');
    REQUIRE(f.auth->login("hank", prefix + "-first", "h").ok());
    CHECK(f.auth->login("hank", prefix + "-second", "h").code() == Errc::auth_rejected);
    CHECK(f.auth->login("hank", prefix, "h").code() == Errc::auth_rejected);
    CHECK(f.auth->login("hank", prefix + "-first", "h").ok());
}

TEST_CASE("account throttling: growing delays, a bounded lockout, recovery after a wait or quiet") {
    Fixture f(RegistrationPolicy::explicit_request);
    REQUIRE(f.auth->admin_create_user("ivy", "right-pw"));
    int src = 0;
    const auto next_source = [&] { return "10.1.0." + std::to_string(++src); };  // defeat the address limit
    for (int i = 0; i < 5; ++i) {
        CHECK(f.auth->login("ivy", "wrong", next_source()).code() == Errc::auth_rejected);
    }
    // Free failures spent: now each attempt must wait 1 s, 2 s, 4 s... after the previous failure.
    auto r = f.auth->login("ivy", "wrong", next_source());
    CHECK(r.code() == Errc::throttled);
    CHECK(r.retry_after == 1s);
    // While throttled, even the right password is not checked.
    CHECK(f.auth->login("ivy", "right-pw", next_source()).code() == Errc::throttled);
    f.clock.advance(1s);
    CHECK(f.auth->login("ivy", "wrong", next_source()).code() == Errc::auth_rejected);
    r = f.auth->login("ivy", "wrong", next_source());
    CHECK(r.code() == Errc::throttled);
    CHECK(r.retry_after == 2s);
    f.clock.advance(500ms);
    CHECK(f.auth->login("ivy", "wrong", next_source()).retry_after == 1500ms);
    // Keep failing as fast as allowed: the wait never exceeds the 60 s cap.
    for (int i = 0; i < 30; ++i) {
        auto t = f.auth->login("ivy", "wrong", next_source());
        if (t.code() == Errc::throttled) {
            CHECK(t.retry_after <= 60s);
            f.clock.advance(t.retry_after);
        }
    }
    r = f.auth->login("ivy", "wrong", next_source());
    REQUIRE(r.code() == Errc::throttled);
    CHECK(r.retry_after == 60s);
    // The real user waits at most that long, then gets in; the success does not give the guesser new free
    // failures (the account-wide count is not reset).
    f.clock.advance(r.retry_after);
    REQUIRE(f.auth->login("ivy", "right-pw", next_source()).ok());
    CHECK(f.backend->find_user("ivy").value()->failures.count > 20);
    CHECK(f.auth->login("ivy", "wrong", next_source()).code() == Errc::auth_rejected);
    CHECK(f.auth->login("ivy", "wrong", next_source()).retry_after == 60s);
    // A quiet hour forgets the failures.
    f.clock.advance(1h);
    for (int i = 0; i < 5; ++i) {
        CHECK(f.auth->login("ivy", "wrong", next_source()).code() == Errc::auth_rejected);
    }
    // A clock that went backwards (set back, or another node's clock behind) does not extend a lockout.
    CHECK(f.auth->login("ivy", "wrong", next_source()).code() == Errc::throttled);
    f.clock.set(sim::TimePoint{});
    CHECK(f.auth->login("ivy", "wrong", next_source()).code() == Errc::auth_rejected);
}

TEST_CASE("a guesser does not lock the owner out of a known address, and the owner does not reset the guesser") {
    Fixture f(RegistrationPolicy::explicit_request);
    REQUIRE(f.auth->admin_create_user("nora", "right-pw"));
    REQUIRE(f.auth->login("nora", "right-pw", "192.0.2.1").ok());  // the owner's usual address is now known
    // A guesser from one address, as fast as allowed for ten minutes.
    int guesses = 0;
    for (const auto end = f.clock.now() + 10min; f.clock.now() < end;) {
        const auto r = f.auth->login("nora", "guess", "198.51.100.66");
        if (r.code() == Errc::throttled) {
            // Mid-lockout, the owner from her known address gets in.
            CHECK(f.auth->login("nora", "right-pw", "192.0.2.1").ok());
            f.clock.advance(r.retry_after);
        } else {
            CHECK(r.code() == Errc::auth_rejected);
            ++guesses;
        }
    }
    CHECK(guesses > 5);
    // One more guess once it is allowed; right after it the guesser is throttled again, from its address and from
    // any new one: the owner's successes did not reset its count.
    for (auto r = f.auth->login("nora", "guess", "198.51.100.66"); r.code() == Errc::throttled;
         r = f.auth->login("nora", "guess", "198.51.100.66")) {
        f.clock.advance(r.retry_after);
    }
    CHECK(f.auth->login("nora", "guess", "198.51.100.66").code() == Errc::throttled);
    CHECK(f.auth->login("nora", "guess", "203.0.113.50").code() == Errc::throttled);
    // A new address of the owner's is throttled like the guesser's (the price of the account-wide count).
    CHECK(f.auth->login("nora", "right-pw", "203.0.113.51").code() == Errc::throttled);
    // The owner's own typos from her known address count there (and lift on her success), not account-wide.
    const auto account_count = f.backend->find_user("nora").value()->failures.count;
    for (int i = 0; i < 5; ++i) {
        CHECK(f.auth->login("nora", "typo", "192.0.2.1").code() == Errc::auth_rejected);
    }
    CHECK(f.auth->login("nora", "right-pw", "192.0.2.1").code() == Errc::throttled);
    CHECK(f.backend->find_user("nora").value()->failures.count == account_count);
    f.clock.advance(1s);
    CHECK(f.auth->login("nora", "right-pw", "192.0.2.1").ok());
    CHECK(f.auth->login("nora", "typo", "192.0.2.1").code() == Errc::auth_rejected);  // free failures again
    // Known addresses are forgotten after known_address_ttl (30 days): then the account-wide count applies.
    f.clock.advance(31 * 24h);
    for (int i = 0; i < 5; ++i) {
        CHECK(f.auth->login("nora", "guess", "198.51.100.66").code() == Errc::auth_rejected);
    }
    CHECK(f.auth->login("nora", "right-pw", "192.0.2.1").code() == Errc::throttled);
}

TEST_CASE("no account sees more than 100 failures in any hour (ASVS 2.2.1)") {
    Fixture f(RegistrationPolicy::explicit_request);
    REQUIRE(f.auth->admin_create_user("jack", "right-pw"));
    std::vector<sim::TimePoint> failures;
    int src = 0;
    const auto end = f.clock.now() + 3h;
    while (f.clock.now() < end) {
        ++src;
        const auto r =
            f.auth->login("jack", "guess", "10.2." + std::to_string(src / 200) + "." + std::to_string(src % 200));
        if (r.code() == Errc::throttled) {
            f.clock.advance(r.retry_after);
        } else {
            REQUIRE(r.code() == Errc::auth_rejected);
            failures.push_back(f.clock.now());
        }
    }
    std::size_t worst = 0;
    for (std::size_t i = 0, j = 0; i < failures.size(); ++i) {
        while (failures[i] - failures[j] >= 1h) {
            ++j;
        }
        worst = std::max(worst, i - j + 1);
    }
    CHECK(worst <= 100);
    CHECK(worst == sim::auth::worst_case_failures_per_hour(sim::auth::ThrottleLimits{}));
    CHECK(failures.size() > 150);  // throttled, not locked out: the attempts keep coming at the capped rate
}

TEST_CASE("throttle policies that allow more than 100 failures per hour are refused") {
    auto backend = sim::store::make_memory_backend();
    const auto hasher = bcrypt_hasher();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("policy"));
    sim::ManualClock clock;
    AuthConfig c;
    c.throttle.account.max_delay = 10s;  // 360 per hour in the long run
    CHECK(Authenticator::create(*backend, *hasher, *rng, clock, c).code() == Errc::invalid_argument);
    c = {};
    c.throttle.account.free_failures = 120;
    CHECK(Authenticator::create(*backend, *hasher, *rng, clock, c).code() == Errc::invalid_argument);
    c = {};
    c.throttle.account.forget_after = 30min;  // bursts twice an hour
    CHECK(Authenticator::create(*backend, *hasher, *rng, clock, c).code() == Errc::invalid_argument);
    c = {};
    c.throttle.address.base_delay = 0s;
    CHECK(Authenticator::create(*backend, *hasher, *rng, clock, c).code() == Errc::invalid_argument);
    CHECK(sim::auth::worst_case_failures_per_hour(sim::auth::ThrottleLimits{}) <= 100);
    sim::auth::ThrottleLimits fast{5, 1s, 10s, 1h};
    CHECK(sim::auth::worst_case_failures_per_hour(fast) > 100);
}

TEST_CASE("address throttling limits one source across accounts, not other sources") {
    Fixture f(RegistrationPolicy::explicit_request);
    REQUIRE(f.auth->admin_create_user("kate", "right-pw"));
    for (int i = 0; i < 20; ++i) {  // 20 free failures per address, spread over many names
        CHECK(f.auth->login("user" + std::to_string(i), "guess", "198.51.100.7").code() == Errc::auth_rejected);
    }
    const auto r = f.auth->login("kate", "right-pw", "198.51.100.7");
    CHECK(r.code() == Errc::throttled);
    CHECK(r.retry_after == 1s);
    CHECK(f.auth->login("kate", "right-pw", "203.0.113.9").ok());  // the real user elsewhere is not affected
    // A success from the address does not reset it (an attacker's own account cannot launder its guesses).
    f.clock.advance(1s);
    CHECK(f.auth->login("kate", "right-pw", "198.51.100.7").ok());
    CHECK(f.auth->login("kate", "wrong", "198.51.100.7").code() == Errc::auth_rejected);
    CHECK(f.auth->login("kate", "right-pw", "198.51.100.7").code() == Errc::throttled);
    // Registration from a throttled address is refused too.
    CHECK(f.auth->register_user("newbie", "pw", "198.51.100.7").code() == Errc::throttled);
}

TEST_CASE("an unknown name and a real name answer identically under attack") {
    Fixture f(RegistrationPolicy::explicit_request);
    REQUIRE(f.auth->admin_create_user("liam", "right-pw"));
    const auto run = [&](const std::string& name, const std::string& net) {
        std::vector<std::string> seen;
        for (int i = 0; i < 12; ++i) {
            const auto r = f.auth->login(name, "guess", net + std::to_string(i));
            seen.push_back(std::to_string(static_cast<int>(r.code())) + "|" + r.outcome.error().detail + "|" +
                           std::to_string(r.retry_after.count()));
            if (i % 3 == 2) {
                f.clock.advance(700ms);
            }
        }
        return seen;
    };
    const auto start = f.clock.now();
    const auto real = run("liam", "10.3.0.");
    f.clock.set(start);
    const auto ghost = run("ghost", "10.4.0.");
    CHECK(real == ghost);
}

TEST_CASE("throttle keys in the store are purged once no limit remembers them") {
    Fixture f(RegistrationPolicy::explicit_request);
    CHECK(f.auth->login("nobody", "x", "a-source").code() == Errc::auth_rejected);
    CHECK(f.backend->find_key_failures("a a-source").value().count == 1);
    CHECK(f.backend->find_key_failures("n nobody").value().count == 1);
    f.clock.advance(59min);
    CHECK(f.auth->login("other", "x", "b-source").code() == Errc::auth_rejected);
    CHECK(f.backend->find_key_failures("a a-source").value().count == 1);  // still within forget_after
    f.clock.advance(1min);
    CHECK(f.auth->login("other", "x", "c-source").code() == Errc::auth_rejected);
    CHECK(f.backend->find_key_failures("a a-source").value().count == 0);
    CHECK(f.backend->find_key_failures("n nobody").value().count == 0);
    CHECK(f.backend->find_key_failures("a b-source").value().count == 1);
}

TEST_CASE("the memory backend keeps a bounded number of throttle keys: the oldest goes") {
    auto backend = sim::store::make_memory_backend();
    const sim::store::WallTime t0{std::chrono::seconds(1'700'000'000)};
    constexpr int bound = 100000;
    for (int i = 0; i < bound; ++i) {
        REQUIRE(backend->record_key_failure("k" + std::to_string(i), t0 + std::chrono::milliseconds(i), 1h));
    }
    CHECK(backend->find_key_failures("k0").value().count == 1);
    REQUIRE(backend->record_key_failure("new", t0 + 1h, 1h));
    CHECK(backend->find_key_failures("k0").value().count == 0);
    CHECK(backend->find_key_failures("k1").value().count == 1);
    CHECK(backend->find_key_failures("new").value().count == 1);
}

TEST_CASE("change_password, admin_set_password, delete_user") {
    Fixture f(RegistrationPolicy::explicit_request);
    REQUIRE(f.auth->admin_create_user("mia", "first-pw"));
    CHECK(f.auth->change_password("mia", "nope", "second-pw", "h1").code() == Errc::auth_rejected);
    CHECK(f.backend->find_user("mia").value()->failures.count == 1);
    REQUIRE(f.auth->change_password("MIA", "first-pw", "second-pw", "h1").ok());
    CHECK(f.auth->login("mia", "first-pw", "h2").code() == Errc::auth_rejected);
    CHECK(f.auth->login("mia", "second-pw", "h3").ok());
    CHECK(f.auth->change_password("nobody", "x", "y", "h4").code() == Errc::auth_rejected);

    for (int i = 0; i < 6; ++i) {
        (void)f.auth->login("mia", "bad", "h" + std::to_string(10 + i));
    }
    CHECK(f.auth->login("mia", "second-pw", "h20").code() == Errc::throttled);
    REQUIRE(f.auth->admin_set_password("mia", "third-pw").has_value());  // also lifts the throttle
    CHECK(f.auth->login("mia", "third-pw", "h21").ok());
    CHECK(f.auth->admin_set_password("nobody", "x").code() == Errc::user_not_found);

    REQUIRE(f.auth->delete_user("Mia").has_value());
    CHECK(f.auth->delete_user("mia").code() == Errc::user_not_found);
    CHECK(f.auth->login("mia", "third-pw", "h22").code() == Errc::auth_rejected);
    CHECK(f.auth->list_users().value().empty());
}

TEST_CASE("passwords and hashes never appear in error details") {
    Fixture f(RegistrationPolicy::explicit_request);
    const std::string pw = "Sup3r-Secret-Passw0rd";
    REQUIRE(f.auth->admin_create_user("nina", pw));
    const auto hash = f.stored_hash("nina");
    std::vector<sim::Error> errors;
    const auto keep = [&](const sim::auth::LoginResult& r) {
        if (!r.ok()) {
            errors.push_back(r.outcome.error());
        }
    };
    keep(f.auth->login("nina", pw + "x", "h"));
    keep(f.auth->login("nina", std::string(2000, 'S'), "h"));
    keep(f.auth->login("nina" + pw, pw, "h"));
    keep(f.auth->register_user("nina", pw, "h"));
    keep(f.auth->change_password("nina", pw + "y", pw, "h"));
    REQUIRE(f.backend->replace_hash("nina", "$2b$99$" + pw, std::nullopt).value());
    keep(f.auth->login("nina", pw, "h2"));  // a damaged stored hash
    REQUIRE(errors.size() == 6);
    for (const auto& e : errors) {
        INFO(e.message());
        CHECK(e.message().find(pw) == std::string::npos);
        CHECK(e.message().find(hash) == std::string::npos);
        CHECK(e.message().find("nina") == std::string::npos);
    }
    CHECK(errors.back().code == Errc::bad_hash);
}

TEST_CASE("the authenticator is usable from several worker threads at once") {
    auto backend = sim::store::make_memory_backend();
    const auto hasher = bcrypt_hasher();
    auto rng = sim::make_system_rng();
    const sim::SteadyClock clock;
    auto auth = Authenticator::create(*backend, *hasher, *rng, clock).value();
    std::atomic<int> created{0};
    std::atomic<int> ok{0};
    std::vector<std::thread> workers;
    for (int t = 0; t < 4; ++t) {
        workers.emplace_back([&, t] {
            for (int i = 0; i < 10; ++i) {
                // Everyone races to create "shared" first; each thread also has its own account.
                const auto s = auth->login("shared", "shared-pw", "w" + std::to_string(t));
                const auto own = auth->login("user" + std::to_string(t), "pw", "w" + std::to_string(t));
                if (s.ok() && own.ok()) {
                    ++ok;
                    created += s.outcome->created ? 1 : 0;
                }
            }
        });
    }
    for (auto& w : workers) {
        w.join();
    }
    CHECK(ok == 40);
    CHECK(created == 1);
    CHECK(auth->list_users().value().size() == 5);
}

namespace {

/// A session-end log whose entries a test writes by hand (to commit them out of seq order, as MariaDB may).
class ScriptedLog final : public sim::store::SessionTokenStore {
public:
    std::map<std::uint64_t, std::string> entries;
    sim::Status put_token(sim::ByteView, std::string_view, sim::DeviceId, sim::store::WallTime) override {
        return sim::ok();
    }
    sim::Result<std::optional<sim::store::SessionRecord>> find_token(sim::ByteView) override {
        return std::optional<sim::store::SessionRecord>{};
    }
    sim::Result<bool> revoke_token(sim::ByteView) override { return false; }
    sim::Result<std::size_t> revoke_user_tokens(std::string_view) override { return std::size_t{0}; }
    sim::Result<std::size_t> purge_expired_tokens(sim::store::WallTime) override { return std::size_t{0}; }
    sim::Result<std::vector<sim::store::SessionEnd>> session_ends_after(std::uint64_t after,
                                                                        std::size_t limit) override {
        std::vector<sim::store::SessionEnd> out;
        for (auto it = entries.upper_bound(after); it != entries.end() && out.size() < limit; ++it) {
            out.push_back({it->first, it->second, 0});
        }
        return out;
    }
    sim::Result<std::uint64_t> last_session_end() override {
        return entries.empty() ? std::uint64_t{0} : entries.rbegin()->first;
    }
};

std::vector<std::string> names(const std::vector<sim::store::SessionEnd>& ended) {
    std::vector<std::string> out;
    for (const auto& e : ended) {
        out.push_back(e.username);
    }
    return out;
}

}  // namespace

TEST_CASE("session-end follower: each entry once, none from before start, late commits below the newest seen") {
    ScriptedLog log;
    log.entries = {{1, "old"}, {2, "older"}};
    sim::auth::SessionEndFollower f(log);
    REQUIRE(f.start());
    CHECK(f.poll().value().empty());  // what was logged before the server started ends no session now
    log.entries[3] = "ann";
    log.entries[5] = "ben";
    CHECK(names(f.poll().value()) == std::vector<std::string>{"ann", "ben"});
    CHECK(f.poll().value().empty());
    // seq 4 commits after 5 was read: it is still seen, once.
    log.entries[4] = "cat";
    CHECK(names(f.poll().value()) == std::vector<std::string>{"cat"});
    CHECK(f.poll().value().empty());
    // More entries than one read returns.
    for (std::uint64_t seq = 10; seq < 2510; ++seq) {
        log.entries[seq] = "u" + std::to_string(seq);
    }
    const auto many = f.poll().value();
    REQUIRE(many.size() == 2500);
    CHECK(many.front().username == "u10");
    CHECK(many.back().username == "u2509");
    CHECK(f.poll().value().empty());
    // Through a real store: revoking and deleting are logged.
    auto store = sim::store::make_memory_backend();
    REQUIRE(store->create_user("dan", "$h"));
    REQUIRE(store->revoke_user_tokens("dan"));
    sim::auth::SessionEndFollower g(*store);
    REQUIRE(g.start());
    REQUIRE(store->revoke_user_tokens("dan"));
    REQUIRE(store->delete_user("dan"));
    CHECK(names(g.poll().value()) == std::vector<std::string>{"dan", "dan"});
    // Removing a device logs that device only; revoking logs every device (0).
    REQUIRE(store->create_user("eve", "$h"));
    const auto second = store->add_device("eve", "phone", {}, {}, 4).value();
    REQUIRE(store->activate_device("eve", second, sim::Bytes(32, 1), {}));
    REQUIRE(store->remove_device("eve", second).value());
    REQUIRE(store->revoke_user_tokens("eve"));
    const auto ended = g.poll().value();
    REQUIRE(ended.size() == 2);
    CHECK(ended[0].username == "eve");
    CHECK(ended[0].device == second);
    CHECK(ended[1].device == 0);
}

TEST_CASE("session tokens: stored only as SHA-256, expiry, revocation") {
    auto backend = sim::store::make_memory_backend();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("tokens"));
    REQUIRE(backend->create_user("olga", "$hash").has_value());
    REQUIRE(backend->create_user("pete", "$hash").has_value());
    sim::auth::SessionTokens tokens(*backend, *rng);
    const sim::store::WallTime t0{std::chrono::milliseconds{1'700'000'000'000}};

    const auto a = tokens.issue("Olga", sim::first_device, t0, 1h).value();
    const auto b = tokens.issue("olga", sim::first_device, t0, 2h).value();
    const auto c = tokens.issue("pete", sim::first_device, t0, 1h).value();
    CHECK(a.token.size() == sim::auth::session_token_size);
    CHECK(a.token != b.token);
    CHECK(a.expires == t0 + 1h);
    CHECK(tokens.validate(a.token, t0).value().username == "olga");
    CHECK(tokens.validate(a.token, t0 + 1h - 1ms).value().username == "olga");
    // Only the hash is stored.
    CHECK(backend->find_token(sim::crypto::sha256(a.token)).value().has_value());
    CHECK_FALSE(backend->find_token(a.token).value().has_value());

    // Expired at the instant of expiry, and removed.
    CHECK(tokens.validate(a.token, t0 + 1h).code() == Errc::token_invalid);
    CHECK_FALSE(backend->find_token(sim::crypto::sha256(a.token)).value().has_value());

    // Wrong tokens.
    auto flipped = b.token;
    flipped[0] ^= 1U;
    CHECK(tokens.validate(flipped, t0).code() == Errc::token_invalid);
    CHECK(tokens.validate(sim::ByteView{b.token}.first(31), t0).code() == Errc::token_invalid);
    CHECK(tokens.validate({}, t0).code() == Errc::token_invalid);

    CHECK(tokens.revoke(b.token).value());
    CHECK_FALSE(tokens.revoke(b.token).value());
    CHECK(tokens.validate(b.token, t0).code() == Errc::token_invalid);

    const auto d = tokens.issue("pete", sim::first_device, t0, 1h).value();
    CHECK(tokens.revoke_all("pete").value() == 2);
    CHECK(tokens.validate(c.token, t0).code() == Errc::token_invalid);
    CHECK(tokens.validate(d.token, t0).code() == Errc::token_invalid);

    CHECK(tokens.issue("olga", sim::first_device, t0, 0s).code() == Errc::invalid_argument);
    CHECK(tokens.issue("nobody", sim::first_device, t0, 1h).code() == Errc::user_not_found);
    CHECK(tokens.issue("x", sim::first_device, t0, 1h).code() == Errc::bad_username);
}

TEST_CASE("conversation keys are sealed at rest and deleted when the conversation ends") {
    auto backend = sim::store::make_memory_backend();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("vault"));
    for (const auto* u : {"alice", "bob", "carol"}) {
        REQUIRE(backend->create_user(u, "$hash").has_value());
    }
    const auto master = rng->bytes(32);
    auto vault = sim::auth::ConversationKeyVault::create(*backend, master, *rng).value();
    const sim::store::WallTime t0{std::chrono::milliseconds{1'700'000'000'000}};
    const auto key = rng->bytes(24);  // the seed's TDES key size

    REQUIRE(vault->put("Bob", "alice", key, 1, t0).has_value());
    const auto got = vault->get("alice", "bob").value();
    REQUIRE(got.has_value());
    CHECK(got->user_a == "alice");
    CHECK(got->user_b == "bob");
    CHECK(sim::Bytes(got->key.begin(), got->key.end()) == key);
    CHECK(got->epoch == 1);
    CHECK(got->created == t0);

    // At rest: no trace of the key in the stored blob.
    const auto rec = backend->find_conversation_key("alice", "bob").value().value();
    CHECK(rec.sealed_key.size() == 1 + 32 + key.size() + 16);
    const auto blob = sim::to_string(rec.sealed_key);
    CHECK(blob.find(sim::to_string(key)) == std::string::npos);

    // Another master key, a flipped bit, a row moved to another pair or epoch: nothing opens.
    auto other = sim::auth::ConversationKeyVault::create(*backend, rng->bytes(32), *rng).value();
    CHECK(other->get("alice", "bob").code() == Errc::auth_failed);
    auto tampered = rec;
    tampered.sealed_key[40] ^= 0x01U;
    tampered.epoch = 2;
    REQUIRE(backend->put_conversation_key(tampered).has_value());
    CHECK(vault->get("alice", "bob").code() == Errc::auth_failed);
    auto moved = rec;
    moved.user_b = "carol";
    REQUIRE(backend->put_conversation_key(moved).has_value());
    CHECK(vault->get("alice", "carol").code() == Errc::auth_failed);
    auto bumped = rec;
    bumped.epoch = 3;
    REQUIRE(backend->put_conversation_key(bumped).has_value());
    CHECK(vault->get("alice", "bob").code() == Errc::auth_failed);

    // Rotation needs a higher epoch.
    REQUIRE(vault->put("alice", "bob", key, 4, t0 + 30s).has_value());
    CHECK(vault->get("alice", "bob").value()->epoch == 4);
    CHECK(vault->put("alice", "bob", key, 4, t0 + 60s).code() == Errc::stale_epoch);

    // The conversation ends.
    CHECK(vault->remove("bob", "alice").value());
    CHECK_FALSE(vault->get("alice", "bob").value().has_value());
    CHECK_FALSE(vault->remove("alice", "bob").value());

    CHECK(vault->put("alice", "alice", key, 1, t0).code() == Errc::invalid_argument);
    CHECK(vault->put("alice", "bob", {}, 1, t0).code() == Errc::invalid_argument);
    CHECK(vault->put("alice", "bob", sim::Bytes(65, 1), 1, t0).code() == Errc::invalid_argument);
    CHECK(vault->put("alice", "nobody", key, 1, t0).code() == Errc::user_not_found);
    CHECK(vault->put("alice", "x y", key, 1, t0).code() == Errc::bad_username);
    CHECK(sim::auth::ConversationKeyVault::create(*backend, rng->bytes(31), *rng).code() == Errc::invalid_key);
}
