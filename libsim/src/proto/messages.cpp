#include "wire.h"

#include <sim/crypto.h>
#include <sim/messages.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <tuple>

namespace sim {

using detail::WireReader;
using detail::WireWriter;
using detail::from_wire_ms;
using detail::to_wire_ms;

Bytes encode_credentials(const Credentials& c) {
    Bytes out;
    WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(c.kind));
    // Secrets longer than the u16 field are cut; callers check password length (auth::check_password) first.
    const auto n = std::min<std::size_t>(c.secret.size(), std::numeric_limits<std::uint16_t>::max());
    w.u16(static_cast<std::uint16_t>(n));
    w.bytes(ByteView{c.secret}.first(n));
    if (c.device) {
        w.u32(*c.device);
    }
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
    std::optional<DeviceId> device;
    if (!r.at_end()) {
        DeviceId d = 0;
        if (!r.u32(d)) {
            return Error{Errc::truncated, "device id truncated"};
        }
        device = d;
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
    if (c.kind == CredentialKind::none && device) {
        return Error{Errc::bad_field, "a device id without a login"};
    }
    c.secret.assign(secret.begin(), secret.end());
    c.device = device;
    return c;
}

Bytes encode_password_change(const PasswordChange& c) {
    Bytes out;
    WireWriter w(out);
    for (const auto* p : {&c.old_password, &c.new_password}) {
        // Longer than the u16 field is cut; callers check the length (auth::check_password) first.
        const auto n = std::min<std::size_t>(p->size(), std::numeric_limits<std::uint16_t>::max());
        w.u16(static_cast<std::uint16_t>(n));
        w.bytes(ByteView{*p}.first(n));
    }
    return out;
}

Result<PasswordChange> decode_password_change(ByteView payload) {
    WireReader r(payload);
    PasswordChange c;
    for (auto* p : {&c.old_password, &c.new_password}) {
        std::uint16_t len = 0;
        ByteView v;
        if (!r.u16(len) || !r.take(len, v)) {
            return Error{Errc::truncated, "password change truncated"};
        }
        if (v.empty()) {
            return Error{Errc::bad_password, "empty password"};
        }
        p->assign(v.begin(), v.end());
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after the password change"};
    }
    return c;
}

Bytes encode_session_token(const IssuedSessionToken& t) {
    Bytes out;
    if (t.token.empty() && !t.device) {
        return out;
    }
    WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(t.token.size()));
    w.bytes(t.token);
    w.u64(static_cast<std::uint64_t>(t.expires_unix_ms));
    if (t.device) {
        w.u32(*t.device);
    }
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
        DeviceId d = 0;
        if (!r.u32(d)) {
            return Error{Errc::truncated, "device id truncated"};
        }
        if (d == 0) {
            return Error{Errc::bad_field, "device 0"};
        }
        t.device = d;
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after session token"};
    }
    if (token.empty() && !t.device) {
        return Error{Errc::bad_field, "empty session token"};
    }
    t.token.assign(token.begin(), token.end());
    t.expires_unix_ms = static_cast<std::int64_t>(expires);
    return t;
}

std::string_view conversation_mode_name(ConversationMode mode) noexcept {
    switch (mode) {
        case ConversationMode::server_assigned:
            return "server-assigned";
        case ConversationMode::end_to_end:
            return "end-to-end";
    }
    return "unknown";
}

