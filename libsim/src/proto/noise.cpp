// The Noise Protocol Framework, revision 34 (https://noiseprotocol.org/noise.html): CipherState (s5.1),
// SymmetricState (s5.2) and HandshakeState (s5.3) for patterns XX and IK, DH 25519, AESGCM / ChaChaPoly, SHA256.
// Built only on the facade in <sim/crypto.h>.
#include <sim/handshake.h>

#include <array>
#include <limits>
#include <span>
#include <utility>
#include <vector>

namespace sim::noise {

namespace {

constexpr std::uint64_t max_nonce = std::numeric_limits<std::uint64_t>::max();

/// Zero a secret buffer and give its memory back (clear() alone would keep the bytes in the capacity).
void wipe(SecureBytes& b) noexcept {
    secure_zero(b.data(), b.size());
    b.clear();
    b.shrink_to_fit();
}

void wipe(Bytes& b) noexcept {
    secure_zero(b.data(), b.size());
    b.clear();
    b.shrink_to_fit();
}

crypto::AeadAlgorithm aead_of(Cipher c) noexcept {
    return c == Cipher::aes_gcm ? crypto::AeadAlgorithm::aes256_gcm : crypto::AeadAlgorithm::chacha20_poly1305;
}

/// s12.3 / s12.4: 32 bits of zeros followed by the 64-bit counter, big-endian for AESGCM, little-endian for
/// ChaChaPoly.
std::array<std::uint8_t, crypto::aead_nonce_size> encode_nonce(Cipher c, std::uint64_t n) noexcept {
    std::array<std::uint8_t, crypto::aead_nonce_size> nonce{};
    for (std::size_t i = 0; i < 8; ++i) {
        const auto byte = static_cast<std::uint8_t>(n >> (8U * i));
        if (c == Cipher::aes_gcm) {
            nonce[11 - i] = byte;
        } else {
            nonce[4 + i] = byte;
        }
    }
    return nonce;
}

/// HKDF(chaining_key, input_key_material, num_outputs) of Noise s4.3, built from HMAC-HASH. With HASHLEN = 32 no
/// truncation is needed for the keys.
std::vector<SecureBytes> noise_hkdf(ByteView chaining_key, ByteView ikm, std::size_t num_outputs) {
    const SecureBytes temp_key = crypto::hmac_sha256(chaining_key, ikm);
    std::vector<SecureBytes> outputs;
    outputs.reserve(num_outputs);
    SecureBytes input;
    for (std::size_t i = 1; i <= num_outputs; ++i) {
        input.clear();
        if (!outputs.empty()) {
            input.assign(outputs.back().begin(), outputs.back().end());
        }
        input.push_back(static_cast<std::uint8_t>(i));
        outputs.push_back(crypto::hmac_sha256(temp_key, input));
    }
    secure_zero(input.data(), input.size());
    return outputs;
}

enum class Token : std::uint8_t { e, s, ee, es, se, ss };

using MessagePattern = std::vector<Token>;

/// s7.5: the message patterns (pre-messages are handled in HandshakeState::create).
const std::vector<MessagePattern>& message_patterns(Pattern p) {
    static const std::vector<MessagePattern> xx = {
        {Token::e},
        {Token::e, Token::ee, Token::s, Token::es},
        {Token::s, Token::se},
    };
    static const std::vector<MessagePattern> ik = {
        {Token::e, Token::es, Token::s, Token::ss},
        {Token::e, Token::ee, Token::se},
    };
    return p == Pattern::XX ? xx : ik;
}

/// s5.2 SymmetricState.
class SymmetricState {
public:
    explicit SymmetricState(Cipher cipher) : m_cs(cipher) {}

    /// InitializeSymmetric(protocol_name).
    void initialize(const std::string& name) {
        const ByteView bytes = as_bytes(name);
        if (bytes.size() <= hash_size) {
            m_h.assign(bytes.begin(), bytes.end());
            m_h.resize(hash_size, 0);
        } else {
            m_h = crypto::sha256(bytes);
        }
        m_ck.assign(m_h.begin(), m_h.end());
        m_cs = CipherState(m_cs.cipher());
    }

