#pragma once
// Private: the client's outbox and its flow control (docs/protocol.md 6.6, "Streams").
//
// Every message the application sent stays here, in send order, until the server says it is stored or delivered.
// Per recipient, the messages of one connection form a *stream* numbered 1, 2, 3, ... (the `message` frame's sid).
// The outbox sends each stream in order, at most `window` without a receipt, paced to the rate the server announced;
// a refusal names the number the server expects, and the stream is sent again from there after a back-off, so a
// refused message always goes before the ones behind it. A new connection numbers everything again from 1.
//
// A payload is in one of these forms, told apart by the byte after the id (an envelope's mode byte):
// - an end-to-end envelope (mode 2), sealed by the Double Ratchet once and sent as is on every attempt;
// - an unsealed text, `id (16) | 3 | sent_at u64 (ms since the Unix epoch) | text`: the sender's timestamp is fixed
//   when the application sends it and every sealing of the text carries the same one (docs/protocol.md 5.2, 6.3).
//   Records written before timestamps hold the older unsealed form `id (16) | 1 | text` (an envelope of mode 1 with
//   the text as its body); it is still read, with the timestamp unknown (0). In server-assigned mode
//   it is sealed under the conversation's current key each time it goes out, so that a message sent again after a
//   restart or a new KEYGEN is readable with the key its recipient gets; to an end-to-end peer without a session it
//   waits until the session exists and is then sealed once, in the state (rewrite()).
// The caller's `Seal` turns a payload into what goes on the wire; a stream whose next message cannot be sealed yet
// (no key) is held until release(). A message that can never go (`Seal` says why: its frame would be larger than the
// channel carries) is dropped from the outbox and handed back by take_due() with the error, so that the caller
// forgets it in the state and tells the application; the messages behind it go on.
//
// Pure bookkeeping: no I/O, no clock of its own (the caller passes `now`), no persistence (DurableOutbox keeps the
// entries in the client state). Not thread-safe: the client core's lock guards it.

#include <sim/clock.h>
#include <sim/frame.h>
#include <sim/messages.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace sim::client_detail {

/// The form byte of an unsealed text payload (see above): with the sender's timestamp, and the older one without.
inline constexpr std::uint8_t unsealed_stamped_text = 3;
inline constexpr auto unsealed_text_v1 = static_cast<std::uint8_t>(ConversationMode::server_assigned);
[[nodiscard]] inline bool is_unsealed_text(ByteView payload) {
    return payload.size() > sizeof(MessageId) &&
           (payload[sizeof(MessageId)] == unsealed_stamped_text || payload[sizeof(MessageId)] == unsealed_text_v1);
}
/// The unsealed form of `text` sent at `sent_at`.
[[nodiscard]] Bytes make_unsealed_text(const MessageId& id, WallTime sent_at, std::string_view text);
/// An unsealed text's timestamp ({} when unknown) and text (a view into `payload`).
struct UnsealedText {
    WallTime sent_at{};
    ByteView text;
};
/// Either unsealed form; nullopt for anything else (an envelope, or a stamped form cut short).
[[nodiscard]] std::optional<UnsealedText> read_unsealed_text(ByteView payload);

/// The form byte of a queued end-to-end text (see above).
inline constexpr std::uint8_t queued_e2e_text = 4;
/// A queued end-to-end text: its sequence number and timestamp (fixed when it was sent), the text (kept until the
/// server stores the message, so it can be sealed for a device added meanwhile), and the bodies sealed so far, for
/// the peer's devices and our own other ones (docs/protocol.md 6.5, 6.9). Form: `id (16) | 4 | seq u64 | sent_at
/// u64 | text len u32 | text | count u8 | count x (device u32 | len u32 | body) | own count u8 | own count x (...)`.
struct QueuedText {
    MessageId id{};
    std::uint64_t seq = 0;
    WallTime sent_at{};
    std::string text;
    std::vector<DeviceBody> bodies;
    std::vector<DeviceBody> own_bodies;
};
[[nodiscard]] Bytes encode_queued_text(const QueuedText& q);
/// nullopt for another form or one that does not decode.
[[nodiscard]] std::optional<QueuedText> read_queued_text(ByteView payload);

class Outbox {
public:
    /// `resend_after`: a stream whose oldest sent message has had no receipt this long is sent again from it.
    explicit Outbox(Duration resend_after);
    // Streams point into the entries: no copies (a move keeps the map nodes where they are).
    Outbox(const Outbox&) = delete;
    Outbox& operator=(const Outbox&) = delete;
    Outbox(Outbox&&) = default;
    Outbox& operator=(Outbox&&) = default;
    ~Outbox() = default;