namespace {

constexpr std::size_t message_id_size = std::tuple_size_v<MessageId>;

std::optional<ConversationMode> mode_from_wire(std::uint8_t v) noexcept {
    switch (static_cast<ConversationMode>(v)) {
        case ConversationMode::server_assigned:
        case ConversationMode::end_to_end:
            return static_cast<ConversationMode>(v);
    }
    return std::nullopt;
}

Bytes copy(ByteView v) {
    return Bytes(v.begin(), v.end());
}

// Writes at most 255 bytes of a u8-length-prefixed name (names are at most 64 bytes; see frame.h).
template <typename Vec>
void write_short_text(WireWriter<Vec>& w, std::string_view s) {
    const auto n = std::min<std::size_t>(s.size(), std::numeric_limits<std::uint8_t>::max());
    w.u8(static_cast<std::uint8_t>(n));
    w.text(s.substr(0, n));
}

// Ids are written as given; a list longer than the u16 field is cut (callers send at most max_ids_per_frame).
void write_ids(WireWriter<Bytes>& w, const std::vector<MessageId>& ids) {
    const auto n = std::min<std::size_t>(ids.size(), std::numeric_limits<std::uint16_t>::max());
    w.u16(static_cast<std::uint16_t>(n));
    for (std::size_t i = 0; i < n; ++i) {
        w.bytes(ids[i]);
    }
}

// count u16 | count x id; 1..max_ids_per_frame ids. The count is checked before the ids are read.
Result<std::vector<MessageId>> read_ids(WireReader& r, std::string_view what) {
    std::uint16_t count = 0;
    if (!r.u16(count)) {
        return Error{Errc::truncated, std::string(what) + " truncated"};
    }
    if (count == 0 || count > max_ids_per_frame) {
        return Error{Errc::bad_field, std::string(what) + ": 1 to 256 message ids"};
    }
    std::vector<MessageId> ids(count);
    for (auto& id : ids) {
        ByteView raw;
        if (!r.take(message_id_size, raw)) {
            return Error{Errc::truncated, std::string(what) + " truncated"};
        }
        std::copy(raw.begin(), raw.end(), id.begin());
    }
    return ids;
}

}  // namespace

namespace {

constexpr std::uint8_t keygen_device_bundles = 3;  // KEYGEN mode 3 (docs/protocol.md 6.2)

template <typename Vec>
void write_bundle(WireWriter<Vec>& w, const e2e::PrekeyBundle& b) {
    w.bytes(b.identity_key);
    w.u32(b.signed_prekey_id);
    w.bytes(b.signed_prekey);
    w.bytes(b.signed_prekey_signature);
    w.u8(b.one_time_prekey_id ? 1 : 0);
    if (b.one_time_prekey_id) {
        w.u32(*b.one_time_prekey_id);
        w.bytes(b.one_time_prekey);
    }
}

}  // namespace

Bytes encode_key_assignment(const KeyAssignment& k) {
    Bytes out;
    WireWriter w(out);
    if (k.mode == ConversationMode::server_assigned) {
        w.u8(static_cast<std::uint8_t>(k.mode));
        w.u8(static_cast<std::uint8_t>(k.suite));
        write_short_text(w, k.peer);
        w.u8(static_cast<std::uint8_t>(k.key.size()));
        w.bytes(k.key);
        return out;
    }
    if (!k.device_list.empty()) {
        w.u8(keygen_device_bundles);
        write_short_text(w, k.peer);
        w.u8(static_cast<std::uint8_t>(k.suite));
        w.bytes(k.account_key);
        w.u32(static_cast<std::uint32_t>(k.device_list.size()));
        w.bytes(k.device_list);
        w.u8(static_cast<std::uint8_t>(k.device_bundles.size()));
        for (const auto& d : k.device_bundles) {
            w.u32(d.device);
            write_bundle(w, d.bundle);
        }
        return out;
    }
    w.u8(static_cast<std::uint8_t>(k.mode));
    write_short_text(w, k.peer);
    w.u8(static_cast<std::uint8_t>(k.suite));
    // A missing bundle is written as an empty one, which the decoder refuses (truncated).
    write_bundle(w, k.bundle ? *k.bundle : e2e::PrekeyBundle{});
    return out;
}

