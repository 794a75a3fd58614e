// Record sessions: sequence numbers, replay window, key epochs and rotation (docs/protocol.md section 4).
#include <sim/crypto.h>
#include <sim/session.h>

#include "record_header.h"
#include "replay_window.h"

#include <limits>

namespace sim {

namespace {

// The key of one epoch and the cipher keyed from it. Moving it moves the secrets; reset() wipes them.
struct EpochState {
    SecureBytes key;
    std::unique_ptr<RecordCipher> cipher;
    std::uint32_t epoch = 0;
    TimePoint start{};

    void reset() noexcept {
        cipher.reset();
        SecureBytes().swap(key);  // the zeroizing allocator wipes the released buffer
    }
};

Status validate(const SessionConfig& cfg, ByteView key) {
    if (!suite_from_wire(static_cast<std::uint8_t>(cfg.suite))) {
        return Error{Errc::suite_not_allowed, "unknown suite id"};
    }
    if (key.size() != suite_key_size(cfg.suite)) {
        return Error{Errc::invalid_key, "session key has the wrong size for the suite"};
    }
    if (cfg.replay_window > max_replay_window) {
        return Error{Errc::invalid_argument, "replay window larger than max_replay_window"};
    }
    if (cfg.rotation.max_skipped_epochs > max_epoch_skip) {
        return Error{Errc::invalid_argument, "max_skipped_epochs larger than max_epoch_skip"};
    }
    if (cfg.rotation.interval < Duration::zero() || cfg.rotation.grace < Duration::zero()) {
        return Error{Errc::invalid_argument, "rotation interval and grace must not be negative"};
    }
    return ok();
}

Result<EpochState> make_epoch(SuiteId suite, SecureBytes key, std::uint32_t epoch, TimePoint start, Rng& rng) {
    SIM_TRY(auto cipher, make_record_cipher(suite, key, rng));
    EpochState st;
    st.key = std::move(key);
    st.cipher = std::move(cipher);
    st.epoch = epoch;
    st.start = start;
    return st;
}

// Number of TDES blocks (PKCS#7 always adds 1..8 bytes) a plaintext of `len` bytes turns into.
std::uint64_t tdes_blocks(std::uint64_t len) noexcept {
    return len / crypto::tdes_block_size + 1;
}

}  // namespace

SecureBytes next_epoch_key(ByteView key) {
    const auto prk = crypto::hkdf_sha256_extract({}, key);
    auto next = crypto::hkdf_sha256_expand(prk, as_bytes(detail::label_rotate), key.size());
    if (!next) {
        return {};
    }
    return std::move(next).value();
}

// ================================================================ SendSession

struct SendSession::Impl {
    SessionConfig cfg;
    Rng* rng = nullptr;
    const Clock* clock = nullptr;
    EpochState cur;
    std::uint64_t next_seq = 0;
    std::uint64_t records_under_key = 0;
    std::uint64_t bytes_under_key = 0;   // plaintext bytes, for RotationPolicy::max_bytes
    std::uint64_t blocks_under_key = 0;  // TDES blocks, for the Sweet32 cap
    bool dead = false;

    void kill() noexcept {
        dead = true;
        cur.reset();
    }

    [[nodiscard]] bool is_tdes() const noexcept { return cfg.suite == SuiteId::tdes_cbc_hmac_sha256; }

    // Can a fresh key take this plaintext at all?
    [[nodiscard]] bool fits_one_key(std::uint64_t len) const noexcept {
        if (cfg.rotation.max_bytes != 0 && len > cfg.rotation.max_bytes) {
            return false;
        }
        return !is_tdes() || tdes_blocks(len) <= detail::tdes_max_blocks_per_key;
    }

    [[nodiscard]] bool rotation_due(std::uint64_t len) const {
        const auto& rot = cfg.rotation;
        if (rot.interval > Duration::zero() && clock->now() - cur.start >= rot.interval) {
            return true;
        }
        if (rot.max_records != 0 && records_under_key >= rot.max_records) {
            return true;
        }
        // Rotate before a record that would take the key past a byte limit. The counters never exceed their limits
        // (we rotate first), so the subtractions cannot wrap.
        if (rot.max_bytes != 0 && len > rot.max_bytes - bytes_under_key) {
            return true;
        }
        return is_tdes() && tdes_blocks(len) > detail::tdes_max_blocks_per_key - blocks_under_key;
    }

