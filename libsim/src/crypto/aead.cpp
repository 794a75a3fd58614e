// AES-256-GCM, AES-128-GCM and ChaCha20-Poly1305 over Botan's AEAD_Mode.
#include <sim/crypto.h>

#include <botan/aead.h>
#include <botan/exceptn.h>

#include <atomic>
#include <mutex>
#include <vector>

namespace sim::crypto {

namespace {

// ---------------------------------------------------------------- keyed Botan objects, bounded per process
//
// A keyed Botan AES-256/GCM object holds about 3.6 KiB (GHASH's 2 KiB multiplication table, AES key schedules,
// CTR buffers; ChaCha20Poly1305 about 0.8 KiB). A server holds two per connection (one per direction), so for
// idle connections these objects would be most of the server's memory. An Aead therefore keeps only its key, and
// a keyed Botan object per direction exists only while the direction is in use: at most max_live_modes of them
// exist in the process; beyond that the least recently used one (CLOCK approximation) is destroyed, which wipes
// its key schedule, and re-created from the key on its next use (about 2.6 us for GCM, 1 us for ChaCha20).

constexpr std::size_t max_live_modes = 2048;

struct ModeSlot {
    std::mutex mutex;  // held while the mode is used, re-keyed or evicted
    std::unique_ptr<Botan::AEAD_Mode> mode;
    std::atomic<bool> referenced{false};
    std::size_t ring_index = 0;  // position in Ring::slots while `mode` is set (guarded by Ring::mutex)
    bool in_ring = false;        // guarded by Ring::mutex
};

class Ring {
public:
    static Ring& instance() {
        // Deliberately never destroyed: an Aead in a static object may be destroyed after function statics.
        static Ring* const ring = new Ring();  // NOLINT(cppcoreguidelines-owning-memory)
        return *ring;
    }

    // Make room for one more live mode: evict unreferenced, idle modes while the ring is full. Never blocks on a
    // slot (try_lock), so it cannot deadlock with a user that holds its own slot and waits for the ring.
    void make_room(const ModeSlot* self) {
        std::vector<std::unique_ptr<Botan::AEAD_Mode>> evicted;  // destroyed outside the lock
        {
            const std::lock_guard lock(mutex);
            std::size_t budget = 2 * slots.size();
            while (slots.size() >= max_live_modes && budget-- > 0) {
                if (hand >= slots.size()) {
                    hand = 0;
                }
                ModeSlot* victim = slots[hand];
                if (victim == self || victim->referenced.exchange(false)) {
                    ++hand;
                    continue;
                }
                if (!victim->mutex.try_lock()) {
                    ++hand;
                    continue;
                }
                evicted.push_back(std::move(victim->mode));
                remove_locked(*victim);
                victim->mutex.unlock();
            }
        }
    }

    void add(ModeSlot& slot) {
        const std::lock_guard lock(mutex);
        slot.ring_index = slots.size();
        slot.in_ring = true;
        slots.push_back(&slot);
    }

    void remove(ModeSlot& slot) {
        const std::lock_guard lock(mutex);
        if (slot.in_ring) {
            remove_locked(slot);
        }
    }

private:
    void remove_locked(ModeSlot& slot) {
        const std::size_t i = slot.ring_index;
        slots[i] = slots.back();
        slots[i]->ring_index = i;
        slots.pop_back();
        slot.in_ring = false;
    }

    std::mutex mutex;
    std::vector<ModeSlot*> slots;
    std::size_t hand = 0;
};

class BotanAead final : public Aead {
public:
    BotanAead(const char* name, std::size_t key_size) : m_name(name), m_key_size(key_size) {}
    ~BotanAead() override {
        Ring::instance().remove(m_enc);
        Ring::instance().remove(m_dec);
    }
    BotanAead(const BotanAead&) = delete;
    BotanAead& operator=(const BotanAead&) = delete;

    Result<Bytes> seal(ByteView nonce, ByteView ad, ByteView plaintext) override {
        Bytes out;
        SIM_TRY_STATUS(seal_into(nonce, ad, plaintext, out));
        return out;
    }

