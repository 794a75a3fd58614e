// simd backup: SQLite's online backup API (https://www.sqlite.org/backup.html) on raw handles. One
// sqlite3_backup_step(-1) copies every page under a single read transaction, so the copy is one snapshot; in WAL
// mode that read does not block the server's writers.
#include <sim/store_backup.h>

#include <sqlite3.h>

#include <cstdio>
#include <memory>

namespace sim::store {
namespace {

struct CloseDb {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, CloseDb>;

// Names the SQLite error class only (as the backend does): SQLite's messages can quote data.
Error backup_error(int code) {
    const int primary = code & 0xFF;
    const Errc errc =
        primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB ? Errc::corrupt_database : Errc::storage_error;
    return Error{errc, std::string("sqlite backup: ") + sqlite3_errstr(code)};
}

Result<Db> open_db(const std::string& path, int flags) {
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    Db db(raw);
    if (rc != SQLITE_OK) {
        return backup_error(db ? sqlite3_extended_errcode(db.get()) : rc);
    }
    sqlite3_extended_result_codes(db.get(), 1);
    sqlite3_busy_timeout(db.get(), 5000);  // a server's write transaction is short
    return db;
}

Status copy(const std::string& source, const std::string& partial) {
    SIM_TRY(const Db from, open_db(source, SQLITE_OPEN_READWRITE));  // never SQLITE_OPEN_CREATE
    SIM_TRY(const Db to, open_db(partial, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE));
    sqlite3_backup* backup = sqlite3_backup_init(to.get(), "main", from.get(), "main");
    if (backup == nullptr) {
        return backup_error(sqlite3_extended_errcode(to.get()));
    }
    int rc = SQLITE_OK;
    do {
        rc = sqlite3_backup_step(backup, -1);
        if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED) {
            sqlite3_sleep(50);
        }
    } while (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED);
    const int finish = sqlite3_backup_finish(backup);
    if (rc != SQLITE_DONE) {
        return backup_error(rc);
    }
    if (finish != SQLITE_OK) {
        return backup_error(finish);
    }
    return ok();
}

}  // namespace

Status backup_sqlite(const std::string& source, const std::string& destination) {
    const std::string partial = destination + ".partial";
    std::remove(partial.c_str());  // left by a backup that was killed
    Status st = copy(source, partial);
    if (st && std::rename(partial.c_str(), destination.c_str()) != 0) {
        st = Error{Errc::io_error, "cannot rename the copy to " + destination};
    }
    if (!st) {
        std::remove(partial.c_str());
    }
    return st;
}

}  // namespace sim::store
