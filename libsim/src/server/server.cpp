// The sans-IO server core (docs/protocol.md section 5).
#include "delivery.h"
#include "device_directory.h"
#include "device_upload.h"
#include "fanout.h"
#include "group_commit.h"
#include "histogram.h"
#include "presence.h"
#include "router.h"

#include "../proto/devices.h"
#include "../proto/presence.h"

#include <sim/channel.h>
#include <sim/crypto.h>
#include <sim/e2e.h>
#include <sim/messages.h>
#include <sim/server.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <utility>

namespace sim {

namespace server_detail {
class ServerConnection;
}

namespace {

std::string address_only(const std::string& peer) {
    // "1.2.3.4:5678" or "[::1]:5678" -> the address part; throttling is per address, not per port.
    const auto colon = peer.rfind(':');
    return colon == std::string::npos ? peer : peer.substr(0, colon);
}

/// Bounds of the in-memory list of who waits for whose prekeys (names that never publish stay until a restart).
constexpr std::size_t max_prekey_waiters = 1'000;          // per awaited user
constexpr std::size_t max_prekey_awaited_users = 100'000;  // users awaited at all

/// A throttled refusal says when to try again (at least 1 s); other errors pass unchanged.
Error with_retry_after(Error err, Duration retry_after) {
    if (err.code == Errc::throttled) {
        const auto secs = std::chrono::duration_cast<std::chrono::seconds>(retry_after).count();
        err.detail = "retry after " + std::to_string(std::max<long long>(1, secs)) + " s";
    }
    return err;
}

store::WallTime system_wall_clock() {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

}  // namespace

// ---------------------------------------------------------------- shared state

struct ServerCore::Impl : std::enable_shared_from_this<ServerCore::Impl> {
    ServerConfig config;
    auth::Authenticator& authenticator;
    auth::SessionTokens& tokens;
    auth::ConversationKeyVault* vault;
    store::PrekeyStore* prekeys;
    store::MessageStore* messages;
    Executor& workers;
    Rng& rng;
    const Clock& clock;
    Bytes static_public;
    std::unique_ptr<server_detail::RoutingBus> bus;  // in-process, or over NATS with ServerConfig::broker
    server_detail::Router router;
    server_detail::Presence presence;  // contacts, hiding, presence subscriptions (docs/protocol.md 6.10)
    std::shared_ptr<server_detail::GroupCommit> commit;
    store::DeviceStore* devices = nullptr;  // null: device 1 only (ServerCore::create)
    /// The active devices of each user a message must cover (6.5); a cache of `devices`.
    std::unique_ptr<server_detail::DeviceDirectory> directory;
    std::shared_ptr<server_detail::Delivery> delivery;  // every message goes through it (mailboxes)
    Bytes limits_payload;                               // the `limits` frame every login gets (6.6)

    std::mutex prekey_mutex;
    std::set<std::string> has_prekeys;  // users seen with published prekeys (a cache: prekeys are never unpublished)
    /// user -> who asked for that user's bundle while there was none: told (KEYGEN) when the user publishes
    /// prekeys, if online then (docs/protocol.md 6.2). In memory: a client asks again after a reconnect.
    std::map<std::string, std::set<std::string>> prekey_waiters;

    /// Devices being linked on this node, by (user, device): the only way to reach them (a pending device is not
    /// attached to the bus, so nothing for the account reaches it).
    std::mutex linking_mutex;
    std::map<server_detail::MailboxId, std::weak_ptr<server_detail::ServerConnection>> linking;
    /// The connection of a device being linked on this node, or null.
    std::shared_ptr<server_detail::ServerConnection> linking_device(const server_detail::MailboxId& device);

    std::atomic<std::size_t> connections{0};
    /// Open connections by phase (ServerStats::connections_*), moved on each phase change.
    enum class ConnState : std::uint8_t { handshake, unauthenticated, authenticated, none };
    std::array<std::atomic<std::size_t>, 3> conn_states{};
    std::atomic<std::uint64_t> logins_ok{0};
    std::atomic<std::uint64_t> logins_failed{0};
    std::atomic<std::uint64_t> logins_throttled{0};
    // X25519 and a round trip: 0.1 ms .. 1 s
    server_detail::LatencyHistogram handshake_latency{
        server_detail::LatencyHistogram::steps_1_2_5(std::chrono::microseconds(100), std::chrono::seconds(1))};
    // the password hash dominates (bcrypt cost 12 is about 0.25 s a core): 1 ms .. 10 s
    server_detail::LatencyHistogram login_latency{
        server_detail::LatencyHistogram::steps_1_2_5(std::chrono::milliseconds(1), std::chrono::seconds(10))};
    std::atomic<std::uint64_t> next_conn_id{1};

    Impl(ServerConfig c, auth::Authenticator& a, auth::SessionTokens& t, auth::ConversationKeyVault* v,
         store::PrekeyStore* p, store::MessageStore* m, Executor& w, Rng& r, const Clock& cl,
         std::unique_ptr<server_detail::RoutingBus> b, store::DeviceStore* d, store::ContactStore* contacts)
        : config(std::move(c)),
          authenticator(a),
          tokens(t),
          vault(v),
          prekeys(p),
          messages(m),
          workers(w),
          rng(r),
          clock(cl),
          bus(std::move(b)),
          router(
              *bus, config.conversation_policy, v, r, [this] { return wall_now(); },
              [this](LogLevel l, std::string_view msg) { log(l, msg); }),
          presence(contacts, server_detail::Presence::default_max_contacts,
                   [this](LogLevel l, std::string_view msg) { log(l, msg); }) {
        router.set_shown([this](const std::string& user) { return presence.visible(user); });  // 6.10
        commit = std::make_shared<server_detail::GroupCommit>(
            *messages, config.commit_executor != nullptr ? *config.commit_executor : workers, clock);
        devices = d;
        directory =
            std::make_unique<server_detail::DeviceDirectory>(d, clock, server_detail::DeviceDirectory::Options{});
        delivery = std::make_shared<server_detail::Delivery>(
            *messages, commit, router, *bus,
            server_detail::Delivery::Limits{config.max_stored_per_recipient, config.max_mailbox_bytes,
                                            config.max_sender_bytes, config.max_store_bytes, config.min_free_bytes,
                                            config.delivery_window},
            [this] { return wall_now(); }, [this](LogLevel l, std::string_view msg) { log(l, msg); },
            config.store_free_space, directory.get());
        // Another node committed for a device attached here: drained on a worker (never on the bus's thread).
        bus->on_woken([weak = std::weak_ptr<server_detail::Delivery>(delivery), &w = workers](const auto& mailbox) {
            if (const auto d = weak.lock()) {
                d->woken(mailbox, w);
            }
        });
        ServerLimits limits;
        limits.messages_per_second = static_cast<std::uint32_t>(std::clamp(config.messages_per_second, 1.0, 1e9));
        limits.message_burst = std::max<std::uint32_t>(1, config.message_burst);
        limits.window = std::max<std::uint16_t>(1, config.send_window);
        limits_payload = encode_server_limits(limits);
    }

    [[nodiscard]] bool end_to_end() const { return config.conversation_mode == ConversationMode::end_to_end; }

    /// Whether `user` has published prekeys. Errc::storage_error.
    Result<bool> published(const std::string& user) {
        {
            const std::lock_guard lock(prekey_mutex);
            if (has_prekeys.count(user) != 0) {
                return true;
            }
        }
        SIM_TRY(const auto st, prekeys->prekey_status(user, first_device));
        if (st.identity_key) {
            const std::lock_guard lock(prekey_mutex);
            has_prekeys.insert(user);
        }
        return st.identity_key.has_value();
    }

    /// The prekeys status frame for `user` (docs/protocol.md 6.1). Errc::storage_error.
    Result<Frame> prekey_status_frame(const std::string& user, DeviceId device) {
        SIM_TRY(const auto st, prekeys->prekey_status(user, device));
        return Frame{FrameType::prekeys, 0, std::string(server_name), user, encode_prekey_status(st)};
    }

    [[nodiscard]] store::WallTime wall_now() const {
        return config.wall_clock ? config.wall_clock() : system_wall_clock();
    }

    /// A session token for `user`'s next login; empty when none could be issued (the login or password change
    /// still succeeds, the client logs in with the password next time).
    IssuedSessionToken issue_token(const std::string& user, DeviceId device) {
        IssuedSessionToken issued;
        if (auto token = tokens.issue(user, device, wall_now(), config.token_ttl)) {
            issued.token = std::move(token->token);
            issued.expires_unix_ms = token->expires.time_since_epoch().count();
        }
        return issued;
    }

