#pragma once
/// @file
/// The client: the seed's `client.py`.
///
/// `ClientCore` is sans-IO: it runs the channel handshake (pinning the server key), logs in, sets up conversations
/// and seals/opens their messages; it reports what happens as `ClientEvent`s. `Client` puts it on a TCP connection
/// (sim/net.h) with a small blocking API: connect, log in, open a conversation, send, receive, close.

#include <sim/bytes.h>
#include <sim/channel.h>
#include <sim/clock.h>
#include <sim/error.h>
#include <sim/frame.h>
#include <sim/messages.h>
#include <sim/rng.h>
#include <sim/session.h>
#include <sim/suite.h>
#include <sim/transport.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace sim {

namespace testing {
struct ClientAccess;  // test hooks (libsim/testing/sim/testing.h, not installed)
}

/// Which way a conversation key moved.
enum class KeyDirection : std::uint8_t {
    sending,    ///< the key we seal with
    receiving,  ///< the key we open with
};

/// The channel handshake is done.
struct ChannelReadyEvent {
    SuiteId suite = SuiteId::aes256_gcm;  ///< the channel's suite
    std::string fingerprint;              ///< the server key's fingerprint
    bool first_contact = false;           ///< the key was pinned just now (not known before)
};

/// TrustMode::ask: show `fingerprint` to the user, then call ClientCore::trust().
struct TrustRequiredEvent {
    std::string fingerprint;
};

/// ack_init sid 1: logged in.
struct AuthenticatedEvent {
    std::string user;  ///< our canonical user name
};

/// `peer` cannot be talked to yet; messages to it wait in the outbox until it can.
struct WaitingEvent {
    std::string peer;
    /// nullopt: ack_init sid 3, the peer is offline (the client probes until it comes online). Set: the server cannot
    /// set up a conversation with the peer yet and says why (e.g. it has no prekeys).
    std::optional<Error> reason;
};

/// ack_init sid 2: `peer` is online.
struct PeerOnlineEvent {
    std::string peer;
};

/// The conversation with `peer` got a key (KEYGEN, or an end-to-end session).
struct KeyAssignedEvent {
    std::string peer;
    SuiteId suite = SuiteId::aes256_gcm;
    ConversationMode mode = ConversationMode::end_to_end;  ///< server_assigned: the server can read it
    std::string safety_number;                             ///< end to end: e2e::safety_number with the peer; else empty
    bool first_contact = false;                            ///< end to end: the peer's identity key was pinned just now
};

/// A conversation key with `peer` moved on.
struct KeyRotatedEvent {
    std::string peer;
    ConversationMode mode = ConversationMode::end_to_end;
    std::uint32_t epoch = 0;  ///< server-assigned: the key's epoch; end to end: Double Ratchet DH steps so far
    KeyDirection direction = KeyDirection::sending;
};

/// `peer` sent `text`.
struct MessageEvent {
    std::string peer;
    std::string text;
    MessageId message_id{};
    std::uint64_t seq = 0;  ///< end to end: the sender's sequence number; server-assigned: the seed's sid
    ConversationMode mode = ConversationMode::end_to_end;
    /// The sender's clock when it was sent, sealed in the message so the server cannot change it (docs/protocol.md
    /// 5.2, 6.3); WallTime{} = unknown (a sender that did not record it).
    WallTime sent_at{};
    /// When the server accepted it, as the server says (not authenticated: docs/protocol.md 6.5); WallTime{} =
    /// unknown.
    WallTime received_at{};
    ConversationId conversation{};          ///< the conversation it belongs to (docs/protocol.md 6.5)
    DeviceId sender_device = first_device;  ///< the sender's device it came from
    std::uint64_t inbox_index = 0;          ///< its place in ClientCore::inbox, written before it was acknowledged
    /// Sent by another device of ours to `peer` (an own copy, docs/protocol.md 6.5), not by `peer`.
    bool from_me = false;
};

/// `peer` ended the conversation or went offline.
struct PeerLeftEvent {
    std::string peer;
};

/// The server reports on one of our messages.
struct ReceiptEvent {
    std::string peer;  ///< the message's recipient
    MessageId message_id{};
    /// stored (durable on the server) or delivered (the recipient stored it); refusals are not receipt events: the
    /// outbox sends the message again, and an ErrorEvent says so when the reason will not pass by itself.
    ReceiptStatus status = ReceiptStatus::stored;
};

