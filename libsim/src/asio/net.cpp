// The Asio adapter: sockets, strands, timers and worker threads. No protocol logic lives here.
#include <sim/net.h>

#include <asio.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>
#include <vector>

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#endif

namespace sim::net {

// ---------------------------------------------------------------- worker pool

struct WorkerPool::Impl {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<std::function<void()>> jobs;
    std::vector<std::thread> threads;
    std::size_t max_queue = 0;
    bool stopping = false;

    void run() {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mutex);
                cv.wait(lock, [&] { return stopping || !jobs.empty(); });
                if (jobs.empty()) {
                    return;  // stopping and drained
                }
                job = std::move(jobs.front());
                jobs.pop_front();
            }
            job();
        }
    }
};

WorkerPool::WorkerPool(std::size_t threads, std::size_t max_queue, int nice) : m_impl(std::make_unique<Impl>()) {
    m_impl->max_queue = max_queue;
    const std::size_t n = threads == 0 ? 1 : threads;
    for (std::size_t i = 0; i < n; ++i) {
        m_impl->threads.emplace_back([impl = m_impl.get(), nice] {
#ifdef __linux__
            if (nice != 0) {
                // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value only.
                const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
                errno = 0;
                const int current = ::getpriority(PRIO_PROCESS, tid);
                if (errno == 0) {
                    (void)::setpriority(PRIO_PROCESS, tid, current + nice);
                }
            }
#endif
            impl->run();
        });
    }
}

WorkerPool::~WorkerPool() { stop(); }

bool WorkerPool::submit(std::function<void()> job) {
    {
        const std::lock_guard lock(m_impl->mutex);
        if (m_impl->stopping || m_impl->jobs.size() >= m_impl->max_queue) {
            return false;
        }
        m_impl->jobs.push_back(std::move(job));
    }
    m_impl->cv.notify_one();
    return true;
}

void WorkerPool::stop() {
    {
        const std::lock_guard lock(m_impl->mutex);
        m_impl->stopping = true;
    }
    m_impl->cv.notify_all();
    for (auto& t : m_impl->threads) {
        if (t.joinable()) {
            t.join();
        }
    }
    m_impl->threads.clear();
}

// ---------------------------------------------------------------- one connection

namespace {

using asio::ip::tcp;

Errc errc_from(const asio::error_code& ec) {
    if (ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
        ec == asio::error::broken_pipe) {
        return Errc::closed;
    }
    return Errc::io_error;
}

/// What a server learns about one of its connections (both called on the connection's strand, at most once).
struct SlotHooks {
    std::function<void()> on_authenticated;
    /// The connection is gone; the argument says whether it had logged in.
    std::function<void(bool authenticated)> on_gone;
};

class Connection final : public ConnectionOutput, public std::enable_shared_from_this<Connection> {
public:
    /// `io` owns the context the socket belongs to: a Connection may outlive its server or client object (an
    /// application can hold its ConnectionOutput), and its socket and timer must be destroyed before the context.
    /// `own_read_buffer`: read straight into a buffer of the connection's own (see read_own()), not through a
    /// per-thread one.
    Connection(std::shared_ptr<asio::io_context> io, tcp::socket socket, const ConnectionLimits& limits,
               SlotHooks hooks, bool own_read_buffer = false)
        : m_io(std::move(io)),
          m_socket(std::move(socket)),
          m_timer(m_socket.get_executor()),
          m_limits(limits),
          m_hooks(std::move(hooks)) {
        if (m_limits.read_chunk == 0) {
            m_limits.read_chunk = 4096;
        }
        if (own_read_buffer) {
            m_read_buffer.resize(m_limits.read_chunk);
        }
    }

    /// Attach the handler and start reading; a null handler closes the connection. Called exactly once, by whoever
    /// made the connection. The handler is attached on the strand, and until then finish() tells no one: the
    /// connection may be closed or aborted before this runs (TcpServer::stop() aborts every connection in its
    /// table, which this one joined before its handler was made; a handler may close from its constructor). A
    /// finish() that ran first could neither tell the handler nor let it go, and the handler holds this
    /// connection: the pair, and through m_io the io_context, kept each other alive for ever.
    void start(std::shared_ptr<ConnectionHandler> handler) {
        asio::post(m_socket.get_executor(), [self = shared_from_this(), handler = std::move(handler)]() mutable {
            self->m_handler = std::move(handler);
            self->m_started = true;
            if (self->m_finished) {
                self->tell_gone();  // finish() ran before the handler was attached
                return;
            }
            if (!self->m_handler) {
                self->finish(Errc::closed);
                return;
            }
            // Reads go through a per-thread buffer (see drain()), which needs a non-blocking socket.
            asio::error_code ec;
            self->m_socket.non_blocking(true, ec);
            if (ec) {
                self->finish(errc_from(ec));
                return;
            }
            self->m_last_read = std::chrono::steady_clock::now();
            // established() may already have run (a handler can call it from its constructor).
            if (self->m_stage == Stage::handshake) {
                self->arm_timer(self->m_limits.handshake_timeout);
            }
            if (self->m_read_buffer.empty()) {
                self->wait_readable();
            } else {
                self->read_own();
            }
        });
    }

