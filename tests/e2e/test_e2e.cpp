// End to end: the real simd on an ephemeral loopback port, real clients over TCP. The seed's flow with TDES, its
// three attacks (including a man in the middle and a replaying proxy), and abuse the server must survive.
#include <sim/client.h>
#include <sim/frame.h>
#include <sim/net.h>

#include <doctest/doctest.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitized_build = true;
#else
constexpr bool sanitized_build = false;
#endif

/// A simd child process with its own temporary data directory; SIGTERM on destruction.
class Simd {
public:
    explicit Simd(std::vector<std::string> extra = {}) {
        const char* bin = std::getenv("SIM_SIMD");
        REQUIRE_MESSAGE(bin != nullptr, "SIM_SIMD must name the simd binary");
        char tmpl[] = "/tmp/libsim-e2e.XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        m_dir = tmpl;
        const std::string port_file = m_dir + "/port";
        std::vector<std::string> args = {bin,          "--listen",      "127.0.0.1:0", "--port-file",
                                         port_file,    "--data-dir",    m_dir + "/data", "--bcrypt-cost",
                                         "4",          "--log-level",   "error"};
        args.insert(args.end(), extra.begin(), extra.end());
        m_pid = ::fork();
        REQUIRE(m_pid >= 0);
        if (m_pid == 0) {
            // If this test process dies (a crash, a sanitizer abort), simd goes too: an orphan would keep the test
            // runner's output pipe open and hang it.
            ::prctl(PR_SET_PDEATHSIG, SIGTERM);
            std::vector<char*> argv;
            for (auto& a : args) {
                argv.push_back(a.data());
            }
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        for (int i = 0; i < 200 && m_port == 0; ++i) {
            std::ifstream in(port_file);
            int p = 0;
            if (in >> p && p > 0) {
                m_port = static_cast<std::uint16_t>(p);
                break;
            }
            int status = 0;
            REQUIRE_MESSAGE(::waitpid(m_pid, &status, WNOHANG) == 0, "simd exited during start-up");
            std::this_thread::sleep_for(25ms);
        }
        REQUIRE_MESSAGE(m_port != 0, "simd did not report its port");
    }
    ~Simd() {
        if (m_pid > 0) {
            ::kill(m_pid, SIGTERM);
            int status = 0;
            ::waitpid(m_pid, &status, 0);
        }
        std::error_code ec;
        fs::remove_all(m_dir, ec);
    }
    Simd(const Simd&) = delete;
    Simd& operator=(const Simd&) = delete;

    [[nodiscard]] std::uint16_t port() const { return m_port; }
    [[nodiscard]] pid_t pid() const { return m_pid; }
    /// Resident memory of the server in KiB (from /proc).
    [[nodiscard]] long rss_kib() const {
        std::ifstream in("/proc/" + std::to_string(m_pid) + "/status");
        std::string key;
        while (in >> key) {
            if (key == "VmRSS:") {
                long v = 0;
                in >> v;
                return v;
            }
        }
        return -1;
    }
    /// Stop with SIGTERM and return the exit status.
    int stop() {
        ::kill(m_pid, SIGTERM);
        int status = 0;
        ::waitpid(m_pid, &status, 0);
        m_pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }

private:
    std::string m_dir;
    pid_t m_pid = -1;
    std::uint16_t m_port = 0;
};

sim::ClientOptions options(std::uint16_t port, const std::string& known_file = {}) {
    sim::ClientOptions o;
    o.port = port;
    o.known_servers_file = known_file;
    o.config.handshake.server_id = "simd-under-test";
    o.tick_interval = 200ms;
    return o;
}

std::unique_ptr<sim::Client> connect(std::uint16_t port, const std::string& known_file = {}) {
    auto c = sim::Client::connect(options(port, known_file));
    REQUIRE_MESSAGE(c, c.error().message());
    return std::move(*c);
}

/// A raw TCP peer for sending arbitrary bytes and seeing whether the server closes.
class RawPeer final : public sim::ConnectionHandler {
public:
    void on_bytes(sim::ByteView data) override {
        const std::lock_guard lock(m_mutex);
        m_received += data.size();
    }
    void on_closed(sim::Errc) override { m_closed = true; }
    bool wait_closed(std::chrono::milliseconds limit) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        while (!m_closed && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(10ms);
        }
        return m_closed;
    }
    std::atomic<bool> m_closed{false};
    std::mutex m_mutex;
    std::size_t m_received = 0;
};

