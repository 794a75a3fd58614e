// The PostgreSQL backend through libpq: the connection and the dialect; the stores are sql_backend.cpp's.
// Prepared statements only, every value a binary parameter (names and blobs as BYTEA, integers as INT8), every
// result in binary. See docs/accounts.md, "PostgreSQL".
#include "sql_backend.h"
#include "sql_url.h"

#include <libpq-fe.h>

#include <array>
#include <cstring>
#include <map>

namespace sim::store::detail {
namespace {

// Type OIDs (src/include/catalog/pg_type.dat; stable across releases). Parameters are sent as BYTEA or INT8.
constexpr Oid bool_oid = 16;
constexpr Oid bytea_oid = 17;
constexpr Oid int8_oid = 20;
constexpr Oid int2_oid = 21;
constexpr Oid int4_oid = 23;

// The schema history (see sqlite_schema.h for the rules). PostgreSQL support began at schema version 6, so its
// history starts there: an empty database goes to 6 in one step; versions 1..5 never existed on PostgreSQL.
// Unsigned columns of the other backends are BIGINT with a CHECK; names and blobs are BYTEA (compared and
// ordered byte for byte, like VARBINARY).
const std::array<SchemaStep, 4> migrations{{
    {0,
     6,
     {"CREATE TABLE IF NOT EXISTS sim_meta (id SMALLINT NOT NULL PRIMARY KEY, schema_version INTEGER NOT NULL)",
      "CREATE TABLE IF NOT EXISTS sim_users (username BYTEA NOT NULL PRIMARY KEY CHECK (length(username) <= 64), "
      "password_hash BYTEA NOT NULL CHECK (length(password_hash) <= 255), "
      "failed_count BIGINT NOT NULL DEFAULT 0 CHECK (failed_count BETWEEN 0 AND 4294967295), "
      "last_failure_ns BIGINT NOT NULL DEFAULT 0)",
      "CREATE TABLE IF NOT EXISTS sim_sessions (token_hash BYTEA NOT NULL PRIMARY KEY "
      "CHECK (length(token_hash) = 32), "
      "username BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, expires_ms BIGINT NOT NULL)",
      "CREATE INDEX IF NOT EXISTS sim_sessions_user ON sim_sessions (username)",
      "CREATE TABLE IF NOT EXISTS sim_conversation_keys ("
      "user_a BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, "
      "user_b BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, "
      "sealed_key BYTEA NOT NULL CHECK (length(sealed_key) <= 512), epoch BIGINT NOT NULL, "
      "created_ms BIGINT NOT NULL, PRIMARY KEY (user_a, user_b), CHECK (user_a < user_b))",
      "CREATE INDEX IF NOT EXISTS sim_conversation_keys_b ON sim_conversation_keys (user_b)",
      "CREATE TABLE IF NOT EXISTS sim_prekeys ("
      "username BYTEA NOT NULL PRIMARY KEY REFERENCES sim_users (username) ON DELETE CASCADE, "
      "identity_key BYTEA NOT NULL CHECK (length(identity_key) = 32), spk_id BIGINT NOT NULL, "
      "spk BYTEA NOT NULL CHECK (length(spk) = 32), spk_sig BYTEA NOT NULL CHECK (length(spk_sig) = 64))",
      "CREATE TABLE IF NOT EXISTS sim_one_time_prekeys ("
      "username BYTEA NOT NULL REFERENCES sim_prekeys (username) ON DELETE CASCADE, key_id BIGINT NOT NULL, "
      "public_key BYTEA NOT NULL CHECK (length(public_key) = 32), PRIMARY KEY (username, key_id))",
      // Messages without a foreign key: see sqlite_schema.h.
      "CREATE TABLE IF NOT EXISTS sim_messages (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
      "recipient BYTEA NOT NULL, "
      "recipient_device BIGINT NOT NULL CHECK (recipient_device BETWEEN 1 AND 4294967295), "
      "sender BYTEA NOT NULL, sender_device BIGINT NOT NULL CHECK (sender_device BETWEEN 1 AND 4294967295), "
      "message_id BYTEA NOT NULL CHECK (length(message_id) = 16), envelope BYTEA NOT NULL, "
      "stored_ms BIGINT NOT NULL, "
      "CONSTRAINT sim_messages_device_key UNIQUE (recipient, recipient_device, sender, message_id))",
      "CREATE INDEX IF NOT EXISTS sim_messages_mailbox ON sim_messages (recipient, recipient_device, seq)",
      "CREATE TABLE IF NOT EXISTS sim_session_ends (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
      "username BYTEA NOT NULL, at_ms BIGINT NOT NULL)"}},
    // 6 -> 7: devices of an account (see sqlite_schema.h and mariadb_backend.cpp). Each ALTER TABLE is one
    // statement (atomic here) that drops what it adds first, so the step can run again after a failure half-way.
    {6,
     7,
     {"ALTER TABLE sim_users ADD COLUMN IF NOT EXISTS last_device BIGINT NOT NULL DEFAULT 1",
      "CREATE TABLE IF NOT EXISTS sim_devices ("
      "username BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, "
      "device BIGINT NOT NULL CHECK (device BETWEEN 1 AND 4294967295), "
      "state BIGINT NOT NULL CHECK (state BETWEEN 1 AND 3), name BYTEA NOT NULL CHECK (length(name) <= 64), "
      "device_key BYTEA NOT NULL CHECK (length(device_key) IN (0, 32)), created_ms BIGINT NOT NULL, "
      "linked_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL, PRIMARY KEY (username, device))",
      "INSERT INTO sim_devices (username, device, state, name, device_key, created_ms, linked_ms, last_seen_ms) "
      "SELECT username, 1, 2, ''::bytea, ''::bytea, 0, 0, 0 FROM sim_users ON CONFLICT DO NOTHING",
      "CREATE TABLE IF NOT EXISTS sim_device_lists ("
      "username BYTEA NOT NULL PRIMARY KEY REFERENCES sim_users (username) ON DELETE CASCADE, "
      "version BIGINT NOT NULL CHECK (version >= 1), "
      "signed_list BYTEA NOT NULL CHECK (length(signed_list) BETWEEN 1 AND 8192))",
      "ALTER TABLE sim_sessions ADD COLUMN IF NOT EXISTS device BIGINT NOT NULL DEFAULT 1 "
      "CHECK (device BETWEEN 1 AND 4294967295)",
      "ALTER TABLE sim_sessions ALTER COLUMN device DROP DEFAULT",
      "CREATE INDEX IF NOT EXISTS sim_sessions_device ON sim_sessions (username, device)",
      "ALTER TABLE sim_session_ends ADD COLUMN IF NOT EXISTS device BIGINT NOT NULL DEFAULT 0",
      "ALTER TABLE sim_one_time_prekeys DROP CONSTRAINT IF EXISTS sim_one_time_prekeys_username_fkey, "
      "DROP CONSTRAINT IF EXISTS sim_one_time_prekeys_device_fk",
      "ALTER TABLE sim_prekeys ADD COLUMN IF NOT EXISTS device BIGINT NOT NULL DEFAULT 1 "
      "CHECK (device BETWEEN 1 AND 4294967295), DROP CONSTRAINT IF EXISTS sim_prekeys_pkey, "
      "DROP CONSTRAINT IF EXISTS sim_prekeys_device_pkey, "
      "ADD CONSTRAINT sim_prekeys_device_pkey PRIMARY KEY (username, device)",
      "ALTER TABLE sim_prekeys ALTER COLUMN device DROP DEFAULT",
      "ALTER TABLE sim_one_time_prekeys ADD COLUMN IF NOT EXISTS device BIGINT NOT NULL DEFAULT 1 "
      "CHECK (device BETWEEN 1 AND 4294967295), "
      "DROP CONSTRAINT IF EXISTS sim_one_time_prekeys_pkey, "
      "DROP CONSTRAINT IF EXISTS sim_one_time_prekeys_device_pkey, "
      "ADD CONSTRAINT sim_one_time_prekeys_device_pkey PRIMARY KEY (username, device, key_id), "
      "ADD CONSTRAINT sim_one_time_prekeys_device_fk FOREIGN KEY (username, device) "
      "REFERENCES sim_prekeys (username, device) ON DELETE CASCADE",
      "ALTER TABLE sim_one_time_prekeys ALTER COLUMN device DROP DEFAULT"}},
    // 7 -> 8: failure times on the wall clock and a table of throttle keys (see sqlite_schema.h).
    {7,
     8,
     {"ALTER TABLE sim_users ADD COLUMN IF NOT EXISTS last_failure_ms BIGINT NOT NULL DEFAULT 0",
      "UPDATE sim_users SET failed_count = 0, last_failure_ms = 0",
      "ALTER TABLE sim_users DROP COLUMN IF EXISTS last_failure_ns",
      "CREATE TABLE IF NOT EXISTS sim_throttle (throttle_key BYTEA NOT NULL PRIMARY KEY "
      "CHECK (length(throttle_key) BETWEEN 1 AND 400), "
      "failed_count BIGINT NOT NULL CHECK (failed_count BETWEEN 1 AND 4294967295), "
      "last_failure_ms BIGINT NOT NULL)",
      "CREATE INDEX IF NOT EXISTS sim_throttle_age ON sim_throttle (last_failure_ms)"}},
    // 8 -> 9: contact pairs (docs/protocol.md 6.10).
    {8,
     9,
     {"CREATE TABLE IF NOT EXISTS sim_contacts ("
      "user_a BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, "
      "user_b BYTEA NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE, "
      "PRIMARY KEY (user_a, user_b), CHECK (user_a < user_b))",
      "CREATE INDEX IF NOT EXISTS sim_contacts_b ON sim_contacts (user_b)"}},
}};

/// `?` placeholders as PostgreSQL's `$1`, `$2`, ... The statements are constants of this library without `?`
/// anywhere else (no string literal or operator holds one).
std::string numbered_placeholders(const char* sql) {
    std::string out;
    int n = 0;
    for (const char* p = sql; *p != '\0'; ++p) {
        if (*p == '?') {
            out += '$' + std::to_string(++n);
        } else {
            out += *p;
        }
    }
    return out;
}

/// A big-endian integer of `size` bytes (PostgreSQL's binary format), sign-extended.
std::int64_t big_endian(const char* p, int size) {
    std::uint64_t v = static_cast<std::uint8_t>(p[0]) >= 0x80 ? ~std::uint64_t{0} : 0;
    for (int k = 0; k < size; ++k) {
        v = (v << 8) | static_cast<std::uint8_t>(p[k]);
    }
    return static_cast<std::int64_t>(v);
}

struct ResultDeleter {
    void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

/// One connection with a cache of prepared statements. Not thread-safe: the backend holds a mutex.
class PostgresConnection final : public SqlConnection {
public:
    explicit PostgresConnection(SqlUrl params) : m_params(std::move(params)) {}
    ~PostgresConnection() override { close(); }

