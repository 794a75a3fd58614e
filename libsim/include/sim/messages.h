#pragma once
/// @file
/// Payloads of the seed's inner frames (docs/protocol.md section 5): credentials in init, the token in
/// ack_init stage 1, the key in KEYGEN, and the sid + text inside a conversation record. Strict decoders: every
/// length is checked, trailing bytes are refused.

#include <sim/bytes.h>
#include <sim/clock.h>
#include <sim/e2e.h>
#include <sim/error.h>
#include <sim/suite.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sim {

/// The reserved source name of frames the server originates.
inline constexpr std::string_view server_name = "Server";

/// A device of an account (docs/protocol.md 6.5): numbered from 1, assigned by the server, never reused within the
/// account. A device address is (user, device); every device has its own mailbox.
using DeviceId = std::uint32_t;
/// The device an account is created with.
inline constexpr DeviceId first_device = 1;

/// Where a device is in its life, as op 2 reports it (the store's DeviceState values).
enum class DeviceStatus : std::uint8_t { pending = 1, active = 2, removed = 3 };

/// Longest device name (bytes of UTF-8).
inline constexpr std::size_t max_device_name_size = 64;

/// One device in the owner's view (op 2).
struct DeviceInfo {
    DeviceId device = first_device;
    DeviceStatus status = DeviceStatus::active;
    std::string name;
    WallTime linked{};     ///< {} while pending
    WallTime last_seen{};  ///< {} = never
    friend bool operator==(const DeviceInfo&, const DeviceInfo&) = default;
};

/// How an init frame authenticates.
enum class CredentialKind : std::uint8_t {
    none = 0,               ///< the connection is already authenticated
    password = 1,           ///< password login (open registration creates unknown users)
    token = 2,              ///< session token from an earlier login
    register_password = 3,  ///< explicit registration with a password
};

/// init payload. `secret` is a password or token: zeroized, never logged.
struct Credentials {
    Credentials() = default;
    Credentials(CredentialKind k, SecureBytes s, std::optional<DeviceId> d = std::nullopt)
        : kind(k), secret(std::move(s)), device(d) {}

    CredentialKind kind = CredentialKind::none;
    SecureBytes secret;
    /// The device to log in as (docs/protocol.md 6.9): absent = device 1 (clients from before devices); 0 = a new
    /// installation (the account's first device when the login registers it, otherwise a pending device to link).
    std::optional<DeviceId> device;
};

Bytes encode_credentials(const Credentials& c);
/// Errc::truncated, Errc::bad_field (unknown kind, secret with kind none, a device with kind none),
/// Errc::trailing_bytes.
Result<Credentials> decode_credentials(ByteView payload);

/// ack_init stage 1 payload: the token a password login issued, and the device the connection serves when the
/// init named one (docs/protocol.md 6.9).
struct IssuedSessionToken {
    SecureBytes token;  ///< empty: nothing new issued (a token login, or a pending device)
    std::int64_t expires_unix_ms = 0;
    std::optional<DeviceId> device;
};
/// Empty payload for no token and no device; with a device, `token len | token | expires | device` (len may be 0).
Bytes encode_session_token(const IssuedSessionToken& t);
/// An empty payload decodes to an empty token without a device (token login from a client before devices).
/// Errc::truncated, Errc::trailing_bytes, Errc::bad_field (an empty token without a device, device 0).
Result<IssuedSessionToken> decode_session_token(ByteView payload);

/// A `passwd` frame from a client (docs/protocol.md 5.5): both passwords, zeroized, never logged.
struct PasswordChange {
    SecureBytes old_password;
    SecureBytes new_password;
};
Bytes encode_password_change(const PasswordChange& c);
/// Errc::truncated, Errc::trailing_bytes, Errc::bad_password (an empty password).
Result<PasswordChange> decode_password_change(ByteView payload);

/// How a conversation is keyed (the first byte of a KEYGEN payload and of a message envelope).
enum class ConversationMode : std::uint8_t {
    server_assigned = 1,  ///< the seed's mode: the server generates the key and could read the conversation
    end_to_end = 2,       ///< X3DH + Double Ratchet: the server never learns a key (docs/protocol.md section 6)
};
/// "server-assigned" / "end-to-end".
std::string_view conversation_mode_name(ConversationMode mode) noexcept;

/// KEYGEN payload (docs/protocol.md 5.1 and 6.2). Server-assigned: `suite`, `peer` and `key` (24 bytes for TDES,
/// 32 for the AEADs). End-to-end: `peer`, `suite` (a hint) and the peer's prekey `bundle`; `key` is empty.
/// One device's prekey bundle in a KEYGEN of mode 3.
struct DeviceBundle {
    DeviceId device = first_device;
    e2e::PrekeyBundle bundle;
};
/// Most device bundles in one KEYGEN of mode 3 (the most devices a list names).
inline constexpr std::size_t max_keygen_devices = 64;
/// Largest signed device list a KEYGEN of mode 3 carries (docs/protocol.md 6.9).
inline constexpr std::size_t max_keygen_list_size = 8192;

