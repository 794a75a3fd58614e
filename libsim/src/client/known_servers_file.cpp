// Pinned server keys in a text file: one "server_id hex-public-key" line per server, mode 0600.
#include <sim/client.h>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace sim {

Result<std::unique_ptr<FileKnownServers>> FileKnownServers::open(std::string path) {
    auto known = std::unique_ptr<FileKnownServers>(new FileKnownServers(path));
    std::ifstream in(path);
    if (!in) {
        if (errno == ENOENT) {
            return known;  // no file yet: nothing pinned
        }
        return Error{Errc::io_error, "cannot read known-servers file: " + std::string(std::strerror(errno))};
    }
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        if (line.empty() || line[0] == '#') {
            continue;
        }
        std::istringstream fields(line);
        std::string id;
        std::string hex;
        std::string extra;
        Bytes key;
        if (!(fields >> id >> hex) || (fields >> extra) || !from_hex(hex, key) || key.size() != 32) {
            return Error{Errc::bad_field, "known-servers file line " + std::to_string(line_no) + " is malformed"};
        }
        (void)known->m_cache.remember(id, key);
    }
    return known;
}

std::optional<Bytes> FileKnownServers::lookup(std::string_view server_id) const { return m_cache.lookup(server_id); }

Status FileKnownServers::remember(std::string_view server_id, ByteView public_key) {
    if (server_id.empty() || server_id.find_first_of(" \t\r\n#") != std::string_view::npos) {
        return Error{Errc::invalid_argument, "server id must be one word"};
    }
    SIM_TRY_STATUS(m_cache.remember(server_id, public_key));
    // Several clients may pin at once: serialise writers with a lock file, and rewrite the whole (small) file
    // through a uniquely named temporary file and rename, so a crash never leaves half a file.
    const std::string lock_path = m_path + ".lock";
    const int lock_fd = ::open(lock_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX) != 0) {
        if (lock_fd >= 0) {
            ::close(lock_fd);
        }
        return Error{Errc::io_error, "cannot lock known-servers file: " + std::string(std::strerror(errno))};
    }
    struct Unlock {
        int fd;
        ~Unlock() { ::close(fd); }
    } unlock{lock_fd};
    std::ostringstream text;
    text << "# libsim known servers: server-id public-key (X25519, hex)\n";
    std::ifstream in(m_path);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string id;
        if (line.empty() || line[0] == '#' || !(fields >> id) || id == server_id) {
            continue;
        }
        text << line << "\n";
    }
    text << server_id << " " << to_hex(public_key) << "\n";
    std::string tmp = m_path + ".XXXXXX";
    const int fd = ::mkstemp(tmp.data());  // mode 0600
    if (fd < 0) {
        return Error{Errc::io_error, "cannot write known-servers file: " + std::string(std::strerror(errno))};
    }
    const std::string data = text.str();
    const bool written = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()) &&
                         ::fsync(fd) == 0;
    ::close(fd);
    if (!written || ::rename(tmp.c_str(), m_path.c_str()) != 0) {
        ::unlink(tmp.c_str());
        return Error{Errc::io_error, "cannot write known-servers file"};
    }
    return ok();
}

}  // namespace sim
