#pragma once
// Private: the client's outbox as the client state keeps it (docs/protocol.md 6.6). The streams are the Outbox's
// (outbox.h); this adds the records: one per queued message under its place, and a small header (version, first and
// next place), so a send or a receipt writes a constant amount whatever the outbox holds. Its writes go into the
// batch of the next commit with whatever else changed (E2eClient::commit collects them), so that a text sealed by
// the ratchet is stored in the same commit as the ratchet state that sealed it.
//
// A message leaves the outbox with a receipt (stored or delivered), or when it can never go (Outbox::Seal says why:
// its frame would be larger than the channel carries); then its record is removed and the application hears which.
// Not thread-safe: the client core's lock guards it.

#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/clock.h>
#include <sim/messages.h>

#include "outbox.h"

#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace sim::client_detail {

class DurableOutbox {
public:
    /// `state` and `clock` must outlive this object.
    DurableOutbox(ClientState& state, const Clock& clock, Duration resend_after);

    /// Read the outbox from the state; an outbox of the older layout (version 1) is rewritten by the next commit.
    /// Errc::corrupt_database, storage errors.
    Status load();
    [[nodiscard]] bool loaded() const noexcept { return m_loaded; }
    /// load() before login, so that size() is right from the start; on an error nothing is kept (load() reports it
    /// again at login).
    void preload();

    /// Queue `payload` (outbox.h) to `peer` under `id`; written by the next commit.
    void add(const MessageId& id, const std::string& peer, Bytes payload);
    /// Undo add() whose commit failed (the caller reports the failure; nothing was sent).
    void forget(const MessageId& id);
    /// Each queued message to `peer`, in send order: `f` returns true when it replaced the payload (only while the
    /// stream is held), which the next commit writes.
    void rewrite(const std::string& peer, const std::function<bool(const MessageId& id, Bytes& payload)>& f);
    /// `peer`'s stream, held for want of a key, may go on.
    void release(const std::string& peer) { m_outbox.release(peer); }

    /// A receipt: the messages it names leave the outbox; returns the events for our own text messages.
    std::vector<ClientEvent> on_receipt(ReceiptStatus status, const Receipt& receipt);
    /// A refusal of one of our messages: its stream goes again from there. True when the reason will not pass by
    /// itself (the application hears of it).
    bool refused(const Refusal& refusal, std::optional<Duration> wait = std::nullopt);
    /// The server's `limits` frame: the pace.
    void set_limits(const ServerLimits& limits);
    /// After (re)login: every message is sent again, every stream numbered from 1.
    void restart();
    /// Frames that may go now; `seal` as Outbox::take_due. Messages dropped on the way are removed by the next
    /// commit and reported in `events` (an `error` naming each).
    std::vector<Frame> take_due(const std::string& user, const Outbox::Seal& seal, std::vector<ClientEvent>& events);
    /// When take_due() has more to give without anything arriving first.
    [[nodiscard]] std::optional<TimePoint> next_due() const { return m_outbox.next_due(m_clock.now()); }
    [[nodiscard]] const Outbox& streams() const noexcept { return m_outbox; }

    /// Move the pending writes into `batch` (the header too when the places changed); committed() once the batch is
    /// written.
    void collect(std::vector<StateWrite>& batch);
    void committed() noexcept { m_dirty = false; }

private:
    static SecureBytes record(const MessageId& id, const std::string& peer, ByteView payload);
    void remove_record(std::uint64_t order);
    /// Remember a text message id we sent (receipts for it are reported; bounded).
    void note_sent(const MessageId& id);

    ClientState& m_state;
    const Clock& m_clock;
    Duration m_resend_after;
    Outbox m_outbox;
    bool m_loaded = false;
    bool m_dirty = false;  // the header (first and next place) must be written
    std::vector<StateWrite> m_writes;
    std::set<MessageId> m_sent;
    std::deque<MessageId> m_sent_order;
};

}  // namespace sim::client_detail
