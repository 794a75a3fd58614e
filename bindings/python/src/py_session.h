#pragma once
// The Python wrappers of SendSession and RecvSession (shared by session.cpp and channel.cpp).

#include "rng_clock.h"

#include <sim/session.h>

#include <mutex>
#include <optional>

namespace simpy {

/// Shared parts of the two session wrappers: the collaborators they keep alive and a lock, since the GIL is
/// released while a record is sealed or opened and two Python threads may use one session.
template <typename Session>
class PySession {
public:
    PySession(const SecretBlob& key, sim::SuiteId suite, const std::optional<sim::RotationPolicy>& rotation,
              std::uint32_t replay_window, bool fail_closed, const py::object& clock, const std::shared_ptr<PyRng>& rng)
        : m_rng(rng_or_system(rng)), m_clock(ClockRef::from(clock)) {
        sim::SessionConfig cfg;
        cfg.suite = suite;
        if (rotation) {
            cfg.rotation = *rotation;
        }
        cfg.replay_window = replay_window;
        cfg.fail_closed = fail_closed;
        auto created = Session::create(cfg, key.value, *m_rng, *m_clock.clock);
        m_clock.rethrow();
        m_session.emplace(unwrap(std::move(created)));
    }

    /// Adopt a session made elsewhere (a channel handshake), with the collaborators it was created with.
    PySession(Session session, std::shared_ptr<PyRng> rng, ClockRef clock)
        : m_rng(std::move(rng)), m_clock(std::move(clock)), m_session(std::move(session)) {}

    template <typename F>
    auto locked(F&& f) {
        const std::lock_guard lock(m_mutex);
        return f(*m_session);
    }

    /// Run `f(session)` without the GIL, then re-raise a clock error before looking at the result.
    template <typename F>
    auto run(F&& f) {
        auto result = [&] {
            const py::gil_scoped_release nogil;
            const std::lock_guard lock(m_mutex);
            return f(*m_session);
        }();
        m_clock.rethrow();
        return result;
    }

    [[nodiscard]] sim::SessionStatus status() {
        return locked([](Session& s) { return s.status(); });
    }
    void close() {
        locked([](Session& s) {
            s.close();
            return 0;
        });
    }

private:
    std::mutex m_mutex;
    std::shared_ptr<PyRng> m_rng;
    ClockRef m_clock;
    std::optional<Session> m_session;
};

using PySendSession = PySession<sim::SendSession>;
using PyRecvSession = PySession<sim::RecvSession>;

}  // namespace simpy
