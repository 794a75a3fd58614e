// The server's check of an uploaded device list (server/device_upload.h, docs/protocol.md 6.9 `devices` op 3).
#include "server/device_upload.h"

#include <doctest/doctest.h>

#include <sim/rng.h>

using namespace sim;
using namespace sim::e2e;
using sim::server_detail::check_list_upload;
using State = sim::store::DeviceState;

namespace {

struct Account {
    std::unique_ptr<Rng> rng = make_system_rng();
    IdentityKeyPair ak = generate_identity(*rng);
    IdentityKeyPair laptop = ak;  // device 1 of an upgraded account: its key is the account key
    IdentityKeyPair phone = generate_identity(*rng);
    IdentityKeyPair tablet = generate_identity(*rng);

    Bytes list(std::uint64_t version, DeviceId issuer, const IdentityKeyPair& signer,
               std::vector<ListedDevice> devices, std::string user = "alice") const {
        DeviceList l{std::move(user), version, issuer, std::move(devices)};
        return encode_signed_device_list(sign_device_list(l, ak, signer).value()).value();
    }
    /// The same list with its issuer signature made by `other` (sign_device_list refuses to make one).
    Bytes forged(std::uint64_t version, DeviceId issuer, const IdentityKeyPair& signer, const IdentityKeyPair& other,
                 std::vector<ListedDevice> devices) const {
        DeviceList l{"alice", version, issuer, std::move(devices)};
        auto s = sign_device_list(l, ak, signer).value();
        DeviceList decoy = l;
        decoy.issuer = 99;  // not listed: any key may sign it
        const auto by_other = sign_device_list(decoy, ak, other).value();
        // Same list bytes except the issuer: a signature over other bytes, by the other key, never verifies either.
        s.issuer_signature = by_other.issuer_signature;
        return encode_signed_device_list(s).value();
    }
};

/// A device as the store lists it (only what the check reads).
store::DeviceRecord dev(DeviceId id, State state, Bytes key) {
    store::DeviceRecord r;
    r.username = "alice";
    r.device = id;
    r.state = state;
    r.device_key = std::move(key);
    return r;
}

Errc code_of(const Result<server_detail::ListChange>& r) { return r ? Errc::ok : r.error().code; }

}  // namespace

TEST_CASE("an account's first list gives device 1 its key; a later one activates a linked device") {
    Account a;
    const std::vector<store::DeviceRecord> fresh{dev(1, State::active, {})};
    const auto first = check_list_upload("alice", 1, fresh, 0, a.list(1, 1, a.laptop, {{1, a.laptop.public_key}}), 5);
    REQUIRE(first);
    REQUIRE(first->activate.size() == 1);
    CHECK(first->activate[0] == std::pair<DeviceId, Bytes>{1, a.laptop.public_key});
    CHECK(first->remove.empty());
    CHECK(first->list.list.version == 1);

    const std::vector<store::DeviceRecord> linking{dev(1, State::active, a.laptop.public_key), dev(2, State::pending, {})};
    const auto second = check_list_upload(
        "alice", 1, linking, 1, a.list(2, 1, a.laptop, {{1, a.laptop.public_key}, {2, a.phone.public_key}}), 5);
    REQUIRE(second);
    REQUIRE(second->activate.size() == 1);
    CHECK(second->activate[0].first == 2);
    CHECK(second->activate[0].second == a.phone.public_key);
    CHECK(second->remove.empty());
}

TEST_CASE("a list that leaves an active device out removes it; a pending one not listed stays pending") {
    Account a;
    const std::vector<store::DeviceRecord> devices{dev(1, State::active, a.laptop.public_key),
                                             dev(2, State::active, a.phone.public_key),
                                             dev(3, State::pending, {}),
                                             dev(4, State::removed, a.tablet.public_key)};
    const auto r = check_list_upload("alice", 2, devices, 5, a.list(6, 2, a.phone, {{2, a.phone.public_key}}), 5);
    REQUIRE(r);
    CHECK(r->remove == std::vector<DeviceId>{1});
    CHECK(r->activate.empty());
    // A device may remove itself: it signs with its stored key and is not listed.
    const auto self = check_list_upload("alice", 2, devices, 5, a.list(6, 2, a.phone, {{1, a.laptop.public_key}}), 5);
    REQUIRE(self);
    CHECK(self->remove == std::vector<DeviceId>{2});
}

