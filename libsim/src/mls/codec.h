#pragma once
/// @file
/// The TLS presentation language as MLS uses it (RFC 9420 s2.1): big-endian integers, fixed-size opaque fields,
/// and variable-size vectors whose length is an MLS variable-length integer (s2.1.2). Internal to libsim.
///
/// Every read is bounded: a vector longer than the caller's maximum (default `max_vector_size`) is refused
/// before anything is allocated, and a `TlsReader` never reads past its input. Nothing here throws.

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace sim::mls {

/// Largest value an MLS varint can carry (30 bits, s2.1.2).
inline constexpr std::uint32_t max_varint = (1U << 30) - 1;
/// Default hard maximum of one variable-size vector (and of a whole message): 1 MiB. Callers pass smaller limits
/// for fields with a known size.
inline constexpr std::size_t max_vector_size = std::size_t{1} << 20;

/// Bounded reader over a byte view. Each call consumes bytes only on success; after a failure the reader's
/// position is unspecified and the caller is expected to give up on the whole structure.
class TlsReader {
public:
    explicit TlsReader(ByteView data) noexcept : m_data(data) {}

    /// Errc::truncated when the input ends early.
    Result<std::uint8_t> u8();
    Result<std::uint16_t> u16();
    Result<std::uint32_t> u32();
    Result<std::uint64_t> u64();
    /// An MLS variable-length integer (s2.1.2). Errc::bad_field for the reserved prefix 0b11 and for an encoding
    /// longer than needed (s2.1.2: "the minimum number of bytes"), Errc::truncated when the input ends early.
    Result<std::uint32_t> varint();
    /// `n` bytes as they are. Errc::truncated.
    Result<ByteView> fixed(std::size_t n);
    /// A variable-size vector `opaque x<V>`: a varint length then that many bytes. Errc::frame_too_large when the
    /// length exceeds `max`, plus the errors of varint() and fixed().
    Result<ByteView> vector(std::size_t max = max_vector_size);
    /// A vector that must hold exactly `size` bytes (a key or a hash). Errc::bad_length for another length, plus
    /// the errors of vector().
    Result<ByteView> exact_vector(std::size_t size);
    /// A vector's content as a reader of its own, for vectors of structures. Errors as vector().
    Result<TlsReader> sub_reader(std::size_t max = max_vector_size);
    /// The presence byte of `optional<T>`: false for 0, true for 1, Errc::bad_field otherwise.
    Result<bool> optional();

    /// Bytes not yet read.
    [[nodiscard]] std::size_t remaining() const noexcept { return m_data.size() - m_pos; }
    [[nodiscard]] bool empty() const noexcept { return remaining() == 0; }
    /// The current position (bytes consumed so far).
    [[nodiscard]] std::size_t position() const noexcept { return m_pos; }
    /// The bytes between `from` (an earlier position()) and the current position.
    [[nodiscard]] ByteView consumed_since(std::size_t from) const noexcept {
        return m_data.subspan(from, m_pos - from);
    }
    /// Errc::trailing_bytes when input is left over.
    Status finish() const;

private:
    ByteView m_data;
    std::size_t m_pos = 0;
};

/// Writer of the same encoding. Appends to an internal buffer of type `Buffer`: Bytes for public structures,
/// SecureBytes for encodings that hold secrets (the buffer is then wiped whenever it is released, also when it
/// grows).
template <typename Buffer>
class BasicTlsWriter {
public:
    void u8(std::uint8_t v);
    void u16(std::uint16_t v);
    void u32(std::uint32_t v);
    void u64(std::uint64_t v);
    /// Errc::frame_too_large when `v` > max_varint.
    Status varint(std::uint64_t v);
    /// Bytes as they are (a fixed-size field or an already encoded structure).
    void raw(ByteView v);
    /// `opaque x<V>`. Errc::frame_too_large when `v` is longer than max_varint.
    Status vector(ByteView v);

    [[nodiscard]] const Buffer& bytes() const& noexcept { return m_out; }
    [[nodiscard]] Buffer&& bytes() && noexcept { return std::move(m_out); }

private:
    Buffer m_out;
};

extern template class BasicTlsWriter<Bytes>;
extern template class BasicTlsWriter<SecureBytes>;
using TlsWriter = BasicTlsWriter<Bytes>;
using SecureTlsWriter = BasicTlsWriter<SecureBytes>;

/// The encoding of `v` as an MLS varint (1, 2 or 4 bytes). Errc::frame_too_large when `v` > max_varint.
Result<Bytes> encode_varint(std::uint64_t v);

}  // namespace sim::mls