    void send(Bytes data) override {
        bool start_writing = false;
        bool overflow = false;
        {
            const std::lock_guard lock(m_mutex);
            if (m_close_requested || m_finished) {
                return;
            }
            m_queued_bytes += data.size();
            if (m_limits.max_queued_bytes != 0 && m_queued_bytes > m_limits.max_queued_bytes) {
                overflow = true;
            } else {
                m_queue.push_back(std::move(data));
                start_writing = !m_writing;
                m_writing = m_writing || start_writing;
            }
        }
        if (overflow) {
            abort(Errc::queue_full);
        } else if (start_writing) {
            asio::post(m_socket.get_executor(), [self = shared_from_this()] { self->write_next(); });
        }
    }

    void close(Errc reason) override {
        bool shut_now = false;
        {
            const std::lock_guard lock(m_mutex);
            if (m_close_requested) {
                return;
            }
            m_close_requested = true;
            m_close_reason = reason;
            shut_now = !m_writing;
        }
        if (shut_now) {
            asio::post(m_socket.get_executor(), [self = shared_from_this(), reason] { self->finish(reason); });
        }
    }

    void established() override {
        asio::post(m_socket.get_executor(), [self = shared_from_this()] {
            if (self->m_stage != Stage::handshake) {
                return;
            }
            if (self->m_limits.login_timeout > Duration::zero()) {
                self->m_stage = Stage::login;
                self->arm_timer(self->m_limits.login_timeout);
            } else {
                self->enter_open();
            }
        });
    }

    void authenticated() override {
        asio::post(m_socket.get_executor(), [self = shared_from_this()] {
            if (self->m_authenticated || self->m_finished) {
                return;
            }
            self->m_authenticated = true;
            if (self->m_hooks.on_authenticated) {
                self->m_hooks.on_authenticated();
            }
            self->enter_open();
        });
    }

    /// Close at once without flushing (queue overflow, shutdown).
    void abort(Errc reason) {
        {
            const std::lock_guard lock(m_mutex);
            m_close_requested = true;
            m_queue.clear();
        }
        asio::post(m_socket.get_executor(), [self = shared_from_this(), reason] { self->finish(reason); });
    }

private:
    // An idle connection holds no read buffer: it waits for readability, then reads into a buffer owned by the
    // I/O thread and hands the bytes to the handler before the next connection on that thread can run. (With
    // async_read_some every connection would own a read_chunk-sized buffer for as long as it lives.)
    // Asio's async_wait re-arms the edge-triggered epoll registration (EPOLL_CTL_MOD), so bytes that arrived
    // between our last read and the wait still wake us.
    void wait_readable() {
        m_socket.async_wait(tcp::socket::wait_read, [self = shared_from_this()](const asio::error_code& ec) {
            if (self->m_finished) {
                return;
            }
            if (ec) {
                self->finish(errc_from(ec));
                return;
            }
            self->drain();
        });
    }

    // A client's connection reads into its own buffer: one read per wake-up and no re-arming of the socket's epoll
    // registration per read (async_wait costs an EPOLL_CTL_MOD each time), for a read_chunk per connection, which
    // a client with a few connections can spare (a server with many cannot: it uses wait_readable()).
    void read_own() {
        m_socket.async_read_some(asio::buffer(m_read_buffer),
                                 [self = shared_from_this()](const asio::error_code& ec, std::size_t n) {
                                     if (self->m_finished) {
                                         return;
                                     }
                                     if (ec) {
                                         self->finish(errc_from(ec));
                                         return;
                                     }
                                     self->m_last_read = std::chrono::steady_clock::now();
                                     self->m_handler->on_bytes(ByteView{self->m_read_buffer.data(), n});
                                     if (!self->m_finished) {
                                         self->read_own();
                                     }
                                 });
    }

    static std::vector<std::uint8_t>& thread_buffer(std::size_t size) {
        thread_local std::vector<std::uint8_t> buffer;
        if (buffer.size() < size) {
            buffer.resize(size);
        }
        return buffer;
    }

