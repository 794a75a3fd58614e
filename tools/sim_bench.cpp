// sim-bench: a load generator that speaks libsim's real protocol. Many sans-IO sim::ClientCore objects run on the
// library's I/O pool, a few threads (not one sim::Client and one thread per connection), so thousands of
// connections fit.
// Modes: route (message latency and throughput between pairs), connect (idle authenticated connections, memory per
// connection), login (password logins per second), offline (durable store-and-forward to offline users, then the
// drain at login). Every run is bounded in count and time and stops by itself.
#include "common/metrics_http.h"
#include "common/options.h"

#include <sim/channel.h>
#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/clock.h>
#include <sim/messages.h>
#include <sim/net.h>
#include <sim/rng.h>
#include <sim/suite.h>
#include <sim/testing.h>
#include <sim/transport.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using sim::tools::OptionSpec;

constexpr int exit_ok = 0;
constexpr int exit_fail = sim::tools::exit_failure;
constexpr int exit_usage = sim::tools::exit_usage;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double seconds_since(std::int64_t start_ns) {
    return static_cast<double>(now_ns() - start_ns) / 1e9;
}

// ------------------------------------------------------------------------------------------------ histogram

/// HDR-style log-bucketed histogram of nanosecond values: exact below 256 ns, then 128 sub-buckets per power of
/// two (relative error < 0.8 %). Lock-free: any thread may record.
class Histogram {
public:
    Histogram() : m_counts(size) {}

    void record(std::int64_t value_ns) {
        const auto v = static_cast<std::uint64_t>(std::max<std::int64_t>(value_ns, 0));
        m_counts[index(v)].fetch_add(1, std::memory_order_relaxed);
        m_total.fetch_add(1, std::memory_order_relaxed);
        m_sum.fetch_add(v, std::memory_order_relaxed);
        auto seen = m_max.load(std::memory_order_relaxed);
        while (v > seen && !m_max.compare_exchange_weak(seen, v, std::memory_order_relaxed)) {
        }
    }
    [[nodiscard]] std::uint64_t count() const { return m_total.load(); }
    [[nodiscard]] double mean() const {
        const auto n = count();
        return n == 0 ? 0.0 : static_cast<double>(m_sum.load()) / static_cast<double>(n);
    }
    [[nodiscard]] std::uint64_t max() const { return m_max.load(); }
    /// The value at quantile `q` (0..1): the upper edge of the bucket that holds it (never understates).
    [[nodiscard]] std::uint64_t quantile(double q) const {
        const auto n = count();
        if (n == 0) {
            return 0;
        }
        auto rank = static_cast<std::uint64_t>(q * static_cast<double>(n) + 0.999999);
        rank = std::clamp<std::uint64_t>(rank, 1, n);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < size; ++i) {
            seen += m_counts[i].load(std::memory_order_relaxed);
            if (seen >= rank) {
                return std::min(upper_edge(i), max());
            }
        }
        return max();
    }

private:
    static constexpr unsigned linear = 256;  // exact values below this
    static constexpr unsigned sub = 128;     // sub-buckets per octave above it
    static constexpr unsigned octaves = 48;  // up to 2^56 ns
    static constexpr std::size_t size = linear + octaves * sub;

    static std::size_t index(std::uint64_t v) {
        if (v < linear) {
            return v;
        }
        const unsigned e = static_cast<unsigned>(std::bit_width(v)) - 1;  // >= 8
        const unsigned oct = std::min(e - 8, octaves - 1);
        const auto m = static_cast<unsigned>((v >> (e - 7)) - sub);  // 0..127
        return linear + oct * sub + std::min(m, sub - 1);
    }
    static std::uint64_t upper_edge(std::size_t i) {
        if (i < linear) {
            return i;
        }
        const auto oct = (i - linear) / sub;
        const auto m = (i - linear) % sub + sub;
        const auto shift = oct + 1;  // e - 7
        return ((m + 1) << shift) - 1;
    }

    std::vector<std::atomic<std::uint64_t>> m_counts;
    std::atomic<std::uint64_t> m_total{0};
    std::atomic<std::uint64_t> m_sum{0};
    std::atomic<std::uint64_t> m_max{0};
};

// ------------------------------------------------------------------------------------------------ /proc

/// CPU seconds (user + system) of a process, from /proc/PID/stat; nullopt when unreadable.
std::optional<double> process_cpu_seconds(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line)) {
        return std::nullopt;
    }
    const auto close = line.rfind(')');
    if (close == std::string::npos) {
        return std::nullopt;
    }
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    std::uint64_t utime = 0;
    std::uint64_t stime = 0;
    // Fields after the command: 3 state ... 14 utime, 15 stime.
    for (int f = 3; f <= 15 && rest >> field; ++f) {
        if (f == 14) {
            utime = std::stoull(field);
        } else if (f == 15) {
            stime = std::stoull(field);
        }
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// Resident set size in KiB, from /proc/PID/status; nullopt when unreadable.
std::optional<long> process_rss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string key;
    while (in >> key) {
        if (key == "VmRSS:") {
            long v = 0;
            in >> v;
            return v;
        }
        in.ignore(4096, '\n');
    }
    return std::nullopt;
}

/// The process that listens on TCP `port` (our own user's processes only: /proc/PID/fd must be readable).
std::optional<pid_t> find_listener_pid(std::uint16_t port) {
    std::vector<std::string> inodes;
    for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
        std::ifstream in(table);
        std::string line;
        std::getline(in, line);  // header
        while (std::getline(in, line)) {
            std::istringstream ls(line);
            std::string sl, local, remote, state, queues, timer, retr, uid, timeout, inode;
            ls >> sl >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
            const auto colon = local.rfind(':');
            if (state != "0A" || colon == std::string::npos) {
                continue;
            }
            if (std::stoul(local.substr(colon + 1), nullptr, 16) == port) {
                inodes.push_back("socket:[" + inode + "]");
            }
        }
    }
    if (inodes.empty()) {
        return std::nullopt;
    }
    std::error_code ec;
    for (const auto& proc : std::filesystem::directory_iterator("/proc", ec)) {
        const auto name = proc.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::error_code fec;
        for (const auto& fd : std::filesystem::directory_iterator(proc.path() / "fd", fec)) {
            std::error_code lec;
            const auto target = std::filesystem::read_symlink(fd.path(), lec).string();
            if (!lec && std::find(inodes.begin(), inodes.end(), target) != inodes.end()) {
                return static_cast<pid_t>(std::stol(name));
            }
        }
    }
    return std::nullopt;
}

/// Our own CPU seconds (user + system, all threads).
double self_cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    const auto tv = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
    };
    return tv(ru.ru_utime) + tv(ru.ru_stime);
}

