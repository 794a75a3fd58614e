// The file-backed ClientState: one SQLite file (through SQLiteCpp), every value sealed under a password-derived key.
// See docs/protocol.md section 6.8 and the format notes below.
//
// Format 2 (written by this version):
//   meta: one row: format = 2, kdf_salt (16 random bytes), kdf_memory_kib / kdf_iterations / kdf_parallelism
//         (Argon2id, RFC 9106) and check_value = the wrapped master key: nonce || AES-256-GCM(wrap key, nonce,
//         ad = wrap_ad, master).
//   kv:   k = HMAC-SHA256(name key, key name), v = nonce (12 random bytes) || AES-256-GCM(value key, nonce, ad = k,
//         value). Binding k as the associated data means a value moved to another row fails to open.
//   master = 32 random bytes made when the file is created; name key and value key = HKDF-SHA256(master) with
//   distinct labels (RFC 5869). wrap key = HKDF-SHA256(Argon2id(password, salt, parameters, 32 bytes), wrap label).
//   A new password re-wraps the master (new salt, one row written): no value is sealed again.
// Format 1 (read, and upgraded to format 2 when opened): master = Argon2id(password, salt, parameters, 32 bytes)
//   itself, and check_value = nonce || AES-256-GCM(value key, nonce, ad = check_ad, check_plaintext). The upgrade
//   keeps that master (so every row stays as it is) and wraps it under a new salt.
// The file is opened in WAL mode with synchronous=FULL and locking_mode=EXCLUSIVE: a second connection, from this
// process or another, gets SQLITE_BUSY (Errc::busy) for as long as the store is alive.
#include "state_checks.h"
#include "../store/sqlite_file.h"

#include <sim/crypto.h>

#include <SQLiteCpp/SQLiteCpp.h>
#include <sqlite3.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace sim {
namespace {

/// "LSCS" in ASCII (libsim client state); the server's store uses "LSIM".
constexpr int application_id = 0x4C534353;
/// Schema version (PRAGMA user_version); migration i takes the file from version i to i + 1. Never edit a
/// released step: append one.
constexpr int schema_version = 1;
/// Crypto format of the sealed rows (meta.format), independent of the table layout.
constexpr int crypto_format = 2;

const std::array<std::string, schema_version> migrations{
    // 0 -> 1
    "PRAGMA application_id = " + std::to_string(application_id) +
        ";"
        "CREATE TABLE meta ("
        "  id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),"
        "  format INTEGER NOT NULL,"
        "  kdf_salt BLOB NOT NULL,"
        "  kdf_memory_kib INTEGER NOT NULL,"
        "  kdf_iterations INTEGER NOT NULL,"
        "  kdf_parallelism INTEGER NOT NULL,"
        "  check_value BLOB NOT NULL"
        ");"
        "CREATE TABLE kv ("
        "  k BLOB PRIMARY KEY NOT NULL,"
        "  v BLOB NOT NULL"
        ") WITHOUT ROWID;",
};

constexpr std::size_t salt_size = 16;
constexpr std::size_t key_size = 32;
constexpr std::size_t sealed_overhead = crypto::aead_nonce_size + crypto::aead_tag_size;
constexpr std::string_view name_key_label = "libsim client state v1: row names";
constexpr std::string_view value_key_label = "libsim client state v1: values";
constexpr std::string_view check_ad = "libsim client state v1: password check";
constexpr std::string_view check_plaintext = "libsim client state password ok";  // format 1
constexpr std::string_view wrap_key_label = "libsim client state v2: key wrap";
constexpr std::string_view wrap_ad = "libsim client state v2: master key";

// Bounds on the Argon2id parameters, for the caller's and for the ones read back from a file (a file asking for
// terabytes of memory is not ours).
constexpr std::size_t min_parallelism = 1;
constexpr std::size_t max_parallelism = 16;
constexpr std::size_t max_memory_kib = 1024 * 1024;
constexpr std::size_t min_iterations = 1;
constexpr std::size_t max_iterations = 64;

bool params_in_range(std::size_t memory_kib, std::size_t iterations, std::size_t parallelism) {
    return parallelism >= min_parallelism && parallelism <= max_parallelism && memory_kib >= 8 * parallelism &&
           memory_kib <= max_memory_kib && iterations >= min_iterations && iterations <= max_iterations;
}

// Error details name the SQLite error class only: SQLite's own messages can quote values.
Error from_sqlite(int code, int extended) {
    const int primary = code & 0xFF;
    const std::string what = std::string("sqlite: ") + sqlite3_errstr(extended);
    if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB) {
        return Error{Errc::corrupt_database, what};
    }
    if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
        return Error{Errc::busy, "the client state file is in use by another process or connection"};
    }
    if (primary == SQLITE_CANTOPEN) {
        return Error{Errc::io_error, what};
    }
    return Error{Errc::storage_error, what};
}

