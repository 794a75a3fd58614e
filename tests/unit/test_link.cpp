// Linking a new device (e2e/link.h): the two sides through an honest relay, a wrong code, a server in the middle,
// and bad input at every step.
#include "e2e/link.h"

#include <doctest/doctest.h>

#include <sim/rng.h>

using namespace sim;
using namespace sim::e2e;

namespace {

struct Alice {
    std::unique_ptr<Rng> rng = make_system_rng();
    IdentityKeyPair account = generate_identity(*rng);
    IdentityKeyPair laptop = account;  // device 1 of an upgraded account: its key is the account key
    IdentityKeyPair phone = generate_identity(*rng);

    /// The grant device 1 gives device 2: the account key and list 2 = {1, 2}, issued by device 1.
    LinkGrant grant_for(ByteView phone_key) const {
        DeviceList l{"alice", 2, 1, {ListedDevice{1, laptop.public_key}, ListedDevice{2, Bytes(phone_key.begin(), phone_key.end())}}};
        auto s = sign_device_list(l, account, laptop);
        REQUIRE(s);
        return LinkGrant{account.private_key, *s};
    }
};

Errc code_of(const Status& s) {
    return s ? Errc::ok : s.error().code;
}

/// Both sides of one link, run through the key exchange by an honest relay, up to the code.
struct Link {
    LinkJoiner joiner;
    LinkApprover approver;
};

Link exchanged(Alice& a) {
    auto joiner = LinkJoiner::start(*a.rng, 2, a.phone.public_key);
    REQUIRE(joiner);
    auto approver = LinkApprover::start(*a.rng, joiner->request());
    REQUIRE(approver);
    auto reveal = joiner->reveal(approver->offer());
    REQUIRE(reveal);
    REQUIRE(approver->reveal(*reveal));
    return Link{std::move(*joiner), std::move(*approver)};
}

}  // namespace

TEST_CASE("a new device is linked when the code it shows is typed on the approving device") {
    Alice a;
    auto fresh = LinkJoiner::start(*a.rng, 2, a.phone.public_key);
    REQUIRE(fresh);
    CHECK(fresh->request().size() == link_request_size);
    CHECK(fresh->code().empty());
    auto link = exchanged(a);
    auto* joiner = &link.joiner;
    auto* approver = &link.approver;
    CHECK(approver->device() == 2);
    CHECK(approver->device_key() == a.phone.public_key);
    const std::string code = joiner->code();
    REQUIRE(code.size() == link_code_length + 1);
    CHECK(code[4] == '-');
    // Typed in lower case, without the dash, with a space: the same code.
    std::string typed = code.substr(0, 4) + " " + code.substr(5);
    for (auto& c : typed) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    auto grant = approver->approve(typed, a.grant_for(a.phone.public_key));
    REQUIRE(grant);
    auto got = joiner->accept("alice", *grant);
    REQUIRE(got);
    CHECK(got->account_seed == a.account.private_key);
    CHECK(got->list.list.find(2) != nullptr);
    // Each side is used once.
    const auto again = approver->approve(code, a.grant_for(a.phone.public_key));
    REQUIRE(!again);
    CHECK(again.error().code == Errc::invalid_state);
}

TEST_CASE("a wrong code cancels the link and gives nothing; the right code afterwards does not help") {
    Alice a;
    auto link = exchanged(a);
    auto* joiner = &link.joiner;
    auto* approver = &link.approver;
    std::string wrong = joiner->code();
    wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
    const auto refused = approver->approve(wrong, a.grant_for(a.phone.public_key));
    REQUIRE(!refused);
    CHECK(refused.error().code == Errc::auth_failed);
    const auto later = approver->approve(joiner->code(), a.grant_for(a.phone.public_key));
    REQUIRE(!later);
    CHECK(later.error().code == Errc::invalid_state);
}

