#include <sim/crypto.h>
#include <sim/messages.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace {
sim::SecureBytes secure(std::string_view s) {
    return sim::to_bytes<sim::SecureBytes>(sim::as_bytes(s));
}

sim::MessageId mid(std::uint8_t seed) {
    sim::MessageId id{};
    for (std::size_t i = 0; i < id.size(); ++i) {
        id[i] = static_cast<std::uint8_t>(seed + i);
    }
    return id;
}

sim::e2e::PrekeyBundle bundle(bool with_opk) {
    sim::e2e::PrekeyBundle b;
    b.identity_key = sim::Bytes(32, 0x11);
    b.signed_prekey_id = 0x01020304;
    b.signed_prekey = sim::Bytes(32, 0x22);
    b.signed_prekey_signature = sim::Bytes(64, 0x33);
    if (with_opk) {
        b.one_time_prekey_id = 77;
        b.one_time_prekey = sim::Bytes(32, 0x44);
    }
    return b;
}

// Every strict prefix of a valid encoding is refused with `code` (truncated for all these formats).
template <typename Decode>
void check_prefixes(const sim::Bytes& wire, Decode decode, sim::Errc code = sim::Errc::truncated) {
    for (std::size_t cut = 0; cut < wire.size(); ++cut) {
        CHECK_MESSAGE(decode(sim::ByteView{wire}.first(cut)).code() == code, cut);
    }
}
}  // namespace

TEST_CASE("credentials round trip and strict decoding") {
    const sim::Credentials c{sim::CredentialKind::password, secure("correct horse")};
    const auto wire = sim::encode_credentials(c);
    const auto back = sim::decode_credentials(wire);
    REQUIRE(back);
    CHECK(back->kind == sim::CredentialKind::password);
    CHECK(sim::to_string(back->secret) == "correct horse");

    for (std::size_t cut = 0; cut < wire.size(); ++cut) {
        CHECK(sim::decode_credentials(sim::ByteView{wire}.first(cut)).code() == sim::Errc::truncated);
    }
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_credentials(longer).code() == sim::Errc::truncated);  // a device id cut short (6.9)
    longer.insert(longer.end(), {0, 0, 0, 0});
    CHECK(sim::decode_credentials(longer).code() == sim::Errc::trailing_bytes);
    auto bad_kind = wire;
    bad_kind[0] = 9;
    CHECK(sim::decode_credentials(bad_kind).code() == sim::Errc::bad_field);
    // kind none must carry no secret; a password must carry one
    CHECK(sim::decode_credentials(sim::encode_credentials({sim::CredentialKind::none, secure("x")})).code() ==
          sim::Errc::bad_field);
    CHECK(sim::decode_credentials(sim::encode_credentials({sim::CredentialKind::password, {}})).code() ==
          sim::Errc::bad_field);
    CHECK(sim::decode_credentials(sim::encode_credentials({sim::CredentialKind::none, {}})));
}

TEST_CASE("session token payload") {
    const sim::IssuedSessionToken t{secure("0123456789abcdef0123456789abcdef"), 1'800'000'000'000, std::nullopt};
    const auto wire = sim::encode_session_token(t);
    const auto back = sim::decode_session_token(wire);
    REQUIRE(back);
    CHECK(sim::to_string(back->token) == "0123456789abcdef0123456789abcdef");
    CHECK(back->expires_unix_ms == 1'800'000'000'000);
    CHECK(sim::decode_session_token({})->token.empty());
    CHECK(sim::decode_session_token(sim::ByteView{wire}.first(wire.size() - 1)).code() == sim::Errc::truncated);
    auto longer = wire;
    longer.push_back(1);
    CHECK(sim::decode_session_token(longer).code() == sim::Errc::truncated);  // a device id cut short
    longer.insert(longer.end(), {0, 0, 0});
    CHECK(sim::decode_session_token(longer)->device == 0x01000000U);
    longer.push_back(1);
    CHECK(sim::decode_session_token(longer).code() == sim::Errc::trailing_bytes);
}

TEST_CASE("session token payload with the device the connection serves (docs/protocol.md 6.9)") {
    // A password login: the token and the device.
    const sim::IssuedSessionToken t{secure("0123456789abcdef0123456789abcdef"), 5, sim::DeviceId{3}};
    const auto back = sim::decode_session_token(sim::encode_session_token(t)).value();
    CHECK(back.device == sim::DeviceId{3});
    CHECK(sim::to_string(back.token) == "0123456789abcdef0123456789abcdef");
    // A token login or a pending device: no token, the device only.
    const auto bare = sim::encode_session_token({{}, 0, sim::DeviceId{2}});
    CHECK(bare == sim::Bytes{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2});
    const auto back_bare = sim::decode_session_token(bare).value();
    CHECK(back_bare.token.empty());
    CHECK(back_bare.device == sim::DeviceId{2});
    // Refused: device 0, and an empty token without a device.
    auto zero = bare;
    zero.back() = 0;
    CHECK(sim::decode_session_token(zero).code() == sim::Errc::bad_field);
    CHECK(sim::decode_session_token(sim::Bytes(9, 0)).code() == sim::Errc::bad_field);
}