// Run `fn`, turning exceptions into errors (SQLiteCpp reports failures by throwing).
template <typename Fn>
auto guarded(Fn&& fn) -> decltype(fn()) {
    try {
        return fn();
    } catch (const SQLite::Exception& e) {
        return from_sqlite(e.getErrorCode(), e.getExtendedErrorCode());
    } catch (const std::bad_alloc&) {
        return Error{Errc::storage_error, "out of memory"};
    } catch (const std::exception&) {
        return Error{Errc::storage_error, "sqlite: unexpected failure"};
    }
}

Status judge(const store::detail::SqliteIdentity& id) {
    return store::detail::judge_sqlite_identity(id, application_id, schema_version, "libsim client state file");
}

/// Create the file with mode 0600 if it does not exist (SQLite would create it 0644 & ~umask). No descriptor is
/// kept or opened on an existing file: closing one would drop this process's POSIX locks on it, which SQLite
/// holds for a live store (see SQLite's "How To Corrupt", section 2.2).
Status create_private_file(const std::string& path) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        if (errno == EEXIST) {
            return ok();
        }
        return Error{Errc::io_error, std::string("cannot create the client state file: ") + std::strerror(errno)};
    }
    const bool mode_ok = ::fchmod(fd, 0600) == 0;  // whatever the umask
    ::close(fd);
    if (!mode_ok) {
        return Error{Errc::io_error, "cannot set the client state file's mode"};
    }
    return ok();
}

/// A non-empty file shorter than a page is refused. An existing file with no WAL or journal beside it is checked
/// through an immutable read-only connection (no locks, no -wal/-shm, no writes), so a file we refuse is left exactly
/// as it was. Otherwise a writer is live (SQLite reports busy below) or crashed (recovery is legitimate); the main
/// connection checks it then, before it writes anything.
Status inspect_quiet_file(const std::string& path) {
    std::error_code ec;
    const auto size = std::filesystem::file_size(path, ec);
    if (ec || size == 0) {
        return ok();
    }
    // SQLite files are whole pages of at least 512 bytes; SQLite itself would take a shorter file for an empty
    // database and write over it.
    if (size < 512) {
        return Error{Errc::corrupt_database, "the file is not a libsim client state file"};
    }
    if (std::filesystem::exists(path + "-wal", ec) || std::filesystem::exists(path + "-journal", ec)) {
        return ok();
    }
    return guarded([&]() -> Status {
        SQLite::Database db(store::detail::sqlite_immutable_uri(path), SQLite::OPEN_READONLY | SQLite::OPEN_URI);
        return judge(store::detail::read_sqlite_identity(db));
    });
}

ByteView blob_view(const SQLite::Column& c) {
    const auto* p = static_cast<const std::uint8_t*>(c.getBlob());
    const auto n = static_cast<std::size_t>(c.getBytes());
    return p == nullptr ? ByteView{} : ByteView{p, n};
}

/// The keys of an open store.
struct Keys {
    std::unique_ptr<crypto::HmacSha256> names;
    std::unique_ptr<crypto::Aead> values;
};

/// Argon2id cost of a file's password key.
struct KdfParams {
    std::size_t memory_kib = 0;
    std::size_t iterations = 0;
    std::size_t parallelism = 0;
};

Result<SecureBytes> stretch(std::string_view password, ByteView salt, const KdfParams& p) {
    return crypto::argon2id(password, salt, p.memory_kib, p.iterations, p.parallelism, key_size);
}

Result<Keys> derive_keys(const SecureBytes& master) {
    SIM_TRY(const SecureBytes name_key, crypto::hkdf_sha256({}, master, as_bytes(name_key_label), key_size));
    SIM_TRY(const SecureBytes value_key, crypto::hkdf_sha256({}, master, as_bytes(value_key_label), key_size));
    Keys keys;
    keys.names = crypto::make_hmac_sha256(name_key);
    SIM_TRY(keys.values, crypto::make_aead(crypto::AeadAlgorithm::aes256_gcm, value_key));
    return keys;
}

