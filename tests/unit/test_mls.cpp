// MLS (RFC 9420) building blocks: the bounded TLS codec with MLS varints, tree math and the labelled crypto
// operations of ciphersuite 1, against the MLS working group's interop vectors (tests/vectors/mls/, converted by
// scripts/import_mls_vectors.py), plus negative tests for every decoder.
#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/error.h>
#include <sim/rng.h>

#include "../../libsim/src/mls/codec.h"
#include "../../libsim/src/mls/framing.h"
#include "../../libsim/src/mls/group_state.h"
#include "../../libsim/src/mls/join.h"
#include "../../libsim/src/mls/key_schedule.h"
#include "../../libsim/src/mls/message_protection.h"
#include "../../libsim/src/mls/primitives.h"
#include "../../libsim/src/mls/proposals.h"
#include "../../libsim/src/mls/ratchet_tree.h"
#include "../../libsim/src/mls/secret_tree.h"
#include "../../libsim/src/mls/tree_math.h"
#include "../../libsim/src/mls/treekem.h"
#include "../../libsim/src/mls/validation.h"
#include "../../libsim/src/mls/welcome.h"
#include "vec_reader.h"

#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

using sim::Bytes;
using sim::ByteView;
using sim::Errc;
using sim::to_hex;
using simtest::read_vec_file;
using simtest::VecRecord;
namespace mls = sim::mls;
namespace tree = sim::mls::tree;

namespace {

std::vector<VecRecord> section(const std::string& file, const std::string& name) {
    std::vector<VecRecord> out;
    for (auto& r : read_vec_file(file)) {
        if (r.section == name) {
            out.push_back(std::move(r));
        }
    }
    REQUIRE_MESSAGE(!out.empty(), "no [" << name << "] records in " << file);
    return out;
}

Bytes hex(std::string_view s) {
    Bytes out;
    REQUIRE_MESSAGE(sim::from_hex(s, out), "bad hex literal in the test");
    return out;
}

/// "1,-,3" -> {1, nullopt, 3} (the tree-math arrays of optional<uint32>).
std::vector<std::optional<std::uint32_t>> opt_list(const std::string& text) {
    std::vector<std::optional<std::uint32_t>> out;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        if (item == "-") {
            out.emplace_back(std::nullopt);
        } else {
            out.emplace_back(static_cast<std::uint32_t>(std::stoul(item)));
        }
    }
    return out;
}

std::uint32_t u32_of(const VecRecord& r, const std::string& key) {
    return static_cast<std::uint32_t>(std::stoul(r.get(key)));
}

}  // namespace

// ---------------------------------------------------------------- codec

TEST_CASE("MLS varint: deserialization.json headers decode to their lengths and re-encode identically") {
    std::size_t n = 0;
    for (const auto& r : section("mls/deserialization.vec", "VarInt")) {
        INFO(r.where());
        const auto header = r.hex("vlbytes_header");
        const auto length = u32_of(r, "length");
        mls::TlsReader reader(header);
        const auto got = reader.varint();
        REQUIRE(got.has_value());
        CHECK(*got == length);
        CHECK(reader.finish().has_value());
        const auto enc = mls::encode_varint(length);
        REQUIRE(enc.has_value());
        CHECK(to_hex(*enc) == to_hex(header));
        // The header announces `length` bytes that are absent: reading it as a vector must fail without
        // allocating (truncated, or too large for the default bound).
        mls::TlsReader as_vector(header);
        const auto v = as_vector.vector();
        if (length == 0) {
            CHECK(v.has_value());
        } else {
            CHECK((v.code() == Errc::truncated || v.code() == Errc::frame_too_large));
        }
        ++n;
    }
    CHECK(n == 14);
    MESSAGE("deserialization.json: " << n << " of 14 varint headers pass, 0 skipped");
}

TEST_CASE("MLS varint refuses the 0b11 prefix, non-minimal encodings and truncation") {
    for (const auto& bad : {"c0", "ff", "c000000000000000", "4000", "403f", "80000000", "80003fff", "80000001"}) {
        CAPTURE(bad);
        const auto b = hex(bad);
        mls::TlsReader r(b);
        CHECK(r.varint().code() == Errc::bad_field);
    }
    // Minimal boundaries decode.
    for (const auto& [good, value] : {std::pair{"3f", 63U}, std::pair{"4040", 64U}, std::pair{"7fff", 16383U},
                                      std::pair{"80004000", 16384U}, std::pair{"bfffffff", (1U << 30) - 1}}) {
        const auto b = hex(good);
        mls::TlsReader r(b);
        const auto v = r.varint();
        REQUIRE(v.has_value());
        CHECK(*v == value);
    }
    for (const auto& cut : {"", "40", "80", "8000", "800040"}) {
        CAPTURE(cut);
        const auto b = hex(cut);
        mls::TlsReader r(b);
        CHECK(r.varint().code() == Errc::truncated);
    }
    CHECK(mls::encode_varint(mls::max_varint).has_value());
    CHECK(mls::encode_varint(std::uint64_t{mls::max_varint} + 1).code() == Errc::frame_too_large);
    mls::TlsWriter w;
    CHECK(w.varint(std::uint64_t{1} << 40).code() == Errc::frame_too_large);
}

TEST_CASE("MLS codec: integers, vectors, optional, bounds and trailing bytes") {
    mls::TlsWriter w;
    w.u8(0x01);
    w.u16(0x0203);
    w.u32(0x04050607);
    w.u64(0x08090a0b0c0d0e0fULL);
    REQUIRE(w.vector(sim::as_bytes("group")).has_value());
    w.u8(1);
    REQUIRE(w.vector(Bytes(300, 0xaa)).has_value());
    const Bytes encoded = w.bytes();
    CHECK(to_hex(ByteView(encoded).first(21)) ==
          "010203040506070809"
          "0a0b0c0d0e0f0567726f7570");
    {
        mls::TlsReader r(encoded);
        CHECK(*r.u8() == 0x01);
        CHECK(*r.u16() == 0x0203);
        CHECK(*r.u32() == 0x04050607U);
        CHECK(*r.u64() == 0x08090a0b0c0d0e0fULL);
        CHECK(sim::to_string(*r.vector()) == "group");
        CHECK(*r.optional());
        const auto big = r.vector(300);
        REQUIRE(big.has_value());
        CHECK(big->size() == 300);
        CHECK(r.finish().has_value());
    }
    {
        // The same vector with a lower bound is refused, and the reader is left where it was.
        mls::TlsReader r(ByteView(encoded).subspan(21));
        CHECK(*r.optional());
        const auto before = r.position();
        CHECK(r.vector(299).code() == Errc::frame_too_large);
        CHECK(r.position() == before);
    }
    // Every truncation of the encoding fails cleanly somewhere.
    for (std::size_t cut = 0; cut < encoded.size(); ++cut) {
        mls::TlsReader r(ByteView(encoded).first(cut));
        bool failed = !r.u8() || !r.u16() || !r.u32() || !r.u64() || !r.vector() || !r.optional() || !r.vector();
        CHECK(failed);
    }
    // An optional presence byte other than 0/1.
    const Bytes two{2};
    mls::TlsReader opt(two);
    CHECK(opt.optional().code() == Errc::bad_field);
    // Trailing bytes.
    const Bytes extra{0x00, 0x00};
    mls::TlsReader tr(extra);
    CHECK(tr.vector().has_value());
    CHECK(tr.finish().code() == Errc::trailing_bytes);
}

// ---------------------------------------------------------------- tree math

TEST_CASE("MLS tree math: tree-math.json") {
    std::size_t trees = 0;
    std::size_t nodes = 0;
    for (const auto& r : section("mls/tree_math.vec", "TreeMath")) {
        INFO(r.where());
        const auto n = u32_of(r, "n_leaves");
        CHECK(tree::node_width(n) == u32_of(r, "n_nodes"));
        CHECK(tree::root(n) == u32_of(r, "root"));
        const auto left = opt_list(r.get("left"));
        const auto right = opt_list(r.get("right"));
        const auto parent = opt_list(r.get("parent"));
        const auto sibling = opt_list(r.get("sibling"));
        REQUIRE(left.size() == tree::node_width(n));
        REQUIRE(right.size() == left.size());
        REQUIRE(parent.size() == left.size());
        REQUIRE(sibling.size() == left.size());
        for (std::uint32_t i = 0; i < left.size(); ++i) {
            CAPTURE(i);
            CHECK(tree::left(i) == left[i]);
            CHECK(tree::right(i) == right[i]);
            CHECK(tree::parent(i, n) == parent[i]);
            CHECK(tree::sibling(i, n) == sibling[i]);
            ++nodes;
        }
        // Outside the tree there is no parent and no sibling.
        CHECK_FALSE(tree::parent(tree::node_width(n), n).has_value());
        CHECK_FALSE(tree::sibling(tree::node_width(n) + 5, n).has_value());
        ++trees;
    }
    CHECK(trees == 10);
    MESSAGE("tree-math.json: " << trees << " of 10 trees (" << nodes << " nodes) pass, 0 skipped");
}

TEST_CASE("MLS tree math: direct path and copath of a leaf in an 8-leaf tree, degenerate inputs") {
    // Leaf 2 is node 4: parents 5, 3, 7; siblings 6, 1, 11.
    CHECK(tree::direct_path(4, 8) == std::vector<std::uint32_t>{5, 3, 7});
    CHECK(tree::copath(4, 8) == std::vector<std::uint32_t>{6, 1, 11});
    CHECK(tree::direct_path(7, 8).empty());
    CHECK(tree::direct_path(0, 1).empty());
    CHECK(tree::copath(0, 1).empty());
    CHECK_FALSE(tree::parent(0, 0).has_value());
    CHECK_FALSE(tree::parent(0, tree::max_leaves + 1).has_value());
    CHECK_FALSE(tree::left(0xffffffffU) == std::optional<std::uint32_t>{0xffffffffU});
    CHECK_FALSE(tree::parent(0xfffffffeU, tree::max_leaves).has_value());
}

// ---------------------------------------------------------------- crypto basics

TEST_CASE("MLS crypto basics: crypto-basics.json (ciphersuite 1)") {
    const std::string file = "mls/crypto_basics.vec";
    std::size_t n = 0;
    for (const auto& r : section(file, "RefHash")) {
        const auto got = mls::ref_hash(r.get("label"), r.hex("value"));
        REQUIRE(got.has_value());
        CHECK(to_hex(*got) == r.get("out"));
        ++n;
    }
    for (const auto& r : section(file, "ExpandWithLabel")) {
        const auto got =
            mls::expand_with_label(r.hex("secret"), r.get("label"), r.hex("context"), std::stoul(r.get("length")));
        REQUIRE(got.has_value());
        CHECK(to_hex(*got) == r.get("out"));
        ++n;
    }
    for (const auto& r : section(file, "DeriveSecret")) {
        const auto got = mls::derive_secret(r.hex("secret"), r.get("label"));
        REQUIRE(got.has_value());
        CHECK(to_hex(*got) == r.get("out"));
        ++n;
    }
    for (const auto& r : section(file, "DeriveTreeSecret")) {
        const auto got = mls::derive_tree_secret(r.hex("secret"), r.get("label"), u32_of(r, "generation"),
                                                 std::stoul(r.get("length")));
        REQUIRE(got.has_value());
        CHECK(to_hex(*got) == r.get("out"));
        ++n;
    }
    for (const auto& r : section(file, "SignWithLabel")) {
        const auto pub = r.hex("pub");
        const auto content = r.hex("content");
        const auto& label = r.get("label");
        CHECK(mls::verify_with_label(pub, label, content, r.hex("signature")));
        const auto sig = mls::sign_with_label(r.hex("priv"), label, content);
        REQUIRE(sig.has_value());
        CHECK(mls::verify_with_label(pub, label, content, *sig));
        // Ed25519 is deterministic: the same signature as the vector's.
        CHECK(to_hex(*sig) == r.get("signature"));
        // Another label, another content or a flipped bit do not verify.
        CHECK_FALSE(mls::verify_with_label(pub, "Other", content, r.hex("signature")));
        Bytes other = content;
        other[0] ^= 1;
        CHECK_FALSE(mls::verify_with_label(pub, label, other, r.hex("signature")));
        Bytes bad_sig = r.hex("signature");
        bad_sig[10] ^= 0x40;
        CHECK_FALSE(mls::verify_with_label(pub, label, content, bad_sig));
        CHECK_FALSE(mls::verify_with_label(ByteView(pub).first(31), label, content, r.hex("signature")));
        ++n;
    }
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls crypto basics"));
    for (const auto& r : section(file, "EncryptWithLabel")) {
        const auto& label = r.get("label");
        const auto priv = r.hex("priv");
        const auto context = r.hex("context");
        const auto pt = r.hex("plaintext");
        const auto opened = mls::decrypt_with_label(priv, label, context, r.hex("kem_output"), r.hex("ciphertext"));
        REQUIRE(opened.has_value());
        CHECK(to_hex(*opened) == to_hex(pt));
        const auto sealed = mls::encrypt_with_label(r.hex("pub"), label, context, pt, *rng);
        REQUIRE(sealed.has_value());
        const auto again = mls::decrypt_with_label(priv, label, context, sealed->kem_output, sealed->ciphertext);
        REQUIRE(again.has_value());
        CHECK(to_hex(*again) == to_hex(pt));
        // The label and the context are bound in.
        CHECK(mls::decrypt_with_label(priv, "Other", context, r.hex("kem_output"), r.hex("ciphertext")).code() ==
              Errc::auth_failed);
        CHECK(mls::decrypt_with_label(priv, label, Bytes{}, r.hex("kem_output"), r.hex("ciphertext")).code() ==
              Errc::auth_failed);
        ++n;
    }
    CHECK(n == 6);
    MESSAGE("crypto-basics.json: " << n << " of 6 checks (1 test case) pass, 0 skipped");
}

