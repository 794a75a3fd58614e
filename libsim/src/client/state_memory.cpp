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
        // Apply to a copy and swap it in at the end: a refused write leaves the map as it was, as the
        // SQLite transaction does.
        const std::lock_guard lock(m_mutex);
        auto next = m_values;
        for (const auto& w : batch) {
            SIM_TRY_STATUS(client::detail::check_state_write(w));
            if (w.value) {
                next.insert_or_assign(w.key, *w.value);
            } else {
                next.erase(w.key);
            }
        }
        m_values.swap(next);
        return ok();
    }

    bool created() const noexcept override { return true; }

private:
    mutable std::mutex m_mutex;
    std::map<std::string, SecureBytes, std::less<>> m_values;
};

}  // namespace

std::unique_ptr<ClientState> make_memory_client_state() {
    return std::make_unique<MemoryClientState>();
}

}  // namespace sim