namespace {

Result<KeyAssignment> decode_server_assigned_key(WireReader& r) {
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
    k.mode = ConversationMode::server_assigned;
    k.suite = *id;
    k.peer = to_string(peer);
    k.key.assign(key.begin(), key.end());
    return k;
}

Status read_bundle(WireReader& r, e2e::PrekeyBundle& b) {
    const Error truncated{Errc::truncated, "prekey bundle truncated"};
    ByteView ik;
    ByteView spk;
    ByteView sig;
    std::uint8_t has_opk = 0;
    if (!r.take(e2e::key_size, ik) || !r.u32(b.signed_prekey_id) || !r.take(e2e::key_size, spk) ||
        !r.take(e2e::signature_size, sig) || !r.u8(has_opk)) {
        return truncated;
    }
    if (has_opk > 1) {
        return Error{Errc::bad_field, "prekey bundle: has_opk is not 0 or 1"};
    }
    if (has_opk == 1) {
        std::uint32_t opk_id = 0;
        ByteView opk;
        if (!r.u32(opk_id) || !r.take(e2e::key_size, opk)) {
            return truncated;
        }
        if (opk_id == e2e::no_one_time_prekey) {
            return Error{Errc::bad_field, "prekey bundle: reserved one-time prekey id"};
        }
        b.one_time_prekey_id = opk_id;
        b.one_time_prekey = copy(opk);
    }
    b.identity_key = copy(ik);
    b.signed_prekey = copy(spk);
    b.signed_prekey_signature = copy(sig);
    return ok();
}

/// Mode 2 (`device_bundles` false) or mode 3, after the mode byte.
Result<KeyAssignment> decode_end_to_end_key(WireReader& r, bool device_bundles) {
    std::uint8_t peer_len = 0;
    ByteView peer;
    std::uint8_t suite = 0;
    KeyAssignment k;
    if (!r.u8(peer_len) || !r.take(peer_len, peer) || !r.u8(suite)) {
        return Error{Errc::truncated, "key assignment truncated"};
    }
    if (device_bundles) {
        ByteView ak;
        std::uint32_t list_len = 0;
        ByteView list;
        std::uint8_t count = 0;
        if (!r.take(e2e::key_size, ak) || !r.u32(list_len) || list_len > r.remaining() ||
            !r.take(list_len, list) || !r.u8(count)) {
            return Error{Errc::truncated, "key assignment truncated"};
        }
        if (list_len == 0 || list_len > max_keygen_list_size || count == 0 || count > max_keygen_devices) {
            return Error{Errc::bad_field, "key assignment: device list or bundle count out of range"};
        }
        k.account_key = copy(ak);
        k.device_list = copy(list);
        for (std::uint8_t i = 0; i < count; ++i) {
            DeviceBundle d;
            if (!r.u32(d.device)) {
                return Error{Errc::truncated, "key assignment truncated"};
            }
            if (d.device == 0 || (!k.device_bundles.empty() && d.device <= k.device_bundles.back().device)) {
                return Error{Errc::bad_field, "key assignment: devices zero, out of order or repeated"};
            }
            SIM_TRY_STATUS(read_bundle(r, d.bundle));
            k.device_bundles.push_back(std::move(d));
        }
    } else {
        e2e::PrekeyBundle b;
        SIM_TRY_STATUS(read_bundle(r, b));
        k.bundle = std::move(b);
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after key assignment"};
    }
    const auto id = suite_from_wire(suite);
    if (!id) {
        return Error{Errc::suite_not_allowed, "unknown conversation suite"};
    }
    if (peer.empty()) {
        return Error{Errc::bad_field, "key assignment without a peer"};
    }
    k.mode = ConversationMode::end_to_end;
    k.suite = *id;
    k.peer = to_string(peer);
    return k;
}

}  // namespace

Result<KeyAssignment> decode_key_assignment(ByteView payload) {
    WireReader r(payload);
    std::uint8_t mode = 0;
    if (!r.u8(mode)) {
        return Error{Errc::truncated, "key assignment truncated"};
    }
    if (mode == keygen_device_bundles) {
        return decode_end_to_end_key(r, true);
    }
    const auto m = mode_from_wire(mode);
    if (!m) {
        return Error{Errc::bad_field, "unknown key assignment mode"};
    }
    return *m == ConversationMode::server_assigned ? decode_server_assigned_key(r) : decode_end_to_end_key(r, false);
}

