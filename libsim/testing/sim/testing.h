#pragma once
/// @file
/// Test hooks of libsim: not its API, not installed, not stable. Tests, the Python bindings' attack tests and
/// diagnostic tools use them to do what an application must not (send a forged frame, run TDES in ECB mode for
/// known-answer vectors, run a core's jobs by hand).

#include <sim/bytes.h>
#include <sim/client.h>
#include <sim/error.h>
#include <sim/frame.h>
#include <sim/transport.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace sim::testing {

/// Keeps jobs until run_pending() is called (tests, single-threaded embedding). Not thread-safe.
/// (A core may hold its own locks while it submits, so an executor must never run a job inside submit().)
class QueueExecutor final : public Executor {
public:
    [[nodiscard]] bool submit(std::function<void()> job) override {
        m_jobs.push_back(std::move(job));
        return true;
    }
    /// Run the queued jobs (and any they queue); returns how many ran.
    std::size_t run_pending() {
        std::size_t n = 0;
        while (!m_jobs.empty()) {
            auto job = std::move(m_jobs.front());
            m_jobs.erase(m_jobs.begin());
            job();
            ++n;
        }
        return n;
    }

private:
    std::vector<std::function<void()>> m_jobs;
};

/// TDES-ECB over whole blocks, for known-answer tests only. Key 24 bytes (Errc::invalid_key); `blocks` must be a
/// whole number of 8-byte blocks (Errc::bad_length).
Result<Bytes> tdes_ecb_encrypt(ByteView key, ByteView blocks);
/// TDES-ECB decryption; same errors as tdes_ecb_encrypt.
Result<Bytes> tdes_ecb_decrypt(ByteView key, ByteView blocks);

struct ClientAccess {
    static Status send_raw(ClientCore& core, const Frame& frame) { return core.send_raw(frame); }
    static void set_blind_sink(ClientCore& core, bool on) { core.set_blind_sink(on); }
    static std::uint64_t blind_acked(const ClientCore& core) { return core.blind_acked(); }
};
/// Send any inner frame as is, inside `core`'s encrypted channel (e.g. to show that the server refuses a forged
/// source).
inline Status send_raw(ClientCore& core, const Frame& frame) {
    return ClientAccess::send_raw(core, frame);
}

/// Benchmarking hook, never for a real client: from now on `core` acknowledges every message delivered to it
/// exactly as a client does once it has shown one (the same ack frames, so the server deletes it and the sender gets
/// its `delivered` receipt) but does not open it: no Double Ratchet or record decryption, nothing written to the
/// inbox, no `message` event, no check of its content (a forged body is acknowledged too). sim-bench's
/// `--blind-sink` uses it so that the server can be loaded past what the load generator's own decryption allows.
/// Messages opened before it was set stay opened; end-to-end sessions it would have started are not started.
inline void set_blind_sink(ClientCore& core, bool on) {
    ClientAccess::set_blind_sink(core, on);
}
/// How many messages `core` acknowledged unopened under set_blind_sink.
inline std::uint64_t blind_acked(const ClientCore& core) {
    return ClientAccess::blind_acked(core);
}

}  // namespace sim::testing