/// KEYGEN (docs/protocol.md 5.1, 6.2): mode 1 a server-assigned key; end to end, mode 2 one bundle (`bundle`, the
/// peer's device 1) or mode 3 (`device_list` not empty): the peer's account key, its signed device list and a bundle
/// per device.
struct KeyAssignment {
    SuiteId suite = SuiteId::aes256_gcm;
    std::string peer;
    SecureBytes key;
    ConversationMode mode = ConversationMode::server_assigned;
    std::optional<e2e::PrekeyBundle> bundle;
    Bytes account_key;                          ///< mode 3: the peer's account key (Ed25519 public)
    Bytes device_list;                          ///< mode 3: the peer's signed device list, as stored
    std::vector<DeviceBundle> device_bundles{};  ///< mode 3: 1..64, devices non-zero and increasing
};
Bytes encode_key_assignment(const KeyAssignment& k);
/// Errc::bad_field for an unknown mode, Errc::suite_not_allowed for an unknown suite, Errc::invalid_key when the
/// key size does not fit the suite or a bundle key has the wrong size; truncated / trailing_bytes.
Result<KeyAssignment> decode_key_assignment(ByteView payload);

/// Most one-time prekeys in one upload, and kept per user by the server.
inline constexpr std::size_t max_prekeys_per_upload = 200;
inline constexpr std::size_t max_prekeys_stored = 1000;
/// The server asks for more one-time prekeys below this stock.
inline constexpr std::size_t prekey_low_water = 20;

/// `prekeys` payload from a client (docs/protocol.md 6.1).
struct PrekeyUpload {
    bool replace = false;  ///< replace identity, signed prekey and all one-time prekeys
    Bytes identity_key;    ///< Ed25519 public
    std::uint32_t signed_prekey_id = 0;
    Bytes signed_prekey;
    Bytes signed_prekey_signature;
    std::vector<std::pair<std::uint32_t, Bytes>> one_time_prekeys;  ///< (id, X25519 public)
};
Bytes encode_prekey_upload(const PrekeyUpload& u);
/// Errc::invalid_key (sizes), Errc::bad_field (replace not 0/1, more than max_prekeys_per_upload), truncated,
/// trailing_bytes. The signature is not checked here (e2e::verify_bundle does).
Result<PrekeyUpload> decode_prekey_upload(ByteView payload);

/// `prekeys` payload from the server: the stored identity (if any) and the one-time prekey stock.
struct PrekeyStatus {
    std::optional<Bytes> identity_key;
    std::uint32_t one_time_count = 0;
};
Bytes encode_prekey_status(const PrekeyStatus& s);
Result<PrekeyStatus> decode_prekey_status(ByteView payload);

/// Client-chosen id of one message (16 random bytes): the unit of deduplication and acknowledgement.
using MessageId = std::array<std::uint8_t, 16>;

/// Id of a conversation (docs/protocol.md 6.5): for a pair, pair_conversation_id(); for a group, its group id.
using ConversationId = std::array<std::uint8_t, 16>;
/// The conversation id of the pair of canonical names {a, b} (in either order): the first 16 bytes of
/// SHA-256("libsim pair" || 0x00 || lo || 0x00 || hi), lo and hi the two names in byte order.
ConversationId pair_conversation_id(std::string_view a, std::string_view b);

/// What one device of the recipient gets of a message, and what its mailbox stores (docs/protocol.md 6.5).
struct Envelope {
    MessageId id{};
    ConversationMode mode = ConversationMode::end_to_end;
    Bytes body;  ///< server-assigned: a conversation record (5.2); end-to-end: a RatchetMessage (6.3)
};
/// id | mode | body.
Bytes encode_envelope(const Envelope& e);
/// Errc::truncated, Errc::bad_field (unknown mode, empty body).
Result<Envelope> decode_envelope(ByteView payload);

/// Most bodies (recipient devices) in one message.
inline constexpr std::size_t max_devices_per_message = 64;

/// One body of a message: sealed for one device of the recipient.
struct DeviceBody {
    DeviceId device = first_device;
    Bytes body;
    friend bool operator==(const DeviceBody&, const DeviceBody&) = default;
};
/// Most bodies for the sender's own other devices in one message (an account has at most 64 devices).
inline constexpr std::size_t max_own_devices_per_message = max_devices_per_message - 1;