    Status connect() override {
        close();
        const std::string port = std::to_string(m_params.port);
        const std::string timeout = std::to_string(m_params.connect_timeout);
        // Keyword/value pairs: no value is ever spliced into a connection string.
        std::vector<const char*> keys{
            "host",   "port", "dbname", "user", "password", "connect_timeout", "application_name", "client_encoding",
            "sslmode"};
        std::vector<const char*> values{m_params.socket.empty() ? m_params.host.c_str() : m_params.socket.c_str(),
                                        port.c_str(),
                                        m_params.database.c_str(),
                                        m_params.user.c_str(),
                                        m_params.password.c_str(),
                                        timeout.c_str(),
                                        "libsim",
                                        "UTF8",
                                        m_params.tls_required ? "verify-full" : "prefer"};
        if (m_params.tls_required && !m_params.tls_ca.empty()) {
            keys.push_back("sslrootcert");
            values.push_back(m_params.tls_ca.c_str());
        }
        if (m_params.socket.empty()) {
            // A server that vanishes without closing the connection fails the statement after 30 s, as MariaDB's
            // read and write timeouts do.
            keys.push_back("tcp_user_timeout");
            values.push_back("30000");
        }
        keys.push_back(nullptr);
        values.push_back(nullptr);
        m_pg = PQconnectdbParams(keys.data(), values.data(), 0);
        if (m_pg == nullptr) {
            return Error{Errc::storage_error, "postgresql: out of memory"};
        }
        if (PQstatus(m_pg) != CONNECTION_OK) {
            // libpq's message can name the host, the user or the database, and has no error code: say only whether
            // the server was reached and refused the login.
            const bool login = PQconnectionNeedsPassword(m_pg) != 0 || PQconnectionUsedPassword(m_pg) != 0;
            close();
            return Error{Errc::storage_error,
                         login ? "postgresql: cannot connect (the server refused the login: user, password or database)"
                               : "postgresql: cannot connect (server unreachable, or it refused the connection)"};
        }
        // Server notices ("already exists, skipping") are not errors; libpq would print them to stderr.
        PQsetNoticeProcessor(
            m_pg, [](void*, const char*) {}, nullptr);
        return ok();
    }