    // Read until the socket would block, at most a few chunks per turn so one busy peer cannot starve the others
    // on this thread; after that, continue in a posted turn (not a wait: the socket may still hold data).
    void drain() {
        constexpr int max_reads_per_turn = 4;
        const std::size_t chunk = m_limits.read_chunk;
        for (int i = 0; i < max_reads_per_turn; ++i) {
            auto& buffer = thread_buffer(chunk);
            asio::error_code ec;
            const std::size_t n = m_socket.read_some(asio::buffer(buffer.data(), chunk), ec);
            if (ec == asio::error::would_block || ec == asio::error::try_again) {
                wait_readable();
                return;
            }
            if (ec) {
                finish(errc_from(ec));
                return;
            }
            m_last_read = std::chrono::steady_clock::now();
            m_handler->on_bytes(ByteView{buffer.data(), n});
            if (m_finished) {
                return;
            }
        }
        asio::post(m_socket.get_executor(), [self = shared_from_this()] {
            if (!self->m_finished) {
                self->drain();
            }
        });
    }

    // Strand only: the idle timer runs from here on.
    void enter_open() {
        if (m_stage == Stage::open) {
            return;
        }
        m_stage = Stage::open;
        m_last_read = std::chrono::steady_clock::now();
        arm_timer(m_limits.idle_timeout);
    }

    // Handshake and login deadlines: absolute (bytes, even a frame that never completes, do not extend them). Idle
    // timeout: measured from the last read. Reads only stamp m_last_read; the timer, when it fires early, waits
    // again for the rest (no timer operation per read).
    void arm_timer(Duration d) {
        if (m_finished) {
            return;
        }
        m_timeout = d;
        if (d <= Duration::zero()) {
            m_timer.cancel();
            return;
        }
        m_timer.expires_after(d);  // a pending wait completes with operation_aborted
        wait_timer();
    }

    void wait_timer() {
        m_timer.async_wait([self = shared_from_this()](const asio::error_code& ec) {
            if (ec || self->m_finished) {
                return;
            }
            if (self->m_stage == Stage::open) {
                const auto quiet = std::chrono::steady_clock::now() - self->m_last_read;
                if (quiet < self->m_timeout) {
                    self->m_timer.expires_after(self->m_timeout - quiet);
                    self->wait_timer();
                    return;
                }
            }
            self->finish(Errc::timeout);
        });
    }

    void write_next() {
        {
            const std::lock_guard lock(m_mutex);
            if (m_finished) {
                return;
            }
            if (m_queue.empty()) {
                m_writing = false;
                if (m_queue.capacity() > 8) {
                    std::vector<Bytes>().swap(m_queue);
                }
                trim_write_vectors();
                if (m_close_requested) {
                    asio::post(m_socket.get_executor(),
                               [self = shared_from_this(), r = m_close_reason] { self->finish(r); });
                }
                return;
            }
            // Everything queued goes out as one gather write (Asio passes up to 64 buffers per sendmsg).
            m_inflight.swap(m_queue);
        }
        m_buffers.clear();
        m_buffers.reserve(m_inflight.size());
        for (const auto& b : m_inflight) {
            m_buffers.emplace_back(b.data(), b.size());
        }
        asio::async_write(m_socket, m_buffers, [self = shared_from_this()](const asio::error_code& ec, std::size_t n) {
            if (ec) {
                self->finish(errc_from(ec));
                return;
            }
            self->m_inflight.clear();
            {
                const std::lock_guard lock(self->m_mutex);
                self->m_queued_bytes -= n;
            }
            self->write_next();
        });
    }

    // After a burst, an idle connection keeps no large vectors of buffer handles.
    void trim_write_vectors() {
        constexpr std::size_t keep = 8;
        if (m_inflight.capacity() > keep) {
            std::vector<Bytes>().swap(m_inflight);
        }
        if (m_buffers.capacity() > keep) {
            std::vector<asio::const_buffer>().swap(m_buffers);
        }
    }

    void finish(Errc reason) {
        if (m_finished) {
            return;
        }
        {
            const std::lock_guard lock(m_mutex);
            m_finished = true;
            m_queue.clear();
        }
        asio::error_code ignored;
        m_timer.cancel();
        m_socket.shutdown(tcp::socket::shutdown_both, ignored);
        m_socket.close(ignored);
        m_finish_reason = reason;
        if (m_started) {
            tell_gone();
        }
    }

    // Strand only, once: after finish() and start(), whichever ran last.
    void tell_gone() {
        if (m_handler) {
            m_handler->on_closed(m_finish_reason);
            m_handler.reset();  // breaks the handler <-> output cycle
        }
        if (m_hooks.on_gone) {
            m_hooks.on_gone(m_authenticated);
        }
    }

