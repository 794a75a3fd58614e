// The in-memory backend: tests and embedding. One mutex guards everything.
#include "checks.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

namespace sim::store {
namespace {

using namespace detail;

// A bound on the memory the throttle keys take (the SQL backends keep theirs on disk).
constexpr std::size_t max_throttle_keys = 100000;

// The rule of CredentialStore::record_failure.
FailureState count_failure(FailureState& f, WallTime now, Duration forget_after) {
    const bool restart =
        f.count == 0 || f.last_failure > now || to_ms(f.last_failure) <= forget_threshold(now, forget_after);
    f.count = restart ? 1 : (f.count == UINT32_MAX ? f.count : f.count + 1);
    f.last_failure = now;
    return f;
}

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
        // Device 1, active without a key; create_user takes no time, so its times are 0.
        auto& account = m_accounts[std::string(username)];
        account = Account{};
        account.devices.emplace(
            first_device,
            DeviceRecord{
                std::string(username), first_device, DeviceState::active, {}, {}, WallTime{}, WallTime{}, WallTime{}});
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

    Result<FailureState> record_failure(std::string_view username, WallTime now, Duration forget_after) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        const auto it = m_users.find(std::string(username));
        if (it == m_users.end()) {
            return no_user();
        }
        return count_failure(it->second.failures, now, forget_after);
    }

