// The sans-IO client core (docs/protocol.md sections 5 and 6).
#include "conversation.h"
#include "devices.h"
#include "durable_outbox.h"
#include "e2e_client.h"

#include "../proto/presence.h"

#include <sim/auth.h>
#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/frame.h>

#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <set>

namespace sim {

std::string_view client_event_name(ClientEventKind kind) noexcept {
    switch (kind) {
        case ClientEventKind::channel_ready:
            return "channel_ready";
        case ClientEventKind::trust_required:
            return "trust_required";
        case ClientEventKind::authenticated:
            return "authenticated";
        case ClientEventKind::waiting:
            return "waiting";
        case ClientEventKind::peer_online:
            return "peer_online";
        case ClientEventKind::key_assigned:
            return "key_assigned";
        case ClientEventKind::key_rotated:
            return "key_rotated";
        case ClientEventKind::message:
            return "message";
        case ClientEventKind::peer_left:
            return "peer_left";
        case ClientEventKind::receipt:
            return "receipt";
        case ClientEventKind::identity_changed:
            return "identity_changed";
        case ClientEventKind::gap:
            return "gap";
        case ClientEventKind::error:
            return "error";
        case ClientEventKind::closed:
            return "closed";
        case ClientEventKind::password_changed:
            return "password_changed";
        case ClientEventKind::link_code:
            return "link_code";
        case ClientEventKind::link_request:
            return "link_request";
        case ClientEventKind::devices_changed:
            return "devices_changed";
        case ClientEventKind::device_info:
            return "device_info";
        case ClientEventKind::presence:
            return "presence";
    }
    return "unknown";
}

struct ClientCore::Impl {
    enum class Phase : std::uint8_t { idle, handshake, awaiting_trust, ready, closed };

    ClientConfig config;
    KnownServers& known;
    Rng& rng;
    const Clock& clock;
    EventSink sink;

    /// The civil time of the sender's timestamps: the configured wall clock, else the system's.
    [[nodiscard]] WallTime wall_now() const {
        return config.wall_clock
                   ? config.wall_clock()
                   : std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    }

    mutable std::mutex mutex;
    Phase phase = Phase::idle;
    std::optional<ClientHandshake> handshake;
    bool first_contact = false;
    std::optional<SendSession> send;
    std::optional<RecvSession> recv;
    FrameDecoder decoder;
    std::shared_ptr<ConnectionOutput> output;
    std::deque<Frame> before_ready;  // inner frames written before the channel was up
    std::string user;
    bool login_sent = false;
    bool authed = false;
    bool speaks_presence = false;  // the handshake agreed on the presence frame (docs/protocol.md 3.2, 6.10)
    std::string login_user;        // the name the login was sent under (the source of frames before ack_init 1)
    std::optional<PrekeyStatus> early_prekey_status;  // a server sends it just before ack_init 1
    IssuedSessionToken token;
    SecureBytes new_password;  // while a password change is under way
    std::set<std::string, std::less<>> awaited;
    std::set<std::string, std::less<>> keys_asked;  // peers asked for a key for the outbox, on this connection
    std::vector<ClientEvent> events;         // emitted after the lock is released
    std::unique_ptr<ClientState> own_state;  // when the application gave none
    std::unique_ptr<client_detail::DurableOutbox> outbox;
    std::unique_ptr<client_detail::E2eClient> e2e;
    std::unique_ptr<client_detail::Devices> devices;
    /// The device the login asked for (docs/protocol.md 6.9): 0 = a new installation to link.
    std::optional<DeviceId> login_device;
    std::unique_ptr<client_detail::ConversationContext> context;
    /// Each peer's current conversation (conversation.h), in the mode of its last KEYGEN. A server-assigned one
    /// stays after its keys went with a lost connection: a message to the peer is queued for the outbox and sealed
    /// once a key comes. Removed by a `close` (either side left): sending then waits for a new open().
    std::map<std::string, std::unique_ptr<client_detail::Conversation>, std::less<>> conversations;
    /// Benchmarking hook (sim/testing.h set_blind_sink): deliveries are acknowledged without being opened.
    bool blind_sink = false;
    std::uint64_t blind_acked = 0;

    Impl(ClientConfig c, KnownServers& k, Rng& r, const Clock& cl, EventSink s)
        : config(std::move(c)), known(k), rng(r), clock(cl), sink(std::move(s)), decoder(config.max_frame_size) {
        if (config.state == nullptr) {
            own_state = make_memory_client_state();
            config.state = own_state.get();
        }
        outbox = std::make_unique<client_detail::DurableOutbox>(*config.state, clock, config.resend_after);
        e2e = std::make_unique<client_detail::E2eClient>(config, *config.state, rng, *outbox);
        devices = std::make_unique<client_detail::Devices>(*config.state, rng, *e2e);
        // Brace-initialised: an aggregate (clang 14 has no parenthesised aggregate initialisation for make_unique).
        context.reset(new client_detail::ConversationContext{config, user, rng, clock, *e2e, *outbox,
                                                             [this](ClientEvent e) { emit(std::move(e)); }});
    }

