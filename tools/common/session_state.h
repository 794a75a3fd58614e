#pragma once
/// @file
/// The client's state file: session tokens by server and user, so that `sim` logs in without the password while a
/// token is valid. One line per token, `server-id user token-hex expires-unix-ms`; the file has mode 0600 and is
/// rewritten whole (temporary file + rename) under an advisory lock, so concurrent `sim` processes do not lose
/// each other's entries. A token is a bearer secret: anyone who reads the file can log in as the user until the
/// token expires or is revoked.

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sim::tools {

/// A stored session token.
struct StoredToken {
    SecureBytes token;
    std::int64_t expires_unix_ms = 0;
};

class SessionState {
public:
    explicit SessionState(std::string path) : m_path(std::move(path)) {}

    /// The unexpired token of `user` on `server_id`, if any. Errc::invalid_key when the file can be read by group
    /// or others (its tokens must be considered stolen); Errc::io_error when it cannot be read. Malformed lines
    /// are ignored.
    [[nodiscard]] Result<std::optional<StoredToken>> load(std::string_view server_id, std::string_view user,
                                                          std::int64_t now_unix_ms) const;
    /// Store (or replace) the token of `user` on `server_id`; drops expired entries. Errc::io_error.
    [[nodiscard]] Status save(std::string_view server_id, std::string_view user, const StoredToken& token,
                              std::int64_t now_unix_ms);
    /// Remove the token of `user` on `server_id`. Errc::io_error.
    [[nodiscard]] Status forget(std::string_view server_id, std::string_view user, std::int64_t now_unix_ms);

    [[nodiscard]] const std::string& path() const noexcept { return m_path; }

private:
    Status rewrite(std::string_view server_id, std::string_view user, const StoredToken* token,
                   std::int64_t now_unix_ms);
    std::string m_path;
};

}  // namespace sim::tools
