// The MariaDB/MySQL backend through MariaDB Connector/C: prepared statements only, one reconnect-and-retry after
// a dropped connection, versioned schema migrated on open. See docs/accounts.md, "MariaDB".
#include "checks.h"
#include "mariadb_url.h"

#ifdef SIM_HAVE_MARIADB

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>

#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <variant>

namespace sim::store {
namespace {

using namespace detail;

constexpr unsigned er_client_interaction_timeout = 4031;  // MariaDB: wait_timeout closed the connection

bool is_connection_lost(unsigned err) {
    return err == CR_SERVER_GONE_ERROR || err == CR_SERVER_LOST || err == CR_SERVER_LOST_EXTENDED ||
           err == ER_CONNECTION_KILLED || err == er_client_interaction_timeout;
}

// The schema history (see sqlite_schema.h for the rules). Each entry is one statement: prepared statements
// cannot hold several. IF NOT EXISTS makes a step that failed half-way (DDL is not transactional) re-runnable.
const std::array<std::vector<const char*>, schema_version> migrations{{
    // 0 -> 1: accounts
    {"CREATE TABLE IF NOT EXISTS sim_meta (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, "
     "schema_version INT NOT NULL) ENGINE=InnoDB",
     "CREATE TABLE IF NOT EXISTS sim_users (username VARBINARY(64) NOT NULL PRIMARY KEY, "
     "password_hash VARBINARY(255) NOT NULL) ENGINE=InnoDB"},
    // 1 -> 2: failed-login throttling
    {"ALTER TABLE sim_users ADD COLUMN IF NOT EXISTS failed_count INT UNSIGNED NOT NULL DEFAULT 0, "
     "ADD COLUMN IF NOT EXISTS last_failure_ns BIGINT NOT NULL DEFAULT 0"},
    // 2 -> 3: session tokens and conversation keys
    {"CREATE TABLE IF NOT EXISTS sim_sessions (token_hash BINARY(32) NOT NULL PRIMARY KEY, "
     "username VARBINARY(64) NOT NULL, expires_ms BIGINT NOT NULL, KEY sim_sessions_user (username), "
     "CONSTRAINT sim_sessions_user_fk FOREIGN KEY (username) REFERENCES sim_users (username) ON DELETE CASCADE) "
     "ENGINE=InnoDB",
     "CREATE TABLE IF NOT EXISTS sim_conversation_keys (user_a VARBINARY(64) NOT NULL, "
     "user_b VARBINARY(64) NOT NULL, sealed_key VARBINARY(512) NOT NULL, epoch BIGINT NOT NULL, "
     "created_ms BIGINT NOT NULL, PRIMARY KEY (user_a, user_b), KEY sim_conversation_keys_b (user_b), "
     "CONSTRAINT sim_conversation_keys_a_fk FOREIGN KEY (user_a) REFERENCES sim_users (username) "
     "ON DELETE CASCADE, "
     "CONSTRAINT sim_conversation_keys_b_fk FOREIGN KEY (user_b) REFERENCES sim_users (username) "
     "ON DELETE CASCADE, CONSTRAINT sim_conversation_keys_order CHECK (user_a < user_b)) ENGINE=InnoDB"},
    // 3 -> 4: end-to-end prekeys and the offline message queue (messages without a foreign key: see
    // sqlite_schema.h)
    {"CREATE TABLE IF NOT EXISTS sim_prekeys (username VARBINARY(64) NOT NULL PRIMARY KEY, "
     "identity_key BINARY(32) NOT NULL, spk_id BIGINT NOT NULL, spk BINARY(32) NOT NULL, "
     "spk_sig BINARY(64) NOT NULL, CONSTRAINT sim_prekeys_user_fk FOREIGN KEY (username) "
     "REFERENCES sim_users (username) ON DELETE CASCADE) ENGINE=InnoDB",
     "CREATE TABLE IF NOT EXISTS sim_one_time_prekeys (username VARBINARY(64) NOT NULL, key_id BIGINT NOT NULL, "
     "public_key BINARY(32) NOT NULL, PRIMARY KEY (username, key_id), CONSTRAINT sim_one_time_prekeys_fk "
     "FOREIGN KEY (username) REFERENCES sim_prekeys (username) ON DELETE CASCADE) ENGINE=InnoDB",
     "CREATE TABLE IF NOT EXISTS sim_messages (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
     "recipient VARBINARY(64) NOT NULL, sender VARBINARY(64) NOT NULL, message_id BINARY(16) NOT NULL, "
     "envelope MEDIUMBLOB NOT NULL, stored_ms BIGINT NOT NULL, "
     "UNIQUE KEY sim_messages_key (recipient, sender, message_id), "
     "KEY sim_messages_recipient (recipient, seq)) ENGINE=InnoDB"},
    // 4 -> 5: the session-end log (see sqlite_schema.h)
    {"CREATE TABLE IF NOT EXISTS sim_session_ends (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
     "username VARBINARY(64) NOT NULL, at_ms BIGINT NOT NULL) ENGINE=InnoDB"},
    // 5 -> 6: a mailbox per device (see sqlite_schema.h). ALTER TABLE keeps every row, its seq and the
    // AUTO_INCREMENT counter; the rows already there get device 1 from the columns' default, which is dropped
    // afterwards so every writer names the devices. The keys get new names so that IF [NOT] EXISTS can tell a
    // step already done from one still to do.
    {"ALTER TABLE sim_messages "
     "ADD COLUMN IF NOT EXISTS recipient_device INT UNSIGNED NOT NULL DEFAULT 1 AFTER recipient, "
     "ADD COLUMN IF NOT EXISTS sender_device INT UNSIGNED NOT NULL DEFAULT 1 AFTER sender",
     "ALTER TABLE sim_messages ALTER COLUMN recipient_device DROP DEFAULT, "
     "ALTER COLUMN sender_device DROP DEFAULT",
     "ALTER TABLE sim_messages "
     "ADD UNIQUE KEY IF NOT EXISTS sim_messages_device_key (recipient, recipient_device, sender, message_id), "
     "ADD KEY IF NOT EXISTS sim_messages_mailbox (recipient, recipient_device, seq), "
     "DROP KEY IF EXISTS sim_messages_key, DROP KEY IF EXISTS sim_messages_recipient"},
}};

/// A statement parameter.
using Param = std::variant<std::monostate, std::int64_t, std::string_view, ByteView>;

/// A result value: integer (or NULL) or bytes.
struct Value {
    bool is_null = false;
    std::int64_t i = 0;
    std::string s;
};
using Row = std::vector<Value>;

struct Outcome {
    std::uint64_t affected = 0;
    std::vector<Row> rows;
};

struct DbError {
    unsigned err = 0;  ///< server or client error number
};

// Return an Error alternative from a Status-returning call.
#define SIM_TRY_VARIANT(expr)          \
    do {                               \
        if (auto st_ = (expr); !st_) { \
            return st_.error();        \
        }                              \
    } while (false)

/// One connection with a cache of prepared statements. Not thread-safe: the backend holds a mutex.
class Connection {
public:
    explicit Connection(MariaDbParams params) : m_params(std::move(params)) {}
    ~Connection() { close(); }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;

