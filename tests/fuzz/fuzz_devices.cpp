// libFuzzer target for the decoders of multi-device input (docs/protocol.md 6.9): the `link` and `devices` frame
// payloads (src/proto/devices.h), signed device lists (src/e2e/device_list.h), the server's check of an uploaded
// list (src/server/device_upload.h) and the credentials / session token payloads that carry a device id.
//
// The first input byte picks the decoder, the rest is its input. Properties (a violation aborts):
// - nothing crashes, leaks or reads out of bounds on any input;
// - a payload a decoder accepts re-encodes to exactly the same bytes (one encoding per value);
// - the server's upload check accepts no list it was not given a genuine signature for: on this fixed account,
//   whose device 1 has a stored key, only lists signed by that key pass.
#include <sim/bytes.h>
#include <sim/e2e.h>
#include <sim/messages.h>
#include <sim/rng.h>

#include "../../libsim/src/e2e/device_list.h"
#include "../../libsim/src/proto/devices.h"
#include "../../libsim/src/server/device_upload.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace {

void require(bool condition, const char* what) {
    if (!condition) {
        std::fprintf(stderr, "fuzz_devices: property violated: %s\n", what);
        std::abort();
    }
}

sim::Bytes bytes_of(sim::ByteView v) { return {v.begin(), v.end()}; }

/// A fixed account: device 1 active with a key derived from a constant seed, device 2 pending.
struct Account {
    sim::e2e::IdentityKeyPair key;
    std::vector<sim::store::DeviceRecord> devices;
    Account() {
        auto rng = sim::make_deterministic_rng(sim::as_bytes("fuzz_devices account"));
        key = sim::e2e::generate_identity(*rng);
        devices.resize(2);
        devices[0].device = 1;
        devices[0].state = sim::store::DeviceState::active;
        devices[0].device_key = key.public_key;
        devices[1].device = 2;
        devices[1].state = sim::store::DeviceState::pending;
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    const sim::ByteView in(data + 1, size - 1);
    switch (data[0] % 6) {
        case 0:
            if (const auto m = sim::decode_link(in)) {
                require(sim::encode_link(*m) == bytes_of(in), "link: re-encoding differs");
            }
            break;
        case 1:
            if (const auto r = sim::decode_devices_request(in)) {
                const auto again = sim::encode_devices_request(*r);
                require(again && *again == bytes_of(in), "devices request: re-encoding differs");
            }
            break;
        case 2:
            if (const auto r = sim::decode_devices_reply(in)) {
                const auto again = sim::encode_devices_reply(*r);
                require(again && *again == bytes_of(in), "devices reply: re-encoding differs");
            }
            break;
        case 3:
            if (const auto l = sim::e2e::decode_signed_device_list(in)) {
                const auto again = sim::e2e::encode_signed_device_list(*l);
                require(again && *again == bytes_of(in), "signed list: re-encoding differs");
            }
            break;
        case 4: {
            static const Account account;
            if (const auto change = sim::server_detail::check_list_upload("alice", 1, account.devices, 0, in, 5)) {
                require(sim::e2e::verify_issuer_signature(change->list, account.key.public_key).has_value(),
                        "upload: a list passed without the uploader's signature");
            }
            break;
        }
        case 5:
            if (const auto c = sim::decode_credentials(in)) {
                require(sim::encode_credentials(*c) == bytes_of(in), "credentials: re-encoding differs");
            }
            if (const auto t = sim::decode_session_token(in)) {
                require(sim::encode_session_token(*t) == bytes_of(in), "session token: re-encoding differs");
            }
            break;
        default:
            break;
    }
    return 0;
}
