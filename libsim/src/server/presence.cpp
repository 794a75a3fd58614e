#include "presence.h"

#include <sim/messages.h>

namespace sim::server_detail {

void Presence::load(const std::string& user) {
    if (m_store == nullptr) {
        return;
    }
    {
        const std::lock_guard lock(m_mutex);
        if (m_loaded.contains(user)) {
            return;
        }
    }
    auto stored = m_store->list_contacts(user, m_max);
    if (!stored) {
        if (m_log) {
            m_log(LogLevel::error, "contacts not read: " + stored.error().message());
        }
        return;
    }
    const std::lock_guard lock(m_mutex);
    // A pair recorded meanwhile by this node is in memory already: the union is right either way.
    for (const auto& c : *stored) {
        m_contacts[user].insert(c);
        m_contacts[c].insert(user);
    }
    m_loaded.insert(user);
}

void Presence::named(const std::string& from, const std::string& to) {
    if (from == to) {
        return;
    }
    load(from);
    load(to);
    {
        const std::lock_guard lock(m_mutex);
        if (!named_locked(from, to)) {
            return;
        }
    }
    if (m_store != nullptr) {
        // After the lock: the pair counts on this node from now on, whatever the store says.
        const auto added = m_store->add_contact(from, to, m_max);
        if (!added && m_log) {
            m_log(LogLevel::error, "contact pair not recorded: " + added.error().message());
        }
    }
}

bool Presence::named_locked(const std::string& from, const std::string& to) {
    auto& mine = m_named[from];
    if (mine.size() < m_max) {
        mine.insert(to);
    }
    const auto theirs = m_named.find(to);
    if (theirs == m_named.end() || theirs->second.count(from) == 0) {
        return false;  // one-sided: `to` has not named `from` (a stranger learns nothing)
    }
    auto& a = m_contacts[from];
    auto& b = m_contacts[to];
    if (a.count(to) != 0 || a.size() >= m_max || b.size() >= m_max) {
        return false;
    }
    a.insert(to);
    b.insert(from);
    tell_locked(from, {PresenceEntry{to, visible_locked(to)}});
    tell_locked(to, {PresenceEntry{from, visible_locked(from)}});
    return true;
}

void Presence::attached(const MailboxId& device, const Peer* connection, bool counts) {
    load(device.user);
    const std::lock_guard lock(m_mutex);
    auto& d = m_present[device.user][device.device];
    d.connection = connection;
    d.counts = d.counts || counts;  // a displaced connection's standing holds until this one's `set`
    publish_locked(device.user);
}

void Presence::subscribe(const MailboxId& device, const std::shared_ptr<Peer>& connection, bool hidden) {
    load(device.user);
    const std::lock_guard lock(m_mutex);
    m_subscribers[device] = connection;
    if (hidden) {
        m_hidden.insert(device.user);
    } else {
        m_hidden.erase(device.user);
    }
    m_present[device.user][device.device] = Device{connection.get(), true};
    // The snapshot: every contact, online or not, so that the client knows whom it is told about.
    std::vector<PresenceEntry> all;
    if (const auto it = m_contacts.find(device.user); it != m_contacts.end()) {
        for (const auto& c : it->second) {
            all.push_back(PresenceEntry{c, visible_locked(c)});
        }
    }
    std::size_t i = 0;
    do {
        const std::size_t n = std::min(max_presence_entries, all.size() - i);
        const std::vector<PresenceEntry> part(all.begin() + static_cast<std::ptrdiff_t>(i),
                                              all.begin() + static_cast<std::ptrdiff_t>(i + n));
        connection->deliver(status_frame(device.user, part));
        i += n;
    } while (i < all.size());
    publish_locked(device.user);
}

void Presence::gone(const MailboxId& device, const Peer* connection) {
    const std::lock_guard lock(m_mutex);
    if (const auto it = m_subscribers.find(device); it != m_subscribers.end()) {
        const auto held = it->second.lock();
        if (held && held.get() != connection) {
            return;  // a newer connection of the device took over: its state stays
        }
        m_subscribers.erase(it);
    }
    if (const auto it = m_present.find(device.user); it != m_present.end()) {
        const auto d = it->second.find(device.device);
        if (d != it->second.end() && d->second.connection == connection) {
            it->second.erase(d);
        }
        if (it->second.empty()) {
            m_present.erase(it);
        }
    }
    publish_locked(device.user);
}

Frame Presence::query(const std::string& asker, const std::string& about) {
    load(asker);
    const std::lock_guard lock(m_mutex);
    bool online = false;
    if (const auto it = m_contacts.find(asker); it != m_contacts.end() && it->second.count(about) != 0) {
        online = visible_locked(about);
    }
    return status_frame(asker, {PresenceEntry{about, online}});
}

bool Presence::visible(const std::string& user) {
    const std::lock_guard lock(m_mutex);
    return visible_locked(user);
}

bool Presence::contacts(const std::string& a, const std::string& b) {
    load(a);
    const std::lock_guard lock(m_mutex);
    const auto it = m_contacts.find(a);
    return it != m_contacts.end() && it->second.count(b) != 0;
}

std::vector<std::string> Presence::contacts_of(const std::string& user) {
    load(user);
    const std::lock_guard lock(m_mutex);
    const auto it = m_contacts.find(user);
    return it == m_contacts.end() ? std::vector<std::string>{}
                                  : std::vector<std::string>(it->second.begin(), it->second.end());
}

bool Presence::visible_locked(const std::string& user) const {
    if (m_hidden.contains(user)) {
        return false;
    }
    const auto it = m_present.find(user);
    if (it == m_present.end()) {
        return false;
    }
    for (const auto& [device, d] : it->second) {
        if (d.counts) {
            return true;
        }
    }
    return false;
}

void Presence::publish_locked(const std::string& user) {
    const bool now = visible_locked(user);
    if (now == m_shown_online.contains(user)) {
        return;
    }
    if (now) {
        m_shown_online.insert(user);
    } else {
        m_shown_online.erase(user);
    }
    if (const auto it = m_contacts.find(user); it != m_contacts.end()) {
        for (const auto& c : it->second) {
            tell_locked(c, {PresenceEntry{user, now}});
        }
    }
}

void Presence::tell_locked(const std::string& subscriber, const std::vector<PresenceEntry>& entries) {
    const Frame frame = status_frame(subscriber, entries);
    for (auto it = m_subscribers.lower_bound(MailboxId{subscriber, 0});
         it != m_subscribers.end() && it->first.user == subscriber;) {
        if (const auto peer = it->second.lock()) {
            peer->deliver(frame);
            ++it;
        } else {
            it = m_subscribers.erase(it);
        }
    }
}

Frame Presence::status_frame(const std::string& to, const std::vector<PresenceEntry>& entries) {
    PresenceMessage m;
    m.op = PresenceOp::status;
    m.entries = entries;
    auto payload = encode_presence(m);
    // Names come from logins and canonical peers: always valid; an encoding failure sends an empty status.
    return Frame{FrameType::presence, 0, std::string(server_name), to, payload ? std::move(*payload) : Bytes{}};
}

}  // namespace sim::server_detail