    /// What the server announced (the `limits` frame); until then a conservative default.
    void set_limits(const ServerLimits& limits, TimePoint now);
    /// Append a message to `peer` (its envelope, sent as is on every attempt); returns its place in send order.
    std::uint64_t add(const MessageId& id, const std::string& peer, Bytes payload);
    /// Put back a message read from the state at its place `order` (loading goes in increasing order).
    void add_at(std::uint64_t order, const MessageId& id, const std::string& peer, Bytes payload);
    /// A receipt for `id`: forget it; returns its place, or nullopt when it was not here.
    std::optional<std::uint64_t> remove(const MessageId& id);
    /// The lowest place held (next_order() when empty) and the place the next message gets.
    [[nodiscard]] std::uint64_t first_order() const noexcept;
    [[nodiscard]] std::uint64_t next_order() const noexcept { return m_next_order; }
    /// A refusal: send `refusal.peer`'s stream again from `refusal.expected`, after a back-off that depends on the
    /// reason. Returns true when the reason will not go away by itself (the caller tells the application).
    /// `wait`: how long the stream waits before it is sent again, instead of the code's own rule.
    bool refused(const Refusal& refusal, TimePoint now, std::optional<Duration> wait = std::nullopt);
    /// A new connection: everything is unsent, every stream starts again at 1.
    void restart(TimePoint now);
    /// The `message` payload to send now for a queued `payload` to `peer`; nullopt to hold the stream; an error
    /// when the message can never go (it is dropped; see above).
    using Seal = std::function<Result<std::optional<Bytes>>(const std::string& peer, ByteView payload)>;
    /// A message take_due() dropped: its place, and the error its Seal gave.
    struct Dropped {
        std::uint64_t order = 0;
        MessageId id{};
        std::string peer;
        Error error;
    };
    struct Due {
        std::vector<Frame> frames;  ///< in order
        std::vector<Dropped> dropped;
    };
    /// Frames that may go now, and the messages dropped on the way; `user` is the source name.
    Due take_due(TimePoint now, const std::string& user, const Seal& seal);
    /// A stream held by `Seal` may go on (its key arrived).
    void release(const std::string& peer);
    /// Each queued message to `peer`, in send order, with its place: `f` may replace the payload (only while none
    /// of them is on the wire, e.g. while the stream is held).
    void rewrite(const std::string& peer,
                 const std::function<void(std::uint64_t order, const MessageId& id, Bytes& payload)>& f);
    /// When take_due() may have more to give without anything arriving first (pacing, back-off, re-send timer).
    [[nodiscard]] std::optional<TimePoint> next_due(TimePoint now) const;

    [[nodiscard]] std::size_t size() const noexcept { return m_entries.size(); }
    /// Messages not sent on this connection yet.
    [[nodiscard]] std::size_t unsent() const;
    /// Refusals received so far.
    [[nodiscard]] std::uint64_t refusals() const noexcept { return m_refusals; }
    /// Every message in send order (for the persistent index).
    [[nodiscard]] std::vector<MessageId> ids_in_order() const;

private:
    struct Entry {
        MessageId id{};
        std::string peer;
        Bytes payload;
        std::uint32_t wire_seq = 0;  // 0: not sent on this connection (or sent again from an earlier number)
        TimePoint last_sent{};
    };
    struct Stream {
        std::map<std::uint64_t, Entry*> queue;  // by outbox order
        std::uint64_t cursor = 0;               // entries at or after this order are unsent
        std::uint32_t next_seq = 1;
        std::size_t in_flight = 0;
        TimePoint blocked_until{};
        bool held = false;  // the next message could not be sealed: wait for release()
    };
    void rewind(Stream& s, std::uint32_t from_seq);
    /// Forget the entry at `order` (the stream stays, even when empty: the caller may be iterating over it).
    void erase_entry(std::uint64_t order, Stream& s);

    Duration m_resend_after;
    double m_rate = 500.0;
    double m_burst = 500.0;
    std::size_t m_window = 64;
    double m_tokens = 500.0;
    TimePoint m_refilled{};

    std::uint64_t m_next_order = 0;
    std::uint64_t m_refusals = 0;
    std::map<std::uint64_t, Entry> m_entries;
    std::map<MessageId, std::uint64_t> m_by_id;
    std::map<std::string, Stream, std::less<>> m_streams;
};

}  // namespace sim::client_detail
