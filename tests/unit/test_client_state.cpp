// Client state store: one conformance suite run over the memory and the SQLite backend, then the file store's
// encryption at rest (password check, hidden names, bound rows), its refusal of foreign files, its exclusive lock and
// its file mode. Raw SQLite access (tests only) tampers with files the way an attacker with the disk would.
#include <doctest/doctest.h>

#include <sim/client_state.h>
#include <sim/crypto.h>

#include <sqlite3.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

namespace fs = std::filesystem;
using sim::ClientState;
using sim::Errc;
using sim::SecureBytes;
using sim::StateWrite;

namespace {

/// Cheap Argon2id cost so the suite stays fast.
sim::ClientStateParams fast_params() {
    sim::ClientStateParams p;
    p.argon2_memory_kib = 256;
    p.argon2_iterations = 1;
    p.argon2_parallelism = 1;
    return p;
}

SecureBytes sb(std::string_view s) {
    return SecureBytes(s.begin(), s.end());
}

std::string str(const SecureBytes& b) {
    return {b.begin(), b.end()};
}

/// A fresh directory under the temp dir, removed at scope exit.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "sim-state-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        m_path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(m_path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    [[nodiscard]] std::string file(const std::string& name) const { return (m_path / name).string(); }

private:
    fs::path m_path;
};

// Only call these on files no live ClientState holds: closing a descriptor drops this process's POSIX locks.
std::string read_all(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_all(const std::string& path, const std::string& data) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << data;
}

/// Run SQL on a file with plain SQLite (no libsim).
void raw_exec(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) == SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    const std::string message = err != nullptr ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    INFO(message);
    REQUIRE(rc == SQLITE_OK);
}

using Row = std::pair<std::string, std::string>;

/// Every (k, v) row of the kv table, read with plain SQLite.
std::vector<Row> raw_rows(const std::string& path) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT k, v FROM kv ORDER BY k", -1, &q, nullptr) == SQLITE_OK);
    std::vector<Row> rows;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const auto blob = [&](int i) {
            const auto* p = static_cast<const char*>(sqlite3_column_blob(q, i));
            return std::string(p, p + sqlite3_column_bytes(q, i));
        };
        rows.emplace_back(blob(0), blob(1));
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
    return rows;
}

/// Set each row's v (by k) with plain SQLite.
void raw_update(const std::string& path, const std::vector<Row>& rows) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "UPDATE kv SET v = ?2 WHERE k = ?1", -1, &q, nullptr) == SQLITE_OK);
    for (const auto& [k, v] : rows) {
        sqlite3_bind_blob(q, 1, k.data(), static_cast<int>(k.size()), SQLITE_TRANSIENT);
        sqlite3_bind_blob(q, 2, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
        CHECK(sqlite3_step(q) == SQLITE_DONE);
        CHECK(sqlite3_changes(db) == 1);
        sqlite3_reset(q);
    }
    sqlite3_finalize(q);
    sqlite3_close(db);
}

std::unique_ptr<ClientState> open_ok(const std::string& path, std::string_view password) {
    auto r = sim::open_client_state(path, password, fast_params());
    INFO((r.has_value() ? std::string() : r.error().message()));
    REQUIRE(r.has_value());
    return std::move(r).value();
}

void put(ClientState& s, const std::string& key, std::string_view value) {
    const auto st = s.write({StateWrite{key, sb(value)}});
    INFO((st.has_value() ? std::string() : st.error().message()));
    REQUIRE(st.has_value());
}

std::optional<std::string> lookup(const ClientState& s, std::string_view key) {
    auto r = s.get(key);
    INFO((r.has_value() ? std::string() : r.error().message()));
    REQUIRE(r.has_value());
    if (!r->has_value()) {
        return std::nullopt;
    }
    return str(**r);
}