/// `peer`'s identity key changed. Nothing is sent to or shown from `peer` until ClientCore::accept_identity().
struct IdentityChangedEvent {
    std::string peer;
    std::string safety_number;  ///< with the new key
};

/// `count` messages from `peer` are missing (withheld, or still on the way).
struct GapEvent {
    std::string peer;
    std::uint64_t count = 0;
};

/// Something failed without ending the connection: an error from the server, a message that failed to open (`peer`
/// set; it is not shown), or a message of ours that can never go (Errc::frame_too_large: queued under a larger
/// max_frame_size) and was dropped from the outbox (`peer` and `message_id` name it).
struct ErrorEvent {
    Error error;
    std::string peer;                     ///< the peer it concerns, or empty
    std::optional<MessageId> message_id;  ///< the dropped message of ours, if any
};

/// The connection is gone.
struct ClosedEvent {
    Error reason;
};

/// ClientCore::change_password() succeeded on the server and the local state is sealed under the new password;
/// ClientCore::session_token() holds the new token (every session of the user ends: log in again with it).
struct PasswordChangedEvent {
    std::string user;
};

/// Linking this installation as a new device of `user` (Client::link_device): an existing device of the account
/// offered to approve it. Show `code` and `fingerprint`; the user types the code on that device.
struct LinkCodeEvent {
    std::string user;
    DeviceId device = 0;      ///< the id the server gave this device
    std::string code;         ///< "ABCD-EFGH"
    std::string fingerprint;  ///< of this device's key
};

/// A new device asks to be linked to our account (`user` = us). Compare `fingerprint` with the one it shows and
/// approve it with the code it shows (ClientCore::approve_device), or do nothing (the link times out).
struct LinkRequestEvent {
    std::string user;
    DeviceId device = 0;
    std::string fingerprint;  ///< of the new device's key
};

/// A device list was checked and accepted (docs/protocol.md 6.9): of our own account (`user` = us) or of a peer.
struct DevicesChangedEvent {
    std::string user;
    std::uint64_t version = 0;
    std::vector<DeviceId> devices;  ///< in increasing order
};

/// The owner's view of the account's devices (ClientCore::request_devices): names, states, link and last-seen times.
struct DeviceInfoEvent {
    std::string user;
    std::vector<DeviceInfo> devices;
};

/// A contact's presence (docs/protocol.md 6.10): after login, one per contact (a snapshot), then one per change,
/// and the answer to ClientCore::query_presence. The server tells only contacts (each side named the other) that
/// are online and do not hide; a stranger is reported offline.
struct PresenceEvent {
    std::string peer;
    bool online = false;
};

/// What happened on a client: one struct per kind, holding only that kind's fields. Switch on it with std::visit
/// or std::get_if; kind_of() names the alternative.
using ClientEvent =
    std::variant<ChannelReadyEvent, TrustRequiredEvent, AuthenticatedEvent, WaitingEvent, PeerOnlineEvent,
                 KeyAssignedEvent, KeyRotatedEvent, MessageEvent, PeerLeftEvent, ReceiptEvent, IdentityChangedEvent,
                 GapEvent, ErrorEvent, ClosedEvent, PasswordChangedEvent, LinkCodeEvent, LinkRequestEvent,
                 DevicesChangedEvent, DeviceInfoEvent, PresenceEvent>;

/// The alternatives of ClientEvent, in the same order: for choosing one at run time (Client::wait_for_kind, the
/// Python binding) and for printing (client_event_name).
enum class ClientEventKind : std::uint8_t {
    channel_ready,
    trust_required,
    authenticated,
    waiting,
    peer_online,
    key_assigned,
    key_rotated,
    message,
    peer_left,
    receipt,
    identity_changed,
    gap,
    error,
    closed,
    password_changed,
    link_code,
    link_request,
    devices_changed,
    device_info,
    presence,
};

namespace detail {
template <typename E, typename... Es>
constexpr std::size_t alternative_index(const std::variant<Es...>* /*unused*/) noexcept {
    static_assert((std::is_same_v<E, Es> || ...), "not a ClientEvent alternative");
    std::size_t i = 0;
    (void)((std::is_same_v<E, Es> ? true : (++i, false)) || ...);
    return i;
}
}  // namespace detail