/// Raise the soft RLIMIT_NOFILE to at least `want` (up to the hard limit); returns the soft limit now in force.
rlim_t raise_fd_limit(rlim_t want) {
    rlimit rl{};
    ::getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = std::min(want, rl.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &rl);
        ::getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

// ------------------------------------------------------------------------------------------------ spawned simd

/// simd started by us on an ephemeral loopback port with a temporary data directory; stopped (SIGTERM) and
/// removed on destruction.
class SpawnedSimd {
public:
    static sim::Result<std::unique_ptr<SpawnedSimd>> start(const std::string& path, std::vector<std::string> extra) {
        auto s = std::unique_ptr<SpawnedSimd>(new SpawnedSimd());
        char tmpl[] = "/tmp/sim-bench.XXXXXX";
        if (::mkdtemp(tmpl) == nullptr) {
            return sim::Error{sim::Errc::io_error, "cannot create a temporary directory"};
        }
        s->m_dir = tmpl;
        const std::string port_file = s->m_dir + "/port";
        std::vector<std::string> args = {path,         "--listen",         "127.0.0.1:0", "--port-file", port_file,
                                         "--data-dir", s->m_dir + "/data", "--log-level", "warning"};
        args.insert(args.end(), extra.begin(), extra.end());
        s->m_pid = ::fork();
        if (s->m_pid < 0) {
            return sim::Error{sim::Errc::io_error, "fork failed"};
        }
        if (s->m_pid == 0) {
            std::vector<char*> argv;
            for (auto& a : args) {
                argv.push_back(a.data());
            }
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            std::fprintf(stderr, "sim-bench: cannot run %s: %s\n", argv[0], std::strerror(errno));
            ::_exit(127);
        }
        const auto deadline = now_ns() + 15'000'000'000LL;
        while (now_ns() < deadline) {
            std::ifstream in(port_file);
            int p = 0;
            if (in >> p && p > 0) {
                s->m_port = static_cast<std::uint16_t>(p);
                return s;
            }
            int status = 0;
            if (::waitpid(s->m_pid, &status, WNOHANG) == s->m_pid) {
                s->m_pid = -1;
                return sim::Error{sim::Errc::io_error, "simd exited during start-up"};
            }
            std::this_thread::sleep_for(20ms);
        }
        return sim::Error{sim::Errc::timeout, "simd did not report its port within 15 s"};
    }
    ~SpawnedSimd() {
        if (m_pid > 0) {
            ::kill(m_pid, SIGTERM);
            int status = 0;
            ::waitpid(m_pid, &status, 0);
        }
        if (!m_dir.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(m_dir, ec);
        }
    }
    SpawnedSimd(const SpawnedSimd&) = delete;
    SpawnedSimd& operator=(const SpawnedSimd&) = delete;

    [[nodiscard]] std::uint16_t port() const { return m_port; }
    [[nodiscard]] pid_t pid() const { return m_pid; }

private:
    SpawnedSimd() = default;
    std::string m_dir;
    pid_t m_pid = -1;
    std::uint16_t m_port = 0;
};

// ------------------------------------------------------------------------------------------------ I/O engine

/// KnownServers shared by every core of the run (the cores call it from several threads).
class LockedKnownServers final : public sim::KnownServers {
public:
    [[nodiscard]] std::optional<sim::Bytes> lookup(std::string_view server_id) const override {
        const std::lock_guard lock(m_mutex);
        return m_inner.lookup(server_id);
    }
    sim::Status remember(std::string_view server_id, sim::ByteView public_key) override {
        const std::lock_guard lock(m_mutex);
        return m_inner.remember(server_id, public_key);
    }

private:
    mutable std::mutex m_mutex;
    sim::MemoryKnownServers m_inner;
};

/// The run's I/O threads: the library's I/O pool, shared by every connection of the run.
class Engine {
public:
    explicit Engine(unsigned threads) : m_pool(std::make_shared<sim::net::IoPool>(std::max(1U, threads))) {}
    ~Engine() { stop(); }
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;
    [[nodiscard]] const std::shared_ptr<sim::net::IoPool>& io() const { return m_pool; }
    void stop() { m_pool->stop(); }

private:
    std::shared_ptr<sim::net::IoPool> m_pool;
};

/// What every connection of a run shares.
struct Shared {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    bool spread_sources = true;
    std::size_t read_chunk = 16384;
    LockedKnownServers known;
    std::unique_ptr<sim::Rng> rng = sim::make_system_rng();
    sim::ClientConfig config;
};

/// One client connection: a sim::ClientCore on the library's TcpClient, on the run's I/O pool. Every call into the
/// core is made on the connection's strand (run()); events come out through `handler` (which must not call into the
/// core: post instead).
class Conn final : public std::enable_shared_from_this<Conn> {
public:
    using Handler = std::function<void(Conn&, const sim::ClientEvent&)>;
    static constexpr std::size_t max_pending_bytes = 16U << 20U;

    Conn(Shared& shared, const std::shared_ptr<sim::net::IoPool>& pool, std::size_t index, Handler handler)
        : m_shared(shared), m_index(index), m_handler(std::move(handler)) {
        sim::net::ConnectOptions options;
        options.pool = pool;
        options.limits.read_chunk = shared.read_chunk;
        options.limits.max_queued_bytes = max_pending_bytes;  // a server that does not read: close rather than grow
        options.limits.handshake_timeout = sim::Duration::zero();
        if (shared.spread_sources) {
            // Spread the source address over 127.0.x.y so that thousands of connections do not exhaust one
            // address's ephemeral ports.
            options.source_address =
                "127.0." + std::to_string((index / 250) % 250) + "." + std::to_string(1 + index % 250);
        }
        auto tcp = sim::net::TcpClient::create(options);
        if (tcp) {
            m_tcp = std::move(*tcp);
        } else {
            m_create_error = tcp.error();
        }
    }

    /// Create the core, connect, attach, then run `after_attach` on the strand (e.g. login). A connect failure
    /// reaches the handler as a `closed` event.
    /// `state` (optional, must outlive the core): the client's end-to-end state, e.g. to log in again as the same
    /// device; null gives the core a fresh in-memory state.
    sim::Status start(std::function<void(Conn&)> after_attach, sim::ClientState* state = nullptr) {
        if (!m_tcp) {
            return m_create_error;
        }
        auto config = m_shared.config;
        config.state = state;
        auto core = sim::ClientCore::create(std::move(config), m_shared.known, *m_shared.rng, sim::steady_clock(),
                                            [weak = weak_from_this()](const sim::ClientEvent& e) {
                                                if (auto self = weak.lock()) {
                                                    self->event(e);
                                                }
                                            });
        if (!core) {
            return core.error();
        }
        m_core = std::move(*core);
        m_started_ns = now_ns();
        return m_tcp->connect_async(
            m_shared.host, m_shared.port,
            [core = m_core](std::shared_ptr<sim::ConnectionOutput> out, const std::string&) {
                return core->attach(std::move(out)) ? std::static_pointer_cast<sim::ConnectionHandler>(core)
                                                    : std::shared_ptr<sim::ConnectionHandler>{};
            },
            [self = shared_from_this(), after = std::move(after_attach)](sim::Status connected) {
                if (connected) {
                    after(*self);
                    return;
                }
                self->event(sim::ClosedEvent{sim::Error{connected.code(), "connect: " + connected.error().message()}});
            });
    }

    /// Run `fn` on this connection's strand (where calling into the core is allowed).
    void run(std::function<void()> fn) {
        if (m_tcp) {
            m_tcp->post(std::move(fn));
        }
    }
    /// run() at `when_ns` (now_ns()'s clock).
    void run_at(std::int64_t when_ns, std::function<void()> fn) {
        if (m_tcp) {
            m_tcp->post_at(sim::TimePoint(std::chrono::nanoseconds(when_ns)), std::move(fn));
        }
    }
    sim::ClientCore& core() { return *m_core; }
    [[nodiscard]] std::size_t index() const { return m_index; }
    [[nodiscard]] std::int64_t started_ns() const { return m_started_ns; }
    [[nodiscard]] bool is_closed() const { return m_closed.load(); }
    /// A flag for the mode's own bookkeeping (e.g. "this connection logged in").
    void mark() { m_marked.store(true); }
    [[nodiscard]] bool marked() const { return m_marked.load(); }

    /// Close from our side (end of a run); the closed event that follows is expected.
    void shutdown() {
        m_closing_by_us = true;
        if (m_tcp) {
            m_tcp->close();
        }
    }
    [[nodiscard]] bool closing_by_us() const { return m_closing_by_us.load(); }

private:
    void event(const sim::ClientEvent& e) {
        if (std::holds_alternative<sim::ClosedEvent>(e)) {
            m_closed.store(true);
        }
        m_handler(*this, e);
    }

    Shared& m_shared;
    std::size_t m_index;
    Handler m_handler;
    std::unique_ptr<sim::net::TcpClient> m_tcp;
    sim::Error m_create_error{sim::Errc::invalid_state, "no connection"};
    std::shared_ptr<sim::ClientCore> m_core;
    std::int64_t m_started_ns = 0;
    std::atomic<bool> m_closed{false};
    std::atomic<bool> m_closing_by_us{false};
    std::atomic<bool> m_marked{false};
};

// ------------------------------------------------------------------------------------------------ report

/// One figure of a report: printed in the table and written to JSON under `key`.
struct Figure {
    std::string key;
    std::string label;
    std::optional<double> value;  // nullopt: not measured (n/a, JSON null)
    std::string unit;
    int decimals = 1;
    std::string text;  // non-numeric figures
};

class Report {
public:
    explicit Report(std::string mode) : m_mode(std::move(mode)) {}
    void num(std::string key, std::string label, std::optional<double> v, std::string unit, int decimals = 1) {
        m_figures.push_back({std::move(key), std::move(label), v, std::move(unit), decimals, {}});
    }
    void text(std::string key, std::string label, std::string t) {
        m_figures.push_back({std::move(key), std::move(label), std::nullopt, {}, 0, std::move(t)});
    }
    void print(std::ostream& out) const {
        std::size_t width = 0;
        for (const auto& f : m_figures) {
            width = std::max(width, f.label.size());
        }
        out << "sim-bench " << m_mode << "\n";
        out << std::string(width + 24, '-') << "\n";
        for (const auto& f : m_figures) {
            out << f.label << std::string(width - f.label.size() + 2, ' ');
            if (!f.text.empty()) {
                out << f.text;
            } else if (f.value) {
                char buf[64];
                std::snprintf(buf, sizeof buf, "%.*f", f.decimals, *f.value);
                out << buf << (f.unit.empty() ? "" : " ") << f.unit;
            } else {
                out << "n/a";
            }
            out << "\n";
        }
    }
    [[nodiscard]] bool write_json(const std::string& path) const {
        std::ofstream out(path);
        out << "{\n  \"mode\": \"" << m_mode << "\"";
        for (const auto& f : m_figures) {
            out << ",\n  \"" << f.key << "\": ";
            if (!f.text.empty()) {
                out << '"';
                for (const char c : f.text) {
                    if (c == '"' || c == '\\') {
                        out << '\\';
                    }
                    out << (static_cast<unsigned char>(c) < 0x20 ? ' ' : c);
                }
                out << '"';
            } else if (f.value) {
                char buf[64];
                std::snprintf(buf, sizeof buf, "%.*f", std::max(f.decimals, 3), *f.value);
                out << buf;
            } else {
                out << "null";
            }
        }
        out << "\n}\n";
        return static_cast<bool>(out);
    }

private:
    std::string m_mode;
    std::vector<Figure> m_figures;
};

std::optional<double> opt_diff(std::optional<double> a, std::optional<double> b) {
    if (a && b) {
        return *b - *a;
    }
    return std::nullopt;
}

// ------------------------------------------------------------------------------------------------ options

const std::vector<OptionSpec>& option_specs() {
    static const std::vector<OptionSpec> specs = {
        {"server", 0, "HOST:PORT", "the simd to load (loopback only)", "127.0.0.1:7878", false},
        {"spawn-simd", 0, "PATH", "start this simd on 127.0.0.1:0 with a temporary data directory, measure it, stop it",
         "", false},
        {"suite", 0, "NAME", "with --spawn-simd: conversation suite aes, chacha or tdes", "aes", false},
        {"conversation-mode", 0, "MODE", "with --spawn-simd: e2e (end-to-end, simd's default) or server-assigned",
         "e2e", false},
        {"bcrypt-cost", 0, "N", "with --spawn-simd: bcrypt cost of the server (4 = fast, for route/connect)", "4",
         false},
        {"server-pid", 0, "PID", "process to measure (CPU, RSS); default: the one listening on the port", "", false},
        {"metrics-address", 0, "[HOST:]PORT",
         "the simd's admin endpoint (its --metrics-address): the report adds what its /metrics counted during the "
         "run (commits, messages, latencies); --spawn-simd starts simd with one on a free loopback port",
         "", false},
        {"threads", 0, "N", "I/O threads of the load generator", "2", false},
        {"pairs", 0, "P", "route: pairs of users sending to each other; offline: senders (one recipient each)", "4",
         false},
        {"size", 0, "BYTES", "route: message text size (at least 40)", "256", false},
        {"rate", 0, "MSGS", "route: total messages per second, open loop (0 = as fast as the window allows)", "0",
         false},
        {"window", 0, "N",
         "route without --rate: messages in flight per direction; offline: messages awaiting `receipt stored` per "
         "sender",
         "16 (route), 64 (offline)", false},
        {"conn-rate", 0, "MSGS",
         "route without --rate: cap per sending connection, under simd's 2000/s limit (0 = none)", "1900", false},
        {"duration", 0, "SEC", "route: sending time (also the time cap with --count)", "10", false},
        {"blind-sink", 0, "",
         "route: receivers acknowledge each message without opening it (no Double Ratchet or record decryption); "
         "deliveries and latency are counted from the senders' `delivered` receipts",
         "", false},
        {"login-storm", 0, "K",
         "route: K password logins in a loop (fresh connections, one thread) while sending; with a high "
         "--bcrypt-cost this saturates the server's hashing pool",
         "0", false},
        {"count", 0, "N",
         "route: total messages; connect: connections; login: logins per phase; offline: messages per sender (2000)",
         "", false},
        {"parallel", 0, "K", "login: concurrent logins in the parallel phase; connect: handshakes in progress",
         "4 (login), 64 (connect)", false},
        {"hold", 0, "SEC", "connect: how long to hold the connections", "3", false},
        {"probes", 0, "N", "connect: connections that send a probe round trip after the hold", "100", false},
        {"timeout", 0, "SEC", "time cap of set-up phases (connecting, logging in, draining)", "120", false},
        {"json", 0, "FILE", "also write the figures as JSON", "", false},
        {"help", 'h', "", "show this help and exit", "", false},
    };
    return specs;
}

void print_help() {
    std::cout << R"(Usage: sim-bench MODE [OPTIONS]

Load generator for simd that speaks libsim's real protocol (Noise channel, password login, end-to-end (X3DH +
Double Ratchet) or server-assigned conversation keys, two record layers). Many sans-IO sim::ClientCore objects share a small pool of Asio threads.
Every run is bounded in count and time, stops by itself and talks to loopback only.

Modes:
  route    P pairs (a_i, b_i) log in with passwords, get their conversation key, then both sides send S-byte
           messages to each other. Each text carries a sequence number and its send time (steady clock ns); the
           receiver checks content and order and records the latency in a log-bucketed histogram. With --rate the
           load is open loop and latency is measured from the *intended* send time (no coordinated omission:
           a stalled sender shows up as latency); without it each direction keeps --window messages in flight,
           at most --conn-rate messages/s per sending connection (simd refuses more than 2000/s per connection).
           Reports delivered msgs/s, latency p50/p99/p99.9/max, server CPU seconds per 1,000 messages, server
           RSS and the load generator's own CPU.
           --blind-sink: once the pairs are keyed, every client acknowledges what is delivered to it without
           opening it (a benchmarking hook of the client core; senders still seal for real), so the server can be
           loaded past what the load generator's own decryption allows. The server sees the same acks, so every
           message still costs it the routing, the ack and the `delivered` receipt; a message counts as delivered
           when its sender gets that receipt, and latency is send to receipt (a round trip), not send to opened.
  connect  Opens --count N authenticated idle connections (source addresses spread over 127.0.x.y, RLIMIT_NOFILE
           raised), holds them --hold seconds, checks a sample with a probe round trip, reports the time to
           connect and the server's RSS per connection (RSS delta / N).
  login    --count N password logins one after another, then N logins spread over --parallel K connections at a
           time; each login is a new TCP connection + Noise handshake + init with a password. Reports logins/s and
           latencies. Users are registered first (not measured).
  offline  --pairs P senders each send --count N messages to their own recipient, who is offline (it logged in
           once before, so its prekeys are published, then logged out). Each sender keeps --window messages
           awaiting `receipt stored` (sent by the server once the message is committed to its durable store;
           concurrent messages share a commit) at most --conn-rate msg/s. Reports durable accepted msgs/s. Then the
           senders leave, the recipients log in again (same client state) and drain: every message is checked
           (sender, content, order, each once); reports drained msgs/s and server CPU per 1,000 messages.

Server: --server HOST:PORT (simd must be running: use a fast --bcrypt-cost for route/connect, e.g. 4), or
--spawn-simd PATH to start one on an ephemeral port with a temporary data directory (--suite, --bcrypt-cost).
Server CPU and RSS come from /proc/PID/{stat,status} of --server-pid, or of the process listening on the port.
Note simd's per-connection limit of 2000 messages/s (burst 4000): faster senders get rate_limited errors, which
sim-bench counts as "refused".

Options:
)" << sim::tools::format_options(option_specs())
              << R"(
Output: a table on stdout; --json FILE writes the same figures. A progress line goes to stderr every second for
runs longer than 2 s. Exit status: 0 success, 1 failure (server unreachable, lost or corrupt messages, failed
connections or logins), 2 bad usage or not implemented.

Examples:
  sim-bench route --spawn-simd build/tools/simd --pairs 8 --size 256 --duration 10
  sim-bench route --spawn-simd build/tools/simd --pairs 8 --rate 4000 --duration 10 --suite tdes
  sim-bench route --spawn-simd build/tools/simd --pairs 8 --duration 5 --blind-sink
  sim-bench connect --spawn-simd build/tools/simd --count 5000
  sim-bench login --spawn-simd build/tools/simd --bcrypt-cost 12 --count 5 --parallel 2
)";
}

struct Settings {
    std::string mode;
    std::string host = "127.0.0.1";
    std::uint16_t port = 7878;
    std::string spawn_path;
    std::string suite = "aes";
    std::string conversation_mode = "e2e";
    std::uint64_t bcrypt_cost = 4;
    std::optional<pid_t> server_pid;
    std::optional<std::pair<std::string, std::uint16_t>> metrics;  // the server's admin endpoint
    unsigned threads = 2;
    std::uint64_t pairs = 4;
    std::uint64_t size = 256;
    double rate = 0;
    std::uint64_t window = 16;  // 64 in offline mode unless given
    double conn_rate = 1900;
    double duration = 10;
    std::uint64_t login_storm = 0;
    bool blind_sink = false;  // route: receivers acknowledge without opening (sim::testing::set_blind_sink)
    std::optional<std::uint64_t> count;
    std::optional<std::uint64_t> parallel;
    double hold = 3;
    std::uint64_t probes = 100;
    double timeout = 120;
    std::string json;
};