TEST_CASE("credentials naming a device (docs/protocol.md 6.9)") {
    const sim::Credentials c{sim::CredentialKind::password, secure("pw"), sim::DeviceId{0}};
    const auto wire = sim::encode_credentials(c);
    CHECK(wire == sim::Bytes{1, 0, 2, 'p', 'w', 0, 0, 0, 0});
    const auto back = sim::decode_credentials(wire).value();
    CHECK(back.device == sim::DeviceId{0});
    CHECK_FALSE(sim::decode_credentials(sim::encode_credentials({sim::CredentialKind::password, secure("pw")}))
                    ->device.has_value());
    CHECK(sim::decode_credentials(sim::ByteView{wire}.first(wire.size() - 1)).code() == sim::Errc::truncated);
    auto longer = wire;
    longer.push_back(9);
    CHECK(sim::decode_credentials(longer).code() == sim::Errc::trailing_bytes);
    CHECK(sim::decode_credentials(sim::Bytes{0, 0, 0, 0, 0, 0, 1}).code() == sim::Errc::bad_field);  // kind none
}

TEST_CASE("password change payload: round trip and every malformed form refused") {
    const sim::PasswordChange c{secure("old secret"), secure("new secret!")};
    const auto wire = sim::encode_password_change(c);
    const auto back = sim::decode_password_change(wire);
    REQUIRE(back);
    CHECK(sim::to_string(back->old_password) == "old secret");
    CHECK(sim::to_string(back->new_password) == "new secret!");

    // Every proper prefix is truncated (inside a length, inside a password, the second one missing).
    for (std::size_t n = 0; n < wire.size(); ++n) {
        CAPTURE(n);
        CHECK(sim::decode_password_change(sim::ByteView{wire}.first(n)).code() == sim::Errc::truncated);
    }
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_password_change(longer).code() == sim::Errc::trailing_bytes);
    // A length that runs past the end of the payload.
    auto past = wire;
    past[0] = 0xff;
    CHECK(sim::decode_password_change(past).code() == sim::Errc::truncated);
    // Empty old or new password.
    CHECK(sim::decode_password_change(sim::encode_password_change({secure(""), secure("new")})).code() ==
          sim::Errc::bad_password);
    CHECK(sim::decode_password_change(sim::encode_password_change({secure("old"), secure("")})).code() ==
          sim::Errc::bad_password);
}

TEST_CASE("key assignment checks suite and key size") {
    sim::KeyAssignment k;
    k.suite = sim::SuiteId::tdes_cbc_hmac_sha256;
    k.peer = "bob";
    k.key = sim::SecureBytes(24, 7);
    const auto wire = sim::encode_key_assignment(k);
    const auto back = sim::decode_key_assignment(wire);
    REQUIRE(back);
    CHECK(back->suite == sim::SuiteId::tdes_cbc_hmac_sha256);
    CHECK(back->peer == "bob");
    CHECK(back->key.size() == 24);

    k.key.resize(32);  // 32 bytes do not fit TDES
    CHECK(sim::decode_key_assignment(sim::encode_key_assignment(k)).code() == sim::Errc::invalid_key);
    CHECK(wire[0] == 1);  // mode 1: server-assigned
    auto bad_suite = wire;
    bad_suite[1] = 0xEE;
    CHECK(sim::decode_key_assignment(bad_suite).code() == sim::Errc::suite_not_allowed);
    for (std::size_t cut = 0; cut < wire.size(); ++cut) {
        CHECK(sim::decode_key_assignment(sim::ByteView{wire}.first(cut)).code() == sim::Errc::truncated);
    }
    k.suite = sim::SuiteId::aes256_gcm;
    k.peer = "";
    k.key = sim::SecureBytes(32);
    CHECK(sim::decode_key_assignment(sim::encode_key_assignment(k)).code() == sim::Errc::bad_field);
}

TEST_CASE("conversation body and directional keys") {
    const sim::WallTime sent{std::chrono::milliseconds{1'700'000'123'456}};
    const auto wire = sim::encode_conversation_body({9, "Hello Bob!", sent});
    CHECK(wire.size() == 4 + 1 + 8 + 10);
    CHECK(wire[4] == 0xFF);
    const auto back = sim::decode_conversation_body(wire);
    REQUIRE(back);
    CHECK(back->sid == 9);
    CHECK(back->text == "Hello Bob!");
    CHECK(back->sent_at == sent);
    // cut inside the sid, or inside the timestamp of the stamped format: truncated; an empty text is allowed
    for (std::size_t cut = 0; cut < 13; ++cut) {
        if (cut == 4) {
            continue;  // the sid alone: an empty body of the older format
        }
        CHECK_MESSAGE(sim::decode_conversation_body(sim::ByteView{wire}.first(cut)).code() == sim::Errc::truncated,
                      cut);
    }
    CHECK(sim::decode_conversation_body(sim::ByteView{wire}.first(13)).value().text.empty());
    // The older format (sid, text: no 0xFF after the sid) still reads, its time unknown.
    const sim::Bytes old{0, 0, 0, 9, 'o', 'l', 'd'};
    const auto old_back = sim::decode_conversation_body(old);
    REQUIRE(old_back);
    CHECK(old_back->sid == 9);
    CHECK(old_back->text == "old");
    CHECK(old_back->sent_at == sim::WallTime{});
    CHECK(sim::decode_conversation_body(sim::ByteView{old}.first(4)).value().text.empty());
    // an absurd sender's time (above 2^63 - 1 ms) is read as the largest one: the message itself is authentic
    auto absurd = wire;
    std::fill(absurd.begin() + 5, absurd.begin() + 13, 0xFF);
    CHECK(sim::decode_conversation_body(absurd).value().sent_at.time_since_epoch().count() ==
          std::numeric_limits<std::int64_t>::max());

    const sim::SecureBytes key(24, 1);
    const auto ab = sim::conversation_direction_key(key, "alice", "bob");
    const auto ba = sim::conversation_direction_key(key, "bob", "alice");
    CHECK(ab.size() == 24);
    CHECK_FALSE(sim::constant_time_equal(ab, ba));
    CHECK(sim::constant_time_equal(ab, sim::conversation_direction_key(key, "alice", "bob")));
    // the separator keeps ("ab","c") and ("a","bc") apart
    CHECK_FALSE(sim::constant_time_equal(sim::conversation_direction_key(key, "ab", "c"),
                                         sim::conversation_direction_key(key, "a", "bc")));
}

