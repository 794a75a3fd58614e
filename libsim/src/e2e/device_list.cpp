// A user's signed device list (device_list.h).
#include "device_list.h"

#include "../proto/wire.h"

#include <algorithm>

namespace sim::e2e {
namespace {

constexpr std::string_view signature_label = "libsim device list v1";

/// The structural rules every list keeps, from whatever side it comes.
Status check_shape(const DeviceList& list, std::size_t max_devices, Errc code) {
    if (list.user.empty() || list.user.size() > 255) {
        return Error{code, "a device list needs a user name of 1 to 255 bytes"};
    }
    if (list.devices.empty() || list.devices.size() > max_devices) {
        return Error{code, "a device list holds 1 to " + std::to_string(max_devices) + " devices"};
    }
    if (list.version == 0 || list.issuer == 0) {
        return Error{code, "a device list's version and issuer are not 0"};
    }
    DeviceId previous = 0;
    for (const auto& d : list.devices) {
        if (d.device <= previous) {
            return Error{code, "device ids in a list are non-zero and strictly increasing"};
        }
        if (d.key.size() != device_key_size) {
            return Error{code, "a device key is 32 bytes"};
        }
        previous = d.device;
    }
    return {};
}

Bytes encode_unchecked(const DeviceList& list) {
    Bytes out;
    out.reserve(1 + list.user.size() + 8 + 4 + 1 + list.devices.size() * (4 + device_key_size));
    detail::WireWriter w(out);
    w.u8(static_cast<std::uint8_t>(list.user.size()));
    w.text(list.user);
    w.u64(list.version);
    w.u32(list.issuer);
    w.u8(static_cast<std::uint8_t>(list.devices.size()));
    for (const auto& d : list.devices) {
        w.u32(d.device);
        w.bytes(d.key);
    }
    return out;
}

Bytes signed_bytes(ByteView list_bytes) {
    Bytes out;
    out.reserve(signature_label.size() + 1 + list_bytes.size());
    detail::WireWriter w(out);
    w.text(signature_label);
    w.u8(0);
    w.bytes(list_bytes);
    return out;
}

}  // namespace

const ListedDevice* DeviceList::find(DeviceId device) const {
    const auto it = std::lower_bound(devices.begin(), devices.end(), device,
                                     [](const ListedDevice& d, DeviceId id) { return d.device < id; });
    return it != devices.end() && it->device == device ? &*it : nullptr;
}

Result<Bytes> encode_device_list(const DeviceList& list) {
    SIM_TRY_STATUS(check_shape(list, max_listed_devices, Errc::invalid_argument));
    return encode_unchecked(list);
}

Result<SignedDeviceList> sign_device_list(DeviceList list, const IdentityKeyPair& account,
                                          const IdentityKeyPair& issuer) {
    SIM_TRY(const Bytes bytes, encode_device_list(list));
    if (const auto* self = list.find(list.issuer); self != nullptr && self->key != issuer.public_key) {
        return Error{Errc::invalid_argument, "the list names its issuer with another device key"};
    }
    const Bytes message = signed_bytes(bytes);
    SIM_TRY(Bytes by_account, sign(account, message));
    SIM_TRY(Bytes by_issuer, sign(issuer, message));
    return SignedDeviceList{std::move(list), std::move(by_account), std::move(by_issuer)};
}

Result<Bytes> encode_signed_device_list(const SignedDeviceList& signed_list) {
    if (signed_list.account_signature.size() != device_list_signature_size ||
        signed_list.issuer_signature.size() != device_list_signature_size) {
        return Error{Errc::invalid_argument, "a device list signature is 64 bytes"};
    }
    SIM_TRY(Bytes out, encode_device_list(signed_list.list));
    out.insert(out.end(), signed_list.account_signature.begin(), signed_list.account_signature.end());
    out.insert(out.end(), signed_list.issuer_signature.begin(), signed_list.issuer_signature.end());
    return out;
}

Result<SignedDeviceList> decode_signed_device_list(ByteView data, std::size_t max_devices) {
    detail::WireReader r(data);
    const Error truncated{Errc::truncated, "device list cut short"};
    SignedDeviceList out;
    std::uint8_t user_len = 0;
    ByteView user;
    std::uint8_t count = 0;
    if (!r.u8(user_len) || !r.take(user_len, user) || !r.u64(out.list.version) || !r.u32(out.list.issuer) ||
        !r.u8(count)) {
        return truncated;
    }
    out.list.user.assign(user.begin(), user.end());
    out.list.devices.reserve(count);
    for (std::uint8_t i = 0; i < count; ++i) {
        ListedDevice d;
        ByteView key;
        if (!r.u32(d.device) || !r.take(device_key_size, key)) {
            return truncated;
        }
        d.key.assign(key.begin(), key.end());
        out.list.devices.push_back(std::move(d));
    }
    ByteView by_account;
    ByteView by_issuer;
    if (!r.take(device_list_signature_size, by_account) || !r.take(device_list_signature_size, by_issuer)) {
        return truncated;
    }
    if (!r.at_end()) {
        return Error{Errc::trailing_bytes, "bytes after a device list's signatures"};
    }
    SIM_TRY_STATUS(check_shape(out.list, std::min(max_devices, max_listed_devices), Errc::bad_field));
    out.account_signature.assign(by_account.begin(), by_account.end());
    out.issuer_signature.assign(by_issuer.begin(), by_issuer.end());
    return out;
}

Status verify_issuer_signature(const SignedDeviceList& signed_list, ByteView issuer_key) {
    SIM_TRY_STATUS(check_shape(signed_list.list, max_listed_devices, Errc::bad_field));
    if (!verify(issuer_key, signed_bytes(encode_unchecked(signed_list.list)), signed_list.issuer_signature)) {
        return Error{Errc::auth_failed, "the device list is not signed by its issuing device"};
    }
    return {};
}

Result<ListVerdict> accept_device_list(std::string_view user, ByteView account_key,
                                       const std::optional<DeviceList>& known, const SignedDeviceList& next) {
    const auto& list = next.list;
    if (list.user != user) {
        return Error{Errc::bad_field, "a device list of another user"};
    }
    SIM_TRY_STATUS(check_shape(list, max_listed_devices, Errc::bad_field));
    if (known && list.version < known->version) {
        return Error{Errc::replayed, "an older device list than the one known (version " +
                                         std::to_string(list.version) + " < " + std::to_string(known->version) + ")"};
    }
    // The issuer's key: from the list it replaces, so a device removed by that list cannot sign the next one.
    const ListedDevice* issuer = known ? known->find(list.issuer) : list.find(list.issuer);
    if (issuer == nullptr) {
        return Error{Errc::bad_field, "the device list is issued by device " + std::to_string(list.issuer) +
                                          ", which is not in the list it replaces"};
    }
    const Bytes message = signed_bytes(encode_unchecked(list));
    if (!verify(account_key, message, next.account_signature)) {
        return Error{Errc::auth_failed, "the device list is not signed by the user's account key"};
    }
    SIM_TRY_STATUS(verify_issuer_signature(next, issuer->key));
    if (known && list.version == known->version) {
        if (list == *known) {
            return ListVerdict::same;
        }
        return Error{Errc::auth_failed, "two different device lists with version " + std::to_string(list.version)};
    }
    if (known) {
        for (const auto& d : list.devices) {
            if (const auto* was = known->find(d.device); was != nullptr && was->key != d.key) {
                return Error{Errc::bad_field, "device " + std::to_string(d.device) + " is listed with another key"};
            }
        }
    }
    return ListVerdict::newer;
}

}  // namespace sim::e2e