    void mix_hash(ByteView data) { m_h = crypto::sha256(m_h, data); }

    Status mix_key(ByteView ikm) {
        auto out = noise_hkdf(m_ck, ikm, 2);
        m_ck = std::move(out[0]);
        SIM_TRY(m_cs, CipherState::create(m_cs.cipher(), out[1]));
        return ok();
    }

    [[nodiscard]] bool has_key() const noexcept { return m_cs.has_key(); }

    Result<Bytes> encrypt_and_hash(ByteView plaintext) {
        SIM_TRY(Bytes ciphertext, m_cs.encrypt_with_ad(m_h, plaintext));
        mix_hash(ciphertext);
        return ciphertext;
    }

    Result<Bytes> decrypt_and_hash(ByteView ciphertext) {
        SIM_TRY(Bytes plaintext, m_cs.decrypt_with_ad(m_h, ciphertext));
        mix_hash(ciphertext);
        return plaintext;
    }

    Result<TransportCiphers> split() {
        auto out = noise_hkdf(m_ck, {}, 2);
        SIM_TRY(CipherState c1, CipherState::create(m_cs.cipher(), out[0]));
        SIM_TRY(CipherState c2, CipherState::create(m_cs.cipher(), out[1]));
        wipe_keys();
        return TransportCiphers{std::move(c1), std::move(c2)};
    }

    [[nodiscard]] ByteView h() const noexcept { return m_h; }

    void wipe_keys() noexcept {
        wipe(m_ck);
        m_cs.clear();
    }

    void wipe_all() noexcept {
        wipe_keys();
        wipe(m_h);
    }

private:
    CipherState m_cs;
    SecureBytes m_ck;
    Bytes m_h;
};

}  // namespace

std::string protocol_name(Pattern pattern, Cipher cipher) {
    std::string name = "Noise_";
    name += pattern == Pattern::XX ? "XX" : "IK";
    name += "_25519_";
    name += cipher == Cipher::aes_gcm ? "AESGCM" : "ChaChaPoly";
    name += "_SHA256";
    return name;
}

// ---------------------------------------------------------------- CipherState

CipherState::CipherState(Cipher cipher) noexcept : m_cipher(cipher) {}

CipherState::CipherState(CipherState&& other) noexcept
    : m_cipher(other.m_cipher), m_key(std::move(other.m_key)), m_aead(std::move(other.m_aead)), m_n(other.m_n) {
    other.m_key.clear();
    other.m_n = 0;
}

CipherState& CipherState::operator=(CipherState&& other) noexcept {
    if (this != &other) {
        clear();
        m_cipher = other.m_cipher;
        m_key = std::move(other.m_key);
        m_aead = std::move(other.m_aead);
        m_n = other.m_n;
        other.m_key.clear();
        other.m_n = 0;
    }
    return *this;
}

CipherState::~CipherState() {
    clear();
}

Result<CipherState> CipherState::create(Cipher cipher, ByteView key) {
    if (key.size() != key_size) {
        return Error{Errc::invalid_key, "Noise cipher key must be 32 bytes"};
    }
    if (cipher != Cipher::aes_gcm && cipher != Cipher::chacha_poly) {
        return Error{Errc::invalid_argument, "unknown Noise cipher"};
    }
    CipherState cs(cipher);
    SIM_TRY(cs.m_aead, crypto::make_aead(aead_of(cipher), key));
    cs.m_key.assign(key.begin(), key.end());
    return cs;
}

void CipherState::clear() noexcept {
    wipe(m_key);
    m_aead.reset();
    m_n = 0;
}

Result<Bytes> CipherState::encrypt_with_ad(ByteView ad, ByteView plaintext) {
    if (!has_key()) {
        if (plaintext.size() > max_message_size) {
            return Error{Errc::frame_too_large, "Noise message longer than 65535 bytes"};
        }
        return to_bytes(plaintext);
    }
    if (plaintext.size() > max_message_size - tag_size) {
        return Error{Errc::frame_too_large, "Noise message longer than 65535 bytes"};
    }
    if (m_n == max_nonce) {
        return Error{Errc::limit_reached, "Noise nonce exhausted"};
    }
    const auto nonce = encode_nonce(m_cipher, m_n);
    SIM_TRY(Bytes out, m_aead->seal(nonce, ad, plaintext));
    ++m_n;
    return out;
}

Result<Bytes> CipherState::decrypt_with_ad(ByteView ad, ByteView ciphertext) {
    if (ciphertext.size() > max_message_size) {
        return Error{Errc::frame_too_large, "Noise message longer than 65535 bytes"};
    }
    if (!has_key()) {
        return to_bytes(ciphertext);
    }
    if (m_n == max_nonce) {
        return Error{Errc::limit_reached, "Noise nonce exhausted"};
    }
    if (ciphertext.size() < tag_size) {
        return Error{Errc::truncated, "Noise ciphertext shorter than its tag"};
    }
    const auto nonce = encode_nonce(m_cipher, m_n);
    auto out = m_aead->open(nonce, ad, ciphertext);
    if (!out) {
        return Error{Errc::auth_failed, "Noise ciphertext did not authenticate"};
    }
    ++m_n;
    return out;
}

Status CipherState::rekey() {
    if (!has_key()) {
        return Error{Errc::invalid_state, "Noise rekey without a key"};
    }
    static const std::array<std::uint8_t, key_size> zeros{};
    const auto nonce = encode_nonce(m_cipher, max_nonce);
    SIM_TRY(Bytes sealed, m_aead->seal(nonce, {}, zeros));
    SecureBytes new_key(sealed.begin(), sealed.begin() + key_size);
    wipe(sealed);
    SIM_TRY_STATUS(m_aead->rekey(new_key));
    m_key = std::move(new_key);
    return ok();
}

// ---------------------------------------------------------------- HandshakeState

struct HandshakeState::Impl {
    explicit Impl(Cipher c) : sym(c) {}

