// One conformance suite for every storage backend. The backend comes from the environment:
//   SIM_TEST_BACKEND=memory | sqlite | mariadb | postgresql
// The database servers (mariadb, postgresql) also need SIM_TEST_DB_URL, SIM_TEST_DB_SOCKET_URL and
// SIM_TEST_DB_RESTART (a command that restarts the server); tests/auth/run-with-db-server.sh starts a throwaway
// server and sets them. A backend that cannot be opened fails the run; nothing is skipped.
#include <doctest/doctest.h>

#include <sim/auth.h>
#include <sim/crypto.h>
#include <sim/store.h>

#ifdef SIM_TEST_HAVE_MARIADB
#include <mysql.h>
#endif
#ifdef SIM_TEST_HAVE_POSTGRES
#include <libpq-fe.h>
#endif

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <unistd.h>

using namespace std::chrono_literals;
using sim::Errc;
using sim::store::Backend;
using sim::store::FailureState;
using sim::store::SealedConversationKey;
using sim::store::WallTime;

namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v == nullptr ? std::string() : std::string(v);
}

std::string backend_kind() {
    const auto kind = env("SIM_TEST_BACKEND");
    return kind.empty() ? "memory" : kind;
}

/// Whether the selected backend is a database server (reached by URL, shared by every connection).
bool server_backend() {
    return backend_kind() == "mariadb" || backend_kind() == "postgresql";
}

/// Direct SQL on the test database for set-up (dropping tables, faking a newer schema, killing connections).
/// Never used by libsim itself.
class AdminConnection {
public:
    virtual ~AdminConnection() = default;
    /// Run statements; throws when the server refuses.
    virtual void exec(const std::string& sql) = 0;
    /// The first column of every row, as text.
    virtual std::vector<std::string> column(const std::string& sql) = 0;
    /// Kill every other connection of this user (the backend's); returns how many.
    virtual int kill_others() = 0;

    void drop_all() {
        exec(
            "DROP TABLE IF EXISTS sim_messages, sim_session_ends, sim_one_time_prekeys, sim_prekeys, sim_device_lists, "
            "sim_devices, "
            "sim_conversation_keys, sim_contacts, sim_sessions, sim_users, sim_throttle, sim_meta CASCADE");
    }
};

#ifdef SIM_TEST_HAVE_MARIADB
class MariaDbAdmin final : public AdminConnection {
public:
    MariaDbAdmin() {
        const auto url = env("SIM_TEST_DB_URL");
        // mariadb://user:password@host:port/db (the form scripts/mariadb-test-server.sh prints)
        const auto rest = url.substr(url.find("://") + 3);
        const auto at = rest.rfind('@');
        const auto userinfo = rest.substr(0, at);
        const auto hostpart = rest.substr(at + 1);
        const auto colon = userinfo.find(':');
        const auto user = userinfo.substr(0, colon);
        const auto password = userinfo.substr(colon + 1);
        const auto slash = hostpart.find('/');
        const auto hostport = hostpart.substr(0, slash);
        m_db = hostpart.substr(slash + 1);
        m_db = m_db.substr(0, m_db.find('?'));
        const auto pc = hostport.rfind(':');
        const auto host = hostport.substr(0, pc);
        const auto port = static_cast<unsigned>(std::stoul(hostport.substr(pc + 1)));
        m_mysql = mysql_init(nullptr);
        if (mysql_real_connect(m_mysql, host.c_str(), user.c_str(), password.c_str(), m_db.c_str(), port, nullptr, 0) ==
            nullptr) {
            throw std::runtime_error(std::string("admin connection failed: ") + mysql_error(m_mysql));
        }
    }
    ~MariaDbAdmin() override { mysql_close(m_mysql); }
    MariaDbAdmin(const MariaDbAdmin&) = delete;
    MariaDbAdmin& operator=(const MariaDbAdmin&) = delete;

    void exec(const std::string& sql) override { (void)column(sql); }
    std::vector<std::string> column(const std::string& sql) override {
        if (mysql_real_query(m_mysql, sql.data(), sql.size()) != 0) {
            throw std::runtime_error("admin query failed: " + std::string(mysql_error(m_mysql)));
        }
        std::vector<std::string> out;
        MYSQL_RES* res = mysql_store_result(m_mysql);
        if (res == nullptr) {
            return out;
        }
        while (MYSQL_ROW row = mysql_fetch_row(res)) {
            out.emplace_back(row[0] != nullptr ? row[0] : "");
        }
        mysql_free_result(res);
        return out;
    }
    int kill_others() override {
        const auto ids = column(
            "SELECT id FROM information_schema.processlist WHERE user = SUBSTRING_INDEX(USER(), '@', 1) "
            "AND id <> CONNECTION_ID()");
        for (const auto& id : ids) {
            exec("KILL CONNECTION " + id);
        }
        return static_cast<int>(ids.size());
    }

private:
    MYSQL* m_mysql = nullptr;
    std::string m_db;
};
#endif

#ifdef SIM_TEST_HAVE_POSTGRES
class PostgresAdmin final : public AdminConnection {
public:
    // libpq reads the URL the test server prints (postgresql://user:password@host:port/db) itself.
    PostgresAdmin() : m_pg(PQconnectdb(env("SIM_TEST_DB_URL").c_str())) {
        if (PQstatus(m_pg) != CONNECTION_OK) {
            const std::string why = PQerrorMessage(m_pg);
            PQfinish(m_pg);
            throw std::runtime_error("admin connection failed: " + why);
        }
        PQsetNoticeProcessor(
            m_pg, [](void*, const char*) {}, nullptr);
    }
    ~PostgresAdmin() override { PQfinish(m_pg); }
    PostgresAdmin(const PostgresAdmin&) = delete;
    PostgresAdmin& operator=(const PostgresAdmin&) = delete;

    void exec(const std::string& sql) override { (void)column(sql); }
    std::vector<std::string> column(const std::string& sql) override {
        PGresult* res = PQexec(m_pg, sql.c_str());
        const auto status = PQresultStatus(res);
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
            const std::string why = PQresultErrorMessage(res);
            PQclear(res);
            throw std::runtime_error("admin query failed: " + why);
        }
        std::vector<std::string> out;
        for (int r = 0; r < PQntuples(res); ++r) {
            out.emplace_back(PQgetvalue(res, r, 0));
        }
        PQclear(res);
        return out;
    }
    int kill_others() override {
        return static_cast<int>(
            column("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = current_user AND "
                   "datname = current_database() AND pid <> pg_backend_pid()")
                .size());
    }

private:
    PGconn* m_pg = nullptr;
};
#endif

/// An admin connection to the selected database server.
std::unique_ptr<AdminConnection> admin_connection() {
    REQUIRE_MESSAGE(!env("SIM_TEST_DB_URL").empty(), "SIM_TEST_DB_URL is not set");
#ifdef SIM_TEST_HAVE_MARIADB
    if (backend_kind() == "mariadb") {
        return std::make_unique<MariaDbAdmin>();
    }
#endif
#ifdef SIM_TEST_HAVE_POSTGRES
    if (backend_kind() == "postgresql") {
        return std::make_unique<PostgresAdmin>();
    }
#endif
    FAIL("this build has no support for SIM_TEST_BACKEND=" << backend_kind());
    return nullptr;
}

/// Restart the database server (SIM_TEST_DB_RESTART); every connection to it is cut.
void restart_server() {
    const auto cmd = env("SIM_TEST_DB_RESTART");
    REQUIRE_MESSAGE(!cmd.empty(), "SIM_TEST_DB_RESTART is not set");
    REQUIRE(std::system(cmd.c_str()) == 0);
}

/// A fresh, empty database of the selected kind, reachable again through `reopen()` (same data).
class TestDb {
public:
    TestDb() : m_kind(backend_kind()) {
        if (m_kind == "sqlite") {
            m_dir = std::filesystem::temp_directory_path() /
                    ("sim-conformance-" + std::to_string(::getpid()) + "-" + std::to_string(s_counter++));
            std::filesystem::remove_all(m_dir);
            std::filesystem::create_directories(m_dir);
        } else if (server_backend()) {
            admin_connection()->drop_all();
        } else {
            REQUIRE_MESSAGE(m_kind == "memory", "unknown SIM_TEST_BACKEND");
        }
        backend = open();
    }
    ~TestDb() {
        backend.reset();
        if (!m_dir.empty()) {
            std::filesystem::remove_all(m_dir);
        }
    }
    TestDb(const TestDb&) = delete;
    TestDb& operator=(const TestDb&) = delete;

    [[nodiscard]] bool persistent() const {
        return m_kind != "memory";
    }

    /// Another handle on the same database (a second connection); memory: a new empty backend.
    std::unique_ptr<Backend> open() {
        auto b = m_kind == "memory"   ? sim::store::open_backend("memory:")
                 : m_kind == "sqlite" ? sim::store::open_backend("sqlite:" + (m_dir / "sim.db").string())
                                      : sim::store::open_backend(env("SIM_TEST_DB_URL"));
        REQUIRE_MESSAGE(b.has_value(), (b.has_value() ? std::string() : b.error().message()));
        CHECK(b.value()->kind() == m_kind);
        return std::move(b).value();
    }
    void reopen() {
        backend.reset();
        backend = open();
    }

    std::unique_ptr<Backend> backend;

private:
    std::string m_kind;
    std::filesystem::path m_dir;
    static inline int s_counter = 0;
};

sim::Bytes token_hash(std::uint8_t seed) {
    sim::Bytes h(32);
    for (std::size_t i = 0; i < h.size(); ++i) {
        h[i] = static_cast<std::uint8_t>(seed * 31 + i * 7);  // includes 0x00 and high bytes
    }
    h[0] = 0;
    h[31] = 0xFF;
    return h;
}

SealedConversationKey conv(const std::string& a, const std::string& b, std::uint64_t epoch, std::size_t size = 40) {
    SealedConversationKey k;
    k.user_a = a;
    k.user_b = b;
    k.sealed_key.resize(size);
    for (std::size_t i = 0; i < size; ++i) {
        k.sealed_key[i] = static_cast<std::uint8_t>(epoch + i);
    }
    if (size != 0) {
        k.sealed_key[0] = 0;
    }
    k.epoch = epoch;
    k.created = WallTime{std::chrono::milliseconds{1'700'000'000'000 + static_cast<std::int64_t>(epoch % 1000)}};
    return k;
}

const WallTime t0{std::chrono::milliseconds{1'700'000'000'000}};

}  // namespace

TEST_CASE("users: create, find, duplicates, exact bytes, listing, deletion") {
    TestDb db;
    auto& s = *db.backend;
    CHECK(s.find_user("alice").value() == std::nullopt);
    REQUIRE(s.create_user("alice", "$hash-a").has_value());
    CHECK(s.create_user("alice", "$other").code() == Errc::user_exists);
    const auto a = s.find_user("alice").value();
    REQUIRE(a.has_value());
    CHECK(a->username == "alice");
    CHECK(a->password_hash == "$hash-a");
    CHECK(a->failures.count == 0);
    // Stores compare bytes: canonicalisation is the auth layer's job.
    CHECK(s.find_user("Alice").value() == std::nullopt);
    REQUIRE(s.create_user("Alice", "$hash-A").has_value());

    const std::string longest_name(sim::store::max_username_length, 'n');
    const std::string longest_hash(sim::store::max_hash_length, 'h');
    REQUIRE(s.create_user(longest_name, longest_hash).has_value());
    CHECK(s.find_user(longest_name).value()->password_hash == longest_hash);
    CHECK(s.create_user(longest_name + "n", "$h").code() == Errc::invalid_argument);
    CHECK(s.create_user("bob", longest_hash + "h").code() == Errc::invalid_argument);
    CHECK(s.create_user("", "$h").code() == Errc::invalid_argument);
    CHECK(s.create_user("bob", "").code() == Errc::invalid_argument);
    CHECK(s.find_user("").code() == Errc::invalid_argument);

    REQUIRE(s.create_user("bob", "$hash-b").has_value());
    CHECK(s.list_users().value() == std::vector<std::string>{"Alice", "alice", "bob", longest_name});
    REQUIRE(s.delete_user("alice").has_value());
    CHECK(s.delete_user("alice").code() == Errc::user_not_found);
    CHECK(s.find_user("alice").value() == std::nullopt);
    CHECK(s.list_users().value() == std::vector<std::string>{"Alice", "bob", longest_name});
}

TEST_CASE("users: replace_hash, unconditional and compare-and-swap") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("carol", "$h1").has_value());
    CHECK(s.replace_hash("carol", "$h2", std::nullopt).value());
    CHECK(s.find_user("carol").value()->password_hash == "$h2");
    CHECK_FALSE(s.replace_hash("carol", "$h3", std::string_view("$h1")).value());
    CHECK(s.find_user("carol").value()->password_hash == "$h2");
    CHECK(s.replace_hash("carol", "$h3", std::string_view("$h2")).value());
    CHECK(s.find_user("carol").value()->password_hash == "$h3");
    CHECK(s.replace_hash("carol", "$h3", std::nullopt).value());  // same value: still a match
    CHECK(s.replace_hash("nobody", "$h", std::nullopt).code() == Errc::user_not_found);
    CHECK(s.replace_hash("nobody", "$h", std::string_view("$x")).code() == Errc::user_not_found);
    CHECK(s.replace_hash("carol", "", std::nullopt).code() == Errc::invalid_argument);
}