Result<std::unique_ptr<crypto::Aead>> wrap_aead(std::string_view password, ByteView salt, const KdfParams& p) {
    SIM_TRY(const SecureBytes stretched, stretch(password, salt, p));
    SIM_TRY(const SecureBytes wrap_key, crypto::hkdf_sha256({}, stretched, as_bytes(wrap_key_label), key_size));
    return crypto::make_aead(crypto::AeadAlgorithm::aes256_gcm, wrap_key);
}

/// nonce || AES-256-GCM(nonce, ad, plaintext).
Result<Bytes> seal(crypto::Aead& aead, Rng& rng, ByteView ad, ByteView plaintext) {
    Bytes out(crypto::aead_nonce_size);
    rng.fill(out);
    out.reserve(sealed_overhead + plaintext.size());
    const Bytes nonce = out;
    SIM_TRY_STATUS(aead.seal_into(nonce, ad, plaintext, out));
    return out;
}

/// The plaintext of `sealed`, or Errc::auth_failed (tag, or too short to hold one).
Result<SecureBytes> unseal(crypto::Aead& aead, ByteView ad, ByteView sealed) {
    if (sealed.size() < sealed_overhead) {
        return Error{Errc::auth_failed, "sealed value too short"};
    }
    SIM_TRY(Bytes plain, aead.open(sealed.first(crypto::aead_nonce_size), ad, sealed.subspan(crypto::aead_nonce_size)));
    SecureBytes out(plain.begin(), plain.end());
    secure_zero(plain.data(), plain.size());
    return out;
}

/// Wrap `master` under `password` with a new salt and write the key row of format 2 (inside the caller's
/// transaction; it replaces the row there was).
Status write_wrapped(SQLite::Database& db, const SecureBytes& master, std::string_view password, const KdfParams& p,
                     Rng& rng) {
    const Bytes salt = rng.bytes(salt_size);
    SIM_TRY(const auto aead, wrap_aead(password, salt, p));
    SIM_TRY(const Bytes wrapped, seal(*aead, rng, as_bytes(wrap_ad), master));
    SQLite::Statement q(db,
                        "INSERT OR REPLACE INTO meta (id, format, kdf_salt, kdf_memory_kib, kdf_iterations, "
                        "kdf_parallelism, check_value) VALUES (1, ?, ?, ?, ?, ?, ?)");
    q.bind(1, crypto_format);
    q.bind(2, salt.data(), static_cast<int>(salt.size()));
    q.bind(3, static_cast<std::int64_t>(p.memory_kib));
    q.bind(4, static_cast<std::int64_t>(p.iterations));
    q.bind(5, static_cast<std::int64_t>(p.parallelism));
    q.bind(6, wrapped.data(), static_cast<int>(wrapped.size()));
    q.exec();
    return ok();
}

class SqliteClientState final : public ClientState {
public:
    SqliteClientState(std::unique_ptr<SQLite::Database> db, Keys keys, SecureBytes master, KdfParams params,
                      std::unique_ptr<Rng> owned_rng, Rng& rng, bool created)
        : m_owned_rng(std::move(owned_rng)),
          m_rng(rng),
          m_keys(std::move(keys)),
          m_master(std::move(master)),
          m_params(params),
          m_db(std::move(db)),
          m_created(created) {}

    Result<std::optional<SecureBytes>> get(std::string_view key) const override {
        SIM_TRY_STATUS(client::detail::check_state_key(key));
        const std::lock_guard lock(m_mutex);
        const SecureBytes row = row_key(key);
        return guarded([&]() -> Result<std::optional<SecureBytes>> {
            SQLite::Statement q(*m_db, "SELECT v FROM kv WHERE k = ?");
            q.bind(1, row.data(), static_cast<int>(row.size()));
            if (!q.executeStep()) {
                return std::optional<SecureBytes>{};
            }
            auto plain = unseal(*m_keys.values, row, blob_view(q.getColumn(0)));
            if (!plain) {
                return Error{Errc::corrupt_database, "a client state value failed to open (damaged or moved)"};
            }
            return std::optional<SecureBytes>{std::move(plain).value()};
        });
    }