struct RawConnection {
    std::shared_ptr<RawPeer> peer = std::make_shared<RawPeer>();
    std::shared_ptr<sim::ConnectionOutput> out;
    std::unique_ptr<sim::net::TcpClient> tcp;
    explicit RawConnection(std::uint16_t port) {
        auto c = sim::net::TcpClient::connect("127.0.0.1", port, {}, [this](auto o, const std::string&) {
            out = o;
            return peer;
        });
        REQUIRE(c);
        tcp = std::move(*c);
    }
};

/// A TCP proxy between a client and simd that can replay what the client sent.
class ReplayProxy {
public:
    explicit ReplayProxy(std::uint16_t upstream) : m_upstream(upstream) {
        auto s = sim::net::TcpServer::start({}, [this](auto down_out, const std::string&) {
            auto link = std::make_shared<Link>();
            link->down = down_out;
            auto up = sim::net::TcpClient::connect("127.0.0.1", m_upstream, {}, [link](auto up_out, const std::string&) {
                link->up = up_out;
                return std::make_shared<Upstream>(link);
            });
            if (!up) {
                return std::shared_ptr<sim::ConnectionHandler>{};
            }
            link->up_client = std::move(*up);
            const std::lock_guard lock(m_mutex);
            m_link = link;
            return std::static_pointer_cast<sim::ConnectionHandler>(std::make_shared<Downstream>(link));
        });
        REQUIRE(s);
        m_server = std::move(*s);
    }
    [[nodiscard]] std::uint16_t port() const { return m_server->port(); }
    /// Send the client's last chunk to the server again.
    void replay_last() {
        const std::lock_guard lock(m_mutex);
        REQUIRE(m_link);
        const std::lock_guard l2(m_link->mutex);
        REQUIRE_FALSE(m_link->sent_up.empty());
        m_link->up->send(m_link->sent_up.back());
    }

private:
    struct Link {
        std::mutex mutex;
        std::shared_ptr<sim::ConnectionOutput> down;
        std::shared_ptr<sim::ConnectionOutput> up;
        std::unique_ptr<sim::net::TcpClient> up_client;
        std::vector<sim::Bytes> sent_up;
    };
    struct Downstream final : sim::ConnectionHandler {
        explicit Downstream(std::shared_ptr<Link> l) : link(std::move(l)) {}
        void on_bytes(sim::ByteView data) override {
            const std::lock_guard lock(link->mutex);
            link->sent_up.emplace_back(data.begin(), data.end());
            link->up->send(sim::Bytes(data.begin(), data.end()));
        }
        void on_closed(sim::Errc) override {}
        std::shared_ptr<Link> link;
    };
    struct Upstream final : sim::ConnectionHandler {
        explicit Upstream(std::shared_ptr<Link> l) : link(std::move(l)) {}
        void on_bytes(sim::ByteView data) override { link->down->send(sim::Bytes(data.begin(), data.end())); }
        void on_closed(sim::Errc) override { link->down->close(sim::Errc::closed); }
        std::shared_ptr<Link> link;
    };

    std::uint16_t m_upstream;
    std::unique_ptr<sim::net::TcpServer> m_server;
    std::mutex m_mutex;
    std::shared_ptr<Link> m_link;
};

}  // namespace

