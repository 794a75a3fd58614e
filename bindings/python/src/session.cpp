// Cipher suites, rotation policies and the record sessions (seal/open with rotation and an injectable clock).
#include "py_session.h"

#include <sim/session.h>
#include <sim/suite.h>

#include <mutex>
#include <optional>
#include <vector>

namespace simpy {

namespace {

std::string rotation_repr(const sim::RotationPolicy& p) {
    return "RotationPolicy(interval=" + py::repr(py::float_(duration_to_seconds(p.interval))).cast<std::string>() +
           ", max_records=" + std::to_string(p.max_records) + ", max_bytes=" + std::to_string(p.max_bytes) +
           ", max_skipped_epochs=" + std::to_string(p.max_skipped_epochs) +
           ", grace=" + py::repr(py::float_(duration_to_seconds(p.grace))).cast<std::string>() + ")";
}

template <typename W>
void add_common(py::class_<W>& cls) {
    cls.def(py::init<const SecretBlob&, sim::SuiteId, const std::optional<sim::RotationPolicy>&, std::uint32_t, bool,
                     const py::object&, const std::shared_ptr<PyRng>&>(),
            py::arg("key"), py::kw_only(), py::arg("suite") = sim::SuiteId::aes256_gcm,
            py::arg("rotation") = py::none(), py::arg("replay_window") = 64U, py::arg("fail_closed") = true,
            py::arg("clock") = py::none(), py::arg("rng") = nullptr)
        .def_property_readonly("status", &W::status, "Suite, epoch, next sequence number, dead (no key material).")
        .def_property_readonly("epoch", [](W& w) { return w.status().epoch; })
        .def_property_readonly("dead", [](W& w) { return w.status().dead; })
        .def("close", &W::close, "Wipe the keys; later calls raise StateError.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](W& w, const py::args&) {
            w.close();
            return false;
        });
}

}  // namespace

