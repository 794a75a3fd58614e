#pragma once
/// @file
/// The Noise Protocol Framework (revision 34), as far as libsim needs it: handshake patterns XX and IK over
/// Curve25519, cipher AESGCM or ChaChaPoly, hash SHA256. No PSK modes, no fallback.
///
/// `HandshakeState` is a sans-IO state machine in the shape of Noise-C: it says what it wants next
/// (`next_action()`), the caller moves the bytes. Any error moves it to `Action::failed` and wipes every secret; from
/// then on each call reports `Errc::invalid_state`. Section numbers in comments refer to the Noise specification.

#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace sim::noise {

/// Largest Noise message (handshake or transport), Noise s3.
inline constexpr std::size_t max_message_size = 65535;
/// DHLEN for 25519.
inline constexpr std::size_t dh_size = 32;
/// HASHLEN for SHA256.
inline constexpr std::size_t hash_size = 32;
/// Size of a CipherState key.
inline constexpr std::size_t key_size = 32;
/// Size of the AEAD tag added by EncryptWithAd under a key.
inline constexpr std::size_t tag_size = 16;

/// The handshake patterns implemented (Noise s7.5).
enum class Pattern : std::uint8_t {
    XX,  ///< -> e; <- e, ee, s, es; -> s, se
    IK,  ///< <- s ...; -> e, es, s, ss; <- e, ee, se
};

/// The cipher functions implemented (Noise s12.3 and s12.4).
enum class Cipher : std::uint8_t {
    aes_gcm,      ///< "AESGCM": AES-256-GCM, nonce = 4 zero bytes || 64-bit big-endian n
    chacha_poly,  ///< "ChaChaPoly": ChaCha20-Poly1305, nonce = 4 zero bytes || 64-bit little-endian n
};

/// Which side of the handshake this party plays.
enum class Role : std::uint8_t { initiator, responder };

/// What a `HandshakeState` wants next.
enum class Action : std::uint8_t {
    write_message,  ///< call write_message()
    read_message,   ///< call read_message()
    split,          ///< the handshake is done: call split()
    complete,       ///< split() was called; handshake_hash() and remote_static() stay readable
    failed,         ///< an error occurred; secrets are wiped and every call reports Errc::invalid_state
};

/// The protocol name, e.g. "Noise_XX_25519_ChaChaPoly_SHA256" (Noise s8).
std::string protocol_name(Pattern pattern, Cipher cipher);

/// A Noise CipherState (Noise s5.1): a key (possibly empty) and a 64-bit nonce counter.
///
/// Move-only. The key lives in zeroizing memory and is wiped by `clear()` and on destruction.
class CipherState {
public:
    /// A CipherState with no key: EncryptWithAd / DecryptWithAd pass data through unchanged.
    explicit CipherState(Cipher cipher = Cipher::chacha_poly) noexcept;
    /// InitializeKey(key): `key` must be 32 bytes (else Errc::invalid_key); n starts at 0.
    static Result<CipherState> create(Cipher cipher, ByteView key);

    CipherState(CipherState&& other) noexcept;
    CipherState& operator=(CipherState&& other) noexcept;
    CipherState(const CipherState&) = delete;
    CipherState& operator=(const CipherState&) = delete;
    ~CipherState();

    [[nodiscard]] Cipher cipher() const noexcept { return m_cipher; }
    /// HasKey().
    [[nodiscard]] bool has_key() const noexcept { return !m_key.empty(); }
    /// The raw 32-byte key (empty without a key), for handing to another record layer. Secret: never log it.
    [[nodiscard]] ByteView key() const noexcept { return m_key; }
    /// The next nonce value n.
    [[nodiscard]] std::uint64_t nonce() const noexcept { return m_n; }
    /// SetNonce(n).
    void set_nonce(std::uint64_t n) noexcept { m_n = n; }

