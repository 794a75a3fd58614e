// simd's admin endpoint: Prometheus text, the status page, and a bounded HTTP/1.0 server and client on Asio.
#include "metrics_http.h"

#include "options.h"

#include <asio.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <thread>

namespace sim::tools {

namespace {

/// Help text escapes '\\' and newline; label values also '"' (the 0.0.4 text format).
std::string escape(std::string_view text, bool label_value) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '"' && label_value) {
            out += "\\\"";
        } else {
            out += c;
        }
    }
    return out;
}

std::string_view reason(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 400:
            return "Bad Request";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 431:
            return "Request Header Fields Too Large";
        default:
            return "Error";
    }
}

HttpResponse error_response(int status) {
    return {status, "text/plain; charset=utf-8", std::to_string(status) + " " + std::string(reason(status)) + "\n"};
}

bool iequals_prefix(std::string_view text, std::string_view prefix) {
    return text.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), text.begin(), [](char a, char b) {
               return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
           });
}

}  // namespace

namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;

/// `name{a="x",b="y"} value\n`
std::string sample(const std::string& name, const Labels& labels, const std::string& value) {
    std::string out = name;
    if (!labels.empty()) {
        out += '{';
        for (std::size_t l = 0; l < labels.size(); ++l) {
            out += (l == 0 ? "" : ",") + labels[l].first + "=\"" + escape(labels[l].second, true) + "\"";
        }
        out += '}';
    }
    return out + " " + value + "\n";
}

/// Seconds, shortest form that reads back the same ("0.0005", "2.5", "1").
std::string seconds(Duration d) {
    std::array<char, 64> buf{};
    const auto r = std::to_chars(buf.data(), buf.data() + buf.size(), std::chrono::duration<double>(d).count(),
                                 std::chars_format::fixed);
    return {buf.data(), r.ptr};
}

std::string_view type_name(MetricType type) {
    switch (type) {
        case MetricType::counter:
            return "counter";
        case MetricType::histogram:
            return "histogram";
        case MetricType::gauge:
            break;
    }
    return "gauge";
}

}  // namespace

std::string format_prometheus(std::span<const Metric> metrics) {
    std::string out;
    for (std::size_t i = 0; i < metrics.size(); ++i) {
        const Metric& m = metrics[i];
        if (i == 0 || metrics[i - 1].name != m.name) {
            out += "# HELP " + m.name + " " + escape(m.help, false) + "\n";
            out += "# TYPE " + m.name + " " + std::string(type_name(m.type)) + "\n";
        }
        if (m.type != MetricType::histogram) {
            out += sample(m.name, m.labels, std::to_string(m.value));
            continue;
        }
        const HistogramSnapshot& h = m.histogram;
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b <= h.bounds.size(); ++b) {
            cumulative += b < h.counts.size() ? h.counts[b] : 0;
            Labels labels = m.labels;
            labels.emplace_back("le", b < h.bounds.size() ? seconds(h.bounds[b]) : "+Inf");
            out += sample(m.name + "_bucket", labels, std::to_string(cumulative));
        }
        out += sample(m.name + "_sum", m.labels, seconds(h.sum));
        out += sample(m.name + "_count", m.labels, std::to_string(cumulative));
    }
    return out;
}

std::optional<double> find_sample(std::string_view text, std::string_view series) {
    for (std::size_t pos = 0; pos < text.size();) {
        const auto eol = std::min(text.find('\n', pos), text.size());
        std::string_view line = text.substr(pos, eol - pos);
        pos = eol + 1;
        if (line.size() > series.size() && line.starts_with(series) && line[series.size()] == ' ') {
            line.remove_prefix(series.size() + 1);
            while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) {
                line.remove_suffix(1);
            }
            double value = 0;
            const auto [ptr, ec] = std::from_chars(line.data(), line.data() + line.size(), value);
            if (ec != std::errc{} || ptr != line.data() + line.size()) {
                return std::nullopt;
            }
            return value;
        }
    }
    return std::nullopt;
}