    Status write(const std::vector<StateWrite>& batch) override {
        const std::lock_guard lock(m_mutex);
        return guarded([&]() -> Status {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            SQLite::Statement put(*m_db,
                                  "INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = "
                                  "excluded.v");
            SQLite::Statement erase(*m_db, "DELETE FROM kv WHERE k = ?");
            for (const auto& w : batch) {
                // Checked one by one inside the transaction: a refused write rolls back the ones before it.
                SIM_TRY_STATUS(client::detail::check_state_write(w));
                const SecureBytes row = row_key(w.key);
                if (w.value) {
                    SIM_TRY(const Bytes sealed, seal(*m_keys.values, m_rng, row, *w.value));
                    put.bind(1, row.data(), static_cast<int>(row.size()));
                    put.bind(2, sealed.data(), static_cast<int>(sealed.size()));
                    put.exec();
                    put.reset();
                } else {
                    erase.bind(1, row.data(), static_cast<int>(row.size()));
                    erase.exec();
                    erase.reset();
                }
            }
            tx.commit();
            return ok();
        });
    }

    bool created() const noexcept override { return m_created; }

    Status change_password(std::string_view new_password) override {
        const std::lock_guard lock(m_mutex);
        return guarded([&]() -> Status {
            SQLite::Transaction tx(*m_db, SQLite::TransactionBehavior::IMMEDIATE);
            SIM_TRY_STATUS(write_wrapped(*m_db, m_master, new_password, m_params, m_rng));
            tx.commit();
            return ok();
        });
    }

private:
    SecureBytes row_key(std::string_view name) const { return m_keys.names->mac(as_bytes(name), {}); }

    std::unique_ptr<Rng> m_owned_rng;
    Rng& m_rng;
    // The HMAC and AEAD objects are not thread-safe and SQLite statements share the connection: all under m_mutex.
    mutable std::mutex m_mutex;
    mutable Keys m_keys;
    const SecureBytes m_master;  // kept to wrap it under a new password
    const KdfParams m_params;    // the cost of a new password's key
    std::unique_ptr<SQLite::Database> m_db;
    bool m_created = false;
};

struct Opened {
    Keys keys;
    SecureBytes master;
    bool created = false;
};

/// Create the newest format in an empty file (inside the caller's transaction).
Result<Opened> create_store(SQLite::Database& db, const std::string& path, std::string_view password,
                            const KdfParams& params, Rng& rng) {
    // A pre-existing empty file may have been made with looser permissions than ours.
    if (::chmod(path.c_str(), 0600) != 0) {
        return Error{Errc::io_error, "cannot set the client state file's mode"};
    }
    for (int v = 0; v < schema_version; ++v) {
        db.exec(migrations[static_cast<std::size_t>(v)]);
        db.exec("PRAGMA user_version = " + std::to_string(v + 1));
    }
    Opened opened{{}, rng.secure_bytes(key_size), true};
    SIM_TRY(opened.keys, derive_keys(opened.master));
    SIM_TRY_STATUS(write_wrapped(db, opened.master, password, params, rng));
    return opened;
}

