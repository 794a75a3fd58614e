#pragma once
/// @file
/// End-to-end encryption between clients (docs/protocol.md section 6): identity keys, prekeys, Signal's X3DH key
/// agreement, Signal's Double Ratchet, and safety numbers. Sans-IO and clock-free: the client core decides when to
/// create, use and persist a session; the server only ever sees the public parts (`PrekeyBundle`).

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>
#include <sim/suite.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sim::e2e {

inline constexpr std::size_t key_size = 32;        ///< Ed25519 and X25519 public and private keys
inline constexpr std::size_t signature_size = 64;  ///< Ed25519 signature
inline constexpr std::size_t session_id_size = 8;
/// Most message keys one incoming header may make the ratchet skip (the specification's MAX_SKIP).
inline constexpr std::uint32_t max_skip = 1000;
/// Most skipped message keys a session keeps; the oldest are dropped first.
inline constexpr std::size_t max_stored_skipped = 2000;
/// OPK id meaning "no one-time prekey was used".
inline constexpr std::uint32_t no_one_time_prekey = 0xFFFFFFFFU;

// ---------------------------------------------------------------- keys

/// A user's long-term identity: Ed25519 (signing); its X25519 form (RFC 7748 s4.1 birational map) is used for DH.
struct IdentityKeyPair {
    SecureBytes private_key;  ///< the 32-byte Ed25519 seed
    Bytes public_key;         ///< the 32-byte Ed25519 public key
};

/// A fresh identity.
IdentityKeyPair generate_identity(Rng& rng);
/// The identity with this Ed25519 seed. Errc::invalid_key when it is not 32 bytes.
Result<IdentityKeyPair> identity_from_private(ByteView seed);

/// X25519 public key of an Ed25519 public key (RFC 7748 s4.1: u = (1+y)/(1-y) mod p). Errc::invalid_key for a
/// non-canonical or low-order encoding (y >= p, y = 1, or a result u of 0).
Result<Bytes> identity_dh_public(ByteView ed25519_public);
/// X25519 private scalar of an Ed25519 seed: the first 32 bytes of SHA-512(seed) (X25519 clamps them).
Result<SecureBytes> identity_dh_private(ByteView ed25519_seed);

/// Ed25519 signature of `message` by the identity.
Result<Bytes> sign(const IdentityKeyPair& identity, ByteView message);
/// True when `signature` is a valid Ed25519 signature of `message` by `ed25519_public`; false otherwise
/// (malformed keys and signatures included).
bool verify(ByteView ed25519_public, ByteView message, ByteView signature);

/// Encode(PK) of X3DH: 0x05 followed by the 32-byte X25519 public key.
Bytes encode_public_key(ByteView x25519_public);

struct SignedPrekey {
    std::uint32_t id = 0;
    SecureBytes private_key;  ///< X25519, 32 bytes
    Bytes public_key;         ///< X25519, 32 bytes
    Bytes signature;          ///< Ed25519 by the identity over Encode(public_key)
};
SignedPrekey generate_signed_prekey(const IdentityKeyPair& identity, std::uint32_t id, Rng& rng);

struct OneTimePrekey {
    std::uint32_t id = 0;
    SecureBytes private_key;
    Bytes public_key;
};
OneTimePrekey generate_one_time_prekey(std::uint32_t id, Rng& rng);

/// What the server hands out for a user: the public parts.
struct PrekeyBundle {
    Bytes identity_key;  ///< Ed25519 public
    std::uint32_t signed_prekey_id = 0;
    Bytes signed_prekey;
    Bytes signed_prekey_signature;
    std::optional<std::uint32_t> one_time_prekey_id;
    Bytes one_time_prekey;  ///< empty when there is none

    friend bool operator==(const PrekeyBundle&, const PrekeyBundle&) = default;
};
/// Sizes and the SPK signature. Errc::invalid_key (sizes, key encodings), Errc::auth_failed (signature).
Status verify_bundle(const PrekeyBundle& bundle);

// ---------------------------------------------------------------- safety numbers

