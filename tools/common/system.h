#pragma once
/// @file
/// Operating-system helpers for the command-line tools: files with safe modes, secret files, no-echo password
/// prompts, configuration paths. POSIX only. Nothing here logs or prints a secret.

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sim::tools {

/// An exclusive advisory lock (flock) on the file "<path>.lock", created with mode 0600, held while the object
/// lives. Serialises read-modify-write cycles of small files between processes; with `wait` false it does not
/// wait for another holder (simd's lock on its data directory).
class FileLock {
public:
    explicit FileLock(const std::string& path, bool wait = true);
    ~FileLock();
    FileLock(const FileLock&) = delete;
    FileLock& operator=(const FileLock&) = delete;
    /// Whether the lock is held (false when the lock file cannot be created or locked).
    [[nodiscard]] bool held() const noexcept { return m_fd >= 0; }

private:
    int m_fd = -1;
};

/// Create `path` and any missing parents with mode 0700 (existing directories are left as they are).
/// Errc::io_error with the OS message.
[[nodiscard]] Status make_private_dirs(const std::string& path);

/// Whether `path` (a file or directory) can be reached by group or others (mode & 077). nullopt when it does not
/// exist or cannot be examined.
[[nodiscard]] std::optional<bool> shared_with_others(const std::string& path);

/// Bytes an unprivileged process may still write on the file system holding `path` (statvfs f_bavail). nullopt
/// when it cannot be examined.
[[nodiscard]] std::optional<std::uint64_t> free_bytes(const std::string& path);

/// Write `data` to `path` through a temporary file in the same directory and a rename, with mode `mode`, so a
/// reader never sees a half-written file. Errc::io_error.
[[nodiscard]] Status write_file_atomic(const std::string& path, std::string_view data, unsigned mode);

/// Load a secret key file of exactly `size` raw bytes; create it from `rng` with mode 0600 when it does not exist
/// and `create` is set. Refuses (Errc::invalid_key) a file that group or others can access, that is not a regular
/// file, or that has another size. `what` names the file in messages ("server key"). Errc::io_error.
[[nodiscard]] Result<SecureBytes> load_or_create_secret(const std::string& path, std::size_t size, Rng& rng,
                                                        bool create, std::string_view what);

/// The first line of a file (without the line end) as a secret, e.g. a password file. Errc::io_error.
[[nodiscard]] Result<std::string> read_first_line(const std::string& path);

/// Whether standard input is a terminal.
[[nodiscard]] bool stdin_is_tty();

/// Prompt on the controlling terminal (/dev/tty) and read a line with echo off. Errc::io_error when there is no
/// terminal; Errc::closed at end of input.
[[nodiscard]] Result<std::string> prompt_secret(std::string_view prompt);

/// Prompt on the controlling terminal and read a line with echo on. Errc::io_error when there is no terminal.
[[nodiscard]] Result<std::string> prompt_line(std::string_view prompt);

/// The password for a command: the first line of `password_file` when given, else the environment variable `env`,
/// else a no-echo prompt on the terminal (asked twice when `confirm`). Errc::invalid_argument when none of them is
/// available (no file, no variable, no terminal) or the two entries differ. `option` names the file's option in
/// messages.
[[nodiscard]] Result<std::string> obtain_password(const std::string& password_file, std::string_view prompt,
                                                  bool confirm, std::string_view option = "password-file",
                                                  const char* env = "SIM_PASSWORD");

/// `$XDG_CONFIG_HOME/libsim`, else `$HOME/.config/libsim`, else "." (no HOME).
[[nodiscard]] std::string default_config_dir();

/// Directory part of a path ("." when there is none).
[[nodiscard]] std::string parent_dir(const std::string& path);

/// Whether a listening address reaches only this machine: 127.0.0.0/8, ::1, an IPv4-mapped 127.x address or
/// "localhost". Other names and the wildcard addresses (0.0.0.0, ::) are not loopback.
[[nodiscard]] bool is_loopback(const std::string& host);

/// Replace control characters (and DEL) by '?' so that text from the network cannot drive the terminal.
[[nodiscard]] std::string printable(std::string_view text);

/// Wipe a string that held a secret.
void wipe(std::string& s) noexcept;

}  // namespace sim::tools
