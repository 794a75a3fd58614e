// POSIX helpers for the tools: private directories and files, secret files, terminal prompts.
#include "system.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <termios.h>
#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sim::tools {

namespace {

Error os_error(const std::string& what) {
    return Error{Errc::io_error, what + ": " + std::strerror(errno)};
}

/// Closes a descriptor when it goes out of scope.
class Fd {
public:
    explicit Fd(int fd) noexcept : m_fd(fd) {}
    ~Fd() {
        if (m_fd >= 0) {
            ::close(m_fd);
        }
    }
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    [[nodiscard]] int get() const noexcept { return m_fd; }

private:
    int m_fd;
};

bool write_all(int fd, const void* data, std::size_t size) {
    const auto* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, p, size);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return false;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

/// Read a line from `fd` byte by byte (a terminal; lines are short). Returns false at end of input.
bool read_line(int fd, std::string& out) {
    out.clear();
    char c = 0;
    for (;;) {
        const ssize_t n = ::read(fd, &c, 1);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return !out.empty();
        }
        if (c == '\n') {
            return true;
        }
        if (c != '\r') {
            out.push_back(c);
        }
    }
}

}  // namespace

FileLock::FileLock(const std::string& path, bool wait)
    : m_fd(::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (m_fd >= 0) {
        int rc = 0;
        do {
            rc = ::flock(m_fd, wait ? LOCK_EX : LOCK_EX | LOCK_NB);
        } while (rc != 0 && errno == EINTR);
        if (rc != 0) {
            ::close(m_fd);
            m_fd = -1;
        }
    }
}

FileLock::~FileLock() {
    if (m_fd >= 0) {
        ::close(m_fd);  // releases the lock
    }
}

Status make_private_dirs(const std::string& path) {
    if (path.empty()) {
        return Error{Errc::invalid_argument, "empty directory name"};
    }
    std::size_t pos = 0;
    while (pos != std::string::npos) {
        pos = path.find('/', pos + 1);
        const std::string part = path.substr(0, pos);
        if (part.empty() || ::mkdir(part.c_str(), 0700) == 0 || errno == EEXIST) {
            continue;
        }
        return os_error("cannot create directory '" + part + "'");
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return Error{Errc::io_error, "'" + path + "' is not a directory"};
    }
    return ok();
}

std::optional<bool> shared_with_others(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return std::nullopt;
    }
    return (st.st_mode & 077U) != 0;
}

std::optional<std::uint64_t> free_bytes(const std::string& path) {
    struct statvfs st {};
    if (::statvfs(path.c_str(), &st) != 0) {
        return std::nullopt;
    }
    return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

Status write_file_atomic(const std::string& path, std::string_view data, unsigned mode) {
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    {
        const Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
        if (fd.get() < 0) {
            return os_error("cannot write '" + tmp + "'");
        }
        if (::fchmod(fd.get(), mode) != 0 || !write_all(fd.get(), data.data(), data.size()) || ::fsync(fd.get()) != 0) {
            const Error err = os_error("cannot write '" + tmp + "'");
            ::unlink(tmp.c_str());
            return err;
        }
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const Error err = os_error("cannot replace '" + path + "'");
        ::unlink(tmp.c_str());
        return err;
    }
    return ok();
}

Result<SecureBytes> load_or_create_secret(const std::string& path, std::size_t size, Rng& rng, bool create,
                                          std::string_view what) {
    const std::string name = std::string(what) + " file '" + path + "'";
    const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) {
        if (errno != ENOENT || !create) {
            return os_error("cannot open " + name);
        }
        SecureBytes key = rng.secure_bytes(size);
        const Fd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (out.get() < 0) {
            return os_error("cannot create " + name);
        }
        if (::fchmod(out.get(), 0600) != 0 || !write_all(out.get(), key.data(), key.size()) ||
            ::fsync(out.get()) != 0) {
            const Error err = os_error("cannot write " + name);
            ::unlink(path.c_str());
            return err;
        }
        return key;
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        return os_error("cannot examine " + name);
    }
    if (!S_ISREG(st.st_mode)) {
        return Error{Errc::invalid_key, name + " is not a regular file"};
    }
    if ((st.st_mode & 077U) != 0) {
        return Error{Errc::invalid_key, name + " can be accessed by group or others; run: chmod 600 '" + path + "'"};
    }
    if (st.st_size != static_cast<off_t>(size)) {
        return Error{Errc::invalid_key, name + " must hold exactly " + std::to_string(size) + " bytes"};
    }
    SecureBytes key(size);
    std::size_t got = 0;
    while (got < size) {
        const ssize_t n = ::read(fd.get(), key.data() + got, size - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return os_error("cannot read " + name);
        }
        got += static_cast<std::size_t>(n);
    }
    return key;
}