TEST_CASE("the seed's flow over TCP with the TDES conversation suite") {
    Simd simd({"--conversation-suite", "tdes"});
    auto alice = connect(simd.port());
    REQUIRE(alice->login("alice", "alice password 1", "bob"));
    REQUIRE(alice->wait_for(sim::ClientEventKind::waiting, "bob", 5s));

    auto bob = connect(simd.port());
    REQUIRE(bob->login("bob", "bob password 1"));
    REQUIRE(alice->wait_for(sim::ClientEventKind::peer_online, "bob", 5s));
    auto ka = alice->wait_for(sim::ClientEventKind::key_assigned, "bob", 5s);
    REQUIRE(ka);
    CHECK(ka->suite == sim::SuiteId::tdes_cbc_hmac_sha256);
    REQUIRE(bob->wait_for(sim::ClientEventKind::key_assigned, "alice", 5s));

    for (int i = 0; i < 20; ++i) {
        REQUIRE(alice->send("bob", "message " + std::to_string(i)));
    }
    for (int i = 0; i < 20; ++i) {
        auto m = bob->wait_for(sim::ClientEventKind::message, "alice", 5s);
        REQUIRE(m);
        CHECK(m->text == "message " + std::to_string(i));
        CHECK(m->sid == static_cast<std::uint32_t>(i + 1));
    }
    REQUIRE(bob->send("alice", "reply"));
    CHECK(alice->wait_for(sim::ClientEventKind::message, "bob", 5s)->text == "reply");

    // reconnect with the session token instead of the password
    const auto token = alice->core().session_token();
    REQUIRE(token.token.size() == 32);
    alice->close();
    REQUIRE(bob->wait_for(sim::ClientEventKind::peer_left, "alice", 5s));
    auto alice2 = connect(simd.port());
    REQUIRE(alice2->login_with_token("alice", token.token, "bob"));
    REQUIRE(alice2->wait_for(sim::ClientEventKind::key_assigned, "bob", 5s));
    CHECK(simd.stop() == 0);
}

TEST_CASE("attack 1 over TCP: init as alice without her password is refused and alice is unaffected") {
    Simd simd;
    auto alice = connect(simd.port());
    REQUIRE(alice->login("alice", "the real password"));
    auto trudy = connect(simd.port());
    const auto st = trudy->login("alice", "not the password", "bob");
    REQUIRE_FALSE(st);
    CHECK(st.code() == sim::Errc::auth_rejected);
    CHECK(trudy->wait_for(sim::ClientEventKind::closed, "", 5s));
    REQUIRE(alice->core().probe("bob"));
    CHECK(alice->wait_for(sim::ClientEventKind::waiting, "bob", 5s));
}

TEST_CASE("attack 2 over TCP: a message with a forged source is not forwarded") {
    Simd simd;
    auto bob = connect(simd.port());
    REQUIRE(bob->login("bob", "bob password 1"));
    auto trudy = connect(simd.port());
    REQUIRE(trudy->login("trudy", "trudy password", "bob"));
    REQUIRE(trudy->wait_for(sim::ClientEventKind::key_assigned, "bob", 5s));
    REQUIRE(trudy->core().send_raw(
        sim::Frame{sim::FrameType::message, 9, "alice", "bob", sim::to_bytes(sim::as_bytes("Hello Bob!"))}));
    const auto err = trudy->wait_for(sim::ClientEventKind::error, "", 5s);
    REQUIRE(err);
    CHECK(err->error.code == sim::Errc::source_mismatch);
    CHECK(bob->wait_for(sim::ClientEventKind::message, "", 300ms).code() == sim::Errc::timeout);
}

