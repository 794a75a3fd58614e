// sim: the libsim command-line client. Interactive chat, and one-shot send / recv / register for scripts.
// Option parsing, prompts and printing only: the protocol lives in sim::Client / sim::ClientCore.
#include "chat_curses.h"
#include "chat_front_end.h"
#include "chat_screen.h"
#include "common/backoff.h"
#include "common/options.h"
#include "common/session_state.h"
#include "common/system.h"

#include <sim/auth.h>
#include <sim/channel.h>
#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/frame.h>

#include <poll.h>
#include <unistd.h>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>

namespace {

using sim::tools::OptionSpec;
using namespace std::chrono_literals;

constexpr OptionSpec sim_options[] = {
    {"config", 'c', "FILE",
     "read options from FILE: 'key = value' lines, keys are the long option names; "
     "options on the command line win",
     "", false},
    {"server", 's', "HOST:PORT", "the simd to connect to (IPv6 as [ADDR]:PORT)", "127.0.0.1:7878"},
    {"trust", 0, "MODE",
     "a server key seen for the first time: tofu (pin it), ask (show the fingerprint and "
     "ask), pinned (refuse)",
     "ask on a terminal, else tofu"},
    {"fingerprint", 0, "FP",
     "expected server fingerprint (as simd prints it; spaces and ':' ignored); any other "
     "key is refused",
     ""},
    {"known-servers", 0, "FILE", "pinned server keys", "$XDG_CONFIG_HOME/libsim/known_servers"},
    {"state-file", 0, "FILE", "session tokens, mode 0600; used to log in without the password while valid",
     "sessions, next to the known-servers file"},
    {"keys-dir", 0, "DIR",
     "end-to-end state (identity key, prekeys, ratchets, pinned peers, outbox), one file per user and "
     "server, encrypted under the password",
     "keys/, next to the known-servers file"},
    {"end-to-end-only", 0, "", "refuse conversations whose key the server assigns (and could read)", ""},
    {"password-file", 0, "FILE",
     "read the password from the first line of FILE (else $SIM_PASSWORD, else a "
     "prompt without echo)",
     ""},
    {"timeout", 't', "S",
     "seconds to wait for the server, for a conversation key (send) and for messages "
     "(recv); 0 = no limit",
     "30"},
    {"count", 'n', "N", "recv: stop after N messages (exit 1 if fewer arrive in time)", "until --timeout"},
    {"rotation-seconds", 0, "N", "rotate conversation keys every N seconds (0 = only by volume)", "30"},
    {"channel-suites", 0, "LIST",
     "record suites offered for the client-server channel, comma-separated, preferred "
     "first",
     "AES-256-GCM,ChaCha20-Poly1305,TDES-CBC-HMAC-SHA256"},
    {"no-session", 0, "", "neither use nor store a session token (always log in with the password)", ""},
    {"plain", 0, "", "chat: line mode (lines from stdin, lines to stdout) even on a terminal", ""},
    {"verbose", 'v', "", "chat: also show ratchet steps and key rotations", ""},
    {"hide-presence", 0, "", "chat: appear offline to your contacts (/presence show|hide changes it)", ""},
    {"no-reconnect", 0, "", "chat: exit with status 1 when the connection is lost instead of reconnecting", ""},
    {"reconnect-delay", 0, "S",
     "chat: the shortest wait before reconnecting; each wait is random, between it and three times the last one",
     "0.5"},
    {"reconnect-max", 0, "S", "chat: the longest wait between reconnection attempts", "30"},
    {"old-password-file", 0, "FILE",
     "rekey: read the password the end-to-end state is sealed under from the first line of FILE (else "
     "$SIM_OLD_PASSWORD, else a prompt without echo)",
     ""},
    {"new-password-file", 0, "FILE",
     "passwd: read the new password from the first line of FILE (else $SIM_NEW_PASSWORD, else a prompt without "
     "echo, asked twice)",
     ""},
    {"help", 'h', "", "show this help and exit", "", false},
    {"version", 'V', "", "show the version and exit", "", false},
};

void print_help() {
    std::cout << "Usage: sim [OPTIONS] chat USER [PEER]          interactive chat\n"
                 "       sim [OPTIONS] send USER PEER MESSAGE...  send one message and exit\n"
                 "       sim [OPTIONS] recv USER                  print 'peer: text' for incoming messages\n"
                 "       sim [OPTIONS] register USER              create an account (servers with\n"
                 "                                                --registration explicit)\n"
                 "       sim [OPTIONS] safety USER PEER           show the safety number with PEER\n"
                 "       sim [OPTIONS] verify USER PEER           mark PEER's identity key as verified\n"
                 "       sim [OPTIONS] accept USER PEER           accept PEER's changed identity key\n"
                 "       sim [OPTIONS] passwd USER                change the password on the server and seal the\n"
                 "                                                end-to-end state under it, in one step\n"
                 "       sim [OPTIONS] rekey USER                 seal the end-to-end state under the password\n"
                 "                                                the server now has (after a password change)\n"
                 "       sim [OPTIONS] link USER                  make this installation a new device of USER:\n"
                 "                                                shows a code to type on an existing device\n"
                 "       sim [OPTIONS] devices USER [list]        the account's devices\n"
                 "       sim [OPTIONS] devices USER approve       approve a new device (asks for its code)\n"
                 "       sim [OPTIONS] devices USER remove ID     remove a device (it can no longer log in)\n"
                 "       sim [OPTIONS] devices USER rename ID NAME  name a device\n"
                 "\n"
                 "The libsim secure instant messaging client. On first contact it shows the server's key\n"
                 "fingerprint; compare it with the one simd printed. Under open registration (the seed's\n"
                 "rule) logging in with a new name creates the account.\n"
                 "\n"
                 "Conversations are end to end by default (X3DH + Double Ratchet): compare the safety number\n"
                 "with your peer (both see the same 60 digits), then 'verify'. A changed identity key is\n"
                 "announced and nothing is sent to it until you 'accept' it. A conversation whose key the\n"
                 "server assigns (simd --conversation-mode server-assigned) is labelled as readable by it.\n"
                 "\n"
                 "Chat commands: /open PEER  start a conversation (and make PEER current)\n"
                 "               /to PEER    send the next lines to PEER\n"
                 "               /leave [PEER]  end the conversation with PEER (default: current)\n"
                 "               /who        list conversations\n"
                 "               /presence show|hide  appear online to your contacts, or not\n"
                 "               /history [N]  the last N (50) messages from the current peer in the inbox\n"
                 "               /search TEXT  the inbox's messages containing TEXT (any case), all peers\n"
                 "               /safety [PEER]  show the safety number; /verify [PEER] marks it verified\n"
                 "               /accept [PEER]  accept PEER's changed identity key\n"
                 "               /approve CODE  link the new device that asked (it shows CODE)\n"
                 "               /quit       log out and exit (also at end of input)\n"
                 "               //text      send '/text'\n"
                 "Other lines are sent to the current peer. Incoming messages show as '[peer] text',\n"
                 "status lines start with '*', problems with '!'; ratchet steps and key rotations only\n"
                 "with --verbose. /history and /search read the local inbox (messages received) only.\n"
                 "\n"
                 "On a terminal the chat is full screen (conversation list, messages, status line, input\n"
                 "line; keys in docs/tools.md: Tab completes commands and names); --plain keeps the line mode.\n"
                 "\n"
                 "A chat whose connection is lost reconnects by itself (session token, else the password\n"
                 "given at the start), waiting longer after each failed attempt, and opens its conversations\n"
                 "again; lines typed meanwhile wait in the outbox. A refused login or server key ends it.\n"
                 "\n"
                 "Options:\n"
              << sim::tools::format_options(sim_options)
              << "\n"
                 "Exit status: 0 success, 1 failure (connection, login, timeout, refused message), 2 bad usage.\n";
}

int usage_error(const std::string& message) { return sim::tools::usage_error("sim", message); }

int failure(const std::string& message) { return sim::tools::failure("sim", message); }

/// The text for the user: the detail Session gives its errors, else the generic description.
std::string user_message(const sim::Error& e) { return e.detail.empty() ? e.message() : e.detail; }

/// A failed Session::open: a missing password source is a usage error (2), the rest failures (1).
int open_failed(const sim::Error& e) {
    if (e.code == sim::Errc::invalid_argument) {
        return usage_error(e.detail);
    }
    return failure(user_message(e));
}

std::int64_t now_unix_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

struct Settings {
    std::string host = "127.0.0.1";
    std::uint16_t port = 7878;
    std::string server_id;  // "host:port" as pinned
    sim::TrustMode trust = sim::TrustMode::tofu;
    std::string fingerprint;
    std::string known_servers;
    std::string state_file;
    std::string keys_dir;
    bool end_to_end_only = false;
    std::string password_file;
    std::string old_password_file;
    std::string new_password_file;
    sim::Duration timeout = 30s;  // zero: no limit
    std::optional<std::uint64_t> count;
    sim::Duration rotation = 30s;
    sim::SuitePolicy channel_suites = sim::SuitePolicy::default_policy();
    bool use_session = true;
    bool reconnect = true;
    bool plain = false;    // chat: line mode even on a terminal
    bool verbose = false;  // chat: show ratchet steps and key rotations too
    bool timeout_given = false;
    bool hide_presence = false;  // chat: appear offline to contacts (docs/protocol.md 6.10)
    sim::tools::BackoffPolicy reconnect_backoff{};

