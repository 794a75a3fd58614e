#pragma once
// Parser of the database server URLs (sim::store::MariaDbConfig::url, sim::store::PostgresConfig::url). Private to
// libsim; pure, no I/O. Both have one shape, `scheme://user:password@host[:port]/database[?key=value&...]`, and
// the same query keys; only the schemes and the default port differ.

#include <sim/error.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace sim::store::detail {

struct SqlUrl {
    std::string user;
    std::string password;  ///< secret: never put it in an error
    std::string host = "localhost";
    std::uint16_t port = 0;
    std::string database;
    std::string socket;             ///< Unix socket (MariaDB: its path; PostgreSQL: its folder); empty for TCP
    unsigned connect_timeout = 10;  ///< seconds
    bool tls_required = false;
    std::string tls_ca;  ///< CA file for tls=required

    friend bool operator==(const SqlUrl&, const SqlUrl&) = default;
};

/// Parse `mariadb://` or `mysql://` URLs (port 3306 by default). Errc::invalid_argument (details never quote
/// the URL).
Result<SqlUrl> parse_mariadb_url(std::string_view url);

/// Parse `postgresql://` or `postgres://` URLs (port 5432 by default). Errc::invalid_argument.
Result<SqlUrl> parse_postgres_url(std::string_view url);

}  // namespace sim::store::detail
