// simd's admin endpoint (tools/common/metrics_http): the Prometheus text and the request handling as pure functions,
// then the server and client over loopback sockets, with the bounds that keep the endpoint from being abused.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "common/metrics_http.h"

#include <doctest/doctest.h>

#include <asio.hpp>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using sim::tools::HttpResponse;
using sim::tools::Metric;
using sim::tools::MetricType;

namespace {

std::optional<HttpResponse> pages(std::string_view path) {
    if (path == "/metrics") {
        return HttpResponse{200, "text/plain; version=0.0.4", "m 1\n"};
    }
    return std::nullopt;
}

}  // namespace

TEST_CASE("format_prometheus: HELP and TYPE once per metric, labels, escapes") {
    const std::vector<Metric> metrics = {
        {"a_total", MetricType::counter, "Things\\done\nso far.", {}, 7, {}},
        {"b", MetricType::gauge, "By kind.", {{"kind", "x\"y\\z\n"}, {"k2", "v"}}, 1, {}},
        {"b", MetricType::gauge, "By kind.", {{"kind", "w"}}, 18446744073709551615ULL, {}},
    };
    CHECK(sim::tools::format_prometheus(metrics) ==
          "# HELP a_total Things\\\\done\\nso far.\n"
          "# TYPE a_total counter\n"
          "a_total 7\n"
          "# HELP b By kind.\n"
          "# TYPE b gauge\n"
          "b{kind=\"x\\\"y\\\\z\\n\",k2=\"v\"} 1\n"
          "b{kind=\"w\"} 18446744073709551615\n");
    CHECK(sim::tools::format_prometheus({}).empty());
}

TEST_CASE("format_prometheus: a histogram has cumulative buckets up to +Inf, a sum in seconds and a count") {
    Metric h{"lat_seconds", MetricType::histogram, "Latency.", {{"op", "x"}}, 0, {}};
    h.histogram.bounds = {500us, 2500us, 1s};
    h.histogram.counts = {2, 0, 3, 1};
    h.histogram.sum = 1500ms;
    h.histogram.count = 6;
    const std::vector<Metric> metrics = {h};
    CHECK(sim::tools::format_prometheus(metrics) ==
          "# HELP lat_seconds Latency.\n"
          "# TYPE lat_seconds histogram\n"
          "lat_seconds_bucket{op=\"x\",le=\"0.0005\"} 2\n"
          "lat_seconds_bucket{op=\"x\",le=\"0.0025\"} 2\n"
          "lat_seconds_bucket{op=\"x\",le=\"1\"} 5\n"
          "lat_seconds_bucket{op=\"x\",le=\"+Inf\"} 6\n"
          "lat_seconds_sum{op=\"x\"} 1.5\n"
          "lat_seconds_count{op=\"x\"} 6\n");
}

TEST_CASE("find_sample reads one series of a scraped text") {
    const std::string text =
        "# HELP a_total A.\n# TYPE a_total counter\na_total{k=\"v\"} 12\na_total 3\n"
        "b_sum 0.25\r\nb 7\nbad x\n";
    using sim::tools::find_sample;
    CHECK(find_sample(text, "a_total{k=\"v\"}") == 12.0);
    CHECK(find_sample(text, "a_total") == 3.0);
    CHECK(find_sample(text, "b_sum") == 0.25);
    CHECK(find_sample(text, "b") == 7.0);
    CHECK_FALSE(find_sample(text, "a"));
    CHECK_FALSE(find_sample(text, "bad"));
    CHECK_FALSE(find_sample(text, "c"));
}

