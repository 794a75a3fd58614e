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

/// How one outgoing connection (TcpClient) is made. Not to be confused with sim::ClientOptions, the options of the
/// blocking sim::Client (which fills one of these for its connection).
struct ConnectOptions {
    /// Give up connecting after this long (Errc::timeout).
    Duration connect_timeout = std::chrono::seconds(10);
    /// Clients keep their own connection alive, so by default they have no idle timeout.
    ConnectionLimits limits{.handshake_timeout = std::chrono::seconds(10),
                            .login_timeout = Duration::zero(),
                            .idle_timeout = Duration::zero()};
};

/// One outgoing TCP connection with its own I/O thread, driving one handler.
class TcpClient {
public:
    /// Resolve and connect. Errc::io_error or Errc::timeout on failure.
    static Result<std::unique_ptr<TcpClient>> connect(const std::string& host, std::uint16_t port,
                                                      const ConnectOptions& options, HandlerFactory factory);
    ~TcpClient();
    TcpClient(const TcpClient&) = delete;
    TcpClient& operator=(const TcpClient&) = delete;

    /// Close the connection (queued output is flushed first) and join the thread. Idempotent.
    void close();

private:
    struct Impl;
    explicit TcpClient(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

}  // namespace sim::net