/// The kind of the event type `E` (e.g. client_event_kind<MessageEvent> == ClientEventKind::message).
template <typename E>
inline constexpr ClientEventKind client_event_kind =
    static_cast<ClientEventKind>(detail::alternative_index<E>(static_cast<const ClientEvent*>(nullptr)));

/// The kind of `event`.
[[nodiscard]] inline ClientEventKind kind_of(const ClientEvent& event) noexcept {
    return static_cast<ClientEventKind>(event.index());
}

/// Whom `event` is about: its `peer`; its `user` (our own name, or for DevicesChangedEvent the user whose list it
/// is) for AuthenticatedEvent, PasswordChangedEvent and the device events; empty for the others.
[[nodiscard]] inline std::string_view peer_of(const ClientEvent& event) noexcept {
    return std::visit(
        [](const auto& e) -> std::string_view {
            if constexpr (requires { e.peer; }) {
                return e.peer;
            } else if constexpr (requires { e.user; }) {
                return e.user;
            } else {
                return {};
            }
        },
        event);
}

/// The error an ErrorEvent or a ClosedEvent reports; nullopt for the other kinds.
[[nodiscard]] inline std::optional<Error> error_of(const ClientEvent& event) {
    if (const auto* e = std::get_if<ErrorEvent>(&event)) {
        return e->error;
    }
    if (const auto* e = std::get_if<ClosedEvent>(&event)) {
        return e->reason;
    }
    return std::nullopt;
}

/// Short name of an event kind ("message", "key_rotated", ...).
std::string_view client_event_name(ClientEventKind kind) noexcept;

class ClientState;

/// One received message as the client keeps it (docs/protocol.md 6.8): written to the client state, together with
/// the ratchet state that opened it, before it is acknowledged to the server.
struct InboxEntry {
    std::uint64_t index = 0;  ///< its place: 0, 1, 2... in the order the messages arrived
    std::string peer;         ///< the sender (the recipient when from_me)
    MessageId message_id{};
    std::uint64_t seq = 0;  ///< end-to-end: the sender's sequence number; server-assigned: the seed's sid
    std::string text;
    ConversationMode mode = ConversationMode::end_to_end;
    bool read = false;                      ///< index < InboxStatus::first_unread
    WallTime sent_at{};                     ///< the sender's timestamp, authenticated with the message; {} = unknown
    WallTime received_at{};                 ///< the server's receive time, as the server says; {} = unknown
    ConversationId conversation{};          ///< the conversation it belongs to (docs/protocol.md 6.5)
    DeviceId sender_device = first_device;  ///< the sender's device it came from
    bool from_me = false;  ///< sent by another device of ours to `peer` (`peer` is then the recipient)
};

/// Where the inbox stands.
struct InboxStatus {
    std::uint64_t next = 0;          ///< the index the next message gets (= how many there are)
    std::uint64_t first_unread = 0;  ///< every message below it is read; next - first_unread are unread
};

/// What a client knows about one peer's identity (end-to-end mode).
struct PeerIdentity {
    std::string peer;
    Bytes identity_key;           ///< the pinned Ed25519 identity key
    std::string safety_number;    ///< e2e::safety_number of us and the peer
    bool verified = false;        ///< the user compared the safety number (verify_peer)
    bool change_pending = false;  ///< a different key was seen; accept_identity() pins it
};

struct ClientConfig {
    /// Channel handshake settings: server_id ("host:port") for pinning, trust mode, expected fingerprint, suites.
    ClientHandshakeConfig handshake{};
    /// Rotation of conversation keys (the seed: every 30 s).
    RotationPolicy conversation_rotation{};
    std::size_t max_frame_size = default_max_frame_size;
    /// The local state (identity, prekeys, ratchets, pinned peers, outbox; sim/client_state.h). Must outlive the
    /// core. Null here: an in-memory state, so every run is a new identity that peers see as a key change. (The
    /// networked sim::Client fills it from ClientOptions::state, whose default is a file that persists.)
    ClientState* state = nullptr;
    /// Refuse server-assigned conversations (KEYGEN mode 1) instead of labelling them readable by the server.
    bool require_end_to_end = false;
    /// Suites allowed for end-to-end conversations; the initiator uses the server's hint when allowed, else the first.
    SuitePolicy end_to_end_suites = SuitePolicy::default_policy();
    /// One-time prekeys uploaded per batch.
    std::size_t one_time_prekeys = 100;
    /// A message without a receipt is sent again (same id, same bytes) after this long, and after reconnecting.
    Duration resend_after = std::chrono::seconds(10);
    /// The civil clock whose reading each message carries as its sender's timestamp (docs/protocol.md 5.2, 6.3).
    /// Empty: the system clock. Tests set a fixed one.
    std::function<WallTime()> wall_clock;
    /// Hide this user's presence: the server shows the user offline to their contacts (docs/protocol.md 6.10).
    /// Sent at each login when the server speaks presence; ClientCore::set_presence_hidden changes it.
    bool hide_presence = false;
};

