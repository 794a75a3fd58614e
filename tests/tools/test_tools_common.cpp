// Unit tests of the code shared by simd and sim (tools/common): option and configuration parsing, value parsers,
// log escaping, terminal defusing, secret files, the session state file and the reconnection back-off. Negative cases
// for every parser.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "common/backoff.h"
#include "common/log.h"
#include "common/options.h"
#include "common/session_state.h"
#include "common/system.h"

#include <doctest/doctest.h>

#include <sys/stat.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fs = std::filesystem;
using sim::tools::OptionSpec;

namespace {

constexpr OptionSpec specs[] = {
    {"config", 'c', "FILE", "configuration", "", false},
    {"listen", 0, "ADDR:PORT", "where", "127.0.0.1:7878"},
    {"count", 'n', "N", "how many", ""},
    {"quiet", 'q', "", "a flag", ""},
    {"help", 'h', "", "help", "", false},
};

sim::Result<sim::tools::ParsedArgs> parse(const std::vector<std::string>& args) {
    return sim::tools::parse_command_line(specs, args);
}

/// A temporary directory removed at the end of the test.
struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "sim-tools-unit-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    [[nodiscard]] std::string file(const std::string& name) const { return (path / name).string(); }
};

void write(const std::string& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
}

std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

unsigned mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 0777U;
}

/// Everything a Logger writes, through a temporary FILE.
std::string logged(sim::tools::LogFormat format, std::string_view message,
                   const std::vector<std::pair<std::string_view, std::string>>& fields) {
    std::FILE* f = std::tmpfile();
    REQUIRE(f != nullptr);
    sim::tools::Logger logger(sim::LogLevel::info, format, f);
    logger.log(sim::LogLevel::debug, "below the level");
    logger.log(sim::LogLevel::info, message, fields);
    std::rewind(f);
    std::string out;
    char buf[512];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
        out.append(buf, n);
    }
    std::fclose(f);
    return out;
}

}  // namespace

TEST_CASE("command line: long, short, '=', flags, positionals anywhere, '--'") {
    auto a =
        parse({"send", "--listen", "[::1]:1", "alice", "-n3", "--count=4", "-q", "bob", "--", "--not-an-option", "-x"});
    REQUIRE(a);
    CHECK(a->get("listen") == "[::1]:1");
    CHECK(a->get("count") == "4");  // the later value wins
    CHECK(a->get("quiet") == "1");
    CHECK(a->get("missing", "fallback") == "fallback");
    CHECK(a->positionals == std::vector<std::string>{"send", "alice", "bob", "--not-an-option", "-x"});
    auto b = parse({"-c", "file", "-n", "5", "-"});
    REQUIRE(b);
    CHECK(b->get("config") == "file");
    CHECK(b->get("count") == "5");
    CHECK(b->positionals == std::vector<std::string>{"-"});
}

TEST_CASE("command line: errors name the option") {
    const std::pair<std::vector<std::string>, std::string> cases[] = {
        {{"--bogus"}, "unknown option '--bogus'"},
        {{"-z"}, "unknown option '-z'"},
        {{"--listen"}, "option '--listen' needs a value (ADDR:PORT)"},
        {{"-n"}, "option '-n' needs a value (N)"},
        {{"--quiet=1"}, "option '--quiet' takes no value"},
        {{"-qq"}, "option '-q' takes no value"},
    };
    for (const auto& [args, message] : cases) {
        auto r = parse(args);
        REQUIRE_FALSE(r);
        CHECK(r.code() == sim::Errc::invalid_argument);
        CHECK(r.error().detail == message);
    }
}

