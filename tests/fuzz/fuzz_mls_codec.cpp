// libFuzzer target for the MLS decoders (libsim/src/mls, internal): the bounded codec, GroupContext,
// AuthenticatedContent, Proposal and Commit walks, decoded Proposals, KeyPackage / Welcome messages, GroupInfo,
// the ratchet tree (with its parent-hash and signature checks), UpdatePath, and unprotect_public /
// unprotect_private on a genuine two-member group state (ciphersuite 1), GroupState::process_commit /
// decrypt_application on a genuine group of three (created, joined and committed by this very code), and
// sim::mls::Group::load of a saved group state (seeds: genuine saved states, corpus files mls_load_*).
//
// The first input byte picks the decoder, the rest is its input. Properties (a violation aborts):
// - nothing crashes, leaks or reads out of bounds on any input;
// - a decoder that accepts an input re-encodes it to exactly the same bytes (GroupContext, AuthenticatedContent,
//   ratchet tree, UpdatePath, GroupInfo);
// - unprotect_private accepts nothing but the one genuine message, and a failed call changes nothing: the genuine
//   message still opens afterwards, exactly once;
// - GroupState::process_commit accepts nothing but the genuine next commit, and after a failed call the genuine
//   commit still applies with the expected epoch authenticator; decrypt_application likewise.
// - Group::load refuses or accepts without crashing, and a state it accepts saves to exactly the input (the saved
//   format has one encoding per state).
#include <sim/bytes.h>
#include <sim/crypto.h>
#include <sim/mls.h>
#include <sim/rng.h>

#include "../../libsim/src/mls/codec.h"
#include "../../libsim/src/mls/framing.h"
#include "../../libsim/src/mls/group_state.h"
#include "../../libsim/src/mls/key_schedule.h"
#include "../../libsim/src/mls/message_protection.h"
#include "../../libsim/src/mls/proposals.h"
#include "../../libsim/src/mls/ratchet_tree.h"
#include "../../libsim/src/mls/secret_tree.h"
#include "../../libsim/src/mls/tree_math.h"
#include "../../libsim/src/mls/treekem.h"
#include "../../libsim/src/mls/welcome.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>

namespace {

namespace mls = sim::mls;

void require(bool condition, const char* what) {
    if (!condition) {
        std::fprintf(stderr, "fuzz_mls_codec: property violated: %s\n", what);
        std::abort();
    }
}

template <typename T>
T must(sim::Result<T> r, const char* what) {
    require(r.has_value(), what);
    return std::move(r).value();
}

/// A group of two members; member 1 has sent one genuine PrivateMessage and one PublicMessage proposal.
struct Fixture {
    mls::GroupContext context;
    sim::Bytes encryption_secret = sim::Bytes(32, 0x11);
    sim::Bytes sender_data_secret = sim::Bytes(32, 0x22);
    sim::Bytes membership_key = sim::Bytes(32, 0x33);
    sim::Bytes signature_public;
    sim::Bytes genuine_private;
    sim::Bytes genuine_public;
    mls::SignatureKeyLookup lookup;

    Fixture() {
        const std::array<std::uint8_t, 32> seed{0x4d};
        auto rng = sim::make_deterministic_rng(seed);
        const auto key = sim::crypto::ed25519_generate(*rng);
        signature_public = key.public_key;
        context.group_id = sim::to_bytes(sim::as_bytes(std::string_view("fuzz group")));
        context.epoch = 3;
        context.tree_hash = sim::Bytes(32, 0x44);
        context.confirmed_transcript_hash = sim::Bytes(32, 0x55);
        lookup = [pub = signature_public](const mls::Sender& s) -> sim::Result<sim::Bytes> {
            if (s.type == mls::SenderType::member && s.index == 1) {
                return pub;
            }
            return sim::Errc::invalid_argument;
        };
        mls::FramedContent fc;
        fc.group_id = context.group_id;
        fc.epoch = context.epoch;
        fc.sender = mls::Sender{mls::SenderType::member, 1};
        fc.content_type = mls::ContentType::application;
        fc.content = sim::to_bytes(sim::as_bytes(std::string_view("genuine")));
        auto sender_tree = must(mls::SecretTree::create(encryption_secret, 2), "sender tree");
        const auto ac =
            must(mls::sign_content(mls::WireFormat::private_message, fc, context, key.private_key), "sign private");
        genuine_private = must(mls::protect_private(ac, context, sender_tree, sender_data_secret, rng->bytes(4), 5),
                               "protect private");
        fc.content_type = mls::ContentType::proposal;
        fc.content = {0x00, 0x03, 0x00, 0x00, 0x00, 0x01};  // Remove(leaf 1)
        const auto pc =
            must(mls::sign_content(mls::WireFormat::public_message, fc, context, key.private_key), "sign public");
        genuine_public = must(mls::protect_public(pc, context, membership_key), "protect public");
    }