TEST_CASE("key assignment, end-to-end mode: bundle round trip and strict decoding") {
    for (const bool with_opk : {true, false}) {
        sim::KeyAssignment k;
        k.mode = sim::ConversationMode::end_to_end;
        k.suite = sim::SuiteId::chacha20_poly1305;
        k.peer = "bob";
        k.bundle = bundle(with_opk);
        const auto wire = sim::encode_key_assignment(k);
        CHECK(wire.size() == 1 + 1 + 3 + 1 + 32 + 4 + 32 + 64 + 1 + (with_opk ? 36 : 0));
        CHECK(wire[0] == 2);
        const auto back = sim::decode_key_assignment(wire);
        REQUIRE(back);
        CHECK(back->mode == sim::ConversationMode::end_to_end);
        CHECK(back->suite == sim::SuiteId::chacha20_poly1305);
        CHECK(back->peer == "bob");
        CHECK(back->key.empty());
        REQUIRE(back->bundle);
        CHECK(*back->bundle == bundle(with_opk));

        check_prefixes(wire, sim::decode_key_assignment);
        auto longer = wire;
        longer.push_back(0);
        CHECK(sim::decode_key_assignment(longer).code() == sim::Errc::trailing_bytes);
        auto bad_mode = wire;
        bad_mode[0] = 4;
        CHECK(sim::decode_key_assignment(bad_mode).code() == sim::Errc::bad_field);
        bad_mode[0] = 0;
        CHECK(sim::decode_key_assignment(bad_mode).code() == sim::Errc::bad_field);
        auto bad_suite = wire;
        bad_suite[5] = 0xEE;  // mode, len, "bob", suite
        CHECK(sim::decode_key_assignment(bad_suite).code() == sim::Errc::suite_not_allowed);
        auto bad_has_opk = wire;
        bad_has_opk[6 + 32 + 4 + 32 + 64] = 2;
        CHECK(sim::decode_key_assignment(bad_has_opk).code() == sim::Errc::bad_field);
    }
    // has_opk flipped to 1 without the OPK bytes: truncated; flipped to 0 with them: trailing bytes.
    sim::KeyAssignment k;
    k.mode = sim::ConversationMode::end_to_end;
    k.peer = "bob";
    k.bundle = bundle(false);
    auto wire = sim::encode_key_assignment(k);
    wire.back() = 1;
    CHECK(sim::decode_key_assignment(wire).code() == sim::Errc::truncated);
    k.bundle = bundle(true);
    wire = sim::encode_key_assignment(k);
    wire[6 + 32 + 4 + 32 + 64] = 0;
    CHECK(sim::decode_key_assignment(wire).code() == sim::Errc::trailing_bytes);
    // reserved OPK id, empty peer, missing bundle
    auto reserved = bundle(true);
    reserved.one_time_prekey_id = sim::e2e::no_one_time_prekey;
    k.bundle = reserved;
    CHECK(sim::decode_key_assignment(sim::encode_key_assignment(k)).code() == sim::Errc::bad_field);
    k.bundle = bundle(true);
    k.peer = "";
    CHECK(sim::decode_key_assignment(sim::encode_key_assignment(k)).code() == sim::Errc::bad_field);
    k.peer = "bob";
    k.bundle.reset();
    CHECK(sim::decode_key_assignment(sim::encode_key_assignment(k)).code() == sim::Errc::truncated);
    CHECK(sim::decode_key_assignment({}).code() == sim::Errc::truncated);
}

