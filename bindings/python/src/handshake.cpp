// The Noise handshake (XX, IK over 25519 with AESGCM or ChaChaPoly and SHA256) and its CipherStates.
#include "rng_clock.h"

#include <sim/handshake.h>

#include <mutex>
#include <optional>

namespace simpy {

namespace {

using sim::noise::Action;
using sim::noise::Cipher;
using sim::noise::CipherState;
using sim::noise::HandshakeState;
using sim::noise::Pattern;
using sim::noise::Role;

/// A CipherState with a lock: the GIL is released during encryption.
class PyCipherState {
public:
    explicit PyCipherState(CipherState cs) : m_cs(std::move(cs)) {}

    template <typename F>
    auto run(F&& f) {
        const py::gil_scoped_release nogil;
        const std::lock_guard lock(m_mutex);
        return f(m_cs);
    }
    template <typename F>
    auto locked(F&& f) {
        const std::lock_guard lock(m_mutex);
        return f(m_cs);
    }

private:
    std::mutex m_mutex;
    CipherState m_cs;
};

class PyHandshakeState {
public:
    PyHandshakeState(Pattern pattern, Cipher cipher, Role role, const SecretBlob& static_private, const Blob& prologue,
                     const std::optional<Blob>& remote_static, const std::optional<SecretBlob>& fixed_ephemeral,
                     const std::shared_ptr<PyRng>& rng)
        : m_rng(rng_or_system(rng)) {
        sim::noise::HandshakeConfig cfg;
        cfg.pattern = pattern;
        cfg.cipher = cipher;
        cfg.role = role;
        cfg.prologue = prologue.value;
        cfg.local_static_private = static_private.value;
        if (remote_static) {
            cfg.remote_static_public = remote_static->value;
        }
        if (fixed_ephemeral) {
            cfg.fixed_ephemeral_private = fixed_ephemeral->value;
        }
        m_hs.emplace(unwrap(HandshakeState::create(cfg, *m_rng)));
    }