TEST_CASE("MLS ExpandWithLabel bounds and the external key pair") {
    const Bytes secret(32, 7);
    CHECK(mls::expand_with_label(secret, "x", {}, 255 * 32).has_value());
    CHECK(mls::expand_with_label(secret, "x", {}, 255 * 32 + 1).code() == Errc::invalid_argument);
    CHECK(mls::expand_with_label(secret, std::string(256, 'a'), {}, 32).code() == Errc::invalid_argument);
    const auto pair = mls::derive_key_pair(secret);
    REQUIRE(pair.has_value());
    CHECK(pair->public_key.size() == 32);
}

// ---------------------------------------------------------------- key schedule

TEST_CASE("MLS key schedule: key-schedule.json (ciphersuite 1)") {
    std::size_t epochs = 0;
    sim::SecureBytes init_secret;
    std::string current_tc;
    for (const auto& r : section("mls/key_schedule.vec", "Epoch")) {
        INFO(r.where());
        if (r.get("tc") != current_tc) {
            current_tc = r.get("tc");
            init_secret = sim::to_bytes<sim::SecureBytes>(r.hex("initial_init_secret"));
            REQUIRE(r.get("epoch") == "0");
        }
        mls::GroupContext gc;
        gc.group_id = r.hex("group_id");
        gc.epoch = std::stoull(r.get("epoch"));
        gc.tree_hash = r.hex("tree_hash");
        gc.confirmed_transcript_hash = r.hex("confirmed_transcript_hash");
        const auto encoded = gc.encode();
        REQUIRE(encoded.has_value());
        CHECK(to_hex(*encoded) == r.get("group_context"));
        const auto decoded = mls::GroupContext::decode(*encoded);
        REQUIRE(decoded.has_value());
        CHECK(decoded->group_id == gc.group_id);
        CHECK(decoded->epoch == gc.epoch);
        CHECK(decoded->extensions.empty());

        const auto s = mls::derive_epoch_secrets(init_secret, r.hex("commit_secret"), r.hex("psk_secret"), *encoded);
        REQUIRE(s.has_value());
        CHECK(to_hex(s->joiner_secret) == r.get("joiner_secret"));
        CHECK(to_hex(s->welcome_secret) == r.get("welcome_secret"));
        CHECK(to_hex(s->init_secret) == r.get("init_secret"));
        CHECK(to_hex(s->sender_data_secret) == r.get("sender_data_secret"));
        CHECK(to_hex(s->encryption_secret) == r.get("encryption_secret"));
        CHECK(to_hex(s->exporter_secret) == r.get("exporter_secret"));
        CHECK(to_hex(s->epoch_authenticator) == r.get("epoch_authenticator"));
        CHECK(to_hex(s->external_secret) == r.get("external_secret"));
        CHECK(to_hex(s->confirmation_key) == r.get("confirmation_key"));
        CHECK(to_hex(s->membership_key) == r.get("membership_key"));
        CHECK(to_hex(s->resumption_psk) == r.get("resumption_psk"));
        const auto external = mls::derive_key_pair(s->external_secret);
        REQUIRE(external.has_value());
        CHECK(to_hex(external->public_key) == r.get("external_pub"));
        // The exporter label is a string in the JSON (test-vectors.md), even where it looks like hex.
        const auto exported = mls::mls_exporter(s->exporter_secret, sim::as_bytes(r.get("exporter_label")),
                                                r.hex("exporter_context"), std::stoul(r.get("exporter_length")));
        REQUIRE(exported.has_value());
        CHECK(to_hex(*exported) == r.get("exporter_value"));
        // A joiner computes the same epoch from the joiner_secret.
        const auto joined = mls::derive_epoch_secrets_from_joiner(s->joiner_secret, r.hex("psk_secret"), *encoded);
        REQUIRE(joined.has_value());
        CHECK(joined->epoch_authenticator == s->epoch_authenticator);
        init_secret = s->init_secret;
        ++epochs;
    }
    CHECK(epochs == 5);
    MESSAGE("key-schedule.json: " << epochs << " of 5 epochs (1 test case) pass, 0 skipped");
}

