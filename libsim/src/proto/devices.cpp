// Payloads of the `link` and `devices` frames (devices.h, docs/protocol.md 6.9).
#include "devices.h"

#include "wire.h"

namespace sim {

using detail::from_wire_ms;
using detail::has_control;
using detail::max_wire_ms;
using detail::to_wire_ms;
using detail::WireReader;
using detail::WireWriter;

namespace {

constexpr std::size_t ephemeral_size = 32;

/// The data size a link step must carry: exactly `min` == `max`, or a range for a grant.
struct SizeRange {
    std::size_t min;
    std::size_t max;
};

Result<SizeRange> link_data_size(LinkStep step) {
    switch (step) {
        case LinkStep::request:
            return SizeRange{e2e::link_request_size, e2e::link_request_size};
        case LinkStep::offer:
        case LinkStep::reveal:
            return SizeRange{ephemeral_size, ephemeral_size};
        case LinkStep::grant:
            return SizeRange{link_grant_tag_size + 1, max_link_grant_size};
        case LinkStep::abort:
            return SizeRange{0, 0};
    }
    return Error{Errc::bad_field, "unknown link step"};
}

Status check_link(const LinkMessage& m) {
    SIM_TRY(const auto size, link_data_size(m.step));
    if (m.data.size() < size.min || m.data.size() > size.max) {
        return Error{Errc::bad_field, "link step data of the wrong size"};
    }
    if (m.step == LinkStep::abort && m.reason == Errc::ok) {
        return Error{Errc::bad_field, "a link abort without a reason"};
    }
    return ok();
}

Status check_device_name(std::string_view name) {
    if (name.size() > max_device_name_size) {
        return Error{Errc::bad_field, "device name longer than " + std::to_string(max_device_name_size) + " bytes"};
    }
    if (has_control(name)) {
        return Error{Errc::bad_field, "device name contains a control byte"};
    }
    return ok();
}

Status check_list_size(std::size_t size, bool may_be_empty) {
    if (size > e2e::max_signed_device_list_size) {
        return Error{Errc::bad_field, "device list too large"};
    }
    if (size == 0 && !may_be_empty) {
        return Error{Errc::bad_field, "empty device list"};
    }
    return ok();
}

Status check_request(const DevicesRequest& r) {
    switch (r.op) {
        case DevicesOp::list:
        case DevicesOp::info:
            return ok();
        case DevicesOp::put:
            return check_list_size(r.signed_list.size(), false);
        case DevicesOp::rename:
            if (r.device == 0) {
                return Error{Errc::bad_field, "device 0"};
            }
            return check_device_name(r.name);
        case DevicesOp::changed:
            break;
    }
    return Error{Errc::bad_field, "not a devices request"};
}

Status check_user(std::string_view user) {
    if (user.empty() || user.size() > 255 || has_control(user)) {
        return Error{Errc::bad_field, "bad user name in a devices reply"};
    }
    return ok();
}

Status check_reply(const DevicesReply& r) {
    switch (r.op) {
        case DevicesOp::list:
        case DevicesOp::changed:
            SIM_TRY_STATUS(check_user(r.user));
            return check_list_size(r.signed_list.size(), r.op == DevicesOp::list);
        case DevicesOp::info: {
            if (r.devices.size() > e2e::max_listed_devices) {
                return Error{Errc::bad_field, "too many devices"};
            }
            DeviceId previous = 0;
            for (const auto& d : r.devices) {
                if (d.device <= previous) {
                    return Error{Errc::bad_field, "device ids 0 or not increasing"};
                }
                previous = d.device;
                if (d.status < DeviceStatus::pending || d.status > DeviceStatus::removed) {
                    return Error{Errc::bad_field, "unknown device status"};
                }
                SIM_TRY_STATUS(check_device_name(d.name));
            }
            return ok();
        }
        case DevicesOp::put:
        case DevicesOp::rename:
            break;
    }
    return Error{Errc::bad_field, "not a devices reply"};
}

void write_user_and_list(WireWriter<Bytes>& w, std::string_view user, ByteView list) {
    w.u8(static_cast<std::uint8_t>(user.size()));
    w.text(user);
    w.u32(static_cast<std::uint32_t>(list.size()));
    w.bytes(list);
}

Result<Bytes> as_invalid_argument(Status st, Bytes out) {
    if (!st) {
        return Error{Errc::invalid_argument, st.error().detail};
    }
    return out;
}

}  // namespace

Bytes encode_link(const LinkMessage& m) {
    Bytes out;
    WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(m.step));
    w.u32(m.device);
    if (m.step == LinkStep::abort) {
        w.u16(static_cast<std::uint16_t>(m.reason));
    } else {
        w.bytes(m.data);
    }
    return out;
}

