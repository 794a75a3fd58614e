// The stores of the database server backends (MariaDB, PostgreSQL), written once over SqlConnection and
// SqlDialect (sql_backend.h). See docs/accounts.md, "MariaDB / MySQL" and "PostgreSQL".
#include "sql_backend.h"

#include <algorithm>
#include <map>
#include <mutex>

namespace sim::store::detail {

template <typename Fn>
SqlResult SqlConnection::retrying(Fn&& fn) {
    if (!connected()) {
        SIM_TRY_STATUS(connect());
    }
    auto first = fn();
    const auto* e = std::get_if<SqlError>(&first);
    if (m_in_transaction || e == nullptr || e->failure != SqlFailure::connection_lost) {
        return first;
    }
    SIM_TRY_STATUS(connect());
    return fn();
}

SqlResult SqlConnection::run(const char* sql, const std::vector<SqlParam>& params, std::string_view kinds) {
    return retrying([&] { return execute(sql, params, kinds); });
}

SqlResult SqlConnection::control(const char* sql) {
    return retrying([&] { return execute_control(sql); });
}

namespace {

/// The failure of a statement, or SqlFailure::other for success and non-database errors.
SqlFailure failed_with(const SqlResult& r) {
    const auto* e = std::get_if<SqlError>(&r);
    return e != nullptr ? e->failure : SqlFailure::other;
}

std::string_view sv(const std::string& s) {
    return s;
}

/// Integer SQL parameters are signed 64-bit: larger values (a limit of SIZE_MAX, a sequence number no store
/// reaches) saturate.
std::int64_t saturated(std::uint64_t v) {
    return static_cast<std::int64_t>(std::min<std::uint64_t>(v, INT64_MAX));
}

class SqlBackend final : public Backend {
public:
    SqlBackend(const SqlDialect& dialect, std::unique_ptr<SqlConnection> connection)
        : m_sql(dialect), m_conn(std::move(connection)) {}

    std::string_view kind() const noexcept override { return m_conn->kind(); }

    /// Connect and bring the schema to `schema_version` under a server-side lock (several servers may start at
    /// once).
    Status open() {
        const std::lock_guard lock(m_mutex);
        SIM_TRY_STATUS(m_conn->connect());
        SIM_TRY(const auto got, plain(m_conn->run(m_sql.lock_schema, {}, "i")));
        if (got.rows.size() != 1 || got.rows[0][0].is_null || got.rows[0][0].i != 1) {
            return Error{Errc::storage_error, std::string(kind()) + ": could not take the schema lock"};
        }
        auto st = migrate();
        (void)m_conn->run(m_sql.unlock_schema, {}, "i");
        return st;
    }

