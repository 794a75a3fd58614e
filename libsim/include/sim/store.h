#pragma once
/// @file
/// Storage interfaces for accounts, session tokens, conversation keys, prekeys, devices, contacts and the offline
/// message queue, and the backends that implement them.
///
/// The authentication logic (`sim/auth.h`) talks only to these interfaces, so an application can bring its own
/// backend. libsim ships four, each of which implements all seven interfaces (`Backend`) and passes one shared
/// conformance suite (`tests/auth/`):
/// - memory (`make_memory_backend`): tests and embedding; nothing persists.
/// - SQLite (`open_sqlite_backend`): the embedded default. WAL mode, `synchronous=FULL`, versioned schema migrated
///   on open; a newer or foreign file is refused without being modified.
/// - MariaDB/MySQL (`open_mariadb_backend`): MariaDB Connector/C, prepared statements only, reconnects once after a
///   dropped connection.
/// - PostgreSQL (`open_postgres_backend`): libpq, prepared statements with binary parameters only, the same
///   reconnect rule and the same stores as MariaDB (one implementation over both).
///
/// Data rules shared by every backend (the conformance suite checks them):
/// - Usernames reach a store already in canonical form (`sim::auth::canonical_username`); stores compare them
///   byte for byte.
/// - Password hashes are opaque self-describing strings (at most `max_hash_length` bytes).
/// - Session tokens are stored only as their SHA-256 (`token_hash`, 32 bytes); a store never sees a token.
/// - Conversation keys are stored only sealed (encrypted and authenticated by `sim::auth::ConversationKeyVault`).
/// - Deleting a user deletes their session tokens, conversation keys, prekeys, devices, device list, contact pairs
///   and the messages stored for them.
/// - Prekeys and stored messages are public keys and end-to-end ciphertext: stored as they are.
/// - Stores never read a clock: every time value is passed in by the caller.
///
/// Thread safety: every backend object is safe to call from several threads at once (each serialises its own
/// database access). Error details never contain usernames, hashes, tokens, keys or connection URLs.

#include <sim/bytes.h>
#include <sim/clock.h>
#include <sim/error.h>
#include <sim/messages.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sim::store {

/// Wall-clock time in milliseconds since the Unix epoch, for values that must mean the same after a restart
/// (token expiry, conversation key creation). The caller supplies it; stores never read a clock.
using WallTime = std::chrono::sys_time<std::chrono::milliseconds>;

/// Longest password hash string a store accepts (Errc::invalid_argument beyond).
inline constexpr std::size_t max_hash_length = 255;
/// Longest canonical username a store accepts (the auth layer's limit is smaller).
inline constexpr std::size_t max_username_length = 64;
/// Size of a session token hash (SHA-256).
inline constexpr std::size_t token_hash_size = 32;
/// Longest sealed conversation key blob a store accepts.
inline constexpr std::size_t max_sealed_key_size = 512;

// ---------------------------------------------------------------- credentials

/// Longest throttle key a store accepts (CredentialStore::record_key_failure).
inline constexpr std::size_t max_throttle_key_length = 400;

/// Failed-login bookkeeping of one account or throttle key, used by the authenticator's throttling.
///
/// `last_failure` is wall-clock time supplied by the caller, so it means the same on every node sharing the
/// database and after a restart; a store only keeps it.
struct FailureState {
    std::uint32_t count = 0;  ///< failures since the last success or the last quiet period
    WallTime last_failure{};  ///< time of the most recent failure (meaningless when count is 0)
    friend bool operator==(const FailureState&, const FailureState&) = default;
};

/// One account as a credential store returns it.
struct UserRecord {
    std::string username;       ///< canonical name
    std::string password_hash;  ///< self-describing hash string; never log it
    FailureState failures;      ///< throttling state
};

/// Accounts: name, password hash, failed-attempt counter; and the failed-attempt counters of throttle keys (source
/// addresses, names without an account), so that every node sharing the database counts against one budget.
class CredentialStore {
public:
    virtual ~CredentialStore() = default;

