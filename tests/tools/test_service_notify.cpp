// sd_notify readiness without libsystemd (tools/common/service_notify): the datagram reaches a socket bound at a
// path and at an abstract name; nothing is sent without NOTIFY_SOCKET; malformed values are refused.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "common/service_notify.h"

#include <doctest/doctest.h>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>

namespace fs = std::filesystem;

namespace {

/// A datagram socket bound at `name` ('@' first: abstract), as NOTIFY_SOCKET names it; closed and unlinked at the
/// end of the test.
class Receiver {
public:
    explicit Receiver(std::string name) : m_name(std::move(name)) {
        m_fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        REQUIRE(m_fd >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        REQUIRE(m_name.size() < sizeof(addr.sun_path));
        std::memcpy(addr.sun_path, m_name.data(), m_name.size());
        if (m_name.front() == '@') {
            addr.sun_path[0] = '\0';
        }
        const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + m_name.size());
        REQUIRE(::bind(m_fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0);
        const timeval limit{2, 0};
        REQUIRE(::setsockopt(m_fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) == 0);
    }
    ~Receiver() {
        ::close(m_fd);
        if (m_name.front() == '/') {
            ::unlink(m_name.c_str());
        }
    }
    Receiver(const Receiver&) = delete;
    Receiver& operator=(const Receiver&) = delete;

    /// The next datagram, or "(nothing)" when none arrives within the timeout.
    [[nodiscard]] std::string receive(int flags = 0) const {
        char buf[512];
        const ssize_t n = ::recv(m_fd, buf, sizeof buf, flags);
        return n < 0 ? std::string("(nothing)") : std::string(buf, static_cast<std::size_t>(n));
    }

private:
    std::string m_name;
    int m_fd = -1;
};

std::string unique_name(const char* what) {
    return std::string("sim-notify-") + what + "-" + std::to_string(::getpid());
}

}  // namespace

TEST_CASE("READY=1 reaches a socket bound at a path") {
    const std::string path = (fs::temp_directory_path() / unique_name("path")).string();
    const Receiver receiver(path);
    REQUIRE(::setenv("NOTIFY_SOCKET", path.c_str(), 1) == 0);
    REQUIRE(sim::tools::notify_service_manager("READY=1"));
    CHECK(receiver.receive() == "READY=1");
    REQUIRE(sim::tools::notify_service_manager("STOPPING=1"));
    CHECK(receiver.receive() == "STOPPING=1");
    ::unsetenv("NOTIFY_SOCKET");
}

TEST_CASE("READY=1 reaches an abstract socket named with '@'") {
    const std::string name = "@" + unique_name("abstract");
    const Receiver receiver(name);
    REQUIRE(::setenv("NOTIFY_SOCKET", name.c_str(), 1) == 0);
    REQUIRE(sim::tools::notify_service_manager("READY=1\nSTATUS=listening"));
    CHECK(receiver.receive() == "READY=1\nSTATUS=listening");
    ::unsetenv("NOTIFY_SOCKET");
}

TEST_CASE("without NOTIFY_SOCKET nothing is sent and nothing fails") {
    const std::string path = (fs::temp_directory_path() / unique_name("unset")).string();
    const Receiver receiver(path);
    ::unsetenv("NOTIFY_SOCKET");
    CHECK(sim::tools::notify_service_manager("READY=1"));
    REQUIRE(::setenv("NOTIFY_SOCKET", "", 1) == 0);
    CHECK(sim::tools::notify_service_manager("READY=1"));
    CHECK(receiver.receive(MSG_DONTWAIT) == "(nothing)");
    ::unsetenv("NOTIFY_SOCKET");
}

TEST_CASE("malformed or unreachable NOTIFY_SOCKET values are errors") {
    for (const std::string& value :
         {std::string("relative/path"), std::string("vsock:2:1234"), "/" + std::string(200, 'x')}) {
        REQUIRE(::setenv("NOTIFY_SOCKET", value.c_str(), 1) == 0);
        const auto st = sim::tools::notify_service_manager("READY=1");
        REQUIRE_FALSE(st);
        CHECK(st.code() == sim::Errc::invalid_argument);
    }
    const std::string missing = (fs::temp_directory_path() / unique_name("missing")).string();
    REQUIRE(::setenv("NOTIFY_SOCKET", missing.c_str(), 1) == 0);
    const auto st = sim::tools::notify_service_manager("READY=1");
    REQUIRE_FALSE(st);
    CHECK(st.code() == sim::Errc::io_error);
    ::unsetenv("NOTIFY_SOCKET");
}
