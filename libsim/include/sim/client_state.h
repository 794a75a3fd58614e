#pragma once
/// @file
/// The client's local state: a key-value store for its identity key, prekeys, ratchet sessions, pinned peers, seen
/// ids, outbox and inbox (docs/protocol.md section 6.8).
///
/// The file-backed store keeps every value sealed with AES-256-GCM under keys derived from a random master key, which
/// the file holds wrapped under a key derived from the user's password (Argon2id, salt and parameters stored in the
/// file), so a password change re-wraps one row; row keys are HMAC-SHA256 of the key names, so neither names nor
/// values can be read from the file. A value moved to another row fails to open. What the format does NOT
/// detect: a whole file, or one row, replaced by an older copy of itself (rollback).

#include <sim/bytes.h>
#include <sim/error.h>
#include <sim/rng.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sim {

/// Longest key name accepted by ClientState::write (bytes; names may be any bytes, but not empty).
inline constexpr std::size_t client_state_max_key_size = 1024;
/// Largest value accepted by ClientState::write (bytes).
inline constexpr std::size_t client_state_max_value_size = 16 * 1024 * 1024;

/// One change in an atomic batch: value nullopt erases the key.
struct StateWrite {
    std::string key;                   ///< the key name (1..client_state_max_key_size bytes)
    std::optional<SecureBytes> value;  ///< the new value, or nullopt to erase the key (erasing a missing key is ok)
};

/// Key-value state of one client (identity, prekeys, ratchet sessions, pinned peers, outbox, inbox...).
/// Implementations are thread-safe.
class ClientState {
public:
    virtual ~ClientState() = default;
    /// The value under `key`, or nullopt. Errc::storage_error, Errc::corrupt_database (a value that fails to open).
    virtual Result<std::optional<SecureBytes>> get(std::string_view key) const = 0;
    /// Apply every write or none (one transaction, durable on return); a later write to the same key in the batch
    /// wins. Errc::storage_error; Errc::invalid_argument for an empty or over-long key or an over-large value
    /// (the whole batch is then refused too).
    virtual Status write(const std::vector<StateWrite>& batch) = 0;
    /// True when the store was created empty by this open (a new identity will be made).
    [[nodiscard]] virtual bool created() const noexcept = 0;
    /// Seal the store under `new_password` from now on (the file store re-wraps its random master key: one row is
    /// written, atomically; the old password no longer opens it). Errc::storage_error.
    virtual Status change_password(std::string_view new_password) = 0;
};

/// A store held in memory only, values kept as given (for tests); same semantics as the file store. created() is
/// always true.
std::unique_ptr<ClientState> make_memory_client_state();

/// Argon2id cost used when a state file is created (RFC 9106). An existing file is reopened with the parameters
/// stored in it, whatever these say.
struct ClientStateParams {
    std::size_t argon2_memory_kib = 64 * 1024;  ///< memory in KiB (8 * parallelism .. 1 GiB)
    std::size_t argon2_iterations = 3;          ///< passes (1..64)
    std::size_t argon2_parallelism = 1;         ///< lanes (1..16)
    /// Randomness for the salt and the value nonces; nullptr means the operating system's RNG. Not owned: it must
    /// outlive the returned store.
    Rng* rng = nullptr;
};

/// Open or create the encrypted state file at `path` (mode 0600) for the password.
/// The file is held exclusively until the returned store is destroyed.
/// Errc::auth_failed (wrong password; nothing changed), Errc::busy (another process holds the file),
/// Errc::corrupt_database (not a libsim client state file, or stored parameters out of range),
/// Errc::schema_too_new, Errc::invalid_argument (params out of range), Errc::storage_error / io_error.
Result<std::unique_ptr<ClientState>> open_client_state(const std::string& path, std::string_view password,
                                                       const ClientStateParams& params = {});

}  // namespace sim