TEST_CASE("MLS GroupContext decoder and key schedule refuse malformed input") {
    mls::GroupContext gc;
    gc.group_id = sim::to_bytes(sim::as_bytes("group"));
    gc.epoch = 7;
    gc.tree_hash = Bytes(32, 1);
    gc.confirmed_transcript_hash = Bytes(32, 2);
    gc.extensions = {{3, {1, 2}}, {5, {}}};
    const auto good = gc.encode();
    REQUIRE(good.has_value());
    const auto back = mls::GroupContext::decode(*good);
    REQUIRE(back.has_value());
    CHECK(back->extensions == gc.extensions);
    // Every truncation fails; a trailing byte fails; every single-bit flip either fails or decodes to a different
    // context (never silently to the same one).
    for (std::size_t cut = 0; cut < good->size(); ++cut) {
        CHECK_FALSE(mls::GroupContext::decode(ByteView(*good).first(cut)).has_value());
    }
    Bytes longer = *good;
    longer.push_back(0);
    CHECK(mls::GroupContext::decode(longer).code() == Errc::trailing_bytes);
    for (std::size_t bit = 0; bit < good->size() * 8; ++bit) {
        Bytes flipped = *good;
        flipped[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
        const auto d = mls::GroupContext::decode(flipped);
        if (d) {
            const auto re = d->encode();
            REQUIRE(re.has_value());
            CHECK(*re == flipped);
        }
    }
    Bytes other_version = *good;
    other_version[1] = 2;
    CHECK(mls::GroupContext::decode(other_version).code() == Errc::unsupported_version);
    Bytes other_suite = *good;
    other_suite[3] = 2;
    CHECK(mls::GroupContext::decode(other_suite).code() == Errc::suite_not_allowed);
    // A repeated extension type.
    gc.extensions = {{3, {}}, {3, {}}};
    const auto dup = gc.encode();
    REQUIRE(dup.has_value());
    CHECK(mls::GroupContext::decode(*dup).code() == Errc::bad_field);
    // An oversized tree hash.
    gc.extensions.clear();
    gc.tree_hash = Bytes(33, 1);
    const auto big = gc.encode();
    REQUIRE(big.has_value());
    CHECK(mls::GroupContext::decode(*big).code() == Errc::frame_too_large);

    const Bytes s32(32, 1);
    CHECK(mls::derive_epoch_secrets(Bytes(31, 1), s32, s32, *good).code() == Errc::invalid_argument);
    CHECK(mls::derive_epoch_secrets(s32, Bytes{}, s32, *good).code() == Errc::invalid_argument);
    CHECK(mls::derive_epoch_secrets(s32, s32, Bytes(33, 0), *good).code() == Errc::invalid_argument);
}

// ---------------------------------------------------------------- secret tree

TEST_CASE("MLS secret tree: secret-tree.json (ciphersuite 1)") {
    std::size_t sender_data = 0;
    for (const auto& r : section("mls/secret_tree.vec", "SenderData")) {
        INFO(r.where());
        const auto kn = mls::sender_data_key_nonce(r.hex("sender_data_secret"), r.hex("ciphertext"));
        REQUIRE(kn.has_value());
        CHECK(to_hex(kn->key) == r.get("key"));
        CHECK(to_hex(kn->nonce) == r.get("nonce"));
        ++sender_data;
    }
    // One secret tree per test case; the generations of each leaf are requested in the file's order, receiving
    // side (get) for the handshake ratchet and sending side (next, skipping ahead) for the application ratchet.
    std::size_t generations = 0;
    std::string current_tc;
    std::optional<mls::SecretTree> st;
    std::optional<mls::SecretTree> st_reverse;  // the same tree with leaves derived in reverse order
    for (const auto& r : section("mls/secret_tree.vec", "Leaf")) {
        INFO(r.where());
        if (r.get("tc") != current_tc) {
            current_tc = r.get("tc");
            auto made = mls::SecretTree::create(r.hex("encryption_secret"), u32_of(r, "n_leaves"));
            REQUIRE(made.has_value());
            st.emplace(std::move(*made));
            auto reverse = mls::SecretTree::create(r.hex("encryption_secret"), u32_of(r, "n_leaves"));
            REQUIRE(reverse.has_value());
            for (std::uint32_t leaf = u32_of(r, "n_leaves"); leaf-- > 0;) {
                REQUIRE(reverse->ratchet(leaf, mls::RatchetKind::application).has_value());
            }
            st_reverse.emplace(std::move(*reverse));
        }
        const auto leaf = u32_of(r, "leaf");
        const auto generation = u32_of(r, "generation");
        auto hs = st->ratchet(leaf, mls::RatchetKind::handshake);
        REQUIRE(hs.has_value());
        const auto hk = (*hs)->get(generation);
        REQUIRE(hk.has_value());
        CHECK(hk->generation == generation);
        CHECK(to_hex(hk->key) == r.get("handshake_key"));
        CHECK(to_hex(hk->nonce) == r.get("handshake_nonce"));

        auto app = st->ratchet(leaf, mls::RatchetKind::application);
        REQUIRE(app.has_value());
        REQUIRE((*app)->next_generation() <= generation);
        while ((*app)->next_generation() < generation) {
            REQUIRE((*app)->next().has_value());
        }
        const auto ak = (*app)->next();
        REQUIRE(ak.has_value());
        CHECK(to_hex(ak->key) == r.get("application_key"));
        CHECK(to_hex(ak->nonce) == r.get("application_nonce"));

        auto rev = st_reverse->ratchet(leaf, mls::RatchetKind::application);
        REQUIRE(rev.has_value());
        const auto rk = (*rev)->get(generation);
        REQUIRE(rk.has_value());
        CHECK(to_hex(rk->key) == r.get("application_key"));
        ++generations;
    }
    CHECK(sender_data == 3);
    CHECK(generations == 82);
    MESSAGE("secret-tree.json: " << sender_data << " sender-data checks and " << generations
                                 << " leaf generations (3 test cases) pass, 0 skipped");
}

TEST_CASE("MLS hash ratchet: consumed keys, reordering window, bounded jumps") {
    const Bytes root(32, 9);
    auto made = mls::SecretTree::create(root, 4);
    REQUIRE(made.has_value());
    auto& tree_ = *made;
    auto sender_tree = mls::SecretTree::create(root, 4);
    REQUIRE(sender_tree.has_value());
    auto* send = *sender_tree->ratchet(2, mls::RatchetKind::application);
    auto* recv = *tree_.ratchet(2, mls::RatchetKind::application);
    std::vector<mls::KeyAndNonce> sent;
    for (int i = 0; i < 10; ++i) {
        auto k = send->next();
        REQUIRE(k.has_value());
        sent.push_back(std::move(*k));
    }
    // Out of order within the window: 5 first, then 2, then 0.
    for (const std::uint32_t g : {5U, 2U, 0U, 9U, 7U}) {
        const auto k = recv->get(g);
        REQUIRE(k.has_value());
        CHECK(k->key == sent[g].key);
        CHECK(k->nonce == sent[g].nonce);
    }
    // Each key is handed out once (forward secrecy, duplicates refused).
    for (const std::uint32_t g : {5U, 2U, 0U, 9U, 7U}) {
        CHECK(recv->get(g).code() == Errc::replayed);
    }
    // The untouched skipped ones are still there.
    CHECK(recv->get(1).has_value());
    // A jump past the limit is refused and changes nothing.
    const auto before = recv->next_generation();
    CHECK(recv->get(before + mls::max_generation_jump + 1).code() == Errc::out_of_window);
    CHECK(recv->get(0xffffffffU).code() == Errc::out_of_window);
    CHECK(recv->next_generation() == before);
    // A jump of exactly the limit is accepted; only the last max_skipped_keys skipped keys are kept.
    const auto far = before + mls::max_generation_jump;
    REQUIRE(recv->get(far).has_value());
    CHECK(recv->get(far - 1).has_value());
    CHECK(recv->get(far - mls::max_skipped_keys).has_value());
    CHECK(recv->get(far - mls::max_skipped_keys - 1).code() == Errc::replayed);
    // Different leaves and kinds have different keys; leaves outside the tree are refused.
    auto* other = *tree_.ratchet(1, mls::RatchetKind::application);
    auto* hs = *tree_.ratchet(2, mls::RatchetKind::handshake);
    const auto k_other = other->next();
    const auto k_hs = hs->next();
    REQUIRE(k_other.has_value());
    REQUIRE(k_hs.has_value());
    CHECK(k_other->key != sent[0].key);
    CHECK(k_hs->key != sent[0].key);
    CHECK(tree_.ratchet(4, mls::RatchetKind::application).code() == Errc::invalid_argument);
    // Tree sizes and secret sizes.
    CHECK(mls::SecretTree::create(root, 0).code() == Errc::invalid_argument);
    CHECK(mls::SecretTree::create(root, 3).code() == Errc::invalid_argument);
    CHECK(mls::SecretTree::create(root, tree::max_leaves * 2U).code() == Errc::invalid_argument);
    CHECK(mls::SecretTree::create(Bytes(31, 1), 2).code() == Errc::invalid_argument);
    CHECK(mls::sender_data_key_nonce(Bytes(31, 1), Bytes(40, 0)).code() == Errc::invalid_argument);
    // The largest tree costs no memory up front.
    auto huge = mls::SecretTree::create(root, tree::max_leaves);
    REQUIRE(huge.has_value());
    REQUIRE(huge->ratchet(tree::max_leaves - 1, mls::RatchetKind::handshake).has_value());
}

// ---------------------------------------------------------------- framing and transcript hashes

TEST_CASE("MLS transcript hashes: transcript-hashes.json (ciphersuite 1)") {
    std::size_t n = 0;
    for (const auto& r : section("mls/transcript_hashes.vec", "TranscriptHash")) {
        INFO(r.where());
        const auto raw = r.hex("authenticated_content");
        const auto ac = mls::AuthenticatedContent::decode(raw);
        REQUIRE(ac.has_value());
        REQUIRE(ac->content.content_type == mls::ContentType::commit);
        const auto re = ac->encode();
        REQUIRE(re.has_value());
        CHECK(to_hex(*re) == to_hex(raw));
        const auto confirmed = mls::confirmed_transcript_hash(r.hex("interim_transcript_hash_before"), *ac);
        REQUIRE(confirmed.has_value());
        CHECK(to_hex(*confirmed) == r.get("confirmed_transcript_hash_after"));
        // The confirmation tag is MAC(confirmation_key, confirmed_transcript_hash).
        CHECK(sim::constant_time_equal(mls::mac(r.hex("confirmation_key"), *confirmed), ac->auth.confirmation_tag));
        const auto interim = mls::interim_transcript_hash(*confirmed, ac->auth.confirmation_tag);
        REQUIRE(interim.has_value());
        CHECK(to_hex(*interim) == r.get("interim_transcript_hash_after"));
        ++n;
    }
    CHECK(n == 1);
    MESSAGE("transcript-hashes.json: " << n << " of 1 test case passes, 0 skipped");
}

TEST_CASE("MLS AuthenticatedContent decoder refuses truncated, extended and malformed input") {
    const auto raw = section("mls/transcript_hashes.vec", "TranscriptHash").front().hex("authenticated_content");
    for (std::size_t cut = 0; cut < raw.size(); ++cut) {
        CHECK_FALSE(mls::AuthenticatedContent::decode(ByteView(raw).first(cut)).has_value());
    }
    Bytes longer = raw;
    longer.push_back(0);
    CHECK(mls::AuthenticatedContent::decode(longer).code() == Errc::trailing_bytes);
    // Every single-bit flip is refused or decodes to a structure that re-encodes to exactly the flipped bytes.
    std::size_t refused = 0;
    for (std::size_t bit = 0; bit < raw.size() * 8; ++bit) {
        Bytes flipped = raw;
        flipped[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
        const auto d = mls::AuthenticatedContent::decode(flipped);
        if (!d) {
            ++refused;
            continue;
        }
        const auto re = d->encode();
        REQUIRE(re.has_value());
        CHECK(*re == flipped);
    }
    CHECK(refused > 0);
    // Unknown wire format, sender type, content type.
    Bytes bad = raw;
    bad[1] = 3;  // welcome
    CHECK(mls::AuthenticatedContent::decode(bad).code() == Errc::bad_field);
    // group_id "group" (5 bytes) -> epoch at 8..15, sender type at 16.
    bad = raw;
    REQUIRE(bad[16] == 1);
    bad[16] = 5;
    CHECK(mls::AuthenticatedContent::decode(bad).code() == Errc::bad_field);
    bad = raw;
    REQUIRE(bad[22] == 3);  // sender index 17..20, authenticated_data length 21, content type 22
    bad[22] = 4;
    CHECK(mls::AuthenticatedContent::decode(bad).code() == Errc::bad_field);
    // A confirmation tag shorter than a MAC (found by fuzz_mls_codec: an empty tag decoded but could not be
    // re-encoded). The tag is the last 33 bytes: length 0x20 and 32 bytes.
    {
        REQUIRE(raw[raw.size() - 33] == 0x20);
        Bytes short_tag(raw.begin(), raw.end() - 33);
        short_tag.push_back(0x00);
        CHECK(mls::AuthenticatedContent::decode(short_tag).code() == Errc::bad_length);
        Bytes tag31(raw.begin(), raw.end() - 1);
        tag31[raw.size() - 33] = 0x1f;
        CHECK(mls::AuthenticatedContent::decode(tag31).code() == Errc::bad_length);
    }
    // A commit without its confirmation tag cannot be encoded; a proposal with one neither.
    auto ac = mls::AuthenticatedContent::decode(raw);
    REQUIRE(ac.has_value());
    ac->auth.confirmation_tag.clear();
    CHECK(ac->encode().code() == Errc::invalid_argument);
    CHECK(mls::confirmed_transcript_hash({}, *ac).has_value());
    ac->content.content_type = mls::ContentType::application;
    CHECK(mls::confirmed_transcript_hash({}, *ac).code() == Errc::invalid_argument);
}

// ---------------------------------------------------------------- message protection

namespace {

struct ProtectionCase {
    VecRecord r;
    mls::GroupContext gc;
    Bytes sig_priv;
    Bytes sig_pub;
    mls::SignatureKeyLookup lookup;

    explicit ProtectionCase(VecRecord rec) : r(std::move(rec)) {
        gc.group_id = r.hex("group_id");
        gc.epoch = std::stoull(r.get("epoch"));
        gc.tree_hash = r.hex("tree_hash");
        gc.confirmed_transcript_hash = r.hex("confirmed_transcript_hash");
        sig_priv = r.hex("signature_priv");
        sig_pub = r.hex("signature_pub");
        lookup = [pub = sig_pub](const mls::Sender& s) -> sim::Result<Bytes> {
            if (s.type == mls::SenderType::member && s.index == 1) {
                return pub;
            }
            return Errc::invalid_argument;
        };
    }

    [[nodiscard]] mls::SecretTree tree() const {
        auto t = mls::SecretTree::create(r.hex("encryption_secret"), 2);
        REQUIRE(t.has_value());
        return std::move(*t);
    }

    [[nodiscard]] mls::FramedContent content(mls::ContentType type, const Bytes& body) const {
        mls::FramedContent fc;
        fc.group_id = gc.group_id;
        fc.epoch = gc.epoch;
        fc.sender = mls::Sender{mls::SenderType::member, 1};
        fc.content_type = type;
        fc.content = body;
        return fc;
    }
};

ProtectionCase protection_case() {
    auto records = section("mls/message_protection.vec", "MessageProtection");
    REQUIRE(records.size() == 1);
    return ProtectionCase(std::move(records.front()));
}

}  // namespace

TEST_CASE("MLS message protection: message-protection.json (ciphersuite 1)") {
    const auto c = protection_case();
    const auto membership_key = c.r.hex("membership_key");
    const auto sender_data_secret = c.r.hex("sender_data_secret");
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls message protection"));
    std::size_t checks = 0;
    for (const auto& [name, type] : {std::pair{std::string("proposal"), mls::ContentType::proposal},
                                     std::pair{std::string("commit"), mls::ContentType::commit},
                                     std::pair{std::string("application"), mls::ContentType::application}}) {
        const std::string& label = name;  // clang: structured bindings cannot be captured (C++20)
        CAPTURE(label);
        const auto raw = c.r.hex(name);
        const Bytes tag = type == mls::ContentType::commit ? Bytes(32, 0x5a) : Bytes{};
        auto fc = c.content(type, raw);
        if (type != mls::ContentType::application) {
            // The vector's PublicMessage verifies and carries the raw content.
            const auto pub = mls::unprotect_public(c.r.hex(name + "_pub"), c.gc, membership_key, c.lookup);
            REQUIRE(pub.has_value());
            CHECK(pub->content.content_type == type);
            CHECK(pub->content.sender == mls::Sender{mls::SenderType::member, 1});
            CHECK(to_hex(pub->content.content) == to_hex(raw));
            // Our PublicMessage of the same content verifies.
            const auto signed_ = mls::sign_content(mls::WireFormat::public_message, fc, c.gc, c.sig_priv, tag);
            REQUIRE(signed_.has_value());
            const auto msg = mls::protect_public(*signed_, c.gc, membership_key);
            REQUIRE(msg.has_value());
            const auto back = mls::unprotect_public(*msg, c.gc, membership_key, c.lookup);
            REQUIRE(back.has_value());
            CHECK(back->content.content == raw);
            ++checks;
        } else {
            const auto signed_ = mls::sign_content(mls::WireFormat::public_message, fc, c.gc, c.sig_priv);
            REQUIRE(signed_.has_value());
            CHECK(mls::protect_public(*signed_, c.gc, membership_key).code() == Errc::invalid_argument);
        }
        // The vector's PrivateMessage decrypts with a fresh secret tree and verifies.
        auto receiver = c.tree();
        const auto priv = mls::unprotect_private(c.r.hex(name + "_priv"), c.gc, receiver, sender_data_secret, c.lookup);
        REQUIRE(priv.has_value());
        CHECK(priv->content.content_type == type);
        CHECK(to_hex(priv->content.content) == to_hex(raw));
        // ... once: the same message again is a replay.
        CHECK(mls::unprotect_private(c.r.hex(name + "_priv"), c.gc, receiver, sender_data_secret, c.lookup).code() ==
              Errc::replayed);
        // Our PrivateMessage of the same content decrypts with another fresh tree.
        auto sender_tree = c.tree();
        auto recv_tree = c.tree();
        const auto signed_priv = mls::sign_content(mls::WireFormat::private_message, fc, c.gc, c.sig_priv, tag);
        REQUIRE(signed_priv.has_value());
        const auto msg = mls::protect_private(*signed_priv, c.gc, sender_tree, sender_data_secret, rng->bytes(4), 17);
        REQUIRE(msg.has_value());
        const auto back = mls::unprotect_private(*msg, c.gc, recv_tree, sender_data_secret, c.lookup);
        REQUIRE(back.has_value());
        CHECK(back->content.content == raw);
        checks += 2;
    }
    CHECK(checks == 8);
    MESSAGE("message-protection.json: 1 of 1 test case (" << checks << " protect/unprotect checks) passes, 0 skipped");
}

TEST_CASE("MLS message protection refuses forgeries, tampering, replays and other epochs without changing state") {
    const auto c = protection_case();
    const auto membership_key = c.r.hex("membership_key");
    const auto sender_data_secret = c.r.hex("sender_data_secret");
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls protection negative"));
    const auto app = c.content(mls::ContentType::application, sim::to_bytes(sim::as_bytes("hello group")));

    // B cannot send as A: content signed by another key does not verify under leaf 1's key.
    const auto other_key = sim::crypto::ed25519_generate(*rng);
    {
        auto st = c.tree();
        auto rt = c.tree();
        const auto forged = mls::sign_content(mls::WireFormat::private_message, app, c.gc, other_key.private_key);
        REQUIRE(forged.has_value());
        const auto msg = mls::protect_private(*forged, c.gc, st, sender_data_secret, rng->bytes(4), 0);
        REQUIRE(msg.has_value());
        CHECK(mls::unprotect_private(*msg, c.gc, rt, sender_data_secret, c.lookup).code() == Errc::auth_failed);
        // Signed for the public wire format, sent privately: the signature covers the wire format.
        const auto wrong_wf = mls::sign_content(mls::WireFormat::public_message, app, c.gc, c.sig_priv);
        REQUIRE(wrong_wf.has_value());
        CHECK(mls::protect_private(*wrong_wf, c.gc, st, sender_data_secret, rng->bytes(4), 0).code() ==
              Errc::invalid_argument);
    }
    // Every single-bit flip of a PrivateMessage is refused, and none of them consumes the key: afterwards the genuine
    // message still decrypts, exactly once.
    {
        auto st = c.tree();
        auto rt = c.tree();
        const auto ac = mls::sign_content(mls::WireFormat::private_message, app, c.gc, c.sig_priv);
        REQUIRE(ac.has_value());
        const auto msg = mls::protect_private(*ac, c.gc, st, sender_data_secret, rng->bytes(4), 8);
        REQUIRE(msg.has_value());
        for (std::size_t bit = 0; bit < msg->size() * 8; ++bit) {
            Bytes bad = *msg;
            bad[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
            CHECK_FALSE(mls::unprotect_private(bad, c.gc, rt, sender_data_secret, c.lookup).has_value());
        }
        for (std::size_t cut = 0; cut < msg->size(); ++cut) {
            CHECK_FALSE(
                mls::unprotect_private(ByteView(*msg).first(cut), c.gc, rt, sender_data_secret, c.lookup).has_value());
        }
        CHECK(mls::unprotect_private(*msg, c.gc, rt, sender_data_secret, c.lookup).has_value());
        CHECK(mls::unprotect_private(*msg, c.gc, rt, sender_data_secret, c.lookup).code() == Errc::replayed);
    }
    // Reordering within the window is accepted.
    {
        auto st = c.tree();
        auto rt = c.tree();
        std::vector<Bytes> msgs;
        for (int i = 0; i < 5; ++i) {
            const auto ac = mls::sign_content(mls::WireFormat::private_message, app, c.gc, c.sig_priv);
            REQUIRE(ac.has_value());
            auto m = mls::protect_private(*ac, c.gc, st, sender_data_secret, rng->bytes(4), 0);
            REQUIRE(m.has_value());
            msgs.push_back(std::move(*m));
        }
        for (const int i : {3, 0, 4, 1, 2}) {
            CHECK(mls::unprotect_private(msgs[i], c.gc, rt, sender_data_secret, c.lookup).has_value());
        }
    }
    // Another epoch or group.
    {
        auto st = c.tree();
        auto rt = c.tree();
        const auto ac = mls::sign_content(mls::WireFormat::private_message, app, c.gc, c.sig_priv);
        REQUIRE(ac.has_value());
        const auto msg = mls::protect_private(*ac, c.gc, st, sender_data_secret, rng->bytes(4), 0);
        REQUIRE(msg.has_value());
        auto later = c.gc;
        later.epoch += 1;
        CHECK(mls::unprotect_private(*msg, later, rt, sender_data_secret, c.lookup).code() == Errc::stale_epoch);
        auto earlier = c.gc;
        earlier.epoch -= 1;
        CHECK(mls::unprotect_private(*msg, earlier, rt, sender_data_secret, c.lookup).code() == Errc::epoch_too_far);
        auto other_group = c.gc;
        other_group.group_id.push_back(0);
        CHECK(mls::unprotect_private(*msg, other_group, rt, sender_data_secret, c.lookup).code() == Errc::bad_field);
        CHECK(mls::unprotect_private(*msg, c.gc, rt, Bytes(32, 0), c.lookup).code() == Errc::auth_failed);
        CHECK(mls::unprotect_private(*msg, c.gc, rt, sender_data_secret, c.lookup).has_value());
    }
    // PublicMessage: bit flips, a wrong membership key, truncation.
    {
        const auto pub = c.r.hex("proposal_pub");
        CHECK(mls::unprotect_public(pub, c.gc, Bytes(32, 0), c.lookup).code() == Errc::auth_failed);
        for (std::size_t bit = 0; bit < pub.size() * 8; ++bit) {
            Bytes bad = pub;
            bad[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
            CHECK_FALSE(mls::unprotect_public(bad, c.gc, membership_key, c.lookup).has_value());
        }
        for (std::size_t cut = 0; cut < pub.size(); ++cut) {
            CHECK_FALSE(mls::unprotect_public(ByteView(pub).first(cut), c.gc, membership_key, c.lookup).has_value());
        }
        Bytes longer = pub;
        longer.push_back(0);
        CHECK(mls::unprotect_public(longer, c.gc, membership_key, c.lookup).code() == Errc::trailing_bytes);
    }
    // Bounds of protect_private.
    {
        auto st = c.tree();
        const auto ac = mls::sign_content(mls::WireFormat::private_message, app, c.gc, c.sig_priv);
        REQUIRE(ac.has_value());
        CHECK(mls::protect_private(*ac, c.gc, st, sender_data_secret, Bytes(3, 0), 0).code() == Errc::invalid_argument);
        CHECK(mls::protect_private(*ac, c.gc, st, sender_data_secret, Bytes(4, 0), mls::max_padding + 1).code() ==
              Errc::invalid_argument);
        CHECK(mls::sign_content(mls::WireFormat::private_message, app, c.gc, c.sig_priv, Bytes(32, 1)).code() ==
              Errc::invalid_argument);
    }
}

TEST_CASE("MLS PrivateMessage with non-zero padding is refused (s6.3.1)") {
    const auto c = protection_case();
    const auto sender_data_secret = c.r.hex("sender_data_secret");
    const auto app = c.content(mls::ContentType::application, sim::to_bytes(sim::as_bytes("x")));
    const auto ac = mls::sign_content(mls::WireFormat::private_message, app, c.gc, c.sig_priv);
    REQUIRE(ac.has_value());
    // Build the message by hand as protect_private does, with the given last padding byte.
    auto build = [&](mls::SecretTree& st, std::uint8_t last_padding_byte) {
        mls::TlsWriter pt;
        REQUIRE(pt.vector(app.content).has_value());
        REQUIRE(mls::encode_auth_data(pt, ac->auth, app.content_type).has_value());
        pt.raw(Bytes{0, 0, 0, last_padding_byte});
        auto* ratchet = *st.ratchet(1, mls::RatchetKind::application);
        const auto kn = ratchet->next();
        REQUIRE(kn.has_value());
        mls::TlsWriter aad;
        REQUIRE(aad.vector(c.gc.group_id).has_value());
        aad.u64(c.gc.epoch);
        aad.u8(1);
        REQUIRE(aad.vector({}).has_value());
        auto aead = sim::crypto::make_aead(sim::crypto::AeadAlgorithm::aes128_gcm, kn->key);
        REQUIRE(aead.has_value());
        const auto ct = (*aead)->seal(kn->nonce, aad.bytes(), pt.bytes());  // reuse guard 0
        REQUIRE(ct.has_value());
        mls::TlsWriter sd;
        sd.u32(1);
        sd.u32(kn->generation);
        sd.raw(Bytes(4, 0));
        const auto sd_kn = mls::sender_data_key_nonce(sender_data_secret, *ct);
        REQUIRE(sd_kn.has_value());
        mls::TlsWriter sd_aad;
        REQUIRE(sd_aad.vector(c.gc.group_id).has_value());
        sd_aad.u64(c.gc.epoch);
        sd_aad.u8(1);
        auto sd_aead = sim::crypto::make_aead(sim::crypto::AeadAlgorithm::aes128_gcm, sd_kn->key);
        REQUIRE(sd_aead.has_value());
        const auto esd = (*sd_aead)->seal(sd_kn->nonce, sd_aad.bytes(), sd.bytes());
        REQUIRE(esd.has_value());
        mls::TlsWriter w;
        w.u16(1);
        w.u16(2);
        REQUIRE(w.vector(c.gc.group_id).has_value());
        w.u64(c.gc.epoch);
        w.u8(1);
        REQUIRE(w.vector({}).has_value());
        REQUIRE(w.vector(*esd).has_value());
        REQUIRE(w.vector(*ct).has_value());
        return w.bytes();
    };
    auto st = c.tree();
    auto rt = c.tree();
    const auto bad = build(st, 1);
    CHECK(mls::unprotect_private(bad, c.gc, rt, sender_data_secret, c.lookup).code() == Errc::bad_field);
    auto st2 = c.tree();
    const auto good = build(st2, 0);
    CHECK(mls::unprotect_private(good, c.gc, rt, sender_data_secret, c.lookup).has_value());
}

// ---------------------------------------------------------------- ratchet tree

namespace {

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> out;
    std::string item;
    for (const char ch : text) {
        if (ch == sep) {
            out.push_back(item);
            item.clear();
        } else {
            item.push_back(ch);
        }
    }
    out.push_back(item);
    return out;
}

}  // namespace

TEST_CASE("MLS ratchet tree: tree-validation.json (ciphersuite 1)") {
    std::size_t trees = 0;
    std::size_t nodes = 0;
    for (const auto& r : section("mls/tree_validation.vec", "TreeValidation")) {
        INFO(r.where());
        const auto raw = r.hex("tree");
        const auto t = mls::RatchetTree::decode(raw);
        REQUIRE(t.has_value());
        const auto re = t->encode();
        REQUIRE(re.has_value());
        CHECK(to_hex(*re) == to_hex(raw));
        const auto resolutions = split(r.get("resolutions"), '|');
        const auto hashes = split(r.get("tree_hashes"), ',');
        REQUIRE(resolutions.size() == t->node_count());
        REQUIRE(hashes.size() == t->node_count());
        const auto computed = t->tree_hashes();
        REQUIRE(computed.has_value());
        for (std::uint32_t x = 0; x < t->node_count(); ++x) {
            CAPTURE(x);
            std::vector<std::uint32_t> expected;
            if (!resolutions[x].empty()) {
                for (const auto& n : split(resolutions[x], ',')) {
                    expected.push_back(static_cast<std::uint32_t>(std::stoul(n)));
                }
            }
            CHECK(t->resolution(x) == expected);
            CHECK(to_hex((*computed)[x]) == hashes[x]);
            ++nodes;
        }
        CHECK(t->verify_parent_hashes().has_value());
        CHECK(t->verify_leaf_signatures(r.hex("group_id")).has_value());
        // Another group id breaks the signatures of update / commit leaves (every tree here has a committer).
        Bytes other = r.hex("group_id");
        other[0] ^= 1;
        CHECK(t->verify_leaf_signatures(other).code() == Errc::auth_failed);
        ++trees;
    }
    CHECK(trees == 14);
    MESSAGE(
        "tree-validation.json: " << trees << " of 14 trees (" << nodes
                                 << " nodes: resolution, tree hash; parent hashes, leaf signatures) pass, 0 skipped");
}

TEST_CASE("MLS ratchet tree decoder and validity checks refuse malformed and tampered trees") {
    const auto records = section("mls/tree_validation.vec", "TreeValidation");
    const auto raw = records.at(1).hex("tree");  // a small tree with parents
    for (std::size_t cut = 0; cut < raw.size(); ++cut) {
        CHECK_FALSE(mls::RatchetTree::decode(ByteView(raw).first(cut)).has_value());
    }
    Bytes longer = raw;
    longer.push_back(0);
    CHECK(mls::RatchetTree::decode(longer).code() == Errc::trailing_bytes);
    // Every bit flip: refused by the decoder, or the tree no longer validates, or it re-encodes to the flipped bytes
    // and still validates only if the flip hit a field no check covers (none should remain: count them).
    std::size_t still_valid = 0;
    const auto group_id = records.at(1).hex("group_id");
    for (std::size_t bit = 0; bit < raw.size() * 8; ++bit) {
        Bytes flipped = raw;
        flipped[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
        const auto t = mls::RatchetTree::decode(flipped);
        if (!t) {
            continue;
        }
        const auto re = t->encode();
        REQUIRE(re.has_value());
        CHECK(*re == flipped);
        if (t->verify_parent_hashes() && t->verify_leaf_signatures(group_id)) {
            ++still_valid;
        }
    }
    CHECK(still_valid == 0);
    // A trailing blank node, and a leaf where a parent belongs.
    {
        mls::TlsReader r(raw);
        auto body = r.vector(mls::max_ratchet_tree_size);
        REQUIRE(body.has_value());
        Bytes with_blank(body->begin(), body->end());
        with_blank.push_back(0);  // blank parent
        with_blank.push_back(0);  // blank leaf
        mls::TlsWriter w;
        REQUIRE(w.vector(with_blank).has_value());
        CHECK(mls::RatchetTree::decode(w.bytes()).code() == Errc::bad_field);
    }
    {
        // The second node (index 1) must be a parent: make its type byte say leaf.
        const auto t = mls::RatchetTree::decode(raw);
        REQUIRE(t.has_value());
        REQUIRE_FALSE(t->blank(1));
        mls::TlsWriter w0;
        REQUIRE(t->leaf(0)->encode_into(w0).has_value());
        Bytes bad = raw;
        REQUIRE((raw[0] >> 6) == 1);  // the outer length is a 2-byte varint
        const std::size_t header = 2;
        const std::size_t type_at = header + 2 + w0.bytes().size() + 1;
        REQUIRE(bad[type_at] == 2);
        bad[type_at] = 1;
        CHECK(mls::RatchetTree::decode(bad).code() == Errc::bad_field);
    }
}

TEST_CASE("MLS tree operations: tree-operations.json (ciphersuite 1)") {
    std::size_t n = 0;
    for (const auto& r : section("mls/tree_operations.vec", "TreeOperation")) {
        INFO(r.where());
        auto t = mls::RatchetTree::decode(r.hex("tree_before"));
        REQUIRE(t.has_value());
        const auto before = t->tree_hash(tree::root(t->leaf_count()));
        REQUIRE(before.has_value());
        CHECK(to_hex(*before) == r.get("tree_hash_before"));
        const auto raw = r.hex("proposal");
        mls::TlsReader pr(raw);
        const auto proposal = mls::decode_proposal(pr);
        REQUIRE(proposal.has_value());
        CHECK(pr.finish().has_value());
        CHECK(proposal->encoding == raw);
        const auto sender = u32_of(r, "proposal_sender");
        switch (proposal->type) {
            case mls::ProposalType::add: {
                REQUIRE(proposal->add.has_value());
                CHECK(proposal->add->verify());
                REQUIRE(t->add_leaf(proposal->add->leaf_node).has_value());
                break;
            }
            case mls::ProposalType::update:
                REQUIRE(proposal->update.has_value());
                REQUIRE(t->update_leaf(sender, *proposal->update).has_value());
                break;
            case mls::ProposalType::remove:
                REQUIRE(t->remove_leaf(proposal->removed).has_value());
                break;
            default:
                FAIL("unexpected proposal type");
        }
        const auto after = t->encode();
        REQUIRE(after.has_value());
        CHECK(to_hex(*after) == r.get("tree_after"));
        const auto hash_after = t->tree_hash(tree::root(t->leaf_count()));
        REQUIRE(hash_after.has_value());
        CHECK(to_hex(*hash_after) == r.get("tree_hash_after"));
        ++n;
    }
    CHECK(n == 5);
    MESSAGE("tree-operations.json: " << n << " of 5 (add, update, remove) pass, 0 skipped");
}

TEST_CASE("MLS tree operations refuse absent and blank leaves; proposals decode or fail cleanly") {
    const auto records = section("mls/tree_operations.vec", "TreeOperation");
    auto t = mls::RatchetTree::decode(records.front().hex("tree_before"));
    REQUIRE(t.has_value());
    CHECK(t->remove_leaf(t->leaf_count()).code() == Errc::invalid_argument);
    CHECK(t->update_leaf(t->leaf_count() + 7, mls::LeafNode{}).code() == Errc::invalid_argument);
    for (std::uint32_t i = 0; i < t->leaf_count(); ++i) {
        if (!t->leaf(i)) {
            CHECK(t->remove_leaf(i).code() == Errc::invalid_argument);
        }
    }
    for (const auto& r : records) {
        const auto raw = r.hex("proposal");
        for (std::size_t cut = 0; cut < raw.size(); ++cut) {
            mls::TlsReader pr(ByteView(raw).first(cut));
            CHECK_FALSE(mls::decode_proposal(pr).has_value());
        }
    }
    const Bytes unknown{0x00, 0x08, 0x00};
    mls::TlsReader ur(unknown);
    CHECK(mls::decode_proposal(ur).code() == Errc::bad_field);
}

// ---------------------------------------------------------------- welcome

TEST_CASE("MLS welcome: welcome.json (ciphersuite 1)") {
    std::size_t n = 0;
    for (const auto& r : section("mls/welcome.vec", "Welcome")) {
        INFO(r.where());
        const auto kp = mls::decode_key_package_message(r.hex("key_package"));
        REQUIRE(kp.has_value());
        CHECK(kp->verify());
        const auto welcome = mls::decode_welcome_message(r.hex("welcome"));
        REQUIRE(welcome.has_value());
        const auto secrets = mls::decrypt_group_secrets(*welcome, *kp, r.hex("init_priv"));
        REQUIRE(secrets.has_value());
        const auto gi = mls::decrypt_group_info(*welcome, secrets->joiner_secret);
        REQUIRE(gi.has_value());
        CHECK(gi->verify(r.hex("signer_pub")));
        const auto gc = gi->group_context.encode();
        REQUIRE(gc.has_value());
        const auto epoch = mls::derive_epoch_secrets_from_joiner(secrets->joiner_secret, Bytes(32, 0), *gc);
        REQUIRE(epoch.has_value());
        const auto tag = mls::mac(epoch->confirmation_key, gi->group_context.confirmed_transcript_hash);
        CHECK(sim::constant_time_equal(tag, gi->confirmation_tag));

        // Negative: another init key, a tampered GroupInfo ciphertext, a KeyPackage the Welcome does not name,
        // another signer, truncations.
        auto rng = sim::make_deterministic_rng(sim::as_bytes("welcome negative"));
        const auto other = sim::crypto::x25519_generate(*rng);
        CHECK(mls::decrypt_group_secrets(*welcome, *kp, other.private_key).code() == Errc::auth_failed);
        auto tampered = *welcome;
        tampered.encrypted_group_info[5] ^= 1;
        CHECK(mls::decrypt_group_info(tampered, secrets->joiner_secret).code() == Errc::auth_failed);
        CHECK(mls::decrypt_group_secrets(tampered, *kp, r.hex("init_priv")).code() == Errc::auth_failed);
        auto other_kp = *kp;
        other_kp.init_key[0] ^= 1;
        CHECK(mls::decrypt_group_secrets(*welcome, other_kp, r.hex("init_priv")).code() == Errc::invalid_argument);
        CHECK_FALSE(gi->verify(kp->leaf_node.signature_key));
        const auto raw = r.hex("welcome");
        for (std::size_t cut = 0; cut < raw.size(); cut += 3) {
            CHECK_FALSE(mls::decode_welcome_message(ByteView(raw).first(cut)).has_value());
        }
        const auto raw_kp = r.hex("key_package");
        for (std::size_t cut = 0; cut < raw_kp.size(); ++cut) {
            CHECK_FALSE(mls::decode_key_package_message(ByteView(raw_kp).first(cut)).has_value());
        }
        CHECK(mls::decode_welcome_message(raw_kp).code() == Errc::bad_field);
        ++n;
    }
    CHECK(n == 1);
    MESSAGE("welcome.json: " << n
                             << " of 1 passes (group secrets, group info, signature, confirmation tag), 0 skipped");
}

TEST_CASE("MLS welcome: a Welcome we create is joined by its recipients and by no one else") {
    const auto r = section("mls/welcome.vec", "Welcome").front();
    const auto kp = mls::decode_key_package_message(r.hex("key_package"));
    REQUIRE(kp.has_value());
    const auto welcome = mls::decode_welcome_message(r.hex("welcome"));
    REQUIRE(welcome.has_value());
    const auto secrets = mls::decrypt_group_secrets(*welcome, *kp, r.hex("init_priv"));
    REQUIRE(secrets.has_value());
    const auto gi = mls::decrypt_group_info(*welcome, secrets->joiner_secret);
    REQUIRE(gi.has_value());

    // A second recipient with a fresh init key, signed by a fresh signer.
    auto rng = sim::make_deterministic_rng(sim::as_bytes("welcome create"));
    const auto init2 = sim::crypto::x25519_generate(*rng);
    const auto sig2 = sim::crypto::ed25519_generate(*rng);
    auto kp2 = *kp;
    kp2.init_key = init2.public_key;
    kp2.leaf_node.signature_key = sig2.public_key;
    const auto tbs = kp2.to_be_signed();
    REQUIRE(tbs.has_value());
    const auto kp2_sig = mls::sign_with_label(sig2.private_key, "KeyPackageTBS", *tbs);
    REQUIRE(kp2_sig.has_value());
    kp2.signature = *kp2_sig;
    REQUIRE(kp2.verify());

    auto resigned = *gi;
    REQUIRE(mls::sign_group_info(resigned, 3, sig2.private_key).has_value());
    CHECK(resigned.verify(sig2.public_key));
    CHECK_FALSE(resigned.verify(r.hex("signer_pub")));

    const sim::SecureBytes path_secret(32, 0x77);
    const std::vector<mls::WelcomeRecipient> recipients{mls::WelcomeRecipient{*kp, std::nullopt},
                                                        mls::WelcomeRecipient{kp2, path_secret}};
    const auto made = mls::create_welcome(resigned, secrets->joiner_secret, recipients, *rng);
    REQUIRE(made.has_value());
    const auto wire = mls::encode_welcome_message(*made);
    REQUIRE(wire.has_value());
    const auto back = mls::decode_welcome_message(*wire);
    REQUIRE(back.has_value());
    const auto s1 = mls::decrypt_group_secrets(*back, *kp, r.hex("init_priv"));
    REQUIRE(s1.has_value());
    CHECK(s1->joiner_secret == secrets->joiner_secret);
    CHECK_FALSE(s1->path_secret.has_value());
    const auto s2 = mls::decrypt_group_secrets(*back, kp2, init2.private_key);
    REQUIRE(s2.has_value());
    REQUIRE(s2->path_secret.has_value());
    CHECK(*s2->path_secret == path_secret);
    const auto gi2 = mls::decrypt_group_info(*back, s2->joiner_secret);
    REQUIRE(gi2.has_value());
    CHECK(gi2->verify(sig2.public_key));
    CHECK(gi2->signer == 3);
    // Recipient 1's key does not open recipient 2's entry, nor the other way round.
    CHECK(mls::decrypt_group_secrets(*back, kp2, r.hex("init_priv")).code() == Errc::auth_failed);
    CHECK(mls::decrypt_group_secrets(*back, *kp, init2.private_key).code() == Errc::auth_failed);
    CHECK(mls::create_welcome(resigned, secrets->joiner_secret, {}, *rng).code() == Errc::invalid_argument);
    const std::vector<mls::WelcomeRecipient> one{mls::WelcomeRecipient{*kp, std::nullopt}};
    CHECK(mls::create_welcome(resigned, Bytes(31, 0), one, *rng).code() == Errc::invalid_argument);
}

// ---------------------------------------------------------------- TreeKEM

TEST_CASE("MLS TreeKEM: treekem.json (ciphersuite 1)") {
    const std::string file = "mls/treekem.vec";
    const auto groups = section(file, "Group");
    const auto leaves = section(file, "LeafPrivate");
    const auto paths = section(file, "UpdatePath");
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls treekem"));
    std::size_t decrypted = 0;
    std::size_t merged_paths = 0;
    std::size_t created = 0;
    for (const auto& g : groups) {
        INFO(g.where());
        const auto& tc = g.get("tc");
        const auto tree_ = mls::RatchetTree::decode(g.hex("ratchet_tree"));
        REQUIRE(tree_.has_value());
        const auto group_id = g.hex("group_id");
        mls::GroupContext context;
        context.group_id = group_id;
        context.epoch = std::stoull(g.get("epoch"));
        context.confirmed_transcript_hash = g.hex("confirmed_transcript_hash");

        std::map<std::uint32_t, mls::TreePrivate> privs;
        std::map<std::uint32_t, Bytes> signature_privs;
        for (const auto& l : leaves) {
            if (l.get("tc") != tc) {
                continue;
            }
            mls::TreePrivate p;
            p.leaf = u32_of(l, "index");
            p.leaf_private = sim::to_bytes<sim::SecureBytes>(l.hex("encryption_priv"));
            if (!l.get("path_secrets").empty()) {
                for (const auto& item : split(l.get("path_secrets"), ',')) {
                    const auto colon = item.find(':');
                    p.path_secrets.emplace(static_cast<std::uint32_t>(std::stoul(item.substr(0, colon))),
                                           sim::to_bytes<sim::SecureBytes>(hex(item.substr(colon + 1))));
                }
            }
            CHECK(mls::private_state_consistent(*tree_, p));
            signature_privs[p.leaf] = l.hex("signature_priv");
            privs.emplace(p.leaf, std::move(p));
        }
        REQUIRE(!privs.empty());

        for (const auto& u : paths) {
            if (u.get("tc") != tc) {
                continue;
            }
            INFO(u.where());
            const auto sender = u32_of(u, "sender");
            const auto raw = u.hex("update_path");
            mls::TlsReader pr(raw);
            const auto path = mls::decode_update_path(pr);
            REQUIRE(path.has_value());
            CHECK(pr.finish().has_value());
            mls::TlsWriter re;
            REQUIRE(path->encode_into(re).has_value());
            CHECK(re.bytes() == raw);

            auto merged = *tree_;
            REQUIRE(mls::merge_update_path(merged, sender, *path, group_id).has_value());
            CHECK(merged.verify_parent_hashes().has_value());
            const auto root_hash = merged.tree_hash(tree::root(merged.leaf_count()));
            REQUIRE(root_hash.has_value());
            CHECK(to_hex(*root_hash) == u.get("tree_hash_after"));
            ++merged_paths;
            auto ctx = context;
            ctx.tree_hash = *root_hash;
            const auto encoded = ctx.encode();
            REQUIRE(encoded.has_value());
            const auto expected = split(u.get("path_secrets"), ',');
            for (const auto& [j, priv] : privs) {
                if (j == sender) {
                    continue;
                }
                const std::uint32_t receiver = j;  // clang: structured bindings cannot be captured (C++20)
                CAPTURE(receiver);
                const auto got = mls::decrypt_update_path(merged, sender, *path, priv, *encoded);
                REQUIRE(got.has_value());
                REQUIRE(j < expected.size());
                CHECK(to_hex(got->path_secret) == expected[j]);
                CHECK(to_hex(got->commit_secret) == u.get("commit_secret"));
                ++decrypted;
            }

            // Our own UpdatePath from the same sender: every other member merges it and gets the same commit secret.
            const auto made = mls::create_update_path(*tree_, sender, signature_privs.at(sender), context, *rng);
            REQUIRE(made.has_value());
            CHECK(made->tree.verify_parent_hashes().has_value());
            CHECK(mls::private_state_consistent(made->tree, made->priv));
            auto theirs = *tree_;
            REQUIRE(mls::merge_update_path(theirs, sender, made->path, group_id).has_value());
            const auto their_hash = theirs.tree_hash(tree::root(theirs.leaf_count()));
            REQUIRE(their_hash.has_value());
            CHECK(*their_hash == made->tree_hash);
            auto made_ctx = context;
            made_ctx.tree_hash = made->tree_hash;
            const auto made_encoded = made_ctx.encode();
            REQUIRE(made_encoded.has_value());
            for (const auto& [j, priv] : privs) {
                if (j == sender) {
                    continue;
                }
                const auto got = mls::decrypt_update_path(theirs, sender, made->path, priv, *made_encoded);
                REQUIRE(got.has_value());
                CHECK(got->commit_secret == made->commit_secret);
            }
            ++created;
        }
    }
    CHECK(groups.size() == 11);
    CHECK(merged_paths == 62);
    MESSAGE("treekem.json: " << groups.size() << " of 11 trees, " << merged_paths << " update paths merged, "
                             << decrypted << " path decryptions, " << created
                             << " fresh update paths processed by every member; 0 skipped");
}

TEST_CASE("MLS TreeKEM refuses tampered update paths") {
    const std::string file = "mls/treekem.vec";
    const auto g = section(file, "Group").at(2);
    const auto u = [&] {
        for (const auto& p : section(file, "UpdatePath")) {
            if (p.get("tc") == g.get("tc")) {
                return p;
            }
        }
        FAIL("no update path");
        return VecRecord{};
    }();
    const auto tree_ = mls::RatchetTree::decode(g.hex("ratchet_tree"));
    REQUIRE(tree_.has_value());
    const auto group_id = g.hex("group_id");
    const auto sender = u32_of(u, "sender");
    const auto raw = u.hex("update_path");
    mls::TlsReader pr(raw);
    const auto path = mls::decode_update_path(pr);
    REQUIRE(path.has_value());
    // Another group id (leaf signature), a changed key (parent hash), a missing node, a wrong sender.
    auto t = *tree_;
    CHECK(mls::merge_update_path(t, sender, *path, Bytes{1, 2, 3}).code() == Errc::auth_failed);
    auto bad_key = *path;
    bad_key.nodes.back().encryption_key[0] ^= 1;
    CHECK(mls::merge_update_path(t, sender, bad_key, group_id).code() == Errc::auth_failed);
    auto short_path = *path;
    short_path.nodes.pop_back();
    CHECK(mls::merge_update_path(t, sender, short_path, group_id).code() == Errc::bad_field);
    CHECK(mls::merge_update_path(t, sender ^ 1U, *path, group_id).code() != Errc::ok);
    // None of the failures changed the tree.
    CHECK(t.encode().value() == tree_->encode().value());
    // Truncations of the encoding fail.
    for (std::size_t cut = 0; cut < raw.size(); cut += 7) {
        mls::TlsReader r(ByteView(raw).first(cut));
        CHECK_FALSE(mls::decode_update_path(r).has_value());
    }
}

// ---------------------------------------------------------------- messages (syntax)

TEST_CASE("MLS messages: messages.json - every structure decodes and re-encodes byte for byte") {
    std::map<std::string, std::size_t> passed;
    std::size_t entries = 0;
    auto same = [](const sim::Result<Bytes>& encoded, const Bytes& raw) {
        return encoded.has_value() && *encoded == raw;
    };
    // A structure read from `raw` that must consume all of it and reproduce it.
    auto whole = [](const Bytes& raw, auto&& read) {
        mls::TlsReader r(raw);
        const auto got = read(r);
        return got.has_value() && r.finish().has_value();
    };
    for (const auto& r : section("mls/messages.vec", "Messages")) {
        INFO(r.where());
        auto check = [&](const std::string& field, bool ok) {
            CHECK_MESSAGE(ok, field);
            if (ok) {
                ++passed[field];
            }
        };
        {
            const auto raw = r.hex("mls_welcome");
            const auto w = mls::decode_welcome_message(raw);
            check("mls_welcome", w.has_value() && same(mls::encode_welcome_message(*w), raw));
        }
        {
            const auto raw = r.hex("mls_group_info");
            const auto gi = mls::decode_group_info_message(raw);
            check("mls_group_info", gi.has_value() && same(mls::encode_group_info_message(*gi), raw));
        }
        {
            const auto raw = r.hex("mls_key_package");
            const auto kp = mls::decode_key_package_message(raw);
            check("mls_key_package", kp.has_value() && same(mls::encode_key_package_message(*kp), raw));
        }
        {
            const auto raw = r.hex("ratchet_tree");
            const auto t = mls::RatchetTree::decode(raw);
            check("ratchet_tree", t.has_value() && same(t->encode(), raw));
        }
        {
            const auto raw = r.hex("group_secrets");
            const auto gs = mls::decode_group_secrets(raw);
            const auto re = gs ? gs->encode() : sim::Result<sim::SecureBytes>(Errc::internal);
            check("group_secrets", re.has_value() && Bytes(re->begin(), re->end()) == raw);
        }
        {
            const auto raw = r.hex("add_proposal");
            mls::TlsReader rd(raw);
            const auto kp = mls::decode_key_package(rd);
            mls::TlsWriter w;
            check("add_proposal",
                  kp.has_value() && rd.finish().has_value() && kp->encode_into(w).has_value() && w.bytes() == raw);
        }
        {
            const auto raw = r.hex("update_proposal");
            mls::TlsReader rd(raw);
            const auto leaf = mls::decode_leaf_node(rd);
            mls::TlsWriter w;
            check("update_proposal",
                  leaf.has_value() && rd.finish().has_value() && leaf->encode_into(w).has_value() && w.bytes() == raw);
        }
        check("remove_proposal", whole(r.hex("remove_proposal"), [](mls::TlsReader& rd) { return rd.u32(); }));
        check("pre_shared_key_proposal",
              whole(r.hex("pre_shared_key_proposal"), [](mls::TlsReader& rd) { return mls::read_psk_id(rd); }));
        // ReInit, ExternalInit, GroupContextExtensions: the bodies of proposal types 5, 6, 7.
        for (const auto& [field, type] :
             {std::pair{std::string("re_init_proposal"), 5}, std::pair{std::string("external_init_proposal"), 6},
              std::pair{std::string("group_context_extensions_proposal"), 7}}) {
            Bytes with_type{0, static_cast<std::uint8_t>(type)};
            const auto body = r.hex(field);
            with_type.insert(with_type.end(), body.begin(), body.end());
            mls::TlsReader rd(with_type);
            const auto p = mls::decode_proposal(rd);
            check(field, p.has_value() && rd.finish().has_value() && p->encoding == with_type);
        }
        check("commit", whole(r.hex("commit"), [](mls::TlsReader& rd) { return mls::read_commit(rd); }));
        for (const auto* field : {"public_message_application", "public_message_proposal", "public_message_commit"}) {
            const auto raw = r.hex(field);
            const auto m = mls::decode_public_message(raw);
            check(field, m.has_value() && same(m->encode_message(), raw));
        }
        {
            const auto raw = r.hex("private_message");
            const auto m = mls::decode_private_message(raw);
            check("private_message", m.has_value() && same(m->encode_message(), raw));
        }
        ++entries;
    }
    CHECK(entries == 100);
    std::size_t total = 0;
    for (const auto& [field, count] : passed) {
        const std::string& which = field;  // clang: structured bindings cannot be captured (C++20)
        CHECK_MESSAGE(count == entries, which);
        total += count;
    }
    CHECK(passed.size() == 17);
    MESSAGE("messages.json: " << entries << " of 100 entries, " << total << " of " << entries * 17
                              << " structures decode and re-encode byte for byte, 0 skipped");
}

// ---------------------------------------------------------------- LeafNode and KeyPackage validation

namespace {

struct OwnKeyPackage {
    mls::KeyPackage kp;
    sim::SecureBytes signature_private;
};

/// A KeyPackage built and signed by us (basic credential, MLS 1.0, ciphersuite 1).
OwnKeyPackage make_key_package(sim::Rng& rng, std::string_view identity) {
    const auto sig = sim::crypto::ed25519_generate(rng);
    OwnKeyPackage out;
    out.signature_private = sig.private_key;
    auto& leaf = out.kp.leaf_node;
    leaf.encryption_key = sim::crypto::x25519_generate(rng).public_key;
    leaf.signature_key = sig.public_key;
    leaf.credential.type = 1;
    leaf.credential.identity = sim::to_bytes(sim::as_bytes(identity));
    leaf.capabilities.versions = {1};
    leaf.capabilities.cipher_suites = {1};
    leaf.capabilities.credentials = {1};
    leaf.source = mls::LeafNodeSource::key_package;
    leaf.not_before = 1000;
    leaf.not_after = 2000;
    out.kp.init_key = sim::crypto::x25519_generate(rng).public_key;
    return out;
}

void sign_key_package(OwnKeyPackage& own) {
    REQUIRE(own.kp.leaf_node.sign(own.signature_private, {}, 0).has_value());
    const auto tbs = own.kp.to_be_signed();
    REQUIRE(tbs.has_value());
    const auto sig = mls::sign_with_label(own.signature_private, "KeyPackageTBS", *tbs);
    REQUIRE(sig.has_value());
    own.kp.signature = *sig;
}

}  // namespace

TEST_CASE("MLS LeafNode validation accepts every leaf of the vector trees and the vector KeyPackage") {
    const mls::AcceptBasicCredentials basic;
    std::size_t leaves = 0;
    for (const auto& r : section("mls/tree_validation.vec", "TreeValidation")) {
        INFO(r.where());
        const auto t = mls::RatchetTree::decode(r.hex("tree"));
        REQUIRE(t.has_value());
        const auto group_id = r.hex("group_id");
        for (std::uint32_t i = 0; i < t->leaf_count(); ++i) {
            if (!t->leaf(i)) {
                continue;
            }
            CAPTURE(i);
            mls::LeafNodeContext ctx;
            ctx.expected_source = t->leaf(i)->source;
            ctx.group_id = group_id;
            ctx.leaf_index = i;
            ctx.tree = &*t;
            ctx.replaces = i;
            const auto st = mls::validate_leaf_node(*t->leaf(i), ctx, basic);
            CHECK_MESSAGE(st.has_value(), st.error().message());
            // The same leaf as a newcomer collides with itself (keys must be unique in the group).
            ctx.replaces.reset();
            CHECK(mls::validate_leaf_node(*t->leaf(i), ctx, basic).code() == Errc::bad_field);
            ++leaves;
        }
    }
    CHECK(leaves > 0);
    const auto w = section("mls/welcome.vec", "Welcome").front();
    const auto kp = mls::decode_key_package_message(w.hex("key_package"));
    REQUIRE(kp.has_value());
    const auto st = mls::validate_key_package(*kp, nullptr, std::nullopt, basic);
    CHECK_MESSAGE(st.has_value(), st.error().message());
    MESSAGE("validated " << leaves << " leaves of tree-validation.json and the KeyPackage of welcome.json");
}

TEST_CASE("MLS LeafNode and KeyPackage validation refuse each broken rule") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls validation"));
    const mls::AcceptBasicCredentials basic;
    auto good = make_key_package(*rng, "alice/phone");
    sign_key_package(good);
    REQUIRE(mls::validate_key_package(good.kp, nullptr, 1500, basic).has_value());
    REQUIRE(mls::validate_key_package(good.kp, nullptr, std::nullopt, basic).has_value());

    // Lifetime.
    CHECK(mls::validate_key_package(good.kp, nullptr, 999, basic).code() == Errc::key_expired);
    CHECK(mls::validate_key_package(good.kp, nullptr, 2001, basic).code() == Errc::key_expired);
    // Signatures: a changed field without re-signing.
    {
        auto k = good.kp;
        k.init_key[0] ^= 1;
        CHECK(mls::validate_key_package(k, nullptr, std::nullopt, basic).code() == Errc::auth_failed);
        auto l = good.kp;
        l.leaf_node.credential.identity.push_back('x');
        CHECK(mls::validate_key_package(l, nullptr, std::nullopt, basic).code() == Errc::auth_failed);
    }
    // Each rule broken and then properly re-signed.
    auto broken = [&](auto&& mutate) {
        auto k = good;
        mutate(k);
        sign_key_package(k);
        return mls::validate_key_package(k.kp, nullptr, std::nullopt, basic).code();
    };
    CHECK(broken([](OwnKeyPackage& k) { k.kp.leaf_node.capabilities.versions = {2}; }) == Errc::unsupported_version);
    CHECK(broken([](OwnKeyPackage& k) { k.kp.leaf_node.capabilities.cipher_suites = {3}; }) == Errc::suite_not_allowed);
    CHECK(broken([](OwnKeyPackage& k) { k.kp.leaf_node.credential.type = 2; }) == Errc::not_implemented);
    CHECK(broken([](OwnKeyPackage& k) { k.kp.leaf_node.extensions = {{0x0a0a, {}}}; }) == Errc::bad_field);
    CHECK(broken([](OwnKeyPackage& k) {
              k.kp.leaf_node.extensions = {{0x0a0a, {}}};
              k.kp.leaf_node.capabilities.extensions = {0x0a0a};
          }) == Errc::ok);
    CHECK(broken([](OwnKeyPackage& k) { k.kp.init_key = k.kp.leaf_node.encryption_key; }) == Errc::invalid_key);
    CHECK(broken([](OwnKeyPackage& k) { k.kp.init_key.pop_back(); }) == Errc::invalid_key);
    CHECK(broken([](OwnKeyPackage& k) { k.kp.version = 2; }) == Errc::unsupported_version);
    CHECK(broken([](OwnKeyPackage& k) { k.kp.cipher_suite = 2; }) == Errc::suite_not_allowed);
    CHECK(broken([](OwnKeyPackage& k) { k.kp.leaf_node.source = mls::LeafNodeSource::update; }) == Errc::bad_field);

    // A credential validator that refuses.
    class RefuseAll final : public mls::CredentialValidator {
    public:
        [[nodiscard]] sim::Status validate(const mls::Credential&, ByteView) const override {
            return Errc::auth_rejected;
        }
    };
    CHECK(mls::validate_key_package(good.kp, nullptr, std::nullopt, RefuseAll{}).code() == Errc::auth_rejected);

    // Uniqueness against a tree holding the same keys, and an update that keeps its encryption key.
    const auto records = section("mls/tree_validation.vec", "TreeValidation");
    auto t = mls::RatchetTree::decode(records.at(1).hex("tree"));
    REQUIRE(t.has_value());
    const auto added = t->add_leaf(good.kp.leaf_node);
    REQUIRE(added.has_value());
    CHECK(mls::validate_key_package(good.kp, &*t, std::nullopt, basic).code() == Errc::bad_field);
    auto update = good.kp.leaf_node;
    update.source = mls::LeafNodeSource::update;
    const Bytes group_id{1, 2, 3};
    REQUIRE(update.sign(good.signature_private, group_id, *added).has_value());
    mls::LeafNodeContext ctx;
    ctx.expected_source = mls::LeafNodeSource::update;
    ctx.group_id = group_id;
    ctx.leaf_index = *added;
    ctx.tree = &*t;
    ctx.replaces = *added;
    CHECK(mls::validate_leaf_node(update, ctx, basic).code() == Errc::bad_field);
    update.encryption_key = sim::crypto::x25519_generate(*rng).public_key;
    REQUIRE(update.sign(good.signature_private, group_id, *added).has_value());
    CHECK(mls::validate_leaf_node(update, ctx, basic).has_value());
    // Signed for another leaf index or group: refused.
    ctx.leaf_index = *added + 1;
    CHECK(mls::validate_leaf_node(update, ctx, basic).code() == Errc::auth_failed);
}

// ---------------------------------------------------------------- joining from a Welcome

TEST_CASE("MLS join from Welcome: the join of every passive-client-*.json scenario") {
    const mls::AcceptBasicCredentials basic;
    std::size_t joined = 0;
    std::vector<std::string> skipped;
    for (const auto& r : section("mls/passive_client_join.vec", "Join")) {
        const auto name = r.get("source") + "#" + r.get("n");
        INFO(name);
        mls::TlsReader kr(r.hex("key_package"));
        // The file holds an MLSMessage(KeyPackage).
        const auto kp = mls::decode_key_package_message(r.hex("key_package"));
        REQUIRE(kp.has_value());
        // The private keys belong to the KeyPackage.
        const auto sig = sim::crypto::ed25519_from_seed(r.hex("signature_priv"));
        REQUIRE(sig.has_value());
        CHECK(sig->public_key == kp->leaf_node.signature_key);
        const auto enc = sim::crypto::x25519_from_private(r.hex("encryption_priv"));
        REQUIRE(enc.has_value());
        CHECK(enc->public_key == kp->leaf_node.encryption_key);
        const auto init = sim::crypto::x25519_from_private(r.hex("init_priv"));
        REQUIRE(init.has_value());
        CHECK(init->public_key == kp->init_key);

        const auto welcome = mls::decode_welcome_message(r.hex("welcome"));
        REQUIRE(welcome.has_value());
        mls::JoinKeys keys{*kp, sim::to_bytes<sim::SecureBytes>(r.hex("init_priv")),
                           sim::to_bytes<sim::SecureBytes>(r.hex("encryption_priv"))};
        std::optional<Bytes> tree_bytes;
        if (r.get("ratchet_tree") != "-") {
            tree_bytes = r.hex("ratchet_tree");
        }
        const auto g = mls::join_from_welcome(*welcome, keys, tree_bytes, basic);
        if (g.code() == Errc::not_implemented) {
            skipped.push_back(name + " (the Welcome names PSKs; PSKs are left out)");
            continue;
        }
        REQUIRE_MESSAGE(g.has_value(), g.error().message());
        CHECK(to_hex(g->secrets.epoch_authenticator) == r.get("initial_epoch_authenticator"));
        CHECK(mls::private_state_consistent(g->tree, g->own_private));
        ++joined;
    }
    for (const auto& s : skipped) {
        MESSAGE("skipped " << s);
    }
    CHECK(joined > 0);
    MESSAGE("passive-client joins: " << joined << " of " << joined + skipped.size() << " pass (epoch authenticator), "
                                     << skipped.size() << " skipped; the epochs after the join are not processed yet");
}

TEST_CASE("MLS join from Welcome refuses a wrong tree, wrong keys and a refusing credential validator") {
    const mls::AcceptBasicCredentials basic;
    const auto records = section("mls/passive_client_join.vec", "Join");
    const VecRecord* with_tree = nullptr;
    const VecRecord* other = nullptr;
    for (const auto& r : records) {
        if (r.get("source") == "passive-client-welcome.json" && r.get("ratchet_tree") != "-" && with_tree == nullptr &&
            r.get("external_psks") == "0") {
            with_tree = &r;
        } else if (r.get("ratchet_tree") != "-") {
            other = &r;
        }
    }
    REQUIRE(with_tree != nullptr);
    REQUIRE(other != nullptr);
    const auto& r = *with_tree;
    const auto kp = mls::decode_key_package_message(r.hex("key_package"));
    REQUIRE(kp.has_value());
    const auto welcome = mls::decode_welcome_message(r.hex("welcome"));
    REQUIRE(welcome.has_value());
    const mls::JoinKeys keys{*kp, sim::to_bytes<sim::SecureBytes>(r.hex("init_priv")),
                             sim::to_bytes<sim::SecureBytes>(r.hex("encryption_priv"))};
    const std::optional<Bytes> tree_bytes = r.hex("ratchet_tree");
    REQUIRE(mls::join_from_welcome(*welcome, keys, tree_bytes, basic).has_value());
    // Another group's tree.
    CHECK_FALSE(mls::join_from_welcome(*welcome, keys, other->hex("ratchet_tree"), basic).has_value());
    // No tree at all (this GroupInfo carries none).
    CHECK(mls::join_from_welcome(*welcome, keys, std::nullopt, basic).code() == Errc::invalid_argument);
    // A wrong leaf private key.
    auto wrong = keys;
    wrong.encryption_private[5] ^= 1;  // not byte 0: X25519 clamps its low bits away
    CHECK(mls::join_from_welcome(*welcome, wrong, tree_bytes, basic).code() == Errc::auth_failed);
    // A wrong init key.
    wrong = keys;
    wrong.init_private[5] ^= 1;
    CHECK(mls::join_from_welcome(*welcome, wrong, tree_bytes, basic).code() == Errc::auth_failed);
    // A credential validator that refuses somebody in the tree.
    class RefuseAll final : public mls::CredentialValidator {
    public:
        [[nodiscard]] sim::Status validate(const mls::Credential&, ByteView) const override {
            return Errc::auth_rejected;
        }
    };
    CHECK(mls::join_from_welcome(*welcome, keys, tree_bytes, RefuseAll{}).code() == Errc::auth_rejected);
    // A tampered encrypted GroupInfo.
    auto tampered = *welcome;
    tampered.encrypted_group_info.back() ^= 1;
    CHECK(mls::join_from_welcome(tampered, keys, tree_bytes, basic).code() == Errc::auth_failed);
}

// ---------------------------------------------------------------- following a group as a passive member

TEST_CASE("MLS passive client: follow every epoch of the passive-client scenarios without PSKs") {
    const mls::AcceptBasicCredentials basic;
    const auto joins = section("mls/passive_client_join.vec", "Join");
    const auto epochs = section("mls/passive_client_join.vec", "Epoch");
    std::size_t followed = 0;
    std::size_t scenarios = 0;
    for (const auto& r : joins) {
        if (r.get("external_psks") != "0" || r.get("epochs") == "0") {
            continue;
        }
        const auto name = r.get("source") + "#" + r.get("n");
        INFO(name);
        const auto kp = mls::decode_key_package_message(r.hex("key_package"));
        REQUIRE(kp.has_value());
        const auto welcome = mls::decode_welcome_message(r.hex("welcome"));
        REQUIRE(welcome.has_value());
        const mls::JoinKeys keys{*kp, sim::to_bytes<sim::SecureBytes>(r.hex("init_priv")),
                                 sim::to_bytes<sim::SecureBytes>(r.hex("encryption_priv"))};
        std::optional<Bytes> tree_bytes;
        if (r.get("ratchet_tree") != "-") {
            tree_bytes = r.hex("ratchet_tree");
        }
        auto joined = mls::join_from_welcome(*welcome, keys, tree_bytes, basic);
        REQUIRE(joined.has_value());
        auto state = mls::GroupState::from_join(std::move(*joined), basic);
        REQUIRE(state.has_value());
        for (const auto& e : epochs) {
            if (e.get("source") != r.get("source") || e.get("n") != r.get("n")) {
                continue;
            }
            INFO(e.where());
            if (!e.get("proposals").empty()) {
                for (const auto& p : split(e.get("proposals"), ',')) {
                    const auto st = state->cache_proposal(hex(p));
                    REQUIRE_MESSAGE(st.has_value(), st.error().message());
                }
            }
            const auto st = state->process_commit(e.hex("commit"));
            REQUIRE_MESSAGE(st.has_value(), st.error().message());
            REQUIRE(state->member());
            CHECK(to_hex(state->secrets().epoch_authenticator) == e.get("epoch_authenticator"));
            ++followed;
        }
        ++scenarios;
    }
    CHECK(scenarios > 0);
    MESSAGE("passive clients: followed " << followed << " epochs of " << scenarios
                                         << " scenario(s) with matching epoch authenticators");
}

TEST_CASE("MLS passive client: a failed commit or proposal changes nothing") {
    const mls::AcceptBasicCredentials basic;
    const VecRecord* scenario = nullptr;
    const auto joins = section("mls/passive_client_join.vec", "Join");
    for (const auto& r : joins) {
        if (r.get("external_psks") == "0" && r.get("epochs") != "0") {
            scenario = &r;
            break;
        }
    }
    REQUIRE(scenario != nullptr);
    const auto& r = *scenario;
    std::vector<VecRecord> epochs;
    for (auto& e : section("mls/passive_client_join.vec", "Epoch")) {
        if (e.get("source") == r.get("source") && e.get("n") == r.get("n")) {
            epochs.push_back(std::move(e));
        }
    }
    REQUIRE(epochs.size() > 10);
    const auto kp = mls::decode_key_package_message(r.hex("key_package"));
    REQUIRE(kp.has_value());
    const auto welcome = mls::decode_welcome_message(r.hex("welcome"));
    REQUIRE(welcome.has_value());
    const mls::JoinKeys keys{*kp, sim::to_bytes<sim::SecureBytes>(r.hex("init_priv")),
                             sim::to_bytes<sim::SecureBytes>(r.hex("encryption_priv"))};
    std::optional<Bytes> tree_bytes;
    if (r.get("ratchet_tree") != "-") {
        tree_bytes = r.hex("ratchet_tree");
    }
    auto joined = mls::join_from_welcome(*welcome, keys, tree_bytes, basic);
    REQUIRE(joined.has_value());
    auto state = mls::GroupState::from_join(std::move(*joined), basic);
    REQUIRE(state.has_value());

    std::size_t by_reference = 0;
    for (std::size_t i = 0; i < 12; ++i) {
        const auto& e = epochs[i];
        INFO(e.where());
        const auto commit = e.hex("commit");
        const auto before = state->secrets().epoch_authenticator;
        const auto epoch_before = state->context().epoch;
        std::vector<Bytes> proposals;
        if (!e.get("proposals").empty()) {
            for (const auto& p : split(e.get("proposals"), ',')) {
                proposals.push_back(hex(p));
            }
        }
        // Every 7th bit flipped somewhere in the commit: refused, nothing changes.
        for (std::size_t bit = 3; bit < commit.size() * 8; bit += 97) {
            Bytes bad = commit;
            bad[bit / 8] ^= static_cast<std::uint8_t>(1U << (bit % 8));
            CHECK_FALSE(state->process_commit(bad).has_value());
        }
        // A commit that references proposals we have not seen yet is refused; after caching them it is accepted.
        if (!proposals.empty()) {
            const auto early = state->process_commit(commit);
            if (!early) {
                CHECK(early.code() == Errc::bad_field);
                ++by_reference;
            }
            for (const auto& p : proposals) {
                Bytes bad = p;
                bad[bad.size() / 2] ^= 0x10;
                CHECK_FALSE(state->cache_proposal(bad).has_value());
                REQUIRE(state->cache_proposal(p).has_value());
            }
        }
        CHECK(state->context().epoch == epoch_before);
        CHECK(state->secrets().epoch_authenticator == before);
        const auto st = state->process_commit(commit);
        REQUIRE_MESSAGE(st.has_value(), st.error().message());
        CHECK(to_hex(state->secrets().epoch_authenticator) == e.get("epoch_authenticator"));
        // The same commit again belongs to the previous epoch now.
        CHECK_FALSE(state->process_commit(commit).has_value());
        CHECK(to_hex(state->secrets().epoch_authenticator) == e.get("epoch_authenticator"));
    }
    MESSAGE(by_reference << " commits were refused before their proposals arrived");
}

// ---------------------------------------------------------------- a group of our own: properties

namespace {

struct Member {
    std::string name;
    OwnKeyPackage kp;
    sim::SecureBytes init_private;
    sim::SecureBytes encryption_private;
    std::optional<mls::GroupState> state;
};

Member make_member(sim::Rng& rng, const std::string& name) {
    Member m;
    m.name = name;
    m.kp = make_key_package(rng, name);
    const auto enc = sim::crypto::x25519_generate(rng);
    const auto init = sim::crypto::x25519_generate(rng);
    m.kp.kp.leaf_node.encryption_key = enc.public_key;
    m.kp.kp.leaf_node.not_before = 0;
    m.kp.kp.leaf_node.not_after = ~std::uint64_t{0};
    m.kp.kp.init_key = init.public_key;
    sign_key_package(m.kp);
    m.encryption_private = enc.private_key;
    m.init_private = init.private_key;
    return m;
}

void join(Member& m, const mls::Welcome& welcome, const mls::CredentialValidator& credentials) {
    const mls::JoinKeys keys{m.kp.kp, m.init_private, m.encryption_private};
    auto joined = mls::join_from_welcome(welcome, keys, std::nullopt, credentials);
    REQUIRE_MESSAGE(joined.has_value(), joined.error().message());
    auto st = mls::GroupState::from_join(std::move(*joined), credentials);
    REQUIRE(st.has_value());
    m.state.emplace(std::move(*st));
}

/// Every member holds the same epoch, epoch authenticator and tree hash.
void same_epoch(const std::vector<Member*>& members) {
    const auto& first = *members.front()->state;
    for (const auto* m : members) {
        CAPTURE(m->name);
        CHECK(m->state->context().epoch == first.context().epoch);
        CHECK(m->state->secrets().epoch_authenticator == first.secrets().epoch_authenticator);
        CHECK(m->state->context().tree_hash == first.context().tree_hash);
    }
}

}  // namespace

TEST_CASE("MLS group properties: joins, agreement, PCS on removal and on update, FS, no impersonation") {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls group properties"));
    const mls::AcceptBasicCredentials basic;
    auto a = make_member(*rng, "alice/phone");
    auto b = make_member(*rng, "bob/laptop");
    auto c = make_member(*rng, "carol/phone");
    auto d = make_member(*rng, "dave/tablet");

    auto created = mls::GroupState::create(sim::to_bytes(sim::as_bytes("team")), a.kp.kp.leaf_node,
                                           a.encryption_private, basic, *rng);
    REQUIRE(created.has_value());
    a.state.emplace(std::move(*created));
    CHECK(a.state->context().epoch == 0);

    // A adds B and C in one commit; both join from the Welcome (tree in the GroupInfo).
    auto add_bc = a.state->commit({b.kp.kp, c.kp.kp}, {}, a.kp.signature_private, *rng);
    REQUIRE_MESSAGE(add_bc.has_value(), add_bc.error().message());
    REQUIRE(add_bc->welcome.has_value());
    join(b, *add_bc->welcome, basic);
    join(c, *add_bc->welcome, basic);
    same_epoch({&a, &b, &c});
    CHECK(a.state->context().epoch == 1);

    // Application messages: everyone reads everyone; each message once (FS: its key is gone afterwards).
    const auto hello = a.state->encrypt_application(sim::as_bytes("hello team"), a.kp.signature_private, *rng);
    REQUIRE(hello.has_value());
    for (auto* m : {&b, &c}) {
        const auto got = m->state->decrypt_application(*hello);
        REQUIRE(got.has_value());
        CHECK(sim::to_string(*got) == "hello team");
        CHECK(m->state->decrypt_application(*hello).code() == Errc::replayed);
    }
    // Reordering within the window.
    std::vector<Bytes> burst;
    for (int i = 0; i < 4; ++i) {
        auto m = b.state->encrypt_application(sim::as_bytes("msg " + std::to_string(i)), b.kp.signature_private, *rng);
        REQUIRE(m.has_value());
        burst.push_back(std::move(*m));
    }
    for (const int i : {2, 0, 3, 1}) {
        const auto got = c.state->decrypt_application(burst[i]);
        REQUIRE(got.has_value());
        CHECK(sim::to_string(*got) == "msg " + std::to_string(i));
    }

    // B cannot send as A: content claiming leaf 0 but signed with B's key, sealed under A's ratchet by B (who
    // holds the epoch's secrets), is refused by C.
    {
        mls::FramedContent fc;
        fc.group_id = a.state->context().group_id;
        fc.epoch = a.state->context().epoch;
        fc.sender = mls::Sender{mls::SenderType::member, a.state->own_leaf()};
        fc.content_type = mls::ContentType::application;
        fc.content = sim::to_bytes(sim::as_bytes("I am alice"));
        const auto forged =
            mls::sign_content(mls::WireFormat::private_message, fc, b.state->context(), b.kp.signature_private);
        REQUIRE(forged.has_value());
        auto st = mls::SecretTree::create(b.state->secrets().encryption_secret, b.state->tree().leaf_count());
        REQUIRE(st.has_value());
        // Skip the generation A already used.
        REQUIRE((*st->ratchet(0, mls::RatchetKind::application))->next().has_value());
        const auto msg = mls::protect_private(*forged, b.state->context(), *st, b.state->secrets().sender_data_secret,
                                              rng->bytes(4), 0);
        REQUIRE(msg.has_value());
        CHECK(c.state->decrypt_application(*msg).code() == Errc::auth_failed);
    }

    // PCS on removal: C's complete state saved before it is removed decrypts nothing afterwards.
    const auto c_saved = *c.state;
    auto remove_c = a.state->commit({}, {c.state->own_leaf()}, a.kp.signature_private, *rng);
    REQUIRE(remove_c.has_value());
    CHECK_FALSE(remove_c->welcome.has_value());
    REQUIRE(b.state->process_commit(remove_c->message).has_value());
    REQUIRE(c.state->process_commit(remove_c->message).has_value());
    CHECK_FALSE(c.state->member());
    same_epoch({&a, &b});
    const auto after_removal =
        a.state->encrypt_application(sim::as_bytes("without carol"), a.kp.signature_private, *rng);
    REQUIRE(after_removal.has_value());
    CHECK(sim::to_string(*b.state->decrypt_application(*after_removal)) == "without carol");
    {
        auto copy = c_saved;
        CHECK_FALSE(copy.decrypt_application(*after_removal).has_value());
        CHECK(c.state->decrypt_application(*after_removal).code() == Errc::invalid_state);
    }

    // PCS on compromise: a copy of B's state taken before B commits (a path update) decrypts nothing afterwards,
    // and cannot follow B's commit.
    auto b_saved = *b.state;
    auto update_b = b.state->commit({}, {}, b.kp.signature_private, *rng);
    REQUIRE(update_b.has_value());
    REQUIRE(a.state->process_commit(update_b->message).has_value());
    same_epoch({&a, &b});
    CHECK(a.state->secrets().epoch_authenticator != b_saved.secrets().epoch_authenticator);
    CHECK_FALSE(b_saved.process_commit(update_b->message).has_value());
    const auto after_update = a.state->encrypt_application(sim::as_bytes("fresh keys"), a.kp.signature_private, *rng);
    REQUIRE(after_update.has_value());
    CHECK(sim::to_string(*b.state->decrypt_application(*after_update)) == "fresh keys");
    CHECK_FALSE(b_saved.decrypt_application(*after_update).has_value());

    // D joins later through B; duplicates of a commit are refused; everyone agrees.
    auto add_d = b.state->commit({d.kp.kp}, {}, b.kp.signature_private, *rng);
    REQUIRE(add_d.has_value());
    REQUIRE(add_d->welcome.has_value());
    REQUIRE(a.state->process_commit(add_d->message).has_value());
    CHECK_FALSE(a.state->process_commit(add_d->message).has_value());
    join(d, *add_d->welcome, basic);
    same_epoch({&a, &b, &d});
    const auto to_all = d.state->encrypt_application(sim::as_bytes("hi, I am dave"), d.kp.signature_private, *rng);
    REQUIRE(to_all.has_value());
    CHECK(sim::to_string(*a.state->decrypt_application(*to_all)) == "hi, I am dave");
    CHECK(sim::to_string(*b.state->decrypt_application(*to_all)) == "hi, I am dave");
    // The removed C cannot join with its old KeyPackage again through an old Welcome of another epoch.
    CHECK_FALSE(mls::join_from_welcome(*add_d->welcome, mls::JoinKeys{c.kp.kp, c.init_private, c.encryption_private},
                                       std::nullopt, basic)
                    .has_value());
    // Adding an existing member again (same keys) is refused.
    CHECK_FALSE(a.state->commit({b.kp.kp}, {}, a.kp.signature_private, *rng).has_value());
    // The exporter agrees across members and differs per label and epoch.
    const auto label = sim::as_bytes("sim call key");
    const auto ea = a.state->export_secret(label, sim::as_bytes("ctx"), 32);
    const auto eb = b.state->export_secret(label, sim::as_bytes("ctx"), 32);
    const auto ed = d.state->export_secret(label, sim::as_bytes("ctx"), 32);
    REQUIRE(ea.has_value());
    REQUIRE(eb.has_value());
    REQUIRE(ed.has_value());
    CHECK(*ea == *eb);
    CHECK(*ea == *ed);
    CHECK(*a.state->export_secret(sim::as_bytes("other"), sim::as_bytes("ctx"), 32) != *ea);
    CHECK(*b_saved.export_secret(label, sim::as_bytes("ctx"), 32) != *ea);
    CHECK(c.state->export_secret(label, {}, 32).code() == Errc::invalid_state);
    // B proposes an Update; A and D cache it; A commits it by reference; B's new leaf key takes effect for B.
    const auto b_leaf_before = b.state->tree().leaf(b.state->own_leaf())->encryption_key;
    auto proposal = b.state->propose_update(b.kp.signature_private, *rng);
    REQUIRE_MESSAGE(proposal.has_value(), proposal.error().message());
    auto d_without = *d.state;  // a copy of D that never sees the proposal
    REQUIRE(a.state->cache_proposal(*proposal).has_value());
    REQUIRE(d.state->cache_proposal(*proposal).has_value());
    auto with_update = a.state->commit({}, {}, a.kp.signature_private, *rng);
    REQUIRE_MESSAGE(with_update.has_value(), with_update.error().message());
    // A commit that references B's proposal cannot be processed by a member that never saw the proposal.
    CHECK(d_without.process_commit(with_update->message).code() == Errc::bad_field);
    REQUIRE(d.state->process_commit(with_update->message).has_value());
    const auto b_st = b.state->process_commit(with_update->message);
    REQUIRE_MESSAGE(b_st.has_value(), b_st.error().message());
    same_epoch({&a, &b, &d});
    CHECK(b.state->tree().leaf(b.state->own_leaf())->encryption_key != b_leaf_before);
    CHECK(a.state->tree().leaf(b.state->own_leaf())->encryption_key ==
          b.state->tree().leaf(b.state->own_leaf())->encryption_key);
    const auto after_b_update =
        d.state->encrypt_application(sim::as_bytes("after the update"), d.kp.signature_private, *rng);
    REQUIRE(after_b_update.has_value());
    CHECK(sim::to_string(*b.state->decrypt_application(*after_b_update)) == "after the update");
    // Removing ourselves is refused.
    CHECK(a.state->commit({}, {a.state->own_leaf()}, a.kp.signature_private, *rng).code() == Errc::invalid_argument);
}

TEST_CASE("MLS GroupInfo carries a ratchet_tree extension larger than other extensions may be") {
    // A Welcome for a group of about 1,000 members carries a tree of about 180 KiB in its GroupInfo: more than the
    // 64 KiB bound of other extensions, within max_ratchet_tree_size.
    mls::GroupInfo gi;
    gi.group_context.group_id = sim::to_bytes(sim::as_bytes("group"));
    gi.group_context.epoch = 3;
    gi.group_context.tree_hash = Bytes(32, 1);
    gi.group_context.confirmed_transcript_hash = Bytes(32, 2);
    gi.confirmation_tag = Bytes(32, 3);
    gi.signature = Bytes(64, 4);
    const Bytes big(200 * 1024, 0x5A);
    gi.extensions = {{mls::extension_ratchet_tree, big}};
    const auto encoded = gi.encode();
    REQUIRE(encoded.has_value());
    const auto back = mls::decode_group_info(*encoded);
    REQUIRE_MESSAGE(back.has_value(), back.error().message());
    REQUIRE(back->extensions.size() == 1);
    CHECK(back->extensions[0].data == big);

    // Any other extension type keeps the 64 KiB bound, in a GroupInfo too.
    gi.extensions = {{0x0A0A, big}};
    const auto other = gi.encode();
    REQUIRE(other.has_value());
    CHECK(mls::decode_group_info(*other).code() == Errc::frame_too_large);
    // Outside a GroupInfo (here a GroupContext) a ratchet_tree extension has the 64 KiB bound as well.
    mls::GroupContext gc = gi.group_context;
    gc.extensions = {{mls::extension_ratchet_tree, big}};
    const auto gc_encoded = gc.encode();
    REQUIRE(gc_encoded.has_value());
    CHECK(mls::GroupContext::decode(*gc_encoded).code() == Errc::frame_too_large);
}