    Status connect() {
        close();
        m_mysql = mysql_init(nullptr);
        if (m_mysql == nullptr) {
            return Error{Errc::storage_error, "mariadb: out of memory"};
        }
        const unsigned timeout = m_params.connect_timeout;
        const unsigned io_timeout = 30;
        mysql_options(m_mysql, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
        mysql_options(m_mysql, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
        mysql_options(m_mysql, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
        mysql_options(m_mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4");
        if (m_params.tls_required) {
            const my_bool on = 1;
            mysql_options(m_mysql, MYSQL_OPT_SSL_ENFORCE, &on);
            mysql_options(m_mysql, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on);
            if (!m_params.tls_ca.empty()) {
                mysql_options(m_mysql, MYSQL_OPT_SSL_CA, m_params.tls_ca.c_str());
            }
        }
        const bool via_socket = !m_params.socket.empty();
        // CLIENT_FOUND_ROWS: an UPDATE reports the rows it matched, not only those whose values changed.
        if (mysql_real_connect(m_mysql, via_socket ? "localhost" : m_params.host.c_str(), m_params.user.c_str(),
                               m_params.password.c_str(), m_params.database.c_str(), via_socket ? 0 : m_params.port,
                               via_socket ? m_params.socket.c_str() : nullptr, CLIENT_FOUND_ROWS) == nullptr) {
            // The connector's message can name the host or user; report the number only.
            const auto err = mysql_errno(m_mysql);
            close();
            return Error{Errc::storage_error, "mariadb: cannot connect (error " + std::to_string(err) + ")"};
        }
        const auto mode = run_once("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'", {}, "");
        if (!std::holds_alternative<Outcome>(mode)) {
            close();
            return Error{Errc::storage_error, "mariadb: cannot set the session mode"};
        }
        return ok();
    }

    void close() {
        for (auto& [sql, stmt] : m_stmts) {
            mysql_stmt_close(stmt);
        }
        m_stmts.clear();
        if (m_mysql != nullptr) {
            mysql_close(m_mysql);
            m_mysql = nullptr;
        }
    }

    /// Run a statement; after a dropped connection, reconnect and run it once more. `kinds` says how to read
    /// each result column: 'i' integer, 'b' bytes.
    std::variant<Outcome, DbError, Error> run(const char* sql, const std::vector<Param>& params,
                                              std::string_view kinds) {
        if (m_mysql == nullptr) {
            SIM_TRY_VARIANT(connect());
        }
        auto first = run_once(sql, params, kinds);
        if (const auto* e = std::get_if<DbError>(&first); m_retry && e != nullptr && is_connection_lost(e->err)) {
            SIM_TRY_VARIANT(connect());
            return run_once(sql, params, kinds);
        }
        return first;
    }

    /// Inside a transaction a lost connection must not be retried on a new one (the work so far is gone).
    void set_retry(bool retry) noexcept { m_retry = retry; }

    /// A constant statement without parameters or results (transaction control) through the text protocol.
    std::variant<Outcome, DbError, Error> simple(const char* sql) {
        if (m_mysql == nullptr) {
            SIM_TRY_VARIANT(connect());
        }
        if (mysql_real_query(m_mysql, sql, std::strlen(sql)) != 0) {
            return DbError{mysql_errno(m_mysql)};
        }
        return Outcome{};
    }

private:
    std::variant<Outcome, DbError, Error> run_once(const char* sql, const std::vector<Param>& params,
                                                   std::string_view kinds) {
        MYSQL_STMT* stmt = nullptr;
        if (const auto it = m_stmts.find(sql); it != m_stmts.end()) {
            stmt = it->second;
        } else {
            stmt = mysql_stmt_init(m_mysql);
            if (stmt == nullptr) {
                return Error{Errc::storage_error, "mariadb: out of memory"};
            }
            if (mysql_stmt_prepare(stmt, sql, std::strlen(sql)) != 0) {
                const auto err = mysql_stmt_errno(stmt);
                mysql_stmt_close(stmt);
                return DbError{err};
            }
            m_stmts.emplace(sql, stmt);
        }
        if (mysql_stmt_param_count(stmt) != params.size()) {
            return Error{Errc::internal, "mariadb: parameter count mismatch"};
        }
        std::vector<MYSQL_BIND> binds(params.size());
        std::vector<unsigned long> lengths(params.size());
        std::vector<long long> ints(params.size());
        for (std::size_t k = 0; k < params.size(); ++k) {
            auto& b = binds[k];
            std::memset(&b, 0, sizeof b);
            const auto& p = params[k];
            if (std::holds_alternative<std::monostate>(p)) {
                b.buffer_type = MYSQL_TYPE_NULL;
            } else if (const auto* i = std::get_if<std::int64_t>(&p)) {
                ints[k] = *i;
                b.buffer_type = MYSQL_TYPE_LONGLONG;
                b.buffer = &ints[k];
            } else if (const auto* s = std::get_if<std::string_view>(&p)) {
                lengths[k] = s->size();
                b.buffer_type = MYSQL_TYPE_BLOB;  // bytes as they are: no character set conversion
                b.buffer = const_cast<char*>(s->data());
                b.buffer_length = s->size();
                b.length = &lengths[k];
            } else {
                const auto& v = std::get<ByteView>(p);
                lengths[k] = v.size();
                b.buffer_type = MYSQL_TYPE_BLOB;
                b.buffer = const_cast<std::uint8_t*>(v.data());
                b.buffer_length = v.size();
                b.length = &lengths[k];
            }
        }
        if ((!binds.empty() && mysql_stmt_bind_param(stmt, binds.data()) != 0) || mysql_stmt_execute(stmt) != 0) {
            return DbError{mysql_stmt_errno(stmt)};
        }
        Outcome out;
        if (!kinds.empty()) {
            auto fetched = fetch_all(stmt, kinds, out.rows);
            mysql_stmt_free_result(stmt);
            if (fetched) {
                return *fetched;
            }
        }
        out.affected = mysql_stmt_affected_rows(stmt);
        return out;
    }

    static std::optional<DbError> fetch_all(MYSQL_STMT* stmt, std::string_view kinds, std::vector<Row>& rows) {
        if (mysql_stmt_field_count(stmt) != kinds.size()) {
            return DbError{0};
        }
        if (mysql_stmt_store_result(stmt) != 0) {
            return DbError{mysql_stmt_errno(stmt)};
        }
        constexpr std::size_t chunk = 1024;
        const std::size_t n = kinds.size();
        std::vector<MYSQL_BIND> binds(n);
        std::vector<long long> ints(n);
        std::vector<std::array<char, chunk>> bufs(n);
        std::vector<unsigned long> lengths(n);
        std::vector<my_bool> nulls(n);
        std::vector<my_bool> errors(n);
        for (std::size_t k = 0; k < n; ++k) {
            auto& b = binds[k];
            std::memset(&b, 0, sizeof b);
            b.is_null = &nulls[k];
            b.length = &lengths[k];
            b.error = &errors[k];
            if (kinds[k] == 'i') {
                b.buffer_type = MYSQL_TYPE_LONGLONG;
                b.buffer = &ints[k];
            } else {
                b.buffer_type = MYSQL_TYPE_BLOB;
                b.buffer = bufs[k].data();
                b.buffer_length = chunk;
            }
        }
        if (mysql_stmt_bind_result(stmt, binds.data()) != 0) {
            return DbError{mysql_stmt_errno(stmt)};
        }
        while (true) {
            const int rc = mysql_stmt_fetch(stmt);
            if (rc == MYSQL_NO_DATA) {
                break;
            }
            if (rc == 1) {
                return DbError{mysql_stmt_errno(stmt)};
            }
            Row row(n);
            for (std::size_t k = 0; k < n; ++k) {
                row[k].is_null = nulls[k] != 0;
                if (row[k].is_null) {
                    continue;
                }
                if (kinds[k] == 'i') {
                    row[k].i = ints[k];
                    continue;
                }
                row[k].s.assign(bufs[k].data(), std::min<std::size_t>(lengths[k], chunk));
                if (lengths[k] > chunk) {  // MYSQL_DATA_TRUNCATED: fetch the rest of this column
                    row[k].s.resize(lengths[k]);
                    MYSQL_BIND more;
                    std::memset(&more, 0, sizeof more);
                    unsigned long len = 0;
                    more.buffer_type = MYSQL_TYPE_BLOB;
                    more.buffer = row[k].s.data() + chunk;
                    more.buffer_length = lengths[k] - chunk;
                    more.length = &len;
                    if (mysql_stmt_fetch_column(stmt, &more, static_cast<unsigned>(k), chunk) != 0) {
                        return DbError{mysql_stmt_errno(stmt)};
                    }
                }
            }
            rows.push_back(std::move(row));
        }
        return std::nullopt;
    }

    MariaDbParams m_params;
    MYSQL* m_mysql = nullptr;
    bool m_retry = true;
    std::map<std::string, MYSQL_STMT*, std::less<>> m_stmts;
};

#undef SIM_TRY_VARIANT

/// The errno of a failed statement, or 0.
unsigned failed_with(const std::variant<Outcome, DbError, Error>& r) {
    const auto* e = std::get_if<DbError>(&r);
    return e != nullptr ? e->err : 0;
}

/// Turn a run() outcome into a Result, mapping database errors generically.
Result<Outcome> plain(std::variant<Outcome, DbError, Error>&& r) {
    if (auto* o = std::get_if<Outcome>(&r)) {
        return std::move(*o);
    }
    if (auto* e = std::get_if<Error>(&r)) {
        return std::move(*e);
    }
    const auto err = std::get<DbError>(r).err;
    if (is_connection_lost(err)) {
        return Error{Errc::storage_error, "mariadb: connection lost (error " + std::to_string(err) + ")"};
    }
    return Error{Errc::storage_error, "mariadb: statement failed (error " + std::to_string(err) + ")"};
}

std::string_view sv(const std::string& s) {
    return s;
}

class MariaDbBackend final : public Backend {
public:
    explicit MariaDbBackend(MariaDbParams params) : m_conn(std::move(params)) {}

    std::string_view kind() const noexcept override { return "mariadb"; }

    /// Connect and bring the schema to `schema_version` under a server-side lock (several servers may start at
    /// once).
    Status open() {
        const std::lock_guard lock(m_mutex);
        SIM_TRY_STATUS(m_conn.connect());
        SIM_TRY(const auto got, plain(m_conn.run("SELECT GET_LOCK('libsim_schema', 60)", {}, "i")));
        if (got.rows.size() != 1 || got.rows[0][0].is_null || got.rows[0][0].i != 1) {
            return Error{Errc::storage_error, "mariadb: could not take the schema lock"};
        }
        auto st = migrate();
        (void)m_conn.run("SELECT RELEASE_LOCK('libsim_schema')", {}, "i");
        return st;
    }

    Status create_user(std::string_view username, std::string_view password_hash) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_hash(password_hash));
        const std::lock_guard lock(m_mutex);
        auto r =
            m_conn.run("INSERT INTO sim_users (username, password_hash) VALUES (?, ?)", {username, password_hash}, "");
        if (failed_with(r) == ER_DUP_ENTRY) {
            return Error{Errc::user_exists, "username is taken"};
        }
        SIM_TRY_STATUS(plain(std::move(r)));
        return ok();
    }

    Result<std::optional<UserRecord>> find_user(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("SELECT username, password_hash, failed_count, last_failure_ns "
                                               "FROM sim_users WHERE username = ?",
                                               {username}, "bbii")));
        if (r.rows.empty()) {
            return std::optional<UserRecord>{};
        }
        const auto& row = r.rows[0];
        UserRecord rec;
        rec.username = row[0].s;
        rec.password_hash = row[1].s;
        rec.failures.count = static_cast<std::uint32_t>(row[2].i);
        rec.failures.last_failure = from_ns(row[3].i);
        return std::optional<UserRecord>{std::move(rec)};
    }