    std::shared_ptr<asio::io_context> m_io;  // first member: destroyed last
    tcp::socket m_socket;
    asio::steady_timer m_timer;
    ConnectionLimits m_limits;
    Duration m_timeout{};                               // strand only: the timer's current limit
    std::chrono::steady_clock::time_point m_last_read;  // strand only
    SlotHooks m_hooks;
    std::shared_ptr<ConnectionHandler> m_handler;
    enum class Stage : std::uint8_t { handshake, login, open };
    Stage m_stage = Stage::handshake;  // strand only
    bool m_authenticated = false;      // strand only
    bool m_finished = false;     // written on the strand; read under m_mutex by send()
    bool m_started = false;      // strand only: start()'s turn has run (the handler is attached)
    Errc m_finish_reason = Errc::closed;  // strand only: what finish() was called with

    std::mutex m_mutex;  // guards the queue and the flags below
    std::vector<Bytes> m_queue;  // a vector, not a deque: an empty deque still holds a 512-byte block
    std::size_t m_queued_bytes = 0;
    bool m_writing = false;
    bool m_close_requested = false;
    Errc m_close_reason = Errc::closed;

    std::vector<Bytes> m_inflight;           // strand only
    std::vector<asio::const_buffer> m_buffers;  // strand only
    std::vector<std::uint8_t> m_read_buffer;    // strand only; empty: reads use the I/O thread's buffer
};

std::string peer_name(const tcp::socket& s) {
    asio::error_code ec;
    const auto ep = s.remote_endpoint(ec);
    if (ec) {
        return "unknown";
    }
    return ep.address().to_string() + ":" + std::to_string(ep.port());
}

/// The source a connection is counted against: an IPv4 address (also when mapped into IPv6), or an IPv6 /64.
std::string source_key(const tcp::socket& s) {
    asio::error_code ec;
    const auto ep = s.remote_endpoint(ec);
    if (ec) {
        return "unknown";
    }
    auto address = ep.address();
    if (address.is_v6() && address.to_v6().is_v4_mapped()) {
        return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
    }
    if (address.is_v4()) {
        return address.to_string();
    }
    auto bytes = address.to_v6().to_bytes();
    std::fill(bytes.begin() + 8, bytes.end(), 0);
    return asio::ip::address_v6(bytes).to_string() + "/64";
}

}  // namespace

// ---------------------------------------------------------------- server

struct TcpServer::Impl {
    std::shared_ptr<asio::io_context> io_owner = std::make_shared<asio::io_context>();
    asio::io_context& io = *io_owner;
    // The acceptor, its handlers, its retry timer and its close run on one strand: never two at once.
    asio::strand<asio::io_context::executor_type> accept_strand = asio::make_strand(io);
    tcp::acceptor acceptor{accept_strand};
    asio::steady_timer accept_retry{accept_strand};
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
    std::vector<std::thread> threads;
    WorkerPool workers;
    ServerOptions options;
    HandlerFactory factory;
    std::mutex mutex;
    std::unordered_map<std::uint64_t, std::weak_ptr<Connection>> connections;
    std::unordered_map<std::string, std::size_t> per_source;  // open connections by source_key()
    std::size_t unauthenticated = 0;                          // open connections that have not logged in
    std::uint64_t next_id = 0;
    std::atomic<std::size_t> count{0};
    bool stopped = false;
    // Accept handler only (one accept is outstanding at a time): when each source's refusal was last logged.
    std::unordered_map<std::string, std::chrono::steady_clock::time_point> refusal_logged;

    Impl(const ServerOptions& o, HandlerFactory f)
        : workers(o.worker_threads, o.worker_queue, o.worker_nice), options(o), factory(std::move(f)) {
        if (options.max_unauthenticated == 0) {
            options.max_unauthenticated = options.max_connections - options.max_connections / 4;
        }
    }

    /// Why a new connection from `source` is refused, or null. Caller holds `mutex`.
    const char* refusal(const std::string& source) const {
        if (count.load() >= options.max_connections) {
            return "the server is full (max_connections)";
        }
        if (unauthenticated >= options.max_unauthenticated) {
            return "too many connections that have not logged in";
        }
        if (options.max_connections_per_address != 0) {
            const auto it = per_source.find(source);
            if (it != per_source.end() && it->second >= options.max_connections_per_address) {
                return "too many connections from this address";
            }
        }
        return nullptr;
    }

    /// Log a refusal unless this source's last one was logged less than refusal_log_interval ago. The table is
    /// bounded: when it grows large its stale entries go, and if a flood from many sources keeps it large, all.
    void log_refusal(const std::string& source, const char* why) {
        if (!options.log) {
            return;
        }
        constexpr std::size_t max_remembered = 4096;
        const auto now = std::chrono::steady_clock::now();
        const auto interval = options.refusal_log_interval;
        if (refusal_logged.size() >= max_remembered) {
            std::erase_if(refusal_logged, [&](const auto& kv) { return now - kv.second >= interval; });
            if (refusal_logged.size() >= max_remembered) {
                refusal_logged.clear();
            }
        }
        const auto [it, fresh] = refusal_logged.try_emplace(source, now);
        if (!fresh && now - it->second < interval) {
            return;
        }
        it->second = now;
        options.log("refused connections from " + source + ": " + why + " (logged at most once per interval)");
    }

