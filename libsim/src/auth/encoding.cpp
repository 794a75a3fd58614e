#include "encoding.h"

#include <array>
#include <cstdint>

namespace sim::auth::detail {
namespace {

constexpr std::string_view std_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view bcrypt_alphabet = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

std::string encode(ByteView data, std::string_view alphabet, bool pad) {
    std::string out;
    out.reserve((data.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 3 <= data.size(); i += 3) {
        const std::uint32_t v = (std::uint32_t{data[i]} << 16U) | (std::uint32_t{data[i + 1]} << 8U) | data[i + 2];
        out.push_back(alphabet[(v >> 18U) & 63U]);
        out.push_back(alphabet[(v >> 12U) & 63U]);
        out.push_back(alphabet[(v >> 6U) & 63U]);
        out.push_back(alphabet[v & 63U]);
    }
    const std::size_t rest = data.size() - i;
    if (rest == 1) {
        const std::uint32_t v = std::uint32_t{data[i]} << 16U;
        out.push_back(alphabet[(v >> 18U) & 63U]);
        out.push_back(alphabet[(v >> 12U) & 63U]);
        if (pad) {
            out.append("==");
        }
    } else if (rest == 2) {
        const std::uint32_t v = (std::uint32_t{data[i]} << 16U) | (std::uint32_t{data[i + 1]} << 8U);
        out.push_back(alphabet[(v >> 18U) & 63U]);
        out.push_back(alphabet[(v >> 12U) & 63U]);
        out.push_back(alphabet[(v >> 6U) & 63U]);
        if (pad) {
            out.push_back('=');
        }
    }
    return out;
}

std::optional<Bytes> decode(std::string_view text, std::string_view alphabet) {
    std::array<int, 256> value{};
    value.fill(-1);
    for (std::size_t k = 0; k < alphabet.size(); ++k) {
        value[static_cast<unsigned char>(alphabet[k])] = static_cast<int>(k);
    }
    if (text.size() % 4 == 1) {
        return std::nullopt;
    }
    Bytes out;
    out.reserve(text.size() * 3 / 4);
    std::uint32_t acc = 0;
    unsigned bits = 0;
    for (const char c : text) {
        const int v = value[static_cast<unsigned char>(c)];
        if (v < 0) {
            return std::nullopt;
        }
        acc = (acc << 6U) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xFFU));
        }
    }
    // Leftover bits must be zero, so each byte string has exactly one accepted encoding.
    if ((acc & ((1U << bits) - 1U)) != 0) {
        return std::nullopt;
    }
    return out;
}

}  // namespace

std::string base64_encode(ByteView data, bool pad) {
    return encode(data, std_alphabet, pad);
}

std::optional<Bytes> base64_decode_unpadded(std::string_view text) {
    return decode(text, std_alphabet);
}

std::string bcrypt64_encode(ByteView data) {
    return encode(data, bcrypt_alphabet, false);
}

std::optional<Bytes> bcrypt64_decode(std::string_view text) {
    return decode(text, bcrypt_alphabet);
}

}  // namespace sim::auth::detail
