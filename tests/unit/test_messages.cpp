#include <sim/messages.h>

#include <doctest/doctest.h>

namespace {
sim::SecureBytes secure(std::string_view s) { return sim::to_bytes<sim::SecureBytes>(sim::as_bytes(s)); }
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
    const sim::IssuedSessionToken t{secure("0123456789abcdef0123456789abcdef"), 1'800'000'000'000};
    const auto wire = sim::encode_session_token(t);
    const auto back = sim::decode_session_token(wire);
    REQUIRE(back);
    CHECK(sim::to_string(back->token) == "0123456789abcdef0123456789abcdef");
    CHECK(back->expires_unix_ms == 1'800'000'000'000);
    CHECK(sim::decode_session_token({})->token.empty());
    CHECK(sim::decode_session_token(sim::ByteView{wire}.first(wire.size() - 1)).code() == sim::Errc::truncated);
    auto longer = wire;
    longer.push_back(1);
    CHECK(sim::decode_session_token(longer).code() == sim::Errc::trailing_bytes);
}

TEST_CASE("key assignment checks suite and key size") {
    sim::KeyAssignment k{sim::SuiteId::tdes_cbc_hmac_sha256, "bob", sim::SecureBytes(24, 7)};
    const auto wire = sim::encode_key_assignment(k);
    const auto back = sim::decode_key_assignment(wire);
    REQUIRE(back);
    CHECK(back->suite == sim::SuiteId::tdes_cbc_hmac_sha256);
    CHECK(back->peer == "bob");
    CHECK(back->key.size() == 24);

    k.key.resize(32);  // 32 bytes do not fit TDES
    CHECK(sim::decode_key_assignment(sim::encode_key_assignment(k)).code() == sim::Errc::invalid_key);
    auto bad_suite = wire;
    bad_suite[0] = 0xEE;
    CHECK(sim::decode_key_assignment(bad_suite).code() == sim::Errc::suite_not_allowed);
    for (std::size_t cut = 0; cut < wire.size(); ++cut) {
        CHECK(sim::decode_key_assignment(sim::ByteView{wire}.first(cut)).code() == sim::Errc::truncated);
    }
    CHECK(sim::decode_key_assignment(sim::encode_key_assignment({sim::SuiteId::aes256_gcm, "", sim::SecureBytes(32)}))
              .code() == sim::Errc::bad_field);
}

TEST_CASE("conversation body and directional keys") {
    const auto wire = sim::encode_conversation_body({9, "Hello Bob!"});
    const auto back = sim::decode_conversation_body(wire);
    REQUIRE(back);
    CHECK(back->sid == 9);
    CHECK(back->text == "Hello Bob!");
    CHECK(sim::decode_conversation_body(sim::ByteView{wire}.first(3)).code() == sim::Errc::truncated);

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