    Result<bool> replace_hash(std::string_view username, std::string_view new_hash,
                              std::optional<std::string_view> expected_old) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_hash(new_hash));
        const std::lock_guard lock(m_mutex);
        Outcome r;
        if (expected_old) {
            SIM_TRY(r, plain(m_conn.run("UPDATE sim_users SET password_hash = ? WHERE username = ? AND "
                                        "password_hash = ?",
                                        {new_hash, username, *expected_old}, "")));
        } else {
            SIM_TRY(r, plain(m_conn.run("UPDATE sim_users SET password_hash = ? WHERE username = ?",
                                        {new_hash, username}, "")));
        }
        if (r.affected != 0) {
            return true;
        }
        SIM_TRY(const bool found, exists(username));
        if (!found) {
            return no_user();
        }
        return false;
    }

    Result<FailureState> record_failure(std::string_view username, TimePoint now, Duration forget_after) override {
        SIM_TRY_STATUS(check_name(username));
        const std::int64_t now_ns = to_ns(now);
        const std::int64_t forget_before = forget_threshold(now, forget_after);
        const std::lock_guard lock(m_mutex);
        // One statement: atomic against other connections. MariaDB evaluates SET left to right, so the count is
        // computed from the old last_failure_ns before that column is overwritten.
        SIM_TRY(const auto r, plain(m_conn.run("UPDATE sim_users SET failed_count = CASE WHEN failed_count = 0 OR "
                                               "last_failure_ns > ? OR last_failure_ns <= ? THEN 1 "
                                               "ELSE LEAST(failed_count + 1, 4294967295) END, last_failure_ns = ? "
                                               "WHERE username = ?",
                                               {now_ns, forget_before, now_ns, username}, "")));
        if (r.affected == 0) {
            return no_user();
        }
        SIM_TRY(const auto q, plain(m_conn.run("SELECT failed_count, last_failure_ns FROM sim_users "
                                               "WHERE username = ?",
                                               {username}, "ii")));
        if (q.rows.empty()) {
            return no_user();
        }
        return FailureState{static_cast<std::uint32_t>(q.rows[0][0].i), from_ns(q.rows[0][1].i)};
    }

