#include <sim/frame.h>

#include "wire.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

namespace sim {

namespace {

constexpr std::size_t off_version = 0;
constexpr std::size_t off_type = 1;
constexpr std::size_t off_flags = 2;
constexpr std::size_t off_length = 4;

// Largest body the u32 length field can declare.
constexpr std::uint64_t max_body_field = std::numeric_limits<std::uint32_t>::max();

using detail::load_u16;
using detail::load_u32;
using detail::has_control;
using detail::is_control;
using detail::WireReader;

std::uint8_t* store_u16(std::uint8_t* p, std::uint16_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 8U);
    p[1] = static_cast<std::uint8_t>(v);
    return p + 2;
}

std::uint8_t* store_u32(std::uint8_t* p, std::uint32_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 24U);
    p[1] = static_cast<std::uint8_t>(v >> 16U);
    p[2] = static_cast<std::uint8_t>(v >> 8U);
    p[3] = static_cast<std::uint8_t>(v);
    return p + 4;
}

std::uint8_t* store_bytes(std::uint8_t* p, const void* src, std::size_t n) noexcept {
    if (n != 0) {
        std::memcpy(p, src, n);
    }
    return p + n;
}

struct Header {
    FrameType type;
    std::uint32_t body_len;
};

// Checks the header bytes present in `prefix`, which may be shorter than a header, so a stream fails as soon as
// a bad field arrives. Sets `complete` and fills `out` once all 8 bytes are present and valid. Allocation-free so
// bytes_needed() can use it; header_error() adds the detail text.
Errc check_header_code(ByteView prefix, std::size_t max_frame_size, bool& complete, Header& out) noexcept {
    complete = false;
    const std::size_t n = prefix.size();
    if (n > off_version && prefix[off_version] != frame_version) {
        return Errc::unsupported_version;
    }
    if (n > off_type && !frame_type_from_wire(prefix[off_type])) {
        return Errc::unknown_frame_type;
    }
    if (n >= off_flags + 2 && load_u16(prefix.data() + off_flags) != 0) {
        return Errc::bad_field;
    }
    if (n < frame_header_size) {
        return Errc::ok;
    }
    const std::uint32_t body_len = load_u32(prefix.data() + off_length);
    if (max_frame_size < frame_header_size ||
        static_cast<std::uint64_t>(body_len) > static_cast<std::uint64_t>(max_frame_size - frame_header_size)) {
        return Errc::frame_too_large;
    }
    if (body_len < frame_min_body_size) {
        return Errc::bad_length;
    }
    out = Header{static_cast<FrameType>(prefix[off_type]), body_len};
    complete = true;
    return Errc::ok;
}

Error header_error(Errc code, ByteView prefix, std::size_t max_frame_size) {
    switch (code) {
        case Errc::unsupported_version:
            return Error{code, "frame version " + std::to_string(prefix[off_version]) + ", expected " +
                                   std::to_string(frame_version)};
        case Errc::unknown_frame_type:
            return Error{code, "frame type " + std::to_string(prefix[off_type]) + " is not defined"};
        case Errc::bad_field:
            return Error{code, "frame header flags must be 0"};
        case Errc::frame_too_large:
            return Error{code, "declared frame size " +
                                   std::to_string(frame_header_size + load_u32(prefix.data() + off_length)) +
                                   " exceeds the maximum " + std::to_string(max_frame_size)};
        case Errc::bad_length:
            return Error{code, "declared body length " + std::to_string(load_u32(prefix.data() + off_length)) +
                                   " below the minimum " + std::to_string(frame_min_body_size)};
        default:
            return Error{Errc::internal, "unexpected header check result"};
    }
}

// nullopt = valid so far but incomplete.
Result<std::optional<Header>> check_header(ByteView prefix, std::size_t max_frame_size) {
    bool complete = false;
    Header h{};
    const Errc code = check_header_code(prefix, max_frame_size, complete, h);
    if (code != Errc::ok) {
        return header_error(code, prefix, max_frame_size);
    }
    if (!complete) {
        return std::optional<Header>{};
    }
    return std::optional<Header>{h};
}