    /// `peer`'s current conversation; end to end until the server keys it otherwise.
    client_detail::Conversation& conversation(const std::string& peer) {
        auto& c = conversations[peer];
        if (!c) {
            c = client_detail::make_conversation(ConversationMode::end_to_end, *context, peer);
        }
        return *c;
    }
    /// `peer`'s current conversation ends (either side left, or the connection is gone): true when this connection
    /// had keyed it.
    bool end_conversation(std::string_view peer) {
        const auto it = conversations.find(peer);
        if (it == conversations.end()) {
            return false;
        }
        const bool keyed = it->second->end();
        conversations.erase(it);
        return keyed;
    }

    /// `f(e2e)` under the lock, then flush (a call that may change end-to-end state).
    template <typename F>
    Status with_e2e(F&& f) {
        std::unique_lock lock(mutex);
        auto st = f(*e2e);
        flush(lock);
        return st;
    }

    /// End of every call that may have changed end-to-end state: commit it, then send what waited for the commit.
    /// A state that cannot be written closes the connection (nothing is acknowledged that was not stored).
    void settle() {
        auto e2e_events = e2e->take_events();
        if (const auto st = e2e->commit(); !st) {
            events.clear();
            (void)e2e->take_frames();
            fail_storage(st.error());
            return;
        }
        for (auto& e : e2e_events) {
            events.push_back(std::move(e));
        }
        for (auto& e : devices->take_events()) {
            events.push_back(std::move(e));
        }
        auto frames = devices->take_frames();
        for (auto& f : e2e->take_frames()) {
            frames.push_back(std::move(f));
        }
        std::vector<std::string> unkeyed;
        if (authed) {
            // Outbox entries are committed when they enter it, so they may go at any time.
            const client_detail::Outbox::Seal seal = [&](const std::string& peer, ByteView payload) {
                return seal_outbox_payload(peer, payload, unkeyed);
            };
            std::vector<ClientEvent> dropped;
            for (auto& f : outbox->take_due(user, seal, dropped)) {
                frames.push_back(std::move(f));
            }
            if (!dropped.empty()) {
                // Messages that can never go: told once their removal is committed.
                if (const auto st = e2e->commit(); !st) {
                    fail_storage(st.error());
                    return;
                }
                for (auto& e : dropped) {
                    events.push_back(std::move(e));
                }
            }
        }
        for (auto& name : e2e->take_wanted_keys()) {
            unkeyed.push_back(std::move(name));
        }
        for (auto& peer : unkeyed) {
            // Messages wait in the outbox for a conversation key: ask for one (once per connection; KEYGEN or
            // ack_init 3 and, once the peer can be keyed, KEYGEN answer it).
            if (keys_asked.insert(peer).second &&
                !send_inner(Frame{FrameType::init, 0, user, peer, encode_credentials({CredentialKind::none, {}})})) {
                return;
            }
        }
        for (auto& f : frames) {
            if (!send_inner(std::move(f))) {
                return;
            }
        }
    }
    void fail_storage(const Error& err) {
        fail(Error{err.code, "client state could not be written: " + err.message()});
    }

    /// The outbox's Seal (outbox.h): an end-to-end envelope goes as it is; an unsealed text is sealed now by the
    /// peer's conversation, or held (its peer added to `unkeyed`) while that has no key.
    Result<std::optional<Bytes>> seal_outbox_payload(const std::string& peer, ByteView payload,
                                                     std::vector<std::string>& unkeyed) {
        if (client_detail::read_queued_text(payload)) {
            // End to end, sealed for every device of the peer and our other ones (docs/protocol.md 6.5, 6.9).
            auto s = e2e->submission(peer, payload);
            if (!s) {
                return std::optional<Bytes>{};
            }
            return checked_size(peer, encode_submission(*s));
        }
        const auto unsealed = client_detail::read_unsealed_text(payload);
        std::optional<Envelope> env;
        if (unsealed) {
            MessageId id{};
            std::copy_n(payload.begin(), sizeof(MessageId), id.begin());
            env = conversation(peer).seal(id, *unsealed);
        } else if (auto decoded = decode_envelope(payload)) {
            env = std::move(*decoded);
        } else {
            // Sealed once, end to end, and kept in the state as an encoded envelope: it cannot fail to decode (the
            // client wrote it); if it does, that is reported and the message held.
            emit_error(decoded.error(), peer);
            return std::optional<Bytes>{};
        }
        if (!env) {
            unkeyed.push_back(peer);  // the key is asked for (end to end, the session's arrival seals it)
            return std::optional<Bytes>{};
        }
        return submission(peer, *env);
    }
    /// The `message` payload of a sealed envelope (docs/protocol.md 6.5): the message of the pair (user, peer) from
    /// our device. Server-assigned: the same record for every device the server says the peer has (they all hold
    /// the conversation key); end to end, an envelope sealed once before devices (an older outbox): to the peer's
    /// device 1.
    [[nodiscard]] Result<std::optional<Bytes>> submission(const std::string& peer, const Envelope& env) const {
        Submission s{env.id, env.mode, pair_conversation_id(user, peer), e2e->device(), {}, {}};
        const auto to = env.mode == ConversationMode::server_assigned ? devices->announced(peer)
                                                                      : std::vector<DeviceId>{first_device};
        for (const auto d : to) {
            s.bodies.push_back({d, env.body});
        }
        return checked_size(peer, encode_submission(s));
    }
    /// Errc::frame_too_large when the frame of `payload` would not fit the channel: the message can never go
    /// (send() refuses a text too long for it, but a message queued under a larger max_frame_size, or before the
    /// peer had more devices, reaches here).
    [[nodiscard]] Result<std::optional<Bytes>> checked_size(const std::string& peer, Bytes payload) const {
        if (encoded_frame_size(Frame{FrameType::message, 0, user, peer, payload}) >
            max_inner_frame_size(config.max_frame_size)) {
            return Error{Errc::frame_too_large, "its frame would be larger than the channel carries"};
        }
        return std::optional<Bytes>{std::move(payload)};
    }