TEST_CASE("a server in the middle gets different codes on the two sides and cannot open or forge the grant") {
    Alice a;
    auto joiner = LinkJoiner::start(*a.rng, 2, a.phone.public_key);
    REQUIRE(joiner);
    // The server answers the new device itself, and asks the approver for a device of its own.
    const IdentityKeyPair server_device = generate_identity(*a.rng);
    auto fake_joiner = LinkJoiner::start(*a.rng, 2, server_device.public_key);
    REQUIRE(fake_joiner);
    auto approver = LinkApprover::start(*a.rng, fake_joiner->request());
    REQUIRE(approver);
    auto fake_approver = LinkApprover::start(*a.rng, joiner->request());
    REQUIRE(fake_approver);
    auto reveal = joiner->reveal(fake_approver->offer());
    REQUIRE(reveal);
    REQUIRE(fake_approver->reveal(*reveal));
    auto fake_reveal = fake_joiner->reveal(approver->offer());
    REQUIRE(fake_reveal);
    REQUIRE(approver->reveal(*fake_reveal));
    // The user reads the code on the new device and types it on the approver: it is not the approver's code.
    CHECK(joiner->code() != fake_joiner->code());  // 2^-40 to be equal
    const auto refused = approver->approve(joiner->code(), a.grant_for(server_device.public_key));
    REQUIRE(!refused);
    CHECK(refused.error().code == Errc::auth_failed);

    // Swapping the reveal after the commitment: refused.
    auto j2 = LinkJoiner::start(*a.rng, 2, a.phone.public_key);
    REQUIRE(j2);
    auto ap2 = LinkApprover::start(*a.rng, j2->request());
    REQUIRE(ap2);
    REQUIRE(j2->reveal(ap2->offer()));
    const auto other = crypto::x25519_generate(*a.rng);
    CHECK(code_of(ap2->reveal(other.public_key)) == Errc::auth_failed);
}

TEST_CASE("the new device refuses a grant that is forged, altered or does not admit it") {
    Alice a;
    const auto linked = [&](auto&& check) {
        auto link = exchanged(a);
        check(link.joiner, link.approver);
    };
    linked([&](LinkJoiner& j, LinkApprover& ap) {  // one bit changed on the way
        auto grant = ap.approve(j.code(), a.grant_for(a.phone.public_key));
        REQUIRE(grant);
        (*grant)[5] ^= 1U;
        CHECK(j.accept("alice", *grant).error().code == Errc::auth_failed);
    });
    linked([&](LinkJoiner& j, LinkApprover& ap) {  // a list for another device key
        auto grant = ap.approve(j.code(), a.grant_for(generate_identity(*a.rng).public_key));
        REQUIRE(grant);
        CHECK(j.accept("alice", *grant).error().code == Errc::bad_field);
    });
    linked([&](LinkJoiner& j, LinkApprover& ap) {  // a list not signed by the account key it comes with
        auto g = a.grant_for(a.phone.public_key);
        g.account_seed = generate_identity(*a.rng).private_key;
        auto grant = ap.approve(j.code(), g);
        REQUIRE(grant);
        CHECK(j.accept("alice", *grant).error().code == Errc::auth_failed);
    });
    linked([&](LinkJoiner& j, LinkApprover& ap) {  // another user's list
        auto grant = ap.approve(j.code(), a.grant_for(a.phone.public_key));
        REQUIRE(grant);
        CHECK(j.accept("bob", *grant).error().code == Errc::bad_field);
    });
}

TEST_CASE("link messages from the network are checked for size") {
    Alice a;
    auto joiner = LinkJoiner::start(*a.rng, 2, a.phone.public_key);
    REQUIRE(joiner);
    const Bytes& request = joiner->request();
    for (std::size_t n = 0; n < request.size(); ++n) {
        const auto cut = LinkApprover::start(*a.rng, ByteView(request).first(n));
        REQUIRE(!cut);
        CHECK(cut.error().code == Errc::truncated);
    }
    Bytes longer = request;
    longer.push_back(0);
    CHECK(LinkApprover::start(*a.rng, longer).error().code == Errc::trailing_bytes);
    Bytes device0 = request;
    device0[3] = 0;
    device0[2] = 0;
    CHECK(LinkApprover::start(*a.rng, device0).error().code == Errc::bad_field);
    CHECK(joiner->reveal(Bytes(31, 1)).error().code == Errc::bad_length);
    CHECK(joiner->reveal(Bytes(32, 1)).error().code == Errc::invalid_state);  // a failed step ends the link
    CHECK(LinkJoiner::start(*a.rng, 0, a.phone.public_key).error().code == Errc::invalid_argument);
}