    Result<FailureState> record_key_failure(std::string_view key, WallTime now, Duration forget_after) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        const std::lock_guard lock(m_mutex);
        auto it = m_throttle.find(key);
        if (it == m_throttle.end()) {
            if (m_throttle.size() >= max_throttle_keys) {
                // Full: forget the key whose last failure is oldest (the closest to being forgotten anyway).
                m_throttle.erase(std::min_element(
                    m_throttle.begin(), m_throttle.end(),
                    [](const auto& a, const auto& b) { return a.second.last_failure < b.second.last_failure; }));
            }
            it = m_throttle.emplace(std::string(key), FailureState{}).first;
        }
        return count_failure(it->second, now, forget_after);
    }

    Result<FailureState> find_key_failures(std::string_view key) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        const std::lock_guard lock(m_mutex);
        const auto it = m_throttle.find(key);
        return it == m_throttle.end() ? FailureState{} : it->second;
    }

    Status clear_key_failures(std::string_view key) override {
        SIM_TRY_STATUS(check_throttle_key(key));
        const std::lock_guard lock(m_mutex);
        if (const auto it = m_throttle.find(key); it != m_throttle.end()) {
            m_throttle.erase(it);
        }
        return ok();
    }

    Result<std::size_t> purge_key_failures(WallTime before) override {
        const std::lock_guard lock(m_mutex);
        return static_cast<std::size_t>(
            std::erase_if(m_throttle, [&](const auto& kv) { return kv.second.last_failure <= before; }));
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
        std::erase_if(m_prekeys, [&](const auto& kv) { return kv.first.first == username; });
        if (const auto it = m_contacts.find(username); it != m_contacts.end()) {
            for (const auto& other : it->second) {
                if (const auto o = m_contacts.find(other); o != m_contacts.end()) {
                    o->second.erase(std::string(username));
                }
            }
            m_contacts.erase(it);
        }
        m_accounts.erase(std::string(username));
        std::erase_if(m_messages, [&](const auto& kv) { return kv.second.recipient == username; });
        // The keys too: a key left behind would make a later append of that message look stored already.
        std::erase_if(m_message_keys, [&](const auto& kv) { return std::get<0>(kv.first) == username; });
        log_session_end(username, 0);
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

    Status put_token(ByteView token_hash, std::string_view username, DeviceId device, WallTime expires) override {
        SIM_TRY_STATUS(check_token_hash(token_hash));
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::lock_guard lock(m_mutex);
        if (active_device(username, device) == nullptr) {
            return no_user();
        }
        const auto [it, inserted] =
            m_tokens.try_emplace(to_bytes(token_hash), SessionRecord{std::string(username), device, expires});
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
        log_session_end(username, 0);
        return static_cast<std::size_t>(
            std::erase_if(m_tokens, [&](const auto& kv) { return kv.second.username == username; }));
    }

    Result<std::vector<SessionEnd>> session_ends_after(std::uint64_t after, std::size_t limit) override {
        const std::lock_guard lock(m_mutex);
        std::vector<SessionEnd> out;
        for (auto it = m_session_ends.upper_bound(after); it != m_session_ends.end() && out.size() < limit; ++it) {
            out.push_back(it->second);
        }
        return out;
    }

    Result<std::uint64_t> last_session_end() override {
        const std::lock_guard lock(m_mutex);
        return m_session_ends.empty() ? std::uint64_t{0} : m_session_ends.rbegin()->first;
    }

    Result<std::size_t> purge_expired_tokens(WallTime now) override {
        const std::lock_guard lock(m_mutex);
        return static_cast<std::size_t>(
            std::erase_if(m_tokens, [&](const auto& kv) { return kv.second.expires <= now; }));
    }

    Result<bool> add_contact(std::string_view user1, std::string_view user2, std::size_t max_per_user) override {
        SIM_TRY(auto pair, ordered_pair(user1, user2));
        const std::lock_guard lock(m_mutex);
        if (m_users.count(pair.first) == 0 || m_users.count(pair.second) == 0) {
            return no_user();
        }
        auto& a = m_contacts[pair.first];
        auto& b = m_contacts[pair.second];
        if (a.count(pair.second) != 0) {
            return true;
        }
        if (a.size() >= max_per_user || b.size() >= max_per_user) {
            return false;
        }
        a.insert(pair.second);
        b.insert(pair.first);
        return true;
    }

    Result<std::vector<std::string>> list_contacts(std::string_view username, std::size_t limit) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        std::vector<std::string> out;
        if (const auto it = m_contacts.find(username); it != m_contacts.end()) {
            for (const auto& c : it->second) {
                if (out.size() >= limit) {
                    break;
                }
                out.push_back(c);
            }
        }
        return out;
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

    Status set_prekeys(std::string_view username, DeviceId device, const PrekeyUpload& upload) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_upload(upload));
        const std::lock_guard lock(m_mutex);
        if (active_device(username, device) == nullptr) {
            return no_user();
        }
        const auto it = m_prekeys.find(PrekeyKey{username, device});
        const bool keep = !upload.replace && it != m_prekeys.end();
        if (keep && it->second.identity != upload.identity_key) {
            return identity_differs();
        }
        auto opks = keep ? it->second.one_time : std::map<std::uint32_t, Bytes>{};
        for (const auto& [id, key] : upload.one_time_prekeys) {
            opks[id] = key;
        }
        if (opks.size() > max_prekeys_stored) {
            return too_many_prekeys();
        }
        m_prekeys[PrekeyKey{username, device}] =
            Prekeys{upload.identity_key, upload.signed_prekey_id, upload.signed_prekey, upload.signed_prekey_signature,
                    std::move(opks)};
        return ok();
    }

    Result<std::optional<e2e::PrekeyBundle>> take_bundle(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::lock_guard lock(m_mutex);
        const auto it = m_prekeys.find(PrekeyKey{username, device});
        if (it == m_prekeys.end()) {
            return std::optional<e2e::PrekeyBundle>{};
        }
        auto& p = it->second;
        e2e::PrekeyBundle b;
        b.identity_key = p.identity;
        b.signed_prekey_id = p.spk_id;
        b.signed_prekey = p.spk;
        b.signed_prekey_signature = p.spk_sig;
        if (!p.one_time.empty()) {
            const auto first = p.one_time.begin();
            b.one_time_prekey_id = first->first;
            b.one_time_prekey = first->second;
            p.one_time.erase(first);
        }
        return std::optional<e2e::PrekeyBundle>{std::move(b)};
    }

    Result<PrekeyStatus> prekey_status(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::lock_guard lock(m_mutex);
        PrekeyStatus st;
        const auto it = m_prekeys.find(PrekeyKey{username, device});
        if (it != m_prekeys.end()) {
            st.identity_key = it->second.identity;
            st.one_time_count = static_cast<std::uint32_t>(it->second.one_time.size());
        }
        return st;
    }

    Result<DeviceId> add_device(std::string_view username, std::string_view name, WallTime now,
                                WallTime expire_pending_before, std::size_t max_devices) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_new_device(name, max_devices));
        const std::lock_guard lock(m_mutex);
        const auto it = m_accounts.find(std::string(username));
        if (it == m_accounts.end()) {
            return no_user();
        }
        auto& devices = it->second.devices;
        const auto expired = [&](const DeviceRecord& d) {
            return d.state == DeviceState::pending && d.created <= expire_pending_before;
        };
        const auto live = std::count_if(devices.begin(), devices.end(), [&](const auto& kv) {
            return kv.second.state != DeviceState::removed && !expired(kv.second);
        });
        if (static_cast<std::size_t>(live) >= max_devices) {
            return too_many_devices();
        }
        SIM_TRY(const DeviceId id, next_device_id(it->second.last_device));
        std::erase_if(devices, [&](const auto& kv) { return expired(kv.second); });
        it->second.last_device = id;
        devices.emplace(
            id,
            DeviceRecord{
                std::string(username), id, DeviceState::pending, std::string(name), {}, now, WallTime{}, WallTime{}});
        return id;
    }

    Status activate_device(std::string_view username, DeviceId device, ByteView device_key, WallTime now) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_device_key(device_key));
        const std::lock_guard lock(m_mutex);
        auto* d = find(username, device);
        if (d == nullptr) {
            return no_device();
        }
        SIM_TRY_STATUS(check_activation(d->state, d->device_key, device_key));
        if (d->state == DeviceState::pending) {
            d->state = DeviceState::active;
            d->linked = now;
        }
        d->device_key = to_bytes(device_key);
        return ok();
    }

    Result<bool> remove_device(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::lock_guard lock(m_mutex);
        auto* d = find(username, device);
        if (d == nullptr || d->state == DeviceState::removed) {
            return false;
        }
        d->state = DeviceState::removed;
        std::erase_if(m_tokens,
                      [&](const auto& kv) { return kv.second.username == username && kv.second.device == device; });
        m_prekeys.erase(PrekeyKey{username, device});
        std::erase_if(m_messages, [&](const auto& kv) {
            return kv.second.recipient == username && kv.second.recipient_device == device;
        });
        std::erase_if(m_message_keys, [&](const auto& kv) {
            return std::get<0>(kv.first) == username && std::get<1>(kv.first) == device;
        });
        log_session_end(username, device);
        return true;
    }

    Status rename_device(std::string_view username, DeviceId device, std::string_view name) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        SIM_TRY_STATUS(check_device_name(name));
        const std::lock_guard lock(m_mutex);
        auto* d = find(username, device);
        if (d == nullptr || d->state == DeviceState::removed) {
            return no_device();
        }
        d->name = std::string(name);
        return ok();
    }

    Status touch_device(std::string_view username, DeviceId device, WallTime now) override {
        const std::lock_guard lock(m_mutex);
        if (auto* d = find(username, device); d != nullptr && d->state != DeviceState::removed) {
            d->last_seen = now;
        }
        return ok();
    }

    Result<std::vector<DeviceRecord>> list_devices(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        std::vector<DeviceRecord> out;
        if (const auto it = m_accounts.find(std::string(username)); it != m_accounts.end()) {
            for (const auto& kv : it->second.devices) {
                out.push_back(kv.second);
            }
        }
        return out;
    }

    Result<std::optional<DeviceRecord>> find_device(std::string_view username, DeviceId device) override {
        SIM_TRY_STATUS(check_user_device(username, device));
        const std::lock_guard lock(m_mutex);
        const auto* d = find(username, device);
        return d == nullptr ? std::optional<DeviceRecord>{} : std::optional<DeviceRecord>{*d};
    }

    Status put_device_list(std::string_view username, const StoredDeviceList& list) override {
        SIM_TRY_STATUS(check_name(username));
        SIM_TRY_STATUS(check_device_list(list));
        const std::lock_guard lock(m_mutex);
        const auto it = m_accounts.find(std::string(username));
        if (it == m_accounts.end()) {
            return no_user();
        }
        auto& stored = it->second.device_list;
        if (stored && stored->version >= list.version) {
            return stale_device_list();
        }
        stored = list;
        return ok();
    }

    Result<std::optional<StoredDeviceList>> find_device_list(std::string_view username) override {
        SIM_TRY_STATUS(check_name(username));
        const std::lock_guard lock(m_mutex);
        const auto it = m_accounts.find(std::string(username));
        return it == m_accounts.end() ? std::optional<StoredDeviceList>{} : it->second.device_list;
    }

    Result<Applied> apply(const Changes& changes) override {
        SIM_TRY_STATUS(check_changes(changes));
        const std::lock_guard lock(m_mutex);
        Applied out;
        out.appended.reserve(changes.appends.size());
        for (const auto& m : changes.appends) {
            const auto [it, inserted] =
                m_message_keys.emplace(MessageKey{m.recipient, m.recipient_device, m.sender, m.id}, m_next_seq);
            out.appended.push_back(inserted);
            if (inserted) {
                auto rec = m;
                rec.seq = m_next_seq++;
                m_messages.emplace(rec.seq, std::move(rec));
            }
        }
        out.removed.reserve(changes.removals.size());
        for (const auto& r : changes.removals) {
            StoredUsage gone;
            for (const auto& id : r.ids) {
                const auto it = m_message_keys.find(MessageKey{r.recipient, r.recipient_device, r.sender, id});
                if (it != m_message_keys.end()) {
                    gone += StoredUsage{1, m_messages.at(it->second).envelope.size()};
                    m_messages.erase(it->second);
                    m_message_keys.erase(it);
                }
            }
            out.removed.push_back(gone);
        }
        return out;
    }

    Result<std::vector<StoredMessage>> pending(std::string_view recipient, DeviceId device, std::uint64_t after_seq,
                                               std::size_t limit) override {
        SIM_TRY_STATUS(check_name(recipient));
        SIM_TRY_STATUS(check_device(device));
        const std::lock_guard lock(m_mutex);
        std::vector<StoredMessage> out;
        for (auto it = m_messages.upper_bound(after_seq); it != m_messages.end() && out.size() < limit; ++it) {
            if (it->second.recipient == recipient && it->second.recipient_device == device) {
                out.push_back(it->second);
            }
        }
        return out;
    }

    Result<StoredUsage> usage(std::string_view recipient, DeviceId device) override {
        SIM_TRY_STATUS(check_name(recipient));
        SIM_TRY_STATUS(check_device(device));
        const std::lock_guard lock(m_mutex);
        StoredUsage u;
        for (const auto& [seq, m] : m_messages) {
            if (m.recipient == recipient && m.recipient_device == device) {
                u += StoredUsage{1, m.envelope.size()};
            }
        }
        return u;
    }

    Result<std::map<std::string, StoredUsage>> usage_by_sender() override {
        const std::lock_guard lock(m_mutex);
        std::map<std::string, StoredUsage> out;
        for (const auto& [seq, m] : m_messages) {
            out[m.sender] += StoredUsage{1, m.envelope.size()};
        }
        return out;
    }

