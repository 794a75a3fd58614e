#pragma once
// Private: pieces every record of the client state is read with (the end-to-end client, the outbox, the inbox).

#include "../proto/wire.h"

#include <sim/error.h>

#include <string>
#include <string_view>

namespace sim::client_detail {

/// A record of the client state that does not decode.
inline Error corrupt(std::string_view what) {
    return Error{Errc::corrupt_database, "client state: bad " + std::string(what)};
}

/// A name as records store it: length u8 | bytes. False when truncated.
inline bool read_name(detail::WireReader& r, std::string& out) {
    std::uint8_t len = 0;
    ByteView v;
    if (!r.u8(len) || !r.take(len, v)) {
        return false;
    }
    out.assign(reinterpret_cast<const char*>(v.data()), v.size());
    return true;
}

}  // namespace sim::client_detail
