#pragma once
/// @file
/// Record cipher suites, created by id through a factory and allowed by a policy.

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace sim {

/// Wire ids of the record suites (one byte; values are stable).
enum class SuiteId : std::uint8_t {
    tdes_cbc_hmac_sha256 = 1,  ///< the seed's Triple-DES: 3-key TDES-CBC, random IV, encrypt-then-MAC HMAC-SHA256
    aes256_gcm = 2,            ///< AES-256-GCM
    chacha20_poly1305 = 3,     ///< ChaCha20-Poly1305 (RFC 8439)
};

/// "TDES-CBC-HMAC-SHA256", "AES-256-GCM", "ChaCha20-Poly1305".
std::string_view suite_name(SuiteId id) noexcept;
/// Parse a suite name (case-insensitive) or its numeric id.
std::optional<SuiteId> suite_from_name(std::string_view name) noexcept;
/// Parse a wire byte; nullopt for an unknown id.
std::optional<SuiteId> suite_from_wire(std::uint8_t id) noexcept;
/// Size of a conversation/session key for the suite: 24 for TDES (the seed's 24-byte key), 32 for the AEADs.
std::size_t suite_key_size(SuiteId id) noexcept;

/// Hard cap on TDES ciphertext under one key: 2^26 bytes (2^23 64-bit blocks, counting PKCS#7 padding), whatever
/// the RotationPolicy says. Keeps the Sweet32 block-collision probability per key below 2^-19 (docs/protocol.md s4.6).
inline constexpr std::uint64_t tdes_max_bytes_per_key = 1ULL << 26U;

/// Which suites may be used, in order of preference.
class SuitePolicy {
public:
    /// AES-256-GCM, ChaCha20-Poly1305, then TDES: everything allowed, an AEAD preferred.
    static SuitePolicy default_policy();
    /// Only TDES (the seed's system).
    static SuitePolicy require_tdes();
    /// The default without TDES.
    static SuitePolicy forbid_tdes();
    /// An explicit preference list (duplicates are dropped). Errc::invalid_argument when empty,
    /// Errc::suite_not_allowed when it holds a value that is not a known SuiteId.
    static Result<SuitePolicy> from_list(std::span<const SuiteId> preference);

    [[nodiscard]] bool allows(SuiteId id) const noexcept;
    /// Our preference list, as offered to a peer.
    [[nodiscard]] std::span<const SuiteId> preference() const noexcept { return m_pref; }
    /// The responder's choice: the first suite in *our* preference that the peer also offers.
    /// Errc::no_common_suite when the offers do not intersect.
    [[nodiscard]] Result<SuiteId> choose(std::span<const SuiteId> peer_offer) const;

private:
    explicit SuitePolicy(std::vector<SuiteId> pref) : m_pref(std::move(pref)) {}
    std::vector<SuiteId> m_pref;
};

/// One suite keyed for one key epoch: seals and opens record bodies.
///
/// The header (authenticated, not encrypted) and a 64-bit sequence number come from the session, which guarantees
/// that a (key, sequence) pair is never used twice.
class RecordCipher {
public:
    virtual ~RecordCipher() = default;
    [[nodiscard]] virtual SuiteId id() const noexcept = 0;
    /// Append the sealed body for `plaintext` to `out`.
    virtual Status seal(ByteView header, std::uint64_t seq, ByteView plaintext, Bytes& out) = 0;
    /// The plaintext of `body`, or Errc::auth_failed (nothing is released on failure); Errc::truncated when `body`
    /// is shorter than the suite's minimum (tag; for TDES IV + one block + MAC).
    virtual Result<Bytes> open(ByteView header, std::uint64_t seq, ByteView body) = 0;
    /// Largest number of bytes `seal` adds to a plaintext.
    [[nodiscard]] virtual std::size_t max_overhead() const noexcept = 0;
};

/// Create suite `id` keyed with `key` (suite_key_size(id) bytes, else Errc::invalid_key; Errc::suite_not_allowed
/// for a value that is not a known SuiteId).
/// Sub-keys are derived with HKDF-SHA256 (see docs/protocol.md). `rng` supplies TDES IVs and must outlive the cipher.
Result<std::unique_ptr<RecordCipher>> make_record_cipher(SuiteId id, ByteView key, Rng& rng);

}  // namespace sim