    void log(LogLevel level, std::string_view message) const {
        if (config.log) {
            config.log(level, message);
        }
    }
};

// ---------------------------------------------------------------- one connection

namespace server_detail {

class ServerConnection final : public ConnectionHandler,
                               public Peer,
                               public std::enable_shared_from_this<ServerConnection> {
public:
    ServerConnection(std::shared_ptr<ServerCore::Impl> core, std::shared_ptr<ConnectionOutput> output, std::string peer,
                     std::uint64_t id)
        : m_core(std::move(core)),
          m_output(std::move(output)),
          m_peer(std::move(peer)),
          m_id(id),
          m_decoder(m_core->config.max_frame_size),
          m_tokens_left(static_cast<double>(m_core->config.message_burst)),
          m_last_refill(m_core->clock.now()),
          m_accepted(m_last_refill) {}

    /// Counted as an open connection in the handshake phase (once accepted; on_closed takes it out).
    void count_open() {
        m_core->connections.fetch_add(1);
        const std::lock_guard lock(m_mutex);
        count_as(ServerCore::Impl::ConnState::handshake);
    }

    Status init_handshake() {
        ServerHandshakeConfig cfg;
        cfg.static_private_key = m_core->config.static_private_key;
        cfg.suites = m_core->config.channel_policy;
        cfg.session.rotation = m_core->config.channel_rotation;
        cfg.features = {ChannelFeature::presence};
        SIM_TRY(auto hs, ServerHandshake::create(std::move(cfg), m_core->rng, m_core->clock));
        m_handshake.emplace(std::move(hs));
        return ok();
    }

    // ------------------------------------------------------------ ConnectionHandler

    void on_bytes(ByteView data) override {
        const std::lock_guard lock(m_mutex);
        if (m_phase == Phase::closed) {
            return;
        }
        m_decoder.feed(data);
        for (;;) {
            auto next = m_decoder.next();
            if (!next) {
                fail(next.error());
                return;
            }
            if (!next->has_value()) {
                return;
            }
            handle_frame(std::move(**next));
            if (m_phase == Phase::closed) {
                return;
            }
        }
    }

    void on_closed(Errc reason) override {
        std::string user;
        DeviceId device = first_device;
        std::string label;
        bool pinned = false;
        {
            const std::lock_guard lock(m_mutex);
            pinned = std::exchange(m_pinned, false);
            m_phase = Phase::closed;
            count_as(ServerCore::Impl::ConnState::none);
            user = m_user;
            device = m_device;
            label = who();
            if (m_linking) {
                stop_linking();
                user.clear();  // never attached: nothing to let go of
            }
        }
        if (!user.empty()) {
            const server_detail::MailboxId mailbox{user, device};
            m_core->router.disconnect(mailbox, this);
            m_core->presence.gone(mailbox, this);
            m_core->delivery->logout(mailbox, this);
        }
        if (pinned) {
            m_core->directory->unpin(m_pinned_user);
        }
        {
            const std::lock_guard lock(m_send_mutex);
            m_send.reset();
            m_output.reset();
        }
        m_core->connections.fetch_sub(1);
        m_core->log(LogLevel::info, label + " disconnected: " + describe(reason));
    }

    // ------------------------------------------------------------ Peer (called by the router)

    void deliver(const Frame& frame) override {
        forget_changed_devices(frame);
        const std::lock_guard lock(m_send_mutex);
        send_locked(frame);
    }

    void kick(Errc code, std::string_view detail) override {
        deliver(make_error_frame(code, detail));
        const std::lock_guard lock(m_send_mutex);
        if (m_output) {
            m_output->close(code);
        }
    }

private:
    enum class Phase : std::uint8_t { handshake, established, logging_in, authenticated, closed };

    /// Move this connection's count to `state` (ServerStats::connections_*). Caller holds m_mutex.
    void count_as(ServerCore::Impl::ConnState state) {
        using S = ServerCore::Impl::ConnState;
        if (m_counted != S::none) {
            m_core->conn_states[static_cast<std::size_t>(m_counted)].fetch_sub(1);
        }
        if (state != S::none) {
            m_core->conn_states[static_cast<std::size_t>(state)].fetch_add(1);
        }
        m_counted = state;
    }

    // ------------------------------------------------------------ sending

    void send_locked(const Frame& frame) {
        if (!m_output || !m_send) {
            return;
        }
        auto inner = encode_frame(frame, max_inner_frame_size(m_core->config.max_frame_size));
        if (!inner) {
            return;
        }
        auto record = m_send->seal(*inner);
        secure_zero(inner->data(), inner->size());
        if (!record) {
            m_output->close(record.code());
            return;
        }
        Frame outer{FrameType::record, 0, {}, {}, std::move(*record)};
        auto bytes = encode_frame(outer, m_core->config.max_frame_size);
        if (bytes) {
            m_output->send(std::move(*bytes));
        }
    }

    void send_plain(const Frame& frame) {
        const std::lock_guard lock(m_send_mutex);
        if (!m_output) {
            return;
        }
        if (auto bytes = encode_frame(frame, m_core->config.max_frame_size)) {
            m_output->send(std::move(*bytes));
        }
    }

    void send(const Frame& frame) {
        const std::lock_guard lock(m_send_mutex);
        send_locked(frame);
    }

    /// Report an error to the client (encrypted once the channel is up) and close. Caller holds m_mutex.
    void fail(const Error& error) {
        if (m_phase == Phase::closed) {
            return;
        }
        m_core->log(LogLevel::info, who() + " closed: " + error.message());
        const bool channel_up = m_phase != Phase::handshake;
        m_phase = Phase::closed;
        m_handshake.reset();
        m_recv.reset();
        const std::lock_guard lock(m_send_mutex);
        if (channel_up) {
            send_locked(make_error_frame(error.code, error.detail));
        }
        m_send.reset();
        if (m_output) {
            m_output->close(error.code);
        }
    }

    // ------------------------------------------------------------ receiving

    void handle_frame(Frame frame) {
        switch (m_phase) {
            case Phase::handshake:
                if (frame.type != FrameType::handshake) {
                    fail(Error{Errc::invalid_state, "expected a handshake frame"});
                    return;
                }
                handle_handshake(frame.payload);
                return;
            case Phase::established:
            case Phase::logging_in:
            case Phase::authenticated: {
                if (frame.type != FrameType::record) {
                    fail(Error{Errc::invalid_state, "expected a record frame"});
                    return;
                }
                auto plain = m_recv->open(frame.payload);
                if (!plain) {
                    fail(plain.error());  // the channel is fail-closed: forged, replayed or reordered records end it
                    return;
                }
                auto inner = decode_frame(*plain, max_inner_frame_size(m_core->config.max_frame_size));
                secure_zero(plain->data(), plain->size());
                if (!inner) {
                    fail(inner.error());
                    return;
                }
                if (is_transport_frame(inner->type)) {
                    fail(Error{Errc::bad_field, "transport frame inside a record"});
                    return;
                }
                if (m_phase == Phase::logging_in) {
                    if (m_pending.size() >= m_core->config.max_frames_during_login) {
                        fail(Error{Errc::rate_limited, "too many frames before the login completed"});
                        return;
                    }
                    m_pending.push_back(std::move(*inner));
                    return;
                }
                handle_inner(std::move(*inner));
                return;
            }
            case Phase::closed:
                return;
        }
    }

    void handle_handshake(ByteView message) {
        if (const auto st = m_handshake->read_message(message); !st) {
            fail(st.error());
            return;
        }
        if (m_handshake->next_action() == ChannelAction::write_message) {
            auto reply = m_handshake->write_message();
            if (!reply) {
                fail(reply.error());
                return;
            }
            send_plain(Frame{FrameType::handshake, 0, {}, {}, std::move(*reply)});
            if (m_handshake->next_action() == ChannelAction::failed) {
                fail(m_handshake->failure());  // msg2 carried the refusal (no common suite)
                return;
            }
        }
        if (m_handshake->next_action() != ChannelAction::complete) {
            return;
        }
        auto keys = m_handshake->finish();
        m_handshake.reset();
        if (!keys) {
            fail(keys.error());
            return;
        }
        {
            const std::lock_guard lock(m_send_mutex);
            m_send.emplace(std::move(keys->send));
            if (m_output) {
                m_output->established();
            }
        }
        m_recv.emplace(std::move(keys->recv));
        m_speaks_presence = has_feature(keys->features, ChannelFeature::presence);
        m_phase = Phase::established;
        count_as(ServerCore::Impl::ConnState::unauthenticated);
        m_core->handshake_latency.observe(m_core->clock.now() - m_accepted);
        m_core->log(LogLevel::debug,
                    "conn " + std::to_string(m_id) + " channel up, suite " + std::string(suite_name(keys->suite)));
    }

    void handle_inner(Frame frame) {
        if (m_phase == Phase::established) {
            if (frame.type != FrameType::init) {
                fail(Error{Errc::not_authenticated, "log in first (init)"});
                return;
            }
            start_login(std::move(frame));
            return;
        }
        if (m_linking) {
            if (m_core->clock.now() - m_login_started > m_core->config.link_timeout) {
                fail(Error{Errc::timeout, "the link was not approved in time; log in again to link this device"});
                return;
            }
            if (frame.type != FrameType::link && frame.type != FrameType::devices && frame.type != FrameType::close) {
                fail(Error{Errc::device_pending, "this device is waiting to be linked by one of the account's devices"});
                return;
            }
        }
        switch (frame.type) {
            case FrameType::init:
                handle_init(frame);
                return;
            case FrameType::probe:
                handle_probe(frame);
                return;
            case FrameType::message:
                handle_message(frame);
                return;
            case FrameType::close:
                handle_close(frame);
                return;
            case FrameType::prekeys:
                handle_prekeys(frame);
                return;
            case FrameType::ack:
                handle_ack(frame);
                return;
            case FrameType::passwd:
                handle_passwd(std::move(frame));
                return;
            case FrameType::link:
                handle_link(frame);
                return;
            case FrameType::devices:
                handle_devices(frame);
                return;
            case FrameType::presence:
                handle_presence(frame);
                return;
            default:
                fail(Error{Errc::bad_field, "frame type not allowed from a client"});
                return;
        }
    }

    // ------------------------------------------------------------ login

    void start_login(Frame frame) {
        auto creds = decode_credentials(frame.payload);
        secure_zero(frame.payload.data(), frame.payload.size());
        if (!creds) {
            fail(creds.error());
            return;
        }
        if (creds->kind == CredentialKind::none) {
            fail(Error{Errc::not_authenticated, "log in first (init)"});
            return;
        }
        m_phase = Phase::logging_in;
        m_login_started = m_core->clock.now();
        if (auto name = auth::canonical_username(frame.source)) {
            m_login_name = std::move(*name);
        }
        auto self = shared_from_this();
        auto job = [self, source = frame.source, destination = frame.destination,
                    creds = std::make_shared<Credentials>(std::move(*creds))]() {
            self->run_login(source, destination, *creds);
        };
        if (!m_core->workers.submit(std::move(job))) {
            fail(Error{Errc::busy, "login queue full, try again"});
        }
    }

    /// On a worker thread: the slow part (password hash, database).
    void run_login(const std::string& source, const std::string& destination, const Credentials& creds) {
        auto& core = *m_core;
        const std::string address = address_only(m_peer);
        const std::string_view secret{reinterpret_cast<const char*>(creds.secret.data()), creds.secret.size()};
        Result<std::string> user{Errc::internal};
        IssuedSessionToken issued;
        bool registered = false;
        Duration retry_after{0};
        DeviceId token_device = first_device;
        if (creds.kind == CredentialKind::token) {
            auto name = auth::canonical_username(source);
            auto owner = core.tokens.validate(creds.secret, wall_now());
            if (!name || !owner || owner->username != *name) {
                user = Error{Errc::auth_rejected, "session token not valid for this user"};
            } else {
                user = std::move(owner->username);
                token_device = owner->device;
            }
        } else {
            auto r = creds.kind == CredentialKind::register_password
                         ? core.authenticator.register_user(source, secret, address)
                         : core.authenticator.login(source, secret, address);
            retry_after = r.retry_after;
            if (r.ok()) {
                user = r.outcome->username;
                registered = r.outcome->created;
            } else {
                user = r.outcome.error();
            }
        }
        LoginDevice device;
        if (user) {
            if (auto d = login_device(*user, creds, token_device, registered)) {
                device = *d;
            } else {
                user = d.error();
            }
        }
        if (user && creds.kind != CredentialKind::token && !device.pending) {
            issued = core.issue_token(*user, device.id);
        }
        if (creds.device) {
            issued.device = device.id;  // the answer names the device when the init did (6.9)
        }
        if (user && core.devices != nullptr) {
            (void)core.devices->touch_device(*user, device.id, wall_now());  // "last seen" only
        }
        finish_login(std::move(user), destination, issued, retry_after, device);
    }

    struct LoginDevice {
        DeviceId id = first_device;
        bool pending = false;  ///< a new installation of an existing account, to be linked
    };

    /// The device a login serves (docs/protocol.md 6.9). Without a device store every account has device 1 only.
    Result<LoginDevice> login_device(const std::string& user, const Credentials& creds, DeviceId token_device,
                                    bool registered) {
        auto* store = m_core->devices;
        if (creds.kind == CredentialKind::token) {
            if (creds.device && *creds.device != token_device) {
                return Error{Errc::bad_field, "a session token logs in the device it was issued to"};
            }
            return LoginDevice{token_device, false};
        }
        const DeviceId asked = creds.device.value_or(first_device);
        if (asked == 0 && registered) {
            return LoginDevice{first_device, false};  // the account's first device, made with it
        }
        if (asked == 0) {
            if (store == nullptr) {
                return Error{Errc::not_implemented, "this server does not link devices"};
            }
            const auto now = wall_now();
            const auto expire = now - std::chrono::ceil<std::chrono::milliseconds>(m_core->config.link_timeout);
            SIM_TRY(const DeviceId id, store->add_device(user, "", now, expire, m_core->config.max_devices));
            return LoginDevice{id, true};
        }
        if (store == nullptr) {
            if (asked != first_device) {
                return Error{Errc::device_unknown, "the account has no such active device"};
            }
            return LoginDevice{first_device, false};
        }
        SIM_TRY(const auto record, store->find_device(user, asked));
        if (!record || record->state != store::DeviceState::active) {
            return Error{Errc::device_unknown, "the account has no such active device"};
        }
        return LoginDevice{asked, false};
    }

    void finish_login(Result<std::string> user, const std::string& destination, const IssuedSessionToken& issued,
                      Duration retry_after, LoginDevice device) {
        const std::lock_guard lock(m_mutex);
        if (m_phase != Phase::logging_in) {
            return;  // closed meanwhile
        }
        m_core->login_latency.observe(m_core->clock.now() - m_login_started);
        if (!user) {
            const Error err = with_retry_after(user.error(), retry_after);
            (err.code == Errc::throttled ? m_core->logins_throttled : m_core->logins_failed).fetch_add(1);
            fail(err);
            return;
        }
        m_core->logins_ok.fetch_add(1);
        m_user = *user;
        m_device = device.id;
        m_phase = Phase::authenticated;
        count_as(ServerCore::Impl::ConnState::authenticated);
        {
            const std::lock_guard send_lock(m_send_mutex);
            if (m_output) {
                m_output->authenticated();  // the transport ends the login deadline (sim/transport.h)
            }
        }
        m_core->log(LogLevel::info, "conn " + std::to_string(m_id) + " from " + m_peer + " authenticated as " + m_user +
                                        (device.pending ? " (a device being linked)" : ""));
        // The limits come first, so that a client knows its pace before it re-sends its outbox (6.6).
        send(Frame{FrameType::limits, 0, std::string(server_name), m_user, m_core->limits_payload});
        if (device.pending) {
            start_linking(issued);
        } else {
            become_active(destination, issued);
        }
        auto pending = std::move(m_pending);
        m_pending.clear();
        for (auto& f : pending) {
            if (m_phase != Phase::authenticated) {
                return;
            }
            handle_inner(std::move(f));
        }
    }

    /// The device this connection serves is active: its prekeys, its token, its mailbox and conversations. Caller
    /// holds m_mutex.
    void become_active(const std::string& destination, const IssuedSessionToken& issued) {
        // The prekey status too (6.1): a client that logs out right after ack_init 1 has queued its upload first.
        if (m_core->end_to_end() && m_core->prekeys != nullptr) {
            auto status = m_core->prekey_status_frame(m_user, m_device);
            if (status) {
                send(*status);
            } else {
                m_core->log(LogLevel::error, "prekey status not read: " + status.error().message());
            }
        }
        send(Frame{FrameType::ack_init, static_cast<std::uint32_t>(AckStage::authenticated), std::string(server_name),
                   m_user, encode_session_token(issued)});
        restore_stored(m_user, {});
        // The account's active devices stay known while this connection lasts (read here at a login, on a worker).
        if (!std::exchange(m_pinned, true)) {
            m_pinned_user = m_user;
            if (const auto st = m_core->directory->pin(m_user); !st) {
                m_core->log(LogLevel::error, "devices not read: " + st.error().message());
            }
        }
        const server_detail::MailboxId mailbox{m_user, m_device};
        // Online to contacts now, or (a client that speaks presence) once its `set` said whether the user hides;
        // before the router's login, which tells waiting users (ack_init 2) only of a user who is shown.
        m_core->presence.attached(mailbox, this, !m_speaks_presence);
        m_core->router.login(mailbox, shared_from_this());
        m_core->delivery->login(mailbox, this);
        if (!destination.empty()) {
            open_conversation(destination);
        }
    }

    // ------------------------------------------------------------ devices (docs/protocol.md 6.9)

    /// A new installation waits to be linked: it is reachable only through the core's linking map (not the bus,
    /// so nothing of the account reaches it) and may send only link frames, device list requests and close.
    void start_linking(const IssuedSessionToken& issued) {
        m_linking = true;
        {
            const std::lock_guard lock(m_core->linking_mutex);
            m_core->linking[server_detail::MailboxId{m_user, m_device}] = weak_from_this();
        }
        send(Frame{FrameType::ack_init, static_cast<std::uint32_t>(AckStage::authenticated), std::string(server_name),
                   m_user, encode_session_token(issued)});
    }

    void stop_linking() {
        if (!m_linking) {
            return;
        }
        m_linking = false;
        const std::lock_guard lock(m_core->linking_mutex);
        const auto it = m_core->linking.find(server_detail::MailboxId{m_user, m_device});
        if (it != m_core->linking.end() && it->second.lock().get() == this) {
            m_core->linking.erase(it);
        }
    }

public:
    /// A list naming this device being linked was stored: it is active now. Its first token goes out with a
    /// second ack_init stage 1, then everything an active device gets at login.
    void linked() {
        const std::lock_guard lock(m_mutex);
        if (m_phase != Phase::authenticated || !m_linking) {
            return;
        }
        stop_linking();
        auto issued = m_core->issue_token(m_user, m_device);
        issued.device = m_device;
        m_core->log(LogLevel::info, who() + " linked");
        become_active({}, issued);
    }

private:
    void handle_link(const Frame& frame) {
        if (!within_rate() || !check_source(frame)) {
            return;
        }
        if (m_core->devices == nullptr) {
            refuse(Errc::not_implemented, "this server does not link devices");
            return;
        }
        auto in = decode_link(frame.payload);
        if (!in) {
            fail(in.error());
            return;
        }
        const bool allowed = m_linking ? (in->step == LinkStep::request || in->step == LinkStep::reveal ||
                                          in->step == LinkStep::abort)
                                       : (in->step == LinkStep::offer || in->step == LinkStep::grant ||
                                          in->step == LinkStep::abort);
        if (!allowed) {
            fail(Error{Errc::bad_field, "this link step is not for this device to send"});
            return;
        }
        if ((in->step == LinkStep::request) != (in->device == 0)) {
            fail(Error{Errc::bad_field, "a link request goes to device 0, every other step to one device"});
            return;
        }
        const DeviceId to = in->device;
        LinkMessage out = std::move(*in);
        out.device = m_device;
        const Frame f{FrameType::link, 0, std::string(server_name), m_user, encode_link(out)};
        if (!m_linking) {
            if (const auto target = m_core->linking_device(server_detail::MailboxId{m_user, to})) {
                target->deliver(f);
            }
        } else if (out.step == LinkStep::request) {
            (void)server_detail::deliver_to_user(*m_core->bus, m_user, f);
        } else {
            (void)m_core->bus->deliver(server_detail::MailboxId{m_user, to}, f);
        }
    }

    void handle_devices(const Frame& frame) {
        if (!within_rate() || !check_source(frame)) {
            return;
        }
        if (m_core->devices == nullptr) {
            refuse(Errc::not_implemented, "this server keeps no devices");
            return;
        }
        auto req = decode_devices_request(frame.payload);
        if (!req) {
            fail(req.error());
            return;
        }
        if (m_linking && req->op != DevicesOp::list) {
            fail(Error{Errc::device_pending, "a device being linked may only ask for device lists"});
            return;
        }
        auto& store = *m_core->devices;
        switch (req->op) {
            case DevicesOp::list: {
                std::string whose = m_user;
                if (!frame.destination.empty() && frame.destination != m_user) {
                    auto name = auth::canonical_username(frame.destination);
                    if (!name) {
                        refuse(Errc::bad_destination, "not a user name");
                        return;
                    }
                    whose = std::move(*name);
                }
                if (m_linking && whose != m_user) {
                    fail(Error{Errc::device_pending, "a device being linked may only ask for its own account's list"});
                    return;
                }
                const auto stored = store.find_device_list(whose);
                if (!stored) {
                    refuse(stored.code(), stored.error().detail);
                    return;
                }
                send_devices_reply({DevicesOp::list, whose, *stored ? (*stored)->signed_list : Bytes{}, {}});
                return;
            }
            case DevicesOp::info:
                send_device_info();
                return;
            case DevicesOp::rename:
                if (const auto st = store.rename_device(m_user, req->device, req->name); !st) {
                    refuse(st.code(), st.error().detail);
                    return;
                }
                send_device_info();
                return;
            case DevicesOp::put:
                upload_device_list(req->signed_list);
                return;
            case DevicesOp::changed:
                break;
        }
        fail(Error{Errc::bad_field, "not a devices request"});
    }

    void send_devices_reply(const DevicesReply& reply) {
        auto payload = encode_devices_reply(reply);
        if (!payload) {
            m_core->log(LogLevel::error, "devices reply not encoded: " + payload.error().message());
            return;
        }
        send(Frame{FrameType::devices, 0, std::string(server_name), m_user, std::move(*payload)});
    }

    /// The owner's view of its devices (op 2): every device, removed ones too, by id.
    void send_device_info() {
        const auto records = m_core->devices->list_devices(m_user);
        if (!records) {
            refuse(records.code(), records.error().detail);
            return;
        }
        DevicesReply reply{DevicesOp::info, {}, {}, {}};
        for (const auto& r : *records) {
            reply.devices.push_back(DeviceInfo{r.device, static_cast<DeviceStatus>(r.state), r.name, r.linked,
                                               r.last_seen});
        }
        send_devices_reply(reply);
    }

    /// op 3: check the list (server_detail::check_list_upload), store it, activate the devices it admits, remove
    /// those it leaves out, and tell the account's attached devices (op 5).
    void upload_device_list(const Bytes& signed_list) {
        auto& store = *m_core->devices;
        const auto records = store.list_devices(m_user);
        const auto stored = store.find_device_list(m_user);
        if (!records || !stored) {
            refuse(Errc::storage_error, "devices not read");
            return;
        }
        const std::uint64_t version = *stored ? (*stored)->version : 0;
        auto change = server_detail::check_list_upload(m_user, m_device, *records, version, signed_list,
                                                       m_core->config.max_devices);
        if (!change) {
            refuse(change.code(), change.error().detail);
            return;
        }
        if (const auto st = store.put_device_list(m_user, {change->list.list.version, signed_list}); !st) {
            refuse(st.code(), st.error().detail);  // stale_epoch: another device stored a newer one meanwhile
            return;
        }
        const auto now = wall_now();
        for (const auto& [device, key] : change->activate) {
            if (const auto st = store.activate_device(m_user, device, key, now); !st) {
                m_core->log(LogLevel::error, "device " + std::to_string(device) + " not activated: " + st.error().message());
            }
        }
        for (const auto device : change->remove) {
            if (const auto st = store.remove_device(m_user, device); !st) {
                m_core->log(LogLevel::error, "device " + std::to_string(device) + " not removed: " + st.error().message());
            }
        }
        m_core->log(LogLevel::info, who() + " stored device list " + std::to_string(change->list.list.version));
        // The devices messages must cover from now on (6.5), before anything is sent with the new list.
        if (const auto now_active = m_core->directory->refresh(m_user); !now_active) {
            m_core->log(LogLevel::error, "devices not read again: " + now_active.error().message());
            m_core->directory->forget(m_user);
        }
        for (const auto& [device, key] : change->activate) {
            if (const auto linked = m_core->linking_device(server_detail::MailboxId{m_user, device})) {
                linked->linked();
            }
        }
        for (const auto device : change->remove) {
            if (const auto peer = m_core->bus->local(server_detail::MailboxId{m_user, device})) {
                peer->kick(Errc::device_unknown, "this device was removed from the account");
            }
        }
        // Every attached device of the account hears of it, the uploader and a device just linked too; then the
        // attached devices of its contacts (those this node knows: docs/protocol.md 6.9).
        const auto payload = encode_devices_reply({DevicesOp::changed, m_user, signed_list, {}}).value();
        (void)server_detail::deliver_to_user(*m_core->bus, m_user,
                                             Frame{FrameType::devices, 0, std::string(server_name), m_user, payload});
        for (const auto& contact : m_core->presence.contacts_of(m_user)) {
            (void)server_detail::deliver_to_user(
                *m_core->bus, contact, Frame{FrameType::devices, 0, std::string(server_name), contact, payload});
        }
    }

    store::WallTime wall_now() const { return m_core->wall_now(); }

    // ------------------------------------------------------------ authenticated requests

    bool check_source(const Frame& frame) {
        if (frame.source != m_user) {
            auto canon = auth::canonical_username(frame.source);
            if (!canon || *canon != m_user) {
                refuse(Errc::source_mismatch, "source is not the logged-in user");
                return false;
            }
        }
        return true;
    }

    void refuse(Errc code, std::string_view detail) {
        m_core->router.count_refused(code);
        send(make_error_frame(code, detail));
    }

    /// Takes a token of the connection's bucket. Without one: counts a violation (closing the connection after
    /// too many in a row) and, when `report`, sends the error frame.
    bool within_rate(bool report = true) {
        const auto now = m_core->clock.now();
        const double elapsed = std::chrono::duration<double>(now - m_last_refill).count();
        m_last_refill = now;
        m_tokens_left = std::min(static_cast<double>(m_core->config.message_burst),
                                 m_tokens_left + elapsed * m_core->config.messages_per_second);
        if (m_tokens_left >= 1.0) {
            m_tokens_left -= 1.0;
            m_violations = 0;
            return true;
        }
        if (++m_violations >= m_core->config.max_rate_violations) {
            fail(Error{Errc::rate_limited, "flooding"});
        } else if (report) {
            refuse(Errc::rate_limited, "slow down");
        }
        return false;
    }

    void handle_init(const Frame& frame) {
        if (!check_source(frame)) {
            return;
        }
        auto creds = decode_credentials(frame.payload);
        if (!creds || creds->kind != CredentialKind::none) {
            refuse(Errc::bad_field, "already logged in: init carries no credentials now");
            return;
        }
        if (frame.destination.empty()) {
            refuse(Errc::bad_destination, "init without a destination");
            return;
        }
        open_conversation(frame.destination);
    }

    void open_conversation(const std::string& destination) {
        if (const auto name = auth::canonical_username(destination);
            m_core->end_to_end() && m_core->devices != nullptr && name && *name == m_user) {
            open_own_devices();
            return;
        }
        auto peer = canonical_peer(destination);
        if (!peer) {
            return;
        }
        m_core->presence.named(m_user, *peer);
        if (!m_core->end_to_end()) {
            // A conversation whose messages still wait for `peer` from before a restart comes back first, so that
            // a new key cannot replace the one they need (6.7).
            restore_stored(*peer, m_user);
            m_core->router.open(m_user, *peer);
            return;
        }
        // End to end (docs/protocol.md 6.2): stage 2 or 3 is informative; the initiator gets the peer's bundle.
        if (m_core->prekeys == nullptr) {
            refuse(Errc::not_implemented, "this server stores no prekeys");
            return;
        }
        m_core->router.probe(m_user, *peer);
        auto keygen = bundle_keygen(m_user, *peer);
        if (!keygen) {
            m_core->log(LogLevel::error, "prekey bundle not read: " + keygen.error().message());
            refuse(Errc::storage_error, "prekeys not available, try again later");
            return;
        }
        if (!keygen->has_value()) {
            {
                const std::lock_guard lock(m_core->prekey_mutex);
                auto& all = m_core->prekey_waiters;
                if (all.contains(*peer) || all.size() < max_prekey_awaited_users) {
                    auto& waiters = all[*peer];
                    if (waiters.size() < max_prekey_waiters) {
                        waiters.insert(m_user);
                    }
                }
            }
            auto f = make_error_frame(Errc::no_conversation, "peer has no prekeys yet: its keys follow when it has");
            f.destination = *peer;
            send(f);
            return;
        }
        send(**keygen);
    }

    /// End to end, an `init` naming the user itself: a KEYGEN of mode 3 with the user's other active devices, so the
    /// client can seal the copies of its messages for them (docs/protocol.md 6.2, 6.5); `no_conversation` when it
    /// has none with prekeys.
    void open_own_devices() {
        auto keygen = bundle_keygen(m_user, m_user, m_device);
        if (!keygen) {
            m_core->log(LogLevel::error, "prekey bundles not read: " + keygen.error().message());
            refuse(Errc::storage_error, "prekeys not available, try again later");
            return;
        }
        if (!keygen->has_value()) {
            auto f = make_error_frame(Errc::no_conversation, "your other devices have no prekeys yet");
            f.destination = m_user;
            send(f);
            return;
        }
        send(**keygen);
    }

    /// The KEYGEN that gives `to` the keys of `peer` (docs/protocol.md 6.2), using up a one-time prekey of each
    /// device: mode 2 with device 1's bundle when device 1 is the peer's only active device, else mode 3 with the
    /// peer's account key, signed device list and a bundle of each active device but `skip` that has published
    /// some. nullopt when there is none. Errc::storage_error.
    Result<std::optional<Frame>> bundle_keygen(const std::string& to, const std::string& peer, DeviceId skip = 0) {
        KeyAssignment k;
        k.mode = ConversationMode::end_to_end;
        k.suite = m_core->config.conversation_policy.preference().front();
        k.peer = peer;
        SIM_TRY(const auto active, m_core->directory->devices(peer));
        std::optional<store::StoredDeviceList> list;
        if (m_core->devices != nullptr && (skip != 0 || active != std::vector<DeviceId>{first_device})) {
            SIM_TRY(auto stored, m_core->devices->find_device_list(peer));
            list = std::move(stored);
        }
        if (!list) {
            if (skip != 0) {
                return std::optional<Frame>{};  // an account without a list has no other device
            }
            SIM_TRY(auto bundle, m_core->prekeys->take_bundle(peer, first_device));
            if (!bundle) {
                return std::optional<Frame>{};
            }
            k.bundle = std::move(*bundle);
            ask_for_prekeys_if_low(peer);
        } else {
            SIM_TRY(const auto records, m_core->devices->list_devices(peer));
            const auto first = std::find_if(records.begin(), records.end(),
                                            [](const store::DeviceRecord& r) { return r.device == first_device; });
            if (first == records.end() || first->device_key.size() != e2e::key_size) {
                return std::optional<Frame>{};  // no account key known: nothing a client could check the list with
            }
            k.account_key = first->device_key;
            k.device_list = list->signed_list;
            for (const auto d : active) {
                if (d == skip || k.device_bundles.size() == max_keygen_devices) {
                    continue;
                }
                SIM_TRY(auto bundle, m_core->prekeys->take_bundle(peer, d));
                if (bundle) {
                    k.device_bundles.push_back({d, std::move(*bundle)});
                    ask_for_prekeys_if_low(peer, d);
                }
            }
            if (k.device_bundles.empty()) {
                return std::optional<Frame>{};
            }
        }
        return std::optional<Frame>{
            Frame{FrameType::keygen, keygen_sid, std::string(server_name), to, encode_key_assignment(k)}};
    }

    /// Server-assigned mode after a restart: conversations with messages stored for `recipient` (from `sender`, or
    /// from anyone when empty) get their keys back from the vault (docs/protocol.md 6.7).
    void restore_stored(const std::string& recipient, const std::string& sender) {
        if (m_core->end_to_end()) {
            return;
        }
        const auto backlog = m_core->delivery->backlog(recipient);
        if (!backlog || backlog->messages == 0 ||
            (!sender.empty() && m_core->router.has_conversation(recipient, sender))) {
            return;
        }
        auto senders = m_core->delivery->senders(recipient);
        if (!senders) {
            m_core->log(LogLevel::error, "stored messages not read: " + senders.error().message());
            return;
        }
        if (!sender.empty()) {
            if (!senders->contains(sender)) {
                return;
            }
            *senders = {sender};
        }
        m_core->router.restore(recipient, *senders);
    }

    /// Tell device `device` of `user` (if attached) that its one-time prekey stock is low (docs/protocol.md 6.1):
    /// the status of that device, to that device only (another device would take it for a foreign identity).
    void ask_for_prekeys_if_low(const std::string& user, DeviceId device = first_device) {
        const auto st = m_core->prekeys->prekey_status(user, device);
        if (!st || st->one_time_count >= prekey_low_water) {
            return;
        }
        (void)m_core->bus->deliver(server_detail::MailboxId{user, device},
                                   Frame{FrameType::prekeys, 0, std::string(server_name), user,
                                         encode_prekey_status(*st)});
    }

    void handle_prekeys(const Frame& frame) {
        if (!within_rate() || !check_source(frame)) {
            return;
        }
        if (m_core->prekeys == nullptr) {
            refuse(Errc::not_implemented, "this server stores no prekeys");
            return;
        }
        auto upload = decode_prekey_upload(frame.payload);
        if (!upload) {
            refuse(upload.code(), upload.error().detail);
            return;
        }
        e2e::PrekeyBundle signed_part;
        signed_part.identity_key = upload->identity_key;
        signed_part.signed_prekey_id = upload->signed_prekey_id;
        signed_part.signed_prekey = upload->signed_prekey;
        signed_part.signed_prekey_signature = upload->signed_prekey_signature;
        if (const auto st = e2e::verify_bundle(signed_part); !st) {
            refuse(st.code() == Errc::invalid_key ? Errc::invalid_key : Errc::auth_failed,
                   "signed prekey signature does not verify");
            return;
        }
        if (const auto st = m_core->prekeys->set_prekeys(m_user, m_device, *upload); !st) {
            refuse(st.code(), st.error().detail);
            return;
        }
        std::set<std::string> waiters;
        {
            const std::lock_guard lock(m_core->prekey_mutex);
            m_core->has_prekeys.insert(m_user);
            if (const auto it = m_core->prekey_waiters.find(m_user); it != m_core->prekey_waiters.end()) {
                waiters = std::move(it->second);
                m_core->prekey_waiters.erase(it);
            }
        }
        for (const auto& waiter : waiters) {
            tell_waiter(waiter);
        }
    }

    /// `waiter` asked for the current user while they had no prekeys: its KEYGEN, if it is online.
    void tell_waiter(const std::string& waiter) {
        if (!server_detail::online(*m_core->bus, waiter)) {
            return;  // it asks again at its next login (its outbox is held for want of a key)
        }
        if (auto keygen = bundle_keygen(waiter, m_user); keygen && *keygen) {
            (void)server_detail::deliver_to_user(*m_core->bus, waiter, **keygen);
        }
    }

    // ------------------------------------------------------------ password change (docs/protocol.md 5.5)

    void handle_passwd(Frame frame) {
        auto change = decode_password_change(frame.payload);
        secure_zero(frame.payload.data(), frame.payload.size());
        if (!within_rate() || !check_source(frame)) {
            return;
        }
        if (!change) {
            refuse(change.code(), change.error().detail);
            return;
        }
        if (m_changing_password) {
            refuse(Errc::busy, "a password change is under way");
            return;
        }
        m_changing_password = true;
        auto job = [self = shared_from_this(), user = m_user,
                    change = std::make_shared<PasswordChange>(std::move(*change))] {
            self->run_password_change(user, *change);
        };
        if (!m_core->workers.submit(std::move(job))) {
            m_changing_password = false;
            refuse(Errc::busy, "server busy, try again");
        }
    }

    /// On a worker thread: check the old password, store the new one's hash, end every session of the user (this
    /// one too, through the session-end log) and issue a token for the next login.
    void run_password_change(const std::string& user, const PasswordChange& change) {
        auto& core = *m_core;
        const auto text = [](const SecureBytes& b) {
            return std::string_view{reinterpret_cast<const char*>(b.data()), b.size()};
        };
        auto r = core.authenticator.change_password(user, text(change.old_password), text(change.new_password),
                                                    address_only(m_peer));
        Result<IssuedSessionToken> issued{Errc::internal};
        if (!r.ok()) {
            issued = r.outcome.error();
        } else {
            if (const auto revoked = core.tokens.revoke_all(user); !revoked) {
                core.log(LogLevel::error,
                         "sessions of " + user + " not ended after a password change: " + revoked.error().message());
            }
            issued = core.issue_token(user, m_device);
        }
        const std::lock_guard lock(m_mutex);
        m_changing_password = false;
        if (m_phase != Phase::authenticated) {
            return;
        }
        if (!issued) {
            const Error err = with_retry_after(issued.error(), r.retry_after);
            refuse(err.code, err.detail);
            return;
        }
        m_core->log(LogLevel::info, who() + " changed the password");
        send(Frame{FrameType::passwd, 0, std::string(server_name), m_user, encode_session_token(*issued)});
    }

    void handle_ack(const Frame& frame) {
        if (!within_rate() || !check_source(frame)) {
            return;
        }
        // The sender is a peer, or the user itself for copies its other devices sent to this one (6.5).
        std::optional<std::string> sender;
        if (const auto self = auth::canonical_username(frame.destination); self && *self == m_user) {
            sender = m_user;
        } else {
            sender = canonical_peer(frame.destination);
        }
        if (!sender) {
            return;
        }
        auto ids = decode_ack(frame.payload);
        if (!ids) {
            refuse(ids.code(), ids.error().detail);
            return;
        }
        if (const auto st = m_core->delivery->ack(server_detail::MailboxId{m_user, m_device}, *sender, *ids); !st) {
            m_core->log(LogLevel::error, "acknowledgement not queued: " + st.error().message());
            refuse(st.code(), st.error().detail);
        }
    }

    std::optional<std::string> canonical_peer(const std::string& destination) {
        if (destination == server_name) {
            refuse(Errc::bad_destination, "the server is not a conversation peer");
            return std::nullopt;
        }
        auto peer = auth::canonical_username(destination);
        if (!peer) {
            refuse(Errc::bad_destination, "destination is not a valid user name");
            return std::nullopt;
        }
        if (*peer == m_user) {
            refuse(Errc::bad_destination, "cannot talk to yourself");
            return std::nullopt;
        }
        return std::move(*peer);
    }

    void handle_probe(const Frame& frame) {
        if (!frame.payload.empty()) {
            fail(Error{Errc::bad_field, "a probe carries no payload"});
            return;
        }
        if (frame.destination.empty()) {
            return;  // keepalive
        }
        if (!within_rate() || !check_source(frame)) {
            return;
        }
        if (auto peer = canonical_peer(frame.destination)) {
            m_core->router.probe(m_user, *peer);
        }
    }

    void handle_message(const Frame& frame) {
        if (frame.sid == 0) {
            // Unsequenced (the seed's raw frames): refusals are error frames, nothing orders it.
            if (!within_rate() || !check_source(frame)) {
                return;
            }
        } else if (!check_source(frame)) {
            return;
        }
        auto peer = canonical_peer(frame.destination);
        if (!peer) {
            return;
        }
        const auto envelope = decode_submission(frame.payload);
        if (!envelope) {
            refuse(envelope.code(), envelope.error().detail);
            return;
        }
        // The address (6.5): this pair's conversation and this connection's device. Which devices it covers is
        // checked after the stream's order (below): that refusal is one a sender recovers from.
        if (const auto st = check_address(*envelope, *peer); !st) {
            refuse(st.code(), st.error().detail);
            return;
        }
        server_detail::Delivery::Origin origin{m_user, m_device, m_id, weak_from_this(), frame.sid, m_streams};
        if (frame.sid != 0) {
            // A sequenced message (6.6): the stream's order first (costs no rate token: the sender learns where to
            // go on from), then the rate; any refusal names the message and the number the stream expects.
            if (const auto want = m_core->delivery->expected(origin, *peer); want != 0) {
                if (++m_out_of_order > 4U * m_core->config.send_window) {
                    fail(Error{Errc::rate_limited, "flooding with out-of-order messages"});
                    return;
                }
                refuse_message(*peer, envelope->id, Errc::out_of_order, want);
                return;
            }
            if (!within_rate(false)) {
                refuse_message(*peer, envelope->id, Errc::rate_limited, m_core->delivery->refused(origin, *peer));
                return;
            }
        }
        const auto refused = [&](Errc code, std::string_view detail, std::uint32_t expected = 0) {
            if (frame.sid == 0) {
                refuse(code, detail);
                return;
            }
            refuse_message(*peer, envelope->id, code,
                           expected != 0 ? expected : m_core->delivery->refused(origin, *peer));
        };
        if (!m_core->end_to_end()) {
            if (envelope->mode != ConversationMode::server_assigned) {
                refused(Errc::bad_field, "this server assigns conversation keys: envelope mode 1");
                return;
            }
            // A keyed pair; an offline destination's messages are stored behind its KEYGEN (6.7).
            if (const auto st = m_core->router.admit(m_user, *peer); !st) {
                refused(st.code(), st.error().detail);
                return;
            }
        } else {
            if (envelope->mode != ConversationMode::end_to_end) {
                refused(Errc::bad_field, "this server relays end-to-end messages: envelope mode 2");
                return;
            }
            if (m_core->prekeys == nullptr) {
                refuse(Errc::not_implemented, "this server has no prekey store");
                return;
            }
            const auto published = m_core->published(*peer);
            if (!published) {
                refused(Errc::storage_error, "try again later");
                return;
            }
            if (!*published) {
                refused(Errc::no_conversation, "peer has no prekeys");
                return;
            }
        }
        // A body for exactly each active device of the recipient and, in end-to-end mode, of the sender's other
        // devices: else refused as a whole (a message reaches all of them or none), with the current lists.
        if (const auto st = check_devices(*envelope, *peer); !st) {
            refused(st.code(), st.error().detail);
            return;
        }
        std::vector<server_detail::Delivery::Copy> copies;
        copies.reserve(envelope->bodies.size() + envelope->own_bodies.size());
        for (std::size_t i = 0; i < envelope->bodies.size(); ++i) {
            copies.push_back({envelope->bodies[i].device, device_envelope(*envelope, i), false});
        }
        for (std::size_t i = 0; i < envelope->own_bodies.size(); ++i) {
            copies.push_back(
                {envelope->own_bodies[i].device, server_detail::encode_own_copy(*envelope, i, *peer), true});
        }
        // The mailboxes in their lock order (user, then device): the recipient's and the sender's interleave by name.
        std::sort(copies.begin(), copies.end(), [&](const auto& a, const auto& b) {
            return server_detail::Delivery::mailbox_of(origin, *peer, a) <
                   server_detail::Delivery::mailbox_of(origin, *peer, b);
        });
        std::uint32_t expected = 0;
        if (const auto st = m_core->delivery->submit(origin, *peer, envelope->conversation, envelope->id,
                                                     std::move(copies), expected);
            !st) {
            refused(st.code(), st.error().detail, expected);
            return;
        }
        m_out_of_order = 0;
        m_core->presence.named(m_user, *peer);
    }

    /// docs/protocol.md 6.10: only on a connection whose handshake agreed on presence (else the type is not ours to
    /// receive, as for a server that does not know it).
    void handle_presence(const Frame& frame) {
        if (!m_speaks_presence) {
            fail(Error{Errc::bad_field, "presence was not agreed in the handshake"});
            return;
        }
        if (!check_source(frame)) {
            return;
        }
        auto m = decode_presence(frame.payload);
        if (!m) {
            fail(m.error());
            return;
        }
        const server_detail::MailboxId mailbox{m_user, m_device};
        switch (m->op) {
            case PresenceOp::set:
                if (!frame.destination.empty()) {
                    fail(Error{Errc::bad_field, "presence set names no destination"});
                    return;
                }
                m_core->presence.subscribe(mailbox, shared_from_this(), m->hidden);
                m_core->router.shown(m_user);  // users waiting for a user who is shown now hear it (ack_init 2)
                return;
            case PresenceOp::query: {
                if (!within_rate()) {
                    return;
                }
                auto peer = canonical_peer(frame.destination);
                if (!peer) {
                    return;
                }
                send(m_core->presence.query(m_user, *peer));
                return;
            }
            case PresenceOp::status:
                break;
        }
        fail(Error{Errc::bad_field, "presence status comes from the server"});
    }

    /// Errc::bad_field when `s` is not a message of the pair (m_user, peer) from this connection's device.
    Status check_address(const Submission& s, const std::string& peer) {
        if (m_pair_peer != peer) {  // one pair's id kept: a connection mostly writes to one peer at a time
            m_pair_conversation = pair_conversation_id(m_user, peer);
            m_pair_peer = peer;
        }
        if (s.conversation != m_pair_conversation) {
            return Error{Errc::bad_field, "the conversation id is not this pair's"};
        }
        if (s.sender_device != m_device) {
            return Error{Errc::bad_field, "the sender device is not this connection's"};
        }
        return {};
    }

    /// Whether `s` has one body for each active device of `peer` and one own body for each other active device of
    /// this user (server-assigned mode: no own bodies, bad_field). On a mismatch the store is read again (another
    /// node may have stored a list) and, if it still differs, the sender gets the current signed list of each side
    /// that differs (`devices` op 1) and Errc::devices_changed. Errc::storage_error.
    Status check_devices(const Submission& s, const std::string& peer) {
        if (!m_core->end_to_end() && !s.own_bodies.empty()) {
            return Error{Errc::bad_field, "this server assigns conversation keys: no copies for the sender's devices"};
        }
        auto& directory = *m_core->directory;
        const auto covered = [&](bool fresh) -> Result<server_detail::Coverage> {
            SIM_TRY(const auto theirs, fresh ? directory.refresh(peer) : directory.devices(peer));
            if (!m_core->end_to_end()) {
                return server_detail::check_coverage(s, theirs, {m_device});
            }
            SIM_TRY(const auto mine, fresh ? directory.refresh(m_user) : directory.devices(m_user));
            return server_detail::check_coverage(s, theirs, mine);
        };
        auto coverage = covered(false);
        if (coverage && !coverage->ok()) {
            coverage = covered(true);
        }
        if (!coverage) {
            m_core->log(LogLevel::error, "devices not read: " + coverage.error().message());
            return Error{Errc::storage_error, "try again later"};
        }
        if (coverage->ok()) {
            return {};
        }
        if (!coverage->recipient) {
            send_device_list(peer);
        }
        if (!coverage->own) {
            send_device_list(m_user);
        }
        return Error{Errc::devices_changed, coverage->recipient ? "the message does not cover your other devices"
                                                                : "the message does not cover the recipient's devices"};
    }

    /// `user`'s signed device list as the answer to a `devices` op 1 would carry it (nothing without a device store).
    void send_device_list(const std::string& user) {
        if (m_core->devices == nullptr) {
            return;
        }
        const auto stored = m_core->devices->find_device_list(user);
        if (!stored) {
            m_core->log(LogLevel::error, "device list not read: " + stored.error().message());
            return;
        }
        send_devices_reply({DevicesOp::list, user, *stored ? (*stored)->signed_list : Bytes{}, {}});
    }

    /// Another node stored a list of `frame`'s user (its op 5 reaches this node's connections of the user):
    /// the directory reads that user's devices again at the next message.
    void forget_changed_devices(const Frame& frame) {
        if (frame.type != FrameType::devices || frame.source != server_name) {
            return;
        }
        if (const auto reply = decode_devices_reply(frame.payload); reply && reply->op == DevicesOp::changed) {
            m_core->directory->forget(reply->user);
        }
    }

    /// A sequenced message was not accepted: the sender hears which one, why, and where its stream goes on.
    void refuse_message(const std::string& peer, const MessageId& id, Errc code, std::uint32_t expected) {
        m_core->router.count_refused(code);
        send(Frame{FrameType::receipt, static_cast<std::uint32_t>(ReceiptStatus::refused), std::string(server_name),
                   m_user, encode_refusal(Refusal{peer, id, code, expected})});
    }

    void handle_close(const Frame& frame) {
        if (!frame.destination.empty()) {
            if (auto peer = canonical_peer(frame.destination)) {
                m_core->router.leave(m_user, *peer);
            }
            return;
        }
        // logout; payload 1 = revoke this session's tokens is not tracked per connection, so 1 and 2 both revoke
        // all of the user's tokens ("log out everywhere"); docs/protocol.md 5.3.
        if (!frame.payload.empty() && (frame.payload[0] == 1 || frame.payload[0] == 2)) {
            (void)m_core->tokens.revoke_all(m_user);
        }
        fail(Error{Errc::closed, "logged out"});
    }

    /// "conn 7 from 192.0.2.1:50000 user bob" for log lines (the user once known or asked for). Caller holds
    /// m_mutex.
    [[nodiscard]] std::string who() const {
        const std::string& user = m_user.empty() ? m_login_name : m_user;
        return "conn " + std::to_string(m_id) + " from " + m_peer + (user.empty() ? "" : " user " + user);
    }

    std::shared_ptr<ServerCore::Impl> m_core;
    std::shared_ptr<ConnectionOutput> m_output;  // guarded by m_send_mutex
    std::string m_peer;
    std::uint64_t m_id;

    std::mutex m_mutex;  // receive side: everything below up to m_send_mutex
    Phase m_phase = Phase::handshake;
    FrameDecoder m_decoder;
    std::optional<ServerHandshake> m_handshake;
    std::optional<RecvSession> m_recv;
    std::string m_user;
    // This connection's message streams (6.6); they outlive it while its messages are being committed.
    std::shared_ptr<server_detail::Delivery::Streams> m_streams = std::make_shared<server_detail::Delivery::Streams>();
    std::string m_pair_peer;  // the peer of m_pair_conversation (check_address)
    ConversationId m_pair_conversation{};
    DeviceId m_device = first_device;  // the device this connection serves (a login is its account's first device)
    std::string m_login_name;          // canonical name of the login under way, for log lines
    std::deque<Frame> m_pending;
    bool m_speaks_presence = false;  // the handshake agreed on the presence frame (docs/protocol.md 3.2, 6.10)
    bool m_linking = false;  // a device being linked (start_linking): link frames, list requests and close only
    double m_tokens_left;
    TimePoint m_last_refill;
    std::uint32_t m_violations = 0;
    std::uint32_t m_out_of_order = 0;  // out-of-order messages since the last accepted one
    bool m_changing_password = false;  // a passwd frame is being handled on a worker
    bool m_pinned = false;             // m_pinned_user's devices are pinned in the directory for this connection
    std::string m_pinned_user;
    ServerCore::Impl::ConnState m_counted = ServerCore::Impl::ConnState::none;  // in ServerCore::Impl::conn_states
    TimePoint m_accepted;                                                       // for the handshake latency
    TimePoint m_login_started;                                                  // for the login latency

    std::mutex m_send_mutex;  // leaf lock: the send session and the output
    std::optional<SendSession> m_send;
};

}  // namespace server_detail

// ---------------------------------------------------------------- ServerCore

ServerCore::ServerCore(std::shared_ptr<Impl> impl) : m_impl(std::move(impl)) {}

ServerCore::~ServerCore() = default;

std::shared_ptr<server_detail::ServerConnection> ServerCore::Impl::linking_device(
    const server_detail::MailboxId& device) {
    const std::lock_guard lock(linking_mutex);
    const auto it = linking.find(device);
    return it == linking.end() ? nullptr : it->second.lock();
}

Result<std::unique_ptr<ServerCore>> ServerCore::create(ServerConfig config, auth::Authenticator& authenticator,
                                                       auth::SessionTokens& tokens, auth::ConversationKeyVault* vault,
                                                       store::PrekeyStore* prekeys, store::MessageStore* messages,
                                                       Executor& workers, Rng& rng, const Clock& clock,
                                                       store::DeviceStore* devices, store::ContactStore* contacts) {
    if (messages == nullptr) {
        return Error{Errc::invalid_argument, "a message store is required: every message is delivered from a mailbox"};
    }
    if (config.delivery_window == 0 || config.delivery_window > remembered_ids_per_sender) {
        return Error{Errc::invalid_argument, "delivery_window must be 1.." + std::to_string(remembered_ids_per_sender) +
                                                 " (what a client remembers to show each message once)"};
    }
    if (!config.broker.empty() && config.conversation_mode == ConversationMode::server_assigned) {
        // A server-assigned conversation lives in the memory of the node that keyed it: when a recipient's node
        // dies, the sender's node keeps sealing under a conversation the recipient's new node has ended, and those
        // messages are lost (docs/operations.md, "Several nodes"). Refused until conversations are shared.
        return Error{Errc::not_implemented, "server-assigned conversations on several nodes are not built yet"};
    }
    if (config.max_devices == 0 || config.max_devices > e2e::max_listed_devices) {
        return Error{Errc::invalid_argument, "max_devices must be 1.." + std::to_string(e2e::max_listed_devices)};
    }
    SIM_TRY(auto pair, crypto::x25519_from_private(config.static_private_key));
    std::unique_ptr<server_detail::RoutingBus> bus;
    if (config.broker.empty()) {
        bus = server_detail::make_local_bus();
    } else {
        SIM_TRY(bus, server_detail::make_nats_bus(server_detail::NatsBusOptions{
                         .servers = config.broker, .node_id = config.node_id, .log = config.log}));
    }
    auto impl = std::make_shared<Impl>(std::move(config), authenticator, tokens, vault, prekeys, messages, workers, rng,
                                       clock, std::move(bus), devices, contacts);
    impl->static_public = pair.public_key;
    return std::unique_ptr<ServerCore>(new ServerCore(std::move(impl)));
}

std::shared_ptr<ConnectionHandler> ServerCore::accept(std::shared_ptr<ConnectionOutput> output,
                                                      const std::string& peer) {
    const auto id = m_impl->next_conn_id.fetch_add(1);
    auto conn = std::make_shared<server_detail::ServerConnection>(m_impl, std::move(output), peer, id);
    if (!conn->init_handshake()) {
        return nullptr;
    }
    conn->count_open();
    m_impl->log(LogLevel::info, "conn " + std::to_string(id) + " from " + peer + " connected");
    return conn;
}

ByteView ServerCore::static_public_key() const noexcept {
    return m_impl->static_public;
}

std::string ServerCore::fingerprint() const {
    return sim::fingerprint(m_impl->static_public);
}

ServerStats ServerCore::stats() const {
    ServerStats s = m_impl->router.stats();
    s.connections = m_impl->connections.load();
    s.logins_ok = m_impl->logins_ok.load();
    const auto open_in = [this](Impl::ConnState state) {
        return m_impl->conn_states[static_cast<std::size_t>(state)].load();
    };
    s.connections_handshake = open_in(Impl::ConnState::handshake);
    s.connections_unauthenticated = open_in(Impl::ConnState::unauthenticated);
    s.connections_authenticated = open_in(Impl::ConnState::authenticated);
    s.logins_failed = m_impl->logins_failed.load();
    s.logins_throttled = m_impl->logins_throttled.load();
    s.store_commits = m_impl->commit->commits();
    s.stored_messages = m_impl->commit->committed_messages();
    // Read from the store once (the first message would do it anyway), then kept up to date in memory.
    if (const auto usage = m_impl->delivery->store_usage()) {
        s.store_bytes = usage->bytes;
        s.store_messages = usage->messages;
    }
    s.handshake_latency = m_impl->handshake_latency.snapshot();
    s.login_latency = m_impl->login_latency.snapshot();
    s.store_commit_latency = m_impl->commit->commit_latency();
    s.broker = m_impl->bus->stats();
    return s;
}

std::vector<std::string> ServerCore::online_users() const {
    std::vector<std::string> users;
    for (auto& mailbox : m_impl->bus->attached_here()) {  // sorted: a user's devices are together
        if (users.empty() || users.back() != mailbox.user) {
            users.push_back(std::move(mailbox.user));
        }
    }
    return users;
}

void ServerCore::shutdown() {
    m_impl->router.shutdown();
}

void ServerCore::release_keys() {
    auto& delivery = *m_impl->delivery;
    const auto stored_from = [&](const std::string& sender, const std::string& recipient) -> Result<bool> {
        SIM_TRY(auto usage, delivery.backlog(recipient));
        if (usage.messages == 0) {
            return false;
        }
        SIM_TRY(const auto senders, delivery.senders(recipient));
        return senders.contains(sender);
    };
    for (const auto& [a, b] : m_impl->router.take_key_releases()) {
        const auto ab = stored_from(a, b);
        const auto ba = stored_from(b, a);
        if (!ab || !ba) {
            m_impl->log(LogLevel::error, "stored messages not read; a conversation key is kept: " +
                                             (!ab ? ab.error() : ba.error()).message());
        }
        m_impl->router.release_key(a, b, !ab || !ba || *ab || *ba);
    }
}

bool ServerCore::end_sessions(const std::string& user, DeviceId only_device) {
    bool any = false;
    for (const auto device : m_impl->bus->attached_devices(user)) {
        if (only_device != 0 && device != only_device) {
            continue;
        }
        const auto peer = m_impl->bus->local(server_detail::MailboxId{user, device});
        if (!peer) {
            continue;  // held by another node (a bus spanning nodes carries admin actions there: not built yet)
        }
        m_impl->log(LogLevel::info, "session of " + user + " ended: revoked by the administrator");
        peer->kick(Errc::token_invalid,
                   "your session was ended by the server's administrator (sessions revoked, password changed or "
                   "account deleted); log in again");
        any = true;
    }
    return any;
}

}  // namespace sim