    bool connected() const noexcept override { return m_pg != nullptr && PQstatus(m_pg) == CONNECTION_OK; }
    std::string_view kind() const noexcept override { return "postgresql"; }

    SqlResult execute_control(const char* sql) override { return outcome(ResultPtr(PQexec(m_pg, sql)), ""); }

    SqlResult execute(const char* sql, const std::vector<SqlParam>& params, std::string_view kinds) override {
        std::vector<Oid> types(params.size());
        std::vector<std::array<char, 8>> ints(params.size());
        std::vector<const char*> values(params.size());
        std::vector<int> lengths(params.size());
        const std::vector<int> formats(params.size(), 1);
        for (std::size_t k = 0; k < params.size(); ++k) {
            const auto& p = params[k];
            if (const auto* i = std::get_if<std::int64_t>(&p)) {
                auto v = static_cast<std::uint64_t>(*i);
                for (int b = 7; b >= 0; --b, v >>= 8) {
                    ints[k][static_cast<std::size_t>(b)] = static_cast<char>(v & 0xFF);
                }
                types[k] = int8_oid;
                values[k] = ints[k].data();
                lengths[k] = 8;
            } else if (const auto* s = std::get_if<std::string_view>(&p)) {
                types[k] = bytea_oid;
                values[k] = s->data();
                lengths[k] = static_cast<int>(s->size());
            } else if (const auto* b = std::get_if<ByteView>(&p)) {
                types[k] = bytea_oid;
                values[k] = reinterpret_cast<const char*>(b->data());
                lengths[k] = static_cast<int>(b->size());
            }  // else NULL: no type, no value
        }
        auto it = m_stmts.find(sql);
        if (it == m_stmts.end()) {
            const std::string name = "sim" + std::to_string(m_stmts.size());
            ResultPtr prepared(PQprepare(m_pg, name.c_str(), numbered_placeholders(sql).c_str(),
                                         static_cast<int>(params.size()), types.data()));
            if (auto failed = outcome(std::move(prepared), ""); !std::holds_alternative<SqlOutcome>(failed)) {
                return failed;
            }
            it = m_stmts.emplace(sql, name).first;
        }
        return outcome(ResultPtr(PQexecPrepared(m_pg, it->second.c_str(), static_cast<int>(params.size()),
                                                values.data(), lengths.data(), formats.data(), 1)),
                       kinds);
    }

private:
    void close() {
        m_stmts.clear();  // prepared statements live and die with their connection
        if (m_pg != nullptr) {
            PQfinish(m_pg);
            m_pg = nullptr;
        }
    }

