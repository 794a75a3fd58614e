// The SQLite backend (through SQLiteCpp): WAL, synchronous=FULL, versioned schema with migrations on open.
// See docs/accounts.md, "SQLite".
#include "checks.h"
#include "sqlite_file.h"
#include "sqlite_schema.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>

namespace sim::store {
namespace {

using namespace detail;

// Error details name the SQLite error class only: SQLite's own messages can quote column names and values.
Error from_sqlite(int code, int extended) {
    const int primary = code & 0xFF;
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
        return Error{Errc::corrupt_database, std::string("sqlite: ") + sqlite3_errstr(extended)};
    }
    return Error{Errc::storage_error, std::string("sqlite: ") + sqlite3_errstr(extended)};
}

Error from_exception(const SQLite::Exception& e) {
    return from_sqlite(e.getErrorCode(), e.getExtendedErrorCode());
}

// Run `fn`, turning exceptions into errors (SQLiteCpp reports failures by throwing).
template <typename Fn>
auto guarded(Fn&& fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const SQLite::Exception& e) {
        return from_exception(e);
    } catch (const std::exception&) {
        return Error{Errc::storage_error, "sqlite: unexpected failure"};
    }
}

bool is_memory_path(const std::string& path) {
    return path.empty() || path == ":memory:";
}

/// Check an existing file through a read-only connection, which can neither write nor checkpoint: a file we
/// refuse is left exactly as it was.
Status inspect_existing(const SqliteConfig& config) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(config.path, ec);
    if (ec || size == 0) {
        return ok();  // missing or empty: it will be created
    }
    // Without a WAL or journal beside it the file alone is the database: open it "immutable", which reads
    // without locks and without creating -wal/-shm files. Otherwise a writer is active (or crashed) and those
    // files exist already; a plain read-only connection neither writes the database nor checkpoints.
    const bool quiet =
        !std::filesystem::exists(config.path + "-wal", ec) && !std::filesystem::exists(config.path + "-journal", ec);
    const std::string target = quiet ? sqlite_immutable_uri(config.path) : config.path;
    const int flags = quiet ? (SQLite::OPEN_READONLY | SQLite::OPEN_URI) : SQLite::OPEN_READONLY;
    return guarded([&]() -> Status {
        SQLite::Database db(target, flags, static_cast<int>(config.busy_timeout.count()));
        const auto id = read_sqlite_identity(db);
        SIM_TRY_STATUS(judge_sqlite_identity(id, sqlite_application_id, schema_version, "libsim database"));
        if (config.integrity_check_on_open && id.objects != 0) {
            const auto result = db.execAndGet("PRAGMA quick_check(1)").getString();
            if (result != "ok") {
                return Error{Errc::corrupt_database, "database failed its integrity check"};
            }
        }
        return ok();
    });
}

class SqliteBackend final : public Backend {
public:
    explicit SqliteBackend(std::unique_ptr<SQLite::Database> db) : m_db(std::move(db)) {}

    std::string_view kind() const noexcept override { return "sqlite"; }

