// libsim's client-server channel handshake over Noise XX: suite negotiation inside the Noise payloads, server key
// pinning, and the derivation of the record-session keys (docs/protocol.md s3).
#include <sim/channel.h>
#include <sim/crypto.h>
#include <sim/handshake.h>

#include <algorithm>
#include <utility>

namespace sim {

namespace {

constexpr std::string_view label_i2r = "libsim v1 record i2r";
constexpr std::string_view label_r2i = "libsim v1 record r2i";
/// ServerHello suite byte meaning "no common suite": the server ends the handshake.
constexpr std::uint8_t no_suite = 0;

void wipe(SecureBytes& b) noexcept {
    secure_zero(b.data(), b.size());
    b.clear();
    b.shrink_to_fit();
}

std::optional<noise::Cipher> cipher_of(HandshakeProtocol p) noexcept {
    switch (p) {
        case HandshakeProtocol::noise_xx_25519_chachapoly_sha256:
            return noise::Cipher::chacha_poly;
        case HandshakeProtocol::noise_xx_25519_aesgcm_sha256:
            return noise::Cipher::aes_gcm;
    }
    return std::nullopt;
}

Bytes prologue_bytes() {
    const ByteView v = as_bytes(channel_prologue);
    return {v.begin(), v.end()};
}

Result<noise::HandshakeState> make_noise(HandshakeProtocol protocol, noise::Role role, const SecureBytes& static_key,
                                         Rng& rng) {
    noise::HandshakeConfig cfg;
    cfg.pattern = noise::Pattern::XX;
    cfg.cipher = *cipher_of(protocol);
    cfg.role = role;
    cfg.prologue = prologue_bytes();
    cfg.local_static_private = static_key;
    return noise::HandshakeState::create(cfg, rng);
}

/// The protocol id byte of a handshake message, after the size checks every message gets.
Result<std::uint8_t> envelope_id(ByteView message) {
    if (message.empty()) {
        return Error{Errc::truncated, "empty handshake message"};
    }
    if (message.size() > max_channel_handshake_message) {
        return Error{Errc::frame_too_large, "handshake message longer than 65536 bytes"};
    }
    return message[0];
}

/// Lower-case hex without separators, or "" when `text` is not a SHA-256 fingerprint.
std::string normalize_fingerprint(std::string_view text) {
    std::string out;
    for (const char c : text) {
        if (c == ' ' || c == ':') {
            continue;
        }
        const bool digit = c >= '0' && c <= '9';
        const bool lower = c >= 'a' && c <= 'f';
        const bool upper = c >= 'A' && c <= 'F';
        if (!digit && !lower && !upper) {
            return {};
        }
        out.push_back(upper ? static_cast<char>(c - 'A' + 'a') : c);
    }
    return out.size() == 2 * crypto::sha256_size ? out : std::string{};
}

Result<SecureBytes> derive_session_key(ByteView h, ByteView k, std::string_view label, SuiteId suite) {
    Bytes info(label.begin(), label.end());
    info.push_back(static_cast<std::uint8_t>(suite));
    return crypto::hkdf_sha256(h, k, info, suite_key_size(suite));
}

/// Split the finished Noise handshake into the two record sessions.
Result<ChannelEstablished> establish(noise::HandshakeState& hs, bool initiator, HandshakeProtocol protocol,
                                     SuiteId suite, SessionConfig session, std::string server_fp, Rng& rng,
                                     const Clock& clock) {
    const Bytes h = to_bytes(hs.handshake_hash());
    const Bytes peer = to_bytes(hs.remote_static());
    SIM_TRY(const noise::TransportCiphers ciphers, hs.split());
    SIM_TRY(const SecureBytes key_i2r, derive_session_key(h, ciphers.initiator_to_responder.key(), label_i2r, suite));
    SIM_TRY(const SecureBytes key_r2i, derive_session_key(h, ciphers.responder_to_initiator.key(), label_r2i, suite));
    session.suite = suite;
    SIM_TRY(SendSession send, SendSession::create(session, initiator ? key_i2r : key_r2i, rng, clock));
    SIM_TRY(RecvSession recv, RecvSession::create(session, initiator ? key_r2i : key_i2r, rng, clock));
    return ChannelEstablished{protocol, suite, std::move(send), std::move(recv), h, peer, std::move(server_fp), {}};
}

/// Surface a bad SessionConfig when the handshake is created rather than when it completes: build a throw-away
/// session with a dummy key (the suite is irrelevant here; the negotiated one replaces it).
Status check_session_config(SessionConfig session, Rng& rng, const Clock& clock) {
    session.suite = SuiteId::aes256_gcm;
    const Bytes dummy(suite_key_size(session.suite), 0);
    auto probe = SendSession::create(session, dummy, rng, clock);
    if (!probe) {
        return std::move(probe).error();
    }
    probe->close();
    return ok();
}

const Error& moved_error() {
    static const Error e{Errc::invalid_state, "channel handshake moved from"};
    return e;
}

}  // namespace

std::string_view handshake_protocol_name(HandshakeProtocol protocol) noexcept {
    switch (protocol) {
        case HandshakeProtocol::noise_xx_25519_chachapoly_sha256:
            return "Noise_XX_25519_ChaChaPoly_SHA256";
        case HandshakeProtocol::noise_xx_25519_aesgcm_sha256:
            return "Noise_XX_25519_AESGCM_SHA256";
    }
    return "";
}

std::string fingerprint(ByteView public_key) {
    const std::string hex = to_hex(crypto::sha256(public_key));
    std::string out;
    out.reserve(hex.size() + hex.size() / 4);
    for (std::size_t i = 0; i < hex.size(); i += 4) {
        if (i != 0) {
            out.push_back(' ');
        }
        out.append(hex, i, 4);
    }
    return out;
}

std::optional<Bytes> MemoryKnownServers::lookup(std::string_view server_id) const {
    const auto it = m_keys.find(server_id);
    if (it == m_keys.end()) {
        return std::nullopt;
    }
    return it->second;
}

Status MemoryKnownServers::remember(std::string_view server_id, ByteView public_key) {
    m_keys.insert_or_assign(std::string(server_id), to_bytes(public_key));
    return ok();
}

void MemoryKnownServers::forget(std::string_view server_id) {
    const auto it = m_keys.find(server_id);
    if (it != m_keys.end()) {
        m_keys.erase(it);
    }
}

// ---------------------------------------------------------------- state both sides share

namespace {

/// The Noise handshake, the outcome, and failing closed: after any error the handshake, the sessions made so far
/// and the static private key are wiped, and the first error is kept.
struct HandshakeCore {
    std::optional<noise::HandshakeState> hs;
    ChannelAction action;
    std::optional<ChannelEstablished> result;
    Error failure{Errc::ok};