TEST_CASE("users: failed-attempt bookkeeping") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("dave", "$h").has_value());
    const WallTime base{std::chrono::seconds(1'700'000'000)};
    auto f = s.record_failure("dave", base, 1h).value();
    CHECK(f.count == 1);
    CHECK(f.last_failure == base);
    f = s.record_failure("dave", base + 10s, 1h).value();
    CHECK(f.count == 2);
    f = s.record_failure("dave", base + 20s, 1h).value();
    CHECK(f.count == 3);
    CHECK(f.last_failure == base + 20s);
    const auto rec = s.find_user("dave").value();
    CHECK(rec->failures.count == 3);
    CHECK(rec->failures.last_failure == base + 20s);
    // Quiet for forget_after: the count restarts.
    f = s.record_failure("dave", base + 20s + 1h, 1h).value();
    CHECK(f.count == 1);
    f = s.record_failure("dave", base + 20s + 1h + 1ms, 1h).value();
    CHECK(f.count == 2);
    // A last failure in the future (a clock set back, another node's clock ahead) also restarts the count.
    f = s.record_failure("dave", base, 1h).value();
    CHECK(f.count == 1);
    CHECK(f.last_failure == base);
    // Large and zero clock values survive the round trip.
    const WallTime far{std::chrono::milliseconds{4'000'000'000'000'000}};
    f = s.record_failure("dave", far, 1h).value();
    CHECK(f.count == 1);
    CHECK(s.find_user("dave").value()->failures.last_failure == far);
    REQUIRE(s.clear_failures("dave").has_value());
    REQUIRE(s.clear_failures("dave").has_value());  // already clear: still fine
    CHECK(s.find_user("dave").value()->failures.count == 0);
    f = s.record_failure("dave", WallTime{}, 1h).value();
    CHECK(f.count == 1);
    CHECK(s.record_failure("nobody", base, 1h).code() == Errc::user_not_found);
    CHECK(s.clear_failures("nobody").code() == Errc::user_not_found);
}

TEST_CASE("throttle keys: counted like accounts, without an account, cleared and purged by age") {
    TestDb db;
    auto& s = *db.backend;
    const WallTime base{std::chrono::seconds(1'700'000'000)};
    const std::string addr = "a 192.0.2.1";
    CHECK(s.find_key_failures(addr).value() == FailureState{});
    auto f = s.record_key_failure(addr, base, 1h).value();
    CHECK(f == FailureState{1, base});
    f = s.record_key_failure(addr, base + 10s, 1h).value();
    CHECK(f == FailureState{2, base + 10s});
    CHECK(s.find_key_failures(addr).value() == FailureState{2, base + 10s});
    // Quiet for forget_after restarts the count; so does a last failure in the future.
    CHECK(s.record_key_failure(addr, base + 10s + 1h, 1h).value().count == 1);
    CHECK(s.record_key_failure(addr, base + 10s + 1h + 1ms, 1h).value().count == 2);
    CHECK(s.record_key_failure(addr, base, 1h).value() == FailureState{1, base});
    // Keys are exact bytes and independent of each other and of accounts.
    const std::string other = "a 192.0.2.10";
    CHECK(s.record_key_failure(other, base + 1s, 1h).value().count == 1);
    CHECK(s.record_key_failure(other, base + 2s, 1h).value().count == 2);
    CHECK(s.find_key_failures(addr).value().count == 1);
    CHECK(s.find_key_failures("A 192.0.2.1").value().count == 0);
    const std::string longest(sim::store::max_throttle_key_length, 'k');
    CHECK(s.record_key_failure(longest, base, 1h).value().count == 1);
    CHECK(s.find_key_failures(longest).value().count == 1);
    // Clearing one key leaves the others; clearing a missing key is fine.
    REQUIRE(s.clear_key_failures(addr).has_value());
    REQUIRE(s.clear_key_failures(addr).has_value());
    CHECK(s.find_key_failures(addr).value().count == 0);
    CHECK(s.find_key_failures(other).value().count == 2);
    // Purging forgets the keys whose last failure is at or before the bound, and only those.
    REQUIRE(s.record_key_failure(addr, base + 5s, 1h).has_value());
    CHECK(s.purge_key_failures(base + 2s).value() == 2);  // longest (at base) and other (at base + 2s)
    CHECK(s.find_key_failures(other).value().count == 0);
    CHECK(s.find_key_failures(longest).value().count == 0);
    CHECK(s.find_key_failures(addr).value() == FailureState{1, base + 5s});
    CHECK(s.purge_key_failures(base + 2s).value() == 0);
    // Bad keys are refused.
    CHECK(s.record_key_failure("", base, 1h).code() == Errc::invalid_argument);
    CHECK(s.record_key_failure(longest + "k", base, 1h).code() == Errc::invalid_argument);
    CHECK(s.find_key_failures("").code() == Errc::invalid_argument);
    CHECK(s.clear_key_failures(longest + "k").code() == Errc::invalid_argument);
}

TEST_CASE("session-end log: revoking a user's tokens and deleting a user log the user, in order") {
    TestDb db;
    auto& s = *db.backend;
    const auto start = s.last_session_end().value();
    CHECK(s.session_ends_after(start, 10).value().empty());
    REQUIRE(s.create_user("ann", "$h").has_value());
    REQUIRE(s.create_user("ben", "$h").has_value());
    CHECK(s.revoke_user_tokens("ann").value() == 0);  // logged even without tokens: password sessions end too
    REQUIRE(s.delete_user("ben").has_value());
    CHECK(s.delete_user("ben").code() == Errc::user_not_found);  // a failed delete logs nothing
    CHECK(s.revoke_user_tokens("ann").has_value());
    const auto log = s.session_ends_after(start, 10).value();
    REQUIRE(log.size() == 3);
    CHECK(log[0].username == "ann");
    CHECK(log[1].username == "ben");
    CHECK(log[2].username == "ann");
    CHECK(log[0].seq > start);
    CHECK(log[1].seq > log[0].seq);
    CHECK(log[2].seq > log[1].seq);
    CHECK(s.last_session_end().value() == log[2].seq);
    CHECK(s.session_ends_after(start, 2).value().size() == 2);
    CHECK(s.session_ends_after(log[0].seq, 10).value() == std::vector<sim::store::SessionEnd>{log[1], log[2]});
    CHECK(s.session_ends_after(log[2].seq, 10).value().empty());
    if (db.persistent()) {
        db.reopen();
        CHECK(db.backend->session_ends_after(start, 10).value() == log);
    }
}

TEST_CASE("session tokens: only hashes, expiry, revocation, cascade") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("erin", "$h").has_value());
    REQUIRE(s.create_user("frank", "$h").has_value());
    const auto h1 = token_hash(1);
    const auto h2 = token_hash(2);
    const auto h3 = token_hash(3);
    REQUIRE(s.put_token(h1, "erin", sim::first_device, t0 + 1h).has_value());
    REQUIRE(s.put_token(h2, "erin", sim::first_device, t0 + 2h).has_value());
    REQUIRE(s.put_token(h3, "frank", sim::first_device, t0).has_value());
    CHECK(s.put_token(h1, "frank", sim::first_device, t0).code() == Errc::storage_error);
    CHECK(s.put_token(token_hash(4), "nobody", sim::first_device, t0).code() == Errc::user_not_found);
    CHECK(s.put_token(sim::ByteView{h1}.first(31), "erin", sim::first_device, t0).code() == Errc::invalid_argument);
    CHECK(s.find_token(sim::Bytes(33, 1)).code() == Errc::invalid_argument);

    const auto r = s.find_token(h1).value();
    REQUIRE(r.has_value());
    CHECK(r->username == "erin");
    CHECK(r->expires == t0 + 1h);
    CHECK_FALSE(s.find_token(token_hash(9)).value().has_value());

    CHECK(s.purge_expired_tokens(t0).value() == 1);  // h3 expires at t0 exactly
    CHECK_FALSE(s.find_token(h3).value().has_value());
    CHECK(s.revoke_token(h1).value());
    CHECK_FALSE(s.revoke_token(h1).value());
    REQUIRE(s.put_token(h3, "frank", sim::first_device, t0 + 1h).has_value());
    CHECK(s.revoke_user_tokens("erin").value() == 1);
    CHECK(s.revoke_user_tokens("erin").value() == 0);
    CHECK(s.find_token(h3).value().has_value());
    REQUIRE(s.delete_user("frank").has_value());  // tokens go with the account
    CHECK_FALSE(s.find_token(h3).value().has_value());
}

TEST_CASE("conversation keys: unordered pair, epochs only go up, deletion, cascade") {
    TestDb db;
    auto& s = *db.backend;
    for (const auto* u : {"alice", "bob", "carol"}) {
        REQUIRE(s.create_user(u, "$h").has_value());
    }
    REQUIRE(s.put_conversation_key(conv("bob", "alice", 1)).has_value());
    auto k = s.find_conversation_key("alice", "bob").value();
    REQUIRE(k.has_value());
    CHECK(k->user_a == "alice");
    CHECK(k->user_b == "bob");
    CHECK(k->epoch == 1);
    CHECK(k->sealed_key == conv("alice", "bob", 1).sealed_key);
    CHECK(k->created == conv("alice", "bob", 1).created);
    CHECK(s.find_conversation_key("bob", "alice").value()->epoch == 1);

    CHECK(s.put_conversation_key(conv("alice", "bob", 1)).code() == Errc::stale_epoch);
    REQUIRE(s.put_conversation_key(conv("alice", "bob", 5)).has_value());
    CHECK(s.put_conversation_key(conv("bob", "alice", 4)).code() == Errc::stale_epoch);
    k = s.find_conversation_key("bob", "alice").value();
    CHECK(k->epoch == 5);
    CHECK(k->sealed_key == conv("alice", "bob", 5).sealed_key);

    const auto big = conv("alice", "carol", static_cast<std::uint64_t>(INT64_MAX), sim::store::max_sealed_key_size);
    REQUIRE(s.put_conversation_key(big).has_value());
    CHECK(s.find_conversation_key("carol", "alice").value()->sealed_key == big.sealed_key);
    CHECK(s.find_conversation_key("carol", "alice").value()->epoch == static_cast<std::uint64_t>(INT64_MAX));
    CHECK(s.put_conversation_key(conv("alice", "carol", 1ULL << 63U)).code() == Errc::invalid_argument);
    CHECK(s.put_conversation_key(conv("bob", "carol", 1, sim::store::max_sealed_key_size + 1)).code() ==
          Errc::invalid_argument);
    CHECK(s.put_conversation_key(conv("bob", "carol", 1, 0)).code() == Errc::invalid_argument);
    CHECK(s.put_conversation_key(conv("bob", "bob", 1)).code() == Errc::invalid_argument);
    CHECK(s.put_conversation_key(conv("bob", "nobody", 1)).code() == Errc::user_not_found);
    CHECK(s.find_conversation_key("bob", "bob").code() == Errc::invalid_argument);
    CHECK_FALSE(s.find_conversation_key("bob", "carol").value().has_value());

    REQUIRE(s.put_conversation_key(conv("bob", "carol", 2)).has_value());
    CHECK(s.delete_conversation_key("carol", "bob").value());
    CHECK_FALSE(s.delete_conversation_key("bob", "carol").value());
    REQUIRE(s.put_conversation_key(conv("bob", "carol", 3)).has_value());
    CHECK(s.delete_user_conversation_keys("carol").value() == 2);
    CHECK(s.find_conversation_key("alice", "bob").value().has_value());
    REQUIRE(s.put_conversation_key(conv("bob", "carol", 4)).has_value());
    REQUIRE(s.delete_user("bob").has_value());  // keys go with the account
    CHECK_FALSE(s.find_conversation_key("alice", "bob").value().has_value());
    CHECK_FALSE(s.find_conversation_key("carol", "bob").value().has_value());
    REQUIRE(s.put_conversation_key(conv("alice", "carol", 9)).has_value());
    CHECK(s.delete_all_conversation_keys().value() == 1);
    CHECK(s.delete_all_conversation_keys().value() == 0);
}

TEST_CASE("contacts: unordered pairs, name order, a bound per user, cascade, kept over reopening") {
    TestDb db;
    auto& s = *db.backend;
    for (const auto* u : {"alice", "bob", "carol", "dave", "erin"}) {
        REQUIRE(s.create_user(u, "$h").has_value());
    }
    CHECK(s.list_contacts("alice", 10).value().empty());
    CHECK(s.add_contact("bob", "alice", 3).value());
    CHECK(s.add_contact("alice", "bob", 3).value());  // the same pair, either order: recorded once
    CHECK(s.list_contacts("alice", 10).value() == std::vector<std::string>{"bob"});
    CHECK(s.list_contacts("bob", 10).value() == std::vector<std::string>{"alice"});
    CHECK(s.add_contact("alice", "dave", 3).value());
    CHECK(s.add_contact("carol", "alice", 3).value());
    CHECK(s.list_contacts("alice", 10).value() == std::vector<std::string>{"bob", "carol", "dave"});
    CHECK(s.list_contacts("alice", 2).value() == std::vector<std::string>{"bob", "carol"});
    CHECK(s.list_contacts("carol", 10).value() == std::vector<std::string>{"alice"});
    // The bound: alice has 3; a fourth is refused for her (either side), and nothing changes.
    CHECK_FALSE(s.add_contact("erin", "alice", 3).value());
    CHECK_FALSE(s.add_contact("alice", "erin", 3).value());
    CHECK(s.list_contacts("erin", 10).value().empty());
    CHECK(s.add_contact("alice", "bob", 3).value());  // one she has is still "recorded"
    CHECK(s.add_contact("erin", "bob", 3).value());
    // Bad input; names without an account.
    CHECK(s.add_contact("bob", "bob", 3).code() == Errc::invalid_argument);
    CHECK(s.add_contact("", "bob", 3).code() == Errc::invalid_argument);
    CHECK(s.add_contact(std::string(sim::store::max_username_length + 1, 'x'), "bob", 3).code() ==
          Errc::invalid_argument);
    CHECK(s.list_contacts("", 3).code() == Errc::invalid_argument);
    CHECK(s.add_contact("bob", "nobody", 3).code() == Errc::user_not_found);
    CHECK(s.list_contacts("nobody", 3).value().empty());
    // Names are bytes: no case folding, no trimming.
    REQUIRE(s.create_user("Bob", "$h").has_value());
    CHECK(s.list_contacts("Bob", 10).value().empty());
    // Deleting a user deletes its pairs (and only those).
    REQUIRE(s.delete_user("alice").has_value());
    CHECK(s.list_contacts("bob", 10).value() == std::vector<std::string>{"erin"});
    CHECK(s.list_contacts("carol", 10).value().empty());
    REQUIRE(s.create_user("alice", "$h").has_value());
    CHECK(s.list_contacts("alice", 10).value().empty());
    if (db.persistent()) {
        db.reopen();
        CHECK(db.backend->list_contacts("erin", 10).value() == std::vector<std::string>{"bob"});
    }
}

TEST_CASE("data survives reopening; a second connection sees the same data") {
    TestDb db;
    if (!db.persistent()) {
        CHECK(db.backend->kind() == "memory");
        return;
    }
    REQUIRE(db.backend->create_user("gina", "$h").has_value());
    REQUIRE(db.backend->create_user("hank", "$h").has_value());
    REQUIRE(db.backend->put_token(token_hash(5), "gina", sim::first_device, t0).has_value());
    REQUIRE(db.backend->put_conversation_key(conv("hank", "gina", 7)).has_value());
    auto second = db.open();
    CHECK(second->list_users().value() == std::vector<std::string>{"gina", "hank"});
    REQUIRE(second->create_user("ivy", "$h").has_value());
    CHECK(db.backend->find_user("ivy").value().has_value());
    // record_failure and record_key_failure count across connections.
    const WallTime base{std::chrono::seconds(1'700'000'000)};
    (void)db.backend->record_failure("gina", base, 1h).value();
    CHECK(second->record_failure("gina", base + 1s, 1h).value().count == 2);
    (void)db.backend->record_key_failure("a 198.51.100.7", base, 1h).value();
    CHECK(second->record_key_failure("a 198.51.100.7", base + 1s, 1h).value().count == 2);
    second.reset();
    db.reopen();
    CHECK(db.backend->list_users().value() == std::vector<std::string>{"gina", "hank", "ivy"});
    CHECK(db.backend->find_user("gina").value()->failures.count == 2);
    CHECK(db.backend->find_key_failures("a 198.51.100.7").value().count == 2);
    CHECK(db.backend->find_token(token_hash(5)).value()->username == "gina");
    CHECK(db.backend->find_conversation_key("gina", "hank").value()->epoch == 7);
}

TEST_CASE("the backend is safe to share between threads") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("jack", "$h").has_value());
    std::atomic<int> created{0};
    std::vector<std::thread> threads;
    const WallTime base{std::chrono::seconds(100)};
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 25; ++i) {
                (void)s.record_failure("jack", base, 1h);
                if (s.create_user("racer", "$h").has_value()) {
                    ++created;
                }
                (void)s.find_user("jack");
                (void)s.put_token(token_hash(static_cast<std::uint8_t>(t * 25 + i + 10)), "jack", sim::first_device,
                                  t0);
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    CHECK(created == 1);
    CHECK(s.find_user("jack").value()->failures.count == 100);
    CHECK(s.revoke_user_tokens("jack").value() == 100);
}

TEST_CASE("the login flow on this backend: first login, wrong password, throttling, rehash, 72 bytes") {
    TestDb db;
    sim::auth::HashPolicy p4;
    p4.bcrypt.cost = 4;
    sim::auth::HashPolicy p5;
    p5.bcrypt.cost = 5;
    const auto h4 = sim::auth::make_password_hasher(p4).value();
    const auto h5 = sim::auth::make_password_hasher(p5).value();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("conformance"));
    sim::ManualClock clock;
    clock.set(sim::TimePoint{std::chrono::hours(1000)});
    sim::auth::AuthConfig config;
    config.wall_clock = [&clock] {
        return WallTime{std::chrono::seconds(1'700'000'000)} +
               std::chrono::floor<std::chrono::milliseconds>(clock.now().time_since_epoch());
    };
    auto auth = sim::auth::Authenticator::create(*db.backend, *h4, *rng, clock, config).value();

    const auto first = auth->login("Kate", "pw-kate", "10.0.0.1");
    REQUIRE(first.ok());
    CHECK(first.outcome->created);
    // From an address the account has not logged in from, a failure counts in the store (account-wide).
    CHECK(auth->login("kate", "pw-kate!", "10.0.0.9").code() == Errc::auth_rejected);
    CHECK(db.backend->find_user("kate").value()->failures.count == 1);
    for (int i = 0; i < 4; ++i) {
        CHECK(auth->login("kate", "bad", "10.0.1." + std::to_string(i)).code() == Errc::auth_rejected);
    }
    const auto t = auth->login("kate", "pw-kate", "10.0.2.1");
    CHECK(t.code() == Errc::throttled);
    CHECK(t.retry_after == 1s);
    clock.advance(1s);
    REQUIRE(auth->login("kate", "pw-kate", "10.0.2.1").ok());
    CHECK(db.backend->find_user("kate").value()->failures.count == 5);  // a success does not reset a guesser

    auto auth5 = sim::auth::Authenticator::create(*db.backend, *h5, *rng, clock, config).value();
    const auto re = auth5->login("kate", "pw-kate", "10.0.0.1");
    REQUIRE(re.ok());
    CHECK(re.outcome->rehashed);
    CHECK(db.backend->find_user("kate").value()->password_hash.rfind("$bcrypt-sha256$v=2,t=2b,r=5$", 0) == 0);

    const std::string prefix(72, 'q');
    REQUIRE(auth5->login("liam", prefix + "1", "10.0.0.1").ok());
    CHECK(auth5->login("liam", prefix + "2", "10.0.0.1").code() == Errc::auth_rejected);

    // Tokens and sealed keys over this backend.
    sim::auth::SessionTokens tokens(*db.backend, *rng);
    const auto tok = tokens.issue("kate", sim::first_device, t0, 1h).value();
    CHECK(tokens.validate(tok.token, t0 + 1s).value().username == "kate");
    CHECK(tokens.validate(tok.token, t0 + 1h).code() == Errc::token_invalid);
    auto vault = sim::auth::ConversationKeyVault::create(*db.backend, rng->bytes(32), *rng).value();
    const auto key = rng->bytes(32);
    REQUIRE(vault->put("liam", "kate", key, 1, t0).has_value());
    const auto got = vault->get("kate", "liam").value();
    REQUIRE(got.has_value());
    CHECK(sim::Bytes(got->key.begin(), got->key.end()) == key);
    CHECK(vault->remove("kate", "liam").value());
    REQUIRE(auth5->delete_user("kate").has_value());
    CHECK(auth5->list_users().value() == std::vector<std::string>{"liam"});
}

namespace {

sim::Bytes filled(std::size_t n, std::uint8_t seed) {
    sim::Bytes b(n);
    for (std::size_t i = 0; i < n; ++i) {
        b[i] = static_cast<std::uint8_t>(seed + i * 13);
    }
    if (!b.empty()) {
        b[0] = 0;  // a leading zero byte must survive
    }
    return b;
}

sim::PrekeyUpload upload(std::uint8_t identity, bool replace, std::uint32_t first_opk, std::size_t opks) {
    sim::PrekeyUpload u;
    u.replace = replace;
    u.identity_key = filled(32, identity);
    u.signed_prekey_id = 1000U + identity;
    u.signed_prekey = filled(32, static_cast<std::uint8_t>(identity + 1));
    u.signed_prekey_signature = filled(64, static_cast<std::uint8_t>(identity + 2));
    for (std::size_t i = 0; i < opks; ++i) {
        const auto id = first_opk + static_cast<std::uint32_t>(i);
        u.one_time_prekeys.emplace_back(id, filled(32, static_cast<std::uint8_t>(id)));
    }
    return u;
}

sim::MessageId message_id(std::uint32_t n) {
    sim::MessageId id{};
    for (std::size_t i = 0; i < id.size(); ++i) {
        id[i] = static_cast<std::uint8_t>(n >> (8 * (i % 4)));
    }
    id[15] = 0;
    return id;
}

sim::store::StoredMessage stored(const std::string& to, const std::string& from, std::uint32_t n,
                                 std::size_t size = 100) {
    sim::store::StoredMessage m;
    m.recipient = to;
    m.sender = from;
    m.id = message_id(n);
    m.envelope = filled(size, static_cast<std::uint8_t>(n));
    m.stored_at = t0 + std::chrono::milliseconds(n);
    return m;
}

/// `m` for the recipient's device `to`, sent from the sender's device `from`.
sim::store::StoredMessage on(sim::store::StoredMessage m, sim::DeviceId to, sim::DeviceId from) {
    m.recipient_device = to;
    m.sender_device = from;
    return m;
}

}  // namespace

TEST_CASE("throttling is shared: two nodes on this backend give one budget, and a restart keeps it") {
    TestDb db;
    // Two nodes: each its own connection and its own monotonic clock (far apart, as on two machines); one wall
    // clock, as NTP gives them.
    auto second = db.persistent() ? db.open() : nullptr;
    Backend& store_a = *db.backend;
    Backend& store_b = second ? *second : *db.backend;
    sim::auth::HashPolicy p4;
    p4.bcrypt.cost = 4;
    const auto hasher = sim::auth::make_password_hasher(p4).value();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("two nodes"));
    sim::ManualClock clock_a;
    sim::ManualClock clock_b;
    clock_a.set(sim::TimePoint{std::chrono::hours(1000)});
    clock_b.set(sim::TimePoint{std::chrono::hours(3)});
    WallTime wall{std::chrono::seconds(1'700'000'000)};
    sim::auth::AuthConfig config;
    config.registration = sim::auth::RegistrationPolicy::explicit_request;
    config.wall_clock = [&wall] { return wall; };
    const auto& policy = config.throttle;
    auto node_a = sim::auth::Authenticator::create(store_a, *hasher, *rng, clock_a, config).value();
    auto node_b = sim::auth::Authenticator::create(store_b, *hasher, *rng, clock_b, config).value();
    REQUIRE(node_a->admin_create_user("olga", "pw-olga").has_value());

    // Guesses at one account from fresh addresses, alternating nodes, until both refuse: one node's budget.
    const auto guess_account = [&](sim::auth::Authenticator& node, int i) {
        return node.login("olga", "guess", "198.51.100." + std::to_string(i)).code();
    };
    int admitted = 0;
    for (int i = 0; i < 40; ++i) {
        const auto code = guess_account(i % 2 == 0 ? *node_a : *node_b, i);
        CHECK((code == Errc::auth_rejected || code == Errc::throttled));
        admitted += code == Errc::auth_rejected ? 1 : 0;
    }
    CHECK(admitted == static_cast<int>(policy.account.free_failures));

    // Guesses from one address at names that do not exist (each name fresh), alternating nodes: one node's
    // address budget.
    admitted = 0;
    for (int i = 0; i < 80; ++i) {
        auto& node = i % 2 == 0 ? *node_a : *node_b;
        const auto code = node.login("nobody" + std::to_string(i), "guess", "203.0.113.5").code();
        CHECK((code == Errc::auth_rejected || code == Errc::throttled));
        admitted += code == Errc::auth_rejected ? 1 : 0;
    }
    CHECK(admitted == static_cast<int>(policy.address.free_failures));

    // A restart: a new node on a new connection with a new monotonic clock still refuses both.
    node_a.reset();
    node_b.reset();
    second.reset();
    auto third_store = db.persistent() ? db.open() : nullptr;
    Backend& store_c = third_store ? *third_store : *db.backend;
    sim::ManualClock clock_c;
    auto node_c = sim::auth::Authenticator::create(store_c, *hasher, *rng, clock_c, config).value();
    const auto account = node_c->login("olga", "pw-olga", "198.51.100.200");
    CHECK(account.code() == Errc::throttled);
    CHECK(account.retry_after > sim::Duration::zero());
    CHECK(node_c->login("nobody-else", "guess", "203.0.113.5").code() == Errc::throttled);
    // Once the wall clock has moved past the delays, the owner gets in.
    wall += std::chrono::duration_cast<std::chrono::milliseconds>(policy.account.max_delay);
    CHECK(node_c->login("olga", "pw-olga", "198.51.100.200").ok());
    // A quiet forget_after later the address is free again, and its row is purged by the next failure.
    wall += std::chrono::duration_cast<std::chrono::milliseconds>(policy.address.forget_after);
    CHECK(node_c->login("nobody-else", "guess", "203.0.113.5").code() == Errc::auth_rejected);
    CHECK(store_c.find_key_failures("a 203.0.113.5").value().count == 1);
    CHECK(store_c.find_key_failures("n nobody0").value().count == 0);
}

TEST_CASE("prekeys: upload, replace or add, identity check, bundles hand out each one-time prekey once") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("kim", "$h").has_value());
    REQUIRE(s.create_user("lee", "$h").has_value());
    CHECK(s.take_bundle("kim", sim::first_device).value() == std::nullopt);
    auto st = s.prekey_status("kim", sim::first_device).value();
    CHECK_FALSE(st.identity_key.has_value());
    CHECK(st.one_time_count == 0);
    CHECK(s.set_prekeys("nobody", sim::first_device, upload(1, true, 1, 2)).code() == Errc::user_not_found);
    CHECK(s.set_prekeys("", sim::first_device, upload(1, true, 1, 2)).code() == Errc::invalid_argument);

    REQUIRE(s.set_prekeys("kim", sim::first_device, upload(1, true, 10, 3)).has_value());
    st = s.prekey_status("kim", sim::first_device).value();
    REQUIRE(st.identity_key.has_value());
    CHECK(*st.identity_key == filled(32, 1));
    CHECK(st.one_time_count == 3);
    CHECK(s.prekey_status("lee", sim::first_device).value().one_time_count == 0);

    // Adding with another identity is refused and changes nothing; adding with the same one adds.
    CHECK(s.set_prekeys("kim", sim::first_device, upload(2, false, 20, 2)).code() == Errc::bad_field);
    CHECK(s.prekey_status("kim", sim::first_device).value().one_time_count == 3);
    auto more = upload(1, false, 20, 2);
    more.signed_prekey_id = 77;
    more.signed_prekey = filled(32, 99);
    REQUIRE(s.set_prekeys("kim", sim::first_device, more).has_value());
    CHECK(s.prekey_status("kim", sim::first_device).value().one_time_count == 5);

    // Bundles: the signed prekey is the newest, one-time prekeys go lowest id first, each once.
    std::vector<std::uint32_t> handed;
    for (int i = 0; i < 5; ++i) {
        const auto b = s.take_bundle("kim", sim::first_device).value();
        REQUIRE(b.has_value());
        CHECK(b->identity_key == filled(32, 1));
        CHECK(b->signed_prekey_id == 77);
        CHECK(b->signed_prekey == filled(32, 99));
        CHECK(b->signed_prekey_signature == filled(64, 3));
        REQUIRE(b->one_time_prekey_id.has_value());
        CHECK(b->one_time_prekey == filled(32, static_cast<std::uint8_t>(*b->one_time_prekey_id)));
        handed.push_back(*b->one_time_prekey_id);
    }
    CHECK(handed == std::vector<std::uint32_t>{10, 11, 12, 20, 21});
    const auto last = s.take_bundle("kim", sim::first_device).value();
    REQUIRE(last.has_value());
    CHECK_FALSE(last->one_time_prekey_id.has_value());
    CHECK(last->one_time_prekey.empty());
    CHECK(s.prekey_status("kim", sim::first_device).value().one_time_count == 0);

    // Replace: a new identity, and the old one-time prekeys are gone.
    REQUIRE(s.set_prekeys("kim", sim::first_device, upload(1, false, 30, 2)).has_value());
    REQUIRE(s.set_prekeys("kim", sim::first_device, upload(5, true, 40, 1)).has_value());
    st = s.prekey_status("kim", sim::first_device).value();
    CHECK(*st.identity_key == filled(32, 5));
    CHECK(st.one_time_count == 1);
    CHECK(s.take_bundle("kim", sim::first_device).value()->one_time_prekey_id == 40U);

    // Wrong sizes are refused before the database is touched.
    auto bad = upload(5, false, 50, 1);
    bad.signed_prekey_signature.pop_back();
    CHECK(s.set_prekeys("kim", sim::first_device, bad).code() == Errc::invalid_argument);
    bad = upload(5, false, 50, 1);
    bad.one_time_prekeys[0].second.push_back(0);
    CHECK(s.set_prekeys("kim", sim::first_device, bad).code() == Errc::invalid_argument);
}

TEST_CASE("prekeys: at most 1000 one-time prekeys are stored; deleting the user deletes them") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("max", "$h").has_value());
    REQUIRE(s.set_prekeys("max", sim::first_device, upload(1, true, 0, 200)).has_value());
    for (std::uint32_t k = 1; k < 5; ++k) {
        REQUIRE(s.set_prekeys("max", sim::first_device, upload(1, false, k * 200, 200)).has_value());
    }
    CHECK(s.prekey_status("max", sim::first_device).value().one_time_count == 1000);
    // One more is refused, atomically: the signed prekey of that upload is not applied either.
    auto over = upload(1, false, 5000, 1);
    over.signed_prekey_id = 4242;
    CHECK(s.set_prekeys("max", sim::first_device, over).code() == Errc::limit_reached);
    CHECK(s.prekey_status("max", sim::first_device).value().one_time_count == 1000);
    CHECK(s.take_bundle("max", sim::first_device).value()->signed_prekey_id == 1001);
    // Re-uploading a stored id replaces its key and does not count twice.
    REQUIRE(s.set_prekeys("max", sim::first_device, upload(1, false, 1, 1)).has_value());
    CHECK(s.prekey_status("max", sim::first_device).value().one_time_count == 999);
    // replace = 1 with a full stock is fine
    REQUIRE(s.set_prekeys("max", sim::first_device, upload(2, true, 0, 200)).has_value());
    CHECK(s.prekey_status("max", sim::first_device).value().one_time_count == 200);

    REQUIRE(s.delete_user("max").has_value());
    CHECK(s.take_bundle("max", sim::first_device).value() == std::nullopt);
    REQUIRE(s.create_user("max", "$h").has_value());
    CHECK_FALSE(s.prekey_status("max", sim::first_device).value().identity_key.has_value());
}

TEST_CASE("prekeys: concurrent take_bundle hands out each one-time prekey exactly once") {
    TestDb db;
    REQUIRE(db.backend->create_user("ned", "$h").has_value());
    REQUIRE(db.backend->set_prekeys("ned", sim::first_device, upload(1, true, 1, 100)).has_value());
    std::vector<std::unique_ptr<Backend>> handles;
    handles.push_back(nullptr);
    if (db.persistent()) {
        handles.push_back(db.open());  // a second connection competes too
    }
    std::mutex mutex;
    std::vector<std::uint32_t> seen;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        Backend& b = (t % 2 == 1 && handles.size() > 1) ? *handles[1] : *db.backend;
        threads.emplace_back([&b, &mutex, &seen] {
            for (int i = 0; i < 30; ++i) {
                const auto r = b.take_bundle("ned", sim::first_device);
                if (r && r.value() && r.value()->one_time_prekey_id) {
                    const std::lock_guard lock(mutex);
                    seen.push_back(*r.value()->one_time_prekey_id);
                }
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    std::sort(seen.begin(), seen.end());
    CHECK(seen.size() == 100);
    CHECK(std::adjacent_find(seen.begin(), seen.end()) == seen.end());
}

TEST_CASE("messages: append in batches, idempotent, store order, removal, counts") {
    TestDb db;
    auto& s = *db.backend;
    CHECK(s.usage("ola", 1).value().messages == 0);
    CHECK(s.pending("ola", 1, 0, 10).value().empty());

    std::vector<sim::store::StoredMessage> batch = {stored("ola", "pat", 1), stored("ola", "quin", 2),
                                                    stored("ray", "pat", 3), stored("ola", "pat", 4, 65536)};
    CHECK(s.append(batch).value() == std::vector<bool>{true, true, true, true});
    // The same (recipient, device 1, sender, id) again is not stored again; the same id from another sender or to
    // another recipient is a different message.
    std::vector<sim::store::StoredMessage> again = {stored("ola", "pat", 1), stored("ola", "ray", 1),
                                                    stored("pat", "ola", 1), stored("ola", "pat", 5)};
    again[0].envelope = filled(10, 200);  // a retry never replaces the stored bytes
    CHECK(s.append(again).value() == std::vector<bool>{false, true, true, true});
    using sim::store::StoredUsage;
    CHECK(s.usage("ola", 1).value() == StoredUsage{5, 100 + 100 + 65536 + 100 + 100});
    CHECK(s.usage("ray", 1).value() == StoredUsage{1, 100});
    CHECK(s.usage("pat", 1).value() == StoredUsage{1, 100});
    {
        // What each sender has stored, over all recipients (the server's per-sender quota starts from this).
        const auto by_sender = s.usage_by_sender().value();
        CHECK(by_sender.size() == 4);
        CHECK(by_sender.at("ola") == StoredUsage{1, 100});
        CHECK(by_sender.at("pat") == StoredUsage{4, 100 + 65536 + 100 + 100});
        CHECK(by_sender.at("quin") == StoredUsage{1, 100});
        CHECK(by_sender.at("ray") == StoredUsage{1, 100});
    }

    auto all = s.pending("ola", 1, 0, 100).value();
    REQUIRE(all.size() == 5);
    for (std::size_t i = 0; i < all.size(); ++i) {
        if (i > 0) {
            CHECK(all[i].seq > all[i - 1].seq);
        }
        CHECK(all[i].recipient == "ola");
    }
    CHECK(all[0] == [&] {
        auto m = stored("ola", "pat", 1);
        m.seq = all[0].seq;
        return m;
    }());
    CHECK(all[1].sender == "quin");
    CHECK(all[2].envelope.size() == 65536);
    CHECK(all[2].envelope == filled(65536, 4));
    CHECK(all[3].sender == "ray");
    CHECK(all[4].sender == "pat");
    CHECK(all[4].id == message_id(5));

    // Paging by seq.
    const auto first2 = s.pending("ola", 1, 0, 2).value();
    REQUIRE(first2.size() == 2);
    const auto next = s.pending("ola", 1, first2[1].seq, 2).value();
    REQUIRE(next.size() == 2);
    CHECK(next[0].seq == all[2].seq);
    CHECK(s.pending("ola", 1, all.back().seq, 10).value().empty());

    // Removal is per (recipient, device, sender, id), several groups in one call (one transaction).
    // It says how much each group freed: the messages and their envelope bytes.
    CHECK(s.remove({{"ola", 1, "quin", {message_id(1)}}}).value() == std::vector<StoredUsage>{StoredUsage{}});
    CHECK(s.remove({{"ola", 1, "pat", {message_id(1), message_id(4)}},
                    {"ola", 1, "quin", {}},
                    {"ola", 1, "pat", {message_id(99)}}})
              .value() == std::vector<StoredUsage>{StoredUsage{2, 100 + 65536}, StoredUsage{}, StoredUsage{}});
    CHECK(s.remove({{"ola", 1, "pat", {message_id(1)}}}).value() == std::vector<StoredUsage>{StoredUsage{}});
    CHECK(s.remove({}).value().empty());
    CHECK(s.usage("ola", 1).value() == StoredUsage{3, 300});
    CHECK(s.usage_by_sender().value().at("pat") == StoredUsage{2, 200});
    CHECK(s.pending("ola", 1, 0, 10).value().front().sender == "quin");
    // A removed message may be stored again later (a new delivery of the same id).
    CHECK(s.append({stored("ola", "pat", 1)}).value() == std::vector<bool>{true});
    CHECK(s.pending("ola", 1, 0, 10).value().back().id == message_id(1));

    // Bad input: nothing of the batch is stored.
    CHECK(s.append({stored("ola", "pat", 50), stored("", "pat", 51)}).code() == Errc::invalid_argument);
    CHECK(s.append({stored("ola", "pat", 50), stored("ola", "pat", 51, 65537)}).code() == Errc::invalid_argument);
    CHECK(s.append({stored("ola", "pat", 50, 0)}).code() == Errc::invalid_argument);
    CHECK(s.usage("ola", 1).value().messages == 4);
    CHECK(s.usage("", 1).code() == Errc::invalid_argument);
    CHECK(s.pending("", 1, 0, 1).code() == Errc::invalid_argument);
    // A bad name anywhere in a removal: nothing is deleted.
    const auto before_bad = s.usage("ola", 1).value();
    CHECK(s.remove({{"ola", 1, "pat", {message_id(1)}}, {"ola", 1, "", {message_id(1)}}}).code() ==
          Errc::invalid_argument);
    CHECK(s.usage("ola", 1).value() == before_bad);
    CHECK(s.append({}).value().empty());

    // Appends and removals in one transaction: appends first (a message appended and removed in the same call is
    // gone), all or nothing (a bad append keeps the removal from happening too).
    const auto applied = s.apply({{stored("ola", "pat", 60), stored("ola", "pat", 1)},
                                  {{"ola", 1, "pat", {message_id(60)}}, {"ola", 1, "quin", {message_id(2)}}}});
    REQUIRE(applied);
    CHECK(applied->appended == std::vector<bool>{true, false});
    CHECK(applied->removed == std::vector<StoredUsage>{StoredUsage{1, 100}, StoredUsage{1, 100}});
    CHECK(s.usage("ola", 1).value() == StoredUsage{before_bad.messages - 1, before_bad.bytes - 100});
    const auto kept = s.usage("ola", 1).value();
    CHECK(s.apply({{stored("ola", "pat", 61, 0)}, {{"ola", 1, "pat", {message_id(1)}}}}).code() ==
          Errc::invalid_argument);
    CHECK(s.usage("ola", 1).value() == kept);
}

TEST_CASE("messages: every device of a user is its own mailbox") {
    TestDb db;
    using sim::store::StoredUsage;
    constexpr sim::DeviceId last = 0xFFFFFFFF;  // the whole range of DeviceId fits the column
    REQUIRE(db.backend->create_user("wes", "$h").has_value());
    // One (sender, id) is stored once in each device's mailbox: a sender's message goes to every device.
    CHECK(db.backend
              ->append({on(stored("wes", "xan", 1), 1, 3), on(stored("wes", "xan", 1, 200), 2, 3),
                        on(stored("wes", "xan", 2), 2, 1), on(stored("wes", "xan", 1), 2, 3)})
              .value() == std::vector<bool>{true, true, true, false});
    CHECK(db.backend->append({on(stored("wes", "xan", 1), 1, 3), on(stored("wes", "yul", 3), last, last)}).value() ==
          std::vector<bool>{false, true});
    CHECK(db.backend->usage("wes", 1).value() == StoredUsage{1, 100});
    CHECK(db.backend->usage("wes", 2).value() == StoredUsage{2, 300});
    CHECK(db.backend->usage("wes", 4).value() == StoredUsage{});
    CHECK(db.backend->usage("wes", last).value() == StoredUsage{1, 100});
    CHECK(db.backend->usage_by_sender().value().at("xan") == StoredUsage{3, 400});

    // pending() reads one mailbox, and gives back both devices as they were stored.
    const auto check_mailboxes = [&] {
        const auto one = db.backend->pending("wes", 1, 0, 10).value();
        REQUIRE(one.size() == 1);
        CHECK(one[0] == [&] {
            auto m = on(stored("wes", "xan", 1), 1, 3);
            m.seq = one[0].seq;
            return m;
        }());
        const auto two = db.backend->pending("wes", 2, 0, 10).value();
        REQUIRE(two.size() == 2);
        CHECK(two[0].seq < two[1].seq);
        CHECK(two[0] == [&] {
            auto m = on(stored("wes", "xan", 1, 200), 2, 3);
            m.seq = two[0].seq;
            return m;
        }());
        CHECK(two[1].recipient_device == 2);
        CHECK(two[1].sender_device == 1);
        CHECK(two[1].id == message_id(2));
        // Paging after a seq of another mailbox.
        CHECK(db.backend->pending("wes", 2, one[0].seq, 10).value() == two);
        CHECK(db.backend->pending("wes", 2, two[0].seq, 10).value() == std::vector{two[1]});
        const auto far = db.backend->pending("wes", last, 0, 10).value();
        REQUIRE(far.size() == 1);
        CHECK(far[0].recipient_device == last);
        CHECK(far[0].sender_device == last);
        CHECK(db.backend->pending("wes", 4, 0, 10).value().empty());
    };
    check_mailboxes();
    if (db.persistent()) {
        db.reopen();
        check_mailboxes();
    }

    // Device 0 names no mailbox: refused wherever it appears, and nothing of the call happens.
    auto& b = *db.backend;
    const auto before1 = b.usage("wes", 1).value();
    const auto before2 = b.usage("wes", 2).value();
    CHECK(b.append({on(stored("wes", "xan", 7), 2, 1), on(stored("wes", "xan", 8), 0, 1)}).code() ==
          Errc::invalid_argument);
    CHECK(b.append({on(stored("wes", "xan", 7), 2, 1), on(stored("wes", "xan", 8), 2, 0)}).code() ==
          Errc::invalid_argument);
    CHECK(b.remove({{"wes", 2, "xan", {message_id(2)}}, {"wes", 0, "xan", {message_id(1)}}}).code() ==
          Errc::invalid_argument);
    CHECK(b.apply({{on(stored("wes", "xan", 7), 2, 1)}, {{"wes", 0, "xan", {message_id(1)}}}}).code() ==
          Errc::invalid_argument);
    CHECK(b.usage("wes", 0).code() == Errc::invalid_argument);
    CHECK(b.pending("wes", 0, 0, 10).code() == Errc::invalid_argument);
    CHECK(b.usage("wes", 1).value() == before1);
    CHECK(b.usage("wes", 2).value() == before2);
    CHECK(b.pending("wes", 2, 0, 10).value().size() == 2);

    // A removal takes from its device's mailbox only.
    CHECK(b.remove({{"wes", 4, "xan", {message_id(1), message_id(2)}}}).value() ==
          std::vector<StoredUsage>{StoredUsage{}});
    CHECK(b.remove({{"wes", 2, "xan", {message_id(1)}}}).value() == std::vector<StoredUsage>{StoredUsage{1, 200}});
    CHECK(b.usage("wes", 1).value() == StoredUsage{1, 100});
    CHECK(b.usage("wes", 2).value() == StoredUsage{1, 100});
    const auto still = b.pending("wes", 1, 0, 10).value();
    REQUIRE(still.size() == 1);
    CHECK(still[0].id == message_id(1));
    // ... and the same message may be stored there again, while device 1 still has its copy.
    CHECK(b.append({on(stored("wes", "xan", 1), 2, 3), on(stored("wes", "xan", 1), 1, 3)}).value() ==
          std::vector<bool>{true, false});

    // Deleting the user empties every one of their mailboxes; a new account of that name starts empty.
    REQUIRE(b.delete_user("wes").has_value());
    CHECK(b.usage("wes", 1).value() == StoredUsage{});
    CHECK(b.usage("wes", 2).value() == StoredUsage{});
    CHECK(b.usage("wes", last).value() == StoredUsage{});
    CHECK(b.append({on(stored("wes", "xan", 1), 1, 3)}).value() == std::vector<bool>{true});
}

TEST_CASE("messages: survive reopening, continue the order, and go with a deleted recipient") {
    TestDb db;
    REQUIRE(db.backend->create_user("sue", "$h").has_value());
    REQUIRE(db.backend->append({stored("sue", "tom", 1), stored("sue", "tom", 2)}).has_value());
    if (db.persistent()) {
        db.reopen();
        REQUIRE(db.backend->append({stored("sue", "tom", 3)}).has_value());
        const auto p = db.backend->pending("sue", 1, 0, 10).value();
        REQUIRE(p.size() == 3);
        CHECK(p[0].id == message_id(1));
        CHECK(p[2].id == message_id(3));
        CHECK(p[2].seq > p[1].seq);
        auto second = db.open();
        CHECK(second->usage("sue", 1).value().messages == 3);
    }
    REQUIRE(db.backend->append({stored("tom", "sue", 9)}).has_value());
    REQUIRE(db.backend->delete_user("sue").has_value());
    CHECK(db.backend->usage("sue", 1).value().messages == 0);
    CHECK(db.backend->usage("tom", 1).value().messages ==
          1);  // messages *from* a deleted user stay for their recipient
    CHECK(db.backend->usage_by_sender().value().count("tom") == 0);
    CHECK(db.backend->usage_by_sender().value().at("sue") == sim::store::StoredUsage{1, 100});
}

TEST_CASE("messages: concurrent appends from several threads are each stored once") {
    TestDb db;
    auto& s = *db.backend;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&s, t] {
            for (std::uint32_t i = 0; i < 25; ++i) {
                // every thread appends the same ids: only one copy of each may be stored
                std::vector<sim::store::StoredMessage> b = {stored("uma", "vic", i), stored("uma", "vic", 100 + i)};
                (void)t;
                (void)s.append(b);
            }
        });
    }
    for (auto& th : threads) {
        th.join();
    }
    CHECK(s.usage("uma", 1).value().messages == 50);
}

TEST_CASE("open_backend rejects unknown URLs") {
    CHECK(sim::store::open_backend("oracle://x").code() == Errc::invalid_argument);
    CHECK(sim::store::open_backend("postgres://x").code() == Errc::invalid_argument);
    CHECK(sim::store::open_backend("sqlite:").code() == Errc::invalid_argument);
    CHECK(sim::store::open_backend("").code() == Errc::invalid_argument);
    const std::vector<std::string> bad_urls = {
        "mariadb://",
        "mariadb://user@host",
        "mariadb://:pw@host/db",
        "mariadb://u:p@host:0/db",
        "mariadb://u:p@host:99999/db",
        "mariadb://u:p@host/db?nope=1",
        "mariadb://u:p@host/db?tls=maybe",
        "mariadb://u:p%zz@host/db",
        "mariadb://u:p@[::1/db",
        "mariadb://u:p@host/",
        "postgresql://u:p@host/db?nope=1",
        "postgresql://u:p%zz@host/db",
        "postgres://user@host",
    };
    for (const auto& url : bad_urls) {
        INFO(url);
        const auto r = sim::store::open_backend(url);
        CHECK(r.code() == Errc::invalid_argument);
        CHECK(r.error().detail.find("p%zz") == std::string::npos);
    }
}

TEST_CASE("database servers: reconnect after the server drops the connection") {
    if (!server_backend()) {
        return;
    }
    TestDb db;
    REQUIRE(db.backend->create_user("mona", "$h").has_value());
    const auto admin = admin_connection();
    CHECK(admin->kill_others() >= 1);
    // The next statements find the connection gone, reconnect and succeed.
    CHECK(db.backend->find_user("mona").value()->password_hash == "$h");
    REQUIRE(db.backend->create_user("nick", "$h").has_value());
    CHECK(admin->kill_others() >= 1);
    REQUIRE(db.backend->create_user("olga", "$h").has_value());
    CHECK(db.backend->list_users().value() == std::vector<std::string>{"mona", "nick", "olga"});
    // A transaction as the first call after the drop: it starts on a new connection.
    CHECK(admin->kill_others() >= 1);
    REQUIRE(db.backend->delete_user("olga").has_value());
    CHECK(db.backend->list_users().value() == std::vector<std::string>{"mona", "nick"});
}

TEST_CASE("database servers: a store recovers on its next call after the server restarts") {
    if (!server_backend()) {
        return;
    }
    TestDb db;
    REQUIRE(db.backend->create_user("rolf", "$h").has_value());
    sim::store::StoredMessage m;
    m.recipient = "rolf";
    m.sender = "sven";
    m.envelope = {1, 2, 3};
    m.stored_at = t0;
    REQUIRE(db.backend->append({m}).value() == std::vector<bool>{true});
    restart_server();
    // The first call after the restart finds the connection gone, reconnects and succeeds; nothing was lost.
    CHECK(db.backend->find_user("rolf").value()->password_hash == "$h");
    CHECK(db.backend->pending("rolf", sim::first_device, 0, 10).value().size() == 1);
    restart_server();
    // A transaction as the first call.
    m.id[0] = 1;
    CHECK(db.backend->append({m}).value() == std::vector<bool>{true});
    CHECK(db.backend->usage("rolf", sim::first_device).value() == sim::store::StoredUsage{2, 6});
    REQUIRE(db.backend->delete_user("rolf").has_value());
    CHECK(db.backend->list_users().value().empty());
}

TEST_CASE("database servers: the Unix socket URL reaches the same database") {
    if (!server_backend()) {
        return;
    }
    TestDb db;
    REQUIRE(db.backend->create_user("pia", "$h").has_value());
    const auto socket_url = env("SIM_TEST_DB_SOCKET_URL");
    REQUIRE_MESSAGE(!socket_url.empty(), "SIM_TEST_DB_SOCKET_URL is not set");
    auto other = sim::store::open_backend(socket_url);
    REQUIRE_MESSAGE(other.has_value(), (other.has_value() ? std::string() : other.error().message()));
    CHECK(other.value()->find_user("pia").value().has_value());
}

TEST_CASE("database servers: a newer schema is refused and left alone; unversioned tables are refused") {
    if (!server_backend()) {
        return;
    }
    TestDb db;
    REQUIRE(db.backend->create_user("quinn", "$h").has_value());
    db.backend.reset();
    const auto admin = admin_connection();
    admin->exec("UPDATE sim_meta SET schema_version = 99 WHERE id = 1");
    auto r = sim::store::open_backend(env("SIM_TEST_DB_URL"));
    REQUIRE(r.code() == Errc::schema_too_new);
    CHECK(r.error().detail.find("99") != std::string::npos);
    CHECK(admin->column("SELECT schema_version FROM sim_meta") == std::vector<std::string>{"99"});
    CHECK(admin->column("SELECT COUNT(*) FROM sim_users") == std::vector<std::string>{"1"});
    admin->exec("DROP TABLE sim_meta");
    r = sim::store::open_backend(env("SIM_TEST_DB_URL"));
    CHECK(r.code() == Errc::corrupt_database);
    CHECK(admin->column("SELECT COUNT(*) FROM sim_users") == std::vector<std::string>{"1"});
}

TEST_CASE("database servers: connection failures are storage errors that do not leak the password") {
    if (!server_backend()) {
        return;
    }
    const auto url = env("SIM_TEST_DB_URL");
    const auto scheme = url.substr(0, url.find("://"));
    const auto at = url.rfind('@');
    auto r = sim::store::open_backend(scheme + "://sim:not-the-password-xyz" + url.substr(at));
    REQUIRE(r.code() == Errc::storage_error);
    CHECK(r.error().detail.find("not-the-password-xyz") == std::string::npos);
    r = sim::store::open_backend(scheme + "://sim:pw@127.0.0.1:1/simtest?connect_timeout=2");
    CHECK(r.code() == Errc::storage_error);
    CHECK(r.error().detail.find("127.0.0.1") == std::string::npos);
}

TEST_CASE("postgresql: a schema version without an upgrade step is refused and left alone") {
    if (backend_kind() != "postgresql") {
        return;
    }
    TestDb db;
    db.backend.reset();
    const auto admin = admin_connection();
    // PostgreSQL support began at version 6: no libsim wrote 1..5 there.
    admin->exec("UPDATE sim_meta SET schema_version = 3 WHERE id = 1");
    const auto r = sim::store::open_backend(env("SIM_TEST_DB_URL"));
    CHECK(r.code() == Errc::corrupt_database);
    CHECK(admin->column("SELECT schema_version FROM sim_meta") == std::vector<std::string>{"3"});
}

namespace {

std::unique_ptr<Backend> open_backend_or_fail() {
    auto r = sim::store::open_backend(env("SIM_TEST_DB_URL"));
    REQUIRE_MESSAGE(r.has_value(), (r.has_value() ? std::string() : r.error().message()));
    return std::move(r).value();
}

/// After the upgrade to schema 7 of a database where amy had a token (0xAA...) and prekeys (identity 0x11...,
/// one-time 4 and 9): amy has device 1, active, and the token and prekeys are device 1's; a device can be added
/// (and is removed again).
void check_upgraded_to_devices(Backend& s) {
    CHECK(s.find_device("amy", sim::first_device).value() ==
          sim::store::DeviceRecord{"amy", sim::first_device, sim::store::DeviceState::active, "", {}, {}, {}, {}});
    const auto token = s.find_token(sim::Bytes(32, 0xAA)).value();
    REQUIRE(token.has_value());
    CHECK(token->username == "amy");
    CHECK(token->device == sim::first_device);
    const auto st = s.prekey_status("amy", sim::first_device).value();
    CHECK(st.identity_key == sim::Bytes(32, 0x11));
    CHECK(st.one_time_count == 2);
    const auto added = s.add_device("amy", "", t0, t0, 10).value();
    CHECK(added >= 2);
    CHECK(s.remove_device("amy", added).value());
}

}  // namespace

TEST_CASE("postgresql: a version 6 database is upgraded; accounts get device 1, tokens and prekeys stay theirs") {
    if (backend_kind() != "postgresql") {
        return;
    }
    const auto admin = admin_connection();
    admin->drop_all();
    // Version 6 as libsim wrote it (its first PostgreSQL schema).
    admin->exec(
        "CREATE TABLE sim_meta (id SMALLINT NOT NULL PRIMARY KEY, schema_version INTEGER NOT NULL);"
        "CREATE TABLE sim_users (username BYTEA NOT NULL PRIMARY KEY CHECK (length(username) <= 64), "
        "password_hash BYTEA NOT NULL CHECK (length(password_hash) <= 255), "
        "failed_count BIGINT NOT NULL DEFAULT 0 CHECK (failed_count BETWEEN 0 AND 4294967295), "
        "last_failure_ns BIGINT NOT NULL DEFAULT 0);"
        "CREATE TABLE sim_sessions (token_hash BYTEA NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32), "
        "username BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, expires_ms BIGINT NOT NULL);"
        "CREATE INDEX sim_sessions_user ON sim_sessions (username);"
        "CREATE TABLE sim_conversation_keys ("
        "user_a BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, "
        "user_b BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, "
        "sealed_key BYTEA NOT NULL CHECK (length(sealed_key) <= 512), epoch BIGINT NOT NULL, "
        "created_ms BIGINT NOT NULL, PRIMARY KEY (user_a, user_b), CHECK (user_a < user_b));"
        "CREATE TABLE sim_prekeys ("
        "username BYTEA NOT NULL PRIMARY KEY REFERENCES sim_users (username) ON DELETE CASCADE, "
        "identity_key BYTEA NOT NULL CHECK (length(identity_key) = 32), spk_id BIGINT NOT NULL, "
        "spk BYTEA NOT NULL CHECK (length(spk) = 32), spk_sig BYTEA NOT NULL CHECK (length(spk_sig) = 64));"
        "CREATE TABLE sim_one_time_prekeys ("
        "username BYTEA NOT NULL REFERENCES sim_prekeys (username) ON DELETE CASCADE, key_id BIGINT NOT NULL, "
        "public_key BYTEA NOT NULL CHECK (length(public_key) = 32), PRIMARY KEY (username, key_id));"
        "CREATE TABLE sim_messages (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, recipient BYTEA NOT NULL, "
        "recipient_device BIGINT NOT NULL CHECK (recipient_device BETWEEN 1 AND 4294967295), "
        "sender BYTEA NOT NULL, sender_device BIGINT NOT NULL CHECK (sender_device BETWEEN 1 AND 4294967295), "
        "message_id BYTEA NOT NULL CHECK (length(message_id) = 16), envelope BYTEA NOT NULL, "
        "stored_ms BIGINT NOT NULL, "
        "CONSTRAINT sim_messages_device_key UNIQUE (recipient, recipient_device, sender, message_id));"
        "CREATE INDEX sim_messages_mailbox ON sim_messages (recipient, recipient_device, seq);"
        "CREATE TABLE sim_session_ends (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        "username BYTEA NOT NULL, at_ms BIGINT NOT NULL);"
        "INSERT INTO sim_meta VALUES (1, 6);"
        "INSERT INTO sim_users (username, password_hash) VALUES ('amy', '$h');"
        "INSERT INTO sim_sessions VALUES (decode(repeat('aa', 32), 'hex'), 'amy', 5000);"
        "INSERT INTO sim_prekeys VALUES ('amy', decode(repeat('11', 32), 'hex'), 7, decode(repeat('22', 32), 'hex'), "
        "decode(repeat('33', 64), 'hex'));"
        "INSERT INTO sim_one_time_prekeys VALUES ('amy', 4, decode(repeat('44', 32), 'hex')), "
        "('amy', 9, decode(repeat('99', 32), 'hex'));");
    {
        auto s = open_backend_or_fail();
        CHECK(admin->column("SELECT schema_version FROM sim_meta") ==
              std::vector<std::string>{std::to_string(sim::store::schema_version)});
        check_upgraded_to_devices(*s);
    }
    // Each statement of the step runs again (a server may die before the version is written).
    admin->exec("UPDATE sim_meta SET schema_version = 6 WHERE id = 1");
    check_upgraded_to_devices(*open_backend_or_fail());
    CHECK(admin->column("SELECT device FROM sim_devices ORDER BY device") == std::vector<std::string>{"1", "2", "3"});
}