    Status create_user(std::string_view username, std::string_view password_hash) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_hash(password_hash));
        return locked([&]() -> Status {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            SQLite::Statement q(*m_db, "INSERT INTO sim_users (username, password_hash) VALUES (?, ?)");
            q.bind(1, std::string(username));
            q.bind(2, std::string(password_hash));
            try {
                q.exec();
            } catch (const SQLite::Exception& e) {
                if (e.getExtendedErrorCode() == SQLITE_CONSTRAINT_PRIMARYKEY) {
                    return Error{Errc::user_exists, "username is taken"};
                }
                throw;
            }
            // Device 1, active without a key; create_user takes no time, so its times are 0.
            SQLite::Statement d(*m_db,
                                "INSERT INTO sim_devices (username, device, state, name, device_key, created_ms, "
                                "linked_ms, last_seen_ms) VALUES (?, 1, 2, '', X'', 0, 0, 0)");
            d.bind(1, std::string(username));
            d.exec();
            tx.commit();
            return ok();
        });
    }

    Result<std::optional<UserRecord>> find_user(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        return locked([&]() -> Result<std::optional<UserRecord>> {
            SQLite::Statement q(*m_db,
                                "SELECT username, password_hash, failed_count, last_failure_ms FROM sim_users "
                                "WHERE username = ?");
            q.bind(1, std::string(username));
            if (!q.executeStep()) {
                return std::optional<UserRecord>{};
            }
            UserRecord rec;
            rec.username = q.getColumn(0).getString();
            rec.password_hash = q.getColumn(1).getString();
            rec.failures = stored_failures(q.getColumn(2).getInt64(), q.getColumn(3).getInt64());
            return std::optional<UserRecord>{std::move(rec)};
        });
    }

    Result<bool> replace_hash(std::string_view username, std::string_view new_hash,
                              std::optional<std::string_view> expected_old) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_hash(new_hash));
        return locked([&]() -> Result<bool> {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            SQLite::Statement q(*m_db, expected_old ? "UPDATE sim_users SET password_hash = ? WHERE username = ? "
                                                      "AND password_hash = ?"
                                                    : "UPDATE sim_users SET password_hash = ? WHERE username = ?");
            q.bind(1, std::string(new_hash));
            q.bind(2, std::string(username));
            if (expected_old) {
                q.bind(3, std::string(*expected_old));
            }
            if (q.exec() != 0) {
                tx.commit();
                return true;
            }
            if (!exists(username)) {
                return no_user();
            }
            return false;
        });
    }

    Result<FailureState> record_failure(std::string_view username, WallTime now, Duration forget_after) override {
        SIM_TRY_STATUS(check_name(username));
        return locked([&]() -> Result<FailureState> {
            // One statement, so the read-modify-write is atomic against other connections too.
            auto st = count_failure(
                "UPDATE sim_users SET failed_count = CASE WHEN failed_count = 0 OR "
                "last_failure_ms > ?1 OR last_failure_ms <= ?2 THEN 1 "
                "ELSE min(failed_count + 1, 4294967295) END, last_failure_ms = ?1 "
                "WHERE username = ?3 RETURNING failed_count, last_failure_ms",
                username, now, forget_after);
            if (!st) {
                return no_user();
            }
            return *st;
        });
    }

    Status clear_failures(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        return locked([&]() -> Status {
            SQLite::Statement q(*m_db, "UPDATE sim_users SET failed_count = 0, last_failure_ms = 0 WHERE username = ?");
            q.bind(1, std::string(username));
            if (q.exec() == 0) {
                return no_user();
            }
            return ok();
        });
    }

    Result<FailureState> record_key_failure(std::string_view key, WallTime now, Duration forget_after) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        return locked([&]() -> Result<FailureState> {
            // One upsert: atomic against other connections. In DO UPDATE the bare column names are the stored row's.
            auto st = count_failure(
                "INSERT INTO sim_throttle (throttle_key, failed_count, last_failure_ms) "
                "VALUES (?3, 1, ?1) ON CONFLICT (throttle_key) DO UPDATE SET failed_count = "
                "CASE WHEN last_failure_ms > ?1 OR last_failure_ms <= ?2 THEN 1 "
                "ELSE min(failed_count + 1, 4294967295) END, last_failure_ms = ?1 "
                "RETURNING failed_count, last_failure_ms",
                key, now, forget_after);
            if (!st) {
                return Error{Errc::storage_error, "sqlite: throttle upsert returned no row"};
            }
            return *st;
        });
    }

    Result<FailureState> find_key_failures(std::string_view key) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        return locked([&]() -> Result<FailureState> {
            SQLite::Statement q(*m_db, "SELECT failed_count, last_failure_ms FROM sim_throttle WHERE throttle_key = ?");
            q.bind(1, std::string(key));
            if (!q.executeStep()) {
                return FailureState{};
            }
            return stored_failures(q.getColumn(0).getInt64(), q.getColumn(1).getInt64());
        });
    }

    Status clear_key_failures(std::string_view key) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        return locked([&]() -> Status {
            SQLite::Statement q(*m_db, "DELETE FROM sim_throttle WHERE throttle_key = ?");
            q.bind(1, std::string(key));
            q.exec();
            return ok();
        });
    }

    Result<std::size_t> purge_key_failures(WallTime before) override {
        return locked([&]() -> Result<std::size_t> {
            SQLite::Statement q(*m_db, "DELETE FROM sim_throttle WHERE last_failure_ms <= ?");
            q.bind(1, to_ms(before));
            return static_cast<std::size_t>(q.exec());
        });
    }

    Status delete_user(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        return locked([&]() -> Status {
            // Tokens, conversation keys, prekeys, devices and the device list go by ON DELETE CASCADE
            // (foreign_keys is on for this connection); stored messages have no foreign key and are deleted here, in
            // the same transaction.
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            SQLite::Statement q(*m_db, "DELETE FROM sim_users WHERE username = ?");
            q.bind(1, std::string(username));
            if (q.exec() == 0) {
                return no_user();
            }
            SQLite::Statement m(*m_db, "DELETE FROM sim_messages WHERE recipient = ?");
            m.bind(1, std::string(username));
            m.exec();
            log_session_end(username, 0);
            tx.commit();
            return ok();
        });
    }

    Result<std::vector<std::string>> list_users() override {
        return locked([&]() -> Result<std::vector<std::string>> {
            SQLite::Statement q(*m_db, "SELECT username FROM sim_users ORDER BY username");
            std::vector<std::string> out;
            while (q.executeStep()) {
                out.push_back(q.getColumn(0).getString());
            }
            return out;
        });
    }

    Status put_token(ByteView token_hash, std::string_view username, DeviceId device, WallTime expires) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        SIM_TRY_STATUS(check_user_device(username, device));
        return locked([&]() -> Status {
            // One statement: the device is active when the row is written (a remove_device is not half seen).
            SQLite::Statement q(*m_db,
                                "INSERT INTO sim_sessions (token_hash, username, device, expires_ms) "
                                "SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM sim_devices "
                                "WHERE username = ?2 AND device = ?3 AND state = 2)");
            q.bind(1, token_hash.data(), static_cast<int>(token_hash.size()));
            q.bind(2, std::string(username));
            q.bind(3, static_cast<std::int64_t>(device));
            q.bind(4, to_ms(expires));
            if (q.exec() == 0) {
                return no_user();
            }
            return ok();
        });
    }

    Result<std::optional<SessionRecord>> find_token(ByteView token_hash) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        return locked([&]() -> Result<std::optional<SessionRecord>> {
            SQLite::Statement q(*m_db, "SELECT username, device, expires_ms FROM sim_sessions WHERE token_hash = ?");
            q.bind(1, token_hash.data(), static_cast<int>(token_hash.size()));
            if (!q.executeStep()) {
                return std::optional<SessionRecord>{};
            }
            SIM_TRY(const auto device, stored_device(q.getColumn(1).getInt64()));
            return std::optional<SessionRecord>{
                SessionRecord{q.getColumn(0).getString(), device, from_ms(q.getColumn(2).getInt64())}};
        });
    }

    Result<bool> revoke_token(ByteView token_hash) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        return locked([&]() -> Result<bool> {
            SQLite::Statement q(*m_db, "DELETE FROM sim_sessions WHERE token_hash = ?");
            q.bind(1, token_hash.data(), static_cast<int>(token_hash.size()));
            return q.exec() != 0;
        });
    }

    Result<std::size_t> revoke_user_tokens(std::string_view username) override {
        return locked([&]() -> Result<std::size_t> {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            SQLite::Statement q(*m_db, "DELETE FROM sim_sessions WHERE username = ?");
            q.bind(1, std::string(username));
            const auto n = static_cast<std::size_t>(q.exec());
            log_session_end(username, 0);
            tx.commit();
            return n;
        });
    }

    Result<std::vector<SessionEnd>> session_ends_after(std::uint64_t after, std::size_t limit) override {
        return locked([&]() -> Result<std::vector<SessionEnd>> {
            SQLite::Statement q(
                *m_db, "SELECT seq, username, device FROM sim_session_ends WHERE seq > ? ORDER BY seq LIMIT ?");
            q.bind(1, static_cast<std::int64_t>(std::min<std::uint64_t>(after, INT64_MAX)));
            q.bind(2, static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
            std::vector<SessionEnd> out;
            while (q.executeStep()) {
                SIM_TRY(const auto device, stored_device_or_all(q.getColumn(2).getInt64()));
                out.push_back(
                    {static_cast<std::uint64_t>(q.getColumn(0).getInt64()), q.getColumn(1).getString(), device});
            }
            return out;
        });
    }

    Result<std::uint64_t> last_session_end() override {
        return locked([&]() -> Result<std::uint64_t> {
            return static_cast<std::uint64_t>(
                m_db->execAndGet("SELECT COALESCE(MAX(seq), 0) FROM sim_session_ends").getInt64());
        });
    }

    Result<std::size_t> purge_expired_tokens(WallTime now) override {
        return locked([&]() -> Result<std::size_t> {
            SQLite::Statement q(*m_db, "DELETE FROM sim_sessions WHERE expires_ms <= ?");
            q.bind(1, to_ms(now));
            return static_cast<std::size_t>(q.exec());
        });
    }

    Result<bool> add_contact(std::string_view user1, std::string_view user2, std::size_t max_per_user) override {
        SIM_TRY(const auto pair, ordered_pair(user1, user2));
        return locked([&]() -> Result<bool> {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            SQLite::Statement found(*m_db, "SELECT 1 FROM sim_contacts WHERE user_a = ? AND user_b = ?");
            found.bind(1, pair.first);
            found.bind(2, pair.second);
            if (found.executeStep()) {
                return true;
            }
            if (!exists(pair.first) || !exists(pair.second)) {
                return no_user();
            }
            if (count_contacts(pair.first) >= max_per_user || count_contacts(pair.second) >= max_per_user) {
                return false;
            }
            SQLite::Statement q(*m_db, "INSERT INTO sim_contacts (user_a, user_b) VALUES (?, ?)");
            q.bind(1, pair.first);
            q.bind(2, pair.second);
            q.exec();
            tx.commit();
            return true;
        });
    }

    Result<std::vector<std::string>> list_contacts(std::string_view username, std::size_t limit) override {
        SIM_TRY_STATUS(check_name(username));
        return locked([&]() -> Result<std::vector<std::string>> {
            SQLite::Statement q(*m_db,
                                "SELECT user_b FROM sim_contacts WHERE user_a = ?1 UNION ALL "
                                "SELECT user_a FROM sim_contacts WHERE user_b = ?1 ORDER BY 1 LIMIT ?2");
            q.bind(1, std::string(username));
            q.bind(2, static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
            std::vector<std::string> out;
            while (q.executeStep()) {
                out.push_back(q.getColumn(0).getString());
            }
            return out;
        });
    }

    Status put_conversation_key(const SealedConversationKey& key) override {
        SIM_TRY(const auto pair, ordered_pair(key.user_a, key.user_b));
        SIM_TRY_STATUS(check_sealed(key.sealed_key));
        SIM_TRY_STATUS(check_epoch(key.epoch));
        return locked([&]() -> Status {
            SQLite::Statement q(*m_db,
                                "INSERT INTO sim_conversation_keys (user_a, user_b, sealed_key, epoch, created_ms) "
                                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_a, user_b) DO UPDATE SET "
                                "sealed_key = excluded.sealed_key, epoch = excluded.epoch, "
                                "created_ms = excluded.created_ms WHERE excluded.epoch > sim_conversation_keys.epoch");
            q.bind(1, pair.first);
            q.bind(2, pair.second);
            q.bind(3, key.sealed_key.data(), static_cast<int>(key.sealed_key.size()));
            q.bind(4, static_cast<std::int64_t>(key.epoch));
            q.bind(5, to_ms(key.created));
            return write_if_newer(q, stale());
        });
    }

    Result<std::optional<SealedConversationKey>> find_conversation_key(std::string_view user1,
                                                                       std::string_view user2) override {
        SIM_TRY(const auto pair, ordered_pair(user1, user2));
        return locked([&]() -> Result<std::optional<SealedConversationKey>> {
            SQLite::Statement q(*m_db,
                                "SELECT sealed_key, epoch, created_ms FROM sim_conversation_keys "
                                "WHERE user_a = ? AND user_b = ?");
            q.bind(1, pair.first);
            q.bind(2, pair.second);
            if (!q.executeStep()) {
                return std::optional<SealedConversationKey>{};
            }
            SealedConversationKey rec;
            rec.user_a = pair.first;
            rec.user_b = pair.second;
            const auto blob = q.getColumn(0);
            const auto* p = static_cast<const std::uint8_t*>(blob.getBlob());
            rec.sealed_key.assign(p, p + blob.getBytes());
            rec.epoch = static_cast<std::uint64_t>(q.getColumn(1).getInt64());
            rec.created = from_ms(q.getColumn(2).getInt64());
            return std::optional<SealedConversationKey>{std::move(rec)};
        });
    }

    Result<bool> delete_conversation_key(std::string_view user1, std::string_view user2) override {
        SIM_TRY(const auto pair, ordered_pair(user1, user2));
        return locked([&]() -> Result<bool> {
            SQLite::Statement q(*m_db, "DELETE FROM sim_conversation_keys WHERE user_a = ? AND user_b = ?");
            q.bind(1, pair.first);
            q.bind(2, pair.second);
            return q.exec() != 0;
        });
    }

    Result<std::size_t> delete_user_conversation_keys(std::string_view username) override {
        return locked([&]() -> Result<std::size_t> {
            SQLite::Statement q(*m_db, "DELETE FROM sim_conversation_keys WHERE user_a = ?1 OR user_b = ?1");
            q.bind(1, std::string(username));
            return static_cast<std::size_t>(q.exec());
        });
    }

    Result<std::size_t> delete_all_conversation_keys() override {
        return locked([&]() -> Result<std::size_t> {
            SQLite::Statement q(*m_db, "DELETE FROM sim_conversation_keys");
            return static_cast<std::size_t>(q.exec());
        });
    }

    Status set_prekeys(std::string_view username, DeviceId device, const PrekeyUpload& upload) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_upload(upload));
        return locked([&]() -> Status {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            const std::string user(username);
            const auto dev = static_cast<std::int64_t>(device);
            SIM_TRY(const auto state, device_state(user, device));
            if (state != DeviceState::active) {
                return no_user();
            }
            SQLite::Statement find(*m_db, "SELECT identity_key FROM sim_prekeys WHERE username = ? AND device = ?");
            find.bind(1, user);
            find.bind(2, dev);
            if (find.executeStep()) {
                if (!upload.replace && blob(find.getColumn(0)) != upload.identity_key) {
                    return identity_differs();
                }
            }
            find.reset();
            if (upload.replace) {
                SQLite::Statement del(*m_db, "DELETE FROM sim_one_time_prekeys WHERE username = ? AND device = ?");
                del.bind(1, user);
                del.bind(2, dev);
                del.exec();
            }
            SQLite::Statement up(*m_db,
                                 "INSERT INTO sim_prekeys (username, device, identity_key, spk_id, spk, spk_sig) "
                                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username, device) DO UPDATE SET "
                                 "identity_key = excluded.identity_key, spk_id = excluded.spk_id, "
                                 "spk = excluded.spk, spk_sig = excluded.spk_sig");
            up.bind(1, user);
            up.bind(2, dev);
            bind_blob(up, 3, upload.identity_key);
            up.bind(4, static_cast<std::int64_t>(upload.signed_prekey_id));
            bind_blob(up, 5, upload.signed_prekey);
            bind_blob(up, 6, upload.signed_prekey_signature);
            up.exec();
            SQLite::Statement opk(*m_db,
                                  "INSERT INTO sim_one_time_prekeys (username, device, key_id, public_key) "
                                  "VALUES (?, ?, ?, ?) ON CONFLICT (username, device, key_id) DO UPDATE SET "
                                  "public_key = excluded.public_key");
            for (const auto& [id, key] : upload.one_time_prekeys) {
                opk.bind(1, user);
                opk.bind(2, dev);
                opk.bind(3, static_cast<std::int64_t>(id));
                bind_blob(opk, 4, key);
                opk.exec();
                opk.reset();
            }
            if (count_opks(user, dev) > max_prekeys_stored) {
                return too_many_prekeys();  // the transaction rolls back
            }
            tx.commit();
            return ok();
        });
    }

    Result<std::optional<e2e::PrekeyBundle>> take_bundle(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        return locked([&]() -> Result<std::optional<e2e::PrekeyBundle>> {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            const std::string user(username);
            const auto dev = static_cast<std::int64_t>(device);
            SQLite::Statement q(*m_db,
                                "SELECT identity_key, spk_id, spk, spk_sig FROM sim_prekeys "
                                "WHERE username = ? AND device = ?");
            q.bind(1, user);
            q.bind(2, dev);
            if (!q.executeStep()) {
                return std::optional<e2e::PrekeyBundle>{};
            }
            e2e::PrekeyBundle b;
            b.identity_key = blob(q.getColumn(0));
            b.signed_prekey_id = static_cast<std::uint32_t>(q.getColumn(1).getInt64());
            b.signed_prekey = blob(q.getColumn(2));
            b.signed_prekey_signature = blob(q.getColumn(3));
            SQLite::Statement opk(*m_db,
                                  "DELETE FROM sim_one_time_prekeys WHERE username = ?1 AND device = ?2 AND "
                                  "key_id = (SELECT min(key_id) FROM sim_one_time_prekeys WHERE username = ?1 "
                                  "AND device = ?2) RETURNING key_id, public_key");
            opk.bind(1, user);
            opk.bind(2, dev);
            if (opk.executeStep()) {
                b.one_time_prekey_id = static_cast<std::uint32_t>(opk.getColumn(0).getInt64());
                b.one_time_prekey = blob(opk.getColumn(1));
                while (opk.executeStep()) {
                }
            }
            tx.commit();
            return std::optional<e2e::PrekeyBundle>{std::move(b)};
        });
    }

    Result<PrekeyStatus> prekey_status(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        return locked([&]() -> Result<PrekeyStatus> {
            PrekeyStatus st;
            const std::string user(username);
            const auto dev = static_cast<std::int64_t>(device);
            SQLite::Statement q(*m_db, "SELECT identity_key FROM sim_prekeys WHERE username = ? AND device = ?");
            q.bind(1, user);
            q.bind(2, dev);
            if (q.executeStep()) {
                st.identity_key = blob(q.getColumn(0));
                st.one_time_count = static_cast<std::uint32_t>(count_opks(user, dev));
            }
            return st;
        });
    }

    Result<DeviceId> add_device(std::string_view username, std::string_view name, WallTime now,
                                WallTime expire_pending_before, std::size_t max_devices) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_new_device(name, max_devices));
        return locked([&]() -> Result<DeviceId> {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            const std::string user(username);
            SQLite::Statement last(*m_db, "SELECT last_device FROM sim_users WHERE username = ?");
            last.bind(1, user);
            if (!last.executeStep()) {
                return no_user();
            }
            SIM_TRY(const DeviceId id, next_device_id(last.getColumn(0).getInt64()));
            last.reset();
            SQLite::Statement expire(*m_db,
                                     "DELETE FROM sim_devices WHERE username = ? AND state = 1 AND created_ms <= ?");
            expire.bind(1, user);
            expire.bind(2, to_ms(expire_pending_before));
            expire.exec();
            SQLite::Statement count(*m_db, "SELECT count(*) FROM sim_devices WHERE username = ? AND state IN (1, 2)");
            count.bind(1, user);
            count.executeStep();
            if (static_cast<std::uint64_t>(count.getColumn(0).getInt64()) >= max_devices) {
                return too_many_devices();  // the transaction rolls back: the expired devices stay too
            }
            count.reset();
            SQLite::Statement bump(*m_db, "UPDATE sim_users SET last_device = ? WHERE username = ?");
            bump.bind(1, static_cast<std::int64_t>(id));
            bump.bind(2, user);
            bump.exec();
            SQLite::Statement add(*m_db,
                                  "INSERT INTO sim_devices (username, device, state, name, device_key, created_ms, "
                                  "linked_ms, last_seen_ms) VALUES (?, ?, 1, ?, X'', ?, 0, 0)");
            add.bind(1, user);
            add.bind(2, static_cast<std::int64_t>(id));
            add.bind(3, std::string(name));
            add.bind(4, to_ms(now));
            add.exec();
            tx.commit();
            return id;
        });
    }

    Status activate_device(std::string_view username, DeviceId device, ByteView device_key, WallTime now) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_device_key(device_key));
        return locked([&]() -> Status {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            const std::string user(username);
            SQLite::Statement q(*m_db, "SELECT state, device_key FROM sim_devices WHERE username = ? AND device = ?");
            q.bind(1, user);
            q.bind(2, static_cast<std::int64_t>(device));
            if (!q.executeStep()) {
                return no_device();
            }
            SIM_TRY(const auto state, stored_state(q.getColumn(0).getInt64()));
            SIM_TRY_STATUS(check_activation(state, blob(q.getColumn(1)), device_key));
            q.reset();
            SQLite::Statement up(*m_db,
                                 "UPDATE sim_devices SET device_key = ?, linked_ms = CASE WHEN state = 1 THEN ? "
                                 "ELSE linked_ms END, state = 2 WHERE username = ? AND device = ?");
            bind_blob(up, 1, device_key);
            up.bind(2, to_ms(now));
            up.bind(3, user);
            up.bind(4, static_cast<std::int64_t>(device));
            up.exec();
            tx.commit();
            return ok();
        });
    }

    Result<bool> remove_device(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        return locked([&]() -> Result<bool> {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            const std::string user(username);
            const auto dev = static_cast<std::int64_t>(device);
            SQLite::Statement q(
                *m_db, "UPDATE sim_devices SET state = 3 WHERE username = ? AND device = ? AND state IN (1, 2)");
            q.bind(1, user);
            q.bind(2, dev);
            if (q.exec() == 0) {
                return false;
            }
            // One-time prekeys go with their sim_prekeys row (ON DELETE CASCADE).
            for (const char* sql : {"DELETE FROM sim_sessions WHERE username = ? AND device = ?",
                                    "DELETE FROM sim_prekeys WHERE username = ? AND device = ?",
                                    "DELETE FROM sim_messages WHERE recipient = ? AND recipient_device = ?"}) {
                SQLite::Statement del(*m_db, sql);
                del.bind(1, user);
                del.bind(2, dev);
                del.exec();
            }
            log_session_end(username, device);
            tx.commit();
            return true;
        });
    }

    Status rename_device(std::string_view username, DeviceId device, std::string_view name) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_device_name(name));
        return locked([&]() -> Status {
            SQLite::Statement q(
                *m_db, "UPDATE sim_devices SET name = ? WHERE username = ? AND device = ? AND state IN (1, 2)");
            q.bind(1, std::string(name));
            q.bind(2, std::string(username));
            q.bind(3, static_cast<std::int64_t>(device));
            if (q.exec() == 0) {
                return no_device();
            }
            return ok();
        });
    }

    Status touch_device(std::string_view username, DeviceId device, WallTime now) override {
        return locked([&]() -> Status {
            SQLite::Statement q(*m_db,
                                "UPDATE sim_devices SET last_seen_ms = ? WHERE username = ? AND device = ? "
                                "AND state IN (1, 2)");
            q.bind(1, to_ms(now));
            q.bind(2, std::string(username));
            q.bind(3, static_cast<std::int64_t>(device));
            q.exec();
            return ok();
        });
    }

    Result<std::vector<DeviceRecord>> list_devices(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        return locked([&]() -> Result<std::vector<DeviceRecord>> {
            SQLite::Statement q(*m_db, std::string(device_columns) + " WHERE username = ? ORDER BY device");
            q.bind(1, std::string(username));
            std::vector<DeviceRecord> out;
            while (q.executeStep()) {
                SIM_TRY(auto d, device_record(username, q));
                out.push_back(std::move(d));
            }
            return out;
        });
    }

    Result<std::optional<DeviceRecord>> find_device(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        return locked([&]() -> Result<std::optional<DeviceRecord>> {
            SQLite::Statement q(*m_db, std::string(device_columns) + " WHERE username = ? AND device = ?");
            q.bind(1, std::string(username));
            q.bind(2, static_cast<std::int64_t>(device));
            if (!q.executeStep()) {
                return std::optional<DeviceRecord>{};
            }
            SIM_TRY(auto d, device_record(username, q));
            return std::optional<DeviceRecord>{std::move(d)};
        });
    }

    Status put_device_list(std::string_view username, const StoredDeviceList& list) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_device_list(list));
        return locked([&]() -> Status {
            SQLite::Statement q(*m_db,
                                "INSERT INTO sim_device_lists (username, version, signed_list) VALUES (?, ?, ?) "
                                "ON CONFLICT (username) DO UPDATE SET version = excluded.version, "
                                "signed_list = excluded.signed_list WHERE excluded.version > sim_device_lists.version");
            q.bind(1, std::string(username));
            q.bind(2, static_cast<std::int64_t>(list.version));
            bind_blob(q, 3, list.signed_list);
            return write_if_newer(q, stale_device_list());
        });
    }

    Result<std::optional<StoredDeviceList>> find_device_list(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        return locked([&]() -> Result<std::optional<StoredDeviceList>> {
            SQLite::Statement q(*m_db, "SELECT version, signed_list FROM sim_device_lists WHERE username = ?");
            q.bind(1, std::string(username));
            if (!q.executeStep()) {
                return std::optional<StoredDeviceList>{};
            }
            return std::optional<StoredDeviceList>{
                StoredDeviceList{static_cast<std::uint64_t>(q.getColumn(0).getInt64()), blob(q.getColumn(1))}};
        });
    }

    Result<Applied> apply(const Changes& changes) override {
        SIM_TRY_STATUS(check_changes(changes));
        return locked([&]() -> Result<Applied> {
            Applied out;
            out.appended.reserve(changes.appends.size());
            out.removed.reserve(changes.removals.size());
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            if (!changes.appends.empty()) {
                SQLite::Statement q(*m_db,
                                    "INSERT INTO sim_messages (recipient, recipient_device, sender, sender_device, "
                                    "message_id, envelope, stored_ms) VALUES (?, ?, ?, ?, ?, ?, ?) "
                                    "ON CONFLICT (recipient, recipient_device, sender, message_id) DO NOTHING");
                for (const auto& m : changes.appends) {
                    q.bind(1, m.recipient);
                    q.bind(2, static_cast<std::int64_t>(m.recipient_device));
                    q.bind(3, m.sender);
                    q.bind(4, static_cast<std::int64_t>(m.sender_device));
                    q.bind(5, m.id.data(), static_cast<int>(m.id.size()));
                    bind_blob(q, 6, m.envelope);
                    q.bind(7, to_ms(m.stored_at));
                    out.appended.push_back(q.exec() != 0);
                    q.reset();
                }
            }
            if (!changes.removals.empty()) {
                SQLite::Statement q(*m_db,
                                    "DELETE FROM sim_messages WHERE recipient = ? AND recipient_device = ? "
                                    "AND sender = ? AND message_id = ? RETURNING length(envelope)");
                for (const auto& r : changes.removals) {
                    StoredUsage gone;
                    for (const auto& id : r.ids) {
                        q.bind(1, r.recipient);
                        q.bind(2, static_cast<std::int64_t>(r.recipient_device));
                        q.bind(3, r.sender);
                        q.bind(4, id.data(), static_cast<int>(id.size()));
                        while (q.executeStep()) {
                            gone += StoredUsage{1, static_cast<std::uint64_t>(q.getColumn(0).getInt64())};
                        }
                        q.reset();
                    }
                    out.removed.push_back(gone);
                }
            }
            tx.commit();  // one fsync for all of it (synchronous = FULL)
            return out;
        });
    }

    Result<std::vector<StoredMessage>> pending(std::string_view recipient, DeviceId device, std::uint64_t after_seq,
                                               std::size_t limit) override {
        SIM_TRY_STATUS(check_name(recipient));
        SIM_TRY_STATUS(check_device(device));
        return locked([&]() -> Result<std::vector<StoredMessage>> {
            SQLite::Statement q(*m_db,
                                "SELECT seq, sender, sender_device, message_id, envelope, stored_ms FROM sim_messages "
                                "WHERE recipient = ? AND recipient_device = ? AND seq > ? ORDER BY seq LIMIT ?");
            q.bind(1, std::string(recipient));
            q.bind(2, static_cast<std::int64_t>(device));
            q.bind(3, static_cast<std::int64_t>(std::min<std::uint64_t>(after_seq, INT64_MAX)));
            q.bind(4, static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
            std::vector<StoredMessage> out;
            while (q.executeStep()) {
                StoredMessage m;
                m.seq = static_cast<std::uint64_t>(q.getColumn(0).getInt64());
                m.recipient = std::string(recipient);
                m.recipient_device = device;
                m.sender = q.getColumn(1).getString();
                SIM_TRY(m.sender_device, stored_device(q.getColumn(2).getInt64()));
                const auto id = blob(q.getColumn(3));
                if (id.size() != m.id.size()) {
                    return Error{Errc::corrupt_database, "stored message id has the wrong size"};
                }
                std::copy(id.begin(), id.end(), m.id.begin());
                m.envelope = blob(q.getColumn(4));
                m.stored_at = from_ms(q.getColumn(5).getInt64());
                out.push_back(std::move(m));
            }
            return out;
        });
    }

    Result<StoredUsage> usage(std::string_view recipient, DeviceId device) override {
        SIM_TRY_STATUS(check_name(recipient));
        SIM_TRY_STATUS(check_device(device));
        return locked([&]() -> Result<StoredUsage> {
            SQLite::Statement q(*m_db,
                                "SELECT count(*), coalesce(sum(length(envelope)), 0) FROM sim_messages "
                                "WHERE recipient = ? AND recipient_device = ?");
            q.bind(1, std::string(recipient));
            q.bind(2, static_cast<std::int64_t>(device));
            q.executeStep();
            return StoredUsage{static_cast<std::uint64_t>(q.getColumn(0).getInt64()),
                               static_cast<std::uint64_t>(q.getColumn(1).getInt64())};
        });
    }

    Result<std::map<std::string, StoredUsage>> usage_by_sender() override {
        return locked([&]() -> Result<std::map<std::string, StoredUsage>> {
            SQLite::Statement q(*m_db,
                                "SELECT sender, count(*), sum(length(envelope)) FROM sim_messages GROUP BY sender");
            std::map<std::string, StoredUsage> out;
            while (q.executeStep()) {
                out[q.getColumn(0).getString()] = StoredUsage{static_cast<std::uint64_t>(q.getColumn(1).getInt64()),
                                                              static_cast<std::uint64_t>(q.getColumn(2).getInt64())};
            }
            return out;
        });
    }

private:
    /// Append a SessionEnd for (`username`, `device`; 0: every device) and drop the entries older than a day
    /// (inside the caller's transaction).
    void log_session_end(std::string_view username, DeviceId device) {
        const std::int64_t now = now_ms();
        SQLite::Statement add(*m_db, "INSERT INTO sim_session_ends (username, device, at_ms) VALUES (?, ?, ?)");
        add.bind(1, std::string(username));
        add.bind(2, static_cast<std::int64_t>(device));
        add.bind(3, now);
        add.exec();
        SQLite::Statement prune(*m_db, "DELETE FROM sim_session_ends WHERE at_ms < ?");
        prune.bind(1, now - session_end_retention_ms);
        prune.exec();
    }

    static constexpr const char* device_columns =
        "SELECT device, state, name, device_key, created_ms, linked_ms, last_seen_ms FROM sim_devices";

    /// A row of device_columns.
    static Result<DeviceRecord> device_record(std::string_view username, SQLite::Statement& q) {
        return device_from_columns(username, q.getColumn(0).getInt64(), q.getColumn(1).getInt64(),
                                   q.getColumn(2).getString(), blob(q.getColumn(3)), q.getColumn(4).getInt64(),
                                   q.getColumn(5).getInt64(), q.getColumn(6).getInt64());
    }

    /// The state of a device, or Errc::user_not_found when there is none.
    Result<DeviceState> device_state(const std::string& user, DeviceId device) {
        SQLite::Statement q(*m_db, "SELECT state FROM sim_devices WHERE username = ? AND device = ?");
        q.bind(1, user);
        q.bind(2, static_cast<std::int64_t>(device));
        if (!q.executeStep()) {
            return no_user();
        }
        return stored_state(q.getColumn(0).getInt64());
    }

    /// Run a statement that counts one failure: ?1 is `now`, ?2 the forget threshold, ?3 `who` (a name or a throttle
    /// key); it returns (failed_count, last_failure_ms) of the row it changed, or nothing when it changed none.
    std::optional<FailureState> count_failure(const char* sql, std::string_view who, WallTime now,
                                              Duration forget_after) {
        SQLite::Statement q(*m_db, sql);
        q.bind(1, to_ms(now));
        q.bind(2, forget_threshold(now, forget_after));
        q.bind(3, std::string(who));
        if (!q.executeStep()) {
            return std::nullopt;
        }
        const auto st = stored_failures(q.getColumn(0).getInt64(), q.getColumn(1).getInt64());
        while (q.executeStep()) {
        }
        return st;
    }

    /// Run an upsert that changes no row when the stored version is not older: Errc::user_not_found when the
    /// account is missing (foreign key), `stale_error` when nothing changed.
    static Status write_if_newer(SQLite::Statement& q, Error stale_error) {
        int changed = 0;
        try {
            changed = q.exec();
        } catch (const SQLite::Exception& e) {
            if (e.getExtendedErrorCode() == SQLITE_CONSTRAINT_FOREIGNKEY) {
                return no_user();
            }
            throw;
        }
        if (changed == 0) {
            return stale_error;
        }
        return ok();
    }

    static Bytes blob(const SQLite::Column& c) {
        const auto* p = static_cast<const std::uint8_t*>(c.getBlob());
        return p == nullptr ? Bytes{} : Bytes(p, p + c.getBytes());
    }

    static void bind_blob(SQLite::Statement& q, int index, ByteView v) {
        q.bind(index, v.data(), static_cast<int>(v.size()));
    }

    std::size_t count_opks(const std::string& user, std::int64_t device) {
        SQLite::Statement q(*m_db, "SELECT count(*) FROM sim_one_time_prekeys WHERE username = ? AND device = ?");
        q.bind(1, user);
        q.bind(2, device);
        q.executeStep();
        return static_cast<std::size_t>(q.getColumn(0).getInt64());
    }

    template <typename Fn>
    auto locked(Fn&& fn) -> decltype(fn()) {
        const std::lock_guard lock(m_mutex);
        return guarded(std::forward<Fn>(fn));
    }

    std::size_t count_contacts(const std::string& user) {
        SQLite::Statement q(*m_db,
                            "SELECT (SELECT count(*) FROM sim_contacts WHERE user_a = ?1) + "
                            "(SELECT count(*) FROM sim_contacts WHERE user_b = ?1)");
        q.bind(1, user);
        q.executeStep();
        return static_cast<std::size_t>(q.getColumn(0).getInt64());
    }

    bool exists(std::string_view username) {
        SQLite::Statement q(*m_db, "SELECT 1 FROM sim_users WHERE username = ?");
        q.bind(1, std::string(username));
        return q.executeStep();
    }

    std::mutex m_mutex;
    std::unique_ptr<SQLite::Database> m_db;
};

}  // namespace

