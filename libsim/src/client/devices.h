#pragma once
// Private: this installation's part in its account's devices (docs/protocol.md 6.9; docs/architecture.md
// "Multi-device accounts"): linking as the new device (the joiner) or as an approving one, the account's signed
// device list, removal and the owner's view. It turns `link` and `devices` frames from the server into frames to
// send and events. Not thread-safe: the client core calls it under its lock.
//
// The new device: after a login as a new installation the server makes the connection a pending device; start_join()
// makes its device key and asks the account's active devices to link it (again at every repeat_request() until one
// offers). The first offer gets the reveal, and the code to show is reported (LinkCodeEvent). The grant brings the
// account key and the list that admits this device: both keys go into the state at once (E2eClient::adopt_link);
// the server then activates the connection with a second ack_init 1, and the client core goes on as after any login.
//
// An approving device: every request is answered with an offer at once (no secret in it) and the account's list is
// asked for; a valid reveal is reported (LinkRequestEvent). approve() takes the code the user typed: on a match the
// grant goes to the new device and the list that admits it to the server, which activates the device and sends
// the list back to every device of the account (op 5), accepted here like any list: checked against the newest
// one this installation knew, then recorded.

#include "../e2e/link.h"
#include "../proto/devices.h"
#include "device_lists.h"
#include "e2e_client.h"

#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/frame.h>
#include <sim/rng.h>

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sim::client_detail {

class Devices {
public:
    /// `state`, `rng` and `e2e` must outlive this object.
    Devices(ClientState& state, Rng& rng, E2eClient& e2e) : m_state(state), m_rng(rng), m_e2e(e2e), m_lists(state) {}

    // ------------------------------------------------------------ the new device
    /// The server made this login pending device `device` of `user`: make the device key, queue the request.
    Status start_join(const std::string& user, DeviceId device);
    /// Between start_join() and the grant.
    [[nodiscard]] bool joining() const noexcept { return m_joiner.has_value() && !m_granted; }
    /// The grant arrived and its keys are in the state: the server's activation may come.
    [[nodiscard]] bool granted() const noexcept { return m_granted; }
    /// The request again, while no device has offered (an approving device may have attached since).
    void repeat_request();
    /// The server activated this device (after the grant): from now on it is an active device like any other.
    void finish_join() { m_joiner.reset(); m_granted = false; }

    // ------------------------------------------------------------ an active device (after E2eClient::set_user)
    /// The logged-in user (the frames' source and destination, our lists).
    void set_user(const std::string& user) { m_user = user; }
    /// Approve the device whose reveal came last with the code the user typed (case, spaces and '-' ignored).
    /// Errc::invalid_state when no device waits for approval; Errc::auth_failed for a wrong code (that link is over:
    /// the new device must start again); storage errors.
    Status approve(std::string_view code);
    /// Upload a list without `device` (its tokens, prekeys and mailbox go; it can no longer log in).
    /// Errc::invalid_argument when the account's list does not hold it or it is the only device; storage errors.
    Status remove(DeviceId device);
    /// Ask for the owner's view (answered with a DeviceInfoEvent).
    void request_info();
    /// Name a device (answered with a DeviceInfoEvent). Errc::invalid_argument for a name over 64 bytes or with
    /// control characters.
    Status rename(DeviceId device, std::string_view name);
    /// Ask the server for `user`'s list (ours when empty); the answer is checked like any list.
    void request_list(const std::string& user);
    /// The devices the server last said `user` has (from any list it sent, checked or not; {1} before one came):
    /// whom a server-assigned message goes to, since in that mode the server holds the key anyway.
    [[nodiscard]] std::vector<DeviceId> announced(const std::string& user) const;

    // ------------------------------------------------------------ frames from the server
    /// Errors are protocol violations by the server (the connection is then closed); a step that only ends a link
    /// (a bad reveal, an abort) is an event.
    Status on_link(const Frame& frame);
    Status on_devices(const Frame& frame);

    std::vector<Frame> take_frames() { return std::exchange(m_frames, {}); }
    std::vector<ClientEvent> take_events() { return std::exchange(m_events, {}); }

private:
    void send_link(LinkStep step, DeviceId to, Bytes data);
    void send_devices(const DevicesRequest& request, const std::string& whose);
    void abort_link(DeviceId to, Errc reason);
    /// The account's newest list known here, or the list of this device alone (an account whose first device has
    /// not uploaded one).
    Result<e2e::DeviceList> own_list() const;
    /// `next` as the account's next list: its version above every one known (next_version), this device its issuer,
    /// signed with the account key and this device's key.
    Result<e2e::SignedDeviceList> sign_next(e2e::DeviceList next) const;
    /// Upload a signed list (devices op 3).
    Status upload(const e2e::SignedDeviceList& signed_list);
    void accept_list(const std::string& whose, ByteView signed_list);

    ClientState& m_state;
    Rng& m_rng;
    E2eClient& m_e2e;
    DeviceLists m_lists;
    std::map<std::string, std::vector<DeviceId>, std::less<>> m_announced;
    std::string m_user;
    /// The highest version of our account's list the server showed, refused ones included: the next list goes above
    /// it, since the server keeps only versions that grow (a list it stored but we refused must not block ours).
    std::uint64_t m_server_version = 0;
    /// The version the next list of ours gets: above the newest we accepted and every one the server showed.
    [[nodiscard]] std::uint64_t next_version(const e2e::DeviceList& known) const {
        return std::max(known.version, m_server_version) + 1;
    }

    // The new device.
    std::optional<e2e::LinkJoiner> m_joiner;
    std::optional<e2e::IdentityKeyPair> m_join_key;
    DeviceId m_join_device = 0;
    DeviceId m_join_approver = 0;  // the device whose offer was taken; 0 before
    bool m_granted = false;

    // An approving device: the links in progress, by new device.
    std::map<DeviceId, e2e::LinkApprover> m_approvals;
    DeviceId m_last_revealed = 0;

    std::vector<Frame> m_frames;
    std::vector<ClientEvent> m_events;
};

}  // namespace sim::client_detail
