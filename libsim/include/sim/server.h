#pragma once
/// @file
/// The sans-IO server core: the seed's `server.py`. It runs the channel handshake for each connection, logs users
/// in (through `sim::auth`, on an Executor so hashing never stalls routing), sets up conversations
/// (init / ack_init / KEYGEN), checks and forwards messages, and ends conversations. It owns no socket, thread or
/// timer: a transport (sim/net.h, or a test pipe) feeds it bytes through `ConnectionHandler`.
///
/// Thread-safety: `ServerCore` and every handler it returns may be used from many threads; a transport calls
/// one connection's handler from one thread at a time.

#include <sim/auth.h>
#include <sim/bytes.h>
#include <sim/clock.h>
#include <sim/error.h>
#include <sim/frame.h>
#include <sim/messages.h>
#include <sim/rng.h>
#include <sim/session.h>
#include <sim/store.h>
#include <sim/suite.h>
#include <sim/transport.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sim {

/// Severity of a server log line. Log lines never contain secrets or message content.
enum class LogLevel : std::uint8_t { debug, info, warning, error };

struct ServerConfig {
    /// The server's long-term X25519 static key (32 bytes). Clients pin its public half.
    SecureBytes static_private_key;
    /// Record suites allowed on client-server channels, in preference order.
    SuitePolicy channel_policy = SuitePolicy::default_policy();
    /// How new conversations are keyed (docs/protocol.md section 6): end to end (X3DH + Double Ratchet; the server
    /// relays prekey bundles and stores messages for offline users) or the seed's server-assigned keys.
    ConversationMode conversation_mode = ConversationMode::end_to_end;
    /// Most messages stored for one recipient (Errc::queue_full beyond).
    std::size_t max_stored_per_recipient = 100'000;
    /// Byte quotas of the offline store, counted in envelope bytes (docs/protocol.md 6.7): one recipient's mailbox
    /// (Errc::queue_full beyond), what one sender has stored for recipients who have not read it yet
    /// (Errc::quota_exceeded), and the whole store (Errc::store_full). The defaults suit a team server.
    std::uint64_t max_mailbox_bytes = 256ULL << 20U;
    std::uint64_t max_sender_bytes = 128ULL << 20U;
    std::uint64_t max_store_bytes = 4ULL << 30U;
    /// Free space kept on the store's file system: a message that would leave less is refused (Errc::store_full).
    /// Needs `store_free_space`.
    std::uint64_t min_free_bytes = 1ULL << 30U;
    /// Bytes free where the store writes (asked at most once a second); empty or nullopt: not checked (a database
    /// on another machine).
    std::function<std::optional<std::uint64_t>()> store_free_space;
    /// Most messages sent to a device and not deleted yet (unacknowledged, or acknowledged with the deletion not
    /// committed): after a crash at most this many come again, and a client remembers the last 1,000 ids per sender
    /// to show each once (docs/protocol.md 6.7), so ServerCore::create refuses more than that
    /// (remembered_ids_per_sender) or 0.
    std::size_t delivery_window = 1000;
    /// Where offline-store commits run (one job at a time). Null: the login workers. Give commits their own
    /// executor when the workers run at a low priority (sim::net's default) or may be saturated by password
    /// hashing, so that a login storm does not delay durable acknowledgements. Must outlive the core.
    Executor* commit_executor = nullptr;
    /// Suites for server-assigned conversation keys (the first one is used for new conversations); in end-to-end
    /// mode the first is the hint in the KEYGEN.
    SuitePolicy conversation_policy = SuitePolicy::default_policy();
    /// Key rotation of the client-server channel (the conversation rotation is the clients').
    RotationPolicy channel_rotation{};
    /// Largest frame accepted from a client.
    std::size_t max_frame_size = default_max_frame_size;
    /// Lifetime of session tokens issued at password login.
    Duration token_ttl = std::chrono::hours(24 * 30);
    /// Most devices an account may have, pending or active (docs/protocol.md 6.9; at most 64). Needs a device
    /// store (ServerCore::create).
    std::size_t max_devices = 5;
    /// How long a device being linked may wait for its approval: after it, the server closes its connection at its
    /// next frame (a silent one at the transport's idle timeout) and forgets its id at the account's next link.
    Duration link_timeout = std::chrono::minutes(10);
    /// Per-connection rate limit for message and probe frames (token bucket).
    double messages_per_second = 2000.0;
    std::uint32_t message_burst = 4000;
    /// A connection that keeps flooding past its limit this many times in a row is closed.
    std::uint32_t max_rate_violations = 1000;
    /// Messages of one stream (sender connection -> recipient) a client may have sent without a receipt; announced
    /// to clients in the `limits` frame at login (docs/protocol.md 6.6). A connection that sends more than four
    /// windows of out-of-order messages in a row is closed.
    std::uint16_t send_window = 256;
    /// Frames a connection may send while its login is being checked; more is a protocol error.
    std::size_t max_frames_during_login = 16;
    /// Several server nodes on one database (docs/operations.md, "Several nodes"): the NATS servers that carry
    /// presence, frames and wake-ups between the nodes, comma-separated ("nats://10.0.0.1:4222,nats://10.0.0.2:4222").
    /// Empty (the default): this core is the only node, and nothing leaves the process. ServerCore::create fails
    /// with Errc::io_error when no NATS server answers, Errc::not_implemented when libsim was built without libnats.
    /// Every node must use the same database (not SQLite or memory: the caller checks), key and master key.
    std::string broker;
    /// This node's name among the nodes (required with `broker`; logs and announcements).
    std::string node_id;
    /// Wall clock for token expiry (injected in tests).
    std::function<store::WallTime()> wall_clock;
    /// Where log lines go (none by default).
    std::function<void(LogLevel, std::string_view)> log;
};

