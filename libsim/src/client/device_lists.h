#pragma once
// Private: the newest device list the client accepted for each peer (docs/architecture.md "Multi-device accounts"),
// kept in the client state under "devices/<peer>" as the signed list's bytes. A verifier's protection against an
// old list replayed by the server is only as good as its memory of the newest one: so the list is written in the
// same batch as whatever the client does because of it (StateWrite returned, not written here), and a stored list
// that no longer decodes is an error, never "nothing known".

#include "../e2e/device_list.h"

#include <sim/client_state.h>
#include <sim/error.h>

#include <optional>
#include <string>

namespace sim::client_detail {

class DeviceLists {
public:
    explicit DeviceLists(const ClientState& state) : m_state(state) {}

    /// The newest list accepted for `peer`, or nullopt before the first. Errc::corrupt_database for a stored value
    /// that does not decode or is another user's; Errc::storage_error.
    Result<std::optional<e2e::DeviceList>> known(const std::string& peer) const;

    /// What accepting a list from the network gives: the verdict, and the write that records a newer list.
    struct Accepted {
        e2e::ListVerdict verdict = e2e::ListVerdict::same;
        std::optional<StateWrite> record;  ///< set for `newer`: put it in the batch that acts on the list
        e2e::DeviceList list;              ///< the list now in force
    };
    /// Decode `signed_list` (at most `max_devices`), check it for `peer`, whose account key the client pinned
    /// (`account_key`), against the newest known (e2e::accept_device_list's errors; Errc::truncated and the like
    /// for bytes that do not decode). Nothing is written here.
    Result<Accepted> accept(const std::string& peer, ByteView account_key, ByteView signed_list,
                            std::size_t max_devices = e2e::max_listed_devices) const;

    /// The write that forgets `peer`'s list (a new identity of the peer, accepted by the user, starts afresh).
    [[nodiscard]] static StateWrite forget(const std::string& peer);

private:
    const ClientState& m_state;
};

}  // namespace sim::client_detail
