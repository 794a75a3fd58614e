// MLS (RFC 9420) building blocks: the bounded TLS codec with MLS varints, tree math and the labelled crypto
// operations of ciphersuite 1, against the MLS working group's interop vectors (tests/vectors/mls/, converted by
// scripts/import_mls_vectors.py), plus negative tests for every decoder.
#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/error.h>
#include <sim/rng.h>

#include "../../libsim/src/mls/codec.h"
#include "../../libsim/src/mls/primitives.h"
#include "../../libsim/src/mls/tree_math.h"
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