    // ------------------------------------------------------------ events

    void emit(ClientEvent e) { events.push_back(std::move(e)); }
    void emit_error(const Error& err, std::string peer = {}) { emit(ErrorEvent{err, std::move(peer), std::nullopt}); }
    /// Deliver collected events with the lock released.
    void flush(std::unique_lock<std::mutex>& lock) {
        if (phase != Phase::closed) {
            settle();
        }
        auto out = std::move(events);
        events.clear();
        lock.unlock();
        if (sink) {
            for (const auto& e : out) {
                sink(e);
            }
        }
    }

    // ------------------------------------------------------------ sending

    void send_plain(const Frame& frame) {
        if (!output) {
            return;
        }
        if (auto bytes = encode_frame(frame, max_channel_handshake_message + 64)) {
            output->send(std::move(*bytes));
        }
    }

    /// Subscribe to the contacts' presence and say whether the user hides, right behind the login's init, so the
    /// server knows it before it tells anyone the user is online (docs/protocol.md 6.10).
    /// Whether a presence `set` may go now: after a login, but not while this connection is a device being linked
    /// (the server allows it only link frames); a new installation sends it once it is authenticated.
    [[nodiscard]] bool presence_due() const { return login_sent && (authed || login_device != DeviceId{0}); }
    Status send_presence_set() {
        if (!speaks_presence) {
            return Error{Errc::not_implemented, "the server does not speak presence"};
        }
        PresenceMessage m;
        m.op = PresenceOp::set;
        m.hidden = config.hide_presence;
        SIM_TRY(auto payload, encode_presence(m));
        return send_inner(Frame{FrameType::presence, 0, authed ? user : login_user, {}, std::move(payload)});
    }

    void on_presence(const Frame& f) {
        auto m = decode_presence(f.payload);
        if (!speaks_presence || f.source != server_name || !m || m->op != PresenceOp::status) {
            fail(m ? Error{Errc::bad_field, "presence not expected from the server"} : m.error());
            return;
        }
        for (auto& e : m->entries) {
            emit(PresenceEvent{std::move(e.user), e.online});
        }
    }

    Status send_inner(Frame frame) {
        if (phase == Phase::closed) {
            return Error{Errc::closed, "connection closed"};
        }
        if (phase != Phase::ready) {
            before_ready.push_back(std::move(frame));
            return ok();
        }
        SIM_TRY(auto inner, encode_frame(frame, max_inner_frame_size(config.max_frame_size)));
        secure_zero(frame.payload.data(), frame.payload.size());
        auto record = send->seal(inner);
        secure_zero(inner.data(), inner.size());
        if (!record) {
            fail(record.error());
            return record.error();
        }
        SIM_TRY(auto bytes,
                encode_frame(Frame{FrameType::record, 0, {}, {}, std::move(*record)}, config.max_frame_size));
        if (output) {
            output->send(std::move(bytes));
        }
        return ok();
    }

    void fail(const Error& err) {
        if (phase == Phase::closed) {
            return;
        }
        phase = Phase::closed;
        handshake.reset();
        send.reset();
        recv.reset();
        for (auto& [peer, c] : conversations) {
            c->end();  // the keys were this connection's; a server-assigned conversation waits for new ones
        }
        emit(ClosedEvent{err});
        if (output) {
            output->close(err.code);
        }
    }

    // ------------------------------------------------------------ handshake

    void continue_handshake() {
        while (phase == Phase::handshake) {
            switch (handshake->next_action()) {
                case ChannelAction::write_message: {
                    auto msg = handshake->write_message();
                    if (!msg) {
                        fail(msg.error());
                        return;
                    }
                    send_plain(Frame{FrameType::handshake, 0, {}, {}, std::move(*msg)});
                    break;
                }
                case ChannelAction::awaiting_trust: {
                    phase = Phase::awaiting_trust;
                    emit(TrustRequiredEvent{handshake->server_fingerprint()});
                    return;
                }
                case ChannelAction::complete: {
                    auto est = handshake->finish();
                    handshake.reset();
                    if (!est) {
                        fail(est.error());
                        return;
                    }
                    send.emplace(std::move(est->send));
                    recv.emplace(std::move(est->recv));
                    speaks_presence = has_feature(est->features, ChannelFeature::presence);
                    phase = Phase::ready;
                    if (output) {
                        output->established();
                    }
                    emit(ChannelReadyEvent{est->suite, est->server_fingerprint, first_contact});
                    auto queued = std::move(before_ready);
                    before_ready.clear();
                    for (auto& f : queued) {
                        if (!send_inner(std::move(f))) {
                            return;
                        }
                    }
                    if (presence_due()) {
                        (void)send_presence_set();  // right behind the init it follows
                    }
                    return;
                }
                case ChannelAction::read_message:
                    return;
                case ChannelAction::failed:
                    fail(handshake->failure());
                    return;
            }
        }
    }