    Rng* rng = nullptr;
    Pattern pattern = Pattern::XX;
    Cipher cipher = Cipher::chacha_poly;
    Role role = Role::initiator;
    SymmetricState sym;
    SecureBytes s_priv;
    Bytes s_pub;
    SecureBytes e_priv;
    Bytes e_pub;
    SecureBytes fixed_e;
    Bytes rs;
    Bytes re;
    std::size_t msg_index = 0;
    Action action = Action::failed;
    Error failure{Errc::ok};

    [[nodiscard]] bool initiator() const noexcept { return role == Role::initiator; }

    void update_action() {
        const auto& msgs = message_patterns(pattern);
        if (msg_index >= msgs.size()) {
            action = Action::split;
            return;
        }
        const bool initiator_turn = msg_index % 2 == 0;
        action = initiator_turn == initiator() ? Action::write_message : Action::read_message;
    }

    /// Move to the failed state, wipe every secret and return the error for the caller.
    Error fail(Error err) {
        if (action != Action::failed) {
            failure = err;
        }
        action = Action::failed;
        sym.wipe_all();
        wipe(s_priv);
        wipe(e_priv);
        wipe(fixed_e);
        wipe(s_pub);
        wipe(e_pub);
        wipe(rs);
        wipe(re);
        return err;
    }

    static Result<SecureBytes> dh(ByteView priv, ByteView pub, const char* which) {
        auto shared = crypto::x25519(priv, pub);
        if (!shared) {
            return Error{Errc::invalid_key, std::string("Noise DH ") + which + " rejected the peer key"};
        }
        return shared;
    }

    Status mix_dh(Token t) {
        Result<SecureBytes> shared = Errc::internal;
        switch (t) {
            case Token::ee:
                shared = dh(e_priv, re, "ee");
                break;
            case Token::es:
                shared = initiator() ? dh(e_priv, rs, "es") : dh(s_priv, re, "es");
                break;
            case Token::se:
                shared = initiator() ? dh(s_priv, re, "se") : dh(e_priv, rs, "se");
                break;
            case Token::ss:
                shared = dh(s_priv, rs, "ss");
                break;
            default:
                return Error{Errc::internal, "not a DH token"};
        }
        if (!shared) {
            return std::move(shared).error();
        }
        return sym.mix_key(*shared);
    }

