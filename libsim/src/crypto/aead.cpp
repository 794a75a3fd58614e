// AES-256-GCM and ChaCha20-Poly1305 over Botan's AEAD_Mode.
#include <sim/crypto.h>

#include <botan/aead.h>
#include <botan/exceptn.h>

namespace sim::crypto {

namespace {

// The two directions are created on first use: a record session only ever seals or only ever opens, and each
// Botan GCM object holds about 3 KiB (GHASH's 2 KiB multiplication table, AES key schedules, CTR buffers), which
// per idle server connection is most of what the connection costs.
class BotanAead final : public Aead {
public:
    explicit BotanAead(const char* name) : m_name(name) {}

    Result<Bytes> seal(ByteView nonce, ByteView ad, ByteView plaintext) override {
        Bytes out;
        SIM_TRY_STATUS(seal_into(nonce, ad, plaintext, out));
        return out;
    }

    Status seal_into(ByteView nonce, ByteView ad, ByteView plaintext, Bytes& out) override {
        if (nonce.size() != aead_nonce_size) {
            return Error{Errc::invalid_argument, "AEAD nonce must be 12 bytes"};
        }
        auto& enc = mode(m_enc, Botan::ENCRYPTION);
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
        auto& dec = mode(m_dec, Botan::DECRYPTION);
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
        if (key.size() != aead_key_size) {
            return Error{Errc::invalid_key, "AEAD key must be 32 bytes"};
        }
        m_key.assign(key.begin(), key.end());
        if (m_enc) {
            m_enc->set_key(m_key.data(), m_key.size());
        }
        if (m_dec) {
            m_dec->set_key(m_key.data(), m_key.size());
        }
        return ok();
    }

private:
    // One working buffer per thread, wiped after every use, instead of one per AEAD that keeps the capacity of
    // the largest record it ever saw (16 KiB per idle session after one large message).
    static Botan::secure_vector<uint8_t>& scratch() {
        thread_local Botan::secure_vector<uint8_t> buffer;
        return buffer;
    }

    Botan::AEAD_Mode& mode(std::unique_ptr<Botan::AEAD_Mode>& slot, Botan::Cipher_Dir dir) {
        if (!slot) {
            slot = Botan::AEAD_Mode::create_or_throw(m_name, dir);
            slot->set_key(m_key.data(), m_key.size());
        }
        return *slot;
    }

    const char* m_name;
    SecureBytes m_key;
    std::unique_ptr<Botan::AEAD_Mode> m_enc;
    std::unique_ptr<Botan::AEAD_Mode> m_dec;
};

}  // namespace

Result<std::unique_ptr<Aead>> make_aead(AeadAlgorithm alg, ByteView key) {
    const char* name = alg == AeadAlgorithm::aes256_gcm ? "AES-256/GCM" : "ChaCha20Poly1305";
    auto aead = std::make_unique<BotanAead>(name);
    SIM_TRY_STATUS(aead->rekey(key));
    return std::unique_ptr<Aead>(std::move(aead));
}

}  // namespace sim::crypto