    Status create_user(std::string_view username, std::string_view password_hash) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_hash(password_hash));
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Status {
            auto r = m_conn->run("INSERT INTO sim_users (username, password_hash) VALUES (?, ?)",
                                 {username, password_hash}, "");
            if (failed_with(r) == SqlFailure::duplicate_key) {
                return Error{Errc::user_exists, "username is taken"};
            }
            SIM_TRY_STATUS(plain(std::move(r)));
            // Device 1, active without a key; create_user takes no time, so its times are 0.
            SIM_TRY_STATUS(
                plain(m_conn->run("INSERT INTO sim_devices (username, device, state, name, device_key, "
                                  "created_ms, linked_ms, last_seen_ms) VALUES (?, 1, 2, '', '', 0, 0, 0)",
                                  {username}, "")));
            return ok();
        });
    }

    Result<std::optional<UserRecord>> find_user(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("SELECT username, password_hash, failed_count, last_failure_ms "
                                                "FROM sim_users WHERE username = ?",
                                                {username}, "bbii")));
        if (r.rows.empty()) {
            return std::optional<UserRecord>{};
        }
        const auto& row = r.rows[0];
        UserRecord rec;
        rec.username = row[0].s;
        rec.password_hash = row[1].s;
        rec.failures = stored_failures(row[2].i, row[3].i);
        return std::optional<UserRecord>{std::move(rec)};
    }

    Result<bool> replace_hash(std::string_view username, std::string_view new_hash,
                              std::optional<std::string_view> expected_old) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_hash(new_hash));
        const std::lock_guard lock(m_mutex);
        SqlOutcome r;
        if (expected_old) {
            SIM_TRY(r, plain(m_conn->run("UPDATE sim_users SET password_hash = ? WHERE username = ? AND "
                                         "password_hash = ?",
                                         {new_hash, username, *expected_old}, "")));
        } else {
            SIM_TRY(r, plain(m_conn->run("UPDATE sim_users SET password_hash = ? WHERE username = ?",
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

    Result<FailureState> record_failure(std::string_view username, WallTime now, Duration forget_after) override {
        SIM_TRY_STATUS(check_name(username));
        const std::int64_t now_ms = to_ms(now);
        const std::int64_t forget_before = forget_threshold(now, forget_after);
        const std::lock_guard lock(m_mutex);
        // One statement: atomic against other connections. MariaDB evaluates SET left to right, so the count is
        // computed from the old last_failure_ms before that column is overwritten.
        SIM_TRY(const auto r, plain(m_conn->run("UPDATE sim_users SET failed_count = CASE WHEN failed_count = 0 OR "
                                                "last_failure_ms > ? OR last_failure_ms <= ? THEN 1 "
                                                "ELSE LEAST(failed_count + 1, 4294967295) END, last_failure_ms = ? "
                                                "WHERE username = ?",
                                                {now_ms, forget_before, now_ms, username}, "")));
        if (r.affected == 0) {
            return no_user();
        }
        SIM_TRY(const auto q, plain(m_conn->run("SELECT failed_count, last_failure_ms FROM sim_users "
                                                "WHERE username = ?",
                                                {username}, "ii")));
        if (q.rows.empty()) {
            return no_user();
        }
        return stored_failures(q.rows[0][0].i, q.rows[0][1].i);
    }

    Status clear_failures(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("UPDATE sim_users SET failed_count = 0, last_failure_ms = 0 "
                                                "WHERE username = ?",
                                                {username}, "")));
        if (r.affected == 0) {
            return no_user();
        }
        return ok();
    }

    Result<FailureState> record_key_failure(std::string_view key, WallTime now, Duration forget_after) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        const std::int64_t now_ms = to_ms(now);
        const std::int64_t forget_before = forget_threshold(now, forget_after);
        const std::lock_guard lock(m_mutex);
        // Each statement is atomic; every failure is counted once, whichever node's insert wins: a key without a
        // row is inserted, and an insert that loses the race to another node counts by the update after it.
        const char* update =
            "UPDATE sim_throttle SET failed_count = CASE WHEN last_failure_ms > ? OR last_failure_ms <= ? THEN 1 "
            "ELSE LEAST(failed_count + 1, 4294967295) END, last_failure_ms = ? WHERE throttle_key = ?";
        SIM_TRY(const auto r, plain(m_conn->run(update, {now_ms, forget_before, now_ms, key}, "")));
        if (r.affected == 0) {
            auto inserted =
                m_conn->run("INSERT INTO sim_throttle (throttle_key, failed_count, last_failure_ms) VALUES (?, 1, ?)",
                            {key, now_ms}, "");
            if (failed_with(inserted) == SqlFailure::duplicate_key) {
                SIM_TRY_STATUS(plain(m_conn->run(update, {now_ms, forget_before, now_ms, key}, "")));
            } else {
                SIM_TRY_STATUS(plain(std::move(inserted)));
            }
        }
        return key_state(key);
    }

    Result<FailureState> find_key_failures(std::string_view key) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        const std::lock_guard lock(m_mutex);
        return key_state(key);
    }

    Status clear_key_failures(std::string_view key) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        const std::lock_guard lock(m_mutex);
        SIM_TRY_STATUS(plain(m_conn->run("DELETE FROM sim_throttle WHERE throttle_key = ?", {key}, "")));
        return ok();
    }

    Result<std::size_t> purge_key_failures(WallTime before) override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r,
                plain(m_conn->run("DELETE FROM sim_throttle WHERE last_failure_ms <= ?", {to_ms(before)}, "")));
        return static_cast<std::size_t>(r.affected);
    }

    Status delete_user(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        // Tokens, conversation keys, prekeys, devices and the device list go by ON DELETE CASCADE; stored messages
        // are deleted here.
        return in_transaction([&]() -> Status {
            SIM_TRY(const auto r, plain(m_conn->run("DELETE FROM sim_users WHERE username = ?", {username}, "")));
            if (r.affected == 0) {
                return no_user();
            }
            SIM_TRY_STATUS(plain(m_conn->run("DELETE FROM sim_messages WHERE recipient = ?", {username}, "")));
            return log_session_end(username, 0);
        });
    }

    Result<std::vector<std::string>> list_users() override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn->run("SELECT username FROM sim_users ORDER BY username", {}, "b")));
        std::vector<std::string> out;
        out.reserve(r.rows.size());
        for (auto& row : r.rows) {
            out.push_back(std::move(row[0].s));
        }
        return out;
    }

    Status put_token(ByteView token_hash, std::string_view username, DeviceId device, WallTime expires) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Status {
            // The device row stays locked until the token is written: a remove_device waits, then deletes it.
            SIM_TRY(const auto state, locked_device_state(username, device));
            if (state != DeviceState::active) {
                return no_user();
            }
            SIM_TRY_STATUS(
                plain(m_conn->run("INSERT INTO sim_sessions (token_hash, username, device, expires_ms) "
                                  "VALUES (?, ?, ?, ?)",
                                  {token_hash, username, std::int64_t{device}, to_ms(expires)}, "")));
            return ok();
        });
    }

    Result<std::optional<SessionRecord>> find_token(ByteView token_hash) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn->run("SELECT username, device, expires_ms FROM sim_sessions WHERE token_hash = ?",
                                          {token_hash}, "bii")));
        if (r.rows.empty()) {
            return std::optional<SessionRecord>{};
        }
        SIM_TRY(const auto device, stored_device(r.rows[0][1].i));
        return std::optional<SessionRecord>{SessionRecord{std::move(r.rows[0][0].s), device, from_ms(r.rows[0][2].i)}};
    }

    Result<bool> revoke_token(ByteView token_hash) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("DELETE FROM sim_sessions WHERE token_hash = ?", {token_hash}, "")));
        return r.affected != 0;
    }

    Result<std::size_t> revoke_user_tokens(std::string_view username) override {
        const std::lock_guard lock(m_mutex);
        std::size_t n = 0;
        SIM_TRY_STATUS(in_transaction([&]() -> Status {
            SIM_TRY(const auto r, plain(m_conn->run("DELETE FROM sim_sessions WHERE username = ?", {username}, "")));
            n = static_cast<std::size_t>(r.affected);
            return log_session_end(username, 0);
        }));
        return n;
    }

    Result<std::vector<SessionEnd>> session_ends_after(std::uint64_t after, std::size_t limit) override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn->run("SELECT seq, username, device FROM sim_session_ends WHERE seq > ? "
                                          "ORDER BY seq LIMIT ?",
                                          {saturated(after), saturated(limit)}, "ibi")));
        std::vector<SessionEnd> out;
        out.reserve(r.rows.size());
        for (auto& row : r.rows) {
            SIM_TRY(const auto device, stored_device_or_all(row[2].i));
            out.push_back({static_cast<std::uint64_t>(row[0].i), std::move(row[1].s), device});
        }
        return out;
    }

    Result<std::uint64_t> last_session_end() override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("SELECT COALESCE(MAX(seq), 0) FROM sim_session_ends", {}, "i")));
        return r.rows.empty() ? std::uint64_t{0} : static_cast<std::uint64_t>(r.rows[0][0].i);
    }

    Result<std::size_t> purge_expired_tokens(WallTime now) override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("DELETE FROM sim_sessions WHERE expires_ms <= ?", {to_ms(now)}, "")));
        return static_cast<std::size_t>(r.affected);
    }

    Result<bool> add_contact(std::string_view user1, std::string_view user2, std::size_t max_per_user) override {
        SIM_TRY(const auto pair, ordered_pair(user1, user2));
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Result<bool> {
            // Both accounts' rows locked until the commit: adds for the same users (any node) take turns, so the
            // count below holds.
            SIM_TRY(const auto users, plain(m_conn->run("SELECT username FROM sim_users WHERE username = ? OR "
                                                        "username = ? FOR UPDATE",
                                                        {sv(pair.first), sv(pair.second)}, "b")));
            if (users.rows.size() != 2) {
                return no_user();
            }
            SIM_TRY(const auto found, plain(m_conn->run("SELECT 1 FROM sim_contacts WHERE user_a = ? AND user_b = ?",
                                                        {sv(pair.first), sv(pair.second)}, "i")));
            if (!found.rows.empty()) {
                return true;
            }
            for (const auto& user : {pair.first, pair.second}) {
                SIM_TRY(const auto n, plain(m_conn->run("SELECT (SELECT COUNT(*) FROM sim_contacts WHERE user_a = ?) + "
                                                        "(SELECT COUNT(*) FROM sim_contacts WHERE user_b = ?)",
                                                        {sv(user), sv(user)}, "i")));
                if (!n.rows.empty() && static_cast<std::uint64_t>(n.rows[0][0].i) >= max_per_user) {
                    return false;
                }
            }
            auto ins = m_conn->run("INSERT INTO sim_contacts (user_a, user_b) VALUES (?, ?)",
                                   {sv(pair.first), sv(pair.second)}, "");
            if (failed_with(ins) == SqlFailure::missing_reference) {
                return no_user();
            }
            SIM_TRY_STATUS(plain(std::move(ins)));
            return true;
        });
    }

    Result<std::vector<std::string>> list_contacts(std::string_view username, std::size_t limit) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn->run("SELECT user_b FROM sim_contacts WHERE user_a = ? UNION ALL "
                                          "SELECT user_a FROM sim_contacts WHERE user_b = ? ORDER BY 1 LIMIT ?",
                                          {username, username, saturated(limit)}, "b")));
        std::vector<std::string> out;
        out.reserve(r.rows.size());
        for (auto& row : r.rows) {
            out.push_back(std::move(row[0].s));
        }
        return out;
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
            SIM_TRY(
                const auto up,
                plain(m_conn->run("UPDATE sim_conversation_keys SET sealed_key = ?, epoch = ?, created_ms = ? "
                                  "WHERE user_a = ? AND user_b = ? AND epoch < ?",
                                  {sealed, epoch, to_ms(key.created), sv(pair.first), sv(pair.second), epoch}, "")));
            if (up.affected != 0) {
                return ok();
            }
            auto ins = m_conn->run(
                "INSERT INTO sim_conversation_keys (user_a, user_b, sealed_key, epoch, created_ms) "
                "VALUES (?, ?, ?, ?, ?)",
                {sv(pair.first), sv(pair.second), sealed, epoch, to_ms(key.created)}, "");
            const auto err = failed_with(ins);
            if (err == SqlFailure::missing_reference) {
                return no_user();
            }
            if (err != SqlFailure::duplicate_key) {
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
        SIM_TRY(auto r, plain(m_conn->run("SELECT sealed_key, epoch, created_ms FROM sim_conversation_keys "
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
        SIM_TRY(const auto r, plain(m_conn->run("DELETE FROM sim_conversation_keys WHERE user_a = ? AND user_b = ?",
                                                {sv(pair.first), sv(pair.second)}, "")));
        return r.affected != 0;
    }

    Result<std::size_t> delete_user_conversation_keys(std::string_view username) override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("DELETE FROM sim_conversation_keys WHERE user_a = ? OR user_b = ?",
                                                {username, username}, "")));
        return static_cast<std::size_t>(r.affected);
    }

    Result<std::size_t> delete_all_conversation_keys() override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("DELETE FROM sim_conversation_keys", {}, "")));
        return static_cast<std::size_t>(r.affected);
    }

    Status set_prekeys(std::string_view username, DeviceId device, const PrekeyUpload& upload) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_upload(upload));
        const std::int64_t dev = device;
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Status {
            SIM_TRY(const auto state, locked_device_state(username, device));
            if (state != DeviceState::active) {
                return no_user();
            }
            SIM_TRY(const auto found, plain(m_conn->run("SELECT identity_key FROM sim_prekeys WHERE username = ? "
                                                        "AND device = ? FOR UPDATE",
                                                        {username, dev}, "b")));
            if (!found.rows.empty() && !upload.replace && bytes_of(found.rows[0][0]) != upload.identity_key) {
                return identity_differs();
            }
            if (upload.replace) {
                SIM_TRY_STATUS(plain(m_conn->run("DELETE FROM sim_one_time_prekeys WHERE username = ? AND device = ?",
                                                 {username, dev}, "")));
            }
            SIM_TRY_STATUS(plain(m_conn->run(
                m_sql.upsert_prekeys,
                {username, dev, ByteView{upload.identity_key}, static_cast<std::int64_t>(upload.signed_prekey_id),
                 ByteView{upload.signed_prekey}, ByteView{upload.signed_prekey_signature}},
                "")));
            for (const auto& [id, key] : upload.one_time_prekeys) {
                SIM_TRY_STATUS(plain(m_conn->run(m_sql.upsert_one_time_prekey,
                                                 {username, dev, static_cast<std::int64_t>(id), ByteView{key}}, "")));
            }
            SIM_TRY(const auto n, count_opks(username, dev));
            if (n > max_prekeys_stored) {
                return too_many_prekeys();  // rolled back
            }
            return ok();
        });
    }

    Result<std::optional<e2e::PrekeyBundle>> take_bundle(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::int64_t dev = device;
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Result<std::optional<e2e::PrekeyBundle>> {
            SIM_TRY(const auto r, plain(m_conn->run("SELECT identity_key, spk_id, spk, spk_sig FROM sim_prekeys "
                                                    "WHERE username = ? AND device = ? FOR UPDATE",
                                                    {username, dev}, "bibb")));
            if (r.rows.empty()) {
                return std::optional<e2e::PrekeyBundle>{};
            }
            e2e::PrekeyBundle b;
            b.identity_key = bytes_of(r.rows[0][0]);
            b.signed_prekey_id = static_cast<std::uint32_t>(r.rows[0][1].i);
            b.signed_prekey = bytes_of(r.rows[0][2]);
            b.signed_prekey_signature = bytes_of(r.rows[0][3]);
            SIM_TRY(const auto o, plain(m_conn->run("SELECT key_id, public_key FROM sim_one_time_prekeys "
                                                    "WHERE username = ? AND device = ? ORDER BY key_id LIMIT 1 "
                                                    "FOR UPDATE",
                                                    {username, dev}, "ib")));
            if (!o.rows.empty()) {
                const auto id = o.rows[0][0].i;
                SIM_TRY_STATUS(
                    plain(m_conn->run("DELETE FROM sim_one_time_prekeys WHERE username = ? AND device = ? "
                                      "AND key_id = ?",
                                      {username, dev, id}, "")));
                b.one_time_prekey_id = static_cast<std::uint32_t>(id);
                b.one_time_prekey = bytes_of(o.rows[0][1]);
            }
            return std::optional<e2e::PrekeyBundle>{std::move(b)};
        });
    }

    Result<PrekeyStatus> prekey_status(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::int64_t dev = device;
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r,
                plain(m_conn->run("SELECT identity_key FROM sim_prekeys WHERE username = ? AND device = ?",
                                  {username, dev}, "b")));
        PrekeyStatus st;
        if (!r.rows.empty()) {
            st.identity_key = bytes_of(r.rows[0][0]);
            SIM_TRY(const auto n, count_opks(username, dev));
            st.one_time_count = static_cast<std::uint32_t>(n);
        }
        return st;
    }

    Result<DeviceId> add_device(std::string_view username, std::string_view name, WallTime now,
                                WallTime expire_pending_before, std::size_t max_devices) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_new_device(name, max_devices));
        const std::string device_name(name);  // never a null pointer, which libpq would send as NULL
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Result<DeviceId> {
            SIM_TRY(const auto last, locked_last_device(username));
            if (!last) {
                return no_user();
            }
            SIM_TRY(const DeviceId id, next_device_id(*last));
            SIM_TRY_STATUS(
                plain(m_conn->run("DELETE FROM sim_devices WHERE username = ? AND state = 1 AND "
                                  "created_ms <= ?",
                                  {username, to_ms(expire_pending_before)}, "")));
            SIM_TRY(const auto n, plain(m_conn->run("SELECT COUNT(*) FROM sim_devices WHERE username = ? AND "
                                                    "state IN (1, 2)",
                                                    {username}, "i")));
            if (!n.rows.empty() && static_cast<std::uint64_t>(n.rows[0][0].i) >= max_devices) {
                return too_many_devices();  // rolled back: the expired devices stay too
            }
            SIM_TRY_STATUS(plain(m_conn->run("UPDATE sim_users SET last_device = ? WHERE username = ?",
                                             {std::int64_t{id}, username}, "")));
            SIM_TRY_STATUS(
                plain(m_conn->run("INSERT INTO sim_devices (username, device, state, name, device_key, "
                                  "created_ms, linked_ms, last_seen_ms) VALUES (?, ?, 1, ?, '', ?, 0, 0)",
                                  {username, std::int64_t{id}, sv(device_name), to_ms(now)}, "")));
            return id;
        });
    }

    Status activate_device(std::string_view username, DeviceId device, ByteView device_key, WallTime now) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_device_key(device_key));
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Status {
            SIM_TRY(const auto r, plain(m_conn->run("SELECT state, device_key FROM sim_devices WHERE username = ? "
                                                    "AND device = ? FOR UPDATE",
                                                    {username, std::int64_t{device}}, "ib")));
            if (r.rows.empty()) {
                return no_device();
            }
            SIM_TRY(const auto state, stored_state(r.rows[0][0].i));
            SIM_TRY_STATUS(check_activation(state, bytes_of(r.rows[0][1]), device_key));
            // MariaDB assigns left to right: linked_ms reads the old state.
            SIM_TRY_STATUS(
                plain(m_conn->run("UPDATE sim_devices SET device_key = ?, linked_ms = CASE WHEN state = 1 "
                                  "THEN ? ELSE linked_ms END, state = 2 WHERE username = ? AND device = ?",
                                  {device_key, to_ms(now), username, std::int64_t{device}}, "")));
            return ok();
        });
    }

    Result<bool> remove_device(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::int64_t dev = device;
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Result<bool> {
            SIM_TRY(const auto r, plain(m_conn->run("UPDATE sim_devices SET state = 3 WHERE username = ? AND "
                                                    "device = ? AND state IN (1, 2)",
                                                    {username, dev}, "")));
            if (r.affected == 0) {
                return false;
            }
            // One-time prekeys go with their sim_prekeys row (ON DELETE CASCADE).
            for (const char* sql : {"DELETE FROM sim_sessions WHERE username = ? AND device = ?",
                                    "DELETE FROM sim_prekeys WHERE username = ? AND device = ?",
                                    "DELETE FROM sim_messages WHERE recipient = ? AND recipient_device = ?"}) {
                SIM_TRY_STATUS(plain(m_conn->run(sql, {username, dev}, "")));
            }
            SIM_TRY_STATUS(log_session_end(username, device));
            return true;
        });
    }

    Status rename_device(std::string_view username, DeviceId device, std::string_view name) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_device_name(name));
        const std::string device_name(name);
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("UPDATE sim_devices SET name = ? WHERE username = ? AND device = ? "
                                                "AND state IN (1, 2)",
                                                {sv(device_name), username, std::int64_t{device}}, "")));
        if (r.affected == 0) {
            return no_device();
        }
        return ok();
    }

    Status touch_device(std::string_view username, DeviceId device, WallTime now) override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY_STATUS(
            plain(m_conn->run("UPDATE sim_devices SET last_seen_ms = ? WHERE username = ? AND device = ? "
                              "AND state IN (1, 2)",
                              {to_ms(now), username, std::int64_t{device}}, "")));
        return ok();
    }

    Result<std::vector<DeviceRecord>> list_devices(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn->run("SELECT device, state, name, device_key, created_ms, linked_ms, "
                                          "last_seen_ms FROM sim_devices WHERE username = ? ORDER BY device",
                                          {username}, "iibbiii")));
        std::vector<DeviceRecord> out;
        out.reserve(r.rows.size());
        for (auto& row : r.rows) {
            SIM_TRY(auto d, device_record(username, row));
            out.push_back(std::move(d));
        }
        return out;
    }

    Result<std::optional<DeviceRecord>> find_device(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(auto r, plain(m_conn->run("SELECT device, state, name, device_key, created_ms, linked_ms, "
                                          "last_seen_ms FROM sim_devices WHERE username = ? AND device = ?",
                                          {username, std::int64_t{device}}, "iibbiii")));
        if (r.rows.empty()) {
            return std::optional<DeviceRecord>{};
        }
        SIM_TRY(auto d, device_record(username, r.rows[0]));
        return std::optional<DeviceRecord>{std::move(d)};
    }

    Status put_device_list(std::string_view username, const StoredDeviceList& list) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_device_list(list));
        const auto version = static_cast<std::int64_t>(list.version);
        const ByteView signed_list{list.signed_list};
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Status {
            SIM_TRY(const auto last, locked_last_device(username));  // the account's row serialises its writers
            if (!last) {
                return no_user();
            }
            SIM_TRY(const auto r,
                    plain(m_conn->run("SELECT version FROM sim_device_lists WHERE username = ?", {username}, "i")));
            if (!r.rows.empty() && r.rows[0][0].i >= version) {
                return stale_device_list();
            }
            SIM_TRY_STATUS(plain(
                r.rows.empty()
                    ? m_conn->run("INSERT INTO sim_device_lists (username, version, signed_list) VALUES (?, ?, ?)",
                                  {username, version, signed_list}, "")
                    : m_conn->run("UPDATE sim_device_lists SET version = ?, signed_list = ? WHERE username = ?",
                                  {version, signed_list, username}, "")));
            return ok();
        });
    }

    Result<std::optional<StoredDeviceList>> find_device_list(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run("SELECT version, signed_list FROM sim_device_lists WHERE username = ?",
                                                {username}, "ib")));
        if (r.rows.empty()) {
            return std::optional<StoredDeviceList>{};
        }
        return std::optional<StoredDeviceList>{
            StoredDeviceList{static_cast<std::uint64_t>(r.rows[0][0].i), bytes_of(r.rows[0][1])}};
    }

    Result<Applied> apply(const Changes& changes) override {
        SIM_TRY_STATUS(check_changes(changes));
        const std::lock_guard lock(m_mutex);
        return in_transaction([&]() -> Result<Applied> {
            Applied out;
            out.appended.reserve(changes.appends.size());
            for (const auto& m : changes.appends) {
                SIM_TRY(const auto r, plain(m_conn->run(m_sql.insert_message_once,
                                                        {sv(m.recipient), std::int64_t{m.recipient_device},
                                                         sv(m.sender), std::int64_t{m.sender_device}, ByteView{m.id},
                                                         ByteView{m.envelope}, to_ms(m.stored_at)},
                                                        "")));
                out.appended.push_back(r.affected != 0);
            }
            out.removed.reserve(changes.removals.size());
            for (const auto& removal : changes.removals) {
                StoredUsage gone;
                for (const auto& id : removal.ids) {
                    SIM_TRY(const auto r,
                            plain(m_conn->run("DELETE FROM sim_messages WHERE recipient = ? AND recipient_device = ? "
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
        SIM_TRY(auto r, plain(m_conn->run("SELECT seq, sender, sender_device, message_id, envelope, stored_ms "
                                          "FROM sim_messages WHERE recipient = ? AND recipient_device = ? AND seq > ? "
                                          "ORDER BY seq LIMIT ?",
                                          {recipient, std::int64_t{device}, saturated(after_seq), saturated(limit)},
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
        SIM_TRY(const auto r, plain(m_conn->run(m_sql.usage, {recipient, std::int64_t{device}}, "ii")));
        if (r.rows.empty()) {
            return StoredUsage{};
        }
        return StoredUsage{static_cast<std::uint64_t>(r.rows[0][0].i), static_cast<std::uint64_t>(r.rows[0][1].i)};
    }

    Result<std::map<std::string, StoredUsage>> usage_by_sender() override {
        const std::lock_guard lock(m_mutex);
        SIM_TRY(const auto r, plain(m_conn->run(m_sql.usage_by_sender, {}, "bii")));
        std::map<std::string, StoredUsage> out;
        for (const auto& row : r.rows) {
            out[row[0].s] = StoredUsage{static_cast<std::uint64_t>(row[1].i), static_cast<std::uint64_t>(row[2].i)};
        }
        return out;
    }

private:
    static Bytes bytes_of(const SqlValue& v) { return Bytes(v.s.begin(), v.s.end()); }

    Result<std::size_t> count_opks(std::string_view username, std::int64_t device) {
        SIM_TRY(const auto r, plain(m_conn->run("SELECT COUNT(*) FROM sim_one_time_prekeys WHERE username = ? "
                                                "AND device = ?",
                                                {username, device}, "i")));
        return r.rows.empty() ? std::size_t{0} : static_cast<std::size_t>(r.rows[0][0].i);
    }

    /// Run `fn` (statements of m_conn) in one transaction: committed when it succeeds, rolled back otherwise.
    /// A connection lost inside is an error (not retried: the transaction is gone with it). Caller holds m_mutex.
    template <typename Fn>
    auto in_transaction(Fn&& fn) -> decltype(fn()) {
        SIM_TRY_STATUS(plain(m_conn->control("START TRANSACTION")));
        m_conn->set_in_transaction(true);
        auto result = fn();
        if (result) {
            if (auto st = plain(m_conn->control("COMMIT")); !st) {
                result = st.error();
            }
        } else {
            (void)m_conn->control("ROLLBACK");
        }
        m_conn->set_in_transaction(false);
        return result;
    }

    /// Append a SessionEnd for (`username`, `device`; 0: every device) and drop the entries older than a day
    /// (inside the caller's transaction).
    Status log_session_end(std::string_view username, DeviceId device) {
        const std::int64_t now = now_ms();
        SIM_TRY_STATUS(plain(m_conn->run("INSERT INTO sim_session_ends (username, device, at_ms) VALUES (?, ?, ?)",
                                         {username, std::int64_t{device}, now}, "")));
        SIM_TRY_STATUS(
            plain(m_conn->run("DELETE FROM sim_session_ends WHERE at_ms < ?", {now - session_end_retention_ms}, "")));
        return ok();
    }

    /// The state of a device, its row locked until the transaction ends; Errc::user_not_found when there is none.
    Result<DeviceState> locked_device_state(std::string_view username, DeviceId device) {
        SIM_TRY(const auto r, plain(m_conn->run("SELECT state FROM sim_devices WHERE username = ? AND device = ? "
                                                "FOR UPDATE",
                                                {username, std::int64_t{device}}, "i")));
        if (r.rows.empty()) {
            return no_user();
        }
        return stored_state(r.rows[0][0].i);
    }

    /// The highest device id the account ever used, its sim_users row locked until the transaction ends; empty
    /// when there is no such account.
    Result<std::optional<std::int64_t>> locked_last_device(std::string_view username) {
        SIM_TRY(const auto r,
                plain(m_conn->run("SELECT last_device FROM sim_users WHERE username = ? FOR UPDATE", {username}, "i")));
        if (r.rows.empty()) {
            return std::optional<std::int64_t>{};
        }
        return std::optional<std::int64_t>{r.rows[0][0].i};
    }

    /// A row of device_columns.
    static Result<DeviceRecord> device_record(std::string_view username, SqlRow& row) {
        return device_from_columns(username, row[0].i, row[1].i, std::move(row[2].s), bytes_of(row[3]), row[4].i,
                                   row[5].i, row[6].i);
    }

    Result<bool> exists(std::string_view username) {
        SIM_TRY(const auto r, plain(m_conn->run("SELECT 1 FROM sim_users WHERE username = ?", {username}, "i")));
        return !r.rows.empty();
    }

    Result<bool> table_exists(std::string_view table) {
        SIM_TRY(const auto r, plain(m_conn->run(m_sql.table_exists, {table}, "i")));
        return !r.rows.empty() && r.rows[0][0].i != 0;
    }

    Status migrate() {
        int version = 0;
        SIM_TRY(const bool has_meta, table_exists("sim_meta"));
        if (has_meta) {
            SIM_TRY(const auto r, plain(m_conn->run("SELECT schema_version FROM sim_meta WHERE id = 1", {}, "i")));
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
        while (version < schema_version) {
            const auto step = std::find_if(m_sql.schema.begin(), m_sql.schema.end(),
                                           [&](const SchemaStep& s) { return s.from == version; });
            if (step == m_sql.schema.end()) {
                return Error{Errc::corrupt_database,
                             "no upgrade from " + std::string(kind()) + " schema version " + std::to_string(version)};
            }
            for (const char* sql : step->statements) {
                SIM_TRY_STATUS(plain(m_conn->run(sql, {}, "")));
            }
            SIM_TRY_STATUS(plain(m_conn->run(m_sql.write_version, {std::int64_t{step->to}}, "")));
            version = step->to;
        }
        return ok();
    }

    /// A run() outcome as a Result, database errors mapped generically.
    /// The stored state of a throttle key (count 0 without a row). Call with m_mutex held.
    Result<FailureState> key_state(std::string_view key) {
        SIM_TRY(const auto q, plain(m_conn->run("SELECT failed_count, last_failure_ms FROM sim_throttle "
                                                "WHERE throttle_key = ?",
                                                {key}, "ii")));
        if (q.rows.empty()) {
            return FailureState{};
        }
        return stored_failures(q.rows[0][0].i, q.rows[0][1].i);
    }

    Result<SqlOutcome> plain(SqlResult&& r) const {
        if (auto* o = std::get_if<SqlOutcome>(&r)) {
            return std::move(*o);
        }
        if (auto* e = std::get_if<Error>(&r)) {
            return std::move(*e);
        }
        const auto& e = std::get<SqlError>(r);
        const char* what =
            e.failure == SqlFailure::connection_lost ? ": connection lost (error " : ": statement failed (error ";
        return Error{Errc::storage_error, std::string(kind()) + what + e.code + ")"};
    }

    const SqlDialect& m_sql;
    std::mutex m_mutex;
    std::unique_ptr<SqlConnection> m_conn;  // used under m_mutex only
};
}  // namespace

Result<std::unique_ptr<Backend>> open_sql_backend(const SqlDialect* dialect, Result<SqlUrl> url,
                                                  std::string_view library) {
    SIM_TRY(auto params, std::move(url));
    if (dialect == nullptr) {
        return Error{Errc::not_implemented, "this libsim was built without " + std::string(library)};
    }
    auto backend = std::make_unique<SqlBackend>(*dialect, dialect->make_connection(std::move(params)));
    SIM_TRY_STATUS(backend->open());
    return std::unique_ptr<Backend>(std::move(backend));
}

}  // namespace sim::store::detail

namespace sim::store {
namespace {

// The dialects this libsim was built with; null for the others.
struct Dialects {
    const detail::SqlDialect* mariadb;
    const detail::SqlDialect* postgres;
};
constexpr Dialects built{
#ifdef SIM_HAVE_MARIADB
    &detail::mariadb_dialect,
#else
    nullptr,
#endif
#ifdef SIM_HAVE_POSTGRES
    &detail::postgres_dialect,
#else
    nullptr,
#endif
};

// A function, not `built.x != nullptr` inline: GCC's -Waddress objects to comparing a known address with null.
bool present(const detail::SqlDialect* dialect) {
    return dialect != nullptr;
}

}  // namespace

bool have_mariadb() noexcept {
    return present(built.mariadb);
}

bool have_postgres() noexcept {
    return present(built.postgres);
}

Result<std::unique_ptr<Backend>> open_mariadb_backend(const MariaDbConfig& config) {
    return detail::open_sql_backend(built.mariadb, detail::parse_mariadb_url(config.url), "MariaDB Connector/C");
}

Result<std::unique_ptr<Backend>> open_postgres_backend(const PostgresConfig& config) {
    return detail::open_sql_backend(built.postgres, detail::parse_postgres_url(config.url), "libpq");
}

}  // namespace sim::store
