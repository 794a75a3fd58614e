// The sans-IO client core (docs/protocol.md sections 5 and 6).
#include "durable_outbox.h"
#include "e2e_client.h"

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
    }
    return "unknown";
}

namespace {

/// How many epochs a server-assigned conversation's receiving session follows in one record (docs/protocol.md
/// 6.7). Offline delivery means a late reader: records are kept in order, and the sender rotates at most once per
/// record, but records sealed and then refused by the server (rate limit, full queue) leave epochs out. Following
/// costs one HKDF step per epoch, and these records reach us only through the server's authenticated channel.
/// A record further ahead is reported as an error event (epoch_too_far) and not shown.
constexpr std::uint32_t conversation_max_skipped_epochs = max_epoch_skip;

/// One server-assigned conversation: a session per direction under keys derived from the KEYGEN key.
struct Conversation {
    SuiteId suite;
    SessionConfig config;
    SendSession send;
    /// Created at the first record received, so that its key-age clock (`key_expired`) starts when the peer's
    /// first record arrives: after an offline delivery the peer got its KEYGEN, and started its epoch 0, long
    /// after ours.
    std::optional<RecvSession> recv;
    SecureBytes recv_key;  // until `recv` exists
    std::uint32_t next_sid = 1;
};

}  // namespace

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
    std::optional<PrekeyStatus> early_prekey_status;  // a server sends it just before ack_init 1
    IssuedSessionToken token;
    SecureBytes new_password;  // while a password change is under way
    std::set<std::string, std::less<>> awaited;
    std::map<std::string, Conversation, std::less<>> conversations;
    std::set<std::string, std::less<>> keys_asked;  // peers asked for a key for the outbox, on this connection
    /// Peers whose conversation keys the server assigns (KEYGEN mode 1 seen): a message to them is queued for the
    /// outbox even while there is no key (after a lost connection) and sealed once one comes. Not after a `close`
    /// (either side left): sending then waits for a new open().
    std::set<std::string, std::less<>> assigned_peers;
    std::vector<ClientEvent> events;         // emitted after the lock is released
    std::unique_ptr<ClientState> own_state;  // when the application gave none
    std::unique_ptr<client_detail::DurableOutbox> outbox;
    std::unique_ptr<client_detail::E2eClient> e2e;

    Impl(ClientConfig c, KnownServers& k, Rng& r, const Clock& cl, EventSink s)
        : config(std::move(c)), known(k), rng(r), clock(cl), sink(std::move(s)), decoder(config.max_frame_size) {
        if (config.state == nullptr) {
            own_state = make_memory_client_state();
            config.state = own_state.get();
        }
        outbox = std::make_unique<client_detail::DurableOutbox>(*config.state, clock, config.resend_after);
        e2e = std::make_unique<client_detail::E2eClient>(config, *config.state, rng, *outbox);
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
        auto frames = e2e->take_frames();
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

    /// The outbox's Seal (outbox.h): an end-to-end envelope goes as it is; an unsealed text is sealed now under its
    /// server-assigned conversation's current key, or held (its peer added to `unkeyed`) while there is none.
    Result<std::optional<Bytes>> seal_outbox_payload(const std::string& peer, ByteView payload,
                                                     std::vector<std::string>& unkeyed) {
        const std::optional<Bytes> hold;
        const auto unsealed = client_detail::read_unsealed_text(payload);
        if (!unsealed) {
            // Sealed once, end to end, and kept in the state as an encoded envelope. It cannot fail to decode (the
            // client wrote it): if it does, that is reported and the message held.
            auto env = decode_envelope(payload);
            if (!env) {
                emit_error(env.error(), peer);
                return hold;
            }
            return submission(peer, *env);
        }
        // No server-assigned conversation: the key is asked for; end to end, the session's arrival seals it.
        const auto it = conversations.find(peer);
        if (it == conversations.end()) {
            unkeyed.push_back(peer);
            return hold;
        }
        auto& conv = it->second;
        const auto before = conv.send.status().epoch;
        const auto text = unsealed->text;
        auto body = encode_conversation_body(
            ConversationBody{conv.next_sid, std::string(text.begin(), text.end()), unsealed->sent_at});
        auto record = conv.send.seal(body);
        secure_zero(body.data(), body.size());
        if (!record) {
            emit_error(record.error(), peer);
            unkeyed.push_back(peer);
            return hold;
        }
        ++conv.next_sid;
        note_rotation(peer, before, conv.send.status().epoch, "sending");
        Envelope env;
        std::copy_n(payload.begin(), sizeof(MessageId), env.id.begin());
        env.mode = ConversationMode::server_assigned;
        env.body = std::move(*record);
        return submission(peer, env);
    }
    /// The `message` payload of a sealed envelope (docs/protocol.md 6.5): the message of the pair (user, peer) from
    /// our device to the peer's (until a second device can be linked, both accounts have exactly their first
    /// device). Errc::frame_too_large when its frame would not fit the channel: the message can never go (send()
    /// refuses a text too long for it, but a message queued under a larger max_frame_size reaches here).
    [[nodiscard]] Result<std::optional<Bytes>> submission(const std::string& peer, const Envelope& env) const {
        auto payload = encode_pair_submission(env, user, peer);
        if (encoded_frame_size(Frame{FrameType::message, 0, user, peer, payload}) >
            max_inner_frame_size(config.max_frame_size)) {
            return Error{Errc::frame_too_large, "its frame would be larger than the channel carries"};
        }
        return std::optional<Bytes>{std::move(payload)};
    }

    // ------------------------------------------------------------ events

    void emit(ClientEvent e) { events.push_back(std::move(e)); }
    void emit(ClientEventKind kind, std::string peer = {}) {
        ClientEvent e;
        e.kind = kind;
        e.peer = std::move(peer);
        emit(std::move(e));
    }
    void emit_error(const Error& err, std::string peer = {}) {
        ClientEvent e;
        e.kind = ClientEventKind::error;
        e.peer = std::move(peer);
        e.error = err;
        emit(std::move(e));
    }
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
        conversations.clear();
        ClientEvent e;
        e.kind = ClientEventKind::closed;
        e.error = err;
        emit(std::move(e));
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
                    ClientEvent e;
                    e.kind = ClientEventKind::trust_required;
                    e.fingerprint = handshake->server_fingerprint();
                    emit(std::move(e));
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
                    phase = Phase::ready;
                    if (output) {
                        output->established();
                    }
                    ClientEvent e;
                    e.kind = ClientEventKind::channel_ready;
                    e.suite = est->suite;
                    e.fingerprint = est->server_fingerprint;
                    e.first_contact = first_contact;
                    emit(std::move(e));
                    auto queued = std::move(before_ready);
                    before_ready.clear();
                    for (auto& f : queued) {
                        if (!send_inner(std::move(f))) {
                            return;
                        }
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
                    if (outbox->refused(*r)) {
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
                assigned_peers.erase(f.source);  // ended by the peer: sending waits for a new open()
                if (conversations.erase(f.source) != 0 || awaited.erase(f.source) != 0) {
                    emit(ClientEventKind::peer_left, f.source);
                }
                return;
            case FrameType::error: {
                auto err = parse_error_frame(f);
                if (err && !f.destination.empty()) {
                    // About a peer that cannot be reached yet (no prekeys, 6.2): we wait for it; the outbox holds.
                    ClientEvent e;
                    e.kind = ClientEventKind::waiting;
                    e.peer = f.destination;
                    e.error = err->to_error();
                    e.text = err->detail;
                    emit(std::move(e));
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
                authed = true;
                user = f.destination;
                if (!t->token.empty()) {
                    token = std::move(*t);
                }
                if (const auto st = e2e->set_user(user); !st) {
                    fail(st.error());
                    return;
                }
                if (early_prekey_status) {
                    // The upload it asks for is queued before the application hears `authenticated`, so anything
                    // the application sends next (a logout too) goes after it.
                    e2e->on_prekey_status(*early_prekey_status);
                    early_prekey_status.reset();
                }
                emit(ClientEventKind::authenticated, user);
                outbox->restart();  // messages that got no receipt before a restart or a lost connection
                return;
            }
            case AckStage::destination_online:
                awaited.erase(peer);
                emit(ClientEventKind::peer_online, peer);
                return;
            case AckStage::destination_offline:
                awaited.insert(peer);
                emit(ClientEventKind::waiting, peer);
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
        emit(ClientEventKind::password_changed, user);
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
        awaited.erase(k->peer);
        if (k->mode == ConversationMode::end_to_end) {
            conversations.erase(k->peer);
            assigned_peers.erase(k->peer);
            keys_asked.erase(k->peer);
            e2e->on_bundle(k->peer, *k->bundle, k->suite);
            return;
        }
        if (config.require_end_to_end) {
            emit_error(Error{Errc::suite_not_allowed,
                             "server-assigned conversation refused: this client requires end-to-end encryption"},
                       k->peer);
            return;
        }
        SessionConfig cfg;
        cfg.suite = k->suite;
        cfg.rotation = config.conversation_rotation;
        cfg.replay_window = 64;
        cfg.fail_closed = false;  // a forged body is dropped; the conversation lives on
        cfg.rotation.max_skipped_epochs = conversation_max_skipped_epochs;
        auto s = SendSession::create(cfg, conversation_direction_key(k->key, user, k->peer), rng, clock);
        if (!s) {
            emit_error(s.error(), k->peer);
            return;
        }
        conversations.insert_or_assign(k->peer, Conversation{k->suite, cfg, std::move(*s), std::nullopt,
                                                             conversation_direction_key(k->key, k->peer, user), 1});
        keys_asked.erase(k->peer);
        assigned_peers.insert(k->peer);
        outbox->release(k->peer);
        ClientEvent e;
        e.kind = ClientEventKind::key_assigned;
        e.peer = k->peer;
        e.suite = k->suite;
        e.mode = ConversationMode::server_assigned;
        emit(std::move(e));
    }

    void note_rotation(const std::string& peer, std::uint32_t before, std::uint32_t after, const char* direction) {
        if (after != before) {
            ClientEvent e;
            e.kind = ClientEventKind::key_rotated;
            e.peer = peer;
            e.epoch = after;
            e.text = direction;
            emit(std::move(e));
        }
    }

    void on_message(const Frame& f) {
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
        const auto received_at = delivered->received_at;
        const auto env = &delivered->envelope;
        if (env->mode == ConversationMode::end_to_end) {
            e2e->on_message(f.source, *delivered);
            return;
        }
        const auto it = conversations.find(f.source);
        if (it == conversations.end()) {
            emit_error(Error{Errc::no_conversation, "message outside a keyed conversation dropped"}, f.source);
            return;
        }
        if (e2e->seen(f.source, env->id)) {
            e2e->ack(f.source, env->id);  // a retry: acknowledged again, shown once
            return;
        }
        auto& conv = it->second;
        if (!conv.recv) {
            auto r = RecvSession::create(conv.config, conv.recv_key, rng, clock);
            if (!r) {
                emit_error(r.error(), f.source);
                return;
            }
            conv.recv.emplace(std::move(*r));
            conv.recv_key = SecureBytes{};
        }
        const auto before = conv.recv->status().epoch;
        auto plain = conv.recv->open(env->body);
        if (!plain) {
            // Not shown: a forged or replayed body (the seed's attack 2 if it ever got through), or a record
            // further ahead than conversation_max_skipped_epochs.
            emit_error(plain.error(), f.source);
            return;
        }
        note_rotation(f.source, before, conv.recv->status().epoch, "receiving");
        auto body = decode_conversation_body(*plain);
        secure_zero(plain->data(), plain->size());
        if (!body) {
            emit_error(body.error(), f.source);
            return;
        }
        e2e->remember(f.source, env->id);
        e2e->ack(f.source, env->id);
        ClientEvent e;
        e.kind = ClientEventKind::message;
        e.peer = f.source;
        e.sid = body->sid;
        e.count = body->sid;
        e.message_id = env->id;
        e.mode = ConversationMode::server_assigned;
        e.text = std::move(body->text);
        e.sent_at = body->sent_at;
        e.received_at = received_at;
        e.conversation = delivered->conversation;
        e.sender_device = delivered->sender_device;
        e.inbox_index =
            e2e->keep_received(InboxEntry{0, f.source, env->id, body->sid, e.text, ConversationMode::server_assigned,
                                          false, e.sent_at, e.received_at, e.conversation, e.sender_device});
        emit(std::move(e));
    }
};

ClientCore::ClientCore(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}

ClientCore::~ClientCore() = default;

Result<std::shared_ptr<ClientCore>> ClientCore::create(ClientConfig config, KnownServers& known, Rng& rng,
                                                       const Clock& clock, EventSink sink) {
    const bool first_contact = !known.lookup(config.handshake.server_id).has_value();
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
    m_impl->login_sent = true;
    auto st = m_impl->send_inner(
        Frame{FrameType::init, 0, std::string(user), std::string(destination), encode_credentials(credentials)});
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
    auto& impl = *m_impl;
    const auto max_inner = max_inner_frame_size(impl.config.max_frame_size);
    // The sender's timestamp (docs/protocol.md 5.2, 6.3): fixed now, kept with the message until it is delivered.
    const WallTime sent_at = impl.wall_now();
    if (!impl.conversations.contains(peer) && !impl.assigned_peers.contains(peer)) {
        auto id = impl.e2e->send_text(std::string(peer), text, sent_at, max_inner);
        impl.flush(lock);
        return id;
    }
    // The text is sealed in a conversation record inside an envelope inside an inner frame, which is sealed in a
    // channel record: refuse what cannot fit the frame limit instead of failing half way.
    const std::size_t inner_overhead = 4 + 1 + 8 + single_device_message_overhead + max_record_overhead +
                                       min_frame_size + impl.user.size() + peer.size();
    if (text.size() + inner_overhead > max_inner) {
        return Error{Errc::frame_too_large, "message too long"};
    }
    // Kept unsealed in the outbox and sealed when it goes out (outbox.h): what it becomes on the wire depends on
    // the key the conversation has then.
    MessageId id{};
    impl.rng.fill(id);
    auto st = impl.e2e->enqueue(id, std::string(peer), client_detail::make_unsealed_text(id, sent_at, text));
    impl.flush(lock);
    if (!st) {
        return st.error();
    }
    return id;
}

Status ClientCore::probe(std::string_view peer) {
    std::unique_lock lock(m_impl->mutex);
    SIM_TRY_STATUS(check_peer_call(*m_impl, peer));
    auto st = m_impl->send_inner(Frame{FrameType::probe, 0, m_impl->user, std::string(peer), {}});
    m_impl->flush(lock);
    return st;
}

void ClientCore::tick() {
    std::unique_lock lock(m_impl->mutex);
    if (!m_impl->authed || m_impl->phase != Impl::Phase::ready) {
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
    m_impl->conversations.erase(std::string(peer));
    m_impl->assigned_peers.erase(std::string(peer));
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

IssuedSessionToken ClientCore::session_token() const {
    const std::lock_guard lock(m_impl->mutex);
    return m_impl->token;
}

std::vector<std::string> ClientCore::conversations() const {
    const std::lock_guard lock(m_impl->mutex);
    std::vector<std::string> out;
    for (const auto& [peer, conv] : m_impl->conversations) {
        out.push_back(peer);
    }
    for (const auto& peer : m_impl->e2e->peers_with_sessions()) {
        if (!m_impl->conversations.contains(peer)) {
            out.push_back(peer);
        }
    }
    return out;
}

std::optional<SuiteId> ClientCore::conversation_suite(std::string_view peer) const {
    const std::lock_guard lock(m_impl->mutex);
    const auto it = m_impl->conversations.find(peer);
    if (it == m_impl->conversations.end()) {
        return m_impl->e2e->session_suite(peer);
    }
    return it->second.suite;
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
