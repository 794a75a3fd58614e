// libFuzzer target for RecvSession::open (docs/protocol.md section 4).
//
// Part 1 feeds the whole input as one record to a fixed-key receiver of every suite, fail-closed and not.
// Part 2 reads the input as a script that drives a genuine sender and a receiver (seal, deliver, replay, reorder,
// flip a bit, rotate, let time pass), so the fuzzer reaches the window, epoch and expiry logic behind the tag check.
//
// Properties checked (any violation aborts, which libFuzzer reports as a crash):
// - a failed open kills a fail-closed session (later opens give invalid_state) and changes nothing otherwise;
// - a successful open never returns more bytes than the record carried;
// - no sequence number is accepted twice, an accepted record yields exactly what was sealed, a bit-flipped record
//   is never accepted, and the receiver's epoch never runs ahead of the sender's.
#include <sim/clock.h>
#include <sim/rng.h>
#include <sim/session.h>
#include <sim/suite.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <set>
#include <vector>

namespace {

void require(bool condition, const char* what) {
    if (!condition) {
        std::fprintf(stderr, "fuzz_session_open: property violated: %s\n", what);
        std::abort();
    }
}

constexpr std::array<sim::SuiteId, 3> suites{sim::SuiteId::tdes_cbc_hmac_sha256, sim::SuiteId::aes256_gcm,
                                             sim::SuiteId::chacha20_poly1305};

// The fixed key: 0x00, 0x01, ... (the corpus seeds are records sealed under it at epoch 0).
sim::Bytes fixed_key(sim::SuiteId suite) {
    sim::Bytes k(sim::suite_key_size(suite));
    for (std::size_t i = 0; i < k.size(); ++i) {
        k[i] = static_cast<std::uint8_t>(i);
    }
    return k;
}

std::unique_ptr<sim::Rng> fixed_rng() {
    const std::array<std::uint8_t, 32> seed{0x42};
    return sim::make_deterministic_rng(seed);
}

void open_once(sim::ByteView in) {
    sim::ManualClock clock;
    auto rng = fixed_rng();
    for (const auto suite : suites) {
        for (const bool fail_closed : {true, false}) {
            sim::SessionConfig cfg;
            cfg.suite = suite;
            cfg.fail_closed = fail_closed;
            auto made = sim::RecvSession::create(cfg, fixed_key(suite), *rng, clock);
            require(made.has_value(), "create failed");
            sim::RecvSession rx = std::move(made).value();
            const auto before = rx.status();
            auto r = rx.open(in);
            const auto after = rx.status();
            if (r) {
                require(in.size() >= sim::record_header_size + r->size(), "plaintext longer than the record");
                require(!after.dead, "dead after success");
                require(after.next_seq > before.next_seq || before.next_seq == 0, "window did not move");
            } else {
                require(r.code() != sim::Errc::ok, "failure without a code");
                if (fail_closed) {
                    require(after.dead, "fail-closed session survived an error");
                    require(rx.open(in).code() == sim::Errc::invalid_state, "dead session did not say so");
                } else {
                    require(!after.dead, "session died without fail_closed");
                    require(after.epoch == before.epoch && after.next_seq == before.next_seq,
                            "state changed on a rejected record");
                }
            }
        }
    }
}

struct Sealed {
    sim::Bytes record;
    sim::Bytes plaintext;
    std::uint64_t seq;
};

void run_script(sim::ByteView in) {
    if (in.empty()) {
        return;
    }
    constexpr std::size_t max_ops = 400;
    const std::uint8_t setup = in[0];
    const auto suite = suites[setup % suites.size()];
    constexpr std::array<std::uint32_t, 4> windows{0, 1, 64, 100};

    sim::ManualClock clock;
    auto rng = fixed_rng();
    sim::SessionConfig send_cfg;
    send_cfg.suite = suite;
    send_cfg.rotation.max_records = 1U + (setup >> 4U);  // 1..16: rotations happen often
    sim::SessionConfig recv_cfg = send_cfg;
    recv_cfg.fail_closed = false;
    recv_cfg.replay_window = windows[(setup >> 2U) % windows.size()];
    recv_cfg.rotation.max_skipped_epochs = 2;
    auto tx_made = sim::SendSession::create(send_cfg, fixed_key(suite), *rng, clock);
    auto rx_made = sim::RecvSession::create(recv_cfg, fixed_key(suite), *rng, clock);
    require(tx_made.has_value() && rx_made.has_value(), "create failed");
    sim::SendSession tx = std::move(tx_made).value();
    sim::RecvSession rx = std::move(rx_made).value();

    std::vector<Sealed> sent;
    std::set<std::uint64_t> accepted;
    const std::size_t end = std::min(in.size(), max_ops);
    for (std::size_t i = 1; i < end; ++i) {
        const std::uint8_t b = in[i];
        const std::uint8_t arg = (i + 1 < end) ? in[i + 1] : 0;
        const unsigned op = b >> 5U;
        if (op <= 2 || sent.empty()) {
            sim::Bytes pt(b & 31U, static_cast<std::uint8_t>(i));
            auto rec = tx.seal(pt);
            require(rec.has_value(), "seal failed");
            sent.push_back({std::move(rec).value(), pt, tx.status().next_seq - 1});
            continue;
        }
        if (op == 4) {
            require(tx.rotate().has_value(), "rotate failed");
            continue;
        }
        if (op == 5) {
            clock.advance(std::chrono::seconds(b & 31U));
            continue;
        }
        const Sealed& s = (op == 7) ? sent.back() : sent[arg % sent.size()];
        ++i;  // the argument byte is consumed
        const auto before = rx.status();
        if (op == 6) {
            sim::Bytes bad = s.record;
            const std::size_t bit = (static_cast<std::size_t>(arg) * 7U + b) % (bad.size() * 8U);
            bad[bit / 8U] ^= static_cast<std::uint8_t>(1U << (bit % 8U));
            require(!rx.open(bad).has_value(), "a bit-flipped record was accepted");
        } else {
            auto r = rx.open(s.record);
            if (r) {
                require(*r == s.plaintext, "accepted record yields other bytes than were sealed");
                require(accepted.insert(s.seq).second, "a sequence number was accepted twice");
            }
        }
        const auto after = rx.status();
        require(!after.dead, "non-fail-closed receiver died");
        require(after.epoch >= before.epoch && after.epoch <= tx.status().epoch, "receiver epoch out of range");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const sim::ByteView in(data, size);
    open_once(in);
    run_script(in);
    return 0;
}