/// Unwrap the master key of an existing file with `password` (proving the password) and derive its keys. A format 1
/// file is upgraded to format 2 in the caller's transaction (its master is kept, so no row changes).
Result<Opened> unlock_store(SQLite::Database& db, std::string_view password, Rng& rng) {
    SQLite::Statement q(db,
                        "SELECT format, kdf_salt, kdf_memory_kib, kdf_iterations, kdf_parallelism, check_value "
                        "FROM meta WHERE id = 1");
    if (!q.executeStep()) {
        return Error{Errc::corrupt_database, "client state file without its key parameters"};
    }
    const auto format_col = q.getColumn(0);
    if (!format_col.isInteger()) {
        return Error{Errc::corrupt_database, "client state format is not a number"};
    }
    const auto format = format_col.getInt64();
    if (format > crypto_format) {
        return Error{Errc::schema_too_new, "client state format " + std::to_string(format) +
                                               " is newer than this libsim's " + std::to_string(crypto_format)};
    }
    if (format != 1 && format != 2) {
        return Error{Errc::corrupt_database, "unknown client state format"};
    }
    for (const int i : {1, 5}) {
        if (!q.getColumn(i).isBlob()) {
            return Error{Errc::corrupt_database, "client state key parameters have the wrong type"};
        }
    }
    for (const int i : {2, 3, 4}) {
        if (!q.getColumn(i).isInteger() || q.getColumn(i).getInt64() < 0) {
            return Error{Errc::corrupt_database, "client state key parameters have the wrong type"};
        }
    }
    const Bytes salt = to_bytes(blob_view(q.getColumn(1)));
    const KdfParams params{static_cast<std::size_t>(q.getColumn(2).getInt64()),
                           static_cast<std::size_t>(q.getColumn(3).getInt64()),
                           static_cast<std::size_t>(q.getColumn(4).getInt64())};
    const Bytes check = to_bytes(blob_view(q.getColumn(5)));
    const std::size_t sealed_size = sealed_overhead + (format == 1 ? check_plaintext.size() : key_size);
    if (salt.size() != salt_size || !params_in_range(params.memory_kib, params.iterations, params.parallelism) ||
        check.size() != sealed_size) {
        return Error{Errc::corrupt_database, "client state key parameters out of range"};
    }
    const Error wrong{Errc::auth_failed, "wrong password for the client state file"};
    Opened opened;
    if (format == 1) {
        SIM_TRY(opened.master, stretch(password, salt, params));
        SIM_TRY(opened.keys, derive_keys(opened.master));
        auto plain = unseal(*opened.keys.values, as_bytes(check_ad), check);
        if (!plain || !constant_time_equal(*plain, as_bytes(check_plaintext))) {
            return wrong;
        }
        SIM_TRY_STATUS(write_wrapped(db, opened.master, password, params, rng));
        return opened;
    }
    SIM_TRY(const auto aead, wrap_aead(password, salt, params));
    auto master = unseal(*aead, as_bytes(wrap_ad), check);
    if (!master) {
        return wrong;
    }
    opened.master = std::move(*master);
    SIM_TRY(opened.keys, derive_keys(opened.master));
    return opened;
}

}  // namespace

Result<std::unique_ptr<ClientState>> open_client_state(const std::string& path, std::string_view password,
                                                       const ClientStateParams& params) {
    if (path.empty() || path == ":memory:" || path.rfind("file:", 0) == 0) {
        return Error{Errc::invalid_argument, "client state path must name a file"};
    }
    if (!params_in_range(params.argon2_memory_kib, params.argon2_iterations, params.argon2_parallelism)) {
        return Error{Errc::invalid_argument, "Argon2id parameters out of range"};
    }
    std::unique_ptr<Rng> owned_rng;
    if (params.rng == nullptr) {
        owned_rng = make_system_rng();
    }
    Rng& rng = params.rng != nullptr ? *params.rng : *owned_rng;
    const KdfParams kdf{params.argon2_memory_kib, params.argon2_iterations, params.argon2_parallelism};

    SIM_TRY_STATUS(create_private_file(path));
    SIM_TRY_STATUS(inspect_quiet_file(path));
    return guarded([&]() -> Result<std::unique_ptr<ClientState>> {
        auto db = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE, 0);
        // Exclusive before the first access in WAL mode: the lock is held until close and no -shm file is used.
        db->exec("PRAGMA locking_mode = EXCLUSIVE");
        db->exec("PRAGMA synchronous = FULL");
        db->exec("PRAGMA secure_delete = ON");
        db->exec("PRAGMA trusted_schema = OFF");
        Opened opened;
        {
            // Judged and unlocked before anything is written: a foreign file or a wrong password rolls back a
            // transaction that changed nothing.
            SQLite::Transaction tx(*db, SQLite::TransactionBehavior::IMMEDIATE);
            const auto id = store::detail::read_sqlite_identity(*db);
            SIM_TRY_STATUS(judge(id));
            if (id.empty()) {
                SIM_TRY(opened, create_store(*db, path, password, kdf, rng));
            } else {
                SIM_TRY(opened, unlock_store(*db, password, rng));
                for (int v = id.version; v < schema_version; ++v) {
                    db->exec(migrations[static_cast<std::size_t>(v)]);
                    db->exec("PRAGMA user_version = " + std::to_string(v + 1));
                }
            }
            tx.commit();
        }
        // WAL only once the file is known to be ours (switching rewrites the header). The mode is persistent.
        const auto mode = db->execAndGet("PRAGMA journal_mode = WAL").getString();
        if (mode != "wal") {
            return Error{Errc::storage_error, "sqlite: could not switch to WAL mode"};
        }
        return std::unique_ptr<ClientState>(std::make_unique<SqliteClientState>(
            std::move(db), std::move(opened.keys), std::move(opened.master), kdf, std::move(owned_rng), rng,
            opened.created));
    });
}

}  // namespace sim
