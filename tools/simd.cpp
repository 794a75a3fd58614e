// simd: the libsim server daemon, and its account administration commands. Option parsing and wiring only: the
// protocol lives in sim::ServerCore, the sockets in sim::net::TcpServer, the accounts in sim::auth / sim::store.
#include "common/log.h"
#include "common/metrics_http.h"
#include "common/options.h"
#include "common/service_notify.h"
#include "common/system.h"

#include <sim/auth.h>
#include <sim/channel.h>
#include <sim/crypto.h>
#include <sim/net.h>
#include <sim/server.h>
#include <sim/store.h>
#include <sim/store_backup.h>

#include <malloc.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <optional>
#include <span>
#include <thread>
#include <utility>

namespace {

using sim::tools::OptionSpec;
using namespace std::chrono_literals;

constexpr OptionSpec simd_options[] = {
    {"config", 'c', "FILE",
     "read options from FILE: 'key = value' lines, keys are the long option names; "
     "options on the command line win",
     "", false},
    {"listen", 0, "ADDR:PORT", "address to listen on (IPv6 as [ADDR]:PORT; port 0 picks a free port)",
     "127.0.0.1:7878"},
    {"port-file", 0, "FILE", "write the bound port to FILE once listening", ""},
    {"data-dir", 0, "DIR", "data directory, created with mode 0700", "./simd-data"},
    {"db", 0, "URL",
     "account database: sqlite:PATH, memory: (nothing persists), "
     "mariadb://USER:PASS@HOST:PORT/DB when built with MariaDB, or "
     "postgresql://USER:PASS@HOST:PORT/DB when built with libpq",
     "sqlite:DIR/simd.db"},
    {"broker", 0, "URLS",
     "run as one node of several: the NATS servers that connect the nodes, comma-separated "
     "(nats://HOST:PORT,...); needs --node-id and a MariaDB or PostgreSQL --db that every node shares, and the "
     "same --key and --master-key-file on every node",
     "off: one node"},
    {"node-id", 0, "NAME", "this node's name among the nodes, unique (with --broker; logs and announcements)", ""},
    {"key", 0, "FILE", "server static X25519 private key: 32 raw bytes, mode 0600, created on first start",
     "DIR/server.key"},
    {"master-key-file", 0, "FILE",
     "master key sealing the stored conversation keys: 32 raw bytes, mode 0600, "
     "created on first start",
     "DIR/master.key"},
    {"registration", 0, "MODE",
     "who creates accounts: open (logging in with a new name registers it, as in the "
     "seed), explicit (clients ask to register), closed (only 'simd user add')",
     "open"},
    {"hash", 0, "ALG", "password hash for new passwords: bcrypt or argon2id", "bcrypt"},
    {"bcrypt-cost", 0, "N", "bcrypt cost, 4 to 18", "12"},
    {"channel-suites", 0, "LIST",
     "record suites allowed on client-server channels, comma-separated, preferred "
     "first",
     "AES-256-GCM,ChaCha20-Poly1305,TDES-CBC-HMAC-SHA256"},
    {"conversation-suite", 0, "NAME",
     "suite of server-assigned conversation keys; tdes (TDES-CBC-HMAC-SHA256) is "
     "the seed's Triple-DES",
     "AES-256-GCM"},
    {"conversation-mode", 0, "MODE",
     "e2e (end-to-end: X3DH + Double Ratchet, the server relays prekeys and stores "
     "messages for offline users) or server-assigned (the seed's server-made keys)",
     "e2e"},
    {"messages-per-second", 0, "N", "per-connection rate limit of message, probe, ack and prekeys frames", "2000"},
    {"message-burst", 0, "N", "burst allowed above --messages-per-second", "4000"},
    {"max-stored-messages", 0, "N", "most offline messages stored for one recipient", "100000"},
    {"max-devices", 0, "N", "most devices (pending or active) an account may have, 1..64", "5"},
    {"max-mailbox-bytes", 0, "BYTES",
     "most envelope bytes stored for one recipient (K, M, G, T suffixes: powers of 1024)", "256M"},
    {"max-sender-bytes", 0, "BYTES", "most bytes one sender may have stored for recipients who have not read them",
     "128M"},
    {"max-store-bytes", 0, "BYTES", "most bytes stored for everyone together", "4G"},
    {"min-free-bytes", 0, "BYTES",
     "refuse offline messages that would leave less free space on the SQLite database's file system", "1G"},
    {"io-threads", 0, "N", "I/O threads, 0 = one per CPU", "0"},
    {"workers", 0, "N", "threads for password hashing", "2"},
    {"max-connections", 0, "N", "refuse connections beyond this many", "10000"},
    {"max-connections-per-address", 0, "N",
     "refuse connections beyond this many from one IPv4 address or IPv6 /64 (0 = no limit)", "32"},
    {"max-unauthenticated", 0, "N",
     "refuse new connections while this many have not logged in yet (0 = 3/4 of --max-connections)", "0"},
    {"handshake-timeout", 0, "S", "close a connection whose handshake takes longer than S seconds (0 = never)", "10"},
    {"login-timeout", 0, "S",
     "close a connection not logged in S seconds after its handshake; bytes do not extend it (0 = never)", "10"},
    {"idle-timeout", 0, "S", "close a connection silent for S seconds (0 = never)", "120"},
    {"max-queue-bytes", 0, "N", "close a connection whose unsent output exceeds N bytes", "4194304"},
    {"max-frame", 0, "N", "largest frame accepted from a client, in bytes (4096 to 16777216)", "65536"},
    {"metrics-address", 0, "[HOST:]PORT",
     "serve Prometheus metrics (GET /metrics) and the status page of 'simd status' (GET /status) over HTTP on this "
     "admin address; HOST defaults to 127.0.0.1 (a non-loopback HOST is logged as a warning); port 0 picks a free "
     "port",
     "off"},
    {"log-level", 0, "LEVEL", "debug, info, warning or error", "info"},
    {"log-format", 0, "FORMAT", "text (logfmt) or json (JSON lines); logs go to stderr", "text"},
    {"password-file", 0, "FILE",
     "for 'user add' and 'user passwd': read the password from the first line of FILE "
     "(else $SIM_PASSWORD, else a prompt without echo)",
     ""},
    {"help", 'h', "", "show this help and exit", "", false},
    {"version", 'V', "", "show the version and exit", "", false},
};

void print_help() {
    std::cout << "Usage: simd [OPTIONS]                 run the server\n"
                 "       simd [OPTIONS] user add NAME     create an account (any registration policy)\n"
                 "       simd [OPTIONS] user passwd NAME  set a new password\n"
                 "       simd [OPTIONS] user delete NAME  delete an account, its tokens and conversation keys\n"
                 "       simd [OPTIONS] user list         list the accounts\n"
                 "       simd [OPTIONS] user revoke NAME  revoke all session tokens of NAME (log out everywhere)\n"
                 "       simd [OPTIONS] fingerprint       print the server key's fingerprint\n"
                 "       simd [OPTIONS] backup FILE       copy the database to FILE, also while the server runs\n"
                 "       simd [OPTIONS] status            ask the running server who is online (--metrics-address)\n"
                 "\n"
                 "The libsim secure instant messaging server. On start it prints\n"
                 "'simd: listening on ADDR:PORT fingerprint XXXX ...'; clients compare that fingerprint.\n"
                 "SIGINT or SIGTERM stops it cleanly. The user commands work on the database given by\n"
                 "--data-dir / --db, also while the server runs; all but 'user add' refuse to create it.\n"
                 "\n"
                 "Options:\n"
              << sim::tools::format_options(simd_options)
              << "\n"
                 "Exit status: 0 success, 1 failure at run time, 2 bad usage.\n";
}

int usage_error(const std::string& message) { return sim::tools::usage_error("simd", message); }

int failure(const std::string& message) { return sim::tools::failure("simd", message); }

/// Every setting, checked before anything is opened.
struct Settings {
    std::string listen_host = "127.0.0.1";
    std::uint16_t listen_port = 7878;
    std::string port_file;
    std::string data_dir = "./simd-data";
    std::string db_url;
    bool default_db = true;
    std::string broker;   // NATS servers, comma-separated; empty: one node
    std::string node_id;  // with broker
    std::string key_file;
    std::string master_key_file;
    sim::auth::RegistrationPolicy registration = sim::auth::RegistrationPolicy::open;
    sim::auth::HashPolicy hash;
    sim::SuitePolicy channel_suites = sim::SuitePolicy::default_policy();
    sim::SuiteId conversation_suite = sim::SuiteId::aes256_gcm;
    sim::ConversationMode conversation_mode = sim::ConversationMode::end_to_end;
    std::size_t messages_per_second = 2000;
    std::size_t message_burst = 4000;
    std::size_t max_stored_messages = 100'000;
    std::size_t max_devices = 5;
    std::uint64_t max_mailbox_bytes = 256ULL << 20U;
    std::uint64_t max_sender_bytes = 128ULL << 20U;
    std::uint64_t max_store_bytes = 4ULL << 30U;
    std::uint64_t min_free_bytes = 1ULL << 30U;
    std::size_t io_threads = 0;
    std::size_t workers = 2;
    std::size_t max_connections = 10000;
    std::size_t max_connections_per_address = 32;
    std::size_t max_unauthenticated = 0;
    sim::Duration handshake_timeout = 10s;
    sim::Duration login_timeout = 10s;
    sim::Duration idle_timeout = 120s;
    std::size_t max_queue_bytes = 4U << 20U;
    std::size_t max_frame = sim::default_max_frame_size;
    sim::LogLevel log_level = sim::LogLevel::info;
    sim::tools::LogFormat log_format = sim::tools::LogFormat::text;
    std::string password_file;
    std::optional<std::pair<std::string, std::uint16_t>> metrics;  // the admin endpoint, off by default
};

sim::Result<Settings> settings_from(const sim::tools::ParsedArgs& a) {
    using sim::tools::parse_uint;
    Settings s;
    const auto bad = [](const std::string& m) { return sim::Error{sim::Errc::invalid_argument, m}; };
    if (a.has("listen")) {
        SIM_TRY(auto hp, sim::tools::parse_host_port("listen", a.get("listen"), true));
        s.listen_host = hp.first;
        s.listen_port = hp.second;
    }
    s.port_file = a.get("port-file");
    s.data_dir = a.get("data-dir", "./simd-data");
    if (s.data_dir.empty()) {
        return bad("--data-dir: empty directory name");
    }
    while (s.data_dir.size() > 1 && s.data_dir.back() == '/') {
        s.data_dir.pop_back();
    }
    s.default_db = !a.has("db");
    s.db_url = a.get("db", "sqlite:" + s.data_dir + "/simd.db");
    s.key_file = a.get("key", s.data_dir + "/server.key");
    s.master_key_file = a.get("master-key-file", s.data_dir + "/master.key");
    if (s.key_file.empty() || s.master_key_file.empty()) {
        return bad("--key / --master-key-file: empty file name");
    }
    if (s.db_url.starts_with("mariadb://") || s.db_url.starts_with("mysql://")) {
        if (!sim::store::have_mariadb()) {
            return bad("--db: this simd was built without MariaDB support");
        }
    } else if (s.db_url.starts_with("postgresql://") || s.db_url.starts_with("postgres://")) {
        if (!sim::store::have_postgres()) {
            return bad("--db: this simd was built without PostgreSQL support");
        }
    } else if (!s.db_url.starts_with("sqlite:") && s.db_url != "memory:") {
        return bad("--db: expected sqlite:PATH, memory:, mariadb://USER:PASS@HOST:PORT/DB or "
                   "postgresql://USER:PASS@HOST:PORT/DB");
    }
    if (a.has("broker") && a.get("broker") != "off") {
        for (const auto& url : sim::tools::split_list(a.get("broker"))) {
            if (!url.starts_with("nats://") || url.size() == 7) {
                return bad("--broker: expected nats://HOST:PORT, comma-separated, got '" + url + "'");
            }
            s.broker += (s.broker.empty() ? "" : ",") + url;
        }
        if (s.broker.empty()) {
            return bad("--broker: no NATS server given");
        }
        s.node_id = a.get("node-id");
        if (s.node_id.empty() || s.node_id.size() > 255) {
            return bad("--broker needs --node-id NAME (1 to 255 bytes), unique among the nodes");
        }
        if (s.db_url.starts_with("sqlite:") || s.db_url == "memory:") {
            return bad("--broker: several nodes need one database they all share, MariaDB or PostgreSQL "
                       "(--db mariadb://... or postgresql://...); " +
                       std::string(s.db_url == "memory:" ? "memory:" : "SQLite") + " is one node's own");
        }
    } else if (a.has("node-id")) {
        return bad("--node-id is for several nodes: give --broker too");
    }
    const std::string reg = a.get("registration", "open");
    if (reg == "open") {
        s.registration = sim::auth::RegistrationPolicy::open;
    } else if (reg == "explicit") {
        s.registration = sim::auth::RegistrationPolicy::explicit_request;
    } else if (reg == "closed") {
        s.registration = sim::auth::RegistrationPolicy::closed;
    } else {
        return bad("--registration: expected open, explicit or closed, got '" + reg + "'");
    }
    const std::string hash = a.get("hash", "bcrypt");
    if (hash == "bcrypt") {
        s.hash.algorithm = sim::auth::HashAlgorithm::bcrypt;
    } else if (hash == "argon2id") {
        s.hash.algorithm = sim::auth::HashAlgorithm::argon2id;
    } else {
        return bad("--hash: expected bcrypt or argon2id, got '" + hash + "'");
    }
    SIM_TRY(const auto cost, parse_uint("bcrypt-cost", a.get("bcrypt-cost", "12"), 4, 18));
    s.hash.bcrypt.cost = static_cast<unsigned>(cost);
    if (a.has("channel-suites")) {
        SIM_TRY(s.channel_suites, sim::tools::parse_suite_list("channel-suites", a.get("channel-suites")));
    }
    SIM_TRY(s.conversation_suite, sim::tools::parse_suite("conversation-suite", a.get("conversation-suite", "aes")));
    const std::string mode = a.get("conversation-mode", "e2e");
    if (mode == "e2e") {
        s.conversation_mode = sim::ConversationMode::end_to_end;
    } else if (mode == "server-assigned") {
        s.conversation_mode = sim::ConversationMode::server_assigned;
    } else {
        return bad("--conversation-mode: expected e2e or server-assigned, got '" + mode + "'");
    }
    if (!s.broker.empty() && s.conversation_mode == sim::ConversationMode::server_assigned) {
        return bad("--broker: server-assigned conversations are kept in one node's memory, so on several nodes a "
                   "node's death loses messages (not built yet); several nodes run --conversation-mode e2e");
    }
    SIM_TRY(s.messages_per_second,
            parse_uint("messages-per-second", a.get("messages-per-second", "2000"), 1, 10'000'000));
    SIM_TRY(s.message_burst, parse_uint("message-burst", a.get("message-burst", "4000"), 1, 10'000'000));
    SIM_TRY(s.max_stored_messages,
            parse_uint("max-stored-messages", a.get("max-stored-messages", "100000"), 1, 1'000'000'000));
    SIM_TRY(s.max_devices, parse_uint("max-devices", a.get("max-devices", "5"), 1, 64));
    using sim::tools::parse_bytes;
    constexpr std::uint64_t exabyte = 1ULL << 60U;
    SIM_TRY(s.max_mailbox_bytes, parse_bytes("max-mailbox-bytes", a.get("max-mailbox-bytes", "256M"), 65536, exabyte));
    SIM_TRY(s.max_sender_bytes, parse_bytes("max-sender-bytes", a.get("max-sender-bytes", "128M"), 65536, exabyte));
    SIM_TRY(s.max_store_bytes, parse_bytes("max-store-bytes", a.get("max-store-bytes", "4G"), 65536, exabyte));
    SIM_TRY(s.min_free_bytes, parse_bytes("min-free-bytes", a.get("min-free-bytes", "1G"), 0, exabyte));
    SIM_TRY(s.io_threads, parse_uint("io-threads", a.get("io-threads", "0"), 0, 1024));
    SIM_TRY(s.workers, parse_uint("workers", a.get("workers", "2"), 1, 1024));
    SIM_TRY(s.max_connections, parse_uint("max-connections", a.get("max-connections", "10000"), 1, 10'000'000));
    SIM_TRY(s.max_connections_per_address,
            parse_uint("max-connections-per-address", a.get("max-connections-per-address", "32"), 0, 10'000'000));
    SIM_TRY(s.max_unauthenticated, parse_uint("max-unauthenticated", a.get("max-unauthenticated", "0"), 0, 10'000'000));
    SIM_TRY(s.handshake_timeout,
            sim::tools::parse_seconds("handshake-timeout", a.get("handshake-timeout", "10"), 86400.0));
    SIM_TRY(s.login_timeout, sim::tools::parse_seconds("login-timeout", a.get("login-timeout", "10"), 86400.0));
    SIM_TRY(s.idle_timeout, sim::tools::parse_seconds("idle-timeout", a.get("idle-timeout", "120"), 30 * 86400.0));
    SIM_TRY(s.max_queue_bytes, parse_uint("max-queue-bytes", a.get("max-queue-bytes", "4194304"), 65536, 1ULL << 32U));
    SIM_TRY(s.max_frame, parse_uint("max-frame", a.get("max-frame", "65536"), 4096, 16U << 20U));
    const std::string level = a.get("log-level", "info");
    if (level == "debug") {
        s.log_level = sim::LogLevel::debug;
    } else if (level == "info") {
        s.log_level = sim::LogLevel::info;
    } else if (level == "warning") {
        s.log_level = sim::LogLevel::warning;
    } else if (level == "error") {
        s.log_level = sim::LogLevel::error;
    } else {
        return bad("--log-level: expected debug, info, warning or error, got '" + level + "'");
    }
    const std::string format = a.get("log-format", "text");
    if (format == "text") {
        s.log_format = sim::tools::LogFormat::text;
    } else if (format == "json") {
        s.log_format = sim::tools::LogFormat::json;
    } else {
        return bad("--log-format: expected text or json, got '" + format + "'");
    }
    s.password_file = a.get("password-file");
    if (const std::string metrics = a.get("metrics-address", "off"); metrics != "off") {
        SIM_TRY(s.metrics, sim::tools::parse_admin_address(metrics));
    }
    return s;
}

/// Hands jobs to the transport's worker pool. The core needs an Executor when it is created, and the pool lives
/// inside the TcpServer, which needs the core (for its handler factory) when it starts; no job can be submitted
/// before the first connection, so the target is set right after the server starts. Submissions without a target
/// are refused (the core answers them as "server busy").
class TransportWorkers final : public sim::Executor {
public:
    void attach(sim::Executor* target) noexcept { m_target.store(target); }
    [[nodiscard]] bool submit(std::function<void()> job) override {
        sim::Executor* target = m_target.load();
        return target != nullptr && target->submit(std::move(job));
    }

private:
    std::atomic<sim::Executor*> m_target{nullptr};
};

struct Accounts {
    std::unique_ptr<sim::Rng> rng = sim::make_system_rng();
    std::unique_ptr<sim::store::Backend> backend;
    std::unique_ptr<sim::auth::PasswordHasher> hasher;
    std::unique_ptr<sim::auth::Authenticator> authenticator;
};

sim::Result<Accounts> open_accounts(const Settings& s) {
    if (s.default_db) {
        SIM_TRY_STATUS(sim::tools::make_private_dirs(s.data_dir));
    }
    Accounts a;
    auto backend = sim::store::open_backend(s.db_url);
    if (!backend) {
        // The URL may hold a password: name only the backend kind.
        return sim::Error{backend.code(), "cannot open the account database: " + backend.error().message()};
    }
    a.backend = std::move(*backend);
    auto hasher = sim::auth::make_password_hasher(s.hash);
    if (!hasher) {
        return hasher.error();
    }
    a.hasher = std::move(*hasher);
    sim::auth::AuthConfig config;
    config.registration = s.registration;
    SIM_TRY(a.authenticator,
            sim::auth::Authenticator::create(*a.backend, *a.hasher, *a.rng, sim::steady_clock(), config));
    return a;
}

/// The SQLite database file of --db, or "" for the other backends.
std::string sqlite_path(const Settings& s) {
    return s.db_url.starts_with("sqlite:") ? s.db_url.substr(7) : "";
}

bool exists(const std::string& path) {
    return ::access(path.c_str(), F_OK) == 0;
}

int no_database(const std::string& path) {
    return failure("no simd database at " + path + " (use --data-dir or --db)");
}

int run_user_command(const Settings& s, const std::vector<std::string>& pos) {
    const std::string& verb = pos.size() > 1 ? pos[1] : std::string();
    const bool needs_name = verb == "add" || verb == "delete" || verb == "passwd" || verb == "revoke";
    if (verb.empty() || (!needs_name && verb != "list")) {
        return usage_error("user: expected add, delete, list, passwd or revoke");
    }
    if (needs_name != (pos.size() == 3) || (!needs_name && pos.size() != 2)) {
        return usage_error(needs_name ? "user " + verb + ": expected one user NAME" : "user list takes no NAME");
    }
    std::string name;
    if (needs_name) {
        auto canonical = sim::auth::canonical_username(pos[2]);
        if (!canonical) {
            return usage_error("user " + verb + ": " + canonical.error().message());
        }
        name = *canonical;
    }
    std::string password;
    if (verb == "add" || verb == "passwd") {
        auto pw = sim::tools::obtain_password(s.password_file, "Password for " + name + ": ", true);
        if (!pw) {
            return usage_error(pw.error().detail);
        }
        password = std::move(*pw);
        if (auto st = sim::auth::check_password(password); !st) {
            sim::tools::wipe(password);
            return usage_error(st.error().message());
        }
    }
    // A user command run from the wrong directory must not answer from an empty new database. Only 'user add'
    // creates one: it is how accounts are made before the first start under closed registration.
    const std::string db_path = sqlite_path(s);
    const bool creating = !db_path.empty() && !exists(db_path);
    if (creating && verb != "add") {
        return no_database(db_path);
    }
    auto accounts = open_accounts(s);
    if (!accounts) {
        sim::tools::wipe(password);
        return failure(accounts.error().message());
    }
    if (creating) {
        std::cout << "simd: created the database " << db_path << "\n";
    }
    auto& auth = *accounts->authenticator;
    sim::Status st;
    if (verb == "add") {
        st = auth.admin_create_user(name, password);
    } else if (verb == "passwd") {
        st = auth.admin_set_password(name, password);
    } else if (verb == "delete") {
        st = auth.delete_user(name);
    } else if (verb == "revoke") {
        sim::auth::SessionTokens tokens(*accounts->backend, *accounts->rng);
        auto n = tokens.revoke_all(name);
        if (!n) {
            return failure(n.error().message());
        }
        std::cout << "simd: revoked " << *n << " session token(s) of " << name << "\n";
        return 0;
    } else {
        auto users = auth.list_users();
        if (!users) {
            return failure(users.error().message());
        }
        for (const auto& u : *users) {
            std::cout << u << "\n";
        }
        return 0;
    }
    sim::tools::wipe(password);
    if (!st) {
        if (st.code() == sim::Errc::user_exists) {
            return failure("user '" + name + "' already exists");
        }
        if (st.code() == sim::Errc::user_not_found) {
            return failure("no user '" + name + "'");
        }
        return failure(st.error().message());
    }
    const char* done = verb == "add" ? "added" : verb == "passwd" ? "changed the password of" : "deleted";
    std::cout << "simd: " << done << " user " << name << "\n";
    if (verb == "passwd") {
        // The old password must not live on in the sessions it opened.
        sim::auth::SessionTokens tokens(*accounts->backend, *accounts->rng);
        auto n = tokens.revoke_all(name);
        if (!n) {
            return failure("password changed, but the session tokens were not revoked: " + n.error().message());
        }
        std::cout << "simd: revoked " << *n << " session token(s) of " << name << "\n";
    }
    return 0;
}

/// `simd fingerprint`: what the server's start line shows, without starting it and without creating a key.
int run_fingerprint(const Settings& s, const std::vector<std::string>& pos) {
    if (pos.size() != 1) {
        return usage_error("fingerprint takes no argument");
    }
    if (!exists(s.key_file)) {
        return failure("no server key at " + s.key_file + " yet: simd creates it on its first start");
    }
    const auto rng = sim::make_system_rng();
    auto key = sim::tools::load_or_create_secret(s.key_file, sim::crypto::x25519_key_size, *rng, false, "server key");
    if (!key) {
        return failure(key.error().message());
    }
    auto pair = sim::crypto::x25519_from_private(*key);
    if (!pair) {
        return failure(pair.error().message());
    }
    std::cout << sim::fingerprint(pair->public_key) << "\n";
    return 0;
}

/// `simd backup FILE`: an online copy of the SQLite database (MariaDB and PostgreSQL have their own tools).
int run_backup(const Settings& s, const std::vector<std::string>& pos) {
    if (pos.size() != 2) {
        return usage_error("backup: expected one FILE");
    }
    const std::string source = sqlite_path(s);
    if (source.empty()) {
        return failure(s.db_url == "memory:" ? "--db memory: keeps nothing to back up"
                                             : "simd backup copies SQLite databases only; back up MariaDB with "
                                               "mariadb-dump --single-transaction, PostgreSQL with pg_dump "
                                               "(docs/operations.md)");
    }
    if (!exists(source)) {
        return no_database(source);
    }
    std::error_code ec;
    if (std::filesystem::equivalent(source, pos[1], ec)) {
        return failure("backup: " + pos[1] + " is the database itself");
    }
    if (auto st = sim::store::backup_sqlite(source, pos[1]); !st) {
        return failure(st.error().message());
    }
    std::cout << "simd: backed up " << source << " to " << pos[1] << "\n";
    return 0;
}

std::string endpoint(const std::string& host, std::uint16_t port) {
    const bool v6 = host.find(':') != std::string::npos;
    return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

/// `simd status`: the running server's status page, through its admin endpoint (the server's --metrics-address,
/// read from the same options and configuration file).
int run_status(const Settings& s, const std::vector<std::string>& pos) {
    if (pos.size() != 1) {
        return usage_error("status takes no argument");
    }
    if (!s.metrics) {
        return failure(
            "no admin address: start simd with --metrics-address [HOST:]PORT (or 'metrics-address = PORT' in its "
            "configuration file) and give 'simd status' the same option or -c FILE");
    }
    auto [host, port] = *s.metrics;
    if (port == 0) {
        return failure("--metrics-address: 'simd status' needs the port the server listens on, not 0");
    }
    // A server listening on every address is asked on the loopback one.
    if (host == "0.0.0.0") {
        host = "127.0.0.1";
    } else if (host == "::") {
        host = "::1";
    }
    const std::string address = endpoint(host, port);
    auto page = sim::tools::http_get(host, port, "/status", 5s);
    if (!page) {
        return failure("no simd answers at http://" + address + "/status (" + page.error().message() +
                       "): is it running with --metrics-address " + address + "?");
    }
    if (page->status != 200) {
        return failure("http://" + address + "/status answered HTTP " + std::to_string(page->status) +
                       ": is that a simd admin endpoint?");
    }
    std::cout << page->body;
    return 0;
}

/// The admin endpoint's pages: Prometheus metrics and the status page.
std::optional<sim::tools::HttpResponse> admin_page(const sim::ServerCore& core, std::string_view path) {
    if (path == "/metrics") {
        return sim::tools::HttpResponse{
            200, "text/plain; version=0.0.4; charset=utf-8",
            sim::tools::format_prometheus(sim::tools::server_metrics(core.stats(), SIM_VERSION))};
    }
    if (path == "/status") {
        return sim::tools::HttpResponse{200, "text/plain; charset=utf-8",
                                        sim::tools::format_status(core.stats(), core.online_users())};
    }
    return std::nullopt;
}

/// Type=notify under systemd (packaging/systemd/simd.service); a failure is logged, not fatal: the service
/// manager then reports the start as timed out.
void notify_service_manager(sim::tools::Logger& logger, std::string_view state) {
    if (auto st = sim::tools::notify_service_manager(state); !st) {
        logger.log(sim::LogLevel::warning, "cannot notify the service manager", {{"error", st.error().message()}});
    }
}

int run_server(const Settings& s) {
    // Every thread inherits this mask, so the signals reach only the sigwait below.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    sim::tools::Logger logger(s.log_level, s.log_format);
    if (auto st = sim::tools::make_private_dirs(s.data_dir); !st) {
        return failure(st.error().message());
    }
    // Only the server takes this lock: the user commands share the database with a running server.
    const sim::tools::FileLock data_lock(s.data_dir + "/simd", false);
    if (!data_lock.held()) {
        return failure("another simd is running on the data directory " + s.data_dir + " (" + s.data_dir +
                       "/simd.lock is locked)");
    }
    if (sim::tools::shared_with_others(s.data_dir).value_or(false)) {
        logger.log(sim::LogLevel::warning, "data directory is accessible by group or others", {{"dir", s.data_dir}});
    }
    auto accounts = open_accounts(s);
    if (!accounts) {
        return failure(accounts.error().message());
    }
    auto& rng = *accounts->rng;
    auto static_key = sim::tools::load_or_create_secret(s.key_file, 32, rng, true, "server key");
    if (!static_key) {
        return failure(static_key.error().message());
    }
    auto master_key =
        sim::tools::load_or_create_secret(s.master_key_file, sim::auth::master_key_size, rng, true, "master key");
    if (!master_key) {
        return failure(master_key.error().message());
    }
    // Conversation keys survive a restart: messages stored for an offline user need theirs (protocol.md 6.7). The
    // conversations themselves do not: clients open them again and get new keys.
    sim::auth::SessionTokens tokens(*accounts->backend, rng);
    auto vault = sim::auth::ConversationKeyVault::create(*accounts->backend, *master_key, rng);
    if (!vault) {
        return failure(vault.error().message());
    }
    sim::secure_zero(master_key->data(), master_key->size());

    sim::ServerConfig config;
    config.static_private_key = std::move(*static_key);
    config.channel_policy = s.channel_suites;
    config.conversation_policy =
        std::move(sim::SuitePolicy::from_list(std::span<const sim::SuiteId>(&s.conversation_suite, 1)).value());
    config.max_frame_size = s.max_frame;
    config.conversation_mode = s.conversation_mode;
    config.messages_per_second = static_cast<double>(s.messages_per_second);
    config.message_burst = static_cast<std::uint32_t>(s.message_burst);
    config.max_stored_per_recipient = s.max_stored_messages;
    config.max_devices = s.max_devices;
    config.max_mailbox_bytes = s.max_mailbox_bytes;
    config.max_sender_bytes = s.max_sender_bytes;
    config.max_store_bytes = s.max_store_bytes;
    config.min_free_bytes = s.min_free_bytes;
    if (const std::string db_path = sqlite_path(s); !db_path.empty()) {
        // The database file's directory: the file system the offline store fills.
        const std::string db_dir = sim::tools::parent_dir(db_path);
        config.store_free_space = [db_dir] { return sim::tools::free_bytes(db_dir); };
    }
    config.log = [&logger](sim::LogLevel level, std::string_view message) { logger.log(level, message); };
    config.broker = s.broker;
    config.node_id = s.node_id;
    TransportWorkers workers;
    // Durable acknowledgements must not wait behind password hashing (whose workers run at a low priority).
    sim::net::WorkerPool commits(1, 1U << 16U);
    config.commit_executor = &commits;
    // Prekeys and the offline queue live in the account database (the same backend).
    auto core = sim::ServerCore::create(std::move(config), *accounts->authenticator, tokens, vault->get(),
                                        accounts->backend.get(), accounts->backend.get(), workers, rng,
                                        sim::steady_clock(), accounts->backend.get(), accounts->backend.get());
    if (!core) {
        return failure(core.error().message());
    }

    // Sessions an administrator ends from another process (simd user revoke / passwd / delete) are read from the
    // database's session-end log; what was logged before this start concerns no connection of this run.
    sim::auth::SessionEndFollower session_ends(*accounts->backend);
    if (auto st = session_ends.start(); !st) {
        return failure(st.error().message());
    }

    sim::net::ServerOptions net_options;
    net_options.address = s.listen_host;
    net_options.port = s.listen_port;
    net_options.io_threads = s.io_threads;
    net_options.worker_threads = s.workers;
    net_options.max_connections = s.max_connections;
    net_options.max_connections_per_address = s.max_connections_per_address;
    net_options.max_unauthenticated = s.max_unauthenticated;
    net_options.log = [&logger](std::string_view message) { logger.log(sim::LogLevel::warning, message); };
    net_options.limits.handshake_timeout = s.handshake_timeout;
    net_options.limits.login_timeout = s.login_timeout;
    net_options.limits.idle_timeout = s.idle_timeout;
    net_options.limits.max_queued_bytes = s.max_queue_bytes;
    auto& server_core = **core;
    auto tcp = sim::net::TcpServer::start(
        net_options, [&server_core](std::shared_ptr<sim::ConnectionOutput> out, const std::string& peer) {
            return server_core.accept(std::move(out), peer);
        });
    if (!tcp) {
        return failure(tcp.error().message());
    }
    workers.attach(&(*tcp)->workers());
    const std::string address = endpoint(s.listen_host, (*tcp)->port());
    // Started before the port file is written, so that whoever waits for that file can scrape at once.
    std::unique_ptr<sim::tools::AdminServer> admin;
    if (s.metrics) {
        auto started = sim::tools::AdminServer::start(
            {.host = s.metrics->first, .port = s.metrics->second},
            [&server_core](std::string_view path) { return admin_page(server_core, path); });
        if (!started) {
            (*tcp)->stop();
            return failure("--metrics-address: " + started.error().message());
        }
        admin = std::move(*started);
        const std::string admin_address = endpoint(s.metrics->first, admin->port());
        logger.log(sim::LogLevel::info, "admin endpoint listening", {{"addr", admin_address}});
        if (!sim::tools::is_loopback(s.metrics->first)) {
            logger.log(sim::LogLevel::warning,
                       "admin endpoint on a non-loopback address: whoever reaches it sees the counters and who is "
                       "online (docs/operations.md)",
                       {{"addr", admin_address}});
        }
    }
    if (!s.port_file.empty()) {
        if (auto st = sim::tools::write_file_atomic(s.port_file, std::to_string((*tcp)->port()) + "\n", 0600); !st) {
            (*tcp)->stop();
            return failure(st.error().message());
        }
    }
    const std::string fingerprint = server_core.fingerprint();
    std::cout << "simd: listening on " << address << " fingerprint " << fingerprint << std::endl;
    logger.log(sim::LogLevel::info, "listening",
               {{"addr", address},
                {"fingerprint", fingerprint},
                {"version", SIM_VERSION},
                {"db", std::string(accounts->backend->kind())},
                {"node", s.broker.empty() ? std::string("single") : s.node_id},
                {"registration", s.registration == sim::auth::RegistrationPolicy::open     ? "open"
                                 : s.registration == sim::auth::RegistrationPolicy::closed ? "closed"
                                                                                           : "explicit"},
                {"conversation_suite", std::string(sim::suite_name(s.conversation_suite))},
                {"conversation_mode", std::string(sim::conversation_mode_name(s.conversation_mode))}});
    if (s.registration == sim::auth::RegistrationPolicy::open && !sim::tools::is_loopback(s.listen_host)) {
        logger.log(sim::LogLevel::warning,
                   "open registration on a non-loopback address: anyone who reaches it can create accounts "
                   "(--registration explicit or closed for a public server, docs/operations.md)",
                   {{"addr", address}});
    }
    if (s.conversation_suite == sim::SuiteId::tdes_cbc_hmac_sha256) {
        logger.log(sim::LogLevel::warning,
                   "conversations use Triple-DES (the seed's system): 64-bit blocks, "
                   "rotated often to stay under the Sweet32 bound");
    }
    notify_service_manager(logger, "READY=1\nSTATUS=listening on " + address);

    // Wait for a stop signal. Meanwhile, every second, end the sessions an administrator ended and release the
    // conversation keys nothing needs any more; every ten minutes, purge expired session tokens.
    int sig = 0;
    auto next_purge = std::chrono::steady_clock::now() + 10min;
    for (;;) {
        const timespec wait{1, 0};
        sig = sigtimedwait(&stop_signals, nullptr, &wait);
        if (sig > 0) {
            break;
        }
        if (auto ended = session_ends.poll(); !ended) {
            logger.log(sim::LogLevel::warning, "reading the session-end log failed",
                       {{"error", ended.error().message()}});
        } else {
            for (const auto& end : *ended) {
                server_core.end_sessions(end.username, end.device);
            }
        }
        server_core.release_keys();  // conversation keys no stored message needs any more
        if (std::chrono::steady_clock::now() >= next_purge) {
            next_purge = std::chrono::steady_clock::now() + 10min;
            const auto now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
            if (auto purged = accounts->backend->purge_expired_tokens(now); !purged) {
                logger.log(sim::LogLevel::warning, "purging expired tokens failed",
                           {{"error", purged.error().message()}});
            }
        }
    }
    logger.log(sim::LogLevel::info, "shutting down", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
    notify_service_manager(logger, "STOPPING=1");
    if (admin) {
        admin->stop();
    }
    server_core.shutdown();
    // Let the close frames go out before the transport drops what is left.
    for (int i = 0; i < 100 && (*tcp)->connection_count() > 0; ++i) {
        std::this_thread::sleep_for(10ms);
    }
    (*tcp)->stop();
    commits.stop();
    workers.attach(nullptr);
    logger.log(sim::LogLevel::info, "stopped");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ::umask(077);  // the database, its journal and the port file are private, like the key files
    // glibc returns the top of each heap to the system as soon as 128 KiB are free there, and grows it again on the
    // next burst: per message, page faults and TLB flushes on every core. Keeping up to 64 MiB free and growing by
    // 16 MiB cut server CPU per routed message by about 30 % at the same RSS (docs/performance.md 8.5).
    ::mallopt(M_TRIM_THRESHOLD, 64 * 1024 * 1024);
    ::mallopt(M_TOP_PAD, 16 * 1024 * 1024);
    const std::vector<std::string> args(argv + 1, argv + argc);
    auto program = sim::tools::parse_program_args("simd", simd_options, args, print_help);
    if (!program.args) {
        return program.exit_code;
    }
    auto& parsed = program.args;
    auto settings = settings_from(*parsed);
    if (!settings) {
        return usage_error(settings.error().detail);
    }
    const auto& pos = parsed->positionals;
    if (pos.empty()) {
        return run_server(*settings);
    }
    if (pos[0] == "user") {
        return run_user_command(*settings, pos);
    }
    if (pos[0] == "fingerprint") {
        return run_fingerprint(*settings, pos);
    }
    if (pos[0] == "backup") {
        return run_backup(*settings, pos);
    }
    if (pos[0] == "status") {
        return run_status(*settings, pos);
    }
    return usage_error("unknown command '" + pos[0] + "'");
}
