#include "router.h"

#include <sim/messages.h>

namespace sim::server_detail {

Router::Router(const SuitePolicy& conversation_policy, auth::ConversationKeyVault* vault, Rng& rng, WallClock wall,
               Log log)
    : m_policy(conversation_policy), m_vault(vault), m_rng(rng), m_wall(std::move(wall)), m_log(std::move(log)) {}

Router::Pair Router::make_pair(const std::string& a, const std::string& b) {
    return a < b ? Pair{a, b} : Pair{b, a};
}

std::shared_ptr<Peer> Router::online_locked(const std::string& user) {
    const auto it = m_online.find(user);
    if (it == m_online.end()) {
        return nullptr;
    }
    auto peer = it->second.lock();
    if (!peer) {
        m_online.erase(it);  // the connection is gone without having said so
    }
    return peer;
}

void Router::ack_locked(const std::string& user, AckStage stage, const std::string& peer) {
    if (auto conn = online_locked(user)) {
        conn->deliver(Frame{FrameType::ack_init, static_cast<std::uint32_t>(stage), std::string(server_name),
                                  user, to_bytes(as_bytes(peer))});
    }
}

void Router::login(const std::string& user, std::shared_ptr<Peer> peer) {
    const std::lock_guard lock(m_mutex);
    // One connection per user: the newer login wins. The old connection's conversations end when it closes.
    if (auto old = online_locked(user)) {
        old->kick(Errc::closed, "logged in from another connection");
    }
    m_online[user] = peer;
    // Everyone who waits for `user` learns that the destination is online, and the pair gets its key.
    for (auto& [waiter, peers] : m_waiting) {
        if (peers.erase(user) != 0) {
            ack_locked(waiter, AckStage::destination_online, user);
            assign_key_locked(waiter, user);
        }
    }
    std::erase_if(m_waiting, [](const auto& kv) { return kv.second.empty(); });
}

void Router::disconnect(const std::string& user, const Peer* peer) {
    const std::lock_guard lock(m_mutex);
    const auto it = m_online.find(user);
    if (it == m_online.end() || it->second.lock().get() != peer) {
        return;  // a newer connection of the same user took over
    }
    m_online.erase(it);
    m_waiting.erase(user);
    std::vector<Pair> ended;
    for (const auto& pair : m_conversations) {
        if (pair.first == user || pair.second == user) {
            ended.push_back(pair);
        }
    }
    for (const auto& pair : ended) {
        end_conversation_locked(pair, user);
    }
}

void Router::open(const std::string& from, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    if (online_locked(to)) {
        ack_locked(from, AckStage::destination_online, to);
        // Both users already hold the key of a live conversation (e.g. `to` just logged in naming `from`, who was
        // waiting): a second KEYGEN would race with messages sealed under the first.
        if (m_conversations.count(make_pair(from, to)) == 0) {
            assign_key_locked(from, to);
        }
        return;
    }
    // The seed's pending connection (from, to, False): wait until `to` logs in.
    m_waiting[from].insert(to);
    ack_locked(from, AckStage::destination_offline, to);
}

void Router::probe(const std::string& from, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    ack_locked(from, online_locked(to) ? AckStage::destination_online : AckStage::destination_offline, to);
}

void Router::assign_key_locked(const std::string& a, const std::string& b) {
    const SuiteId suite = m_policy.preference().front();
    KeyAssignment assignment;
    assignment.suite = suite;
    assignment.key = m_rng.secure_bytes(suite_key_size(suite));
    const auto pair = make_pair(a, b);
    if (m_vault != nullptr) {
        const auto st = m_vault->put(pair.first, pair.second, assignment.key, m_next_epoch++, m_wall());
        if (!st) {
            m_log(LogLevel::error, "conversation key not stored: " + st.error().message());
        }
    }
    m_conversations.insert(pair);
    for (const auto& [user, peer] : {std::pair{a, b}, std::pair{b, a}}) {
        const auto conn = online_locked(user);
        if (!conn) {
            continue;
        }
        assignment.peer = peer;
        auto payload = encode_key_assignment(assignment);
        conn->deliver(Frame{FrameType::keygen, keygen_sid, std::string(server_name), user, payload});
        secure_zero(payload.data(), payload.size());
    }
    m_log(LogLevel::info, "conversation " + pair.first + " <-> " + pair.second + " keyed (" +
                              std::string(suite_name(suite)) + ")");
}

Status Router::forward(const std::string& from, const std::string& to, const Frame& frame) {
    const std::lock_guard lock(m_mutex);
    if (m_conversations.count(make_pair(from, to)) == 0) {
        ++m_refused;
        return Error{Errc::no_conversation, "no key assigned for this conversation"};
    }
    const auto conn = online_locked(to);
    if (!conn) {
        ++m_refused;
        return Error{Errc::destination_offline, "destination is offline"};
    }
    conn->deliver(frame);
    ++m_routed;
    return ok();
}

void Router::end_conversation_locked(const Pair& pair, const std::string& leaver) {
    m_conversations.erase(pair);
    if (m_vault != nullptr) {
        (void)m_vault->remove(pair.first, pair.second);
    }
    const std::string& other = pair.first == leaver ? pair.second : pair.first;
    if (const auto conn = online_locked(other)) {
        conn->deliver(Frame{FrameType::close, 0, leaver, other, {}});
    }
}

void Router::leave(const std::string& from, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    const auto it = m_waiting.find(from);
    if (it != m_waiting.end()) {
        it->second.erase(to);
    }
    const auto pair = make_pair(from, to);
    if (m_conversations.count(pair) != 0) {
        end_conversation_locked(pair, from);
    }
}

void Router::shutdown() {
    std::unordered_map<std::string, std::weak_ptr<Peer>> online;
    {
        const std::lock_guard lock(m_mutex);
        online.swap(m_online);
        m_waiting.clear();
        m_conversations.clear();
    }
    for (auto& [user, weak] : online) {
        if (auto peer = weak.lock()) {
            peer->kick(Errc::closed, "server shutting down");
        }
    }
}

void Router::count_routed() {
    const std::lock_guard lock(m_mutex);
    ++m_routed;
}

std::shared_ptr<Peer> Router::find_online(const std::string& user) {
    const std::lock_guard lock(m_mutex);
    return online_locked(user);
}

void Router::count_refused() {
    const std::lock_guard lock(m_mutex);
    ++m_refused;
}

ServerStats Router::stats() const {
    const std::lock_guard lock(m_mutex);
    ServerStats s;
    s.online_users = m_online.size();
    s.conversations = m_conversations.size();
    for (const auto& [user, peers] : m_waiting) {
        s.waiting += peers.size();
    }
    s.messages_routed = m_routed;
    s.messages_refused = m_refused;
    return s;
}

}  // namespace sim::server_detail