    /// EncryptWithAd(ad, plaintext): ciphertext || tag, then n += 1. Errc::limit_reached when n has reached
    /// 2^64-1 (s5.1), Errc::frame_too_large when the result would exceed max_message_size.
    Result<Bytes> encrypt_with_ad(ByteView ad, ByteView plaintext);
    /// DecryptWithAd(ad, ciphertext): the plaintext, then n += 1. Errc::auth_failed when the tag does not verify
    /// (n is then unchanged), Errc::truncated for input shorter than the tag, Errc::limit_reached when n has reached
    /// 2^64-1, Errc::frame_too_large for input over max_message_size.
    Result<Bytes> decrypt_with_ad(ByteView ad, ByteView ciphertext);
    /// Rekey() (s4.2, s11.3): k = first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zero bytes); n is unchanged.
    /// Errc::invalid_state without a key.
    Status rekey();
    /// Wipe the key; the CipherState then has no key.
    void clear() noexcept;

private:
    Cipher m_cipher;
    SecureBytes m_key;
    std::unique_ptr<crypto::Aead> m_aead;
    std::uint64_t m_n = 0;
};

/// The two transport CipherStates from Split() (Noise s5.2), initiator->responder first.
struct TransportCiphers {
    CipherState initiator_to_responder;  ///< c1: the initiator encrypts, the responder decrypts
    CipherState responder_to_initiator;  ///< c2: the responder encrypts, the initiator decrypts
};

/// Everything a HandshakeState needs to start.
struct HandshakeConfig {
    Pattern pattern = Pattern::XX;
    Cipher cipher = Cipher::chacha_poly;
    Role role = Role::initiator;
    /// Hashed into h before the first message (s6); both sides must use the same bytes.
    Bytes prologue;
    /// Our static X25519 private key (32 bytes). Both XX and IK need one on both sides.
    SecureBytes local_static_private;
    /// The responder's static public key (32 bytes): required for the IK initiator, refused otherwise.
    Bytes remote_static_public;
    /// Tests only: the ephemeral private key to use instead of one drawn from the Rng (empty = draw).
    SecureBytes fixed_ephemeral_private;
};

/// A Noise HandshakeState (Noise s5.3) for one handshake.
class HandshakeState {
public:
    /// Initialize(): checks the configuration. Errc::invalid_key for a key of the wrong size, a missing local static
    /// key or a missing remote static key (IK initiator); Errc::invalid_argument for a remote static key where the
    /// pattern has none, or an unknown pattern, cipher or role. `rng` supplies the ephemeral key and must outlive the
    /// HandshakeState.
    static Result<HandshakeState> create(const HandshakeConfig& config, Rng& rng);

    HandshakeState(HandshakeState&& other) noexcept;
    HandshakeState& operator=(HandshakeState&& other) noexcept;
    HandshakeState(const HandshakeState&) = delete;
    HandshakeState& operator=(const HandshakeState&) = delete;
    ~HandshakeState();

    /// What the caller should do next.
    [[nodiscard]] Action next_action() const noexcept;

    /// WriteMessage(payload): the next handshake message. Errors: Errc::invalid_state when it is not our turn or
    /// after a failure; Errc::frame_too_large when the message would exceed max_message_size; Errc::invalid_key when
    /// a DH result is all zeros (low-order peer key). Every error fails the handshake.
    Result<Bytes> write_message(ByteView payload);

    /// ReadMessage(message): the payload of the peer's next handshake message. Errors: Errc::invalid_state (not our
    /// turn, or after a failure), Errc::frame_too_large (over max_message_size), Errc::truncated (too short for the
    /// keys and tags it must hold), Errc::auth_failed (a tag did not verify: tampering, wrong prologue, wrong keys),
    /// Errc::invalid_key (low-order peer key). Every error fails the handshake.
    Result<Bytes> read_message(ByteView message);

    /// Split(): the transport CipherStates. Only when next_action() is Action::split (else Errc::invalid_state);
    /// afterwards the chaining key is wiped and next_action() is Action::complete.
    Result<TransportCiphers> split();

    /// The current handshake hash h (after the last message: the channel binding value, s11.2). Empty after a
    /// failure.
    [[nodiscard]] ByteView handshake_hash() const noexcept;
    /// The peer's static public key once known (preset for the IK initiator, learned from a message otherwise);
    /// empty before that and after a failure.
    [[nodiscard]] ByteView remote_static() const noexcept;
    /// Our static public key (empty after a failure).
    [[nodiscard]] ByteView local_static() const noexcept;
    /// The error that failed the handshake (Errc::ok while it has not failed).
    [[nodiscard]] const Error& failure() const noexcept;

private:
    struct Impl;
    explicit HandshakeState(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> m_impl;
};

}  // namespace sim::noise