    /// A deadline `timeout` from now (far away when there is no limit).
    [[nodiscard]] sim::Duration wait_limit() const { return timeout == sim::Duration::zero() ? 24h * 365 : timeout; }
};

sim::Result<Settings> settings_from(const sim::tools::ParsedArgs& a) {
    const auto bad = [](const std::string& m) { return sim::Error{sim::Errc::invalid_argument, m}; };
    Settings s;
    if (a.has("server")) {
        SIM_TRY(auto hp, sim::tools::parse_host_port("server", a.get("server"), false));
        s.host = hp.first;
        s.port = hp.second;
    }
    s.server_id = (s.host.find(':') != std::string::npos ? "[" + s.host + "]" : s.host) + ":" + std::to_string(s.port);
    const std::string trust = a.get("trust", sim::tools::stdin_is_tty() ? "ask" : "tofu");
    if (trust == "tofu") {
        s.trust = sim::TrustMode::tofu;
    } else if (trust == "ask") {
        s.trust = sim::TrustMode::ask;
    } else if (trust == "pinned") {
        s.trust = sim::TrustMode::pinned_only;
    } else {
        return bad("--trust: expected tofu, ask or pinned, got '" + trust + "'");
    }
    s.fingerprint = a.get("fingerprint");
    if (!s.fingerprint.empty()) {
        std::string digits;
        for (const char c : s.fingerprint) {
            if (c != ' ' && c != ':') {
                digits.push_back(c);
            }
        }
        sim::Bytes raw;
        if (digits.size() != 64 || !sim::from_hex(digits, raw)) {
            return bad("--fingerprint: expected 64 hex digits (16 groups of 4, as simd prints them)");
        }
    }
    s.known_servers = a.get("known-servers", sim::tools::default_config_dir() + "/known_servers");
    s.state_file = a.get("state-file", sim::tools::parent_dir(s.known_servers) + "/sessions");
    if (s.known_servers.empty() || s.state_file.empty()) {
        return bad("--known-servers / --state-file: empty file name");
    }
    s.keys_dir = a.get("keys-dir", sim::tools::parent_dir(s.known_servers) + "/keys");
    if (s.keys_dir.empty()) {
        return bad("--keys-dir: empty directory name");
    }
    s.end_to_end_only = a.has("end-to-end-only");
    s.password_file = a.get("password-file");
    s.old_password_file = a.get("old-password-file");
    s.new_password_file = a.get("new-password-file");
    SIM_TRY(s.timeout, sim::tools::parse_seconds("timeout", a.get("timeout", "30"), 365.0 * 86400.0));
    s.timeout_given = a.has("timeout");
    if (a.has("count")) {
        SIM_TRY(s.count, sim::tools::parse_uint("count", a.get("count"), 1, 1'000'000'000));
    }
    SIM_TRY(const auto rotation, sim::tools::parse_uint("rotation-seconds", a.get("rotation-seconds", "30"), 0, 86400));
    s.rotation = std::chrono::seconds(rotation);
    if (a.has("channel-suites")) {
        SIM_TRY(s.channel_suites, sim::tools::parse_suite_list("channel-suites", a.get("channel-suites")));
    }
    s.use_session = !a.has("no-session");
    s.reconnect = !a.has("no-reconnect");
    s.plain = a.has("plain");
    s.verbose = a.has("verbose");
    s.hide_presence = a.has("hide-presence");
    SIM_TRY(s.reconnect_backoff.initial,
            sim::tools::parse_seconds("reconnect-delay", a.get("reconnect-delay", "0.5"), 3600.0));
    SIM_TRY(s.reconnect_backoff.cap, sim::tools::parse_seconds("reconnect-max", a.get("reconnect-max", "30"), 3600.0));
    if (s.reconnect_backoff.initial < 1ms || s.reconnect_backoff.cap < s.reconnect_backoff.initial) {
        return bad("--reconnect-delay / --reconnect-max: expected 0.001 <= delay <= max");
    }
    return s;
}

/// Output shared by the commands; stdout for conversation lines, stderr for status in one-shot modes.
void print_line(std::FILE* out, const std::string& line) {
    std::fputs(line.c_str(), out);
    std::fputc('\n', out);
    std::fflush(out);
}

/// Status text for each event, or empty for events that are not shown. Messages are formatted by the caller.
std::string describe_event(const sim::AuthenticatedEvent& e) {
    return "* authenticated as " + sim::tools::printable(e.user);
}
std::string describe_event(const sim::WaitingEvent& e) {
    const std::string peer = sim::tools::printable(e.peer);
    if (e.reason) {
        return "* waiting for " + peer + ": " + sim::tools::printable(e.reason->detail) + " (messages to " + peer +
               " wait and go out by themselves)";
    }
    return "* waiting for " + peer + " to come online";
}
std::string describe_event(const sim::PeerOnlineEvent& e) {
    return "* " + sim::tools::printable(e.peer) + " is online";
}
std::string describe_event(const sim::KeyAssignedEvent& e) {
    const std::string peer = sim::tools::printable(e.peer);
    if (e.mode == sim::ConversationMode::end_to_end) {
        return "* end-to-end conversation with " + peer + " (" + std::string(sim::suite_name(e.suite)) +
               "); safety number " + e.safety_number;
    }
    return "* conversation with " + peer + " keyed (" + std::string(sim::suite_name(e.suite)) +
           "). server-assigned key: the server can read this conversation";
}
std::string describe_event(const sim::ReceiptEvent& e) {
    return "* message to " + sim::tools::printable(e.peer) +
           (e.status == sim::ReceiptStatus::delivered ? " delivered" : " stored");
}
std::string describe_event(const sim::IdentityChangedEvent& e) {
    const std::string peer = sim::tools::printable(e.peer);
    return "! the identity key of " + peer + " CHANGED. New safety number: " + e.safety_number +
           ". Nothing is sent to or shown from " + peer + " until you compare it and accept it (/accept " + peer +
           ", or sim accept)";
}
std::string describe_event(const sim::GapEvent& e) {
    return "! " + std::to_string(e.count) + (e.count == 1 ? " message" : " messages") + " missing from " +
           sim::tools::printable(e.peer);
}
std::string describe_event(const sim::KeyRotatedEvent& e) {
    const std::string peer = sim::tools::printable(e.peer);
    if (e.mode == sim::ConversationMode::end_to_end) {
        return "* ratchet step with " + peer + " (" + std::to_string(e.epoch) + ")";
    }
    return "* key with " + peer + " rotated (epoch " + std::to_string(e.epoch) + ")";
}
std::string describe_event(const sim::PeerLeftEvent& e) {
    return "* " + sim::tools::printable(e.peer) + " left";
}
std::string describe_event(const sim::ErrorEvent& e) {
    if (!e.peer.empty()) {
        return "! a message from " + sim::tools::printable(e.peer) + " could not be read and was dropped (" +
               e.error.message() + ")";
    }
    return "! server: " + e.error.message();
}
std::string describe_event(const sim::ClosedEvent& e) {
    return "! connection closed" + (e.reason.code == sim::Errc::ok ? std::string() : ": " + e.reason.message());
}
std::string describe_event(const sim::MessageEvent& e) {
    if (e.from_me) {  // sent from another device of ours
        return "[you -> " + sim::tools::printable(e.peer) + "] " + sim::tools::printable(e.text);
    }
    return "[" + sim::tools::printable(e.peer) + "] " + sim::tools::printable(e.text);
}
std::string describe_event(const sim::PresenceEvent& e) {
    return "* " + sim::tools::printable(e.peer) + (e.online ? " is online" : " is offline");
}
std::string describe_event(const sim::PasswordChangedEvent& /*e*/) {
    return "* password changed";
}
std::string describe_event(const sim::LinkCodeEvent& e) {
    return "* link code " + e.code + " (this is device " + std::to_string(e.device) + " of " +
           sim::tools::printable(e.user) + "; its fingerprint " + e.fingerprint +
           "): type the code on the approving device (sim devices " + sim::tools::printable(e.user) +
           " approve, or /approve CODE in its chat)";
}
std::string describe_event(const sim::LinkRequestEvent& e) {
    return "* a new device (" + std::to_string(e.device) + ", fingerprint " + e.fingerprint +
           ") asks to be linked to your account: if it is yours and shows this fingerprint, type /approve CODE "
           "with the code it shows; otherwise do nothing";
}
std::string describe_event(const sim::DevicesChangedEvent& e) {
    std::string ids;
    for (const auto d : e.devices) {
        ids += (ids.empty() ? "" : ", ") + std::to_string(d);
    }
    return "* the devices of " + sim::tools::printable(e.user) + " are now " + ids + " (list version " +
           std::to_string(e.version) + ")";
}
std::string describe_event(const sim::DeviceInfoEvent& e) {
    return "* " + std::to_string(e.devices.size()) + " devices of " + sim::tools::printable(e.user);
}
std::string describe_event(const sim::ChannelReadyEvent& /*e*/) {
    return {};
}
std::string describe_event(const sim::TrustRequiredEvent& /*e*/) {
    return {};
}

std::string describe(const sim::ClientEvent& e) {
    return std::visit([](const auto& x) { return describe_event(x); }, e);
}

/// A connected, logged-in client and its end-to-end state (which must outlive it).
struct Connection {
    std::unique_ptr<sim::ClientState> keys;
    std::unique_ptr<sim::Client> client;
    std::string user;  // canonical
};

/// The end-to-end state file of `user` at `server_id`: "<dir>/<server_id>-<user>.db" with ':' as '_', named as the
/// library names its default files (sim::default_client_state_path), so that with the default --keys-dir an
/// application using sim::Client's default state and sim share one identity.
std::string keys_file(const Settings& s, const std::string& user) {
    return s.keys_dir + "/" + sim::client_state_file_name(s.server_id, user);
}

/// What Session::open logs in for.
enum class Purpose {
    login,     ///< token first, then the password
    register_account,
    rekey,     ///< the state opens with the old password, the server checks the new one, the state is re-sealed
    link,      ///< a new state: log in as a new installation and wait for an existing device's approval
};

class Session {
public:
    /// `keep_password`: open() keeps the password in memory (wiped by the destructor) for reconnect().
    explicit Session(const Settings& s, bool keep_password = false)
        : m_s(s), m_state(s.state_file), m_keep_password(keep_password), m_hide_presence(s.hide_presence) {}
    ~Session() { sim::tools::wipe(m_password); }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    /// Connect, pin or check the server key, and log in. A state file this call created is removed again when the
    /// login fails (a mistyped first password must not seal the state). Errors carry a message for the user.
    sim::Result<Connection> open(const std::string& user, const std::string& destination, Purpose purpose) {
        const bool register_account = purpose == Purpose::register_account;
        if (auto st = sim::tools::make_private_dirs(sim::tools::parent_dir(m_s.known_servers)); !st) {
            return st.error();
        }
        if (auto st = sim::tools::make_private_dirs(m_s.keys_dir); !st) {
            return st.error();
        }
        // The password opens the local end-to-end state even when a session token logs in to the server.
        auto password =
            sim::tools::obtain_password(m_s.password_file, "Password for " + user + " at " + m_s.server_id + ": ",
                                        register_account && m_s.password_file.empty());
        if (!password) {
            return password.error();
        }
        const std::string path = keys_file(m_s, user);
        if (purpose == Purpose::link && std::filesystem::exists(path)) {
            sim::tools::wipe(*password);
            return sim::Error{sim::Errc::invalid_state,
                              "this installation already has an end-to-end state for " + user + " (" + path +
                                  "): it is a device of the account already"};
        }
        if (purpose == Purpose::rekey && !std::filesystem::exists(path)) {
            sim::tools::wipe(*password);
            return sim::Error{sim::Errc::invalid_argument, "no end-to-end state to rekey: " + path + " does not exist"};
        }
        auto state_password = purpose == Purpose::rekey
                                  ? sim::tools::obtain_password(m_s.old_password_file,
                                                                "Previous password for " + user + " (the one the "
                                                                "end-to-end state is sealed under): ",
                                                                false, "old-password-file", "SIM_OLD_PASSWORD")
                                  : password;
        if (!state_password) {
            sim::tools::wipe(*password);
            return state_password.error();
        }
        auto keys = sim::open_client_state(path, *state_password);
        sim::tools::wipe(*state_password);
        if (!keys) {
            sim::tools::wipe(*password);
            return keys_error(path, keys.error(), user);
        }
        auto c = log_in(**keys, user, *password, destination, purpose, m_s.wait_limit());
        if (c && m_keep_password) {
            m_password = *password;  // a copy: a moved-from short string may keep its bytes where wipe cannot see
        }
        sim::tools::wipe(*password);
        if (!c) {
            const bool fresh = (*keys)->created();
            keys->reset();
            if (fresh) {
                std::error_code ec;
                for (const char* suffix : {"", "-wal", "-shm"}) {
                    std::filesystem::remove(path + suffix, ec);
                }
            }
            return c.error();
        }
        c->keys = std::move(*keys);
        return c;
    }

    /// A new connection for `c` after its connection was lost, logged in as before: with the stored session token
    /// when there is one, else with the password open() kept. Never prompts. Waits at most 30 s for the login even
    /// without --timeout, so that a server that accepts and never answers does not hold the chat. Errors as for
    /// open().
    sim::Result<std::unique_ptr<sim::Client>> reconnect(const Connection& c) {
        SIM_TRY(auto fresh, log_in(*c.keys, c.user, m_password, {}, Purpose::login,
                                   std::min<sim::Duration>(m_s.wait_limit(), 30s)));
        return std::move(fresh.client);
    }

private:
    /// Log in on a new connection whose core uses `keys`: a stored token first (Purpose::login), then `password`,
    /// each answer awaited at most `wait`; a new token is stored. The result has no `keys`.
    sim::Result<Connection> log_in(sim::ClientState& keys, const std::string& user, const std::string& password,
                                   const std::string& destination, Purpose purpose, sim::Duration wait) {
        if (purpose == Purpose::login && m_s.use_session) {
            auto stored = m_state.load(m_s.server_id, user, now_unix_ms());
            if (!stored) {
                print_line(stderr, "sim: warning: " + stored.error().message());
            } else if (stored->has_value()) {
                SIM_TRY(auto c, connect(keys));
                auto st = c.client->login_with_token(user, (*stored)->token, destination, wait);
                if (st) {
                    c.user = c.client->core().user();
                    return c;
                }
                if (st.code() != sim::Errc::token_invalid && st.code() != sim::Errc::auth_rejected) {
                    return login_error(st.error());
                }
                c.client->close();
                (void)m_state.forget(m_s.server_id, user, now_unix_ms());
                print_line(stderr, "sim: the stored session is no longer valid; logging in with the password");
            }
        }
        SIM_TRY(auto c, connect(keys));
        const auto show_code = [](const sim::LinkCodeEvent& e) { print_line(stdout, describe_event(e)); };
        auto st = purpose == Purpose::register_account ? c.client->register_user(user, password, wait)
                  : purpose == Purpose::link
                      ? c.client->link_device(user, password, show_code, m_s.timeout_given ? wait : 10min)
                      : c.client->login(user, password, destination, wait);
        if (st && purpose == Purpose::rekey) {
            st = keys.change_password(password);
        }
        if (!st) {
            c.client->close();
            return login_error(st.error());
        }
        c.user = c.client->core().user();
        save_token(c);
        return c;
    }

public:
    /// Store the connection's newest session token (unless --no-session).
    void save_token(const Connection& c) {
        if (!m_s.use_session) {
            return;
        }
        const auto issued = c.client->core().session_token();
        if (issued.token.empty()) {
            return;
        }
        if (auto saved = m_state.save(m_s.server_id, c.user, {issued.token, issued.expires_unix_ms}, now_unix_ms());
            !saved) {
            print_line(stderr, "sim: warning: cannot store the session token: " + saved.error().message());
        }
    }
    /// Whether later logins (reconnect()) hide the user's presence: the chat's /presence changes it.
    void set_hide_presence(bool hidden) { m_hide_presence = hidden; }
    /// The password open() kept (`keep_password`).
    [[nodiscard]] const std::string& password() const { return m_password; }

private:

    sim::Result<Connection> connect(sim::ClientState& keys) {
        sim::ClientOptions o;
        o.config.state = &keys;
        o.config.require_end_to_end = m_s.end_to_end_only;
        o.config.hide_presence = m_hide_presence;
        o.host = m_s.host;
        o.port = m_s.port;
        o.known_servers_file = m_s.known_servers;
        o.connect_timeout = m_s.timeout == sim::Duration::zero() ? 30s : m_s.timeout;
        o.config.handshake.server_id = m_s.server_id;
        o.config.handshake.trust = m_s.trust;
        o.config.handshake.expected_fingerprint = m_s.fingerprint;
        o.config.handshake.suites = m_s.channel_suites;
        o.config.conversation_rotation.interval = m_s.rotation;
        // Several sim processes may pin at once (a script starting a sender and a receiver): FileKnownServers
        // serialises writers itself.
        bool first_contact = false;
        {
            auto known = sim::FileKnownServers::open(m_s.known_servers);
            if (!known) {
                return sim::Error{known.code(),
                                  "known-servers file '" + m_s.known_servers + "': " + known.error().message()};
            }
            first_contact = !(*known)->lookup(m_s.server_id).has_value();
        }
        bool asked = false;
        auto ask = [&](const std::string& fp) {
            asked = true;
            std::cerr << "The server " << m_s.server_id << " is not known yet. Its key fingerprint is\n  " << fp
                      << "\nCompare it with the fingerprint simd printed when it started.\n";
            auto answer = sim::tools::prompt_line("Trust this server and remember its key? [y/N] ");
            return answer && (*answer == "y" || *answer == "Y" || *answer == "yes");
        };
        auto client = sim::Client::connect(o, ask);
        if (!client) {
            return connect_error(client.error(), !first_contact);
        }
        if (first_contact && !asked) {
            print_line(stderr, "sim: first contact with " + m_s.server_id + "; pinned its key, fingerprint " +
                                   (*client)->server_fingerprint());
        }
        return Connection{nullptr, std::move(*client), {}};
    }

    /// `was_pinned`: the known-servers file held a key for the server before this connection.
    sim::Error connect_error(const sim::Error& e, bool was_pinned) const {
        switch (e.code) {
            case sim::Errc::server_key_mismatch:
                if (!was_pinned) {
                    return {e.code, "the key of " + m_s.server_id +
                                        " does not match --fingerprint. This may be an attack, or the "
                                        "fingerprint was mistyped: compare it with the one simd printed."};
                }
                return {e.code, "the key of " + m_s.server_id + " does not match the key pinned in " +
                                    m_s.known_servers + (m_s.fingerprint.empty() ? "" : " or --fingerprint") +
                                    ". This may be an attack. If the server's key was replaced on purpose, "
                                    "delete its line from that file."};
            case sim::Errc::server_key_unknown:
                return {e.code, "the key of " + m_s.server_id +
                                    " is not trusted (not pinned; --trust pinned, or "
                                    "refused at the prompt)"};
            case sim::Errc::io_error:
            case sim::Errc::timeout:
                return {e.code, "cannot connect to " + m_s.server_id + ": " + e.message()};
            default:
                return {e.code, "connection to " + m_s.server_id + " failed: " + e.message()};
        }
    }

    static sim::Error keys_error(const std::string& path, const sim::Error& e, const std::string& user) {
        switch (e.code) {
            case sim::Errc::auth_failed:
                return {e.code, "wrong password for the end-to-end state " + path +
                                    " (it is sealed under the password this user had when the state was made or "
                                    "last rekeyed). If the password was changed on the server, run 'sim rekey " +
                                    user + "': it asks for the previous password too"};
            case sim::Errc::busy:
                return {e.code, "another sim is using " + path};
            default:
                return {e.code, "end-to-end state " + path + ": " + e.message()};
        }
    }

    static sim::Error login_error(const sim::Error& e) {
        switch (e.code) {
            case sim::Errc::auth_rejected:
                return {e.code, "login refused: wrong password or unknown user"};
            case sim::Errc::registration_closed:
                return {e.code, "this server does not let you create accounts this way (" + e.message() + ")"};
            case sim::Errc::throttled:
                return {e.code, "too many failed logins; try again later"};
            case sim::Errc::timeout:
                return {e.code, "the server did not answer the login in time"};
            default:
                return {e.code, "login failed: " + e.message()};
        }
    }

    const Settings& m_s;
    sim::tools::SessionState m_state;
    bool m_keep_password = false;
    std::string m_password;  // kept for reconnect() only when asked
    bool m_hide_presence = false;
};

sim::Result<std::string> canonical(std::string_view what, const std::string& name) {
    auto c = sim::auth::canonical_username(name);
    if (!c) {
        return sim::Error{sim::Errc::invalid_argument, std::string(what) + ": " + c.error().message()};
    }
    return c;
}

void finish(Connection& c) {
    (void)c.client->logout(0);
    c.client->close();
}

/// The next event, waiting at most until `deadline`.
sim::Result<sim::ClientEvent> next_event(sim::Client& client, std::chrono::steady_clock::time_point deadline) {
    const auto left = deadline - std::chrono::steady_clock::now();
    return client.receive(std::max<sim::Duration>(left, 0ns));
}

/// A server error not about one peer's message, or the end of the connection: its error; nullopt for other events.
std::optional<sim::Error> refusal(const sim::ClientEvent& e) {
    if (const auto* error = std::get_if<sim::ErrorEvent>(&e); error != nullptr && error->peer.empty()) {
        return error->error;
    }
    if (const auto* closed = std::get_if<sim::ClosedEvent>(&e)) {
        return closed->reason;
    }
    return std::nullopt;
}

enum class Awaited : std::uint8_t {
    keyed,             ///< the conversation has a key (a session kept in the state, or a new one)
    identity_changed,  ///< the peer's identity key changed (announced on stderr); the caller decides
    failed,            ///< reported, and the connection closed
};

/// Follow the server's answers about `peer` (ack_init 2: online, 3: offline or not reachable yet) into `online`.
void note_presence(const sim::ClientEvent& e, const std::string& peer, bool& online) {
    if (const auto* on = std::get_if<sim::PeerOnlineEvent>(&e); on != nullptr && on->peer == peer) {
        online = true;
    } else if (const auto* off = std::get_if<sim::WaitingEvent>(&e); off != nullptr && off->peer == peer) {
        online = false;
    }
}

/// Ask the server for the conversation with `peer` and wait for the answer: its current prekey bundle (which
/// shows whether its identity key changed) or, in server-assigned mode, a key. `online` follows the server's answer
/// about the peer (ack_init 2 / 3) when it comes first.
Awaited await_conversation(Connection& c, const std::string& peer, std::chrono::steady_clock::time_point deadline,
                           bool* online = nullptr) {
    auto& client = *c.client;
    if (auto st = client.open(peer); !st) {
        finish(c);
        failure("cannot open a conversation: " + st.error().message());
        return Awaited::failed;
    }
    for (;;) {
        auto e = next_event(client, deadline);
        if (!e) {
            client.close();
            failure(e.code() == sim::Errc::timeout
                        ? "timed out waiting for a conversation key with " + peer + " (is " + peer + " logged in?)"
                        : e.error().message());
            return Awaited::failed;
        }
        if (online != nullptr) {
            note_presence(*e, peer, *online);
        }
        if (std::holds_alternative<sim::KeyAssignedEvent>(*e) && sim::peer_of(*e) == peer) {
            print_line(stderr, "sim: " + describe(*e).substr(2));
            return Awaited::keyed;
        }
        if (std::holds_alternative<sim::IdentityChangedEvent>(*e) && sim::peer_of(*e) == peer) {
            print_line(stderr, "sim: " + describe(*e).substr(2));
            return Awaited::identity_changed;
        }
        if (const auto* w = std::get_if<sim::WaitingEvent>(&*e);
            w != nullptr && w->reason && w->reason->code == sim::Errc::no_conversation) {
            finish(c);
            failure(peer + " has no end-to-end keys yet (" + peer + " must log in once before others can write to them)");
            return Awaited::failed;
        }
        if (refusal(*e)) {
            client.close();
            failure(describe(*e).substr(2));
            return Awaited::failed;
        }
    }
}

// ---------------------------------------------------------------- send

/// How long `send` waits, after "stored", for "delivered" from a recipient that is online.
constexpr auto delivered_grace = std::chrono::seconds(3);

int run_send(const Settings& s, const std::vector<std::string>& pos) {
    if (pos.size() < 4) {
        return usage_error("send: expected USER PEER MESSAGE...");
    }
    auto user = canonical("USER", pos[1]);
    auto peer = canonical("PEER", pos[2]);
    if (!user || !peer) {
        return usage_error((user ? peer : user).error().detail);
    }
    std::string text = pos[3];
    for (std::size_t i = 4; i < pos.size(); ++i) {
        text += " " + pos[i];
    }
    Session session(s);
    auto c = session.open(*user, {}, Purpose::login);
    if (!c) {
        return open_failed(c.error());
    }
    auto& client = *c->client;
    const auto deadline = std::chrono::steady_clock::now() + s.wait_limit();
    bool online = false;
    switch (await_conversation(*c, *peer, deadline, &online)) {
        case Awaited::keyed: break;
        case Awaited::identity_changed:
            finish(*c);
            return failure("not sent: the identity key of " + *peer + " changed");
        case Awaited::failed: return sim::tools::exit_failure;
    }
    auto id = client.send(*peer, text);
    if (!id) {
        finish(*c);
        return failure("cannot send: " + id.error().message());
    }
    // Done when the server confirms. Every message is stored in the recipient's mailbox first ("stored", durable);
    // for a recipient that is online, "delivered" (its client stored it) follows within moments: wait a little for
    // it, and report "stored" if it does not come.
    std::optional<sim::ReceiptEvent> stored;
    auto until = deadline;
    for (;;) {
        auto e = next_event(client, until);
        if (!e) {
            if (stored) {
                print_line(stderr, "sim: " + describe_event(*stored).substr(2));
                break;
            }
            client.close();
            return failure("the server did not confirm the message: " + e.error().message() +
                           " (it stays in the outbox and is sent again next time)");
        }
        if (const auto refused = refusal(*e)) {
            finish(*c);
            return failure("the server refused the message: " + refused->message());
        }
        note_presence(*e, *peer, online);
        const auto* receipt = std::get_if<sim::ReceiptEvent>(&*e);
        if (receipt == nullptr || receipt->message_id != *id) {
            continue;
        }
        if (receipt->status == sim::ReceiptStatus::stored && online) {
            stored = *receipt;
            until = std::min(deadline, std::chrono::steady_clock::now() + delivered_grace);
            continue;
        }
        print_line(stderr, "sim: " + describe(*e).substr(2));
        break;
    }
    finish(*c);
    return 0;
}

// ---------------------------------------------------------------- recv

/// `CMD USER`: checks the arguments and opens a session for `purpose`; on failure `status` is the exit status.
std::optional<Connection> open_user(const Settings& s, const std::vector<std::string>& pos, Purpose purpose,
                                    int& status) {
    if (pos.size() != 2) {
        status = usage_error(pos[0] + ": expected USER");
        return std::nullopt;
    }
    auto user = canonical("USER", pos[1]);
    if (!user) {
        status = usage_error(user.error().detail);
        return std::nullopt;
    }
    Session session(s);
    auto c = session.open(*user, {}, purpose);
    if (!c) {
        status = open_failed(c.error());
        return std::nullopt;
    }
    return std::move(*c);
}

int run_recv(const Settings& s, const std::vector<std::string>& pos) {
    int status = 0;
    auto c = open_user(s, pos, Purpose::login, status);
    if (!c) {
        return status;
    }
    auto& client = *c->client;
    std::uint64_t received = 0;
    const auto deadline = std::chrono::steady_clock::now() + s.wait_limit();
    while (!s.count || received < *s.count) {
        auto e = next_event(client, deadline);
        if (!e) {
            if (e.code() == sim::Errc::timeout) {
                break;
            }
            client.close();
            return failure(e.error().message());
        }
        using K = sim::ClientEventKind;
        const auto kind = sim::kind_of(*e);
        if (const auto* m = std::get_if<sim::MessageEvent>(&*e)) {
            // An own copy (sent from another device of ours) names its recipient: "you -> bob: ..."
            print_line(stdout, (m->from_me ? "you -> " : "") + sim::tools::printable(m->peer) + ": " +
                                   sim::tools::printable(m->text));
            ++received;
        } else if (kind == K::closed) {
            client.close();
            return failure(describe(*e).substr(2));
        } else if (kind == K::key_assigned || kind == K::error || kind == K::peer_left || kind == K::gap ||
                   kind == K::identity_changed) {
            print_line(stderr, "sim: " + describe(*e).substr(2));
        }
    }
    finish(*c);
    if (s.count && received < *s.count) {
        return failure("timed out after " + std::to_string(received) + " of " + std::to_string(*s.count) + " messages");
    }
    return 0;
}

// ---------------------------------------------------------------- register

int run_register(const Settings& s, const std::vector<std::string>& pos) {
    int status = 0;
    auto c = open_user(s, pos, Purpose::register_account, status);
    if (!c) {
        return status;
    }
    print_line(stdout, "sim: registered " + c->user + " at " + s.server_id);
    finish(*c);
    return 0;
}

/// `sim passwd USER`: the current password opens the state and logs in; the server checks it again and takes the
/// new one; the client seals the state under the new one (ClientCore::change_password); the new token is kept.
int run_passwd(const Settings& s, const std::vector<std::string>& pos) {
    if (pos.size() != 2) {
        return usage_error("passwd: expected USER");
    }
    auto user = canonical("USER", pos[1]);
    if (!user) {
        return usage_error(user.error().detail);
    }
    Session session(s, true);
    auto c = session.open(*user, {}, Purpose::login);
    if (!c) {
        return open_failed(c.error());
    }
    auto fresh = sim::tools::obtain_password(s.new_password_file, "New password for " + *user + " at " + s.server_id +
                                                                      ": ",
                                             true, "new-password-file", "SIM_NEW_PASSWORD");
    if (!fresh) {
        c->client->close();
        return failure(fresh.error().message());
    }
    const auto st = c->client->change_password(session.password(), *fresh, s.wait_limit());
    sim::tools::wipe(*fresh);
    if (!st) {
        c->client->close();
        return failure("password not changed: " + user_message(st.error()));
    }
    session.save_token(*c);
    c->client->close();  // every session of the user ends with the change: this one too
    print_line(stdout, "sim: the password of " + c->user + " at " + s.server_id +
                           " is changed, and the end-to-end state is sealed under it; every other session of " +
                           c->user + " was logged out");
    return 0;
}

int run_rekey(const Settings& s, const std::vector<std::string>& pos) {
    int status = 0;
    auto c = open_user(s, pos, Purpose::rekey, status);
    if (!c) {
        return status;
    }
    print_line(stdout, "sim: the end-to-end state of " + c->user + " at " + s.server_id +
                           " is now sealed under the server's current password");
    finish(*c);
    return 0;
}

// ---------------------------------------------------------------- safety / verify / accept

/// "bob: 12345 ... (verified)" for the user.
std::string identity_line(const sim::PeerIdentity& id) {
    return "safety number with " + id.peer + ": " + id.safety_number +
           (id.change_pending ? " (its identity key CHANGED; not accepted yet)"
                              : id.verified ? " (verified)" : " (not verified)");
}

int run_identity(const Settings& s, const std::vector<std::string>& pos) {
    const std::string& cmd = pos[0];
    if (pos.size() != 3) {
        return usage_error(cmd + ": expected USER PEER");
    }
    auto user = canonical("USER", pos[1]);
    auto peer = canonical("PEER", pos[2]);
    if (!user || !peer) {
        return usage_error((user ? peer : user).error().detail);
    }
    Session session(s);
    auto c = session.open(*user, {}, Purpose::login);
    if (!c) {
        return open_failed(c.error());
    }
    if (await_conversation(*c, *peer, std::chrono::steady_clock::now() + s.wait_limit()) == Awaited::failed) {
        return sim::tools::exit_failure;
    }
    auto& core = c->client->core();
    sim::Status st = sim::ok();
    if (cmd == "verify") {
        st = core.verify_peer(*peer);
    } else if (cmd == "accept") {
        st = core.accept_identity(*peer);
    }
    auto id = core.peer_identity(*peer);
    finish(*c);
    if (!st) {
        return failure(cmd + ": " + st.error().message());
    }
    if (!id) {
        return failure("no identity key of " + *peer + " is known yet (exchange a message first)");
    }
    print_line(stdout, identity_line(*id));
    return 0;
}

// ---------------------------------------------------------------- devices

/// `sim link USER`: this installation becomes a new device of USER's account once an existing device approves it.
int run_link(const Settings& s, const std::vector<std::string>& pos) {
    int status = 0;
    auto c = open_user(s, pos, Purpose::link, status);
    if (!c) {
        return status;
    }
    print_line(stdout, "sim: this installation is device " + std::to_string(c->client->core().device()) + " of " +
                           c->user + " at " + s.server_id);
    finish(*c);
    return 0;
}

std::string format_time(sim::WallTime t) {
    if (t == sim::WallTime{}) {
        return "-";
    }
    const std::time_t secs = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
    return buf;
}

/// `sim devices USER [list | approve | remove ID | rename ID NAME]`.
int run_devices(const Settings& s, const std::vector<std::string>& pos) {
    if (pos.size() < 2) {
        return usage_error("devices: expected USER [list | approve | remove ID | rename ID NAME]");
    }
    const std::string op = pos.size() > 2 ? pos[2] : "list";
    const std::size_t want = op == "remove" ? 4 : op == "rename" ? 5 : 3;
    if ((op != "list" && op != "approve" && op != "remove" && op != "rename") || (pos.size() != want &&
                                                                                  !(op == "list" && pos.size() == 2))) {
        return usage_error("devices: expected USER [list | approve | remove ID | rename ID NAME]");
    }
    sim::DeviceId id = 0;
    if (op == "remove" || op == "rename") {
        const auto n = sim::tools::parse_uint("ID", pos[3], 1, 0xFFFFFFFFU);
        if (!n) {
            return usage_error(n.error().detail);
        }
        id = static_cast<sim::DeviceId>(*n);
    }
    int status = 0;
    auto c = open_user(s, {pos[0], pos[1]}, Purpose::login, status);
    if (!c) {
        return status;
    }
    auto& client = *c->client;
    sim::Status st = sim::ok();
    if (op == "approve") {
        // The new device asks again every few seconds until a device offers: wait for its request here.
        auto ask = client.wait_for<sim::LinkRequestEvent>({}, s.wait_limit());
        if (!ask) {
            client.close();
            return failure("no new device asked to be linked (" + ask.error().message() +
                           "): start 'sim link' on it first, and keep it running");
        }
        print_line(stdout, "sim: new device " + std::to_string(ask->device) + " with fingerprint " +
                               ask->fingerprint + " asks to be linked.");
        std::cout << "Compare the fingerprint with the one it shows, then type the code it shows: " << std::flush;
        std::string code;
        if (!std::getline(std::cin, code) || code.empty()) {
            client.close();
            return failure("no code typed: nothing was approved");
        }
        st = client.approve_device(code, s.wait_limit());
        if (st) {
            print_line(stdout, "sim: device " + std::to_string(ask->device) + " is linked to " + c->user);
        }
    } else if (op == "remove") {
        st = client.remove_device(id, s.wait_limit());
        if (st) {
            print_line(stdout, "sim: device " + std::to_string(id) + " removed from " + c->user);
        }
    } else {
        if (op == "rename") {
            st = client.core().rename_device(id, pos[4]);
        }
        if (st) {
            auto list = client.devices(s.wait_limit());
            if (!list) {
                st = list.error();
            } else {
                const auto self = client.core().device();
                for (const auto& d : *list) {
                    const char* state = d.status == sim::DeviceStatus::active    ? "active"
                                        : d.status == sim::DeviceStatus::pending ? "pending"
                                                                                 : "removed";
                    print_line(stdout, std::to_string(d.device) + (d.device == self ? " (this one)" : "") + "  " +
                                           state + "  " + (d.name.empty() ? "-" : sim::tools::printable(d.name)) +
                                           "  linked " + format_time(d.linked) + "  last seen " +
                                           format_time(d.last_seen));
                }
            }
        }
    }
    finish(*c);
    if (!st) {
        return failure("devices " + op + ": " + user_message(st.error()));
    }
    return 0;
}

// ---------------------------------------------------------------- chat

class Chat {
public:
    Chat(const Settings& s, Session& session, Connection& c, std::string current, sim::tools::ChatFrontEnd& view)
        : m_s(s), m_session(session), m_c(c), m_current(std::move(current)), m_backoff(s.reconnect_backoff),
          m_view(view) {
        if (!m_current.empty()) {
            m_peers.insert(m_current);
        }
    }

    /// Why run() failed, when the front end could not show it (said once the screen is gone); else empty.
    [[nodiscard]] const std::string& fatal() const noexcept { return m_fatal; }

    int run() {
        say("* authenticated as " + m_c.user + "; type a message, or /help");
        if (!m_current.empty()) {
            say("* talking to " + m_current);
        }
        for (;;) {
            drain_events();
            if (m_lost) {
                if (!m_s.reconnect) {
                    m_c.client->close();
                    return sim::tools::exit_failure;
                }
                connection_lost();
            }
            if (m_down && std::chrono::steady_clock::now() >= m_retry_at && !reconnect()) {
                return sim::tools::exit_failure;
            }
            publish();
            const auto lines = m_view.input(100ms);
            if (!lines) {
                break;  // end of input: like /quit
            }
            bool quit = false;
            for (const auto& line : *lines) {
                if (!handle(line)) {
                    quit = true;
                    break;
                }
            }
            if (quit) {
                break;
            }
        }
        drain_events();
        finish(m_c);
        return 0;
    }

private:
    void say(const std::string& line) { m_view.say(line); }

    /// Tells the front end where the chat stands.
    void publish() {
        sim::tools::ChatState st;
        st.core = m_down ? nullptr : &m_c.client->core();
        st.user = m_c.user;
        st.current = m_current;
        st.connected = !m_down;
        st.retry_at = m_retry_at;
        if (!m_current.empty()) {
            st.security = security(m_current);
        }
        st.names.assign(m_peers.begin(), m_peers.end());
        if (!m_down) {
            const auto keyed = m_c.client->core().conversations();
            st.names.insert(st.names.end(), keyed.begin(), keyed.end());
        }
        m_view.update(st);
    }

    /// The protection of the conversation with `peer`, in words.
    std::string security(const std::string& peer) const {
        auto& core = m_c.client->core();
        if (!core.conversation_suite(peer)) {
            return "no key yet";
        }
        if (auto id = core.peer_identity(peer)) {
            return id->verified ? "end-to-end, safety number verified" : "end-to-end, safety number not verified";
        }
        return "server-assigned: readable by the server";
    }

    void drain_events() {
        for (;;) {
            auto e = m_c.client->receive(0ns);
            if (!e) {
                if (e.code() == sim::Errc::closed && !m_down) {
                    m_lost = true;
                }
                return;
            }
            const auto* closed = std::get_if<sim::ClosedEvent>(&*e);
            if (closed != nullptr && m_s.reconnect) {
                m_lost = true;
                m_lost_reason = closed->reason.code == sim::Errc::ok ? std::string("closed by the server")
                                                                     : user_message(closed->reason);
                return;  // connection_lost() says it
            }
            // Ratchet steps and key rotations are routine: only --verbose shows them. Presence: only changes (the
            // snapshot after each login repeats what is known), and a contact's first report only when online.
            bool routine = std::holds_alternative<sim::KeyRotatedEvent>(*e) && !m_s.verbose;
            if (const auto* o = std::get_if<sim::PeerOnlineEvent>(&*e)) {
                // ack_init 2 and presence say the same thing: once is enough.
                const auto known = m_presence.find(o->peer);
                routine = known != m_presence.end() && known->second;
                m_presence[o->peer] = true;
            } else if (const auto* w = std::get_if<sim::WaitingEvent>(&*e)) {
                m_presence[w->peer] = false;  // ack_init 3: not online (or hiding), whatever was said before
            } else if (const auto* l = std::get_if<sim::PeerLeftEvent>(&*e)) {
                m_presence[l->peer] = false;
            }
            if (const auto* p = std::get_if<sim::PresenceEvent>(&*e)) {
                const auto known = m_presence.find(p->peer);
                routine = known == m_presence.end() ? !p->online : known->second == p->online;
                m_presence[p->peer] = p->online;
            }
            m_view.event(*e, routine ? std::string() : describe(*e));
            if (const auto* m = std::get_if<sim::MessageEvent>(&*e); m != nullptr && !m->peer.empty() && !m->from_me) {
                // Someone other than the current peer wrote: say how to answer them, once per new sender.
                if (m->peer != m_current && m->peer != m_last_sender) {
                    say("* /r TEXT answers " + m->peer + " (you are talking to " +
                        (m_current.empty() ? std::string("nobody") : m_current) + ")");
                }
                m_last_sender = m->peer;
            }
            if (std::holds_alternative<sim::KeyAssignedEvent>(*e) || std::holds_alternative<sim::MessageEvent>(*e)) {
                m_peers.insert(std::string(sim::peer_of(*e)));
            }
            if (closed != nullptr) {
                m_lost = true;
                return;
            }
        }
    }

    // ------------------------------------------------ reconnecting

    void connection_lost() {
        m_lost = false;
        m_down = true;
        // Stops its timers; its core still takes messages into the outbox in the state until a new one replaces it.
        m_c.client->close();
        retry_later("* connection lost: " + (m_lost_reason.empty() ? std::string("closed") : m_lost_reason));
        m_lost_reason.clear();
    }

    void retry_later(const std::string& what) {
        const auto delay = m_backoff.next(*m_rng);
        m_retry_at = std::chrono::steady_clock::now() + delay;
        char seconds[32];
        std::snprintf(seconds, sizeof seconds, "%.1f", std::chrono::duration<double>(delay).count());
        say(what + "; reconnecting in " + seconds + " s");
    }

    /// One attempt; false after a refusal that trying again cannot fix (reported).
    bool reconnect() {
        auto fresh = m_session.reconnect(m_c);
        if (!fresh) {
            if (!worth_retrying(fresh.code())) {
                m_fatal = "cannot reconnect: " + user_message(fresh.error());
                return false;
            }
            retry_later("* reconnecting failed: " + user_message(fresh.error()));
            return true;
        }
        m_c.client = std::move(*fresh);  // the old core goes: the new one owns the state (and its outbox) now
        m_down = false;
        m_backoff.reset();
        say("* reconnected");
        for (const auto& peer : m_peers) {
            if (auto st = m_c.client->open(peer); !st) {
                say("! cannot reopen the conversation with " + peer + ": " + st.error().message());
            }
        }
        return true;
    }

    /// Lost connections, servers restarting or refusing for now; not a refused login or server key.
    static bool worth_retrying(sim::Errc code) {
        switch (code) {
            case sim::Errc::io_error:
            case sim::Errc::timeout:
            case sim::Errc::closed:
            case sim::Errc::handshake_failed:
            case sim::Errc::throttled:
            case sim::Errc::rate_limited:
            case sim::Errc::busy:
            case sim::Errc::storage_error:
                return true;
            default:
                return false;
        }
    }

    /// Returns false to quit. Only typed lines are commands: a paste is sent as it is.
    bool handle(const sim::tools::ChatInput& input) {
        const std::string& line = input.text;
        if (line.empty()) {
            return true;
        }
        if (!input.typed) {
            send(line);
            return true;
        }
        if (line[0] != '/' || line.starts_with("//")) {
            send(line[0] == '/' ? line.substr(1) : line);
            return true;
        }
        const auto space = line.find(' ');
        const std::string cmd = line.substr(0, space);
        std::string arg = space == std::string::npos ? std::string() : line.substr(space + 1);
        while (!arg.empty() && arg.back() == ' ') {
            arg.pop_back();
        }
        if (cmd == "/quit" || cmd == "/exit") {
            return false;
        }
        if (cmd == "/help") {
            say("* /open PEER, /to PEER, /r TEXT (answer the last sender), /leave [PEER], /who, /safety [PEER], "
                "/verify [PEER], /accept [PEER], /history [N], /search TEXT, /presence show|hide, /approve CODE, /quit; "
                "//text sends '/text'");
        } else if (cmd == "/approve") {
            // The code a new device of ours shows, after its request was announced here (LinkRequestEvent).
            if (const auto st = m_c.client->core().approve_device(arg); !st) {
                say("! /approve: " + st.error().message());
            }
        } else if (cmd == "/who") {
            who();
        } else if (cmd == "/presence") {
            presence(arg);
        } else if (cmd == "/history") {
            history(arg);
        } else if (cmd == "/search") {
            search(arg);
        } else if (cmd == "/r") {
            if (m_last_sender.empty()) {
                say("! nobody has written to you yet");
                return true;
            }
            if (m_current != m_last_sender) {
                m_current = m_last_sender;
                say("* talking to " + m_current);
            }
            if (!arg.empty()) {
                send(arg);
            }
        } else if (cmd == "/safety" || cmd == "/verify" || cmd == "/accept") {
            identity(cmd, arg.empty() ? m_current : arg);
        } else if (cmd == "/open" || cmd == "/to" || cmd == "/leave") {
            if (arg.empty() && cmd == "/leave") {
                arg = m_current;
            }
            auto peer = canonical("peer", arg);
            if (arg.empty() || !peer) {
                say("! " + cmd + ": expected a user name");
                return true;
            }
            if (*peer == m_c.user) {
                say("! that is you");
                return true;
            }
            if (cmd == "/open" && m_down) {
                m_current = *peer;
                m_peers.insert(*peer);
                say("* not connected: the conversation with " + *peer + " opens after the reconnect");
            } else if (cmd == "/open") {
                if (auto st = m_c.client->open(*peer); !st) {
                    say("! cannot open a conversation: " + st.error().message());
                    return true;
                }
                m_current = *peer;
                m_peers.insert(*peer);
                say("* opening a conversation with " + *peer);
            } else if (cmd == "/to") {
                m_current = *peer;
                if (!m_c.client->core().conversation_suite(*peer)) {
                    say("* talking to " + *peer + " (no key yet: /open " + *peer + " if you have not)");
                } else {
                    say("* talking to " + *peer);
                }
            } else {
                if (auto st = m_c.client->leave(*peer); !st) {
                    say("! cannot leave: " + st.error().message());
                    return true;
                }
                m_peers.erase(*peer);
                say("* left the conversation with " + *peer);
                if (m_current == *peer) {
                    m_current.clear();
                }
            }
        } else {
            say("! unknown command " + sim::tools::printable(cmd) + "; /help lists them");
        }
        return true;
    }

    void identity(const std::string& cmd, const std::string& name) {
        auto peer = canonical("peer", name);
        if (name.empty() || !peer) {
            say("! " + cmd + ": expected a user name");
            return;
        }
        auto& core = m_c.client->core();
        const auto st = cmd == "/verify" ? core.verify_peer(*peer)
                        : cmd == "/accept" ? core.accept_identity(*peer)
                                           : sim::ok();
        if (!st) {
            say("! " + cmd + ": " + st.error().message());
            return;
        }
        auto id = core.peer_identity(*peer);
        if (!id) {
            say("! no identity key of " + *peer + " is known yet");
            return;
        }
        say("* " + identity_line(*id));
    }

    struct InboxMatches {
        std::deque<sim::InboxEntry> last;  ///< the last ones that matched, oldest first
        std::size_t count = 0;             ///< how many matched in all
    };
    /// The last `n` messages of the local inbox (only those from `peer` when it is not empty) for which `keep` is
    /// true, oldest first. Reads the client state only: nothing goes to the server.
    template <class Keep>
    sim::Result<InboxMatches> last_in_inbox(const std::string& peer, std::size_t n, Keep&& keep) const {
        constexpr std::size_t page = 512;
        const auto& core = m_c.client->core();
        InboxMatches out;
        std::uint64_t from = 0;
        for (;;) {
            auto entries = core.inbox(from, page, peer);
            if (!entries) {
                return entries.error();
            }
            for (auto& e : *entries) {
                from = e.index + 1;
                if (!keep(e)) {
                    continue;
                }
                ++out.count;
                out.last.push_back(std::move(e));
                if (out.last.size() > n) {
                    out.last.pop_front();
                }
            }
            if (entries->size() < page) {
                return out;
            }
        }
    }

    /// "  HH:MM [peer] text": the sender's time, and the server's when they are far apart (chat_screen.h).
    static std::string inbox_line(const sim::InboxEntry& e) {
        using sim::tools::ms_or_unknown;
        const auto now = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
        return "  " +
               sim::tools::message_time_label(ms_or_unknown(e.sent_at), ms_or_unknown(e.received_at),
                                              ms_or_unknown(now)) +
               " [" + sim::tools::printable(e.peer) + "] " + sim::tools::printable(e.text);
    }

    /// /history [N]: the last N messages received from the current peer, from the inbox.
    void history(const std::string& arg) {
        std::uint64_t n = 50;
        if (!arg.empty()) {
            auto parsed = sim::tools::parse_uint("/history", arg, 1, 100000);
            if (!parsed) {
                say("! /history: expected a number of messages, 1 to 100000");
                return;
            }
            n = *parsed;
        }
        if (m_current.empty()) {
            say("! /history: no current peer (/open PEER or /to PEER)");
            return;
        }
        const auto found = last_in_inbox(m_current, n, [](const sim::InboxEntry&) { return true; });
        if (!found) {
            say("! /history: cannot read the inbox: " + found.error().message());
            return;
        }
        const auto& last = found->last;
        if (last.empty()) {
            say("* no message from " + m_current + " in the inbox");
            return;
        }
        std::vector<std::string> lines{"* the last " + std::to_string(last.size()) + " message(s) from " + m_current +
                                       " in the inbox:"};
        for (const auto& e : last) {
            lines.push_back(inbox_line(e));
        }
        m_view.listing(lines);
    }

    /// /search TEXT: the inbox's messages (every conversation) containing TEXT, ASCII case ignored; the last 200.
    void search(const std::string& arg) {
        if (arg.empty()) {
            say("! /search: expected a text to look for");
            return;
        }
        const auto lower = [](std::string t) {
            for (char& c : t) {
                if (c >= 'A' && c <= 'Z') {
                    c = static_cast<char>(c - 'A' + 'a');
                }
            }
            return t;
        };
        constexpr std::size_t max_shown = 200;
        const std::string needle = lower(arg);
        const auto matches = last_in_inbox(
            {}, max_shown, [&](const sim::InboxEntry& e) { return lower(e.text).find(needle) != std::string::npos; });
        if (!matches) {
            say("! /search: cannot read the inbox: " + matches.error().message());
            return;
        }
        const auto& found = matches->last;
        const std::size_t count = matches->count;
        const std::string what = "'" + sim::tools::printable(arg) + "'";
        if (count == 0) {
            say("* no message in the inbox contains " + what);
            return;
        }
        const std::string shown = count > found.size() ? " (the last " + std::to_string(found.size()) + ")" : "";
        std::vector<std::string> lines{"* " + std::to_string(count) + " message(s) in the inbox contain " + what +
                                       shown + ":"};
        for (const auto& e : found) {
            lines.push_back(inbox_line(e));
        }
        m_view.listing(lines);
    }

    /// /presence show|hide: appear online to contacts or not, now and after reconnects.
    void presence(const std::string& arg) {
        if (arg != "show" && arg != "hide") {
            say(std::string("* your presence is ") + (m_hidden ? "hidden" : "shown") +
                " to your contacts; /presence show or /presence hide changes it");
            return;
        }
        m_hidden = arg == "hide";
        m_session.set_hide_presence(m_hidden);
        if (m_down) {
            say("* not connected: your presence will be " + std::string(m_hidden ? "hidden" : "shown") +
                " after the reconnect");
            return;
        }
        if (auto st = m_c.client->core().set_presence_hidden(m_hidden); !st) {
            say("! presence not changed now: " + st.error().message());
            return;
        }
        say(m_hidden ? "* your presence is hidden: your contacts see you offline"
                     : "* your presence is shown to your contacts");
    }

    void who() {
        const auto peers = m_c.client->core().conversations();
        if (peers.empty()) {
            say("* no keyed conversations");
            return;
        }
        for (const auto& p : peers) {
            const auto suite = m_c.client->core().conversation_suite(p);
            say("* " + p + (suite ? " (" + std::string(sim::suite_name(*suite)) + ")" : std::string()) +
                (p == m_current ? " <- current" : ""));
        }
    }

    void send(const std::string& text) {
        if (m_current.empty()) {
            say("! no current peer: /open PEER or /to PEER");
            return;
        }
        auto st = m_c.client->send(m_current, text);
        if (!st) {
            if (st.code() == sim::Errc::no_conversation) {
                say("! no conversation with " + m_current + " (no key yet, or it ended); not sent. /open " + m_current +
                    " starts one");
            } else {
                say("! not sent: " + st.error().message());
            }
        } else {
            m_view.sent(m_current, text);
            if (m_down) {
                say("* not connected: queued in the outbox; it goes out after the reconnect");
            }
        }
    }

    const Settings& m_s;
    Session& m_session;
    bool m_hidden = m_s.hide_presence;            // /presence
    std::map<std::string, bool> m_presence;       // contacts' presence as last told (PresenceEvent)
    Connection& m_c;
    std::string m_current;
    std::string m_last_sender;      // who wrote last (/r answers them)
    std::set<std::string> m_peers;  // conversations to open again after a reconnect
    bool m_lost = false;            // the connection just went; connection_lost() takes over
    std::string m_lost_reason;
    bool m_down = false;  // no connection: reconnect() at m_retry_at
    std::chrono::steady_clock::time_point m_retry_at{};
    sim::tools::Backoff m_backoff;
    std::unique_ptr<sim::Rng> m_rng = sim::make_system_rng();
    sim::tools::ChatFrontEnd& m_view;
    std::string m_fatal;
};

/// The line-mode front end: lines from stdin, everything to stdout (scripts and tests use it).
class PlainChat final : public sim::tools::ChatFrontEnd {
public:
    void say(const std::string& line) override { print_line(stdout, line); }
    void event(const sim::ClientEvent& /*e*/, const std::string& text) override {
        if (!text.empty()) {
            print_line(stdout, text);
        }
    }
    void listing(const std::vector<std::string>& lines) override {
        for (const auto& line : lines) {
            print_line(stdout, line);
        }
    }
    void sent(const std::string& /*peer*/, const std::string& /*text*/) override {}
    void update(const sim::tools::ChatState& /*state*/) override {}

    std::optional<std::vector<sim::tools::ChatInput>> input(std::chrono::milliseconds wait) override {
        std::vector<sim::tools::ChatInput> lines;
        if (m_eof) {
            return std::nullopt;
        }
        pollfd pfd{STDIN_FILENO, POLLIN, 0};
        const int ready = ::poll(&pfd, 1, static_cast<int>(wait.count()));
        if (ready < 0 && errno != EINTR) {
            return std::nullopt;
        }
        if (ready <= 0) {
            return lines;
        }
        char chunk[4096];
        const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) {
            return lines;
        }
        if (n <= 0) {
            m_eof = true;  // the last line may lack its newline
            if (m_buffer.empty()) {
                return std::nullopt;
            }
            lines.push_back({std::move(m_buffer)});
            return lines;
        }
        m_buffer.append(chunk, static_cast<std::size_t>(n));
        std::size_t nl = 0;
        while ((nl = m_buffer.find('\n')) != std::string::npos) {
            std::string line = m_buffer.substr(0, nl);
            m_buffer.erase(0, nl + 1);
            if (!line.empty() && line.back() == '\r') {
                line.pop_back();
            }
            lines.push_back({std::move(line)});
        }
        return lines;
    }

private:
    std::string m_buffer;
    bool m_eof = false;
};



int run_chat(const Settings& s, const std::vector<std::string>& pos) {
    if (pos.size() != 2 && pos.size() != 3) {
        return usage_error("chat: expected USER [PEER]");
    }
    auto user = canonical("USER", pos[1]);
    if (!user) {
        return usage_error(user.error().detail);
    }
    std::string peer;
    if (pos.size() == 3) {
        auto p = canonical("PEER", pos[2]);
        if (!p) {
            return usage_error(p.error().detail);
        }
        peer = *p;
    }
    Session session(s, s.reconnect);
    auto c = session.open(*user, peer, Purpose::login);
    if (!c) {
        return open_failed(c.error());
    }
    // Full screen on a terminal; the text of a message may then be almost a whole frame.
    constexpr std::size_t max_paste = sim::max_inner_frame_size(sim::default_max_frame_size) - 1024;
    std::unique_ptr<sim::tools::ChatFrontEnd> view;
    if (!s.plain && ::isatty(STDIN_FILENO) == 1 && ::isatty(STDOUT_FILENO) == 1) {
        view = sim::tools::make_chat_screen(max_paste);
    }
    if (!view) {
        view = std::make_unique<PlainChat>();
    }
    Chat chat(s, session, *c, peer, *view);
    const int status = chat.run();
    view.reset();  // leaves the full screen, so that the reason stays readable
    if (!chat.fatal().empty()) {
        return failure(chat.fatal());
    }
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    const std::vector<std::string> args(argv + 1, argv + argc);
    auto program = sim::tools::parse_program_args("sim", sim_options, args, print_help);
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
        return usage_error(
            "expected a command: chat, send, recv, register, passwd, rekey, safety, verify, accept, link or devices");
    }
    if (settings->count && pos[0] != "recv") {
        return usage_error("--count is for recv");
    }
    if (settings->trust == sim::TrustMode::ask && !sim::tools::stdin_is_tty() && parsed->has("trust")) {
        return usage_error("--trust ask needs a terminal");
    }
    if (pos[0] == "chat") {
        return run_chat(*settings, pos);
    }
    if (pos[0] == "send") {
        return run_send(*settings, pos);
    }
    if (pos[0] == "recv") {
        return run_recv(*settings, pos);
    }
    if (pos[0] == "register") {
        return run_register(*settings, pos);
    }
    if (pos[0] == "rekey") {
        return run_rekey(*settings, pos);
    }
    if (pos[0] == "passwd") {
        return run_passwd(*settings, pos);
    }
    if (pos[0] == "safety" || pos[0] == "verify" || pos[0] == "accept") {
        return run_identity(*settings, pos);
    }
    if (pos[0] == "link") {
        return run_link(*settings, pos);
    }
    if (pos[0] == "devices") {
        return run_devices(*settings, pos);
    }
    return usage_error("unknown command '" + pos[0] +
                       "' (chat, send, recv, register, passwd, rekey, safety, verify, accept, link or devices)");
}