TEST_CASE("configuration file: values, comments, command line wins, errors name file and line") {
    TempDir dir;
    const auto conf = dir.file("a.conf");
    write(conf, "# comment\n\n  listen =  10.0.0.1:99  \ncount=7\nquiet = true\n");
    auto a = parse({"--count", "1"});
    REQUIRE(a);
    REQUIRE(sim::tools::merge_config_file(specs, conf, *a));
    CHECK(a->get("listen") == "10.0.0.1:99");
    CHECK(a->get("count") == "1");
    CHECK(a->get("quiet") == "1");

    const std::pair<std::string, std::string> bad[] = {
        {"listen 1.2.3.4:5\n", ":1: expected 'key = value'"},
        {"# ok\nbogus = 1\n", ":2: unknown key 'bogus'"},
        {"help = 1\n", ":1: 'help' cannot be set in a configuration file"},
        {"config = other\n", ":1: 'config' cannot be set in a configuration file"},
        {"quiet = maybe\n", ":1: 'quiet' is a flag"},
    };
    for (const auto& [text, message] : bad) {
        write(conf, text);
        auto b = parse({});
        REQUIRE(b);
        auto st = sim::tools::merge_config_file(specs, conf, *b);
        REQUIRE_FALSE(st);
        CHECK(st.error().detail.find(conf + message) == 0);
    }
    auto c = parse({});
    REQUIRE(c);
    CHECK_FALSE(sim::tools::merge_config_file(specs, dir.file("missing.conf"), *c));
}

TEST_CASE("help text lists every option with its default and wraps long lines") {
    const auto text = sim::tools::format_options(specs);
    CHECK(text.find("  -c, --config FILE") != std::string::npos);
    CHECK(text.find("      --listen ADDR:PORT") != std::string::npos);
    CHECK(text.find("(default: 127.0.0.1:7878)") != std::string::npos);
    constexpr OptionSpec wide[] = {
        {"long", 0, "X",
         std::string_view("word word word word word word word word word word word word word word word word "
                          "word word word word word word word word word word word word word word"),
         ""}};
    const auto wrapped = sim::tools::format_options(wide);
    std::istringstream lines(wrapped);
    std::string line;
    int count = 0;
    while (std::getline(lines, line)) {
        CHECK(line.size() <= 100);
        ++count;
    }
    CHECK(count >= 2);
}

TEST_CASE("value parsers accept the documented forms and refuse the rest") {
    CHECK(*sim::tools::parse_uint("n", "0", 0, 10) == 0);
    CHECK(*sim::tools::parse_uint("n", "10", 0, 10) == 10);
    for (const char* bad : {"", "11", "-1", "1x", " 1", "0x5", "99999999999999999999999"}) {
        CHECK_FALSE(sim::tools::parse_uint("n", bad, 0, 10));
    }
    CHECK(*sim::tools::parse_bytes("b", "1048576", 0, 1ULL << 40U) == 1048576);
    CHECK(*sim::tools::parse_bytes("b", "256M", 0, 1ULL << 40U) == 256ULL << 20U);
    CHECK(*sim::tools::parse_bytes("b", "4G", 0, 1ULL << 40U) == 4ULL << 30U);
    CHECK(*sim::tools::parse_bytes("b", "1K", 0, 1ULL << 40U) == 1024);
    CHECK(*sim::tools::parse_bytes("b", "1T", 0, 1ULL << 40U) == 1ULL << 40U);
    for (const char* bad : {"", "K", "2T", "1k", "1 M", "-1M", "1.5G", "1MB", "99999999999999999T"}) {
        CHECK_FALSE(sim::tools::parse_bytes("b", bad, 0, 1ULL << 40U));
    }
    CHECK_FALSE(sim::tools::parse_bytes("b", "1K", 2048, 1ULL << 40U));
    CHECK(*sim::tools::parse_seconds("t", "1.5", 10) == std::chrono::milliseconds(1500));
    CHECK(*sim::tools::parse_seconds("t", "0", 10) == sim::Duration::zero());
    for (const char* bad : {"", "-1", "11", "nan", "inf", "1s", "1e400"}) {
        CHECK_FALSE(sim::tools::parse_seconds("t", bad, 10));
    }
    auto v4 = sim::tools::parse_host_port("listen", "127.0.0.1:7878", false);
    REQUIRE(v4);
    CHECK(v4->first == "127.0.0.1");
    CHECK(v4->second == 7878);
    auto v6 = sim::tools::parse_host_port("listen", "[::1]:0", true);
    REQUIRE(v6);
    CHECK(v6->first == "::1");
    CHECK(v6->second == 0);
    for (const char* bad :
         {"", "host", ":80", "host:", "host:0", "host:65536", "::1:80", "[::1:80", "[]:80", "host:8o"}) {
        CHECK_FALSE(sim::tools::parse_host_port("listen", bad, false));
    }
    CHECK(sim::tools::split_list(" a, ,b ,c,") == std::vector<std::string>{"a", "b", "c"});
}

