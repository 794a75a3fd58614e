// The outbox as the client state keeps it (durable_outbox.h).
#include "durable_outbox.h"

#include "state_records.h"

#include <algorithm>

namespace sim::client_detail {

using detail::WireReader;
using detail::WireWriter;

namespace {

// State keys (the store hides them behind an HMAC). A small header (version 2, first and next place) and one record
// per message under its place. Version 1 (before ordered streams) kept a list of every id and records by id.
const std::string key_outbox = "outbox";
std::string key_outbox_entry(std::uint64_t order) {
    return "outbox/o/" + std::to_string(order);
}
std::string key_outbox_entry_v1(const MessageId& id) {
    return "outbox/" + to_hex(ByteView{id});
}
constexpr std::uint8_t outbox_version = 2;
constexpr std::size_t outbox_header_size = 1 + 8 + 8;
constexpr std::size_t max_sent_ids = 10000;

}  // namespace

DurableOutbox::DurableOutbox(ClientState& state, const Clock& clock, Duration resend_after)
    : m_state(state), m_clock(clock), m_resend_after(resend_after), m_outbox(resend_after) {}

Status DurableOutbox::load() {
    SIM_TRY(auto header, m_state.get(key_outbox));
    if (!header) {
        m_loaded = true;
        return ok();
    }
    WireReader r(*header);
    std::uint8_t version = 0;
    std::uint64_t first = 0;
    std::uint64_t next = 0;
    if (header->size() == outbox_header_size && r.u8(version) && version == outbox_version && r.u64(first) &&
        r.u64(next) && first <= next) {
        for (auto order = first; order < next; ++order) {
            SIM_TRY(auto entry, m_state.get(key_outbox_entry(order)));
            if (!entry) {
                continue;  // acknowledged out of order
            }
            WireReader er(*entry);
            ByteView v;
            std::string peer;
            if (!er.take(sizeof(MessageId), v) || !read_name(er, peer)) {
                return corrupt("outbox entry");
            }
            MessageId id{};
            std::copy(v.begin(), v.end(), id.begin());
            const ByteView payload = er.rest();
            m_outbox.add_at(order, id, peer, Bytes(payload.begin(), payload.end()));
        }
        m_loaded = true;
        return ok();
    }
    // Version 1: u32 count, then the ids in send order; each record (peer, envelope) under its id. Moved to version 2
    // by the next commit, in one batch with everything else.
    WireReader old(*header);
    std::uint32_t n = 0;
    if (!old.u32(n) || header->size() != 4 + std::size_t{n} * sizeof(MessageId)) {
        return corrupt("outbox");
    }
    for (std::uint32_t i = 0; i < n; ++i) {
        ByteView v;
        if (!old.take(sizeof(MessageId), v)) {
            return corrupt("outbox");
        }
        MessageId id{};
        std::copy(v.begin(), v.end(), id.begin());
        SIM_TRY(auto entry, m_state.get(key_outbox_entry_v1(id)));
        if (!entry) {
            return corrupt("outbox entry");
        }
        WireReader er(*entry);
        std::string peer;
        if (!read_name(er, peer)) {
            return corrupt("outbox entry");
        }
        const ByteView payload = er.rest();
        Bytes envelope(payload.begin(), payload.end());
        const auto order = m_outbox.add(id, peer, envelope);
        m_writes.push_back({key_outbox_entry_v1(id), std::nullopt});
        m_writes.push_back({key_outbox_entry(order), record(id, peer, envelope)});
    }
    m_dirty = true;
    m_loaded = true;
    return ok();
}

SecureBytes DurableOutbox::record(const MessageId& id, const std::string& peer, ByteView payload) {
    SecureBytes rec;
    WireWriter w(rec);
    w.bytes(ByteView{id});
    w.u8(static_cast<std::uint8_t>(peer.size()));
    w.text(peer);
    w.bytes(payload);
    return rec;
}

void DurableOutbox::preload() {
    if (m_loaded) {
        return;
    }
    if (!load()) {
        m_outbox = Outbox(m_resend_after);  // load() at login reads it again and reports what is wrong
        m_writes.clear();
        m_dirty = false;
    }
}

void DurableOutbox::add(const MessageId& id, const std::string& peer, Bytes payload) {
    m_writes.push_back({key_outbox_entry(m_outbox.next_order()), record(id, peer, payload)});
    m_outbox.add(id, peer, std::move(payload));
    note_sent(id);
    m_dirty = true;
}

void DurableOutbox::forget(const MessageId& id) {
    m_outbox.remove(id);
}

void DurableOutbox::rewrite(const std::string& peer,
                            const std::function<bool(const MessageId& id, Bytes& payload)>& f) {
    m_outbox.rewrite(peer, [&](std::uint64_t order, const MessageId& id, Bytes& payload) {
        if (f(id, payload)) {
            m_writes.push_back({key_outbox_entry(order), record(id, peer, payload)});
        }
    });
}

void DurableOutbox::remove_record(std::uint64_t order) {
    m_writes.push_back({key_outbox_entry(order), std::nullopt});
    m_dirty = true;
}

void DurableOutbox::note_sent(const MessageId& id) {
    if (m_sent.insert(id).second) {
        m_sent_order.push_back(id);
        if (m_sent_order.size() > max_sent_ids) {
            m_sent.erase(m_sent_order.front());
            m_sent_order.pop_front();
        }
    }
}

std::vector<ClientEvent> DurableOutbox::on_receipt(ReceiptStatus status, const Receipt& receipt) {
    std::vector<ClientEvent> events;
    for (const auto& id : receipt.ids) {
        const auto order = m_outbox.remove(id);
        if (order) {
            remove_record(*order);
        }
        if (!order && !m_sent.contains(id)) {
            continue;  // not a text message of ours (a ratchet-only reply, or an id the server made up)
        }
        events.emplace_back(ReceiptEvent{receipt.peer, id, status});
    }
    return events;
}

bool DurableOutbox::refused(const Refusal& refusal, std::optional<Duration> wait) {
    return m_outbox.refused(refusal, m_clock.now(), wait);
}

void DurableOutbox::set_limits(const ServerLimits& limits) {
    m_outbox.set_limits(limits, m_clock.now());
}

void DurableOutbox::restart() {
    m_outbox.restart(m_clock.now());
}

std::vector<Frame> DurableOutbox::take_due(const std::string& user, const Outbox::Seal& seal,
                                           std::vector<ClientEvent>& events) {
    auto due = m_outbox.take_due(m_clock.now(), user, seal);
    // Messages that can never go: forgotten in the state (not tried again at every connection), and the
    // application hears which.
    for (auto& d : due.dropped) {
        remove_record(d.order);
        events.emplace_back(ErrorEvent{Error{d.error.code, "message dropped from the outbox: " + d.error.detail},
                                       std::move(d.peer), d.id});
    }
    return std::move(due.frames);
}

void DurableOutbox::collect(std::vector<StateWrite>& batch) {
    for (auto& w : m_writes) {
        batch.push_back(std::move(w));
    }
    m_writes.clear();
    if (m_dirty) {
        SecureBytes header;
        WireWriter w(header);
        w.u8(outbox_version);
        w.u64(m_outbox.first_order());
        w.u64(m_outbox.next_order());
        batch.push_back({key_outbox, std::move(header)});
    }
}

}  // namespace sim::client_detail
