// bcrypt and Argon2id over Botan.
#include "botan_rng.h"

#include <sim/crypto.h>

#include <botan/argon2.h>
#include <botan/bcrypt.h>
#include <botan/exceptn.h>

#include <exception>

namespace sim::crypto {

Result<std::string> bcrypt_hash(std::string_view password, unsigned work_factor, Rng& rng) {
    // Botan 2 refuses work factors above 18 (about 15 s per hash on a 4 GHz core).
    if (work_factor < 4 || work_factor > 18) {
        return Error{Errc::invalid_argument, "bcrypt work factor must be 4..18"};
    }
    if (password.find('\0') != std::string_view::npos) {
        return Error{Errc::bad_password, "bcrypt input contains a NUL byte"};
    }
    detail::BotanRngAdapter adapter(rng);
    std::string input(password);
    try {
        auto hash = Botan::generate_bcrypt(input, adapter, static_cast<std::uint16_t>(work_factor), 'b');
        secure_zero(input.data(), input.size());
        return hash;
    } catch (const std::exception&) {
        secure_zero(input.data(), input.size());
        return Error{Errc::invalid_argument, "bcrypt rejected its parameters"};
    }
}

Result<bool> bcrypt_verify(std::string_view password, std::string_view hash) {
    if (hash.size() != 60 || hash[0] != '$' || hash[1] != '2' || hash[3] != '$') {
        return Error{Errc::bad_hash, "not a bcrypt hash string"};
    }
    // Botan would hash an embedded NUL where C implementations stop at it: refuse rather than disagree.
    if (password.find('\0') != std::string_view::npos) {
        return Error{Errc::bad_password, "bcrypt input contains a NUL byte"};
    }
    std::string input(password);
    Result<bool> result = false;
    try {
        // Botan throws for a cost outside 4..18 or a non-numeric cost, and returns false for other damage.
        result = Botan::check_bcrypt(input, std::string(hash));
    } catch (const std::exception&) {
        result = Error{Errc::bad_hash, "bcrypt hash string could not be parsed"};
    }
    secure_zero(input.data(), input.size());
    return result;
}

Result<SecureBytes> argon2id(std::string_view password, ByteView salt, std::size_t memory_kib, std::size_t iterations,
                             std::size_t parallelism, std::size_t out_len) {
    if (parallelism == 0 || iterations == 0 || memory_kib < 8 * parallelism || out_len < 4 || salt.size() < 8) {
        return Error{Errc::invalid_argument, "Argon2id parameters out of range"};
    }
    SecureBytes out(out_len);
    try {
        Botan::argon2(out.data(), out.size(), password.data(), password.size(), salt.data(), salt.size(), nullptr, 0,
                      nullptr, 0, 2, parallelism, memory_kib, iterations);
    } catch (const std::exception&) {
        return Error{Errc::invalid_argument, "Argon2id parameters rejected"};
    }
    return out;
}

}  // namespace sim::crypto
