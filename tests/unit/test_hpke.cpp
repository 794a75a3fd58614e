// Known-answer and negative tests for HPKE (RFC 9180) base mode on the crypto facade (sim/crypto.h):
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM.
//
// Vectors: tests/vectors/hpke/rfc9180_a1_1.vec (RFC 9180 Appendix A.1.1, made by scripts/import_hpke_vectors.py) and
// the zero-shared-secret public keys of tests/vectors/wycheproof/x25519.vec.
#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/error.h>
#include <sim/rng.h>

#include "vec_reader.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

using sim::Bytes;
using sim::ByteView;
using sim::Errc;
using sim::to_hex;
using simtest::read_vec_file;
using simtest::VecRecord;
namespace crypto = sim::crypto;

namespace {

constexpr const char* vec_file = "hpke/rfc9180_a1_1.vec";

std::vector<VecRecord> section(const std::string& name) {
    std::vector<VecRecord> out;
    for (auto& r : read_vec_file(vec_file)) {
        if (r.section == name) {
            out.push_back(std::move(r));
        }
    }
    REQUIRE_MESSAGE(!out.empty(), "no [" << name << "] records in " << vec_file);
    return out;
}

VecRecord setup_record() {
    auto records = section("Setup");
    REQUIRE(records.size() == 1);
    return records.front();
}

/// Public keys whose X25519 output is all zero for every private key (Wycheproof flag ZeroSharedSecret).
std::vector<Bytes> zero_shared_public_keys() {
    std::vector<Bytes> out;
    for (const auto& r : read_vec_file("wycheproof/x25519.vec")) {
        if (r.get("flags").find("ZeroSharedSecret") != std::string::npos) {
            out.push_back(r.hex("public"));
        }
    }
    REQUIRE(!out.empty());
    return out;
}

}  // namespace

TEST_CASE("HPKE DeriveKeyPair matches RFC 9180 A.1.1") {
    const auto s = setup_record();
    const auto e = crypto::hpke_derive_key_pair(s.hex("ikmE"));
    REQUIRE(e.has_value());
    CHECK(to_hex(e->private_key) == s.get("skEm"));
    CHECK(to_hex(e->public_key) == s.get("pkEm"));
    const auto r = crypto::hpke_derive_key_pair(s.hex("ikmR"));
    REQUIRE(r.has_value());
    CHECK(to_hex(r->private_key) == s.get("skRm"));
    CHECK(to_hex(r->public_key) == s.get("pkRm"));
}

TEST_CASE("HPKE base mode: RFC 9180 A.1.1 encryptions and exports") {
    const auto s = setup_record();
    auto sender = crypto::hpke_setup_base_sender_with_ephemeral(s.hex("pkRm"), s.hex("info"), s.hex("skEm"));
    REQUIRE(sender.has_value());
    CHECK(to_hex(sender->enc) == s.get("enc"));
    auto receiver = crypto::hpke_setup_base_receiver(s.hex("enc"), s.hex("skRm"), s.hex("info"));
    REQUIRE(receiver.has_value());

    std::map<std::uint64_t, VecRecord> by_seq;
    for (auto& r : section("Encryptions")) {
        by_seq.emplace(std::stoull(r.get("seq")), std::move(r));
    }
    REQUIRE(by_seq.size() == 6);
    const std::uint64_t last = by_seq.rbegin()->first;

    // The sender seals every sequence number up to the last listed one (the vectors skip some); at the listed ones
    // the ciphertext must be the vector's, and the receiver must open the vector's ciphertext to its plaintext.
    std::size_t checked = 0;
    for (std::uint64_t seq = 0; seq <= last; ++seq) {
        CAPTURE(seq);
        const auto it = by_seq.find(seq);
        const Bytes aad = it != by_seq.end() ? it->second.hex("aad") : Bytes{1, 2, 3};
        const Bytes pt = it != by_seq.end() ? it->second.hex("pt") : Bytes{4, 5, 6};
        REQUIRE(sender->context.sequence() == seq);
        const auto ct = sender->context.seal(aad, pt);
        REQUIRE(ct.has_value());
        const Bytes expected_ct = it != by_seq.end() ? it->second.hex("ct") : *ct;
        if (it != by_seq.end()) {
            CHECK(to_hex(*ct) == to_hex(expected_ct));
            ++checked;
        }
        const auto opened = receiver->open(aad, expected_ct);
        REQUIRE(opened.has_value());
        CHECK(*opened == pt);
    }
    CHECK(checked == by_seq.size());

    std::size_t exports = 0;
    for (const auto& r : section("Exports")) {
        INFO(r.where());
        const auto length = std::stoul(r.get("L"));
        const auto from_sender = sender->context.export_secret(r.hex("exporter_context"), length);
        const auto from_receiver = receiver->export_secret(r.hex("exporter_context"), length);
        REQUIRE(from_sender.has_value());
        REQUIRE(from_receiver.has_value());
        CHECK(to_hex(*from_sender) == r.get("exported_value"));
        CHECK(to_hex(*from_receiver) == r.get("exported_value"));
        ++exports;
    }
    CHECK(exports == 3);
    MESSAGE("RFC 9180 A.1.1: " << checked << " encryptions sealed and opened, " << exports << " exports");
}