/// Signal's numeric fingerprint, version 0 (docs/protocol.md 6.4): 60 digits as 12 groups of 5 separated by
/// spaces. Symmetric: safety_number(a, ka, b, kb) == safety_number(b, kb, a, ka).
std::string safety_number(std::string_view name_a, ByteView identity_a, std::string_view name_b, ByteView identity_b);

// ---------------------------------------------------------------- messages

enum class MessageType : std::uint8_t { initial = 1, normal = 2 };

/// The X3DH part of an initial message.
struct InitialHeader {
    Bytes identity_key;   ///< IK_A, Ed25519 public
    Bytes ephemeral_key;  ///< EK_A, X25519 public
    std::uint32_t signed_prekey_id = 0;
    std::uint32_t one_time_prekey_id = no_one_time_prekey;
    SuiteId suite = SuiteId::aes256_gcm;
};

/// What a receiver can learn from a RatchetMessage without keys: enough to find or create its session.
struct MessageInfo {
    MessageType type = MessageType::normal;
    Bytes session_id;                      ///< session_id_size bytes
    std::optional<InitialHeader> initial;  ///< set for MessageType::initial
};
/// Parse the clear part of a RatchetMessage. Errc::truncated, Errc::bad_field (type, suite), Errc::invalid_key.
Result<MessageInfo> inspect(ByteView message);

// ---------------------------------------------------------------- sessions

/// One X3DH-initiated Double Ratchet session with one peer. Not thread-safe.
class Session {
public:
    /// Initiator: X3DH with a peer's bundle (verified here: Errc::auth_failed for a bad SPK signature).
    /// `suite` seals the messages (TDES, AES-256-GCM, ChaCha20-Poly1305).
    static Result<Session> initiate(const IdentityKeyPair& ours, std::string_view our_name,
                                    const PrekeyBundle& theirs, std::string_view their_name, SuiteId suite, Rng& rng);
    /// Responder: X3DH from an initial message's header, with our SPK and the OPK it names (null when none;
    /// the caller deletes the OPK once the first message has opened). Errc::invalid_key for bad keys.
    static Result<Session> respond(const IdentityKeyPair& ours, std::string_view our_name, const SignedPrekey& spk,
                                   const OneTimePrekey* opk, const InitialHeader& initial,
                                   std::string_view their_name, Rng& rng);

    /// A RatchetMessage carrying `plaintext` (type initial until a message of this session has been received).
    Result<Bytes> seal(ByteView plaintext);
    /// The plaintext of a RatchetMessage of this session. Errc::auth_failed (forged, replayed, wrong session),
    /// Errc::limit_reached (needs more than max_skip skipped keys), Errc::truncated / bad_field (malformed).
    /// The session is unchanged when it fails.
    Result<SecureBytes> open(ByteView message);

    [[nodiscard]] ByteView session_id() const noexcept;
    /// The peer's identity key (Ed25519 public) this session is bound to.
    [[nodiscard]] ByteView peer_identity() const noexcept;
    [[nodiscard]] SuiteId suite() const noexcept;
    /// True once a message of this session has been received (the initiator then stops sending initial headers).
    [[nodiscard]] bool received_any() const noexcept;
    /// True after a DH ratchet step on receipt until the next seal: the peer waits for our new ratchet key.
    [[nodiscard]] bool reply_pending() const noexcept;
    /// Number of DH ratchet steps so far (for tests and the key_rotated event).
    [[nodiscard]] std::uint64_t dh_steps() const noexcept;
    /// Skipped message keys currently kept.
    [[nodiscard]] std::size_t skipped_keys() const noexcept;

    /// The whole state (keys included: store it only encrypted). `deserialize` gets the same Rng back.
    [[nodiscard]] SecureBytes serialize() const;
    static Result<Session> deserialize(ByteView state, Rng& rng);

    Session(Session&&) noexcept;
    Session& operator=(Session&&) noexcept;
    ~Session();

    struct State;  ///< opaque

private:
    explicit Session(std::unique_ptr<State> state);
    std::unique_ptr<State> m_state;
};

}  // namespace sim::e2e
