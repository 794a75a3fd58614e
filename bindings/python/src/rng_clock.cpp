// Rng and clocks as Python objects (see rng_clock.h).
#include "rng_clock.h"

namespace simpy {

std::shared_ptr<PyRng> rng_or_system(const std::shared_ptr<PyRng>& rng) {
    if (rng) {
        return rng;
    }
    return std::make_shared<PyRng>(sim::make_system_rng(), false);
}

sim::TimePoint PyCallableClock::now() const {
    const py::gil_scoped_acquire gil;
    const std::lock_guard lock(m_mutex);
    if (!m_error) {
        try {
            const double seconds = m_fn().cast<double>();
            if (!std::isfinite(seconds) || std::abs(seconds) > 1e9) {
                throw py::value_error("the clock returned a value that is not a finite number of seconds");
            }
            m_last = std::chrono::duration_cast<sim::Duration>(std::chrono::duration<double>(seconds)).count();
        } catch (py::error_already_set& e) {
            m_error.emplace(std::move(e));
        } catch (const py::cast_error&) {  // before builtin_exception, its base
            PyErr_SetString(PyExc_TypeError, "the clock must return a number of seconds (int or float)");
            m_error.emplace();
        } catch (const py::builtin_exception& e) {
            e.set_error();
            m_error.emplace();
        }
    }
    return sim::TimePoint(sim::Duration(m_last));
}

void PyCallableClock::rethrow() const {
    std::optional<py::error_already_set> e;
    {
        const std::lock_guard lock(m_mutex);
        e.swap(m_error);
    }
    if (e) {
        throw std::move(*e);
    }
}

ClockRef ClockRef::from(const py::object& obj) {
    ClockRef ref;
    ref.owner = obj;
    if (obj.is_none()) {
        return ref;
    }
    if (py::isinstance<PyManualClock>(obj)) {
        ref.clock = &obj.cast<PyManualClock&>();
        return ref;
    }
    if (PyCallable_Check(obj.ptr()) != 0) {
        ref.callable = std::make_shared<PyCallableClock>(obj);
        ref.clock = ref.callable.get();
        return ref;
    }
    throw py::type_error(
        "clock must be None, a libsim.ManualClock or a callable returning seconds (e.g. "
        "time.monotonic)");
}

void register_rng_clock(py::module_& m) {
    py::class_<PyRng, std::shared_ptr<PyRng>>(
        m, "Rng", "A source of random bytes: the operating system's (default) or a deterministic one for tests.")
        .def(py::init([]() { return std::make_shared<PyRng>(sim::make_system_rng(), false); }),
             "The operating system's RNG.")
        .def_static(
            "deterministic",
            [](const Blob& seed) {
                if (seed.value.empty()) {
                    throw py::value_error("the seed must not be empty");
                }
                return std::make_shared<PyRng>(sim::make_deterministic_rng(seed.view()), true);
            },
            py::arg("seed"), "A reproducible RNG (ChaCha20 keyed by `seed`): for tests only, never for real keys.")
        .def(
            "bytes",
            [](PyRng& rng, std::size_t n) {
                if (n > (1U << 24U)) {
                    throw py::value_error("at most 16 MiB at a time");
                }
                sim::Bytes out(n);
                {
                    const py::gil_scoped_release nogil;
                    rng.fill(out);
                }
                return to_py_bytes(out);
            },
            py::arg("n"), "`n` random bytes.")
        .def_property_readonly("is_deterministic", &PyRng::deterministic)
        .def("__repr__",
             [](const PyRng& r) { return std::string(r.deterministic() ? "Rng.deterministic(...)" : "Rng()"); });

    py::class_<PyManualClock>(m, "ManualClock",
                              "A monotonic clock that moves only when told to: inject it into sessions to test "
                              "rotation without waiting. Readings are seconds (float).")
        .def(
            py::init([](double start) { return std::make_unique<PyManualClock>(seconds_to_duration(start, "start")); }),
            py::arg("start") = 0.0)
        .def(
            "advance", [](PyManualClock& c, double s) { c.advance(seconds_to_duration(s, "seconds")); },
            py::arg("seconds"), "Move the clock forward.")
        .def(
            "set", [](PyManualClock& c, double s) { c.set(seconds_to_duration(s, "seconds")); }, py::arg("seconds"),
            "Set the reading (may move backwards: only for tests of clock misbehaviour).")
        .def(
            "now", [](const PyManualClock& c) { return duration_to_seconds(c.now().time_since_epoch()); },
            "The reading, in seconds.")
        .def("__call__", [](const PyManualClock& c) { return duration_to_seconds(c.now().time_since_epoch()); })
        .def("__repr__", [](const PyManualClock& c) {
            return "ManualClock(" +
                   py::repr(py::float_(duration_to_seconds(c.now().time_since_epoch()))).cast<std::string>() + ")";
        });
}

}  // namespace simpy
