// The newest accepted device list per peer (device_lists.h).
#include "device_lists.h"

#include "state_records.h"

namespace sim::client_detail {
namespace {

std::string key_of(const std::string& peer) {
    return "devices/" + peer;
}

}  // namespace

Result<std::optional<e2e::DeviceList>> DeviceLists::known(const std::string& peer) const {
    SIM_TRY(const auto stored, m_state.get(key_of(peer)));
    if (!stored) {
        return std::optional<e2e::DeviceList>{};
    }
    auto decoded = e2e::decode_signed_device_list(*stored);
    if (!decoded || decoded->list.user != peer) {
        return corrupt("device list of " + peer);
    }
    return std::optional<e2e::DeviceList>(std::move(decoded->list));
}

StateWrite DeviceLists::forget(const std::string& peer) {
    return StateWrite{key_of(peer), std::nullopt};
}

Result<DeviceLists::Accepted> DeviceLists::accept(const std::string& peer, ByteView account_key, ByteView signed_list,
                                                  std::size_t max_devices) const {
    SIM_TRY(auto next, e2e::decode_signed_device_list(signed_list, max_devices));
    SIM_TRY(const auto known_list, known(peer));
    SIM_TRY(const auto verdict, e2e::accept_device_list(peer, account_key, known_list, next));
    Accepted out;
    out.verdict = verdict;
    if (verdict == e2e::ListVerdict::newer) {
        out.record = StateWrite{key_of(peer), SecureBytes(signed_list.begin(), signed_list.end())};
    }
    out.list = std::move(next.list);
    return out;
}

}  // namespace sim::client_detail
