// The database server URL parser (private to libsim; no server needed).
#include "../../libsim/src/store/sql_url.h"

#include <doctest/doctest.h>

using sim::store::detail::parse_mariadb_url;
using sim::store::detail::parse_postgres_url;
using sim::store::detail::SqlUrl;

namespace {

SqlUrl expected(std::string user, std::string password, std::string host, std::uint16_t port, std::string database) {
    SqlUrl u;
    u.user = std::move(user);
    u.password = std::move(password);
    u.host = std::move(host);
    u.port = port;
    u.database = std::move(database);
    return u;
}

}  // namespace

TEST_CASE("MariaDB URLs: fields and percent escapes") {
    CHECK(parse_mariadb_url("mariadb://us%65r:p%2Fw%3a@db.example:3307/simdb").value() ==
          expected("user", "p/w:", "db.example", 3307, "simdb"));
    CHECK(parse_mariadb_url("mysql://u@h/db").value() == expected("u", "", "h", 3306, "db"));
}

TEST_CASE("PostgreSQL URLs: both schemes, default port, socket folder, and no MariaDB scheme") {
    auto want = expected("sim", "p@ss", "127.0.0.1", 5432, "simtest");
    want.connect_timeout = 3;
    want.tls_required = true;
    CHECK(parse_postgres_url("postgresql://sim:p%40ss@127.0.0.1/simtest?connect_timeout=3&tls=required").value() ==
          want);
    want = expected("sim", "", "::1", 5433, "db");
    want.socket = "/run/postgresql";
    CHECK(parse_postgres_url("postgres://sim@[::1]:5433/db?socket=/run/postgresql").value() == want);
    CHECK(parse_postgres_url("mariadb://u@h/db").code() == sim::Errc::invalid_argument);
    CHECK(parse_mariadb_url("postgresql://u@h/db").code() == sim::Errc::invalid_argument);
}

TEST_CASE("database URLs: bad percent escapes are refused") {
    for (const char* url : {"mariadb://u:pw%4@h/db", "mariadb://u:pw%@h/db", "mariadb://u:pw%zz@h/db",
                            "mariadb://u:pw%00@h/db", "mariadb://u:p%g1@h/db"}) {
        CAPTURE(url);
        CHECK(parse_mariadb_url(url).code() == sim::Errc::invalid_argument);
    }
    CHECK(parse_postgres_url("postgresql://u:pw%zz@h/db").code() == sim::Errc::invalid_argument);
}