/// Payload of a `message` frame from a client (docs/protocol.md 6.5): one message of a conversation, with a body for
/// each device of the recipient it goes to and, optionally, one for each of the sender's own other devices.
struct Submission {
    MessageId id{};
    ConversationMode mode = ConversationMode::end_to_end;
    ConversationId conversation{};
    DeviceId sender_device = first_device;
    std::vector<DeviceBody> bodies;        ///< the recipient's devices, in increasing device order
    std::vector<DeviceBody> own_bodies{};  ///< the sender's other devices, increasing; empty: none (absent on the wire)
};
/// id | mode | conversation | sender device u32 | count u8 | count x (device u32 | length u32 | body), then, only
/// when `own_bodies` is not empty, own count u8 | own count x (device u32 | length u32 | body).
Bytes encode_submission(const Submission& s);
/// Errc::truncated, Errc::trailing_bytes, Errc::bad_field (unknown mode, sender device 0, no body or more than
/// max_devices_per_message, a device 0, devices not in increasing order, an empty body; an own list that is present
/// with 0 or more than max_own_devices_per_message bodies or names the sender device).
Result<Submission> decode_submission(ByteView payload);
/// What a message to one device adds to its body, on the way in (the submission) and out (the delivery header and
/// the envelope): 46 bytes each.
inline constexpr std::size_t single_device_message_overhead = 16 + 1 + 16 + 4 + 1 + 4 + 4;

/// The envelope (encoded: id | mode | body) that body `i` of `s` is stored and delivered as.
Bytes device_envelope(const Submission& s, std::size_t i);
/// The submission of `e` in the pair conversation of `from` and `to`, from device `from_device` to the one device
/// `to_device` of `to`.
Bytes encode_pair_submission(const Envelope& e, std::string_view from, std::string_view to,
                             DeviceId from_device = first_device, DeviceId to_device = first_device);

/// Version of the delivery header (docs/protocol.md 6.5).
inline constexpr std::uint8_t delivery_header_version = 2;
/// Size of the delivery header: version u8 | received_at u64 | conversation (16) | sender device u32.
inline constexpr std::size_t delivery_header_size = 29;
static_assert(single_device_message_overhead == delivery_header_size + 16 + 1);

/// Payload of a `message` frame from the server to a device (docs/protocol.md 6.5): the delivery header, then the
/// envelope of this device.
struct Delivered {
    WallTime received_at{};  ///< when the server accepted the message (its claim, not authenticated); {} = unknown
    ConversationId conversation{};
    DeviceId sender_device = first_device;
    Envelope envelope;
};
/// The delivery header followed by `envelope` (an encoded envelope, copied as is).
Bytes encode_delivered(WallTime received_at, const ConversationId& conversation, DeviceId sender_device,
                       ByteView envelope);
/// Errc::truncated (shorter than the header), Errc::bad_field (another delivery version, a receive time above
/// 2^63 - 1 ms, sender device 0), then the errors of decode_envelope for the rest.
Result<Delivered> decode_delivered(ByteView payload);

/// A client remembers the ids of the last this many messages of each sender, to show each once; a server never has
/// more than this many messages of one mailbox sent and not deleted (its delivery window), so what a crash makes it
/// send again is always among them (docs/protocol.md 6.7).
inline constexpr std::size_t remembered_ids_per_sender = 1000;

/// Most ids in one ack or receipt frame.
inline constexpr std::size_t max_ids_per_frame = 256;

/// `ack` payload (recipient to server): the ids of messages from the frame's destination that are now stored.
Bytes encode_ack(const std::vector<MessageId>& ids);
/// Errc::bad_field for 0 or more than max_ids_per_frame ids; truncated, trailing_bytes.
Result<std::vector<MessageId>> decode_ack(ByteView payload);

/// The sid of a `receipt` frame.
enum class ReceiptStatus : std::uint32_t {
    stored = 1,     ///< committed to the server's durable offline store
    delivered = 2,  ///< the recipient's client stored and acknowledged it
    refused = 3,    ///< not accepted (payload: a Refusal); it and every later message of its stream must be sent
                    ///< again, from `Refusal::expected` on
};
/// `receipt` payload (server to sender) for status stored and delivered: peer | device u32 | ids.
struct Receipt {
    std::string peer;  ///< the recipient of the messages
    /// delivered: the recipient's device that acknowledged them; stored: 0 (in the mailbox of every device the
    /// message was for).
    DeviceId device = 0;
    std::vector<MessageId> ids;
};
Bytes encode_receipt(const Receipt& r);
/// Errc::bad_field (empty peer, 0 or too many ids), truncated, trailing_bytes. The device is not checked against
/// the status (the caller knows which one it asked for).
Result<Receipt> decode_receipt(ByteView payload);

