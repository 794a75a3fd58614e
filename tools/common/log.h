#pragma once
/// @file
/// Structured log lines for the daemon: logfmt (`ts=... level=... msg="..." key=value`) or JSON lines, on stderr.
/// Callers pass only text that holds no secret and no message content; the logger escapes what it writes so
/// that a value cannot forge another field or line.

#include <sim/server.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sim::tools {

enum class LogFormat : std::uint8_t { text, json };

/// Writes log lines at or above a level. Thread-safe.
class Logger {
public:
    /// Lines go to `out` (stderr by default; must outlive the logger).
    Logger(LogLevel min_level, LogFormat format, std::FILE* out = stderr)
        : m_min(min_level), m_format(format), m_out(out) {}

    /// One line with `message` and extra `fields` (key, value) in order.
    void log(LogLevel level, std::string_view message,
             const std::vector<std::pair<std::string_view, std::string>>& fields = {});

    [[nodiscard]] bool enabled(LogLevel level) const noexcept { return level >= m_min; }

private:
    LogLevel m_min;
    LogFormat m_format;
    std::FILE* m_out;
    std::mutex m_mutex;
};

/// "debug", "info", "warning", "error".
std::string_view log_level_name(LogLevel level) noexcept;

}  // namespace sim::tools