TEST_CASE("prekey upload round trip and strict decoding") {
    sim::PrekeyUpload u;
    u.replace = true;
    u.identity_key = sim::Bytes(32, 1);
    u.signed_prekey_id = 9;
    u.signed_prekey = sim::Bytes(32, 2);
    u.signed_prekey_signature = sim::Bytes(64, 3);
    u.one_time_prekeys = {{1, sim::Bytes(32, 4)}, {2, sim::Bytes(32, 5)}};
    const auto wire = sim::encode_prekey_upload(u);
    CHECK(wire.size() == 1 + 32 + 4 + 32 + 64 + 2 + 2 * 36);
    const auto back = sim::decode_prekey_upload(wire);
    REQUIRE(back);
    CHECK(back->replace);
    CHECK(back->identity_key == u.identity_key);
    CHECK(back->signed_prekey_id == 9);
    CHECK(back->signed_prekey == u.signed_prekey);
    CHECK(back->signed_prekey_signature == u.signed_prekey_signature);
    CHECK(back->one_time_prekeys == u.one_time_prekeys);

    check_prefixes(wire, sim::decode_prekey_upload);
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_prekey_upload(longer).code() == sim::Errc::trailing_bytes);
    auto bad_replace = wire;
    bad_replace[0] = 2;
    CHECK(sim::decode_prekey_upload(bad_replace).code() == sim::Errc::bad_field);

    auto dup = u;
    dup.one_time_prekeys[1].first = 1;
    CHECK(sim::decode_prekey_upload(sim::encode_prekey_upload(dup)).code() == sim::Errc::bad_field);
    auto reserved = u;
    reserved.one_time_prekeys[0].first = sim::e2e::no_one_time_prekey;
    CHECK(sim::decode_prekey_upload(sim::encode_prekey_upload(reserved)).code() == sim::Errc::bad_field);

    // the count is checked before the keys: 201 is refused as a field, not as truncated input
    auto many = u;
    many.one_time_prekeys.clear();
    for (std::uint32_t i = 0; i < sim::max_prekeys_per_upload; ++i) {
        many.one_time_prekeys.emplace_back(i, sim::Bytes(32, 6));
    }
    const auto full = sim::encode_prekey_upload(many);
    REQUIRE(sim::decode_prekey_upload(full));
    CHECK(sim::decode_prekey_upload(full)->one_time_prekeys.size() == 200);
    many.one_time_prekeys.emplace_back(1000, sim::Bytes(32, 6));
    CHECK(sim::decode_prekey_upload(sim::encode_prekey_upload(many)).code() == sim::Errc::bad_field);
    auto count_only = sim::Bytes(wire.begin(), wire.begin() + 1 + 32 + 4 + 32 + 64);
    count_only.push_back(0xFF);
    count_only.push_back(0xFF);
    CHECK(sim::decode_prekey_upload(count_only).code() == sim::Errc::bad_field);

    // no one-time prekeys is valid
    auto none = u;
    none.replace = false;
    none.one_time_prekeys.clear();
    const auto none_back = sim::decode_prekey_upload(sim::encode_prekey_upload(none));
    REQUIRE(none_back);
    CHECK_FALSE(none_back->replace);
    CHECK(none_back->one_time_prekeys.empty());
}

TEST_CASE("prekey status round trip and strict decoding") {
    const sim::PrekeyStatus with{sim::Bytes(32, 9), 42};
    const auto wire = sim::encode_prekey_status(with);
    CHECK(wire.size() == 1 + 32 + 4);
    const auto back = sim::decode_prekey_status(wire);
    REQUIRE(back);
    REQUIRE(back->identity_key);
    CHECK(*back->identity_key == sim::Bytes(32, 9));
    CHECK(back->one_time_count == 42);
    check_prefixes(wire, sim::decode_prekey_status);

    const auto without = sim::encode_prekey_status({std::nullopt, 0});
    CHECK(without.size() == 5);
    const auto back2 = sim::decode_prekey_status(without);
    REQUIRE(back2);
    CHECK_FALSE(back2->identity_key);
    check_prefixes(without, sim::decode_prekey_status);

    auto longer = without;
    longer.push_back(0);
    CHECK(sim::decode_prekey_status(longer).code() == sim::Errc::trailing_bytes);
    auto flag = without;
    flag[0] = 2;
    CHECK(sim::decode_prekey_status(flag).code() == sim::Errc::bad_field);
    // has_identity 1 with no key: the count bytes are not enough for a key
    flag[0] = 1;
    CHECK(sim::decode_prekey_status(flag).code() == sim::Errc::truncated);
}

TEST_CASE("envelope round trip and strict decoding") {
    const sim::Envelope e{mid(1), sim::ConversationMode::end_to_end, sim::Bytes{1, 2, 3}};
    const auto wire = sim::encode_envelope(e);
    CHECK(wire.size() == 16 + 1 + 3);
    const auto back = sim::decode_envelope(wire);
    REQUIRE(back);
    CHECK(back->id == mid(1));
    CHECK(back->mode == sim::ConversationMode::end_to_end);
    CHECK(back->body == sim::Bytes{1, 2, 3});
    // a cut inside the id or the mode is truncated; a cut before the body leaves an empty body
    for (std::size_t cut = 0; cut < 17; ++cut) {
        CHECK(sim::decode_envelope(sim::ByteView{wire}.first(cut)).code() == sim::Errc::truncated);
    }
    CHECK(sim::decode_envelope(sim::ByteView{wire}.first(17)).code() == sim::Errc::bad_field);
    auto bad = wire;
    bad[16] = 0;
    CHECK(sim::decode_envelope(bad).code() == sim::Errc::bad_field);
    bad[16] = 3;
    CHECK(sim::decode_envelope(bad).code() == sim::Errc::bad_field);
    const auto sa = sim::decode_envelope(sim::encode_envelope({mid(2), sim::ConversationMode::server_assigned, {7}}));
    REQUIRE(sa);
    CHECK(sa->mode == sim::ConversationMode::server_assigned);
    CHECK(sa->id == mid(2));
}

