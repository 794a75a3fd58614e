// sim::mls::Group, the public MLS facade: a group's life through the public API only.
#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/error.h>
#include <sim/mls.h>
#include <sim/rng.h>

#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>

using sim::Bytes;
using sim::Errc;
namespace mls = sim::mls;

namespace {

mls::KeyPackageBundle bundle(sim::Rng& rng, const std::string& user, const std::string& device,
                             mls::KeyPackageLifetime lifetime = {}) {
    const auto sig = sim::crypto::ed25519_generate(rng);
    auto b = mls::make_key_package(user, device, sig.private_key, rng, lifetime);
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

/// Refuses the identities in `refused` (changeable while groups use it) with Errc::auth_rejected.
struct RefuseSome final : mls::CredentialPolicy {
    std::set<std::string> refused;
    [[nodiscard]] sim::Status check(std::string_view identity, sim::ByteView) const override {
        if (refused.count(std::string(identity)) != 0) {
            return Errc::auth_rejected;
        }
        return sim::ok();
    }
};

/// A group of three through the public API: A ("alice/phone") created it and added B ("bob/laptop") and C
/// ("carol/phone"), who joined from the Welcome (C with `c_options`).
struct Trio {
    std::optional<mls::Group> a, b, c;
    Trio(sim::Rng& rng, std::string_view group_id, const mls::GroupOptions& c_options = {}) {
        const auto b_kp = bundle(rng, "bob", "laptop");
        const auto c_kp = bundle(rng, "carol", "phone");
        auto created = mls::Group::create(sim::as_bytes(group_id), bundle(rng, "alice", "phone"), rng);
        REQUIRE(created.has_value());
        a.emplace(std::move(*created));
        REQUIRE(a->add(b_kp.key_package).has_value());
        REQUIRE(a->add(c_kp.key_package).has_value());
        const auto add = a->commit(rng);
        REQUIRE(add.has_value());
        auto joined_b = mls::Group::join(*add->welcome, b_kp);
        auto joined_c = mls::Group::join(*add->welcome, c_kp, c_options);
        REQUIRE((joined_b && joined_c));
        b.emplace(std::move(*joined_b));
        c.emplace(std::move(*joined_c));
    }
};

/// Epoch, authenticator and members of `g`, to show that a failed call changed nothing.
struct Snapshot {
    std::uint64_t epoch;
    Bytes authenticator;
    std::vector<mls::GroupMember> members;
    explicit Snapshot(const mls::Group& g)
        : epoch(g.epoch()), authenticator(g.epoch_authenticator()), members(g.members()) {}
    friend bool operator==(const Snapshot&, const Snapshot&) = default;
};

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

TEST_CASE("mls::Group: the credential policy decides every leaf the group accepts") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls group credential policy"));
    const auto a_kp = bundle(*rng, "alice", "phone");
    const auto b_kp = bundle(*rng, "bob", "laptop");
    const auto m_kp = bundle(*rng, "mallory", "phone");

    const mls::AcceptUserDevice user_device;
    CHECK(user_device.check("alice/phone", {}).has_value());
    for (const char* bad : {"alice", "alice/", "/phone", "a/b/c", ""}) {
        CHECK(user_device.check(bad, {}).code() == Errc::bad_field);
    }

    auto a = mls::Group::create(sim::as_bytes("policy"), a_kp, *rng);
    REQUIRE(a.has_value());
    REQUIRE(a->add(b_kp.key_package).has_value());
    const auto add_b = a->commit(*rng);
    REQUIRE(add_b.has_value());

    // Joining: a policy that refuses any member of the tree (here the committer) makes the join fail.
    auto refuse_alice = std::make_shared<RefuseSome>();
    refuse_alice->refused = {"alice/phone"};
    CHECK(mls::Group::join(*add_b->welcome, b_kp, {refuse_alice, {}}).code() == Errc::auth_rejected);

    auto policy = std::make_shared<RefuseSome>();
    auto b = mls::Group::join(*add_b->welcome, b_kp, {policy, {}});
    REQUIRE_MESSAGE(b.has_value(), b.error().message());

    // Committing: a group whose policy refuses a KeyPackage does not commit its Add, and keeps the queue.
    policy->refused = {"mallory/phone"};
    REQUIRE(b->add(m_kp.key_package).has_value());
    CHECK(b->commit(*rng).code() == Errc::auth_rejected);
    CHECK(b->epoch() == 1);

    // Processing: A's commit adding Mallory is refused by B, whose state does not change.
    const auto before_commit = a->encrypt(sim::as_bytes("still epoch 1"), *rng);
    REQUIRE(before_commit.has_value());
    REQUIRE(a->add(m_kp.key_package).has_value());
    const auto add_m = a->commit(*rng);
    REQUIRE(add_m.has_value());
    const Snapshot b_before(*b);
    CHECK(b->process(add_m->commit).code() == Errc::auth_rejected);
    CHECK(Snapshot(*b) == b_before);
    const auto old = b->process(*before_commit);
    REQUIRE_MESSAGE(old.has_value(), old.error().message());
    CHECK(sim::to_string(old->application_data) == "still epoch 1");

    // Updates: once the policy refuses B's credential, C no longer accepts a commit of B's Update.
    auto c_policy = std::make_shared<RefuseSome>();
    Trio t(*rng, "policy 2", {c_policy, {}});
    auto& a2 = t.a;
    auto& b2 = t.b;
    auto& c2 = t.c;
    const auto upd = b2->propose_update(*rng);
    REQUIRE(upd.has_value());
    REQUIRE(a2->process(*upd).has_value());
    REQUIRE(c2->process(*upd).has_value());
    const auto commit_upd = a2->commit(*rng);
    REQUIRE(commit_upd.has_value());
    c_policy->refused = {"bob/laptop"};
    const Snapshot c_before(*c2);
    CHECK(c2->process(commit_upd->commit).code() == Errc::auth_rejected);
    CHECK(Snapshot(*c2) == c_before);
    c_policy->refused.clear();
    CHECK(c2->process(commit_upd->commit).has_value());
    CHECK(c2->epoch_authenticator() == a2->epoch_authenticator());
}

TEST_CASE("mls::Group: an Add needs a KeyPackage lifetime that covers the injected time") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls group lifetime"));
    const auto a_kp = bundle(*rng, "alice", "phone");
    const auto b_kp = bundle(*rng, "bob", "laptop");
    const auto c_kp = bundle(*rng, "carol", "phone", {1000, 2000});
    const auto sig = sim::crypto::ed25519_generate(*rng);
    CHECK(mls::make_key_package("dave", "phone", sig.private_key, *rng, {2, 1}).code() == Errc::invalid_argument);