Bytes encode_prekey_upload(const PrekeyUpload& u) {
    Bytes out;
    out.reserve(135 + u.one_time_prekeys.size() * (4 + e2e::key_size));
    WireWriter w(out);
    w.u8(u.replace ? 1 : 0);
    w.bytes(u.identity_key);
    w.u32(u.signed_prekey_id);
    w.bytes(u.signed_prekey);
    w.bytes(u.signed_prekey_signature);
    const auto n = std::min<std::size_t>(u.one_time_prekeys.size(), std::numeric_limits<std::uint16_t>::max());
    w.u16(static_cast<std::uint16_t>(n));
    for (std::size_t i = 0; i < n; ++i) {
        w.u32(u.one_time_prekeys[i].first);
        w.bytes(u.one_time_prekeys[i].second);
    }
    return out;
}

Result<PrekeyUpload> decode_prekey_upload(ByteView payload) {
    WireReader r(payload);
    std::uint8_t replace = 0;
    ByteView ik;
    ByteView spk;
    ByteView sig;
    std::uint16_t count = 0;
    PrekeyUpload u;
    if (!r.u8(replace) || !r.take(e2e::key_size, ik) || !r.u32(u.signed_prekey_id) || !r.take(e2e::key_size, spk) ||
        !r.take(e2e::signature_size, sig) || !r.u16(count)) {
        return Error{Errc::truncated, "prekey upload truncated"};
    }
    if (replace > 1) {
        return Error{Errc::bad_field, "prekey upload: replace is not 0 or 1"};
    }
    if (count > max_prekeys_per_upload) {
        return Error{Errc::bad_field, "prekey upload: more than 200 one-time prekeys"};
    }
    u.one_time_prekeys.reserve(count);
    for (std::uint16_t i = 0; i < count; ++i) {
        std::uint32_t id = 0;
        ByteView key;
        if (!r.u32(id) || !r.take(e2e::key_size, key)) {
            return Error{Errc::truncated, "prekey upload truncated"};
        }
        u.one_time_prekeys.emplace_back(id, copy(key));
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after prekey upload"};
    }
    for (std::size_t i = 0; i < u.one_time_prekeys.size(); ++i) {
        const auto id = u.one_time_prekeys[i].first;
        if (id == e2e::no_one_time_prekey) {
            return Error{Errc::bad_field, "prekey upload: reserved one-time prekey id"};
        }
        for (std::size_t j = 0; j < i; ++j) {
            if (u.one_time_prekeys[j].first == id) {
                return Error{Errc::bad_field, "prekey upload: duplicate one-time prekey id"};
            }
        }
    }
    u.replace = replace == 1;
    u.identity_key = copy(ik);
    u.signed_prekey = copy(spk);
    u.signed_prekey_signature = copy(sig);
    return u;
}

Bytes encode_prekey_status(const PrekeyStatus& s) {
    Bytes out;
    WireWriter w(out);
    w.u8(s.identity_key ? 1 : 0);
    if (s.identity_key) {
        w.bytes(*s.identity_key);
    }
    w.u32(s.one_time_count);
    return out;
}

Result<PrekeyStatus> decode_prekey_status(ByteView payload) {
    WireReader r(payload);
    std::uint8_t has_identity = 0;
    if (!r.u8(has_identity)) {
        return Error{Errc::truncated, "prekey status truncated"};
    }
    if (has_identity > 1) {
        return Error{Errc::bad_field, "prekey status: has_identity is not 0 or 1"};
    }
    PrekeyStatus s;
    if (has_identity == 1) {
        ByteView ik;
        if (!r.take(e2e::key_size, ik)) {
            return Error{Errc::truncated, "prekey status truncated"};
        }
        s.identity_key = copy(ik);
    }
    if (!r.u32(s.one_time_count)) {
        return Error{Errc::truncated, "prekey status truncated"};
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after prekey status"};
    }
    return s;
}