Result<std::string> read_first_line(const std::string& path) {
    const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
        return os_error("cannot read '" + path + "'");
    }
    std::string line;
    if (!read_line(fd.get(), line)) {
        return Error{Errc::io_error, "'" + path + "' is empty"};
    }
    return line;
}

bool stdin_is_tty() {
    return ::isatty(STDIN_FILENO) == 1;
}

namespace {

// While echo is off, an interrupt must not leave the terminal silent: the handler restores the saved mode
// (tcsetattr is async-signal-safe) and then dies of the signal as it would have.
int g_tty_fd = -1;
termios g_saved_mode{};

extern "C" void restore_tty_and_die(int sig) {
    if (g_tty_fd >= 0) {
        (void)::tcsetattr(g_tty_fd, TCSAFLUSH, &g_saved_mode);
    }
    std::signal(sig, SIG_DFL);
    std::raise(sig);
}

Result<std::string> prompt_impl(std::string_view prompt, bool echo) {
    const Fd tty(::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY));
    if (tty.get() < 0) {
        return Error{Errc::io_error, "no terminal to ask on"};
    }
    if (!write_all(tty.get(), prompt.data(), prompt.size())) {
        return os_error("cannot write to the terminal");
    }
    termios saved{};
    const bool have_termios = ::tcgetattr(tty.get(), &saved) == 0;
    const bool quiet_mode = !echo && have_termios;
    using Handler = void (*)(int);
    Handler old_int = SIG_DFL;
    Handler old_term = SIG_DFL;
    if (quiet_mode) {
        g_saved_mode = saved;
        g_tty_fd = tty.get();
        old_int = std::signal(SIGINT, restore_tty_and_die);
        old_term = std::signal(SIGTERM, restore_tty_and_die);
        termios quiet = saved;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        quiet.c_lflag |= ECHONL;
        (void)::tcsetattr(tty.get(), TCSAFLUSH, &quiet);
    }
    std::string line;
    const bool got = read_line(tty.get(), line);
    if (quiet_mode) {
        (void)::tcsetattr(tty.get(), TCSAFLUSH, &saved);
        std::signal(SIGINT, old_int);
        std::signal(SIGTERM, old_term);
        g_tty_fd = -1;
    }
    if (!got) {
        return Error{Errc::closed, "no answer on the terminal"};
    }
    return line;
}

}  // namespace

Result<std::string> prompt_secret(std::string_view prompt) {
    return prompt_impl(prompt, false);
}

Result<std::string> prompt_line(std::string_view prompt) {
    return prompt_impl(prompt, true);
}

Result<std::string> obtain_password(const std::string& password_file, std::string_view prompt, bool confirm,
                                    std::string_view option, const char* env) {
    if (!password_file.empty()) {
        auto line = read_first_line(password_file);
        if (!line) {
            return Error{Errc::invalid_argument, "--" + std::string(option) + ": " + line.error().detail};
        }
        return line;
    }
    if (const char* value = std::getenv(env); value != nullptr && *value != '\0') {
        return std::string(value);
    }
    auto first = prompt_secret(prompt);
    if (!first) {
        return Error{Errc::invalid_argument, "no password: give --" + std::string(option) + " FILE or set " +
                                                 std::string(env) + ", or run on a terminal"};
    }
    if (confirm) {
        auto second = prompt_secret("Repeat password: ");
        if (!second || *second != *first) {
            wipe(*first);
            if (second) {
                wipe(*second);
            }
            return Error{Errc::invalid_argument, "the passwords do not match"};
        }
        wipe(*second);
    }
    return first;
}

std::string default_config_dir() {
    if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && *xdg == '/') {
        return std::string(xdg) + "/libsim";
    }
    if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
        return std::string(home) + "/.config/libsim";
    }
    return ".";
}

std::string parent_dir(const std::string& path) {
    const auto slash = path.rfind('/');
    if (slash == std::string::npos) {
        return ".";
    }
    return slash == 0 ? "/" : path.substr(0, slash);
}

bool is_loopback(const std::string& host) {
    in_addr v4{};
    if (::inet_pton(AF_INET, host.c_str(), &v4) == 1) {
        return (ntohl(v4.s_addr) >> 24U) == 127U;
    }
    in6_addr v6{};
    if (::inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
        return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127U);
    }
    return host == "localhost";
}

std::string printable(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto u = static_cast<unsigned char>(text[i]);
        if ((u < 0x20 && u != '\t') || u == 0x7f) {
            out.push_back('?');
        } else if (u == 0xc2 && i + 1 < text.size() && static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                   static_cast<unsigned char>(text[i + 1]) <= 0x9f) {
            out.push_back('?');  // a C1 control character (U+0080..U+009F), e.g. a single-byte CSI
            ++i;
        } else {
            out.push_back(text[i]);
        }
    }
    return out;
}

void wipe(std::string& s) noexcept {
    secure_zero(s.data(), s.size());
    s.clear();
}

}  // namespace sim::tools