Status check_name(std::string_view name, const char* which) {
    if (name.size() > max_name_size) {
        return Error{Errc::bad_field, std::string(which) + " name longer than " + std::to_string(max_name_size) +
                                          " bytes"};
    }
    if (has_control(name)) {
        return Error{Errc::bad_field, std::string(which) + " name contains a control byte"};
    }
    return ok();
}

Status check_transport_fields(FrameType type, std::uint32_t sid, std::string_view source,
                              std::string_view destination) {
    if (is_transport_frame(type) && (sid != 0 || !source.empty() || !destination.empty())) {
        return Error{Errc::bad_field, std::string(frame_type_name(type)) + " frame must have sid 0 and no names"};
    }
    return ok();
}

Result<std::string> read_name(WireReader& r, const char* which) {
    std::uint8_t len = 0;
    if (!r.u8(len)) {
        return Error{Errc::bad_length, std::string(which) + " length runs past the frame body"};
    }
    if (len > max_name_size) {
        return Error{Errc::bad_field, std::string(which) + " name longer than " + std::to_string(max_name_size) +
                                          " bytes"};
    }
    ByteView bytes;
    if (!r.take(len, bytes)) {
        return Error{Errc::bad_length, std::string(which) + " name runs past the frame body"};
    }
    std::string name = to_string(bytes);
    if (has_control(name)) {
        return Error{Errc::bad_field, std::string(which) + " name contains a control byte"};
    }
    return name;
}

Result<Frame> parse_body(FrameType type, ByteView body) {
    WireReader r(body);
    Frame f;
    f.type = type;
    if (!r.u32(f.sid)) {
        return Error{Errc::bad_length, "sid runs past the frame body"};
    }
    SIM_TRY(f.source, read_name(r, "source"));
    SIM_TRY(f.destination, read_name(r, "destination"));
    std::uint32_t payload_len = 0;
    if (!r.u32(payload_len)) {
        return Error{Errc::bad_length, "payload length runs past the frame body"};
    }
    ByteView payload;
    if (!r.take(payload_len, payload)) {
        return Error{Errc::bad_length, "payload runs past the frame body"};
    }
    if (r.remaining() != 0) {
        return Error{Errc::trailing_bytes,
                     std::to_string(r.remaining()) + " bytes after the payload inside the frame body"};
    }
    SIM_TRY_STATUS(check_transport_fields(type, f.sid, f.source, f.destination));
    f.payload.assign(payload.begin(), payload.end());
    return f;
}

}  // namespace

std::optional<FrameType> frame_type_from_wire(std::uint8_t value) noexcept {
    switch (static_cast<FrameType>(value)) {
        case FrameType::handshake:
        case FrameType::record:
        case FrameType::init:
        case FrameType::ack_init:
        case FrameType::keygen:
        case FrameType::message:
        case FrameType::probe:
        case FrameType::error:
        case FrameType::close:
        case FrameType::prekeys:
        case FrameType::ack:
        case FrameType::receipt:
        case FrameType::limits:
        case FrameType::passwd:
        case FrameType::link:
        case FrameType::devices:
        case FrameType::presence:
            return static_cast<FrameType>(value);
    }
    return std::nullopt;
}

std::string_view frame_type_name(FrameType type) noexcept {
    switch (type) {
        case FrameType::handshake: return "handshake";
        case FrameType::record: return "record";
        case FrameType::init: return "init";
        case FrameType::ack_init: return "ack_init";
        case FrameType::keygen: return "keygen";
        case FrameType::message: return "message";
        case FrameType::probe: return "probe";
        case FrameType::error: return "error";
        case FrameType::close: return "close";
        case FrameType::prekeys: return "prekeys";
        case FrameType::ack: return "ack";
        case FrameType::receipt: return "receipt";
        case FrameType::limits: return "limits";
        case FrameType::passwd: return "passwd";
        case FrameType::link: return "link";
        case FrameType::devices: return "devices";
        case FrameType::presence: return "presence";
    }
    return "unknown";
}

