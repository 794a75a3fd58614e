#include "inbox.h"

#include "state_records.h"

#include <algorithm>
#include <limits>

namespace sim::client_detail {

namespace {

using detail::WireReader;
using detail::WireWriter;

constexpr std::uint8_t inbox_version = 1;  // the header's
// Entries: version 4 adds the from_me flag, version 3 the conversation and sender device, version 2 the two
// timestamps; the older ones are still read (inbox.h).
constexpr std::uint8_t entry_version = 4;
constexpr std::uint8_t entry_version_v3 = 3;
constexpr std::uint8_t entry_version_v2 = 2;
constexpr std::uint8_t entry_version_v1 = 1;
std::uint64_t to_ms(WallTime t) {
    const auto ms = t.time_since_epoch().count();
    return ms < 0 ? 0 : static_cast<std::uint64_t>(ms);
}
WallTime from_ms(std::uint64_t ms) {
    constexpr auto max_ms = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return WallTime{std::chrono::milliseconds{static_cast<std::int64_t>(std::min(ms, max_ms))}};
}
const std::string key_inbox = "inbox";
std::string key_entry(std::uint64_t index) {
    return "inbox/" + std::to_string(index);
}

}  // namespace

Status Inbox::load(const ClientState& state, std::string self) {
    m_self = std::move(self);
    SIM_TRY(auto stored, state.get(key_inbox));
    if (!stored) {
        m_next = 0;
        m_first_unread = 0;
        return ok();
    }
    WireReader r(*stored);
    std::uint8_t version = 0;
    if (!r.u8(version) || version != inbox_version || !r.u64(m_next) || !r.u64(m_first_unread) || !r.at_end() ||
        m_first_unread > m_next) {
        return corrupt("inbox");
    }
    return ok();
}

StateWrite Inbox::header() const {
    SecureBytes h;
    WireWriter w(h);
    w.u8(inbox_version);
    w.u64(m_next);
    w.u64(m_first_unread);
    return {key_inbox, std::move(h)};
}

std::vector<StateWrite> Inbox::add(const InboxEntry& entry, std::uint64_t& index) {
    index = m_next++;
    SecureBytes rec;
    WireWriter w(rec);
    w.u8(entry_version);
    w.u8(static_cast<std::uint8_t>(entry.mode));
    w.u8(static_cast<std::uint8_t>(entry.peer.size()));
    w.text(entry.peer);
    w.bytes(ByteView{entry.message_id});
    w.u64(entry.seq);
    w.u64(to_ms(entry.sent_at));
    w.u64(to_ms(entry.received_at));
    w.bytes(ByteView{entry.conversation});
    w.u32(entry.sender_device);
    w.u8(entry.from_me ? 1 : 0);
    w.text(entry.text);
    std::vector<StateWrite> out;
    out.push_back({key_entry(index), std::move(rec)});
    out.push_back(header());
    return out;
}

std::vector<StateWrite> Inbox::mark_read(std::uint64_t up_to) {
    const auto target = std::min(up_to, m_next);
    if (target <= m_first_unread) {
        return {};
    }
    m_first_unread = target;
    return {header()};
}

Result<std::vector<InboxEntry>> Inbox::read(const ClientState& state, std::uint64_t from, std::size_t limit,
                                            std::string_view peer) const {
    std::vector<InboxEntry> out;
    for (auto index = from; index < m_next && out.size() < limit; ++index) {
        SIM_TRY(auto rec, state.get(key_entry(index)));
        if (!rec) {
            return corrupt("inbox entry");
        }
        WireReader r(*rec);
        std::uint8_t version = 0;
        std::uint8_t mode = 0;
        std::uint8_t peer_len = 0;
        ByteView name;
        ByteView id;
        InboxEntry e;
        if (!r.u8(version) || version < entry_version_v1 || version > entry_version || !r.u8(mode) ||
            (mode != static_cast<std::uint8_t>(ConversationMode::server_assigned) &&
             mode != static_cast<std::uint8_t>(ConversationMode::end_to_end)) ||
            !r.u8(peer_len) || !r.take(peer_len, name) || !r.take(sizeof(MessageId), id) || !r.u64(e.seq)) {
            return corrupt("inbox entry");
        }
        if (version >= entry_version_v2) {
            std::uint64_t sent = 0;
            std::uint64_t received = 0;
            if (!r.u64(sent) || !r.u64(received)) {
                return corrupt("inbox entry");
            }
            e.sent_at = from_ms(sent);
            e.received_at = from_ms(received);
        }
        if (version >= entry_version_v3) {
            ByteView conversation;
            if (!r.take(e.conversation.size(), conversation) || !r.u32(e.sender_device) || e.sender_device == 0) {
                return corrupt("inbox entry");
            }
            std::copy(conversation.begin(), conversation.end(), e.conversation.begin());
        } else {
            e.conversation = pair_conversation_id(m_self, to_string(name));
        }
        if (version >= entry_version) {
            std::uint8_t from_me = 0;
            if (!r.u8(from_me) || from_me > 1) {
                return corrupt("inbox entry");
            }
            e.from_me = from_me == 1;
        }
        if (!peer.empty() && to_string(name) != peer) {
            continue;
        }
        e.index = index;
        e.mode = static_cast<ConversationMode>(mode);
        e.peer = to_string(name);
        std::copy(id.begin(), id.end(), e.message_id.begin());
        e.text = to_string(r.rest());
        e.read = index < m_first_unread;
        out.push_back(std::move(e));
    }
    return out;
}

}  // namespace sim::client_detail
