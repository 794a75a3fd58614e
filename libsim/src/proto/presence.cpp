#include "presence.h"

#include "wire.h"

namespace sim {

namespace {

using detail::WireReader;
using detail::WireWriter;

bool valid_name(std::string_view name) {
    if (name.empty() || name.size() > max_presence_name) {
        return false;
    }
    for (const char c : name) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20 || b == 0x7F) {
            return false;
        }
    }
    return true;
}

}  // namespace

Result<Bytes> encode_presence(const PresenceMessage& m) {
    Bytes out;
    WireWriter<Bytes> w(out);
    w.u8(static_cast<std::uint8_t>(m.op));
    switch (m.op) {
        case PresenceOp::set:
            w.u8(m.hidden ? 1 : 0);
            break;
        case PresenceOp::status:
            if (m.entries.size() > max_presence_entries) {
                return Error{Errc::invalid_argument, "too many presence entries for one frame"};
            }
            w.u16(static_cast<std::uint16_t>(m.entries.size()));
            for (const auto& e : m.entries) {
                if (!valid_name(e.user)) {
                    return Error{Errc::invalid_argument, "presence entry with an invalid name"};
                }
                w.u8(static_cast<std::uint8_t>(e.user.size()));
                w.bytes(as_bytes(e.user));
                w.u8(e.online ? 1 : 0);
            }
            break;
        case PresenceOp::query:
            break;
    }
    return out;
}

Result<PresenceMessage> decode_presence(ByteView payload) {
    WireReader r(payload);
    std::uint8_t op = 0;
    if (!r.u8(op)) {
        return Error{Errc::truncated, "presence payload empty"};
    }
    PresenceMessage m;
    switch (op) {
        case static_cast<std::uint8_t>(PresenceOp::set): {
            m.op = PresenceOp::set;
            std::uint8_t hidden = 0;
            if (!r.u8(hidden)) {
                return Error{Errc::truncated, "presence set truncated"};
            }
            if (hidden > 1) {
                return Error{Errc::bad_field, "presence hidden flag is not 0 or 1"};
            }
            m.hidden = hidden == 1;
            break;
        }
        case static_cast<std::uint8_t>(PresenceOp::status): {
            m.op = PresenceOp::status;
            std::uint16_t count = 0;
            if (!r.u16(count)) {
                return Error{Errc::truncated, "presence status truncated"};
            }
            if (count > max_presence_entries) {
                return Error{Errc::bad_field, "too many presence entries"};
            }
            for (std::uint16_t i = 0; i < count; ++i) {
                std::uint8_t len = 0;
                ByteView name;
                std::uint8_t online = 0;
                if (!r.u8(len) || !r.take(len, name) || !r.u8(online)) {
                    return Error{Errc::truncated, "presence entry truncated"};
                }
                PresenceEntry e{std::string(name.begin(), name.end()), online == 1};
                if (!valid_name(e.user) || online > 1) {
                    return Error{Errc::bad_field, "presence entry with an invalid name or flag"};
                }
                m.entries.push_back(std::move(e));
            }
            break;
        }
        case static_cast<std::uint8_t>(PresenceOp::query):
            m.op = PresenceOp::query;
            break;
        default:
            return Error{Errc::bad_field, "unknown presence op"};
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after the presence payload"};
    }
    return m;
}

}  // namespace sim