/// The sans-IO client. Thread-safe: calls may come from the application and the transport concurrently.
/// Events are delivered through the callback from whichever thread caused them; the callback must not block
/// and must not call back into the core.
class ClientCore final : public ConnectionHandler {
public:
    using EventSink = std::function<void(const ClientEvent&)>;

    /// `known`, `rng` and `clock` must outlive the core. Errors are ClientHandshake::create's.
    static Result<std::shared_ptr<ClientCore>> create(ClientConfig config, KnownServers& known, Rng& rng,
                                                      const Clock& clock, EventSink sink);
    ~ClientCore() override;
    ClientCore(const ClientCore&) = delete;
    ClientCore& operator=(const ClientCore&) = delete;

    /// Attach the transport and send the first handshake message.
    Status attach(std::shared_ptr<ConnectionOutput> output);

    /// Answer trust_required. Errc::invalid_state when no question is pending.
    Status trust(bool accept);

    /// Send init with credentials (queued until the channel is ready). `destination` may be empty (log in only).
    /// Errc::invalid_state when already logged in or closed; Errc::bad_password for an empty secret.
    Status login(std::string_view user, const Credentials& credentials, std::string_view destination = {});
    /// init for a new conversation on the logged-in connection. Errc::not_authenticated before login.
    Status open(std::string_view peer);
    /// Seal `text` for `peer` and send it; returns the message id (receipts name it). Errc::no_conversation before
    /// the peer's KEYGEN; Errc::frame_too_large for a text that does not fit a frame; Errc::identity_changed while
    /// a changed identity key of `peer` is not accepted; Errc::storage_error when the state cannot be written.
    Result<MessageId> send(std::string_view peer, std::string_view text);
    /// Ask whether `peer` is online (ack_init 2 or 3 comes back as an event).
    Status probe(std::string_view peer);
    /// Hide (true) or show this user's presence to their contacts, now and at later logins of this core
    /// (docs/protocol.md 6.10). Errc::not_implemented when the server does not speak presence (the handshake did
    /// not agree on it; before the handshake the choice is only remembered), Errc::closed.
    Status set_presence_hidden(bool hidden);
    /// Ask for `peer`'s presence: a PresenceEvent follows (offline for anyone who is not a contact). Errors:
    /// not_authenticated, bad_destination, not_implemented (the server does not speak presence), closed.
    Status query_presence(std::string_view peer);
    /// Whether the server speaks presence (known once the channel is up).
    [[nodiscard]] bool presence_supported() const;
    /// Probe every awaited peer, or send a keepalive when nothing is awaited. Call periodically.
    void tick();
    /// Send what the outbox may send now (it paces itself to the server's limits; docs/protocol.md 6.6). Call at
    /// next_wakeup().
    void pump();
    /// When pump() has something to send that waits only on time (pacing, a back-off after a refusal, the re-send
    /// timer); nullopt when nothing does.
    [[nodiscard]] std::optional<TimePoint> next_wakeup() const;
    /// End the conversation with `peer`.
    Status leave(std::string_view peer);
    /// Change the account's password (docs/protocol.md 5.5): the server checks `old_password` (throttled like a
    /// login) and stores the new one; then the client state is sealed under `new_password` and a PasswordChangedEvent
    /// is reported. A refusal is an ErrorEvent (auth_rejected, throttled, bad_password...). If the server
    /// changed it but the state could not be re-sealed, the error says so (the state still opens with the old
    /// password: `sim rekey` fixes it). Errc::not_authenticated, Errc::bad_password (empty or too long), busy.
    Status change_password(std::string_view old_password, std::string_view new_password);
    /// Log out (revoke: 0 keep the token, 1 revoke it, 2 revoke all of the user's tokens) and close.
    Status logout(std::uint8_t revoke = 0);
    /// The pinned identity of `peer` and our safety number with it. Errc::no_conversation when none is known.
    [[nodiscard]] Result<PeerIdentity> peer_identity(std::string_view peer) const;
    /// Mark `peer`'s current identity key as verified (the user compared the safety numbers).
    Status verify_peer(std::string_view peer);
    /// Pin `peer`'s new identity key after identity_changed; held messages are then opened and sending resumes.
    /// Errc::invalid_state when no change is pending.
    Status accept_identity(std::string_view peer);
    /// Devices of the account (docs/protocol.md 6.9). A new installation links itself by logging in with
    /// `Credentials::device` = 0 (with a state that holds no identity yet): it then reports a LinkCodeEvent, and an
    /// AuthenticatedEvent once an existing device approved it. On an existing device, a LinkRequestEvent says that a
    /// new one asks; approve_device() takes the code it shows: on a match the new device gets the account key and
    /// the account's list admits it (a DevicesChangedEvent follows). Errc::invalid_state when no device waits for
    /// approval; Errc::auth_failed for a wrong code (that link is over: the new device starts again).
    Status approve_device(std::string_view code);
    /// Remove `device` from the account: a new signed list without it (its tokens, prekeys and mailbox go; it can
    /// no longer log in). A DevicesChangedEvent follows. Errc::invalid_argument for a device the account's list does
    /// not hold, or its only device.
    Status remove_device(DeviceId device);
    /// Name a device (at most 64 bytes, no control characters: else Errc::invalid_argument); a DeviceInfoEvent follows.
    Status rename_device(DeviceId device, std::string_view name);
    /// Ask for the owner's view of the account's devices: a DeviceInfoEvent.
    Status request_devices();
    /// The device this connection is (1 until login).
    [[nodiscard]] DeviceId device() const;
    /// Messages sent but without a receipt yet.
    [[nodiscard]] std::size_t outbox_size() const;
    /// Received messages with index >= `from`, oldest first, at most `limit` (only those from `peer` when it is not
    /// empty; a filtered page reads past the others). Errc::not_authenticated before login; Errc::corrupt_database,
    /// Errc::storage_error from the state.
    [[nodiscard]] Result<std::vector<InboxEntry>> inbox(std::uint64_t from, std::size_t limit,
                                                        std::string_view peer = {}) const;
    /// Next index and first unread (zero before login).
    [[nodiscard]] InboxStatus inbox_status() const;
    /// Every message with index < `up_to` is read (the cursor never moves back). Errc::not_authenticated before
    /// login; storage errors.
    Status mark_read(std::uint64_t up_to);
    /// The outbox in numbers (docs/protocol.md 6.6).
    struct OutboxStatus {
        std::size_t messages = 0;    ///< without a receipt (= outbox_size())
        std::size_t unsent = 0;      ///< not yet sent on this connection (waiting for the window, the pace, a back-off)
        std::uint64_t refusals = 0;  ///< refusals received since the core was created (rate, storage, out of order...)
    };
    [[nodiscard]] OutboxStatus outbox_status() const;

