#pragma once
/// @file
/// libsim's client-server channel handshake: Noise XX (see <sim/handshake.h>) with suite negotiation and server key
/// pinning, sans-IO. The objects here own no socket and no timer: the caller moves handshake messages in and out of
/// frames and enforces deadlines. On success each side gets a SendSession and a RecvSession (<sim/session.h>).
///
/// Wire format of every handshake message: `u8 handshake protocol id || Noise message` (docs/protocol.md s3).
///   msg1 (client -> server): Noise `-> e`, payload ClientHello `{u8 version = 1, u8 count, count x u8 suite id}`
///   msg2 (server -> client): Noise `<- e, ee, s, es`, payload ServerHello `{u8 version = 1, u8 suite id}`
///                            (suite id 0: the server found no common suite and ends the handshake)
///   msg3 (client -> server): Noise `-> s, se`, empty payload
/// The payloads are hashed into the Noise transcript, so tampering with the offer makes the handshake fail.

#include <sim/bytes.h>
#include <sim/clock.h>
#include <sim/error.h>
#include <sim/rng.h>
#include <sim/session.h>
#include <sim/suite.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sim {

/// The handshake protocol id, first byte of every handshake message. Values are stable.
enum class HandshakeProtocol : std::uint8_t {
    noise_xx_25519_chachapoly_sha256 = 1,  ///< Noise_XX_25519_ChaChaPoly_SHA256 (the default)
    noise_xx_25519_aesgcm_sha256 = 2,      ///< Noise_XX_25519_AESGCM_SHA256
};

/// Version byte of ClientHello and ServerHello.
inline constexpr std::uint8_t channel_hello_version = 1;
/// The Noise prologue of the channel handshake.
inline constexpr std::string_view channel_prologue = "libsim/1";
/// Largest handshake message on libsim's wire: the protocol id byte plus the largest Noise message.
inline constexpr std::size_t max_channel_handshake_message = 1 + 65535;

/// The Noise protocol name of `protocol` ("Noise_XX_25519_ChaChaPoly_SHA256"), or "" for an unknown value.
std::string_view handshake_protocol_name(HandshakeProtocol protocol) noexcept;

/// The fingerprint users compare: SHA-256 of the key, lower-case hex in groups of 4 separated by spaces
/// ("ab12 cd34 ... 9f0e", 16 groups).
std::string fingerprint(ByteView public_key);

/// Where a client keeps the server keys it trusts (pins), by server id (e.g. "host:port").
class KnownServers {
public:
    KnownServers() = default;
    KnownServers(const KnownServers&) = delete;
    KnownServers& operator=(const KnownServers&) = delete;
    KnownServers(KnownServers&&) = delete;
    KnownServers& operator=(KnownServers&&) = delete;
    virtual ~KnownServers() = default;
    /// The pinned public key of `server_id`, or nullopt when none is pinned.
    [[nodiscard]] virtual std::optional<Bytes> lookup(std::string_view server_id) const = 0;
    /// Pin `public_key` for `server_id`, replacing any earlier pin (the handshake only pins unknown servers; a
    /// replacement is the application's decision). Errors are the backend's (e.g. Errc::storage_error).
    virtual Status remember(std::string_view server_id, ByteView public_key) = 0;
};

/// KnownServers in memory (tests, short-lived tools).
class MemoryKnownServers final : public KnownServers {
public:
    [[nodiscard]] std::optional<Bytes> lookup(std::string_view server_id) const override;
    Status remember(std::string_view server_id, ByteView public_key) override;
    /// Drop the pin of `server_id` (no-op when none).
    void forget(std::string_view server_id);
    /// Number of pinned servers.
    [[nodiscard]] std::size_t size() const noexcept { return m_keys.size(); }

private:
    std::map<std::string, Bytes, std::less<>> m_keys;
};

/// An optional protocol feature that client and server agree on in the handshake (docs/protocol.md 3.2): the client
/// lists the ones it speaks among its suite ids (a server that knows none of them skips them like unknown suites),
/// the server answers with those it speaks too. A new inner frame type is sent only when its feature was agreed.
/// Values are stable; 0xC0-0xFF of the ClientHello's list are feature ids, never suites.
enum class ChannelFeature : std::uint8_t {
    presence = 0xC1,  ///< the `presence` inner frame (FrameType::presence, docs/protocol.md 6.10)
};

/// Whether `id`, a byte of a ClientHello's suite list, is a feature id rather than a suite.
[[nodiscard]] constexpr bool is_channel_feature_id(std::uint8_t id) noexcept { return id >= 0xC0; }