TEST_CASE("database servers: a version 7 database is upgraded: monotonic failure times go, throttle keys work") {
    if (!server_backend()) {
        return;
    }
    const auto check_upgraded = [](Backend& s) {
        CHECK(s.find_user("amy").value()->failures == FailureState{});
        const WallTime now{std::chrono::seconds(1'700'000'000)};
        CHECK(s.record_failure("amy", now, 1h).value() == FailureState{1, now});
        CHECK(s.record_key_failure("a 192.0.2.1", now, 1h).value().count >= 1);
        CHECK(s.purge_key_failures(now).value() == 1);
    };
    {
        TestDb db;
        REQUIRE(db.backend->create_user("amy", "$h").has_value());
    }
    // Version 7 as libsim wrote it, as far as the step to 8 is concerned: sim_users with last_failure_ns (a
    // monotonic clock's nanoseconds) and no sim_throttle.
    const auto admin = admin_connection();
    admin->exec("DROP TABLE sim_throttle");
    admin->exec("ALTER TABLE sim_users DROP COLUMN last_failure_ms");
    admin->exec("ALTER TABLE sim_users ADD COLUMN last_failure_ns BIGINT NOT NULL DEFAULT 0");
    admin->exec("UPDATE sim_users SET failed_count = 4, last_failure_ns = 987654321");
    admin->exec("UPDATE sim_meta SET schema_version = 7 WHERE id = 1");
    {
        auto s = open_backend_or_fail();
        CHECK(admin->column("SELECT schema_version FROM sim_meta") ==
              std::vector<std::string>{std::to_string(sim::store::schema_version)});
        CHECK(admin->column("SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'sim_users' AND "
                            "column_name = 'last_failure_ns'") == std::vector<std::string>{"0"});
        check_upgraded(*s);
    }
    // Each statement of the step runs again (a server may die before the version is written).
    admin->exec("UPDATE sim_users SET failed_count = 4");
    admin->exec("UPDATE sim_meta SET schema_version = 7 WHERE id = 1");
    check_upgraded(*open_backend_or_fail());
}

TEST_CASE("mariadb: an old schema is upgraded on open") {
    if (backend_kind() != "mariadb") {
        return;
    }
    const auto admin_ptr = admin_connection();
    auto& admin = *admin_ptr;
    admin.drop_all();
    // Version 1 as libsim first wrote it: accounts only.
    admin.exec(
        "CREATE TABLE sim_meta (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, schema_version INT NOT NULL) "
        "ENGINE=InnoDB");
    admin.exec(
        "CREATE TABLE sim_users (username VARBINARY(64) NOT NULL PRIMARY KEY, "
        "password_hash VARBINARY(255) NOT NULL) ENGINE=InnoDB");
    admin.exec("INSERT INTO sim_meta VALUES (1, 1)");
    admin.exec("INSERT INTO sim_users VALUES ('rita', '$old')");
    auto r = sim::store::open_backend(env("SIM_TEST_DB_URL"));
    REQUIRE(r.has_value());
    CHECK(admin.column("SELECT schema_version FROM sim_meta") ==
          std::vector<std::string>{std::to_string(sim::store::schema_version)});
    const auto rita = r.value()->find_user("rita").value();
    REQUIRE(rita.has_value());
    CHECK(rita->password_hash == "$old");
    CHECK(rita->failures.count == 0);
    REQUIRE(r.value()->put_token(token_hash(1), "rita", sim::first_device, t0).has_value());
}

TEST_CASE("mariadb: messages stored under schema 5 are kept on upgrade, each for and from device 1") {
    if (backend_kind() != "mariadb") {
        return;
    }
    const auto admin_ptr = admin_connection();
    auto& admin = *admin_ptr;
    admin.drop_all();
    // Version 5 as libsim wrote it.
    for (const char* sql : {
             "CREATE TABLE sim_meta (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, schema_version INT NOT NULL) "
             "ENGINE=InnoDB",
             "CREATE TABLE sim_users (username VARBINARY(64) NOT NULL PRIMARY KEY, "
             "password_hash VARBINARY(255) NOT NULL, failed_count INT UNSIGNED NOT NULL DEFAULT 0, "
             "last_failure_ns BIGINT NOT NULL DEFAULT 0) ENGINE=InnoDB",
             "CREATE TABLE sim_sessions (token_hash BINARY(32) NOT NULL PRIMARY KEY, "
             "username VARBINARY(64) NOT NULL, expires_ms BIGINT NOT NULL, KEY sim_sessions_user (username), "
             "CONSTRAINT sim_sessions_user_fk FOREIGN KEY (username) REFERENCES sim_users (username) "
             "ON DELETE CASCADE) ENGINE=InnoDB",
             "CREATE TABLE sim_conversation_keys (user_a VARBINARY(64) NOT NULL, "
             "user_b VARBINARY(64) NOT NULL, sealed_key VARBINARY(512) NOT NULL, epoch BIGINT NOT NULL, "
             "created_ms BIGINT NOT NULL, PRIMARY KEY (user_a, user_b), KEY sim_conversation_keys_b (user_b), "
             "CONSTRAINT sim_conversation_keys_a_fk FOREIGN KEY (user_a) REFERENCES sim_users (username) "
             "ON DELETE CASCADE, "
             "CONSTRAINT sim_conversation_keys_b_fk FOREIGN KEY (user_b) REFERENCES sim_users (username) "
             "ON DELETE CASCADE, CONSTRAINT sim_conversation_keys_order CHECK (user_a < user_b)) ENGINE=InnoDB",
             "CREATE TABLE sim_prekeys (username VARBINARY(64) NOT NULL PRIMARY KEY, "
             "identity_key BINARY(32) NOT NULL, spk_id BIGINT NOT NULL, spk BINARY(32) NOT NULL, "
             "spk_sig BINARY(64) NOT NULL, CONSTRAINT sim_prekeys_user_fk FOREIGN KEY (username) "
             "REFERENCES sim_users (username) ON DELETE CASCADE) ENGINE=InnoDB",
             "CREATE TABLE sim_one_time_prekeys (username VARBINARY(64) NOT NULL, key_id BIGINT NOT NULL, "
             "public_key BINARY(32) NOT NULL, PRIMARY KEY (username, key_id), CONSTRAINT sim_one_time_prekeys_fk "
             "FOREIGN KEY (username) REFERENCES sim_prekeys (username) ON DELETE CASCADE) ENGINE=InnoDB",
             "CREATE TABLE sim_messages (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
             "recipient VARBINARY(64) NOT NULL, sender VARBINARY(64) NOT NULL, message_id BINARY(16) NOT NULL, "
             "envelope MEDIUMBLOB NOT NULL, stored_ms BIGINT NOT NULL, "
             "UNIQUE KEY sim_messages_key (recipient, sender, message_id), "
             "KEY sim_messages_recipient (recipient, seq)) ENGINE=InnoDB",
             "CREATE TABLE sim_session_ends (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
             "username VARBINARY(64) NOT NULL, at_ms BIGINT NOT NULL) ENGINE=InnoDB",
             "INSERT INTO sim_meta VALUES (1, 5)",
             "INSERT INTO sim_users (username, password_hash) VALUES ('amy', '$h')",
             "INSERT INTO sim_messages (recipient, sender, message_id, envelope, stored_ms) VALUES "
             "('amy', 'bob', UNHEX('00000000000000000000000000000001'), UNHEX('0102'), 1001), "
             "('amy', 'cat', UNHEX('00000000000000000000000000000002'), UNHEX('03'), 1002), "
             "('dan', 'bob', UNHEX('00000000000000000000000000000001'), UNHEX('040506'), 1003), "
             "('amy', 'bob', UNHEX('00000000000000000000000000000004'), UNHEX('07'), 1004)",
             "DELETE FROM sim_messages WHERE seq = 4",
             "INSERT INTO sim_sessions VALUES (UNHEX(REPEAT('AA', 32)), 'amy', 5000)",
             "INSERT INTO sim_prekeys VALUES ('amy', UNHEX(REPEAT('11', 32)), 7, UNHEX(REPEAT('22', 32)), "
             "UNHEX(REPEAT('33', 64)))",
             "INSERT INTO sim_one_time_prekeys VALUES ('amy', 4, UNHEX(REPEAT('44', 32))), "
             "('amy', 9, UNHEX(REPEAT('99', 32)))",
         }) {
        admin.exec(sql);
    }
    auto r = sim::store::open_backend(env("SIM_TEST_DB_URL"));
    REQUIRE_MESSAGE(r.has_value(), (r.has_value() ? std::string() : r.error().message()));
    auto& s = *r.value();
    CHECK(admin.column("SELECT schema_version FROM sim_meta") ==
          std::vector<std::string>{std::to_string(sim::store::schema_version)});
    CHECK(admin.column("SELECT CONCAT(seq, ':', recipient_device, ':', sender_device) FROM sim_messages "
                       "ORDER BY seq") == std::vector<std::string>{"1:1:1", "2:1:1", "3:1:1"});
    CHECK(admin.column("SELECT DISTINCT index_name FROM information_schema.statistics WHERE "
                       "table_schema = DATABASE() AND table_name = 'sim_messages' ORDER BY index_name") ==
          std::vector<std::string>{"PRIMARY", "sim_messages_device_key", "sim_messages_mailbox"});
    // Every writer names the devices: the columns keep no default.
    CHECK(admin.column("SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() AND "
                       "table_name = 'sim_messages' AND column_name LIKE '%device' AND column_default IS NULL") ==
          std::vector<std::string>{"2"});
    sim::MessageId id1{};
    id1[15] = 1;
    const auto amy = s.pending("amy", sim::first_device, 0, 10).value();
    REQUIRE(amy.size() == 2);
    CHECK(amy[0].seq == 1);
    CHECK(amy[0].sender == "bob");
    CHECK(amy[0].sender_device == sim::first_device);
    CHECK(amy[0].recipient_device == sim::first_device);
    CHECK(amy[0].id == id1);
    CHECK(amy[0].envelope == sim::Bytes{1, 2});
    CHECK(amy[0].stored_at == WallTime{std::chrono::milliseconds{1001}});
    CHECK(amy[1].sender == "cat");
    CHECK(s.pending("dan", sim::first_device, 0, 10).value().size() == 1);
    CHECK(s.usage_by_sender().value().at("bob") == sim::store::StoredUsage{2, 5});
    check_upgraded_to_devices(s);
    // The new key: the same message is stored once per device; seq continues after the highest ever handed out.
    auto again = amy[0];
    CHECK(s.append({again}).value() == std::vector<bool>{false});
    again.recipient_device = 2;
    CHECK(s.append({again}).value() == std::vector<bool>{true});
    const auto on2 = s.pending("amy", 2, 0, 10).value();
    REQUIRE(on2.size() == 1);
    CHECK(on2[0].seq > 4);
    // The step is re-runnable (MariaDB DDL is not transactional: a server may die before the version is written).
    r.value().reset();
    admin.exec("UPDATE sim_meta SET schema_version = 5 WHERE id = 1");
    CHECK(sim::store::open_backend(env("SIM_TEST_DB_URL")).has_value());
    CHECK(admin.column("SELECT schema_version FROM sim_meta") ==
          std::vector<std::string>{std::to_string(sim::store::schema_version)});
    CHECK(admin.column("SELECT CONCAT(seq, ':', recipient_device, ':', sender_device) FROM sim_messages "
                       "ORDER BY seq") ==
          std::vector<std::string>{"1:1:1", "2:1:1", "3:1:1", std::to_string(on2[0].seq) + ":2:1"});
    CHECK(admin.column("SELECT DISTINCT index_name FROM information_schema.statistics WHERE "
                       "table_schema = DATABASE() AND table_name = 'sim_messages' ORDER BY index_name") ==
          std::vector<std::string>{"PRIMARY", "sim_messages_device_key", "sim_messages_mailbox"});
    check_upgraded_to_devices(*open_backend_or_fail());
}

// ---------------------------------------------------------------- devices

namespace {

using sim::store::DeviceRecord;
using sim::store::DeviceState;
using sim::store::StoredDeviceList;

/// A device key (Ed25519 public key size) from a seed.
sim::Bytes device_key(std::uint8_t seed) {
    return filled(sim::store::device_key_size, seed);
}

/// Ids and states of a user's devices, in id order.
std::vector<std::pair<sim::DeviceId, DeviceState>> states(Backend& s, const std::string& user) {
    std::vector<std::pair<sim::DeviceId, DeviceState>> out;
    const auto devices = s.list_devices(user).value();
    for (const auto& d : devices) {
        out.emplace_back(d.device, d.state);
    }
    return out;
}

constexpr std::size_t no_limit = 1000;
const WallTime never{};  // expire_pending_before: nothing expires

}  // namespace

TEST_CASE("devices: every account has device 1 active from registration") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("ada", "$h").has_value());
    const auto devices = s.list_devices("ada").value();
    REQUIRE(devices.size() == 1);
    CHECK(devices[0] == DeviceRecord{"ada", sim::first_device, DeviceState::active, "", {}, {}, {}, {}});
    CHECK(s.find_device("ada", sim::first_device).value() == devices[0]);
    CHECK(s.find_device("ada", 2).value() == std::nullopt);
    CHECK(s.list_devices("nobody").value().empty());
    CHECK(s.find_device("nobody", 1).value() == std::nullopt);
    CHECK(s.find_device_list("ada").value() == std::nullopt);
    if (db.persistent()) {
        db.reopen();
        CHECK(db.backend->list_devices("ada").value() == devices);
    }
}

