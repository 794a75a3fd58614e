// The MariaDB URL parser (private to libsim; no server needed).
#include "../../libsim/src/store/mariadb_url.h"

#include <doctest/doctest.h>

using sim::store::detail::parse_mariadb_url;

TEST_CASE("MariaDB URLs: fields and percent escapes") {
    const auto p = parse_mariadb_url("mariadb://us%65r:p%2Fw%3a@db.example:3307/simdb");
    REQUIRE(p);
    CHECK(p->user == "user");
    CHECK(p->password == "p/w:");
    CHECK(p->host == "db.example");
    CHECK(p->port == 3307);
    CHECK(p->database == "simdb");
}

TEST_CASE("MariaDB URLs: bad percent escapes are refused") {
    for (const char* url : {"mariadb://u:pw%4@h/db", "mariadb://u:pw%@h/db", "mariadb://u:pw%zz@h/db",
                            "mariadb://u:pw%00@h/db", "mariadb://u:p%g1@h/db"}) {
        CAPTURE(url);
        const auto r = parse_mariadb_url(url);
        CHECK(r.code() == sim::Errc::invalid_argument);
    }
}
