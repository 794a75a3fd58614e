#pragma once
// Private: presence of the server core (docs/protocol.md 6.10, docs/architecture.md "Presence"). Who is a contact
// of whom, who hides, which connections want to hear of changes, and the `presence` frames that tell them.
//
// Contacts: a pair becomes contacts once each side has named the other (an `init` with the other as destination,
// or a message to the other accepted), so nobody learns a stranger's presence by naming them. Each pair is recorded
// in the contact store (the server's database: it survives a restart and is shared by the nodes on it), and a
// user's pairs are read from it once per process, the first time the user is looked at. One-sided "named" entries
// stay in memory only (a restart forgets them; the next init or message names again).
//
// A user is shown online while at least one of their active devices is "present" here (attached on this node and,
// when its connection speaks presence, after it said whether the user hides) and the user does not hide. Devices
// on other nodes are not counted: their hidden flag is not known here (fail closed: they look offline).
//
// Thread-safe. Lock order: a connection's receive lock -> the router's lock -> the presence lock -> a connection's
// send lock. The presence lock is taken with a connection's receive lock held, or inside the router's (only by
// visible(), the router's predicate for ack_init 2); it is held while a subscribed connection's deliver() runs
// (that takes only the connection's send lock), and never while the contact store is called or the router's lock
// is taken: store reads and writes happen before the lock is taken or after it is released.

#include "routing.h"

#include "../proto/presence.h"

#include <sim/frame.h>
#include <sim/server.h>
#include <sim/store.h>

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace sim::server_detail {

class Presence {
public:
    /// Most contacts (and one-way "named" entries) kept per user; more are not recorded.
    static constexpr std::size_t default_max_contacts = store::default_max_contacts;
    using Log = std::function<void(LogLevel, std::string_view)>;

    /// `contacts` may be null: contacts are then kept in memory only (lost at a restart). Store errors are
    /// logged through `log` (a pair not recorded is still a pair in memory; a user whose pairs could not be read
    /// is read again next time).
    explicit Presence(store::ContactStore* contacts = nullptr, std::size_t max_contacts = default_max_contacts,
                      Log log = {})
        : m_store(contacts), m_max(max_contacts), m_log(std::move(log)) {}

    /// `from` named `to` (an init with `to` as destination, or a message to `to` accepted). When `to` had named
    /// `from` before, they become contacts, and each subscribed side is told the other's presence.
    void named(const std::string& from, const std::string& to);
    /// `device` is active on `connection` (a login). `counts`: the device counts as online from now on (a
    /// connection that does not speak presence); else from its `set`, which says whether the user hides. A
    /// connection that displaces an older one of the device keeps its standing meanwhile (no flicker). Contacts are
    /// told when the user becomes visible.
    void attached(const MailboxId& device, const Peer* connection, bool counts);
    /// A connection of `device` that speaks presence sent op `set`: it hears its contacts' presence from now on
    /// (a snapshot now, in frames of at most max_presence_entries), and the user hides or shows.
    void subscribe(const MailboxId& device, const std::shared_ptr<Peer>& connection, bool hidden);
    /// `connection` of `device` is gone (a newer connection of the device keeps its own state). Contacts are told
    /// when the user is no longer visible.
    void gone(const MailboxId& device, const Peer* connection);
    /// The answer to op `query` from `asker` about `about`: online only for a visible contact; a stranger and an
    /// offline contact get the same answer.
    [[nodiscard]] Frame query(const std::string& asker, const std::string& about);
    /// Whether `user` is shown online: a device counts here and the user does not hide (what a contact is told).
    [[nodiscard]] bool visible(const std::string& user);
    /// Whether `a` and `b` are contacts.
    [[nodiscard]] bool contacts(const std::string& a, const std::string& b);
    /// `user`'s contacts known on this node, in name order (who hears of `user`'s device list changes, 6.9).
    [[nodiscard]] std::vector<std::string> contacts_of(const std::string& user);

private:
    /// Read `user`'s pairs from the store, once per process (without the lock held while reading).
    void load(const std::string& user);
    /// named() under the lock: whether the pair became contacts now.
    bool named_locked(const std::string& from, const std::string& to);
    [[nodiscard]] bool visible_locked(const std::string& user) const;
    /// Tell `user`'s subscribed contacts when what they were last told differs.
    void publish_locked(const std::string& user);
    void tell_locked(const std::string& subscriber, const std::vector<PresenceEntry>& entries);
    static Frame status_frame(const std::string& to, const std::vector<PresenceEntry>& entries);

    store::ContactStore* m_store;
    std::size_t m_max;
    Log m_log;
    std::mutex m_mutex;
    std::set<std::string> m_loaded;                           // users whose pairs were read from the store
    std::map<std::string, std::set<std::string>> m_named;     // user -> users they named
    std::map<std::string, std::set<std::string>> m_contacts;  // symmetric
    std::set<std::string> m_hidden;
    struct Device {
        const Peer* connection = nullptr;  // the connection serving it (identity only, never called)
        bool counts = false;               // online for presence (see attached())
    };
    std::map<std::string, std::map<DeviceId, Device>> m_present;  // user -> devices attached here
    std::map<MailboxId, std::weak_ptr<Peer>> m_subscribers;   // connections that sent `set`
    std::set<std::string> m_shown_online;                     // users whose contacts were last told "online"
};

}  // namespace sim::server_detail
