// The standard password hasher: bcrypt (passlib's bcrypt_sha256 v2 pre-hash), Argon2id (PHC strings), and
// verification of the seed's raw bcrypt hashes. See docs/accounts.md, "Password hashes".
#include "encoding.h"
#include "hasher_formats.h"
#include "rng_util.h"

#include <sim/auth.h>
#include <sim/crypto.h>

#include <charconv>
#include <string>

namespace sim::auth {
namespace detail {
namespace {

constexpr std::string_view bcrypt_sha256_prefix = "$bcrypt-sha256$v=2,t=2b,r=";
constexpr std::string_view argon2id_prefix = "$argon2id$v=19$m=";
constexpr std::size_t bcrypt_salt_chars = 22;
constexpr std::size_t bcrypt_digest_chars = 31;
constexpr std::size_t bcrypt_salt_bytes = 16;

/// A decimal number without sign, leading zeros or more than 10 digits.
std::optional<std::uint32_t> parse_decimal(std::string_view text) {
    if (text.empty() || text.size() > 10 || (text.size() > 1 && text.front() == '0')) {
        return std::nullopt;
    }
    std::uint64_t value = 0;
    for (const char c : text) {
        if (c < '0' || c > '9') {
            return std::nullopt;
        }
        value = value * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (value > 0xFFFFFFFFULL) {
        return std::nullopt;
    }
    return static_cast<std::uint32_t>(value);
}

/// Split off text up to (not including) `sep`; empty optional when `sep` is absent.
std::optional<std::string_view> take_until(std::string_view& rest, char sep) {
    const auto pos = rest.find(sep);
    if (pos == std::string_view::npos) {
        return std::nullopt;
    }
    const auto head = rest.substr(0, pos);
    rest.remove_prefix(pos + 1);
    return head;
}

std::string two_digits(unsigned v) {
    std::string s(2, '0');
    s[0] = static_cast<char>('0' + (v / 10) % 10);
    s[1] = static_cast<char>('0' + v % 10);
    return s;
}

/// base64(HMAC-SHA256(key = salt string, password)), the bcrypt input of bcrypt_sha256 v2 (44 characters).
SecureBytes bcrypt_sha256_key(std::string_view salt22, std::string_view password) {
    const auto mac = crypto::hmac_sha256(as_bytes(salt22), as_bytes(password));
    const auto text = base64_encode(mac, true);
    SecureBytes key(text.begin(), text.end());
    auto scratch = text;
    secure_zero(scratch.data(), scratch.size());
    return key;
}

std::string_view view(const SecureBytes& b) {
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace

std::optional<RawBcrypt> parse_raw_bcrypt(std::string_view s) {
    if (s.size() != 60 || s[0] != '$' || s[1] != '2' || (s[2] != 'a' && s[2] != 'b' && s[2] != 'y') || s[3] != '$' ||
        s[6] != '$') {
        return std::nullopt;
    }
    if (s[4] < '0' || s[4] > '9' || s[5] < '0' || s[5] > '9') {
        return std::nullopt;
    }
    const unsigned cost = static_cast<unsigned>((s[4] - '0') * 10 + (s[5] - '0'));
    // Alphabet only: old hashes in the wild may carry non-canonical padding bits in the salt; bcrypt decides.
    for (const char c : s.substr(7)) {
        if (!(c == '.' || c == '/' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            return std::nullopt;
        }
    }
    return RawBcrypt{cost};
}

std::optional<BcryptSha256> parse_bcrypt_sha256(std::string_view s) {
    if (s.substr(0, bcrypt_sha256_prefix.size()) != bcrypt_sha256_prefix) {
        return std::nullopt;
    }
    auto rest = s.substr(bcrypt_sha256_prefix.size());
    const auto rounds = take_until(rest, '$');
    if (!rounds) {
        return std::nullopt;
    }
    const auto cost = parse_decimal(*rounds);
    if (!cost || *cost > 31) {
        return std::nullopt;
    }
    const auto salt = take_until(rest, '$');
    if (!salt || salt->size() != bcrypt_salt_chars || rest.size() != bcrypt_digest_chars) {
        return std::nullopt;
    }
    const auto decoded = bcrypt64_decode(*salt);
    if (!decoded || decoded->size() != bcrypt_salt_bytes) {
        return std::nullopt;
    }
    for (const char c : rest) {
        if (!(c == '.' || c == '/' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            return std::nullopt;
        }
    }
    return BcryptSha256{*cost, std::string(*salt), std::string(rest)};
}

std::optional<Argon2Phc> parse_argon2id(std::string_view s) {
    if (s.substr(0, argon2id_prefix.size()) != argon2id_prefix) {
        return std::nullopt;
    }
    auto rest = s.substr(argon2id_prefix.size());
    const auto m = take_until(rest, ',');
    if (!m || rest.substr(0, 2) != "t=") {
        return std::nullopt;
    }
    rest.remove_prefix(2);
    const auto t = take_until(rest, ',');
    if (!t || rest.substr(0, 2) != "p=") {
        return std::nullopt;
    }
    rest.remove_prefix(2);
    const auto p = take_until(rest, '$');
    const auto salt = p ? take_until(rest, '$') : std::nullopt;
    if (!p || !salt) {
        return std::nullopt;
    }
    Argon2Phc out;
    const auto mv = parse_decimal(*m);
    const auto tv = parse_decimal(*t);
    const auto pv = parse_decimal(*p);
    auto saltv = base64_decode_unpadded(*salt);
    auto hashv = base64_decode_unpadded(rest);
    if (!mv || !tv || !pv || !saltv || !hashv) {
        return std::nullopt;
    }
    out.memory_kib = *mv;
    out.iterations = *tv;
    out.parallelism = *pv;
    out.salt = std::move(*saltv);
    out.hash = std::move(*hashv);
    return out;
}

}  // namespace detail

namespace {

using namespace detail;

class StandardHasher final : public PasswordHasher {
public:
    explicit StandardHasher(const HashPolicy& policy) : m_policy(policy) {}

    Result<std::string> hash(std::string_view password, Rng& rng) const override {
        SIM_TRY_STATUS(check_password(password));
        if (m_policy.algorithm == HashAlgorithm::argon2id) {
            return hash_argon2id(password, rng);
        }
        return hash_bcrypt_sha256(password, rng);
    }

    Result<bool> verify(std::string_view password, std::string_view stored) const override {
        if (const auto h = parse_bcrypt_sha256(stored)) {
            if (h->cost < 4 || h->cost > m_policy.limits.max_bcrypt_cost) {
                return Error{Errc::bad_hash, "bcrypt cost outside the allowed range"};
            }
            const auto key = bcrypt_sha256_key(h->salt, password);
            const std::string inner = "$2b$" + two_digits(h->cost) + "$" + h->salt + h->digest;
            return crypto::bcrypt_verify(view(key), inner);
        }
        if (const auto h = parse_argon2id(stored)) {
            const auto& lim = m_policy.limits;
            if (h->parallelism == 0 || h->parallelism > lim.max_argon2_parallelism || h->iterations == 0 ||
                h->iterations > lim.max_argon2_iterations || h->memory_kib < 8 * h->parallelism ||
                h->memory_kib > lim.max_argon2_memory_kib || h->salt.size() < 8 || h->salt.size() > 64 ||
                h->hash.size() < 4 || h->hash.size() > 64) {
                return Error{Errc::bad_hash, "Argon2id parameters outside the allowed range"};
            }
            SIM_TRY(const auto tag,
                    crypto::argon2id(password, h->salt, h->memory_kib, h->iterations, h->parallelism, h->hash.size()));
            return constant_time_equal(tag, h->hash);
        }
        if (const auto h = parse_raw_bcrypt(stored)) {
            if (h->cost < 4 || h->cost > m_policy.limits.max_bcrypt_cost) {
                return Error{Errc::bad_hash, "bcrypt cost outside the allowed range"};
            }
            // The seed's format: bcrypt reads at most 72 bytes of the password. Kept only so old accounts can
            // log in; a successful login re-hashes into the current construction (needs_rehash is true).
            return crypto::bcrypt_verify(password, stored);
        }
        return Error{Errc::bad_hash, "unsupported or malformed password hash"};
    }

    bool needs_rehash(std::string_view stored) const override {
        if (m_policy.algorithm == HashAlgorithm::bcrypt) {
            const auto h = parse_bcrypt_sha256(stored);
            return !h || h->cost != m_policy.bcrypt.cost;
        }
        const auto h = parse_argon2id(stored);
        const auto& a = m_policy.argon2;
        return !h || h->memory_kib != a.memory_kib || h->iterations != a.iterations ||
               h->parallelism != a.parallelism || h->salt.size() != a.salt_size || h->hash.size() != a.output_size;
    }

private:
    Result<std::string> hash_bcrypt_sha256(std::string_view password, Rng& rng) const {
        const auto salt_bytes = rng.bytes(bcrypt_salt_bytes);
        const auto salt22 = bcrypt64_encode(salt_bytes);
        const auto key = bcrypt_sha256_key(salt22, password);
        FixedRng fixed(salt_bytes);  // bcrypt_hash draws its 16-byte salt from this: the salt keyed into the HMAC
        SIM_TRY(const auto inner, crypto::bcrypt_hash(view(key), m_policy.bcrypt.cost, fixed));
        if (inner.size() != 60 || inner.compare(7, bcrypt_salt_chars, salt22) != 0) {
            return Error{Errc::internal, "bcrypt did not use the chosen salt"};
        }
        return std::string(bcrypt_sha256_prefix) + std::to_string(m_policy.bcrypt.cost) + "$" + salt22 + "$" +
               inner.substr(7 + bcrypt_salt_chars);
    }

    Result<std::string> hash_argon2id(std::string_view password, Rng& rng) const {
        const auto& a = m_policy.argon2;
        const auto salt = rng.bytes(a.salt_size);
        SIM_TRY(const auto tag,
                crypto::argon2id(password, salt, a.memory_kib, a.iterations, a.parallelism, a.output_size));
        return std::string(argon2id_prefix) + std::to_string(a.memory_kib) + ",t=" + std::to_string(a.iterations) +
               ",p=" + std::to_string(a.parallelism) + "$" + base64_encode(salt, false) + "$" +
               base64_encode(tag, false);
    }

    HashPolicy m_policy;
};

}  // namespace

Result<std::unique_ptr<PasswordHasher>> make_password_hasher(const HashPolicy& policy) {
    const auto& b = policy.bcrypt;
    const auto& a = policy.argon2;
    const auto& lim = policy.limits;
    if (b.cost < 4 || b.cost > 18) {
        return Error{Errc::invalid_argument, "bcrypt cost must be 4..18"};
    }
    if (a.parallelism < 1 || a.parallelism > 64 || a.iterations < 1 || a.iterations > 1000 ||
        a.memory_kib < 8 * a.parallelism || a.memory_kib > (4U << 20U) || a.salt_size < 8 || a.salt_size > 64 ||
        a.output_size < 16 || a.output_size > 64) {
        return Error{Errc::invalid_argument, "Argon2id parameters out of range"};
    }
    if (lim.max_bcrypt_cost > 18 || lim.max_bcrypt_cost < 4) {
        return Error{Errc::invalid_argument, "bcrypt verify limit must be 4..18"};
    }
    if ((policy.algorithm == HashAlgorithm::bcrypt && b.cost > lim.max_bcrypt_cost) ||
        (policy.algorithm == HashAlgorithm::argon2id &&
         (a.memory_kib > lim.max_argon2_memory_kib || a.iterations > lim.max_argon2_iterations ||
          a.parallelism > lim.max_argon2_parallelism))) {
        return Error{Errc::invalid_argument, "hash parameters exceed the verify limits (own hashes would not verify)"};
    }
    return std::unique_ptr<PasswordHasher>(std::make_unique<StandardHasher>(policy));
}

}  // namespace sim::auth