    explicit HandshakeCore(ChannelAction first) : action(first) {}

    void fail_closed(const Error& err, SecureBytes& static_private_key) {
        if (action != ChannelAction::failed) {
            failure = err;
        }
        action = ChannelAction::failed;
        hs.reset();
        if (result) {
            result->send.close();
            result->recv.close();
            result.reset();
        }
        wipe(static_private_key);
    }
};

}  // namespace

// ---------------------------------------------------------------- client

struct ClientHandshake::Impl : HandshakeCore {
    Impl() : HandshakeCore(ChannelAction::write_message) {}

    ClientHandshakeConfig cfg;
    KnownServers* known = nullptr;
    Rng* rng = nullptr;
    const Clock* clock = nullptr;
    std::string expected_fp;  // normalized, or empty
    bool hello_sent = false;
    Bytes server_static;
    std::string server_fp;
    SuiteId suite = SuiteId::aes256_gcm;
    std::vector<ChannelFeature> agreed;

    Error fail(Error err) {
        fail_closed(err, cfg.static_private_key);
        server_static.clear();
        server_fp.clear();
        return err;
    }

    [[nodiscard]] Bytes frame(ByteView noise_message) const {
        Bytes out;
        out.reserve(1 + noise_message.size());
        out.push_back(static_cast<std::uint8_t>(cfg.protocol));
        out.insert(out.end(), noise_message.begin(), noise_message.end());
        return out;
    }

