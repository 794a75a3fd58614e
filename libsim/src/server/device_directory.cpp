#include "device_directory.h"

#include <algorithm>

namespace sim::server_detail {

DeviceDirectory::DeviceDirectory(store::DeviceStore* store, const Clock& clock, Options options)
    : m_store(store), m_clock(clock), m_options(options) {}

bool DeviceDirectory::fresh_locked(const Entry& e) const {
    return e.devices.has_value() && (e.pins > 0 || m_clock.now() - e.read_at < m_options.unpinned_ttl);
}

Result<std::vector<DeviceId>> DeviceDirectory::devices(const std::string& user) {
    if (m_store == nullptr) {
        return std::vector<DeviceId>{first_device};
    }
    std::uint64_t seen = 0;
    {
        const std::lock_guard lock(m_mutex);
        auto [it, created] = m_entries.try_emplace(user);
        if (!created && fresh_locked(it->second)) {
            return *it->second.devices;
        }
        if (created) {
            it->second.change = ++m_changes;
        }
        seen = it->second.change;
    }
    return load(user, seen);
}

Result<std::vector<DeviceId>> DeviceDirectory::refresh(const std::string& user) {
    if (m_store == nullptr) {
        return std::vector<DeviceId>{first_device};
    }
    std::uint64_t seen = 0;
    {
        const std::lock_guard lock(m_mutex);
        auto& e = m_entries[user];
        e.devices.reset();
        e.change = ++m_changes;
        seen = e.change;
    }
    return load(user, seen);
}

std::optional<std::vector<DeviceId>> DeviceDirectory::cached(const std::string& user) {
    if (m_store == nullptr) {
        return std::vector<DeviceId>{first_device};
    }
    const std::lock_guard lock(m_mutex);
    const auto it = m_entries.find(user);
    if (it == m_entries.end() || !fresh_locked(it->second)) {
        return std::nullopt;
    }
    return it->second.devices;
}

Status DeviceDirectory::pin(const std::string& user) {
    if (m_store == nullptr) {
        return {};
    }
    std::uint64_t seen = 0;
    {
        const std::lock_guard lock(m_mutex);
        auto [it, created] = m_entries.try_emplace(user);
        ++it->second.pins;
        if (!created && it->second.devices) {
            return {};  // pinned entries do not expire: one read at the first login is enough
        }
        if (created) {
            it->second.change = ++m_changes;
        }
        seen = it->second.change;
    }
    SIM_TRY_STATUS(load(user, seen));
    return {};
}

void DeviceDirectory::unpin(const std::string& user) {
    if (m_store == nullptr) {
        return;
    }
    const std::lock_guard lock(m_mutex);
    const auto it = m_entries.find(user);
    if (it == m_entries.end() || it->second.pins == 0) {
        return;
    }
    if (--it->second.pins == 0) {
        it->second.read_at = m_clock.now();  // believed for unpinned_ttl from now, like a fresh look-up
        trim_locked();
    }
}

void DeviceDirectory::forget(const std::string& user) {
    if (m_store == nullptr) {
        return;
    }
    const std::lock_guard lock(m_mutex);
    const auto it = m_entries.find(user);
    if (it == m_entries.end()) {
        return;
    }
    it->second.devices.reset();
    it->second.change = ++m_changes;
    if (it->second.pins == 0) {
        m_entries.erase(it);
    }
}

std::size_t DeviceDirectory::size() {
    const std::lock_guard lock(m_mutex);
    return m_entries.size();
}

Result<std::vector<DeviceId>> DeviceDirectory::load(const std::string& user, std::uint64_t change) {
    auto records = m_store->list_devices(user);
    if (!records) {
        return Error{Errc::storage_error, "devices not read: " + records.error().message()};
    }
    std::vector<DeviceId> active;
    for (const auto& r : *records) {
        if (r.state == store::DeviceState::active) {
            active.push_back(r.device);
        }
    }
    std::sort(active.begin(), active.end());
    if (active.empty()) {
        active.push_back(first_device);  // a name without an account: the checks after this one refuse it
    }
    const std::lock_guard lock(m_mutex);
    const auto it = m_entries.find(user);
    if (it != m_entries.end() && it->second.change == change) {
        it->second.devices = active;
        it->second.read_at = m_clock.now();
        trim_locked();
    }
    return active;
}

void DeviceDirectory::trim_locked() {
    std::size_t pinned = 0;
    for (const auto& [user, e] : m_entries) {
        pinned += e.pins > 0 ? 1 : 0;
    }
    if (m_entries.size() - pinned <= m_options.max_unpinned) {
        return;
    }
    const auto now = m_clock.now();
    std::vector<std::pair<TimePoint, std::string>> unpinned;
    for (auto it = m_entries.begin(); it != m_entries.end();) {
        if (it->second.pins == 0 && now - it->second.read_at >= m_options.unpinned_ttl) {
            it = m_entries.erase(it);
            continue;
        }
        if (it->second.pins == 0) {
            unpinned.emplace_back(it->second.read_at, it->first);
        }
        ++it;
    }
    if (unpinned.size() <= m_options.max_unpinned) {
        return;
    }
    // The oldest go, down to three quarters of the bound, so that the next look-ups do not trim again at once.
    std::sort(unpinned.begin(), unpinned.end());
    const std::size_t drop = unpinned.size() - m_options.max_unpinned * 3 / 4;
    for (std::size_t i = 0; i < drop; ++i) {
        m_entries.erase(unpinned[i].second);
    }
}

}  // namespace sim::server_detail
