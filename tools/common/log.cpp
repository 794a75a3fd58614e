// logfmt / JSON-lines logging for the daemon.
#include "log.h"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace sim::tools {

namespace {

std::string timestamp() {
    const auto now = std::chrono::system_clock::now();
    const auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - secs).count();
    const std::time_t t = std::chrono::system_clock::to_time_t(secs);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[40];
    const auto n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    char out[64];
    std::snprintf(out, sizeof out, "%.*s.%03lldZ", static_cast<int>(n), buf, static_cast<long long>(ms));
    return out;
}

/// JSON string contents (RFC 8259 section 7); control characters as \u escapes.
std::string json_escape(std::string_view s) {
    std::string out;
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(c);
        } else if (u < 0x20 || u == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", u);
            out += buf;
        } else {
            out.push_back(c);
        }
    }
    return out;
}

/// A logfmt value: bare when it is a simple word, else quoted with \" \\ \n escapes.
std::string logfmt_value(std::string_view s) {
    bool bare = !s.empty();
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u == 0x7f || c == '"' || c == '=' || c == '\\') {
            bare = false;
            break;
        }
    }
    if (bare) {
        return std::string(s);
    }
    std::string out = "\"";
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (u < 0x20 || u == 0x7f) {
            out.push_back('?');
        } else {
            out.push_back(c);
        }
    }
    out.push_back('"');
    return out;
}

}  // namespace

std::string_view log_level_name(LogLevel level) noexcept {
    switch (level) {
        case LogLevel::debug:
            return "debug";
        case LogLevel::info:
            return "info";
        case LogLevel::warning:
            return "warning";
        case LogLevel::error:
            return "error";
    }
    return "unknown";
}

void Logger::log(LogLevel level, std::string_view message,
                 const std::vector<std::pair<std::string_view, std::string>>& fields) {
    if (!enabled(level)) {
        return;
    }
    std::string line;
    if (m_format == LogFormat::json) {
        line = "{\"ts\":\"" + timestamp() + "\",\"level\":\"" + std::string(log_level_name(level)) + "\",\"msg\":\"" +
               json_escape(message) + "\"";
        for (const auto& [k, v] : fields) {
            line += ",\"" + json_escape(k) + "\":\"" + json_escape(v) + "\"";
        }
        line += "}\n";
    } else {
        line = "ts=" + timestamp() + " level=" + std::string(log_level_name(level)) + " msg=" + logfmt_value(message);
        for (const auto& [k, v] : fields) {
            line += " " + std::string(k) + "=" + logfmt_value(v);
        }
        line += "\n";
    }
    const std::lock_guard lock(m_mutex);
    std::fwrite(line.data(), 1, line.size(), m_out);
    std::fflush(m_out);
}

}  // namespace sim::tools
