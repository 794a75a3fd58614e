// The `link` and `devices` frame payloads (proto/devices.h, docs/protocol.md 6.9): a whole link carried through
// the codec, round trips, every malformed form, and every prefix of a valid payload refused without a crash.
#include "proto/devices.h"

#include <doctest/doctest.h>

#include <sim/rng.h>

#include <functional>

using namespace sim;

namespace {

/// Every strict prefix of `wire` is refused by `decode` (truncated, or bad_field where the prefix is itself a
/// complete but invalid form), and never accepted.
template <typename Decode>
void every_prefix_refused(const Bytes& wire, Decode decode) {
    for (std::size_t n = 0; n < wire.size(); ++n) {
        const auto r = decode(ByteView{wire}.first(n));
        INFO("prefix of " << n << " bytes");
        CHECK_FALSE(r.has_value());
    }
}

Bytes signed_list_of(std::size_t devices) {
    auto rng = make_system_rng();
    const auto account = e2e::generate_identity(*rng);
    e2e::DeviceList l{"alice", 7, 1, {}};
    for (std::size_t i = 0; i < devices; ++i) {
        l.devices.push_back({static_cast<DeviceId>(i + 1), i == 0 ? account.public_key : Bytes(32, 0x40)});
    }
    return e2e::encode_signed_device_list(e2e::sign_device_list(l, account, account).value()).value();
}

}  // namespace

TEST_CASE("a whole link carried through link frames: both sides get the code, the grant admits the new device") {
    auto rng = make_system_rng();
    const auto account = e2e::generate_identity(*rng);
    const auto phone = e2e::generate_identity(*rng);
    // Through the codec in both directions, as client and server would send it.
    const auto carry = [](LinkStep step, DeviceId device, const Bytes& data) {
        auto m = decode_link(encode_link({step, device, data, {}}));
        REQUIRE(m);
        CHECK(m->step == step);
        CHECK(m->device == device);
        return m->data;
    };
    auto joiner = e2e::LinkJoiner::start(*rng, 2, phone.public_key).value();
    auto approver = e2e::LinkApprover::start(*rng, carry(LinkStep::request, 0, joiner.request())).value();
    const auto reveal = joiner.reveal(carry(LinkStep::offer, 1, approver.offer())).value();
    REQUIRE(approver.reveal(carry(LinkStep::reveal, 1, reveal)));
    e2e::DeviceList l{"alice", 2, 1, {{1, account.public_key}, {2, phone.public_key}}};
    const e2e::LinkGrant grant{account.private_key, e2e::sign_device_list(l, account, account).value()};
    const auto sealed = approver.approve(joiner.code(), grant).value();
    CHECK(sealed.size() <= max_link_grant_size);
    const auto got = joiner.accept("alice", carry(LinkStep::grant, 2, sealed)).value();
    CHECK(got.list.list == l);
}

TEST_CASE("link frames: sizes per step, directions and aborts") {
    const LinkMessage abort{LinkStep::abort, 3, {}, Errc::auth_failed};
    const auto wire = encode_link(abort);
    CHECK(wire == Bytes{5, 0, 0, 0, 3, 0, 201});
    CHECK(decode_link(wire).value() == abort);
    every_prefix_refused(wire, decode_link);

    const auto code = [](const LinkMessage& m) { return decode_link(encode_link(m)).code(); };
    CHECK(code({LinkStep::request, 0, Bytes(68, 1), {}}) == Errc::ok);
    CHECK(code({LinkStep::request, 0, Bytes(67, 1), {}}) == Errc::truncated);
    CHECK(code({LinkStep::request, 0, Bytes(69, 1), {}}) == Errc::trailing_bytes);
    CHECK(code({LinkStep::request, 2, Bytes(68, 1), {}}) == Errc::ok);  // from the server: the device it came from
    CHECK(code({LinkStep::offer, 1, Bytes(31, 1), {}}) == Errc::truncated);
    CHECK(code({LinkStep::reveal, 1, Bytes(33, 1), {}}) == Errc::trailing_bytes);
    CHECK(code({LinkStep::grant, 1, Bytes(16, 1), {}}) == Errc::truncated);    // a tag and nothing sealed
    CHECK(code({LinkStep::grant, 1, Bytes(max_link_grant_size, 1), {}}) == Errc::ok);
    CHECK(code({LinkStep::grant, 1, Bytes(max_link_grant_size + 1, 1), {}}) == Errc::trailing_bytes);
    CHECK(code({LinkStep::abort, 1, {}, Errc::ok}) == Errc::bad_field);
    CHECK(decode_link(Bytes{6, 0, 0, 0, 1}).code() == Errc::bad_field);  // unknown step
    CHECK(decode_link(Bytes{0, 0, 0, 0, 1}).code() == Errc::bad_field);
    CHECK(decode_link(Bytes{5, 0, 0, 0, 1, 0, 201, 0}).code() == Errc::trailing_bytes);
}