    /// Add an account. Errc::user_exists when the name is taken; Errc::invalid_argument for an empty or
    /// oversized name or hash; Errc::storage_error when the backend fails.
    [[nodiscard]] virtual Status create_user(std::string_view username, std::string_view password_hash) = 0;

    /// The account, or an empty optional when there is none (absence is not an error). Errc::storage_error.
    [[nodiscard]] virtual Result<std::optional<UserRecord>> find_user(std::string_view username) = 0;

    /// Replace the password hash. With `expected_old`, only when the stored hash still equals it (a
    /// compare-and-swap, so an opportunistic re-hash cannot undo a concurrent password change); returns whether
    /// the hash was replaced. Errc::user_not_found, Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<bool> replace_hash(std::string_view username, std::string_view new_hash,
                                                    std::optional<std::string_view> expected_old) = 0;

    /// Atomically count one failed login at `now`: when the previous failure is at least `forget_after` old, or
    /// lies after `now` (the clock restarted, e.g. after a reboot), the count restarts at 1; otherwise it grows
    /// by one. Returns the new state. Errc::user_not_found, Errc::storage_error.
    [[nodiscard]] virtual Result<FailureState> record_failure(std::string_view username, WallTime now,
                                                              Duration forget_after) = 0;

    /// Reset the failure count to zero. Errc::user_not_found, Errc::storage_error.
    [[nodiscard]] virtual Status clear_failures(std::string_view username) = 0;

    /// Atomically count one failure of a throttle key (an opaque string chosen by the caller, 1..
    /// max_throttle_key_length bytes) at `now`, with the rule of record_failure; a key without a row starts at 1.
    /// Returns the new state. Errc::invalid_argument (key), Errc::storage_error.
    [[nodiscard]] virtual Result<FailureState> record_key_failure(std::string_view key, WallTime now,
                                                                  Duration forget_after) = 0;

    /// The state of a throttle key (count 0 when it has none). Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<FailureState> find_key_failures(std::string_view key) = 0;

    /// Forget a throttle key (nothing happens when it has no row). Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Status clear_key_failures(std::string_view key) = 0;

    /// Forget every throttle key whose last failure is at or before `before`; returns how many. The memory backend
    /// also forgets the oldest keys beyond a fixed number of them. Errc::storage_error.
    [[nodiscard]] virtual Result<std::size_t> purge_key_failures(WallTime before) = 0;

    /// Remove the account and, with it, its session tokens and conversation keys; logs a SessionEnd for the user
    /// in the same transaction. Errc::user_not_found, Errc::storage_error.
    [[nodiscard]] virtual Status delete_user(std::string_view username) = 0;

    /// All usernames in ascending byte order. Errc::storage_error.
    [[nodiscard]] virtual Result<std::vector<std::string>> list_users() = 0;
};

// ---------------------------------------------------------------- session tokens

/// What a session token store knows about one token.
struct SessionRecord {
    std::string username;                ///< owner (canonical)
    DeviceId device = first_device;      ///< the device the token was issued to (a token logs in that device only)
    WallTime expires{};                  ///< the token is invalid from this instant on
};

/// One entry of the session-end log: every session of `username` open when it was written must end (an
/// administrator revoked the user's sessions, changed the password or deleted the account). Running servers read
/// the log to close those connections (sim::auth::SessionEndFollower).
struct SessionEnd {
    std::uint64_t seq = 0;  ///< grows with each entry (commit order may differ by a little on MariaDB)
    std::string username;
    DeviceId device = 0;    ///< 0: every device of the user; otherwise only this one (it was removed)
    friend bool operator==(const SessionEnd&, const SessionEnd&) = default;
};

/// Session tokens, stored only as the SHA-256 of the token (a leaked table yields no usable token).
class SessionTokenStore {
public:
    virtual ~SessionTokenStore() = default;

    /// Remember a token hash for (`username`, `device`) until `expires`. Errc::invalid_argument when `token_hash`
    /// is not 32 bytes or `device` is 0; Errc::user_not_found when the account does not exist or the device is not
    /// active (DeviceStore); Errc::storage_error (also for a duplicate hash, which a random 256-bit token never
    /// produces).
    [[nodiscard]] virtual Status put_token(ByteView token_hash, std::string_view username, DeviceId device,
                                           WallTime expires) = 0;