TEST_CASE("devices: add, activate, rename, touch; ids are never reused") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("bea", "$h").has_value());
    REQUIRE(s.create_user("cid", "$h").has_value());
    const std::string longest(sim::store::max_device_name_length, 'd');
    const auto two = s.add_device("bea", longest, t0, never, no_limit).value();
    CHECK(two == 2);
    CHECK(s.add_device("cid", "", t0, never, no_limit).value() == 2);  // ids count per account
    auto d = s.find_device("bea", two).value();
    REQUIRE(d.has_value());
    CHECK(*d == DeviceRecord{"bea", 2, DeviceState::pending, longest, {}, t0, {}, {}});
    // Pending: no token, no prekeys.
    CHECK(s.put_token(token_hash(1), "bea", two, t0 + 1h).code() == Errc::user_not_found);
    CHECK(s.set_prekeys("bea", two, upload(1, true, 1, 2)).code() == Errc::user_not_found);

    REQUIRE(s.activate_device("bea", two, device_key(7), t0 + 1s).has_value());
    d = s.find_device("bea", two).value();
    CHECK(d->state == DeviceState::active);
    CHECK(d->device_key == device_key(7));
    CHECK(d->created == t0);
    CHECK(d->linked == t0 + 1s);
    // Again with the same key: nothing changes (linked stays); another key is refused.
    REQUIRE(s.activate_device("bea", two, device_key(7), t0 + 5s).has_value());
    CHECK(s.find_device("bea", two).value()->linked == t0 + 1s);
    CHECK(s.activate_device("bea", two, device_key(8), t0 + 5s).code() == Errc::bad_field);
    CHECK(s.find_device("bea", two).value()->device_key == device_key(7));
    // Device 1 made without a key gets one, once.
    REQUIRE(s.activate_device("bea", sim::first_device, device_key(1), t0 + 2s).has_value());
    CHECK(s.find_device("bea", sim::first_device).value()->device_key == device_key(1));
    CHECK(s.find_device("bea", sim::first_device).value()->linked == WallTime{});
    CHECK(s.activate_device("bea", sim::first_device, device_key(2), t0).code() == Errc::bad_field);
    CHECK(s.activate_device("bea", 9, device_key(1), t0).code() == Errc::user_not_found);
    CHECK(s.activate_device("nobody", 1, device_key(1), t0).code() == Errc::user_not_found);

    REQUIRE(s.rename_device("bea", two, "tablet").has_value());
    CHECK(s.find_device("bea", two).value()->name == "tablet");
    REQUIRE(s.rename_device("bea", two, "").has_value());
    CHECK(s.find_device("bea", two).value()->name.empty());
    CHECK(s.rename_device("bea", 9, "x").code() == Errc::user_not_found);

    REQUIRE(s.touch_device("bea", two, t0 + 1h).has_value());
    CHECK(s.find_device("bea", two).value()->last_seen == t0 + 1h);
    REQUIRE(s.touch_device("bea", 9, t0 + 1h).has_value());     // unknown: ignored
    REQUIRE(s.touch_device("nobody", 1, t0 + 1h).has_value());  // unknown: ignored

    // Removed devices keep their ids: the next is one above the highest ever used.
    const auto three = s.add_device("bea", "laptop", t0, never, no_limit).value();
    CHECK(three == 3);
    CHECK(s.remove_device("bea", three).value());  // a pending one
    CHECK_FALSE(s.remove_device("bea", three).value());
    CHECK(s.add_device("bea", "again", t0, never, no_limit).value() == 4);
    CHECK(s.rename_device("bea", three, "x").code() == Errc::user_not_found);
    CHECK(s.activate_device("bea", three, device_key(3), t0).code() == Errc::user_not_found);
    REQUIRE(s.touch_device("bea", three, t0 + 2h).has_value());  // removed: ignored
    CHECK(s.find_device("bea", three).value()->last_seen == WallTime{});
    CHECK(states(s, "bea") == std::vector<std::pair<sim::DeviceId, DeviceState>>{{1, DeviceState::active},
                                                                                 {2, DeviceState::active},
                                                                                 {3, DeviceState::removed},
                                                                                 {4, DeviceState::pending}});
    if (db.persistent()) {
        const auto before = s.list_devices("bea").value();
        db.reopen();
        CHECK(db.backend->list_devices("bea").value() == before);
    }
}

