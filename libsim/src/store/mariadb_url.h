#pragma once
// Parser of the MariaDB connection URL (sim::store::MariaDbConfig::url). Private to libsim; pure, no I/O.

#include <sim/error.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace sim::store::detail {

struct MariaDbParams {
    std::string user;
    std::string password;  ///< secret: never put it in an error
    std::string host = "localhost";
    std::uint16_t port = 3306;
    std::string database;
    std::string socket;             ///< Unix socket path; empty for TCP
    unsigned connect_timeout = 10;  ///< seconds
    bool tls_required = false;
    std::string tls_ca;  ///< CA file for tls=required
};

/// Parse `mariadb://` or `mysql://` URLs. Errc::invalid_argument (details never quote the URL).
Result<MariaDbParams> parse_mariadb_url(std::string_view url);

}  // namespace sim::store::detail
