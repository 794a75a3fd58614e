// Key helpers: X25519 key pairs and the fingerprint users compare.
#include "rng_clock.h"

#include <sim/channel.h>
#include <sim/crypto.h>
#include <sim/messages.h>

namespace simpy {

void register_crypto(py::module_& m) {
    m.def(
        "x25519_keypair",
        [](const std::shared_ptr<PyRng>& rng) {
            const auto r = rng_or_system(rng);
            sim::crypto::X25519KeyPair kp;
            {
                const py::gil_scoped_release nogil;
                kp = sim::crypto::x25519_generate(*r);
            }
            return py::make_tuple(to_py_bytes(kp.private_key), to_py_bytes(kp.public_key));
        },
        py::kw_only(), py::arg("rng") = nullptr,
        "A fresh X25519 key pair as (private_key, public_key), 32 bytes each. The private key is a secret: Python "
        "cannot wipe it, so keep it only as long as needed.");

    m.def(
        "x25519_public_key",
        [](const SecretBlob& private_key) {
            return to_py_bytes(unwrap(sim::crypto::x25519_from_private(private_key.value)).public_key);
        },
        py::arg("private_key"), "The public key of a 32-byte X25519 private key (CryptoError otherwise).");

    m.def(
        "fingerprint", [](const Blob& public_key) { return sim::fingerprint(public_key.view()); },
        py::arg("public_key"),
        "The fingerprint users compare: SHA-256 of the key in lower-case hex, 16 groups of 4 separated by spaces.");

    m.def(
        "pair_conversation_id",
        [](const std::string& a, const std::string& b) { return to_py_bytes(sim::pair_conversation_id(a, b)); },
        py::arg("a"), py::arg("b"),
        "The 16-byte conversation id of two users (canonical names, either order; docs/protocol.md 6.5).");
}

}  // namespace simpy
