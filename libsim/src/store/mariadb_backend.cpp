// The MariaDB/MySQL backend through MariaDB Connector/C: the connection and the dialect; the stores are
// sql_backend.cpp's. Prepared statements only. See docs/accounts.md, "MariaDB".
#include "sql_backend.h"
#include "sql_url.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>

#include <array>
#include <cstring>
#include <map>
#include <mutex>
#include <variant>

namespace sim::store::detail {
namespace {

constexpr unsigned er_client_interaction_timeout = 4031;  // MariaDB: wait_timeout closed the connection

bool is_connection_lost(unsigned err) {
    return err == CR_SERVER_GONE_ERROR || err == CR_SERVER_LOST || err == CR_SERVER_LOST_EXTENDED ||
           err == ER_CONNECTION_KILLED || err == er_client_interaction_timeout;
}

// The schema history (see sqlite_schema.h for the rules). Each entry is one statement: prepared statements
// cannot hold several. IF NOT EXISTS makes a step that failed half-way (DDL is not transactional) re-runnable.
const std::array<SchemaStep, schema_version> migrations{{
    // 0 -> 1: accounts
    {0,
     1,
     {"CREATE TABLE IF NOT EXISTS sim_meta (id TINYINT UNSIGNED NOT NULL PRIMARY KEY, "
      "schema_version INT NOT NULL) ENGINE=InnoDB",
      "CREATE TABLE IF NOT EXISTS sim_users (username VARBINARY(64) NOT NULL PRIMARY KEY, "
      "password_hash VARBINARY(255) NOT NULL) ENGINE=InnoDB"}},
    // 1 -> 2: failed-login throttling
    {1,
     2,
     {"ALTER TABLE sim_users ADD COLUMN IF NOT EXISTS failed_count INT UNSIGNED NOT NULL DEFAULT 0, "
      "ADD COLUMN IF NOT EXISTS last_failure_ns BIGINT NOT NULL DEFAULT 0"}},
    // 2 -> 3: session tokens and conversation keys
    {2,
     3,
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
      "ON DELETE CASCADE, CONSTRAINT sim_conversation_keys_order CHECK (user_a < user_b)) ENGINE=InnoDB"}},
    // 3 -> 4: end-to-end prekeys and the offline message queue (messages without a foreign key: see
    // sqlite_schema.h)
    {3,
     4,
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
      "KEY sim_messages_recipient (recipient, seq)) ENGINE=InnoDB"}},
    // 4 -> 5: the session-end log (see sqlite_schema.h)
    {4,
     5,
     {"CREATE TABLE IF NOT EXISTS sim_session_ends (seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, "
      "username VARBINARY(64) NOT NULL, at_ms BIGINT NOT NULL) ENGINE=InnoDB"}},
    // 5 -> 6: a mailbox per device (see sqlite_schema.h). ALTER TABLE keeps every row, its seq and the
    // AUTO_INCREMENT counter; the rows already there get device 1 from the columns' default, which is dropped
    // afterwards so every writer names the devices. The keys get new names so that IF [NOT] EXISTS can tell a
    // step already done from one still to do.
    {5,
     6,
     {"ALTER TABLE sim_messages "
      "ADD COLUMN IF NOT EXISTS recipient_device INT UNSIGNED NOT NULL DEFAULT 1 AFTER recipient, "
      "ADD COLUMN IF NOT EXISTS sender_device INT UNSIGNED NOT NULL DEFAULT 1 AFTER sender",
      "ALTER TABLE sim_messages ALTER COLUMN recipient_device DROP DEFAULT, "
      "ALTER COLUMN sender_device DROP DEFAULT",
      "ALTER TABLE sim_messages "
      "ADD UNIQUE KEY IF NOT EXISTS sim_messages_device_key (recipient, recipient_device, sender, message_id), "
      "ADD KEY IF NOT EXISTS sim_messages_mailbox (recipient, recipient_device, seq), "
      "DROP KEY IF EXISTS sim_messages_key, DROP KEY IF EXISTS sim_messages_recipient"}},
    // 6 -> 7: devices of an account (see sqlite_schema.h). Tokens and prekeys so far are device 1's (the columns'
    // default, dropped afterwards); the prekey tables' primary keys gain the device, their foreign key is dropped
    // first and made again over (username, device). Each statement can run again after a failure half-way.
    {6,
     7,
     {"ALTER TABLE sim_users ADD COLUMN IF NOT EXISTS last_device BIGINT NOT NULL DEFAULT 1",
      "CREATE TABLE IF NOT EXISTS sim_devices (username VARBINARY(64) NOT NULL, device INT UNSIGNED NOT NULL, "
      "state TINYINT UNSIGNED NOT NULL, name VARBINARY(64) NOT NULL, device_key VARBINARY(32) NOT NULL, "
      "created_ms BIGINT NOT NULL, linked_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL, "
      "PRIMARY KEY (username, device), CONSTRAINT sim_devices_user_fk FOREIGN KEY (username) "
      "REFERENCES sim_users (username) ON DELETE CASCADE, "
      "CONSTRAINT sim_devices_state CHECK (state BETWEEN 1 AND 3)) ENGINE=InnoDB",
      "INSERT IGNORE INTO sim_devices (username, device, state, name, device_key, created_ms, linked_ms, "
      "last_seen_ms) SELECT username, 1, 2, '', '', 0, 0, 0 FROM sim_users",
      "CREATE TABLE IF NOT EXISTS sim_device_lists (username VARBINARY(64) NOT NULL PRIMARY KEY, "
      "version BIGINT NOT NULL, signed_list BLOB NOT NULL, CONSTRAINT sim_device_lists_user_fk "
      "FOREIGN KEY (username) REFERENCES sim_users (username) ON DELETE CASCADE) ENGINE=InnoDB",
      "ALTER TABLE sim_sessions ADD COLUMN IF NOT EXISTS device INT UNSIGNED NOT NULL DEFAULT 1 AFTER username, "
      "ADD KEY IF NOT EXISTS sim_sessions_device (username, device)",
      "ALTER TABLE sim_sessions ALTER COLUMN device DROP DEFAULT",
      "ALTER TABLE sim_session_ends ADD COLUMN IF NOT EXISTS device INT UNSIGNED NOT NULL DEFAULT 0 AFTER username",
      "ALTER TABLE sim_one_time_prekeys DROP FOREIGN KEY IF EXISTS sim_one_time_prekeys_fk, "
      "DROP FOREIGN KEY IF EXISTS sim_one_time_prekeys_device_fk",
      "ALTER TABLE sim_prekeys ADD COLUMN IF NOT EXISTS device INT UNSIGNED NOT NULL DEFAULT 1 AFTER username, "
      "DROP PRIMARY KEY, ADD PRIMARY KEY (username, device)",
      "ALTER TABLE sim_prekeys ALTER COLUMN device DROP DEFAULT",
      "ALTER TABLE sim_one_time_prekeys ADD COLUMN IF NOT EXISTS device INT UNSIGNED NOT NULL DEFAULT 1 "
      "AFTER username, DROP PRIMARY KEY, ADD PRIMARY KEY (username, device, key_id)",
      "ALTER TABLE sim_one_time_prekeys ALTER COLUMN device DROP DEFAULT",
      "ALTER TABLE sim_one_time_prekeys ADD CONSTRAINT sim_one_time_prekeys_device_fk FOREIGN KEY IF NOT EXISTS "
      "(username, device) REFERENCES sim_prekeys (username, device) ON DELETE CASCADE"}},
    // 7 -> 8: failure times on the wall clock and a table of throttle keys (see sqlite_schema.h). Each statement
    // can run again after a failure half-way.
    {7,
     8,
     {"ALTER TABLE sim_users ADD COLUMN IF NOT EXISTS last_failure_ms BIGINT NOT NULL DEFAULT 0",
      "UPDATE sim_users SET failed_count = 0, last_failure_ms = 0",
      "ALTER TABLE sim_users DROP COLUMN IF EXISTS last_failure_ns",
      "CREATE TABLE IF NOT EXISTS sim_throttle (throttle_key VARBINARY(400) NOT NULL PRIMARY KEY, "
      "failed_count BIGINT NOT NULL, last_failure_ms BIGINT NOT NULL, KEY sim_throttle_age (last_failure_ms), "
      "CONSTRAINT sim_throttle_count CHECK (failed_count BETWEEN 1 AND 4294967295)) ENGINE=InnoDB"}},
    // 8 -> 9: contact pairs (docs/protocol.md 6.10).
    {8,
     9,
     {"CREATE TABLE IF NOT EXISTS sim_contacts (user_a VARBINARY(64) NOT NULL, user_b VARBINARY(64) NOT NULL, "
      "PRIMARY KEY (user_a, user_b), KEY sim_contacts_b (user_b), "
      "CONSTRAINT sim_contacts_a_fk FOREIGN KEY (user_a) REFERENCES sim_users (username) ON DELETE CASCADE, "
      "CONSTRAINT sim_contacts_b_fk FOREIGN KEY (user_b) REFERENCES sim_users (username) ON DELETE CASCADE, "
      "CONSTRAINT sim_contacts_order CHECK (user_a < user_b)) ENGINE=InnoDB"}},
}};