sim::Result<Settings> parse_settings(const sim::tools::ParsedArgs& args) {
    Settings s;
    if (args.positionals.size() != 1) {
        return sim::Error{sim::Errc::invalid_argument, "give exactly one mode: route, connect, login or offline"};
    }
    s.mode = args.positionals[0];
    if (s.mode != "route" && s.mode != "connect" && s.mode != "login" && s.mode != "offline") {
        return sim::Error{sim::Errc::invalid_argument,
                          "unknown mode '" + s.mode + "' (route, connect, login, offline)"};
    }
    if (args.has("server")) {
        SIM_TRY(auto hp, sim::tools::parse_host_port("--server", args.get("server"), false));
        s.host = hp.first;
        s.port = hp.second;
    }
    in_addr v4{};
    in6_addr v6{};
    const bool loopback = (::inet_pton(AF_INET, s.host.c_str(), &v4) == 1 && (ntohl(v4.s_addr) >> 24U) == 127U) ||
                          (::inet_pton(AF_INET6, s.host.c_str(), &v6) == 1 && IN6_IS_ADDR_LOOPBACK(&v6));
    if (!loopback) {
        return sim::Error{sim::Errc::invalid_argument, "--server must be a loopback address (e.g. 127.0.0.1:7878)"};
    }
    s.spawn_path = args.get("spawn-simd");
    if (args.has("conversation-mode")) {
        s.conversation_mode = args.get("conversation-mode");
        if (s.conversation_mode != "e2e" && s.conversation_mode != "server-assigned") {
            return sim::Error{sim::Errc::invalid_argument, "--conversation-mode must be e2e or server-assigned"};
        }
    }
    if (args.has("suite")) {
        SIM_TRY(const auto id, sim::tools::parse_suite("--suite", args.get("suite")));
        (void)id;
        s.suite = args.get("suite");
    }
    const auto get_uint = [&](std::string_view name, std::uint64_t& out, std::uint64_t lo,
                              std::uint64_t hi) -> sim::Status {
        if (args.has(name)) {
            SIM_TRY(out, sim::tools::parse_uint("--" + std::string(name), args.get(name), lo, hi));
        }
        return sim::ok();
    };
    const auto get_secs = [&](std::string_view name, double& out, double max) -> sim::Status {
        if (args.has(name)) {
            SIM_TRY(const auto d, sim::tools::parse_seconds("--" + std::string(name), args.get(name), max));
            out = std::chrono::duration<double>(d).count();
        }
        return sim::ok();
    };
    SIM_TRY_STATUS(get_uint("bcrypt-cost", s.bcrypt_cost, 4, 18));
    std::uint64_t v = 0;
    if (args.has("server-pid")) {
        SIM_TRY_STATUS(get_uint("server-pid", v, 1, 1U << 30U));
        s.server_pid = static_cast<pid_t>(v);
    }
    if (args.has("metrics-address")) {
        SIM_TRY(s.metrics, sim::tools::parse_admin_address(args.get("metrics-address")));
    }
    v = s.threads;
    SIM_TRY_STATUS(get_uint("threads", v, 1, 64));
    s.threads = static_cast<unsigned>(v);
    SIM_TRY_STATUS(get_uint("pairs", s.pairs, 1, 5000));
    SIM_TRY_STATUS(get_uint("size", s.size, 40, 60000));
    std::uint64_t rate = 0;
    SIM_TRY_STATUS(get_uint("rate", rate, 0, 10'000'000));
    s.rate = static_cast<double>(rate);
    if (s.mode == "offline") {
        s.window = 64;
    }
    SIM_TRY_STATUS(get_uint("window", s.window, 1, 100000));
    std::uint64_t conn_rate = 1900;
    SIM_TRY_STATUS(get_uint("conn-rate", conn_rate, 0, 10'000'000));
    s.conn_rate = static_cast<double>(conn_rate);
    SIM_TRY_STATUS(get_secs("duration", s.duration, 3600));
    SIM_TRY_STATUS(get_uint("login-storm", s.login_storm, 0, 1000));
    if (args.has("count")) {
        std::uint64_t c = 0;
        SIM_TRY_STATUS(get_uint("count", c, 1, 1'000'000'000));
        s.count = c;
    }
    if (args.has("parallel")) {
        std::uint64_t k = 0;
        SIM_TRY_STATUS(get_uint("parallel", k, 1, 10000));
        s.parallel = k;
    }
    SIM_TRY_STATUS(get_secs("hold", s.hold, 3600));
    SIM_TRY_STATUS(get_uint("probes", s.probes, 0, 100000));
    SIM_TRY_STATUS(get_secs("timeout", s.timeout, 3600));
    s.json = args.get("json");
    s.blind_sink = args.has("blind-sink");
    if (s.blind_sink && s.mode != "route") {
        return sim::Error{sim::Errc::invalid_argument, "--blind-sink is a route option"};
    }
    if (s.duration <= 0) {
        return sim::Error{sim::Errc::invalid_argument, "--duration must be positive"};
    }
    return s;
}

// ------------------------------------------------------------------------------------------------ run context

/// The server under test and the figures every mode reports about it.
struct Target {
    std::unique_ptr<SpawnedSimd> spawned;
    std::uint16_t port = 0;
    std::optional<pid_t> pid;
    std::optional<std::pair<std::string, std::uint16_t>> metrics;  // the server's admin endpoint, if known
    std::optional<std::string> metrics_at_start;                   // its /metrics when the run began

    /// The server's /metrics now, when its admin endpoint is known and answers.
    [[nodiscard]] std::optional<std::string> scrape() const {
        if (!metrics) {
            return std::nullopt;
        }
        auto r = sim::tools::http_get(metrics->first, metrics->second, "/metrics", 5s);
        if (!r || r->status != 200) {
            return std::nullopt;
        }
        return std::move(r->body);
    }

    [[nodiscard]] std::optional<double> cpu() const { return pid ? process_cpu_seconds(*pid) : std::nullopt; }
    [[nodiscard]] std::optional<double> rss_mib() const {
        if (!pid) {
            return std::nullopt;
        }
        const auto kib = process_rss_kib(*pid);
        return kib ? std::optional<double>(static_cast<double>(*kib) / 1024.0) : std::nullopt;
    }
};

/// A loopback port free now (for the spawned simd's admin endpoint), or nullopt.
std::optional<std::uint16_t> free_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return std::nullopt;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    std::optional<std::uint16_t> port;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
        port = ntohs(addr.sin_port);
    }
    ::close(fd);
    return port;
}

sim::Result<Target> open_target(const Settings& s, std::vector<std::string> extra) {
    Target t;
    t.metrics = s.metrics;
    if (!s.spawn_path.empty() && !t.metrics) {
        if (const auto port = free_loopback_port()) {
            t.metrics = std::pair{std::string("127.0.0.1"), *port};
        }
    }
    if (!s.spawn_path.empty()) {
        if (t.metrics) {
            extra.insert(extra.end(),
                         {"--metrics-address", t.metrics->first + ":" + std::to_string(t.metrics->second)});
        }
        // Every benchmark connection comes from this one address: no per-address limit.
        extra.insert(extra.end(), {"--bcrypt-cost", std::to_string(s.bcrypt_cost), "--conversation-suite", s.suite,
                                   "--conversation-mode", s.conversation_mode, "--max-connections-per-address", "0"});
        SIM_TRY(t.spawned, SpawnedSimd::start(s.spawn_path, extra));
        t.port = t.spawned->port();
        t.pid = t.spawned->pid();
    } else {
        t.port = s.port;
        t.pid = s.server_pid ? s.server_pid : find_listener_pid(s.port);
        if (!t.pid) {
            std::cerr << "sim-bench: no process found listening on port " << s.port
                      << " (give --server-pid); server CPU and RSS will be n/a\n";
        }
    }
    t.metrics_at_start = t.scrape();
    if (t.metrics && !t.metrics_at_start) {
        std::cerr << "sim-bench: no /metrics at " << t.metrics->first << ":" << t.metrics->second
                  << "; the server's own counts will be n/a\n";
    }
    return t;
}

/// What the server's /metrics counted between open_target and now (all n/a without its admin endpoint).
void report_server_metrics(Report& rep, const Target& t) {
    const auto now = t.scrape();
    const auto delta = [&](std::string_view series) -> std::optional<double> {
        if (!t.metrics_at_start || !now) {
            return std::nullopt;
        }
        const auto a = sim::tools::find_sample(*t.metrics_at_start, series);
        const auto b = sim::tools::find_sample(*now, series);
        return a && b ? std::optional(*b - *a) : std::nullopt;
    };
    const auto mean_ms = [&](const std::string& histogram) -> std::optional<double> {
        const auto sum = delta(histogram + "_sum");
        const auto count = delta(histogram + "_count");
        return sum && count && *count > 0 ? std::optional(*sum * 1000.0 / *count) : std::nullopt;
    };
    const auto commits = delta("simd_store_commits_total");
    const auto committed = delta("simd_store_committed_messages_total");
    rep.num("server_routed", "server /metrics: messages routed", delta("simd_messages_routed_total"), "", 0);
    rep.num("server_delivered", "server /metrics: messages acknowledged", delta("simd_messages_delivered_total"), "",
            0);
    rep.num("server_logins", "server /metrics: logins accepted", delta("simd_logins_total{result=\"ok\"}"), "", 0);
    rep.num("server_login_mean_ms", "server /metrics: login latency mean", mean_ms("simd_login_latency_seconds"), "ms",
            2);
    rep.num("server_handshake_mean_ms", "server /metrics: handshake latency mean",
            mean_ms("simd_handshake_latency_seconds"), "ms", 2);
    rep.num("store_commits", "server /metrics: store transactions", commits, "", 0);
    rep.num("server_committed", "server /metrics: messages committed", committed, "", 0);
    rep.num("server_messages_per_commit", "server /metrics: messages per transaction",
            commits && committed && *commits > 0 ? std::optional(*committed / *commits) : std::nullopt, "", 1);
    rep.num("server_commit_mean_ms", "server /metrics: accept-to-commit latency mean",
            mean_ms("simd_store_commit_latency_seconds"), "ms", 2);
}

void prepare_shared(Shared& shared, const Settings& s, const Target& t) {
    shared.host = s.host;
    shared.port = t.port;
    // Spread source addresses are IPv4 (127.0.x.y): only towards an IPv4 server.
    in_addr v4{};
    shared.spread_sources = ::inet_pton(AF_INET, s.host.c_str(), &v4) == 1;
    shared.config.handshake.server_id = "sim-bench:" + s.host + ":" + std::to_string(t.port);
    shared.config.handshake.trust = sim::TrustMode::tofu;
}

/// A user name prefix unique to this run, so runs against a long-lived server never collide.
std::string run_prefix() {
    const auto t = static_cast<unsigned long long>(now_ns() / 1'000'000 % 100'000'000);
    return "bn" + std::to_string(::getpid() % 100000) + "t" + std::to_string(t);
}

const std::string& bench_password() {
    static const std::string pw = "bench-password-not-secret";
    return pw;
}

sim::Credentials password_credentials() {
    sim::Credentials c;
    c.kind = sim::CredentialKind::password;
    c.secret = sim::SecureBytes(bench_password().begin(), bench_password().end());
    return c;
}

/// Prints a progress line every second (after the first two seconds unless `long_run`).
class Progress {
public:
    Progress(std::string mode, bool long_run) : m_mode(std::move(mode)), m_long(long_run), m_start(now_ns()) {}
    template <typename F>
    void tick(F&& line) {
        const double el = seconds_since(m_start);
        if (el >= static_cast<double>(m_next) && (m_long || el > 2.0)) {
            std::cerr << "sim-bench " << m_mode << ": " << std::fixed;
            std::cerr.precision(1);
            std::cerr << el << " s  " << line() << "\n";
            std::cerr.unsetf(std::ios::floatfield);
            m_next = static_cast<long>(el) + 1;
        } else if (el >= static_cast<double>(m_next)) {
            m_next = static_cast<long>(el) + 1;
        }
    }

private:
    std::string m_mode;
    bool m_long;
    std::int64_t m_start;
    long m_next = 1;
};

/// Wait (polling) until `done()` or `limit_s` seconds; calls `progress` each round. True when done.
template <typename Done, typename Tick>
bool wait_until(Done&& done, double limit_s, Tick&& tick) {
    const auto start = now_ns();
    while (!done()) {
        if (seconds_since(start) >= limit_s) {
            return false;
        }
        tick();
        std::this_thread::sleep_for(20ms);
    }
    return true;
}

std::string fmt_us(std::uint64_t ns) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", static_cast<double>(ns) / 1000.0);
    return buf;
}

// ------------------------------------------------------------------------------------------------ pacing

/// Token bucket of the per-connection rate cap (--conn-rate), with a burst of `burst` messages (sender strand).
struct RateCap {
    double tokens = 0;
    std::int64_t last_refill = 0;  ///< now_ns() of the last refill

    /// Zero when one message may go now (its token is taken), else how long to wait for the next token.
    std::chrono::nanoseconds take(std::int64_t now, double rate, double burst) {
        tokens = std::min(burst, tokens + static_cast<double>(now - last_refill) * rate / 1e9);
        last_refill = now;
        if (tokens < 1.0) {
            return std::chrono::nanoseconds(static_cast<std::int64_t>((1.0 - tokens) * 1e9 / rate) + 1);
        }
        tokens -= 1.0;
        return std::chrono::nanoseconds::zero();
    }
};