/// The same behaviour from every backend.
void conformance(const std::function<std::unique_ptr<ClientState>()>& make) {
    auto s = make();
    REQUIRE(s != nullptr);

    SUBCASE("round trip, overwrite, erase") {
        CHECK(lookup(*s, "identity") == std::nullopt);
        put(*s, "identity", "key material");
        CHECK(lookup(*s, "identity") == "key material");
        put(*s, "identity", "replaced");
        CHECK(lookup(*s, "identity") == "replaced");
        REQUIRE(s->write({StateWrite{"identity", std::nullopt}}).has_value());
        CHECK(lookup(*s, "identity") == std::nullopt);
        // Erasing a missing key is fine.
        CHECK(s->write({StateWrite{"identity", std::nullopt}}).has_value());
        CHECK(s->write({}).has_value());
    }
    SUBCASE("keys are exact bytes; empty values are values") {
        const std::string with_nul("peer\0a", 6);
        put(*s, with_nul, "one");
        put(*s, "peer", "two");
        put(*s, "empty", "");
        CHECK(lookup(*s, with_nul) == "one");
        CHECK(lookup(*s, "peer") == "two");
        CHECK(lookup(*s, "Peer") == std::nullopt);
        CHECK(lookup(*s, "empty") == std::string());
    }
    SUBCASE("a batch applies in order, later writes win") {
        put(*s, "gone", "x");
        REQUIRE(s->write({StateWrite{"a", sb("1")}, StateWrite{"b", sb("2")}, StateWrite{"a", sb("3")},
                          StateWrite{"gone", std::nullopt}})
                    .has_value());
        CHECK(lookup(*s, "a") == "3");
        CHECK(lookup(*s, "b") == "2");
        CHECK(lookup(*s, "gone") == std::nullopt);
    }
    SUBCASE("a failing batch leaves nothing") {
        put(*s, "kept", "old");
        put(*s, "erased?", "still here");
        const std::string too_long(sim::client_state_max_key_size + 1, 'k');
        for (const auto& bad : {StateWrite{"", sb("v")}, StateWrite{too_long, sb("v")}}) {
            // The bad write comes last, after writes that the backend has already applied in its transaction.
            const auto st = s->write({StateWrite{"kept", sb("new")}, StateWrite{"erased?", std::nullopt},
                                      StateWrite{"fresh", sb("v")}, bad});
            CHECK(st.code() == Errc::invalid_argument);
            CHECK(lookup(*s, "kept") == "old");
            CHECK(lookup(*s, "erased?") == "still here");
            CHECK(lookup(*s, "fresh") == std::nullopt);
        }
        SecureBytes huge(sim::client_state_max_value_size + 1, 0x41);
        CHECK(s->write({StateWrite{"fresh", sb("v")}, StateWrite{"huge", std::move(huge)}}).code() ==
              Errc::invalid_argument);
        CHECK(lookup(*s, "fresh") == std::nullopt);
        // The store is still usable, and the limits are inclusive.
        const std::string longest(sim::client_state_max_key_size, 'k');
        put(*s, longest, "edge");
        CHECK(lookup(*s, longest) == "edge");
    }
    SUBCASE("get refuses keys no write could store") {
        CHECK(s->get("").code() == Errc::invalid_argument);
        CHECK(s->get(std::string(sim::client_state_max_key_size + 1, 'k')).code() == Errc::invalid_argument);
    }
}

}  // namespace

TEST_CASE("client state conformance: memory") {
    conformance([] { return sim::make_memory_client_state(); });
    CHECK(sim::make_memory_client_state()->created());
}

TEST_CASE("client state conformance: sqlite") {
    const TempDir dir;
    conformance([&] { return open_ok(dir.file("state.db"), "pw"); });
}

TEST_CASE("client state file: reopen, created, wrong password") {
    const TempDir dir;
    const auto path = dir.file("state.db");
    {
        auto s = open_ok(path, "correct horse");
        CHECK(s->created());
        put(*s, "identity", "ik");
        put(*s, "session:bob", "ratchet");
    }
    {
        auto s = open_ok(path, "correct horse");
        CHECK_FALSE(s->created());
        CHECK(lookup(*s, "identity") == "ik");
        CHECK(lookup(*s, "session:bob") == "ratchet");
        CHECK(lookup(*s, "session:carol") == std::nullopt);
    }
    CHECK_FALSE(fs::exists(path + "-wal"));  // checkpointed and removed on close
    const auto before = read_all(path);
    for (const std::string_view wrong : {"correct horsf", "", "Correct horse", "correct horse "}) {
        auto r = sim::open_client_state(path, wrong, fast_params());
        CHECK(r.code() == Errc::auth_failed);
    }
    CHECK(read_all(path) == before);
    CHECK_FALSE(fs::exists(path + "-wal"));
    CHECK_FALSE(fs::exists(path + "-shm"));
    auto s = open_ok(path, "correct horse");  // the wrong attempts did not lock the file or damage it
    CHECK(lookup(*s, "identity") == "ik");
}

