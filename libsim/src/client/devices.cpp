// This installation's part in its account's devices (devices.h).
#include "devices.h"

#include <sim/channel.h>

#include <algorithm>

namespace sim::client_detail {

namespace {
/// Links an approving device follows at once (a server's pending devices per account are fewer: 64 at most).
constexpr std::size_t max_links = 64;
}  // namespace

// ---------------------------------------------------------------- the new device

Status Devices::start_join(const std::string& user, DeviceId device) {
    if (m_joiner || device == 0) {
        return Error{Errc::invalid_state, "a link is already under way"};
    }
    if (m_e2e.has_identity()) {
        // Checked before the login too; a state written meanwhile must not be replaced by the grant's keys.
        return Error{Errc::invalid_state, "this client state already holds an identity: link with a new state"};
    }
    m_user = user;
    m_join_key = e2e::generate_identity(m_rng);
    SIM_TRY(auto joiner, e2e::LinkJoiner::start(m_rng, device, m_join_key->public_key));
    m_joiner.emplace(std::move(joiner));
    m_join_device = device;
    send_link(LinkStep::request, 0, m_joiner->request());
    return ok();
}

void Devices::repeat_request() {
    if (joining() && m_join_approver == 0) {
        send_link(LinkStep::request, 0, m_joiner->request());
    }
}

// ---------------------------------------------------------------- an active device

Result<e2e::DeviceList> Devices::own_list() const {
    SIM_TRY(auto known, m_lists.known(m_user));
    if (known) {
        return std::move(*known);
    }
    if (m_e2e.device() != first_device) {
        // A linked device recorded the list of its grant: without it, the state was damaged.
        return Error{Errc::corrupt_database, "the client state has no device list of its account"};
    }
    // The first device of an account that never uploaded a list: version 0, replaced by the first upload (1).
    return e2e::DeviceList{m_user, 0, first_device, {{first_device, m_e2e.device_key().public_key}}};
}

Result<e2e::SignedDeviceList> Devices::sign_next(e2e::DeviceList next) const {
    next.version = next_version(next);
    next.issuer = m_e2e.device();
    return e2e::sign_device_list(std::move(next), m_e2e.account_key(), m_e2e.device_key());
}

Status Devices::upload(const e2e::SignedDeviceList& signed_list) {
    SIM_TRY(auto bytes, e2e::encode_signed_device_list(signed_list));
    send_devices({DevicesOp::put, std::move(bytes), 0, {}}, m_user);
    return ok();
}

Status Devices::approve(std::string_view code) {
    const auto it = m_approvals.find(m_last_revealed);
    if (m_last_revealed == 0 || it == m_approvals.end()) {
        return Error{Errc::invalid_state, "no new device waits for approval"};
    }
    const DeviceId device = m_last_revealed;
    SIM_TRY(auto list, own_list());
    if (list.find(device) != nullptr) {
        return Error{Errc::invalid_state, "the account's list already holds that device"};
    }
    list.devices.push_back({device, it->second.device_key()});
    std::sort(list.devices.begin(), list.devices.end(),
              [](const e2e::ListedDevice& a, const e2e::ListedDevice& b) { return a.device < b.device; });
    SIM_TRY(auto signed_list, sign_next(std::move(list)));
    const e2e::LinkGrant grant{m_e2e.account_key().private_key, std::move(signed_list)};
    auto sealed = it->second.approve(code, grant);
    m_approvals.erase(it);
    m_last_revealed = 0;
    if (!sealed) {
        abort_link(device, sealed.code());  // one try: the new device starts again
        return Error{sealed.code(), "the code does not match the new device's: the link is over"};
    }
    send_link(LinkStep::grant, device, std::move(*sealed));
    return upload(grant.list);  // the list the grant carries, signed once
}

Status Devices::remove(DeviceId device) {
    SIM_TRY(auto list, own_list());
    const auto it = std::find_if(list.devices.begin(), list.devices.end(),
                                 [device](const e2e::ListedDevice& d) { return d.device == device; });
    if (it == list.devices.end()) {
        return Error{Errc::invalid_argument, "the account has no device " + std::to_string(device)};
    }
    if (list.devices.size() == 1) {
        return Error{Errc::invalid_argument, "the account's only device cannot be removed"};
    }
    list.devices.erase(it);
    SIM_TRY(const auto signed_list, sign_next(std::move(list)));
    return upload(signed_list);
}

void Devices::request_info() {
    send_devices({DevicesOp::info, {}, 0, {}}, m_user);
}

Status Devices::rename(DeviceId device, std::string_view name) {
    auto payload = encode_devices_request({DevicesOp::rename, {}, device, std::string(name)});
    if (!payload) {
        return Error{Errc::invalid_argument, "a device name is at most 64 bytes without control characters"};
    }
    m_frames.push_back(Frame{FrameType::devices, 0, m_user, m_user, std::move(*payload)});
    return ok();
}

void Devices::request_list(const std::string& user) {
    send_devices({DevicesOp::list, {}, 0, {}}, user.empty() ? m_user : user);
}

// ---------------------------------------------------------------- frames from the server

Status Devices::on_link(const Frame& frame) {
    if (frame.source != server_name) {
        return Error{Errc::bad_field, "link step not from the server"};
    }
    SIM_TRY(auto step, decode_link(frame.payload));
    const DeviceId from = step.device;
    if (from == 0) {
        return Error{Errc::bad_field, "link step from device 0"};
    }
    if (m_joiner) {  // the new device
        switch (step.step) {
            case LinkStep::offer: {
                if (m_join_approver != 0 || m_granted) {
                    return ok();  // a second approving device: the first one's offer was taken
                }
                auto reveal = m_joiner->reveal(step.data);
                if (!reveal) {
                    return reveal.error();
                }
                m_join_approver = from;
                send_link(LinkStep::reveal, from, std::move(*reveal));
                m_events.push_back(
                    LinkCodeEvent{m_user, m_join_device, m_joiner->code(), fingerprint(m_join_key->public_key)});
                return ok();
            }
            case LinkStep::grant: {
                if (from != m_join_approver || m_granted) {
                    return Error{Errc::bad_field, "a grant from a device that did not offer"};
                }
                SIM_TRY(const auto grant, m_joiner->accept(m_user, step.data));
                SIM_TRY(const auto list_bytes, e2e::encode_signed_device_list(grant.list));
                SIM_TRY(const auto account, e2e::identity_from_private(grant.account_seed));
                // The grant's list is the first this device knows of its account: checked as any first list.
                SIM_TRY(const auto first, m_lists.accept(m_user, account.public_key, list_bytes));
                std::vector<StateWrite> also;
                if (first.record) {
                    also.push_back(*first.record);
                }
                SIM_TRY_STATUS(m_e2e.adopt_link(m_user, m_join_device, *m_join_key, grant.account_seed, also));
                m_granted = true;
                m_join_key.reset();
                return ok();
            }
            case LinkStep::abort:
                if (from == m_join_approver || m_join_approver == 0) {
                    return Error{step.reason == Errc::ok ? Errc::closed : step.reason,
                                 "the approving device ended the link"};
                }
                return ok();
            default:
                return Error{Errc::bad_field, "a link step the new device does not take"};
        }
    }
    if (m_user.empty()) {
        return Error{Errc::bad_field, "link step before login"};
    }
    switch (step.step) {  // an approving device
        case LinkStep::request: {
            if (m_approvals.contains(from)) {
                return ok();  // the request again: our offer is on its way
            }
            auto approver = e2e::LinkApprover::start(m_rng, step.data);
            if (!approver || approver->device() != from) {
                // Anyone with the password can send one: reported and dropped, this connection lives on.
                m_events.push_back(ErrorEvent{
                    Error{Errc::bad_field, "a new device sent a link request that does not name it: ignored"}, {},
                    std::nullopt});
                return ok();
            }
            if (m_approvals.size() >= max_links) {
                // Pending devices come and go (each with a new id): the oldest link in progress gives way.
                if (m_approvals.begin()->first == m_last_revealed) {
                    m_last_revealed = 0;
                }
                m_approvals.erase(m_approvals.begin());
            }
            send_link(LinkStep::offer, from, approver->offer());
            m_approvals.emplace(from, std::move(*approver));
            request_list(m_user);  // the newest list, for the one that will admit it
            return ok();
        }
        case LinkStep::reveal: {
            const auto it = m_approvals.find(from);
            if (it == m_approvals.end()) {
                return ok();  // a link we gave up on
            }
            if (const auto st = it->second.reveal(step.data); !st) {
                m_approvals.erase(it);
                abort_link(from, st.code());
                m_events.push_back(ErrorEvent{
                    Error{st.code(), "a new device's link did not match its commitment: refused"}, {}, std::nullopt});
                return ok();
            }
            m_last_revealed = from;
            m_events.push_back(LinkRequestEvent{m_user, from, fingerprint(it->second.device_key())});
            return ok();
        }
        case LinkStep::abort:
            if (m_approvals.erase(from) != 0) {
                if (m_last_revealed == from) {
                    m_last_revealed = 0;
                }
                m_events.push_back(
                    ErrorEvent{Error{step.reason, "the new device ended the link"}, {}, std::nullopt});
            }
            return ok();
        default:
            return Error{Errc::bad_field, "a link step an active device does not take"};
    }
}

Status Devices::on_devices(const Frame& frame) {
    if (frame.source != server_name) {
        return Error{Errc::bad_field, "devices reply not from the server"};
    }
    SIM_TRY(auto reply, decode_devices_reply(frame.payload));
    switch (reply.op) {
        case DevicesOp::info:
            m_events.push_back(DeviceInfoEvent{m_user, std::move(reply.devices)});
            return ok();
        case DevicesOp::list:
        case DevicesOp::changed:
            if (auto shown = e2e::decode_signed_device_list(reply.signed_list); shown && shown->list.user == reply.user) {
                auto& ids = m_announced[reply.user];
                ids.clear();
                for (const auto& d : shown->list.devices) {
                    ids.push_back(d.device);
                }
            }
            if (!reply.signed_list.empty()) {
                accept_list(reply.user, reply.signed_list);
            }
            return ok();
        default:
            return Error{Errc::bad_field, "a devices op the server does not send"};
    }
}

std::vector<DeviceId> Devices::announced(const std::string& user) const {
    const auto it = m_announced.find(user);
    return it == m_announced.end() ? std::vector<DeviceId>{first_device} : it->second;
}

void Devices::accept_list(const std::string& whose, ByteView signed_list) {
    Bytes account_key;
    if (whose == m_user) {
        if (m_joiner && !m_e2e.ready()) {
            return;  // a new device before its activation: the grant's list comes first
        }
        account_key = m_e2e.account_key().public_key;
    } else {
        auto pinned = m_e2e.peer_identity(whose);
        if (!pinned) {
            return;  // nothing pinned to check it against: the list is asked again when a conversation starts
        }
        account_key = std::move(pinned->identity_key);
    }
    if (whose == m_user) {
        if (auto shown = e2e::decode_signed_device_list(signed_list)) {
            m_server_version = std::max(m_server_version, shown->list.version);
        }
    }
    auto accepted = m_lists.accept(whose, account_key, signed_list);
    if (!accepted) {
        m_events.push_back(ErrorEvent{
            Error{accepted.code(), "the device list of " + whose + " was refused: " + accepted.error().message()},
            whose == m_user ? std::string{} : whose, std::nullopt});
        return;
    }
    if (accepted->verdict != e2e::ListVerdict::newer) {
        return;
    }
    if (const auto st = m_state.write({*accepted->record}); !st) {
        m_events.push_back(ErrorEvent{st.error(), {}, std::nullopt});
        return;
    }
    m_e2e.list_changed(whose);  // sessions follow the list: new devices get messages, removed ones no more
    DevicesChangedEvent e{whose, accepted->list.version, {}};
    for (const auto& d : accepted->list.devices) {
        e.devices.push_back(d.device);
    }
    m_events.push_back(std::move(e));
}

// ---------------------------------------------------------------- helpers

void Devices::send_link(LinkStep step, DeviceId to, Bytes data) {
    m_frames.push_back(Frame{FrameType::link, 0, m_user, m_user, encode_link({step, to, std::move(data), {}})});
}

void Devices::abort_link(DeviceId to, Errc reason) {
    m_frames.push_back(Frame{FrameType::link, 0, m_user, m_user, encode_link({LinkStep::abort, to, {}, reason})});
}

void Devices::send_devices(const DevicesRequest& request, const std::string& whose) {
    // Only requests built here: they always encode.
    m_frames.push_back(Frame{FrameType::devices, 0, m_user, whose, encode_devices_request(request).value()});
}

}  // namespace sim::client_detail