/// Run `fn` on the sender's strand after `delay`, with at most one of the stream's timers armed at a time.
template <typename StreamT, typename Fn>
void run_later(StreamT& s, std::chrono::nanoseconds delay, Fn fn) {
    if (s.timer_armed) {
        return;
    }
    s.timer_armed = true;
    s.sender->run_at(now_ns() + delay.count(), [&s, fn] {
        s.timer_armed = false;
        fn();
    });
}

// ------------------------------------------------------------------------------------------------ route

/// One direction of a pair: `sender` sends to `receiver`.
struct Stream {
    std::shared_ptr<Conn> sender;
    std::shared_ptr<Conn> receiver;
    std::string from;
    std::string to;
    std::atomic<std::uint64_t> budget{UINT64_MAX};
    // sender strand
    std::uint64_t next_seq = 0;
    std::int64_t next_intended = 0;
    bool timer_armed = false;
    RateCap cap;
    std::atomic<std::uint64_t> sent{0};
    std::atomic<std::int64_t> inflight{0};
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::uint64_t> send_errors{0};
    // --blind-sink: when each message awaiting its `delivered` receipt was sent (its send time, now_ns())
    std::mutex sent_at_mutex;
    std::map<sim::MessageId, std::int64_t> sent_at;
    // receiver strand
    std::uint64_t expected = 0;
    std::atomic<std::uint64_t> received{0};
    std::atomic<std::uint64_t> skipped{0};
    std::atomic<std::uint64_t> misordered{0};
    std::atomic<std::uint64_t> corrupt{0};
};

char pad_char(std::uint64_t seq, std::size_t j) {
    return static_cast<char>('a' + (seq + j) % 26);
}

/// "seq(16 hex) ts(16 hex) " then a pattern that depends on seq, to `size` bytes.
std::string make_text(std::uint64_t seq, std::int64_t ts, std::size_t size) {
    std::string t(size, ' ');
    std::snprintf(t.data(), 35, "%016" PRIx64 " %016" PRIx64 " ", seq, static_cast<std::uint64_t>(ts));
    t[33] = ' ';
    for (std::size_t j = 34; j < size; ++j) {
        t[j] = pad_char(seq, j);
    }
    return t;
}

/// Parse and check a text made by make_text; false when it is malformed or its pattern is wrong.
bool parse_text(const std::string& t, std::size_t size, std::uint64_t& seq, std::int64_t& ts) {
    if (t.size() != size || t[16] != ' ' || t[33] != ' ') {
        return false;
    }
    char* end = nullptr;
    seq = std::strtoull(t.substr(0, 16).c_str(), &end, 16);
    ts = static_cast<std::int64_t>(std::strtoull(t.substr(17, 16).c_str(), &end, 16));
    for (std::size_t j = 34; j < size; ++j) {
        if (t[j] != pad_char(seq, j)) {
            return false;
        }
    }
    return true;
}

struct RouteState {
    const Settings* s = nullptr;
    std::vector<std::unique_ptr<Stream>> streams;  // stream k is sent by connection k
    Histogram latency;
    std::atomic<bool> stop{false};
    std::atomic<bool> shutting_down{false};
    std::atomic<std::uint64_t> authed{0};
    std::atomic<std::uint64_t> keyed{0};
    std::atomic<std::uint64_t> closed{0};
    std::atomic<std::uint64_t> other_errors{0};
    std::atomic<std::uint64_t> rotations{0};
    std::atomic<std::int64_t> last_receive{0};
    std::atomic<bool> blind{false};  // --blind-sink: every client is a sink from now on
    std::mutex error_mutex;
    std::string first_error;
    double interval_ns = 0;  // open loop: per stream

    void note_error(const std::string& what) {
        const std::lock_guard lock(error_mutex);
        if (first_error.empty()) {
            first_error = what;
        }
    }
};

void send_one(RouteState& st, Stream& s, std::int64_t ts) {
    const auto text = make_text(s.next_seq, ts, st.s->size);
    s.inflight.fetch_add(1);
    const auto r = s.sender->core().send(s.to, text);
    if (!r) {
        s.inflight.fetch_sub(1);
        s.send_errors.fetch_add(1);
        st.note_error("send: " + r.error().message());
        s.budget.store(s.sent.load());  // stop this stream
        return;
    }
    if (st.s->blind_sink) {
        // Its receipt comes in on this connection's strand, after this send returned.
        const std::lock_guard lock(s.sent_at_mutex);
        s.sent_at.emplace(*r, ts);
    }
    ++s.next_seq;
    s.sent.fetch_add(1);
}

/// Closed loop: fill the window, within the per-connection rate cap (sender strand).
void pump(RouteState& st, Stream& s) {
    const double cap = st.s->conn_rate;
    while (!st.stop.load() && s.sent.load() < s.budget && s.inflight.load() < static_cast<std::int64_t>(st.s->window)) {
        const auto now = now_ns();
        if (cap > 0) {
            if (const auto wait = s.cap.take(now, cap, static_cast<double>(st.s->window)); wait.count() > 0) {
                run_later(s, wait, [&st, &s] { pump(st, s); });
                return;
            }
        }
        send_one(st, s, now);
    }
}

/// Open loop: send everything whose intended time has come, stamped with the intended time (sender strand).
void pace(RouteState& st, Stream& s) {
    const auto now = now_ns();
    while (!st.stop.load() && s.sent.load() < s.budget && s.next_intended <= now) {
        send_one(st, s, s.next_intended);
        s.next_intended += static_cast<std::int64_t>(st.interval_ns);
    }
    if (st.stop.load() || s.sent.load() >= s.budget) {
        return;
    }
    s.sender->run_at(s.next_intended, [&st, &s] { pace(st, s); });
}

/// A message of `s` got through at `now` (opened by its receiver, or receipted under --blind-sink): it leaves the
/// window, so the sender may send the next.
void count_delivered(RouteState& st, Stream& s, std::int64_t now) {
    s.received.fetch_add(1);
    st.last_receive.store(now);
    s.inflight.fetch_sub(1);
    if (st.interval_ns == 0) {
        s.sender->run([&st, &s] { pump(st, s); });
    }
}

/// --blind-sink: the receivers do not open what they get, so a message of `s` counts as delivered, and its latency
/// is measured, when its sender gets the `delivered` receipt (the server's answer to the receiver's ack).
void route_blind_receipt(RouteState& st, Stream& s, const sim::ReceiptEvent& e) {
    if (!st.s->blind_sink || e.status != sim::ReceiptStatus::delivered) {
        return;
    }
    std::int64_t sent_ns = 0;
    {
        const std::lock_guard lock(s.sent_at_mutex);
        const auto it = s.sent_at.find(e.message_id);
        if (it == s.sent_at.end()) {
            return;  // the set-up message, or a receipt already counted
        }
        sent_ns = it->second;
        s.sent_at.erase(it);
    }
    const auto now = now_ns();
    st.latency.record(now - sent_ns);
    count_delivered(st, s, now);
}

void route_event(RouteState& st, Conn& c, const sim::ClientEvent& e) {
    using K = sim::ClientEventKind;
    Stream& mine = *st.streams[c.index()];     // what c sends
    Stream& in = *st.streams[c.index() ^ 1U];  // what c receives
    switch (sim::kind_of(e)) {
        case K::authenticated:
            st.authed.fetch_add(1);
            break;
        case K::key_assigned:
            st.keyed.fetch_add(1);
            if (std::get<sim::KeyAssignedEvent>(e).mode == sim::ConversationMode::end_to_end && c.index() % 2 == 0) {
                // End to end only the initiator gets a KEYGEN (the peer's prekey bundle); the responder's session
                // starts with the first message, so send one before the measured traffic.
                c.run([&c, to = mine.to] { (void)c.core().send(to, "setup"); });
            }
            break;
        case K::key_rotated:
            st.rotations.fetch_add(1);
            break;
        case K::receipt:
            route_blind_receipt(st, mine, std::get<sim::ReceiptEvent>(e));
            break;
        case K::message: {
            if (st.blind.load()) {
                st.other_errors.fetch_add(1);
                st.note_error("a blind sink opened a message");
                break;
            }
            const auto& m = std::get<sim::MessageEvent>(e);
            if (m.text == "setup" && m.mode == sim::ConversationMode::end_to_end && in.expected == 0 &&
                in.received.load() == 0) {
                break;  // the set-up message that started the responder's session
            }
            const auto now = now_ns();
            std::uint64_t seq = 0;
            std::int64_t ts = 0;
            if (m.peer != in.from || !parse_text(m.text, st.s->size, seq, ts)) {
                in.corrupt.fetch_add(1);
                st.note_error("a message arrived with the wrong sender or content");
            } else {
                if (seq < in.expected) {
                    in.misordered.fetch_add(1);
                    st.note_error("a message arrived out of order or twice");
                } else {
                    in.skipped.fetch_add(seq - in.expected);
                    in.expected = seq + 1;
                }
                st.latency.record(now - ts);
            }
            count_delivered(st, in, now);
            break;
        }
        case K::error:
            if (sim::error_of(e)->code == sim::Errc::rate_limited) {
                mine.refused.fetch_add(1);
                mine.inflight.fetch_sub(1);
                if (st.interval_ns == 0) {
                    // Back off a little so as not to turn the refusals into a flood the server would close.
                    c.run([&st, &mine] { run_later(mine, 5ms, [&st, &mine] { pump(st, mine); }); });
                }
            } else {
                st.other_errors.fetch_add(1);
                st.note_error("error event: " + sim::error_of(e)->message());
            }
            break;
        case K::closed:
            if (!st.shutting_down.load()) {
                st.closed.fetch_add(1);
                st.note_error("connection closed: " + sim::error_of(e)->message());
            }
            break;
        default:
            break;
    }
}

/// Password logins in a loop beside a route run (--login-storm K): K chains, each logging in as its own user over a
/// fresh connection, again and again until stopped, so the server's hashing pool stays saturated. Runs on its own
/// I/O thread so that the route traffic's threads are not slowed by the storm's client side.
class LoginStorm {
public:
    LoginStorm(Shared& shared, std::uint64_t chains, std::string prefix)
        : m_shared(shared), m_chains(chains), m_prefix(std::move(prefix)), m_engine(1) {}
    ~LoginStorm() { stop(); }
    LoginStorm(const LoginStorm&) = delete;
    LoginStorm& operator=(const LoginStorm&) = delete;

    void start() {
        for (std::size_t w = 0; w < m_chains; ++w) {
            chain(w);
        }
    }
    void stop() {
        if (m_stopped.exchange(true)) {
            return;
        }
        {
            const std::lock_guard lock(m_mutex);
            for (auto& c : m_conns) {
                c->shutdown();
            }
        }
        std::this_thread::sleep_for(50ms);
        m_engine.stop();
    }
    [[nodiscard]] std::uint64_t ok() const { return m_ok.load(); }
    [[nodiscard]] std::uint64_t failed() const { return m_failed.load(); }
    [[nodiscard]] const Histogram& latency() const { return m_latency; }

private:
    void chain(std::size_t w) {
        if (m_stopped.load()) {
            return;
        }
        const auto index = 200000 + m_next.fetch_add(1);  // source addresses apart from the route's
        auto c = std::make_shared<Conn>(m_shared, m_engine.io(), index, [this, w](Conn& cc, const sim::ClientEvent& e) {
            using K = sim::ClientEventKind;
            if (sim::kind_of(e) == K::authenticated) {
                m_latency.record(now_ns() - cc.started_ns());
                m_ok.fetch_add(1);
                cc.shutdown();
                chain(w);
            } else if ((sim::kind_of(e) == K::closed && !cc.closing_by_us()) || sim::kind_of(e) == K::error) {
                if (sim::kind_of(e) == K::error) {
                    cc.shutdown();
                }
                m_failed.fetch_add(1);
                chain(w);
            }
        });
        {
            const std::lock_guard lock(m_mutex);
            // Closed connections are dropped from the list (they keep themselves alive while closing).
            std::erase_if(m_conns, [](const std::shared_ptr<Conn>& x) { return x->is_closed(); });
            m_conns.push_back(c);
        }
        const auto name = m_prefix + "storm" + std::to_string(w);
        if (auto r = c->start([name](Conn& cc) { (void)cc.core().login(name, password_credentials()); }); !r) {
            m_failed.fetch_add(1);
        }
    }

    Shared& m_shared;
    std::uint64_t m_chains;
    std::string m_prefix;
    Histogram m_latency;
    std::atomic<std::uint64_t> m_ok{0};
    std::atomic<std::uint64_t> m_failed{0};
    std::atomic<std::uint64_t> m_next{0};
    std::atomic<bool> m_stopped{false};
    std::mutex m_mutex;
    std::vector<std::shared_ptr<Conn>> m_conns;
    Engine m_engine;  // last: stopped (in stop()) before the members its handlers use go away
};