    /// The record for a token hash, or empty when unknown (expiry is not checked here). Errc::invalid_argument,
    /// Errc::storage_error.
    [[nodiscard]] virtual Result<std::optional<SessionRecord>> find_token(ByteView token_hash) = 0;

    /// Forget one token; returns whether it existed. Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<bool> revoke_token(ByteView token_hash) = 0;

    /// Forget every token of a user and log a SessionEnd for the user, in one transaction; returns how many tokens
    /// there were. Errc::storage_error.
    [[nodiscard]] virtual Result<std::size_t> revoke_user_tokens(std::string_view username) = 0;

    /// SessionEnd entries with a seq above `after`, oldest first, at most `limit`. Entries older than a day are
    /// dropped when new ones are written. Errc::storage_error.
    [[nodiscard]] virtual Result<std::vector<SessionEnd>> session_ends_after(std::uint64_t after,
                                                                             std::size_t limit) = 0;
    /// The newest entry's seq (0 when there is none). Errc::storage_error.
    [[nodiscard]] virtual Result<std::uint64_t> last_session_end() = 0;

    /// Forget every token whose expiry is at or before `now`; returns how many. Errc::storage_error.
    [[nodiscard]] virtual Result<std::size_t> purge_expired_tokens(WallTime now) = 0;
};

// ---------------------------------------------------------------- conversation keys

/// A server-assigned conversation key as stored: the key itself only in sealed form.
///
/// The pair is unordered: stores keep `user_a` < `user_b` (byte order) whichever order the caller used.
struct SealedConversationKey {
    std::string user_a;       ///< canonical, the smaller of the two names
    std::string user_b;       ///< canonical, the larger
    Bytes sealed_key;         ///< opaque blob made by `sim::auth::ConversationKeyVault`
    std::uint64_t epoch = 0;  ///< rotation counter; a stored key is only replaced by a higher epoch
    WallTime created{};       ///< when this epoch's key was made
};

/// Conversation keys of user pairs. A conversation's key is deleted when the conversation ends.
class ConversationKeyStore {
public:
    virtual ~ConversationKeyStore() = default;

    /// Store the key of a pair (in either order), or replace it with a higher epoch. Errc::stale_epoch when the
    /// stored key's epoch is equal or higher (nothing changes); Errc::user_not_found when either user does not
    /// exist; Errc::invalid_argument for a pair of one user with itself, empty names or an empty/oversized blob;
    /// Errc::storage_error.
    [[nodiscard]] virtual Status put_conversation_key(const SealedConversationKey& key) = 0;

    /// The stored key of a pair (in either order), or empty. Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<std::optional<SealedConversationKey>> find_conversation_key(
        std::string_view user1, std::string_view user2) = 0;

    /// Delete the key of a pair (the conversation ended); returns whether there was one. Errc::invalid_argument,
    /// Errc::storage_error.
    [[nodiscard]] virtual Result<bool> delete_conversation_key(std::string_view user1, std::string_view user2) = 0;

    /// Delete every key that involves `username`; returns how many. Errc::storage_error.
    [[nodiscard]] virtual Result<std::size_t> delete_user_conversation_keys(std::string_view username) = 0;

    /// Delete every conversation key (e.g. when a server starts and no conversation survives). Returns how many.
    /// Errc::storage_error.
    [[nodiscard]] virtual Result<std::size_t> delete_all_conversation_keys() = 0;
};

// ---------------------------------------------------------------- prekeys

/// Published prekeys of end-to-end devices (docs/protocol.md 6.1): identity key, signed prekey and at most
/// `max_prekeys_stored` one-time prekeys per device (user, device). Only public keys; the SPK signature is checked
/// by the caller (the server core) before set_prekeys. A device 0 is Errc::invalid_argument everywhere.
class PrekeyStore {
public:
    virtual ~PrekeyStore() = default;