TEST_CASE("suite names: full names, short forms, ids; unknown names and empty lists refused") {
    CHECK(*sim::tools::parse_suite("s", "tdes") == sim::SuiteId::tdes_cbc_hmac_sha256);
    CHECK(*sim::tools::parse_suite("s", "TDES-CBC-HMAC-SHA256") == sim::SuiteId::tdes_cbc_hmac_sha256);
    CHECK(*sim::tools::parse_suite("s", "AES") == sim::SuiteId::aes256_gcm);
    CHECK(*sim::tools::parse_suite("s", "chacha20-poly1305") == sim::SuiteId::chacha20_poly1305);
    CHECK_FALSE(sim::tools::parse_suite("s", "des"));
    CHECK_FALSE(sim::tools::parse_suite("s", ""));
    auto list = sim::tools::parse_suite_list("s", "chacha, aes,chacha");
    REQUIRE(list);
    REQUIRE(list->preference().size() == 2);
    CHECK(list->preference()[0] == sim::SuiteId::chacha20_poly1305);
    CHECK(list->preference()[1] == sim::SuiteId::aes256_gcm);
    CHECK_FALSE(list->allows(sim::SuiteId::tdes_cbc_hmac_sha256));
    CHECK_FALSE(sim::tools::parse_suite_list("s", " , "));
    CHECK_FALSE(sim::tools::parse_suite_list("s", "aes,rot13"));
}