    // ------------------------------------------------------------ receiving

    void on_frame(Frame frame) {
        if (phase == Phase::handshake) {
            if (frame.type != FrameType::handshake) {
                fail(Error{Errc::handshake_failed, "server sent a non-handshake frame during the handshake"});
                return;
            }
            if (const auto st = handshake->read_message(frame.payload); !st) {
                fail(st.error());
                return;
            }
            continue_handshake();
            return;
        }
        if (phase != Phase::ready) {
            fail(Error{Errc::invalid_state, "unexpected frame"});
            return;
        }
        if (frame.type != FrameType::record) {
            fail(Error{Errc::invalid_state, "expected a record frame"});
            return;
        }
        auto plain = recv->open(frame.payload);
        if (!plain) {
            fail(plain.error());
            return;
        }
        auto inner = decode_frame(*plain, max_inner_frame_size(config.max_frame_size));
        secure_zero(plain->data(), plain->size());
        if (!inner) {
            fail(inner.error());
            return;
        }
        on_inner(std::move(*inner));
    }

    void on_inner(Frame f) {
        switch (f.type) {
            case FrameType::ack_init:
                on_ack(f);
                break;
            case FrameType::keygen:
                on_keygen(f);
                break;
            case FrameType::message:
                on_message(f);
                break;
            case FrameType::passwd:
                on_password_changed(f);
                break;
            case FrameType::link:
            case FrameType::devices: {
                const auto st = f.type == FrameType::link ? devices->on_link(f) : devices->on_devices(f);
                if (!st) {
                    fail(st.error());
                    return;
                }
                break;
            }
            case FrameType::presence:
                on_presence(f);
                break;
            case FrameType::prekeys: {
                if (f.source != server_name || (!authed && !login_sent)) {
                    fail(Error{Errc::bad_field, "prekeys status not from the server"});
                    return;
                }
                auto status = decode_prekey_status(f.payload);
                if (!status) {
                    fail(status.error());
                    return;
                }
                if (!authed) {
                    early_prekey_status = std::move(*status);  // before ack_init 1: applied with it
                    return;
                }
                e2e->on_prekey_status(*status);
                break;
            }
            case FrameType::receipt: {
                if (f.source != server_name) {
                    fail(Error{Errc::bad_field, "receipt not from the server"});
                    return;
                }
                if (f.sid == static_cast<std::uint32_t>(ReceiptStatus::refused)) {
                    auto r = decode_refusal(f.payload);
                    if (!r) {
                        fail(r.error());
                        return;
                    }
                    // The lists that came just before it tell whom to send to: the message goes again in a second,
                    // to every device (submission()).
                    // End to end the texts are sealed for the lists now in force (keys asked for new devices).
                    const bool catch_up = r->code == Errc::devices_changed;
                    if (catch_up) {
                        e2e->devices_refused(r->peer);
                    }
                    if (outbox->refused(*r, catch_up ? std::optional<Duration>(std::chrono::seconds(1))
                                                     : std::nullopt) &&
                        !catch_up) {
                        // A reason that will not pass by itself: the message stays in the outbox and is tried
                        // again now and then.
                        emit_error(Error{r->code, "message not accepted by the server; it will be sent again"},
                                   r->peer);
                    }
                    break;
                }
                auto r = decode_receipt(f.payload);
                if (!r || (f.sid != static_cast<std::uint32_t>(ReceiptStatus::stored) &&
                           f.sid != static_cast<std::uint32_t>(ReceiptStatus::delivered))) {
                    fail(r ? Error{Errc::bad_field, "bad receipt"} : r.error());
                    return;
                }
                for (auto& e : outbox->on_receipt(static_cast<ReceiptStatus>(f.sid), *r)) {
                    emit(std::move(e));
                }
                break;
            }
            case FrameType::limits: {
                auto l = decode_server_limits(f.payload);
                if (f.source != server_name || !l) {
                    fail(l ? Error{Errc::bad_field, "limits not from the server"} : l.error());
                    return;
                }
                outbox->set_limits(*l);
                break;
            }
            case FrameType::close:
                // Ended by the peer: sending waits for a new open() (end to end, it goes on from the sessions).
                if (end_conversation(f.source) || awaited.erase(f.source) != 0) {
                    emit(PeerLeftEvent{f.source});
                }
                return;
            case FrameType::error: {
                auto err = parse_error_frame(f);
                if (err && err->code == Errc::devices_changed) {
                    // Only an unsequenced message is refused this way: a ratchet-only reply (E2eClient::tick),
                    // which the next text replaces; the lists that came with it are taken already.
                    break;
                }
                if (err && !f.destination.empty()) {
                    // About a peer that cannot be reached yet (no prekeys, 6.2): we wait for it; the outbox holds.
                    emit(WaitingEvent{f.destination, err->to_error()});
                    break;
                }
                emit_error(err ? err->to_error() : err.error());
                break;
            }
            default:
                fail(Error{Errc::bad_field, "frame type not expected from the server"});
                return;
        }
        // Keep end-to-end events in order with the core's own.
        for (auto& e : e2e->take_events()) {
            events.push_back(std::move(e));
        }
    }

