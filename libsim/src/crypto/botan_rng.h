#pragma once
// Adapter from sim::Rng to Botan's RandomNumberGenerator, for Botan calls that want one (bcrypt salts).

#include <sim/rng.h>

#include <botan/rng.h>

namespace sim::crypto::detail {

class BotanRngAdapter final : public Botan::RandomNumberGenerator {
public:
    explicit BotanRngAdapter(Rng& rng) : m_rng(rng) {}
    void randomize(uint8_t output[], size_t length) override { m_rng.fill({output, length}); }
    [[nodiscard]] bool accepts_input() const override { return false; }
    void add_entropy(const uint8_t* /*input*/, size_t /*length*/) override {}
    [[nodiscard]] std::string name() const override { return "sim::Rng"; }
    void clear() override {}
    [[nodiscard]] bool is_seeded() const override { return true; }

private:
    Rng& m_rng;
};

}  // namespace sim::crypto::detail