namespace {
}  // namespace

ConversationId pair_conversation_id(std::string_view a, std::string_view b) {
    const auto [lo, hi] = std::minmax(a, b);
    Bytes in;
    in.reserve(13 + lo.size() + hi.size());
    WireWriter w(in);
    w.text("libsim pair");
    w.u8(0);
    w.text(lo);
    w.u8(0);
    w.text(hi);
    const auto digest = crypto::sha256(in);
    ConversationId id{};
    std::copy_n(digest.begin(), id.size(), id.begin());
    return id;
}

Bytes encode_envelope(const Envelope& e) {
    Bytes out;
    out.reserve(message_id_size + 1 + e.body.size());
    WireWriter w(out);
    w.bytes(e.id);
    w.u8(static_cast<std::uint8_t>(e.mode));
    w.bytes(e.body);
    return out;
}

Result<Envelope> decode_envelope(ByteView payload) {
    WireReader r(payload);
    ByteView id;
    std::uint8_t mode = 0;
    if (!r.take(message_id_size, id) || !r.u8(mode)) {
        return Error{Errc::truncated, "envelope truncated"};
    }
    const auto m = mode_from_wire(mode);
    if (!m) {
        return Error{Errc::bad_field, "unknown envelope mode"};
    }
    if (r.at_end()) {
        return Error{Errc::bad_field, "envelope without a body"};
    }
    Envelope e;
    std::copy(id.begin(), id.end(), e.id.begin());
    e.mode = *m;
    e.body = copy(r.rest());
    return e;
}

Bytes encode_submission(const Submission& s) {
    std::size_t size = message_id_size + 1 + s.conversation.size() + 4 + 1;
    for (const auto& b : s.bodies) {
        size += 8 + b.body.size();
    }
    if (!s.own_bodies.empty()) {
        size += 1;
        for (const auto& b : s.own_bodies) {
            size += 8 + b.body.size();
        }
    }
    Bytes out;
    out.reserve(size);
    WireWriter w(out);
    w.bytes(s.id);
    w.u8(static_cast<std::uint8_t>(s.mode));
    w.bytes(s.conversation);
    w.u32(s.sender_device);
    w.u8(static_cast<std::uint8_t>(std::min<std::size_t>(s.bodies.size(), max_devices_per_message)));
    for (std::size_t i = 0; i < s.bodies.size() && i < max_devices_per_message; ++i) {
        w.u32(s.bodies[i].device);
        w.u32(static_cast<std::uint32_t>(s.bodies[i].body.size()));
        w.bytes(s.bodies[i].body);
    }
    if (!s.own_bodies.empty()) {  // absent when empty: the payload of senders from before own copies (6.5)
        const auto own = std::min(s.own_bodies.size(), max_own_devices_per_message);
        w.u8(static_cast<std::uint8_t>(own));
        for (std::size_t i = 0; i < own; ++i) {
            w.u32(s.own_bodies[i].device);
            w.u32(static_cast<std::uint32_t>(s.own_bodies[i].body.size()));
            w.bytes(s.own_bodies[i].body);
        }
    }
    return out;
}