TEST_CASE("pair conversation id: both orders, SHA-256 of the tagged names, distinct pairs differ") {
    const auto ab = sim::pair_conversation_id("alice", "bob");
    CHECK(ab == sim::pair_conversation_id("bob", "alice"));
    const std::string input = std::string("libsim pair") + '\0' + "alice" + '\0' + "bob";
    const auto digest = sim::crypto::sha256(sim::as_bytes(input));
    CHECK(sim::Bytes(ab.begin(), ab.end()) == sim::Bytes(digest.begin(), digest.begin() + 16));
    // the separator keeps ("ab", "c") and ("a", "bc") apart
    CHECK(sim::pair_conversation_id("ab", "c") != sim::pair_conversation_id("a", "bc"));
    CHECK(ab != sim::pair_conversation_id("alice", "carol"));
}

namespace {
sim::ConversationId cid(std::uint8_t b) {
    sim::ConversationId c{};
    c.fill(b);
    return c;
}
}  // namespace

TEST_CASE("submission round trip and strict decoding") {
    sim::Submission s{mid(1), sim::ConversationMode::end_to_end, cid(0xC0), 3, {{1, {1, 2}}, {4, {9}}}, {}};
    const auto wire = sim::encode_submission(s);
    CHECK(wire.size() == 16 + 1 + 16 + 4 + 1 + (8 + 2) + (8 + 1));
    const auto back = sim::decode_submission(wire);
    REQUIRE(back);
    CHECK(back->id == mid(1));
    CHECK(back->mode == sim::ConversationMode::end_to_end);
    CHECK(back->conversation == cid(0xC0));
    CHECK(back->sender_device == 3);
    CHECK(back->bodies == s.bodies);
    const auto e = sim::decode_envelope(sim::device_envelope(*back, 1));
    REQUIRE(e);
    CHECK(e->id == mid(1));
    CHECK(e->mode == sim::ConversationMode::end_to_end);
    CHECK(e->body == sim::Bytes{9});
    check_prefixes(wire, sim::decode_submission);
    // A byte after the recipient's bodies starts the own-devices list (6.5): a count of 0 is not its encoding.
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_submission(longer).code() == sim::Errc::bad_field);
    longer.back() = 1;
    CHECK(sim::decode_submission(longer).code() == sim::Errc::truncated);
    const auto refused = [](sim::Submission x) { return sim::decode_submission(sim::encode_submission(x)).code(); };
    auto bad = s;
    bad.sender_device = 0;
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    bad.bodies.clear();
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    bad.bodies[0].device = 0;
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    bad.bodies[1].device = 1;  // twice
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    std::swap(bad.bodies[0], bad.bodies[1]);  // not in increasing order
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    bad.bodies[1].body.clear();
    CHECK(refused(bad) == sim::Errc::bad_field);
    auto mode = wire;
    mode[16] = 3;
    CHECK(sim::decode_submission(mode).code() == sim::Errc::bad_field);
    // a count above the limit is refused from the count field alone
    auto many = wire;
    many[16 + 1 + 16 + 4] = sim::max_devices_per_message + 1;
    CHECK(sim::decode_submission(many).code() == sim::Errc::bad_field);
    // a body length past the end is truncated, not read
    auto len = wire;
    len[16 + 1 + 16 + 4 + 1 + 4] = 0xFF;
    CHECK(sim::decode_submission(len).code() == sim::Errc::truncated);
}

TEST_CASE("submission with the sender's own devices: round trip, absent when empty, strict decoding") {
    const sim::Submission s{mid(2), sim::ConversationMode::end_to_end, cid(0xC1),
                            2,      {{1, {1, 2}}, {3, {7}}},           {{1, {5}}, {4, {6, 6}}}};
    const auto wire = sim::encode_submission(s);
    CHECK(wire.size() == 16 + 1 + 16 + 4 + 1 + (8 + 2) + (8 + 1) + 1 + (8 + 1) + (8 + 2));
    const auto back = sim::decode_submission(wire);
    REQUIRE(back);
    CHECK(back->bodies == s.bodies);
    CHECK(back->own_bodies == s.own_bodies);
    // Every prefix is truncated except the one that ends with the recipient's bodies: that is the message without
    // an own list (as a sender from before it writes it).
    const std::size_t own_count_at = 16 + 1 + 16 + 4 + 1 + (8 + 2) + (8 + 1);
    for (std::size_t cut = 0; cut < wire.size(); ++cut) {
        const auto r = sim::decode_submission(sim::ByteView{wire}.first(cut));
        if (cut == own_count_at) {
            REQUIRE(r);
            CHECK(r->own_bodies.empty());
        } else {
            CHECK_MESSAGE(r.code() == sim::Errc::truncated, cut);
        }
    }
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_submission(longer).code() == sim::Errc::trailing_bytes);
    // Without own bodies the payload is exactly the one of senders from before the own list.
    auto none = s;
    none.own_bodies.clear();
    CHECK(sim::encode_submission(none).size() == 16 + 1 + 16 + 4 + 1 + (8 + 2) + (8 + 1));
    CHECK(sim::decode_submission(sim::encode_submission(none))->own_bodies.empty());
    const auto refused = [](sim::Submission x) { return sim::decode_submission(sim::encode_submission(x)).code(); };
    auto bad = s;
    bad.own_bodies[0].device = 2;  // the sender device itself
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    bad.own_bodies[0].device = 0;
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    std::swap(bad.own_bodies[0], bad.own_bodies[1]);
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    bad.own_bodies[1].device = 1;  // twice
    CHECK(refused(bad) == sim::Errc::bad_field);
    bad = s;
    bad.own_bodies[1].body.clear();
    CHECK(refused(bad) == sim::Errc::bad_field);
    // The own count is bounded from its field alone.
    auto many = wire;
    many[own_count_at] = sim::max_own_devices_per_message + 1;
    CHECK(sim::decode_submission(many).code() == sim::Errc::bad_field);
    auto len = wire;
    len[own_count_at + 1 + 4] = 0xFF;
    CHECK(sim::decode_submission(len).code() == sim::Errc::truncated);
}