    void on_ack(const Frame& f) {
        if (f.source != server_name) {
            fail(Error{Errc::bad_field, "ack_init not from the server"});
            return;
        }
        const std::string peer = to_string(f.payload);
        switch (static_cast<AckStage>(f.sid)) {
            case AckStage::authenticated: {
                auto t = decode_session_token(f.payload);
                if (!t) {
                    fail(t.error());
                    return;
                }
                if (authed || (t->device && login_device && *login_device != 0 && *t->device != *login_device)) {
                    fail(Error{Errc::bad_field, "ack_init 1 names another device than the login's"});
                    return;
                }
                if (login_device == DeviceId{0} && !devices->granted()) {
                    if (!t->device) {
                        fail(Error{Errc::bad_field, "ack_init 1 to a new installation names no device"});
                        return;
                    }
                    if (t->token.empty()) {
                        // A pending device of an existing account: link it (nothing else is allowed meanwhile).
                        user = f.destination;
                        if (const auto st = devices->start_join(user, *t->device); !st) {
                            fail(st.error());
                        }
                        return;
                    }
                    // The login registered the account: this is its first device, as any first login.
                } else if (login_device == DeviceId{0}) {
                    devices->finish_join();  // activated after the grant: its keys are in the state
                }
                authed = true;
                user = f.destination;
                if (!t->token.empty()) {
                    token = std::move(*t);
                }
                if (login_device == DeviceId{0} && speaks_presence) {
                    (void)send_presence_set();  // held back while this installation was being linked
                }
                if (const auto st = e2e->set_user(user); !st) {
                    fail(st.error());
                    return;
                }
                devices->set_user(user);
                if (early_prekey_status) {
                    // The upload it asks for is queued before the application hears `authenticated`, so anything
                    // the application sends next (a logout too) goes after it.
                    e2e->on_prekey_status(*early_prekey_status);
                    early_prekey_status.reset();
                }
                emit(AuthenticatedEvent{user});
                outbox->restart();  // messages that got no receipt before a restart or a lost connection
                return;
            }
            case AckStage::destination_online:
                awaited.erase(peer);
                emit(PeerOnlineEvent{peer});
                return;
            case AckStage::destination_offline:
                awaited.insert(peer);
                emit(WaitingEvent{peer, std::nullopt});
                return;
        }
        fail(Error{Errc::bad_field, "unknown ack_init stage"});
    }

    /// The server took the new password (docs/protocol.md 5.5): keep its token, seal the state under the password.
    void on_password_changed(const Frame& f) {
        if (f.source != server_name || !authed || new_password.empty()) {
            fail(Error{Errc::bad_field, "passwd not expected from the server"});
            return;
        }
        auto t = decode_session_token(f.payload);
        if (!t) {
            fail(t.error());
            return;
        }
        if (!t->token.empty()) {
            token = std::move(*t);
        }
        const std::string_view password{reinterpret_cast<const char*>(new_password.data()), new_password.size()};
        const auto sealed = config.state->change_password(password);
        new_password = SecureBytes{};
        if (!sealed) {
            emit_error(Error{sealed.code(),
                             "the server has the new password, but the local state is still sealed "
                             "under the old one (" +
                                 sealed.error().message() +
                                 "): open it with the old password and re-seal it (sim rekey)"});
            return;
        }
        emit(PasswordChangedEvent{user});
    }

    void on_keygen(const Frame& f) {
        if (f.source != server_name || f.sid != keygen_sid || !authed) {
            fail(Error{Errc::bad_field, "KEYGEN not from the server"});
            return;
        }
        auto k = decode_key_assignment(f.payload);
        if (!k) {
            fail(k.error());
            return;
        }
        if (k->peer == user) {
            // Keys of our own other devices (docs/protocol.md 6.2, mode 3): for the copies of our messages.
            if (k->mode != ConversationMode::end_to_end) {
                fail(Error{Errc::bad_field, "a server-assigned KEYGEN naming ourselves"});
                return;
            }
            keys_asked.erase(user);
            e2e->on_keys(*k);
            return;
        }
        awaited.erase(k->peer);
        // The conversation of the KEYGEN's mode takes the key, and becomes the peer's current one when it accepts it.
        const auto it = conversations.find(k->peer);
        std::unique_ptr<client_detail::Conversation> fresh;
        if (it == conversations.end() || it->second->mode() != k->mode) {
            fresh = client_detail::make_conversation(k->mode, *context, k->peer);
        }
        if (!(fresh ? *fresh : *it->second).on_key(*k)) {
            return;
        }
        if (fresh) {
            conversations.insert_or_assign(k->peer, std::move(fresh));
        }
        keys_asked.erase(k->peer);
    }

