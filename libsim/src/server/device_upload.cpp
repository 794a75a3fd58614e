// The server's check of an uploaded device list (device_upload.h).
#include "device_upload.h"

#include <algorithm>
#include <string>

namespace sim::server_detail {

Result<ListChange> check_list_upload(std::string_view user, DeviceId uploader,
                                     const std::vector<store::DeviceRecord>& devices, std::uint64_t stored_version,
                                     ByteView signed_list, std::size_t max_devices) {
    SIM_TRY(auto parsed, e2e::decode_signed_device_list(signed_list, max_devices));
    const auto& list = parsed.list;
    if (list.user != user) {
        return Error{Errc::bad_field, "a device list of another user"};
    }
    if (list.issuer != uploader) {
        return Error{Errc::bad_field, "a device uploads only a list it issued"};
    }
    if (list.version <= stored_version) {
        return Error{Errc::stale_epoch, "the device list's version is not above the stored one (" +
                                            std::to_string(stored_version) + ")"};
    }
    const auto find = [&](DeviceId id) -> const store::DeviceRecord* {
        const auto it = std::find_if(devices.begin(), devices.end(), [&](const store::DeviceRecord& d) { return d.device == id; });
        return it == devices.end() ? nullptr : &*it;
    };
    const store::DeviceRecord* self = find(uploader);
    if (self == nullptr || self->state != store::DeviceState::active) {
        return Error{Errc::bad_field, "the uploading device is not active"};
    }
    ListChange change;
    for (const auto& listed : list.devices) {
        const store::DeviceRecord* d = find(listed.device);
        if (d == nullptr || d->state == store::DeviceState::removed) {
            return Error{Errc::bad_field, "the list names device " + std::to_string(listed.device) +
                                              ", which the account does not have"};
        }
        if (!d->device_key.empty() && d->device_key != listed.key) {
            return Error{Errc::bad_field, "the list names device " + std::to_string(listed.device) +
                                              " with another key than its own"};
        }
        if (d->device_key.empty() || d->state == store::DeviceState::pending) {
            change.activate.emplace_back(listed.device, listed.key);
        }
    }
    const auto* listed_self = list.find(uploader);
    const ByteView issuer_key = !self->device_key.empty() ? ByteView{self->device_key}
                                : listed_self != nullptr ? ByteView{listed_self->key}
                                                         : ByteView{};
    if (issuer_key.empty()) {
        return Error{Errc::bad_field, "a device without a key must list itself"};
    }
    SIM_TRY_STATUS(e2e::verify_issuer_signature(parsed, issuer_key));
    for (const auto& d : devices) {
        if (d.state == store::DeviceState::active && list.find(d.device) == nullptr) {
            change.remove.push_back(d.device);
        }
    }
    change.list = std::move(parsed);
    return change;
}

}  // namespace sim::server_detail