    template <typename F>
    auto run(F&& f) {
        const py::gil_scoped_release nogil;
        const std::lock_guard lock(m_mutex);
        return f(*m_hs);
    }
    template <typename F>
    auto locked(F&& f) {
        const std::lock_guard lock(m_mutex);
        return f(*m_hs);
    }

private:
    std::mutex m_mutex;
    std::shared_ptr<PyRng> m_rng;
    std::optional<HandshakeState> m_hs;
};

}  // namespace

void register_handshake(py::module_& m) {
    py::enum_<Pattern>(m, "Pattern", "Noise handshake patterns (Noise spec s7.5).")
        .value("XX", Pattern::XX, "-> e; <- e, ee, s, es; -> s, se")
        .value("IK", Pattern::IK, "<- s ...; -> e, es, s, ss; <- e, ee, se");
    py::enum_<Cipher>(m, "NoiseCipher", "Noise cipher functions (Noise spec s12.3, s12.4).")
        .value("AESGCM", Cipher::aes_gcm)
        .value("CHACHAPOLY", Cipher::chacha_poly);
    py::enum_<Role>(m, "Role").value("INITIATOR", Role::initiator).value("RESPONDER", Role::responder);
    py::enum_<Action>(m, "Action", "What a HandshakeState wants next.")
        .value("WRITE_MESSAGE", Action::write_message)
        .value("READ_MESSAGE", Action::read_message)
        .value("SPLIT", Action::split)
        .value("COMPLETE", Action::complete)
        .value("FAILED", Action::failed);

    m.def("protocol_name", &sim::noise::protocol_name, py::arg("pattern"), py::arg("cipher"),
          "The Noise protocol name, e.g. 'Noise_XX_25519_ChaChaPoly_SHA256'.");
    m.attr("NOISE_MAX_MESSAGE_SIZE") = sim::noise::max_message_size;

    py::class_<PyCipherState>(m, "CipherState",
                              "A Noise CipherState (key + 64-bit nonce), from HandshakeState.split().")
        .def(py::init([](Cipher cipher, const SecretBlob& key) {
                 return std::make_unique<PyCipherState>(unwrap(CipherState::create(cipher, key.value)));
             }),
             py::arg("cipher"), py::arg("key"), "InitializeKey(key): 32 bytes (CryptoError otherwise).")
        .def(
            "encrypt_with_ad",
            [](PyCipherState& cs, const Blob& ad, const Blob& plaintext) {
                auto r = cs.run([&](CipherState& c) { return c.encrypt_with_ad(ad.view(), plaintext.view()); });
                return to_py_bytes(unwrap(std::move(r)));
            },
            py::arg("ad"), py::arg("plaintext"))
        .def(
            "decrypt_with_ad",
            [](PyCipherState& cs, const Blob& ad, const Blob& ciphertext) {
                auto r = cs.run([&](CipherState& c) { return c.decrypt_with_ad(ad.view(), ciphertext.view()); });
                return to_py_bytes(unwrap(std::move(r)));
            },
            py::arg("ad"), py::arg("ciphertext"), "Raises CryptoError AUTH_FAILED when the tag does not verify.")
        .def("rekey", [](PyCipherState& cs) { check(cs.run([](CipherState& c) { return c.rekey(); })); })
        .def_property(
            "nonce", [](PyCipherState& cs) { return cs.locked([](CipherState& c) { return c.nonce(); }); },
            [](PyCipherState& cs, std::uint64_t n) {
                cs.locked([n](CipherState& c) {
                    c.set_nonce(n);
                    return 0;
                });
            })
        .def_property_readonly("has_key",
                               [](PyCipherState& cs) { return cs.locked([](CipherState& c) { return c.has_key(); }); })
        .def_property_readonly("cipher",
                               [](PyCipherState& cs) { return cs.locked([](CipherState& c) { return c.cipher(); }); });

    py::class_<PyHandshakeState>(m, "HandshakeState",
                                 "A Noise handshake as a state machine: next_action says whether to write_message, "
                                 "read_message or split. Any error fails it for good (HandshakeState.failure).")
        .def(py::init<Pattern, Cipher, Role, const SecretBlob&, const Blob&, const std::optional<Blob>&,
                      const std::optional<SecretBlob>&, const std::shared_ptr<PyRng>&>(),
             py::kw_only(), py::arg("pattern"), py::arg("cipher"), py::arg("role"), py::arg("static_private"),
             py::arg("prologue") = Blob{}, py::arg("remote_static") = py::none(),
             py::arg("fixed_ephemeral") = py::none(), py::arg("rng") = nullptr,
             "`remote_static`: the responder's public key, for the IK initiator only. `fixed_ephemeral`: tests only "
             "(reproducing vectors).")
        .def_property_readonly(
            "next_action",
            [](PyHandshakeState& h) { return h.locked([](HandshakeState& s) { return s.next_action(); }); })
        .def(
            "write_message",
            [](PyHandshakeState& h, const Blob& payload) {
                auto r = h.run([&](HandshakeState& s) { return s.write_message(payload.view()); });
                return to_py_bytes(unwrap(std::move(r)));
            },
            py::arg("payload") = Blob{})
        .def(
            "read_message",
            [](PyHandshakeState& h, const Blob& message) {
                auto r = h.run([&](HandshakeState& s) { return s.read_message(message.view()); });
                return to_py_bytes(unwrap(std::move(r)));
            },
            py::arg("message"), "The payload of the peer's message; CryptoError / FrameError fail the handshake.")
        .def(
            "split",
            [](PyHandshakeState& h) {
                auto r = h.run([](HandshakeState& s) { return s.split(); });
                auto ciphers = unwrap(std::move(r));
                return py::make_tuple(std::make_unique<PyCipherState>(std::move(ciphers.initiator_to_responder)),
                                      std::make_unique<PyCipherState>(std::move(ciphers.responder_to_initiator)));
            },
            "The transport CipherStates (initiator->responder, responder->initiator).")
        .def_property_readonly("handshake_hash",
                               [](PyHandshakeState& h) {
                                   return h.locked([](HandshakeState& s) { return to_py_bytes(s.handshake_hash()); });
                               })
        .def_property_readonly("remote_static",
                               [](PyHandshakeState& h) {
                                   return h.locked([](HandshakeState& s) { return to_py_bytes(s.remote_static()); });
                               })
        .def_property_readonly("local_static",
                               [](PyHandshakeState& h) {
                                   return h.locked([](HandshakeState& s) { return to_py_bytes(s.local_static()); });
                               })
        .def_property_readonly(
            "failure",
            [](PyHandshakeState& h) -> py::object {
                const sim::Error err = h.locked([](HandshakeState& s) { return s.failure(); });
                if (err.code == sim::Errc::ok) {
                    return py::none();
                }
                return make_error_object(err);
            },
            "The error that failed the handshake (an Error object), or None.");
}

}  // namespace simpy