TEST_CASE("client state file: neither key names nor values are readable in the file") {
    const TempDir dir;
    const auto path = dir.file("state.db");
    const std::string name = "contact:alice.wonderland";
    const std::string value = "attack at dawn, secret";
    // Long enough that random bytes never spell it by chance (a two-letter password turned up in them once).
    const std::string password = "a state password nobody would guess";
    {
        auto s = open_ok(path, password);
        put(*s, name, value);
    }
    const auto bytes = read_all(path);
    REQUIRE(bytes.size() > 0);
    CHECK(bytes.find("SQLite format 3") != std::string::npos);  // the search itself works
    CHECK(bytes.find(name) == std::string::npos);
    CHECK(bytes.find("alice") == std::string::npos);
    CHECK(bytes.find(value) == std::string::npos);
    CHECK(bytes.find("attack") == std::string::npos);
    CHECK(bytes.find(password) == std::string::npos);
    CHECK(bytes.find("state password") == std::string::npos);
    // The same check would catch a plaintext store: the memory of a plain SQLite file shows the value.
    const auto plain = dir.file("plain.db");
    raw_exec(plain, "CREATE TABLE t (k TEXT, v TEXT); INSERT INTO t VALUES ('" + name + "', '" + value + "');");
    CHECK(read_all(plain).find(value) != std::string::npos);
}

TEST_CASE("client state file: tampered values fail to open") {
    const TempDir dir;
    const auto path = dir.file("state.db");
    {
        auto s = open_ok(path, "pw");
        put(*s, "a", "value of a");
        put(*s, "b", "value of b");
        put(*s, "c", "value of c");
    }
    SUBCASE("swapped between rows") {
        auto rows = raw_rows(path);
        REQUIRE(rows.size() == 3);
        std::swap(rows[0].second, rows[1].second);
        raw_update(path, rows);
        auto s = open_ok(path, "pw");
        int corrupt = 0;
        int fine = 0;
        for (const auto* key : {"a", "b", "c"}) {
            const auto r = s->get(key);
            if (r.code() == Errc::corrupt_database) {
                ++corrupt;
            } else if (r && r->has_value() && str(**r) == std::string("value of ") + key) {
                ++fine;
            }
        }
        CHECK(corrupt == 2);
        CHECK(fine == 1);
    }
    SUBCASE("bit flipped") {
        // In the nonce, the ciphertext ("value of x" is 10 bytes at 12..21) and the tag (the last 16 bytes).
        for (const std::size_t at : {std::size_t{0}, std::size_t{12}, std::size_t{21}, std::size_t{37}}) {
            auto rows = raw_rows(path);
            for (auto& row : rows) {
                REQUIRE(row.second.size() == 12 + 10 + 16);
                row.second[at] = static_cast<char>(row.second[at] ^ 0x01);
            }
            raw_update(path, rows);
            {
                auto s = open_ok(path, "pw");
                CHECK(s->get("a").code() == Errc::corrupt_database);
                CHECK(s->get("b").code() == Errc::corrupt_database);
            }
            for (auto& row : rows) {  // undo, and prove the undone rows read again
                row.second[at] = static_cast<char>(row.second[at] ^ 0x01);
            }
            raw_update(path, rows);
            CHECK(lookup(*open_ok(path, "pw"), "a") == "value of a");
        }
    }
    SUBCASE("truncated") {
        raw_exec(path, "UPDATE kv SET v = substr(v, 1, 27)");
        auto s = open_ok(path, "pw");
        CHECK(s->get("a").code() == Errc::corrupt_database);
        // Writing over a damaged row repairs it.
        put(*s, "a", "new");
        CHECK(lookup(*s, "a") == "new");
    }
}

