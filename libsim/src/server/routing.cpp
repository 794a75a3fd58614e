#include "routing.h"

#include <mutex>
#include <map>

namespace sim::server_detail {

namespace {

class LocalBus final : public RoutingBus {
public:
    std::shared_ptr<Peer> attach(const MailboxId& mailbox, const std::shared_ptr<Peer>& peer) override {
        const std::lock_guard lock(m_mutex);
        auto& slot = m_attached[mailbox];
        auto old = slot.lock();
        slot = peer;
        return old == peer ? nullptr : old;
    }

    bool detach(const MailboxId& mailbox, const Peer* peer) override {
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

    bool deliver(const MailboxId& mailbox, const Frame& frame) override {
        const auto peer = local(mailbox);
        if (!peer) {
            return false;
        }
        peer->deliver(frame);  // outside the lock: it takes the connection's send lock
        return true;
    }

    bool attached(const MailboxId& mailbox) override { return local(mailbox) != nullptr; }

    std::shared_ptr<Peer> local(const MailboxId& mailbox) override {
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

    std::vector<DeviceId> attached_devices(const std::string& user) override {
        std::vector<DeviceId> out;
        const std::lock_guard lock(m_mutex);
        for (auto it = m_attached.lower_bound(MailboxId{user, 0}); it != m_attached.end() && it->first.user == user;
             ++it) {
            if (!it->second.expired()) {
                out.push_back(it->first.device);
            }
        }
        return out;
    }

    std::vector<MailboxId> attached_here() override {
        std::vector<MailboxId> out;
        {
            const std::lock_guard lock(m_mutex);
            for (const auto& [mailbox, peer] : m_attached) {
                if (!peer.expired()) {
                    out.push_back(mailbox);
                }
            }
        }
        return out;  // sorted: the map's order
    }

    std::vector<std::shared_ptr<Peer>> detach_all() override {
        std::map<MailboxId, std::weak_ptr<Peer>> all;
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
    std::map<MailboxId, std::weak_ptr<Peer>> m_attached;
};

}  // namespace

bool online(RoutingBus& bus, const std::string& user) {
    return !bus.attached_devices(user).empty();
}

bool deliver_to_user(RoutingBus& bus, const std::string& user, const Frame& frame) {
    bool any = false;
    for (const auto device : bus.attached_devices(user)) {
        any = bus.deliver(MailboxId{user, device}, frame) || any;
    }
    return any;
}

std::unique_ptr<RoutingBus> make_local_bus() { return std::make_unique<LocalBus>(); }

}  // namespace sim::server_detail