    [[nodiscard]] bool ready() const;
    [[nodiscard]] bool authenticated() const;
    [[nodiscard]] std::string user() const;
    /// The token issued at the last password login (empty otherwise). Secret: store with care.
    [[nodiscard]] IssuedSessionToken session_token() const;
    /// Peers with a keyed conversation (keyed on this connection, or end-to-end sessions in the state), in name
    /// order.
    [[nodiscard]] std::vector<std::string> conversations() const;
    /// The conversation suite with `peer`, if keyed.
    [[nodiscard]] std::optional<SuiteId> conversation_suite(std::string_view peer) const;

    void on_bytes(ByteView data) override;
    void on_closed(Errc reason) override;

    struct Impl;  ///< opaque

private:
    friend struct testing::ClientAccess;
    explicit ClientCore(std::unique_ptr<Impl> impl);
    /// Any inner frame as is, inside the encrypted channel (testing::send_raw).
    Status send_raw(const Frame& frame);
    /// Benchmarking hook (testing::set_blind_sink): acknowledge delivered messages without opening them.
    void set_blind_sink(bool on);
    /// Messages acknowledged unopened so far (testing::blind_acked).
    [[nodiscard]] std::uint64_t blind_acked() const;
    std::unique_ptr<Impl> m_impl;
};

