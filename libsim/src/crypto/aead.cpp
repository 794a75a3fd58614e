// AES-256-GCM and ChaCha20-Poly1305 over Botan's AEAD_Mode.
#include <sim/crypto.h>

#include <botan/aead.h>
#include <botan/exceptn.h>

namespace sim::crypto {

namespace {

class BotanAead final : public Aead {
public:
    BotanAead(std::unique_ptr<Botan::AEAD_Mode> enc, std::unique_ptr<Botan::AEAD_Mode> dec)
        : m_enc(std::move(enc)), m_dec(std::move(dec)) {}

    Result<Bytes> seal(ByteView nonce, ByteView ad, ByteView plaintext) override {
        Bytes out;
        SIM_TRY_STATUS(seal_into(nonce, ad, plaintext, out));
        return out;
    }

    Status seal_into(ByteView nonce, ByteView ad, ByteView plaintext, Bytes& out) override {
        if (nonce.size() != aead_nonce_size) {
            return Error{Errc::invalid_argument, "AEAD nonce must be 12 bytes"};
        }
        m_buf.assign(plaintext.begin(), plaintext.end());
        m_enc->set_associated_data(ad.data(), ad.size());
        m_enc->start(nonce.data(), nonce.size());
        m_enc->finish(m_buf);
        out.insert(out.end(), m_buf.begin(), m_buf.end());
        secure_zero(m_buf.data(), m_buf.size());
        return ok();
    }

    Result<Bytes> open(ByteView nonce, ByteView ad, ByteView ciphertext) override {
        if (nonce.size() != aead_nonce_size) {
            return Error{Errc::invalid_argument, "AEAD nonce must be 12 bytes"};
        }
        if (ciphertext.size() < aead_tag_size) {
            return Error{Errc::auth_failed, "ciphertext shorter than the tag"};
        }
        m_buf.assign(ciphertext.begin(), ciphertext.end());
        try {
            m_dec->set_associated_data(ad.data(), ad.size());
            m_dec->start(nonce.data(), nonce.size());
            m_dec->finish(m_buf);
        } catch (const Botan::Integrity_Failure&) {
            secure_zero(m_buf.data(), m_buf.size());
            m_dec->reset();
            return Errc::auth_failed;
        }
        Bytes out(m_buf.begin(), m_buf.end());
        secure_zero(m_buf.data(), m_buf.size());
        return out;
    }

    Status rekey(ByteView key) override {
        if (key.size() != aead_key_size) {
            return Error{Errc::invalid_key, "AEAD key must be 32 bytes"};
        }
        m_enc->set_key(key.data(), key.size());
        m_dec->set_key(key.data(), key.size());
        return ok();
    }

private:
    std::unique_ptr<Botan::AEAD_Mode> m_enc;
    std::unique_ptr<Botan::AEAD_Mode> m_dec;
    Botan::secure_vector<uint8_t> m_buf;
};

}  // namespace

Result<std::unique_ptr<Aead>> make_aead(AeadAlgorithm alg, ByteView key) {
    const char* name = alg == AeadAlgorithm::aes256_gcm ? "AES-256/GCM" : "ChaCha20Poly1305";
    auto aead = std::make_unique<BotanAead>(Botan::AEAD_Mode::create_or_throw(name, Botan::ENCRYPTION),
                                            Botan::AEAD_Mode::create_or_throw(name, Botan::DECRYPTION));
    SIM_TRY_STATUS(aead->rekey(key));
    return std::unique_ptr<Aead>(std::move(aead));
}

}  // namespace sim::crypto
