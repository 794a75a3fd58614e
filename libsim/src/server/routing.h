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
};

/// Whether any device of `user` is attached.
bool online(RoutingBus& bus, const std::string& user);
/// Carry `frame` to every attached device of `user`; false when none is attached.
bool deliver_to_user(RoutingBus& bus, const std::string& user, const Frame& frame);

/// The in-process implementation: one node, a map from mailbox to connection.
std::unique_ptr<RoutingBus> make_local_bus();

}  // namespace sim::server_detail