/// A latency histogram read at one moment: what a Prometheus histogram shows (buckets with an upper bound, the sum
/// and the count of the observations).
struct HistogramSnapshot {
    std::vector<Duration> bounds;       ///< upper bounds of the buckets, ascending (Prometheus `le`)
    std::vector<std::uint64_t> counts;  ///< observations per bucket, not cumulative; bounds.size() + 1 entries, the
                                        ///< last one for observations above every bound
    Duration sum{0};                    ///< the observations added up
    std::uint64_t count = 0;            ///< the number of observations (the sum of `counts`)
};

/// Counters of the traffic between server nodes (ServerConfig::broker; all zero for one node). They only grow.
struct BrokerStats {
    std::uint64_t wakes = 0;           ///< wake-ups sent to the node holding a recipient device after a commit here
    std::uint64_t wakes_answered = 0;  ///< ... that the holding node answered
    std::uint64_t no_responders = 0;   ///< ... that no node answered at once: nobody holds the device
    std::uint64_t timeouts = 0;        ///< ... with no answer within the timeout, or not sent
    std::uint64_t woken = 0;           ///< wake-ups received from other nodes for devices attached here
    HistogramSnapshot round_trip;      ///< from a wake-up's request to the holding node's answer (answered ones)
};

/// Counters for monitoring and benchmarks. Gauges are values now; the other counts only grow while the core lives.
struct ServerStats {
    std::size_t connections = 0;                  ///< client connections open (the sum of the next three)
    std::size_t connections_handshake = 0;        ///< ... whose channel handshake is under way
    std::size_t connections_unauthenticated = 0;  ///< ... with the channel up and no user logged in (yet)
    std::size_t connections_authenticated = 0;    ///< ... with a user logged in
    std::size_t online_users = 0;                 ///< users logged in
    std::size_t conversations = 0;                ///< pairs with a key (or kept for a delivery)
    std::size_t waiting = 0;                      ///< (user, peer) pairs waiting for the peer to come online
    std::uint64_t messages_routed = 0;     ///< messages sent to the recipient's connection (from its mailbox)
    std::uint64_t messages_delivered = 0;  ///< message ids the recipients acknowledged (`ack` frames)
    std::uint64_t messages_refused = 0;    ///< requests refused (error frames, refused receipts, failed commits)
    /// `messages_refused` by reason: the codes with a count above zero, in ascending order of code.
    std::vector<std::pair<Errc, std::uint64_t>> refused_by_reason;
    std::uint64_t logins_ok = 0;         ///< logins accepted (password, registration or session token)
    std::uint64_t logins_failed = 0;     ///< logins refused, except those counted in `logins_throttled`
    std::uint64_t logins_throttled = 0;  ///< logins refused for too many failed attempts (Errc::throttled)
    std::uint64_t store_commits = 0;     ///< offline-store transactions (group commits)
    std::uint64_t stored_messages = 0;   ///< messages those transactions held
    std::uint64_t store_bytes = 0;       ///< envelope bytes in the offline store or being committed to it
    std::uint64_t store_messages = 0;    ///< messages in the offline store or being committed to it (all mailboxes)
    /// From a connection's accept to its channel being up (successful handshakes; includes the client's round trip).
    HistogramSnapshot handshake_latency;
    /// From the login request (`init` with credentials) to its answer, accepted or refused: the wait for a worker,
    /// the password hash and the database.
    HistogramSnapshot login_latency;
    /// From a message's acceptance for the offline store (queued for the group commit) to the commit of the
    /// transaction that holds it (messages committed; a failed transaction is not counted).
    HistogramSnapshot store_commit_latency;
    /// Traffic between nodes (ServerConfig::broker; all zero for one node).
    BrokerStats broker;
};