TEST_CASE("HPKE open refuses a wrong key, tampered ciphertext, enc and aad, and keeps its sequence number") {
    const auto s = setup_record();
    const auto first = section("Encryptions").front();
    REQUIRE(first.get("seq") == "0");
    const auto ct = first.hex("ct");
    const auto aad = first.hex("aad");

    // Wrong recipient key.
    auto rng = sim::make_deterministic_rng(sim::as_bytes("hpke negative tests"));
    const auto other = crypto::x25519_generate(*rng);
    CHECK(crypto::hpke_open_base(s.hex("enc"), other.private_key, s.hex("info"), aad, ct).code() == Errc::auth_failed);
    // Wrong info (a different context).
    CHECK(crypto::hpke_open_base(s.hex("enc"), s.hex("skRm"), sim::as_bytes("other"), aad, ct).code() ==
          Errc::auth_failed);
    // Wrong aad.
    CHECK(crypto::hpke_open_base(s.hex("enc"), s.hex("skRm"), s.hex("info"), sim::as_bytes("Count-1"), ct).code() ==
          Errc::auth_failed);
    // A flipped bit anywhere in the ciphertext or tag, or in enc.
    auto receiver = crypto::hpke_setup_base_receiver(s.hex("enc"), s.hex("skRm"), s.hex("info"));
    REQUIRE(receiver.has_value());
    for (std::size_t i = 0; i < ct.size() * 8; ++i) {
        Bytes bad = ct;
        bad[i / 8] ^= static_cast<std::uint8_t>(1U << (i % 8));
        CHECK(receiver->open(aad, bad).code() == Errc::auth_failed);
    }
    for (std::size_t i = 0; i < 32 * 8; i += 7) {
        Bytes bad_enc = s.hex("enc");
        bad_enc[i / 8] ^= static_cast<std::uint8_t>(1U << (i % 8));
        const auto opened = crypto::hpke_open_base(bad_enc, s.hex("skRm"), s.hex("info"), aad, ct);
        CHECK(!opened.has_value());
    }
    // Truncated below the tag.
    CHECK(receiver->open(aad, ByteView(ct).first(15)).code() == Errc::auth_failed);
    // None of the failures advanced the sequence number: the genuine ciphertext still opens.
    CHECK(receiver->sequence() == 0);
    const auto opened = receiver->open(aad, ct);
    REQUIRE(opened.has_value());
    CHECK(to_hex(*opened) == first.get("pt"));
    // Replaying it fails: the receiver now expects sequence number 1.
    CHECK(receiver->open(aad, ct).code() == Errc::auth_failed);
}

TEST_CASE("HPKE refuses all-zero DH outputs (low-order public keys, RFC 9180 s7.1.4) and bad sizes") {
    const auto s = setup_record();
    auto rng = sim::make_deterministic_rng(sim::as_bytes("hpke low order"));
    std::size_t refused = 0;
    for (const auto& low : zero_shared_public_keys()) {
        CAPTURE(to_hex(low));
        // As the recipient's public key (sender side) ...
        CHECK(crypto::hpke_setup_base_sender(low, s.hex("info"), *rng).code() == Errc::invalid_key);
        CHECK(crypto::hpke_seal_base(low, {}, {}, sim::as_bytes("x"), *rng).code() == Errc::invalid_key);
        // ... and as the encapsulated key (receiver side).
        CHECK(crypto::hpke_setup_base_receiver(low, s.hex("skRm"), s.hex("info")).code() == Errc::invalid_key);
        ++refused;
    }
    MESSAGE("refused " << refused << " zero-shared-secret public keys");
    for (const std::size_t n : {0, 31, 33}) {
        CHECK(crypto::hpke_setup_base_sender(Bytes(n, 9), {}, *rng).code() == Errc::invalid_key);
        CHECK(crypto::hpke_setup_base_receiver(Bytes(n, 9), s.hex("skRm"), {}).code() == Errc::invalid_key);
        CHECK(crypto::hpke_setup_base_receiver(s.hex("enc"), Bytes(n, 9), {}).code() == Errc::invalid_key);
        CHECK(crypto::hpke_setup_base_sender_with_ephemeral(s.hex("pkRm"), {}, Bytes(n, 9)).code() ==
              Errc::invalid_key);
    }
}

TEST_CASE("HPKE single-shot round trip with a random ephemeral key, export bounds") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("hpke round trip"));
    const auto r = crypto::x25519_generate(*rng);
    const auto info = sim::as_bytes("info");
    const auto aad = sim::as_bytes("aad");
    const auto msg = sim::as_bytes("group secrets");
    const auto sealed = crypto::hpke_seal_base(r.public_key, info, aad, msg, *rng);
    REQUIRE(sealed.has_value());
    CHECK(sealed->enc.size() == crypto::hpke_enc_size);
    CHECK(sealed->ciphertext.size() == msg.size() + crypto::aead_tag_size);
    const auto opened = crypto::hpke_open_base(sealed->enc, r.private_key, info, aad, sealed->ciphertext);
    REQUIRE(opened.has_value());
    CHECK(sim::to_string(*opened) == "group secrets");
    // A second seal uses a fresh ephemeral key.
    const auto again = crypto::hpke_seal_base(r.public_key, info, aad, msg, *rng);
    REQUIRE(again.has_value());
    CHECK(again->enc != sealed->enc);

    auto receiver = crypto::hpke_setup_base_receiver(sealed->enc, r.private_key, info);
    REQUIRE(receiver.has_value());
    CHECK(receiver->export_secret({}, crypto::hpke_max_export).has_value());
    CHECK(receiver->export_secret({}, crypto::hpke_max_export + 1).code() == Errc::invalid_argument);
    CHECK(receiver->export_secret({}, 0).has_value());

    // A moved-from context reports invalid_state instead of crashing.
    auto moved = std::move(*receiver);
    // NOLINTNEXTLINE(bugprone-use-after-move): checking the documented moved-from behaviour
    CHECK(receiver->open(aad, sealed->ciphertext).code() == Errc::invalid_state);
    CHECK(moved.open(aad, sealed->ciphertext).has_value());
}