TEST_CASE("devices: the limit counts pending and active devices; unfinished links expire") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("dee", "$h").has_value());
    CHECK(s.add_device("dee", "a", t0, never, 1).code() == Errc::limit_reached);  // device 1 counts
    const auto two = s.add_device("dee", "a", t0, never, 3).value();
    const auto three = s.add_device("dee", "b", t0 + 10s, never, 3).value();
    CHECK(s.add_device("dee", "c", t0 + 20s, never, 3).code() == Errc::limit_reached);
    CHECK(states(s, "dee").size() == 3);  // nothing changed
    REQUIRE(s.activate_device("dee", two, device_key(2), t0 + 1s).has_value());
    // A removed device frees its place.
    CHECK(s.remove_device("dee", two).value());
    const auto four = s.add_device("dee", "c", t0 + 20s, never, 3).value();
    CHECK(four == 4);
    // Pending devices created at or before expire_pending_before are deleted first; active and removed ones stay.
    CHECK(s.add_device("dee", "d", t0 + 30s, t0 + 9s, 3).code() == Errc::limit_reached);  // none expired
    CHECK(states(s, "dee").size() == 4);
    const auto five = s.add_device("dee", "d", t0 + 30s, t0 + 10s, 3).value();  // three (t0 + 10s) expires
    CHECK(five == 5);
    CHECK(s.find_device("dee", three).value() == std::nullopt);
    CHECK(states(s, "dee") == std::vector<std::pair<sim::DeviceId, DeviceState>>{{1, DeviceState::active},
                                                                                 {2, DeviceState::removed},
                                                                                 {4, DeviceState::pending},
                                                                                 {5, DeviceState::pending}});
    // A refused add expires nothing either.
    CHECK(s.add_device("dee", "e", t0 + 40s, t0 + 20s, 1).code() == Errc::limit_reached);
    CHECK(s.find_device("dee", four).value().has_value());
    // The highest id ever given is not given again, even when its pending device expired.
    CHECK(s.add_device("dee", "e", t0 + 40s, t0 + 30s, 3).value() == 6);
    CHECK(s.find_device("dee", five).value() == std::nullopt);
    if (db.persistent()) {
        db.reopen();
        CHECK(db.backend->add_device("dee", "f", t0 + 50s, t0 + 50s, 3).value() == 7);
    }
}