int run_route(const Settings& s) {
    auto target = open_target(s, {});
    if (!target) {
        std::cerr << "sim-bench: " << target.error().message() << "\n";
        return exit_fail;
    }
    Shared shared;
    prepare_shared(shared, s, *target);
    // The engine outlives the state its handlers use; every return path stops it first.
    Engine engine(s.threads);
    RouteState st;
    st.s = &s;
    const auto n_conn = s.pairs * 2;
    raise_fd_limit(n_conn + 256);
    const bool open_loop = s.rate > 0;
    if (open_loop) {
        st.interval_ns = 1e9 * static_cast<double>(n_conn) / s.rate;
    }
    const auto prefix = run_prefix();
    std::vector<std::shared_ptr<Conn>> conns;
    for (std::uint64_t k = 0; k < n_conn; ++k) {
        conns.push_back(std::make_shared<Conn>(shared, engine.io(), k,
                                               [&st](Conn& c, const sim::ClientEvent& e) { route_event(st, c, e); }));
    }
    const auto user = [&](std::uint64_t k) { return prefix + ((k % 2 == 0) ? "a" : "b") + std::to_string(k / 2); };
    for (std::uint64_t k = 0; k < n_conn; ++k) {
        auto stream = std::make_unique<Stream>();
        stream->sender = conns[k];
        stream->receiver = conns[k ^ 1U];
        stream->from = user(k);
        stream->to = user(k ^ 1U);
        if (s.count) {
            stream->budget.store(*s.count / n_conn + (k < *s.count % n_conn ? 1 : 0));
        }
        st.streams.push_back(std::move(stream));
    }
    const auto fail = [&](const std::string& why) {
        st.shutting_down = true;
        std::cerr << "sim-bench route: " << why << (st.first_error.empty() ? "" : " (" + st.first_error + ")") << "\n";
        for (auto& c : conns) {
            c->shutdown();
        }
        engine.stop();
        return exit_fail;
    };
    // b_i log in first (no destination), then a_i log in naming b_i: the server keys each pair once.
    const auto setup_start = now_ns();
    Progress setup_progress("route setup", false);
    const auto setup_tick = [&] {
        setup_progress.tick([&] {
            return "authenticated " + std::to_string(st.authed.load()) + "/" + std::to_string(n_conn) + "  keyed " +
                   std::to_string(st.keyed.load()) + "/" + std::to_string(n_conn);
        });
    };
    const auto login = [&](std::uint64_t k, std::string dest) {
        auto name = user(k);
        if (auto r =
                conns[k]->start([name, dest](Conn& c) { (void)c.core().login(name, password_credentials(), dest); });
            !r) {
            st.note_error(r.error().message());
        }
    };
    for (std::uint64_t k = 1; k < n_conn; k += 2) {
        login(k, {});
    }
    if (!wait_until([&] { return st.authed.load() >= s.pairs || st.closed.load() > 0; }, s.timeout, setup_tick) ||
        st.closed.load() > 0) {
        return fail("the b side did not log in");
    }
    for (std::uint64_t k = 0; k < n_conn; k += 2) {
        login(k, user(k + 1));
    }
    if (!wait_until([&] { return st.keyed.load() >= n_conn || st.closed.load() > 0; }, s.timeout, setup_tick) ||
        st.closed.load() > 0) {
        return fail("pairs did not get their conversation keys");
    }
    const double setup_s = seconds_since(setup_start);

    // Login storm (optional): its users register on their first login, before the measured traffic starts.
    std::unique_ptr<LoginStorm> storm;
    double storm_t0 = 0;
    if (s.login_storm > 0) {
        storm = std::make_unique<LoginStorm>(shared, s.login_storm, prefix);
        storm->start();
        if (!wait_until([&] { return storm->ok() + storm->failed() >= s.login_storm; }, s.timeout, setup_tick) ||
            storm->failed() > 0) {
            storm->stop();
            return fail("the login storm's users could not log in");
        }
        storm_t0 = static_cast<double>(now_ns());
    }
    const auto storm_ok0 = storm ? storm->ok() : 0;

    if (s.blind_sink) {
        // Keyed (end to end: the set-up messages opened), so from now on every client is a sink. The core is
        // thread-safe; this returns once it holds.
        for (auto& c : conns) {
            sim::testing::set_blind_sink(c->core(), true);
        }
        st.blind = true;
    }

    // Traffic.
    const auto cpu0 = target->cpu();
    const auto self0 = self_cpu_seconds();
    const auto t0 = now_ns();
    for (auto& sp : st.streams) {
        Stream& str = *sp;
        if (open_loop) {
            // Stagger the streams over one interval so that they do not all fire together.
            str.next_intended =
                t0 + static_cast<std::int64_t>(st.interval_ns * static_cast<double>(str.sender->index()) /
                                               static_cast<double>(n_conn));
            str.sender->run([&st, &str] { pace(st, str); });
        } else {
            str.sender->run([&st, &str, t0] {
                str.cap.last_refill = t0;
                pump(st, str);
            });
        }
    }
    const auto totals = [&] {
        std::array<std::uint64_t, 3> t{};  // sent, received, refused
        for (auto& sp : st.streams) {
            t[0] += sp->sent.load();
            t[1] += sp->received.load();
            t[2] += sp->refused.load();
        }
        return t;
    };
    Progress progress("route", s.duration > 2.0);
    std::uint64_t last_received = 0;
    std::int64_t last_tick = t0;
    const auto traffic_tick = [&] {
        progress.tick([&] {
            const auto t = totals();
            const auto now = now_ns();
            const double rate = static_cast<double>(t[1] - last_received) * 1e9 / static_cast<double>(now - last_tick);
            last_received = t[1];
            last_tick = now;
            char buf[160];
            std::snprintf(buf, sizeof buf,
                          "sent %" PRIu64 "  delivered %" PRIu64 "  refused %" PRIu64 "  %.0f msg/s  p99 %s us", t[0],
                          t[1], t[2], rate, fmt_us(st.latency.quantile(0.99)).c_str());
            return std::string(buf);
        });
    };
    const auto all_sent = [&] {
        for (auto& sp : st.streams) {
            if (sp->sent.load() < sp->budget && sp->send_errors.load() == 0) {
                return false;
            }
        }
        return true;
    };
    wait_until([&] { return (s.count && all_sent()) || st.closed.load() > 0; }, s.duration, traffic_tick);
    st.stop = true;
    const double send_s = seconds_since(t0);
    // A send may be under way on a sender's strand as stop is set: let every strand pass once, so that the counts the
    // drain compares are final (otherwise a send counted after the drain saw "all delivered" reads as missing).
    for (auto& sp : st.streams) {
        std::promise<void> passed;
        auto done = passed.get_future();
        sp->sender->run([&passed] { passed.set_value(); });
        (void)done.wait_for(5s);
    }
    std::uint64_t storm_logins = 0;
    if (storm) {
        storm_logins = storm->ok() - storm_ok0;
        storm->stop();
    }
    (void)storm_t0;
    // Drain: everything sent is delivered or refused (or the timeout says it is lost).
    wait_until(
        [&] {
            const auto t = totals();
            return t[1] + t[2] >= t[0] || st.closed.load() > 0;
        },
        std::min(s.timeout, 10.0), traffic_tick);
    const auto t_end = std::max(st.last_receive.load(), t0 + 1);
    const auto cpu1 = target->cpu();
    const auto self1 = self_cpu_seconds();
    const auto rss = target->rss_mib();
    st.shutting_down = true;
    for (auto& c : conns) {
        c->shutdown();
    }
    std::this_thread::sleep_for(50ms);
    engine.stop();

    const auto t = totals();
    std::uint64_t sink_acked = 0;
    if (s.blind_sink) {
        for (auto& c : conns) {
            sink_acked += sim::testing::blind_acked(c->core());
        }
    }
    std::uint64_t corrupt = 0;
    std::uint64_t misordered = 0;
    std::uint64_t skipped = 0;
    std::uint64_t send_errors = 0;
    for (auto& sp : st.streams) {
        corrupt += sp->corrupt.load();
        misordered += sp->misordered.load();
        skipped += sp->skipped.load();
        send_errors += sp->send_errors.load();
    }
    const std::uint64_t missing = t[0] > t[1] + t[2] ? t[0] - t[1] - t[2] : 0;
    const double elapsed = static_cast<double>(t_end - t0) / 1e9;
    const double delivered_rate = static_cast<double>(t[1]) / elapsed;
    const auto server_cpu = opt_diff(cpu0, cpu1);
    std::optional<double> cpu_per_k;
    if (server_cpu && t[1] > 0) {
        cpu_per_k = *server_cpu / (static_cast<double>(t[1]) / 1000.0);
    }
    const double self_cpu = self1 - self0;

    Report rep("route");
    rep.text("conversation_mode", "conversation mode",
             s.spawn_path.empty() ? std::string("(server's choice)") : s.conversation_mode);
    rep.text("suite", "conversation suite",
             s.spawn_path.empty() ? std::string("(server's choice)") : std::string(s.suite));
    rep.num("pairs", "pairs (connections)", static_cast<double>(s.pairs), "(" + std::to_string(n_conn) + ")", 0);
    rep.num("size_bytes", "message size", static_cast<double>(s.size), "B", 0);
    rep.text("load", "load",
             open_loop ? "open loop, " + std::to_string(static_cast<std::uint64_t>(s.rate)) + " msg/s offered"
                       : "closed loop, window " + std::to_string(s.window) + " per direction" +
                             (s.conn_rate > 0 ? ", at most " + std::to_string(static_cast<std::uint64_t>(s.conn_rate)) +
                                                    " msg/s each"
                                              : ""));
    rep.num("threads", "load generator I/O threads", s.threads, "", 0);
    rep.text("receivers", "receivers",
             s.blind_sink ? "blind sinks: ack unopened; delivered = `delivered` receipts, latency = send to receipt"
                          : "open and check every message; latency = send to opened");
    rep.num("setup_s", "set-up (connect, login, keys)", setup_s, "s", 2);
    rep.num("send_s", "sending time", send_s, "s", 2);
    rep.num("sent", "messages sent", static_cast<double>(t[0]), "", 0);
    rep.num("delivered", "messages delivered", static_cast<double>(t[1]), "", 0);
    rep.num("refused", "refused by the server (rate limit)", static_cast<double>(t[2]), "", 0);
    rep.num("missing", "missing (not delivered or refused)", static_cast<double>(missing), "", 0);
    rep.num("corrupt", "corrupt or misordered", static_cast<double>(corrupt + misordered), "", 0);
    if (s.blind_sink) {
        rep.num("sink_acked", "acknowledged unopened by the sinks", static_cast<double>(sink_acked), "", 0);
    }
    rep.num("delivered_per_s", "delivered throughput", delivered_rate, "msg/s", 0);
    rep.num("delivered_mib_per_s", "delivered payload", delivered_rate * static_cast<double>(s.size) / 1048576.0,
            "MiB/s", 2);
    rep.num("latency_p50_us", "latency p50", static_cast<double>(st.latency.quantile(0.50)) / 1000.0, "us", 1);
    rep.num("latency_p99_us", "latency p99", static_cast<double>(st.latency.quantile(0.99)) / 1000.0, "us", 1);
    rep.num("latency_p999_us", "latency p99.9", static_cast<double>(st.latency.quantile(0.999)) / 1000.0, "us", 1);
    rep.num("latency_max_us", "latency max", static_cast<double>(st.latency.max()) / 1000.0, "us", 1);
    rep.num("latency_mean_us", "latency mean", st.latency.mean() / 1000.0, "us", 1);
    rep.num("server_cpu_s", "server CPU", server_cpu, "s", 2);
    rep.num("server_cpu_s_per_1000_msgs", "server CPU per 1,000 messages", cpu_per_k, "s", 4);
    rep.num("server_cpu_percent", "server CPU use",
            server_cpu ? std::optional(*server_cpu / elapsed * 100.0) : std::nullopt, "% of one core", 0);
    rep.num("server_rss_mib", "server RSS", rss, "MiB", 1);
    rep.num("loadgen_cpu_s", "load generator CPU", self_cpu, "s", 2);
    rep.num("loadgen_cpu_percent", "load generator CPU use", self_cpu / elapsed * 100.0, "% of one core", 0);
    if (storm) {
        rep.num("login_storm_chains", "login storm: concurrent logins", static_cast<double>(s.login_storm), "", 0);
        rep.num("login_storm_logins", "login storm: logins while sending", static_cast<double>(storm_logins), "", 0);
        rep.num("login_storm_per_s", "login storm: logins/s", static_cast<double>(storm_logins) / send_s, "/s", 1);
        rep.num("login_storm_p50_ms", "login storm: login p50",
                static_cast<double>(storm->latency().quantile(0.50)) / 1e6, "ms", 1);
        rep.num("login_storm_failed", "login storm: failed logins", static_cast<double>(storm->failed()), "", 0);
    }
    rep.num("key_rotations", "conversation key rotations seen", static_cast<double>(st.rotations.load()), "", 0);
    rep.num("skipped_seq", "sequence gaps (refused messages)", static_cast<double>(skipped), "", 0);
    report_server_metrics(rep, *target);
    rep.print(std::cout);
    if (!s.json.empty() && !rep.write_json(s.json)) {
        std::cerr << "sim-bench: cannot write " << s.json << "\n";
        return exit_fail;
    }
    // A sink acknowledges each message it gets (a re-delivery again) and a receipt answers an ack: fewer acks than
    // receipts would mean the counting is wrong.
    const bool bad = t[1] == 0 || missing > 0 || corrupt > 0 || misordered > 0 || st.closed.load() > 0 ||
                     send_errors > 0 || st.other_errors.load() > 0 || (s.blind_sink && sink_acked < t[1]);
    if (bad) {
        std::cerr << "sim-bench route: FAILED" << (st.first_error.empty() ? "" : ": " + st.first_error) << "\n";
        return exit_fail;
    }
    return exit_ok;
}