    /// Apply an upload atomically. `replace`: the identity, the signed prekey and all one-time prekeys are
    /// replaced. Otherwise the stored identity must equal `identity_key` (a user without stored prekeys may
    /// upload with either), the signed prekey is replaced and the one-time prekeys are added (an id already
    /// stored gets the new key). Errc::bad_field (identity differs), Errc::limit_reached (more than
    /// max_prekeys_stored one-time prekeys would be stored; nothing changes), Errc::invalid_argument (name, key
    /// sizes), Errc::user_not_found, Errc::storage_error.
    [[nodiscard]] virtual Status set_prekeys(std::string_view username, DeviceId device,
                                             const PrekeyUpload& upload) = 0;

    /// The user's bundle with one one-time prekey (the lowest id), which is deleted in the same transaction so
    /// it is handed out once; without one-time prekeys the bundle has none. Empty when the user has published
    /// nothing. Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<std::optional<e2e::PrekeyBundle>> take_bundle(std::string_view username,
                                                                               DeviceId device) = 0;

    /// The stored identity (if any) and the number of one-time prekeys. Errc::invalid_argument,
    /// Errc::storage_error.
    [[nodiscard]] virtual Result<PrekeyStatus> prekey_status(std::string_view username, DeviceId device) = 0;
};

// ---------------------------------------------------------------- devices

/// Longest device name a store accepts (bytes of UTF-8; the server's limit is the same).
inline constexpr std::size_t max_device_name_length = 64;
/// Largest signed device list a store accepts (docs/protocol.md 6.9: 64 devices fit).
inline constexpr std::size_t max_signed_device_list_size = 8192;
/// Size of a device key (Ed25519 public key).
inline constexpr std::size_t device_key_size = 32;

/// Where a device of an account is in its life (docs/architecture.md, "Multi-device accounts").
enum class DeviceState : std::uint8_t {
    pending = 1,  ///< a link is under way: no key, no token, no prekeys, no mailbox
    active = 2,   ///< linked: may log in, holds a mailbox
    removed = 3,  ///< removed by its owner: a tombstone that keeps its id from being reused
};

/// One device of an account as a device store returns it.
struct DeviceRecord {
    std::string username;          ///< canonical
    DeviceId device = first_device;
    DeviceState state = DeviceState::active;
    std::string name;              ///< chosen by the user; may be empty
    Bytes device_key;              ///< Ed25519 public key; empty while pending
    WallTime created{};            ///< when the device was added (pending) or, for device 1, the account created
    WallTime linked{};             ///< when it became active (0 while pending)
    WallTime last_seen{};          ///< last login or logout (0: never)
    friend bool operator==(const DeviceRecord&, const DeviceRecord&) = default;
};

/// The newest signed device list of a user (docs/protocol.md 6.9), kept as the bytes the owner's device signed.
struct StoredDeviceList {
    std::uint64_t version = 0;
    Bytes signed_list;
    friend bool operator==(const StoredDeviceList&, const StoredDeviceList&) = default;
};

/// The devices of each account and its signed device list. `create_user` makes device 1 active (no key, name
/// empty), so every account has its first device from registration; a schema upgrade gives every existing account
/// its device 1 the same way. Device ids are never reused within an account (removed devices stay as tombstones).
class DeviceStore {
public:
    virtual ~DeviceStore() = default;

    /// Add a pending device with the next id of the account (one above the highest ever used) and `name`. Before
    /// that, pending devices created at or before `expire_pending_before` are deleted (an unfinished link lasts a
    /// while only). Errc::limit_reached when the account already has `max_devices` devices pending or active
    /// (nothing changes); Errc::invalid_argument (name too long, max_devices 0); Errc::user_not_found;
    /// Errc::storage_error.
    [[nodiscard]] virtual Result<DeviceId> add_device(std::string_view username, std::string_view name,
                                                      WallTime now, WallTime expire_pending_before,
                                                      std::size_t max_devices) = 0;

    /// Make a device active with its key, or set the key of an active device that has none yet (device 1 of an
    /// account made before its client had keys). Errc::invalid_argument (key size, device 0); Errc::user_not_found
    /// (no such account or device, or it was removed); Errc::bad_field (an active device whose key differs);
    /// Errc::storage_error.
    [[nodiscard]] virtual Status activate_device(std::string_view username, DeviceId device, ByteView device_key,
                                                 WallTime now) = 0;

