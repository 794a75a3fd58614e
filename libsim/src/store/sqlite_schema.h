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
    // 3 -> 4: end-to-end prekeys and the offline message queue. Messages have no foreign key (a batch must not
    // fail for one recipient deleted meanwhile); delete_user removes them explicitly.
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
    "CREATE INDEX sim_messages_recipient ON sim_messages (recipient, seq);",
    // 4 -> 5: the session-end log (revoked sessions, changed passwords, deleted accounts) running servers follow
    "CREATE TABLE sim_session_ends ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  username TEXT NOT NULL,"
    "  at_ms INTEGER NOT NULL"
    ");",
    // 5 -> 6: a mailbox per device, (recipient, recipient_device); every stored message so far was for and from
    // the first device. SQLite cannot change a table's UNIQUE constraint in place, so the table is rebuilt
    // (https://www.sqlite.org/lang_altertable.html, "other kinds of table schema changes"), keeping every row
    // and its seq. The AUTOINCREMENT high-water mark is carried over as well: seq must keep growing past
    // messages that were already removed, or a reader's after_seq could skip new ones. The devices have no
    // default: every writer names them.
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
    "CREATE INDEX sim_messages_mailbox ON sim_messages (recipient, recipient_device, seq);",
    // 6 -> 7: devices of an account (docs/architecture.md, "Multi-device accounts"). Every account so far gets its
    // device 1, active without a key (times 0: unknown); sim_users.last_device is the highest device id the account
    // ever used, so an id is not given twice even after its pending device expired. Tokens and prekeys so far are
    // device 1's. Prekeys change their primary key, so both prekey tables are rebuilt as in 5 -> 6 (renaming the
    // parent table rewrites the child's foreign key, https://www.sqlite.org/lang_altertable.html). Tokens and the
    // session-end log gain a column (ADD COLUMN cannot drop the default afterwards: it stays).
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
    "ALTER TABLE sim_one_time_prekeys_v7 RENAME TO sim_one_time_prekeys;",
    // 7 -> 8: failure times on the wall clock, shared by every node and kept over restarts (docs/accounts.md,
    // "Throttling"). The old times were of one process's monotonic clock: meaningless now, so the counts restart.
    // Throttle keys (source addresses, names without an account) get their own table, purged by age.
    "ALTER TABLE sim_users ADD COLUMN last_failure_ms INTEGER NOT NULL DEFAULT 0;"
    "UPDATE sim_users SET failed_count = 0;"
    "ALTER TABLE sim_users DROP COLUMN last_failure_ns;"
    "CREATE TABLE sim_throttle ("
    "  throttle_key TEXT PRIMARY KEY NOT NULL CHECK (length(CAST(throttle_key AS BLOB)) BETWEEN 1 AND 400),"
    "  failed_count INTEGER NOT NULL CHECK (failed_count BETWEEN 1 AND 4294967295),"
    "  last_failure_ms INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX sim_throttle_age ON sim_throttle (last_failure_ms);",
    // 8 -> 9: contact pairs (docs/protocol.md 6.10), so that presence survives a restart.
    "CREATE TABLE sim_contacts ("
    "  user_a TEXT NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  user_b TEXT NOT NULL REFERENCES sim_users (username) ON DELETE CASCADE,"
    "  PRIMARY KEY (user_a, user_b),"
    "  CHECK (user_a < user_b)"
    ") WITHOUT ROWID;"
    "CREATE INDEX sim_contacts_b ON sim_contacts (user_b);",
};

static_assert(sqlite_application_id == 1280526669);

}  // namespace sim::store::detail
