#include "vec_reader.h"

#include <sim/error.h>

#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>

namespace {

sim::Result<int> parse_positive(int v) {
    if (v <= 0) {
        return sim::Error{sim::Errc::invalid_argument, "must be positive"};
    }
    return v;
}

sim::Result<int> doubled(int v) {
    SIM_TRY(const int x, parse_positive(v));
    return x * 2;
}

}  // namespace

TEST_CASE("Result carries a value or an error") {
    const auto good = doubled(4);
    REQUIRE(good.has_value());
    CHECK(*good == 8);
    CHECK(good.code() == sim::Errc::ok);

    const auto bad = doubled(-1);
    REQUIRE_FALSE(bad.has_value());
    CHECK(bad.code() == sim::Errc::invalid_argument);
    CHECK(bad.error().message() == "invalid argument: must be positive");
}

TEST_CASE("Status and SIM_TRY_STATUS propagate") {
    auto fails = []() -> sim::Status { return sim::Errc::closed; };
    auto wrapper = [&]() -> sim::Status {
        SIM_TRY_STATUS(fails());
        return sim::ok();
    };
    const auto st = wrapper();
    CHECK_FALSE(st);
    CHECK(st.code() == sim::Errc::closed);
    CHECK(sim::Status{}.has_value());
}

TEST_CASE("error category maps every code to a distinct description") {
    const std::error_code ec = sim::Errc::auth_failed;
    CHECK(std::string(ec.category().name()) == "sim");
    CHECK(ec.message() == "authentication failed (bad MAC or tag)");
    std::set<std::string> seen;
    for (int v = 1; v < 1000; ++v) {  // 0 (ok) never travels
        const std::string d = sim::describe(static_cast<sim::Errc>(v));
        if (d != "unknown error") {
            CHECK_MESSAGE(seen.insert(d).second, "duplicate description: " << d);
        }
    }
    CHECK(seen.size() > 40);
}

TEST_CASE("errc_name gives every code its enumerator name, distinct and label-safe") {
    CHECK(std::string(sim::errc_name(sim::Errc::queue_full)) == "queue_full");
    CHECK(std::string(sim::errc_name(sim::Errc::rate_limited)) == "rate_limited");
    CHECK(std::string(sim::errc_name(static_cast<sim::Errc>(12345))) == "unknown");
    std::set<std::string> seen;
    for (int v = 0; v < 1000; ++v) {
        const auto code = static_cast<sim::Errc>(v);
        const std::string name = sim::errc_name(code);
        const bool defined = std::string(sim::describe(code)) != "unknown error";
        CHECK_MESSAGE(defined == (name != "unknown"), "code " << v);
        if (defined) {
            CHECK_MESSAGE(seen.insert(name).second, "duplicate name: " << name);
            CHECK_MESSAGE(name.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos, name);
        }
    }
    CHECK(seen.size() > 40);
}

TEST_CASE("docs/protocol.md lists every error code, and only those") {
    std::ifstream in(simtest::vector_path("../../docs/protocol.md"));
    REQUIRE(in);
    std::set<int> documented;
    std::string line;
    while (std::getline(in, line)) {
        // Rows of the table in section 2.4: "| 610 | `out_of_order` | ... |"
        int code = -1;
        char name[64] = {};
        if (std::sscanf(line.c_str(), "| %d | `%63[a-z_]` |", &code, name) == 2) {
            documented.insert(code);
        }
    }
    std::set<int> defined;
    for (int v = 1; v < 1000; ++v) {  // 0 (ok) never travels
        if (std::string(sim::describe(static_cast<sim::Errc>(v))) != "unknown error") {
            defined.insert(v);
        }
    }
    CHECK(defined.size() > 40);
    CHECK(documented == defined);
}