    Result<Bytes> write() {
        if (!hello_sent) {
            Bytes hello{channel_hello_version, 0};
            for (const SuiteId id : cfg.suites.preference()) {
                hello.push_back(static_cast<std::uint8_t>(id));
            }
            for (const ChannelFeature f : cfg.features) {
                hello.push_back(static_cast<std::uint8_t>(f));  // skipped as unknown suites by an older server
            }
            hello[1] = static_cast<std::uint8_t>(hello.size() - 2);
            SIM_TRY(const Bytes m, hs->write_message(hello));
            hello_sent = true;
            action = ChannelAction::read_message;
            return frame(m);
        }
        SIM_TRY(const Bytes m, hs->write_message({}));
        SIM_TRY(ChannelEstablished est,
                establish(*hs, true, cfg.protocol, suite, cfg.session, server_fp, *rng, *clock));
        est.features = agreed;
        result.emplace(std::move(est));
        hs.reset();
        wipe(cfg.static_private_key);
        action = ChannelAction::complete;
        return frame(m);
    }

    Status read(ByteView message) {
        SIM_TRY(const std::uint8_t id, envelope_id(message));
        if (id != static_cast<std::uint8_t>(cfg.protocol)) {
            return Error{Errc::bad_field, "handshake protocol id differs from the one we started"};
        }
        SIM_TRY(const Bytes payload, hs->read_message(message.subspan(1)));
        server_static = to_bytes(hs->remote_static());
        server_fp = fingerprint(server_static);

        // Key checks come first: a server that is not the one we expect gets nothing more from us.
        const std::optional<Bytes> pinned = known->lookup(cfg.server_id);
        if (pinned && !constant_time_equal(*pinned, server_static)) {
            return Error{Errc::server_key_mismatch, "server key differs from the pinned key"};
        }
        if (!expected_fp.empty() && normalize_fingerprint(server_fp) != expected_fp) {
            return Error{Errc::server_key_mismatch, "server key differs from the configured fingerprint"};
        }

        if (payload.size() < 2) {
            return Error{Errc::truncated, "ServerHello shorter than 2 bytes"};
        }
        if (payload.size() > 2 && cfg.features.empty()) {
            return Error{Errc::trailing_bytes, "ServerHello longer than 2 bytes"};
        }
        if (payload.size() > 2) {
            // count u8 | count x feature id: the offered features the server speaks too (3.2).
            const std::size_t count = payload[2];
            if (payload.size() < 3 + count) {
                return Error{Errc::truncated, "ServerHello shorter than its feature count"};
            }
            if (payload.size() > 3 + count) {
                return Error{Errc::trailing_bytes, "ServerHello longer than its feature count"};
            }
            for (std::size_t i = 0; i < count; ++i) {
                const auto f = static_cast<ChannelFeature>(payload[3 + i]);
                if (!has_feature(cfg.features, f) || has_feature(agreed, f)) {
                    return Error{Errc::bad_field, "the server accepted a feature that was not offered"};
                }
                agreed.push_back(f);
            }
        }
        if (payload[0] != channel_hello_version) {
            return Error{Errc::unsupported_version, "ServerHello version is not 1"};
        }
        if (payload[1] == no_suite) {
            return Error{Errc::no_common_suite, "the server allows none of the offered suites"};
        }
        const auto chosen = suite_from_wire(payload[1]);
        if (!chosen || !cfg.suites.allows(*chosen)) {
            return Error{Errc::suite_not_allowed, "the server chose a suite that was not offered"};
        }
        suite = *chosen;

        if (pinned || !expected_fp.empty()) {
            if (!pinned) {
                SIM_TRY_STATUS(known->remember(cfg.server_id, server_static));
            }
            action = ChannelAction::write_message;
            return ok();
        }
        switch (cfg.trust) {
            case TrustMode::tofu:
                SIM_TRY_STATUS(known->remember(cfg.server_id, server_static));
                action = ChannelAction::write_message;
                return ok();
            case TrustMode::ask:
                action = ChannelAction::awaiting_trust;
                return ok();
            case TrustMode::pinned_only:
                break;
        }
        return Error{Errc::server_key_unknown, "server key is not pinned and the trust mode is pinned_only"};
    }
};

ClientHandshake::ClientHandshake(std::unique_ptr<Impl> impl) noexcept : m_impl(std::move(impl)) {}
ClientHandshake::ClientHandshake(ClientHandshake&&) noexcept = default;
ClientHandshake& ClientHandshake::operator=(ClientHandshake&&) noexcept = default;
ClientHandshake::~ClientHandshake() = default;

Result<ClientHandshake> ClientHandshake::create(ClientHandshakeConfig config, KnownServers& known, Rng& rng,
                                                const Clock& clock) {
    if (config.server_id.empty()) {
        return Error{Errc::invalid_argument, "client handshake needs a server id"};
    }
    if (!cipher_of(config.protocol)) {
        return Error{Errc::invalid_argument, "unknown handshake protocol"};
    }
    auto impl = std::make_unique<Impl>();
    if (!config.expected_fingerprint.empty()) {
        impl->expected_fp = normalize_fingerprint(config.expected_fingerprint);
        if (impl->expected_fp.empty()) {
            return Error{Errc::invalid_argument, "expected fingerprint is not 64 hex digits"};
        }
    }
    SIM_TRY_STATUS(check_session_config(config.session, rng, clock));
    if (config.static_private_key.empty()) {
        config.static_private_key = crypto::x25519_generate(rng).private_key;
    } else if (config.static_private_key.size() != crypto::x25519_key_size) {
        return Error{Errc::invalid_key, "client static key must be 32 bytes"};
    }
    SIM_TRY(noise::HandshakeState hs,
            make_noise(config.protocol, noise::Role::initiator, config.static_private_key, rng));
    wipe(config.static_private_key);
    impl->cfg = std::move(config);
    impl->known = &known;
    impl->rng = &rng;
    impl->clock = &clock;
    impl->hs.emplace(std::move(hs));
    return ClientHandshake(std::move(impl));
}

ChannelAction ClientHandshake::next_action() const noexcept {
    return m_impl ? m_impl->action : ChannelAction::failed;
}

Result<Bytes> ClientHandshake::write_message() {
    if (!m_impl) {
        return moved_error();
    }
    if (m_impl->action != ChannelAction::write_message) {
        return m_impl->fail(Error{Errc::invalid_state, "client handshake: not expecting write_message"});
    }
    auto out = m_impl->write();
    if (!out) {
        return m_impl->fail(std::move(out).error());
    }
    return out;
}

Status ClientHandshake::read_message(ByteView message) {
    if (!m_impl) {
        return moved_error();
    }
    if (m_impl->action != ChannelAction::read_message) {
        return m_impl->fail(Error{Errc::invalid_state, "client handshake: not expecting read_message"});
    }
    auto st = m_impl->read(message);
    if (!st) {
        return m_impl->fail(st.error());
    }
    return st;
}

Status ClientHandshake::trust(bool accept) {
    if (!m_impl) {
        return moved_error();
    }
    if (m_impl->action != ChannelAction::awaiting_trust) {
        return m_impl->fail(Error{Errc::invalid_state, "client handshake: no trust decision pending"});
    }
    if (!accept) {
        return m_impl->fail(Error{Errc::server_key_unknown, "the server key was not accepted"});
    }
    auto st = m_impl->known->remember(m_impl->cfg.server_id, m_impl->server_static);
    if (!st) {
        return m_impl->fail(st.error());
    }
    m_impl->action = ChannelAction::write_message;
    return ok();
}

const std::string& ClientHandshake::server_fingerprint() const noexcept {
    static const std::string none;
    return m_impl ? m_impl->server_fp : none;
}

Result<ChannelEstablished> ClientHandshake::finish() {
    if (!m_impl) {
        return moved_error();
    }
    if (m_impl->action != ChannelAction::complete || !m_impl->result) {
        return m_impl->fail(Error{Errc::invalid_state, "client handshake: nothing to finish"});
    }
    ChannelEstablished out = std::move(*m_impl->result);
    m_impl->result.reset();
    return out;
}

const Error& ClientHandshake::failure() const noexcept {
    return m_impl ? m_impl->failure : moved_error();
}

// ---------------------------------------------------------------- server

struct ServerHandshake::Impl : HandshakeCore {
    Impl() : HandshakeCore(ChannelAction::read_message) {}