    /// Wait for the next connection (on the accept strand). Ends when the acceptor is closed (stop()).
    void accept() {
        acceptor.async_accept(asio::make_strand(io), [this](const asio::error_code& ec, tcp::socket socket) {
            if (!acceptor.is_open()) {
                return;  // stopped: whatever the outcome, no new accept (one now would fail at once, forever)
            }
            if (ec) {
                if (ec == asio::error::operation_aborted) {
                    return;
                }
                // e.g. EMFILE: keep serving the connections we have, and try again shortly rather than spin.
                if (options.log) {
                    options.log("accepting connections failed: " + ec.message() + "; trying again in 100 ms");
                }
                accept_retry.expires_after(std::chrono::milliseconds(100));
                accept_retry.async_wait([this](const asio::error_code& wait_ec) {
                    if (!wait_ec && acceptor.is_open()) {
                        accept();
                    }
                });
                return;
            }
            on_accept(std::move(socket));
            accept();
        });
    }

    void on_accept(tcp::socket socket) {
        asio::error_code ignored;
        const std::string source = source_key(socket);
        const char* refused = nullptr;
        std::uint64_t id = 0;
        {
            const std::lock_guard lock(mutex);
            refused = refusal(source);
            if (refused == nullptr) {
                id = next_id++;
                ++per_source[source];
                ++unauthenticated;
                count.fetch_add(1);
            }
        }
        if (refused != nullptr) {
            socket.close(ignored);
            log_refusal(source, refused);
            return;
        }
        socket.set_option(tcp::no_delay(true), ignored);
        const std::string peer = peer_name(socket);
        SlotHooks hooks;
        hooks.on_authenticated = [this] {
            const std::lock_guard lock(mutex);
            --unauthenticated;
        };
        hooks.on_gone = [this, id, source](bool authenticated) {
            const std::lock_guard lock(mutex);
            connections.erase(id);
            if (const auto it = per_source.find(source); it != per_source.end() && --it->second == 0) {
                per_source.erase(it);
            }
            if (!authenticated) {
                --unauthenticated;
            }
            count.fetch_sub(1);
        };
        auto conn = std::make_shared<Connection>(io_owner, std::move(socket), options.limits, std::move(hooks));
        {
            const std::lock_guard lock(mutex);
            connections.emplace(id, conn);
        }
        conn->start(factory(conn, peer));  // no handler: closed at once
    }
};

TcpServer::TcpServer(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

TcpServer::~TcpServer() { stop(); }

Result<std::unique_ptr<TcpServer>> TcpServer::start(const ServerOptions& options, HandlerFactory factory) {
    auto impl = std::make_unique<Impl>(options, std::move(factory));
    asio::error_code ec;
    const auto address = asio::ip::make_address(options.address, ec);
    if (ec) {
        return Error{Errc::invalid_argument, "bad listen address '" + options.address + "'"};
    }
    const tcp::endpoint endpoint(address, options.port);
    impl->acceptor.open(endpoint.protocol(), ec);
    if (!ec) {
        impl->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    }
    if (!ec) {
        impl->acceptor.bind(endpoint, ec);
    }
    if (!ec) {
        impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        return Error{Errc::io_error, "cannot listen on " + options.address + ":" + std::to_string(options.port) +
                                         ": " + ec.message()};
    }
    impl->guard.emplace(impl->io.get_executor());
    impl->accept();
    std::size_t n = options.io_threads;
    if (n == 0) {
        n = std::max(1U, std::thread::hardware_concurrency());
    }
    for (std::size_t i = 0; i < n; ++i) {
        impl->threads.emplace_back([io = &impl->io] { io->run(); });
    }
    return std::unique_ptr<TcpServer>(new TcpServer(std::move(impl)));
}

std::uint16_t TcpServer::port() const noexcept {
    asio::error_code ec;
    return m_impl->acceptor.local_endpoint(ec).port();
}

std::size_t TcpServer::connection_count() const noexcept { return m_impl->count.load(); }

std::size_t TcpServer::unauthenticated_count() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->unauthenticated;
}

Executor& TcpServer::workers() noexcept { return m_impl->workers; }