    void on_message(const Frame& f) {
        if (f.source == user && !f.destination.empty() && f.destination != user && f.destination != server_name) {
            on_own_copy(f);
            return;
        }
        if (f.destination != user || f.source.empty() || f.source == server_name) {
            emit_error(Error{Errc::bad_destination, "message not addressed to us dropped"}, f.source);
            return;
        }
        // From the server: the delivery header (its receive time), then the envelope (docs/protocol.md 6.5). One
        // that does not decode is reported and not acknowledged.
        auto delivered = decode_delivered(f.payload);
        if (!delivered) {
            emit_error(delivered.error(), f.source);
            return;
        }
        if (delivered->conversation != pair_conversation_id(user, f.source)) {
            // Not this pair's conversation: never shown, not acknowledged (6.5).
            emit_error(Error{Errc::bad_field, "message of another conversation dropped"}, f.source);
            return;
        }
        if (blind_sink) {
            ack_unopened(f.source, *delivered);
            return;
        }
        auto& current = conversation(f.source);
        if (current.mode() == delivered->envelope.mode) {
            current.on_message(*delivered);
            return;
        }
        // Of another mode than the current conversation (sent before the server keyed it anew): the conversation of
        // its mode opens it, or says why it cannot (a server-assigned one has no key of this connection).
        client_detail::make_conversation(delivered->envelope.mode, *context, f.source)->on_message(*delivered);
    }

    /// A copy of a message another device of ours sent to `f.destination` (docs/protocol.md 6.5, "Own copies").
    void on_own_copy(const Frame& f) {
        auto delivered = decode_delivered(f.payload);
        if (!delivered) {
            emit_error(delivered.error(), f.destination);
            return;
        }
        if (delivered->conversation != pair_conversation_id(user, f.destination) ||
            delivered->envelope.mode != ConversationMode::end_to_end) {
            emit_error(Error{Errc::bad_field, "copy of our own message of another conversation dropped"},
                       f.destination);
            return;
        }
        if (blind_sink) {
            ack_unopened(user, *delivered);
            return;
        }
        e2e->on_message(f.destination, *delivered, true);
    }

    /// Blind sink (a load generator's receiving side, sim/testing.h): the same ack a client sends once it has shown
    /// a message (batched per peer, after the commit), so the server and the sender (its `delivered` receipt) see
    /// what they see for a real client; the envelope is not opened, nothing is kept or shown, no event.
    void ack_unopened(const std::string& peer, const Delivered& delivered) {
        if (!e2e->ready()) {
            return;
        }
        e2e->ack(peer, delivered.envelope.id);
        ++blind_acked;
    }
};

ClientCore::ClientCore(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

ClientCore::~ClientCore() = default;

Result<std::shared_ptr<ClientCore>> ClientCore::create(ClientConfig config, KnownServers& known, Rng& rng,
                                                       const Clock& clock, EventSink sink) {
    const bool first_contact = !known.lookup(config.handshake.server_id).has_value();
    if (!has_feature(config.handshake.features, ChannelFeature::presence)) {
        config.handshake.features.push_back(ChannelFeature::presence);  // offered; sent only if the server agrees
    }
    SIM_TRY(auto hs, ClientHandshake::create(config.handshake, known, rng, clock));
    auto impl = std::make_unique<Impl>(std::move(config), known, rng, clock, std::move(sink));
    impl->handshake.emplace(std::move(hs));
    impl->first_contact = first_contact;
    impl->e2e->preload_outbox();  // outbox_size() counts what an earlier run left unsent, before login
    return std::shared_ptr<ClientCore>(new ClientCore(std::move(impl)));
}

Status ClientCore::attach(std::shared_ptr<ConnectionOutput> output) {
    std::unique_lock lock(m_impl->mutex);
    if (m_impl->phase != Impl::Phase::idle) {
        return Error{Errc::invalid_state, "already attached"};
    }
    m_impl->output = std::move(output);
    m_impl->phase = Impl::Phase::handshake;
    m_impl->continue_handshake();
    m_impl->flush(lock);
    return ok();
}

Status ClientCore::trust(bool accept) {
    std::unique_lock lock(m_impl->mutex);
    if (m_impl->phase != Impl::Phase::awaiting_trust) {
        return Error{Errc::invalid_state, "no trust question pending"};
    }
    const auto st = m_impl->handshake->trust(accept);
    m_impl->phase = Impl::Phase::handshake;
    if (!st) {
        m_impl->fail(st.error());
    } else {
        m_impl->continue_handshake();
    }
    m_impl->flush(lock);
    return st;
}

Status ClientCore::login(std::string_view user, const Credentials& credentials, std::string_view destination) {
    std::unique_lock lock(m_impl->mutex);
    if (m_impl->login_sent || m_impl->phase == Impl::Phase::closed) {
        return Error{Errc::invalid_state, "already logged in or closed"};
    }
    if (credentials.kind == CredentialKind::none || credentials.secret.empty()) {
        return Error{Errc::bad_password, "empty credentials"};
    }
    Credentials with_device{credentials.kind, credentials.secret, credentials.device};
    if (!with_device.device) {
        // A linked device logs in as itself; a state without a device record is device 1 (no field, as before).
        SIM_TRY(with_device.device, m_impl->e2e->stored_device());
    } else if (*with_device.device == 0 && m_impl->e2e->has_identity()) {
        return Error{Errc::invalid_state, "this client state already holds an identity: link with a new state"};
    }
    m_impl->login_device = with_device.device;
    m_impl->login_sent = true;
    m_impl->login_user = std::string(user);
    auto st = m_impl->send_inner(
        Frame{FrameType::init, 0, std::string(user), std::string(destination), encode_credentials(with_device)});
    if (st && m_impl->phase == Impl::Phase::ready && m_impl->speaks_presence && m_impl->presence_due()) {
        st = m_impl->send_presence_set();
    }
    m_impl->flush(lock);
    return st;
}

namespace {
Status check_peer_call(const ClientCore::Impl& impl, std::string_view peer) {
    if (!impl.authed) {
        return Error{Errc::not_authenticated, "log in first"};
    }
    if (peer.empty() || peer == server_name) {
        return Error{Errc::bad_destination, "no such peer"};
    }
    return ok();
}
}  // namespace

Status ClientCore::open(std::string_view peer) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_peer_call(*m_impl, peer));
    auto st = m_impl->send_inner(
        Frame{FrameType::init, 0, m_impl->user, std::string(peer), encode_credentials({CredentialKind::none, {}})});
    m_impl->flush(lock);
    return st;
}

