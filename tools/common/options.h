#pragma once
/// @file
/// Command-line and configuration-file parsing shared by `simd` and `sim`.
///
/// Every option has a long name; most take a value. The same long names serve as keys of a configuration file of
/// `key = value` lines, and values given on the command line override the file. Options may appear anywhere on
/// the command line (before or after the subcommand); `--` ends them. Parsing never exits: errors come back as
/// `sim::Error` (Errc::invalid_argument) with a message meant for the user, and the program exits with status 2.

#include <sim/error.h>
#include <sim/suite.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sim::tools {

/// Exit status for a usage error (bad option, bad value, missing argument).
inline constexpr int exit_usage = 2;
/// Exit status for a failure at run time (cannot connect, login refused, timeout, I/O error).
inline constexpr int exit_failure = 1;

/// One option of a program.
struct OptionSpec {
    std::string_view name;          ///< long name without dashes ("listen")
    char short_name = 0;            ///< single-letter alias, 0 for none
    std::string_view metavar;       ///< value placeholder for --help ("ADDR:PORT"); empty: a flag without value
    std::string_view help;          ///< one-line explanation
    std::string_view default_text;  ///< shown as "(default: ...)" when not empty
    bool in_config = true;          ///< may appear in a configuration file
};

/// The result of parsing: option values by long name and the positional arguments in order.
struct ParsedArgs {
    std::map<std::string, std::string, std::less<>> values;
    std::vector<std::string> positionals;
    /// Long names given on the command line (as opposed to the configuration file).
    std::vector<std::string> from_command_line;

    [[nodiscard]] bool has(std::string_view name) const { return values.find(name) != values.end(); }
    /// The value of `name`, or `fallback` when it was not given.
    [[nodiscard]] std::string get(std::string_view name, std::string_view fallback = {}) const;
};

/// Parse `args` (without the program name) against `specs`. Flags (options without metavar) get the value "1".
/// Errors: unknown option, missing value, value given to a flag.
[[nodiscard]] Result<ParsedArgs> parse_command_line(std::span<const OptionSpec> specs,
                                                    std::span<const std::string> args);

/// Read a configuration file of `key = value` lines ('#' starts a comment line; blank lines are skipped) and add
/// the values that the command line did not set. Errors name the file and line: unreadable file, a line without
/// '=', an unknown key, a key that cannot be used in a file.
[[nodiscard]] Status merge_config_file(std::span<const OptionSpec> specs, const std::string& path, ParsedArgs& args);

/// Print "PROGRAM: message\nTry 'PROGRAM --help'." on stderr; returns exit_usage.
int usage_error(std::string_view program, std::string_view message);
/// Print "PROGRAM: error: message" on stderr; returns exit_failure.
int failure(std::string_view program, std::string_view message);

/// What parse_program_args decided: run with `args`, or exit at once with `exit_code`.
struct ProgramArgs {
    std::optional<ParsedArgs> args;
    int exit_code = 0;
};

/// The common start of every tool's main(): parse `args`, answer --help (through `print_help`) and --version
/// ("PROGRAM (libsim) VERSION"), and merge a --config file. A usage error is printed as
/// "PROGRAM: message\nTry 'PROGRAM --help'." and gives exit_usage.
[[nodiscard]] ProgramArgs parse_program_args(std::string_view program, std::span<const OptionSpec> specs,
                                             std::span<const std::string> args,
                                             const std::function<void()>& print_help);

/// The option table as --help shows it (two-space indent, aligned explanations).
[[nodiscard]] std::string format_options(std::span<const OptionSpec> specs);

/// Parse an unsigned integer in [min, max]; the error names the option.
[[nodiscard]] Result<std::uint64_t> parse_uint(std::string_view option, std::string_view text, std::uint64_t min,
                                               std::uint64_t max);
/// Parse a byte count in [min, max]: a whole number, optionally with K, M, G or T (powers of 1024), e.g. "256M".
[[nodiscard]] Result<std::uint64_t> parse_bytes(std::string_view option, std::string_view text, std::uint64_t min,
                                                std::uint64_t max);
/// Parse a non-negative number of seconds (decimals allowed, e.g. "0.5"), at most `max_seconds`.
[[nodiscard]] Result<std::chrono::nanoseconds> parse_seconds(std::string_view option, std::string_view text,
                                                             double max_seconds);
/// Parse "HOST:PORT" or "[IPv6]:PORT"; `allow_zero_port` for listen addresses.
[[nodiscard]] Result<std::pair<std::string, std::uint16_t>> parse_host_port(std::string_view option,
                                                                            std::string_view text,
                                                                            bool allow_zero_port);
/// Split "a,b , c" into trimmed non-empty items.
[[nodiscard]] std::vector<std::string> split_list(std::string_view text);
/// A record suite by name: the names of sim::suite_from_name ("AES-256-GCM", "ChaCha20-Poly1305",
/// "TDES-CBC-HMAC-SHA256", numeric ids) and the short forms "aes", "aes256-gcm", "chacha", "chacha20",
/// "chacha20-poly1305", "tdes", "3des" (any case).
[[nodiscard]] Result<SuiteId> parse_suite(std::string_view option, std::string_view text);
/// A comma-separated preference list of suites (duplicates dropped).
[[nodiscard]] Result<SuitePolicy> parse_suite_list(std::string_view option, std::string_view text);

}  // namespace sim::tools