/// What the client does with a server key it has not pinned yet.
enum class TrustMode : std::uint8_t {
    tofu,         ///< trust on first use: pin it and continue (the fingerprint is reported in the result)
    ask,          ///< pause in ChannelAction::awaiting_trust until the caller calls trust(true / false)
    pinned_only,  ///< refuse: Errc::server_key_unknown
};

/// What a channel handshake wants next.
enum class ChannelAction : std::uint8_t {
    write_message,   ///< call write_message() and send the bytes
    read_message,    ///< call read_message() with the peer's next handshake message
    awaiting_trust,  ///< client only (TrustMode::ask): show server_fingerprint() and call trust()
    complete,        ///< call finish() to take the sessions
    failed,          ///< the handshake failed (see failure()); secrets are wiped, calls report Errc::invalid_state
};

/// Session settings for the channel: SessionConfig::suite is ignored (the negotiated suite is used); records
/// arrive in order over a stream, so the replay window is 0, and any bad record kills the session.
inline SessionConfig default_channel_session_config() {
    SessionConfig cfg;
    cfg.replay_window = 0;
    cfg.fail_closed = true;
    return cfg;
}

/// Configuration of the client side.
struct ClientHandshakeConfig {
    /// Name under which the server's key is pinned (e.g. "host:port"); must not be empty.
    std::string server_id;
    /// The client's static X25519 private key (32 bytes); empty: a fresh one per handshake.
    SecureBytes static_private_key;
    HandshakeProtocol protocol = HandshakeProtocol::noise_xx_25519_chachapoly_sha256;
    /// Suites offered, in preference order; the server's choice must be one of them.
    SuitePolicy suites = SuitePolicy::default_policy();
    TrustMode trust = TrustMode::tofu;
    /// Optional fingerprint from configuration (any case; spaces and ':' ignored). When set, a server key with a
    /// different fingerprint is refused with Errc::server_key_mismatch, and a matching unpinned key is trusted and
    /// pinned whatever the trust mode.
    std::string expected_fingerprint;
    SessionConfig session = default_channel_session_config();
    /// Features offered (docs/protocol.md 3.2); empty: the ClientHello is exactly version 1's suite list.
    std::vector<ChannelFeature> features;
};

/// Configuration of the server side.
struct ServerHandshakeConfig {
    /// The server's static X25519 private key (32 bytes, required).
    SecureBytes static_private_key;
    /// Handshake protocols accepted from clients.
    std::vector<HandshakeProtocol> protocols = {HandshakeProtocol::noise_xx_25519_chachapoly_sha256,
                                                HandshakeProtocol::noise_xx_25519_aesgcm_sha256};
    /// Suites allowed, in the server's preference order (the server chooses).
    SuitePolicy suites = SuitePolicy::default_policy();
    SessionConfig session = default_channel_session_config();
    /// Features this server speaks; it accepts those of them a client offers (docs/protocol.md 3.2).
    std::vector<ChannelFeature> features;
};

/// What a completed channel handshake hands over.
///
/// Session keys (docs/protocol.md s3.4): with (k1, k2) = Noise Split() and h the handshake hash,
/// key_i2r = HKDF-SHA256(salt = h, ikm = k1, info = "libsim v1 record i2r" || suite id, L = suite_key_size(suite)),
/// key_r2i likewise with k2 and "libsim v1 record r2i". The client sends with key_i2r, the server with key_r2i.
struct ChannelEstablished {
    HandshakeProtocol protocol;
    SuiteId suite;
    SendSession send;
    RecvSession recv;
    /// The Noise handshake hash (32 bytes): a channel binding value, e.g. for authentication tokens.
    Bytes handshake_hash;
    /// The peer's static public key (the server's on the client, the client's on the server).
    Bytes peer_static;
    /// fingerprint() of the server's static key (on the server: of its own key).
    std::string server_fingerprint;
    /// The features both sides speak (offered by the client and accepted by the server), in the client's order.
    std::vector<ChannelFeature> features;
};

/// Whether `established` agreed on `feature`.
[[nodiscard]] inline bool has_feature(const std::vector<ChannelFeature>& features, ChannelFeature feature) {
    for (const auto f : features) {
        if (f == feature) {
            return true;
        }
    }
    return false;
}

