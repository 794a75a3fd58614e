#include "stream_order.h"

namespace sim::server_detail {

std::uint32_t StreamOrder::check(const Key& key, std::uint32_t seq) const {
    if (seq == 0) {
        return 0;
    }
    const auto it = m_streams.find(key);
    if (it == m_streams.end() || it->second.next == 0 || seq <= it->second.next) {
        return 0;
    }
    return it->second.next;
}

std::uint32_t StreamOrder::next(const Key& key) const {
    const auto it = m_streams.find(key);
    return it == m_streams.end() ? 0 : it->second.next;
}

void StreamOrder::accepted(const Key& key, std::uint32_t seq) {
    if (seq == 0) {
        return;
    }
    auto& s = m_streams[key];
    if (seq >= s.next) {
        s.next = seq + 1;
    }
}

void StreamOrder::refused(const Key& key, std::uint32_t seq) {
    if (seq == 0) {
        return;
    }
    auto& s = m_streams[key];
    if (s.next == 0 || seq < s.next) {
        s.next = seq;
    }
}

void StreamOrder::committed(const Key& key, std::uint32_t seq, Outcome outcome) {
    if (seq == 0) {
        return;
    }
    const auto it = m_streams.find(key);
    if (it == m_streams.end()) {
        return;
    }
    auto& s = it->second;
    if (outcome == Outcome::failed) {
        if (s.failed == 0 || seq < s.failed) {
            s.failed = seq;
        }
        if (s.next == 0 || seq < s.next) {
            s.next = seq;
        }
    }
}

std::uint32_t StreamOrder::admit(const Key& key, std::uint32_t seq) {
    if (seq == 0) {
        return 0;
    }
    const auto it = m_streams.find(key);
    if (it == m_streams.end() || it->second.failed == 0) {
        return 0;
    }
    auto& s = it->second;
    if (seq > s.failed) {
        return s.failed;  // accepted before the sender heard that an earlier one failed
    }
    s.failed = 0;  // the failed one (or an earlier one) came again: what follows it is sent after it
    return 0;
}

}  // namespace sim::server_detail