bool is_transport_frame(FrameType type) noexcept {
    return type == FrameType::handshake || type == FrameType::record;
}

std::size_t encoded_frame_size(const Frame& frame) noexcept {
    return min_frame_size + frame.source.size() + frame.destination.size() + frame.payload.size();
}

Status encode_frame_into(const Frame& frame, Bytes& out, std::size_t max_frame_size) {
    const auto wire_type = static_cast<std::uint8_t>(frame.type);
    if (!frame_type_from_wire(wire_type)) {
        return Error{Errc::unknown_frame_type, "cannot encode frame type " + std::to_string(wire_type)};
    }
    SIM_TRY_STATUS(check_name(frame.source, "source"));
    SIM_TRY_STATUS(check_name(frame.destination, "destination"));
    SIM_TRY_STATUS(check_transport_fields(frame.type, frame.sid, frame.source, frame.destination));
    // Names are at most 64 bytes each (checked above), so only the payload can overflow a sum.
    const std::size_t fixed = min_frame_size + frame.source.size() + frame.destination.size();
    if (fixed > max_frame_size || frame.payload.size() > max_frame_size - fixed) {
        return Error{Errc::frame_too_large, "frame of " + std::to_string(fixed + frame.payload.size()) +
                                                " bytes exceeds the maximum " + std::to_string(max_frame_size)};
    }
    const std::size_t total = fixed + frame.payload.size();
    const std::uint64_t body_len = total - frame_header_size;
    if (body_len > max_body_field) {
        return Error{Errc::frame_too_large, "frame body does not fit the 32-bit length field"};
    }

    const std::size_t start = out.size();
    out.resize(start + total);
    std::uint8_t* p = out.data() + start;
    *p++ = frame_version;
    *p++ = wire_type;
    p = store_u16(p, 0);
    p = store_u32(p, static_cast<std::uint32_t>(body_len));
    p = store_u32(p, frame.sid);
    *p++ = static_cast<std::uint8_t>(frame.source.size());
    p = store_bytes(p, frame.source.data(), frame.source.size());
    *p++ = static_cast<std::uint8_t>(frame.destination.size());
    p = store_bytes(p, frame.destination.data(), frame.destination.size());
    p = store_u32(p, static_cast<std::uint32_t>(frame.payload.size()));
    store_bytes(p, frame.payload.data(), frame.payload.size());
    return ok();
}

Result<Bytes> encode_frame(const Frame& frame, std::size_t max_frame_size) {
    Bytes out;
    out.reserve(encoded_frame_size(frame));
    SIM_TRY_STATUS(encode_frame_into(frame, out, max_frame_size));
    return out;
}

Result<Frame> decode_frame(ByteView exactly_one_frame, std::size_t max_frame_size) {
    SIM_TRY(const auto header, check_header(exactly_one_frame, max_frame_size));
    if (!header) {
        return Error{Errc::truncated, "input ends inside the frame header"};
    }
    const std::size_t total = frame_header_size + header->body_len;
    if (exactly_one_frame.size() < total) {
        return Error{Errc::truncated, "input ends " + std::to_string(total - exactly_one_frame.size()) +
                                          " bytes before the end of the frame"};
    }
    if (exactly_one_frame.size() > total) {
        return Error{Errc::trailing_bytes,
                     std::to_string(exactly_one_frame.size() - total) + " bytes after the end of the frame"};
    }
    return parse_body(header->type, exactly_one_frame.subspan(frame_header_size, header->body_len));
}

Frame make_error_frame(Errc code, std::string_view detail) {
    if (detail.size() > max_error_detail_size) {
        std::size_t cut = max_error_detail_size;
        // Do not split a UTF-8 sequence: back off over continuation bytes (10xxxxxx).
        while (cut > 0 && (static_cast<std::uint8_t>(detail[cut]) & 0xC0U) == 0x80U) {
            --cut;
        }
        detail = detail.substr(0, cut);
    }
    Frame f;
    f.type = FrameType::error;
    f.payload.resize(2 + detail.size());
    store_u16(f.payload.data(), static_cast<std::uint16_t>(code));
    std::transform(detail.begin(), detail.end(), f.payload.begin() + 2, [](char c) {
        const auto b = static_cast<std::uint8_t>(c);
        return is_control(b) ? static_cast<std::uint8_t>('?') : b;
    });
    return f;
}