    /// Remove a device, in ONE transaction: its state becomes removed, and its session tokens, prekeys and mailbox
    /// messages are deleted; a SessionEnd for (user, device) is logged. Returns whether it was pending or active.
    /// Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<bool> remove_device(std::string_view username, DeviceId device) = 0;

    /// Rename a pending or active device. Errc::invalid_argument (name too long); Errc::user_not_found (no such
    /// device, or removed); Errc::storage_error.
    [[nodiscard]] virtual Status rename_device(std::string_view username, DeviceId device,
                                               std::string_view name) = 0;

    /// Record that a device was seen (login, logout). Unknown or removed devices are ignored. Errc::storage_error.
    [[nodiscard]] virtual Status touch_device(std::string_view username, DeviceId device, WallTime now) = 0;

    /// Every device of the account, removed ones included, by id. Empty for an unknown user.
    /// Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<std::vector<DeviceRecord>> list_devices(std::string_view username) = 0;

    /// One device, or empty. Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<std::optional<DeviceRecord>> find_device(std::string_view username,
                                                                          DeviceId device) = 0;

    /// Store the user's signed device list if `list.version` is above the stored one's. Errc::stale_epoch when it
    /// is not (nothing changes); Errc::invalid_argument (empty or larger than max_signed_device_list_size, version
    /// 0); Errc::user_not_found; Errc::storage_error. The store does not parse or verify the list.
    [[nodiscard]] virtual Status put_device_list(std::string_view username, const StoredDeviceList& list) = 0;

    /// The stored device list, or empty. Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<std::optional<StoredDeviceList>> find_device_list(std::string_view username) = 0;
};

// ---------------------------------------------------------------- contacts

/// Most contacts the server keeps per user unless configured otherwise (docs/protocol.md 6.10).
inline constexpr std::size_t default_max_contacts = 1'000;

/// Pairs of users who are contacts (docs/protocol.md 6.10: each named the other), so that presence survives a
/// restart and is the same on every node sharing the database. The pair is unordered: stores keep `user_a` <
/// `user_b` (byte order) whichever order the caller used. Deleting either user deletes the pair.
class ContactStore {
public:
    virtual ~ContactStore() = default;

    /// Record that `user1` and `user2` are contacts. true: they are (recorded now, or before); false: one of them
    /// has `max_per_user` contacts already, and nothing changed. Several servers adding at once may each pass the
    /// check, so a user can end with a few more than `max_per_user`. Errc::invalid_argument (a name, the same
    /// user twice), Errc::user_not_found (either has no account), Errc::storage_error.
    [[nodiscard]] virtual Result<bool> add_contact(std::string_view user1, std::string_view user2,
                                                   std::size_t max_per_user) = 0;

    /// `username`'s contacts in name order (byte order), at most `limit`. An unknown user has none.
    /// Errc::invalid_argument (the name), Errc::storage_error.
    [[nodiscard]] virtual Result<std::vector<std::string>> list_contacts(std::string_view username,
                                                                         std::size_t limit) = 0;
};

// ---------------------------------------------------------------- offline messages

/// Largest envelope a message store accepts (a message payload always fits a frame).
inline constexpr std::size_t max_stored_envelope_size = 64U * 1024U;

/// One message in the offline queue (docs/protocol.md 6.7).
struct StoredMessage {
    std::uint64_t seq = 0;  ///< assigned by the store, increasing in store order (ignored by append)
    std::string recipient;  ///< canonical
    DeviceId recipient_device = first_device;  ///< the mailbox is (recipient, recipient_device)
    std::string sender;     ///< canonical
    DeviceId sender_device = first_device;
    MessageId id{};         ///< the envelope's id; (recipient, recipient_device, sender, id) is stored once
    Bytes envelope;         ///< what the recipient device is sent (docs/protocol.md 6.5)
    WallTime stored_at{};

    friend bool operator==(const StoredMessage&, const StoredMessage&) = default;
};