    Status clear_failures(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("UPDATE sim_users SET failed_count = 0, last_failure_ns = 0 "
                                               "WHERE username = ?",
                                               {username}, "")));
        if (r.affected == 0) {
            return no_user();
        }
        return ok();
    }

    Status delete_user(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        // Tokens, conversation keys and prekeys go by ON DELETE CASCADE; stored messages are deleted here.
        return in_transaction([&]() -> Status {
            SIM_TRY(const auto r, plain(m_conn.run("DELETE FROM sim_users WHERE username = ?", {username}, "")));
            if (r.affected == 0) {
                return no_user();
            }
            SIM_TRY_STATUS(plain(m_conn.run("DELETE FROM sim_messages WHERE recipient = ?", {username}, "")));
            return log_session_end(username);
        });
    }

    Result<std::vector<std::string>> list_users() override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn.run("SELECT username FROM sim_users ORDER BY username", {}, "b")));
        std::vector<std::string> out;
        out.reserve(r.rows.size());
        for (auto& row : r.rows) {
            out.push_back(std::move(row[0].s));
        }
        return out;
    }

    Status put_token(ByteView token_hash, std::string_view username, WallTime expires) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        auto r = m_conn.run("INSERT INTO sim_sessions (token_hash, username, expires_ms) VALUES (?, ?, ?)",
                            {token_hash, username, to_ms(expires)}, "");
        if (failed_with(r) == ER_NO_REFERENCED_ROW_2) {
            return no_user();
        }
        SIM_TRY_STATUS(plain(std::move(r)));
        return ok();
    }

    Result<std::optional<SessionRecord>> find_token(ByteView token_hash) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn.run("SELECT username, expires_ms FROM sim_sessions WHERE token_hash = ?",
                                         {token_hash}, "bi")));
        if (r.rows.empty()) {
            return std::optional<SessionRecord>{};
        }
        return std::optional<SessionRecord>{SessionRecord{std::move(r.rows[0][0].s), from_ms(r.rows[0][1].i)}};
    }

    Result<bool> revoke_token(ByteView token_hash) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("DELETE FROM sim_sessions WHERE token_hash = ?", {token_hash}, "")));
        return r.affected != 0;
    }

    Result<std::size_t> revoke_user_tokens(std::string_view username) override {
        const std::lock_guard lock(m_mutex);
        std::size_t n = 0;
        SIM_TRY_STATUS(in_transaction([&]() -> Status {
            SIM_TRY(const auto r, plain(m_conn.run("DELETE FROM sim_sessions WHERE username = ?", {username}, "")));
            n = static_cast<std::size_t>(r.affected);
            return log_session_end(username);
        }));
        return n;
    }

    Result<std::vector<SessionEnd>> session_ends_after(std::uint64_t after, std::size_t limit) override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn.run("SELECT seq, username FROM sim_session_ends WHERE seq > ? ORDER BY seq "
                                         "LIMIT ?",
                                         {static_cast<std::int64_t>(std::min<std::uint64_t>(after, INT64_MAX)),
                                          static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX))},
                                         "ib")));
        std::vector<SessionEnd> out;
        out.reserve(r.rows.size());
        for (auto& row : r.rows) {
            out.push_back({static_cast<std::uint64_t>(row[0].i), std::move(row[1].s)});
        }
        return out;
    }

    Result<std::uint64_t> last_session_end() override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("SELECT COALESCE(MAX(seq), 0) FROM sim_session_ends", {}, "i")));
        return r.rows.empty() ? std::uint64_t{0} : static_cast<std::uint64_t>(r.rows[0][0].i);
    }

    Result<std::size_t> purge_expired_tokens(WallTime now) override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("DELETE FROM sim_sessions WHERE expires_ms <= ?", {to_ms(now)}, "")));
        return static_cast<std::size_t>(r.affected);
    }

    Status put_conversation_key(const SealedConversationKey& key) override {
        SIM_TRY(const auto pair, ordered_pair(key.user_a, key.user_b));
        SIM_TRY_STATUS(check_sealed(key.sealed_key));
        SIM_TRY_STATUS(check_epoch(key.epoch));
        const auto epoch = static_cast<std::int64_t>(key.epoch);
        const ByteView sealed{key.sealed_key};
        const std::lock_guard lock(m_mutex);
        // Replace a lower epoch, else insert; a duplicate on insert means an equal or higher epoch is stored
        // (or a racing writer inserted one: then try the replacement once more).
        for (int attempt = 0; attempt < 2; ++attempt) {
            SIM_TRY(const auto up,
                    plain(m_conn.run("UPDATE sim_conversation_keys SET sealed_key = ?, epoch = ?, created_ms = ? "
                                     "WHERE user_a = ? AND user_b = ? AND epoch < ?",
                                     {sealed, epoch, to_ms(key.created), sv(pair.first), sv(pair.second), epoch}, "")));
            if (up.affected != 0) {
                return ok();
            }
            auto ins = m_conn.run(
                "INSERT INTO sim_conversation_keys (user_a, user_b, sealed_key, epoch, created_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                {sv(pair.first), sv(pair.second), sealed, epoch, to_ms(key.created)}, "");
            const auto err = failed_with(ins);
            if (err == ER_NO_REFERENCED_ROW_2) {
                return no_user();
            }
            if (err != ER_DUP_ENTRY) {
                SIM_TRY_STATUS(plain(std::move(ins)));
                return ok();
            }
        }
        return stale();
    }

    Result<std::optional<SealedConversationKey>> find_conversation_key(std::string_view user1,
                                                                       std::string_view user2) override {
        SIM_TRY(const auto pair, ordered_pair(user1, user2));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn.run("SELECT sealed_key, epoch, created_ms FROM sim_conversation_keys "
                                         "WHERE user_a = ? AND user_b = ?",
                                         {sv(pair.first), sv(pair.second)}, "bii")));
        if (r.rows.empty()) {
            return std::optional<SealedConversationKey>{};
        }
        auto& row = r.rows[0];
        SealedConversationKey rec;
        rec.user_a = pair.first;
        rec.user_b = pair.second;
        rec.sealed_key.assign(row[0].s.begin(), row[0].s.end());
        rec.epoch = static_cast<std::uint64_t>(row[1].i);
        rec.created = from_ms(row[2].i);
        return std::optional<SealedConversationKey>{std::move(rec)};
    }

    Result<bool> delete_conversation_key(std::string_view user1, std::string_view user2) override {
        SIM_TRY(const auto pair, ordered_pair(user1, user2));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("DELETE FROM sim_conversation_keys WHERE user_a = ? AND user_b = ?",
                                               {sv(pair.first), sv(pair.second)}, "")));
        return r.affected != 0;
    }

    Result<std::size_t> delete_user_conversation_keys(std::string_view username) override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("DELETE FROM sim_conversation_keys WHERE user_a = ? OR user_b = ?",
                                               {username, username}, "")));
        return static_cast<std::size_t>(r.affected);
    }

    Result<std::size_t> delete_all_conversation_keys() override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("DELETE FROM sim_conversation_keys", {}, "")));
        return static_cast<std::size_t>(r.affected);
    }

    Status set_prekeys(std::string_view username, const PrekeyUpload& upload) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_upload(upload));
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Status {
            SIM_TRY(const auto found, plain(m_conn.run("SELECT identity_key FROM sim_prekeys WHERE username = ? "
                                                       "FOR UPDATE",
                                                       {username}, "b")));
            if (!found.rows.empty() && !upload.replace && bytes_of(found.rows[0][0]) != upload.identity_key) {
                return identity_differs();
            }
            if (upload.replace) {
                SIM_TRY_STATUS(
                    plain(m_conn.run("DELETE FROM sim_one_time_prekeys WHERE username = ?", {username}, "")));
            }
            auto up = m_conn.run(
                "INSERT INTO sim_prekeys (username, identity_key, spk_id, spk, spk_sig) VALUES (?, ?, ?, ?, ?) "
                "ON DUPLICATE KEY UPDATE identity_key = VALUES(identity_key), spk_id = VALUES(spk_id), "
                "spk = VALUES(spk), spk_sig = VALUES(spk_sig)",
                {username, ByteView{upload.identity_key}, static_cast<std::int64_t>(upload.signed_prekey_id),
                 ByteView{upload.signed_prekey}, ByteView{upload.signed_prekey_signature}},
                "");
            if (failed_with(up) == ER_NO_REFERENCED_ROW_2) {
                return no_user();
            }
            SIM_TRY_STATUS(plain(std::move(up)));
            for (const auto& [id, key] : upload.one_time_prekeys) {
                SIM_TRY_STATUS(plain(m_conn.run("INSERT INTO sim_one_time_prekeys (username, key_id, public_key) "
                                                "VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE "
                                                "public_key = VALUES(public_key)",
                                                {username, static_cast<std::int64_t>(id), ByteView{key}}, "")));
            }
            SIM_TRY(const auto n, count_opks(username));
            if (n > max_prekeys_stored) {
                return too_many_prekeys();  // rolled back
            }
            return ok();
        });
    }

    Result<std::optional<e2e::PrekeyBundle>> take_bundle(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Result<std::optional<e2e::PrekeyBundle>> {
            SIM_TRY(const auto r, plain(m_conn.run("SELECT identity_key, spk_id, spk, spk_sig FROM sim_prekeys "
                                                   "WHERE username = ? FOR UPDATE",
                                                   {username}, "bibb")));
            if (r.rows.empty()) {
                return std::optional<e2e::PrekeyBundle>{};
            }
            e2e::PrekeyBundle b;
            b.identity_key = bytes_of(r.rows[0][0]);
            b.signed_prekey_id = static_cast<std::uint32_t>(r.rows[0][1].i);
            b.signed_prekey = bytes_of(r.rows[0][2]);
            b.signed_prekey_signature = bytes_of(r.rows[0][3]);
            SIM_TRY(const auto o, plain(m_conn.run("SELECT key_id, public_key FROM sim_one_time_prekeys "
                                                   "WHERE username = ? ORDER BY key_id LIMIT 1 FOR UPDATE",
                                                   {username}, "ib")));
            if (!o.rows.empty()) {
                const auto id = o.rows[0][0].i;
                SIM_TRY_STATUS(plain(m_conn.run("DELETE FROM sim_one_time_prekeys WHERE username = ? AND key_id = ?",
                                                {username, id}, "")));
                b.one_time_prekey_id = static_cast<std::uint32_t>(id);
                b.one_time_prekey = bytes_of(o.rows[0][1]);
            }
            return std::optional<e2e::PrekeyBundle>{std::move(b)};
        });
    }

    Result<PrekeyStatus> prekey_status(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r,
                plain(m_conn.run("SELECT identity_key FROM sim_prekeys WHERE username = ?", {username}, "b")));
        PrekeyStatus st;
        if (!r.rows.empty()) {
            st.identity_key = bytes_of(r.rows[0][0]);
            SIM_TRY(const auto n, count_opks(username));
            st.one_time_count = static_cast<std::uint32_t>(n);
        }
        return st;
    }

    Result<Applied> apply(const Changes& changes) override {
        SIM_TRY_STATUS(check_changes(changes));
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Result<Applied> {
            Applied out;
            out.appended.reserve(changes.appends.size());
            for (const auto& m : changes.appends) {
                // IGNORE only skips the duplicate key here: every value was checked above.
                SIM_TRY(const auto r,
                        plain(m_conn.run(
                            "INSERT IGNORE INTO sim_messages (recipient, recipient_device, sender, "
                            "sender_device, message_id, envelope, stored_ms) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            {sv(m.recipient), std::int64_t{m.recipient_device}, sv(m.sender),
                             std::int64_t{m.sender_device}, ByteView{m.id}, ByteView{m.envelope}, to_ms(m.stored_at)},
                            "")));
                out.appended.push_back(r.affected != 0);
            }
            out.removed.reserve(changes.removals.size());
            for (const auto& removal : changes.removals) {
                StoredUsage gone;
                for (const auto& id : removal.ids) {
                    SIM_TRY(const auto r,
                            plain(m_conn.run("DELETE FROM sim_messages WHERE recipient = ? AND recipient_device = ? "
                                             "AND sender = ? AND message_id = ? RETURNING LENGTH(envelope)",
                                             {sv(removal.recipient), std::int64_t{removal.recipient_device},
                                              sv(removal.sender), ByteView{id}},
                                             "i")));
                    for (const auto& row : r.rows) {
                        gone += StoredUsage{1, static_cast<std::uint64_t>(row[0].i)};
                    }
                }
                out.removed.push_back(gone);
            }
            return out;  // committed by in_transaction: one log flush for all of it
        });
    }

    Result<std::vector<StoredMessage>> pending(std::string_view recipient, DeviceId device, std::uint64_t after_seq,
                                               std::size_t limit) override {
        SIM_TRY_STATUS(check_name(recipient));
        SIM_TRY_STATUS(check_device(device));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn.run("SELECT seq, sender, sender_device, message_id, envelope, stored_ms "
                                         "FROM sim_messages WHERE recipient = ? AND recipient_device = ? AND seq > ? "
                                         "ORDER BY seq LIMIT ?",
                                         {recipient, std::int64_t{device},
                                          static_cast<std::int64_t>(std::min<std::uint64_t>(after_seq, INT64_MAX)),
                                          static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX))},
                                         "ibibbi")));
        std::vector<StoredMessage> out;
        out.reserve(r.rows.size());
        for (auto& row : r.rows) {
            StoredMessage m;
            m.seq = static_cast<std::uint64_t>(row[0].i);
            m.recipient = std::string(recipient);
            m.recipient_device = device;
            m.sender = std::move(row[1].s);
            SIM_TRY(m.sender_device, stored_device(row[2].i));
            if (row[3].s.size() != m.id.size()) {
                return Error{Errc::corrupt_database, "stored message id has the wrong size"};
            }
            std::copy(row[3].s.begin(), row[3].s.end(), m.id.begin());
            m.envelope = bytes_of(row[4]);
            m.stored_at = from_ms(row[5].i);
            out.push_back(std::move(m));
        }
        return out;
    }

    Result<StoredUsage> usage(std::string_view recipient, DeviceId device) override {
        SIM_TRY_STATUS(check_name(recipient));
        SIM_TRY_STATUS(check_device(device));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("SELECT COUNT(*), CAST(COALESCE(SUM(LENGTH(envelope)), 0) AS SIGNED) "
                                               "FROM sim_messages WHERE recipient = ? AND recipient_device = ?",
                                               {recipient, std::int64_t{device}}, "ii")));
        if (r.rows.empty()) {
            return StoredUsage{};
        }
        return StoredUsage{static_cast<std::uint64_t>(r.rows[0][0].i), static_cast<std::uint64_t>(r.rows[0][1].i)};
    }

    Result<std::map<std::string, StoredUsage>> usage_by_sender() override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn.run("SELECT sender, COUNT(*), CAST(SUM(LENGTH(envelope)) AS SIGNED) "
                                               "FROM sim_messages GROUP BY sender",
                                               {}, "bii")));
        std::map<std::string, StoredUsage> out;
        for (const auto& row : r.rows) {
            out[row[0].s] = StoredUsage{static_cast<std::uint64_t>(row[1].i), static_cast<std::uint64_t>(row[2].i)};
        }
        return out;
    }

