// The client's state file of session tokens.
#include "session_state.h"

#include "system.h"

#include <fcntl.h>
#include <unistd.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>

namespace sim::tools {

namespace {

struct Entry {
    std::string server_id;
    std::string user;
    std::string token_hex;
    std::int64_t expires = 0;
};

std::optional<Entry> parse_line(const std::string& line) {
    if (line.empty() || line[0] == '#') {
        return std::nullopt;
    }
    std::istringstream fields(line);
    Entry e;
    std::string expires;
    std::string extra;
    if (!(fields >> e.server_id >> e.user >> e.token_hex >> expires) || (fields >> extra)) {
        return std::nullopt;
    }
    const auto [ptr, ec] = std::from_chars(expires.data(), expires.data() + expires.size(), e.expires);
    if (ec != std::errc{} || ptr != expires.data() + expires.size()) {
        return std::nullopt;
    }
    return e;
}

}  // namespace

Result<std::optional<StoredToken>> SessionState::load(std::string_view server_id, std::string_view user,
                                                      std::int64_t now_unix_ms) const {
    std::ifstream in(m_path);
    if (!in) {
        if (errno == ENOENT) {
            return std::optional<StoredToken>{};
        }
        return Error{Errc::io_error, "cannot read state file '" + m_path + "': " + std::strerror(errno)};
    }
    if (shared_with_others(m_path).value_or(false)) {
        return Error{Errc::invalid_key, "state file '" + m_path + "' can be read by others; its tokens are ignored"};
    }
    std::string line;
    while (std::getline(in, line)) {
        auto e = parse_line(line);
        wipe(line);
        if (!e || e->server_id != server_id || e->user != user || e->expires <= now_unix_ms) {
            if (e) {
                wipe(e->token_hex);
            }
            continue;
        }
        Bytes raw;
        const bool decoded = from_hex(e->token_hex, raw);
        wipe(e->token_hex);
        if (!decoded || raw.empty()) {
            continue;
        }
        StoredToken t{to_bytes<SecureBytes>(raw), e->expires};
        secure_zero(raw.data(), raw.size());
        return std::optional<StoredToken>{std::move(t)};
    }
    return std::optional<StoredToken>{};
}

Status SessionState::save(std::string_view server_id, std::string_view user, const StoredToken& token,
                          std::int64_t now_unix_ms) {
    return rewrite(server_id, user, &token, now_unix_ms);
}

Status SessionState::forget(std::string_view server_id, std::string_view user, std::int64_t now_unix_ms) {
    return rewrite(server_id, user, nullptr, now_unix_ms);
}

Status SessionState::rewrite(std::string_view server_id, std::string_view user, const StoredToken* token,
                             std::int64_t now_unix_ms) {
    if (server_id.find_first_of(" \t\r\n") != std::string_view::npos) {
        return Error{Errc::invalid_argument, "server id must be one word"};
    }
    SIM_TRY_STATUS(make_private_dirs(parent_dir(m_path)));
    const FileLock lock(m_path);
    if (!lock.held()) {
        return Error{Errc::io_error, "cannot lock state file '" + m_path + "'"};
    }
    std::string text = "# libsim session tokens: server-id user token-hex expires-unix-ms (secret: keep mode 0600)\n";
    {
        std::ifstream in(m_path);
        std::string line;
        while (std::getline(in, line)) {
            auto e = parse_line(line);
            if (e && !(e->server_id == server_id && e->user == user) && e->expires > now_unix_ms) {
                text += line + "\n";
            }
            if (e) {
                wipe(e->token_hex);
            }
            wipe(line);
        }
    }
    if (token != nullptr) {
        std::string hex = to_hex(token->token);
        text += std::string(server_id) + " " + std::string(user) + " " + hex + " " +
                std::to_string(token->expires_unix_ms) + "\n";
        wipe(hex);
    }
    auto st = write_file_atomic(m_path, text, 0600);
    wipe(text);
    return st;
}

}  // namespace sim::tools