/// What some stored messages take: how many, and the bytes of their envelopes (the quota measure; the rows' own
/// overhead is not counted).
struct StoredUsage {
    std::uint64_t messages = 0;
    std::uint64_t bytes = 0;

    StoredUsage& operator+=(const StoredUsage& o) noexcept {
        messages += o.messages;
        bytes += o.bytes;
        return *this;
    }
    /// Subtracts, stopping at zero.
    StoredUsage& operator-=(const StoredUsage& o) noexcept {
        messages -= std::min(messages, o.messages);
        bytes -= std::min(bytes, o.bytes);
        return *this;
    }
    friend bool operator==(const StoredUsage&, const StoredUsage&) = default;
};

/// The offline queue: messages for recipients who are offline or still have stored messages waiting.
class MessageStore {
public:
    virtual ~MessageStore() = default;


    /// Up to `limit` messages in the mailbox of (`recipient`, `device`) with seq > `after_seq`, in store order.
    /// Errc::invalid_argument (a name, device 0), Errc::storage_error.
    [[nodiscard]] virtual Result<std::vector<StoredMessage>> pending(std::string_view recipient, DeviceId device,
                                                                     std::uint64_t after_seq, std::size_t limit) = 0;

    /// One group of removals: the messages from `sender` with these ids, in the mailbox of (recipient, device).
    struct Removal {
        std::string recipient;
        DeviceId recipient_device = first_device;
        std::string sender;
        std::vector<MessageId> ids;
    };
    /// What one transaction changes in the mailboxes.
    struct Changes {
        std::vector<StoredMessage> appends;
        std::vector<Removal> removals;
    };
    struct Applied {
        std::vector<bool> appended;        ///< per append, in order: stored now (false: was stored already)
        std::vector<StoredUsage> removed;  ///< per removal, in order: what existed of its ids and is gone now
    };
    /// The appends, then the removals, in ONE transaction (one fsync; all or nothing). A message whose (recipient,
    /// recipient device, sender, id) is stored already is not stored again. Errc::invalid_argument (a name, device 0,
    /// an empty or oversized envelope: nothing changes), Errc::storage_error.
    [[nodiscard]] virtual Result<Applied> apply(const Changes& changes) = 0;

    /// apply() with appends only: per message, whether it was new.
    [[nodiscard]] Result<std::vector<bool>> append(std::vector<StoredMessage> batch) {
        SIM_TRY(auto r, apply(Changes{std::move(batch), {}}));
        return std::move(r.appended);
    }
    /// apply() with removals only: per removal, what is gone.
    [[nodiscard]] Result<std::vector<StoredUsage>> remove(std::vector<Removal> removals) {
        SIM_TRY(auto r, apply(Changes{{}, std::move(removals)}));
        return std::move(r.removed);
    }

    /// What is stored in the mailbox of (`recipient`, `device`). Errc::invalid_argument, Errc::storage_error.
    [[nodiscard]] virtual Result<StoredUsage> usage(std::string_view recipient, DeviceId device) = 0;

    /// What is stored from each sender (for everyone), senders with nothing stored left out. Reads the whole queue
    /// once: a server calls it at start and keeps the sums itself. Errc::storage_error.
    [[nodiscard]] virtual Result<std::map<std::string, StoredUsage>> usage_by_sender() = 0;
};

// ---------------------------------------------------------------- backends

/// A backend: one database that implements all seven stores. Thread-safe.
class Backend : public CredentialStore,
                public SessionTokenStore,
                public ConversationKeyStore,
                public PrekeyStore,
                public DeviceStore,
                public ContactStore,
                public MessageStore {
public:
    /// Short backend name for messages: "memory", "sqlite", "mariadb" or "postgresql".
    [[nodiscard]] virtual std::string_view kind() const noexcept = 0;
};

/// An empty in-memory backend.
std::unique_ptr<Backend> make_memory_backend();

/// Settings of the SQLite backend.
struct SqliteConfig {
    std::string path;  ///< database file; created when missing. ":memory:" for a private one
    std::chrono::milliseconds busy_timeout{5000};  ///< how long to wait for another process's write lock
    bool integrity_check_on_open = true;           ///< run `PRAGMA quick_check` on open (reads the whole file once)
};