Result<PeerError> parse_error_frame(const Frame& frame) {
    if (frame.type != FrameType::error) {
        return Error{Errc::invalid_argument, "not an error frame"};
    }
    if (frame.payload.size() < 2) {
        return Error{Errc::truncated, "error frame payload shorter than its 2-byte code"};
    }
    const std::uint16_t code = load_u16(frame.payload.data());
    if (code == 0) {
        return Error{Errc::bad_field, "error frame carries code 0 (ok)"};
    }
    const ByteView detail = ByteView(frame.payload).subspan(2);
    if (detail.size() > max_error_detail_size) {
        return Error{Errc::bad_field, "error frame detail longer than " + std::to_string(max_error_detail_size) +
                                          " bytes"};
    }
    if (std::any_of(detail.begin(), detail.end(), is_control)) {
        return Error{Errc::bad_field, "error frame detail contains a control byte"};
    }
    return PeerError{static_cast<Errc>(code), to_string(detail)};
}

FrameDecoder::FrameDecoder(std::size_t max_frame_size) : m_max(max_frame_size) {}

void FrameDecoder::feed(ByteView data) {
    if (m_failed || data.empty()) {
        return;
    }
    // Drop the parsed prefix before growing: at most one partial frame is moved per parsed frame.
    if (m_pos != 0) {
        m_buf.erase(m_buf.begin(), m_buf.begin() + static_cast<std::ptrdiff_t>(m_pos));
        m_pos = 0;
    }
    if (m_buf.capacity() < m_buf.size() + data.size()) {
        // One allocation of the size needed (a released buffer would otherwise grow by doubling from zero).
        m_buf.reserve(std::max(m_buf.size() + data.size(), std::min<std::size_t>(2 * m_buf.capacity(), m_max)));
    }
    m_buf.insert(m_buf.end(), data.begin(), data.end());
}

Result<std::optional<Frame>> FrameDecoder::next() {
    if (m_failed) {
        return m_error;
    }
    const ByteView avail = ByteView(m_buf).subspan(m_pos);
    auto header = check_header(avail, m_max);
    if (!header) {
        m_failed = true;
        m_error = std::move(header).error();
        return m_error;
    }
    if (!header->has_value()) {
        return std::optional<Frame>{};
    }
    const Header h = **header;
    const std::size_t total = frame_header_size + h.body_len;
    if (avail.size() < total) {
        return std::optional<Frame>{};
    }
    auto frame = parse_body(h.type, avail.subspan(frame_header_size, h.body_len));
    if (!frame) {
        m_failed = true;
        m_error = std::move(frame).error();
        return m_error;
    }
    m_pos += total;
    if (m_pos == m_buf.size()) {
        m_pos = 0;
        m_buf.clear();
        // Empty: keep at most a small buffer, so an idle connection does not hold the memory of its last burst.
        // A busy connection pays one allocation per feed() that held more than this, not one per frame.
        if (m_buf.capacity() > decoder_idle_capacity) {
            Bytes().swap(m_buf);
        }
    }
    return std::optional<Frame>{std::move(frame).value()};
}

std::size_t FrameDecoder::bytes_needed() const noexcept {
    if (m_failed) {
        return 0;
    }
    const ByteView avail = ByteView(m_buf).subspan(m_pos);
    bool complete = false;
    Header h{};
    if (check_header_code(avail, m_max, complete, h) != Errc::ok) {
        return 0;  // next() reports the error
    }
    if (!complete) {
        return min_frame_size - avail.size();
    }
    const std::size_t total = frame_header_size + static_cast<std::size_t>(h.body_len);
    return total > avail.size() ? total - avail.size() : 0;
}

}  // namespace sim