    Status seal_into(ByteView nonce, ByteView ad, ByteView plaintext, Bytes& out) override {
        if (nonce.size() != aead_nonce_size) {
            return Error{Errc::invalid_argument, "AEAD nonce must be 12 bytes"};
        }
        auto lock = acquire(m_enc, Botan::ENCRYPTION);
        auto& enc = *m_enc.mode;
        auto& buf = scratch();
        buf.assign(plaintext.begin(), plaintext.end());
        enc.set_associated_data(ad.data(), ad.size());
        enc.start(nonce.data(), nonce.size());
        enc.finish(buf);
        out.insert(out.end(), buf.begin(), buf.end());
        secure_zero(buf.data(), buf.size());
        return ok();
    }

    Result<Bytes> open(ByteView nonce, ByteView ad, ByteView ciphertext) override {
        if (nonce.size() != aead_nonce_size) {
            return Error{Errc::invalid_argument, "AEAD nonce must be 12 bytes"};
        }
        if (ciphertext.size() < aead_tag_size) {
            return Error{Errc::auth_failed, "ciphertext shorter than the tag"};
        }
        auto lock = acquire(m_dec, Botan::DECRYPTION);
        auto& dec = *m_dec.mode;
        auto& buf = scratch();
        buf.assign(ciphertext.begin(), ciphertext.end());
        try {
            dec.set_associated_data(ad.data(), ad.size());
            dec.start(nonce.data(), nonce.size());
            dec.finish(buf);
        } catch (const Botan::Integrity_Failure&) {
            secure_zero(buf.data(), buf.size());
            dec.reset();
            return Errc::auth_failed;
        }
        Bytes out(buf.begin(), buf.end());
        secure_zero(buf.data(), buf.size());
        return out;
    }

    Status rekey(ByteView key) override {
        if (key.size() != m_key_size) {
            return Error{Errc::invalid_key, m_key_size == aead_key_size ? "AEAD key must be 32 bytes"
                                                                        : "AES-128-GCM key must be 16 bytes"};
        }
        for (ModeSlot* slot : {&m_enc, &m_dec}) {
            const std::lock_guard lock(slot->mutex);
            if (slot->mode) {
                slot->mode->set_key(key.data(), key.size());
            }
        }
        m_key.assign(key.begin(), key.end());
        return ok();
    }

private:
    // One working buffer per thread, wiped after every use, instead of one per AEAD that keeps the capacity of
    // the largest record it ever saw (16 KiB per idle session after one large message).
    static Botan::secure_vector<uint8_t>& scratch() {
        thread_local Botan::secure_vector<uint8_t> buffer;
        return buffer;
    }

    // The slot locked, with a keyed mode in it.
    std::unique_lock<std::mutex> acquire(ModeSlot& slot, Botan::Cipher_Dir dir) {
        std::unique_lock lock(slot.mutex);
        if (!slot.mode) {
            lock.unlock();  // never wait for the ring while holding a slot the ring may try
            Ring::instance().make_room(&slot);
            auto mode = Botan::AEAD_Mode::create_or_throw(m_name, dir);
            mode->set_key(m_key.data(), m_key.size());
            lock.lock();
            if (!slot.mode) {
                slot.mode = std::move(mode);
                Ring::instance().add(slot);
            }
        }
        slot.referenced.store(true, std::memory_order_relaxed);
        return lock;
    }

    const char* m_name;
    std::size_t m_key_size;
    SecureBytes m_key;
    ModeSlot m_enc;
    ModeSlot m_dec;
};

}  // namespace

Result<std::unique_ptr<Aead>> make_aead(AeadAlgorithm alg, ByteView key) {
    const char* name = "ChaCha20Poly1305";
    if (alg == AeadAlgorithm::aes256_gcm) {
        name = "AES-256/GCM";
    } else if (alg == AeadAlgorithm::aes128_gcm) {
        name = "AES-128/GCM";
    }
    auto aead = std::make_unique<BotanAead>(name, aead_key_size_of(alg));
    SIM_TRY_STATUS(aead->rekey(key));
    return std::unique_ptr<Aead>(std::move(aead));
}

}  // namespace sim::crypto