std::vector<Metric> server_metrics(const ServerStats& stats, std::string_view version) {
    std::vector<Metric> out;
    const auto add = [&out](MetricType type, std::string name, std::string help, std::uint64_t value, Labels labels,
                            const HistogramSnapshot& histogram = {}) {
        out.push_back({std::move(name), type, std::move(help), std::move(labels), value, histogram});
    };
    const auto gauge = [&add](std::string name, std::string help, std::uint64_t value, Labels labels = {}) {
        add(MetricType::gauge, std::move(name), std::move(help), value, std::move(labels));
    };
    const auto counter = [&add](std::string name, std::string help, std::uint64_t value, Labels labels = {}) {
        add(MetricType::counter, std::move(name), std::move(help), value, std::move(labels));
    };
    const auto histogram = [&add](std::string name, std::string help, const HistogramSnapshot& h) {
        add(MetricType::histogram, std::move(name), std::move(help), 0, {}, h);
    };
    gauge("simd_info", "The running simd; its version is the label.", 1, {{"version", std::string(version)}});
    const std::string connections =
        "Client connections open now, by phase: channel handshake, channel up but not "
        "logged in, logged in.";
    gauge("simd_connections", connections, stats.connections_handshake, {{"state", "handshake"}});
    gauge("simd_connections", connections, stats.connections_unauthenticated, {{"state", "unauthenticated"}});
    gauge("simd_connections", connections, stats.connections_authenticated, {{"state", "authenticated"}});
    gauge("simd_online_users", "Users logged in now.", stats.online_users);
    gauge("simd_conversations", "Conversations with a key (or kept for a delivery).", stats.conversations);
    gauge("simd_waiting", "Users waiting for a peer to come online to open a conversation.", stats.waiting);
    const std::string logins =
        "Logins by result: accepted, refused (wrong password, unknown user, bad token...), "
        "refused for too many failed attempts.";
    counter("simd_logins_total", logins, stats.logins_ok, {{"result", "ok"}});
    counter("simd_logins_total", logins, stats.logins_failed, {{"result", "failed"}});
    counter("simd_logins_total", logins, stats.logins_throttled, {{"result", "throttled"}});
    counter("simd_messages_routed_total",
            "Conversation messages sent to the recipient's connection, straight or from the offline store.",
            stats.messages_routed);
    counter("simd_messages_delivered_total", "Messages their recipients acknowledged.", stats.messages_delivered);
    for (const auto& [reason, n] : stats.refused_by_reason) {
        counter("simd_messages_refused_total",
                "Requests refused (rate, quota, no conversation...), by error code; only codes seen so far.", n,
                {{"reason", errc_name(reason)}});
    }
    counter("simd_store_commits_total", "Offline-store transactions (group commits).", stats.store_commits);
    counter("simd_store_committed_messages_total", "Messages written to the offline store.", stats.stored_messages);
    gauge("simd_store_messages", "Messages in the offline store or being committed to it (all mailboxes).",
          stats.store_messages);
    gauge("simd_store_bytes", "Envelope bytes in the offline store or being committed to it.", stats.store_bytes);
    histogram("simd_handshake_latency_seconds",
              "From accepting a connection to its channel being up (successful handshakes).", stats.handshake_latency);
    histogram("simd_login_latency_seconds",
              "From a login request to its answer, accepted or refused (queue, password hash, database).",
              stats.login_latency);
    histogram("simd_store_commit_latency_seconds",
              "From a message's acceptance for the offline store to the commit of the transaction holding it.",
              stats.store_commit_latency);
    // Several nodes (--broker); zero on a single node.
    counter("simd_broker_wakes_sent_total",
            "Wake-ups sent to the node holding a recipient device after a commit on this node.", stats.broker.wakes);
    const std::string wakes = "Wake-ups sent, by outcome: answered by the holding node, no node holds the device "
                              "(no responders), no answer in time or not sent.";
    counter("simd_broker_wakes_total", wakes, stats.broker.wakes_answered, {{"result", "answered"}});
    counter("simd_broker_wakes_total", wakes, stats.broker.no_responders, {{"result", "no_responders"}});
    counter("simd_broker_wakes_total", wakes, stats.broker.timeouts, {{"result", "timeout"}});
    counter("simd_broker_woken_total", "Wake-ups received from other nodes for devices attached here.",
            stats.broker.woken);
    histogram("simd_broker_round_trip_seconds", "From a wake-up's request to the holding node's answer.",
              stats.broker.round_trip);
    return out;
}