    Result<Bytes> write(ByteView payload) {
        Bytes out;
        for (const Token t : message_patterns(pattern)[msg_index]) {
            switch (t) {
                case Token::e: {
                    crypto::X25519KeyPair pair;
                    if (!fixed_e.empty()) {
                        SIM_TRY(pair, crypto::x25519_from_private(fixed_e));
                        wipe(fixed_e);
                    } else {
                        pair = crypto::x25519_generate(*rng);
                    }
                    e_priv = std::move(pair.private_key);
                    e_pub = std::move(pair.public_key);
                    out.insert(out.end(), e_pub.begin(), e_pub.end());
                    sym.mix_hash(e_pub);
                    break;
                }
                case Token::s: {
                    SIM_TRY(const Bytes ct, sym.encrypt_and_hash(s_pub));
                    out.insert(out.end(), ct.begin(), ct.end());
                    break;
                }
                default:
                    SIM_TRY_STATUS(mix_dh(t));
                    break;
            }
        }
        if (out.size() + payload.size() + (sym.has_key() ? tag_size : 0) > max_message_size) {
            return Error{Errc::frame_too_large, "Noise handshake message would exceed 65535 bytes"};
        }
        SIM_TRY(const Bytes ct, sym.encrypt_and_hash(payload));
        out.insert(out.end(), ct.begin(), ct.end());
        return out;
    }