void register_session(py::module_& m) {
    using sim::SuiteId;
    py::enum_<SuiteId>(m, "SuiteId", "Record cipher suites (wire ids).")
        .value("TDES_CBC_HMAC_SHA256", SuiteId::tdes_cbc_hmac_sha256,
               "the seed's Triple-DES: 3-key TDES-CBC, random IV, encrypt-then-MAC HMAC-SHA256")
        .value("AES256_GCM", SuiteId::aes256_gcm, "AES-256-GCM")
        .value("CHACHA20_POLY1305", SuiteId::chacha20_poly1305, "ChaCha20-Poly1305 (RFC 8439)")
        .def_property_readonly(
            "display_name", [](SuiteId id) { return std::string(sim::suite_name(id)); },
            "'TDES-CBC-HMAC-SHA256', 'AES-256-GCM' or 'ChaCha20-Poly1305'.")
        .def_property_readonly(
            "key_size", [](SuiteId id) { return sim::suite_key_size(id); },
            "Key size in bytes: 24 for TDES, 32 for the AEADs.")
        .def_static(
            "parse",
            [](const Text& name) {
                const auto id = sim::suite_from_name(name.value);
                if (!id) {
                    throw py::value_error("unknown cipher suite");
                }
                return *id;
            },
            py::arg("name"), "A suite from its name (case-insensitive) or numeric id; ValueError when unknown.");

    py::class_<sim::SuitePolicy>(m, "SuitePolicy", "Which suites may be used, in order of preference.")
        .def(py::init([](const std::vector<SuiteId>& preference) {
                 return unwrap(sim::SuitePolicy::from_list(preference));
             }),
             py::arg("preference"), "An explicit preference list (InvalidArgument when empty).")
        .def_static("default", &sim::SuitePolicy::default_policy, "AES-256-GCM, ChaCha20-Poly1305, then TDES.")
        .def_static("require_tdes", &sim::SuitePolicy::require_tdes, "Only TDES (the seed's system).")
        .def_static("forbid_tdes", &sim::SuitePolicy::forbid_tdes, "The default without TDES.")
        .def("allows", &sim::SuitePolicy::allows, py::arg("suite"))
        .def("__contains__", &sim::SuitePolicy::allows, py::arg("suite"))
        .def_property_readonly("preference",
                               [](const sim::SuitePolicy& p) {
                                   return std::vector<SuiteId>(p.preference().begin(), p.preference().end());
                               })
        .def(
            "choose",
            [](const sim::SuitePolicy& p, const std::vector<SuiteId>& offer) { return unwrap(p.choose(offer)); },
            py::arg("peer_offer"),
            "The responder's choice: our first preference the peer also offers (CryptoError NO_COMMON_SUITE).")
        .def("__repr__", [](const sim::SuitePolicy& p) {
            std::string s = "SuitePolicy([";
            for (std::size_t i = 0; i < p.preference().size(); ++i) {
                s += (i != 0 ? ", " : "") + py::str(py::cast(p.preference()[i])).cast<std::string>();
            }
            return s + "])";
        });

    py::class_<sim::RotationPolicy>(m, "RotationPolicy",
                                    "When a session key is replaced. Times are in seconds; 0 disables a limit.")
        .def(py::init([](double interval, std::uint64_t max_records, std::uint64_t max_bytes,
                         std::uint32_t max_skipped_epochs, double grace) {
                 sim::RotationPolicy p;
                 p.interval = seconds_to_duration(interval, "interval");
                 p.max_records = max_records;
                 p.max_bytes = max_bytes;
                 p.max_skipped_epochs = max_skipped_epochs;
                 p.grace = seconds_to_duration(grace, "grace");
                 return p;
             }),
             py::kw_only(), py::arg("interval") = 30.0, py::arg("max_records") = std::uint64_t{1U << 20U},
             py::arg("max_bytes") = std::uint64_t{1ULL << 32U}, py::arg("max_skipped_epochs") = 8U,
             py::arg("grace") = 30.0)
        .def_property(
            "interval", [](const sim::RotationPolicy& p) { return duration_to_seconds(p.interval); },
            [](sim::RotationPolicy& p, double s) { p.interval = seconds_to_duration(s, "interval"); })
        .def_readwrite("max_records", &sim::RotationPolicy::max_records)
        .def_readwrite("max_bytes", &sim::RotationPolicy::max_bytes)
        .def_readwrite("max_skipped_epochs", &sim::RotationPolicy::max_skipped_epochs)
        .def_property(
            "grace", [](const sim::RotationPolicy& p) { return duration_to_seconds(p.grace); },
            [](sim::RotationPolicy& p, double s) { p.grace = seconds_to_duration(s, "grace"); })
        .def("__repr__", &rotation_repr);

    py::class_<sim::SessionStatus>(m, "SessionStatus", "What a session may show or log (never key material).")
        .def_readonly("suite", &sim::SessionStatus::suite)
        .def_readonly("epoch", &sim::SessionStatus::epoch)
        .def_readonly("next_seq", &sim::SessionStatus::next_seq)
        .def_readonly("dead", &sim::SessionStatus::dead)
        .def("__repr__", [](const sim::SessionStatus& s) {
            return "SessionStatus(suite=" + py::str(py::cast(s.suite)).cast<std::string>() +
                   ", epoch=" + std::to_string(s.epoch) + ", next_seq=" + std::to_string(s.next_seq) +
                   ", dead=" + (s.dead ? "True" : "False") + ")";
        });

    m.attr("RECORD_HEADER_SIZE") = sim::record_header_size;

    py::class_<PySendSession> send(m, "SendSession",
                                   "Seals records in one direction, rotating its key per the RotationPolicy. "
                                   "`clock` is None (monotonic), a ManualClock, or a callable returning seconds.");
    add_common(send);
    send.def(
            "seal",
            [](PySendSession& s, const Blob& plaintext) {
                auto r = s.run([&](sim::SendSession& ss) { return ss.seal(plaintext.view()); });
                return to_py_bytes(unwrap(std::move(r)));
            },
            py::arg("plaintext"), "One record (header + sealed body); rotates first when the policy says so.")
        .def(
            "rotate", [](PySendSession& s) { check(s.run([](sim::SendSession& ss) { return ss.rotate(); })); },
            "Force a rotation now.");

    py::class_<PyRecvSession> recv(m, "RecvSession",
                                   "Opens records in one direction: replay window, epochs, fail-closed by default.");
    add_common(recv);
    recv.def(
        "open",
        [](PyRecvSession& s, const Blob& record) {
            auto r = s.run([&](sim::RecvSession& rs) { return rs.open(record.view()); });
            return to_py_bytes(unwrap(std::move(r)));
        },
        py::arg("record"),
        "The plaintext of one record. Raises CryptoError (AUTH_FAILED, REPLAYED, STALE_EPOCH...), FrameError or "
        "StateError (session dead).");

    m.def(
        "next_epoch_key",
        [](const SecretBlob& key) {
            if (key.value.size() > 255U * 32U) {
                throw py::value_error("key too long");
            }
            return to_py_bytes(sim::next_epoch_key(key.value));
        },
        py::arg("key"), "The key of the epoch after `key` (one-way HKDF step).");
}

}  // namespace simpy
