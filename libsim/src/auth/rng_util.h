#pragma once
// Small Rng adapters used inside the auth module. Private to libsim.

#include <sim/rng.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace sim::auth::detail {

/// Serialises access to a caller's Rng, so objects documented as thread-safe can share one that is not.
class LockedRng final : public Rng {
public:
    explicit LockedRng(Rng& inner) : m_inner(inner) {}
    void fill(MutableByteView out) override {
        const std::lock_guard lock(m_mutex);
        m_inner.fill(out);
    }

private:
    Rng& m_inner;
    std::mutex m_mutex;
};

/// Hands out exactly the bytes it was given, once: lets a facade call that draws its salt from an Rng use a salt
/// chosen here. Asking for more than it holds is a bug and aborts.
class FixedRng final : public Rng {
public:
    explicit FixedRng(ByteView bytes) : m_bytes(bytes.begin(), bytes.end()) {}
    ~FixedRng() override { secure_zero(m_bytes.data(), m_bytes.size()); }
    FixedRng(const FixedRng&) = delete;
    FixedRng& operator=(const FixedRng&) = delete;
    void fill(MutableByteView out) override {
        if (out.size() > m_bytes.size() - m_used) {
            std::abort();
        }
        std::memcpy(out.data(), m_bytes.data() + m_used, out.size());
        m_used += out.size();
    }

private:
    Bytes m_bytes;
    std::size_t m_used = 0;
};

}  // namespace sim::auth::detail