/// The client side of the channel handshake.
class ClientHandshake {
public:
    /// Errc::invalid_argument for an empty server_id, an unknown protocol, an expected_fingerprint that is not
    /// 64 hex digits, or a session config that SendSession::create refuses; Errc::invalid_key for a static key
    /// that is not 32 bytes. `known`, `rng` and `clock` must
    /// outlive the handshake and the sessions it returns (rng and clock).
    static Result<ClientHandshake> create(ClientHandshakeConfig config, KnownServers& known, Rng& rng,
                                          const Clock& clock);
    ClientHandshake(ClientHandshake&& other) noexcept;
    ClientHandshake& operator=(ClientHandshake&& other) noexcept;
    ClientHandshake(const ClientHandshake&) = delete;
    ClientHandshake& operator=(const ClientHandshake&) = delete;
    ~ClientHandshake();

    [[nodiscard]] ChannelAction next_action() const noexcept;

    /// msg1 (first call) or msg3 (after the server was accepted). Errc::invalid_state when it is not the time.
    Result<Bytes> write_message();

    /// Read msg2. Errors (each fails the handshake): Errc::invalid_state (not the time), Errc::truncated (empty),
    /// Errc::frame_too_large (over max_channel_handshake_message), Errc::bad_field (protocol id differs from ours),
    /// the Noise errors (auth_failed, truncated, invalid_key), Errc::server_key_mismatch (a pinned or expected key
    /// differs: checked before anything else is done with the message), Errc::unsupported_version,
    /// Errc::truncated / Errc::trailing_bytes (ServerHello length; a feature list only when features were offered),
    /// Errc::bad_field (the server accepted a feature that was not offered), Errc::no_common_suite (the server found
    /// none), Errc::suite_not_allowed (the server chose a suite we did not offer), Errc::server_key_unknown
    /// (TrustMode::pinned_only and no pin), or the KnownServers backend's error.
    Status read_message(ByteView message);

    /// Answer ChannelAction::awaiting_trust: true pins the key and continues (next: write_message), false fails
    /// the handshake with Errc::server_key_unknown. Errc::invalid_state when no question is pending.
    Status trust(bool accept);

    /// The server's key fingerprint once msg2 was read (empty before and after a failure).
    [[nodiscard]] const std::string& server_fingerprint() const noexcept;

    /// The sessions, once: Errc::invalid_state unless next_action() is ChannelAction::complete (and the first
    /// call after that).
    Result<ChannelEstablished> finish();

    /// The error that failed the handshake (Errc::ok while it has not failed).
    [[nodiscard]] const Error& failure() const noexcept;

private:
    struct Impl;
    explicit ClientHandshake(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> m_impl;
};

/// The server side of the channel handshake.
class ServerHandshake {
public:
    /// Errc::invalid_key for a static key that is not 32 bytes; Errc::invalid_argument for an empty or unknown
    /// protocol list, or a session config that SendSession::create refuses. `rng` and `clock` must outlive the
    /// handshake and its sessions.
    static Result<ServerHandshake> create(ServerHandshakeConfig config, Rng& rng, const Clock& clock);
    ServerHandshake(ServerHandshake&& other) noexcept;
    ServerHandshake& operator=(ServerHandshake&& other) noexcept;
    ServerHandshake(const ServerHandshake&) = delete;
    ServerHandshake& operator=(const ServerHandshake&) = delete;
    ~ServerHandshake();

    [[nodiscard]] ChannelAction next_action() const noexcept;

    /// Read msg1 or msg3. Errors (each fails the handshake): Errc::invalid_state, Errc::truncated,
    /// Errc::frame_too_large, Errc::bad_field (unknown protocol id, or a different one than msg1's; a non-empty
    /// msg3 payload), Errc::suite_not_allowed (a protocol this server does not accept), the Noise errors,
    /// Errc::unsupported_version, Errc::truncated / Errc::trailing_bytes / Errc::bad_field (ClientHello layout;
    /// count 0). An offer without a common suite is not an error here: msg2 then carries the refusal.
    Status read_message(ByteView message);

    /// msg2. When the offer had no common suite, msg2 carries suite 0 and, once it is written, the handshake is
    /// failed with Errc::no_common_suite (send the bytes, then close). Errc::invalid_state when it is not the time.
    Result<Bytes> write_message();

    /// The sessions, once: Errc::invalid_state unless next_action() is ChannelAction::complete.
    Result<ChannelEstablished> finish();

    /// fingerprint() of the server's own static key.
    [[nodiscard]] const std::string& server_fingerprint() const noexcept;

    /// The error that failed the handshake (Errc::ok while it has not failed).
    [[nodiscard]] const Error& failure() const noexcept;

private:
    struct Impl;
    explicit ServerHandshake(std::unique_ptr<Impl> impl) noexcept;
    std::unique_ptr<Impl> m_impl;
};

}  // namespace sim
