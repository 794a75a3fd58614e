#pragma once
// The injected collaborators of the core as Python objects: Rng (system or deterministic) and clocks (a
// ManualClock, or any callable returning seconds such as time.monotonic).

#include "common.h"

#include <sim/clock.h>
#include <sim/rng.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>

namespace simpy {

/// A thread-safe Rng shared by the Python objects that use it (sessions, handshakes).
class PyRng final : public sim::Rng {
public:
    explicit PyRng(std::unique_ptr<sim::Rng> inner, bool deterministic)
        : m_inner(std::move(inner)), m_deterministic(deterministic) {}
    void fill(sim::MutableByteView out) override {
        const std::lock_guard lock(m_mutex);
        m_inner->fill(out);
    }
    [[nodiscard]] bool deterministic() const noexcept { return m_deterministic; }

private:
    std::mutex m_mutex;
    std::unique_ptr<sim::Rng> m_inner;
    bool m_deterministic;
};

/// The Rng to use for an optional `rng=` argument: the given one, or a fresh system RNG.
std::shared_ptr<PyRng> rng_or_system(const std::shared_ptr<PyRng>& rng);

/// A clock moved only by the test (thread-safe, unlike sim::ManualClock, since the GIL is released around calls
/// that read it).
class PyManualClock final : public sim::Clock {
public:
    explicit PyManualClock(sim::Duration start) : m_ns(start.count()) {}
    [[nodiscard]] sim::TimePoint now() const override { return sim::TimePoint(sim::Duration(m_ns.load())); }
    void advance(sim::Duration d) { m_ns += d.count(); }
    void set(sim::Duration t) { m_ns = t.count(); }

private:
    std::atomic<sim::Duration::rep> m_ns;
};

/// A clock that calls a Python callable returning seconds. It takes the GIL for each reading; an exception from
/// the callable is kept (the clock then repeats its last reading) and re-raised by the caller through rethrow().
class PyCallableClock final : public sim::Clock {
public:
    explicit PyCallableClock(py::object fn) : m_fn(std::move(fn)) {}
    ~PyCallableClock() override {
        const py::gil_scoped_acquire gil;
        m_fn = py::object();
        m_error.reset();
    }
    PyCallableClock(const PyCallableClock&) = delete;
    PyCallableClock& operator=(const PyCallableClock&) = delete;

    [[nodiscard]] sim::TimePoint now() const override;
    /// Raise the exception the callable raised during the last operation, if any (call with the GIL held).
    void rethrow() const;

private:
    py::object m_fn;
    mutable std::mutex m_mutex;
    mutable std::optional<py::error_already_set> m_error;
    mutable sim::Duration::rep m_last = 0;
};

/// What a `clock=` argument resolved to; keeps the Python object alive as long as the user (a session) lives.
struct ClockRef {
    py::object owner;                           ///< the Python clock object or callable (None: steady clock)
    std::shared_ptr<PyCallableClock> callable;  ///< set when owner is a plain callable
    const sim::Clock* clock = &sim::steady_clock();

    /// None, a ManualClock, or a callable returning seconds; else TypeError.
    static ClockRef from(const py::object& obj);
    /// Re-raise an exception from a callable clock (GIL held).
    void rethrow() const {
        if (callable) {
            callable->rethrow();
        }
    }
};

}  // namespace simpy
