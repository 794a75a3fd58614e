// The networked client: ClientCore on a TcpClient, with a bounded event queue and a probe/keepalive ticker.
#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/net.h>

#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

namespace sim {

struct Client::Impl {
    std::unique_ptr<KnownServers> known;
    std::unique_ptr<Rng> rng = make_system_rng();
    std::unique_ptr<ClientState> state;  // the one ClientOptions::state asked for; before `core`, which uses it
    std::shared_ptr<ClientCore> core;
    std::unique_ptr<net::TcpClient> tcp;
    std::size_t max_events = 10000;
    std::string fingerprint;

    std::mutex mutex;
    std::condition_variable cv;
    std::deque<ClientEvent> events;
    bool closed = false;
    bool overflow_reported = false;
    std::optional<ClientEvent> overflow_note;  // handed out before any queued event
    std::function<void()> notifier;            // set_event_notifier(); called under `mutex`

    std::thread ticker;
    bool stop_ticker = false;
    bool poke_ticker = false;  // the outbox has something due before planned_wake
    TimePoint planned_wake{};

    Impl() = default;
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;
    /// The connection goes first: its last events (closed) are pushed into this object's queue, which must still
    /// be there (a connect() that fails after the TCP connection was made destroys an Impl with it open).
    ~Impl() {
        if (tcp) {
            tcp->close();
        }
    }

    /// After a call that may have put something in the outbox: wake the ticker if it is due before its plan.
    void poke_if_due() {
        const auto due = core->next_wakeup();
        if (!due) {
            return;
        }
        {
            const std::lock_guard lock(mutex);
            if (*due >= planned_wake) {
                return;
            }
            poke_ticker = true;
        }
        cv.notify_all();
    }

    void push(const ClientEvent& e) {
        {
            const std::lock_guard lock(mutex);
            if (std::holds_alternative<ClosedEvent>(e)) {
                closed = true;
            }
            events.push_back(e);
            if (events.size() > max_events) {
                // The application is behind. Messages are safe in the inbox (written before they were acknowledged);
                // the oldest events go, and the application hears so first, once per episode.
                while (events.size() > max_events) {
                    events.pop_front();
                }
                if (!overflow_reported) {
                    overflow_reported = true;
                    overflow_note = ErrorEvent{Error{Errc::queue_full,
                                                     "events dropped: the application is behind; "
                                                     "every message is in the inbox (ClientCore::inbox)"},
                                               {},
                                               std::nullopt};
                }
            } else if (events.size() < max_events / 2) {
                overflow_reported = false;
            }
            if (notifier) {
                notifier();
            }
        }
        cv.notify_all();
    }

    void push_front(const ClientEvent& e) {
        const std::lock_guard lock(mutex);
        events.push_front(e);
    }

    /// Take the first queued event that `match` accepts, waiting up to `timeout`.
    template <typename Match>
    Result<ClientEvent> take(Match match, Duration timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        std::unique_lock lock(mutex);
        for (;;) {
            if (overflow_note && match(*overflow_note)) {
                ClientEvent e = std::move(*overflow_note);
                overflow_note.reset();
                return e;
            }
            for (auto it = events.begin(); it != events.end(); ++it) {
                if (match(*it)) {
                    ClientEvent e = std::move(*it);
                    events.erase(it);
                    return e;
                }
            }
            if (closed) {
                return Error{Errc::closed, "connection closed"};
            }
            if (cv.wait_until(lock, deadline) == std::cv_status::timeout) {
                return Error{Errc::timeout, "no such event in time"};
            }
        }
    }