TEST_CASE("client state file: foreign and damaged files are refused unchanged") {
    const TempDir dir;
    const auto path = dir.file("state.db");
    SUBCASE("another application's SQLite file") {
        raw_exec(path, "CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');");
        const auto before = read_all(path);
        CHECK(sim::open_client_state(path, "pw", fast_params()).code() == Errc::corrupt_database);
        CHECK(read_all(path) == before);
        CHECK_FALSE(fs::exists(path + "-wal"));
    }
    SUBCASE("the server's account database (another libsim file)") {
        raw_exec(path, "PRAGMA application_id = 1280526669; PRAGMA user_version = 3; CREATE TABLE sim_users (u);");
        const auto before = read_all(path);
        CHECK(sim::open_client_state(path, "pw", fast_params()).code() == Errc::corrupt_database);
        CHECK(read_all(path) == before);
    }
    SUBCASE("not SQLite at all") {
        for (const std::string& junk : {std::string("just some text, not a database"), std::string(4096, '\x5a'),
                                        std::string(1, '\0'), std::string(511, '\0'), std::string(8192, '\0')}) {
            write_all(path, junk);
            CHECK(sim::open_client_state(path, "pw", fast_params()).code() == Errc::corrupt_database);
            CHECK(read_all(path) == junk);
            CHECK_FALSE(fs::exists(path + "-wal"));
        }
    }
    SUBCASE("a newer schema") {
        raw_exec(path, "PRAGMA application_id = 1280525139; PRAGMA user_version = 2; CREATE TABLE future (x);");
        const auto before = read_all(path);
        CHECK(sim::open_client_state(path, "pw", fast_params()).code() == Errc::schema_too_new);
        CHECK(read_all(path) == before);
    }
    SUBCASE("tampered key parameters") {
        { open_ok(path, "pw"); }
        const auto reopen = [&] { return sim::open_client_state(path, "pw", fast_params()).code(); };
        SUBCASE("absurd memory") {
            raw_exec(path, "UPDATE meta SET kdf_memory_kib = 1099511627776");
            CHECK(reopen() == Errc::corrupt_database);
        }
        SUBCASE("zero iterations") {
            raw_exec(path, "UPDATE meta SET kdf_iterations = 0");
            CHECK(reopen() == Errc::corrupt_database);
        }
        SUBCASE("text instead of a number") {
            raw_exec(path, "UPDATE meta SET kdf_parallelism = 'one'");
            CHECK(reopen() == Errc::corrupt_database);
        }
        SUBCASE("short salt") {
            raw_exec(path, "UPDATE meta SET kdf_salt = substr(kdf_salt, 1, 15)");
            CHECK(reopen() == Errc::corrupt_database);
        }
        SUBCASE("no meta row") {
            raw_exec(path, "DELETE FROM meta");
            CHECK(reopen() == Errc::corrupt_database);
        }
        SUBCASE("a newer crypto format") {
            raw_exec(path, "UPDATE meta SET format = 3");
            CHECK(reopen() == Errc::schema_too_new);
        }
        SUBCASE("an unknown older format") {
            raw_exec(path, "UPDATE meta SET format = 0");
            CHECK(reopen() == Errc::corrupt_database);
        }
        SUBCASE("format 1 named on a format 2 key row") {
            raw_exec(path, "UPDATE meta SET format = 1");
            CHECK(reopen() == Errc::corrupt_database);
        }
        SUBCASE("a damaged wrapped key") {
            raw_exec(path, "UPDATE meta SET check_value = zeroblob(length(check_value))");
            CHECK(reopen() == Errc::auth_failed);
        }
        SUBCASE("weaker but valid parameters derive another key") {
            raw_exec(path, "UPDATE meta SET kdf_memory_kib = 64");
            CHECK(reopen() == Errc::auth_failed);
        }
        SUBCASE("another salt derives another key") {
            raw_exec(path, "UPDATE meta SET kdf_salt = zeroblob(16)");
            CHECK(reopen() == Errc::auth_failed);
        }
    }
}

