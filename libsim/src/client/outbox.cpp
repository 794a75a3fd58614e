#include "outbox.h"

#include "../proto/wire.h"

#include <algorithm>
#include <limits>

namespace sim::client_detail {

namespace {

WallTime time_from_ms(std::uint64_t ms) {
    constexpr auto max_ms = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return WallTime{std::chrono::milliseconds{static_cast<std::int64_t>(std::min(ms, max_ms))}};
}

template <typename Vec>
void write_bodies(detail::WireWriter<Vec>& w, const std::vector<DeviceBody>& bodies) {
    w.u8(static_cast<std::uint8_t>(bodies.size()));
    for (const auto& b : bodies) {
        w.u32(b.device);
        w.u32(static_cast<std::uint32_t>(b.body.size()));
        w.bytes(b.body);
    }
}

bool read_bodies(detail::WireReader& r, std::vector<DeviceBody>& out) {
    std::uint8_t n = 0;
    if (!r.u8(n)) {
        return false;
    }
    for (std::uint8_t i = 0; i < n; ++i) {
        DeviceBody b;
        std::uint32_t len = 0;
        ByteView body;
        if (!r.u32(b.device) || !r.u32(len) || !r.take(len, body)) {
            return false;
        }
        b.body.assign(body.begin(), body.end());
        out.push_back(std::move(b));
    }
    return true;
}

}  // namespace

Bytes make_unsealed_text(const MessageId& id, WallTime sent_at, std::string_view text) {
    Bytes out;
    out.reserve(sizeof(MessageId) + 1 + 8 + text.size());
    detail::WireWriter w(out);
    w.bytes(ByteView{id});
    w.u8(unsealed_stamped_text);
    const auto ms = sent_at.time_since_epoch().count();
    w.u64(ms < 0 ? 0 : static_cast<std::uint64_t>(ms));
    w.text(text);
    return out;
}

std::optional<UnsealedText> read_unsealed_text(ByteView payload) {
    if (!is_unsealed_text(payload)) {
        return std::nullopt;
    }
    detail::WireReader r(payload.subspan(sizeof(MessageId) + 1));
    UnsealedText out;
    if (payload[sizeof(MessageId)] == unsealed_stamped_text) {
        std::uint64_t ms = 0;
        if (!r.u64(ms)) {
            return std::nullopt;
        }
        out.sent_at = time_from_ms(ms);
    }
    out.text = r.rest();
    return out;
}

Bytes encode_queued_text(const QueuedText& q) {
    Bytes out;
    detail::WireWriter w(out);
    w.bytes(ByteView{q.id});
    w.u8(queued_e2e_text);
    w.u64(q.seq);
    const auto ms = q.sent_at.time_since_epoch().count();
    w.u64(ms < 0 ? 0 : static_cast<std::uint64_t>(ms));
    w.u32(static_cast<std::uint32_t>(q.text.size()));
    w.text(q.text);
    write_bodies(w, q.bodies);
    write_bodies(w, q.own_bodies);
    return out;
}

std::optional<QueuedText> read_queued_text(ByteView payload) {
    if (payload.size() <= sizeof(MessageId) || payload[sizeof(MessageId)] != queued_e2e_text) {
        return std::nullopt;
    }
    QueuedText q;
    std::copy_n(payload.begin(), sizeof(MessageId), q.id.begin());
    detail::WireReader r(payload.subspan(sizeof(MessageId) + 1));
    std::uint64_t ms = 0;
    std::uint32_t len = 0;
    ByteView text;
    if (!r.u64(q.seq) || !r.u64(ms) || !r.u32(len) || !r.take(len, text) || !read_bodies(r, q.bodies) ||
        !read_bodies(r, q.own_bodies) || !r.at_end()) {
        return std::nullopt;
    }
    q.sent_at = time_from_ms(ms);
    q.text.assign(text.begin(), text.end());
    return q;
}

namespace {

// Share of the server's announced rate and burst used for messages: acks, probes and prekey uploads take tokens of
// the same bucket on the server.
constexpr double rate_share = 0.8;
constexpr double burst_share = 0.5;

/// What a refusal for `code` means for its stream: how long it waits before it is sent again, and whether the
/// application hears of it (a lasting refusal: the peer has no keys, a full mailbox or store, a quota).
struct RetryRule {
    Duration wait;
    bool lasting;
};

RetryRule retry_rule(Errc code) {
    switch (code) {
        case Errc::out_of_order:
            return {Duration::zero(), false};  // an earlier refusal said why; go on from there
        case Errc::rate_limited:
            return {std::chrono::seconds(1), false};
        case Errc::busy:
        case Errc::storage_error:
            return {std::chrono::seconds(2), false};
        default:
            return {std::chrono::seconds(30), true};  // queue_full, store_full, quota_exceeded, no keys...: not soon
    }
}

}  // namespace

Outbox::Outbox(Duration resend_after) : m_resend_after(resend_after) {}

void Outbox::set_limits(const ServerLimits& limits, TimePoint now) {
    m_rate = std::max(1.0, rate_share * limits.messages_per_second);
    m_burst = std::max(1.0, burst_share * limits.message_burst);
    m_window = std::max<std::size_t>(1, limits.window);
    m_tokens = std::min(m_tokens, m_burst);
    m_refilled = now;
}

std::uint64_t Outbox::add(const MessageId& id, const std::string& peer, Bytes payload) {
    const auto order = m_next_order;
    add_at(order, id, peer, std::move(payload));
    return order;
}

std::uint64_t Outbox::first_order() const noexcept {
    return m_entries.empty() ? m_next_order : m_entries.begin()->first;
}

void Outbox::add_at(std::uint64_t order, const MessageId& id, const std::string& peer, Bytes payload) {
    m_next_order = std::max(m_next_order, order + 1);
    auto& e = m_entries[order];
    e.id = id;
    e.peer = peer;
    e.payload = std::move(payload);
    m_by_id[id] = order;
    m_streams[peer].queue.emplace(order, &e);
}

std::optional<std::uint64_t> Outbox::remove(const MessageId& id) {
    const auto where = m_by_id.find(id);
    if (where == m_by_id.end()) {
        return std::nullopt;
    }
    const auto order = where->second;
    const auto s = m_streams.find(m_entries.at(order).peer);
    erase_entry(order, s->second);
    if (s->second.queue.empty()) {
        m_streams.erase(s);
    }
    return order;
}

void Outbox::erase_entry(std::uint64_t order, Stream& s) {
    const auto& e = m_entries.at(order);
    if (e.wire_seq != 0 && s.in_flight > 0) {
        --s.in_flight;
    }
    s.queue.erase(order);
    m_by_id.erase(e.id);
    m_entries.erase(order);
}

void Outbox::rewind(Stream& s, std::uint32_t from_seq) {
    bool found = false;
    for (auto& [order, e] : s.queue) {
        if (e->wire_seq != 0 && e->wire_seq >= from_seq) {
            if (!found) {
                s.cursor = std::min(s.cursor, order);
                found = true;
            }
            e->wire_seq = 0;
            if (s.in_flight > 0) {
                --s.in_flight;
            }
        }
    }
    if (found) {
        s.next_seq = from_seq;
    }
}

bool Outbox::refused(const Refusal& refusal, TimePoint now, std::optional<Duration> wait) {
    ++m_refusals;
    const auto it = m_streams.find(refusal.peer);
    if (it != m_streams.end()) {
        auto& s = it->second;
        rewind(s, refusal.expected);
        s.blocked_until = std::max(s.blocked_until, now + wait.value_or(retry_rule(refusal.code).wait));
    }
    return retry_rule(refusal.code).lasting;
}

void Outbox::restart(TimePoint now) {
    for (auto& [peer, s] : m_streams) {
        s.cursor = 0;
        s.next_seq = 1;
        s.in_flight = 0;
        s.blocked_until = TimePoint{};
        s.held = false;
        for (auto& [order, e] : s.queue) {
            e->wire_seq = 0;
        }
    }
    m_tokens = m_burst;
    m_refilled = now;
}

void Outbox::release(const std::string& peer) {
    if (const auto it = m_streams.find(peer); it != m_streams.end()) {
        it->second.held = false;
    }
}

void Outbox::rewrite(const std::string& peer,
                     const std::function<void(std::uint64_t order, const MessageId& id, Bytes& payload)>& f) {
    if (const auto it = m_streams.find(peer); it != m_streams.end()) {
        for (auto& [order, e] : it->second.queue) {
            f(order, e->id, e->payload);
        }
    }
}

Outbox::Due Outbox::take_due(TimePoint now, const std::string& user, const Seal& seal) {
    Due out;
    if (m_entries.empty()) {
        return out;
    }
    // Streams left empty by a dropped message go once nothing iterates over them any more.
    struct EraseEmpty {
        std::map<std::string, Stream, std::less<>>& streams;
        ~EraseEmpty() {
            std::erase_if(streams, [](const auto& kv) { return kv.second.queue.empty(); });
        }
    } erase_empty{m_streams};
    m_tokens = std::min(m_burst, m_tokens + std::chrono::duration<double>(now - m_refilled).count() * m_rate);
    m_refilled = now;
    for (auto& [peer, s] : m_streams) {
        // The oldest message sent and still without a receipt: past resend_after, the stream goes again from it.
        const auto oldest = s.queue.begin();
        if (s.in_flight > 0 && oldest->second->wire_seq != 0 && now - oldest->second->last_sent >= m_resend_after) {
            rewind(s, oldest->second->wire_seq);
        }
        if (s.held || now < s.blocked_until) {
            continue;
        }
        for (auto it = s.queue.lower_bound(s.cursor); it != s.queue.end() && s.in_flight < m_window;) {
            if (m_tokens < 1.0) {
                return out;
            }
            auto& e = *it->second;
            auto sealed = seal(peer, e.payload);
            if (!sealed) {
                out.dropped.push_back(Dropped{it->first, e.id, peer, sealed.error()});
                const auto order = (it++)->first;
                erase_entry(order, s);
                continue;
            }
            if (!sealed->has_value()) {
                s.held = true;
                break;
            }
            m_tokens -= 1.0;
            e.wire_seq = s.next_seq++;
            e.last_sent = now;
            ++s.in_flight;
            s.cursor = it->first + 1;
            out.frames.push_back(Frame{FrameType::message, e.wire_seq, user, peer, std::move(**sealed)});
            ++it;
        }
    }
    return out;
}

std::optional<TimePoint> Outbox::next_due(TimePoint now) const {
    std::optional<TimePoint> due;
    const auto consider = [&](TimePoint t) {
        if (!due || t < *due) {
            due = t;
        }
    };
    for (const auto& [peer, s] : m_streams) {
        const auto oldest = s.queue.begin();
        if (s.in_flight > 0 && oldest->second->wire_seq != 0) {
            consider(oldest->second->last_sent + m_resend_after);
        }
        const bool unsent = s.queue.lower_bound(s.cursor) != s.queue.end();
        if (!unsent || s.in_flight >= m_window || s.held) {
            continue;  // a receipt or a key comes first
        }
        if (now < s.blocked_until) {
            consider(s.blocked_until);
        } else {
            // Waiting for a token only.
            const double tokens =
                std::min(m_burst, m_tokens + std::chrono::duration<double>(now - m_refilled).count() * m_rate);
            const double missing = std::max(0.0, 1.0 - tokens);
            consider(now + std::chrono::duration_cast<Duration>(std::chrono::duration<double>(missing / m_rate)));
        }
    }
    return due;
}

std::size_t Outbox::unsent() const {
    std::size_t n = 0;
    for (const auto& [peer, s] : m_streams) {
        n += s.queue.size() - std::min(s.queue.size(), s.in_flight);
    }
    return n;
}

std::vector<MessageId> Outbox::ids_in_order() const {
    std::vector<MessageId> out;
    out.reserve(m_entries.size());
    for (const auto& [order, e] : m_entries) {
        out.push_back(e.id);
    }
    return out;
}

}  // namespace sim::client_detail
