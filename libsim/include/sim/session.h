#pragma once
/// @file
/// Record sessions: one per direction, sealing and opening records with sequence numbers, a replay window and key
/// rotation. The same types serve the client-server channel and the client-client conversation channel.

#include <sim/bytes.h>
#include <sim/clock.h>
#include <sim/error.h>
#include <sim/rng.h>
#include <sim/suite.h>

#include <chrono>
#include <cstdint>
#include <memory>

namespace sim {

/// When the key of a session is replaced (the seed: every 30 seconds).
struct RotationPolicy {
    /// Rotate when the current key is this old (checked at every seal and open). Zero disables time rotation.
    Duration interval = std::chrono::seconds(30);
    /// Rotate after this many records under one key (0 = no limit).
    std::uint64_t max_records = 1U << 20U;
    /// Rotate after this many plaintext bytes under one key (0 = no limit). TDES is capped far lower (Sweet32).
    std::uint64_t max_bytes = 1ULL << 32U;
    /// A receiver follows at most this many epochs ahead of its own in one step.
    std::uint32_t max_skipped_epochs = 8;
    /// A receiver refuses records under a key older than interval + grace (the sender failed to rotate).
    Duration grace = std::chrono::seconds(30);
};

struct SessionConfig {
    SuiteId suite = SuiteId::aes256_gcm;
    RotationPolicy rotation{};
    /// Records accepted out of order within this many sequence numbers behind the newest (0 = strictly in order).
    std::uint32_t replay_window = 64;
    /// After any failed open the session is dead and its keys are wiped (the client-server channel).
    bool fail_closed = true;
};

/// Size of the record header in bytes (version, suite, reserved, epoch, sequence).
inline constexpr std::size_t record_header_size = 16;

/// Largest SessionConfig::replay_window accepted by create() (the window costs replay_window / 8 bytes).
inline constexpr std::uint32_t max_replay_window = 1U << 16U;

/// Largest RotationPolicy::max_skipped_epochs accepted by create(): following k epochs costs k HKDF calls, which a
/// forged header can trigger, so k stays small.
inline constexpr std::uint32_t max_epoch_skip = 1024;

/// Information a caller may show or log (never key material).
struct SessionStatus {
    SuiteId suite;
    std::uint32_t epoch;
    std::uint64_t next_seq;
    bool dead;
};

/// Seals records in one direction.
class SendSession {
public:
    /// Start at epoch 0, sequence 0. `key` must be suite_key_size(config.suite) bytes (else Errc::invalid_key).
    /// `rng` and `clock` must outlive the session. Errc::suite_not_allowed for an unknown suite,
    /// Errc::invalid_argument for a replay_window above max_replay_window, max_skipped_epochs above max_epoch_skip,
    /// or a negative interval or grace.
    static Result<SendSession> create(const SessionConfig& config, ByteView key, Rng& rng, const Clock& clock);
    SendSession(SendSession&&) noexcept;
    SendSession& operator=(SendSession&&) noexcept;
    ~SendSession();

    /// One record (header || sealed body). Rotates first when the policy says so: the key is `interval` old, or
    /// `max_records` records were sealed under it, or this plaintext would take the key past `max_bytes` plaintext
    /// bytes (for TDES also past tdes_max_bytes_per_key of padded ciphertext).
    /// Errc::invalid_state after the session died; Errc::invalid_argument (session stays usable) when the plaintext
    /// alone exceeds the per-key byte limit; Errc::limit_reached when the sequence number or the epoch would wrap
    /// (the session then dies: it can never seal again).
    Result<Bytes> seal(ByteView plaintext);
    /// The same record as seal(), appended to `out` (e.g. a reused buffer or a frame being built), so the caller
    /// decides where the bytes live and nothing else is allocated. Same errors as seal(); on error `out` is left as
    /// it was.
    Status seal_into(ByteView plaintext, Bytes& out);
    /// Upper bound of the bytes seal() adds to a plaintext of `plaintext_size` bytes (header and suite overhead),
    /// for sizing a buffer.
    [[nodiscard]] std::size_t max_record_size(std::size_t plaintext_size) const noexcept;
    /// Force a rotation now (e.g. when the application wants one). Errc::invalid_state after the session died,
    /// Errc::limit_reached (session dies) when the epoch would wrap.
    Status rotate();
    /// Suite, current epoch, the sequence number the next record will carry, whether the session is dead.
    [[nodiscard]] SessionStatus status() const noexcept;
    /// Wipe keys; later calls fail with Errc::invalid_state.
    void close() noexcept;

private:
    struct Impl;
    explicit SendSession(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

/// Opens records in one direction.
class RecvSession {
public:
    /// Start at epoch 0 with nothing seen; same arguments and errors as SendSession::create. `rng` is unused by the
    /// current suites but kept so both directions are built alike.
    static Result<RecvSession> create(const SessionConfig& config, ByteView key, Rng& rng, const Clock& clock);
    RecvSession(RecvSession&&) noexcept;
    RecvSession& operator=(RecvSession&&) noexcept;
    ~RecvSession();

    /// The plaintext of one record. Errors: truncated, unsupported_version, suite_not_allowed (suite byte differs),
    /// bad_field (reserved bytes set, or sequence number 2^64-1), auth_failed, replayed, out_of_window, stale_epoch,
    /// epoch_too_far, key_expired, invalid_state (session dead).
    /// State (window, epoch) changes only after the record authenticated. With config.fail_closed any error kills
    /// the session and wipes its key; otherwise only that record is rejected.
    Result<Bytes> open(ByteView record);
    /// Suite, current epoch, the sequence number after the highest accepted, whether the session is dead.
    [[nodiscard]] SessionStatus status() const noexcept;
    /// Wipe keys; later calls fail with Errc::invalid_state.
    void close() noexcept;

private:
    struct Impl;
    explicit RecvSession(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

/// The key of the epoch after `key`: HKDF-Expand(HKDF-Extract(salt = empty, key), "libsim v1 rotate", len(key)),
/// with SHA-256. One-way: knowing it does not reveal `key`. Returns an empty buffer when `key` is longer than
/// 255 * 32 bytes (HKDF's output limit); session keys are 24 or 32 bytes.
SecureBytes next_epoch_key(ByteView key);

}  // namespace sim