TEST_CASE("uploads the server refuses, each leaving everything as it was") {
    Account a;
    const std::vector<store::DeviceRecord> devices{dev(1, State::active, a.laptop.public_key),
                                             dev(2, State::pending, {}),
                                             dev(3, State::removed, a.tablet.public_key),
                                             dev(4, State::active, {})};
    const auto both = [&](std::uint64_t v) { return a.list(v, 1, a.laptop, {{1, a.laptop.public_key}, {2, a.phone.public_key}}); };
    CHECK(code_of(check_list_upload("alice", 1, devices, 3, both(4), 5)) == Errc::ok);
    SUBCASE("not newer than the stored list") {
        CHECK(code_of(check_list_upload("alice", 1, devices, 4, both(4), 5)) == Errc::stale_epoch);
        CHECK(code_of(check_list_upload("alice", 1, devices, 9, both(4), 5)) == Errc::stale_epoch);
    }
    SUBCASE("another user's list, or one issued by another device") {
        CHECK(code_of(check_list_upload("bob", 1, devices, 3, both(4), 5)) == Errc::bad_field);
        CHECK(code_of(check_list_upload("alice", 4, devices, 3, both(4), 5)) == Errc::bad_field);
    }
    SUBCASE("the uploader is not active") {
        const auto by_pending = a.list(4, 2, a.phone, {{1, a.laptop.public_key}, {2, a.phone.public_key}});
        CHECK(code_of(check_list_upload("alice", 2, devices, 3, by_pending, 5)) == Errc::bad_field);
    }
    SUBCASE("a device the account does not have, or has removed") {
        const auto unknown = a.list(4, 1, a.laptop, {{1, a.laptop.public_key}, {9, a.phone.public_key}});
        CHECK(code_of(check_list_upload("alice", 1, devices, 3, unknown, 5)) == Errc::bad_field);
        const auto removed = a.list(4, 1, a.laptop, {{1, a.laptop.public_key}, {3, a.tablet.public_key}});
        CHECK(code_of(check_list_upload("alice", 1, devices, 3, removed, 5)) == Errc::bad_field);
    }
    SUBCASE("a device with another key than its stored one") {
        const auto swapped = a.list(4, 1, a.phone, {{1, a.phone.public_key}});
        CHECK(code_of(check_list_upload("alice", 1, devices, 3, swapped, 5)) == Errc::bad_field);
    }
    SUBCASE("signed by another key than the uploader's") {
        const auto forged = a.forged(4, 1, a.laptop, a.tablet, {{1, a.laptop.public_key}, {2, a.phone.public_key}});
        CHECK(code_of(check_list_upload("alice", 1, devices, 3, forged, 5)) == Errc::auth_failed);
        // A keyless device must list itself, and then signs with the key it lists.
        const auto keyless = a.list(4, 4, a.tablet, {{1, a.laptop.public_key}});
        CHECK(code_of(check_list_upload("alice", 4, devices, 3, keyless, 5)) == Errc::bad_field);
        const auto keyless_wrong =
            a.forged(4, 4, a.phone, a.tablet, {{1, a.laptop.public_key}, {4, a.phone.public_key}});
        CHECK(code_of(check_list_upload("alice", 4, devices, 3, keyless_wrong, 5)) == Errc::auth_failed);
    }
    SUBCASE("more devices than the server's limit, and bytes that are not a list") {
        CHECK(code_of(check_list_upload("alice", 1, devices, 3, both(4), 1)) == Errc::bad_field);
        auto cut = both(4);
        cut.pop_back();
        CHECK(code_of(check_list_upload("alice", 1, devices, 3, cut, 5)) == Errc::truncated);
        auto flipped = both(4);
        flipped.back() ^= 1U;
        CHECK(code_of(check_list_upload("alice", 1, devices, 3, flipped, 5)) == Errc::auth_failed);
    }
}
