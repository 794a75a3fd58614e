#pragma once
// Parsers of the password hash string formats the standard hasher understands. Private to libsim (tests reach
// them through the public hasher).

#include <sim/bytes.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sim::auth::detail {

/// `$2a$`/`$2b$`/`$2y$` + two-digit cost + 53 characters of bcrypt base64.
struct RawBcrypt {
    unsigned cost = 0;
};
std::optional<RawBcrypt> parse_raw_bcrypt(std::string_view s);

/// passlib bcrypt_sha256 v2: `$bcrypt-sha256$v=2,t=2b,r=COST$SALT22$DIGEST31` (cost without leading zeros).
struct BcryptSha256 {
    unsigned cost = 0;
    std::string salt;    ///< 22 characters, canonical
    std::string digest;  ///< 31 characters
};
std::optional<BcryptSha256> parse_bcrypt_sha256(std::string_view s);

/// PHC Argon2id: `$argon2id$v=19$m=M,t=T,p=P$SALT$HASH` (standard base64 without padding).
struct Argon2Phc {
    std::uint32_t memory_kib = 0;
    std::uint32_t iterations = 0;
    std::uint32_t parallelism = 0;
    Bytes salt;
    Bytes hash;
};
std::optional<Argon2Phc> parse_argon2id(std::string_view s);

}  // namespace sim::auth::detail