TEST_CASE("loopback addresses: only those that reach no other machine") {
    using sim::tools::is_loopback;
    for (const char* host : {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1", "localhost"}) {
        CHECK_MESSAGE(is_loopback(host), host);
    }
    for (const char* host : {"0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "::ffff:10.0.0.1", "fe80::1", "example.org"}) {
        CHECK_MESSAGE(!is_loopback(host), host);
    }
}

TEST_CASE("text from the network cannot drive the terminal") {
    CHECK(sim::tools::printable("plain text\twith tab") == "plain text\twith tab");
    CHECK(sim::tools::printable("\x1b[31mred\r\n\x7f") == "?[31mred???");
    CHECK(sim::tools::printable("csi \xc2\x9b"
                                "2J") == "csi ?2J");                                 // C1 control (U+009B)
    CHECK(sim::tools::printable("caf\xc3\xa9 \xc2\xa0") == "caf\xc3\xa9 \xc2\xa0");  // other UTF-8 kept
    CHECK(sim::tools::printable(std::string("nul\0byte", 8)) == "nul?byte");
}

TEST_CASE("log lines: logfmt and JSON escape what could forge a field or a line") {
    const auto text = logged(sim::tools::LogFormat::text, "conn 1 closed: \"bad\"\nlevel=error",
                             {{"addr", "127.0.0.1:5"}, {"name", "two words"}, {"eq", "a=b"}});
    CHECK(text.find("below the level") == std::string::npos);
    CHECK(text.find(" level=info msg=\"conn 1 closed: \\\"bad\\\"\\nlevel=error\" addr=127.0.0.1:5 "
                    "name=\"two words\" eq=\"a=b\"\n") != std::string::npos);
    CHECK(text.rfind("ts=", 0) == 0);
    CHECK(std::count(text.begin(), text.end(), '\n') == 1);
    const auto json = logged(sim::tools::LogFormat::json, "quote \" backslash \\ nl \n ctl \x01", {{"k", "v\"v"}});
    CHECK(json.find(R"("level":"info","msg":"quote \" backslash \\ nl \u000a ctl \u0001","k":"v\"v"})") !=
          std::string::npos);
    CHECK(std::count(json.begin(), json.end(), '\n') == 1);
}

TEST_CASE("secret key files: created 0600 once, refused when shared, short, or not a file") {
    TempDir dir;
    auto rng = sim::make_system_rng();
    const auto key = dir.file("server.key");
    CHECK_FALSE(sim::tools::load_or_create_secret(key, 32, *rng, false, "server key"));  // no create: missing
    auto created = sim::tools::load_or_create_secret(key, 32, *rng, true, "server key");
    REQUIRE(created);
    CHECK(created->size() == 32);
    CHECK(mode_of(key) == 0600);
    auto again = sim::tools::load_or_create_secret(key, 32, *rng, true, "server key");
    REQUIRE(again);
    CHECK(*again == *created);
    for (const unsigned mode : {0640U, 0604U, 0660U, 0610U}) {
        REQUIRE(::chmod(key.c_str(), mode) == 0);
        auto r = sim::tools::load_or_create_secret(key, 32, *rng, true, "server key");
        REQUIRE_FALSE(r);
        CHECK(r.code() == sim::Errc::invalid_key);
        CHECK(r.error().detail.find("chmod 600") != std::string::npos);
    }
    REQUIRE(::chmod(key.c_str(), 0600) == 0);
    CHECK_FALSE(sim::tools::load_or_create_secret(key, 31, *rng, true, "server key"));  // wrong size
    CHECK(read(key).size() == 32);                                                      // and left alone
    REQUIRE(::mkdir(dir.file("adir").c_str(), 0700) == 0);
    CHECK_FALSE(sim::tools::load_or_create_secret(dir.file("adir"), 32, *rng, true, "server key"));
    fs::create_symlink(key, dir.file("link.key"));
    CHECK_FALSE(sim::tools::load_or_create_secret(dir.file("link.key"), 32, *rng, true, "server key"));
}

TEST_CASE("private directories and atomic writes") {
    TempDir dir;
    const auto deep = dir.file("a/b/c");
    REQUIRE(sim::tools::make_private_dirs(deep));
    CHECK(mode_of(dir.file("a")) == 0700);
    CHECK(mode_of(deep) == 0700);
    REQUIRE(sim::tools::make_private_dirs(deep));  // existing: fine
    write(dir.file("file"), "x");
    CHECK_FALSE(sim::tools::make_private_dirs(dir.file("file")));
    REQUIRE(sim::tools::write_file_atomic(dir.file("port"), "1234\n", 0600));
    CHECK(read(dir.file("port")) == "1234\n");
    CHECK(mode_of(dir.file("port")) == 0600);
    CHECK_FALSE(sim::tools::write_file_atomic(dir.file("missing/port"), "1", 0600));
    CHECK(sim::tools::parent_dir("a/b/c") == "a/b");
    CHECK(sim::tools::parent_dir("/x") == "/");
    CHECK(sim::tools::parent_dir("x") == ".");
}

TEST_CASE("password sources: file first, then SIM_PASSWORD") {
    TempDir dir;
    write(dir.file("pw"), "from file\nsecond line\n");
    ::setenv("SIM_PASSWORD", "from env", 1);
    CHECK(*sim::tools::obtain_password(dir.file("pw"), "", false) == "from file");
    CHECK(*sim::tools::obtain_password("", "", false) == "from env");
    auto missing = sim::tools::obtain_password(dir.file("nope"), "", false);
    REQUIRE_FALSE(missing);
    CHECK(missing.code() == sim::Errc::invalid_argument);
    write(dir.file("empty"), "");
    CHECK_FALSE(sim::tools::obtain_password(dir.file("empty"), "", false));
    ::unsetenv("SIM_PASSWORD");
}

TEST_CASE("session state: save, load, replace, forget, expiry, bad lines, shared file refused") {
    TempDir dir;
    const auto path = dir.file("cfg/sessions");
    sim::tools::SessionState state(path);
    const std::int64_t now = 1'800'000'000'000;
    auto none = state.load("h:1", "alice", now);
    REQUIRE(none);
    CHECK_FALSE(none->has_value());

    const sim::tools::StoredToken a{sim::SecureBytes(32, 0xaa), now + 1000};
    const sim::tools::StoredToken b{sim::SecureBytes(32, 0xbb), now + 2000};
    REQUIRE(state.save("h:1", "alice", a, now));
    REQUIRE(state.save("h:1", "bob", b, now));
    REQUIRE(state.save("h:2", "alice", b, now));
    CHECK(mode_of(path) == 0600);
    auto got = state.load("h:1", "alice", now);
    REQUIRE(got);
    REQUIRE(got->has_value());
    CHECK((*got)->token == a.token);
    CHECK((*got)->expires_unix_ms == a.expires_unix_ms);
    // replace one entry; the others stay
    REQUIRE(state.save("h:1", "alice", b, now));
    CHECK((*state.load("h:1", "alice", now))->token == b.token);
    CHECK(state.load("h:2", "alice", now)->has_value());
    CHECK(state.load("h:1", "bob", now)->has_value());
    // expired entries are not returned, and are dropped at the next write
    CHECK_FALSE(state.load("h:1", "alice", now + 2000)->has_value());
    REQUIRE(state.forget("h:1", "bob", now + 5000));
    CHECK(read(path).find(" bob ") == std::string::npos);
    CHECK(read(path).find("h:2 alice") == std::string::npos);  // expired by then
    // malformed lines are skipped, good ones still found
    write(path, "garbage\nh:1 alice zz 99999999999999\nh:1 alice " + std::string(64, 'c') + " 1" +
                    std::string(15, '0') + "x\nh:1 alice " + std::string(64, 'd') + " 9999999999999 extra\nh:1 alice " +
                    std::string(64, 'e') + " 9999999999999\n");
    ::chmod(path.c_str(), 0600);
    auto e = state.load("h:1", "alice", now);
    REQUIRE(e);
    REQUIRE(e->has_value());
    CHECK((*e)->token == sim::SecureBytes(32, 0xee));
    // a file others can read is refused
    ::chmod(path.c_str(), 0644);
    auto shared = state.load("h:1", "alice", now);
    REQUIRE_FALSE(shared);
    CHECK(shared.code() == sim::Errc::invalid_key);
    // a server id with spaces cannot be stored
    CHECK_FALSE(state.save("h 1", "alice", a, now));
}

namespace {
/// Every byte the same: 0x00 draws the smallest delay.
class FixedRng final : public sim::Rng {
public:
    explicit FixedRng(std::uint8_t b) : m_byte(b) {}
    void fill(sim::MutableByteView out) override { std::fill(out.begin(), out.end(), m_byte); }

private:
    std::uint8_t m_byte;
};
}  // namespace

TEST_CASE("reconnection back-off: decorrelated jitter between the initial delay and the cap, reset after success") {
    using std::chrono::milliseconds;
    const sim::tools::BackoffPolicy policy{milliseconds(500), milliseconds(30000)};
    FixedRng low(0x00);
    sim::tools::Backoff b(policy);
    for (int i = 0; i < 10; ++i) {
        CHECK(b.next(low) == milliseconds(500));  // never below the initial delay
    }
    FixedRng high(0xff);
    sim::tools::Backoff grow(policy);
    sim::Duration previous = milliseconds(500);
    for (int i = 0; i < 12; ++i) {
        const auto d = grow.next(high);
        CHECK(d >= milliseconds(500));
        CHECK(d <= std::min<sim::Duration>(milliseconds(30000), previous * 3));
        previous = d;
    }
    grow.reset();
    CHECK(grow.next(low) == milliseconds(500));

    // a seeded RNG: every delay within its bounds, and the same sequence for the same seed
    const sim::Bytes seed(32, 7);
    auto rng1 = sim::make_deterministic_rng(seed);
    auto rng2 = sim::make_deterministic_rng(seed);
    sim::tools::Backoff b1(policy);
    sim::tools::Backoff b2(policy);
    previous = milliseconds(500);
    bool varied = false;
    sim::Duration longest{};
    for (int i = 0; i < 50; ++i) {
        const auto d = b1.next(*rng1);
        CHECK(d == b2.next(*rng2));
        CHECK(d >= milliseconds(500));
        CHECK(d <= std::min<sim::Duration>(milliseconds(30000), previous * 3));
        varied = varied || (d != milliseconds(500) && d != milliseconds(30000));
        longest = std::max(longest, d);
        previous = d;
    }
    CHECK(varied);
    CHECK(longest > milliseconds(5000));  // it grows towards the cap

    // nonsense policies are made sensible: a zero initial delay would spin, a cap below it would be ignored
    sim::tools::Backoff zero({sim::Duration::zero(), sim::Duration::zero()});
    CHECK(zero.policy().initial == milliseconds(1));
    CHECK(zero.policy().cap == milliseconds(1));
    CHECK(zero.next(high) == milliseconds(1));
}