    ServerHandshakeConfig cfg;
    Rng* rng = nullptr;
    const Clock* clock = nullptr;
    std::string own_fp;
    HandshakeProtocol protocol = HandshakeProtocol::noise_xx_25519_chachapoly_sha256;
    bool hello_read = false;
    std::optional<SuiteId> chosen;
    std::vector<ChannelFeature> agreed;  // offered by the client and spoken here: the ServerHello lists them

    Error fail(Error err) {
        fail_closed(err, cfg.static_private_key);
        return err;
    }

    [[nodiscard]] Bytes frame(ByteView noise_message) const {
        Bytes out;
        out.reserve(1 + noise_message.size());
        out.push_back(static_cast<std::uint8_t>(protocol));
        out.insert(out.end(), noise_message.begin(), noise_message.end());
        return out;
    }

    Status read_hello(ByteView message, std::uint8_t id) {
        const auto proto = static_cast<HandshakeProtocol>(id);
        if (!cipher_of(proto)) {
            return Error{Errc::bad_field, "unknown handshake protocol id"};
        }
        if (std::find(cfg.protocols.begin(), cfg.protocols.end(), proto) == cfg.protocols.end()) {
            return Error{Errc::suite_not_allowed, "handshake protocol not accepted by this server"};
        }
        protocol = proto;
        SIM_TRY(noise::HandshakeState state,
                make_noise(protocol, noise::Role::responder, cfg.static_private_key, *rng));
        wipe(cfg.static_private_key);
        hs.emplace(std::move(state));
        SIM_TRY(const Bytes hello, hs->read_message(message.subspan(1)));
        if (hello.size() < 2) {
            return Error{Errc::truncated, "ClientHello shorter than 2 bytes"};
        }
        if (hello[0] != channel_hello_version) {
            return Error{Errc::unsupported_version, "ClientHello version is not 1"};
        }
        const std::size_t count = hello[1];
        if (count == 0) {
            return Error{Errc::bad_field, "ClientHello offers no suite"};
        }
        if (hello.size() < 2 + count) {
            return Error{Errc::truncated, "ClientHello shorter than its suite count"};
        }
        if (hello.size() > 2 + count) {
            return Error{Errc::trailing_bytes, "ClientHello longer than its suite count"};
        }
        // Ids we do not know are skipped: a newer client may offer more.
        std::vector<SuiteId> offer;
        for (std::size_t i = 0; i < count; ++i) {
            const std::uint8_t id = hello[2 + i];
            if (is_channel_feature_id(id)) {
                const auto f = static_cast<ChannelFeature>(id);
                if (has_feature(cfg.features, f) && !has_feature(agreed, f)) {
                    agreed.push_back(f);
                }
            } else if (const auto s = suite_from_wire(id)) {
                offer.push_back(*s);
            }
        }
        const auto pick = cfg.suites.choose(offer);
        if (pick) {
            chosen = *pick;
        }
        hello_read = true;
        action = ChannelAction::write_message;
        return ok();
    }