TEST_CASE("attack 3 over TCP: a man in the middle with its own key is refused; a replayed frame is rejected") {
    Simd real;
    Simd mitm;  // another server, another static key
    char tmpl[] = "/tmp/libsim-known.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string known = std::string(tmpl) + "/known_servers";
    {
        auto first = connect(real.port(), known);  // trust on first use pins the real key
    }
    CHECK((fs::status(known).permissions() & (fs::perms::group_all | fs::perms::others_all)) == fs::perms::none);
    // The client believes it talks to "simd-under-test" but the MITM answers.
    auto c = sim::Client::connect(options(mitm.port(), known));
    REQUIRE_FALSE(c);
    CHECK(c.code() == sim::Errc::server_key_mismatch);

    // A replaying proxy: the server kills the channel on the duplicate record; the client sees the close.
    ReplayProxy proxy(real.port());
    auto alice = connect(proxy.port(), known);
    REQUIRE(alice->login("alice", "alice password 1"));
    REQUIRE(alice->core().probe("bob"));
    REQUIRE(alice->wait_for(sim::ClientEventKind::waiting, "bob", 5s));
    proxy.replay_last();
    CHECK(alice->wait_for(sim::ClientEventKind::closed, "", 5s));
    fs::remove_all(tmpl);
}

TEST_CASE("abuse: garbage, half handshakes, oversize frames and a flood leave the server serving others") {
    Simd simd({"--handshake-timeout", "1"});
    auto alice = connect(simd.port());
    REQUIRE(alice->login("alice", "alice password 1"));
    auto bob = connect(simd.port());
    REQUIRE(bob->login("bob", "bob password 1", "alice"));
    REQUIRE(alice->wait_for(sim::ClientEventKind::key_assigned, "bob", 5s));

    RawConnection garbage(simd.port());
    garbage.out->send(sim::Bytes(1000, 0x42));
    CHECK(garbage.peer->wait_closed(5000ms));

    RawConnection oversize(simd.port());
    oversize.out->send(sim::Bytes{1, 0x01, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF});
    CHECK(oversize.peer->wait_closed(5000ms));

    RawConnection silent(simd.port());  // connects, never finishes a handshake
    CHECK(silent.peer->wait_closed(5000ms));

    const long rss_before = simd.rss_kib();
    // bob floods alice far past the rate limit
    int refused = 0;
    for (int i = 0; i < 20000; ++i) {
        if (!bob->send("alice", "flood flood flood flood flood flood")) {
            ++refused;
            break;
        }
    }
    // alice keeps receiving, and a third user can still log in and talk
    CHECK(alice->wait_for(sim::ClientEventKind::message, "bob", 5s));
    auto carol = connect(simd.port());
    REQUIRE(carol->login("carol", "carol password", "alice"));
    REQUIRE(carol->wait_for(sim::ClientEventKind::key_assigned, "alice", 5s));
    REQUIRE(carol->send("alice", "still served"));
    bool got = false;
    for (int i = 0; i < 30000 && !got; ++i) {
        auto m = alice->receive(5s);
        REQUIRE(m);
        got = m->kind == sim::ClientEventKind::message && m->peer == "carol";
    }
    CHECK(got);
    const long rss_after = simd.rss_kib();
    MESSAGE("simd RSS before flood " << rss_before << " KiB, after " << rss_after << " KiB");
    if (!sanitized_build) {  // AddressSanitizer keeps freed memory in quarantine
        CHECK(rss_after < rss_before + 64 * 1024);  // bounded: no per-message growth
    }
    CHECK(simd.stop() == 0);
}

