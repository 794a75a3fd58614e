// Option and configuration-file parsing for the command-line tools.
#include "options.h"

#include <iostream>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <iostream>
#include <sstream>

namespace sim::tools {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) {
        s.remove_prefix(1);
    }
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) {
        s.remove_suffix(1);
    }
    return s;
}

const OptionSpec* find_long(std::span<const OptionSpec> specs, std::string_view name) {
    const auto it = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.name == name; });
    return it == specs.end() ? nullptr : &*it;
}

const OptionSpec* find_short(std::span<const OptionSpec> specs, char c) {
    const auto it = std::find_if(specs.begin(), specs.end(), [&](const OptionSpec& s) { return s.short_name == c; });
    return it == specs.end() ? nullptr : &*it;
}

Error usage(std::string message) {
    return Error{Errc::invalid_argument, std::move(message)};
}

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

}  // namespace

std::string ParsedArgs::get(std::string_view name, std::string_view fallback) const {
    const auto it = values.find(name);
    return it == values.end() ? std::string(fallback) : it->second;
}

Result<ParsedArgs> parse_command_line(std::span<const OptionSpec> specs, std::span<const std::string> args) {
    ParsedArgs out;
    auto set = [&](const OptionSpec& spec, std::string value) {
        out.values.insert_or_assign(std::string(spec.name), std::move(value));
        out.from_command_line.emplace_back(spec.name);
    };
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (arg == "--") {
            out.positionals.insert(out.positionals.end(), args.begin() + static_cast<std::ptrdiff_t>(i) + 1,
                                   args.end());
            break;
        }
        if (arg.size() > 2 && arg.starts_with("--")) {
            const auto eq = arg.find('=');
            const std::string name = arg.substr(2, eq == std::string::npos ? std::string::npos : eq - 2);
            const OptionSpec* spec = find_long(specs, name);
            if (spec == nullptr) {
                return usage("unknown option '--" + name + "'");
            }
            if (spec->metavar.empty()) {
                if (eq != std::string::npos) {
                    return usage("option '--" + name + "' takes no value");
                }
                set(*spec, "1");
                continue;
            }
            if (eq != std::string::npos) {
                set(*spec, arg.substr(eq + 1));
                continue;
            }
            if (i + 1 >= args.size()) {
                return usage("option '--" + name + "' needs a value (" + std::string(spec->metavar) + ")");
            }
            set(*spec, args[++i]);
            continue;
        }
        if (arg.size() >= 2 && arg[0] == '-' && arg[1] != '-') {
            const OptionSpec* spec = find_short(specs, arg[1]);
            if (spec == nullptr) {
                return usage("unknown option '" + arg.substr(0, 2) + "'");
            }
            if (spec->metavar.empty()) {
                if (arg.size() > 2) {
                    return usage("option '-" + std::string(1, arg[1]) + "' takes no value");
                }
                set(*spec, "1");
                continue;
            }
            if (arg.size() > 2) {
                set(*spec, arg.substr(2));
                continue;
            }
            if (i + 1 >= args.size()) {
                return usage("option '-" + std::string(1, arg[1]) + "' needs a value (" + std::string(spec->metavar) +
                             ")");
            }
            set(*spec, args[++i]);
            continue;
        }
        out.positionals.push_back(arg);  // includes "-" alone
    }
    return out;
}

Status merge_config_file(std::span<const OptionSpec> specs, const std::string& path, ParsedArgs& args) {
    std::ifstream in(path);
    if (!in) {
        return usage("cannot read configuration file '" + path + "'");
    }
    std::string line;
    int line_no = 0;
    while (std::getline(in, line)) {
        ++line_no;
        const std::string_view text = trim(line);
        if (text.empty() || text.front() == '#') {
            continue;
        }
        const auto where = path + ":" + std::to_string(line_no) + ": ";
        const auto eq = text.find('=');
        if (eq == std::string_view::npos) {
            return usage(where + "expected 'key = value'");
        }
        const std::string key(trim(text.substr(0, eq)));
        const std::string value(trim(text.substr(eq + 1)));
        const OptionSpec* spec = find_long(specs, key);
        if (spec == nullptr) {
            return usage(where + "unknown key '" + key + "'");
        }
        if (!spec->in_config) {
            return usage(where + "'" + key + "' cannot be set in a configuration file");
        }
        if (spec->metavar.empty() && value != "1" && value != "true" && value != "yes") {
            return usage(where + "'" + key + "' is a flag: use '" + key + " = true'");
        }
        const bool on_command_line = std::find(args.from_command_line.begin(), args.from_command_line.end(), key) !=
                                     args.from_command_line.end();
        if (!on_command_line) {
            args.values.insert_or_assign(key, spec->metavar.empty() ? std::string("1") : value);
        }
    }
    return ok();
}

