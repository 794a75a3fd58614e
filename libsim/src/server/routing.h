#pragma once
// Private: the routing seam of the server core (docs/architecture.md, "Routing"). It answers whether a mailbox is
// attached to a connection, and carries a frame to that connection. The router (presence, conversations) and the
// delivery (mailboxes) reach connections only through it, so that an implementation over a broker between several
// server nodes can replace the in-process one without touching them.
//
// A mailbox is a device's (user, device): a connection serves one device, and a user is present while any of their
// devices is attached. Implementations are thread-safe and call no Peer while holding their own lock (their lock is
// a leaf: callers may hold theirs).

#include <sim/frame.h>
#include <sim/messages.h>
#include <sim/server.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace sim::server_detail {

/// A device's mailbox (docs/protocol.md 6.7), and the address the bus carries frames to.
struct MailboxId {
    std::string user;
    DeviceId device = first_device;
    friend auto operator<=>(const MailboxId&, const MailboxId&) = default;
};

/// Counters of the traffic between nodes (sim/server.h; all zero for the in-process bus).
using BusStats = BrokerStats;

/// A logged-in connection as the core sees it.
class Peer {
public:
    virtual ~Peer() = default;
    /// Seal and queue an inner frame to this connection (takes only the connection's send lock).
    virtual void deliver(const Frame& frame) = 0;
    /// Send an error frame and close the connection.
    virtual void kick(Errc code, std::string_view detail) = 0;
};

class RoutingBus {
public:
    virtual ~RoutingBus() = default;
    /// `peer` now holds `mailbox`. Returns the connection of this node it displaced, if any (the caller closes it;
    /// an implementation spanning nodes tells the node that held it).
    virtual std::shared_ptr<Peer> attach(const MailboxId& mailbox, const std::shared_ptr<Peer>& peer) = 0;
    /// `peer` lets go of `mailbox`; false (and nothing changes) when another connection holds it now.
    virtual bool detach(const MailboxId& mailbox, const Peer* peer) = 0;
    /// Carry `frame` to the connection holding `mailbox`; false when none does (what is stored stays stored).
    virtual bool deliver(const MailboxId& mailbox, const Frame& frame) = 0;
    /// Whether a connection holds `mailbox`.
    [[nodiscard]] virtual bool attached(const MailboxId& mailbox) = 0;
    /// The devices of `user` that a connection holds, in increasing order (the user's presence: none = offline).
    [[nodiscard]] virtual std::vector<DeviceId> attached_devices(const std::string& user) = 0;
    /// The connection of this node that holds `mailbox`, or null: for the work only the holding node does
    /// (draining the mailbox into it, telling one connection from another).
    [[nodiscard]] virtual std::shared_ptr<Peer> local(const MailboxId& mailbox) = 0;
    /// The mailboxes attached here, sorted.
    [[nodiscard]] virtual std::vector<MailboxId> attached_here() = 0;
    /// Let go of everything attached here; returns those connections (shutdown closes them).
    virtual std::vector<std::shared_ptr<Peer>> detach_all() = 0;

    /// Called when another node has committed messages for a mailbox attached here: drain it from the store. Runs
    /// on the bus's thread and must not block (hand the work to a worker).
    using Woken = std::function<void(const MailboxId&)>;
    /// Set the handler of wake-ups (once, before any connection attaches). The in-process bus never calls it.
    virtual void on_woken(Woken handler) { (void)handler; }
    /// Messages for `mailbox`, which no connection of this node holds, have just been committed to the store: tell
    /// the node that holds it, if any, to drain it (docs/architecture.md, "Routing over NATS"). Returns at once:
    /// never waits for the network; call it without holding a mailbox's lock. The in-process bus does nothing
    /// (every connection is here, and the commit's own completion drains it).
    virtual void wake(const MailboxId& mailbox) { (void)mailbox; }
    /// Wait briefly (a round trip to the broker at most) until this node's attachments so far can be woken: called
    /// before a login reads the store, so that a commit on another node after that read cannot miss the device. No
    /// lock may be held (it may wait for the network). The in-process bus returns at once.
    virtual void sync_attachments() {}
    /// The counters of traffic between nodes.
    [[nodiscard]] virtual BusStats stats() { return {}; }
};

/// Whether any device of `user` is attached.
bool online(RoutingBus& bus, const std::string& user);
/// Carry `frame` to every attached device of `user`; false when none is attached.
bool deliver_to_user(RoutingBus& bus, const std::string& user, const Frame& frame);

/// The in-process implementation: one node, a map from mailbox to connection.
std::unique_ptr<RoutingBus> make_local_bus();

/// Settings of the bus over NATS between several server nodes (docs/architecture.md, "Routing over NATS").
struct NatsBusOptions {
    /// The NATS servers, comma-separated ("nats://10.0.0.1:4222,nats://10.0.0.2:4222").
    std::string servers;
    /// This node's name, unique among the nodes (logs and announcements; each start adds a random instance id).
    std::string node_id;
    /// How often this node says it is alive; a node not heard from for three of them is gone, with its devices. A
    /// node that could not say it for three of them (stopped, starved) has lost its devices to the others' view: it
    /// closes every connection it holds before it serves again (docs/architecture.md, "Routing over NATS").
    std::chrono::milliseconds heartbeat{1000};
    /// How long a first connection to NATS may take.
    std::chrono::milliseconds connect_timeout{2000};
    /// A wake-up not answered within this is counted as timed out (the message stays in SQL either way).
    std::chrono::milliseconds wake_timeout{2000};
    /// How often the NATS client pings its server, and how many pings may go unanswered before it drops that
    /// server and moves to another of `servers`: a hung NATS server is left within about 4 s (libnats' defaults,
    /// 2 min and 2, would take minutes).
    std::chrono::milliseconds ping_interval{1000};
    int max_pings_out = 3;
    /// A device attached here (a login, or this node back on NATS) has its mailbox drained once more this much
    /// later. A NATS cluster spreads a new subscription to its other servers asynchronously, so a commit on a node
    /// connected to another server can meet "no responders" just after this node has read the mailbox; without the
    /// second look that message would wait for the next wake-up or login.
    std::chrono::milliseconds second_look{500};
    std::function<void(LogLevel, std::string_view)> log;
};

/// The bus over NATS: connections attached here are served as by the in-process bus; the devices attached on other
/// nodes are learnt from their announcements, and frames for them are published to their node. Errc::io_error when
/// no NATS server answers, Errc::not_implemented when libsim was built without libnats, Errc::invalid_argument for
/// empty servers or node id.
Result<std::unique_ptr<RoutingBus>> make_nats_bus(const NatsBusOptions& options);

}  // namespace sim::server_detail
