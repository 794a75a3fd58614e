// SQLite backend: the file format. WAL mode, the schema version and migrations on open; a corrupt, foreign or
// newer-schema file gives a clear error and is left exactly as it was.
#include <doctest/doctest.h>

#include <sim/auth.h>
#include <sim/crypto.h>
#include <sim/store.h>

#include <sqlite3.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <stdexcept>

#include <unistd.h>

using sim::Errc;
namespace fs = std::filesystem;

namespace {

constexpr int libsim_application_id = 0x4C53494D;  // "LSIM", documented in docs/accounts.md

/// A temporary directory with one database path in it.
struct TempDir {
    TempDir() {
        static int counter = 0;
        path = fs::temp_directory_path() /
               ("sim-sqlite-schema-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() { fs::remove_all(path); }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    [[nodiscard]] std::string db() const { return (path / "sim.db").string(); }
    fs::path path;
};

/// Raw SQL through the SQLite C API, to make files the way another program (or an older libsim) would.
class Raw {
public:
    explicit Raw(const std::string& path) {
        if (sqlite3_open(path.c_str(), &m_db) != SQLITE_OK) {
            throw std::runtime_error("sqlite3_open failed");
        }
    }
    ~Raw() { sqlite3_close(m_db); }
    Raw(const Raw&) = delete;
    Raw& operator=(const Raw&) = delete;
    void exec(const std::string& sql) {
        char* err = nullptr;
        if (sqlite3_exec(m_db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
            const std::string msg = err != nullptr ? err : "?";
            sqlite3_free(err);
            throw std::runtime_error("sqlite3_exec: " + msg);
        }
    }
    std::string scalar(const std::string& sql) {
        sqlite3_stmt* st = nullptr;
        if (sqlite3_prepare_v2(m_db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
            throw std::runtime_error("prepare failed: " + sql);
        }
        std::string out;
        if (sqlite3_step(st) == SQLITE_ROW) {
            const auto* t = sqlite3_column_text(st, 0);
            out = t != nullptr ? reinterpret_cast<const char*>(t) : "";
        }
        sqlite3_finalize(st);
        return out;
    }

private:
    sqlite3* m_db = nullptr;
};

/// Every file in a directory with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
    std::map<std::string, std::string> out;
    for (const auto& e : fs::directory_iterator(dir)) {
        std::ifstream in(e.path(), std::ios::binary);
        out[e.path().filename().string()] = std::string(std::istreambuf_iterator<char>(in), {});
    }
    return out;
}

void write_file(const std::string& path, const std::string& bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

sim::Result<std::unique_ptr<sim::store::Backend>> open(const std::string& path) {
    sim::store::SqliteConfig c;
    c.path = path;
    return sim::store::open_sqlite_backend(c);
}

/// A database made by this libsim with `users` accounts, closed again.
void make_current(const std::string& path, int users) {
    auto b = open(path);
    REQUIRE(b.has_value());
    for (int i = 0; i < users; ++i) {
        REQUIRE(b.value()->create_user("user" + std::to_string(i), std::string(200, 'h')).has_value());
    }
}

/// Opening must fail with `code` and leave the directory exactly as it was.
void expect_refused_unchanged(const TempDir& dir, Errc code) {
    const auto before = snapshot(dir.path);
    const auto r = open(dir.db());
    REQUIRE(r.code() == code);
    CHECK_FALSE(r.error().detail.empty());
    CHECK(snapshot(dir.path) == before);
}

// Versions 1 to 6 of the schema, as earlier libsim versions wrote them (docs/accounts.md, "Schema history").
const char* const schema_v1 =
    "PRAGMA application_id = 1280526669;"
    "CREATE TABLE sim_users (username TEXT PRIMARY KEY NOT NULL, password_hash TEXT NOT NULL) WITHOUT ROWID;"
    "PRAGMA user_version = 1;";
const char* const schema_v2_extra =
    "ALTER TABLE sim_users ADD COLUMN failed_count INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sim_users ADD COLUMN last_failure_ns INTEGER NOT NULL DEFAULT 0;"
    "PRAGMA user_version = 2;";
const char* const schema_v3_extra =
    "CREATE TABLE sim_sessions ("
    "  token_hash BLOB PRIMARY KEY NOT NULL CHECK (length(token_hash) = 32),"
    "  username TEXT NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  expires_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX sim_sessions_user ON sim_sessions (username);"
    "CREATE TABLE sim_conversation_keys ("
    "  user_a TEXT NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  user_b TEXT NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  sealed_key BLOB NOT NULL,"
    "  epoch INTEGER NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (user_a, user_b),"
    "  CHECK (user_a < user_b)"
    ") WITHOUT ROWID;"
    "CREATE INDEX sim_conversation_keys_b ON sim_conversation_keys (user_b);"
    "PRAGMA user_version = 3;";
const char* const schema_v4_extra =
    "CREATE TABLE sim_prekeys ("
    "  username TEXT PRIMARY KEY NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  identity_key BLOB NOT NULL CHECK (length(identity_key) = 32),"
    "  spk_id INTEGER NOT NULL,"
    "  spk BLOB NOT NULL CHECK (length(spk) = 32),"
    "  spk_sig BLOB NOT NULL CHECK (length(spk_sig) = 64)"
    ") WITHOUT ROWID;"
    "CREATE TABLE sim_one_time_prekeys ("
    "  username TEXT NOT NULL REFERENCES sim_prekeys (username) ON DELETE CASCADE,"
    "  key_id INTEGER NOT NULL,"
    "  public_key BLOB NOT NULL CHECK (length(public_key) = 32),"
    "  PRIMARY KEY (username, key_id)"
    ") WITHOUT ROWID;"
    "CREATE TABLE sim_messages ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  recipient TEXT NOT NULL,"
    "  sender TEXT NOT NULL,"
    "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
    "  envelope BLOB NOT NULL,"
    "  stored_ms INTEGER NOT NULL,"
    "  UNIQUE (recipient, sender, message_id)"
    ");"
    "CREATE INDEX sim_messages_recipient ON sim_messages (recipient, seq);"
    "PRAGMA user_version = 4;";
const char* const schema_v5_extra =
    "CREATE TABLE sim_session_ends ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  username TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL"
    ");"
    "PRAGMA user_version = 5;";
const char* const schema_v6_extra =
    "CREATE TABLE sim_messages_v6 ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  recipient TEXT NOT NULL,"
    "  recipient_device INTEGER NOT NULL CHECK (recipient_device BETWEEN 1 AND 4294967295),"
    "  sender TEXT NOT NULL,"
    "  sender_device INTEGER NOT NULL CHECK (sender_device BETWEEN 1 AND 4294967295),"
    "  message_id BLOB NOT NULL CHECK (length(message_id) = 16),"
    "  envelope BLOB NOT NULL,"
    "  stored_ms INTEGER NOT NULL,"
    "  UNIQUE (recipient, recipient_device, sender, message_id)"
    ");"
    "INSERT INTO sim_messages_v6 (seq, recipient, recipient_device, sender, sender_device, message_id, envelope,"
    "  stored_ms) SELECT seq, recipient, 1, sender, 1, message_id, envelope, stored_ms FROM sim_messages;"
    "DELETE FROM sqlite_sequence WHERE name = 'sim_messages_v6';"
    "INSERT INTO sqlite_sequence (name, seq) SELECT 'sim_messages_v6', seq FROM sqlite_sequence"
    "  WHERE name = 'sim_messages';"
    "DROP TABLE sim_messages;"
    "ALTER TABLE sim_messages_v6 RENAME TO sim_messages;"
    "CREATE INDEX sim_messages_mailbox ON sim_messages (recipient, recipient_device, seq);"
    "PRAGMA user_version = 6;";

const char* const schema_v7_extra =
    "ALTER TABLE sim_users ADD COLUMN last_device INTEGER NOT NULL DEFAULT 1;"
    "CREATE TABLE sim_devices ("
    "  username TEXT NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  device INTEGER NOT NULL CHECK (device BETWEEN 1 AND 4294967295),"
    "  state INTEGER NOT NULL CHECK (state BETWEEN 1 AND 3),"
    "  name TEXT NOT NULL CHECK (length(CAST(name AS BLOB)) <= 64),"
    "  device_key BLOB NOT NULL CHECK (length(device_key) IN (0, 32)),"
    "  created_ms INTEGER NOT NULL,"
    "  linked_ms INTEGER NOT NULL,"
    "  last_seen_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (username, device)"
    ") WITHOUT ROWID;"
    "INSERT INTO sim_devices (username, device, state, name, device_key, created_ms, linked_ms, last_seen_ms)"
    "  SELECT username, 1, 2, '', X'', 0, 0, 0 FROM sim_users;"
    "CREATE TABLE sim_device_lists ("
    "  username TEXT PRIMARY KEY NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  version INTEGER NOT NULL CHECK (version >= 1),"
    "  signed_list BLOB NOT NULL CHECK (length(signed_list) BETWEEN 1 AND 8192)"
    ") WITHOUT ROWID;"
    "ALTER TABLE sim_sessions ADD COLUMN device INTEGER NOT NULL DEFAULT 1 CHECK (device BETWEEN 1 AND 4294967295);"
    "CREATE INDEX sim_sessions_device ON sim_sessions (username, device);"
    "ALTER TABLE sim_session_ends ADD COLUMN device INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE sim_prekeys_v7 ("
    "  username TEXT NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  device INTEGER NOT NULL CHECK (device BETWEEN 1 AND 4294967295),"
    "  identity_key BLOB NOT NULL CHECK (length(identity_key) = 32),"
    "  spk_id INTEGER NOT NULL,"
    "  spk BLOB NOT NULL CHECK (length(spk) = 32),"
    "  spk_sig BLOB NOT NULL CHECK (length(spk_sig) = 64),"
    "  PRIMARY KEY (username, device)"
    ") WITHOUT ROWID;"
    "CREATE TABLE sim_one_time_prekeys_v7 ("
    "  username TEXT NOT NULL,"
    "  device INTEGER NOT NULL,"
    "  key_id INTEGER NOT NULL,"
    "  public_key BLOB NOT NULL CHECK (length(public_key) = 32),"
    "  PRIMARY KEY (username, device, key_id),"
    "  FOREIGN KEY (username, device) REFERENCES sim_prekeys_v7 (username, device) ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    "INSERT INTO sim_prekeys_v7 (username, device, identity_key, spk_id, spk, spk_sig)"
    "  SELECT username, 1, identity_key, spk_id, spk, spk_sig FROM sim_prekeys;"
    "INSERT INTO sim_one_time_prekeys_v7 (username, device, key_id, public_key)"
    "  SELECT username, 1, key_id, public_key FROM sim_one_time_prekeys;"
    "DROP TABLE sim_one_time_prekeys;"
    "DROP TABLE sim_prekeys;"
    "ALTER TABLE sim_prekeys_v7 RENAME TO sim_prekeys;"
    "ALTER TABLE sim_one_time_prekeys_v7 RENAME TO sim_one_time_prekeys;"
    "PRAGMA user_version = 7;";

/// A version 6 file (as libsim 6 wrote it).
void make_v6(const std::string& path) {
    Raw raw(path);
    for (const char* step :
         {schema_v1, schema_v2_extra, schema_v3_extra, schema_v4_extra, schema_v5_extra, schema_v6_extra}) {
        raw.exec(step);
    }
}

/// A version 7 file (as libsim 7 wrote it).
void make_v7(const std::string& path) {
    make_v6(path);
    Raw raw(path);
    raw.exec(schema_v7_extra);
}

}  // namespace

TEST_CASE("a new file gets the current schema, libsim's application id and WAL mode") {
    TempDir dir;
    auto b = open(dir.db());
    REQUIRE(b.has_value());
    REQUIRE(b.value()->create_user("alice", "$h").has_value());
    {
        Raw raw(dir.db());
        CHECK(raw.scalar("PRAGMA journal_mode") == "wal");
        CHECK(raw.scalar("PRAGMA user_version") == std::to_string(sim::store::schema_version));
        CHECK(raw.scalar("PRAGMA application_id") == std::to_string(libsim_application_id));
        CHECK(raw.scalar("SELECT username FROM sim_users") == "alice");
    }
    CHECK(fs::exists(dir.path / "sim.db-wal"));
    b.value().reset();
    // Reopening an up-to-date file changes nothing in it.
    const auto before = snapshot(dir.path);
    REQUIRE(open(dir.db()).has_value());
    CHECK(snapshot(dir.path) == before);
}

TEST_CASE("an empty file is initialised; a missing directory is a storage error") {
    TempDir dir;
    write_file(dir.db(), "");
    auto b = open(dir.db());
    REQUIRE(b.has_value());
    CHECK(b.value()->list_users().value().empty());
    CHECK(open((dir.path / "no" / "such" / "dir.db").string()).code() == Errc::storage_error);
    CHECK(sim::store::open_backend("sqlite::memory:").has_value());
}

TEST_CASE("an older file is upgraded on open and its accounts keep working") {
    for (const int version : {1, 2, 3, 4, 5, 6}) {
        INFO("from version " << version);
        TempDir dir;
        auto rng = sim::make_deterministic_rng(sim::as_bytes("old schema"));
        const auto seed_hash = sim::crypto::bcrypt_hash("pw-old", 4, *rng).value();  // the seed's format
        {
            Raw raw(dir.db());
            raw.exec(schema_v1);
            if (version >= 2) {
                raw.exec(schema_v2_extra);
                if (version >= 3) {
                    raw.exec(schema_v3_extra);
                    raw.exec("PRAGMA foreign_keys = ON");
                }
                if (version >= 4) {
                    raw.exec(schema_v4_extra);
                }
                if (version >= 5) {
                    raw.exec(schema_v5_extra);
                }
                if (version >= 6) {
                    raw.exec(schema_v6_extra);
                }
                raw.exec("INSERT INTO sim_users VALUES ('olduser', '" + seed_hash + "', 2, 7)");
            } else {
                raw.exec("INSERT INTO sim_users VALUES ('olduser', '" + seed_hash + "')");
            }
        }
        auto b = open(dir.db());
        REQUIRE(b.has_value());
        {
            Raw raw(dir.db());
            CHECK(raw.scalar("PRAGMA user_version") == std::to_string(sim::store::schema_version));
            CHECK(raw.scalar("PRAGMA journal_mode") == "wal");
        }
        const auto user = b.value()->find_user("olduser").value();
        REQUIRE(user.has_value());
        CHECK(user->password_hash == seed_hash);
        CHECK(user->failures.count == 0U);  // counts of a monotonic clock restart on the way to version 8
        // The new tables exist and work.
        REQUIRE(
            b.value()->put_token(sim::Bytes(32, 7), "olduser", sim::first_device, sim::store::WallTime{}).has_value());
        sim::store::StoredMessage m;
        m.recipient = "olduser";
        m.sender = "someone";
        m.envelope = sim::Bytes(20, 1);
        CHECK(b.value()->append({m}).value() == std::vector<bool>{true});
        CHECK(b.value()->usage("olduser", sim::first_device).value() == sim::store::StoredUsage{1, 20});
        CHECK(b.value()->prekey_status("olduser", sim::first_device).value().one_time_count == 0);
        // The login flow upgrades the seed's hash.
        sim::auth::HashPolicy p;
        p.bcrypt.cost = 4;
        const auto hasher = sim::auth::make_password_hasher(p).value();
        sim::ManualClock clock;
        clock.set(sim::TimePoint{std::chrono::hours(10)});
        auto auth = sim::auth::Authenticator::create(*b.value(), *hasher, *rng, clock).value();
        const auto r = auth->login("OldUser", "pw-old", "127.0.0.1");
        REQUIRE(r.ok());
        CHECK(r.outcome->rehashed);
    }
}

TEST_CASE("a version 5 file keeps every stored message on upgrade, each for and from device 1") {
    TempDir dir;
    const auto id = [](int n) { return "x'" + std::string(30, '0') + "0" + std::to_string(n) + "'"; };
    {
        Raw raw(dir.db());
        raw.exec(schema_v1);
        raw.exec(schema_v2_extra);
        raw.exec(schema_v3_extra);
        raw.exec(schema_v4_extra);
        raw.exec(schema_v5_extra);
        raw.exec("INSERT INTO sim_users VALUES ('amy', '$h', 0, 0)");
        raw.exec(
            "INSERT INTO sim_messages (recipient, sender, message_id, envelope, stored_ms) VALUES "
            "('amy', 'bob', " +
            id(1) + ", x'0102', 1001), ('amy', 'cat', " + id(2) +
            ", x'03', 1002), "
            "('dan', 'bob', " +
            id(1) + ", x'040506', 1003), ('amy', 'bob', " + id(4) + ", x'07', 1004)");
        // The newest message is gone already: seq 4 was handed out and must not be handed out again.
        raw.exec("DELETE FROM sim_messages WHERE seq = 4");
    }
    auto b = open(dir.db());
    REQUIRE(b.has_value());
    auto& s = *b.value();
    {
        Raw raw(dir.db());
        CHECK(raw.scalar("PRAGMA user_version") == std::to_string(sim::store::schema_version));
        CHECK(raw.scalar("SELECT count(*) FROM sim_messages") == "3");
        CHECK(raw.scalar("SELECT count(*) FROM sim_messages WHERE recipient_device = 1 AND sender_device = 1") == "3");
        CHECK(raw.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'sim_messages_mailbox'") == "1");
        CHECK(raw.scalar("SELECT count(*) FROM sqlite_master WHERE name LIKE 'sim_messages_v%'") == "0");
        CHECK(raw.scalar("PRAGMA integrity_check") == "ok");
    }
    const auto message_id = [](std::uint8_t n) {
        sim::MessageId m{};
        m[15] = n;
        return m;
    };
    const auto amy = s.pending("amy", sim::first_device, 0, 10).value();
    REQUIRE(amy.size() == 2);
    sim::store::StoredMessage first;
    first.seq = 1;
    first.recipient = "amy";
    first.sender = "bob";
    first.id = message_id(1);
    first.envelope = {1, 2};
    first.stored_at = sim::store::WallTime{std::chrono::milliseconds{1001}};
    CHECK(amy[0] == first);  // devices 1 and 1
    CHECK(amy[1].seq == 2);
    CHECK(amy[1].sender == "cat");
    CHECK(amy[1].id == message_id(2));
    CHECK(amy[1].sender_device == sim::first_device);
    const auto dan = s.pending("dan", sim::first_device, 0, 10).value();
    REQUIRE(dan.size() == 1);
    CHECK(dan[0].seq == 3);
    CHECK(dan[0].envelope == sim::Bytes{4, 5, 6});
    CHECK(s.usage("amy", 2).value() == sim::store::StoredUsage{});
    CHECK(s.usage_by_sender().value().at("bob") == sim::store::StoredUsage{2, 5});

    // The new key: the same message is stored once per device.
    auto again = first;
    again.recipient_device = 2;
    CHECK(s.append({again}).value() == std::vector<bool>{true});
    const auto on2 = s.pending("amy", 2, 0, 10).value();
    REQUIRE(on2.size() == 1);
    CHECK(on2[0].seq == 5);  // after the highest seq ever handed out, not after the highest left
    CHECK(s.append({first}).value() == std::vector<bool>{false});
}

TEST_CASE("a newer schema is refused with a clear error and the file is not touched") {
    TempDir dir;
    make_current(dir.db(), 3);
    {
        Raw raw(dir.db());
        raw.exec("PRAGMA user_version = " + std::to_string(sim::store::schema_version + 1));
    }
    const auto before = snapshot(dir.path);
    const auto r = open(dir.db());
    REQUIRE(r.code() == Errc::schema_too_new);
    CHECK(r.error().detail.find(std::to_string(sim::store::schema_version + 1)) != std::string::npos);
    CHECK(snapshot(dir.path) == before);
}

TEST_CASE("corrupt and foreign files are refused with a clear error and not touched") {
    SUBCASE("not a database at all") {
        TempDir dir;
        write_file(dir.db(), std::string(8192, '\xAB'));
        expect_refused_unchanged(dir, Errc::corrupt_database);
    }
    SUBCASE("a text file") {
        TempDir dir;
        write_file(dir.db(), "username,password\nalice,secret\n");
        expect_refused_unchanged(dir, Errc::corrupt_database);
    }
    SUBCASE("a libsim database cut in half") {
        TempDir dir;
        make_current(dir.db(), 200);
        const auto size = fs::file_size(dir.db());
        REQUIRE(size > 8 * 4096);
        fs::resize_file(dir.db(), size / 2);
        expect_refused_unchanged(dir, Errc::corrupt_database);
    }
    SUBCASE("a libsim database with a damaged page") {
        TempDir dir;
        make_current(dir.db(), 200);
        std::string bytes = snapshot(dir.path).at("sim.db");
        const std::size_t page = 4096;
        REQUIRE(bytes.size() > 6 * page);
        std::fill(bytes.begin() + 3 * page, bytes.begin() + 4 * page, '\x5A');
        write_file(dir.db(), bytes);
        expect_refused_unchanged(dir, Errc::corrupt_database);
    }
    SUBCASE("a SQLite database of another application") {
        TempDir dir;
        {
            Raw raw(dir.db());
            raw.exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'x');");
        }
        expect_refused_unchanged(dir, Errc::corrupt_database);
    }
    SUBCASE("libsim's id without a schema version") {
        TempDir dir;
        {
            Raw raw(dir.db());
            raw.exec("PRAGMA application_id = 1280526669; CREATE TABLE t (x);");
        }
        expect_refused_unchanged(dir, Errc::corrupt_database);
    }
}

TEST_CASE("a version 6 file: every account gets device 1, tokens and prekeys are device 1's") {
    TempDir dir;
    make_v6(dir.db());
    {
        Raw raw(dir.db());
        raw.exec("INSERT INTO sim_users VALUES ('amy', '$h', 0, 0), ('bob', '$h', 0, 0)");
        raw.exec("INSERT INTO sim_sessions VALUES (x'" + std::string(64, 'a') + "', 'amy', 5000)");
        raw.exec("INSERT INTO sim_prekeys VALUES ('amy', x'" + std::string(64, '1') + "', 7, x'" +
                 std::string(64, '2') + "', x'" + std::string(128, '3') + "')");
        raw.exec("INSERT INTO sim_one_time_prekeys VALUES ('amy', 4, x'" + std::string(64, '4') + "'), ('amy', 9, x'" +
                 std::string(64, '9') + "')");
        raw.exec("INSERT INTO sim_session_ends (username, at_ms) VALUES ('bob', 1)");
    }
    auto b = open(dir.db());
    REQUIRE_MESSAGE(b.has_value(), (b.has_value() ? std::string() : b.error().message()));
    auto& s = *b.value();
    {
        Raw raw(dir.db());
        CHECK(raw.scalar("PRAGMA user_version") == std::to_string(sim::store::schema_version));
        CHECK(raw.scalar("PRAGMA integrity_check") == "ok");
        CHECK(raw.scalar("PRAGMA foreign_key_check") == "");
        CHECK(raw.scalar("SELECT count(*) FROM sqlite_master WHERE name LIKE '%_v7'") == "0");
    }
    for (const auto* user : {"amy", "bob"}) {
        CHECK(s.list_devices(user).value() ==
              std::vector<sim::store::DeviceRecord>{
                  {user, sim::first_device, sim::store::DeviceState::active, "", {}, {}, {}, {}}});
        CHECK(s.find_device_list(user).value() == std::nullopt);
    }
    const auto token = s.find_token(sim::Bytes(32, 0xaa)).value();
    REQUIRE(token.has_value());
    CHECK(token->username == "amy");
    CHECK(token->device == sim::first_device);
    CHECK(token->expires == sim::store::WallTime{std::chrono::milliseconds{5000}});
    const auto st = s.prekey_status("amy", sim::first_device).value();
    CHECK(st.identity_key == sim::Bytes(32, 0x11));
    CHECK(st.one_time_count == 2);
    CHECK(s.prekey_status("amy", 2).value().one_time_count == 0);
    const auto bundle = s.take_bundle("amy", sim::first_device).value();
    REQUIRE(bundle.has_value());
    CHECK(bundle->signed_prekey_id == 7U);
    CHECK(bundle->signed_prekey_signature == sim::Bytes(64, 0x33));
    CHECK(bundle->one_time_prekey_id == 4U);
    CHECK(bundle->one_time_prekey == sim::Bytes(32, 0x44));
    const auto ends = s.session_ends_after(0, 10).value();
    REQUIRE(ends.size() == 1);
    CHECK(ends[0].device == 0);  // a logged end was for every device
    // The new ids continue after device 1; one-time prekeys still go with their device's prekeys.
    CHECK(s.add_device("amy", "phone", {}, {}, 4).value() == 2);
    CHECK(s.remove_device("amy", sim::first_device).value());
    CHECK_FALSE(s.find_token(sim::Bytes(32, 0xaa)).value().has_value());
    {
        Raw raw(dir.db());
        CHECK(raw.scalar("SELECT count(*) FROM sim_one_time_prekeys") == "0");
    }
    REQUIRE(s.delete_user("bob").has_value());
    CHECK(s.list_devices("bob").value().empty());
}

TEST_CASE("a version 7 file: monotonic failure times are dropped, counts restart, throttle keys get a table") {
    TempDir dir;
    make_v7(dir.db());
    {
        Raw raw(dir.db());
        raw.exec(
            "INSERT INTO sim_users (username, password_hash, failed_count, last_failure_ns) VALUES "
            "('amy', '$h', 4, 987654321), ('bob', '$h', 0, 0)");
        raw.exec("INSERT INTO sim_devices VALUES ('amy', 1, 2, '', X'', 0, 0, 0), ('bob', 1, 2, '', X'', 0, 0, 0)");
    }
    auto b = open(dir.db());
    REQUIRE_MESSAGE(b.has_value(), (b.has_value() ? std::string() : b.error().message()));
    auto& s = *b.value();
    {
        Raw raw(dir.db());
        CHECK(raw.scalar("PRAGMA user_version") == std::to_string(sim::store::schema_version));
        CHECK(raw.scalar("PRAGMA integrity_check") == "ok");
        CHECK(raw.scalar("SELECT count(*) FROM pragma_table_info('sim_users') WHERE name = 'last_failure_ns'") == "0");
    }
    for (const auto* user : {"amy", "bob"}) {
        const auto rec = s.find_user(user).value();
        REQUIRE(rec.has_value());
        CHECK(rec->failures == sim::store::FailureState{});
        CHECK(s.list_devices(user).value().size() == 1);
    }
    const sim::store::WallTime now{std::chrono::seconds(1'700'000'000)};
    CHECK(s.record_failure("amy", now, std::chrono::hours(1)).value() == sim::store::FailureState{1, now});
    CHECK(s.find_user("amy").value()->failures == sim::store::FailureState{1, now});
    CHECK(s.record_key_failure("a 192.0.2.1", now, std::chrono::hours(1)).value().count == 1);
    CHECK(s.record_key_failure("a 192.0.2.1", now, std::chrono::hours(1)).value().count == 2);
    CHECK(s.purge_key_failures(now).value() == 1);
    // 8 -> 9: the contacts table, with its foreign keys.
    CHECK(s.add_contact("bob", "amy", 1000).value());
    CHECK(s.list_contacts("amy", 1000).value() == std::vector<std::string>{"bob"});
    CHECK(s.add_contact("amy", "nobody", 1000).code() == sim::Errc::user_not_found);
}

TEST_CASE("a migration that fails leaves the file as it was") {
    TempDir dir;
    {
        Raw raw(dir.db());
        raw.exec(schema_v1);
        raw.exec(schema_v2_extra);
        // Something already occupies a name migration 3 needs.
        raw.exec("CREATE TABLE sim_sessions (unrelated TEXT);");
    }
    const auto before = snapshot(dir.path);
    const auto r = open(dir.db());
    CHECK(r.code() == Errc::storage_error);
    CHECK(snapshot(dir.path) == before);
    Raw raw(dir.db());
    CHECK(raw.scalar("PRAGMA user_version") == "2");
}