void TcpServer::stop() {
    if (!m_impl || m_impl->stopped) {
        return;
    }
    m_impl->stopped = true;
    asio::post(m_impl->accept_strand, [impl = m_impl.get()] {
        asio::error_code ignored;
        impl->acceptor.close(ignored);
        impl->accept_retry.cancel();
    });
    std::vector<std::shared_ptr<Connection>> open;
    {
        const std::lock_guard lock(m_impl->mutex);
        for (auto& [id, weak] : m_impl->connections) {
            if (auto c = weak.lock()) {
                open.push_back(std::move(c));
            }
        }
    }
    for (auto& c : open) {
        c->abort(Errc::closed);
    }
    open.clear();
    m_impl->workers.stop();
    m_impl->guard.reset();
    for (auto& t : m_impl->threads) {
        if (t.joinable()) {
            t.join();
        }
    }
    m_impl->threads.clear();
}

// ---------------------------------------------------------------- I/O pool

namespace {

/// An io_context whose services IoPool::stop() can shut down: that destroys the handlers still queued, which hold
/// connections that hold the context (a cycle that would otherwise keep both alive).
class PoolContext final : public asio::io_context {
public:
    using asio::io_context::shutdown;
};

}  // namespace

struct IoPool::Impl {
    std::shared_ptr<PoolContext> io = std::make_shared<PoolContext>();
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
    std::vector<std::thread> threads;
    std::size_t count = 0;
    std::atomic<bool> stopped{false};

    [[nodiscard]] bool on_pool_thread() const {
        const auto me = std::this_thread::get_id();
        return std::any_of(threads.begin(), threads.end(), [me](const std::thread& t) { return t.get_id() == me; });
    }
};

IoPool::IoPool(std::size_t threads) : m_impl(std::make_unique<Impl>()) {
    m_impl->count = std::max<std::size_t>(1, threads);
    m_impl->guard.emplace(m_impl->io->get_executor());
    for (std::size_t i = 0; i < m_impl->count; ++i) {
        // The thread holds the context: stop() from one of the pool's own threads leaves that thread running.
        m_impl->threads.emplace_back([io = m_impl->io] { io->run(); });
    }
}

IoPool::~IoPool() {
    stop();
}

std::size_t IoPool::thread_count() const noexcept {
    return m_impl->count;
}

void IoPool::stop() {
    if (m_impl->stopped.exchange(true)) {
        return;
    }
    m_impl->guard.reset();
    m_impl->io->stop();
    bool from_inside = false;
    for (auto& t : m_impl->threads) {
        if (t.get_id() == std::this_thread::get_id()) {
            from_inside = true;
            t.detach();
        } else if (t.joinable()) {
            t.join();
        }
    }
    m_impl->threads.clear();
    if (!from_inside) {
        m_impl->io->shutdown();
    }
}

// ---------------------------------------------------------------- client

namespace {

/// What a client and the handlers of its connect share.
struct ClientLink {
    explicit ClientLink(std::shared_ptr<asio::io_context> context)
        : io(std::move(context)), strand(asio::make_strand(*io)) {}

    std::shared_ptr<asio::io_context> io;
    asio::strand<asio::io_context::executor_type> strand;
    std::function<void()> cancel;  // strand only: abandons the connect under way

    std::mutex mutex;
    std::condition_variable cv;
    std::shared_ptr<Connection> connection;  // once connected
    bool started = false;                    // connect_async was called
    bool closed = false;                     // close() was called
    bool settled = false;                    // the connect failed, or the connection finished

    void settle() {
        {
            const std::lock_guard lock(mutex);
            settled = true;
        }
        cv.notify_all();
    }
};

/// One connect, from resolving to handing the socket to a Connection. Strand only.
class ConnectAttempt final : public std::enable_shared_from_this<ConnectAttempt> {
public:
    ConnectAttempt(std::shared_ptr<ClientLink> link, std::string host, std::uint16_t port,
                   const ConnectOptions& options, std::optional<tcp::endpoint> source, HandlerFactory factory,
                   TcpClient::ConnectCallback done)
        : m_link(std::move(link)),
          m_host(std::move(host)),
          m_port(port),
          m_timeout(options.connect_timeout),
          m_limits(options.limits),
          m_source(source),
          m_factory(std::move(factory)),
          m_done(std::move(done)),
          m_socket(m_link->strand),
          m_resolver(m_link->strand),
          m_timer(m_link->strand) {}

