#pragma once
/// @file
/// Readiness notification to a service manager (systemd's Type=notify), without libsystemd: the datagram protocol
/// of sd_notify(3), a few lines of POSIX.

#include <sim/error.h>

#include <string_view>

namespace sim::tools {

/// Send `state` (newline-separated assignments such as "READY=1" or "STOPPING=1") as one datagram to the AF_UNIX
/// socket named by the environment variable NOTIFY_SOCKET: a file system path starting with '/', or an abstract
/// socket name starting with '@'. Does nothing and succeeds when NOTIFY_SOCKET is unset or empty, so a program
/// not started by a service manager is unaffected. Errc::invalid_argument when NOTIFY_SOCKET has another form or
/// is too long for a socket address; Errc::io_error when the datagram cannot be sent.
[[nodiscard]] Status notify_service_manager(std::string_view state);

}  // namespace sim::tools