Result<Submission> decode_submission(ByteView payload) {
    WireReader r(payload);
    ByteView id;
    ByteView conversation;
    std::uint8_t mode = 0;
    std::uint8_t count = 0;
    Submission s;
    if (!r.take(message_id_size, id) || !r.u8(mode) || !r.take(s.conversation.size(), conversation) ||
        !r.u32(s.sender_device) || !r.u8(count)) {
        return Error{Errc::truncated, "message truncated"};
    }
    const auto m = mode_from_wire(mode);
    if (!m) {
        return Error{Errc::bad_field, "unknown message mode"};
    }
    if (s.sender_device == 0) {
        return Error{Errc::bad_field, "sender device 0"};
    }
    if (count == 0 || count > max_devices_per_message) {
        return Error{Errc::bad_field, "a message has 1 to 64 bodies"};
    }
    s.mode = *m;
    std::copy(id.begin(), id.end(), s.id.begin());
    std::copy(conversation.begin(), conversation.end(), s.conversation.begin());
    s.bodies.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        DeviceBody b;
        std::uint32_t len = 0;
        ByteView body;
        if (!r.u32(b.device) || !r.u32(len) || !r.take(len, body)) {
            return Error{Errc::truncated, "message truncated"};
        }
        if (b.device == 0 || (!s.bodies.empty() && b.device <= s.bodies.back().device)) {
            return Error{Errc::bad_field, "recipient devices must be non-zero and in increasing order"};
        }
        if (body.empty()) {
            return Error{Errc::bad_field, "empty message body"};
        }
        b.body = copy(body);
        s.bodies.push_back(std::move(b));
    }
    if (r.at_end()) {
        return s;
    }
    // The sender's own other devices (6.5): present only when there is at least one, so one encoding per value.
    std::uint8_t own = 0;
    if (!r.u8(own)) {
        return Error{Errc::truncated, "message truncated"};
    }
    if (own == 0 || own > max_own_devices_per_message) {
        return Error{Errc::bad_field, "an own-devices list has 1 to 63 bodies"};
    }
    s.own_bodies.reserve(own);
    for (std::size_t i = 0; i < own; ++i) {
        DeviceBody b;
        std::uint32_t len = 0;
        ByteView body;
        if (!r.u32(b.device) || !r.u32(len) || !r.take(len, body)) {
            return Error{Errc::truncated, "message truncated"};
        }
        if (b.device == 0 || b.device == s.sender_device ||
            (!s.own_bodies.empty() && b.device <= s.own_bodies.back().device)) {
            return Error{Errc::bad_field, "own devices must be non-zero, not the sender's, and in increasing order"};
        }
        if (body.empty()) {
            return Error{Errc::bad_field, "empty message body"};
        }
        b.body = copy(body);
        s.own_bodies.push_back(std::move(b));
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after message"};
    }
    return s;
}

Bytes device_envelope(const Submission& s, std::size_t i) {
    const auto& body = s.bodies.at(i).body;
    Bytes out;
    out.reserve(message_id_size + 1 + body.size());
    WireWriter w(out);
    w.bytes(s.id);
    w.u8(static_cast<std::uint8_t>(s.mode));
    w.bytes(body);
    return out;
}

Bytes encode_pair_submission(const Envelope& e, std::string_view from, std::string_view to, DeviceId from_device,
                             DeviceId to_device) {
    return encode_submission(
        Submission{e.id, e.mode, pair_conversation_id(from, to), from_device, {DeviceBody{to_device, e.body}}, {}});
}

Bytes encode_delivered(WallTime received_at, const ConversationId& conversation, DeviceId sender_device,
                       ByteView envelope) {
    Bytes out;
    out.reserve(delivery_header_size + envelope.size());
    WireWriter w(out);
    w.u8(delivery_header_version);
    w.u64(to_wire_ms(received_at));
    w.bytes(conversation);
    w.u32(sender_device);
    w.bytes(envelope);
    return out;
}

Result<Delivered> decode_delivered(ByteView payload) {
    WireReader r(payload);
    std::uint8_t version = 0;
    std::uint64_t ms = 0;
    ByteView conversation;
    Delivered d;
    if (!r.u8(version)) {
        return Error{Errc::truncated, "delivery header truncated"};
    }
    if (version != delivery_header_version) {
        return Error{Errc::bad_field, "unknown delivery header version"};
    }
    if (!r.u64(ms) || !r.take(d.conversation.size(), conversation) || !r.u32(d.sender_device)) {
        return Error{Errc::truncated, "delivery header truncated"};
    }
    if (ms > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        return Error{Errc::bad_field, "receive time out of range"};
    }
    if (d.sender_device == 0) {
        return Error{Errc::bad_field, "sender device 0"};
    }
    d.received_at = from_wire_ms(ms);
    std::copy(conversation.begin(), conversation.end(), d.conversation.begin());
    SIM_TRY(d.envelope, decode_envelope(r.rest()));
    return d;
}

