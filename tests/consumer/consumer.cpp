// A separate program built against the *installed* libsim through pkg-config (see tests/consumer/run.sh).
#include <sim/crypto.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstdio>

int main() {
    auto rng = sim::make_system_rng();
    const auto alice = sim::crypto::x25519_generate(*rng);
    const auto bob = sim::crypto::x25519_generate(*rng);
    const auto ab = sim::crypto::x25519(alice.private_key, bob.public_key);
    const auto ba = sim::crypto::x25519(bob.private_key, alice.public_key);
    if (!ab || !ba || !sim::constant_time_equal(*ab, *ba)) {
        std::puts("consumer: X25519 agreement failed");
        return 1;
    }
    std::printf("consumer: linked libsim %s, X25519 agreement ok\n", SIM_CONSUMER_VERSION);
    return 0;
}
