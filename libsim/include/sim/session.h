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
    /// `key` must be suite_key_size(config.suite) bytes. `rng` and `clock` must outlive the session.
    static Result<SendSession> create(const SessionConfig& config, ByteView key, Rng& rng, const Clock& clock);
    SendSession(SendSession&&) noexcept;
    SendSession& operator=(SendSession&&) noexcept;
    ~SendSession();

    /// One record (header || sealed body). Rotates first when the policy says so.
    /// Errc::invalid_state after the session died, Errc::limit_reached when the sequence would wrap.
    Result<Bytes> seal(ByteView plaintext);
    /// Force a rotation now (e.g. when the application wants one).
    Status rotate();
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
    static Result<RecvSession> create(const SessionConfig& config, ByteView key, Rng& rng, const Clock& clock);
    RecvSession(RecvSession&&) noexcept;
    RecvSession& operator=(RecvSession&&) noexcept;
    ~RecvSession();

    /// The plaintext of one record. Errors: truncated, unsupported_version, suite_not_allowed (suite byte differs),
    /// bad_field, auth_failed, replayed, out_of_window, stale_epoch, epoch_too_far, key_expired, invalid_state.
    /// State (window, epoch) changes only after the record authenticated.
    Result<Bytes> open(ByteView record);
    [[nodiscard]] SessionStatus status() const noexcept;
    void close() noexcept;

private:
    struct Impl;
    explicit RecvSession(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> m_impl;
};

/// The key of the epoch after `key`: HKDF-Expand(key, "libsim v1 rotate", len(key)). One-way.
SecureBytes next_epoch_key(ByteView key);

}  // namespace sim