    /// A statement's result as rows, or what went wrong.
    SqlResult outcome(ResultPtr res, std::string_view kinds) {
        const auto status = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
            return failure(res.get());
        }
        SqlOutcome out;
        if (const char* n = PQcmdTuples(res.get()); n != nullptr && *n != '\0') {
            out.affected = std::strtoull(n, nullptr, 10);
        }
        if (kinds.empty()) {
            return out;
        }
        if (PQnfields(res.get()) != static_cast<int>(kinds.size()) || PQbinaryTuples(res.get()) == 0) {
            return SqlError{SqlFailure::other, "result columns"};
        }
        const int rows = PQntuples(res.get());
        out.rows.reserve(static_cast<std::size_t>(rows));
        for (int r = 0; r < rows; ++r) {
            SqlRow row(kinds.size());
            for (std::size_t k = 0; k < kinds.size(); ++k) {
                const int c = static_cast<int>(k);
                row[k].is_null = PQgetisnull(res.get(), r, c) != 0;
                if (row[k].is_null) {
                    continue;
                }
                const char* v = PQgetvalue(res.get(), r, c);
                const int len = PQgetlength(res.get(), r, c);
                if (kinds[k] == 'b') {
                    row[k].s.assign(v, static_cast<std::size_t>(len));
                    continue;
                }
                const Oid type = PQftype(res.get(), c);
                const int want = type == int8_oid   ? 8
                                 : type == int4_oid ? 4
                                 : type == int2_oid ? 2
                                 : type == bool_oid ? 1
                                                    : 0;
                if (want == 0 || len != want) {
                    return SqlError{SqlFailure::other, "result type"};
                }
                row[k].i = big_endian(v, len);
            }
            out.rows.push_back(std::move(row));
        }
        return out;
    }

