#pragma once
// Private: presence, waiting users and conversations of the server core; the seed's connection list
// (Alice, Bob, False/True). Thread-safe; lock order: a connection's receive lock -> the router lock -> a
// connection's send lock (Peer::deliver). The router never takes a connection's receive lock.

#include <sim/auth.h>
#include <sim/frame.h>
#include <sim/rng.h>
#include <sim/server.h>
#include <sim/suite.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>

namespace sim::server_detail {

/// A logged-in connection as the router sees it.
class Peer {
public:
    virtual ~Peer() = default;
    /// Seal and queue an inner frame to this connection (takes only the connection's send lock).
    virtual void deliver(const Frame& frame) = 0;
    /// Send an error frame and close the connection.
    virtual void kick(Errc code, std::string_view detail) = 0;
};

class Router {
public:
    using Log = std::function<void(LogLevel, std::string_view)>;
    using WallClock = std::function<store::WallTime()>;
    Router(const SuitePolicy& conversation_policy, auth::ConversationKeyVault* vault, Rng& rng, WallClock wall,
           Log log);

    /// `user` is online on `peer`; an earlier connection of the same user is closed. Users waiting for `user`
    /// are told (ack_init 2) and their conversations get keys.
    void login(const std::string& user, std::shared_ptr<Peer> peer);
    /// `peer` (a connection) went away: end the user's conversations, tell their peers, forget waits.
    void disconnect(const std::string& user, const Peer* peer);
    /// init with a destination: ack_init 2 + KEYGEN to both when `to` is online, else ack_init 3 and wait.
    void open(const std::string& from, const std::string& to);
    /// probe: ack_init 2 or 3.
    void probe(const std::string& from, const std::string& to);
    /// Forward a conversation message. Errors: no_conversation, destination_offline.
    Status forward(const std::string& from, const std::string& to, const Frame& frame);
    /// End the conversation (from, to) and tell `to`.
    void leave(const std::string& from, const std::string& to);
    /// Close every online user's connection with a close frame.
    void shutdown();

    void count_refused();
    void count_routed();
    /// The user's connection, or null when offline.
    std::shared_ptr<Peer> find_online(const std::string& user);
    [[nodiscard]] ServerStats stats() const;

private:
    using Pair = std::pair<std::string, std::string>;  // sorted
    static Pair make_pair(const std::string& a, const std::string& b);

    void assign_key_locked(const std::string& a, const std::string& b);
    void end_conversation_locked(const Pair& pair, const std::string& leaver);
    void ack_locked(const std::string& user, AckStage stage, const std::string& peer);

    SuitePolicy m_policy;
    auth::ConversationKeyVault* m_vault;
    Rng& m_rng;
    WallClock m_wall;
    Log m_log;

    mutable std::mutex m_mutex;
    /// The connection of a user who is online, or null. Entries are weak: connections own the core (through
    /// their handlers), so strong references here would make a cycle.
    std::shared_ptr<Peer> online_locked(const std::string& user);

    std::unordered_map<std::string, std::weak_ptr<Peer>> m_online;
    std::map<std::string, std::set<std::string>> m_waiting;  // user -> peers they wait for
    std::set<Pair> m_conversations;                          // pairs that have a key (the seed's True)
    std::uint64_t m_next_epoch = 1;                          // key epochs only grow, so the vault never sees a stale one
    std::uint64_t m_routed = 0;
    std::uint64_t m_refused = 0;
};

}  // namespace sim::server_detail
