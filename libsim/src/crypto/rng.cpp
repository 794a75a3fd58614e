#include <sim/bytes.h>
#include <sim/rng.h>

#include <botan/chacha_rng.h>
#include <botan/hash.h>
#include <botan/mem_ops.h>
#include <botan/system_rng.h>

#include <mutex>

namespace sim {

void secure_zero(void* data, std::size_t len) noexcept {
    if (data != nullptr && len != 0) {
        Botan::secure_scrub_memory(data, len);
    }
}

bool constant_time_equal(ByteView a, ByteView b) noexcept {
    if (a.size() != b.size()) {
        return false;
    }
    return a.empty() || Botan::constant_time_compare(a.data(), b.data(), a.size());
}

namespace {

class SystemRng final : public Rng {
public:
    void fill(MutableByteView out) override { Botan::system_rng().randomize(out.data(), out.size()); }
};

// Botan's ChaCha_RNG counts itself seeded only after 32 bytes of seed input and throws PRNG_Unseeded otherwise,
// so a short seed such as "test seed" would make every draw throw. Hash the seed to a 32-byte key first: any seed
// length works and distinct seeds still give distinct streams.
Botan::secure_vector<uint8_t> seed_key(ByteView seed) {
    const auto hash = Botan::HashFunction::create_or_throw("SHA-256");
    hash->update(seed.data(), seed.size());
    return hash->final();
}

class DeterministicRng final : public Rng {
public:
    explicit DeterministicRng(ByteView seed) : m_rng(seed_key(seed)) {}
    void fill(MutableByteView out) override {
        const std::lock_guard lock(m_mutex);
        m_rng.randomize(out.data(), out.size());
    }

private:
    std::mutex m_mutex;
    Botan::ChaCha_RNG m_rng;
};

}  // namespace

std::unique_ptr<Rng> make_system_rng() { return std::make_unique<SystemRng>(); }

std::unique_ptr<Rng> make_deterministic_rng(ByteView seed) { return std::make_unique<DeterministicRng>(seed); }

}  // namespace sim