Bytes encode_ack(const std::vector<MessageId>& ids) {
    Bytes out;
    out.reserve(2 + ids.size() * message_id_size);
    WireWriter w(out);
    write_ids(w, ids);
    return out;
}

Result<std::vector<MessageId>> decode_ack(ByteView payload) {
    WireReader r(payload);
    auto ids = read_ids(r, "ack");
    if (!ids) {
        return ids;
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after ack"};
    }
    return ids;
}

Bytes encode_receipt(const Receipt& rc) {
    Bytes out;
    WireWriter w(out);
    write_short_text(w, rc.peer);
    w.u32(rc.device);
    write_ids(w, rc.ids);
    return out;
}

Result<Receipt> decode_receipt(ByteView payload) {
    WireReader r(payload);
    std::uint8_t peer_len = 0;
    ByteView peer;
    if (!r.u8(peer_len) || !r.take(peer_len, peer)) {
        return Error{Errc::truncated, "receipt truncated"};
    }
    if (peer.empty()) {
        return Error{Errc::bad_field, "receipt without a peer"};
    }
    DeviceId device = 0;
    if (!r.u32(device)) {
        return Error{Errc::truncated, "receipt truncated"};
    }
    auto ids = read_ids(r, "receipt");
    if (!ids) {
        return ids.error();
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after receipt"};
    }
    Receipt rc;
    rc.peer = to_string(peer);
    rc.device = device;
    rc.ids = std::move(*ids);
    return rc;
}

Bytes encode_refusal(const Refusal& rf) {
    Bytes out;
    WireWriter w(out);
    write_short_text(w, rf.peer);
    w.bytes(rf.id);
    w.u16(static_cast<std::uint16_t>(rf.code));
    w.u32(rf.expected);
    return out;
}

Result<Refusal> decode_refusal(ByteView payload) {
    WireReader r(payload);
    std::uint8_t peer_len = 0;
    ByteView peer;
    ByteView id;
    std::uint16_t code = 0;
    Refusal rf;
    if (!r.u8(peer_len) || !r.take(peer_len, peer) || !r.take(message_id_size, id) || !r.u16(code) ||
        !r.u32(rf.expected)) {
        return Error{Errc::truncated, "refusal truncated"};
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after refusal"};
    }
    if (peer.empty() || code == 0 || rf.expected == 0) {
        return Error{Errc::bad_field, "refusal without a peer, a code or an expected number"};
    }
    rf.peer = to_string(peer);
    std::copy(id.begin(), id.end(), rf.id.begin());
    rf.code = static_cast<Errc>(code);
    return rf;
}

Bytes encode_server_limits(const ServerLimits& l) {
    Bytes out;
    WireWriter w(out);
    w.u32(l.messages_per_second);
    w.u32(l.message_burst);
    w.u16(l.window);
    return out;
}

Result<ServerLimits> decode_server_limits(ByteView payload) {
    WireReader r(payload);
    ServerLimits l;
    if (!r.u32(l.messages_per_second) || !r.u32(l.message_burst) || !r.u16(l.window)) {
        return Error{Errc::truncated, "limits truncated"};
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after limits"};
    }
    if (l.messages_per_second == 0 || l.message_burst == 0 || l.window == 0) {
        return Error{Errc::bad_field, "a zero limit"};
    }
    return l;
}

