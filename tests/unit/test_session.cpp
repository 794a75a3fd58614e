// Record sessions: sequence numbers, replay window, key epochs, rotation, fail-closed (docs/protocol.md section 4).
// Time is a ManualClock and randomness a deterministic RNG: nothing sleeps, every run is the same.
#include <sim/crypto.h>
#include <sim/session.h>
#include <sim/suite.h>

#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

namespace {

using namespace std::chrono_literals;
using sim::Bytes;
using sim::ByteView;
using sim::Errc;
using sim::RecvSession;
using sim::SendSession;
using sim::SessionConfig;
using sim::SuiteId;

constexpr std::array<SuiteId, 3> all_suites{SuiteId::tdes_cbc_hmac_sha256, SuiteId::aes256_gcm,
                                            SuiteId::chacha20_poly1305};

Bytes pattern(std::size_t n, std::uint8_t seed) {
    Bytes b(n);
    for (std::size_t i = 0; i < n; ++i) {
        b[i] = static_cast<std::uint8_t>(seed + i * 131U);
    }
    return b;
}

std::unique_ptr<sim::Rng> test_rng(std::uint8_t seed = 1) {
    const std::array<std::uint8_t, 32> s{seed};
    return sim::make_deterministic_rng(s);
}

template <typename T>
T must(sim::Result<T> r) {
    REQUIRE_MESSAGE(r.has_value(), r.error().message());
    return std::move(r).value();
}

SessionConfig config(SuiteId suite) {
    SessionConfig c;
    c.suite = suite;
    return c;
}

std::uint32_t epoch_of(ByteView record) {
    return (std::uint32_t{record[4]} << 24U) | (std::uint32_t{record[5]} << 16U) | (std::uint32_t{record[6]} << 8U) |
           std::uint32_t{record[7]};
}

std::uint64_t seq_of(ByteView record) {
    std::uint64_t s = 0;
    for (std::size_t i = 8; i < 16; ++i) {
        s = (s << 8U) | record[i];
    }
    return s;
}

void set_seq(Bytes& record, std::uint64_t seq) {
    for (std::size_t i = 0; i < 8; ++i) {
        record[8 + i] = static_cast<std::uint8_t>(seq >> (8U * (7 - i)));
    }
}

void set_epoch(Bytes& record, std::uint32_t epoch) {
    for (std::size_t i = 0; i < 4; ++i) {
        record[4 + i] = static_cast<std::uint8_t>(epoch >> (8U * (3 - i)));
    }
}

// A sender and a receiver sharing one key and one clock. Not movable: the sessions point at the clock and RNG.
struct Link {
    explicit Link(const SessionConfig& send_cfg, const SessionConfig& recv_cfg)
        : key(pattern(sim::suite_key_size(send_cfg.suite), 0x5A)),
          tx(must(SendSession::create(send_cfg, key, *rng, clock))),
          rx(must(RecvSession::create(recv_cfg, key, *rng, clock))) {}
    explicit Link(const SessionConfig& cfg) : Link(cfg, cfg) {}
    Link(const Link&) = delete;
    Link& operator=(const Link&) = delete;

    Bytes seal(ByteView pt) { return must(tx.seal(pt)); }
    Bytes seal_n(std::size_t n) { return seal(pattern(n, static_cast<std::uint8_t>(n))); }

    sim::ManualClock clock;
    std::unique_ptr<sim::Rng> rng = test_rng();
    Bytes key;
    SendSession tx;
    RecvSession rx;
};

}  // namespace

TEST_CASE("records round-trip for every suite and size") {
    for (const auto suite : all_suites) {
        CAPTURE(sim::suite_name(suite));
        Link link(config(suite));
        std::uint64_t seq = 0;
        for (const std::size_t n : {0U, 1U, 7U, 8U, 9U, 1000U, 65536U}) {
            CAPTURE(n);
            const auto pt = pattern(n, static_cast<std::uint8_t>(n + 1));
            const auto rec = link.seal(pt);
            REQUIRE(rec.size() >= sim::record_header_size);
            CHECK(rec[0] == 1);
            CHECK(rec[1] == static_cast<std::uint8_t>(suite));
            CHECK(rec[2] == 0);
            CHECK(rec[3] == 0);
            CHECK(epoch_of(rec) == 0);
            CHECK(seq_of(rec) == seq);
            CHECK(link.tx.status().next_seq == seq + 1);
            const auto back = link.rx.open(rec);
            REQUIRE_MESSAGE(back.has_value(), back.error().message());
            CHECK(*back == pt);
            CHECK(link.rx.status().next_seq == seq + 1);
            ++seq;
        }
        CHECK_FALSE(link.tx.status().dead);
        CHECK_FALSE(link.rx.status().dead);
        CHECK(link.rx.status().suite == suite);
    }
}

