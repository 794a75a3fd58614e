// X3DH (Signal's X3DH specification, revision 1) and the Double Ratchet (Signal's Double Ratchet specification,
// revision 1) as docs/protocol.md 6.2 and 6.3 fix them. Only sim/crypto.h primitives are used.
#include <sim/crypto.h>
#include <sim/e2e.h>

#include "../proto/wire.h"

#include <algorithm>
#include <array>
#include <deque>
#include <limits>

namespace sim::e2e {

namespace {

using detail::WireReader;
using detail::WireWriter;

constexpr std::string_view x3dh_info = "libsim X3DH v1";
constexpr std::string_view ratchet_info = "libsim ratchet v1";
constexpr std::string_view message_key_info = "libsim ratchet message";
constexpr std::size_t max_name_size = 255;
/// IK_A | EK_A | SPK id | OPK id | suite.
constexpr std::size_t initial_prefix_size = key_size + key_size + 4 + 4 + 1;
/// Smallest sealed body of any suite (an AEAD tag); shorter ciphertexts are truncated messages.
constexpr std::size_t min_ciphertext_size = 16;
/// Largest AD: two encoded keys and two names with their length bytes.
constexpr std::size_t max_ad_size = 2 * (1 + key_size) + 2 * (1 + max_name_size);
constexpr std::size_t min_ad_size = 2 * (1 + key_size) + 2;
constexpr std::uint8_t state_version = 1;

bool same(ByteView a, ByteView b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

SecureBytes concat(ByteView a, ByteView b) {
    SecureBytes out;
    out.reserve(a.size() + b.size());
    out.insert(out.end(), a.begin(), a.end());
    out.insert(out.end(), b.begin(), b.end());
    return out;
}

// ---------------------------------------------------------------- message layout (6.3)

struct Parsed {
    MessageType type = MessageType::normal;
    ByteView session_id;
    ByteView initial_prefix;  // empty for type 2
    ByteView ratchet_key;
    std::uint32_t pn = 0;
    std::uint32_t n = 0;
    ByteView header;  // every byte before the ciphertext
    ByteView ciphertext;
};

Result<Parsed> parse_message(ByteView message) {
    WireReader r(message);
    Parsed p;
    std::uint8_t type = 0;
    if (!r.u8(type) || !r.take(session_id_size, p.session_id)) {
        return Error{Errc::truncated, "ratchet message header is incomplete"};
    }
    if (type != static_cast<std::uint8_t>(MessageType::initial) &&
        type != static_cast<std::uint8_t>(MessageType::normal)) {
        return Error{Errc::bad_field, "unknown ratchet message type"};
    }
    p.type = static_cast<MessageType>(type);
    if (p.type == MessageType::initial && !r.take(initial_prefix_size, p.initial_prefix)) {
        return Error{Errc::truncated, "initial message header is incomplete"};
    }
    if (!r.take(key_size, p.ratchet_key) || !r.u32(p.pn) || !r.u32(p.n)) {
        return Error{Errc::truncated, "ratchet message header is incomplete"};
    }
    p.header = message.first(message.size() - r.remaining());
    p.ciphertext = r.rest();
    if (p.ciphertext.size() < min_ciphertext_size) {
        return Error{Errc::truncated, "ratchet message ciphertext is too short"};
    }
    return p;
}

Result<InitialHeader> parse_initial(ByteView prefix) {
    WireReader r(prefix);
    ByteView ik;
    ByteView ek;
    InitialHeader h;
    std::uint8_t suite = 0;
    if (!r.take(key_size, ik) || !r.take(key_size, ek) || !r.u32(h.signed_prekey_id) || !r.u32(h.one_time_prekey_id) ||
        !r.u8(suite)) {
        return Error{Errc::truncated, "initial message header is incomplete"};
    }
    const auto id = suite_from_wire(suite);
    if (!id) {
        return Error{Errc::bad_field, "unknown suite in initial message"};
    }
    SIM_TRY(auto ik_dh, identity_dh_public(ik));
    (void)ik_dh;
    h.identity_key = to_bytes(ik);
    h.ephemeral_key = to_bytes(ek);
    h.suite = *id;
    return h;
}

// ---------------------------------------------------------------- KDFs (6.2, 6.3)

struct KeyPair {
    SecureBytes root;
    SecureBytes chain;
};

Result<KeyPair> kdf_rk(ByteView rk, ByteView dh) {
    SIM_TRY(auto out, crypto::hkdf_sha256(rk, dh, as_bytes(ratchet_info), 2 * crypto::sha256_size));
    KeyPair k;
    k.root.assign(out.begin(), out.begin() + crypto::sha256_size);
    k.chain.assign(out.begin() + crypto::sha256_size, out.end());
    return k;
}

struct ChainStep {
    SecureBytes message_key;
    SecureBytes next_chain;
};

ChainStep kdf_ck(ByteView ck) {
    static constexpr std::array<std::uint8_t, 1> one{0x01};
    static constexpr std::array<std::uint8_t, 1> two{0x02};
    return ChainStep{crypto::hmac_sha256(ck, one), crypto::hmac_sha256(ck, two)};
}

Result<std::unique_ptr<RecordCipher>> message_cipher(SuiteId suite, ByteView mk, Rng& rng) {
    SIM_TRY(auto key, crypto::hkdf_sha256({}, mk, as_bytes(message_key_info), suite_key_size(suite)));
    return make_record_cipher(suite, key, rng);
}

Result<SecureBytes> x3dh_secret(ByteView dh1, ByteView dh2, ByteView dh3, ByteView dh4) {
    SecureBytes ikm(crypto::x25519_key_size, 0xFF);  // X3DH s2.2: F = 32 0xFF bytes for X25519
    for (const ByteView dh : {dh1, dh2, dh3, dh4}) {
        ikm.insert(ikm.end(), dh.begin(), dh.end());
    }
    const std::array<std::uint8_t, crypto::sha256_size> salt{};
    return crypto::hkdf_sha256(salt, ikm, as_bytes(x3dh_info), crypto::sha256_size);
}

Bytes associated_data(ByteView ik_a_dh, ByteView ik_b_dh, std::string_view name_a, std::string_view name_b) {
    Bytes ad = encode_public_key(ik_a_dh);
    const auto ik_b = encode_public_key(ik_b_dh);
    ad.insert(ad.end(), ik_b.begin(), ik_b.end());
    WireWriter w(ad);
    w.u8(static_cast<std::uint8_t>(name_a.size()));
    w.text(name_a);
    w.u8(static_cast<std::uint8_t>(name_b.size()));
    w.text(name_b);
    return ad;
}

Bytes session_id_of(ByteView ephemeral_public) {
    const auto h = crypto::sha256(ephemeral_public);
    return Bytes(h.begin(), h.begin() + session_id_size);
}

Status check_names(std::string_view a, std::string_view b) {
    if (a.size() > max_name_size || b.size() > max_name_size) {
        return Error{Errc::invalid_argument, "user names are limited to 255 bytes"};
    }
    return ok();
}

/// The identity's public key must belong to its seed, else the peer would bind the session to another key.
Status check_identity(const IdentityKeyPair& ours) {
    SIM_TRY(const auto pair, crypto::ed25519_from_seed(ours.private_key));
    if (!same(pair.public_key, ours.public_key)) {
        return Error{Errc::invalid_key, "identity public key does not match its private key"};
    }
    return ok();
}

Status check_suite(SuiteId suite) {
    if (!suite_from_wire(static_cast<std::uint8_t>(suite))) {
        return Error{Errc::suite_not_allowed, "unknown suite"};
    }
    return ok();
}

}  // namespace

// ---------------------------------------------------------------- state

/// The Double Ratchet variables of the specification's section 3.2 that one message may change.
struct Ratchet {
    SecureBytes dhs_private;
    Bytes dhs_public;
    Bytes dhr;  // empty until the first ratchet key of the peer is known
    SecureBytes rk;
    SecureBytes cks;  // empty when there is no sending chain yet
    SecureBytes ckr;  // empty when there is no receiving chain yet
    std::uint32_t ns = 0;
    std::uint32_t nr = 0;
    std::uint32_t pn = 0;
};

struct SkippedKey {
    Bytes ratchet_key;
    std::uint32_t n = 0;
    SecureBytes message_key;
};

struct Session::State {
    Rng* rng = nullptr;
    SuiteId suite = SuiteId::aes256_gcm;
    Bytes session_id;
    Bytes peer_identity;
    Bytes ad;
    Bytes initial_prefix;  // the initiator's X3DH header, sent until a message of the session arrives
    Ratchet ratchet;
    std::deque<SkippedKey> skipped;  // oldest first
    bool received_any = false;
    bool reply_pending = false;
    std::uint64_t dh_steps = 0;
};

namespace {

/// Store the keys of the receiving chain up to (not including) `until`. The caller has checked the bound.
void skip_keys(Ratchet& r, std::uint32_t until, std::vector<SkippedKey>& out) {
    if (r.ckr.empty()) {
        return;
    }
    while (r.nr < until) {
        auto step = kdf_ck(r.ckr);
        out.push_back(SkippedKey{r.dhr, r.nr, std::move(step.message_key)});
        r.ckr = std::move(step.next_chain);
        ++r.nr;
    }
}

/// DHRatchet of the specification's section 3.5.
Status dh_ratchet(Ratchet& r, ByteView their_key, Rng& rng) {
    r.pn = r.ns;
    r.ns = 0;
    r.nr = 0;
    r.dhr = to_bytes(their_key);
    auto dh = crypto::x25519(r.dhs_private, r.dhr);
    if (!dh) {
        return Error{Errc::auth_failed, "peer ratchet key is not usable"};
    }
    SIM_TRY(auto recv, kdf_rk(r.rk, *dh));
    auto next = crypto::x25519_generate(rng);
    SIM_TRY(auto dh2, crypto::x25519(next.private_key, r.dhr));
    SIM_TRY(auto send, kdf_rk(recv.root, dh2));
    r.ckr = std::move(recv.chain);
    r.dhs_private = std::move(next.private_key);
    r.dhs_public = std::move(next.public_key);
    r.rk = std::move(send.root);
    r.cks = std::move(send.chain);
    return ok();
}

Result<SecureBytes> decrypt(const Session::State& s, ByteView mk, const Parsed& p) {
    SIM_TRY(auto cipher, message_cipher(s.suite, mk, *s.rng));
    const auto aad = concat(s.ad, p.header);
    auto pt = cipher->open(aad, p.n, p.ciphertext);
    if (!pt) {
        return Error{Errc::auth_failed, "ratchet message does not open"};
    }
    SecureBytes out(pt->begin(), pt->end());
    secure_zero(pt->data(), pt->size());
    return out;
}

}  // namespace

Session::Session(std::unique_ptr<State> state) : m_state(std::move(state)) {}
Session::Session(Session&&) noexcept = default;
Session& Session::operator=(Session&&) noexcept = default;
Session::~Session() = default;

// ---------------------------------------------------------------- X3DH

Result<Session> Session::initiate(const IdentityKeyPair& ours, std::string_view our_name, const PrekeyBundle& theirs,
                                  std::string_view their_name, SuiteId suite, Rng& rng) {
    // X3DH s3.3: the signature is verified before anything is computed with the bundle.
    SIM_TRY_STATUS(verify_bundle(theirs));
    SIM_TRY_STATUS(check_names(our_name, their_name));
    SIM_TRY_STATUS(check_suite(suite));
    SIM_TRY_STATUS(check_identity(ours));
    SIM_TRY(const auto ik_a_private, identity_dh_private(ours.private_key));
    SIM_TRY(const auto ik_a_public, identity_dh_public(ours.public_key));
    SIM_TRY(const auto ik_b_public, identity_dh_public(theirs.identity_key));

    const auto ek = crypto::x25519_generate(rng);
    SIM_TRY(const auto dh1, crypto::x25519(ik_a_private, theirs.signed_prekey));
    SIM_TRY(const auto dh2, crypto::x25519(ek.private_key, ik_b_public));
    SIM_TRY(const auto dh3, crypto::x25519(ek.private_key, theirs.signed_prekey));
    SecureBytes dh4;
    if (theirs.one_time_prekey_id) {
        SIM_TRY(dh4, crypto::x25519(ek.private_key, theirs.one_time_prekey));
    }
    SIM_TRY(const auto sk, x3dh_secret(dh1, dh2, dh3, dh4));

    auto state = std::make_unique<State>();
    state->rng = &rng;
    state->suite = suite;
    state->session_id = session_id_of(ek.public_key);
    state->peer_identity = theirs.identity_key;
    state->ad = associated_data(ik_a_public, ik_b_public, our_name, their_name);
    WireWriter w(state->initial_prefix);
    w.bytes(ours.public_key);
    w.bytes(ek.public_key);
    w.u32(theirs.signed_prekey_id);
    w.u32(theirs.one_time_prekey_id.value_or(no_one_time_prekey));
    w.u8(static_cast<std::uint8_t>(suite));

    // Double Ratchet s3.3 RatchetInitAlice, with SPK_B as Bob's ratchet key.
    auto& r = state->ratchet;
    auto first = crypto::x25519_generate(rng);
    SIM_TRY(const auto dh, crypto::x25519(first.private_key, theirs.signed_prekey));
    SIM_TRY(auto keys, kdf_rk(sk, dh));
    r.dhs_private = std::move(first.private_key);
    r.dhs_public = std::move(first.public_key);
    r.dhr = theirs.signed_prekey;
    r.rk = std::move(keys.root);
    r.cks = std::move(keys.chain);
    return Session(std::move(state));
}

Result<Session> Session::respond(const IdentityKeyPair& ours, std::string_view our_name, const SignedPrekey& spk,
                                 const OneTimePrekey* opk, const InitialHeader& initial, std::string_view their_name,
                                 Rng& rng) {
    SIM_TRY_STATUS(check_names(our_name, their_name));
    SIM_TRY_STATUS(check_suite(initial.suite));
    SIM_TRY_STATUS(check_identity(ours));
    if (initial.signed_prekey_id != spk.id) {
        return Error{Errc::invalid_key, "initial message names another signed prekey"};
    }
    if (initial.one_time_prekey_id == no_one_time_prekey) {
        if (opk != nullptr) {
            return Error{Errc::invalid_argument, "initial message uses no one-time prekey"};
        }
    } else if (opk == nullptr || opk->id != initial.one_time_prekey_id) {
        return Error{Errc::invalid_key, "the one-time prekey of the initial message is not available"};
    }
    if (initial.ephemeral_key.size() != key_size) {
        return Error{Errc::invalid_key, "ephemeral key must be 32 bytes"};
    }
    SIM_TRY(const auto spk_pair, crypto::x25519_from_private(spk.private_key));
    SIM_TRY(const auto ik_a_public, identity_dh_public(initial.identity_key));
    SIM_TRY(const auto ik_b_private, identity_dh_private(ours.private_key));
    SIM_TRY(const auto ik_b_public, identity_dh_public(ours.public_key));

    SIM_TRY(const auto dh1, crypto::x25519(spk.private_key, ik_a_public));
    SIM_TRY(const auto dh2, crypto::x25519(ik_b_private, initial.ephemeral_key));
    SIM_TRY(const auto dh3, crypto::x25519(spk.private_key, initial.ephemeral_key));
    SecureBytes dh4;
    if (opk != nullptr) {
        SIM_TRY(dh4, crypto::x25519(opk->private_key, initial.ephemeral_key));
    }
    SIM_TRY(auto sk, x3dh_secret(dh1, dh2, dh3, dh4));

    auto state = std::make_unique<State>();
    state->rng = &rng;
    state->suite = initial.suite;
    state->session_id = session_id_of(initial.ephemeral_key);
    state->peer_identity = initial.identity_key;
    state->ad = associated_data(ik_a_public, ik_b_public, their_name, our_name);
    // Double Ratchet s3.3 RatchetInitBob, with the SPK pair as the first ratchet key pair.
    auto& r = state->ratchet;
    r.dhs_private = spk_pair.private_key;
    r.dhs_public = spk_pair.public_key;
    r.rk = std::move(sk);
    return Session(std::move(state));
}

// ---------------------------------------------------------------- messages

Result<Bytes> Session::seal(ByteView plaintext) {
    if (!m_state) {
        return Error{Errc::invalid_state, "session was moved from"};
    }
    auto& s = *m_state;
    auto& r = s.ratchet;
    if (r.cks.empty()) {
        return Error{Errc::invalid_state, "no sending chain yet: the responder sends after it has received"};
    }
    if (r.ns == std::numeric_limits<std::uint32_t>::max()) {
        return Error{Errc::limit_reached, "sending chain exhausted"};
    }
    auto step = kdf_ck(r.cks);
    Bytes out;
    WireWriter w(out);
    const bool initial = !s.initial_prefix.empty();
    w.u8(static_cast<std::uint8_t>(initial ? MessageType::initial : MessageType::normal));
    w.bytes(s.session_id);
    if (initial) {
        w.bytes(s.initial_prefix);
    }
    w.bytes(r.dhs_public);
    w.u32(r.pn);
    w.u32(r.ns);
    const auto aad = concat(s.ad, out);
    SIM_TRY(auto cipher, message_cipher(s.suite, step.message_key, *s.rng));
    SIM_TRY_STATUS(cipher->seal(aad, r.ns, plaintext, out));
    r.cks = std::move(step.next_chain);
    ++r.ns;
    s.reply_pending = false;
    return out;
}

Result<SecureBytes> Session::open(ByteView message) {
    if (!m_state) {
        return Error{Errc::invalid_state, "session was moved from"};
    }
    auto& s = *m_state;
    SIM_TRY(const auto p, parse_message(message));
    if (!same(p.session_id, s.session_id)) {
        return Error{Errc::auth_failed, "message of another session"};
    }

    // Double Ratchet s3.5 RatchetDecrypt: a skipped key first, removed only once the message has opened.
    for (auto it = s.skipped.begin(); it != s.skipped.end(); ++it) {
        if (it->n == p.n && same(it->ratchet_key, p.ratchet_key)) {
            SIM_TRY(auto pt, decrypt(s, it->message_key, p));
            s.skipped.erase(it);
            s.received_any = true;
            s.initial_prefix.clear();
            return pt;
        }
    }

    // Everything else works on a copy that is committed only when the message has opened.
    Ratchet work = s.ratchet;
    std::vector<SkippedKey> new_skipped;
    const bool new_chain = work.dhr.empty() || !same(p.ratchet_key, work.dhr);
    if (p.n == std::numeric_limits<std::uint32_t>::max()) {
        return Error{Errc::limit_reached, "message number out of range"};
    }
    // MAX_SKIP is checked before any key is derived, so a huge n or pn costs nothing.
    if (new_chain) {
        if (!work.ckr.empty() && p.pn > work.nr && p.pn - work.nr > max_skip) {
            return Error{Errc::limit_reached, "message would skip too many keys of the previous chain"};
        }
        if (p.n > max_skip) {
            return Error{Errc::limit_reached, "message would skip too many keys"};
        }
        skip_keys(work, p.pn, new_skipped);
        SIM_TRY_STATUS(dh_ratchet(work, p.ratchet_key, *s.rng));
    } else {
        if (p.n < work.nr) {
            return Error{Errc::auth_failed, "replayed or too old message"};
        }
        if (p.n - work.nr > max_skip) {
            return Error{Errc::limit_reached, "message would skip too many keys"};
        }
    }
    skip_keys(work, p.n, new_skipped);
    auto step = kdf_ck(work.ckr);
    work.ckr = std::move(step.next_chain);
    ++work.nr;
    SIM_TRY(auto pt, decrypt(s, step.message_key, p));

    s.ratchet = std::move(work);
    for (auto& k : new_skipped) {
        s.skipped.push_back(std::move(k));
    }
    while (s.skipped.size() > max_stored_skipped) {
        s.skipped.pop_front();
    }
    if (new_chain) {
        ++s.dh_steps;
        s.reply_pending = true;
    }
    s.received_any = true;
    s.initial_prefix.clear();
    return pt;
}

ByteView Session::session_id() const noexcept {
    return m_state ? ByteView{m_state->session_id} : ByteView{};
}
ByteView Session::peer_identity() const noexcept {
    return m_state ? ByteView{m_state->peer_identity} : ByteView{};
}
SuiteId Session::suite() const noexcept {
    return m_state ? m_state->suite : SuiteId::aes256_gcm;
}
bool Session::received_any() const noexcept {
    return m_state && m_state->received_any;
}
bool Session::reply_pending() const noexcept {
    return m_state && m_state->reply_pending;
}
std::uint64_t Session::dh_steps() const noexcept {
    return m_state ? m_state->dh_steps : 0;
}
std::size_t Session::skipped_keys() const noexcept {
    return m_state ? m_state->skipped.size() : 0;
}

Result<MessageInfo> inspect(ByteView message) {
    SIM_TRY(const auto p, parse_message(message));
    MessageInfo info;
    info.type = p.type;
    info.session_id = to_bytes(p.session_id);
    if (p.type == MessageType::initial) {
        SIM_TRY(info.initial, parse_initial(p.initial_prefix));
    }
    return info;
}

// ---------------------------------------------------------------- persistence
//
// version u8 (1) | suite u8 | flags u8 | session id (8) | peer identity (32) | ad len u16 | ad
// | initial prefix (74, flag) | DHs private (32) | DHr (32, flag) | RK (32) | CKs (32, flag) | CKr (32, flag)
// | Ns u32 | Nr u32 | PN u32 | dh steps u64 | skipped count u16 | count x (ratchet key (32) | n u32 | mk (32))

namespace {

constexpr std::uint8_t flag_received_any = 0x01;
constexpr std::uint8_t flag_reply_pending = 0x02;
constexpr std::uint8_t flag_initial = 0x04;
constexpr std::uint8_t flag_dhr = 0x08;
constexpr std::uint8_t flag_cks = 0x10;
constexpr std::uint8_t flag_ckr = 0x20;
constexpr std::uint8_t flag_all = 0x3F;

std::uint8_t flag_if(bool set, std::uint8_t flag) {
    return set ? flag : std::uint8_t{0};
}

}  // namespace

SecureBytes Session::serialize() const {
    SecureBytes out;
    if (!m_state) {
        return out;
    }
    const auto& s = *m_state;
    const auto& r = s.ratchet;
    WireWriter w(out);
    const auto flags = static_cast<std::uint8_t>(
        flag_if(s.received_any, flag_received_any) | flag_if(s.reply_pending, flag_reply_pending) |
        flag_if(!s.initial_prefix.empty(), flag_initial) | flag_if(!r.dhr.empty(), flag_dhr) |
        flag_if(!r.cks.empty(), flag_cks) | flag_if(!r.ckr.empty(), flag_ckr));
    w.u8(state_version);
    w.u8(static_cast<std::uint8_t>(s.suite));
    w.u8(flags);
    w.bytes(s.session_id);
    w.bytes(s.peer_identity);
    w.u16(static_cast<std::uint16_t>(s.ad.size()));
    w.bytes(s.ad);
    w.bytes(s.initial_prefix);
    w.bytes(r.dhs_private);
    w.bytes(r.dhr);
    w.bytes(r.rk);
    w.bytes(r.cks);
    w.bytes(r.ckr);
    w.u32(r.ns);
    w.u32(r.nr);
    w.u32(r.pn);
    w.u64(s.dh_steps);
    w.u16(static_cast<std::uint16_t>(s.skipped.size()));
    for (const auto& k : s.skipped) {
        w.bytes(k.ratchet_key);
        w.u32(k.n);
        w.bytes(k.message_key);
    }
    return out;
}

Result<Session> Session::deserialize(ByteView data, Rng& rng) {
    WireReader rd(data);
    const Error truncated{Errc::truncated, "session state is incomplete"};
    std::uint8_t version = 0;
    std::uint8_t suite = 0;
    std::uint8_t flags = 0;
    if (!rd.u8(version)) {
        return truncated;
    }
    if (version != state_version) {
        return Error{Errc::unsupported_version, "unknown session state version"};
    }
    if (!rd.u8(suite) || !rd.u8(flags)) {
        return truncated;
    }
    const auto id = suite_from_wire(suite);
    if (!id || (flags & static_cast<std::uint8_t>(~flag_all)) != 0) {
        return Error{Errc::bad_field, "session state has an unknown suite or flag"};
    }
    auto state = std::make_unique<State>();
    state->rng = &rng;
    state->suite = *id;
    state->received_any = (flags & flag_received_any) != 0;
    state->reply_pending = (flags & flag_reply_pending) != 0;
    auto& r = state->ratchet;

    ByteView v;
    auto take = [&](std::size_t n, auto& into) {
        if (!rd.take(n, v)) {
            return false;
        }
        into.assign(v.begin(), v.end());
        return true;
    };
    std::uint16_t ad_size = 0;
    if (!take(session_id_size, state->session_id) || !take(key_size, state->peer_identity) || !rd.u16(ad_size)) {
        return truncated;
    }
    if (ad_size < min_ad_size || ad_size > max_ad_size) {
        return Error{Errc::bad_length, "session state associated data has an impossible size"};
    }
    if (!take(ad_size, state->ad)) {
        return truncated;
    }
    if ((flags & flag_initial) != 0 && !take(initial_prefix_size, state->initial_prefix)) {
        return truncated;
    }
    if (!take(key_size, r.dhs_private) || ((flags & flag_dhr) != 0 && !take(key_size, r.dhr)) ||
        !take(crypto::sha256_size, r.rk) || ((flags & flag_cks) != 0 && !take(crypto::sha256_size, r.cks)) ||
        ((flags & flag_ckr) != 0 && !take(crypto::sha256_size, r.ckr))) {
        return truncated;
    }
    std::uint16_t count = 0;
    if (!rd.u32(r.ns) || !rd.u32(r.nr) || !rd.u32(r.pn) || !rd.u64(state->dh_steps) || !rd.u16(count)) {
        return truncated;
    }
    if (count > max_stored_skipped) {
        return Error{Errc::bad_length, "session state holds too many skipped keys"};
    }
    for (std::uint16_t i = 0; i < count; ++i) {
        SkippedKey k;
        if (!take(key_size, k.ratchet_key) || !rd.u32(k.n) || !take(crypto::sha256_size, k.message_key)) {
            return truncated;
        }
        state->skipped.push_back(std::move(k));
    }
    if (!rd.at_end()) {
        return Error{Errc::trailing_bytes, "session state has trailing bytes"};
    }
    if (!state->initial_prefix.empty()) {
        SIM_TRY(const auto initial, parse_initial(state->initial_prefix));
        if (initial.suite != state->suite) {
            return Error{Errc::bad_field, "session state suite differs from its initial header"};
        }
    }
    SIM_TRY(auto dhs, crypto::x25519_from_private(r.dhs_private));
    r.dhs_public = std::move(dhs.public_key);
    return Session(std::move(state));
}

}  // namespace sim::e2e