    [[nodiscard]] mls::SecretTree tree() const { return must(mls::SecretTree::create(encryption_secret, 2), "tree"); }
};

const Fixture& fixture() {
    static const Fixture f;
    return f;
}

/// A group of three: A created it and added B and C; B's state is kept, with A's next commit (removing C) and an
/// application message from A in the epoch before it.
struct GroupFixture {
    mls::AcceptBasicCredentials basic;
    std::optional<mls::GroupState> b_state;
    sim::Bytes next_commit;
    sim::Bytes application;
    sim::Bytes authenticator_after;

    static mls::KeyPackage key_package(sim::Rng& rng, std::string_view who, sim::SecureBytes& sig_priv,
                                       sim::SecureBytes& init_priv, sim::SecureBytes& enc_priv) {
        const auto sig = sim::crypto::ed25519_generate(rng);
        const auto enc = sim::crypto::x25519_generate(rng);
        const auto init = sim::crypto::x25519_generate(rng);
        sig_priv = sig.private_key;
        init_priv = init.private_key;
        enc_priv = enc.private_key;
        mls::KeyPackage kp;
        kp.init_key = init.public_key;
        auto& leaf = kp.leaf_node;
        leaf.encryption_key = enc.public_key;
        leaf.signature_key = sig.public_key;
        leaf.credential.identity = sim::to_bytes(sim::as_bytes(who));
        leaf.capabilities.versions = {1};
        leaf.capabilities.cipher_suites = {1};
        leaf.capabilities.credentials = {1};
        leaf.not_after = ~std::uint64_t{0};
        require(leaf.sign(sig_priv, {}, 0).has_value(), "sign leaf");
        const auto tbs = must(kp.to_be_signed(), "kp tbs");
        kp.signature = must(mls::sign_with_label(sig_priv, "KeyPackageTBS", tbs), "sign kp");
        return kp;
    }