    void begin() {
        {
            const std::lock_guard lock(m_link->mutex);
            if (m_link->closed) {
                m_abandoned = true;
            }
        }
        if (m_abandoned) {
            fail({});
            return;
        }
        m_link->cancel = [weak = weak_from_this()] {
            if (auto self = weak.lock(); self && !self->m_finished) {
                self->m_abandoned = true;
                self->stop_io();
            }
        };
        if (m_timeout > Duration::zero()) {
            m_timer.expires_after(m_timeout);
            m_timer.async_wait([self = shared_from_this()](const asio::error_code& ec) {
                if (!ec && !self->m_finished) {
                    self->m_timed_out = true;
                    self->stop_io();
                }
            });
        }
        asio::error_code ec;
        const auto address = asio::ip::make_address(m_host, ec);
        if (!ec) {
            connect_next({tcp::endpoint(address, m_port)}, 0, {});
            return;
        }
        m_resolver.async_resolve(
            m_host, std::to_string(m_port),
            [self = shared_from_this()](const asio::error_code& rec, const tcp::resolver::results_type& results) {
                if (self->m_finished) {
                    return;
                }
                if (rec || self->m_timed_out || self->m_abandoned) {
                    self->fail("cannot resolve " + self->m_host + ": " + rec.message());
                    return;
                }
                std::vector<tcp::endpoint> endpoints;
                for (const auto& entry : results) {
                    if (!self->m_source || entry.endpoint().protocol() == self->m_source->protocol()) {
                        endpoints.push_back(entry.endpoint());
                    }
                }
                if (endpoints.empty()) {
                    self->fail("cannot connect to " + self->target() + ": no address in the source address's family");
                    return;
                }
                self->connect_next(std::move(endpoints), 0, {});
            });
    }

private:
    [[nodiscard]] std::string target() const { return m_host + ":" + std::to_string(m_port); }

