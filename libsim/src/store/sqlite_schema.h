#pragma once
// The SQLite schema history. Migration i takes a database from version i to i + 1; the version lives in
// PRAGMA user_version and the file is marked as libsim's by PRAGMA application_id. Never edit a released step:
// add a new one and raise sim::store::schema_version.

#include <sim/store.h>

#include <array>

namespace sim::store::detail {

/// "LSIM" in ASCII.
inline constexpr int sqlite_application_id = 0x4C53494D;

inline constexpr std::array<const char*, schema_version> sqlite_migrations{
    // 0 -> 1: accounts
    "PRAGMA application_id = 1280526669;"  // 0x4C53494D
    "CREATE TABLE sim_users ("
    "  username TEXT PRIMARY KEY NOT NULL,"
    "  password_hash TEXT NOT NULL"
    ") WITHOUT ROWID;",
    // 1 -> 2: failed-login throttling
    "ALTER TABLE sim_users ADD COLUMN failed_count INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sim_users ADD COLUMN last_failure_ns INTEGER NOT NULL DEFAULT 0;",
    // 2 -> 3: session tokens and conversation keys
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
    "CREATE INDEX sim_conversation_keys_b ON sim_conversation_keys (user_b);",
};

static_assert(sqlite_application_id == 1280526669);

}  // namespace sim::store::detail