private:
    static Bytes bytes_of(const Value& v) {
        return Bytes(v.s.begin(), v.s.end());
    }

    Result<std::size_t> count_opks(std::string_view username) {
        SIM_TRY(const auto r, plain(m_conn.run("SELECT COUNT(*) FROM sim_one_time_prekeys WHERE username = ?",
                                               {username}, "i")));
        return r.rows.empty() ? std::size_t{0} : static_cast<std::size_t>(r.rows[0][0].i);
    }

    /// Run `fn` (statements of m_conn) in one transaction: committed when it succeeds, rolled back otherwise.
    /// A connection lost inside is an error (not retried: the transaction is gone with it). Caller holds m_mutex.
    template <typename Fn>
    auto in_transaction(Fn&& fn) -> decltype(fn()) {
        SIM_TRY_STATUS(plain(m_conn.simple("START TRANSACTION")));
        m_conn.set_retry(false);
        auto result = fn();
        if (result) {
            if (auto st = plain(m_conn.simple("COMMIT")); !st) {
                result = st.error();
            }
        } else {
            (void)m_conn.simple("ROLLBACK");
        }
        m_conn.set_retry(true);
        return result;
    }

    /// Append a SessionEnd for `username` and drop the entries older than a day (inside the caller's transaction).
    Status log_session_end(std::string_view username) {
        const std::int64_t now = now_ms();
        SIM_TRY_STATUS(plain(m_conn.run("INSERT INTO sim_session_ends (username, at_ms) VALUES (?, ?)",
                                        {username, now}, "")));
        SIM_TRY_STATUS(plain(
            m_conn.run("DELETE FROM sim_session_ends WHERE at_ms < ?", {now - session_end_retention_ms}, "")));
        return ok();
    }

    Result<bool> exists(std::string_view username) {
        SIM_TRY(const auto r, plain(m_conn.run("SELECT 1 FROM sim_users WHERE username = ?", {username}, "i")));
        return !r.rows.empty();
    }

    Result<bool> table_exists(std::string_view table) {
        SIM_TRY(const auto r, plain(m_conn.run("SELECT COUNT(*) FROM information_schema.tables "
                                               "WHERE table_schema = DATABASE() AND table_name = ?",
                                               {table}, "i")));
        return !r.rows.empty() && r.rows[0][0].i != 0;
    }

    Status migrate() {
        int version = 0;
        SIM_TRY(const bool has_meta, table_exists("sim_meta"));
        if (has_meta) {
            SIM_TRY(const auto r, plain(m_conn.run("SELECT schema_version FROM sim_meta WHERE id = 1", {}, "i")));
            if (r.rows.empty() || r.rows[0][0].is_null) {
                SIM_TRY(const bool has_users, table_exists("sim_users"));
                if (has_users) {
                    return Error{Errc::corrupt_database, "libsim tables without a schema version"};
                }
            } else {
                version = static_cast<int>(r.rows[0][0].i);
            }
        } else {
            SIM_TRY(const bool has_users, table_exists("sim_users"));
            if (has_users) {
                return Error{Errc::corrupt_database, "libsim tables without a schema version"};
            }
        }
        if (version > schema_version) {
            return Error{Errc::schema_too_new, "database schema version " + std::to_string(version) +
                                                   " is newer than this libsim's " + std::to_string(schema_version)};
        }
        if (version < 0) {
            return Error{Errc::corrupt_database, "negative schema version"};
        }
        for (int v = version; v < schema_version; ++v) {
            for (const char* sql : migrations[static_cast<std::size_t>(v)]) {
                SIM_TRY_STATUS(plain(m_conn.run(sql, {}, "")));
            }
            SIM_TRY_STATUS(
                plain(m_conn.run("INSERT INTO sim_meta (id, schema_version) VALUES (1, ?) "
                                 "ON DUPLICATE KEY UPDATE schema_version = VALUES(schema_version)",
                                 {static_cast<std::int64_t>(v + 1)}, "")));
        }
        return ok();
    }

    std::mutex m_mutex;
    Connection m_conn;
};

std::once_flag library_once;

}  // namespace

bool have_mariadb() noexcept {
    return true;
}

Result<std::unique_ptr<Backend>> open_mariadb_backend(const MariaDbConfig& config) {
    SIM_TRY(auto params, parse_mariadb_url(config.url));
    // mysql_library_init is not thread-safe; mysql_init would call it implicitly on first use.
    std::call_once(library_once, [] { mysql_library_init(0, nullptr, nullptr); });
    auto backend = std::make_unique<MariaDbBackend>(std::move(params));
    SIM_TRY_STATUS(backend->open());
    return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace sim::store

#else  // !SIM_HAVE_MARIADB

namespace sim::store {

bool have_mariadb() noexcept {
    return false;
}

Result<std::unique_ptr<Backend>> open_mariadb_backend(const MariaDbConfig& config) {
    SIM_TRY(const auto params, detail::parse_mariadb_url(config.url));
    (void)params;
    return Error{Errc::not_implemented, "this libsim was built without MariaDB Connector/C"};
}

}  // namespace sim::store

#endif
