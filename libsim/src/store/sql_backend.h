#pragma once
// What the database server backends (MariaDB, PostgreSQL) share. Private to libsim.
//
// The six stores are written once (sql_backend.cpp) over two small seams: a SqlConnection (one client
// connection: connect, run one statement with `?` placeholders) and a SqlDialect (the few statements whose syntax
// differs, and the schema history). The retry rule, the transactions, the error mapping and the schema versioning
// live here too, so both backends behave alike by construction.

#include "checks.h"
#include "sql_url.h"

#include <sim/store.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sim::store::detail {

/// A statement parameter: NULL, an integer, or bytes (names and blobs alike: stored and compared byte for byte).
using SqlParam = std::variant<std::monostate, std::int64_t, std::string_view, ByteView>;

/// A result value: integer (or NULL) or bytes.
struct SqlValue {
    bool is_null = false;
    std::int64_t i = 0;
    std::string s;
};
using SqlRow = std::vector<SqlValue>;

struct SqlOutcome {
    std::uint64_t affected = 0;  ///< rows an INSERT / UPDATE / DELETE matched
    std::vector<SqlRow> rows;
};

/// What a failed statement means to the stores.
enum class SqlFailure {
    duplicate_key,      ///< a unique key is taken
    missing_reference,  ///< a foreign key names no row (the user does not exist)
    connection_lost,    ///< the server went away (restarted, killed the connection, network)
    other,
};

/// A statement the server refused or could not run.
struct SqlError {
    SqlFailure failure = SqlFailure::other;
    std::string code;  ///< the server's error number or SQLSTATE, for messages (never user data)
};

using SqlResult = std::variant<SqlOutcome, SqlError, Error>;

/// One client connection. Not thread-safe: the backend serialises its use.
class SqlConnection {
public:
    virtual ~SqlConnection() = default;

    /// Short name for messages and Backend::kind(): "mariadb", "postgresql".
    [[nodiscard]] virtual std::string_view kind() const noexcept = 0;

    /// Open a new connection (closing the old one). Errc::storage_error; the message names no host, user or
    /// password.
    [[nodiscard]] virtual Status connect() = 0;
    [[nodiscard]] virtual bool connected() const noexcept = 0;

    /// Run one statement. `sql` is a constant with `?` placeholders, one per parameter (never values built
    /// into the text). `kinds` says how to read each result column: 'i' integer, 'b' bytes; empty: no rows.
    [[nodiscard]] virtual SqlResult execute(const char* sql, const std::vector<SqlParam>& params,
                                            std::string_view kinds) = 0;

    /// Run a constant statement without parameters or results (START TRANSACTION, COMMIT, ROLLBACK).
    [[nodiscard]] virtual SqlResult execute_control(const char* sql) = 0;

    /// execute(), connecting first when there is no connection; after a lost connection, reconnect and run it
    /// once more, unless a transaction is open (its work went with the connection: that is an error).
    [[nodiscard]] SqlResult run(const char* sql, const std::vector<SqlParam>& params, std::string_view kinds);
    /// execute_control() with the same rule.
    [[nodiscard]] SqlResult control(const char* sql);

    /// Inside a transaction a lost connection must not be retried on a new one.
    void set_in_transaction(bool in_transaction) noexcept { m_in_transaction = in_transaction; }

protected:
    SqlConnection() = default;
    SqlConnection(const SqlConnection&) = delete;  // a connection owns its server session
    SqlConnection& operator=(const SqlConnection&) = delete;

private:
    template <typename Fn>
    SqlResult retrying(Fn&& fn);

    bool m_in_transaction = false;
};

/// SqlDialect::make_connection of a connection class constructed from the URL.
template <typename Connection>
std::unique_ptr<SqlConnection> make_connection(SqlUrl url) {
    return std::make_unique<Connection>(std::move(url));
}

/// One step of a schema history: the statements that take a database from version `from` to version `to`.
/// Never edit a released step: add a new one and raise sim::store::schema_version.
struct SchemaStep {
    int from = 0;
    int to = 0;
    std::vector<const char*> statements;
};

/// How to talk to one kind of server: its connection, and the statements whose syntax differs between servers (the
/// rest is standard SQL both run), each with `?` placeholders in the order given.
struct SqlDialect {
    /// A connection (not yet connected) to the server a URL names.
    std::unique_ptr<SqlConnection> (*make_connection)(SqlUrl url);
    /// Take the server-side schema lock (several servers may start at once); one integer row, 1 when taken.
    const char* lock_schema;
    /// Release it; one integer row.
    const char* unlock_schema;
    /// (table name): one integer row, nonzero when the table exists in the connection's database / schema.
    const char* table_exists;
    /// (version): set sim_meta's only row.
    const char* write_version;
    /// (username, device, identity_key, spk_id, spk, spk_sig): insert or replace a device's sim_prekeys row.
    const char* upsert_prekeys;
    /// (username, device, key_id, public_key): insert or replace a one-time prekey.
    const char* upsert_one_time_prekey;
    /// (recipient, recipient_device, sender, sender_device, message_id, envelope, stored_ms): insert unless the
    /// key is taken (then affect no row).
    const char* insert_message_once;
    /// (recipient, recipient_device): one row of two integers, the count and the envelopes' bytes.
    const char* usage;
    /// (): rows of (sender, count, bytes).
    const char* usage_by_sender;
    /// The schema history: from 0 (an empty database) to sim::store::schema_version.
    std::span<const SchemaStep> schema;
};

/// The dialects of the servers (mariadb_backend.cpp, postgres_backend.cpp). Each is compiled only when its client
/// library is found, which also defines SIM_HAVE_MARIADB / SIM_HAVE_POSTGRES.
extern const SqlDialect mariadb_dialect;
extern const SqlDialect postgres_dialect;

/// Check the URL, connect, bring the schema to sim::store::schema_version under the schema lock, and return the
/// backend. Errc::invalid_argument (the URL), Errc::not_implemented (no `dialect`: built without `library`),
/// Errc::storage_error (cannot connect, a statement failed), Errc::schema_too_new, Errc::corrupt_database (libsim
/// tables without a version, or a version the history has no step from).
Result<std::unique_ptr<Backend>> open_sql_backend(const SqlDialect* dialect, Result<SqlUrl> url,
                                                  std::string_view library);

}  // namespace sim::store::detail