TEST_CASE("server_metrics: every ServerStats figure, simd_ names, _total exactly on counters") {
    sim::ServerStats s;
    s.connections = 3;
    s.connections_handshake = 1;
    s.connections_unauthenticated = 0;
    s.connections_authenticated = 2;
    s.online_users = 2;
    s.conversations = 1;
    s.waiting = 4;
    s.logins_ok = 5;
    s.logins_failed = 6;
    s.logins_throttled = 12;
    s.messages_routed = 7;
    s.messages_delivered = 13;
    s.messages_refused = 8;
    s.refused_by_reason = {{sim::Errc::rate_limited, 5}, {sim::Errc::queue_full, 3}};
    s.store_commits = 9;
    s.stored_messages = 10;
    s.store_bytes = 11;
    s.store_messages = 14;
    s.login_latency.bounds = {1s};
    s.login_latency.counts = {4, 1};
    s.login_latency.count = 5;
    s.login_latency.sum = 2s;
    const auto metrics = sim::tools::server_metrics(s, "1.2.3");
    const std::string text = sim::tools::format_prometheus(metrics);
    for (const auto& m : metrics) {
        CHECK(m.name.starts_with("simd_"));
        CHECK(m.name.ends_with("_total") == (m.type == MetricType::counter));
        CHECK(m.name.ends_with("_seconds") == (m.type == MetricType::histogram));
        CHECK(!m.help.empty());
    }
    for (const char* line : {"simd_info{version=\"1.2.3\"} 1\n",
                             "simd_connections{state=\"handshake\"} 1\n",
                             "simd_connections{state=\"unauthenticated\"} 0\n",
                             "simd_connections{state=\"authenticated\"} 2\n",
                             "simd_online_users 2\n",
                             "simd_conversations 1\n",
                             "simd_waiting 4\n",
                             "simd_logins_total{result=\"ok\"} 5\n",
                             "simd_logins_total{result=\"failed\"} 6\n",
                             "simd_logins_total{result=\"throttled\"} 12\n",
                             "simd_messages_routed_total 7\n",
                             "simd_messages_delivered_total 13\n",
                             "simd_messages_refused_total{reason=\"rate_limited\"} 5\n",
                             "simd_messages_refused_total{reason=\"queue_full\"} 3\n",
                             "simd_store_commits_total 9\n",
                             "simd_store_committed_messages_total 10\n",
                             "simd_store_bytes 11\n",
                             "simd_store_messages 14\n",
                             "# TYPE simd_logins_total counter\n",
                             "# TYPE simd_connections gauge\n",
                             "# TYPE simd_login_latency_seconds histogram\n",
                             "simd_login_latency_seconds_bucket{le=\"1\"} 4\n",
                             "simd_login_latency_seconds_bucket{le=\"+Inf\"} 5\n",
                             "simd_login_latency_seconds_sum 2\n",
                             "simd_login_latency_seconds_count 5\n",
                             "simd_handshake_latency_seconds_count 0\n",
                             "simd_store_commit_latency_seconds_count 0\n"}) {
        CHECK_MESSAGE(text.find(line) != std::string::npos, line);
    }
    // One HELP/TYPE block per metric name.
    CHECK(text.find("# TYPE simd_connections gauge") == text.rfind("# TYPE simd_connections gauge"));
    CHECK(text.find("# TYPE simd_messages_refused_total") == text.rfind("# TYPE simd_messages_refused_total"));
}

TEST_CASE("format_status lists the online users and the counts") {
    sim::ServerStats s;
    s.connections = 3;
    s.logins_ok = 2;
    s.logins_throttled = 1;
    const std::vector<std::string> users = {"alice", "bob"};
    const std::string page = sim::tools::format_status(s, users);
    CHECK(page.starts_with("online users: 2\n  alice\n  bob\nconnections: 3\n"));
    CHECK(page.find("logins: 2 ok, 0 failed, 1 throttled\n") != std::string::npos);
}

TEST_CASE("parse_admin_address: a port alone is on loopback; HOST must be an IP address") {
    using sim::tools::parse_admin_address;
    CHECK(parse_admin_address("9100").value() == std::pair<std::string, std::uint16_t>{"127.0.0.1", 9100});
    CHECK(parse_admin_address("0").value().second == 0);
    CHECK(parse_admin_address("0.0.0.0:9100").value().first == "0.0.0.0");
    CHECK(parse_admin_address("[::1]:9100").value().first == "::1");
    for (const char* bad : {"", "x", "70000", "-1", "host:9100", "127.0.0.1:", ":9100", "127.0.0.1:99999", "::1:5"}) {
        const auto r = parse_admin_address(bad);
        REQUIRE_MESSAGE(!r, bad);
        CHECK(r.error().code == sim::Errc::invalid_argument);
        CHECK(r.error().detail.find("--metrics-address") != std::string::npos);
    }
}