    GroupFixture() {
        const std::array<std::uint8_t, 32> seed{0x6d};
        auto rng = sim::make_deterministic_rng(seed);
        sim::SecureBytes a_sig, a_init, a_enc, b_sig, b_init, b_enc, c_sig, c_init, c_enc;
        const auto a_kp = key_package(*rng, "alice", a_sig, a_init, a_enc);
        const auto b_kp = key_package(*rng, "bob", b_sig, b_init, b_enc);
        const auto c_kp = key_package(*rng, "carol", c_sig, c_init, c_enc);
        auto a = must(mls::GroupState::create(sim::to_bytes(sim::as_bytes(std::string_view("fuzz"))), a_kp.leaf_node,
                                              a_enc, basic, *rng),
                      "create");
        const auto add = must(a.commit({b_kp, c_kp}, {}, a_sig, *rng), "add");
        require(add.welcome.has_value(), "welcome");
        auto joined =
            must(mls::join_from_welcome(*add.welcome, mls::JoinKeys{b_kp, b_init, b_enc}, std::nullopt, basic), "join");
        b_state.emplace(must(mls::GroupState::from_join(std::move(joined), basic), "from_join"));
        application = must(a.encrypt_application(sim::as_bytes(std::string_view("genuine")), a_sig, *rng), "app");
        const auto remove = must(a.commit({}, {2}, a_sig, *rng), "remove");
        next_commit = remove.message;
        authenticator_after = sim::to_bytes(a.secrets().epoch_authenticator);
    }
};

const GroupFixture& group_fixture() {
    static const GroupFixture f;
    return f;
}

void walk_codec(sim::ByteView data) {
    // Read a varint-prefixed vector, then nested vectors inside it, until something fails.
    mls::TlsReader r(data);
    while (!r.empty()) {
        auto sub = r.sub_reader();
        if (!sub) {
            break;
        }
        while (!sub->empty() && sub->varint()) {
        }
        static_cast<void>(r.optional());
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    const auto& f = fixture();
    const sim::ByteView input(data + 1, size - 1);
    switch (data[0] % 16) {
        case 0:
            walk_codec(input);
            break;
        case 1:
            if (const auto gc = mls::GroupContext::decode(input)) {
                const auto re = must(gc->encode(), "re-encode GroupContext");
                require(re.size() == input.size() && std::equal(re.begin(), re.end(), input.begin()),
                        "GroupContext re-encodes to the input");
            }
            break;
        case 2:
            if (const auto ac = mls::AuthenticatedContent::decode(input)) {
                const auto re = must(ac->encode(), "re-encode AuthenticatedContent");
                require(re.size() == input.size() && std::equal(re.begin(), re.end(), input.begin()),
                        "AuthenticatedContent re-encodes to the input");
            }
            break;
        case 3: {
            mls::TlsReader r(input);
            static_cast<void>(mls::read_proposal(r));
            break;
        }
        case 4: {
            mls::TlsReader r(input);
            static_cast<void>(mls::read_commit(r));
            break;
        }
        case 5: {
            const auto got = mls::unprotect_public(input, f.context, f.membership_key, f.lookup);
            require(!got || (input.size() == f.genuine_public.size() &&
                             std::equal(input.begin(), input.end(), f.genuine_public.begin())),
                    "only the genuine PublicMessage authenticates");
            break;
        }
        case 7: {
            mls::TlsReader r(input);
            static_cast<void>(mls::decode_proposal(r));
            break;
        }
        case 8:
            static_cast<void>(mls::decode_key_package_message(input));
            break;
        case 9:
            static_cast<void>(mls::decode_welcome_message(input));
            break;
        case 10:
            if (const auto gi = mls::decode_group_info(input)) {
                const auto re = must(gi->encode(), "re-encode GroupInfo");
                require(re.size() == input.size() && std::equal(re.begin(), re.end(), input.begin()),
                        "GroupInfo re-encodes to the input");
            }
            break;
        case 11:
            if (const auto t = mls::RatchetTree::decode(input)) {
                const auto re = must(t->encode(), "re-encode ratchet tree");
                require(re.size() == input.size() && std::equal(re.begin(), re.end(), input.begin()),
                        "ratchet tree re-encodes to the input");
                static_cast<void>(t->verify_parent_hashes());
                static_cast<void>(t->verify_leaf_signatures(f.context.group_id));
                static_cast<void>(t->tree_hash(mls::tree::root(t->leaf_count())));
            }
            break;
        case 12: {
            mls::TlsReader r(input);
            if (const auto path = mls::decode_update_path(r)) {
                mls::TlsWriter w;
                require(path->encode_into(w).has_value(), "re-encode UpdatePath");
                require(
                    w.bytes().size() == r.position() && std::equal(w.bytes().begin(), w.bytes().end(), input.begin()),
                    "UpdatePath re-encodes to the bytes it read");
            }
            break;
        }
        case 13: {
            const auto& g = group_fixture();
            auto b = *g.b_state;
            const bool genuine =
                input.size() == g.next_commit.size() && std::equal(input.begin(), input.end(), g.next_commit.begin());
            const auto got = b.process_commit(input);
            require(genuine == got.has_value(), "only the genuine commit applies");
            if (!genuine) {
                require(b.process_commit(g.next_commit).has_value(), "after a failed commit the genuine one applies");
            }
            const auto& auth = b.secrets().epoch_authenticator;
            require(auth.size() == g.authenticator_after.size() &&
                        std::equal(auth.begin(), auth.end(), g.authenticator_after.begin()),
                    "the genuine commit gives the committer's epoch");
            break;
        }
        case 14: {
            const auto& g = group_fixture();
            auto b = *g.b_state;
            const bool genuine =
                input.size() == g.application.size() && std::equal(input.begin(), input.end(), g.application.begin());
            const auto got = b.decrypt_application(input);
            require(genuine == got.has_value(), "only the genuine application message decrypts");
            const auto again = b.decrypt_application(g.application);
            require(genuine ? again.code() == sim::Errc::replayed : again.has_value(),
                    "a failed decrypt changes nothing; the genuine message decrypts once");
            break;
        }
        case 15:
            if (const auto g = sim::mls::Group::load(input)) {
                const auto re = must(g->save(), "save a loaded group");
                require(re.size() == input.size() && std::equal(re.begin(), re.end(), input.begin()),
                        "a loaded group saves to the input");
            }
            break;
        default: {  // 6
            auto tree = f.tree();
            const bool genuine = input.size() == f.genuine_private.size() &&
                                 std::equal(input.begin(), input.end(), f.genuine_private.begin());
            const auto got = mls::unprotect_private(input, f.context, tree, f.sender_data_secret, f.lookup);
            require(genuine == got.has_value(), "only the genuine PrivateMessage opens");
            const auto again =
                mls::unprotect_private(f.genuine_private, f.context, tree, f.sender_data_secret, f.lookup);
            require(genuine ? again.code() == sim::Errc::replayed : again.has_value(),
                    "a failed unprotect changes nothing; the genuine message opens once");
            break;
        }
    }
    return 0;
}
