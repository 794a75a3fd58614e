#include "routing.h"

#include <algorithm>
#include <mutex>
#include <unordered_map>

namespace sim::server_detail {

namespace {

class LocalBus final : public RoutingBus {
public:
    std::shared_ptr<Peer> attach(const std::string& mailbox, const std::shared_ptr<Peer>& peer) override {
        const std::lock_guard lock(m_mutex);
        auto& slot = m_attached[mailbox];
        auto old = slot.lock();
        slot = peer;
        return old == peer ? nullptr : old;
    }

    bool detach(const std::string& mailbox, const Peer* peer) override {
        const std::lock_guard lock(m_mutex);
        const auto it = m_attached.find(mailbox);
        if (it == m_attached.end()) {
            return false;
        }
        const auto holder = it->second.lock();
        if (holder && holder.get() != peer) {
            return false;  // a newer connection took over
        }
        m_attached.erase(it);
        return holder != nullptr;
    }

    bool deliver(const std::string& mailbox, const Frame& frame) override {
        const auto peer = local(mailbox);
        if (!peer) {
            return false;
        }
        peer->deliver(frame);  // outside the lock: it takes the connection's send lock
        return true;
    }

    bool attached(const std::string& mailbox) override { return local(mailbox) != nullptr; }

    std::shared_ptr<Peer> local(const std::string& mailbox) override {
        const std::lock_guard lock(m_mutex);
        const auto it = m_attached.find(mailbox);
        if (it == m_attached.end()) {
            return nullptr;
        }
        auto peer = it->second.lock();
        if (!peer) {
            m_attached.erase(it);  // the connection is gone without having said so
        }
        return peer;
    }

    std::vector<std::string> attached_here() override {
        std::vector<std::string> out;
        {
            const std::lock_guard lock(m_mutex);
            for (const auto& [mailbox, peer] : m_attached) {
                if (!peer.expired()) {
                    out.push_back(mailbox);
                }
            }
        }
        std::sort(out.begin(), out.end());
        return out;
    }

    std::vector<std::shared_ptr<Peer>> detach_all() override {
        std::unordered_map<std::string, std::weak_ptr<Peer>> all;
        {
            const std::lock_guard lock(m_mutex);
            all.swap(m_attached);
        }
        std::vector<std::shared_ptr<Peer>> out;
        for (auto& [mailbox, weak] : all) {
            if (auto peer = weak.lock()) {
                out.push_back(std::move(peer));
            }
        }
        return out;
    }

private:
    std::mutex m_mutex;
    /// Weak: connections own the core (through their handlers), so strong references here would make a cycle.
    std::unordered_map<std::string, std::weak_ptr<Peer>> m_attached;
};

}  // namespace

std::unique_ptr<RoutingBus> make_local_bus() { return std::make_unique<LocalBus>(); }

}  // namespace sim::server_detail