    auto a_now = std::make_shared<std::uint64_t>(0);
    auto b_now = std::make_shared<std::uint64_t>(0);
    auto a = mls::Group::create(sim::as_bytes("lifetime"), a_kp, *rng, {{}, [a_now] { return *a_now; }});
    REQUIRE(a.has_value());
    REQUIRE(a->add(b_kp.key_package).has_value());
    const auto add_b = a->commit(*rng);
    REQUIRE(add_b.has_value());
    auto b = mls::Group::join(*add_b->welcome, b_kp, {{}, [b_now] { return *b_now; }});
    REQUIRE(b.has_value());
    // Without a clock only unlimited lifetimes can be shown to cover now.
    auto no_clock = mls::Group::join(*add_b->welcome, b_kp);
    REQUIRE(no_clock.has_value());
    REQUIRE(no_clock->add(c_kp.key_package).has_value());
    CHECK(no_clock->commit(*rng).code() == Errc::key_expired);

    REQUIRE(a->add(c_kp.key_package).has_value());
    for (const std::uint64_t t : {std::uint64_t{999}, std::uint64_t{2001}}) {
        *a_now = t;
        CHECK(a->commit(*rng).code() == Errc::key_expired);
        CHECK(a->epoch() == 1);
    }
    *a_now = 2000;
    const auto add_c = a->commit(*rng);
    REQUIRE_MESSAGE(add_c.has_value(), add_c.error().message());

    // A receiver whose time lies outside the lifetime refuses the commit and changes nothing.
    *b_now = 2001;
    const Snapshot b_before(*b);
    CHECK(b->process(add_c->commit).code() == Errc::key_expired);
    CHECK(Snapshot(*b) == b_before);
    *b_now = 1000;
    REQUIRE(b->process(add_c->commit).has_value());
    CHECK(b->epoch_authenticator() == a->epoch_authenticator());
}

