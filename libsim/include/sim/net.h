#pragma once
/// @file
/// The Asio adapter: TCP listeners and connections that drive libsim's sans-IO cores through `sim/transport.h`.
/// No protocol logic lives here, and no Asio type appears in this header.

#include <sim/clock.h>
#include <sim/error.h>
#include <sim/transport.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace sim::net {

/// Limits applied to every connection by the transport.
struct ConnectionLimits {
    /// Close a connection whose handshake has not finished after this long. Zero = never.
    Duration handshake_timeout = std::chrono::seconds(10);
    /// Close a connection that has not logged in this long after its handshake (ConnectionOutput::authenticated).
    /// Absolute: bytes, even a frame that never completes, do not extend it. Zero = no login deadline (clients).
    Duration login_timeout = std::chrono::seconds(10);
    /// Close a logged-in connection that sent nothing for this long (clients send keepalives). Zero = never.
    Duration idle_timeout = std::chrono::seconds(120);
    /// Close a connection whose unsent output exceeds this many bytes (a peer that does not read).
    std::size_t max_queued_bytes = 4U << 20U;
    /// Bytes read from the socket at a time.
    std::size_t read_chunk = 16U << 10U;
};

struct ServerOptions {
    /// Address to listen on; loopback by default.
    std::string address = "127.0.0.1";
    /// Port; 0 picks a free one (see TcpServer::port()).
    std::uint16_t port = 0;
    /// I/O threads; 0 = one per hardware thread.
    std::size_t io_threads = 0;
    /// Threads for slow work (password hashing), and how many jobs may wait for them.
    std::size_t worker_threads = 2;
    std::size_t worker_queue = 1024;
    /// Nice value added to the worker threads (Linux: per thread; 0 = same priority as the I/O threads). Password
    /// hashes saturate every core during a login storm; at +10 the scheduler gives the I/O threads about ten times
    /// the workers' share, so routing latency stays low while logins wait a little longer.
    int worker_nice = 10;
    /// Further connections are refused (closed at once) beyond this many.
    std::size_t max_connections = 10000;
    /// Most connections from one source: an IPv4 address, or an IPv6 /64 (one subscriber's usual prefix). Zero = no
    /// limit.
    std::size_t max_connections_per_address = 32;
    /// Most connections that have not logged in yet (handshake or login under way), so that a flood of
    /// connections without an account cannot take the slots of users who logged in. Zero = 3/4 of
    /// max_connections.
    std::size_t max_unauthenticated = 0;
    /// Refused connections are logged through `log` at most once per this interval per source.
    Duration refusal_log_interval = std::chrono::seconds(60);
    /// Where the transport's own log lines go (refused connections); none by default.
    std::function<void(std::string_view)> log;
    ConnectionLimits limits{};
};

/// Creates the protocol handler of a new connection. `peer` is "address:port".
using HandlerFactory =
    std::function<std::shared_ptr<ConnectionHandler>(std::shared_ptr<ConnectionOutput> output, const std::string& peer)>;

/// A bounded pool of worker threads (an Executor).
class WorkerPool final : public Executor {
public:
    /// `nice` is added to each worker thread's nice value where the OS allows per-thread priorities (Linux);
    /// failures to change it are ignored (the pool still works).
    WorkerPool(std::size_t threads, std::size_t max_queue, int nice = 0);
    ~WorkerPool() override;
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;
    [[nodiscard]] bool submit(std::function<void()> job) override;
    /// Finish queued jobs and join the threads (also done by the destructor).
    void stop();

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

/// Accepts TCP connections and runs one handler per connection on a pool of I/O threads.
class TcpServer {
public:
    /// Bind, listen and start the threads. Errc::io_error (with the OS message) when the address cannot be bound.
    static Result<std::unique_ptr<TcpServer>> start(const ServerOptions& options, HandlerFactory factory);
    ~TcpServer();
    TcpServer(const TcpServer&) = delete;
    TcpServer& operator=(const TcpServer&) = delete;

