#pragma once
/// @file
/// simd's admin endpoint: `GET /metrics` in the Prometheus text exposition format (version 0.0.4) and `GET /status`
/// for `simd status`, served over plain HTTP/1.0 on a separate, normally loopback, address.
///
/// The formatting and the request/response handling are pure functions (tested without sockets); `AdminServer`
/// and `http_get` are the thin Asio part. The server is bounded so that it cannot be used against the daemon: a
/// request head of at most `max_request_bytes`, a read deadline, a few connections at a time, one thread, and the
/// connection closed after every response.

#include <sim/error.h>
#include <sim/server.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sim::tools {

/// The Prometheus metric types simd uses.
enum class MetricType : std::uint8_t { counter, gauge, histogram };

/// One sample. Consecutive samples with the same name share one `# HELP` / `# TYPE` block (the format wants all
/// samples of a metric together).
struct Metric {
    std::string name;  ///< [a-zA-Z_:][a-zA-Z0-9_:]*
    MetricType type = MetricType::gauge;
    std::string help;
    std::vector<std::pair<std::string, std::string>> labels;  ///< name, value (escaped on output)
    std::uint64_t value = 0;                                  ///< counter and gauge
    HistogramSnapshot histogram;                              ///< histogram: buckets, sum and count
};

/// The text exposition format, version 0.0.4: `# HELP`, `# TYPE` and `name{label="value"} value` lines, each ending
/// in '\n'. Help text escapes '\\' and newline; label values also '"'. A histogram's bounds and sum are in seconds.
[[nodiscard]] std::string format_prometheus(std::span<const Metric> metrics);

/// The value of one sample in a scraped text: `series` is the name with its labels as written
/// (`simd_logins_total{result="ok"}`). nullopt when the text has no such sample or its value is not a number.
[[nodiscard]] std::optional<double> find_sample(std::string_view text, std::string_view series);

/// simd's metrics (names prefixed `simd_`, counters suffixed `_total`) from the core's counters.
[[nodiscard]] std::vector<Metric> server_metrics(const ServerStats& stats, std::string_view version);

/// The `/status` page `simd status` prints: the counts, then the online users one per line.
[[nodiscard]] std::string format_status(const ServerStats& stats, std::span<const std::string> online_users);

/// The admin address as `--metrics-address` takes it: "PORT" (on 127.0.0.1), "HOST:PORT" or "[IPv6]:PORT", HOST an
/// IP address; port 0 picks a free port. Errc::invalid_argument with a message naming the option.
[[nodiscard]] Result<std::pair<std::string, std::uint16_t>> parse_admin_address(std::string_view text);

/// An HTTP response. `content_type` empty: no body headers beyond Content-Length.
struct HttpResponse {
    int status = 200;
    std::string content_type;
    std::string body;
};

/// What the endpoint serves for a GET of `path` (without the query), or nullopt for 404.
using AdminHandler = std::function<std::optional<HttpResponse>(std::string_view path)>;

/// The answer to a complete request head (request line and headers, up to the blank line): 400 for a malformed
/// request line, 405 (with `Allow: GET`) for any method but GET, 404 for a path the handler does not know.
[[nodiscard]] HttpResponse answer_request(std::string_view head, const AdminHandler& handler);

/// The bytes of `r` as an HTTP/1.0 response with `Connection: close`.
[[nodiscard]] std::string serialize_response(const HttpResponse& r);

/// Parse a complete HTTP/1.x response (the bytes up to the server's close). Errc::bad_field when it is not one.
[[nodiscard]] Result<HttpResponse> parse_response(std::string_view bytes);

/// A small HTTP/1.0 server on one thread for the admin endpoint.
class AdminServer {
public:
    struct Options {
        std::string host = "127.0.0.1";
        std::uint16_t port = 0;                        ///< 0 picks a free port
        std::size_t max_connections = 4;               ///< more at once are closed at accept
        std::size_t max_request_bytes = 8192;          ///< a longer request head gets 431
        std::chrono::milliseconds read_timeout{3000};  ///< a request head not complete by then: connection closed
    };

    /// Bind, listen and start serving `handler` (called on the server's thread, one request at a time).
    /// Errc::invalid_argument for a host that is not an IP address, Errc::io_error when the address cannot be bound.
    [[nodiscard]] static Result<std::unique_ptr<AdminServer>> start(Options options, AdminHandler handler);
    ~AdminServer();
    AdminServer(const AdminServer&) = delete;
    AdminServer& operator=(const AdminServer&) = delete;

    /// The bound port.
    [[nodiscard]] std::uint16_t port() const noexcept;
    /// Stop serving: the thread is joined and the port closed (also done by the destructor). Connections still
    /// open are closed when the server is destroyed.
    void stop();

    struct Impl;

private:
    explicit AdminServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

/// GET http://host:port/path, everything within `timeout`; the response body is capped at 1 MiB.
/// Errc::io_error when the server cannot be reached or the connection fails, Errc::timeout, Errc::bad_field for an
/// answer that is not HTTP.
[[nodiscard]] Result<HttpResponse> http_get(const std::string& host, std::uint16_t port, std::string_view path,
                                            std::chrono::milliseconds timeout);

}  // namespace sim::tools
