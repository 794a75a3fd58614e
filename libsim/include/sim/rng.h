#pragma once
/// @file
/// Randomness is injected: the core never reaches for a global RNG.

#include <sim/bytes.h>

#include <memory>

namespace sim {

/// Source of random bytes.
class Rng {
public:
    virtual ~Rng() = default;
    /// Fill `out` with random bytes. Must not fail; an implementation that cannot deliver aborts.
    virtual void fill(MutableByteView out) = 0;

    /// Convenience: `n` fresh random bytes.
    Bytes bytes(std::size_t n) {
        Bytes b(n);
        fill(b);
        return b;
    }
    /// Convenience: `n` fresh random bytes in a zeroizing buffer.
    SecureBytes secure_bytes(std::size_t n) {
        SecureBytes b(n);
        fill(b);
        return b;
    }
};

/// The operating system's RNG (getrandom), thread-safe. The default everywhere outside tests.
std::unique_ptr<Rng> make_system_rng();

/// A deterministic RNG (ChaCha20 keyed by `seed`), for tests and reproducible benchmarks only.
std::unique_ptr<Rng> make_deterministic_rng(ByteView seed);

}  // namespace sim