std::string format_options(std::span<const OptionSpec> specs) {
    std::vector<std::string> heads;
    std::size_t width = 0;
    for (const auto& s : specs) {
        std::string head = s.short_name != 0 ? std::string("-") + s.short_name + ", " : std::string("    ");
        head += "--";
        head += s.name;
        if (!s.metavar.empty()) {
            head += " ";
            head += s.metavar;
        }
        width = std::max(width, head.size());
        heads.push_back(std::move(head));
    }
    // Explanations are wrapped to 100 columns, continuation lines aligned under the first.
    constexpr std::size_t line_width = 100;
    const std::size_t indent = 2 + width + 2;
    const std::size_t room = line_width > indent + 30 ? line_width - indent : 30;
    std::ostringstream out;
    for (std::size_t i = 0; i < specs.size(); ++i) {
        std::string text(specs[i].help);
        if (!specs[i].default_text.empty()) {
            text += " (default: " + std::string(specs[i].default_text) + ")";
        }
        out << "  " << heads[i] << std::string(width - heads[i].size() + 2, ' ');
        std::string_view rest = text;
        bool first = true;
        while (!rest.empty()) {
            std::size_t cut = rest.size();
            if (cut > room) {
                cut = rest.rfind(' ', room);
                if (cut == std::string_view::npos || cut == 0) {
                    cut = std::min(rest.find(' '), rest.size());
                }
            }
            if (!first) {
                out << std::string(indent, ' ');
            }
            out << rest.substr(0, cut) << "\n";
            rest.remove_prefix(std::min(cut + 1, rest.size()));
            first = false;
        }
    }
    return out.str();
}

Result<std::uint64_t> parse_uint(std::string_view option, std::string_view text, std::uint64_t min, std::uint64_t max) {
    std::uint64_t v = 0;
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc{} || ptr != end || v < min || v > max) {
        return usage("--" + std::string(option) + ": expected a whole number from " + std::to_string(min) + " to " +
                     std::to_string(max) + ", got '" + std::string(text) + "'");
    }
    return v;
}

Result<std::uint64_t> parse_bytes(std::string_view option, std::string_view text, std::uint64_t min,
                                  std::uint64_t max) {
    unsigned shift = 0;
    std::string_view digits = text;
    if (!text.empty()) {
        const std::string_view units = "KMGT";
        if (const auto u = units.find(text.back()); u != std::string_view::npos) {
            shift = 10U * static_cast<unsigned>(u + 1);
            digits.remove_suffix(1);
        }
    }
    std::uint64_t v = 0;
    const auto* end = digits.data() + digits.size();
    const auto [ptr, ec] = std::from_chars(digits.data(), end, v);
    const bool overflow = shift != 0 && v > (std::numeric_limits<std::uint64_t>::max() >> shift);
    if (digits.empty() || ec != std::errc{} || ptr != end || overflow || (v << shift) < min || (v << shift) > max) {
        return usage("--" + std::string(option) + ": expected a byte count from " + std::to_string(min) + " to " +
                     std::to_string(max) + " (a number, optionally with K, M, G or T), got '" + std::string(text) +
                     "'");
    }
    return v << shift;
}

Result<std::chrono::nanoseconds> parse_seconds(std::string_view option, std::string_view text, double max_seconds) {
    const std::string s(text);
    char* end = nullptr;
    const double v = s.empty() ? -1.0 : std::strtod(s.c_str(), &end);
    if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || v < 0.0 || v > max_seconds) {
        return usage("--" + std::string(option) + ": expected a number of seconds from 0 to " +
                     std::to_string(static_cast<long long>(max_seconds)) + ", got '" + s + "'");
    }
    return std::chrono::nanoseconds(static_cast<std::int64_t>(v * 1e9));
}

