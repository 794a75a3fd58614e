#pragma once
// Private: the 16-byte record header and the sub-key labels shared by suite.cpp and session.cpp.
// docs/protocol.md section 4 is the normative description; keep the two in step.

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/session.h>
#include <sim/suite.h>

#include <array>
#include <cstdint>
#include <string_view>

namespace sim::detail {

/// The only record version this code speaks.
inline constexpr std::uint8_t record_version = 1;

/// Largest number of 8-byte TDES blocks one key may encrypt (2^23 blocks = 64 MiB), whatever the rotation policy says
/// (Sweet32; see docs/protocol.md s4.6).
inline constexpr std::uint64_t tdes_max_blocks_per_key = tdes_max_bytes_per_key / 8;

/// HKDF labels (docs/protocol.md s4.3).
inline constexpr std::string_view label_aead_key = "libsim v1 aead key";
inline constexpr std::string_view label_tdes_enc = "libsim v1 tdes enc";
inline constexpr std::string_view label_tdes_mac = "libsim v1 tdes mac";
inline constexpr std::string_view label_rotate = "libsim v1 rotate";

/// The fields of a record header.
struct RecordHeader {
    std::uint8_t version = record_version;
    std::uint8_t suite = 0;
    std::uint32_t epoch = 0;
    std::uint64_t seq = 0;
};

using EncodedHeader = std::array<std::uint8_t, record_header_size>;

/// Header bytes: version, suite, two reserved zero bytes, epoch (u32 BE), seq (u64 BE).
inline EncodedHeader encode_header(const RecordHeader& h) noexcept {
    EncodedHeader out{};
    out[0] = h.version;
    out[1] = h.suite;
    for (std::size_t i = 0; i < 4; ++i) {
        out[4 + i] = static_cast<std::uint8_t>(h.epoch >> (8U * (3 - i)));
    }
    for (std::size_t i = 0; i < 8; ++i) {
        out[8 + i] = static_cast<std::uint8_t>(h.seq >> (8U * (7 - i)));
    }
    return out;
}

/// Parse the first 16 bytes of `record`. Errors: truncated (fewer than 16 bytes), unsupported_version,
/// bad_field (reserved bytes not zero). The suite byte is returned as is; the caller judges it.
inline Result<RecordHeader> parse_header(ByteView record) {
    if (record.size() < record_header_size) {
        return Error{Errc::truncated, "record shorter than its 16-byte header"};
    }
    RecordHeader h;
    h.version = record[0];
    if (h.version != record_version) {
        return Error{Errc::unsupported_version, "record version is not 1"};
    }
    if (record[2] != 0 || record[3] != 0) {
        return Error{Errc::bad_field, "record header reserved bytes are not zero"};
    }
    h.suite = record[1];
    h.epoch = 0;
    for (std::size_t i = 0; i < 4; ++i) {
        h.epoch = (h.epoch << 8U) | record[4 + i];
    }
    h.seq = 0;
    for (std::size_t i = 0; i < 8; ++i) {
        h.seq = (h.seq << 8U) | record[8 + i];
    }
    return h;
}

}  // namespace sim::detail