/// A failed statement: what it means to the stores, and its error number.
SqlError db_error(unsigned err) {
    const SqlFailure failure = err == ER_DUP_ENTRY             ? SqlFailure::duplicate_key
                               : err == ER_NO_REFERENCED_ROW_2 ? SqlFailure::missing_reference
                               : is_connection_lost(err)       ? SqlFailure::connection_lost
                                                               : SqlFailure::other;
    return SqlError{failure, std::to_string(err)};
}

/// One connection with a cache of prepared statements. Not thread-safe: the backend holds a mutex.
class MariaDbConnection final : public SqlConnection {
public:
    explicit MariaDbConnection(SqlUrl params) : m_params(std::move(params)) {
        // mysql_library_init is not thread-safe; mysql_init would call it implicitly on first use.
        static std::once_flag library_once;
        std::call_once(library_once, [] { mysql_library_init(0, nullptr, nullptr); });
    }
    ~MariaDbConnection() override { close(); }

    std::string_view kind() const noexcept override { return "mariadb"; }
    bool connected() const noexcept override { return m_mysql != nullptr; }

    Status connect() override {
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
        const auto mode = execute_control("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'");
        if (!std::holds_alternative<SqlOutcome>(mode)) {
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

    SqlResult execute_control(const char* sql) override {
        if (mysql_real_query(m_mysql, sql, std::strlen(sql)) != 0) {
            return db_error(mysql_errno(m_mysql));
        }
        return SqlOutcome{};
    }

    SqlResult execute(const char* sql, const std::vector<SqlParam>& params, std::string_view kinds) override {
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
                return db_error(err);
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
            return db_error(mysql_stmt_errno(stmt));
        }
        SqlOutcome out;
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

private:
    static std::optional<SqlError> fetch_all(MYSQL_STMT* stmt, std::string_view kinds, std::vector<SqlRow>& rows) {
        if (mysql_stmt_field_count(stmt) != kinds.size()) {
            return SqlError{SqlFailure::other, "result columns"};
        }
        if (mysql_stmt_store_result(stmt) != 0) {
            return db_error(mysql_stmt_errno(stmt));
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
            return db_error(mysql_stmt_errno(stmt));
        }
        while (true) {
            const int rc = mysql_stmt_fetch(stmt);
            if (rc == MYSQL_NO_DATA) {
                break;
            }
            if (rc == 1) {
                return db_error(mysql_stmt_errno(stmt));
            }
            SqlRow row(n);
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
                        return db_error(mysql_stmt_errno(stmt));
                    }
                }
            }
            rows.push_back(std::move(row));
        }
        return std::nullopt;
    }

    SqlUrl m_params;
    MYSQL* m_mysql = nullptr;
    std::map<std::string, MYSQL_STMT*, std::less<>> m_stmts;
};

}  // namespace