Result<LinkMessage> decode_link(ByteView payload) {
    WireReader r(payload);
    std::uint8_t step = 0;
    LinkMessage m;
    if (!r.u8(step) || !r.u32(m.device)) {
        return Error{Errc::truncated, "link frame truncated"};
    }
    m.step = static_cast<LinkStep>(step);
    SIM_TRY(const auto size, link_data_size(m.step));
    if (m.step == LinkStep::abort) {
        std::uint16_t code = 0;
        if (!r.u16(code)) {
            return Error{Errc::truncated, "link abort truncated"};
        }
        m.reason = static_cast<Errc>(code);
    } else {
        if (r.remaining() < size.min) {
            return Error{Errc::truncated, "link step data truncated"};
        }
        if (r.remaining() > size.max) {
            return Error{Errc::trailing_bytes, "bytes after the link step data"};
        }
        const ByteView data = r.rest();
        m.data.assign(data.begin(), data.end());
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after the link abort"};
    }
    SIM_TRY_STATUS(check_link(m));
    return m;
}

Result<Bytes> encode_devices_request(const DevicesRequest& r) {
    Bytes out;
    WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(r.op));
    if (r.op == DevicesOp::put) {
        w.bytes(r.signed_list);
    } else if (r.op == DevicesOp::rename) {
        w.u32(r.device);
        w.u8(static_cast<std::uint8_t>(std::min<std::size_t>(r.name.size(), 255)));
        w.text(r.name.substr(0, 255));
    }
    return as_invalid_argument(check_request(r), std::move(out));
}

Result<DevicesRequest> decode_devices_request(ByteView payload) {
    WireReader r(payload);
    std::uint8_t op = 0;
    if (!r.u8(op)) {
        return Error{Errc::truncated, "devices request truncated"};
    }
    DevicesRequest req;
    req.op = static_cast<DevicesOp>(op);
    if (req.op == DevicesOp::put) {
        const ByteView list = r.rest();
        req.signed_list.assign(list.begin(), list.end());
    } else if (req.op == DevicesOp::rename) {
        std::uint8_t len = 0;
        ByteView name;
        if (!r.u32(req.device) || !r.u8(len) || !r.take(len, name)) {
            return Error{Errc::truncated, "device rename truncated"};
        }
        req.name = to_string(name);
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after the devices request"};
    }
    SIM_TRY_STATUS(check_request(req));
    return req;
}

Result<Bytes> encode_devices_reply(const DevicesReply& r) {
    Bytes out;
    WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(r.op));
    if (r.op == DevicesOp::info) {
        w.u8(static_cast<std::uint8_t>(std::min<std::size_t>(r.devices.size(), 255)));
        for (const auto& d : r.devices) {
            w.u32(d.device);
            w.u8(static_cast<std::uint8_t>(d.status));
            w.u8(static_cast<std::uint8_t>(std::min<std::size_t>(d.name.size(), 255)));
            w.text(std::string_view{d.name}.substr(0, 255));
            w.u64(to_wire_ms(d.linked));
            w.u64(to_wire_ms(d.last_seen));
        }
    } else {
        write_user_and_list(w, std::string_view{r.user}.substr(0, 255), r.signed_list);
    }
    return as_invalid_argument(check_reply(r), std::move(out));
}

Result<DevicesReply> decode_devices_reply(ByteView payload) {
    WireReader r(payload);
    std::uint8_t op = 0;
    if (!r.u8(op)) {
        return Error{Errc::truncated, "devices reply truncated"};
    }
    DevicesReply rep;
    rep.op = static_cast<DevicesOp>(op);
    const Error truncated{Errc::truncated, "devices reply truncated"};
    if (rep.op == DevicesOp::info) {
        std::uint8_t count = 0;
        if (!r.u8(count)) {
            return truncated;
        }
        for (std::uint8_t i = 0; i < count; ++i) {
            DeviceInfo d;
            std::uint8_t status = 0;
            std::uint8_t len = 0;
            ByteView name;
            std::uint64_t linked = 0;
            std::uint64_t seen = 0;
            if (!r.u32(d.device) || !r.u8(status) || !r.u8(len) || !r.take(len, name) || !r.u64(linked) ||
                !r.u64(seen)) {
                return truncated;
            }
            if (linked > max_wire_ms || seen > max_wire_ms) {
                return Error{Errc::bad_field, "device time out of range"};
            }
            d.status = static_cast<DeviceStatus>(status);
            d.name = to_string(name);
            d.linked = from_wire_ms(linked);
            d.last_seen = from_wire_ms(seen);
            rep.devices.push_back(std::move(d));
        }
    } else if (rep.op == DevicesOp::list || rep.op == DevicesOp::changed) {
        std::uint8_t len = 0;
        ByteView user;
        std::uint32_t list_len = 0;
        if (!r.u8(len) || !r.take(len, user) || !r.u32(list_len)) {
            return truncated;
        }
        if (list_len > e2e::max_signed_device_list_size) {
            return Error{Errc::bad_field, "device list too large"};
        }
        ByteView list;
        if (!r.take(list_len, list)) {
            return truncated;
        }
        rep.user = to_string(user);
        rep.signed_list.assign(list.begin(), list.end());
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after the devices reply"};
    }
    SIM_TRY_STATUS(check_reply(rep));
    return rep;
}

}  // namespace sim
