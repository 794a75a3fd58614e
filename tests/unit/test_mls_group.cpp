// sim::mls::Group, the public MLS facade: a group's life through the public API only.
#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/error.h>
#include <sim/mls.h>
#include <sim/rng.h>

#include <doctest/doctest.h>

#include <optional>
#include <string>

using sim::Bytes;
using sim::Errc;
namespace mls = sim::mls;

namespace {

mls::KeyPackageBundle bundle(sim::Rng& rng, const std::string& user, const std::string& device) {
    const auto sig = sim::crypto::ed25519_generate(rng);
    auto b = mls::make_key_package(user, device, sig.private_key, rng);
    REQUIRE_MESSAGE(b.has_value(), b.error().message());
    return std::move(*b);
}

void same_epoch(const mls::Group& x, const mls::Group& y) {
    CHECK(x.epoch() == y.epoch());
    CHECK(x.epoch_authenticator() == y.epoch_authenticator());
    CHECK(x.members() == y.members());
    const auto ex = x.export_secret("test", sim::as_bytes("ctx"), 32);
    const auto ey = y.export_secret("test", sim::as_bytes("ctx"), 32);
    REQUIRE(ex.has_value());
    REQUIRE(ey.has_value());
    CHECK(*ex == *ey);
}

}  // namespace

TEST_CASE("mls::Group: create, add, join, send, update, remove through the public API") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls group facade"));
    const auto a_kp = bundle(*rng, "alice", "phone");
    const auto b_kp = bundle(*rng, "bob", "laptop");
    const auto c_kp = bundle(*rng, "carol", "phone");

    CHECK(mls::make_key_package("", "phone", a_kp.signature_private, *rng).code() == Errc::invalid_argument);
    CHECK(mls::make_key_package("a/b", "phone", a_kp.signature_private, *rng).code() == Errc::invalid_argument);

    auto a = mls::Group::create(sim::as_bytes("team"), a_kp, *rng);
    REQUIRE_MESSAGE(a.has_value(), a.error().message());
    CHECK(a->epoch() == 0);
    CHECK(a->members() == std::vector<mls::GroupMember>{{0, "alice/phone"}});

    // A adds B and C in one commit; both join from the Welcome.
    REQUIRE(a->add(b_kp.key_package).has_value());
    REQUIRE(a->add(c_kp.key_package).has_value());
    CHECK_FALSE(a->add(sim::as_bytes("not a key package")).has_value());
    const auto add = a->commit(*rng);
    REQUIRE_MESSAGE(add.has_value(), add.error().message());
    REQUIRE(add->welcome.has_value());
    auto b = mls::Group::join(*add->welcome, b_kp);
    REQUIRE_MESSAGE(b.has_value(), b.error().message());
    auto c = mls::Group::join(*add->welcome, c_kp);
    REQUIRE(c.has_value());
    CHECK(a->epoch() == 1);
    same_epoch(*a, *b);
    same_epoch(*a, *c);
    CHECK(b->members().size() == 3);
    CHECK(b->group_id() == sim::to_bytes(sim::as_bytes("team")));

    // Application data.
    const auto hello = a->encrypt(sim::as_bytes("hello team"), *rng);
    REQUIRE(hello.has_value());
    const auto got = b->process(*hello);
    REQUIRE(got.has_value());
    CHECK(got->kind == mls::GroupEvent::Kind::application);
    CHECK(sim::to_string(got->application_data) == "hello team");
    CHECK(b->process(*hello).code() == Errc::replayed);

    // Garbage changes nothing.
    CHECK_FALSE(b->process(sim::as_bytes("garbage")).has_value());
    CHECK(b->epoch() == 1);

    // B proposes an Update; A commits it; everyone follows.
    const auto upd = b->propose_update(*rng);
    REQUIRE(upd.has_value());
    for (auto* g : {&*a, &*c}) {
        const auto ev = g->process(*upd);
        REQUIRE_MESSAGE(ev.has_value(), ev.error().message());
        CHECK(ev->kind == mls::GroupEvent::Kind::proposal);
    }
    const auto old_auth = a->epoch_authenticator();
    const auto commit_upd = a->commit(*rng);
    REQUIRE(commit_upd.has_value());
    CHECK_FALSE(commit_upd->welcome.has_value());
    for (auto* g : {&*b, &*c}) {
        const auto ev = g->process(commit_upd->commit);
        REQUIRE_MESSAGE(ev.has_value(), ev.error().message());
        CHECK(ev->kind == mls::GroupEvent::Kind::new_epoch);
        CHECK(ev->epoch == 2);
        CHECK(ev->added.empty());
        CHECK(ev->removed.empty());
    }
    same_epoch(*a, *b);
    same_epoch(*a, *c);
    CHECK(a->epoch_authenticator() != old_auth);

    // A member joins a tree that holds a leaf from an Update.
    const auto e_kp = bundle(*rng, "erin", "phone");
    REQUIRE(a->add(e_kp.key_package).has_value());
    const auto add_e = a->commit(*rng);
    REQUIRE(add_e.has_value());
    auto e = mls::Group::join(*add_e->welcome, e_kp);
    REQUIRE_MESSAGE(e.has_value(), e.error().message());
    REQUIRE(b->process(add_e->commit).has_value());
    REQUIRE(c->process(add_e->commit).has_value());
    same_epoch(*a, *e);

    // B removes C.
    const auto c_leaf = c->own_leaf();
    CHECK(b->remove(b->own_leaf()).code() == Errc::invalid_argument);
    REQUIRE(b->remove(c_leaf).has_value());
    CHECK(b->remove(c_leaf).code() == Errc::invalid_argument);
    const auto rm = b->commit(*rng);
    REQUIRE(rm.has_value());
    const auto ev_a = a->process(rm->commit);
    REQUIRE(ev_a.has_value());
    CHECK(ev_a->kind == mls::GroupEvent::Kind::new_epoch);
    CHECK(ev_a->removed == std::vector<mls::GroupMember>{{c_leaf, "carol/phone"}});
    const auto ev_c = c->process(rm->commit);
    REQUIRE(ev_c.has_value());
    CHECK(ev_c->kind == mls::GroupEvent::Kind::removed);
    CHECK_FALSE(c->active());
    same_epoch(*a, *b);
    CHECK(a->members().size() == 3);

    // C reads nothing of the new epoch and can no longer send.
    const auto after = a->encrypt(sim::as_bytes("without carol"), *rng);
    REQUIRE(after.has_value());
    CHECK_FALSE(c->process(*after).has_value());
    CHECK(c->encrypt(sim::as_bytes("x"), *rng).code() == Errc::invalid_state);
    const auto got_b = b->process(*after);
    REQUIRE(got_b.has_value());
    CHECK(sim::to_string(got_b->application_data) == "without carol");
}