Result<std::pair<std::string, std::uint16_t>> parse_host_port(std::string_view option, std::string_view text,
                                                              bool allow_zero_port) {
    const auto bad = [&] {
        return usage("--" + std::string(option) + ": expected HOST:PORT (IPv6 as [ADDR]:PORT), got '" +
                     std::string(text) + "'");
    };
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
        return bad();
    }
    std::string host(text.substr(0, colon));
    if (host.front() == '[') {
        if (host.size() < 3 || host.back() != ']') {
            return bad();
        }
        host = host.substr(1, host.size() - 2);
    } else if (host.find(':') != std::string::npos) {
        return bad();  // a bare IPv6 address is ambiguous
    }
    auto port = parse_uint(option, text.substr(colon + 1), allow_zero_port ? 0 : 1, 65535);
    if (!port) {
        return Error{Errc::invalid_argument, "--" + std::string(option) + ": port must be a number from " +
                                                 (allow_zero_port ? "0" : "1") + " to 65535"};
    }
    return std::pair{std::move(host), static_cast<std::uint16_t>(*port)};
}

std::vector<std::string> split_list(std::string_view text) {
    std::vector<std::string> out;
    while (!text.empty()) {
        const auto comma = text.find(',');
        const auto item = trim(text.substr(0, comma));
        if (!item.empty()) {
            out.emplace_back(item);
        }
        if (comma == std::string_view::npos) {
            break;
        }
        text.remove_prefix(comma + 1);
    }
    return out;
}

Result<SuiteId> parse_suite(std::string_view option, std::string_view text) {
    const std::string l = lower(trim(text));
    if (l == "tdes" || l == "3des") {
        return SuiteId::tdes_cbc_hmac_sha256;
    }
    if (l == "aes" || l == "aes256-gcm" || l == "aes-gcm") {
        return SuiteId::aes256_gcm;
    }
    if (l == "chacha" || l == "chacha20" || l == "chacha20-poly1305") {
        return SuiteId::chacha20_poly1305;
    }
    if (auto id = suite_from_name(trim(text))) {
        return *id;
    }
    return usage("--" + std::string(option) + ": unknown suite '" + std::string(text) +
                 "' (AES-256-GCM, ChaCha20-Poly1305, TDES-CBC-HMAC-SHA256, or aes, chacha, tdes)");
}

Result<SuitePolicy> parse_suite_list(std::string_view option, std::string_view text) {
    std::vector<SuiteId> ids;
    for (const auto& item : split_list(text)) {
        SIM_TRY(const auto id, parse_suite(option, item));
        ids.push_back(id);
    }
    if (ids.empty()) {
        return usage("--" + std::string(option) + ": the list of suites is empty");
    }
    auto policy = SuitePolicy::from_list(ids);
    if (!policy) {
        return usage("--" + std::string(option) + ": " + policy.error().message());
    }
    return std::move(*policy);
}

int usage_error(std::string_view program, std::string_view message) {
    std::cerr << program << ": " << message << "\nTry '" << program << " --help'.\n";
    return exit_usage;
}

int failure(std::string_view program, std::string_view message) {
    std::cerr << program << ": error: " << message << "\n";
    return exit_failure;
}

ProgramArgs parse_program_args(std::string_view program, std::span<const OptionSpec> specs,
                               std::span<const std::string> args, const std::function<void()>& print_help) {
    const auto usage = [program](const std::string& message) {
        return ProgramArgs{std::nullopt, usage_error(program, message)};
    };
    auto parsed = parse_command_line(specs, args);
    if (!parsed) {
        return usage(parsed.error().detail);
    }
    if (parsed->has("help")) {
        print_help();
        return {std::nullopt, 0};
    }
    if (parsed->has("version")) {
        std::cout << program << " (libsim) " << SIM_VERSION << "\n";
        return {std::nullopt, 0};
    }
    if (parsed->has("config")) {
        if (auto st = merge_config_file(specs, parsed->get("config"), *parsed); !st) {
            return usage(st.error().detail);
        }
    }
    return {std::move(*parsed), 0};
}

}  // namespace sim::tools