    /// The port actually bound.
    [[nodiscard]] std::uint16_t port() const noexcept;
    /// Open connections right now.
    [[nodiscard]] std::size_t connection_count() const noexcept;
    /// Of those, the ones that have not logged in yet (ConnectionOutput::authenticated not yet taken effect).
    [[nodiscard]] std::size_t unauthenticated_count() const;
    /// The worker pool for slow jobs.
    Executor& workers() noexcept;
    /// Stop accepting, close every connection, join all threads. Idempotent.
    void stop();

private:
    struct Impl;
    explicit TcpServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

/// I/O threads that many outgoing connections share: give the same pool to any number of TcpClients (through
/// ConnectOptions::pool) and N threads serve them all, each connection's handler still called from one strand at a
/// time. Without a pool every TcpClient runs on a thread of its own.
class IoPool {
public:
    /// Start `threads` I/O threads (0 is taken as 1).
    explicit IoPool(std::size_t threads);
    /// stop().
    ~IoPool();
    IoPool(const IoPool&) = delete;
    IoPool& operator=(const IoPool&) = delete;

    /// The threads the pool was started with.
    [[nodiscard]] std::size_t thread_count() const noexcept;
    /// Stop and join the threads. Connections still on the pool are not served any more and their handlers get no
    /// further call, not even on_closed (close them and let them finish first). Idempotent. Called on one of the
    /// pool's own threads, that thread is left to finish its current job by itself.
    void stop();

private:
    friend class TcpClient;
    struct Impl;
    std::unique_ptr<Impl> m_impl;
};

/// How one outgoing connection (TcpClient) is made. Not to be confused with sim::ClientOptions, the options of the
/// blocking sim::Client (which fills one of these for its connection).
struct ConnectOptions {
    /// Give up connecting after this long (Errc::timeout).
    Duration connect_timeout = std::chrono::seconds(10);
    /// Clients keep their own connection alive, so by default they have no idle timeout.
    ConnectionLimits limits{.handshake_timeout = std::chrono::seconds(10),
                            .login_timeout = Duration::zero(),
                            .idle_timeout = Duration::zero()};
    /// The I/O threads the connection runs on, shared with other connections; null = a thread of its own, started
    /// when the client is created and joined by close(). A client keeps its pool alive; stopping the pool stops
    /// serving its clients (close them first).
    std::shared_ptr<IoPool> pool;
    /// A numeric local address to bind before connecting (the port is still the OS's choice); empty = the OS picks
    /// the address too. Spreading many connections over 127.0.x.y keeps them from running out of one address's
    /// ephemeral ports.
    std::string source_address;
};

/// One outgoing TCP connection driving one handler, on a thread of its own or on an IoPool's threads.
class TcpClient {
public:
    /// Called once, on the connection's strand, when a connection started by connect_async is made or not: ok() after
    /// the factory's handler was attached (it is called next on the same strand, so the handler sees no bytes before
    /// this returns); else Errc::io_error (resolve or connect failed, with the OS message), Errc::timeout, or
    /// Errc::closed (close() came first, or the factory returned no handler).
    using ConnectCallback = std::function<void(Status)>;

    /// Resolve and connect, waiting until done. Errc::io_error or Errc::timeout on failure; Errc::invalid_argument for
    /// a bad source address. Not to be called from a thread of `options.pool` (it waits for that pool).
    static Result<std::unique_ptr<TcpClient>> connect(const std::string& host, std::uint16_t port,
                                                      const ConnectOptions& options, HandlerFactory factory);
    /// A client that is not connected yet: post() works at once (everything posted runs on the strand the
    /// connection's handler will run on); connect_async() starts the connection. Errc::invalid_argument for a bad
    /// source address.
    static Result<std::unique_ptr<TcpClient>> create(const ConnectOptions& options);
    /// Start resolving and connecting and return at once; `done` says how it went (see ConnectCallback). Once per
    /// client: Errc::invalid_state on a second call or after close().
    Status connect_async(const std::string& host, std::uint16_t port, HandlerFactory factory, ConnectCallback done);
    ~TcpClient();
    TcpClient(const TcpClient&) = delete;
    TcpClient& operator=(const TcpClient&) = delete;

    /// Run `job` on the connection's strand, one at a time with the handler's on_bytes / on_closed: where an
    /// application calls into a handler that is not thread-safe. Also after close(), as long as the threads run.
    void post(std::function<void()> job);
    /// post() at `when` (steady clock), or at once if that has passed.
    void post_at(TimePoint when, std::function<void()> job);
    /// Close the connection (queued output is flushed first; a connect under way is abandoned) and wait until the
    /// handler has had on_closed (or the connect callback its error), except when called on one of the connection's
    /// own I/O threads; then stop the client's own thread, if it has one. Idempotent.
    void close();

private:
    struct Impl;
    explicit TcpClient(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace sim::net
