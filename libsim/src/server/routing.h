#pragma once
// Private: the routing seam of the server core (docs/architecture.md, "Routing"). It answers whether a mailbox is
// attached to a connection, and carries a frame to that connection. The router (presence, conversations) and the
// delivery (mailboxes) reach connections only through it, so that an implementation over a broker between several
// server nodes can replace the in-process one without touching them.
//
// A mailbox id is opaque to the seam: today the user name (one device per user), a device's address once accounts
// have several. Implementations are thread-safe and call no Peer while holding their own lock (their lock is a leaf:
// callers may hold theirs).

#include <sim/frame.h>

#include <memory>
#include <string>
#include <vector>

namespace sim::server_detail {

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
    virtual std::shared_ptr<Peer> attach(const std::string& mailbox, const std::shared_ptr<Peer>& peer) = 0;
    /// `peer` lets go of `mailbox`; false (and nothing changes) when another connection holds it now.
    virtual bool detach(const std::string& mailbox, const Peer* peer) = 0;
    /// Carry `frame` to the connection holding `mailbox`; false when none does (what is stored stays stored).
    virtual bool deliver(const std::string& mailbox, const Frame& frame) = 0;
    /// Whether a connection holds `mailbox` (presence).
    [[nodiscard]] virtual bool attached(const std::string& mailbox) = 0;
    /// The connection of this node that holds `mailbox`, or null: for the work only the holding node does
    /// (draining the mailbox into it, telling one connection from another).
    [[nodiscard]] virtual std::shared_ptr<Peer> local(const std::string& mailbox) = 0;
    /// The mailboxes attached here, sorted.
    [[nodiscard]] virtual std::vector<std::string> attached_here() = 0;
    /// Let go of everything attached here; returns those connections (shutdown closes them).
    virtual std::vector<std::shared_ptr<Peer>> detach_all() = 0;
};

/// The in-process implementation: one node, a map from mailbox to connection.
std::unique_ptr<RoutingBus> make_local_bus();

}  // namespace sim::server_detail