    void connect_next(std::vector<tcp::endpoint> endpoints, std::size_t i, asio::error_code last) {
        if (i >= endpoints.size()) {
            fail("cannot connect to " + target() + ": " + last.message());
            return;
        }
        asio::error_code ec;
        m_socket.close(ec);
        m_socket.open(endpoints[i].protocol(), ec);
        if (!ec && m_source) {
#ifdef IP_BIND_ADDRESS_NO_PORT
            if (m_source->address().is_v4()) {
                // The port is chosen at connect time, per destination: many sources do not pin ephemeral ports.
                const int one = 1;
                (void)::setsockopt(m_socket.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            }
#endif
            m_socket.bind(*m_source, ec);
        }
        if (ec) {
            fail("cannot connect to " + target() + (m_source ? " from " + m_source->address().to_string() : "") + ": " +
                 ec.message());
            return;
        }
        const auto endpoint = endpoints[i];
        m_socket.async_connect(endpoint, [self = shared_from_this(), endpoints = std::move(endpoints),
                                          i](const asio::error_code& cec) mutable {
            if (self->m_finished) {
                return;
            }
            if (self->m_timed_out || self->m_abandoned) {
                self->fail({});
            } else if (cec) {
                self->connect_next(std::move(endpoints), i + 1, cec);
            } else {
                self->connected();
            }
        });
    }

    void connected() {
        m_finished = true;
        m_timer.cancel();
        asio::error_code ec;
        m_socket.set_option(tcp::no_delay(true), ec);
        const std::string peer = peer_name(m_socket);
        std::shared_ptr<Connection> connection;
        {
            const std::lock_guard lock(m_link->mutex);
            if (!m_link->closed) {
                SlotHooks hooks;
                hooks.on_gone = [weak = std::weak_ptr<ClientLink>(m_link)](bool) {
                    if (auto link = weak.lock()) {
                        link->settle();
                    }
                };
                connection = std::make_shared<Connection>(m_link->io, std::move(m_socket), m_limits, std::move(hooks),
                                                          /*own_read_buffer=*/true);
                m_link->connection = connection;
            }
        }
        if (!connection) {
            m_abandoned = true;
            fail({});
            return;
        }
        auto handler = m_factory(connection, peer);
        if (!handler) {
            connection->start(nullptr);  // closes it; settles when it is gone
            report(Error{Errc::closed, "no handler for the connection to " + peer});
            return;
        }
        connection->start(std::move(handler));
        report(ok());
    }

    void stop_io() {
        asio::error_code ignored;
        m_resolver.cancel();
        m_socket.close(ignored);
    }

    /// The connect failed: `what` unless it was abandoned or timed out.
    void fail(const std::string& what) {
        m_finished = true;
        m_timer.cancel();
        stop_io();
        if (m_abandoned) {
            report(Error{Errc::closed, "closed before the connection to " + target() + " was made"});
        } else if (m_timed_out) {
            report(Error{Errc::timeout, "connect to " + target() + " timed out"});
        } else {
            report(Error{Errc::io_error, what});
        }
        m_link->settle();
    }

    void report(Status status) {
        m_link->cancel = nullptr;
        if (auto done = std::move(m_done)) {
            done(std::move(status));
        }
    }

    std::shared_ptr<ClientLink> m_link;
    std::string m_host;
    std::uint16_t m_port;
    Duration m_timeout;
    ConnectionLimits m_limits;
    std::optional<tcp::endpoint> m_source;
    HandlerFactory m_factory;
    TcpClient::ConnectCallback m_done;
    tcp::socket m_socket;
    tcp::resolver m_resolver;
    asio::steady_timer m_timer;
    bool m_finished = false;
    bool m_timed_out = false;
    bool m_abandoned = false;
};

}  // namespace

struct TcpClient::Impl {
    ConnectOptions options;
    std::optional<tcp::endpoint> source;
    std::shared_ptr<IoPool> pool;
    bool own_pool = false;
    std::shared_ptr<ClientLink> link;
    std::atomic<bool> closed{false};  // close() ran (it may be called from several threads)
};

TcpClient::TcpClient(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

TcpClient::~TcpClient() { close(); }

Result<std::unique_ptr<TcpClient>> TcpClient::create(const ConnectOptions& options) {
    auto impl = std::make_unique<Impl>();
    impl->options = options;
    impl->options.pool.reset();
    if (!options.source_address.empty()) {
        asio::error_code ec;
        const auto address = asio::ip::make_address(options.source_address, ec);
        if (ec) {
            return Error{Errc::invalid_argument,
                         "source address \"" + options.source_address + "\" is not a numeric IP address"};
        }
        impl->source = tcp::endpoint(address, 0);
    }
    impl->own_pool = !options.pool;
    impl->pool = impl->own_pool ? std::make_shared<IoPool>(1) : options.pool;
    if (impl->pool->m_impl->stopped.load()) {
        return Error{Errc::invalid_state, "the I/O pool is stopped"};
    }
    impl->link = std::make_shared<ClientLink>(impl->pool->m_impl->io);
    return std::unique_ptr<TcpClient>(new TcpClient(std::move(impl)));
}

Status TcpClient::connect_async(const std::string& host, std::uint16_t port, HandlerFactory factory,
                                ConnectCallback done) {
    auto& link = m_impl->link;
    {
        const std::lock_guard lock(link->mutex);
        if (link->closed || link->started) {
            return Error{Errc::invalid_state,
                         link->closed ? "the client is closed" : "the client is connected already"};
        }
        link->started = true;
    }
    auto attempt = std::make_shared<ConnectAttempt>(link, host, port, m_impl->options, m_impl->source,
                                                    std::move(factory), std::move(done));
    asio::post(link->strand, [attempt] { attempt->begin(); });
    return ok();
}

Result<std::unique_ptr<TcpClient>> TcpClient::connect(const std::string& host, std::uint16_t port,
                                                      const ConnectOptions& options, HandlerFactory factory) {
    SIM_TRY(auto client, create(options));
    auto outcome = std::make_shared<std::promise<Status>>();
    auto result = outcome->get_future();
    SIM_TRY_STATUS(client->connect_async(host, port, std::move(factory),
                                         [outcome](Status st) { outcome->set_value(std::move(st)); }));
    if (auto st = result.get(); !st) {
        return st.error();
    }
    return client;
}

void TcpClient::post(std::function<void()> job) {
    if (m_impl->pool->m_impl->stopped.load()) {
        return;
    }
    asio::post(m_impl->link->strand, std::move(job));
}

void TcpClient::post_at(TimePoint when, std::function<void()> job) {
    if (m_impl->pool->m_impl->stopped.load()) {
        return;
    }
    auto timer = std::make_shared<asio::steady_timer>(m_impl->link->strand);
    timer->expires_at(std::chrono::time_point_cast<asio::steady_timer::clock_type::duration>(when));
    timer->async_wait([timer, job = std::move(job)](const asio::error_code& ec) {
        if (!ec) {
            job();
        }
    });
}

void TcpClient::close() {
    if (!m_impl || m_impl->closed.exchange(true)) {
        return;
    }
    auto& link = *m_impl->link;
    std::shared_ptr<Connection> connection;
    bool started = false;
    {
        const std::lock_guard lock(link.mutex);
        link.closed = true;
        connection = link.connection;
        started = link.started;
    }
    const bool running = !m_impl->pool->m_impl->stopped.load();
    if (running && connection) {
        connection->close(Errc::closed);
    } else if (running && started) {
        asio::post(link.strand, [l = m_impl->link] {
            if (l->cancel) {
                l->cancel();
            }
        });
    }
    // Let the connection flush and tell its handler (so that what the handler refers to may go once this returns),
    // but not on one of its own threads, which would wait for itself. The bound is for a peer that never reads.
    if (running && started && !m_impl->pool->m_impl->on_pool_thread()) {
        std::unique_lock lock(link.mutex);
        (void)link.cv.wait_for(lock, m_impl->options.connect_timeout + std::chrono::seconds(10),
                               [&link] { return link.settled; });
    }
    if (m_impl->own_pool) {
        m_impl->pool->stop();
    }
}

}  // namespace sim::net
