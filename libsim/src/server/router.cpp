#include "router.h"

#include <sim/messages.h>

#include <algorithm>
#include <chrono>
#include <optional>

namespace sim::server_detail {

Router::Router(RoutingBus& bus, const SuitePolicy& conversation_policy, auth::ConversationKeyVault* vault, Rng& rng,
               WallClock wall, Log log)
    : m_bus(bus),
      m_policy(conversation_policy),
      m_vault(vault),
      m_rng(rng),
      m_wall(std::move(wall)),
      m_log(std::move(log)) {
    // Keys stored by an earlier run stay in the vault while messages need them: this run's epochs start above
    // theirs (microseconds since the epoch; a key assignment takes longer than one).
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(m_wall().time_since_epoch()).count();
    m_next_epoch = static_cast<std::uint64_t>(std::max<std::int64_t>(1, ms)) * 1000;
}

bool Router::has_conversation(const std::string& a, const std::string& b) {
    const std::lock_guard lock(m_mutex);
    return m_conversations.contains(make_pair(a, b));
}

void Router::restore(const std::string& user, const std::set<std::string>& senders) {
    if (m_vault == nullptr) {
        return;
    }
    const std::lock_guard lock(m_mutex);
    for (const auto& sender : senders) {
        const auto pair = make_pair(user, sender);
        if (sender == user || m_conversations.contains(pair)) {
            continue;
        }
        auto stored = m_vault->get(pair.first, pair.second);
        if (!stored || !stored->has_value()) {
            m_log(LogLevel::error, "stored messages without a conversation key: " +
                                       (stored ? std::string("none in the vault") : stored.error().message()));
            continue;
        }
        // The suite is not in the vault: the first of the policy with the key's size (the one assigned then, unless
        // the operator changed the policy since).
        std::optional<SuiteId> suite;
        for (const auto id : m_policy.preference()) {
            if (suite_key_size(id) == (*stored)->key.size()) {
                suite = id;
                break;
            }
        }
        if (!suite) {
            m_log(LogLevel::error, "stored conversation key fits no suite of the policy");
            continue;
        }
        Conversation conv;
        conv.suite = *suite;
        conv.key = std::move((*stored)->key);
        conv.unkeyed = user;
        conv.gone = sender;
        conv.stored = true;
        conv.in_vault = true;
        m_conversations.emplace(pair, std::move(conv));
        m_offline_for[user].insert(pair);
    }
}

Router::Pair Router::make_pair(const std::string& a, const std::string& b) {
    return a < b ? Pair{a, b} : Pair{b, a};
}

void Router::ack_locked(const std::string& user, AckStage stage, const std::string& peer) {
    (void)deliver_to_user(m_bus, user, Frame{FrameType::ack_init, static_cast<std::uint32_t>(stage), std::string(server_name),
                                    user, to_bytes(as_bytes(peer))});
}

void Router::login(const MailboxId& device, std::shared_ptr<Peer> peer) {
    const std::lock_guard lock(m_mutex);
    const std::string& user = device.user;
    // Another device of `user` (or an older connection of this one) is online: the conversations it keyed go on,
    // and this device needs their keys too.
    const bool user_online = online(m_bus, user);
    // One connection per device: the newer login wins. The old connection's conversations end when it closes.
    if (const auto old = m_bus.attach(device, peer)) {
        old->kick(Errc::closed, "logged in from another connection");
    }
    if (user_online) {
        key_device_locked(device);
    }
    // Conversations keyed while `user` was offline: the KEYGEN comes first, before any stored message (the caller
    // starts the delivery after this returns, and direct delivery finds `user` online only after this lock).
    if (const auto idx = m_offline_for.find(user); idx != m_offline_for.end()) {
        const auto pairs = idx->second;
        for (const auto& pair : pairs) {
            const auto it = m_conversations.find(pair);
            if (it == m_conversations.end()) {
                unindex_locked(user, pair);
                continue;
            }
            Conversation& conv = it->second;
            if (conv.unkeyed == user) {
                if (!conv.in_vault) {
                    conv.in_vault = vault_put_locked(pair, conv.key).has_value();  // `user` may have just registered
                }
                send_keygen_locked(user, pair.first == user ? pair.second : pair.first, conv.suite, conv.key);
                conv.unkeyed.clear();
                conv.stored = false;
                conv.key = SecureBytes{};  // the vault keeps it until the conversation ends
            }
            if (conv.gone.empty()) {
                unindex_locked(user, pair);  // a normal conversation from now on; `drained` ends the others
            }
        }
    }
    tell_waiters_locked(user);
}

void Router::tell_waiters_locked(const std::string& user) {
    // Everyone who waits for `user` learns that the destination is online (when `user` is shown), and the pair
    // gets its key (whether shown or not: messages are stored and delivered either way).
    const bool shown = shown_online_locked(user);
    for (auto& [waiter, peers] : m_waiting) {
        if (peers.count(user) == 0) {
            continue;
        }
        const auto it = m_conversations.find(make_pair(waiter, user));
        if (it != m_conversations.end() && it->second.gone == waiter) {
            continue;  // the waiter left the conversation that is still being delivered: `drained` re-keys
        }
        if (shown) {
            peers.erase(user);
            ack_locked(waiter, AckStage::destination_online, user);
        }  // else the waiter keeps waiting (until `shown`): nothing tells it that `user` is here
        if (it == m_conversations.end()) {
            assign_key_locked(waiter, user);
        }
    }
    std::erase_if(m_waiting, [](const auto& kv) { return kv.second.empty(); });
}

Status Router::vault_put_locked(const Pair& pair, ByteView key) {
    if (m_vault == nullptr) {
        return Error{Errc::not_implemented, "no key vault"};
    }
    const auto st = m_vault->put(pair.first, pair.second, key, m_next_epoch++, m_wall());
    if (!st) {
        // An offline destination may not be registered yet (open registration): stored again at its login.
        m_log(st.code() == Errc::user_not_found ? LogLevel::debug : LogLevel::error,
              "conversation key not stored: " + st.error().message());
    }
    return st;
}

void Router::unindex_locked(const std::string& user, const Pair& pair) {
    const auto it = m_offline_for.find(user);
    if (it != m_offline_for.end()) {
        it->second.erase(pair);
        if (it->second.empty()) {
            m_offline_for.erase(it);
        }
    }
}

namespace {

Frame keygen_frame(const std::string& user, const std::string& peer, SuiteId suite, ByteView key) {
    KeyAssignment assignment;
    assignment.suite = suite;
    assignment.peer = peer;
    assignment.key = to_bytes<SecureBytes>(key);
    return Frame{FrameType::keygen, keygen_sid, std::string(server_name), user, encode_key_assignment(assignment)};
}

}  // namespace

void Router::send_keygen_locked(const std::string& user, const std::string& peer, SuiteId suite, ByteView key) {
    auto f = keygen_frame(user, peer, suite, key);
    (void)deliver_to_user(m_bus, user, f);
    secure_zero(f.payload.data(), f.payload.size());
}

void Router::key_device_locked(const MailboxId& device) {
    if (m_vault == nullptr) {
        return;
    }
    for (const auto& [pair, conv] : m_conversations) {
        if ((pair.first != device.user && pair.second != device.user) || conv.unkeyed == device.user ||
            !conv.in_vault) {
            continue;  // not the user's, or its KEYGEN is still to come (at the user's login)
        }
        const auto stored = m_vault->get(pair.first, pair.second);
        if (!stored || !*stored) {
            m_log(LogLevel::error, "conversation key not read for a device: " +
                                       (stored ? std::string("not in the vault") : stored.error().message()));
            continue;
        }
        auto f = keygen_frame(device.user, pair.first == device.user ? pair.second : pair.first, conv.suite,
                              (*stored)->key);
        (void)m_bus.deliver(device, f);
        secure_zero(f.payload.data(), f.payload.size());
    }
}

void Router::disconnect(const MailboxId& device, const Peer* peer) {
    const std::lock_guard lock(m_mutex);
    const std::string& user = device.user;
    if (!m_bus.detach(device, peer) || online(m_bus, user)) {
        return;  // a newer connection of the device took over, or the user is still online on another device
    }
    m_waiting.erase(user);
    std::vector<Pair> ended;
    for (const auto& [pair, conv] : m_conversations) {
        if (pair.first == user || pair.second == user) {
            ended.push_back(pair);
        }
    }
    for (const auto& pair : ended) {
        depart_locked(pair, user);
    }
}

void Router::depart_locked(const Pair& pair, const std::string& user) {
    const auto it = m_conversations.find(pair);
    if (it == m_conversations.end()) {
        return;
    }
    Conversation& conv = it->second;
    const std::string& other = pair.first == user ? pair.second : pair.first;
    if (conv.gone == user) {
        return;  // left already; the conversation ends when `other` has its messages
    }
    if (conv.unkeyed == other && conv.stored) {
        // Messages wait in the offline store for `other`: keep the key so they can be read at its login; the
        // conversation ends (`other` is told) once they are delivered (docs/protocol.md 6.7).
        conv.gone = user;
        return;
    }
    if (conv.gone == other) {
        // `other` left before; it no longer holds this conversation and is not told again.
        m_conversations.erase(it);
        unindex_locked(user, pair);
        m_key_release.insert(pair);
        return;
    }
    end_conversation_locked(pair, user);
}

Status Router::admit(const std::string& from, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    const auto it = m_conversations.find(make_pair(from, to));
    if (it == m_conversations.end()) {
        return Error{Errc::no_conversation, "no key assigned for this conversation"};
    }
    Conversation& conv = it->second;
    if (!conv.gone.empty()) {
        return Error{Errc::no_conversation, "the conversation has ended"};
    }
    if (conv.unkeyed == to) {
        conv.stored = true;
    }
    return ok();
}

std::vector<std::pair<std::string, std::string>> Router::take_key_releases() {
    const std::lock_guard lock(m_mutex);
    std::vector<Pair> out(m_key_release.begin(), m_key_release.end());
    m_key_release.clear();
    return out;
}

void Router::release_key(const std::string& a, const std::string& b, bool still_needed) {
    const std::lock_guard lock(m_mutex);
    const auto pair = make_pair(a, b);
    if (m_conversations.contains(pair)) {
        return;  // a live conversation of the pair holds the vault's key now
    }
    if (still_needed) {
        m_key_parked.insert(pair);  // looked at again when one of them has nothing stored any more
        return;
    }
    if (m_vault != nullptr) {
        (void)m_vault->remove(pair.first, pair.second);
    }
}

void Router::drained(const std::string& user) {
    const std::lock_guard lock(m_mutex);
    std::erase_if(m_key_parked, [&](const Pair& pair) {
        if (pair.first != user && pair.second != user) {
            return false;
        }
        m_key_release.insert(pair);
        return true;
    });
    const auto idx = m_offline_for.find(user);
    if (idx == m_offline_for.end() || !online(m_bus, user)) {
        return;
    }
    const auto pairs = idx->second;
    for (const auto& pair : pairs) {
        const auto it = m_conversations.find(pair);
        if (it == m_conversations.end()) {
            unindex_locked(user, pair);
            continue;
        }
        if (!it->second.unkeyed.empty() || it->second.gone.empty()) {
            continue;
        }
        // Everything stored was delivered: the conversation the other side left ends now.
        const std::string leaver = it->second.gone;
        end_conversation_locked(pair, leaver);
        // The leaver asked for the peer again meanwhile: a new conversation, with a new key.
        const auto w = m_waiting.find(leaver);
        if (w != m_waiting.end() && w->second.count(user) != 0 && online(m_bus, leaver)) {
            w->second.erase(user);
            if (w->second.empty()) {
                m_waiting.erase(w);
            }
            if (shown_online_locked(user)) {
                ack_locked(leaver, AckStage::destination_online, user);
            }
            assign_key_locked(leaver, user);
        }
    }
}

void Router::open(const std::string& from, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    const auto it = m_conversations.find(make_pair(from, to));
    if (it != m_conversations.end() && it->second.gone == from) {
        // `from` left a conversation whose messages `to` has not received yet: wait for that delivery, then
        // `drained` keys a new conversation.
        m_waiting[from].insert(to);
        ack_locked(from, AckStage::destination_offline, to);
        return;
    }
    if (online(m_bus, to)) {
        // A user who is not shown is answered as an offline one (6.10), though keyed as an online one: `from`
        // waits until `to` is shown (or stops waiting at the KEYGEN), and its messages go through meanwhile.
        if (shown_online_locked(to)) {
            ack_locked(from, AckStage::destination_online, to);
        } else {
            m_waiting[from].insert(to);
            ack_locked(from, AckStage::destination_offline, to);
        }
        // Both users already hold the key of a live conversation (e.g. `to` just logged in naming `from`, who was
        // waiting): a second KEYGEN would race with messages sealed under the first.
        if (it == m_conversations.end()) {
            assign_key_locked(from, to);
        }
        return;
    }
    // The seed's pending connection (from, to, False): wait until `to` logs in. Messages are stored, so a
    // registered `to` is keyed now and `from` can write to it meanwhile (`to` gets the KEYGEN at its login); a name
    // nobody has is not (a typo stores nothing): `from` waits, and is keyed if that name registers and logs in.
    m_waiting[from].insert(to);
    ack_locked(from, AckStage::destination_offline, to);
    if (it == m_conversations.end()) {
        (void)assign_key_locked(from, to, true);
    }
}

void Router::probe(const std::string& from, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    ack_locked(from, shown_online_locked(to) ? AckStage::destination_online : AckStage::destination_offline, to);
}

void Router::shown(const std::string& user) {
    const std::lock_guard lock(m_mutex);
    if (shown_online_locked(user)) {
        tell_waiters_locked(user);
    }
}

bool Router::shown_online_locked(const std::string& user) const {
    return online(m_bus, user) && (!m_shown || m_shown(user));
}

bool Router::assign_key_locked(const std::string& a, const std::string& b, bool registered_only) {
    const SuiteId suite = m_policy.preference().front();
    KeyAssignment assignment;
    assignment.suite = suite;
    assignment.key = m_rng.secure_bytes(suite_key_size(suite));
    const auto pair = make_pair(a, b);
    Conversation conv;
    conv.suite = suite;
    const auto put = vault_put_locked(pair, assignment.key);
    if (registered_only && !put && put.code() == Errc::user_not_found) {
        return false;  // a name nobody has (yet): `a` waits for it, as in the seed's flow
    }
    conv.in_vault = put.has_value();
    for (const auto& [user, peer] : {std::pair{a, b}, std::pair{b, a}}) {
        if (!online(m_bus, user)) {
            conv.unkeyed = user;  // KEYGEN at its login (open() keys only with `a` online)
            conv.key = to_bytes<SecureBytes>(assignment.key);
            m_offline_for[user].insert(pair);
            continue;
        }
        send_keygen_locked(user, peer, suite, assignment.key);
    }
    m_conversations.insert_or_assign(pair, std::move(conv));
    m_log(LogLevel::info, "conversation " + pair.first + " <-> " + pair.second + " keyed (" +
                              std::string(suite_name(suite)) + ")");
    return true;
}

void Router::end_conversation_locked(const Pair& pair, const std::string& leaver) {
    m_conversations.erase(pair);
    unindex_locked(pair.first, pair);
    unindex_locked(pair.second, pair);
    m_key_release.insert(pair);  // the key goes once no message between them needs it (release_keys)
    const std::string& other = pair.first == leaver ? pair.second : pair.first;
    // `other` stops waiting for the leaver with the close (as its client does): else a hidden leaver's next login
    // would key the pair again and so tell `other` that it is back.
    if (const auto w = m_waiting.find(other); w != m_waiting.end()) {
        w->second.erase(leaver);
        if (w->second.empty()) {
            m_waiting.erase(w);
        }
    }
    (void)deliver_to_user(m_bus, other, Frame{FrameType::close, 0, leaver, other, {}});
}

void Router::leave(const std::string& from, const std::string& to) {
    const std::lock_guard lock(m_mutex);
    const auto it = m_waiting.find(from);
    if (it != m_waiting.end()) {
        it->second.erase(to);
    }
    depart_locked(make_pair(from, to), from);
}

void Router::shutdown() {
    std::vector<std::shared_ptr<Peer>> connections;
    {
        const std::lock_guard lock(m_mutex);
        connections = m_bus.detach_all();
        m_waiting.clear();
        m_conversations.clear();
        m_offline_for.clear();
    }
    for (const auto& peer : connections) {
        peer->kick(Errc::closed, "server shutting down");
    }
}

void Router::count_routed() {
    m_routed.fetch_add(1, std::memory_order_relaxed);
}

void Router::count_refused(Errc reason) {
    const std::lock_guard lock(m_mutex);
    ++m_refused[reason];
}

void Router::count_delivered(std::uint64_t n) {
    m_delivered.fetch_add(n, std::memory_order_relaxed);
}

ServerStats Router::stats() const {
    const std::lock_guard lock(m_mutex);
    ServerStats s;
    std::string last;
    for (const auto& mailbox : m_bus.attached_here()) {  // sorted: a user's devices are together
        if (s.online_users == 0 || mailbox.user != last) {
            ++s.online_users;
            last = mailbox.user;
        }
    }
    s.conversations = m_conversations.size();
    for (const auto& [user, peers] : m_waiting) {
        s.waiting += peers.size();
    }
    s.messages_routed = m_routed.load(std::memory_order_relaxed);
    s.messages_delivered = m_delivered.load(std::memory_order_relaxed);
    for (const auto& [reason, n] : m_refused) {
        s.refused_by_reason.emplace_back(reason, n);
        s.messages_refused += n;
    }
    return s;
}

}  // namespace sim::server_detail
