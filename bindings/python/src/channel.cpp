// libsim's channel handshake (Noise XX with suite negotiation and server key pinning), sans-IO: the caller moves
// the handshake messages in HANDSHAKE frames; the result is a pair of record sessions.
#include "py_session.h"

#include <sim/channel.h>
#include <sim/client.h>

#include <mutex>
#include <optional>
#include <vector>

namespace simpy {

namespace {

/// Pinned server keys (in memory, or a file), locked because handshakes use them with the GIL released.
class PyKnownServers final : public sim::KnownServers {
public:
    explicit PyKnownServers(std::unique_ptr<sim::KnownServers> inner) : m_inner(std::move(inner)) {}
    [[nodiscard]] std::optional<sim::Bytes> lookup(std::string_view server_id) const override {
        const std::lock_guard lock(m_mutex);
        return m_inner->lookup(server_id);
    }
    sim::Status remember(std::string_view server_id, sim::ByteView public_key) override {
        const std::lock_guard lock(m_mutex);
        return m_inner->remember(server_id, public_key);
    }

private:
    mutable std::mutex m_mutex;
    std::unique_ptr<sim::KnownServers> m_inner;
};

/// What a completed handshake hands over, as Python objects.
struct PyChannel {
    sim::HandshakeProtocol protocol;
    sim::SuiteId suite;
    py::object send;
    py::object recv;
    py::bytes handshake_hash;
    py::bytes peer_static;
    std::string server_fingerprint;
};

sim::SessionConfig channel_session(const std::optional<sim::RotationPolicy>& rotation) {
    auto cfg = sim::default_channel_session_config();
    if (rotation) {
        cfg.rotation = *rotation;
    }
    return cfg;
}

PyChannel to_channel(sim::ChannelEstablished&& est, const std::shared_ptr<PyRng>& rng, const ClockRef& clock) {
    PyChannel ch{est.protocol,
                 est.suite,
                 py::cast(std::make_unique<PySendSession>(std::move(est.send), rng, clock)),
                 py::cast(std::make_unique<PyRecvSession>(std::move(est.recv), rng, clock)),
                 to_py_bytes(est.handshake_hash),
                 to_py_bytes(est.peer_static),
                 est.server_fingerprint};
    return ch;
}

py::object failure_object(const sim::Error& err) {
    if (err.code == sim::Errc::ok) {
        return py::none();
    }
    return make_error_object(err);
}

/// Shared shape of the two handshake wrappers: collaborators kept alive, a lock, calls without the GIL.
template <typename Handshake>
class PyChannelHandshake {
public:
    PyChannelHandshake(std::shared_ptr<PyRng> rng, ClockRef clock, std::shared_ptr<PyKnownServers> known)
        : m_rng(std::move(rng)), m_clock(std::move(clock)), m_known(std::move(known)) {}

    template <typename F>
    auto run(F&& f) {
        auto result = [&] {
            const py::gil_scoped_release nogil;
            const std::lock_guard lock(m_mutex);
            return f(*m_hs);
        }();
        m_clock.rethrow();
        return result;
    }
    template <typename F>
    auto locked(F&& f) {
        const std::lock_guard lock(m_mutex);
        return f(*m_hs);
    }
    PyChannel finish() {
        auto est = unwrap(run([](Handshake& h) { return h.finish(); }));
        return to_channel(std::move(est), m_rng, m_clock);
    }