namespace {

/// The byte after the `opaque<V>` (MLS varint length, RFC 9420 s2.1.2) that starts at `pos` of `s`.
std::size_t skip_vector(const sim::SecureBytes& s, std::size_t pos) {
    REQUIRE(pos < s.size());
    const std::size_t width = std::size_t{1} << (s[pos] >> 6);
    std::size_t len = s[pos] & 0x3f;
    for (std::size_t i = 1; i < width; ++i) {
        len = (len << 8) | s[pos + i];
    }
    return pos + width + len;
}

/// Where the fields of a saved state start (docs/protocol.md 7.6), to build inconsistent states.
struct SavedLayout {
    std::size_t context = 2;  // after the version
    std::size_t tree = 0;
    std::size_t own_leaf = 0;
    std::size_t first_secret = 0;
    std::size_t leaf_private = 0;
    std::size_t secret_tree = 0;

    explicit SavedLayout(const sim::SecureBytes& s) {
        tree = skip_vector(s, context);
        own_leaf = skip_vector(s, tree);
        first_secret = own_leaf + 4;
        std::size_t pos = first_secret;
        for (int i = 0; i < 12; ++i) {
            pos = skip_vector(s, pos);
        }
        leaf_private = pos;
        const auto path_secrets = skip_vector(s, leaf_private);
        const auto interim = skip_vector(s, path_secrets);
        secret_tree = skip_vector(s, interim);
    }
};

void put_u32(sim::SecureBytes& s, std::size_t pos, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) {
        s[pos + i] = static_cast<std::uint8_t>(v >> (8 * (3 - i)));
    }
}

}  // namespace

TEST_CASE("mls::Group: a loaded group behaves exactly as the saved one") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls group save load"));
    Trio t(*rng, "saved");
    auto& [a, b, c] = t;
    const auto d_kp = bundle(*rng, "dave", "phone");

    // B has used a ratchet key, skipped one, and cached C's Update when it saves.
    const auto m1 = a->encrypt(sim::as_bytes("one"), *rng);
    const auto m2 = a->encrypt(sim::as_bytes("two"), *rng);
    const auto m3 = a->encrypt(sim::as_bytes("three"), *rng);
    REQUIRE((m1 && m2 && m3));
    REQUIRE(b->process(*m2).has_value());
    const auto upd = c->propose_update(*rng);
    REQUIRE(upd.has_value());
    REQUIRE(a->process(*upd).has_value());
    REQUIRE(b->process(*upd).has_value());

    const auto saved = b->save();
    REQUIRE(saved.has_value());
    REQUIRE(saved->size() > 2);
    CHECK(((*saved)[0] == 0 && (*saved)[1] == mls::group_state_version));
    auto loaded = mls::Group::load(*saved);
    REQUIRE_MESSAGE(loaded.has_value(), loaded.error().message());
    same_epoch(*b, *loaded);
    CHECK(loaded->own_leaf() == b->own_leaf());
    CHECK(loaded->group_id() == b->group_id());
    const auto resaved = loaded->save();
    REQUIRE(resaved.has_value());
    CHECK(*resaved == *saved);

    // Both decrypt the same messages and refuse the same replay; both follow A's commit of C's cached Update.
    const auto commit = a->commit(*rng);
    REQUIRE(commit.has_value());
    for (auto* g : {&*b, &*loaded}) {
        CHECK(g->process(*m2).code() == Errc::replayed);
        for (const auto* m : {&*m1, &*m3}) {
            const auto got = g->process(*m);
            REQUIRE_MESSAGE(got.has_value(), got.error().message());
        }
        const auto ev = g->process(commit->commit);
        REQUIRE_MESSAGE(ev.has_value(), ev.error().message());
        CHECK(ev->epoch == 2);
        CHECK(g->epoch_authenticator() == a->epoch_authenticator());
    }
    REQUIRE(c->process(commit->commit).has_value());
    const auto m4 = c->encrypt(sim::as_bytes("four"), *rng);
    REQUIRE(m4.has_value());
    const auto got_b = b->process(*m4);
    const auto got_loaded = loaded->process(*m4);
    REQUIRE((got_b && got_loaded));
    CHECK(got_b->application_data == got_loaded->application_data);

    // Queued additions and removals and our own pending Update are saved too.
    const auto b_upd = loaded->propose_update(*rng);
    REQUIRE(b_upd.has_value());
    REQUIRE(loaded->add(d_kp.key_package).has_value());
    REQUIRE(loaded->remove(c->own_leaf()).has_value());
    auto reloaded = mls::Group::load(*loaded->save());
    REQUIRE(reloaded.has_value());
    CHECK(reloaded->remove(c->own_leaf()).code() == Errc::invalid_argument);  // already queued
    REQUIRE(a->process(*b_upd).has_value());
    const auto a_commit = a->commit(*rng);
    REQUIRE(a_commit.has_value());
    REQUIRE_MESSAGE(reloaded->process(a_commit->commit).has_value(), "our own Update's key was saved");
    CHECK(reloaded->epoch_authenticator() == a->epoch_authenticator());
    const auto b_commit = reloaded->commit(*rng);  // the queued Add of D (the queued removal was dropped)
    REQUIRE_MESSAGE(b_commit.has_value(), b_commit.error().message());
    REQUIRE(b_commit->welcome.has_value());
    auto d = mls::Group::join(*b_commit->welcome, d_kp);
    REQUIRE_MESSAGE(d.has_value(), d.error().message());
    REQUIRE(a->process(b_commit->commit).has_value());
    same_epoch(*a, *reloaded);
    same_epoch(*a, *d);
}