Result<std::unique_ptr<Backend>> open_sqlite_backend(const SqliteConfig& config) {
    if (config.busy_timeout.count() < 0 || config.busy_timeout.count() > std::numeric_limits<int>::max()) {
        return Error{Errc::invalid_argument, "busy_timeout out of range"};
    }
    const bool memory = is_memory_path(config.path);
    if (!memory) {
        SIM_TRY_STATUS(inspect_existing(config));
    }
    return guarded([&]() -> Result<std::unique_ptr<Backend>> {
        auto db = std::make_unique<SQLite::Database>(memory ? std::string(":memory:") : config.path,
                                                     SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE,
                                                     static_cast<int>(config.busy_timeout.count()));
        db->exec("PRAGMA synchronous = FULL");
        db->exec("PRAGMA foreign_keys = ON");
        {
            // All migrations in one transaction: a failure leaves the file as it was. Another process may be
            // migrating at the same time: the version is read again inside the write lock.
            SQLite::Transaction tx(*db, SQLite::TransactionBehavior::IMMEDIATE);
            const auto id = read_sqlite_identity(*db);
            SIM_TRY_STATUS(judge_sqlite_identity(id, sqlite_application_id, schema_version, "libsim database"));
            for (int v = id.version; v < schema_version; ++v) {
                db->exec(sqlite_migrations[static_cast<std::size_t>(v)]);
                db->exec("PRAGMA user_version = " + std::to_string(v + 1));
            }
            tx.commit();
        }
        // WAL only once the file is known to be good (switching rewrites the header). The mode is persistent.
        if (!memory) {
            const auto mode = db->execAndGet("PRAGMA journal_mode = WAL").getString();
            if (mode != "wal") {
                return Error{Errc::storage_error, "sqlite: could not switch to WAL mode"};
            }
        }
        return std::unique_ptr<Backend>(std::make_unique<SqliteBackend>(std::move(db)));
    });
}

}  // namespace sim::store