TEST_CASE("devices requests: round trips and refusals") {
    const auto list = signed_list_of(3);
    for (const DevicesRequest& r : {DevicesRequest{DevicesOp::list, {}, 0, {}}, DevicesRequest{DevicesOp::info, {}, 0, {}},
                                    DevicesRequest{DevicesOp::put, list, 0, {}},
                                    DevicesRequest{DevicesOp::rename, {}, 2, "phone \xF0\x9F\x93\xB1"}}) {
        const auto wire = encode_devices_request(r).value();
        CHECK(decode_devices_request(wire).value() == r);
        if (r.op == DevicesOp::rename) {
            every_prefix_refused(wire, decode_devices_request);
        }
    }
    CHECK(encode_devices_request({DevicesOp::rename, {}, 2, "laptop"}).value() ==
          Bytes{4, 0, 0, 0, 2, 6, 'l', 'a', 'p', 't', 'o', 'p'});

    const auto refused = [](const DevicesRequest& r) {
        CHECK(encode_devices_request(r).code() == Errc::invalid_argument);  // nothing malformed is sent
    };
    refused({DevicesOp::put, {}, 0, {}});
    refused({DevicesOp::put, Bytes(e2e::max_signed_device_list_size + 1, 1), 0, {}});
    refused({DevicesOp::rename, {}, 0, "x"});
    refused({DevicesOp::rename, {}, 1, std::string(max_device_name_size + 1, 'x')});
    refused({DevicesOp::rename, {}, 1, "tab\there"});
    refused({DevicesOp::changed, {}, 0, {}});

    CHECK(decode_devices_request({}).code() == Errc::truncated);
    CHECK(decode_devices_request(Bytes{5}).code() == Errc::bad_field);  // changed comes from the server only
    CHECK(decode_devices_request(Bytes{9}).code() == Errc::bad_field);
    CHECK(decode_devices_request(Bytes{1, 0}).code() == Errc::trailing_bytes);
    CHECK(decode_devices_request(Bytes{3}).code() == Errc::bad_field);  // put without a list
    CHECK(decode_devices_request(Bytes{4, 0, 0, 0, 1, 2, 'a', 0x1B}).code() == Errc::bad_field);  // ESC in a name
}

TEST_CASE("devices replies: the list, the owner's view, a change; refusals") {
    const auto list = signed_list_of(5);
    const DevicesReply got{DevicesOp::list, "alice", list, {}};
    const DevicesReply none{DevicesOp::list, "bob", {}, {}};
    const DevicesReply changed{DevicesOp::changed, "alice", list, {}};
    const DevicesReply info{DevicesOp::info,
                            {},
                            {},
                            {DeviceInfo{1, DeviceStatus::active, "laptop", WallTime{std::chrono::milliseconds{5}},
                                        WallTime{std::chrono::milliseconds{9}}},
                             DeviceInfo{2, DeviceStatus::removed, "", {}, {}},
                             DeviceInfo{4, DeviceStatus::pending, "new phone", {}, {}}}};
    for (const auto& r : {got, none, changed, info}) {
        const auto wire = encode_devices_reply(r).value();
        CHECK(decode_devices_reply(wire).value() == r);
        every_prefix_refused(wire, decode_devices_reply);
        auto longer = wire;
        longer.push_back(0);
        CHECK(decode_devices_reply(longer).code() == Errc::trailing_bytes);
    }
    // The parsed list inside is the signed list of e2e/device_list.h.
    CHECK(e2e::decode_signed_device_list(decode_devices_reply(encode_devices_reply(got).value())->signed_list)
              ->list.devices.size() == 5);

    const auto refused = [](DevicesReply r) { CHECK(encode_devices_reply(r).code() == Errc::invalid_argument); };
    refused({DevicesOp::changed, "alice", {}, {}});  // a change always carries the list
    refused({DevicesOp::list, "", list, {}});
    refused({DevicesOp::put, "alice", list, {}});
    auto out_of_order = info;
    std::swap(out_of_order.devices[0], out_of_order.devices[1]);
    refused(out_of_order);
    auto zero = info;
    zero.devices[0].device = 0;
    refused(zero);
    auto bad_status = info;
    bad_status.devices[0].status = static_cast<DeviceStatus>(4);
    refused(bad_status);
    DevicesReply too_many{DevicesOp::info, {}, {}, {}};
    for (DeviceId d = 1; d <= e2e::max_listed_devices + 1; ++d) {
        too_many.devices.push_back({d, DeviceStatus::active, {}, {}, {}});
    }
    refused(too_many);

    // A list length beyond the bound is refused before anything is read.
    CHECK(decode_devices_reply(Bytes{1, 1, 'a', 0xFF, 0xFF, 0xFF, 0xFF}).code() == Errc::bad_field);
    // A time above 2^63 - 1.
    auto wire = encode_devices_reply(info).value();
    wire[2 + 4 + 1 + 1 + 6] = 0x80;  // the first device's linked time, top byte
    CHECK(decode_devices_reply(wire).code() == Errc::bad_field);
}
