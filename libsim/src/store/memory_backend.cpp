// The in-memory backend: tests and embedding. One mutex guards everything.
#include "checks.h"

#include <map>
#include <mutex>

namespace sim::store {
namespace {

using namespace detail;

class MemoryBackend final : public Backend {
public:
    std::string_view kind() const noexcept override { return "memory"; }

    Status create_user(std::string_view username, std::string_view password_hash) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_hash(password_hash));
        const std::lock_guard lock(m_mutex);
        const auto [it, inserted] = m_users.try_emplace(
            std::string(username), UserRecord{std::string(username), std::string(password_hash), {}});
        if (!inserted) {
            return Error{Errc::user_exists, "username is taken"};
        }
        return ok();
    }

    Result<std::optional<UserRecord>> find_user(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        const auto it = m_users.find(std::string(username));
        if (it == m_users.end()) {
            return std::optional<UserRecord>{};
        }
        return std::optional<UserRecord>{it->second};
    }

    Result<bool> replace_hash(std::string_view username, std::string_view new_hash,
                              std::optional<std::string_view> expected_old) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_hash(new_hash));
        const std::lock_guard lock(m_mutex);
        const auto it = m_users.find(std::string(username));
        if (it == m_users.end()) {
            return no_user();
        }
        if (expected_old && it->second.password_hash != *expected_old) {
            return false;
        }
        it->second.password_hash = std::string(new_hash);
        return true;
    }

    Result<FailureState> record_failure(std::string_view username, TimePoint now, Duration forget_after) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        const auto it = m_users.find(std::string(username));
        if (it == m_users.end()) {
            return no_user();
        }
        auto& f = it->second.failures;
        const bool restart =
            f.count == 0 || f.last_failure > now || to_ns(f.last_failure) <= forget_threshold(now, forget_after);
        f.count = restart ? 1 : f.count + 1;
        f.last_failure = now;
        return f;
    }

    Status clear_failures(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        const auto it = m_users.find(std::string(username));
        if (it == m_users.end()) {
            return no_user();
        }
        it->second.failures = {};
        return ok();
    }

    Status delete_user(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        if (m_users.erase(std::string(username)) == 0) {
            return no_user();
        }
        std::erase_if(m_tokens, [&](const auto& kv) { return kv.second.username == username; });
        std::erase_if(m_keys,
                      [&](const auto& kv) { return kv.first.first == username || kv.first.second == username; });
        return ok();
    }

    Result<std::vector<std::string>> list_users() override {
        const std::lock_guard lock(m_mutex);
        std::vector<std::string> out;
        out.reserve(m_users.size());
        for (const auto& kv : m_users) {
            out.push_back(kv.first);
        }
        return out;
    }

    Status put_token(ByteView token_hash, std::string_view username, WallTime expires) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        if (m_users.count(std::string(username)) == 0) {
            return no_user();
        }
        const auto [it, inserted] =
            m_tokens.try_emplace(to_bytes(token_hash), SessionRecord{std::string(username), expires});
        if (!inserted) {
            return Error{Errc::storage_error, "duplicate token hash"};
        }
        return ok();
    }

    Result<std::optional<SessionRecord>> find_token(ByteView token_hash) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        const std::lock_guard lock(m_mutex);
        const auto it = m_tokens.find(to_bytes(token_hash));
        if (it == m_tokens.end()) {
            return std::optional<SessionRecord>{};
        }
        return std::optional<SessionRecord>{it->second};
    }

    Result<bool> revoke_token(ByteView token_hash) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        const std::lock_guard lock(m_mutex);
        return m_tokens.erase(to_bytes(token_hash)) != 0;
    }

    Result<std::size_t> revoke_user_tokens(std::string_view username) override {
        const std::lock_guard lock(m_mutex);
        return static_cast<std::size_t>(
            std::erase_if(m_tokens, [&](const auto& kv) { return kv.second.username == username; }));
    }

    Result<std::size_t> purge_expired_tokens(WallTime now) override {
        const std::lock_guard lock(m_mutex);
        return static_cast<std::size_t>(
            std::erase_if(m_tokens, [&](const auto& kv) { return kv.second.expires <= now; }));
    }

    Status put_conversation_key(const SealedConversationKey& key) override {
        SIM_TRY(auto pair, ordered_pair(key.user_a, key.user_b));
        SIM_TRY_STATUS(check_sealed(key.sealed_key));
        SIM_TRY_STATUS(check_epoch(key.epoch));
        const std::lock_guard lock(m_mutex);
        if (m_users.count(pair.first) == 0 || m_users.count(pair.second) == 0) {
            return no_user();
        }
        auto rec = key;
        rec.user_a = pair.first;
        rec.user_b = pair.second;
        const auto it = m_keys.find(pair);
        if (it != m_keys.end()) {
            if (it->second.epoch >= key.epoch) {
                return stale();
            }
            it->second = std::move(rec);
            return ok();
        }
        m_keys.emplace(std::move(pair), std::move(rec));
        return ok();
    }

    Result<std::optional<SealedConversationKey>> find_conversation_key(std::string_view user1,
                                                                       std::string_view user2) override {
        SIM_TRY(const auto pair, ordered_pair(user1, user2));
        const std::lock_guard lock(m_mutex);
        const auto it = m_keys.find(pair);
        if (it == m_keys.end()) {
            return std::optional<SealedConversationKey>{};
        }
        return std::optional<SealedConversationKey>{it->second};
    }

    Result<bool> delete_conversation_key(std::string_view user1, std::string_view user2) override {
        SIM_TRY(const auto pair, ordered_pair(user1, user2));
        const std::lock_guard lock(m_mutex);
        return m_keys.erase(pair) != 0;
    }

    Result<std::size_t> delete_user_conversation_keys(std::string_view username) override {
        const std::lock_guard lock(m_mutex);
        return static_cast<std::size_t>(std::erase_if(
            m_keys, [&](const auto& kv) { return kv.first.first == username || kv.first.second == username; }));
    }

    Result<std::size_t> delete_all_conversation_keys() override {
        const std::lock_guard lock(m_mutex);
        const auto n = m_keys.size();
        m_keys.clear();
        return n;
    }

private:
    std::mutex m_mutex;
    std::map<std::string, UserRecord> m_users;
    std::map<Bytes, SessionRecord> m_tokens;
    std::map<std::pair<std::string, std::string>, SealedConversationKey> m_keys;
};

}  // namespace

std::unique_ptr<Backend> make_memory_backend() {
    return std::make_unique<MemoryBackend>();
}

}  // namespace sim::store
