#pragma once
// Private: the client's inbox (docs/protocol.md 6.8). Every message shown to the application is written here, in the
// same state commit as the ratchet and the id marked seen, and only then acknowledged: the server deletes its copy
// only once this one is durable. The application reads the inbox (pages by index, per peer, an unread cursor);
// events only say that something arrived, so an application that is slow, or restarts, loses nothing.
//
// Layout in the ClientState: "inbox" = version u8 (1) | next index u64 | first unread u64; "inbox/<index>" =
// version u8 (3) | mode u8 | peer len u8 | peer | message id (16) | seq u64 | sent_at u64 | received_at u64 |
// conversation (16) | sender device u32 | text, the times in ms since the Unix epoch (0 = unknown): the sender's
// timestamp from inside the sealed message and the server's receive time from the delivery header (docs/protocol.md
// 5.2, 6.3, 6.5). Older entries are still read: version 2 (before devices: no conversation / sender device) with the
// pair's conversation and device 1, which is what every message was then; version 1 (before timestamps) also with
// both times unknown. Not thread-safe: the client core's lock guards it.

#include <sim/client.h>
#include <sim/client_state.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sim::client_detail {

class Inbox {
public:
    /// Read the header; `self` is the user the state belongs to. Errc::corrupt_database, storage errors.
    Status load(const ClientState& state, std::string self);
    /// Append a received message: the writes to commit with it; `index` is its place.
    std::vector<StateWrite> add(const InboxEntry& entry, std::uint64_t& index);
    /// Every message with index < `up_to` is read (never moves back). The header write, if it changed.
    std::vector<StateWrite> mark_read(std::uint64_t up_to);
    /// Messages with index >= `from`, oldest first, at most `limit`, from `peer` only when it is not empty.
    [[nodiscard]] Result<std::vector<InboxEntry>> read(const ClientState& state, std::uint64_t from, std::size_t limit,
                                                       std::string_view peer) const;
    [[nodiscard]] InboxStatus status() const noexcept { return {m_next, m_first_unread}; }

private:
    [[nodiscard]] StateWrite header() const;

    std::string m_self;
    std::uint64_t m_next = 0;
    std::uint64_t m_first_unread = 0;
};

}  // namespace sim::client_detail
