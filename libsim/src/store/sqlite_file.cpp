// Recognising libsim's SQLite files (see sqlite_file.h).
#include "sqlite_file.h"

namespace sim::store::detail {

SqliteIdentity read_sqlite_identity(SQLite::Database& db) {
    SqliteIdentity id;
    id.application_id = db.execAndGet("PRAGMA application_id").getInt();
    id.version = db.execAndGet("PRAGMA user_version").getInt();
    id.objects = db.execAndGet("SELECT count(*) FROM sqlite_master").getInt();
    return id;
}

Status judge_sqlite_identity(const SqliteIdentity& id, int application_id, int max_version, std::string_view what) {
    if (id.empty()) {
        return ok();  // an empty database: the schema is created
    }
    if (id.application_id != application_id) {
        return Error{Errc::corrupt_database, "the file is not a " + std::string(what) +
                                                 " (a SQLite database of another application)"};
    }
    if (id.version > max_version) {
        return Error{Errc::schema_too_new, std::string(what) + " schema version " + std::to_string(id.version) +
                                               " is newer than this libsim's " + std::to_string(max_version)};
    }
    if (id.version < 1) {
        return Error{Errc::corrupt_database, std::string(what) + " without a schema version"};
    }
    return ok();
}

std::string sqlite_immutable_uri(const std::string& path) {
    // RFC 3986 percent-encoding of everything unusual in the path part.
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out = "file:";
    for (const char c : path) {
        const auto u = static_cast<unsigned char>(c);
        const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '/' ||
                           c == '-' || c == '_' || c == '.' || c == '~';
        if (plain) {
            out.push_back(c);
        } else {
            out.push_back('%');
            out.push_back(hex[u >> 4U]);
            out.push_back(hex[u & 0x0FU]);
        }
    }
    return out + "?mode=ro&immutable=1";
}

}  // namespace sim::store::detail
