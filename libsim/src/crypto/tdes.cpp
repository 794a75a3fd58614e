// Three-key Triple-DES (EDE) in CBC and ECB over Botan.
#include <sim/crypto.h>
#include <sim/testing.h>

#include <botan/block_cipher.h>
#include <botan/cipher_mode.h>
#include <botan/exceptn.h>

namespace sim::crypto {

namespace {

class BotanTdesCbc final : public TdesCbc {
public:
    BotanTdesCbc(ByteView key, bool pkcs7)
        : m_pkcs7(pkcs7),
          m_enc(Botan::Cipher_Mode::create_or_throw(mode_name(pkcs7), Botan::ENCRYPTION)),
          m_dec(Botan::Cipher_Mode::create_or_throw(mode_name(pkcs7), Botan::DECRYPTION)) {
        m_enc->set_key(key.data(), key.size());
        m_dec->set_key(key.data(), key.size());
    }

    Result<Bytes> encrypt(ByteView iv, ByteView plaintext) override {
        return run(*m_enc, iv, plaintext, Botan::ENCRYPTION);
    }
    Result<Bytes> decrypt(ByteView iv, ByteView ciphertext) override {
        return run(*m_dec, iv, ciphertext, Botan::DECRYPTION);
    }

private:
    static const char* mode_name(bool pkcs7) { return pkcs7 ? "TripleDES/CBC/PKCS7" : "TripleDES/CBC/NoPadding"; }

    Result<Bytes> run(Botan::Cipher_Mode& mode, ByteView iv, ByteView input, Botan::Cipher_Dir dir) {
        if (iv.size() != tdes_block_size) {
            return Error{Errc::invalid_argument, "Triple-DES IV must be 8 bytes"};
        }
        if (input.size() % tdes_block_size != 0) {
            // As documented in crypto.h: unpadded plaintext of the wrong length is the caller's mistake, a
            // ciphertext of the wrong length is bad input from outside.
            if (dir == Botan::DECRYPTION) {
                return Error{Errc::bad_length, "Triple-DES ciphertext is not a whole number of blocks"};
            }
            if (!m_pkcs7) {
                return Error{Errc::invalid_argument, "Triple-DES plaintext without padding must be whole blocks"};
            }
        }
        if (m_pkcs7 && dir == Botan::DECRYPTION && input.empty()) {
            return Error{Errc::bad_length, "Triple-DES ciphertext is empty"};
        }
        mode.start(iv.data(), iv.size());
        m_buf.assign(input.begin(), input.end());
        try {
            mode.finish(m_buf);
        } catch (const Botan::Exception&) {
            secure_zero(m_buf.data(), m_buf.size());
            mode.reset();
            return Error{Errc::auth_failed, "Triple-DES padding invalid"};
        }
        Bytes out(m_buf.begin(), m_buf.end());
        secure_zero(m_buf.data(), m_buf.size());
        return out;
    }

    bool m_pkcs7;
    std::unique_ptr<Botan::Cipher_Mode> m_enc;
    std::unique_ptr<Botan::Cipher_Mode> m_dec;
    Botan::secure_vector<uint8_t> m_buf;
};

Result<Bytes> run_ecb(ByteView key, ByteView blocks, bool encrypt) {
    if (key.size() != tdes_key_size) {
        return Error{Errc::invalid_key, "Triple-DES key must be 24 bytes"};
    }
    if (blocks.size() % tdes_block_size != 0) {
        return Error{Errc::bad_length, "Triple-DES input is not a whole number of blocks"};
    }
    const auto cipher = Botan::BlockCipher::create_or_throw("TripleDES");
    cipher->set_key(key.data(), key.size());
    Bytes out(blocks.begin(), blocks.end());
    const std::size_t n = out.size() / tdes_block_size;
    if (encrypt) {
        cipher->encrypt_n(out.data(), out.data(), n);
    } else {
        cipher->decrypt_n(out.data(), out.data(), n);
    }
    return out;
}

}  // namespace

Result<std::unique_ptr<TdesCbc>> make_tdes_cbc(ByteView key, bool pkcs7) {
    if (key.size() != tdes_key_size) {
        return Error{Errc::invalid_key, "Triple-DES key must be 24 bytes"};
    }
    return std::unique_ptr<TdesCbc>(std::make_unique<BotanTdesCbc>(key, pkcs7));
}

Result<Bytes> tdes_cbc_encrypt(ByteView key, ByteView iv, ByteView plaintext, bool pkcs7) {
    SIM_TRY(auto cbc, make_tdes_cbc(key, pkcs7));
    return cbc->encrypt(iv, plaintext);
}
Result<Bytes> tdes_cbc_decrypt(ByteView key, ByteView iv, ByteView ciphertext, bool pkcs7) {
    SIM_TRY(auto cbc, make_tdes_cbc(key, pkcs7));
    return cbc->decrypt(iv, ciphertext);
}

}  // namespace sim::crypto

namespace sim::testing {

Result<Bytes> tdes_ecb_encrypt(ByteView key, ByteView blocks) {
    return crypto::run_ecb(key, blocks, true);
}
Result<Bytes> tdes_ecb_decrypt(ByteView key, ByteView blocks) {
    return crypto::run_ecb(key, blocks, false);
}

}  // namespace sim::testing