TEST_CASE("delivery header round trip and strict decoding") {
    const sim::Envelope e{mid(5), sim::ConversationMode::server_assigned, sim::Bytes{4, 5, 6}};
    const auto envelope = sim::encode_envelope(e);
    const sim::WallTime at{std::chrono::milliseconds{1'800'000'000'123}};
    const auto wire = sim::encode_delivered(at, cid(0xAB), 7, envelope);
    REQUIRE(wire.size() == sim::delivery_header_size + envelope.size());
    CHECK(wire[0] == sim::delivery_header_version);
    CHECK(sim::Bytes(wire.begin() + 1, wire.begin() + 9) == sim::Bytes{0, 0, 0x01, 0xA3, 0x18, 0x5C, 0x50, 0x7B});
    CHECK(sim::Bytes(wire.begin() + 9, wire.begin() + 25) == sim::Bytes(16, 0xAB));
    CHECK(sim::Bytes(wire.begin() + 25, wire.begin() + 29) == sim::Bytes{0, 0, 0, 7});
    CHECK(sim::Bytes(wire.begin() + 29, wire.end()) == envelope);
    const auto back = sim::decode_delivered(wire);
    REQUIRE(back);
    CHECK(back->received_at == at);
    CHECK(back->conversation == cid(0xAB));
    CHECK(back->sender_device == 7);
    CHECK(back->envelope.id == mid(5));
    CHECK(back->envelope.mode == sim::ConversationMode::server_assigned);
    CHECK(back->envelope.body == sim::Bytes{4, 5, 6});
    // a cut in the header or the envelope's id and mode: truncated; one before the body: an empty body (bad_field)
    for (std::size_t cut = 0; cut < sim::delivery_header_size + 17; ++cut) {
        CHECK_MESSAGE(sim::decode_delivered(sim::ByteView{wire}.first(cut)).code() == sim::Errc::truncated, cut);
    }
    CHECK(sim::decode_delivered(sim::ByteView{wire}.first(sim::delivery_header_size + 17)).code() ==
          sim::Errc::bad_field);
    for (const std::uint8_t v : {0, 1, 3, 255}) {  // 1: the header before device addresses
        auto bad = wire;
        bad[0] = v;
        CHECK(sim::decode_delivered(bad).code() == sim::Errc::bad_field);
    }
    CHECK(sim::decode_delivered(sim::encode_delivered(at, cid(1), 0, envelope)).code() == sim::Errc::bad_field);
    // a receive time beyond what a time point holds (2^63 - 1 ms) is refused; the largest one is not
    auto far = wire;
    far[1] = 0x80;
    CHECK(sim::decode_delivered(far).code() == sim::Errc::bad_field);
    far[1] = 0x7F;
    std::fill(far.begin() + 2, far.begin() + 9, 0xFF);
    CHECK(sim::decode_delivered(far).value().received_at.time_since_epoch().count() ==
          std::numeric_limits<std::int64_t>::max());
    // a bare envelope (a server without the header) whose first byte is not the version is refused
    REQUIRE(envelope[0] != sim::delivery_header_version);
    CHECK(sim::decode_delivered(envelope).code() == sim::Errc::bad_field);
    // "unknown" goes as 0 and comes back as unknown
    CHECK(sim::decode_delivered(sim::encode_delivered(sim::WallTime{}, cid(1), 1, envelope)).value().received_at ==
          sim::WallTime{});
}

TEST_CASE("ack round trip and strict decoding") {
    const std::vector<sim::MessageId> ids = {mid(1), mid(2), mid(3)};
    const auto wire = sim::encode_ack(ids);
    CHECK(wire.size() == 2 + 3 * 16);
    const auto back = sim::decode_ack(wire);
    REQUIRE(back);
    CHECK(*back == ids);
    check_prefixes(wire, sim::decode_ack);
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_ack(longer).code() == sim::Errc::trailing_bytes);
    CHECK(sim::decode_ack(sim::encode_ack({})).code() == sim::Errc::bad_field);
    std::vector<sim::MessageId> many(sim::max_ids_per_frame, mid(4));
    CHECK(sim::decode_ack(sim::encode_ack(many)));
    many.push_back(mid(5));
    CHECK(sim::decode_ack(sim::encode_ack(many)).code() == sim::Errc::bad_field);
    // a huge count is refused from the count field alone
    CHECK(sim::decode_ack(sim::Bytes{0xFF, 0xFF}).code() == sim::Errc::bad_field);
}