TEST_CASE("devices: remove deletes exactly that device's tokens, prekeys and mailbox, and logs it") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("eli", "$h").has_value());
    REQUIRE(s.create_user("fay", "$h").has_value());
    const auto two = s.add_device("eli", "phone", t0, never, no_limit).value();
    REQUIRE(s.activate_device("eli", two, device_key(2), t0).has_value());
    const auto three = s.add_device("eli", "laptop", t0, never, no_limit).value();
    REQUIRE(s.activate_device("eli", three, device_key(4), t0).has_value());
    REQUIRE(s.add_device("fay", "phone", t0, never, no_limit).value() == two);
    REQUIRE(s.activate_device("fay", two, device_key(3), t0).has_value());
    for (const auto* u : {"eli", "fay"}) {
        for (const sim::DeviceId d : {sim::first_device, two, three}) {
            if (u[0] == 'f' && d == three) {
                continue;
            }
            const auto seed = static_cast<std::uint8_t>((u[0] == 'e' ? 10 : 20) + d);
            REQUIRE(s.put_token(token_hash(seed), u, d, t0 + 1h).has_value());
            REQUIRE(s.set_prekeys(u, d, upload(seed, true, 1, 3)).has_value());
            REQUIRE(s.append({on(stored(u, "gus", seed), d, 1)}).has_value());
        }
    }
    // Prekeys are per device.
    CHECK(s.prekey_status("eli", two).value().identity_key == filled(32, 12));
    CHECK(s.prekey_status("eli", sim::first_device).value().identity_key == filled(32, 11));
    CHECK(s.take_bundle("eli", two).value()->one_time_prekey_id == 1U);
    CHECK(s.prekey_status("eli", two).value().one_time_count == 2);
    CHECK(s.prekey_status("eli", sim::first_device).value().one_time_count == 3);
    // A token names its device.
    CHECK(s.find_token(token_hash(12)).value()->device == two);
    CHECK(s.find_token(token_hash(11)).value()->device == sim::first_device);

    const auto start = s.last_session_end().value();
    CHECK(s.remove_device("eli", two).value());
    CHECK(s.find_device("eli", two).value()->state == DeviceState::removed);
    CHECK_FALSE(s.find_token(token_hash(12)).value().has_value());
    CHECK_FALSE(s.prekey_status("eli", two).value().identity_key.has_value());
    CHECK(s.take_bundle("eli", two).value() == std::nullopt);
    CHECK(s.usage("eli", two).value() == sim::store::StoredUsage{});
    // The user's other devices (below and above) and the other user's device 2 keep everything.
    for (const sim::DeviceId d : {sim::first_device, three}) {
        CHECK(s.find_token(token_hash(static_cast<std::uint8_t>(10 + d))).value().has_value());
        CHECK(s.prekey_status("eli", d).value().one_time_count == 3);
        CHECK(s.usage("eli", d).value().messages == 1);
    }
    CHECK(s.find_token(token_hash(22)).value().has_value());
    CHECK(s.prekey_status("fay", two).value().one_time_count == 3);
    CHECK(s.usage("fay", two).value().messages == 1);
    // Logged once, for that device only; removing again logs nothing.
    CHECK_FALSE(s.remove_device("eli", two).value());
    CHECK_FALSE(s.remove_device("eli", 9).value());
    CHECK_FALSE(s.remove_device("nobody", 1).value());
    const auto log = s.session_ends_after(start, 10).value();
    REQUIRE(log.size() == 1);
    CHECK(log[0].username == "eli");
    CHECK(log[0].device == two);
    // Revoking and deleting name every device (0).
    REQUIRE(s.revoke_user_tokens("fay").has_value());
    CHECK(s.session_ends_after(log[0].seq, 10).value().at(0).device == 0);
    // A removed device takes no token and no prekeys.
    CHECK(s.put_token(token_hash(30), "eli", two, t0 + 1h).code() == Errc::user_not_found);
    CHECK(s.set_prekeys("eli", two, upload(1, true, 1, 2)).code() == Errc::user_not_found);
    // Device 1 can be removed like any other.
    CHECK(s.remove_device("eli", sim::first_device).value());
    CHECK_FALSE(s.find_token(token_hash(11)).value().has_value());
    CHECK(s.usage("eli", sim::first_device).value() == sim::store::StoredUsage{});
}