    /// Wait for an event that `match` accepts; an error or closed event that comes first is returned as the failure.
    template <typename Match>
    Result<ClientEvent> await_event(Match match, Duration timeout) {
        auto e = take([&](const ClientEvent& ev) { return match(ev) || error_of(ev); }, timeout);
        if (!e) {
            return e.error();
        }
        if (!match(*e)) {
            const auto err = *error_of(*e);
            return err.code == Errc::ok ? Error{Errc::closed, "connection closed"} : err;
        }
        return e;
    }
    /// Wait until the server stored an upload of ours: the account's list comes back, checked (DevicesChangedEvent).
    Status await_own_list(Duration timeout) {
        const auto user = core->user();
        SIM_TRY(const auto e, await_event(
                                  [&](const ClientEvent& ev) {
                                      const auto* c = std::get_if<DevicesChangedEvent>(&ev);
                                      return c != nullptr && c->user == user;
                                  },
                                  timeout));
        (void)e;
        return ok();
    }
    /// Wait for `kind`, as await_event().
    Status await(ClientEventKind kind, Duration timeout) {
        SIM_TRY(const auto e, await_event([kind](const ClientEvent& ev) { return kind_of(ev) == kind; }, timeout));
        (void)e;
        return ok();
    }
};

Result<std::string> default_client_state_dir() {
    if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && *xdg == '/') {
        return std::string(xdg) + "/libsim/keys";
    }
    if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0') {
        return std::string(home) + "/.config/libsim/keys";
    }
    return Error{Errc::invalid_argument,
                 "no default directory for the client state: neither XDG_CONFIG_HOME nor HOME is set (give "
                 "ClientOptions::state.file)"};
}

std::string client_state_file_name(std::string_view server_id, std::string_view user) {
    std::string name = std::string(server_id) + "-" + std::string(user) + ".db";
    for (char& c : name) {
        if (c == ':' || c == '/' || c == '[' || c == ']') {
            c = '_';
        }
    }
    return name;
}

Result<std::string> default_client_state_path(std::string_view server_id, std::string_view user) {
    if (user.empty()) {
        return Error{Errc::invalid_argument,
                     "the client state needs ClientOptions::state.user (it names the default file) or state.file"};
    }
    SIM_TRY(auto dir, default_client_state_dir());
    return dir + "/" + client_state_file_name(server_id, user);
}

namespace {

/// Create `dir` and its missing parents; the state's own directory with mode 0700 (an existing one is left as is).
Status make_state_dir(const std::string& dir) {
    std::error_code ec;
    if (std::filesystem::create_directories(dir, ec)) {
        std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
    }
    if (ec) {
        return Error{Errc::io_error, "cannot create the client state directory '" + dir + "': " + ec.message()};
    }
    return ok();
}

}  // namespace

Result<std::unique_ptr<ClientState>> open_client_state(const ClientStateOptions& o, std::string_view server_id) {
    if (o.in_memory) {
        return make_memory_client_state();
    }
    if (o.password.empty()) {
        return Error{Errc::invalid_argument,
                     "ClientOptions::state.password is empty: the client state file (identity key, sessions, "
                     "outbox) is sealed under it. Set state.in_memory for a throwaway identity that peers see as "
                     "a new key on every run"};
    }
    std::string path = o.file;
    if (path.empty()) {
        SIM_TRY(path, default_client_state_path(server_id, o.user));
        // Only the default's directory is made: a file named by the application is where it said, or an error.
        SIM_TRY_STATUS(make_state_dir(path.substr(0, path.rfind('/'))));
    }
    auto state = open_client_state(path, o.password);
    if (!state) {
        const auto& e = state.error();
        if (e.code == Errc::auth_failed) {
            return Error{e.code, "wrong password for the client state file '" + path + "'"};
        }
        if (e.code == Errc::busy) {
            return Error{e.code, "the client state file '" + path + "' is in use by another client"};
        }
        return Error{e.code, "client state file '" + path + "': " + e.message()};
    }
    return std::move(*state);
}