TEST_CASE("receipt round trip and strict decoding") {
    const sim::Receipt rc{"bob", 0x01020304, {mid(1), mid(9)}};
    const auto wire = sim::encode_receipt(rc);
    CHECK(wire.size() == 1 + 3 + 4 + 2 + 32);
    CHECK(sim::Bytes(wire.begin() + 4, wire.begin() + 8) == sim::Bytes{1, 2, 3, 4});  // the device, big-endian
    const auto back = sim::decode_receipt(wire);
    REQUIRE(back);
    CHECK(back->peer == "bob");
    CHECK(back->device == 0x01020304);
    CHECK(back->ids == rc.ids);
    check_prefixes(wire, sim::decode_receipt);
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_receipt(longer).code() == sim::Errc::trailing_bytes);
    CHECK(sim::decode_receipt(sim::encode_receipt({"", 1, {mid(1)}})).code() == sim::Errc::bad_field);
    CHECK(sim::decode_receipt(sim::encode_receipt({"bob", 1, {}})).code() == sim::Errc::bad_field);
    std::vector<sim::MessageId> many(sim::max_ids_per_frame + 1, mid(4));
    CHECK(sim::decode_receipt(sim::encode_receipt({"bob", 1, many})).code() == sim::Errc::bad_field);
}

TEST_CASE("end-to-end content round trip and strict decoding") {
    const sim::WallTime sent{std::chrono::milliseconds{1'700'000'000'042}};
    const sim::ContentAddress to{cid(0x5A), 2, 3};
    const sim::E2eContent c{sim::ContentKind::text, 7, mid(3), "hi", sent, to};
    const auto wire = sim::encode_e2e_content(c);
    CHECK(wire.size() == 1 + 8 + 16 + 24 + 8 + 2);
    CHECK(wire[0] == sim::addressed_text_kind);
    const auto back = sim::decode_e2e_content(wire);
    REQUIRE(back);
    CHECK(back->kind == sim::ContentKind::text);
    CHECK(back->seq == 7);
    CHECK(back->id == mid(3));
    CHECK(back->text == "hi");
    CHECK(back->sent_at == sent);
    CHECK(back->address == to);
    constexpr std::size_t header = 1 + 8 + 16 + 24 + 8;
    for (std::size_t cut = 0; cut < header; ++cut) {
        CHECK_MESSAGE(sim::decode_e2e_content(sim::ByteView{wire}.first(cut)).code() == sim::Errc::truncated, cut);
    }
    // an empty text message is allowed
    CHECK(sim::decode_e2e_content(sim::ByteView{wire}.first(header)));
    // a device 0 in the address is refused
    for (const std::size_t at : {1U + 8 + 16 + 16 + 3, 1U + 8 + 16 + 16 + 4 + 3}) {
        auto zero = wire;
        zero[at] = 0;
        CHECK(sim::decode_e2e_content(zero).code() == sim::Errc::bad_field);
    }
    // kinds sealed before addresses still read, without one: 3 (text with its timestamp) and 1 (text only)
    auto v3 = wire;
    v3.erase(v3.begin() + 25, v3.begin() + 49);
    v3[0] = sim::stamped_text_kind;
    const auto stamped = sim::decode_e2e_content(v3);
    REQUIRE(stamped);
    CHECK(stamped->text == "hi");
    CHECK(stamped->sent_at == sent);
    CHECK_FALSE(stamped->address);
    auto v1 = v3;  // kind 3 without the timestamp
    v1.erase(v1.begin() + 25, v1.begin() + 33);
    v1[0] = 1;
    const auto old = sim::decode_e2e_content(v1);
    REQUIRE(old);
    CHECK(old->kind == sim::ContentKind::text);
    CHECK(old->seq == 7);
    CHECK(old->text == "hi");
    CHECK(old->sent_at == sim::WallTime{});
    CHECK_FALSE(old->address);

    auto bad_kind = wire;
    bad_kind[0] = 6;
    CHECK(sim::decode_e2e_content(bad_kind).code() == sim::Errc::bad_field);
    bad_kind[0] = 0;
    CHECK(sim::decode_e2e_content(bad_kind).code() == sim::Errc::bad_field);
    CHECK(sim::decode_e2e_content(sim::encode_e2e_content({sim::ContentKind::text, 0, mid(3), "hi", {}, to})).code() ==
          sim::Errc::bad_field);

    const auto ro_wire = sim::encode_e2e_content({sim::ContentKind::ratchet_only, 0, mid(4), "", {}, to});
    CHECK(ro_wire[0] == sim::addressed_ratchet_only_kind);
    const auto ro = sim::decode_e2e_content(ro_wire);
    REQUIRE(ro);
    CHECK(ro->kind == sim::ContentKind::ratchet_only);
    CHECK(ro->text.empty());
    CHECK(ro->address == to);
    CHECK(sim::decode_e2e_content(sim::encode_e2e_content({sim::ContentKind::ratchet_only, 0, mid(4), "x", {}, to}))
              .code() == sim::Errc::bad_field);
    CHECK(sim::decode_e2e_content(sim::encode_e2e_content({sim::ContentKind::ratchet_only, 5, mid(4), "", {}, to}))
              .code() == sim::Errc::bad_field);
}

TEST_CASE("conversation mode names") {
    CHECK(sim::conversation_mode_name(sim::ConversationMode::server_assigned) == "server-assigned");
    CHECK(sim::conversation_mode_name(sim::ConversationMode::end_to_end) == "end-to-end");
    CHECK(sim::conversation_mode_name(static_cast<sim::ConversationMode>(9)) == "unknown");
}

