// The server's fan-out parts, driven directly: the device directory (server/device_directory.h) over the memory
// backend's device store, and the pure coverage check and own-copy form (server/fanout.h). The whole path (linked
// devices, refusals, mailboxes) is in test_server.cpp ("fan-out: ...").
#include "server/device_directory.h"
#include "server/fanout.h"

#include <sim/clock.h>
#include <sim/messages.h>
#include <sim/store.h>

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

namespace {

using sim::server_detail::DeviceDirectory;
using Devices = std::vector<sim::DeviceId>;

/// `user` with devices 1 and 2 active (2 added pending, then activated with a key).
void two_devices(sim::store::Backend& b, const std::string& user) {
    REQUIRE(b.create_user(user, "hash"));
    const sim::store::WallTime now{std::chrono::milliseconds{1'800'000'000'000}};
    REQUIRE(b.add_device(user, "", now, now - std::chrono::minutes(10), 5).value() == 2);
    REQUIRE(b.activate_device(user, 2, sim::Bytes(32, 2), now));
}

sim::Submission submission(sim::DeviceId from, const Devices& to, const Devices& own) {
    sim::Submission s{{}, sim::ConversationMode::end_to_end, {}, from, {}, {}};
    for (const auto d : to) {
        s.bodies.push_back({d, {1}});
    }
    for (const auto d : own) {
        s.own_bodies.push_back({d, {2}});
    }
    return s;
}

}  // namespace

TEST_CASE("device directory: active devices from the store, kept while pinned, refreshed, forgotten, expired") {
    auto backend = sim::store::make_memory_backend();
    sim::ManualClock clock;
    DeviceDirectory dir(backend.get(), clock, {.max_unpinned = 2, .unpinned_ttl = std::chrono::seconds(30)});
    two_devices(*backend, "bob");

    CHECK(dir.devices("bob").value() == Devices{1, 2});
    CHECK(dir.devices("nobody").value() == Devices{1});  // no account: the checks after the directory refuse it
    // Behind its back (another node): the entry stays until refreshed, forgotten or expired.
    REQUIRE(backend->remove_device("bob", 2).value());
    CHECK(dir.devices("bob").value() == Devices{1, 2});
    CHECK(dir.refresh("bob").value() == Devices{1});
    CHECK(dir.cached("bob") == Devices{1});

    // Pinned entries do not expire; unpinned ones do.
    two_devices(*backend, "carol");
    REQUIRE(dir.pin("carol"));
    CHECK(dir.cached("carol") == Devices{1, 2});
    clock.advance(std::chrono::seconds(31));
    CHECK(dir.cached("carol") == Devices{1, 2});
    CHECK_FALSE(dir.cached("bob").has_value());
    // An op 5 from another node: a pinned entry is read again at its next use.
    REQUIRE(backend->remove_device("carol", 2).value());
    dir.forget("carol");
    CHECK_FALSE(dir.cached("carol").has_value());
    CHECK(dir.devices("carol").value() == Devices{1});
    dir.unpin("carol");
    CHECK(dir.cached("carol") == Devices{1});  // believed for the ttl after the last connection left
    clock.advance(std::chrono::seconds(31));
    CHECK_FALSE(dir.cached("carol").has_value());

    // At most max_unpinned entries without a pin.
    for (const auto* user : {"u1", "u2", "u3", "u4", "u5"}) {
        (void)dir.devices(user);
        clock.advance(std::chrono::seconds(1));
    }
    CHECK(dir.size() <= 3);

    // Without a device store: device 1 for everyone, nothing kept.
    DeviceDirectory none(nullptr, clock, {});
    CHECK(none.devices("bob").value() == Devices{1});
    CHECK(none.size() == 0);
}

TEST_CASE("coverage: the recipient's active devices exactly, and the sender's other devices exactly") {
    using sim::server_detail::check_coverage;
    CHECK(check_coverage(submission(1, {1}, {}), {1}, {1}).ok());
    CHECK(check_coverage(submission(1, {1, 2}, {3}), {1, 2}, {1, 3}).ok());
    CHECK(check_coverage(submission(2, {1}, {1, 3}), {1}, {1, 2, 3}).ok());
    const auto missing = check_coverage(submission(1, {1}, {}), {1, 2}, {1});
    CHECK_FALSE(missing.recipient);
    CHECK(missing.own);
    CHECK_FALSE(check_coverage(submission(1, {1, 2, 3}, {}), {1, 2}, {1}).recipient);  // one too many
    CHECK_FALSE(check_coverage(submission(1, {1, 3}, {}), {1, 2}, {1}).recipient);     // another one
    const auto no_own = check_coverage(submission(1, {1}, {}), {1}, {1, 2});
    CHECK(no_own.recipient);
    CHECK_FALSE(no_own.own);
    CHECK_FALSE(check_coverage(submission(1, {1}, {2}), {1}, {1}).own);  // a device the sender does not have
}

TEST_CASE("own copy: stored with its peer, delivered as the envelope; malformed stored forms are refused") {
    auto s = submission(1, {1}, {2, 5});
    s.id.fill(0x42);
    s.own_bodies[1].body = {7, 8, 9};
    const auto stored = sim::server_detail::encode_own_copy(s, 1, "bob");
    const auto back = sim::server_detail::decode_own_copy(stored);
    REQUIRE(back);
    CHECK(back->peer == "bob");
    const auto e = sim::decode_envelope(back->envelope).value();
    CHECK(e.id == s.id);
    CHECK(e.body == sim::Bytes{7, 8, 9});
    // Cut anywhere before the first body byte (16 + 1 + 1 + "bob"): refused; a shorter body is only a shorter body.
    for (std::size_t n = 0; n < 16 + 1 + 1 + 3 + 1; ++n) {
        CHECK_FALSE(sim::server_detail::decode_own_copy(sim::ByteView(stored).first(n)));
    }
    auto no_peer = stored;
    no_peer[17] = 0;
    CHECK(sim::server_detail::decode_own_copy(no_peer).code() == sim::Errc::bad_field);
}
