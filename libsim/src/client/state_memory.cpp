// The in-memory ClientState: values kept as given, for tests. One mutex guards the map.
#include "state_checks.h"

#include <map>
#include <mutex>

namespace sim {
namespace {

class MemoryClientState final : public ClientState {
public:
    Result<std::optional<SecureBytes>> get(std::string_view key) const override {
        SIM_TRY_STATUS(client::detail::check_state_key(key));
        const std::lock_guard lock(m_mutex);
        const auto it = m_values.find(key);
        if (it == m_values.end()) {
            return std::optional<SecureBytes>{};
        }
        return std::optional<SecureBytes>{it->second};
    }

    Status write(const std::vector<StateWrite>& batch) override {
        // Every write is checked before any is applied: a refused batch leaves the map as it was, as the SQLite
        // transaction does (and a batch costs what it writes, not the size of the map).
        for (const auto& w : batch) {
            SIM_TRY_STATUS(client::detail::check_state_write(w));
        }
        const std::lock_guard lock(m_mutex);
        for (const auto& w : batch) {
            if (w.value) {
                m_values.insert_or_assign(w.key, *w.value);
            } else if (const auto it = m_values.find(w.key); it != m_values.end()) {
                m_values.erase(it);
            }
        }
        return ok();
    }

    bool created() const noexcept override { return true; }
    Status change_password(std::string_view /*new_password*/) override { return ok(); }  // nothing is sealed

private:
    mutable std::mutex m_mutex;
    std::map<std::string, SecureBytes, std::less<>> m_values;
};

}  // namespace

std::unique_ptr<ClientState> make_memory_client_state() {
    return std::make_unique<MemoryClientState>();
}

}  // namespace sim
