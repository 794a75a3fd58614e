#pragma once
// Private: what the SQLite-backed stores (the server's accounts database, the client's state file) share about
// recognising their files: the application id / schema version check and the read-only URI used to inspect a
// file without touching it.

#include <sim/error.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <string>
#include <string_view>

namespace sim::store::detail {

/// What a SQLite file says about itself.
struct SqliteIdentity {
    int application_id = 0;  ///< PRAGMA application_id
    int version = 0;         ///< PRAGMA user_version: the schema version
    int objects = 0;         ///< entries in sqlite_master (0: an empty database)

    [[nodiscard]] bool empty() const noexcept { return application_id == 0 && version == 0 && objects == 0; }
};

SqliteIdentity read_sqlite_identity(SQLite::Database& db);

/// Whether a file with this identity may be opened (and migrated): empty, or `application_id` with a schema version
/// from 1 to `max_version`. Errc::corrupt_database ("the file is not a <what>", or no schema version),
/// Errc::schema_too_new. `what` names the kind of file ("libsim database", "libsim client state file").
Status judge_sqlite_identity(const SqliteIdentity& id, int application_id, int max_version, std::string_view what);

/// The "file:" URI of a read-only, lock-free, immutable connection to `path`: it neither writes nor creates -wal or
/// -shm files, so inspecting a file this way leaves it exactly as it was.
std::string sqlite_immutable_uri(const std::string& path);

}  // namespace sim::store::detail
