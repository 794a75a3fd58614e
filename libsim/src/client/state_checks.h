#pragma once
// Limits shared by every ClientState backend, so they refuse the same batches.
#include <sim/client_state.h>

namespace sim::client::detail {

/// Errc::invalid_argument for an empty or over-long key name or an over-large value. The detail names the limit only.
inline Status check_state_write(const StateWrite& w) {
    if (w.key.empty() || w.key.size() > client_state_max_key_size) {
        return Error{Errc::invalid_argument,
                     "client state key name must be 1.." + std::to_string(client_state_max_key_size) + " bytes"};
    }
    if (w.value && w.value->size() > client_state_max_value_size) {
        return Error{Errc::invalid_argument,
                     "client state value larger than " + std::to_string(client_state_max_value_size) + " bytes"};
    }
    return ok();
}

/// The same check for a key looked up by get().
inline Status check_state_key(std::string_view key) {
    if (key.empty() || key.size() > client_state_max_key_size) {
        return Error{Errc::invalid_argument,
                     "client state key name must be 1.." + std::to_string(client_state_max_key_size) + " bytes"};
    }
    return ok();
}

}  // namespace sim::client::detail
