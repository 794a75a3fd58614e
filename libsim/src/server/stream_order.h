#pragma once
// Private: per-sender order of conversation messages (docs/protocol.md 6.6, "Streams").
//
// A sending client numbers its messages to one recipient on one connection 1, 2, 3, ... (the `message` frame's sid);
// that numbered sequence is a *stream*. The server accepts a stream's messages only in that order: once a message is
// refused (rate, full queue, busy server, failed commit) the stream expects it again, and every later number is
// refused with Errc::out_of_order until it comes. So nothing behind a refused message can be stored ahead of it, and
// a mailbox holds each sender's messages in the order they were sent, across refusals, re-sends and failed commits.
// A connection owns its streams (Delivery::Streams: freed with the connection and the last of its messages in the
// group commit); a reconnecting client numbers its outbox again from 1.
//
// Two checks: `submit` when a message arrives (refused or accepted numbers move `next`), and `admit` on the commit
// thread just before a batch is written (a commit that failed makes later numbers of the stream that were accepted
// meanwhile fail too, until the failed one has been sent again). Not thread-safe: its Delivery::Streams lock guards it.

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

namespace sim::server_detail {

class StreamOrder {
public:
    /// One stream: sender, the sender's connection, recipient.
    struct Key {
        std::string from;
        std::uint64_t connection = 0;
        std::string to;
        friend auto operator<=>(const Key&, const Key&) = default;
    };

    /// May message `seq` of `key` go ahead? Returns 0 when it may, else the number the stream expects first.
    /// seq 0 (an unsequenced message) always may. A number below the expected one is a re-send of a message that
    /// was accepted already (the store and the recipient deduplicate by id) and may go.
    [[nodiscard]] std::uint32_t check(const Key& key, std::uint32_t seq) const;
    /// `seq` was accepted: queued for the commit (its outcome follows through committed()).
    void accepted(const Key& key, std::uint32_t seq);
    /// `seq` was refused before it was queued: the stream expects it again.
    void refused(const Key& key, std::uint32_t seq);
    /// How the commit of a queued message ended.
    enum class Outcome : std::uint8_t {
        written,  ///< stored (or found stored already)
        failed,   ///< the transaction failed: the stream expects it again, and later queued numbers are skipped
        skipped,  ///< refused by admit() because an earlier number failed (the sender re-sends it after that one)
    };
    void committed(const Key& key, std::uint32_t seq, Outcome outcome);
    /// On the commit thread, before writing a queued `seq`: 0 when it may be written, else the number the stream
    /// expects (a commit of an earlier number failed after this one was accepted).
    [[nodiscard]] std::uint32_t admit(const Key& key, std::uint32_t seq);
    /// The number `key` expects next, 0 when it has none yet.
    [[nodiscard]] std::uint32_t next(const Key& key) const;

    /// Streams known (tests, monitoring).
    [[nodiscard]] std::size_t size() const noexcept { return m_streams.size(); }

private:
    struct Stream {
        std::uint32_t next = 0;    // expected number; 0 = none yet (the first message sets it)
        std::uint32_t failed = 0;  // lowest number whose commit failed and that has not come again; 0 = none
    };

    std::map<Key, Stream> m_streams;
};

}  // namespace sim::server_detail