class ServerCore {
public:
    /// The collaborators must outlive the core. `vault` may be null (keys are then kept in memory only).
    /// `messages` (usually the same Backend as the accounts) is required: every message is delivered from a
    /// recipient's mailbox (Errc::invalid_argument when null). `prekeys` may be null: end-to-end set-up (prekeys,
    /// KEYGEN mode 2) is then refused (Errc::not_implemented). Appends to `messages` run on `workers` (group
    /// commit). `devices` may be null: every account then has its device 1 only, and linking devices and device
    /// lists (docs/protocol.md 6.9) are refused (Errc::not_implemented). `contacts` may be null: the pairs presence
    /// tells of each other (docs/protocol.md 6.10) are then kept in memory only, and a restart forgets them.
    /// Errc::invalid_key for a static key that is not 32 bytes; Errc::invalid_argument for max_devices 0 or above 64.
    static Result<std::unique_ptr<ServerCore>> create(ServerConfig config, auth::Authenticator& authenticator,
                                                      auth::SessionTokens& tokens,
                                                      auth::ConversationKeyVault* vault,
                                                      store::PrekeyStore* prekeys, store::MessageStore* messages,
                                                      Executor& workers, Rng& rng, const Clock& clock,
                                                      store::DeviceStore* devices = nullptr,
                                                      store::ContactStore* contacts = nullptr);
    ~ServerCore();
    ServerCore(const ServerCore&) = delete;
    ServerCore& operator=(const ServerCore&) = delete;

    /// A handler for a new connection from `peer` ("address:port").
    std::shared_ptr<ConnectionHandler> accept(std::shared_ptr<ConnectionOutput> output, const std::string& peer);

    /// The public half of the static key, and its fingerprint as clients show it.
    [[nodiscard]] ByteView static_public_key() const noexcept;
    [[nodiscard]] std::string fingerprint() const;
    [[nodiscard]] ServerStats stats() const;
    /// The names of the users logged in now, sorted.
    [[nodiscard]] std::vector<std::string> online_users() const;

    /// Tell every client the server is going away (close frame) and close all connections.
    void shutdown();

    /// Server-assigned mode: remove from the vault the keys of conversations that ended and that no stored message
    /// needs any more (a key stays while messages sealed under it wait for their recipient, so that a recipient who
    /// drops before acknowledging them can still read them at its next login). Reads the store: call it now and
    /// then from a thread that may block (simd: every second), never from an I/O thread.
    void release_keys();

    /// End `user`'s live sessions, one per device (an administrator revoked it, changed the password or deleted the account:
    /// see auth::SessionEndFollower), or only `only_device`'s when it is not 0 (the device was removed): an `error`
    /// frame token_invalid, then the connection closes. Returns whether such a session was online.
    bool end_sessions(const std::string& user, DeviceId only_device = 0);

    struct Impl;  ///< opaque; public only so the connection objects of the implementation can name it

private:
    explicit ServerCore(std::shared_ptr<Impl> impl);
    std::shared_ptr<Impl> m_impl;
};

}  // namespace sim