namespace net {
class IoPool;
}

/// Where a networked client keeps its end-to-end state (identity key, prekeys, ratchets, pinned peers, outbox,
/// inbox). The default is an encrypted file (open_client_state) per user and server that outlives the process, so
/// that the next run is the same identity to peers; a state in memory only when `in_memory` asks for it.
struct ClientStateOptions {
    /// The user whose state it is: it names the default file. Needed unless `file` is given or `in_memory`.
    std::string user;
    /// The password the file is sealed under (Argon2id). Needed unless `in_memory`. Not the login password
    /// necessarily: a mistyped login password then cannot seal a new state.
    std::string password;
    /// The state file. Empty: default_client_state_path(server_id, user), its directory created with mode 0700.
    std::string file;
    /// Keep the state in memory only: every run is a new identity, which peers see as a key change (tests,
    /// throwaway clients).
    bool in_memory = false;
};

/// The directory of the default client state files: "$XDG_CONFIG_HOME/libsim/keys" (when that is an absolute
/// path), else "$HOME/.config/libsim/keys" -- the `sim` tool's default --keys-dir. Errc::invalid_argument when
/// neither variable is set.
Result<std::string> default_client_state_dir();

/// The name of `user`'s state file at `server_id` ("host:port"): "<server_id>-<user>.db", with ':', '/', '[' and
/// ']' replaced by '_' (the `sim` tool names its files the same way).
std::string client_state_file_name(std::string_view server_id, std::string_view user);

/// default_client_state_dir() + "/" + client_state_file_name(server_id, user). Errc::invalid_argument for an empty
/// user, or as default_client_state_dir().
Result<std::string> default_client_state_path(std::string_view server_id, std::string_view user);

/// Open the state `options` asks for, as Client::connect does when ClientConfig::state is null (for bindings and
/// applications that hold the state themselves): a memory state when `in_memory`, else the file (`file`, whose
/// directory must exist, or the default path of `user` at `server_id`, its directory made with mode 0700). Errc::invalid_argument for an empty
/// password, or neither user nor file; open_client_state's errors with the path in the message; io_error when the
/// directory cannot be made.
Result<std::unique_ptr<ClientState>> open_client_state(const ClientStateOptions& options, std::string_view server_id);

/// Options of a networked client.
struct ClientOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 0;
    ClientConfig config{};
    /// File of pinned server keys ("server_id hex-key" lines, mode 0600). Empty: pins live in memory only.
    std::string known_servers_file;
    /// How long connect() waits for the TCP connection and the handshake.
    Duration connect_timeout = std::chrono::seconds(10);
    /// Probe / keepalive period.
    Duration tick_interval = std::chrono::seconds(5);
    /// Events kept for receive() before the oldest are dropped (a bounded queue; an ErrorEvent with
    /// Errc::queue_full says so). Messages are never lost with them: they are in the inbox (ClientCore::inbox).
    std::size_t max_queued_events = 10000;
    /// I/O threads (sim/net.h) shared with other clients; null = the connection gets a thread of its own.
    std::shared_ptr<net::IoPool> io_pool;
    /// The end-to-end state when `config.state` is null (when it is set, that state is used and this is ignored):
    /// by default a file per user and server, opened by connect() and held until the client is destroyed.
    ClientStateOptions state;
};

