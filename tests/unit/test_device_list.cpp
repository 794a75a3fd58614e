// The signed device list (docs/architecture.md "Multi-device accounts", docs/security.md): its codec, and what a
// verifier accepts, tried the way a misbehaving server or a removed device would.
#include "client/device_lists.h"
#include "e2e/device_list.h"

#include <doctest/doctest.h>

#include <sim/client_state.h>
#include <sim/rng.h>

#include <filesystem>

#include <unistd.h>

using namespace sim;
using namespace sim::e2e;

namespace {

struct Account {
    std::unique_ptr<Rng> rng = make_system_rng();
    IdentityKeyPair account = generate_identity(*rng);
    std::vector<IdentityKeyPair> devices;  // devices[i] is device i + 1

    Account() {
        for (int i = 0; i < 3; ++i) {
            devices.push_back(generate_identity(*rng));
        }
    }
    /// A list of `ids` (1-based), issued by `issuer`.
    DeviceList list(std::uint64_t version, DeviceId issuer, std::vector<DeviceId> ids) const {
        DeviceList l{"alice", version, issuer, {}};
        for (const auto id : ids) {
            l.devices.push_back(ListedDevice{id, devices[id - 1].public_key});
        }
        return l;
    }
    SignedDeviceList sign(const DeviceList& l) const {
        auto s = sign_device_list(l, account, devices[l.issuer - 1]);
        REQUIRE(s);
        return *s;
    }
    /// Encode and decode, as a verifier gets it from the network.
    static SignedDeviceList wire(const SignedDeviceList& s) {
        const auto bytes = encode_signed_device_list(s);
        REQUIRE(bytes);
        auto back = decode_signed_device_list(*bytes);
        REQUIRE(back);
        return *back;
    }
};

Errc code_of(const Result<ListVerdict>& r) {
    return r ? Errc::ok : r.error().code;
}

}  // namespace

TEST_CASE("a signed device list goes through the wire unchanged and is accepted, then known") {
    const Account a;
    const auto first = Account::wire(a.sign(a.list(1, 1, {1})));
    CHECK(first.list == a.list(1, 1, {1}));
    const auto r = accept_device_list("alice", a.account.public_key, std::nullopt, first);
    REQUIRE(r);
    CHECK(*r == ListVerdict::newer);
    const auto again = accept_device_list("alice", a.account.public_key, first.list, first);
    REQUIRE(again);
    CHECK(*again == ListVerdict::same);
    // Device 1 adds device 2, then device 2 adds device 3: each issued by a device of the list before.
    const auto second = Account::wire(a.sign(a.list(2, 1, {1, 2})));
    CHECK(code_of(accept_device_list("alice", a.account.public_key, first.list, second)) == Errc::ok);
    const auto third = Account::wire(a.sign(a.list(3, 2, {1, 2, 3})));
    CHECK(code_of(accept_device_list("alice", a.account.public_key, second.list, third)) == Errc::ok);
    // A peer that meets the account late takes its newest list on the account key alone.
    CHECK(code_of(accept_device_list("alice", a.account.public_key, std::nullopt, third)) == Errc::ok);
}

TEST_CASE("a server cannot add a device, replay an old list or show two histories") {
    const Account a;
    const auto one = a.sign(a.list(1, 1, {1}));
    const auto two = a.sign(a.list(2, 1, {1, 2}));

    // Its own device added to a signed list: the signatures no longer match.
    auto forged = two;
    forged.list.devices.push_back(ListedDevice{7, generate_identity(*a.rng).public_key});
    CHECK(code_of(accept_device_list("alice", a.account.public_key, one.list, forged)) == Errc::auth_failed);
    // A list signed by an account key of its own (the server's): not the pinned one.
    const IdentityKeyPair server_account = generate_identity(*a.rng);
    auto by_server = sign_device_list(a.list(2, 1, {1, 3}), server_account, a.devices[0]);
    REQUIRE(by_server);
    CHECK(code_of(accept_device_list("alice", a.account.public_key, one.list, *by_server)) == Errc::auth_failed);
    // The old list again, to hide device 2.
    CHECK(code_of(accept_device_list("alice", a.account.public_key, two.list, one)) == Errc::replayed);
    // Another list under a known version number.
    const auto other_two = a.sign(a.list(2, 1, {1, 3}));
    CHECK(code_of(accept_device_list("alice", a.account.public_key, two.list, other_two)) == Errc::auth_failed);
    // Bob's list offered as Alice's.
    auto bobs = a.list(1, 1, {1});
    bobs.user = "bob";
    CHECK(code_of(accept_device_list("alice", a.account.public_key, std::nullopt, a.sign(bobs))) == Errc::bad_field);
    // A device's key replaced under its id.
    auto rekeyed = a.list(3, 1, {1, 2});
    rekeyed.devices[1].key = a.devices[2].public_key;
    auto signed_rekeyed = sign_device_list(rekeyed, a.account, a.devices[0]);
    REQUIRE(signed_rekeyed);
    CHECK(code_of(accept_device_list("alice", a.account.public_key, two.list, *signed_rekeyed)) == Errc::bad_field);
}