/// `receipt` payload with status `refused` (docs/protocol.md 6.6): message `id` of the sender's stream to `peer` was
/// not accepted for `code`; the server now expects that stream's sequence number `expected` (the refused one or an
/// earlier one), and refuses later numbers with Errc::out_of_order until it comes.
struct Refusal {
    std::string peer;
    MessageId id{};
    Errc code = Errc::internal;
    std::uint32_t expected = 0;
};
Bytes encode_refusal(const Refusal& r);
/// Errc::bad_field (empty peer, code ok, expected 0), truncated, trailing_bytes.
Result<Refusal> decode_refusal(ByteView payload);

/// `limits` payload (server to client, sent before ack_init stage 1): what the server allows one connection, so a
/// client paces itself instead of being refused (docs/protocol.md 6.6).
struct ServerLimits {
    std::uint32_t messages_per_second = 0;  ///< sustained rate of frames that count (message, ack, probe, prekeys)
    std::uint32_t message_burst = 0;        ///< bucket size of that rate
    std::uint16_t window = 0;               ///< messages per stream sent and not yet receipted, at most
};
Bytes encode_server_limits(const ServerLimits& l);
/// Errc::bad_field (a zero field), truncated, trailing_bytes.
Result<ServerLimits> decode_server_limits(ByteView payload);

/// Plaintext of an end-to-end message (docs/protocol.md 6.3).
enum class ContentKind : std::uint8_t {
    text = 1,          ///< shown to the user
    ratchet_only = 2,  ///< empty, not shown: carries a new ratchet key back to the peer
};
/// The wire value of a text with the sender's timestamp (docs/protocol.md 6.3): encode_e2e_content writes it for
/// every ContentKind::text, decode_e2e_content reads it (and the older 1, without a timestamp) as ContentKind::text.
inline constexpr std::uint8_t stamped_text_kind = 3;
/// The wire values of the addressed kinds (docs/protocol.md 6.3): every content is written with its address.
inline constexpr std::uint8_t addressed_text_kind = 4;
inline constexpr std::uint8_t addressed_ratchet_only_kind = 5;
/// Where a message is going, sealed inside it so that the server cannot re-address it undetected: the receiver
/// compares it with the delivery header and itself.
struct ContentAddress {
    ConversationId conversation{};
    DeviceId sender_device = first_device;
    DeviceId recipient_device = first_device;
    friend bool operator==(const ContentAddress&, const ContentAddress&) = default;
};
struct E2eContent {
    ContentKind kind = ContentKind::text;
    std::uint64_t seq = 0;  ///< the sender's count of text messages to this peer, from 1; 0 for ratchet_only
    MessageId id{};         ///< must equal the envelope id
    std::string text;
    WallTime sent_at{};  ///< text: the sender's clock when it was sent; {} = unknown (also: kind 1 on the wire)
    /// Clients always send one (kinds 4 and 5); nullopt in the older kinds 1-3, sealed before addresses.
    std::optional<ContentAddress> address;
};
/// With an address, a text goes as kind 4 (address, `sent_at`) and a ratchet-only message as kind 5; without one
/// (only to test how older contents are read) as kinds 3 and 2.
Bytes encode_e2e_content(const E2eContent& c);
/// Errc::bad_field (unknown kind, text with ratchet_only, seq 0 with text, a device 0), truncated.
Result<E2eContent> decode_e2e_content(ByteView plaintext);

/// The byte after the sid that marks a conversation body with the sender's timestamp (docs/protocol.md 5.2); it
/// never occurs in UTF-8, so an older body (sid and text only) cannot begin with it.
inline constexpr std::uint8_t stamped_body_format = 0xFF;
/// Plaintext of one conversation record: the seed's sid, the sender's timestamp and the text.
struct ConversationBody {
    std::uint32_t sid = 0;
    std::string text;
    WallTime sent_at{};  ///< the sender's clock when it was sent; {} = unknown (also: an older body on the wire)
};
/// Always the stamped format: sid u32 | 0xFF | sent_at u64 | text.
Bytes encode_conversation_body(const ConversationBody& b);
/// Errc::truncated (no sid, or the stamped format without its whole timestamp). A body whose byte after the sid is
/// not 0xFF is the older format: its text, `sent_at` unknown.
Result<ConversationBody> decode_conversation_body(ByteView plaintext);

/// Directional conversation key from the KEYGEN key (docs/protocol.md 5.2):
/// HKDF-SHA256(salt = "", IKM = key, info = "libsim v1 conversation " || from || 0x00 || to, L = len(key)).
SecureBytes conversation_direction_key(ByteView key, std::string_view from, std::string_view to);

}  // namespace sim