Client::Client(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

Client::~Client() {
    close();
}

Result<std::unique_ptr<Client>> Client::connect(const ClientOptions& options,
                                                std::function<bool(const std::string&)> ask_trust) {
    auto impl = std::make_unique<Impl>();
    impl->max_events = options.max_queued_events;
    if (options.known_servers_file.empty()) {
        impl->known = std::make_unique<MemoryKnownServers>();
    } else {
        SIM_TRY(auto file, FileKnownServers::open(options.known_servers_file));
        impl->known = std::move(file);
    }
    ClientConfig config = options.config;
    if (config.handshake.server_id.empty()) {
        config.handshake.server_id = options.host + ":" + std::to_string(options.port);
    }
    if (config.handshake.trust == TrustMode::ask && !ask_trust) {
        return Error{Errc::invalid_argument, "TrustMode::ask needs an ask_trust callback"};
    }
    if (config.state == nullptr) {
        SIM_TRY(impl->state, open_client_state(options.state, config.handshake.server_id));
        config.state = impl->state.get();
    }
    auto* raw = impl.get();
    SIM_TRY(impl->core, ClientCore::create(std::move(config), *impl->known, *impl->rng, steady_clock(),
                                           [raw](const ClientEvent& e) { raw->push(e); }));
    net::ConnectOptions net_options;
    net_options.connect_timeout = options.connect_timeout;
    net_options.limits.handshake_timeout = options.connect_timeout;
    net_options.pool = options.io_pool;
    auto core = impl->core;
    SIM_TRY(impl->tcp, net::TcpClient::connect(options.host, options.port, net_options,
                                               [core](std::shared_ptr<ConnectionOutput> out, const std::string&) {
                                                   if (!core->attach(std::move(out))) {
                                                       return std::shared_ptr<ConnectionHandler>{};
                                                   }
                                                   return std::static_pointer_cast<ConnectionHandler>(core);
                                               }));
    for (;;) {
        auto e = impl->take(
            [](const ClientEvent& ev) {
                return std::holds_alternative<ChannelReadyEvent>(ev) ||
                       std::holds_alternative<TrustRequiredEvent>(ev) || error_of(ev);
            },
            options.connect_timeout);
        if (!e) {
            return e.error();
        }
        if (const auto* trust = std::get_if<TrustRequiredEvent>(&*e)) {
            SIM_TRY_STATUS(impl->core->trust(ask_trust(trust->fingerprint)));
            continue;
        }
        const auto* ready = std::get_if<ChannelReadyEvent>(&*e);
        if (ready == nullptr) {
            const auto err = *error_of(*e);
            return err.code == Errc::ok ? Error{Errc::handshake_failed, "connection closed"} : err;
        }
        impl->fingerprint = ready->fingerprint;
        impl->push_front(*e);  // the application may want it too (first_contact, suite)
        break;
    }
    auto* p = impl.get();
    // Probes and keepalives every period; in between, the outbox's own pace (pump at next_wakeup).
    p->ticker = std::thread([p, period = options.tick_interval] {
        const auto now = [] { return TimePoint(std::chrono::steady_clock::now()); };
        auto next_tick = now() + period;
        std::unique_lock lock(p->mutex);
        while (!p->stop_ticker) {
            lock.unlock();
            const auto due = p->core->next_wakeup();
            lock.lock();
            p->planned_wake = due && *due < next_tick ? *due : next_tick;
            if (p->cv.wait_until(lock, p->planned_wake, [p] { return p->stop_ticker || p->poke_ticker; }) &&
                p->stop_ticker) {
                break;
            }
            p->poke_ticker = false;
            lock.unlock();
            if (now() >= next_tick) {
                p->core->tick();
                next_tick = now() + period;
            } else {
                p->core->pump();
            }
            lock.lock();
        }
    });
    return std::unique_ptr<Client>(new Client(std::move(impl)));
}

namespace {
Credentials password_credentials(CredentialKind kind, std::string_view password) {
    return Credentials{kind, to_bytes<SecureBytes>(as_bytes(password))};
}
}  // namespace

Status Client::login(std::string_view user, std::string_view password, std::string_view destination, Duration timeout) {
    SIM_TRY_STATUS(m_impl->core->login(user, password_credentials(CredentialKind::password, password), destination));
    return m_impl->await(ClientEventKind::authenticated, timeout);
}

Status Client::login_with_token(std::string_view user, ByteView token, std::string_view destination, Duration timeout) {
    SIM_TRY_STATUS(
        m_impl->core->login(user, Credentials{CredentialKind::token, to_bytes<SecureBytes>(token)}, destination));
    return m_impl->await(ClientEventKind::authenticated, timeout);
}

Status Client::register_user(std::string_view user, std::string_view password, Duration timeout) {
    SIM_TRY_STATUS(m_impl->core->login(user, password_credentials(CredentialKind::register_password, password), {}));
    return m_impl->await(ClientEventKind::authenticated, timeout);
}

Status Client::link_device(std::string_view user, std::string_view password,
                           const std::function<void(const LinkCodeEvent&)>& show_code, Duration timeout) {
    SIM_TRY_STATUS(m_impl->core->login(
        user, Credentials{CredentialKind::password, to_bytes<SecureBytes>(as_bytes(password)), DeviceId{0}}, {}));
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        const auto left = std::max(Duration::zero(), std::chrono::duration_cast<Duration>(
                                                         deadline - std::chrono::steady_clock::now()));
        SIM_TRY(const auto e, m_impl->await_event(
                                  [](const ClientEvent& ev) {
                                      return kind_of(ev) == ClientEventKind::authenticated ||
                                             kind_of(ev) == ClientEventKind::link_code;
                                  },
                                  left));
        const auto* code = std::get_if<LinkCodeEvent>(&e);
        if (code == nullptr) {
            return ok();  // authenticated: approved (or registered as the account's first device)
        }
        if (show_code) {
            show_code(*code);
        }
    }
}