// ------------------------------------------------------------------------------------------------ connect

int run_connect(const Settings& s) {
    const std::uint64_t n = s.count.value_or(1000);
    const std::uint64_t k = s.parallel.value_or(64);
    const auto limit = raise_fd_limit(n + 256);
    if (limit < n + 64) {
        std::cerr << "sim-bench connect: RLIMIT_NOFILE is " << limit << " (hard limit), too low for " << n
                  << " connections\n";
        return exit_fail;
    }
    auto target = open_target(
        s, {"--max-connections", std::to_string(std::max<std::uint64_t>(10000, n + 100)), "--idle-timeout", "0"});
    if (!target) {
        std::cerr << "sim-bench: " << target.error().message() << "\n";
        return exit_fail;
    }
    Shared shared;
    prepare_shared(shared, s, *target);
    shared.read_chunk = 2048;  // idle connections: keep our own memory small
    const auto prefix = run_prefix();
    Engine engine(s.threads);

    std::vector<std::shared_ptr<Conn>> conns(n);
    std::atomic<std::uint64_t> next{0};
    std::atomic<std::uint64_t> authed{0};
    std::atomic<std::uint64_t> failed{0};
    std::atomic<std::uint64_t> dropped{0};  // closed after authenticating
    std::atomic<bool> shutting_down{false};
    std::vector<std::atomic<std::int64_t>> probe_sent(n);
    Histogram probe_rtt;
    Histogram connect_time;
    std::atomic<std::uint64_t> probe_answers{0};
    std::mutex err_mutex;
    std::string first_error;
    const std::string probe_target = prefix + "c0";

    std::function<void()> launch;
    const auto handler = [&](Conn& c, const sim::ClientEvent& e) {
        using K = sim::ClientEventKind;
        if (sim::kind_of(e) == K::authenticated) {
            connect_time.record(now_ns() - c.started_ns());
            c.mark();
            authed.fetch_add(1);
            launch();
        } else if ((sim::kind_of(e) == K::peer_online || sim::kind_of(e) == K::waiting) &&
                   sim::peer_of(e) == probe_target) {
            const auto t = probe_sent[c.index()].exchange(0);
            if (t != 0) {
                probe_rtt.record(now_ns() - t);
                probe_answers.fetch_add(1);
            }
        } else if (sim::kind_of(e) == K::closed && !shutting_down.load()) {
            if (c.marked()) {
                dropped.fetch_add(1);
            } else {
                failed.fetch_add(1);
                launch();
            }
            const std::lock_guard lock(err_mutex);
            if (first_error.empty()) {
                first_error = sim::error_of(e)->message();
            }
        } else if (sim::kind_of(e) == K::error) {
            const std::lock_guard lock(err_mutex);
            if (first_error.empty()) {
                first_error = "error event: " + sim::error_of(e)->message();
            }
        }
    };
    launch = [&] {
        const auto i = next.fetch_add(1);
        if (i >= n || shutting_down.load()) {
            return;
        }
        auto c = std::make_shared<Conn>(shared, engine.io(), i, handler);
        conns[i] = c;
        const auto name = prefix + "c" + std::to_string(i);
        if (auto r = c->start([name](Conn& cc) { (void)cc.core().login(name, password_credentials()); }); !r) {
            failed.fetch_add(1);
        }
    };
    const auto rss0 = target->rss_mib();
    const auto cpu0 = target->cpu();
    const auto self0 = self_cpu_seconds();
    const auto t0 = now_ns();
    // Each completion starts the next, so at most k handshakes and logins are in progress at a time.
    for (std::uint64_t i = 0; i < std::min(n, k); ++i) {
        launch();
    }
    Progress progress("connect", false);
    const auto tick = [&] {
        progress.tick([&] {
            return "authenticated " + std::to_string(authed.load()) + "/" + std::to_string(n) + "  failed " +
                   std::to_string(failed.load());
        });
    };
    const bool all = wait_until([&] { return authed.load() + failed.load() >= n; }, s.timeout, tick);
    const double connect_s = seconds_since(t0);
    const auto rss1 = target->rss_mib();
    wait_until([] { return false; }, s.hold, tick);
    // Probe a sample (spread over the connections; connection 0 is the probe target).
    std::uint64_t probes = 0;
    const std::uint64_t want = std::min<std::uint64_t>(s.probes, n > 1 ? n - 1 : 0);
    for (std::uint64_t j = 0; j < want; ++j) {
        const auto i = 1 + j * (n - 1) / want;
        auto& c = conns[i];
        if (!c || c->is_closed() || !c->marked()) {
            continue;
        }
        ++probes;
        probe_sent[i].store(now_ns());
        c->run([&c, &probe_target] { (void)c->core().probe(probe_target); });
    }
    wait_until([&] { return probe_answers.load() >= probes; }, 10.0, tick);
    const auto rss2 = target->rss_mib();
    const auto cpu1 = target->cpu();
    const auto self1 = self_cpu_seconds();
    std::uint64_t alive = 0;
    for (auto& c : conns) {
        if (c && !c->is_closed() && c->marked()) {
            ++alive;
        }
    }
    shutting_down = true;
    for (auto& c : conns) {
        if (c) {
            c->shutdown();
        }
    }
    std::this_thread::sleep_for(100ms);
    engine.stop();

    std::optional<double> per_conn_kib;
    if (rss0 && rss1 && authed.load() > 0) {
        per_conn_kib = (*rss1 - *rss0) * 1024.0 / static_cast<double>(authed.load());
    }
    Report rep("connect");
    rep.num("requested", "connections requested", static_cast<double>(n), "", 0);
    rep.num("parallel", "handshakes in progress at most", static_cast<double>(k), "", 0);
    rep.num("authenticated", "connections authenticated", static_cast<double>(authed.load()), "", 0);
    rep.num("failed", "connections failed", static_cast<double>(failed.load()), "", 0);
    rep.num("connect_s", "time to connect all", connect_s, "s", 2);
    rep.num("connects_per_s", "connect + handshake + login rate", static_cast<double>(authed.load()) / connect_s, "/s",
            0);
    rep.num("connect_p50_ms", "one connection p50 (TCP+Noise+login)",
            static_cast<double>(connect_time.quantile(0.5)) / 1e6, "ms", 2);
    rep.num("connect_p99_ms", "one connection p99", static_cast<double>(connect_time.quantile(0.99)) / 1e6, "ms", 2);
    rep.num("hold_s", "held for", s.hold, "s", 1);
    rep.num("alive", "alive after the hold", static_cast<double>(alive), "", 0);
    rep.num("dropped", "dropped after login", static_cast<double>(dropped.load()), "", 0);
    rep.num("probes", "probe round trips sent", static_cast<double>(probes), "", 0);
    rep.num("probe_answers", "probe round trips answered", static_cast<double>(probe_answers.load()), "", 0);
    rep.num("probe_p50_us", "probe round trip p50", static_cast<double>(probe_rtt.quantile(0.5)) / 1000.0, "us", 1);
    rep.num("probe_p99_us", "probe round trip p99", static_cast<double>(probe_rtt.quantile(0.99)) / 1000.0, "us", 1);
    rep.num("server_rss_before_mib", "server RSS before", rss0, "MiB", 1);
    rep.num("server_rss_connected_mib", "server RSS all connected", rss1, "MiB", 1);
    rep.num("server_rss_after_hold_mib", "server RSS after hold+probes", rss2, "MiB", 1);
    rep.num("server_rss_per_conn_kib", "server RSS per connection", per_conn_kib, "KiB", 1);
    rep.num("server_cpu_s", "server CPU", opt_diff(cpu0, cpu1), "s", 2);
    rep.num("loadgen_cpu_s", "load generator CPU", self1 - self0, "s", 2);
    report_server_metrics(rep, *target);
    rep.print(std::cout);
    if (!s.json.empty() && !rep.write_json(s.json)) {
        std::cerr << "sim-bench: cannot write " << s.json << "\n";
        return exit_fail;
    }
    if (!all || failed.load() > 0 || dropped.load() > 0 || alive != n || probe_answers.load() < probes) {
        std::cerr << "sim-bench connect: FAILED" << (first_error.empty() ? "" : ": " + first_error) << "\n";
        return exit_fail;
    }
    return exit_ok;
}

// ------------------------------------------------------------------------------------------------ login

/// Runs `total` logins over `workers` concurrent chains; each login is a new connection. Returns the elapsed time.
struct LoginPhase {
    Histogram handshake;  // connect start -> channel_ready
    Histogram login;      // connect start -> authenticated
    std::atomic<std::uint64_t> ok{0};
    std::atomic<std::uint64_t> failed{0};
    std::string first_error;
    std::mutex mutex;
    double elapsed = 0;
};

void run_login_phase(Shared& shared, unsigned threads, const std::vector<std::string>& users, std::uint64_t total,
                     LoginPhase& phase, double timeout, const std::string& label) {
    // The engine is declared first: it is stopped before the state its handlers use goes away.
    Engine engine(threads);
    std::atomic<std::uint64_t> next{0};
    std::mutex keep_mutex;
    std::vector<std::shared_ptr<Conn>> keep;
    std::function<void(std::size_t)> chain;
    const auto handler = [&](std::size_t worker) {
        return [&, worker](Conn& c, const sim::ClientEvent& e) {
            using K = sim::ClientEventKind;
            if (sim::kind_of(e) == K::channel_ready) {
                phase.handshake.record(now_ns() - c.started_ns());
            } else if (sim::kind_of(e) == K::authenticated) {
                phase.login.record(now_ns() - c.started_ns());
                phase.ok.fetch_add(1);
                c.shutdown();
                chain(worker);
            } else if ((sim::kind_of(e) == K::closed && !c.closing_by_us()) || sim::kind_of(e) == K::error) {
                if (sim::kind_of(e) == K::error) {
                    c.shutdown();
                }
                phase.failed.fetch_add(1);
                {
                    const std::lock_guard lock(phase.mutex);
                    if (phase.first_error.empty()) {
                        phase.first_error = sim::error_of(e)->message();
                    }
                }
                chain(worker);
            }
        };
    };
    chain = [&](std::size_t worker) {
        const auto i = next.fetch_add(1);
        if (i >= total) {
            return;
        }
        auto c = std::make_shared<Conn>(shared, engine.io(), i, handler(worker));
        {
            const std::lock_guard lock(keep_mutex);
            keep.push_back(c);
        }
        const auto name = users[worker];
        if (auto r = c->start([name](Conn& cc) { (void)cc.core().login(name, password_credentials()); }); !r) {
            phase.failed.fetch_add(1);
        }
    };
    const auto t0 = now_ns();
    for (std::size_t w = 0; w < users.size(); ++w) {
        chain(w);
    }
    Progress progress(label, false);
    wait_until(
        [&] { return phase.ok.load() + phase.failed.load() >= total; }, timeout,
        [&] {
            progress.tick([&] { return std::to_string(phase.ok.load()) + "/" + std::to_string(total) + " logins"; });
        });
    phase.elapsed = seconds_since(t0);
    next.store(total);
    {
        const std::lock_guard lock(keep_mutex);
        for (auto& c : keep) {
            c->shutdown();
        }
    }
    std::this_thread::sleep_for(50ms);
    engine.stop();
}

