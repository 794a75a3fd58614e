#pragma once
/// @file
/// Payloads of the seed's inner frames (docs/protocol.md section 5): credentials in init, the token in
/// ack_init stage 1, the key in KEYGEN, and the sid + text inside a conversation record. Strict decoders: every
/// length is checked, trailing bytes are refused.

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/suite.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace sim {

/// The reserved source name of frames the server originates.
inline constexpr std::string_view server_name = "Server";

/// How an init frame authenticates.
enum class CredentialKind : std::uint8_t {
    none = 0,      ///< the connection is already authenticated
    password = 1,  ///< password login (open registration creates unknown users)
    token = 2,     ///< session token from an earlier login
    register_password = 3,  ///< explicit registration with a password
};

/// init payload. `secret` is a password or token: zeroized, never logged.
struct Credentials {
    CredentialKind kind = CredentialKind::none;
    SecureBytes secret;
};

Bytes encode_credentials(const Credentials& c);
/// Errc::truncated, Errc::bad_field (unknown kind, secret with kind none), Errc::trailing_bytes.
Result<Credentials> decode_credentials(ByteView payload);

/// ack_init stage 1 payload after a password login.
struct IssuedSessionToken {
    SecureBytes token;
    std::int64_t expires_unix_ms = 0;
};
Bytes encode_session_token(const IssuedSessionToken& t);
/// An empty payload decodes to an empty token (token login: nothing new issued).
Result<IssuedSessionToken> decode_session_token(ByteView payload);

/// KEYGEN payload: the conversation suite, the peer, and the key (24 bytes for TDES, 32 for the AEADs).
struct KeyAssignment {
    SuiteId suite = SuiteId::aes256_gcm;
    std::string peer;
    SecureBytes key;
};
Bytes encode_key_assignment(const KeyAssignment& k);
/// Errc::suite_not_allowed for an unknown suite, Errc::invalid_key when the key size does not fit the suite.
Result<KeyAssignment> decode_key_assignment(ByteView payload);

/// Plaintext of one conversation record: the seed's sid and the text.
struct ConversationBody {
    std::uint32_t sid = 0;
    std::string text;
};
Bytes encode_conversation_body(const ConversationBody& b);
Result<ConversationBody> decode_conversation_body(ByteView plaintext);

/// Directional conversation key from the KEYGEN key (docs/protocol.md 5.2):
/// HKDF-SHA256(salt = "", IKM = key, info = "libsim v1 conversation " || from || 0x00 || to, L = len(key)).
SecureBytes conversation_direction_key(ByteView key, std::string_view from, std::string_view to);

}  // namespace sim
