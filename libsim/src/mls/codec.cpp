// RFC 9420 s2.1: the TLS presentation language with MLS varint lengths, bounded.
#include "codec.h"

#include <utility>

namespace sim::mls {

namespace {

template <typename T>
Result<T> read_be(ByteView data, std::size_t& pos) {
    if (data.size() - pos < sizeof(T)) {
        return Errc::truncated;
    }
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        v = static_cast<T>((v << 8) | data[pos + i]);
    }
    pos += sizeof(T);
    return v;
}

template <typename Buffer, typename T>
void write_be(Buffer& out, T v) {
    for (std::size_t i = sizeof(T); i-- > 0;) {
        out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
}

}  // namespace

Result<std::uint8_t> TlsReader::u8() {
    return read_be<std::uint8_t>(m_data, m_pos);
}
Result<std::uint16_t> TlsReader::u16() {
    return read_be<std::uint16_t>(m_data, m_pos);
}
Result<std::uint32_t> TlsReader::u32() {
    return read_be<std::uint32_t>(m_data, m_pos);
}
Result<std::uint64_t> TlsReader::u64() {
    return read_be<std::uint64_t>(m_data, m_pos);
}

Result<std::uint32_t> TlsReader::varint() {
    if (empty()) {
        return Errc::truncated;
    }
    const std::uint8_t first = m_data[m_pos];
    const unsigned prefix = first >> 6;
    if (prefix == 3) {
        return Error{Errc::bad_field, "MLS varint with the reserved prefix 0b11"};
    }
    const std::size_t length = std::size_t{1} << prefix;  // 1, 2 or 4
    if (remaining() < length) {
        return Errc::truncated;
    }
    std::uint32_t v = first & 0x3f;
    for (std::size_t i = 1; i < length; ++i) {
        v = (v << 8) | m_data[m_pos + i];
    }
    // s2.1.2: the value must use the shortest encoding (1 byte up to 63, 2 bytes up to 16383).
    if ((length == 2 && v < 64) || (length == 4 && v < 16384)) {
        return Error{Errc::bad_field, "MLS varint not minimally encoded"};
    }
    m_pos += length;
    return v;
}

Result<ByteView> TlsReader::fixed(std::size_t n) {
    if (remaining() < n) {
        return Errc::truncated;
    }
    const auto out = m_data.subspan(m_pos, n);
    m_pos += n;
    return out;
}

Result<ByteView> TlsReader::vector(std::size_t max) {
    const auto start = m_pos;
    SIM_TRY(const auto length, varint());
    if (length > max) {
        m_pos = start;
        return Error{Errc::frame_too_large, "MLS vector longer than its maximum"};
    }
    auto body = fixed(length);
    if (!body) {
        m_pos = start;
    }
    return body;
}

Result<TlsReader> TlsReader::sub_reader(std::size_t max) {
    SIM_TRY(const auto body, vector(max));
    return TlsReader(body);
}

Result<ByteView> TlsReader::exact_vector(std::size_t size) {
    SIM_TRY(const auto v, vector(size));
    if (v.size() != size) {
        return Error{Errc::bad_length, "vector does not have its fixed size"};
    }
    return v;
}

Result<bool> TlsReader::optional() {
    SIM_TRY(const auto present, u8());
    if (present > 1) {
        return Error{Errc::bad_field, "optional<T> presence byte is neither 0 nor 1"};
    }
    return present == 1;
}

Status TlsReader::finish() const {
    if (!empty()) {
        return Errc::trailing_bytes;
    }
    return ok();
}

template <typename Buffer>
void BasicTlsWriter<Buffer>::u8(std::uint8_t v) {
    m_out.push_back(v);
}
template <typename Buffer>
void BasicTlsWriter<Buffer>::u16(std::uint16_t v) {
    write_be(m_out, v);
}
template <typename Buffer>
void BasicTlsWriter<Buffer>::u32(std::uint32_t v) {
    write_be(m_out, v);
}
template <typename Buffer>
void BasicTlsWriter<Buffer>::u64(std::uint64_t v) {
    write_be(m_out, v);
}

template <typename Buffer>
Status BasicTlsWriter<Buffer>::varint(std::uint64_t v) {
    SIM_TRY(const auto enc, encode_varint(v));
    raw(enc);
    return ok();
}

template <typename Buffer>
void BasicTlsWriter<Buffer>::raw(ByteView v) {
    m_out.insert(m_out.end(), v.begin(), v.end());
}

template <typename Buffer>
Status BasicTlsWriter<Buffer>::vector(ByteView v) {
    SIM_TRY_STATUS(varint(v.size()));
    raw(v);
    return ok();
}

template class BasicTlsWriter<Bytes>;
template class BasicTlsWriter<SecureBytes>;

Result<Bytes> encode_varint(std::uint64_t v) {
    if (v > max_varint) {
        return Error{Errc::frame_too_large, "value too large for an MLS varint"};
    }
    Bytes out;
    if (v < 64) {
        write_be(out, static_cast<std::uint8_t>(v));
    } else if (v < 16384) {
        write_be(out, static_cast<std::uint16_t>(v | 0x4000));
    } else {
        write_be(out, static_cast<std::uint32_t>(v | 0x80000000U));
    }
    return out;
}

}  // namespace sim::mls