    Status rotate() {
        if (cur.epoch == std::numeric_limits<std::uint32_t>::max()) {
            kill();
            return Error{Errc::limit_reached, "key epoch would wrap"};
        }
        auto next = make_epoch(cfg.suite, next_epoch_key(cur.key), cur.epoch + 1, clock->now(), *rng);
        if (!next) {
            kill();
            return Error{Errc::internal, "could not key the next epoch"};
        }
        cur.reset();
        cur = std::move(next).value();
        records_under_key = 0;
        bytes_under_key = 0;
        blocks_under_key = 0;
        return ok();
    }

    Status seal_into(ByteView plaintext, Bytes& out) {
        if (next_seq == std::numeric_limits<std::uint64_t>::max()) {
            kill();
            return Error{Errc::limit_reached, "record sequence number would wrap"};
        }
        const std::uint64_t len = plaintext.size();
        if (!fits_one_key(len)) {
            return Error{Errc::invalid_argument, "plaintext larger than the per-key byte limit"};
        }
        if (rotation_due(len)) {
            SIM_TRY_STATUS(rotate());
        }
        const auto header =
            detail::encode_header({detail::record_version, static_cast<std::uint8_t>(cfg.suite), cur.epoch, next_seq});
        const std::size_t start = out.size();
        out.reserve(start + header.size() + plaintext.size() + cur.cipher->max_overhead());
        out.insert(out.end(), header.begin(), header.end());
        if (auto st = cur.cipher->seal(header, next_seq, plaintext, out); !st) {
            out.resize(start);
            kill();
            return Error{Errc::internal, "record cipher failed to seal"};
        }
        ++next_seq;
        ++records_under_key;
        bytes_under_key += len;
        if (is_tdes()) {
            blocks_under_key += tdes_blocks(len);
        }
        return ok();
    }
};

SendSession::SendSession(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
SendSession::SendSession(SendSession&&) noexcept = default;
SendSession& SendSession::operator=(SendSession&&) noexcept = default;
SendSession::~SendSession() = default;

Result<SendSession> SendSession::create(const SessionConfig& config, ByteView key, Rng& rng, const Clock& clock) {
    SIM_TRY_STATUS(validate(config, key));
    auto impl = std::make_unique<Impl>();
    impl->cfg = config;
    impl->rng = &rng;
    impl->clock = &clock;
    SIM_TRY(impl->cur, make_epoch(config.suite, to_bytes<SecureBytes>(key), 0, clock.now(), rng));
    return SendSession(std::move(impl));
}

Result<Bytes> SendSession::seal(ByteView plaintext) {
    Bytes out;
    SIM_TRY_STATUS(seal_into(plaintext, out));
    return out;
}

Status SendSession::seal_into(ByteView plaintext, Bytes& out) {
    if (!m_impl || m_impl->dead) {
        return Error{Errc::invalid_state, "send session is closed"};
    }
    return m_impl->seal_into(plaintext, out);
}

std::size_t SendSession::max_record_size(std::size_t plaintext_size) const noexcept {
    if (!m_impl || !m_impl->cur.cipher) {
        return record_header_size + plaintext_size;
    }
    return record_header_size + plaintext_size + m_impl->cur.cipher->max_overhead();
}

Status SendSession::rotate() {
    if (!m_impl || m_impl->dead) {
        return Error{Errc::invalid_state, "send session is closed"};
    }
    return m_impl->rotate();
}

SessionStatus SendSession::status() const noexcept {
    if (!m_impl) {
        return {SuiteId::aes256_gcm, 0, 0, true};
    }
    return {m_impl->cfg.suite, m_impl->cur.epoch, m_impl->next_seq, m_impl->dead};
}

void SendSession::close() noexcept {
    if (m_impl) {
        m_impl->kill();
    }
}

// ================================================================ RecvSession

struct RecvSession::Impl {
    explicit Impl(const SessionConfig& c) : cfg(c), window(c.replay_window) {}

    SessionConfig cfg;
    Rng* rng = nullptr;
    const Clock* clock = nullptr;
    EpochState cur;
    detail::ReplayWindow window;
    bool dead = false;

    void kill() noexcept {
        dead = true;
        cur.reset();
    }

    Result<Bytes> open(ByteView record) {
        SIM_TRY(const auto hdr, detail::parse_header(record));
        if (hdr.suite != static_cast<std::uint8_t>(cfg.suite)) {
            return Error{Errc::suite_not_allowed, "record suite differs from the session's"};
        }
        if (hdr.seq == std::numeric_limits<std::uint64_t>::max()) {
            return Error{Errc::bad_field, "record sequence number 2^64-1 is never used"};
        }
        if (hdr.epoch < cur.epoch) {
            return Error{Errc::stale_epoch, "record key epoch was rotated away"};
        }
        const std::uint32_t ahead = hdr.epoch - cur.epoch;
        if (ahead > cfg.rotation.max_skipped_epochs) {
            return Error{Errc::epoch_too_far, "record key epoch too far ahead"};
        }
        const auto now = clock->now();
        const auto& rot = cfg.rotation;
        if (ahead == 0 && rot.interval > Duration::zero() && now - cur.start > rot.interval + rot.grace) {
            return Error{Errc::key_expired, "peer kept using a key past interval + grace"};
        }
        // Cheap rejection before any cryptography (RFC 4303 s3.4.3); the window itself moves only below.
        SIM_TRY_STATUS(window.check(hdr.seq));

        const auto header = record.first(record_header_size);
        const auto body = record.subspan(record_header_size);
        if (ahead == 0) {
            SIM_TRY(auto pt, cur.cipher->open(header, hdr.seq, body));
            window.accept(hdr.seq);
            return pt;
        }
        // The peer rotated: derive the candidate key forward and commit it only if the record authenticates.
        SecureBytes key = next_epoch_key(cur.key);
        for (std::uint32_t i = 1; i < ahead; ++i) {
            key = next_epoch_key(key);  // the replaced buffer is wiped by its allocator
        }
        auto candidate = make_epoch(cfg.suite, std::move(key), hdr.epoch, now, *rng);
        if (!candidate) {
            return Error{Errc::internal, "could not key a later epoch"};
        }
        SIM_TRY(auto pt, candidate->cipher->open(header, hdr.seq, body));
        cur.reset();
        cur = std::move(candidate).value();
        window.accept(hdr.seq);
        return pt;
    }
};

RecvSession::RecvSession(std::unique_ptr<Impl> impl) : m_impl(std::move(impl)) {}
RecvSession::RecvSession(RecvSession&&) noexcept = default;
RecvSession& RecvSession::operator=(RecvSession&&) noexcept = default;
RecvSession::~RecvSession() = default;

Result<RecvSession> RecvSession::create(const SessionConfig& config, ByteView key, Rng& rng, const Clock& clock) {
    SIM_TRY_STATUS(validate(config, key));
    auto impl = std::make_unique<Impl>(config);
    impl->rng = &rng;
    impl->clock = &clock;
    SIM_TRY(impl->cur, make_epoch(config.suite, to_bytes<SecureBytes>(key), 0, clock.now(), rng));
    return RecvSession(std::move(impl));
}

Result<Bytes> RecvSession::open(ByteView record) {
    if (!m_impl || m_impl->dead) {
        return Error{Errc::invalid_state, "receive session is closed"};
    }
    auto pt = m_impl->open(record);
    if (!pt && m_impl->cfg.fail_closed) {
        m_impl->kill();
    }
    return pt;
}

SessionStatus RecvSession::status() const noexcept {
    if (!m_impl) {
        return {SuiteId::aes256_gcm, 0, 0, true};
    }
    return {m_impl->cfg.suite, m_impl->cur.epoch, m_impl->window.next(), m_impl->dead};
}

void RecvSession::close() noexcept {
    if (m_impl) {
        m_impl->kill();
    }
}

}  // namespace sim