/// Schema version this libsim writes (both SQL backends).
inline constexpr int schema_version = 9;

/// Open (and create or upgrade) a SQLite database.
///
/// The file is checked before anything is written: a file that is not SQLite, is damaged, or is a SQLite
/// database of another application gives Errc::corrupt_database; a libsim schema newer than `schema_version`
/// gives Errc::schema_too_new. In those cases the file is left byte-for-byte unchanged. An older schema is
/// migrated step by step inside one transaction. Errc::storage_error when the file cannot be opened or written.
Result<std::unique_ptr<Backend>> open_sqlite_backend(const SqliteConfig& config);

/// Settings of the MariaDB/MySQL backend.
struct MariaDbConfig {
    /// `mariadb://user:password@host[:port]/database[?socket=/path&connect_timeout=S&tls=required]`
    /// (`mysql://` is accepted too). User and password are percent-decoded. With `socket`, the host is ignored
    /// and the server is reached through that Unix socket. `tls=required` refuses an unencrypted connection.
    /// The URL holds a secret: keep it in configuration, never in logs.
    std::string url;
};

/// Connect to MariaDB/MySQL and create or upgrade the schema (tables `sim_meta`, `sim_users`, `sim_sessions`,
/// `sim_conversation_keys`, `sim_prekeys`, `sim_one_time_prekeys`, `sim_messages`, `sim_session_ends`,
/// `sim_devices`, `sim_device_lists`, `sim_throttle`, `sim_contacts`; InnoDB). Errc::invalid_argument for a malformed URL;
/// Errc::schema_too_new when the database was written by a newer libsim; Errc::corrupt_database when it holds libsim
/// tables without a version; Errc::storage_error when the server cannot be reached or refuses; Errc::not_implemented
/// when this libsim was built without MariaDB Connector/C.
Result<std::unique_ptr<Backend>> open_mariadb_backend(const MariaDbConfig& config);

/// Whether this build includes the MariaDB backend.
bool have_mariadb() noexcept;

/// Settings of the PostgreSQL backend.
struct PostgresConfig {
    /// `postgresql://user:password@host[:port]/database[?socket=/dir&connect_timeout=S&tls=required&tls_ca=/f]`
    /// (`postgres://` is accepted too; port 5432 by default). User and password are percent-decoded. With
    /// `socket`, the host is ignored and the server is reached through the Unix socket in that folder (e.g.
    /// `/var/run/postgresql`). `tls=required` refuses an unencrypted connection and checks the server's
    /// certificate and name (libpq's `sslmode=verify-full`) against `tls_ca`, by default
    /// `~/.postgresql/root.crt`. The URL holds a secret: keep it in configuration, never in logs.
    std::string url;
};

/// Connect to PostgreSQL and create or upgrade the schema (the tables of `open_mariadb_backend`, in the
/// connection's current schema, names and blobs as BYTEA). Errc::invalid_argument for a malformed URL;
/// Errc::schema_too_new when the database was written by a newer libsim; Errc::corrupt_database when it holds
/// libsim tables without a version; Errc::storage_error when the server cannot be reached or refuses (the detail
/// says whether the server refused the login or could not be reached, never the host, user or password); Errc::not_implemented when this
/// libsim was built without libpq.
Result<std::unique_ptr<Backend>> open_postgres_backend(const PostgresConfig& config);

/// Whether this build includes the PostgreSQL backend.
bool have_postgres() noexcept;

/// Open a backend from a URL: `memory:`, `sqlite:PATH` (e.g. `sqlite:/var/lib/sim/sim.db`, `sqlite::memory:`),
/// a `mariadb://` / `mysql://` URL as in `MariaDbConfig`, or a `postgresql://` / `postgres://` URL as in
/// `PostgresConfig`. Errc::invalid_argument for an unknown scheme; else as the backend's own factory.
Result<std::unique_ptr<Backend>> open_backend(std::string_view url);

}  // namespace sim::store