int run_login(const Settings& s) {
    const std::uint64_t n = s.count.value_or(20);
    const std::uint64_t k = s.parallel.value_or(4);
    auto target = open_target(s, {});
    if (!target) {
        std::cerr << "sim-bench: " << target.error().message() << "\n";
        return exit_fail;
    }
    Shared shared;
    prepare_shared(shared, s, *target);
    const auto prefix = run_prefix();
    std::vector<std::string> users;
    for (std::uint64_t i = 0; i < k; ++i) {
        users.push_back(prefix + "l" + std::to_string(i));
    }
    LoginPhase reg;
    LoginPhase seq;
    LoginPhase par;
    std::optional<double> cpu_seq;
    std::optional<double> cpu_par;
    run_login_phase(shared, s.threads, users, users.size(), reg, s.timeout, "login (registering)");
    if (reg.failed.load() > 0) {
        std::cerr << "sim-bench login: registering the users failed: " << reg.first_error << "\n";
        return exit_fail;
    }
    {
        const auto c0 = target->cpu();
        run_login_phase(shared, s.threads, {users[0]}, n, seq, s.timeout, "login (sequential)");
        cpu_seq = opt_diff(c0, target->cpu());
    }
    {
        const auto c0 = target->cpu();
        run_login_phase(shared, s.threads, users, n, par, s.timeout, "login (parallel)");
        cpu_par = opt_diff(c0, target->cpu());
    }
    const auto rss = target->rss_mib();
    const auto per_login_ms = [](std::optional<double> cpu, const LoginPhase& p) -> std::optional<double> {
        if (!cpu || p.ok.load() == 0) {
            return std::nullopt;
        }
        return *cpu * 1000.0 / static_cast<double>(p.ok.load());
    };
    Report rep("login");
    rep.text("bcrypt_cost", "server password hash",
             s.spawn_path.empty() ? std::string("(server's setting)") : "bcrypt cost " + std::to_string(s.bcrypt_cost));
    rep.num("logins_per_phase", "logins per phase", static_cast<double>(n), "", 0);
    rep.num("seq_ok", "sequential: logins ok", static_cast<double>(seq.ok.load()), "", 0);
    rep.num("seq_per_s", "sequential: logins per second", static_cast<double>(seq.ok.load()) / seq.elapsed, "/s", 1);
    rep.num("seq_p50_ms", "sequential: login p50 (TCP+Noise+init)", static_cast<double>(seq.login.quantile(0.5)) / 1e6,
            "ms", 2);
    rep.num("seq_p99_ms", "sequential: login p99", static_cast<double>(seq.login.quantile(0.99)) / 1e6, "ms", 2);
    rep.num("seq_handshake_p50_ms", "sequential: handshake part p50",
            static_cast<double>(seq.handshake.quantile(0.5)) / 1e6, "ms", 2);
    rep.num("seq_server_cpu_ms_per_login", "sequential: server CPU per login", per_login_ms(cpu_seq, seq), "ms", 2);
    rep.num("parallel", "parallel: concurrent logins", static_cast<double>(k), "", 0);
    rep.num("par_ok", "parallel: logins ok", static_cast<double>(par.ok.load()), "", 0);
    rep.num("par_per_s", "parallel: logins per second", static_cast<double>(par.ok.load()) / par.elapsed, "/s", 1);
    rep.num("par_p50_ms", "parallel: login p50", static_cast<double>(par.login.quantile(0.5)) / 1e6, "ms", 2);
    rep.num("par_p99_ms", "parallel: login p99", static_cast<double>(par.login.quantile(0.99)) / 1e6, "ms", 2);
    rep.num("par_server_cpu_ms_per_login", "parallel: server CPU per login", per_login_ms(cpu_par, par), "ms", 2);
    rep.num("server_rss_mib", "server RSS", rss, "MiB", 1);
    report_server_metrics(rep, *target);
    rep.print(std::cout);
    if (!s.json.empty() && !rep.write_json(s.json)) {
        std::cerr << "sim-bench: cannot write " << s.json << "\n";
        return exit_fail;
    }
    if (seq.failed.load() > 0 || par.failed.load() > 0 || seq.ok.load() < n || par.ok.load() < n) {
        std::cerr << "sim-bench login: FAILED: " << (seq.first_error.empty() ? par.first_error : seq.first_error)
                  << "\n";
        return exit_fail;
    }
    return exit_ok;
}

// ------------------------------------------------------------------------------------------------ offline

/// One sender -> recipient stream of the offline mode. Sender fields are used on the sender's strand, drain
/// fields on the recipient's (second) connection's strand; counters are atomic for the main thread.
struct OfflineStream {
    std::string from;
    std::string to;
    std::shared_ptr<Conn> sender;
    std::shared_ptr<Conn> recipient;        // first login (publishes prekeys), then the drain connection
    std::unique_ptr<sim::ClientState> state;  // the recipient's state, kept across its two logins
    std::uint64_t budget = 0;
    // set-up
    std::atomic<bool> keyed{false};
    std::atomic<bool> retry_open{false};
    std::atomic<int> offline_seen{0};  // 1: the server says `to` is offline; 2: online (probe again)
    // sender strand
    std::uint64_t next_seq = 0;
    bool timer_armed = false;
    RateCap cap;
    std::set<sim::MessageId> awaiting;  // sent, no `receipt stored` yet
    std::atomic<std::uint64_t> sent{0};
    std::atomic<std::uint64_t> stored{0};
    std::atomic<std::uint64_t> bad_receipts{0};  // unknown or repeated ids
    std::atomic<std::uint64_t> refused{0};
    std::atomic<std::uint64_t> send_errors{0};
    std::atomic<std::int64_t> last_stored_ns{0};
    // drain strand
    std::uint64_t expected = 0;
    std::atomic<std::uint64_t> drained{0};
    std::atomic<std::uint64_t> corrupt{0};
    std::atomic<std::uint64_t> misordered{0};
    std::atomic<std::uint64_t> skipped{0};
    std::atomic<std::int64_t> first_drained_ns{0};
    std::atomic<std::int64_t> last_drained_ns{0};
};

struct OfflineState {
    const Settings* s = nullptr;
    std::vector<std::unique_ptr<OfflineStream>> streams;
    std::atomic<bool> stop{false};
    std::atomic<bool> shutting_down{false};
    std::atomic<std::uint64_t> authed{0};
    std::atomic<std::uint64_t> closed{0};  // unexpected closes
    std::atomic<std::uint64_t> other_errors{0};
    std::atomic<std::uint64_t> gaps{0};
    std::mutex error_mutex;
    std::string first_error;

    void note_error(const std::string& what) {
        const std::lock_guard lock(error_mutex);
        if (first_error.empty()) {
            first_error = what;
        }
    }
};

/// Keep `--window` messages awaiting their `receipt stored`, within the per-connection rate cap (sender strand).
void offline_pump(OfflineState& st, OfflineStream& s) {
    const double cap = st.s->conn_rate;
    while (!st.stop.load() && s.next_seq < s.budget && s.awaiting.size() < st.s->window) {
        const auto now = now_ns();
        if (cap > 0) {
            if (const auto wait = s.cap.take(now, cap, static_cast<double>(st.s->window)); wait.count() > 0) {
                run_later(s, wait, [&st, &s] { offline_pump(st, s); });
                return;
            }
        }
        auto id = s.sender->core().send(s.to, make_text(s.next_seq, now, st.s->size));
        if (!id) {
            s.send_errors.fetch_add(1);
            st.note_error("send: " + id.error().message());
            s.budget = s.next_seq;  // stop this stream
            return;
        }
        s.awaiting.insert(*id);
        ++s.next_seq;
        s.sent.fetch_add(1);
    }
}

void offline_sender_event(OfflineState& st, OfflineStream& s, Conn& c, const sim::ClientEvent& e) {
    using K = sim::ClientEventKind;
    switch (sim::kind_of(e)) {
        case K::authenticated:
            st.authed.fetch_add(1);
            break;
        case K::key_assigned:
            s.keyed.store(true);
            break;
        case K::waiting:
            if (sim::peer_of(e) == s.to) {
                s.offline_seen.store(1);
            }
            break;
        case K::peer_online:
            if (sim::peer_of(e) == s.to) {
                s.offline_seen.store(2);
            }
            break;
        case K::receipt:
            if (std::get<sim::ReceiptEvent>(e).status != sim::ReceiptStatus::stored) {
                break;  // "delivered" cannot happen while the recipients are offline; ignore it anyway
            }
            if (s.awaiting.erase(std::get<sim::ReceiptEvent>(e).message_id) == 0) {
                s.bad_receipts.fetch_add(1);
                st.note_error("a receipt named an unknown or already receipted message");
                break;
            }
            s.stored.fetch_add(1);
            s.last_stored_ns.store(now_ns());
            offline_pump(st, s);  // the event comes from on_bytes, on this connection's strand
            break;
        case K::error:
            if (sim::error_of(e)->code == sim::Errc::no_conversation && !s.keyed.load()) {
                s.retry_open.store(true);  // the recipient's prekeys are not published yet: ask again
            } else if (sim::error_of(e)->code == sim::Errc::rate_limited) {
                s.refused.fetch_add(1);
                st.note_error("the server refused a message (rate limit)");
            } else {
                st.other_errors.fetch_add(1);
                st.note_error("sender error event: " + sim::error_of(e)->message());
            }
            break;
        case K::closed:
            if (!st.shutting_down.load() && !c.closing_by_us()) {
                st.closed.fetch_add(1);
                st.note_error("sender connection closed: " + sim::error_of(e)->message());
            }
            break;
        default:
            break;
    }
}

void offline_recipient_event(OfflineState& st, OfflineStream& s, Conn& c, const sim::ClientEvent& e) {
    using K = sim::ClientEventKind;
    switch (sim::kind_of(e)) {
        case K::authenticated:
            st.authed.fetch_add(1);
            break;
        case K::message: {
            std::uint64_t seq = 0;
            std::int64_t ts = 0;
            const auto& m = std::get<sim::MessageEvent>(e);
            if (m.peer != s.from || !parse_text(m.text, st.s->size, seq, ts)) {
                s.corrupt.fetch_add(1);
                st.note_error("a stored message arrived with the wrong sender or content");
            } else if (seq < s.expected) {
                s.misordered.fetch_add(1);
                st.note_error("a stored message arrived out of order or twice");
            } else {
                s.skipped.fetch_add(seq - s.expected);
                s.expected = seq + 1;
            }
            const auto now = now_ns();
            std::int64_t zero = 0;
            s.first_drained_ns.compare_exchange_strong(zero, now);
            s.last_drained_ns.store(now);
            s.drained.fetch_add(1);
            break;
        }
        case K::gap:
            st.gaps.fetch_add(std::get<sim::GapEvent>(e).count);
            st.note_error("the recipient reported a gap");
            break;
        case K::error:
            if (c.marked()) {
                break;  // the server's goodbye after our logout
            }
            st.other_errors.fetch_add(1);
            st.note_error("recipient error event: " + sim::error_of(e)->message());
            break;
        case K::closed:
            if (!st.shutting_down.load() && !c.closing_by_us() && !c.marked()) {
                st.closed.fetch_add(1);
                st.note_error("recipient connection closed: " + sim::error_of(e)->message());
            }
            break;
        default:
            break;
    }
}

/// Bytes the process has caused to be written to storage, from /proc/PID/io (write_bytes); nullopt when unreadable.
std::optional<double> process_disk_write_bytes(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/io");
    std::string key;
    while (in >> key) {
        if (key == "write_bytes:") {
            double v = 0;
            in >> v;
            return v;
        }
        in.ignore(4096, '\n');
    }
    return std::nullopt;
}