std::string format_status(const ServerStats& stats, std::span<const std::string> online_users) {
    std::string out = "online users: " + std::to_string(online_users.size()) + "\n";
    for (const auto& user : online_users) {
        out += "  " + user + "\n";
    }
    out += "connections: " + std::to_string(stats.connections) + "\n";
    out += "conversations: " + std::to_string(stats.conversations) + "\n";
    out += "waiting for a peer: " + std::to_string(stats.waiting) + "\n";
    out += "logins: " + std::to_string(stats.logins_ok) + " ok, " + std::to_string(stats.logins_failed) + " failed, " +
           std::to_string(stats.logins_throttled) + " throttled\n";
    out += "messages: " + std::to_string(stats.messages_routed) + " routed, " +
           std::to_string(stats.messages_delivered) + " delivered, " + std::to_string(stats.messages_refused) +
           " refused\n";
    out += "offline store: " + std::to_string(stats.store_messages) + " messages, " +
           std::to_string(stats.store_bytes) + " bytes; " + std::to_string(stats.stored_messages) +
           " messages written in " + std::to_string(stats.store_commits) + " commits\n";
    return out;
}

Result<std::pair<std::string, std::uint16_t>> parse_admin_address(std::string_view text) {
    if (text.find(':') == std::string_view::npos) {
        SIM_TRY(const auto port, parse_uint("metrics-address", text, 0, 65535));
        return std::pair{std::string("127.0.0.1"), static_cast<std::uint16_t>(port)};
    }
    SIM_TRY(auto address, parse_host_port("metrics-address", text, true));
    asio::error_code ec;
    (void)asio::ip::make_address(address.first, ec);
    if (ec) {
        return Error{
            Errc::invalid_argument,
            "--metrics-address: HOST must be an IP address (such as 127.0.0.1 or [::1]), got '" + address.first + "'"};
    }
    return address;
}

HttpResponse answer_request(std::string_view head, const AdminHandler& handler) {
    const std::string_view line = head.substr(0, head.find_first_of("\r\n"));
    const auto sp1 = line.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos || sp1 == 0 ||
        sp2 == sp1 + 1 || !line.substr(sp2 + 1).starts_with("HTTP/1.")) {
        return error_response(400);
    }
    if (line.substr(0, sp1) != "GET") {
        return error_response(405);
    }
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    target = target.substr(0, target.find('?'));
    if (auto r = handler(target)) {
        return std::move(*r);
    }
    return error_response(404);
}

std::string serialize_response(const HttpResponse& r) {
    std::string out = "HTTP/1.0 " + std::to_string(r.status) + " " + std::string(reason(r.status)) + "\r\n";
    if (!r.content_type.empty()) {
        out += "Content-Type: " + r.content_type + "\r\n";
    }
    out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
    if (r.status == 405) {
        out += "Allow: GET\r\n";
    }
    out += "Connection: close\r\n\r\n";
    out += r.body;
    return out;
}