TEST_CASE("answer_request: GET only, known paths only, malformed lines refused") {
    using sim::tools::answer_request;
    CHECK(answer_request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", pages).body == "m 1\n");
    CHECK(answer_request("GET /metrics?x=1 HTTP/1.0\r\n\r\n", pages).status == 200);
    CHECK(answer_request("GET /other HTTP/1.1\r\n\r\n", pages).status == 404);
    CHECK(answer_request("GET /Metrics HTTP/1.1\r\n\r\n", pages).status == 404);
    CHECK(answer_request("POST /metrics HTTP/1.1\r\n\r\n", pages).status == 405);
    CHECK(answer_request("HEAD /metrics HTTP/1.1\r\n\r\n", pages).status == 405);
    for (const char* bad : {"", "\r\n\r\n", "GET\r\n\r\n", "GET /metrics\r\n\r\n", "GET  /metrics HTTP/1.1\r\n\r\n",
                            "GET /metrics HTTP/2\r\n\r\n", "GET /metrics HTTP/1.1 x\r\n\r\n"}) {
        CHECK_MESSAGE(answer_request(bad, pages).status == 400, bad);
    }
}

TEST_CASE("serialize_response and parse_response agree") {
    const std::string bytes = sim::tools::serialize_response({405, "text/plain", "no\n"});
    CHECK(bytes.starts_with("HTTP/1.0 405 Method Not Allowed\r\n"));
    CHECK(bytes.find("\r\nAllow: GET\r\n") != std::string::npos);
    CHECK(bytes.find("\r\nConnection: close\r\n") != std::string::npos);
    CHECK(bytes.find("\r\nContent-Length: 3\r\n") != std::string::npos);
    const auto back = sim::tools::parse_response(bytes);
    REQUIRE(back);
    CHECK(back->status == 405);
    CHECK(back->content_type == "text/plain");
    CHECK(back->body == "no\n");
    for (const char* bad : {"", "HTTP/1.0 200 OK\r\n", "HTTP/1.0 2x0 OK\r\n\r\n", "SSH-2.0-OpenSSH\r\n\r\n"}) {
        CHECK_MESSAGE(!sim::tools::parse_response(bad), bad);
    }
}

TEST_CASE("AdminServer serves GET over loopback and is bounded") {
    sim::tools::AdminServer::Options options;
    options.max_connections = 2;
    options.max_request_bytes = 1024;
    options.read_timeout = 300ms;
    auto server = sim::tools::AdminServer::start(options, pages);
    REQUIRE(server);
    const std::uint16_t port = (*server)->port();
    REQUIRE(port != 0);

    auto page = sim::tools::http_get("127.0.0.1", port, "/metrics", 2s);
    REQUIRE(page);
    CHECK(page->status == 200);
    CHECK(page->content_type == "text/plain; version=0.0.4");
    CHECK(page->body == "m 1\n");
    page = sim::tools::http_get("127.0.0.1", port, "/nothing", 2s);
    REQUIRE(page);
    CHECK(page->status == 404);

    asio::io_context io;
    const asio::ip::tcp::endpoint where(asio::ip::make_address("127.0.0.1"), port);
    SUBCASE("a request head over the limit gets 431") {
        asio::ip::tcp::socket s(io);
        s.connect(where);
        const std::string big = "GET /metrics HTTP/1.0\r\nX: " + std::string(2000, 'a') + "\r\n\r\n";
        asio::error_code ec;
        asio::write(s, asio::buffer(big), ec);
        std::string answer;
        asio::read(s, asio::dynamic_buffer(answer), ec);
        CHECK(answer.starts_with("HTTP/1.0 431 "));
    }
    SUBCASE("silent connections use up the cap until the deadline closes them") {
        asio::ip::tcp::socket a(io);
        asio::ip::tcp::socket b(io);
        a.connect(where);
        b.connect(where);
        std::this_thread::sleep_for(50ms);
        CHECK(!sim::tools::http_get("127.0.0.1", port, "/metrics", 2s));  // closed at accept
        std::string rest;
        asio::error_code ec;
        asio::read(a, asio::dynamic_buffer(rest), ec);  // the deadline closes it without an answer
        CHECK(ec == asio::error::eof);
        CHECK(rest.empty());
        // Once the deadline has closed them, the endpoint answers again (the sessions end just after the close).
        for (int i = 0; i < 40; ++i) {
            page = sim::tools::http_get("127.0.0.1", port, "/metrics", 2s);
            if (page) {
                break;
            }
            std::this_thread::sleep_for(50ms);
        }
        REQUIRE(page);
        CHECK(page->status == 200);
    }
    (*server)->stop();
    // The port is closed: refused at once, not left to time out.
    CHECK(sim::tools::http_get("127.0.0.1", port, "/metrics", 2s).error().code == sim::Errc::io_error);
}

TEST_CASE("AdminServer and http_get refuse what is not an IP address") {
    sim::tools::AdminServer::Options options;
    options.host = "localhost.invalid";
    CHECK(sim::tools::AdminServer::start(options, pages).error().code == sim::Errc::invalid_argument);
    CHECK(sim::tools::http_get("no host", 1, "/", 1s).error().code == sim::Errc::invalid_argument);
}