    std::shared_ptr<PyRng> m_rng;
    ClockRef m_clock;
    std::shared_ptr<PyKnownServers> m_known;
    std::mutex m_mutex;
    std::optional<Handshake> m_hs;
};

using PyClientHandshake = PyChannelHandshake<sim::ClientHandshake>;
using PyServerHandshake = PyChannelHandshake<sim::ServerHandshake>;

template <typename W>
void add_handshake_common(py::class_<W>& cls) {
    cls.def_property_readonly("next_action", [](W& w) { return w.locked([](auto& h) { return h.next_action(); }); })
        .def_property_readonly("server_fingerprint",
                               [](W& w) { return w.locked([](auto& h) { return h.server_fingerprint(); }); })
        .def_property_readonly(
            "failure", [](W& w) { return failure_object(w.locked([](auto& h) { return h.failure(); })); },
            "The error that failed the handshake (an Error object), or None.")
        .def(
            "write_message", [](W& w) { return to_py_bytes(unwrap(w.run([](auto& h) { return h.write_message(); }))); },
            "The next handshake message (send it as the payload of a HANDSHAKE frame).")
        .def(
            "read_message",
            [](W& w, const Blob& message) { check(w.run([&](auto& h) { return h.read_message(message.view()); })); },
            py::arg("message"), "The peer's next handshake message (the payload of its HANDSHAKE frame).")
        .def("finish", &W::finish, "The record sessions, once the handshake is COMPLETE.");
}

}  // namespace

void register_channel(py::module_& m) {
    py::enum_<sim::HandshakeProtocol>(m, "HandshakeProtocol", "The channel's handshake protocols (first byte).")
        .value("NOISE_XX_25519_CHACHAPOLY_SHA256", sim::HandshakeProtocol::noise_xx_25519_chachapoly_sha256)
        .value("NOISE_XX_25519_AESGCM_SHA256", sim::HandshakeProtocol::noise_xx_25519_aesgcm_sha256);
    py::enum_<sim::ChannelAction>(m, "ChannelAction", "What a channel handshake wants next.")
        .value("WRITE_MESSAGE", sim::ChannelAction::write_message)
        .value("READ_MESSAGE", sim::ChannelAction::read_message)
        .value("AWAITING_TRUST", sim::ChannelAction::awaiting_trust)
        .value("COMPLETE", sim::ChannelAction::complete)
        .value("FAILED", sim::ChannelAction::failed);

    py::class_<PyKnownServers, std::shared_ptr<PyKnownServers>>(
        m, "KnownServers", "Pinned server keys by server id: in memory, or in a file (KnownServers.open(path)).")
        .def(py::init([]() { return std::make_shared<PyKnownServers>(std::make_unique<sim::MemoryKnownServers>()); }))
        .def_static(
            "open",
            [](const py::object& path) {
                PyObject* p = PyOS_FSPath(path.ptr());
                if (p == nullptr) {
                    throw py::error_already_set();
                }
                const auto owned = py::reinterpret_steal<py::object>(p);
                auto file = unwrap(sim::FileKnownServers::open(text_from(owned, "path").value));
                return std::make_shared<PyKnownServers>(std::move(file));
            },
            py::arg("path"), "Pins kept in a text file (created with mode 0600 on the first pin).")
        .def(
            "lookup",
            [](const PyKnownServers& k, const Text& server_id) -> py::object {
                const auto key = k.lookup(server_id.value);
                if (!key) {
                    return py::none();
                }
                return to_py_bytes(*key);
            },
            py::arg("server_id"), "The pinned public key, or None.")
        .def(
            "remember",
            [](PyKnownServers& k, const Text& server_id, const Blob& public_key) {
                check(k.remember(server_id.value, public_key.view()));
            },
            py::arg("server_id"), py::arg("public_key"), "Pin a key (replacing an earlier pin).");

    py::class_<PyChannel>(m, "Channel", "A completed channel handshake: the record sessions and what was agreed.")
        .def_readonly("protocol", &PyChannel::protocol)
        .def_readonly("suite", &PyChannel::suite)
        .def_readonly("send", &PyChannel::send, "SendSession for our records")
        .def_readonly("recv", &PyChannel::recv, "RecvSession for the peer's records")
        .def_readonly("handshake_hash", &PyChannel::handshake_hash, "channel binding value (32 bytes)")
        .def_readonly("peer_static", &PyChannel::peer_static, "the peer's static public key")
        .def_readonly("server_fingerprint", &PyChannel::server_fingerprint);

    py::class_<PyClientHandshake> client(
        m, "ClientHandshake",
        "The client side of the channel handshake. Pins the server key in `known` per `trust` (AWAITING_TRUST: "
        "show server_fingerprint, then call trust()).");
    client
        .def(py::init([](const Text& server_id, std::shared_ptr<PyKnownServers> known,
                         const std::optional<SecretBlob>& static_private_key, sim::HandshakeProtocol protocol,
                         const std::optional<sim::SuitePolicy>& suites, sim::TrustMode trust,
                         const Text& expected_fingerprint, const std::optional<sim::RotationPolicy>& rotation,
                         const py::object& clock, const std::shared_ptr<PyRng>& rng) {
                 if (!known) {
                     known = std::make_shared<PyKnownServers>(std::make_unique<sim::MemoryKnownServers>());
                 }
                 auto w = std::make_unique<PyClientHandshake>(rng_or_system(rng), ClockRef::from(clock), known);
                 sim::ClientHandshakeConfig cfg;
                 cfg.server_id = server_id.value;
                 if (static_private_key) {
                     cfg.static_private_key = static_private_key->value;
                 }
                 cfg.protocol = protocol;
                 if (suites) {
                     cfg.suites = *suites;
                 }
                 cfg.trust = trust;
                 cfg.expected_fingerprint = expected_fingerprint.value;
                 cfg.session = channel_session(rotation);
                 w->m_hs.emplace(
                     unwrap(sim::ClientHandshake::create(std::move(cfg), *w->m_known, *w->m_rng, *w->m_clock.clock)));
                 return w;
             }),
             py::arg("server_id"), py::kw_only(), py::arg("known") = nullptr,
             py::arg("static_private_key") = py::none(),
             py::arg("protocol") = sim::HandshakeProtocol::noise_xx_25519_chachapoly_sha256,
             py::arg("suites") = py::none(), py::arg("trust") = sim::TrustMode::tofu,
             py::arg("expected_fingerprint") = Text{}, py::arg("rotation") = py::none(), py::arg("clock") = py::none(),
             py::arg("rng") = nullptr)
        .def(
            "trust",
            [](PyClientHandshake& w, bool accept) {
                check(w.run([accept](sim::ClientHandshake& h) { return h.trust(accept); }));
            },
            py::arg("accept"), "Answer AWAITING_TRUST: True pins the key and continues, False fails the handshake.");
    add_handshake_common(client);

    py::class_<PyServerHandshake> server(m, "ServerHandshake", "The server side of the channel handshake.");
    server.def(
        py::init([](const SecretBlob& static_private_key,
                    const std::optional<std::vector<sim::HandshakeProtocol>>& protocols,
                    const std::optional<sim::SuitePolicy>& suites, const std::optional<sim::RotationPolicy>& rotation,
                    const py::object& clock, const std::shared_ptr<PyRng>& rng) {
            auto w = std::make_unique<PyServerHandshake>(rng_or_system(rng), ClockRef::from(clock), nullptr);
            sim::ServerHandshakeConfig cfg;
            cfg.static_private_key = static_private_key.value;
            if (protocols) {
                cfg.protocols = *protocols;
            }
            if (suites) {
                cfg.suites = *suites;
            }
            cfg.session = channel_session(rotation);
            w->m_hs.emplace(unwrap(sim::ServerHandshake::create(std::move(cfg), *w->m_rng, *w->m_clock.clock)));
            return w;
        }),
        py::arg("static_private_key"), py::kw_only(), py::arg("protocols") = py::none(), py::arg("suites") = py::none(),
        py::arg("rotation") = py::none(), py::arg("clock") = py::none(), py::arg("rng") = nullptr);
    add_handshake_common(server);

    m.attr("CHANNEL_PROLOGUE") = py::bytes(std::string(sim::channel_prologue));
}

}  // namespace simpy
