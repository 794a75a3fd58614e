#include "wire.h"

#include <sim/crypto.h>
#include <sim/messages.h>

#include <algorithm>
#include <limits>

namespace sim {

using detail::WireReader;
using detail::WireWriter;

Bytes encode_credentials(const Credentials& c) {
    Bytes out;
    WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(c.kind));
    // Secrets longer than the u16 field are cut; callers check password length (auth::check_password) first.
    const auto n = std::min<std::size_t>(c.secret.size(), std::numeric_limits<std::uint16_t>::max());
    w.u16(static_cast<std::uint16_t>(n));
    w.bytes(ByteView{c.secret}.first(n));
    return out;
}

Result<Credentials> decode_credentials(ByteView payload) {
    WireReader r(payload);
    std::uint8_t kind = 0;
    std::uint16_t len = 0;
    ByteView secret;
    if (!r.u8(kind) || !r.u16(len) || !r.take(len, secret)) {
        return Error{Errc::truncated, "credentials truncated"};
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after credentials"};
    }
    if (kind > static_cast<std::uint8_t>(CredentialKind::register_password)) {
        return Error{Errc::bad_field, "unknown credential kind"};
    }
    Credentials c;
    c.kind = static_cast<CredentialKind>(kind);
    if ((c.kind == CredentialKind::none) != secret.empty()) {
        return Error{Errc::bad_field, "credential secret does not fit its kind"};
    }
    c.secret.assign(secret.begin(), secret.end());
    return c;
}

Bytes encode_session_token(const IssuedSessionToken& t) {
    Bytes out;
    if (t.token.empty()) {
        return out;
    }
    WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(t.token.size()));
    w.bytes(t.token);
    w.u64(static_cast<std::uint64_t>(t.expires_unix_ms));
    return out;
}

Result<IssuedSessionToken> decode_session_token(ByteView payload) {
    IssuedSessionToken t;
    if (payload.empty()) {
        return t;
    }
    WireReader r(payload);
    std::uint8_t len = 0;
    ByteView token;
    std::uint64_t expires = 0;
    if (!r.u8(len) || !r.take(len, token) || !r.u64(expires)) {
        return Error{Errc::truncated, "session token truncated"};
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after session token"};
    }
    if (token.empty()) {
        return Error{Errc::bad_field, "empty session token"};
    }
    t.token.assign(token.begin(), token.end());
    t.expires_unix_ms = static_cast<std::int64_t>(expires);
    return t;
}

Bytes encode_key_assignment(const KeyAssignment& k) {
    Bytes out;
    WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(k.suite));
    w.u8(static_cast<std::uint8_t>(k.peer.size()));
    w.text(k.peer);
    w.u8(static_cast<std::uint8_t>(k.key.size()));
    w.bytes(k.key);
    return out;
}

Result<KeyAssignment> decode_key_assignment(ByteView payload) {
    WireReader r(payload);
    std::uint8_t suite = 0;
    std::uint8_t peer_len = 0;
    std::uint8_t key_len = 0;
    ByteView peer;
    ByteView key;
    if (!r.u8(suite) || !r.u8(peer_len) || !r.take(peer_len, peer) || !r.u8(key_len) || !r.take(key_len, key)) {
        return Error{Errc::truncated, "key assignment truncated"};
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after key assignment"};
    }
    const auto id = suite_from_wire(suite);
    if (!id) {
        return Error{Errc::suite_not_allowed, "unknown conversation suite"};
    }
    if (key.size() != suite_key_size(*id)) {
        return Error{Errc::invalid_key, "conversation key size does not fit the suite"};
    }
    if (peer.empty()) {
        return Error{Errc::bad_field, "key assignment without a peer"};
    }
    KeyAssignment k;
    k.suite = *id;
    k.peer = to_string(peer);
    k.key.assign(key.begin(), key.end());
    return k;
}

Bytes encode_conversation_body(const ConversationBody& b) {
    Bytes out;
    out.reserve(4 + b.text.size());
    WireWriter w(out);
    w.u32(b.sid);
    w.text(b.text);
    return out;
}

Result<ConversationBody> decode_conversation_body(ByteView plaintext) {
    WireReader r(plaintext);
    ConversationBody b;
    if (!r.u32(b.sid)) {
        return Error{Errc::truncated, "conversation body truncated"};
    }
    b.text = to_string(r.rest());
    return b;
}

SecureBytes conversation_direction_key(ByteView key, std::string_view from, std::string_view to) {
    Bytes info;
    WireWriter w(info);
    w.text("libsim v1 conversation ");
    w.text(from);
    w.u8(0);
    w.text(to);
    auto out = crypto::hkdf_sha256({}, key, info, key.size());
    return std::move(out).value();  // length is at most 64: cannot fail
}

}  // namespace sim