TEST_CASE("a record matches the documented construction, also after a rotation") {
    Link link(config(SuiteId::chacha20_poly1305));
    const auto pt = pattern(33, 1);
    REQUIRE(link.tx.rotate().has_value());
    const auto rec = link.seal(pt);

    const Bytes header(rec.begin(), rec.begin() + 16);
    CHECK(header == Bytes{1, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0});
    // epoch 1 key = HKDF-Expand(HKDF-Extract(0, K), "libsim v1 rotate", 32); AEAD key from it the same way.
    const auto k1 = sim::crypto::hkdf_sha256({}, link.key, sim::as_bytes("libsim v1 rotate"), 32);
    REQUIRE(k1.has_value());
    CHECK(sim::next_epoch_key(link.key) == *k1);
    const auto aead_key = sim::crypto::hkdf_sha256({}, *k1, sim::as_bytes("libsim v1 aead key"), 32);
    REQUIRE(aead_key.has_value());
    auto aead = must(sim::crypto::make_aead(sim::crypto::AeadAlgorithm::chacha20_poly1305, *aead_key));
    const Bytes nonce(12, 0);
    const auto body = must(aead->seal(nonce, header, pt));
    CHECK(Bytes(rec.begin() + 16, rec.end()) == body);
}

TEST_CASE("any bit flip is rejected and leaves the receiver usable") {
    for (const auto suite : all_suites) {
        CAPTURE(sim::suite_name(suite));
        auto cfg = config(suite);
        cfg.fail_closed = false;
        Link link(cfg);
        const auto rec = link.seal_n(9);
        for (std::size_t bit = 0; bit < rec.size() * 8; ++bit) {
            CAPTURE(bit);
            auto bad = rec;
            bad[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
            const auto r = link.rx.open(bad);
            REQUIRE_FALSE(r.has_value());
            const std::size_t byte = bit / 8;
            if (byte == 0) {
                CHECK(r.code() == Errc::unsupported_version);
            } else if (byte == 1) {
                CHECK(r.code() == Errc::suite_not_allowed);
            } else if (byte == 2 || byte == 3) {
                CHECK(r.code() == Errc::bad_field);
            } else if (byte < 8) {
                // A small epoch step is tried (and fails to authenticate); a large one is refused outright.
                const bool small = epoch_of(bad) <= cfg.rotation.max_skipped_epochs;
                CHECK(r.code() == (small ? Errc::auth_failed : Errc::epoch_too_far));
            } else {
                CHECK(r.code() == Errc::auth_failed);
            }
            CHECK(link.rx.status().epoch == 0);
            CHECK(link.rx.status().next_seq == 0);
        }
        CHECK(link.rx.open(rec).value() == pattern(9, 9));
    }
}

TEST_CASE("truncated records are rejected") {
    for (const auto suite : all_suites) {
        CAPTURE(sim::suite_name(suite));
        auto cfg = config(suite);
        cfg.fail_closed = false;
        Link link(cfg);
        const auto rec = link.seal_n(20);
        for (std::size_t len = 0; len < rec.size(); ++len) {
            CAPTURE(len);
            const auto r = link.rx.open(ByteView{rec}.first(len));
            REQUIRE_FALSE(r.has_value());
            if (len < sim::record_header_size) {
                CHECK(r.code() == Errc::truncated);
            } else {
                CHECK((r.code() == Errc::truncated || r.code() == Errc::auth_failed));
            }
        }
        CHECK(link.rx.open(ByteView{rec}.first(sim::record_header_size)).code() == Errc::truncated);
        CHECK(link.rx.open(rec).has_value());
    }
}

TEST_CASE("header fields outside their allowed values") {
    auto cfg = config(SuiteId::aes256_gcm);
    cfg.fail_closed = false;
    Link link(cfg);
    const auto rec = link.seal_n(5);

    auto v2 = rec;
    v2[0] = 2;
    CHECK(link.rx.open(v2).code() == Errc::unsupported_version);
    auto v0 = rec;
    v0[0] = 0;
    CHECK(link.rx.open(v0).code() == Errc::unsupported_version);
    auto reserved = rec;
    reserved[3] = 0x80;
    CHECK(link.rx.open(reserved).code() == Errc::bad_field);
    auto max_seq = rec;
    set_seq(max_seq, std::numeric_limits<std::uint64_t>::max());
    CHECK(link.rx.open(max_seq).code() == Errc::bad_field);
    for (const std::uint8_t s : {0, 1, 3, 4, 255}) {
        auto other = rec;
        other[1] = s;
        CHECK(link.rx.open(other).code() == Errc::suite_not_allowed);
    }
    CHECK(link.rx.open(rec).has_value());
}

TEST_CASE("a receiver of another suite refuses the record") {
    sim::ManualClock clock;
    auto rng = test_rng();
    auto tx = must(SendSession::create(config(SuiteId::aes256_gcm), pattern(32, 1), *rng, clock));
    auto rx = must(RecvSession::create(config(SuiteId::chacha20_poly1305), pattern(32, 1), *rng, clock));
    CHECK(rx.open(must(tx.seal(pattern(3, 3)))).code() == Errc::suite_not_allowed);
    CHECK(rx.status().dead);
}

TEST_CASE("replayed records are rejected") {
    for (const auto suite : all_suites) {
        CAPTURE(sim::suite_name(suite));
        auto cfg = config(suite);
        cfg.fail_closed = false;
        Link link(cfg);
        const auto r0 = link.seal_n(1);
        const auto r1 = link.seal_n(2);
        CHECK(link.rx.open(r0).has_value());
        CHECK(link.rx.open(r0).code() == Errc::replayed);
        CHECK(link.rx.open(r1).has_value());
        CHECK(link.rx.open(r1).code() == Errc::replayed);
        CHECK(link.rx.open(r0).code() == Errc::replayed);
    }
}

TEST_CASE("reordering within the window is accepted, beyond it rejected") {
    auto cfg = config(SuiteId::aes256_gcm);
    cfg.fail_closed = false;
    REQUIRE(cfg.replay_window == 64);
    Link link(cfg);
    std::vector<Bytes> recs;
    for (int i = 0; i < 100; ++i) {
        recs.push_back(link.seal_n(4));
    }
    CHECK(link.rx.open(recs[99]).has_value());
    CHECK(link.rx.status().next_seq == 100);
    CHECK(link.rx.open(recs[36]).has_value());  // 63 behind the newest: the oldest the window holds
    CHECK(link.rx.open(recs[35]).code() == Errc::out_of_window);
    CHECK(link.rx.open(recs[0]).code() == Errc::out_of_window);
    CHECK(link.rx.open(recs[36]).code() == Errc::replayed);
    CHECK(link.rx.open(recs[98]).has_value());
    CHECK(link.rx.open(recs[99]).code() == Errc::replayed);
    CHECK(link.rx.open(recs[50]).has_value());
    CHECK(link.rx.status().next_seq == 100);
}

TEST_CASE("the replay window agrees with a reference model") {
    // Reference (RFC 4303 s3.4.3): accept seq iff it was never accepted and it is newer than the highest accepted
    // or fewer than W numbers behind it.
    for (const std::uint32_t w : {1U, 2U, 63U, 64U, 65U, 127U, 128U, 200U}) {
        CAPTURE(w);
        auto cfg = config(SuiteId::chacha20_poly1305);
        cfg.fail_closed = false;
        cfg.replay_window = w;
        cfg.rotation.max_records = 0;
        Link link(cfg);
        constexpr std::size_t n = 700;
        std::vector<Bytes> recs;
        for (std::size_t i = 0; i < n; ++i) {
            recs.push_back(link.seal_n(0));
        }
        auto pick_rng = test_rng(static_cast<std::uint8_t>(w));
        std::set<std::uint64_t> seen;
        std::uint64_t next = 0;
        for (int step = 0; step < 3000; ++step) {
            std::array<std::uint8_t, 4> r{};
            pick_rng->fill(r);
            // Mostly near the front of the window, sometimes a jump ahead, sometimes far behind.
            const std::uint32_t v = (std::uint32_t{r[0]} << 8U) | r[1];
            std::uint64_t seq = 0;
            if (r[2] < 20) {
                seq = std::min<std::uint64_t>(next + v % 300, n - 1);
            } else if (r[2] < 230) {
                const std::uint64_t back = v % (w + 8);
                seq = std::min<std::uint64_t>(next + 2 > back ? next + 2 - back : 0, n - 1);
            } else {
                seq = v % n;
            }
            const bool fresh = seen.count(seq) == 0 && (seq >= next || next - 1 - seq < w);
            const auto res = link.rx.open(recs[seq]);
            CAPTURE(seq);
            CAPTURE(next);
            REQUIRE(res.has_value() == fresh);
            if (fresh) {
                seen.insert(seq);
                next = std::max(next, seq + 1);
            } else {
                const bool dup = seen.count(seq) != 0 && seq < next && next - 1 - seq < w;
                CHECK(res.code() == (dup ? Errc::replayed : Errc::out_of_window));
            }
        }
        CHECK(link.rx.status().next_seq == next);
    }
}

TEST_CASE("a window spanning many words survives large jumps") {
    auto cfg = config(SuiteId::aes256_gcm);
    cfg.fail_closed = false;
    cfg.replay_window = 1000;
    cfg.rotation.max_records = 0;
    Link link(cfg);
    std::vector<Bytes> recs;
    for (int i = 0; i < 3000; ++i) {
        recs.push_back(link.seal_n(0));
    }
    CHECK(link.rx.open(recs[5]).has_value());
    CHECK(link.rx.open(recs[2999]).has_value());
    CHECK(link.rx.open(recs[5]).code() == Errc::out_of_window);
    // Stale bits of seq 5 must not make 2005 or 2053 (same ring slots) look replayed.
    CHECK(link.rx.open(recs[2005]).has_value());
    CHECK(link.rx.open(recs[2000]).has_value());
    CHECK(link.rx.open(recs[1999]).code() == Errc::out_of_window);
    for (int i = 2001; i < 2999; ++i) {
        if (i != 2005) {
            REQUIRE(link.rx.open(recs[static_cast<std::size_t>(i)]).has_value());
        }
    }
    for (int i = 2000; i < 3000; ++i) {
        REQUIRE(link.rx.open(recs[static_cast<std::size_t>(i)]).code() == Errc::replayed);
    }
}

TEST_CASE("strict order when the window is zero") {
    auto cfg = config(SuiteId::aes256_gcm);
    cfg.fail_closed = false;
    cfg.replay_window = 0;
    Link link(cfg);
    const auto r0 = link.seal_n(1);
    const auto r1 = link.seal_n(1);
    const auto r2 = link.seal_n(1);
    CHECK(link.rx.open(r1).code() == Errc::out_of_window);
    CHECK(link.rx.open(r0).has_value());
    CHECK(link.rx.open(r2).code() == Errc::out_of_window);
    CHECK(link.rx.open(r1).has_value());
    CHECK(link.rx.open(r1).code() == Errc::replayed);
    CHECK(link.rx.open(r0).code() == Errc::replayed);
    CHECK(link.rx.open(r2).has_value());
    CHECK(link.rx.status().next_seq == 3);
}

TEST_CASE("window and epoch move only after a record authenticated") {
    auto cfg = config(SuiteId::aes256_gcm);
    cfg.fail_closed = false;
    Link link(cfg);
    std::vector<Bytes> recs;
    for (int i = 0; i < 10; ++i) {
        recs.push_back(link.seal_n(3));
    }
    // A forgery claiming seq 500 must not push seq 1..9 out of the window.
    auto forged = recs[1];
    set_seq(forged, 500);
    CHECK(link.rx.open(forged).code() == Errc::auth_failed);
    CHECK(link.rx.status().next_seq == 0);
    // A forgery claiming seq 3 must not mark 3 as seen.
    auto forged3 = recs[3];
    forged3.back() ^= 1U;
    CHECK(link.rx.open(forged3).code() == Errc::auth_failed);
    // A forgery claiming the next epoch must not move the receiver there.
    auto forged_epoch = recs[2];
    set_epoch(forged_epoch, 1);
    CHECK(link.rx.open(forged_epoch).code() == Errc::auth_failed);
    CHECK(link.rx.status().epoch == 0);
    for (const auto& r : recs) {
        CHECK(link.rx.open(r).has_value());
    }
}

TEST_CASE("rotation by time") {
    for (const auto suite : all_suites) {
        CAPTURE(sim::suite_name(suite));
        Link link(config(suite));
        const auto r0 = link.seal_n(10);
        link.clock.advance(30s - 1ns);
        const auto r1 = link.seal_n(11);
        CHECK(epoch_of(r1) == 0);
        link.clock.advance(1ns);
        const auto r2 = link.seal_n(12);
        CHECK(epoch_of(r2) == 1);
        CHECK(link.tx.status().epoch == 1);
        CHECK(seq_of(r2) == 2);  // the sequence continues across epochs

        CHECK(link.rx.open(r0).value() == pattern(10, 10));
        CHECK(link.rx.open(r1).value() == pattern(11, 11));
        CHECK(link.rx.status().epoch == 0);
        CHECK(link.rx.open(r2).value() == pattern(12, 12));
        CHECK(link.rx.status().epoch == 1);

        // The next rotation counts from the first, not from the session start.
        link.clock.advance(29s);
        CHECK(epoch_of(link.seal_n(1)) == 1);
        link.clock.advance(1s);
        const auto r4 = link.seal_n(1);
        CHECK(epoch_of(r4) == 2);
        CHECK(link.rx.open(r4).has_value());
        CHECK(link.rx.status().epoch == 2);
    }
}

TEST_CASE("rotation by record count") {
    auto cfg = config(SuiteId::aes256_gcm);
    cfg.rotation.interval = sim::Duration::zero();
    cfg.rotation.max_records = 3;
    Link link(cfg);
    for (std::uint32_t i = 0; i < 10; ++i) {
        const auto r = link.seal_n(i);
        CHECK(epoch_of(r) == i / 3);
        CHECK(link.rx.open(r).value() == pattern(i, static_cast<std::uint8_t>(i)));
    }
    CHECK(link.rx.status().epoch == 3);
}

TEST_CASE("rotation by bytes") {
    auto cfg = config(SuiteId::chacha20_poly1305);
    cfg.rotation.interval = sim::Duration::zero();
    cfg.rotation.max_records = 0;
    cfg.rotation.max_bytes = 100;
    Link link(cfg);
    CHECK(epoch_of(link.seal_n(60)) == 0);
    CHECK(epoch_of(link.seal_n(40)) == 0);  // exactly 100 bytes under key 0
    CHECK(epoch_of(link.seal_n(0)) == 0);   // an empty record adds nothing
    const auto r = link.seal_n(1);
    CHECK(epoch_of(r) == 1);
    CHECK(epoch_of(link.seal_n(90)) == 1);
    CHECK(epoch_of(link.seal_n(20)) == 2);  // 91 + 20 would exceed 100
    CHECK(epoch_of(link.seal_n(100)) == 3);

    // A plaintext that no key may carry is refused, and the session stays usable.
    CHECK(link.tx.seal(pattern(101, 0)).code() == Errc::invalid_argument);
    CHECK_FALSE(link.tx.status().dead);
    CHECK(link.tx.seal(pattern(5, 0)).has_value());
}

TEST_CASE("TDES rotates at the Sweet32 cap whatever the policy says") {
    auto cfg = config(SuiteId::tdes_cbc_hmac_sha256);
    cfg.rotation.interval = sim::Duration::zero();
    cfg.rotation.max_records = 0;
    cfg.rotation.max_bytes = 0;
    Link link(cfg);
    // Each 64 KiB record is 8193 blocks (PKCS#7 adds a whole block); the cap is counted in blocks.
    constexpr std::size_t rec_len = 65536;
    constexpr std::uint64_t cap_blocks = sim::tdes_max_bytes_per_key / 8;
    constexpr std::uint64_t fit = cap_blocks / (rec_len / 8 + 1);
    const auto pt = pattern(rec_len, 1);
    for (std::uint64_t i = 0; i < fit; ++i) {
        REQUIRE(epoch_of(link.seal(pt)) == 0);
    }
    const auto r = link.seal(pt);
    CHECK(epoch_of(r) == 1);
    CHECK(link.rx.open(r).value() == pt);
    CHECK(link.rx.status().epoch == 1);

    // One plaintext of 2^26 bytes would need 2^23 + 1 blocks: no key may carry it.
    CHECK(link.tx.seal(Bytes(sim::tdes_max_bytes_per_key)).code() == Errc::invalid_argument);
    CHECK_FALSE(link.tx.status().dead);
}

TEST_CASE("the receiver follows skipped epochs up to the bound") {
    for (const std::uint32_t bound : {8U, 3U, 0U}) {
        CAPTURE(bound);
        auto cfg = config(SuiteId::aes256_gcm);
        cfg.fail_closed = false;
        cfg.rotation.max_skipped_epochs = bound;
        Link link(cfg);
        CHECK(link.rx.open(link.seal_n(1)).has_value());
        for (std::uint32_t i = 0; i < bound; ++i) {
            REQUIRE(link.tx.rotate().has_value());
        }
        const auto ok_rec = link.seal_n(2);
        CHECK(epoch_of(ok_rec) == bound);
        CHECK(link.rx.open(ok_rec).value() == pattern(2, 2));
        CHECK(link.rx.status().epoch == bound);

        for (std::uint32_t i = 0; i <= bound; ++i) {
            REQUIRE(link.tx.rotate().has_value());
        }
        const auto far = link.seal_n(3);
        CHECK(epoch_of(far) == 2 * bound + 1);
        CHECK(link.rx.open(far).code() == Errc::epoch_too_far);
        CHECK(link.rx.status().epoch == bound);
    }
}

TEST_CASE("records of a rotated-away epoch are stale") {
    auto cfg = config(SuiteId::tdes_cbc_hmac_sha256);
    cfg.fail_closed = false;
    Link link(cfg);
    const auto old0 = link.seal_n(1);
    const auto old1 = link.seal_n(1);
    REQUIRE(link.tx.rotate().has_value());
    const auto new0 = link.seal_n(1);
    CHECK(link.rx.open(old0).has_value());
    CHECK(link.rx.open(new0).has_value());
    CHECK(link.rx.open(old1).code() == Errc::stale_epoch);  // never seen, but its key is gone
    CHECK(link.rx.status().epoch == 1);
}

TEST_CASE("a sender that never rotates hits key_expired") {
    auto send_cfg = config(SuiteId::aes256_gcm);
    send_cfg.rotation.interval = sim::Duration::zero();
    auto recv_cfg = config(SuiteId::aes256_gcm);
    REQUIRE(recv_cfg.rotation.interval == 30s);
    REQUIRE(recv_cfg.rotation.grace == 30s);
    Link link(send_cfg, recv_cfg);
    link.clock.advance(60s);
    CHECK(link.rx.open(link.seal_n(1)).has_value());  // exactly interval + grace: still accepted
    link.clock.advance(1ns);
    const auto late = link.seal_n(1);
    CHECK(epoch_of(late) == 0);
    CHECK(link.rx.open(late).code() == Errc::key_expired);
    CHECK(link.rx.status().dead);
}

TEST_CASE("a receiver's key age restarts when it follows a rotation") {
    Link link(config(SuiteId::chacha20_poly1305));
    link.clock.advance(45s);
    const auto r = link.seal_n(1);  // the sender rotates at 45 s
    CHECK(epoch_of(r) == 1);
    CHECK(link.rx.open(r).has_value());
    link.clock.advance(29s);  // 74 s after start, 29 s into epoch 1
    const auto r2 = link.seal_n(1);
    CHECK(epoch_of(r2) == 1);
    CHECK(link.rx.open(r2).has_value());
}

TEST_CASE("rotation is one-way and deterministic") {
    for (const auto suite : all_suites) {
        CAPTURE(sim::suite_name(suite));
        const auto k0 = pattern(sim::suite_key_size(suite), 0x5A);
        const auto k1 = sim::next_epoch_key(k0);
        CHECK(k1.size() == k0.size());
        CHECK(sim::next_epoch_key(k0) == k1);
        CHECK(Bytes(k1.begin(), k1.end()) != k0);
        const auto k2 = sim::next_epoch_key(k1);
        CHECK(k2 != k1);

        // Whoever holds only the epoch-1 key opens epoch-1 records but nothing sealed under epoch 0.
        Link link(config(suite));
        const auto old = link.seal_n(16);
        REQUIRE(link.tx.rotate().has_value());
        const auto cur = link.seal_n(16);
        auto rng = test_rng();
        auto c1 = must(sim::make_record_cipher(suite, k1, *rng));
        const auto open_with = [&](const Bytes& rec) {
            return c1->open(ByteView{rec}.first(16), seq_of(rec), ByteView{rec}.subspan(16));
        };
        CHECK(open_with(cur).value() == pattern(16, 16));
        CHECK(open_with(old).code() == Errc::auth_failed);
        auto relabelled = old;
        set_epoch(relabelled, 1);  // pretend it belongs to epoch 1
        CHECK(open_with(relabelled).code() == Errc::auth_failed);

        // And a receiver that moved on refuses the old epoch outright.
        CHECK(link.rx.open(cur).has_value());
        CHECK(link.rx.open(old).code() == Errc::stale_epoch);
    }
}

TEST_CASE("fail_closed kills the session on any error") {
    Link link(config(SuiteId::aes256_gcm));
    REQUIRE(link.rx.status().dead == false);
    const auto good = link.seal_n(8);
    auto forged = good;
    forged[20] ^= 4U;
    CHECK(link.rx.open(forged).code() == Errc::auth_failed);
    CHECK(link.rx.status().dead);
    CHECK(link.rx.open(good).code() == Errc::invalid_state);
    CHECK(link.rx.open(link.seal_n(8)).code() == Errc::invalid_state);

    // Even a harmless-looking error (a replay) is fatal in this mode.
    Link link2(config(SuiteId::chacha20_poly1305));
    const auto r = link2.seal_n(1);
    CHECK(link2.rx.open(r).has_value());
    CHECK(link2.rx.open(r).code() == Errc::replayed);
    CHECK(link2.rx.open(link2.seal_n(1)).code() == Errc::invalid_state);
}

TEST_CASE("without fail_closed a forged record is just dropped") {
    auto cfg = config(SuiteId::tdes_cbc_hmac_sha256);
    cfg.fail_closed = false;
    Link link(cfg);
    const auto good = link.seal_n(8);
    auto forged = good;
    forged[30] ^= 4U;
    CHECK(link.rx.open(forged).code() == Errc::auth_failed);
    CHECK_FALSE(link.rx.status().dead);
    CHECK(link.rx.open(good).value() == pattern(8, 8));
}

TEST_CASE("TDES records use a fresh IV") {
    Link link(config(SuiteId::tdes_cbc_hmac_sha256));
    const auto pt = pattern(40, 1);
    auto a = link.seal(pt);
    auto b = link.seal(pt);
    REQUIRE(a.size() == b.size());
    const Bytes iv_a(a.begin() + 16, a.begin() + 24);
    const Bytes iv_b(b.begin() + 16, b.begin() + 24);
    CHECK(iv_a != iv_b);
    CHECK(Bytes(a.begin() + 24, a.end()) != Bytes(b.begin() + 24, b.end()));
    CHECK(link.rx.open(a).value() == pt);
    CHECK(link.rx.open(b).value() == pt);
}

TEST_CASE("create validates its arguments") {
    sim::ManualClock clock;
    auto rng = test_rng();
    for (const auto suite : all_suites) {
        const auto n = sim::suite_key_size(suite);
        CHECK(SendSession::create(config(suite), pattern(n - 1, 0), *rng, clock).code() == Errc::invalid_key);
        CHECK(RecvSession::create(config(suite), pattern(n + 1, 0), *rng, clock).code() == Errc::invalid_key);
    }
    CHECK(SendSession::create(config(static_cast<SuiteId>(7)), pattern(32, 0), *rng, clock).code() ==
          Errc::suite_not_allowed);
    auto cfg = config(SuiteId::aes256_gcm);
    cfg.replay_window = sim::max_replay_window;
    CHECK(RecvSession::create(cfg, pattern(32, 0), *rng, clock).has_value());
    cfg.replay_window = sim::max_replay_window + 1;
    CHECK(RecvSession::create(cfg, pattern(32, 0), *rng, clock).code() == Errc::invalid_argument);
    cfg = config(SuiteId::aes256_gcm);
    cfg.rotation.max_skipped_epochs = sim::max_epoch_skip + 1;
    CHECK(RecvSession::create(cfg, pattern(32, 0), *rng, clock).code() == Errc::invalid_argument);
    cfg = config(SuiteId::aes256_gcm);
    cfg.rotation.interval = -1s;
    CHECK(SendSession::create(cfg, pattern(32, 0), *rng, clock).code() == Errc::invalid_argument);
    cfg = config(SuiteId::aes256_gcm);
    cfg.rotation.grace = -1s;
    CHECK(RecvSession::create(cfg, pattern(32, 0), *rng, clock).code() == Errc::invalid_argument);
}

TEST_CASE("closed and moved-from sessions refuse work") {
    Link link(config(SuiteId::aes256_gcm));
    const auto r = link.seal_n(2);
    link.tx.close();
    CHECK(link.tx.status().dead);
    CHECK(link.tx.seal(pattern(1, 1)).code() == Errc::invalid_state);
    CHECK(link.tx.rotate().code() == Errc::invalid_state);
    link.rx.close();
    CHECK(link.rx.open(r).code() == Errc::invalid_state);

    sim::ManualClock clock;
    auto rng = test_rng();
    auto tx = must(SendSession::create(config(SuiteId::aes256_gcm), pattern(32, 0), *rng, clock));
    auto moved = std::move(tx);
    CHECK(moved.seal(pattern(1, 1)).has_value());
    CHECK(tx.seal(pattern(1, 1)).code() == Errc::invalid_state);  // NOLINT(bugprone-use-after-move)
    CHECK(tx.status().dead);                                      // NOLINT(bugprone-use-after-move)
}

TEST_CASE("seal_into appends the same records as seal and leaves the buffer alone on error") {
    for (const auto suite : all_suites) {
        CAPTURE(sim::suite_name(suite));
        // Two senders with the same key, clock and RNG seed produce the same records (TDES IVs included).
        Link a(config(suite));
        Link b(config(suite));
        Bytes buf = pattern(7, 3);  // bytes already in the caller's buffer stay in front
        const Bytes prefix = buf;
        for (const std::size_t n : {0U, 1U, 100U, 1000U}) {
            const Bytes expected = a.seal(pattern(n, 9));
            const std::size_t start = buf.size();
            REQUIRE(b.tx.seal_into(pattern(n, 9), buf).has_value());
            CHECK(Bytes(buf.begin() + static_cast<std::ptrdiff_t>(start), buf.end()) == expected);
            CHECK(expected.size() <= b.tx.max_record_size(n));
            // The appended record opens on its own.
            CHECK(must(b.rx.open(ByteView(buf).subspan(start))) == pattern(n, 9));
        }
        CHECK(Bytes(buf.begin(), buf.begin() + 7) == prefix);
        // A plaintext beyond the per-key byte limit: refused, nothing appended, the session stays usable.
        SessionConfig small = config(suite);
        small.rotation.max_bytes = 16;
        Link c(small);
        Bytes out = pattern(5, 1);
        CHECK(c.tx.seal_into(pattern(17, 1), out).code() == Errc::invalid_argument);
        CHECK(out == pattern(5, 1));
        CHECK(c.tx.seal_into(pattern(16, 1), out).has_value());
        CHECK(out.size() > 5);
        // A closed session: invalid_state, nothing appended.
        c.tx.close();
        const Bytes before = out;
        CHECK(c.tx.seal_into(pattern(1, 1), out).code() == Errc::invalid_state);
        CHECK(out == before);
    }
}