TEST_CASE("refusal and limits: round trip and strict decoding (docs/protocol.md 6.6)") {
    const sim::Refusal r{"bob", mid(9), sim::Errc::rate_limited, 42};
    const auto wire = sim::encode_refusal(r);
    CHECK(wire.size() == 1 + 3 + 16 + 2 + 4);
    const auto back = sim::decode_refusal(wire);
    REQUIRE(back);
    CHECK(back->peer == "bob");
    CHECK(back->id == mid(9));
    CHECK(back->code == sim::Errc::rate_limited);
    CHECK(back->expected == 42);
    for (std::size_t cut = 0; cut < wire.size(); ++cut) {
        CHECK(sim::decode_refusal(sim::ByteView{wire}.first(cut)).code() == sim::Errc::truncated);
    }
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_refusal(longer).code() == sim::Errc::trailing_bytes);
    CHECK(sim::decode_refusal(sim::encode_refusal({"", mid(1), sim::Errc::rate_limited, 1})).code() ==
          sim::Errc::bad_field);
    CHECK(sim::decode_refusal(sim::encode_refusal({"bob", mid(1), sim::Errc::ok, 1})).code() == sim::Errc::bad_field);
    CHECK(sim::decode_refusal(sim::encode_refusal({"bob", mid(1), sim::Errc::busy, 0})).code() == sim::Errc::bad_field);

    const sim::ServerLimits l{2000, 4000, 256};
    const auto lw = sim::encode_server_limits(l);
    CHECK(lw.size() == 10);
    const auto lb = sim::decode_server_limits(lw);
    REQUIRE(lb);
    CHECK(lb->messages_per_second == 2000);
    CHECK(lb->message_burst == 4000);
    CHECK(lb->window == 256);
    for (std::size_t cut = 0; cut < lw.size(); ++cut) {
        CHECK(sim::decode_server_limits(sim::ByteView{lw}.first(cut)).code() == sim::Errc::truncated);
    }
    auto lt = lw;
    lt.push_back(1);
    CHECK(sim::decode_server_limits(lt).code() == sim::Errc::trailing_bytes);
    for (const sim::ServerLimits zero :
         {sim::ServerLimits{0, 1, 1}, sim::ServerLimits{1, 0, 1}, sim::ServerLimits{1, 1, 0}}) {
        CHECK(sim::decode_server_limits(sim::encode_server_limits(zero)).code() == sim::Errc::bad_field);
    }
}

TEST_CASE("key assignment, mode 3: account key, signed list and a bundle per device; strict decoding") {
    sim::KeyAssignment k;
    k.mode = sim::ConversationMode::end_to_end;
    k.suite = sim::SuiteId::aes256_gcm;
    k.peer = "bob";
    k.account_key.assign(32, 0xA5);
    k.device_list.assign(200, 0x11);  // opaque here: the client checks it (docs/protocol.md 6.9)
    k.device_bundles = {{1, bundle(true)}, {4, bundle(false)}};
    const auto wire = sim::encode_key_assignment(k);
    CHECK(wire[0] == 3);
    CHECK(wire.size() == 1 + 1 + 3 + 1 + 32 + 4 + 200 + 1 + (4 + 133 + 36) + (4 + 133));
    const auto back = sim::decode_key_assignment(wire);
    REQUIRE(back);
    CHECK(back->mode == sim::ConversationMode::end_to_end);
    CHECK(back->peer == "bob");
    CHECK_FALSE(back->bundle);
    CHECK(back->account_key == k.account_key);
    CHECK(back->device_list == k.device_list);
    REQUIRE(back->device_bundles.size() == 2);
    CHECK(back->device_bundles[0].device == 1);
    CHECK(back->device_bundles[0].bundle == bundle(true));
    CHECK(back->device_bundles[1].device == 4);
    CHECK(back->device_bundles[1].bundle == bundle(false));
    check_prefixes(wire, sim::decode_key_assignment);
    auto longer = wire;
    longer.push_back(0);
    CHECK(sim::decode_key_assignment(longer).code() == sim::Errc::trailing_bytes);
    const auto refused = [&](const sim::KeyAssignment& bad) {
        return sim::decode_key_assignment(sim::encode_key_assignment(bad)).code();
    };
    auto unordered = k;
    std::swap(unordered.device_bundles[0], unordered.device_bundles[1]);
    CHECK(refused(unordered) == sim::Errc::bad_field);
    auto repeated = k;
    repeated.device_bundles[1].device = 1;
    CHECK(refused(repeated) == sim::Errc::bad_field);
    auto zero = k;
    zero.device_bundles[0].device = 0;
    CHECK(refused(zero) == sim::Errc::bad_field);
    auto none = k;
    none.device_bundles.clear();
    CHECK(refused(none) == sim::Errc::bad_field);
    auto huge = k;
    huge.device_list.assign(sim::max_keygen_list_size + 1, 0x11);
    CHECK(refused(huge) == sim::Errc::bad_field);
    auto too_many = k;
    too_many.device_bundles.clear();
    for (sim::DeviceId d = 1; d <= sim::max_keygen_devices + 1; ++d) {
        too_many.device_bundles.push_back({d, bundle(false)});
    }
    CHECK(refused(too_many) == sim::Errc::bad_field);
}