Result<HttpResponse> parse_response(std::string_view bytes) {
    const Error bad{Errc::bad_field, "the answer is not an HTTP response"};
    const auto end = bytes.find("\r\n\r\n");
    if (!bytes.starts_with("HTTP/1.") || bytes.size() < 12 || bytes[8] != ' ' || end == std::string_view::npos) {
        return bad;
    }
    HttpResponse r;
    const auto [ptr, ec] = std::from_chars(bytes.data() + 9, bytes.data() + 12, r.status);
    if (ec != std::errc{} || ptr != bytes.data() + 12) {
        return bad;
    }
    std::string_view headers = bytes.substr(0, end);
    for (auto pos = headers.find("\r\n"); pos != std::string_view::npos; pos = headers.find("\r\n")) {
        headers.remove_prefix(pos + 2);
        const std::string_view field = headers.substr(0, headers.find("\r\n"));
        if (iequals_prefix(field, "content-type:")) {
            const auto value = field.substr(13);
            r.content_type = std::string(value.substr(std::min(value.find_first_not_of(' '), value.size())));
        }
    }
    r.body = std::string(bytes.substr(end + 4));
    return r;
}

// ---------------------------------------------------------------- server

namespace {

using asio::ip::tcp;

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, AdminServer::Impl& server);
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    void start();

private:
    void on_read(const asio::error_code& ec, std::size_t n);

    tcp::socket m_socket;
    asio::steady_timer m_deadline;
    AdminServer::Impl& m_server;
    std::string m_in;
    std::string m_out;
};

}  // namespace

struct AdminServer::Impl {
    Options options;
    AdminHandler handler;
    // Sessions alive; touched only on the server's thread, or when the io_context (declared after, so destroyed
    // first) destroys the sessions its stopped handlers still hold.
    std::size_t open = 0;
    asio::io_context io{1};
    tcp::acceptor acceptor{io};
    asio::steady_timer retry{io};
    std::thread thread;

    void accept() {
        acceptor.async_accept([this](const asio::error_code& ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted) {
                return;
            }
            if (ec) {
                // Out of descriptors, say: try again a little later instead of spinning.
                retry.expires_after(std::chrono::milliseconds(100));
                retry.async_wait([this](const asio::error_code& wait_ec) {
                    if (!wait_ec) {
                        accept();
                    }
                });
                return;
            }
            if (open < options.max_connections) {
                std::make_shared<Session>(std::move(socket), *this)->start();
            }  // else the socket closes here: scrapers retry
            accept();
        });
    }
};

Session::Session(tcp::socket socket, AdminServer::Impl& server)
    : m_socket(std::move(socket)), m_deadline(server.io), m_server(server) {
    ++m_server.open;
}

Session::~Session() {
    --m_server.open;
}

void Session::start() {
    // One deadline for the whole exchange: a client that sends slowly or does not read the answer is cut off.
    m_deadline.expires_after(m_server.options.read_timeout);
    m_deadline.async_wait([self = shared_from_this()](const asio::error_code& ec) {
        if (!ec) {
            asio::error_code ignored;
            self->m_socket.close(ignored);
        }
    });
    asio::async_read_until(
        m_socket, asio::dynamic_buffer(m_in, m_server.options.max_request_bytes), "\r\n\r\n",
        [self = shared_from_this()](const asio::error_code& ec, std::size_t n) { self->on_read(ec, n); });
}

void Session::on_read(const asio::error_code& ec, std::size_t n) {
    HttpResponse response;
    if (!ec) {
        response = answer_request(std::string_view(m_in).substr(0, n), m_server.handler);
    } else if (ec == asio::error::not_found) {  // the head filled max_request_bytes
        response = error_response(431);
    } else {
        return;  // closed, timed out or reset: nothing to answer
    }
    m_out = serialize_response(response);
    asio::async_write(m_socket, asio::buffer(m_out), [self = shared_from_this()](const asio::error_code&, std::size_t) {
        asio::error_code ignored;
        self->m_socket.shutdown(tcp::socket::shutdown_both, ignored);
        self->m_socket.close(ignored);
        self->m_deadline.cancel();
    });
}