TEST_CASE("a removed device cannot sign itself back, even holding the account key") {
    const Account a;
    const auto two = a.sign(a.list(2, 1, {1, 2}));
    const auto removed = a.sign(a.list(3, 1, {1}));  // device 1 removes device 2
    REQUIRE(code_of(accept_device_list("alice", a.account.public_key, two.list, removed)) == Errc::ok);
    // Device 2 kept the account key; as itself it is not in the list that removed it.
    const auto back = a.sign(a.list(4, 2, {1, 2}));
    CHECK(code_of(accept_device_list("alice", a.account.public_key, removed.list, back)) == Errc::bad_field);
    // Naming device 1 as the issuer, it cannot make device 1's signature.
    auto claimed = a.list(4, 1, {1, 2});
    auto signed_claimed = sign_device_list(claimed, a.account, a.devices[1]);
    CHECK(!signed_claimed);  // the signer refuses to sign for a listed issuer with another key
    auto by_two = a.sign(a.list(4, 2, {1, 2}));
    by_two.list.issuer = 1;  // relabelled after signing
    CHECK(code_of(accept_device_list("alice", a.account.public_key, removed.list, by_two)) == Errc::auth_failed);
    // A device that removes itself issues a list it is not in: accepted (its key comes from the list before).
    const auto self_removal = a.sign(a.list(3, 2, {1}));
    CHECK(code_of(accept_device_list("alice", a.account.public_key, two.list, self_removal)) == Errc::ok);
}

TEST_CASE("device lists from the network are bounded and validated") {
    const Account a;
    const auto good = encode_signed_device_list(a.sign(a.list(1, 1, {1, 2, 3})));
    REQUIRE(good);
    for (std::size_t n = 0; n < good->size(); ++n) {
        const auto cut = decode_signed_device_list(ByteView(*good).first(n));
        REQUIRE(!cut);
        CHECK(cut.error().code == Errc::truncated);
    }
    auto longer = *good;
    longer.push_back(0);
    CHECK(decode_signed_device_list(longer).error().code == Errc::trailing_bytes);
    CHECK(decode_signed_device_list(*good, 2).error().code == Errc::bad_field);  // above the server's limit
    CHECK(decode_signed_device_list(*good, 3));

    // Hand-made lists that break a rule: encoding refuses them, decoding reports bad_field.
    const auto broken = [&](auto change) {
        auto l = a.list(1, 1, {1, 2});
        change(l);
        CHECK(encode_device_list(l).error().code == Errc::invalid_argument);
    };
    broken([](DeviceList& l) { l.devices.clear(); });
    broken([](DeviceList& l) { l.devices[1].device = 1; });  // repeated
    broken([](DeviceList& l) { std::swap(l.devices[0], l.devices[1]); });
    broken([](DeviceList& l) { l.devices[0].device = 0; });
    broken([](DeviceList& l) { l.devices[0].key.pop_back(); });
    broken([](DeviceList& l) { l.user.clear(); });
    broken([](DeviceList& l) { l.version = 0; });
    broken([](DeviceList& l) { l.issuer = 0; });
    broken([](DeviceList& l) { l.devices.resize(max_listed_devices + 1, l.devices[1]); });

    // On the wire: device ids out of order (byte 1 + 5 + 8 + 4 + 1 is the first id's last byte).
    auto swapped = *good;
    swapped[1 + 5 + 8 + 4 + 1 + 3] = 9;
    CHECK(decode_signed_device_list(swapped).error().code == Errc::bad_field);
    auto none = *good;
    none[1 + 5 + 8 + 4] = 0;  // count 0, the rest then trails
    CHECK(!decode_signed_device_list(none));
}

TEST_CASE("the client remembers the newest list per peer, across a restart, so an old one stays refused") {
    const Account a;
    const auto dir = std::filesystem::temp_directory_path() / ("sim-devlists-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    const auto path = (dir / "state").string();
    ClientStateParams cheap;
    cheap.argon2_memory_kib = 64;
    cheap.argon2_iterations = 1;
    const auto one = encode_signed_device_list(a.sign(a.list(1, 1, {1})));
    const auto two = encode_signed_device_list(a.sign(a.list(2, 1, {1, 2})));
    REQUIRE(one);
    REQUIRE(two);
    {
        auto state = open_client_state(path, "pw", cheap);
        REQUIRE(state);
        const sim::client_detail::DeviceLists lists(**state);
        const auto none = lists.known("alice");
        REQUIRE(none);
        CHECK(!*none);
        auto first = lists.accept("alice", a.account.public_key, *one);
        REQUIRE(first);
        CHECK(first->verdict == ListVerdict::newer);
        REQUIRE(first->record);
        REQUIRE((*state)->write({*first->record}));
        auto second = lists.accept("alice", a.account.public_key, *two);
        REQUIRE(second);
        CHECK(second->verdict == ListVerdict::newer);
        CHECK(second->list.devices.size() == 2);
        REQUIRE((*state)->write({*second->record}));
        auto again = lists.accept("alice", a.account.public_key, *two);
        REQUIRE(again);
        CHECK(again->verdict == ListVerdict::same);
        CHECK(!again->record);
    }
    {
        auto state = open_client_state(path, "pw", cheap);
        REQUIRE(state);
        const sim::client_detail::DeviceLists lists(**state);
        const auto known = lists.known("alice");
        REQUIRE(known);
        REQUIRE(*known);
        CHECK((*known)->version == 2);
        const auto replay = lists.accept("alice", a.account.public_key, *one);
        REQUIRE(!replay);
        CHECK(replay.error().code == Errc::replayed);
        // A list that does not decode, or is stored under another peer's name: corrupt, not "nothing known".
        REQUIRE((*state)->write({StateWrite{"devices/bob", SecureBytes(two->begin(), two->end())}}));
        CHECK(lists.known("bob").error().code == Errc::corrupt_database);
        REQUIRE((*state)->write({StateWrite{"devices/alice", SecureBytes{1, 2, 3}}}));
        CHECK(lists.known("alice").error().code == Errc::corrupt_database);
        CHECK(lists.accept("alice", a.account.public_key, *two).error().code == Errc::corrupt_database);
    }
    std::filesystem::remove_all(dir);
}