private:
    /// Append a SessionEnd (the newest 10,000 are kept: this store does not outlive its process).
    void log_session_end(std::string_view username, DeviceId device) {
        ++m_session_end_seq;
        m_session_ends.emplace(m_session_end_seq, SessionEnd{m_session_end_seq, std::string(username), device});
        if (m_session_ends.size() > 10'000) {
            m_session_ends.erase(m_session_ends.begin());
        }
    }

    /// The device of an account, or null.
    DeviceRecord* find(std::string_view username, DeviceId device) {
        const auto it = m_accounts.find(std::string(username));
        if (it == m_accounts.end()) {
            return nullptr;
        }
        const auto d = it->second.devices.find(device);
        return d == it->second.devices.end() ? nullptr : &d->second;
    }
    DeviceRecord* active_device(std::string_view username, DeviceId device) {
        auto* d = find(username, device);
        return d != nullptr && d->state == DeviceState::active ? d : nullptr;
    }

    struct Account {
        std::map<DeviceId, DeviceRecord> devices;
        std::int64_t last_device = first_device;  // the highest id ever given (expired pending ones included)
        std::optional<StoredDeviceList> device_list;
    };
    using PrekeyKey = std::pair<std::string, DeviceId>;

    struct Prekeys {
        Bytes identity;
        std::uint32_t spk_id = 0;
        Bytes spk;
        Bytes spk_sig;
        std::map<std::uint32_t, Bytes> one_time;
    };
    // recipient, recipient device, sender, id: a message is stored once per mailbox
    using MessageKey = std::tuple<std::string, DeviceId, std::string, MessageId>;

    std::mutex m_mutex;
    std::map<std::string, UserRecord> m_users;
    std::map<std::string, FailureState, std::less<>> m_throttle;  // throttle keys, at most max_throttle_keys
    std::map<Bytes, SessionRecord> m_tokens;
    std::map<std::pair<std::string, std::string>, SealedConversationKey> m_keys;
    std::map<std::string, std::set<std::string>, std::less<>> m_contacts;  // symmetric
    std::map<PrekeyKey, Prekeys> m_prekeys;
    std::map<std::string, Account> m_accounts;
    std::map<std::uint64_t, StoredMessage> m_messages;  // by seq: store order
    std::map<std::uint64_t, SessionEnd> m_session_ends;
    std::uint64_t m_session_end_seq = 0;
    std::map<MessageKey, std::uint64_t> m_message_keys;
    std::uint64_t m_next_seq = 1;
};

}  // namespace

std::unique_ptr<Backend> make_memory_backend() {
    return std::make_unique<MemoryBackend>();
}

}  // namespace sim::store