int run_offline(const Settings& s) {
    auto target = open_target(s, {});
    if (!target) {
        std::cerr << "sim-bench: " << target.error().message() << "\n";
        return exit_fail;
    }
    Shared shared;
    prepare_shared(shared, s, *target);
    // The engine outlives the state its handlers use; every return path stops it first.
    Engine engine(s.threads);
    OfflineState st;
    st.s = &s;
    const std::uint64_t p = s.pairs;
    const std::uint64_t per_sender = s.count.value_or(2000);
    const std::uint64_t total = p * per_sender;
    raise_fd_limit(p * 3 + 256);
    const auto prefix = run_prefix();
    for (std::uint64_t i = 0; i < p; ++i) {
        auto os = std::make_unique<OfflineStream>();
        os->from = prefix + "s" + std::to_string(i);
        os->to = prefix + "r" + std::to_string(i);
        os->budget = per_sender;
        os->state = sim::make_memory_client_state();
        st.streams.push_back(std::move(os));
    }
    // Connection indices (they pick the source address): senders 0..p-1, recipients p..2p-1, drain 2p..3p-1.
    const auto new_recipient_conn = [&](OfflineStream& os, std::size_t index) {
        return std::make_shared<Conn>(shared, engine.io(), index, [&st, &os](Conn& c, const sim::ClientEvent& e) {
            offline_recipient_event(st, os, c, e);
        });
    };
    std::vector<std::shared_ptr<Conn>> all;  // every connection, for shutdown
    const auto shutdown_all = [&] {
        st.shutting_down = true;
        for (auto& c : all) {
            c->shutdown();
        }
        std::this_thread::sleep_for(50ms);
        engine.stop();
    };
    const auto fail = [&](const std::string& why) {
        std::cerr << "sim-bench offline: " << why << (st.first_error.empty() ? "" : " (" + st.first_error + ")")
                  << "\n";
        shutdown_all();
        return exit_fail;
    };
    // Each recipient's core gets its own state (identity, prekeys) through the config, kept for the drain login.
    const auto start_recipient = [&](OfflineStream& os, std::size_t index) -> sim::Status {
        auto c = new_recipient_conn(os, index);
        os.recipient = c;
        all.push_back(c);
        const auto name = os.to;
        return c->start([name](Conn& cc) { (void)cc.core().login(name, password_credentials()); }, os.state.get());
    };

    // 1. Recipients log in once (registering; the client publishes its prekeys) and stay until every sender has
    //    its bundle, so that no sender asks before the prekeys are stored.
    const auto setup_start = now_ns();
    Progress setup_progress("offline setup", false);
    std::uint64_t want_auth = p;
    const auto setup_tick = [&] {
        setup_progress.tick([&] {
            std::uint64_t keyed = 0;
            for (auto& os : st.streams) {
                keyed += os->keyed.load() ? 1 : 0;
            }
            return "authenticated " + std::to_string(st.authed.load()) + "/" + std::to_string(want_auth) +
                   "  senders keyed " + std::to_string(keyed) + "/" + std::to_string(p);
        });
    };
    for (std::uint64_t i = 0; i < p; ++i) {
        if (auto r = start_recipient(*st.streams[i], p + i); !r) {
            return fail("recipient: " + r.error().message());
        }
    }
    if (!wait_until([&] { return st.authed.load() >= p || st.closed.load() > 0; }, s.timeout, setup_tick) ||
        st.closed.load() > 0) {
        return fail("the recipients did not log in");
    }
    // Server-assigned mode: a recipient's logout ends its conversations (the senders would lose their keys), so
    // the recipients leave first and the server keys each conversation for an offline recipient (6.7).
    const bool e2e_mode = s.conversation_mode == "e2e" || s.spawn_path.empty();
    const auto recipients_leave = [&] {
        for (auto& os : st.streams) {
            os->recipient->mark();  // its close is expected
            os->recipient->run([&os] { (void)os->recipient->core().logout(); });
        }
    };
    if (!e2e_mode) {
        recipients_leave();
        std::this_thread::sleep_for(300ms);
    }
    // 2. Senders log in and open their conversation (KEYGEN: the recipient's bundle in end-to-end mode).
    want_auth = 2 * p;
    for (std::uint64_t i = 0; i < p; ++i) {
        auto& os = *st.streams[i];
        auto c = std::make_shared<Conn>(shared, engine.io(), i, [&st, &os](Conn& cc, const sim::ClientEvent& e) {
            offline_sender_event(st, os, cc, e);
        });
        os.sender = c;
        all.push_back(c);
        const auto name = os.from;
        const auto dest = os.to;
        if (auto r = c->start([name, dest](Conn& cc) { (void)cc.core().login(name, password_credentials(), dest); });
            !r) {
            return fail("sender: " + r.error().message());
        }
    }
    const auto all_keyed = [&] {
        bool keyed = true;
        for (auto& os : st.streams) {
            if (os->retry_open.exchange(false)) {
                os->sender->run([&os] { (void)os->sender->core().open(os->to); });
            }
            keyed = keyed && os->keyed.load();
        }
        return keyed;
    };
    if (!wait_until([&] { return all_keyed() || st.closed.load() > 0 || st.other_errors.load() > 0; }, s.timeout,
                    setup_tick) ||
        st.closed.load() > 0 || st.other_errors.load() > 0) {
        return fail("senders did not get their conversations keyed");
    }
    // 3. Recipients go offline; each sender probes until the server reports its recipient offline.
    if (e2e_mode) {
        recipients_leave();
    }
    const auto all_offline = [&] {
        bool done = true;
        for (auto& os : st.streams) {
            const int seen = os->offline_seen.load();
            if (seen != 1) {
                done = false;
                if (seen != -1) {
                    os->offline_seen.store(-1);  // a probe is on its way
                    os->sender->run([&os] { (void)os->sender->core().probe(os->to); });
                }
            }
        }
        return done;
    };
    {
        int rounds = 0;
        if (!wait_until(
                [&] {
                    // Probe again every ~100 ms while someone is still reported online (or unanswered).
                    if (++rounds % 5 == 0) {
                        for (auto& os : st.streams) {
                            if (os->offline_seen.load() == 2) {
                                os->offline_seen.store(0);
                            }
                        }
                    }
                    return all_offline() || st.closed.load() > 0;
                },
                s.timeout, setup_tick) ||
            st.closed.load() > 0) {
            return fail("the recipients did not go offline");
        }
    }
    const double setup_s = seconds_since(setup_start);

    // 4. Senders send; every message must come back as `receipt stored` (durable on the server).
    const auto cpu0 = target->cpu();
    const auto disk0 = target->pid ? process_disk_write_bytes(*target->pid) : std::nullopt;
    const auto self0 = self_cpu_seconds();
    const auto t0 = now_ns();
    for (auto& sp : st.streams) {
        OfflineStream& os = *sp;
        os.sender->run([&st, &os, t0] {
            os.cap.last_refill = t0;
            offline_pump(st, os);
        });
    }
    const auto sums = [&] {
        std::array<std::uint64_t, 4> t{};  // sent, stored, refused + send errors, drained
        for (auto& sp : st.streams) {
            t[0] += sp->sent.load();
            t[1] += sp->stored.load();
            t[2] += sp->refused.load() + sp->send_errors.load();
            t[3] += sp->drained.load();
        }
        return t;
    };
    Progress progress("offline", true);
    std::uint64_t last_count = 0;
    std::int64_t last_tick = t0;
    const auto rate_line = [&](std::uint64_t now_count, const char* what) {
        const auto now = now_ns();
        const double rate =
            static_cast<double>(now_count - last_count) * 1e9 / static_cast<double>(std::max<std::int64_t>(now - last_tick, 1));
        last_count = now_count;
        last_tick = now;
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s %" PRIu64 "/%" PRIu64 "  %.0f msg/s", what, now_count, total, rate);
        return std::string(buf);
    };
    const bool accepted_all = wait_until(
        [&] {
            const auto t = sums();
            return t[1] >= total || t[2] > 0 || st.closed.load() > 0 || st.other_errors.load() > 0;
        },
        s.timeout, [&] { progress.tick([&] { return rate_line(sums()[1], "stored"); }); });
    st.stop = true;
    std::int64_t t_stored = t0 + 1;
    for (auto& sp : st.streams) {
        t_stored = std::max(t_stored, sp->last_stored_ns.load());
    }
    const auto cpu1 = target->cpu();
    const auto disk1 = target->pid ? process_disk_write_bytes(*target->pid) : std::nullopt;
    const auto self1 = self_cpu_seconds();
    const auto stored_total = sums()[1];
    if (!accepted_all || stored_total < total) {
        return fail("not every message was stored (" + std::to_string(stored_total) + "/" + std::to_string(total) + ")");
    }
    // Senders leave: the drain is measured alone (their `receipt delivered` would go nowhere).
    for (auto& os : st.streams) {
        os->sender->shutdown();
    }

    // 5. Recipients log in again with the same state and drain their stored messages.
    st.authed = 0;
    want_auth = p;
    const auto rss_before_drain = target->rss_mib();
    const auto cpu2 = target->cpu();
    const auto self2 = self_cpu_seconds();
    const auto t1 = now_ns();
    last_count = 0;
    last_tick = t1;
    for (std::uint64_t i = 0; i < p; ++i) {
        if (auto r = start_recipient(*st.streams[i], 2 * p + i); !r) {
            return fail("drain: " + r.error().message());
        }
    }
    Progress drain_progress("offline drain", true);
    const bool drained_all = wait_until(
        [&] { return sums()[3] >= total || st.closed.load() > 0 || st.other_errors.load() > 0; }, s.timeout,
        [&] { drain_progress.tick([&] { return rate_line(sums()[3], "drained"); }); });
    std::int64_t t_drained = t1 + 1;
    std::int64_t first_drained = 0;
    for (auto& sp : st.streams) {
        t_drained = std::max(t_drained, sp->last_drained_ns.load());
        const auto f = sp->first_drained_ns.load();
        first_drained = first_drained == 0 ? f : (f == 0 ? first_drained : std::min(first_drained, f));
    }
    // Let the last acknowledgements reach the server, so its CPU for the drain includes deleting them.
    std::this_thread::sleep_for(200ms);
    const auto cpu3 = target->cpu();
    const auto self3 = self_cpu_seconds();
    const auto rss = target->rss_mib();
    shutdown_all();

    const auto t = sums();
    std::uint64_t corrupt = 0;
    std::uint64_t misordered = 0;
    std::uint64_t skipped = 0;
    std::uint64_t bad_receipts = 0;
    for (auto& sp : st.streams) {
        corrupt += sp->corrupt.load();
        misordered += sp->misordered.load();
        skipped += sp->skipped.load();
        bad_receipts += sp->bad_receipts.load();
    }
    const double accept_s = static_cast<double>(t_stored - t0) / 1e9;
    const double drain_s = static_cast<double>(t_drained - t1) / 1e9;
    const auto per_k = [](std::optional<double> cpu, std::uint64_t n) -> std::optional<double> {
        if (!cpu || n == 0) {
            return std::nullopt;
        }
        return *cpu / (static_cast<double>(n) / 1000.0);
    };
    const auto accept_cpu = opt_diff(cpu0, cpu1);
    const auto drain_cpu = opt_diff(cpu2, cpu3);
    const auto disk = opt_diff(disk0, disk1);

    Report rep("offline");
    rep.text("conversation_mode", "conversation mode",
             s.spawn_path.empty() ? std::string("(server's choice)") : s.conversation_mode);
    rep.text("suite", "conversation suite",
             s.spawn_path.empty() ? std::string("(server's choice)") : std::string(s.suite));
    rep.text("store", "server store", s.spawn_path.empty() ? std::string("(server's choice)")
                                                           : std::string("SQLite in a temporary directory"));
    rep.num("senders", "senders (one offline recipient each)", static_cast<double>(p), "", 0);
    rep.num("per_sender", "messages per sender", static_cast<double>(per_sender), "", 0);
    rep.num("size_bytes", "message size", static_cast<double>(s.size), "B", 0);
    rep.text("load", "load",
             "closed loop, " + std::to_string(s.window) + " awaiting a receipt per sender" +
                 (s.conn_rate > 0 ? ", at most " + std::to_string(static_cast<std::uint64_t>(s.conn_rate)) +
                                        " msg/s each"
                                  : ""));
    rep.num("setup_s", "set-up (log in, prekeys, keys, go offline)", setup_s, "s", 2);
    rep.num("sent", "messages sent", static_cast<double>(t[0]), "", 0);
    rep.num("stored", "receipts `stored`", static_cast<double>(t[1]), "", 0);
    rep.num("bad_receipts", "unknown or repeated receipts", static_cast<double>(bad_receipts), "", 0);
    rep.num("refused", "refused or not sent", static_cast<double>(t[2]), "", 0);
    rep.num("accept_s", "time to store all", accept_s, "s", 2);
    rep.num("accepted_per_s", "durable accepted throughput", static_cast<double>(t[1]) / accept_s, "msg/s", 0);
    rep.num("accept_server_cpu_s_per_1000", "accept: server CPU per 1,000 messages", per_k(accept_cpu, t[1]), "s", 4);
    rep.num("accept_server_cpu_percent", "accept: server CPU use",
            accept_cpu ? std::optional(*accept_cpu / accept_s * 100.0) : std::nullopt, "% of one core", 0);
    rep.num("accept_disk_bytes_per_msg", "accept: server disk writes per message",
            disk ? std::optional(*disk / static_cast<double>(t[1])) : std::nullopt, "B", 0);
    rep.num("accept_loadgen_cpu_percent", "accept: load generator CPU use", (self1 - self0) / accept_s * 100.0,
            "% of one core", 0);
    rep.num("drained", "messages drained", static_cast<double>(t[3]), "", 0);
    rep.num("corrupt", "corrupt or misordered", static_cast<double>(corrupt + misordered), "", 0);
    rep.num("missing", "missing (sequence gaps)", static_cast<double>(skipped + st.gaps.load()), "", 0);
    rep.num("drain_first_ms", "drain: login to first message",
            first_drained != 0 ? std::optional(static_cast<double>(first_drained - t1) / 1e6) : std::nullopt, "ms",
            1);
    rep.num("drain_s", "drain: login to last message", drain_s, "s", 2);
    rep.num("drained_per_s", "drain throughput", static_cast<double>(t[3]) / drain_s, "msg/s", 0);
    rep.num("drain_server_cpu_s_per_1000", "drain: server CPU per 1,000 messages", per_k(drain_cpu, t[3]), "s", 4);
    rep.num("drain_server_cpu_percent", "drain: server CPU use",
            drain_cpu ? std::optional(*drain_cpu / drain_s * 100.0) : std::nullopt, "% of one core", 0);
    rep.num("drain_loadgen_cpu_percent", "drain: load generator CPU use", (self3 - self2) / drain_s * 100.0,
            "% of one core", 0);
    rep.num("server_rss_before_drain_mib", "server RSS before the drain", rss_before_drain, "MiB", 1);
    rep.num("server_rss_mib", "server RSS after the drain", rss, "MiB", 1);
    report_server_metrics(rep, *target);
    rep.print(std::cout);
    if (!s.json.empty() && !rep.write_json(s.json)) {
        std::cerr << "sim-bench: cannot write " << s.json << "\n";
        return exit_fail;
    }
    const bool bad = !drained_all || t[3] != total || corrupt > 0 || misordered > 0 || skipped > 0 ||
                     st.gaps.load() > 0 || bad_receipts > 0 || st.closed.load() > 0 || st.other_errors.load() > 0;
    if (bad) {
        std::cerr << "sim-bench offline: FAILED" << (st.first_error.empty() ? "" : ": " + st.first_error) << "\n";
        return exit_fail;
    }
    return exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    std::vector<std::string> args(argv + 1, argv + argc);
    auto parsed = sim::tools::parse_command_line(option_specs(), args);
    if (!parsed) {
        std::cerr << "sim-bench: " << parsed.error().detail << "\n(try sim-bench --help)\n";
        return exit_usage;
    }
    if (parsed->has("help")) {
        print_help();
        return exit_ok;
    }
    auto settings = parse_settings(*parsed);
    if (!settings) {
        std::cerr << "sim-bench: " << settings.error().detail << "\n(try sim-bench --help)\n";
        return exit_usage;
    }
    if (settings->mode == "offline") {
        return run_offline(*settings);
    }
    if (settings->mode == "route") {
        return run_route(*settings);
    }
    if (settings->mode == "connect") {
        return run_connect(*settings);
    }
    return run_login(*settings);
}
