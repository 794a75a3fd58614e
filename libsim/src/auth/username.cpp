// Username and password rules (docs/accounts.md, "Usernames").
#include <sim/auth.h>

#include <array>

namespace sim::auth {
namespace {

bool is_alnum(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

char to_lower(char c) {
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Names the protocol gives a meaning: the seed's server sends as "Server".
constexpr std::array<std::string_view, 1> reserved_names{"server"};

}  // namespace

Result<std::string> canonical_username(std::string_view name) {
    if (name.size() < min_username_length) {
        return Error{Errc::bad_username, "username shorter than 3 characters"};
    }
    if (name.size() > max_username_length) {
        return Error{Errc::bad_username, "username longer than 32 characters"};
    }
    std::string out;
    out.reserve(name.size());
    for (const char c : name) {
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-') {
            return Error{Errc::bad_username, "username may hold only ASCII letters, digits, '.', '_' and '-'"};
        }
        out.push_back(to_lower(c));
    }
    if (!is_alnum(out.front()) || !is_alnum(out.back())) {
        return Error{Errc::bad_username, "username must start and end with a letter or digit"};
    }
    for (const auto reserved : reserved_names) {
        if (out == reserved) {
            return Error{Errc::bad_username, "username is reserved"};
        }
    }
    return out;
}

Status check_password(std::string_view password) {
    if (password.empty()) {
        return Error{Errc::bad_password, "password is empty"};
    }
    if (password.size() > max_password_length) {
        return Error{Errc::bad_password, "password longer than 1024 bytes"};
    }
    if (password.find('\0') != std::string_view::npos) {
        return Error{Errc::bad_password, "password contains a NUL byte"};
    }
    return ok();
}

}  // namespace sim::auth