Status Client::approve_device(std::string_view code, Duration timeout) {
    SIM_TRY_STATUS(m_impl->core->approve_device(code));
    return m_impl->await_own_list(timeout);
}

Status Client::remove_device(DeviceId device, Duration timeout) {
    SIM_TRY_STATUS(m_impl->core->remove_device(device));
    return m_impl->await_own_list(timeout);
}

Result<std::vector<DeviceInfo>> Client::devices(Duration timeout) {
    SIM_TRY_STATUS(m_impl->core->request_devices());
    SIM_TRY(auto e, m_impl->await_event(
                        [](const ClientEvent& ev) { return kind_of(ev) == ClientEventKind::device_info; }, timeout));
    return std::get<DeviceInfoEvent>(std::move(e)).devices;
}

Status Client::change_password(std::string_view old_password, std::string_view new_password, Duration timeout) {
    SIM_TRY_STATUS(m_impl->core->change_password(old_password, new_password));
    return m_impl->await(ClientEventKind::password_changed, timeout);
}

Status Client::open(std::string_view peer) {
    return m_impl->core->open(peer);
}
Result<MessageId> Client::send(std::string_view peer, std::string_view text) {
    auto id = m_impl->core->send(peer, text);
    m_impl->poke_if_due();
    return id;
}
Status Client::leave(std::string_view peer) {
    return m_impl->core->leave(peer);
}
Status Client::logout(std::uint8_t revoke) {
    return m_impl->core->logout(revoke);
}

Result<ClientEvent> Client::receive(Duration timeout) {
    return m_impl->take([](const ClientEvent&) { return true; }, timeout);
}

Result<ClientEvent> Client::wait_for_kind(ClientEventKind kind, std::string_view peer, Duration timeout) {
    return m_impl->take(
        [kind, peer](const ClientEvent& e) { return kind_of(e) == kind && (peer.empty() || peer_of(e) == peer); },
        timeout);
}

void Client::set_event_notifier(std::function<void()> notify) {
    const std::lock_guard lock(m_impl->mutex);
    m_impl->notifier = std::move(notify);
}

ClientCore& Client::core() noexcept {
    return *m_impl->core;
}

std::string Client::server_fingerprint() const {
    return m_impl->fingerprint;
}

bool Client::closed() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->closed || m_impl->stop_ticker;
}

void Client::close() {
    if (!m_impl) {
        return;
    }
    {
        const std::lock_guard lock(m_impl->mutex);
        m_impl->stop_ticker = true;
    }
    m_impl->cv.notify_all();
    if (m_impl->ticker.joinable()) {
        m_impl->ticker.join();
    }
    if (m_impl->tcp) {
        m_impl->tcp->close();
    }
}

}  // namespace sim
