// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET.
#include "service_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace sim::tools {

Status notify_service_manager(std::string_view state) {
    const char* env = std::getenv("NOTIFY_SOCKET");
    if (env == nullptr || *env == '\0') {
        return ok();
    }
    const std::string_view name(env);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    // A path is NUL-terminated; an abstract name ('@' in the variable) starts with a NUL byte and is not
    // terminated: its length is part of the address (unix(7)).
    if ((name.front() != '/' && name.front() != '@') || name.size() >= sizeof(addr.sun_path)) {
        return Error{Errc::invalid_argument, "NOTIFY_SOCKET: expected an absolute path or an @abstract name"};
    }
    std::memcpy(addr.sun_path, name.data(), name.size());
    if (name.front() == '@') {
        addr.sun_path[0] = '\0';
    }
    const auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());

    const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return Error{Errc::io_error, std::string("NOTIFY_SOCKET: socket: ") + std::strerror(errno)};
    }
    const ssize_t sent =
        ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&addr), addr_len);
    const int err = errno;
    ::close(fd);
    if (sent != static_cast<ssize_t>(state.size())) {
        return Error{Errc::io_error, std::string("NOTIFY_SOCKET: send: ") + std::strerror(err)};
    }
    return ok();
}

}  // namespace sim::tools