TEST_CASE("devices: the signed device list only moves to a higher version") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("gil", "$h").has_value());
    const StoredDeviceList v1{1, filled(100, 1)};
    const StoredDeviceList v5{5, filled(sim::store::max_signed_device_list_size, 5)};
    REQUIRE(s.put_device_list("gil", v1).has_value());
    CHECK(s.find_device_list("gil").value() == v1);
    CHECK(s.put_device_list("gil", StoredDeviceList{1, filled(10, 9)}).code() == Errc::stale_epoch);
    REQUIRE(s.put_device_list("gil", v5).has_value());
    CHECK(s.put_device_list("gil", StoredDeviceList{4, filled(10, 9)}).code() == Errc::stale_epoch);
    CHECK(s.put_device_list("gil", StoredDeviceList{5, filled(10, 9)}).code() == Errc::stale_epoch);
    CHECK(s.find_device_list("gil").value() == v5);
    CHECK(s.put_device_list("nobody", v1).code() == Errc::user_not_found);
    const StoredDeviceList highest{static_cast<std::uint64_t>(INT64_MAX), filled(1, 0)};
    REQUIRE(s.put_device_list("gil", highest).has_value());
    CHECK(s.find_device_list("gil").value() == highest);
    if (db.persistent()) {
        db.reopen();
        CHECK(db.backend->find_device_list("gil").value() == highest);
    }
}