Result<MessageId> ClientCore::send(std::string_view peer, std::string_view text) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_peer_call(*m_impl, peer));
    // The sender's timestamp (docs/protocol.md 5.2, 6.3): fixed now, kept with the message until it is delivered.
    auto id = m_impl->conversation(std::string(peer)).send(text, m_impl->wall_now());
    m_impl->flush(lock);
    return id;
}

Status ClientCore::probe(std::string_view peer) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_peer_call(*m_impl, peer));
    auto st = m_impl->send_inner(Frame{FrameType::probe, 0, m_impl->user, std::string(peer), {}});
    m_impl->flush(lock);
    return st;
}

Status ClientCore::set_presence_hidden(bool hidden) {
    std::unique_lock lock(m_impl->mutex);
    if (m_impl->phase == Impl::Phase::closed) {
        return Error{Errc::closed, "connection closed"};
    }
    m_impl->config.hide_presence = hidden;
    if (m_impl->phase != Impl::Phase::ready) {
        return ok();  // sent behind the login once the server is known to speak presence
    }
    if (!m_impl->speaks_presence) {
        return Error{Errc::not_implemented, "the server does not speak presence"};
    }
    Status st = ok();
    if (m_impl->presence_due()) {
        st = m_impl->send_presence_set();
    }
    m_impl->flush(lock);
    return st;
}

Status ClientCore::query_presence(std::string_view peer) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_peer_call(*m_impl, peer));
    if (!m_impl->speaks_presence) {
        return Error{Errc::not_implemented, "the server does not speak presence"};
    }
    PresenceMessage m;
    m.op = PresenceOp::query;
    SIM_TRY(auto payload, encode_presence(m));
    auto st = m_impl->send_inner(Frame{FrameType::presence, 0, m_impl->user, std::string(peer), std::move(payload)});
    m_impl->flush(lock);
    return st;
}

bool ClientCore::presence_supported() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->speaks_presence;
}

void ClientCore::tick() {
    std::unique_lock lock(m_impl->mutex);
    if (m_impl->phase != Impl::Phase::ready) {
        return;
    }
    if (!m_impl->authed) {
        m_impl->devices->repeat_request();  // a device being linked asks again, for devices attached since
        m_impl->flush(lock);
        return;
    }
    if (m_impl->awaited.empty()) {
        (void)m_impl->send_inner(Frame{FrameType::probe, 0, m_impl->user, {}, {}});  // keepalive
    }
    for (const auto& peer : m_impl->awaited) {
        (void)m_impl->send_inner(Frame{FrameType::probe, 0, m_impl->user, peer, {}});
    }
    m_impl->e2e->tick();
    m_impl->flush(lock);
}

void ClientCore::pump() {
    std::unique_lock lock(m_impl->mutex);
    if (m_impl->phase != Impl::Phase::ready) {
        return;
    }
    m_impl->flush(lock);
}

std::optional<TimePoint> ClientCore::next_wakeup() const {
    const std::lock_guard lock(m_impl->mutex);
    if (m_impl->phase != Impl::Phase::ready) {
        return std::nullopt;
    }
    return m_impl->authed ? m_impl->outbox->next_due() : std::nullopt;
}

Status ClientCore::leave(std::string_view peer) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_peer_call(*m_impl, peer));
    m_impl->end_conversation(peer);
    m_impl->awaited.erase(std::string(peer));
    auto st = m_impl->send_inner(Frame{FrameType::close, 0, m_impl->user, std::string(peer), {}});
    m_impl->flush(lock);
    return st;
}

Status ClientCore::change_password(std::string_view old_password, std::string_view new_password) {
    std::unique_lock lock(m_impl->mutex);
    if (!m_impl->authed) {
        return Error{Errc::not_authenticated, "log in first"};
    }
    SIM_TRY_STATUS(auth::check_password(old_password));
    SIM_TRY_STATUS(auth::check_password(new_password));
    PasswordChange change;
    change.old_password = to_bytes<SecureBytes>(as_bytes(old_password));
    change.new_password = to_bytes<SecureBytes>(as_bytes(new_password));
    m_impl->new_password = change.new_password;
    auto st = m_impl->send_inner(Frame{FrameType::passwd, 0, m_impl->user, {}, encode_password_change(change)});
    m_impl->flush(lock);
    return st;
}

