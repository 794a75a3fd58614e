#include "sql_url.h"

#include <sim/bytes.h>

#include <algorithm>
#include <iterator>

namespace sim::store::detail {
namespace {

/// What tells one kind of URL from another.
struct Scheme {
    const char* label;  ///< for errors: "MariaDB URL", "PostgreSQL URL"
    std::string_view names[2];
    std::uint16_t default_port;
};

Error bad(const Scheme& scheme, const char* what) {
    return Error{Errc::invalid_argument, std::string(scheme.label) + ": " + what};
}

Result<std::string> percent_decode(const Scheme& scheme, std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out.push_back(s[i]);
            continue;
        }
        if (i + 2 >= s.size()) {
            return bad(scheme, "truncated percent escape");
        }
        Bytes byte;
        if (!from_hex(s.substr(i + 1, 2), byte)) {
            return bad(scheme, "bad percent escape");
        }
        const char c = static_cast<char>(byte[0]);
        if (c == '\0') {
            return bad(scheme, "NUL in URL");
        }
        out.push_back(c);
        i += 2;
    }
    return out;
}

bool parse_uint(std::string_view s, unsigned long max, unsigned long& out) {
    if (s.empty() || s.size() > 10) {
        return false;
    }
    unsigned long v = 0;
    for (const char c : s) {
        if (c < '0' || c > '9') {
            return false;
        }
        v = v * 10 + static_cast<unsigned long>(c - '0');
    }
    if (v > max) {
        return false;
    }
    out = v;
    return true;
}

Result<SqlUrl> parse_url(const Scheme& scheme, std::string_view url) {
    SqlUrl p;
    p.port = scheme.default_port;
    const auto* const name = std::find_if(std::begin(scheme.names), std::end(scheme.names),
                                          [&](std::string_view n) { return url.starts_with(n); });
    if (name == std::end(scheme.names)) {
        return bad(scheme, "unknown scheme");
    }
    std::string_view rest = url.substr(name->size());
    std::string_view query;
    if (const auto q = rest.find('?'); q != std::string_view::npos) {
        query = rest.substr(q + 1);
        rest = rest.substr(0, q);
    }
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos) {
        return bad(scheme, "missing /database");
    }
    auto authority = rest.substr(0, slash);
    SIM_TRY(p.database, percent_decode(scheme, rest.substr(slash + 1)));
    if (p.database.empty() || p.database.find('/') != std::string::npos) {
        return bad(scheme, "bad database name");
    }
    // userinfo@host: the last '@' separates them (a password may contain an escaped one only).
    const auto at = authority.rfind('@');
    if (at == std::string_view::npos) {
        return bad(scheme, "missing user@");
    }
    const auto userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const auto colon = userinfo.find(':');
    SIM_TRY(p.user, percent_decode(scheme, userinfo.substr(0, colon)));
    if (colon != std::string_view::npos) {
        SIM_TRY(p.password, percent_decode(scheme, userinfo.substr(colon + 1)));
    }
    if (p.user.empty()) {
        return bad(scheme, "empty user");
    }
    std::string_view host = authority;
    std::string_view port;
    if (!host.empty() && host.front() == '[') {
        const auto close = host.find(']');
        if (close == std::string_view::npos) {
            return bad(scheme, "unclosed [ in host");
        }
        port = host.substr(close + 1);
        host = host.substr(1, close - 1);
        if (!port.empty()) {
            if (port.front() != ':') {
                return bad(scheme, "junk after ]");
            }
            port.remove_prefix(1);
        }
    } else if (const auto c = host.rfind(':'); c != std::string_view::npos) {
        port = host.substr(c + 1);
        host = host.substr(0, c);
    }
    if (!host.empty()) {
        p.host = std::string(host);
    }
    if (!port.empty()) {
        unsigned long v = 0;
        if (!parse_uint(port, 65535, v) || v == 0) {
            return bad(scheme, "bad port");
        }
        p.port = static_cast<std::uint16_t>(v);
    }
    while (!query.empty()) {
        const auto amp = query.find('&');
        const auto item = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        const auto eq = item.find('=');
        if (eq == std::string_view::npos) {
            return bad(scheme, "query item without =");
        }
        const auto key = item.substr(0, eq);
        SIM_TRY(const auto value, percent_decode(scheme, item.substr(eq + 1)));
        if (key == "socket") {
            p.socket = value;
        } else if (key == "connect_timeout") {
            unsigned long v = 0;
            if (!parse_uint(value, 3600, v) || v == 0) {
                return bad(scheme, "bad connect_timeout");
            }
            p.connect_timeout = static_cast<unsigned>(v);
        } else if (key == "tls") {
            if (value == "required") {
                p.tls_required = true;
            } else if (value == "off") {
                p.tls_required = false;
            } else {
                return bad(scheme, "tls must be required or off");
            }
        } else if (key == "tls_ca") {
            p.tls_ca = value;
        } else {
            return bad(scheme, "unknown query parameter");
        }
    }
    return p;
}

}  // namespace

Result<SqlUrl> parse_mariadb_url(std::string_view url) {
    static constexpr Scheme mariadb{"MariaDB URL", {"mariadb://", "mysql://"}, 3306};
    return parse_url(mariadb, url);
}

Result<SqlUrl> parse_postgres_url(std::string_view url) {
    static constexpr Scheme postgres{"PostgreSQL URL", {"postgresql://", "postgres://"}, 5432};
    return parse_url(postgres, url);
}

}  // namespace sim::store::detail