AdminServer::AdminServer(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

AdminServer::~AdminServer() {
    stop();
}

Result<std::unique_ptr<AdminServer>> AdminServer::start(Options options, AdminHandler handler) {
    asio::error_code ec;
    const auto address = asio::ip::make_address(options.host, ec);
    if (ec) {
        return Error{Errc::invalid_argument, "'" + options.host + "' is not an IP address"};
    }
    auto impl = std::make_unique<Impl>();
    impl->options = std::move(options);
    impl->handler = std::move(handler);
    const tcp::endpoint endpoint(address, impl->options.port);
    auto& acceptor = impl->acceptor;
    if (acceptor.open(endpoint.protocol(), ec); !ec) {
        acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    }
    if (!ec) {
        acceptor.bind(endpoint, ec);
    }
    if (!ec) {
        acceptor.listen(asio::socket_base::max_listen_connections, ec);
    }
    if (ec) {
        return Error{Errc::io_error, "cannot listen on " + impl->options.host + " port " +
                                         std::to_string(impl->options.port) + ": " + ec.message()};
    }
    impl->accept();
    impl->thread = std::thread([io = &impl->io] { io->run(); });
    return std::unique_ptr<AdminServer>(new AdminServer(std::move(impl)));
}

std::uint16_t AdminServer::port() const noexcept {
    asio::error_code ec;
    return m_impl->acceptor.local_endpoint(ec).port();
}

void AdminServer::stop() {
    if (m_impl->thread.joinable()) {
        m_impl->io.stop();
        m_impl->thread.join();
        // Else the kernel would go on accepting connections that nobody answers.
        asio::error_code ignored;
        m_impl->acceptor.close(ignored);
    }
}

// ---------------------------------------------------------------- client

Result<HttpResponse> http_get(const std::string& host, std::uint16_t port, std::string_view path,
                              std::chrono::milliseconds timeout) {
    constexpr std::size_t max_response = (1U << 20U) + 16384;
    asio::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (ec) {
        return Error{Errc::invalid_argument, "'" + host + "' is not an IP address"};
    }
    asio::io_context io{1};
    tcp::socket socket(io);
    const std::string authority = (address.is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(port);
    const std::string request =
        "GET " + std::string(path) + " HTTP/1.0\r\nHost: " + authority + "\r\nConnection: close\r\n\r\n";
    std::string response;
    std::array<char, 4096> chunk{};
    std::optional<Error> failed;
    bool done = false;
    std::function<void()> read_more = [&] {
        socket.async_read_some(asio::buffer(chunk), [&](const asio::error_code& read_ec, std::size_t n) {
            response.append(chunk.data(), n);
            if (read_ec == asio::error::eof) {
                done = true;
            } else if (read_ec) {
                failed = Error{Errc::io_error, "reading from " + authority + ": " + read_ec.message()};
            } else if (response.size() > max_response) {
                failed = Error{Errc::bad_field, "the answer from " + authority + " is too large"};
            } else {
                read_more();
            }
        });
    };
    socket.async_connect(tcp::endpoint(address, port), [&](const asio::error_code& connect_ec) {
        if (connect_ec) {
            failed = Error{Errc::io_error, "cannot connect to " + authority + ": " + connect_ec.message()};
            return;
        }
        asio::async_write(socket, asio::buffer(request), [&](const asio::error_code& write_ec, std::size_t) {
            if (write_ec) {
                failed = Error{Errc::io_error, "writing to " + authority + ": " + write_ec.message()};
                return;
            }
            read_more();
        });
    });
    io.run_for(timeout);
    if (failed) {
        return *failed;
    }
    if (!done) {
        return Error{Errc::timeout,
                     "no complete answer from " + authority + " within " + std::to_string(timeout.count()) + " ms"};
    }
    return parse_response(response);
}

}  // namespace sim::tools