namespace {
void write_address(WireWriter<Bytes>& w, const ContentAddress& a) {
    w.bytes(a.conversation);
    w.u32(a.sender_device);
    w.u32(a.recipient_device);
}
Result<ContentAddress> read_address(WireReader& r) {
    ContentAddress a;
    ByteView conversation;
    if (!r.take(a.conversation.size(), conversation) || !r.u32(a.sender_device) || !r.u32(a.recipient_device)) {
        return Error{Errc::truncated, "message content truncated"};
    }
    if (a.sender_device == 0 || a.recipient_device == 0) {
        return Error{Errc::bad_field, "message content addressed to or from device 0"};
    }
    std::copy(conversation.begin(), conversation.end(), a.conversation.begin());
    return a;
}
}  // namespace

Bytes encode_e2e_content(const E2eContent& c) {
    const bool text = c.kind == ContentKind::text;
    Bytes out;
    out.reserve(1 + 8 + message_id_size + 24 + (text ? 8 : 0) + c.text.size());
    WireWriter w(out);
    if (c.address) {
        w.u8(text ? addressed_text_kind : addressed_ratchet_only_kind);
    } else {
        w.u8(text ? stamped_text_kind : static_cast<std::uint8_t>(ContentKind::ratchet_only));
    }
    w.u64(c.seq);
    w.bytes(c.id);
    if (c.address) {
        write_address(w, *c.address);
    }
    if (text) {
        w.u64(to_wire_ms(c.sent_at));
    }
    w.text(c.text);
    return out;
}

Result<E2eContent> decode_e2e_content(ByteView plaintext) {
    WireReader r(plaintext);
    std::uint8_t kind = 0;
    E2eContent c;
    ByteView id;
    if (!r.u8(kind) || !r.u64(c.seq) || !r.take(message_id_size, id)) {
        return Error{Errc::truncated, "message content truncated"};
    }
    // Kinds 1-3 were sealed before contents carried their address (docs/protocol.md 6.3).
    if (kind == addressed_text_kind || kind == addressed_ratchet_only_kind) {
        SIM_TRY(c.address, read_address(r));
    }
    const bool text = kind == static_cast<std::uint8_t>(ContentKind::text) || kind == stamped_text_kind ||
                      kind == addressed_text_kind;
    if (text) {
        if (c.seq == 0) {
            return Error{Errc::bad_field, "text message with sequence number 0"};
        }
        if (kind != static_cast<std::uint8_t>(ContentKind::text)) {
            std::uint64_t ms = 0;
            if (!r.u64(ms)) {
                return Error{Errc::truncated, "message content truncated"};
            }
            c.sent_at = from_wire_ms(ms);
        }
        c.kind = ContentKind::text;
    } else if (kind == static_cast<std::uint8_t>(ContentKind::ratchet_only) || kind == addressed_ratchet_only_kind) {
        if (c.seq != 0 || !r.at_end()) {
            return Error{Errc::bad_field, "ratchet-only message with a sequence number or text"};
        }
        c.kind = ContentKind::ratchet_only;
    } else {
        return Error{Errc::bad_field, "unknown message content kind"};
    }
    std::copy(id.begin(), id.end(), c.id.begin());
    c.text = to_string(r.rest());
    return c;
}

Bytes encode_conversation_body(const ConversationBody& b) {
    Bytes out;
    out.reserve(4 + 1 + 8 + b.text.size());
    WireWriter w(out);
    w.u32(b.sid);
    w.u8(stamped_body_format);
    w.u64(to_wire_ms(b.sent_at));
    w.text(b.text);
    return out;
}

Result<ConversationBody> decode_conversation_body(ByteView plaintext) {
    WireReader r(plaintext);
    ConversationBody b;
    if (!r.u32(b.sid)) {
        return Error{Errc::truncated, "conversation body truncated"};
    }
    if (plaintext.size() > 4 && plaintext[4] == stamped_body_format) {
        std::uint8_t format = 0;
        std::uint64_t ms = 0;
        if (!r.u8(format) || !r.u64(ms)) {
            return Error{Errc::truncated, "conversation body truncated"};
        }
        b.sent_at = from_wire_ms(ms);
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