    /// What a failed statement means, from its SQLSTATE (PostgreSQL manual, appendix A) and the connection.
    SqlError failure(const PGresult* res) const {
        const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
        const std::string code = state != nullptr ? state : "none";
        // Class 08: connection exception; 57P01..57P03: the server is shutting down or restarting.
        const bool lost = PQstatus(m_pg) != CONNECTION_OK || code.starts_with("08") || code == "57P01" ||
                          code == "57P02" || code == "57P03";
        const SqlFailure kind = lost              ? SqlFailure::connection_lost
                                : code == "23505" ? SqlFailure::duplicate_key
                                : code == "23503" ? SqlFailure::missing_reference
                                                  : SqlFailure::other;
        return SqlError{kind, code};
    }

    SqlUrl m_params;
    PGconn* m_pg = nullptr;
    std::map<std::string, std::string, std::less<>> m_stmts;  // SQL text -> prepared statement name
};

}  // namespace

const SqlDialect postgres_dialect{
    .make_connection = make_connection<PostgresConnection>,
    // A session-level advisory lock, keyed "LSIM" as SQLite's application_id. pg_advisory_lock returns void: the
    // row says it was taken.
    .lock_schema = "SELECT 1 FROM pg_advisory_lock(1280526669)",
    .unlock_schema = "SELECT CAST(pg_advisory_unlock(1280526669) AS INTEGER)",
    // The parameter is BYTEA like every string parameter; table names are text.
    .table_exists =
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() "
        "AND table_name = convert_from(?, 'UTF8')",
    .write_version =
        "INSERT INTO sim_meta (id, schema_version) VALUES (1, ?) "
        "ON CONFLICT (id) DO UPDATE SET schema_version = EXCLUDED.schema_version",
    .upsert_prekeys =
        "INSERT INTO sim_prekeys (username, device, identity_key, spk_id, spk, spk_sig) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (username, device) DO UPDATE SET identity_key = EXCLUDED.identity_key, "
        "spk_id = EXCLUDED.spk_id, spk = EXCLUDED.spk, spk_sig = EXCLUDED.spk_sig",
    .upsert_one_time_prekey =
        "INSERT INTO sim_one_time_prekeys (username, device, key_id, public_key) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (username, device, key_id) DO UPDATE SET public_key = EXCLUDED.public_key",
    .insert_message_once =
        "INSERT INTO sim_messages (recipient, recipient_device, sender, sender_device, "
        "message_id, envelope, stored_ms) VALUES (?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT ON CONSTRAINT sim_messages_device_key DO NOTHING",
    // SUM of an INTEGER is a BIGINT.
    .usage =
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(envelope)), 0) FROM sim_messages "
        "WHERE recipient = ? AND recipient_device = ?",
    .usage_by_sender = "SELECT sender, COUNT(*), SUM(LENGTH(envelope)) FROM sim_messages GROUP BY sender",
    .schema = migrations,
};

}  // namespace sim::store::detail