TEST_CASE("client state file: one holder at a time") {
    const TempDir dir;
    const auto path = dir.file("state.db");
    SUBCASE("new file") {}
    SUBCASE("existing file") {
        auto s = open_ok(path, "pw");
        put(*s, "k", "v");
    }
    auto first = open_ok(path, "pw");
    // A second store in this process.
    CHECK(sim::open_client_state(path, "pw", fast_params()).code() == Errc::busy);
    CHECK(sim::open_client_state(path, "wrong", fast_params()).code() == Errc::busy);
    // Another process (the failed attempts above must not have dropped the first store's locks).
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        const auto code = sim::open_client_state(path, "pw", fast_params()).code();
        ::_exit(code == Errc::busy ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    // The first store is unharmed.
    put(*first, "after", "busy");
    CHECK(lookup(*first, "after") == "busy");
    first.reset();
    auto again = open_ok(path, "pw");
    CHECK(lookup(*again, "after") == "busy");
}

TEST_CASE("client state file: mode 0600") {
    const TempDir dir;
    const auto old_mask = ::umask(0);  // the file must be private even when the umask would allow more
    const auto mode_of = [](const std::string& p) {
        struct stat st {};
        REQUIRE(::stat(p.c_str(), &st) == 0);
        return st.st_mode & 07777;
    };
    SUBCASE("new file") {
        const auto path = dir.file("state.db");
        auto s = open_ok(path, "pw");
        put(*s, "k", "v");
        CHECK(mode_of(path) == 0600);
        if (fs::exists(path + "-wal")) {
            CHECK(mode_of(path + "-wal") == 0600);
        }
    }
    SUBCASE("an empty file made by someone else") {
        const auto path = dir.file("empty.db");
        write_all(path, "");
        REQUIRE(::chmod(path.c_str(), 0644) == 0);
        auto s = open_ok(path, "pw");
        CHECK(s->created());
        CHECK(mode_of(path) == 0600);
    }
    ::umask(old_mask);
}

TEST_CASE("client state file: bad arguments") {
    const TempDir dir;
    auto p = fast_params();
    p.argon2_iterations = 0;
    CHECK(sim::open_client_state(dir.file("a.db"), "pw", p).code() == Errc::invalid_argument);
    p = fast_params();
    p.argon2_memory_kib = 4;
    CHECK(sim::open_client_state(dir.file("a.db"), "pw", p).code() == Errc::invalid_argument);
    p = fast_params();
    p.argon2_parallelism = 0;
    CHECK(sim::open_client_state(dir.file("a.db"), "pw", p).code() == Errc::invalid_argument);
    CHECK(sim::open_client_state("", "pw", fast_params()).code() == Errc::invalid_argument);
    CHECK(sim::open_client_state(":memory:", "pw", fast_params()).code() == Errc::invalid_argument);
    CHECK_FALSE(fs::exists(dir.file("a.db")));
    CHECK(sim::open_client_state(dir.file("missing/dir/state.db"), "pw", fast_params()).code() == Errc::io_error);
}

TEST_CASE("client state file: an injected RNG is used for salt and nonces") {
    const TempDir dir;
    const sim::Bytes seed(32, 7);
    std::string files[2];
    for (int i = 0; i < 2; ++i) {
        auto rng = sim::make_deterministic_rng(seed);
        auto p = fast_params();
        p.rng = rng.get();
        const auto path = dir.file("det" + std::to_string(i) + ".db");
        {
            auto r = sim::open_client_state(path, "pw", p);
            REQUIRE(r.has_value());
            put(**r, "k", "v");
        }
        files[i] = read_all(path);
    }
    // Same seed, same password: the same sealed bytes (the file headers carry change counters that match too).
    CHECK(files[0] == files[1]);
    const auto other = dir.file("sys.db");
    {
        auto s = open_ok(other, "pw");
        put(*s, "k", "v");
    }
    CHECK(read_all(other) != files[0]);
}

TEST_CASE("client state file: a write is durable when it returns (the process dies right after)") {
    const TempDir dir;
    const auto path = dir.file("state.db");
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        auto r = sim::open_client_state(path, "pw", fast_params());
        const bool good = r.has_value() && (*r)->write({StateWrite{"outbox:1", sb("queued")}}).has_value();
        ::_exit(good ? 0 : 1);  // no destructor: the WAL is left behind, as after a crash
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    CHECK(fs::exists(path + "-wal"));
    {
        auto s = open_ok(path, "pw");
        CHECK_FALSE(s->created());
        CHECK(lookup(*s, "outbox:1") == "queued");
    }
    CHECK(sim::open_client_state(path, "wrong", fast_params()).code() == Errc::auth_failed);
}

namespace {

std::string hex(sim::ByteView b) {
    static constexpr char digits[] = "0123456789ABCDEF";
    std::string out;
    for (const auto c : b) {
        out += digits[c >> 4U];
        out += digits[c & 15U];
    }
    return out;
}

/// A state file of format 1 (libsim before the wrapped master key), written from its description in
/// state_sqlite.cpp: master = Argon2id(password, salt), row names HMAC-SHA256(name key, name), values and the
/// password check sealed with AES-256-GCM under HKDF-SHA256(master) keys.
void write_format1(const std::string& path, std::string_view password,
                   const std::vector<std::pair<std::string, std::string>>& values) {
    const sim::Bytes salt(16, 0x5A);
    const auto master = sim::crypto::argon2id(password, salt, 256, 1, 1, 32).value();
    const auto name_key =
        sim::crypto::hkdf_sha256({}, master, sim::as_bytes("libsim client state v1: row names"), 32).value();
    const auto value_key =
        sim::crypto::hkdf_sha256({}, master, sim::as_bytes("libsim client state v1: values"), 32).value();
    auto names = sim::crypto::make_hmac_sha256(name_key);
    auto aead = sim::crypto::make_aead(sim::crypto::AeadAlgorithm::aes256_gcm, value_key).value();
    std::uint8_t n = 0;
    const auto sealed = [&](sim::ByteView ad, std::string_view plain) {
        sim::Bytes nonce(12, ++n);
        auto ct = aead->seal(nonce, ad, sim::as_bytes(plain)).value();
        nonce.insert(nonce.end(), ct.begin(), ct.end());
        return hex(nonce);
    };
    std::string sql =
        "PRAGMA application_id = 1280525139; PRAGMA user_version = 1;"
        "CREATE TABLE meta (id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1), format INTEGER NOT NULL,"
        " kdf_salt BLOB NOT NULL, kdf_memory_kib INTEGER NOT NULL, kdf_iterations INTEGER NOT NULL,"
        " kdf_parallelism INTEGER NOT NULL, check_value BLOB NOT NULL);"
        "CREATE TABLE kv (k BLOB PRIMARY KEY NOT NULL, v BLOB NOT NULL) WITHOUT ROWID;";
    sql += "INSERT INTO meta VALUES (1, 1, X'" + hex(salt) + "', 256, 1, 1, X'" +
           sealed(sim::as_bytes("libsim client state v1: password check"), "libsim client state password ok") +
           "');";
    for (const auto& [name, value] : values) {
        const auto k = names->mac(sim::as_bytes(name), {});
        sql += "INSERT INTO kv VALUES (X'" + hex(k) + "', X'" + sealed(k, value) + "');";
    }
    raw_exec(path, sql);
    ::chmod(path.c_str(), 0600);
}

std::int64_t raw_format(const std::string& path) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT format FROM meta", -1, &q, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(q) == SQLITE_ROW);
    const auto format = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return format;
}

}  // namespace

