#pragma once
// Base64 variants used by password hash strings. Private to libsim.

#include <sim/bytes.h>

#include <optional>
#include <string>
#include <string_view>

namespace sim::auth::detail {

/// RFC 4648 base64 with the standard alphabet; with `pad`, '=' padding.
std::string base64_encode(ByteView data, bool pad);
/// Decode standard base64 without padding (the PHC string format). Empty optional for any character outside the
/// alphabet, a length of 1 mod 4, or non-zero unused bits (only the canonical encoding is accepted).
std::optional<Bytes> base64_decode_unpadded(std::string_view text);

/// bcrypt's base64 ("./A-Za-z0-9", no padding).
std::string bcrypt64_encode(ByteView data);
/// Decode bcrypt base64; same strictness as base64_decode_unpadded.
std::optional<Bytes> bcrypt64_decode(std::string_view text);

}  // namespace sim::auth::detail
