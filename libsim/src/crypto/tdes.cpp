// Three-key Triple-DES (EDE) in CBC and ECB over Botan.
#include <sim/crypto.h>

#include <botan/block_cipher.h>
#include <botan/cipher_mode.h>
#include <botan/exceptn.h>

namespace sim::crypto {

namespace {

Status check_key_iv(ByteView key, ByteView iv) {
    if (key.size() != tdes_key_size) {
        return Error{Errc::invalid_key, "Triple-DES key must be 24 bytes"};
    }
    if (iv.size() != tdes_block_size) {
        return Error{Errc::invalid_argument, "Triple-DES IV must be 8 bytes"};
    }
    return ok();
}

Result<Bytes> run_cbc(ByteView key, ByteView iv, ByteView input, bool pkcs7, Botan::Cipher_Dir dir) {
    SIM_TRY_STATUS(check_key_iv(key, iv));
    if (input.size() % tdes_block_size != 0) {
        // As documented in crypto.h: unpadded plaintext of the wrong length is the caller's mistake, a ciphertext
        // of the wrong length is bad input from outside.
        if (dir == Botan::DECRYPTION) {
            return Error{Errc::bad_length, "Triple-DES ciphertext is not a whole number of blocks"};
        }
        if (!pkcs7) {
            return Error{Errc::invalid_argument, "Triple-DES plaintext without padding must be whole blocks"};
        }
    }
    if (pkcs7 && dir == Botan::DECRYPTION && input.empty()) {
        return Error{Errc::bad_length, "Triple-DES ciphertext is empty"};
    }
    auto mode = Botan::Cipher_Mode::create_or_throw(pkcs7 ? "TripleDES/CBC/PKCS7" : "TripleDES/CBC/NoPadding", dir);
    mode->set_key(key.data(), key.size());
    mode->start(iv.data(), iv.size());
    Botan::secure_vector<uint8_t> buf(input.begin(), input.end());
    try {
        mode->finish(buf);
    } catch (const Botan::Exception&) {
        secure_zero(buf.data(), buf.size());
        return Error{Errc::auth_failed, "Triple-DES padding invalid"};
    }
    Bytes out(buf.begin(), buf.end());
    secure_zero(buf.data(), buf.size());
    return out;
}

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

Result<Bytes> tdes_cbc_encrypt(ByteView key, ByteView iv, ByteView plaintext, bool pkcs7) {
    return run_cbc(key, iv, plaintext, pkcs7, Botan::ENCRYPTION);
}
Result<Bytes> tdes_cbc_decrypt(ByteView key, ByteView iv, ByteView ciphertext, bool pkcs7) {
    return run_cbc(key, iv, ciphertext, pkcs7, Botan::DECRYPTION);
}
Result<Bytes> tdes_ecb_encrypt(ByteView key, ByteView blocks) { return run_ecb(key, blocks, true); }
Result<Bytes> tdes_ecb_decrypt(ByteView key, ByteView blocks) { return run_ecb(key, blocks, false); }

}  // namespace sim::crypto