const SqlDialect mariadb_dialect{
    .make_connection = make_connection<MariaDbConnection>,
    .lock_schema = "SELECT GET_LOCK('libsim_schema', 60)",
    .unlock_schema = "SELECT RELEASE_LOCK('libsim_schema')",
    .table_exists =
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND "
        "table_name = ?",
    .write_version =
        "INSERT INTO sim_meta (id, schema_version) VALUES (1, ?) "
        "ON DUPLICATE KEY UPDATE schema_version = VALUES(schema_version)",
    .upsert_prekeys =
        "INSERT INTO sim_prekeys (username, device, identity_key, spk_id, spk, spk_sig) VALUES (?, ?, ?, ?, ?, ?) "
        "ON DUPLICATE KEY UPDATE identity_key = VALUES(identity_key), spk_id = VALUES(spk_id), "
        "spk = VALUES(spk), spk_sig = VALUES(spk_sig)",
    .upsert_one_time_prekey =
        "INSERT INTO sim_one_time_prekeys (username, device, key_id, public_key) VALUES (?, ?, ?, ?) "
        "ON DUPLICATE KEY UPDATE public_key = VALUES(public_key)",
    // IGNORE only skips the duplicate key here: the stores check every value first.
    .insert_message_once =
        "INSERT IGNORE INTO sim_messages (recipient, recipient_device, sender, sender_device, "
        "message_id, envelope, stored_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
    // SUM gives a DECIMAL: cast to an integer.
    .usage =
        "SELECT COUNT(*), CAST(COALESCE(SUM(LENGTH(envelope)), 0) AS SIGNED) FROM sim_messages "
        "WHERE recipient = ? AND recipient_device = ?",
    .usage_by_sender =
        "SELECT sender, COUNT(*), CAST(SUM(LENGTH(envelope)) AS SIGNED) FROM sim_messages "
        "GROUP BY sender",
    .schema = migrations,
};

}  // namespace sim::store::detail
