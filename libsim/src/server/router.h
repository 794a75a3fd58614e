#pragma once
// Private: presence, waiting users and conversations of the server core; the seed's connection list
// (Alice, Bob, False/True). Who is online, and the way to their connections, is the routing bus's (routing.h).
// Thread-safe; lock order: a connection's receive lock -> the router lock -> the bus's lock -> a connection's send
// lock (Peer::deliver). The router never takes a connection's receive lock. The `Shown` predicate (presence's
// lock, a leaf that is never held while the router's is taken) is called with the router lock held.

#include <sim/auth.h>
#include <sim/frame.h>
#include <sim/rng.h>
#include <sim/server.h>
#include <sim/suite.h>

#include "routing.h"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace sim::server_detail {

class Router {
public:
    using Log = std::function<void(LogLevel, std::string_view)>;
    using WallClock = std::function<store::WallTime()>;
    /// Whether `user`'s being online may be told at all (attached and not hiding, docs/protocol.md 6.10): ack_init
    /// 2 goes out only for such a user; anyone else is answered 3 ("waiting"), whatever the truth.
    using Shown = std::function<bool(const std::string& user)>;
    /// Messages for offline users are stored, so a server-assigned conversation with an offline destination is
    /// keyed at once (docs/protocol.md 6.7).
    Router(RoutingBus& bus, const SuitePolicy& conversation_policy, auth::ConversationKeyVault* vault, Rng& rng,
           WallClock wall, Log log);

    /// Set the presence predicate (before any connection; without one, every online user is shown, as in the
    /// seed).
    void set_shown(Shown shown) { m_shown = std::move(shown); }

    /// `device` is online on `peer`; an earlier connection of the same device is closed. Conversations keyed while
    /// `user` was offline get their KEYGEN now (before the caller delivers stored messages). Users waiting for
    /// `user` are told (ack_init 2) and their conversations get keys.
    void login(const MailboxId& device, std::shared_ptr<Peer> peer);
    /// `peer` (a device's connection) went away; when it was the user's last attached device: end the user's
    /// conversations, tell their peers, forget waits. A conversation whose other side is offline with messages
    /// stored for it lives on until those are delivered.
    void disconnect(const MailboxId& device, const Peer* peer);
    /// init with a destination: ack_init 2 + KEYGEN to both when `to` is online, else ack_init 3 and the pair is
    /// keyed at once (KEYGEN to `from` now, to `to` at its login). A `to` online but not shown (hiding, or not
    /// known here to be shown) gets the keys of an online one with the answer of an offline one: ack_init 3, and
    /// `from` waits until `to` is shown.
    void open(const std::string& from, const std::string& to);
    /// probe: ack_init 2 when `to` is online and shown, else 3.
    void probe(const std::string& from, const std::string& to);
    /// `user` is shown now (a `set` that does not hide): users waiting for it get ack_init 2.
    void shown(const std::string& user);
    /// May `from` send a conversation message to `to` (into its mailbox)? Records that
    /// messages are stored for a destination that has no KEYGEN yet. Errors: no_conversation (no key, or one side
    /// has left).
    Status admit(const std::string& from, const std::string& to);
    /// Before `user`'s login, after a restart: conversations whose messages stored for `user` need a key that only
    /// the vault still has (docs/protocol.md 6.7). For each sender without a conversation with `user`, the key is
    /// read from the vault and the conversation restored as one whose sender has left: `user` gets the KEYGEN at
    /// login, before the messages, and the conversation ends once they are delivered.
    void restore(const std::string& user, const std::set<std::string>& senders);
    /// Whether the pair has a conversation (keyed, or kept for a delivery).
    [[nodiscard]] bool has_conversation(const std::string& a, const std::string& b);
    /// `user` is online and has no stored message left: conversations kept only for that delivery end now.
    void drained(const std::string& user);
    /// Pairs whose conversation ended since the last call: their vault key goes once no stored message between
    /// them needs it (ServerCore::release_keys asks the store, outside the router's lock).
    std::vector<std::pair<std::string, std::string>> take_key_releases();
    /// Remove the pair's vault key, unless a new conversation of the pair holds it or `still_needed` (messages
    /// between them are stored: it is looked at again when one of them drains).
    void release_key(const std::string& a, const std::string& b, bool still_needed);
    /// End the conversation (from, to) and tell `to` (kept until delivered when `to` has stored messages and no
    /// KEYGEN yet, as for disconnect).
    void leave(const std::string& from, const std::string& to);
    /// Close every online user's connection with a close frame.
    void shutdown();