Status ClientCore::logout(std::uint8_t revoke) {
    std::unique_lock lock(m_impl->mutex);
    if (!m_impl->authed) {
        return Error{Errc::not_authenticated, "not logged in"};
    }
    Bytes payload;
    if (revoke != 0) {
        payload.push_back(revoke);
    }
    auto st = m_impl->send_inner(Frame{FrameType::close, 0, m_impl->user, {}, std::move(payload)});
    m_impl->flush(lock);
    return st;
}

Result<PeerIdentity> ClientCore::peer_identity(std::string_view peer) const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->e2e->peer_identity(peer);
}

Status ClientCore::verify_peer(std::string_view peer) {
    return m_impl->with_e2e([&](client_detail::E2eClient& e2e) { return e2e.verify_peer(peer); });
}

Status ClientCore::accept_identity(std::string_view peer) {
    return m_impl->with_e2e([&](client_detail::E2eClient& e2e) { return e2e.accept_identity(peer); });
}

std::size_t ClientCore::outbox_size() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->outbox->streams().size();
}

Result<std::vector<InboxEntry>> ClientCore::inbox(std::uint64_t from, std::size_t limit, std::string_view peer) const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->e2e->inbox(from, limit, peer);
}

InboxStatus ClientCore::inbox_status() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->e2e->inbox_status();
}

Status ClientCore::mark_read(std::uint64_t up_to) {
    return m_impl->with_e2e([&](client_detail::E2eClient& e2e) { return e2e.mark_read(up_to); });
}

ClientCore::OutboxStatus ClientCore::outbox_status() const {
    const std::lock_guard lock(m_impl->mutex);
    const auto& box = m_impl->outbox->streams();
    return OutboxStatus{box.size(), box.unsent(), box.refusals()};
}

Status ClientCore::send_raw(const Frame& frame) {
    std::unique_lock lock(m_impl->mutex);
    auto st = m_impl->send_inner(frame);
    m_impl->flush(lock);
    return st;
}

void ClientCore::set_blind_sink(bool on) {
    const std::lock_guard lock(m_impl->mutex);
    m_impl->blind_sink = on;
}

std::uint64_t ClientCore::blind_acked() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->blind_acked;
}

bool ClientCore::ready() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->phase == Impl::Phase::ready;
}

bool ClientCore::authenticated() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->authed && m_impl->phase == Impl::Phase::ready;
}

std::string ClientCore::user() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->user;
}

namespace {
Status check_device_call(const ClientCore::Impl& impl) {
    if (!impl.authed) {
        return Error{Errc::not_authenticated, "log in first"};
    }
    return ok();
}
}  // namespace

Status ClientCore::approve_device(std::string_view code) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_device_call(*m_impl));
    auto st = m_impl->devices->approve(code);
    m_impl->flush(lock);
    return st;
}

Status ClientCore::remove_device(DeviceId device) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_device_call(*m_impl));
    auto st = m_impl->devices->remove(device);
    m_impl->flush(lock);
    return st;
}

Status ClientCore::rename_device(DeviceId device, std::string_view name) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_device_call(*m_impl));
    auto st = m_impl->devices->rename(device, name);
    m_impl->flush(lock);
    return st;
}

Status ClientCore::request_devices() {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_device_call(*m_impl));
    m_impl->devices->request_info();
    m_impl->flush(lock);
    return ok();
}

DeviceId ClientCore::device() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->authed ? m_impl->e2e->device() : first_device;
}

IssuedSessionToken ClientCore::session_token() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->token;
}

std::vector<std::string> ClientCore::conversations() const {
    const std::lock_guard lock(m_impl->mutex);
    // Keyed on this connection, and the end-to-end ones the state keeps sessions for.
    std::set<std::string> peers;
    for (const auto& [peer, conv] : m_impl->conversations) {
        if (conv->suite()) {
            peers.insert(peer);
        }
    }
    for (auto& peer : m_impl->e2e->peers_with_sessions()) {
        peers.insert(std::move(peer));
    }
    return {peers.begin(), peers.end()};
}

std::optional<SuiteId> ClientCore::conversation_suite(std::string_view peer) const {
    const std::lock_guard lock(m_impl->mutex);
    const auto it = m_impl->conversations.find(peer);
    if (it != m_impl->conversations.end()) {
        if (const auto suite = it->second->suite()) {
            return suite;
        }
    }
    return m_impl->e2e->session_suite(peer);
}

void ClientCore::on_bytes(ByteView data) {
    std::unique_lock lock(m_impl->mutex);
    if (m_impl->phase == Impl::Phase::closed) {
        return;
    }
    m_impl->decoder.feed(data);
    while (m_impl->phase != Impl::Phase::closed) {
        auto next = m_impl->decoder.next();
        if (!next) {
            m_impl->fail(next.error());
            break;
        }
        if (!next->has_value()) {
            break;
        }
        m_impl->on_frame(std::move(**next));
    }
    m_impl->flush(lock);
}

void ClientCore::on_closed(Errc reason) {
    std::unique_lock lock(m_impl->mutex);
    m_impl->fail(Error{reason, "connection closed"});
    m_impl->output.reset();
    m_impl->flush(lock);
}

}  // namespace sim