/// A client on a TCP connection: the few-lines API for applications.
class Client {
public:
    /// Connect and complete the handshake (pinning the server key per the trust mode; TrustMode::ask is answered
    /// by `ask_trust`, which gets the fingerprint). The ChannelReadyEvent stays queued for receive(). The state
    /// file (ClientOptions::state) is opened first: invalid_argument when it has no password, or neither a user
    /// nor a file and not in_memory; open_client_state's errors (auth_failed: wrong password, busy: in use by
    /// another client, corrupt_database...) with the path in the message; io_error when its directory cannot be
    /// made. Then io_error, timeout, server_key_mismatch, server_key_unknown, handshake_failed, no_common_suite...
    static Result<std::unique_ptr<Client>> connect(const ClientOptions& options,
                                                   std::function<bool(const std::string&)> ask_trust = {});
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    /// Log in (password; an unknown user is registered under open registration) and wait for ack_init sid 1.
    /// `destination` may name a peer to talk to at once. Errors: the server's (auth_rejected, throttled...), timeout.
    Status login(std::string_view user, std::string_view password, std::string_view destination = {},
                 Duration timeout = std::chrono::seconds(30));
    /// Log in with a session token from an earlier login.
    Status login_with_token(std::string_view user, ByteView token, std::string_view destination = {},
                            Duration timeout = std::chrono::seconds(30));
    /// Explicit registration (servers with the `explicit` policy).
    Status register_user(std::string_view user, std::string_view password, Duration timeout = std::chrono::seconds(30));
    /// Link this installation as a new device of an existing account (docs/protocol.md 6.9): log in as a new
    /// installation, show the code (`show_code` is called with the LinkCodeEvent once an existing device offered),
    /// and wait until that device approved it (the AuthenticatedEvent, which stays queued). The state must be new
    /// (Errc::invalid_state otherwise). An unknown user under open registration is registered, and this is its
    /// first device (no code). Errors: the server's, the approving device's (auth_failed: a wrong code was typed
    /// there), timeout.
    Status link_device(std::string_view user, std::string_view password,
                       const std::function<void(const LinkCodeEvent&)>& show_code,
                       Duration timeout = std::chrono::minutes(10));
    /// ClientCore::approve_device, waiting until the server stored the list that admits the new device.
    Status approve_device(std::string_view code, Duration timeout = std::chrono::seconds(30));
    /// The owner's view of the account's devices.
    Result<std::vector<DeviceInfo>> devices(Duration timeout = std::chrono::seconds(30));
    /// ClientCore::remove_device, waiting until the server stored the list without it.
    Status remove_device(DeviceId device, Duration timeout = std::chrono::seconds(30));
    /// ClientCore::change_password, waiting for its outcome.
    Status change_password(std::string_view old_password, std::string_view new_password,
                           Duration timeout = std::chrono::seconds(30));
    Status open(std::string_view peer);
    Result<MessageId> send(std::string_view peer, std::string_view text);
    Status leave(std::string_view peer);
    Status logout(std::uint8_t revoke = 0);

    /// The next event, waiting at most `timeout`. Errc::timeout when none came; Errc::closed once the connection
    /// is gone and no events remain.
    Result<ClientEvent> receive(Duration timeout);
    /// Wait for an event of type `E` (about `peer`, when not empty), keeping the others queued in order. Errors as
    /// receive().
    template <typename E>
    Result<E> wait_for(std::string_view peer, Duration timeout) {
        auto e = wait_for_kind(client_event_kind<E>, peer, timeout);
        if (!e) {
            return std::move(e).error();
        }
        return std::get<E>(std::move(e).value());
    }
    /// wait_for() with the kind chosen at run time (bindings). `peer` is compared with peer_of(event).
    Result<ClientEvent> wait_for_kind(ClientEventKind kind, std::string_view peer, Duration timeout);
    /// `notify` is called each time an event is queued (also the ClosedEvent), from the thread that queued it and
    /// under the queue's lock: it must not block and must not call into the client (e.g. write to an eventfd or a
    /// pipe that an event loop watches, then take the events with receive(Duration::zero())). An empty function
    /// removes it; once set_event_notifier returns, the previous one is no longer called.
    void set_event_notifier(std::function<void()> notify);

    ClientCore& core() noexcept;
    /// The server fingerprint seen in the handshake.
    [[nodiscard]] std::string server_fingerprint() const;
    /// True once the connection is gone (the server closed it, it broke, or close() was called).
    [[nodiscard]] bool closed() const;
    /// Close the connection (idempotent).
    void close();

    struct Impl;  ///< opaque

private:
    explicit Client(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

/// KnownServers kept in a text file ("server_id hex-public-key" per line), created with mode 0600.
class FileKnownServers final : public KnownServers {
public:
    /// Load `path` (a missing file is an empty list). Errc::io_error / Errc::bad_field for unreadable or bad lines.
    static Result<std::unique_ptr<FileKnownServers>> open(std::string path);
    [[nodiscard]] std::optional<Bytes> lookup(std::string_view server_id) const override;
    Status remember(std::string_view server_id, ByteView public_key) override;

private:
    explicit FileKnownServers(std::string path) : m_path(std::move(path)) {}
    std::string m_path;
    MemoryKnownServers m_cache;
};

}  // namespace sim