    /// A request refused with `reason` (an error frame, a refused receipt or a failed commit).
    void count_refused(Errc reason);
    void count_routed();
    /// `n` message ids acknowledged by their recipient.
    void count_delivered(std::uint64_t n);
    [[nodiscard]] ServerStats stats() const;

private:
    using Pair = std::pair<std::string, std::string>;  // sorted
    static Pair make_pair(const std::string& a, const std::string& b);

    /// A keyed pair (the seed's True). While one side is offline without its KEYGEN, the server keeps the key
    /// here (besides the vault) to send it at that side's login.
    struct Conversation {
        SuiteId suite = SuiteId::aes256_gcm;
        SecureBytes key;       // only while `unkeyed` is set
        std::string unkeyed;   // the side still waiting for its KEYGEN (offline), or empty
        std::string gone;      // the side that left while messages for `unkeyed` were stored, or empty
        bool stored = false;   // a message for `unkeyed` was accepted for the offline store
        bool in_vault = false; // the vault refuses a pair with a user who is not registered yet
    };

    /// Key the pair (KEYGEN to whoever of them is online). `b` offline and not registered: with
    /// `registered_only` nothing is keyed (returns false: no messages are stored for a name nobody has).
    bool assign_key_locked(const std::string& a, const std::string& b, bool registered_only = false);
    /// Store the pair's key in the vault. Errc::user_not_found when one of them is not registered (yet); other
    /// errors are logged; an error without a vault.
    Status vault_put_locked(const Pair& pair, ByteView key);
    void end_conversation_locked(const Pair& pair, const std::string& leaver);
    /// `user` left the conversation `pair` (close or dropped connection).
    void depart_locked(const Pair& pair, const std::string& user);
    void send_keygen_locked(const std::string& user, const std::string& peer, SuiteId suite, ByteView key);
    /// The keys of `device.user`'s keyed conversations (from the vault) to `device` alone: a device that attaches
    /// while another device of its user holds them (docs/architecture.md, "Server-assigned mode").
    void key_device_locked(const MailboxId& device);
    void unindex_locked(const std::string& user, const Pair& pair);
    void ack_locked(const std::string& user, AckStage stage, const std::string& peer);
    /// ack_init 2 to the users waiting for `user` if it is shown (they stop waiting), and keys for those pairs.
    void tell_waiters_locked(const std::string& user);
    /// Online (any node) and shown (the presence predicate).
    [[nodiscard]] bool shown_online_locked(const std::string& user) const;

    RoutingBus& m_bus;
    SuitePolicy m_policy;
    auth::ConversationKeyVault* m_vault;
    Rng& m_rng;
    WallClock m_wall;
    Log m_log;
    Shown m_shown;

    mutable std::mutex m_mutex;
    std::map<std::string, std::set<std::string>> m_waiting;  // user -> peers they wait for
    std::map<Pair, Conversation> m_conversations;            // pairs that have a key (the seed's True)
    std::map<std::string, std::set<Pair>> m_offline_for;     // user -> pairs keyed while they were offline
    std::set<Pair> m_key_release;                            // ended: vault key to remove if nothing needs it
    std::set<Pair> m_key_parked;                             // ended, messages stored: until one side drains
    std::uint64_t m_next_epoch = 1;  // key epochs only grow (from the wall clock at start, so across restarts too)
    std::atomic<std::uint64_t> m_routed{0};     // counters on the message path: no lock
    std::atomic<std::uint64_t> m_delivered{0};
    std::map<Errc, std::uint64_t> m_refused;  // by reason: bounded by the codes of Errc
};

}  // namespace sim::server_detail