TEST_CASE("client state file: a format 1 file opens, keeps its values and is upgraded to the wrapped master key") {
    const TempDir dir;
    const auto path = dir.file("state.db");
    write_format1(path, "old pw", {{"identity", "ik"}, {"session:bob", "ratchet"}});
    CHECK(sim::open_client_state(path, "wrong", fast_params()).code() == Errc::auth_failed);
    CHECK(raw_format(path) == 1);  // a refused password upgrades nothing
    const auto rows = raw_rows(path);
    {
        auto s = open_ok(path, "old pw");
        CHECK_FALSE(s->created());
        CHECK(lookup(*s, "identity") == "ik");
        CHECK(lookup(*s, "session:bob") == "ratchet");
    }
    CHECK(raw_format(path) == 2);
    CHECK(raw_rows(path) == rows);  // the values were not sealed again
    {
        auto s = open_ok(path, "old pw");
        CHECK(lookup(*s, "identity") == "ik");
        REQUIRE(s->change_password("new pw"));  // and from now on a password change is one row
    }
    CHECK(sim::open_client_state(path, "old pw", fast_params()).code() == Errc::auth_failed);
    CHECK(lookup(*open_ok(path, "new pw"), "session:bob") == "ratchet");
}

TEST_CASE("client state file: a new password re-wraps the master key; the old one no longer opens it") {
    const TempDir dir;
    const auto path = dir.file("state.db");
    {
        auto s = open_ok(path, "typo");
        put(*s, "identity", "ik");
        put(*s, "outbox:1", "hello");
    }
    const auto rows = raw_rows(path);
    {
        auto s = open_ok(path, "typo");
        REQUIRE(s->change_password("right"));
        CHECK(lookup(*s, "identity") == "ik");  // the open store goes on
        put(*s, "outbox:2", "again");
    }
    CHECK(sim::open_client_state(path, "typo", fast_params()).code() == Errc::auth_failed);
    {
        auto s = open_ok(path, "right");
        CHECK(lookup(*s, "identity") == "ik");
        CHECK(lookup(*s, "outbox:1") == "hello");
        CHECK(lookup(*s, "outbox:2") == "again");
    }
    // Only the key row changed: the rows written before are byte for byte the same.
    const auto now = raw_rows(path);
    for (const auto& row : rows) {
        CHECK(std::find(now.begin(), now.end(), row) != now.end());
    }
    // The memory store has nothing sealed: a password change is accepted and changes nothing.
    auto m = sim::make_memory_client_state();
    put(*m, "identity", "ik");
    CHECK(m->change_password("x"));
    CHECK(lookup(*m, "identity") == "ik");
}