    Status read_finished(ByteView message, std::uint8_t id) {
        if (id != static_cast<std::uint8_t>(protocol)) {
            return Error{Errc::bad_field, "handshake protocol id differs from msg1's"};
        }
        SIM_TRY(const Bytes payload, hs->read_message(message.subspan(1)));
        if (!payload.empty()) {
            return Error{Errc::bad_field, "msg3 payload must be empty"};
        }
        SIM_TRY(ChannelEstablished est, establish(*hs, false, protocol, *chosen, cfg.session, own_fp, *rng, *clock));
        est.features = agreed;
        result.emplace(std::move(est));
        hs.reset();
        action = ChannelAction::complete;
        return ok();
    }
};

ServerHandshake::ServerHandshake(std::unique_ptr<Impl> impl) noexcept : m_impl(std::move(impl)) {}
ServerHandshake::ServerHandshake(ServerHandshake&&) noexcept = default;
ServerHandshake& ServerHandshake::operator=(ServerHandshake&&) noexcept = default;
ServerHandshake::~ServerHandshake() = default;

Result<ServerHandshake> ServerHandshake::create(ServerHandshakeConfig config, Rng& rng, const Clock& clock) {
    auto pair = crypto::x25519_from_private(config.static_private_key);
    if (!pair) {
        return Error{Errc::invalid_key, "server static key must be 32 bytes"};
    }
    if (config.protocols.empty()) {
        return Error{Errc::invalid_argument, "server accepts no handshake protocol"};
    }
    for (const auto p : config.protocols) {
        if (!cipher_of(p)) {
            return Error{Errc::invalid_argument, "unknown handshake protocol"};
        }
    }
    SIM_TRY_STATUS(check_session_config(config.session, rng, clock));
    auto impl = std::make_unique<Impl>();
    impl->own_fp = fingerprint(pair->public_key);
    impl->cfg = std::move(config);
    impl->rng = &rng;
    impl->clock = &clock;
    return ServerHandshake(std::move(impl));
}

ChannelAction ServerHandshake::next_action() const noexcept {
    return m_impl ? m_impl->action : ChannelAction::failed;
}

Status ServerHandshake::read_message(ByteView message) {
    if (!m_impl) {
        return moved_error();
    }
    if (m_impl->action != ChannelAction::read_message) {
        return m_impl->fail(Error{Errc::invalid_state, "server handshake: not expecting read_message"});
    }
    auto id = envelope_id(message);
    if (!id) {
        return m_impl->fail(std::move(id).error());
    }
    auto st = m_impl->hello_read ? m_impl->read_finished(message, *id) : m_impl->read_hello(message, *id);
    if (!st) {
        return m_impl->fail(st.error());
    }
    return st;
}

Result<Bytes> ServerHandshake::write_message() {
    if (!m_impl) {
        return moved_error();
    }
    if (m_impl->action != ChannelAction::write_message) {
        return m_impl->fail(Error{Errc::invalid_state, "server handshake: not expecting write_message"});
    }
    Bytes hello{channel_hello_version, m_impl->chosen ? static_cast<std::uint8_t>(*m_impl->chosen) : no_suite};
    if (!m_impl->agreed.empty() && m_impl->chosen) {
        // Only to a client that offered a feature spoken here: a version-1 client reads exactly two bytes (3.2).
        hello.push_back(static_cast<std::uint8_t>(m_impl->agreed.size()));
        for (const auto f : m_impl->agreed) {
            hello.push_back(static_cast<std::uint8_t>(f));
        }
    }
    auto m = m_impl->hs->write_message(hello);
    if (!m) {
        return m_impl->fail(std::move(m).error());
    }
    Bytes out = m_impl->frame(*m);
    if (!m_impl->chosen) {
        // The refusal is authenticated like any msg2; after it the handshake is over.
        m_impl->fail(Error{Errc::no_common_suite, "the client offered no suite this server allows"});
        return out;
    }
    m_impl->action = ChannelAction::read_message;
    return out;
}

Result<ChannelEstablished> ServerHandshake::finish() {
    if (!m_impl) {
        return moved_error();
    }
    if (m_impl->action != ChannelAction::complete || !m_impl->result) {
        return m_impl->fail(Error{Errc::invalid_state, "server handshake: nothing to finish"});
    }
    ChannelEstablished out = std::move(*m_impl->result);
    m_impl->result.reset();
    return out;
}

const std::string& ServerHandshake::server_fingerprint() const noexcept {
    static const std::string none;
    return m_impl ? m_impl->own_fp : none;
}

const Error& ServerHandshake::failure() const noexcept {
    return m_impl ? m_impl->failure : moved_error();
}

}  // namespace sim