    Result<Bytes> read(ByteView message) {
        if (message.size() > max_message_size) {
            return Error{Errc::frame_too_large, "Noise handshake message longer than 65535 bytes"};
        }
        ByteView rest = message;
        for (const Token t : message_patterns(pattern)[msg_index]) {
            switch (t) {
                case Token::e: {
                    if (rest.size() < dh_size) {
                        return Error{Errc::truncated, "Noise handshake message too short for an ephemeral key"};
                    }
                    re.assign(rest.begin(), rest.begin() + dh_size);
                    rest = rest.subspan(dh_size);
                    sym.mix_hash(re);
                    break;
                }
                case Token::s: {
                    const std::size_t len = dh_size + (sym.has_key() ? tag_size : 0);
                    if (rest.size() < len) {
                        return Error{Errc::truncated, "Noise handshake message too short for a static key"};
                    }
                    auto key = sym.decrypt_and_hash(rest.first(len));
                    if (!key) {
                        return Error{key.code(), "Noise static key did not authenticate"};
                    }
                    rs = std::move(*key);
                    rest = rest.subspan(len);
                    break;
                }
                default:
                    SIM_TRY_STATUS(mix_dh(t));
                    break;
            }
        }
        if (sym.has_key() && rest.size() < tag_size) {
            return Error{Errc::truncated, "Noise handshake message too short for the payload tag"};
        }
        auto payload = sym.decrypt_and_hash(rest);
        if (!payload) {
            return Error{payload.code(), "Noise handshake payload did not authenticate"};
        }
        return payload;
    }
};

HandshakeState::HandshakeState(std::unique_ptr<Impl> impl) noexcept : m_impl(std::move(impl)) {}
HandshakeState::HandshakeState(HandshakeState&&) noexcept = default;
HandshakeState& HandshakeState::operator=(HandshakeState&&) noexcept = default;

HandshakeState::~HandshakeState() {
    if (m_impl) {
        m_impl->fail(Errc::closed);
    }
}

Result<HandshakeState> HandshakeState::create(const HandshakeConfig& config, Rng& rng) {
    if (config.pattern != Pattern::XX && config.pattern != Pattern::IK) {
        return Error{Errc::invalid_argument, "unknown Noise pattern"};
    }
    if (config.cipher != Cipher::aes_gcm && config.cipher != Cipher::chacha_poly) {
        return Error{Errc::invalid_argument, "unknown Noise cipher"};
    }
    if (config.role != Role::initiator && config.role != Role::responder) {
        return Error{Errc::invalid_argument, "unknown Noise role"};
    }
    const bool needs_remote = config.pattern == Pattern::IK && config.role == Role::initiator;
    if (needs_remote && config.remote_static_public.size() != dh_size) {
        return Error{Errc::invalid_key, "IK initiator needs the responder's 32-byte static public key"};
    }
    if (!needs_remote && !config.remote_static_public.empty()) {
        return Error{Errc::invalid_argument, "this pattern and role take no remote static key"};
    }
    if (!config.fixed_ephemeral_private.empty() && config.fixed_ephemeral_private.size() != dh_size) {
        return Error{Errc::invalid_key, "fixed ephemeral key must be 32 bytes"};
    }
    auto local = crypto::x25519_from_private(config.local_static_private);
    if (!local) {
        return Error{Errc::invalid_key, "Noise needs a 32-byte local static private key"};
    }

    auto impl = std::make_unique<Impl>(config.cipher);
    impl->rng = &rng;
    impl->pattern = config.pattern;
    impl->cipher = config.cipher;
    impl->role = config.role;
    impl->s_priv = std::move(local->private_key);
    impl->s_pub = std::move(local->public_key);
    impl->fixed_e = config.fixed_ephemeral_private;
    impl->rs = config.remote_static_public;

    impl->sym.initialize(protocol_name(config.pattern, config.cipher));
    impl->sym.mix_hash(config.prologue);
    // s7.1: pre-message "<- s" of IK: both sides hash the responder's static public key.
    if (config.pattern == Pattern::IK) {
        impl->sym.mix_hash(config.role == Role::initiator ? ByteView{impl->rs} : ByteView{impl->s_pub});
    }
    impl->update_action();
    return HandshakeState(std::move(impl));
}

Action HandshakeState::next_action() const noexcept {
    return m_impl ? m_impl->action : Action::failed;
}

Result<Bytes> HandshakeState::write_message(ByteView payload) {
    if (!m_impl) {
        return Error{Errc::invalid_state, "Noise handshake moved from"};
    }
    if (m_impl->action != Action::write_message) {
        return m_impl->fail(Error{Errc::invalid_state, "Noise handshake: not expecting write_message"});
    }
    auto out = m_impl->write(payload);
    if (!out) {
        return m_impl->fail(std::move(out).error());
    }
    ++m_impl->msg_index;
    m_impl->update_action();
    return out;
}

Result<Bytes> HandshakeState::read_message(ByteView message) {
    if (!m_impl) {
        return Error{Errc::invalid_state, "Noise handshake moved from"};
    }
    if (m_impl->action != Action::read_message) {
        return m_impl->fail(Error{Errc::invalid_state, "Noise handshake: not expecting read_message"});
    }
    auto payload = m_impl->read(message);
    if (!payload) {
        return m_impl->fail(std::move(payload).error());
    }
    ++m_impl->msg_index;
    m_impl->update_action();
    return payload;
}

Result<TransportCiphers> HandshakeState::split() {
    if (!m_impl) {
        return Error{Errc::invalid_state, "Noise handshake moved from"};
    }
    if (m_impl->action != Action::split) {
        return m_impl->fail(Error{Errc::invalid_state, "Noise handshake: not ready to split"});
    }
    auto ciphers = m_impl->sym.split();
    if (!ciphers) {
        return m_impl->fail(std::move(ciphers).error());
    }
    wipe(m_impl->s_priv);
    wipe(m_impl->e_priv);
    m_impl->action = Action::complete;
    return ciphers;
}

ByteView HandshakeState::handshake_hash() const noexcept {
    if (!m_impl || m_impl->action == Action::failed) {
        return {};
    }
    return m_impl->sym.h();
}

ByteView HandshakeState::remote_static() const noexcept {
    if (!m_impl || m_impl->action == Action::failed) {
        return {};
    }
    return m_impl->rs;
}

ByteView HandshakeState::local_static() const noexcept {
    if (!m_impl || m_impl->action == Action::failed) {
        return {};
    }
    return m_impl->s_pub;
}

const Error& HandshakeState::failure() const noexcept {
    static const Error moved{Errc::invalid_state, "Noise handshake moved from"};
    if (!m_impl) {
        return moved;
    }
    return m_impl->failure;
}

}  // namespace sim::noise
