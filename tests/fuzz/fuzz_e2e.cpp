// libFuzzer target for the end-to-end decoders (docs/protocol.md section 6): every messages.h codec that reads
// peer input (refusals and limits also round-trip), e2e::inspect, e2e::Session::deserialize, and e2e::Session::open on
// a genuine session.
//
// Properties checked (any violation aborts, which libFuzzer reports as a crash):
// - nothing crashes or leaks on any input;
// - a session opens nothing but the one genuine next message (a replay of the first message never opens);
// - a failed open changes nothing: the genuine next message still opens afterwards, with its plaintext.
#include <sim/e2e.h>
#include <sim/messages.h>
#include <sim/rng.h>

#include "../../libsim/src/server/fanout.h"

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <string_view>

namespace {

void require(bool condition, const char* what) {
    if (!condition) {
        std::fprintf(stderr, "fuzz_e2e: property violated: %s\n", what);
        std::abort();
    }
}

template <typename T>
T must(sim::Result<T> r, const char* what) {
    require(r.has_value(), what);
    return std::move(r).value();
}

constexpr std::string_view second_text = "the genuine second message";

/// Alice -> bob: bob has opened alice's first (initial) message; `next` is alice's genuine second one.
struct Fixture {
    std::unique_ptr<sim::Rng> rng;
    sim::Bytes first;
    sim::Bytes next;
    sim::SecureBytes bob_state;

    Fixture() {
        const std::array<std::uint8_t, 32> seed{0x5e};
        rng = sim::make_deterministic_rng(seed);
        const auto alice = sim::e2e::generate_identity(*rng);
        const auto bob = sim::e2e::generate_identity(*rng);
        const auto spk = sim::e2e::generate_signed_prekey(bob, 1, *rng);
        const auto opk = sim::e2e::generate_one_time_prekey(2, *rng);
        sim::e2e::PrekeyBundle bundle{bob.public_key, spk.id, spk.public_key, spk.signature, opk.id, opk.public_key};
        auto a = must(sim::e2e::Session::initiate(alice, "alice", bundle, "bob", sim::SuiteId::aes256_gcm, *rng),
                      "initiate");
        first = must(a.seal(sim::as_bytes(std::string_view("first"))), "seal first");
        const auto info = must(sim::e2e::inspect(first), "inspect first");
        require(info.initial.has_value(), "first message is initial");
        auto b = must(sim::e2e::Session::respond(bob, "bob", spk, &opk, *info.initial, "alice", *rng), "respond");
        (void)must(b.open(first), "open first");
        next = must(a.seal(sim::as_bytes(second_text)), "seal next");
        bob_state = b.serialize();
    }
};

void decode_everything(sim::ByteView in) {
    (void)sim::decode_envelope(in);
    (void)sim::decode_ack(in);
    (void)sim::decode_receipt(in);
    (void)sim::decode_prekey_upload(in);
    (void)sim::decode_prekey_status(in);
    (void)sim::decode_key_assignment(in);
    (void)sim::decode_e2e_content(in);
    (void)sim::decode_conversation_body(in);
    (void)sim::e2e::inspect(in);
    // The delivery header (6.5): whatever decodes encodes back to the same bytes, and its envelope is what
    // decode_envelope reads after the header.
    if (const auto d = sim::decode_delivered(in)) {
        const auto again =
            sim::encode_delivered(d->received_at, d->conversation, d->sender_device, sim::encode_envelope(d->envelope));
        require(std::equal(again.begin(), again.end(), in.begin(), in.end()), "a delivered payload round-trips");
        require(sim::decode_envelope(in.subspan(sim::delivery_header_size)).has_value(), "its envelope decodes");
    }
    // A client's message (6.5): whatever decodes encodes back to the same bytes.
    if (const auto m = sim::decode_submission(in)) {
        const auto again = sim::encode_submission(*m);
        require(std::equal(again.begin(), again.end(), in.begin(), in.end()), "a message round-trips");
        // The own list (the sender's other devices): bounded, never the sender device; each body's stored own
        // copy (the server's) gives back the peer and the envelope the device is sent.
        require(m->own_bodies.size() <= sim::max_own_devices_per_message, "own list bounded");
        for (std::size_t i = 0; i < m->own_bodies.size(); ++i) {
            require(m->own_bodies[i].device != m->sender_device, "own list leaves out the sender device");
            const auto stored = sim::server_detail::encode_own_copy(*m, i, "bob");
            const auto back = sim::server_detail::decode_own_copy(stored);
            require(back.has_value() && back->peer == "bob", "an own copy names its peer");
            const auto envelope = sim::decode_envelope(back->envelope);
            require(envelope.has_value() && envelope->id == m->id && envelope->body == m->own_bodies[i].body,
                    "an own copy is delivered as its envelope");
        }
    }
    // A stored own copy (the server reads it back from its store): whatever decodes is the input without its peer.
    if (const auto c = sim::server_detail::decode_own_copy(in)) {
        require(!c->peer.empty() && c->envelope.size() + 1 + c->peer.size() == in.size(), "an own copy splits");
    }
    // An addressed content encodes back to the same bytes (the older kinds are re-encoded as the newer ones), unless
    // its timestamp was above 2^63 - 1 ms and read as that (docs/protocol.md 5.2).
    constexpr auto max_ms = std::numeric_limits<std::int64_t>::max();
    if (const auto c = sim::decode_e2e_content(in);
        c && c->address && c->sent_at.time_since_epoch().count() != max_ms) {
        const auto again = sim::encode_e2e_content(*c);
        require(std::equal(again.begin(), again.end(), in.begin(), in.end()), "an addressed content round-trips");
    }
    // The strict codecs of streams (6.6): whatever decodes encodes back to the same bytes.
    if (const auto r = sim::decode_refusal(in)) {
        const auto again = sim::encode_refusal(*r);
        require(std::equal(again.begin(), again.end(), in.begin(), in.end()), "a refusal round-trips");
    }
    if (const auto l = sim::decode_server_limits(in)) {
        const auto again = sim::encode_server_limits(*l);
        require(std::equal(again.begin(), again.end(), in.begin(), in.end()), "limits round-trip");
    }
    if (const auto c = sim::decode_password_change(in)) {
        const auto again = sim::encode_password_change(*c);
        require(std::equal(again.begin(), again.end(), in.begin(), in.end()), "a password change round-trips");
    }
    (void)sim::decode_session_token(in);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static Fixture fx;
    const sim::ByteView in{data, size};
    decode_everything(in);

    if (auto restored = sim::e2e::Session::deserialize(in, *fx.rng)) {
        (void)restored->serialize();
    }

    auto bob = must(sim::e2e::Session::deserialize(fx.bob_state, *fx.rng), "restore bob");
    const bool genuine = std::equal(in.begin(), in.end(), fx.next.begin(), fx.next.end());
    auto opened = bob.open(in);
    if (opened) {
        require(genuine, "only the genuine next message opens");
        return 0;
    }
    require(!genuine, "the genuine next message opens");
    auto later = bob.open(fx.next);
    require(later.has_value(), "a failed open changed the session");
    require(std::equal(later->begin(), later->end(), second_text.begin(), second_text.end(),
                       [](std::uint8_t a, char b) { return a == static_cast<std::uint8_t>(b); }),
            "the genuine message opens to its plaintext");
    return 0;
}