TEST_CASE("devices: deleting the user deletes its devices, device list, tokens and prekeys of every device") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("hal", "$h").has_value());
    const auto two = s.add_device("hal", "phone", t0, never, no_limit).value();
    REQUIRE(s.activate_device("hal", two, device_key(2), t0).has_value());
    REQUIRE(s.add_device("hal", "pending", t0, never, no_limit).has_value());
    REQUIRE(s.put_token(token_hash(2), "hal", two, t0 + 1h).has_value());
    REQUIRE(s.set_prekeys("hal", two, upload(2, true, 1, 3)).has_value());
    REQUIRE(s.append({on(stored("hal", "ivo", 1), two, 1)}).has_value());
    REQUIRE(s.put_device_list("hal", StoredDeviceList{3, filled(50, 3)}).has_value());
    REQUIRE(s.delete_user("hal").has_value());
    CHECK(s.list_devices("hal").value().empty());
    CHECK(s.find_device_list("hal").value() == std::nullopt);
    CHECK_FALSE(s.find_token(token_hash(2)).value().has_value());
    CHECK(s.take_bundle("hal", two).value() == std::nullopt);
    CHECK(s.usage("hal", two).value() == sim::store::StoredUsage{});
    // A new account of that name starts again at device 1, with no list.
    REQUIRE(s.create_user("hal", "$h").has_value());
    CHECK(states(s, "hal") == std::vector<std::pair<sim::DeviceId, DeviceState>>{{1, DeviceState::active}});
    CHECK(s.add_device("hal", "", t0, never, no_limit).value() == 2);
    CHECK(s.find_device_list("hal").value() == std::nullopt);
    CHECK(s.put_device_list("hal", StoredDeviceList{1, filled(5, 1)}).has_value());
}

TEST_CASE("devices: bad input is refused and changes nothing") {
    TestDb db;
    auto& s = *db.backend;
    REQUIRE(s.create_user("ivy", "$h").has_value());
    const std::string too_long(sim::store::max_device_name_length + 1, 'x');
    const std::string too_long_user(sim::store::max_username_length + 1, 'u');
    CHECK(s.add_device("ivy", too_long, t0, never, no_limit).code() == Errc::invalid_argument);
    CHECK(s.add_device("ivy", "a", t0, never, 0).code() == Errc::invalid_argument);
    CHECK(s.add_device("", "a", t0, never, no_limit).code() == Errc::invalid_argument);
    CHECK(s.add_device(too_long_user, "a", t0, never, no_limit).code() == Errc::invalid_argument);
    CHECK(s.add_device("nobody", "a", t0, never, no_limit).code() == Errc::user_not_found);
    CHECK(s.activate_device("ivy", 0, device_key(1), t0).code() == Errc::invalid_argument);
    CHECK(s.activate_device("ivy", 1, filled(31, 1), t0).code() == Errc::invalid_argument);
    CHECK(s.activate_device("ivy", 1, filled(33, 1), t0).code() == Errc::invalid_argument);
    CHECK(s.activate_device("ivy", 1, {}, t0).code() == Errc::invalid_argument);
    CHECK(s.remove_device("ivy", 0).code() == Errc::invalid_argument);
    CHECK(s.remove_device("", 1).code() == Errc::invalid_argument);
    CHECK(s.rename_device("ivy", 1, too_long).code() == Errc::invalid_argument);
    CHECK(s.rename_device("ivy", 0, "a").code() == Errc::invalid_argument);
    CHECK(s.find_device("ivy", 0).code() == Errc::invalid_argument);
    CHECK(s.find_device("", 1).code() == Errc::invalid_argument);
    CHECK(s.list_devices("").code() == Errc::invalid_argument);
    CHECK(s.put_device_list("ivy", StoredDeviceList{1, {}}).code() == Errc::invalid_argument);
    CHECK(s.put_device_list("ivy", StoredDeviceList{0, filled(5, 1)}).code() == Errc::invalid_argument);
    CHECK(
        s.put_device_list("ivy", StoredDeviceList{1, filled(sim::store::max_signed_device_list_size + 1, 1)}).code() ==
        Errc::invalid_argument);
    CHECK(s.put_device_list("ivy", StoredDeviceList{static_cast<std::uint64_t>(INT64_MAX) + 1, filled(5, 1)}).code() ==
          Errc::invalid_argument);
    CHECK(s.find_device_list("").code() == Errc::invalid_argument);
    CHECK(s.put_token(token_hash(1), "ivy", 0, t0).code() == Errc::invalid_argument);
    CHECK(s.set_prekeys("ivy", 0, upload(1, true, 1, 1)).code() == Errc::invalid_argument);
    CHECK(s.take_bundle("ivy", 0).code() == Errc::invalid_argument);
    CHECK(s.prekey_status("ivy", 0).code() == Errc::invalid_argument);
    CHECK(s.find_device_list("ivy").value() == std::nullopt);
    CHECK(s.list_devices("ivy").value() ==
          std::vector<DeviceRecord>{DeviceRecord{"ivy", 1, DeviceState::active, "", {}, {}, {}, {}}});
}

TEST_CASE("session tokens: a token is issued to one active device and names it") {
    TestDb db;
    auto rng = sim::make_deterministic_rng(sim::as_bytes("device tokens"));
    REQUIRE(db.backend->create_user("jodie", "$h").has_value());
    sim::auth::SessionTokens tokens(*db.backend, *rng);
    const auto two = db.backend->add_device("jodie", "phone", t0, never, no_limit).value();
    CHECK(tokens.issue("jodie", two, t0, 1h).code() == Errc::user_not_found);  // pending
    REQUIRE(db.backend->activate_device("jodie", two, device_key(2), t0).has_value());
    const auto on_two = tokens.issue("jodie", two, t0, 1h).value();
    const auto on_one = tokens.issue("jodie", sim::first_device, t0, 1h).value();
    CHECK(tokens.issue("jodie", 0, t0, 1h).code() == Errc::invalid_argument);
    const auto r = tokens.validate(on_two.token, t0).value();
    CHECK(r.username == "jodie");
    CHECK(r.device == two);
    CHECK(r.expires == t0 + 1h);
    CHECK(tokens.validate(on_one.token, t0).value().device == sim::first_device);
    REQUIRE(db.backend->remove_device("jodie", two).value());
    CHECK(tokens.validate(on_two.token, t0).code() == Errc::token_invalid);
    CHECK(tokens.validate(on_one.token, t0).value().device == sim::first_device);
}