namespace {

/// A protocol-speaking client on a plain blocking socket that the test can stop reading from.
class StubbornReader {
public:
    explicit StubbornReader(std::uint16_t port) {
        m_fd = ::socket(AF_INET, SOCK_STREAM, 0);
        REQUIRE(m_fd >= 0);
        const int small = 4096;  // a small receive buffer makes the server's queue fill sooner
        ::setsockopt(m_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        timeval tv{0, 200000};
        ::setsockopt(m_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(::connect(m_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        sim::ClientConfig cfg;
        cfg.handshake.server_id = "stubborn";
        m_core = std::move(sim::ClientCore::create(cfg, m_known, *m_rng, sim::steady_clock(),
                                                   [this](const sim::ClientEvent& e) { m_events.push_back(e); })
                               .value());
        REQUIRE(m_core->attach(std::make_shared<Out>(m_fd)));
    }
    ~StubbornReader() { ::close(m_fd); }
    StubbornReader(const StubbornReader&) = delete;
    StubbornReader& operator=(const StubbornReader&) = delete;

    /// Read and process until an event of `kind` arrived (or the deadline).
    bool pump_until(sim::ClientEventKind kind, std::chrono::milliseconds limit) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        std::uint8_t buf[4096];
        while (std::chrono::steady_clock::now() < deadline) {
            for (const auto& e : m_events) {
                if (e.kind == kind) {
                    return true;
                }
            }
            const auto n = ::recv(m_fd, buf, sizeof buf, 0);
            if (n > 0) {
                m_core->on_bytes(sim::ByteView{buf, static_cast<std::size_t>(n)});
            } else if (n == 0) {
                return false;
            }
        }
        return false;
    }
    sim::ClientCore& core() { return *m_core; }
    /// Whether the server has closed the connection (drains what is readable without processing it).
    bool closed_by_server(std::chrono::milliseconds limit) {
        const auto deadline = std::chrono::steady_clock::now() + limit;
        std::uint8_t buf[65536];
        while (std::chrono::steady_clock::now() < deadline) {
            const auto n = ::recv(m_fd, buf, sizeof buf, 0);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                return true;
            }
        }
        return false;
    }

private:
    struct Out final : sim::ConnectionOutput {
        explicit Out(int fd) : fd(fd) {}
        void send(sim::Bytes data) override { (void)::send(fd, data.data(), data.size(), MSG_NOSIGNAL); }
        void close(sim::Errc) override { ::shutdown(fd, SHUT_RDWR); }
        void established() override {}
        int fd;
    };
    int m_fd = -1;
    std::unique_ptr<sim::Rng> m_rng = sim::make_system_rng();
    sim::MemoryKnownServers m_known;
    std::shared_ptr<sim::ClientCore> m_core;
    std::vector<sim::ClientEvent> m_events;
};

}  // namespace

TEST_CASE("a client that stops reading is disconnected; the sender and the server's memory are unaffected") {
    Simd simd({"--max-queue-bytes", "1048576"});
    StubbornReader bob(simd.port());
    REQUIRE(bob.pump_until(sim::ClientEventKind::channel_ready, 5000ms));
    REQUIRE(bob.core().login("bob", {sim::CredentialKind::password,
                                     sim::to_bytes<sim::SecureBytes>(sim::as_bytes("bob password 1"))}));
    REQUIRE(bob.pump_until(sim::ClientEventKind::authenticated, 5000ms));
    auto alice = connect(simd.port());
    REQUIRE(alice->login("alice", "alice password 1", "bob"));
    REQUIRE(alice->wait_for(sim::ClientEventKind::key_assigned, "bob", 5s));
    REQUIRE(bob.pump_until(sim::ClientEventKind::key_assigned, 5000ms));
    const long rss_before = simd.rss_kib();
    // bob stops reading; alice sends 10 MiB to him, far past the server's 1 MiB queue bound for his connection
    // plus what the kernel buffers hold. Paced, so that alice's own output queue (4 MiB) never overflows even on
    // a slow (sanitizer) build.
    const std::string chunk(16000, 'z');
    for (int i = 0; i < 640; ++i) {
        if (!alice->send("bob", chunk)) {
            break;
        }
        std::this_thread::sleep_for(5ms);
    }
    CHECK(bob.closed_by_server(10000ms));
    // alice is still served: a probe for bob now says he is offline
    bool offline = false;
    for (int i = 0; i < 50 && !offline; ++i) {
        REQUIRE(alice->core().probe("bob"));
        auto e = alice->wait_for(sim::ClientEventKind::waiting, "bob", 200ms);
        offline = e.has_value();
    }
    CHECK(offline);
    const long rss_after = simd.rss_kib();
    MESSAGE("simd RSS before " << rss_before << " KiB, after " << rss_after << " KiB");
    if (!sanitized_build) {  // AddressSanitizer keeps freed memory in quarantine
        CHECK(rss_after < rss_before + 32 * 1024);
    }
    CHECK(simd.stop() == 0);
}