TEST_CASE("mls::Group::load refuses truncated, extended, other-version and inconsistent states") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls group load refusals"));
    Trio t(*rng, "refusals");
    auto& [a, b, c] = t;
    const auto epoch1 = b->save();
    REQUIRE(epoch1.has_value());
    const auto next = a->commit(*rng);
    REQUIRE(next.has_value());
    REQUIRE(b->process(next->commit).has_value());
    const auto saved = b->save();
    REQUIRE(saved.has_value());
    REQUIRE(mls::Group::load(*saved).has_value());
    const SavedLayout at(*saved);

    for (std::size_t n = 0; n < saved->size(); ++n) {
        const auto code = mls::Group::load(sim::ByteView(*saved).first(n)).code();
        if (code != Errc::truncated) {
            FAIL_CHECK("a saved state cut to " << n << " bytes gave error " << static_cast<int>(code));
        }
    }
    auto longer = *saved;
    longer.push_back(0);
    CHECK(mls::Group::load(longer).code() == Errc::trailing_bytes);
    for (const std::uint8_t version : {0, 2, 0xff}) {
        auto other = *saved;
        other[1] = version;
        CHECK(mls::Group::load(other).code() == Errc::unsupported_version);
    }

    // Own leaf outside the tree, or a blank leaf (leaf 3 of the 4-leaf tree of three members).
    for (const std::uint32_t leaf : {3U, 4U, 0xffffffffU}) {
        auto s = *saved;
        put_u32(s, at.own_leaf, leaf);
        CHECK(mls::Group::load(s).code() == Errc::bad_field);
    }
    // The tree of epoch 1 with the group context of epoch 2: the tree hash does not match.
    {
        const SavedLayout at1(*epoch1);
        sim::SecureBytes s(saved->begin(), saved->begin() + static_cast<std::ptrdiff_t>(at.tree));
        s.insert(s.end(), epoch1->begin() + static_cast<std::ptrdiff_t>(at1.tree),
                 epoch1->begin() + static_cast<std::ptrdiff_t>(at1.own_leaf));
        s.insert(s.end(), saved->begin() + static_cast<std::ptrdiff_t>(at.own_leaf), saved->end());
        CHECK(mls::Group::load(s).code() == Errc::bad_field);
    }
    // A secret tree of 8 or 2 leaves for the tree of 4.
    for (const std::uint32_t leaves : {8U, 2U}) {
        auto s = *saved;
        put_u32(s, at.secret_tree, leaves);
        CHECK(mls::Group::load(s).code() == Errc::bad_field);
    }
    // A secret tree whose size is not a power of two.
    {
        auto s = *saved;
        put_u32(s, at.secret_tree, 3);
        CHECK(mls::Group::load(s).code() == Errc::bad_field);
    }
    // A leaf private key that does not match our leaf.
    {
        auto s = *saved;
        s[at.leaf_private + 2] ^= 0x01;  // the second key byte: X25519 clamping ignores bits of the first
        CHECK(mls::Group::load(s).code() == Errc::invalid_key);
    }
    // A signature key that does not match our leaf: the last byte of the seed (before the two empty queues).
    {
        auto s = *saved;
        s[s.size() - 3] ^= 0x01;
        CHECK(mls::Group::load(s).code() == Errc::invalid_key);
    }
    // An epoch secret one byte short.
    {
        auto s = *saved;
        REQUIRE(s[at.first_secret] == 32);
        s[at.first_secret] = 31;
        CHECK(mls::Group::load(s).code() == Errc::bad_length);
    }
    // Removed members cannot save.
    REQUIRE(a->remove(b->own_leaf()).has_value());
    const auto remove_b = a->commit(*rng);
    REQUIRE(remove_b.has_value());
    REQUIRE(b->process(remove_b->commit).has_value());
    CHECK(b->save().code() == Errc::invalid_state);
}

