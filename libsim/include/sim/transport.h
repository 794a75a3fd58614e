#pragma once
/// @file
/// The seam between libsim's sans-IO protocol cores and whatever moves bytes (the Asio adapter in
/// `sim/net.h`, or an in-memory pipe in tests). The cores never touch a socket, a thread or a timer.

#include <sim/bytes.h>
#include <sim/error.h>

#include <functional>
#include <memory>
#include <vector>

namespace sim {

/// What a core may ask of the transport for one connection. Implemented by the I/O layer.
/// All methods are thread-safe and never block.
class ConnectionOutput {
public:
    virtual ~ConnectionOutput() = default;
    /// Queue bytes for the peer. When the connection's outgoing queue is over its bound the transport closes the
    /// connection (Errc::queue_full) instead of growing without limit.
    virtual void send(Bytes data) = 0;
    /// Send what is queued, then close. `reason` is for logs only.
    virtual void close(Errc reason) = 0;
    /// The handshake finished: the transport stops the handshake timer and starts the login deadline (a server
    /// connection) or the idle timer.
    virtual void established() = 0;
    /// The peer logged in (server side): the transport stops the login deadline, starts the idle timer and counts
    /// the connection as authenticated from now on (sim::net keeps a share of its slots for those).
    virtual void authenticated() = 0;
};

/// What the transport feeds into a core for one connection. Implemented by the cores.
/// The transport calls on_bytes and on_closed from one strand at a time per connection.
class ConnectionHandler {
public:
    virtual ~ConnectionHandler() = default;
    /// Bytes arrived from the peer (any split).
    virtual void on_bytes(ByteView data) = 0;
    /// The connection is gone (peer closed, error, timeout or shutdown). Called once; no calls follow.
    virtual void on_closed(Errc reason) = 0;
};

/// Runs slow work (password hashing) away from the I/O threads. Implemented by the I/O layer (a bounded worker
/// pool) or inline in tests.
class Executor {
public:
    virtual ~Executor() = default;
    /// Run `job` later on a worker. Returns false (and does not run it) when the pool's queue is full.
    [[nodiscard]] virtual bool submit(std::function<void()> job) = 0;
};

}  // namespace sim