TEST_CASE("mls::Group: a state saved before a member's removal decrypts nothing of the later epochs") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls group saved removal"));
    Trio t(*rng, "pcs");
    auto& [a, b, c] = t;
    const auto c_saved = c->save();
    REQUIRE(c_saved.has_value());

    REQUIRE(a->remove(c->own_leaf()).has_value());
    const auto remove_c = a->commit(*rng);
    REQUIRE(remove_c.has_value());
    REQUIRE(b->process(remove_c->commit).has_value());
    const auto after = a->encrypt(sim::as_bytes("without carol"), *rng);
    REQUIRE(after.has_value());
    REQUIRE(b->process(*after).has_value());
    const auto update = b->commit(*rng);  // a later epoch still
    REQUIRE(update.has_value());
    REQUIRE(a->process(update->commit).has_value());
    const auto later = a->encrypt(sim::as_bytes("later"), *rng);
    REQUIRE(later.has_value());

    // Loaded as it was: neither the new epoch's messages nor its commits open; after processing the removal the
    // state is dead.
    for (int processed_removal = 0; processed_removal < 2; ++processed_removal) {
        auto old = mls::Group::load(*c_saved);
        REQUIRE(old.has_value());
        if (processed_removal == 1) {
            const auto ev = old->process(remove_c->commit);
            REQUIRE(ev.has_value());
            CHECK(ev->kind == mls::GroupEvent::Kind::removed);
        }
        CHECK_FALSE(old->process(*after).has_value());
        CHECK_FALSE(old->process(update->commit).has_value());
        CHECK_FALSE(old->process(*later).has_value());
        CHECK(old->epoch_authenticator() != a->epoch_authenticator());
    }
}

TEST_CASE("mls::Group: genuine saved states, the seeds of the Group::load fuzz selector") {
    // With SIM_FUZZ_SEED_DIR set, each state is also written there as an input of fuzz_mls_codec (selector 15):
    // SIM_FUZZ_SEED_DIR=tests/fuzz/corpus/fuzz_mls_codec build/tests/unit/test_mls_group -tc='*seeds*'
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls group fuzz seeds"));
    std::vector<std::pair<std::string, sim::SecureBytes>> seeds;
    const auto keep = [&](const std::string& name, const mls::Group& g) {
        auto s = g.save();
        REQUIRE(s.has_value());
        const auto loaded = mls::Group::load(*s);
        REQUIRE(loaded.has_value());
        CHECK(*loaded->save() == *s);
        seeds.emplace_back(name, std::move(*s));
    };
    const auto alone = mls::Group::create(sim::as_bytes("alone"), bundle(*rng, "alice", "phone"), *rng);
    REQUIRE(alone.has_value());
    keep("alone", *alone);
    Trio t(*rng, "seeds");
    auto& [a, b, c] = t;
    keep("joined", *b);
    // Used and skipped ratchet keys, a cached proposal, our own pending Update, a queued Add and removal.
    const auto m1 = a->encrypt(sim::as_bytes("one"), *rng);
    const auto m2 = a->encrypt(sim::as_bytes("two"), *rng);
    REQUIRE((m1 && m2));
    REQUIRE(b->process(*m2).has_value());
    const auto upd = a->propose_update(*rng);
    REQUIRE(upd.has_value());
    REQUIRE(b->process(*upd).has_value());
    REQUIRE(b->propose_update(*rng).has_value());
    REQUIRE(b->add(bundle(*rng, "dave", "phone").key_package).has_value());
    REQUIRE(b->remove(2).has_value());
    keep("busy", *b);

    if (const char* dir = std::getenv("SIM_FUZZ_SEED_DIR")) {
        for (const auto& [name, s] : seeds) {
            std::ofstream out(std::string(dir) + "/mls_load_" + name, std::ios::binary);
            out.put(15);
            out.write(reinterpret_cast<const char*>(s.data()), static_cast<std::streamsize>(s.size()));
            REQUIRE(out.good());
        }
    }
}
