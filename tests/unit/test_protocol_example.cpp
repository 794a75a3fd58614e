// The worked examples of docs/protocol.md (Appendix A): a login and a first end-to-end message, produced by the
// real server core and the library's client-side pieces with fixed keys and deterministic RNGs, then compared with
// the hex blocks of the document, so that the document cannot drift from the code. On a mismatch the generated
// blocks are written to protocol_example.txt in this test's build directory (never into the source tree).
#include <sim/auth.h>
#include <sim/channel.h>
#include <sim/crypto.h>
#include <sim/e2e.h>
#include <sim/frame.h>
#include <sim/handshake.h>
#include <sim/messages.h>
#include <sim/server.h>
#include <sim/store.h>
#include <sim/testing.h>

#include "harness.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#ifndef SIM_SOURCE_DIR
#error "SIM_SOURCE_DIR must name the source tree (set by tests/unit/meson.build)"
#endif
#ifndef SIM_TEST_BUILD_DIR
#error "SIM_TEST_BUILD_DIR must name this test's build directory (set by tests/unit/meson.build)"
#endif

namespace {

using sim_test::Pipe;
using sim_test::PipeOutput;

/// A deterministic RNG that remembers every draw, so the example can show the private keys it produced.
class RecordingRng final : public sim::Rng {
public:
    explicit RecordingRng(std::string_view seed) : m_inner(sim::make_deterministic_rng(sim::as_bytes(seed))) {}
    void fill(sim::MutableByteView out) override {
        m_inner->fill(out);
        draws.emplace_back(out.begin(), out.end());
    }
    std::vector<sim::Bytes> draws;

private:
    std::unique_ptr<sim::Rng> m_inner;
};

// ---------------------------------------------------------------- text of the example

constexpr std::size_t label_width = 46;
constexpr std::size_t bytes_per_line = 32;

/// One code block of the appendix: a label column and the bytes in lower-case hex, 32 bytes per line.
class Block {
public:
    void note(std::string_view text) {
        m_text += "# ";
        m_text += text;
        m_text += '\n';
    }
    void field(std::string_view label, sim::ByteView bytes, int depth = 0) {
        std::string head(static_cast<std::size_t>(depth) * 2, ' ');
        head += label;
        if (head.size() + 1 > label_width) {
            m_text += head + '\n';
            head.clear();
        }
        head.resize(label_width, ' ');
        if (bytes.empty()) {
            m_text += head + "(none)\n";
            return;
        }
        for (std::size_t i = 0; i < bytes.size(); i += bytes_per_line) {
            const auto n = std::min(bytes_per_line, bytes.size() - i);
            m_text += (i == 0 ? head : std::string(label_width, ' ')) + sim::to_hex(bytes.subspan(i, n)) + '\n';
        }
    }
    [[nodiscard]] const std::string& text() const { return m_text; }

private:
    std::string m_text;
};

/// Reads a structure field by field; the test fails if a field is missing.
class Cursor {
public:
    explicit Cursor(sim::ByteView data) : m_data(data) {}
    sim::ByteView take(std::size_t n) {
        REQUIRE(m_pos + n <= m_data.size());
        const auto out = m_data.subspan(m_pos, n);
        m_pos += n;
        return out;
    }
    sim::ByteView rest() { return take(m_data.size() - m_pos); }
    [[nodiscard]] std::size_t left() const { return m_data.size() - m_pos; }
    std::uint64_t number(std::size_t n) {
        std::uint64_t v = 0;
        for (const auto b : take(n)) {
            v = (v << 8U) | b;
        }
        return v;
    }

private:
    sim::ByteView m_data;
    std::size_t m_pos = 0;
};

std::string type_name(sim::FrameType t) {
    switch (t) {
        case sim::FrameType::handshake:
            return "handshake";
        case sim::FrameType::record:
            return "record";
        case sim::FrameType::init:
            return "init";
        case sim::FrameType::ack_init:
            return "ack_init";
        case sim::FrameType::keygen:
            return "keygen";
        case sim::FrameType::message:
            return "message";
        case sim::FrameType::receipt:
            return "receipt";
        case sim::FrameType::prekeys:
            return "prekeys";
        case sim::FrameType::limits:
            return "limits";
        default:
            return "other";
    }
}

std::string hex_byte(std::uint64_t v) {
    static constexpr char digits[] = "0123456789abcdef";
    return std::string("0x") + digits[(v >> 4U) & 0xFU] + digits[v & 0xFU];
}

std::string quoted(sim::ByteView b) {
    return "\"" + std::string(b.begin(), b.end()) + "\"";
}

/// Frame header and body fields (2.1); `payload` labels the payload's own fields.
template <typename PayloadFn>
void frame_fields(Block& out, sim::ByteView encoded, int depth, PayloadFn&& payload) {
    Cursor c(encoded);
    const auto version = c.number(1);
    const auto type = c.number(1);
    const auto flags = c.number(2);
    const auto length = c.number(4);
    out.field("frame: version " + std::to_string(version) + ", type " + hex_byte(type) + " " +
                  type_name(static_cast<sim::FrameType>(type)) + ", flags " + std::to_string(flags),
              encoded.first(4), depth);
    out.field("body length " + std::to_string(length), encoded.subspan(4, 4), depth);
    const auto sid_bytes = c.take(4);
    Cursor sid(sid_bytes);
    out.field("sid " + std::to_string(sid.number(4)), sid_bytes, depth);
    for (const char* what : {"source", "destination"}) {
        const auto len = c.take(1);
        const auto name = c.take(len[0]);
        out.field(std::string(what) + (name.empty() ? " (empty)" : " " + quoted(name)),
                  encoded.subspan(static_cast<std::size_t>(len.data() - encoded.data()), 1 + name.size()), depth);
    }
    const auto plen_bytes = c.take(4);
    Cursor plen(plen_bytes);
    out.field("payload length " + std::to_string(plen.number(4)), plen_bytes, depth);
    Cursor body(c.rest());
    payload(body);
    REQUIRE(body.left() == 0);
}

// ---------------------------------------------------------------- the client side of a connection

using ExampleClient = sim_test::RawClient;

// ---------------------------------------------------------------- payloads

void handshake_payload(Block& out, Cursor& c, std::size_t index) {
    const auto id = c.take(1);
    out.field("protocol id " + std::to_string(id[0]) + " (Noise_XX_25519_ChaChaPoly_SHA256)", id, 1);
    if (index == 1) {
        out.field("e: client ephemeral public key", c.take(32), 1);
        const auto hello = c.rest();
        out.field("ClientHello (clear): v1, 3 suites 2 3 1", hello, 1);
    } else if (index == 2) {
        out.field("e: server ephemeral public key", c.take(32), 1);
        out.field("s: server static key, encrypted", c.take(32), 1);
        out.field("   its tag", c.take(16), 1);
        out.field("ServerHello, encrypted (v1, suite 2)", c.take(2), 1);
        out.field("   its tag", c.take(16), 1);
    } else {
        out.field("s: client static key, encrypted", c.take(32), 1);
        out.field("   its tag", c.take(16), 1);
        out.field("empty payload: tag only", c.take(16), 1);
    }
}

/// `delivered`: a frame from the server to a client (a `message` then starts with the delivery header, 6.5).
void inner_payload(Block& out, const sim::Frame& f, Cursor& c, int depth, bool delivered) {
    switch (f.type) {
        case sim::FrameType::init: {
            const auto kind = c.take(1);
            out.field("credentials kind " + std::to_string(kind[0]) + (kind[0] == 1 ? " (password)" : " (none)"), kind,
                      depth);
            const auto len = c.take(2);
            out.field("secret length", len, depth);
            const auto secret = c.take(static_cast<std::size_t>((len[0] << 8U) | len[1]));
            if (!secret.empty()) {
                out.field("secret " + quoted(secret), secret, depth);
            }
            return;
        }
        case sim::FrameType::limits: {
            const auto rate = c.take(4);
            out.field("messages_per_second " + std::to_string(Cursor(rate).number(4)), rate, depth);
            const auto burst = c.take(4);
            out.field("message_burst " + std::to_string(Cursor(burst).number(4)), burst, depth);
            const auto window = c.take(2);
            out.field("window " + std::to_string(Cursor(window).number(2)), window, depth);
            return;
        }
        case sim::FrameType::prekeys: {
            const auto has = c.take(1);
            out.field("has_identity " + std::to_string(has[0]), has, depth);
            if (has[0] == 1) {
                out.field("IK", c.take(32), depth);
            }
            const auto count = c.take(4);
            out.field("opk_count " + std::to_string(Cursor(count).number(4)), count, depth);
            return;
        }
        case sim::FrameType::ack_init: {
            if (f.sid == 1) {
                out.field("token length", c.take(1), depth);
                out.field("session token", c.take(32), depth);
                const auto expires = c.take(8);
                out.field("expires (Unix ms) " + std::to_string(Cursor(expires).number(8)), expires, depth);
            } else {
                const auto peer = c.rest();
                out.field("peer " + quoted(peer), peer, depth);
            }
            return;
        }
        case sim::FrameType::keygen: {
            const auto mode = c.take(1);
            out.field("mode " + std::to_string(mode[0]) + " (end to end)", mode, depth);
            const auto len = c.take(1);
            const auto peer = c.take(len[0]);
            out.field("peer length, peer " + quoted(peer), sim::ByteView{len.data(), 1 + peer.size()}, depth);
            const auto suite = c.take(1);
            out.field("suite " + std::to_string(suite[0]) + " (AES-256-GCM)", suite, depth);
            out.field("IK_B (Ed25519)", c.take(32), depth);
            const auto spk_id = c.take(4);
            out.field("SPK id " + std::to_string(Cursor(spk_id).number(4)), spk_id, depth);
            out.field("SPK_B (X25519)", c.take(32), depth);
            out.field("SPK signature (Ed25519)", c.take(64), depth);
            const auto has = c.take(1);
            out.field("has_opk " + std::to_string(has[0]), has, depth);
            if (has[0] == 1) {
                const auto opk_id = c.take(4);
                out.field("OPK id " + std::to_string(Cursor(opk_id).number(4)), opk_id, depth);
                out.field("OPK_B (X25519)", c.take(32), depth);
            }
            return;
        }
        case sim::FrameType::message: {
            const auto device = [&](const std::string& what) {
                const auto d = c.take(4);
                out.field(what + " " + std::to_string(Cursor(d).number(4)), d, depth);
            };
            if (delivered) {
                const auto version = c.take(1);
                out.field("delivery header: version " + std::to_string(version[0]), version, depth);
                const auto at = c.take(8);
                out.field("received_at (Unix ms) " + std::to_string(Cursor(at).number(8)), at, depth);
                out.field("conversation id", c.take(16), depth);
                device("sender device");
                out.field("envelope: message id", c.take(16), depth);
                const auto mode = c.take(1);
                out.field("envelope: mode " + std::to_string(mode[0]) + " (RatchetMessage)", mode, depth);
            } else {
                out.field("message id", c.take(16), depth);
                const auto mode = c.take(1);
                out.field("mode " + std::to_string(mode[0]) + " (RatchetMessage)", mode, depth);
                out.field("conversation id", c.take(16), depth);
                device("sender device");
                const auto count = c.take(1);
                out.field("count " + std::to_string(count[0]), count, depth);
                REQUIRE(count[0] == 1);
                device("recipient device");
                const auto len = c.take(4);
                out.field("body length " + std::to_string(Cursor(len).number(4)), len, depth);
            }
            const auto type = c.take(1);
            out.field("type " + std::to_string(type[0]) + " (initial)", type, depth);
            out.field("session id", c.take(8), depth);
            out.field("IK_A (Ed25519)", c.take(32), depth);
            out.field("EK_A (X25519)", c.take(32), depth);
            const auto spk_id = c.take(4);
            out.field("SPK id " + std::to_string(Cursor(spk_id).number(4)), spk_id, depth);
            const auto opk_id = c.take(4);
            out.field("OPK id " + std::to_string(Cursor(opk_id).number(4)), opk_id, depth);
            const auto suite = c.take(1);
            out.field("suite " + std::to_string(suite[0]) + " (AES-256-GCM)", suite, depth);
            out.field("ratchet key (X25519)", c.take(32), depth);
            const auto pn = c.take(4);
            out.field("pn " + std::to_string(Cursor(pn).number(4)), pn, depth);
            const auto n = c.take(4);
            out.field("n " + std::to_string(Cursor(n).number(4)), n, depth);
            const auto body = c.rest();
            REQUIRE(body.size() >= 16);
            out.field("ciphertext", body.first(body.size() - 16), depth);
            out.field("tag", body.last(16), depth);
            return;
        }
        case sim::FrameType::receipt: {
            const auto len = c.take(1);
            const auto peer = c.take(len[0]);
            out.field("peer length, peer " + quoted(peer), sim::ByteView{len.data(), 1 + peer.size()}, depth);
            const auto device = c.take(4);
            const auto d = Cursor(device).number(4);
            out.field(d == 0 ? std::string("device 0 (stored: every device's mailbox)") : "device " + std::to_string(d),
                      device, depth);
            const auto count = c.take(2);
            const auto n = Cursor(count).number(2);
            out.field("count " + std::to_string(n), count, depth);
            for (std::uint64_t i = 0; i < n; ++i) {
                out.field("message id", c.take(16), depth);
            }
            return;
        }
        default:
            FAIL("no layout for this frame type in the example");
    }
}

/// A record (4.1) and, below it, the inner frame it carries.
void record_payload(Block& out, Cursor& c, const sim::Bytes& inner, bool delivered) {
    const auto header = c.take(16);
    Cursor h(header);
    const auto version = h.number(1);
    const auto suite = h.number(1);
    h.number(2);
    const auto epoch = h.number(4);
    const auto seq = h.number(8);
    out.field("record header: version " + std::to_string(version) + ", suite " + std::to_string(suite) +
                  ", reserved, epoch " + std::to_string(epoch) + ", seq " + std::to_string(seq),
              header, 1);
    const auto body = c.rest();
    out.field("ciphertext", body.first(body.size() - 16), 1);
    out.field("tag", body.last(16), 1);
    out.note("the record's plaintext, one inner frame:");
    const auto f = sim::decode_frame(inner).value();
    frame_fields(out, inner, 2, [&](Cursor& p) { inner_payload(out, f, p, 3, delivered); });
}

void transport(Block& out, const ExampleClient::Entry& e, std::size_t handshake_index) {
    frame_fields(out, e.wire, 0, [&](Cursor& p) {
        if (e.inner) {
            record_payload(out, p, *e.inner, !e.sent);
        } else {
            handshake_payload(out, p, handshake_index);
        }
    });
}

// ---------------------------------------------------------------- the document's formulas, done by hand

sim::Bytes cat(std::initializer_list<sim::ByteView> parts) {
    sim::Bytes out;
    for (const auto p : parts) {
        out.insert(out.end(), p.begin(), p.end());
    }
    return out;
}

sim::Bytes text(std::string_view s) {
    return sim::Bytes(s.begin(), s.end());
}

/// 4.3: the AEAD key of an epoch (or per-message) key K.
sim::Bytes aead_key_of(sim::ByteView k) {
    const auto prk = sim::crypto::hkdf_sha256_extract({}, k);
    return sim::to_bytes(sim::crypto::hkdf_sha256_expand(prk, text("libsim v1 aead key"), 32).value());
}

/// 4.4: AES-256-GCM with nonce 00000000 || seq (u64 BE).
sim::Bytes aead_open(sim::ByteView key, std::uint64_t seq, sim::ByteView ad, sim::ByteView body) {
    sim::Bytes nonce(12, 0);
    for (std::size_t i = 0; i < 8; ++i) {
        nonce[4 + i] = static_cast<std::uint8_t>(seq >> (8U * (7 - i)));
    }
    auto aead = sim::crypto::make_aead(sim::crypto::AeadAlgorithm::aes256_gcm, key).value();
    auto pt = aead->open(nonce, ad, body);
    REQUIRE(pt.has_value());
    return *pt;
}

/// The Noise message inside a handshake frame (after the protocol id byte).
sim::Bytes noise_part(const sim::Bytes& wire) {
    const auto f = sim::decode_frame(wire).value();
    return sim::Bytes(f.payload.begin() + 1, f.payload.end());
}

/// The record inside a record frame.
sim::Bytes record_part(const sim::Bytes& wire) {
    return sim::decode_frame(wire).value().payload;
}

// ---------------------------------------------------------------- the run

sim::Bytes repeated(std::uint8_t b) {
    return sim::Bytes(32, b);
}

struct Example {
    std::vector<std::string> blocks;
    std::string bob_text;  ///< what Bob's side opens (a check that the example is coherent)
};

Example generate() {
    Example ex;
    sim::ManualClock clock;
    RecordingRng server_rng("libsim protocol example: server");
    RecordingRng alice_rng("libsim protocol example: alice");
    RecordingRng bob_rng("libsim protocol example: bob");

    auto backend = sim::store::make_memory_backend();
    sim::auth::HashPolicy hp;
    hp.bcrypt.cost = 4;
    auto hasher = std::move(sim::auth::make_password_hasher(hp).value());
    auto authenticator = std::move(sim::auth::Authenticator::create(*backend, *hasher, server_rng, clock).value());
    sim::auth::SessionTokens tokens(*backend, server_rng);
    sim::testing::QueueExecutor workers;
    sim::ServerConfig cfg;
    cfg.static_private_key = sim::to_bytes<sim::SecureBytes>(repeated(0x53));
    cfg.conversation_mode = sim::ConversationMode::end_to_end;
    cfg.wall_clock = [] { return sim::store::WallTime{std::chrono::milliseconds{1'800'000'000'000}}; };
    auto server = std::move(sim::ServerCore::create(std::move(cfg), *authenticator, tokens, nullptr, backend.get(),
                                                    backend.get(), workers, server_rng, clock)
                                .value());
    sim::MemoryKnownServers known;

    struct Conn {
        std::shared_ptr<ExampleClient> client;
        std::unique_ptr<Pipe> pipe;
    };
    std::vector<Conn> conns;
    const auto settle = [&] {
        for (int i = 0; i < 100; ++i) {
            bool moved = false;
            for (auto& c : conns) {
                moved = c.pipe->pump() || moved;
            }
            moved = workers.run_pending() != 0 || moved;
            if (!moved) {
                return;
            }
        }
        FAIL("the example did not settle");
    };
    const auto connect = [&](sim::Rng& rng, sim::ByteView static_key) -> ExampleClient& {
        Conn c;
        c.pipe = std::make_unique<Pipe>();
        c.client = std::make_shared<ExampleClient>(known, rng, clock, "example:7777", static_key);
        c.pipe->client = c.client;
        c.pipe->server = server->accept(std::make_shared<PipeOutput>(*c.pipe, false), "192.0.2.1:40000");
        REQUIRE(c.pipe->server != nullptr);
        conns.push_back(std::move(c));
        conns.back().client->start(std::make_shared<PipeOutput>(*conns.back().pipe, true));
        settle();
        return *conns.back().client;
    };
    const auto password = [](std::string_view pw) {
        return sim::encode_credentials(
            {sim::CredentialKind::password, sim::to_bytes<sim::SecureBytes>(sim::as_bytes(pw))});
    };

    // Bob has logged in before and published his prekeys (not shown on the wire).
    const auto bob_ik = sim::e2e::identity_from_private(repeated(0xB1)).value();
    auto& bob = connect(bob_rng, repeated(0x42));
    bob.send(sim::Frame{sim::FrameType::init, 0, "bob", "", password("bob's password")});
    settle();
    const auto bob_draws_before = bob_rng.draws.size();
    const auto spk = sim::e2e::generate_signed_prekey(bob_ik, 1, bob_rng);
    const auto opk = sim::e2e::generate_one_time_prekey(1, bob_rng);
    REQUIRE(bob_rng.draws.size() == bob_draws_before + 2);
    sim::PrekeyUpload up;
    up.replace = true;
    up.identity_key = bob_ik.public_key;
    up.signed_prekey_id = spk.id;
    up.signed_prekey = spk.public_key;
    up.signed_prekey_signature = spk.signature;
    up.one_time_prekeys.emplace_back(opk.id, opk.public_key);
    bob.send(sim::Frame{sim::FrameType::prekeys, 0, "bob", "", sim::encode_prekey_upload(up)});
    settle();

    // Alice: handshake and login.
    const auto server_draws_before = server_rng.draws.size();
    auto& alice = connect(alice_rng, repeated(0x41));
    REQUIRE(alice_rng.draws.size() == 1);                         // e of msg1
    REQUIRE(server_rng.draws.size() == server_draws_before + 1);  // e of msg2
    const auto server_ephemeral = server_rng.draws.back();
    alice.send(sim::Frame{sim::FrameType::init, 0, "Alice", "", password("alice's password")});
    settle();
    REQUIRE(alice.inbox.size() == 3);

    {
        Block keys;
        keys.note("fixed keys and the RNG outputs of this run (X25519 private keys, Ed25519 seeds)");
        keys.field("server static private key", repeated(0x53));
        keys.field("server static public key", server->static_public_key());
        keys.field("client static private key", repeated(0x41));
        keys.field("client static public key", sim::crypto::x25519_from_private(repeated(0x41)).value().public_key);
        keys.field("client ephemeral private key", alice_rng.draws[0]);
        keys.field("server ephemeral private key", server_ephemeral);
        keys.field("handshake hash h (after msg3)", alice.handshake_hash);

        // 3.1-3.4 by hand: Noise XX from the keys above, then the record keys, which must open the first records.
        sim::noise::HandshakeConfig hc;
        hc.pattern = sim::noise::Pattern::XX;
        hc.cipher = sim::noise::Cipher::chacha_poly;
        hc.role = sim::noise::Role::initiator;
        hc.prologue = text("libsim/1");
        hc.local_static_private = sim::to_bytes<sim::SecureBytes>(repeated(0x41));
        hc.fixed_ephemeral_private = sim::to_bytes<sim::SecureBytes>(alice_rng.draws[0]);
        auto unused_rng = sim::make_deterministic_rng(sim::as_bytes(std::string_view("unused")));
        auto hs = sim::noise::HandshakeState::create(hc, *unused_rng).value();
        const sim::Bytes hello{0x01, 0x03, 0x02, 0x03, 0x01};
        REQUIRE(hs.write_message(hello).value() == noise_part(alice.log[0].wire));
        REQUIRE(hs.read_message(noise_part(alice.log[1].wire)).value() == sim::Bytes{0x01, 0x02});
        REQUIRE(hs.write_message({}).value() == noise_part(alice.log[2].wire));
        const auto h = sim::to_bytes(hs.handshake_hash());
        REQUIRE(h == alice.handshake_hash);
        const auto split = hs.split().value();
        const auto k1 = sim::to_bytes(split.initiator_to_responder.key());
        const auto k2 = sim::to_bytes(split.responder_to_initiator.key());
        const auto key_i2r = sim::to_bytes(
            sim::crypto::hkdf_sha256(h, k1, cat({text("libsim v1 record i2r"), sim::Bytes{0x02}}), 32).value());
        const auto key_r2i = sim::to_bytes(
            sim::crypto::hkdf_sha256(h, k2, cat({text("libsim v1 record r2i"), sim::Bytes{0x02}}), 32).value());
        keys.field("Split(): k1", k1);
        keys.field("Split(): k2", k2);
        keys.field("key_i2r (epoch-0 key, client -> server)", key_i2r);
        keys.field("key_r2i (epoch-0 key, server -> client)", key_r2i);
        keys.field("AEAD key client -> server (4.3)", aead_key_of(key_i2r));
        keys.field("AEAD key server -> client (4.3)", aead_key_of(key_r2i));
        const auto first_out = record_part(alice.log[3].wire);
        const auto first_in = record_part(alice.log[4].wire);
        REQUIRE(aead_open(aead_key_of(key_i2r), 0, sim::ByteView{first_out}.first(16),
                          sim::ByteView{first_out}.subspan(16)) == *alice.log[3].inner);
        REQUIRE(aead_open(aead_key_of(key_r2i), 0, sim::ByteView{first_in}.first(16),
                          sim::ByteView{first_in}.subspan(16)) == *alice.log[4].inner);
        ex.blocks.push_back(keys.text());
    }
    std::size_t handshake_index = 0;
    for (const auto& e : alice.log) {
        Block b;
        const bool hs = !e.inner.has_value();
        if (hs) {
            ++handshake_index;
        }
        const auto inner =
            hs ? std::optional<sim::Frame>{} : std::optional<sim::Frame>{sim::decode_frame(*e.inner).value()};
        b.note(std::string(e.sent ? "client -> server: " : "server -> client: ") +
               (hs ? "handshake msg" + std::to_string(handshake_index)
                   : "record carrying " + type_name(inner->type) + " sid " + std::to_string(inner->sid)));
        transport(b, e, handshake_index);
        ex.blocks.push_back(b.text());
    }
    const auto login_entries = alice.log.size();

    // Alice asks for bob: the server answers ack_init 2 (bob is online) and a KEYGEN with bob's bundle.
    alice.send(sim::Frame{sim::FrameType::init, 0, "alice", "bob", sim::encode_credentials({})});
    settle();
    REQUIRE(alice.inbox.size() == 5);
    const auto& keygen = alice.inbox.back();
    REQUIRE(keygen.type == sim::FrameType::keygen);
    const auto assignment = sim::decode_key_assignment(keygen.payload).value();
    REQUIRE(assignment.bundle.has_value());

    const auto alice_ik = sim::e2e::identity_from_private(repeated(0xA1)).value();
    const auto draws_before = alice_rng.draws.size();
    auto session =
        sim::e2e::Session::initiate(alice_ik, "alice", *assignment.bundle, "bob", assignment.suite, alice_rng).value();
    REQUIRE(alice_rng.draws.size() == draws_before + 2);  // EK_A, then the first sending ratchet key
    sim::MessageId id{};
    for (std::size_t i = 0; i < id.size(); ++i) {
        id[i] = static_cast<std::uint8_t>(0xC0 + i);
    }
    // Alice's wall clock, one second behind the server's: the sender's timestamp sealed in the message (6.3).
    const sim::WallTime sent_at{std::chrono::milliseconds{1'799'999'999'000}};
    // 6.5: the pair's conversation id; both have one device, 1.
    const auto conversation = sim::pair_conversation_id("alice", "bob");
    const sim::E2eContent content{sim::ContentKind::text, 1,       id,
                                  "Hello Bob!",           sent_at, sim::ContentAddress{conversation, 1, 1}};
    const auto plaintext = sim::encode_e2e_content(content);
    const auto ratchet_message = session.seal(plaintext).value();
    const sim::Envelope bob_envelope{id, sim::ConversationMode::end_to_end, ratchet_message};
    const auto envelope = sim::encode_envelope(bob_envelope);
    alice.send(sim::Frame{sim::FrameType::message, 1, "alice", "bob",
                          sim::encode_pair_submission(bob_envelope, "alice", "bob")});
    settle();

    {
        Block keys;
        keys.note("end-to-end keys (X25519 private keys, Ed25519 seeds)");
        keys.field("IK_A seed (Ed25519 private)", repeated(0xA1));
        keys.field("IK_A public (Ed25519)", alice_ik.public_key);
        keys.field("IK_A X25519 form (u)", sim::e2e::identity_dh_public(alice_ik.public_key).value());
        keys.field("IK_B seed (Ed25519 private)", repeated(0xB1));
        keys.field("IK_B public (Ed25519)", bob_ik.public_key);
        keys.field("IK_B X25519 form (u)", sim::e2e::identity_dh_public(bob_ik.public_key).value());
        keys.field("SPK_B private (id 1)", spk.private_key);
        keys.field("OPK_B private (id 1)", opk.private_key);
        keys.field("EK_A private", alice_rng.draws[draws_before]);
        keys.field("first ratchet key private", alice_rng.draws[draws_before + 1]);
        const auto ik_a = sim::e2e::encode_public_key(sim::e2e::identity_dh_public(alice_ik.public_key).value());
        const auto ik_b = sim::e2e::encode_public_key(sim::e2e::identity_dh_public(bob_ik.public_key).value());
        sim::Bytes ad = ik_a;
        ad.insert(ad.end(), ik_b.begin(), ik_b.end());
        for (const std::string_view name : {"alice", "bob"}) {
            ad.push_back(static_cast<std::uint8_t>(name.size()));
            ad.insert(ad.end(), name.begin(), name.end());
        }
        keys.field("AD (6.2)", ad);

        // 6.2-6.3 by hand: X3DH, the first ratchet step and ENCRYPT, which must open the message.
        const auto seed_digest = sim::crypto::sha512(repeated(0xA1));
        const sim::Bytes ik_a_x(seed_digest.begin(), seed_digest.begin() + 32);  // 6.1: X25519 form of IK_A
        const auto ik_b_u = sim::e2e::identity_dh_public(bob_ik.public_key).value();
        // 6.1: the X25519 form of an identity's public key is the X25519 public key of its private form.
        REQUIRE(sim::crypto::x25519_from_private(ik_a_x).value().public_key ==
                sim::e2e::identity_dh_public(alice_ik.public_key).value());
        const auto bob_digest = sim::crypto::sha512(repeated(0xB1));
        REQUIRE(sim::crypto::x25519_from_private(sim::ByteView{bob_digest}.first(32)).value().public_key == ik_b_u);
        const auto& ek = alice_rng.draws[draws_before];
        // 6.3: session id = the first 8 bytes of SHA-256(EK_A).
        const auto ek_public = sim::crypto::x25519_from_private(ek).value().public_key;
        const auto ek_digest = sim::crypto::sha256(ek_public);
        REQUIRE(sim::Bytes(ratchet_message.begin() + 1, ratchet_message.begin() + 9) ==
                sim::Bytes(ek_digest.begin(), ek_digest.begin() + 8));
        const auto dh1 = sim::crypto::x25519(ik_a_x, spk.public_key).value();
        const auto dh2 = sim::crypto::x25519(ek, ik_b_u).value();
        const auto dh3 = sim::crypto::x25519(ek, spk.public_key).value();
        const auto dh4 = sim::crypto::x25519(ek, opk.public_key).value();
        const sim::Bytes zeros(32, 0);
        const auto sk = sim::to_bytes(
            sim::crypto::hkdf_sha256(zeros, cat({sim::Bytes(32, 0xFF), dh1, dh2, dh3, dh4}), text("libsim X3DH v1"), 32)
                .value());
        const auto dh_r = sim::crypto::x25519(alice_rng.draws[draws_before + 1], spk.public_key).value();
        const auto rk_ck = sim::to_bytes(sim::crypto::hkdf_sha256(sk, dh_r, text("libsim ratchet v1"), 64).value());
        const sim::Bytes ck(rk_ck.begin() + 32, rk_ck.end());
        const auto mk = sim::to_bytes(sim::crypto::hmac_sha256(ck, sim::Bytes{0x01}));
        const auto k = sim::to_bytes(sim::crypto::hkdf_sha256({}, mk, text("libsim ratchet message"), 32).value());
        const std::size_t header_size = 1 + 8 + 32 + 32 + 4 + 4 + 1 + 32 + 4 + 4;
        const sim::ByteView rm{ratchet_message};
        REQUIRE(aead_open(aead_key_of(k), 0, cat({ad, rm.first(header_size)}), rm.subspan(header_size)) == plaintext);
        keys.field("DH1 = DH(IK_A, SPK_B)", dh1);
        keys.field("DH2 = DH(EK_A, IK_B)", dh2);
        keys.field("DH3 = DH(EK_A, SPK_B)", dh3);
        keys.field("DH4 = DH(EK_A, OPK_B)", dh4);
        keys.field("SK", sk);
        keys.field("KDF_RK(SK, DH(ratchet key, SPK_B)): root key", sim::ByteView{rk_ck}.first(32));
        keys.field("  sending chain key", ck);
        keys.field("message key mk (n 0) = HMAC(ck, 01)", mk);
        keys.field("K = HKDF(\"\", mk, \"libsim ratchet message\")", k);
        keys.field("AEAD key of K (4.3); nonce = 12 zero bytes", aead_key_of(k));
        keys.field("conversation id = SHA-256(\"libsim pair\" 00 \"alice\" 00 \"bob\")[0..16]", conversation);
        keys.field("E2eContent: kind 4, seq 1", sim::ByteView{plaintext}.first(9));
        keys.field("  message id", sim::ByteView{plaintext}.subspan(9, 16));
        keys.field("  conversation id", sim::ByteView{plaintext}.subspan(25, 16));
        keys.field("  sender device 1, recipient device 1", sim::ByteView{plaintext}.subspan(41, 8));
        keys.field("  sent_at (Unix ms) " + std::to_string(sent_at.time_since_epoch().count()),
                   sim::ByteView{plaintext}.subspan(49, 8));
        keys.field("  text \"Hello Bob!\"", sim::ByteView{plaintext}.subspan(57));
        ex.blocks.push_back(keys.text());
    }
    REQUIRE(alice.log.size() == login_entries + 5);  // init, ack_init 2, keygen, message, receipt stored
    for (std::size_t i = login_entries; i < alice.log.size(); ++i) {
        const auto& e = alice.log[i];
        const auto inner = sim::decode_frame(*e.inner).value();
        Block b;
        b.note(std::string(e.sent ? "client -> server: " : "server -> client: ") + "record carrying " +
               type_name(inner.type) + " sid " + std::to_string(inner.sid));
        transport(b, e, 0);
        ex.blocks.push_back(b.text());
    }

    // What Bob receives, in his own channel: the same envelope behind the delivery header (6.5).
    {
        REQUIRE_FALSE(bob.log.empty());
        const auto& e = bob.log.back();
        REQUIRE_FALSE(e.sent);
        REQUIRE(e.inner.has_value());
        const auto inner = sim::decode_frame(*e.inner).value();
        REQUIRE(inner.type == sim::FrameType::message);
        Block b;
        b.note("server -> client (Bob's connection): record carrying message sid " + std::to_string(inner.sid));
        transport(b, e, 0);
        ex.blocks.push_back(b.text());
    }

    // Bob opens what the server forwarded (the example must be a message that works).
    REQUIRE_FALSE(bob.inbox.empty());
    const auto& forwarded = bob.inbox.back();
    REQUIRE(forwarded.type == sim::FrameType::message);
    const auto delivered = sim::decode_delivered(forwarded.payload).value();
    // 6.5: the server's receive time (its wall clock) in the delivery header, then the envelope as Alice sent it.
    REQUIRE(delivered.received_at == sim::WallTime{std::chrono::milliseconds{1'800'000'000'000}});
    REQUIRE(delivered.conversation == conversation);
    REQUIRE(delivered.sender_device == 1);
    REQUIRE(sim::encode_envelope(delivered.envelope) == envelope);
    const auto& env = delivered.envelope;
    const auto info = sim::e2e::inspect(env.body).value();
    REQUIRE(info.initial.has_value());
    auto bob_session = sim::e2e::Session::respond(bob_ik, "bob", spk, &opk, *info.initial, "alice", bob_rng).value();
    const auto opened = bob_session.open(env.body).value();
    const auto bob_content = sim::decode_e2e_content(opened).value();
    REQUIRE(bob_content.sent_at == sent_at);
    REQUIRE(bob_content.address == content.address);
    ex.bob_text = bob_content.text;
    return ex;
}

/// The code blocks of the document's appendix, in order.
std::vector<std::string> document_blocks(const std::string& path) {
    std::ifstream in(path);
    REQUIRE(in.good());
    std::vector<std::string> blocks;
    std::string line;
    bool in_appendix = false;
    std::optional<std::string> block;
    while (std::getline(in, line)) {
        if (line.rfind("## ", 0) == 0 && !block) {
            in_appendix = line.rfind("## Appendix A", 0) == 0;
            continue;
        }
        if (!in_appendix || line.rfind("```", 0) != 0) {
            if (block) {
                *block += line + '\n';
            }
            continue;
        }
        if (block) {
            blocks.push_back(std::move(*block));
            block.reset();
        } else {
            block.emplace();
        }
    }
    return blocks;
}

}  // namespace

TEST_CASE("docs/protocol.md Appendix A is what the library puts on the wire") {
    const auto ex = generate();
    CHECK(ex.bob_text == "Hello Bob!");
    const auto doc = document_blocks(std::string(SIM_SOURCE_DIR) + "/docs/protocol.md");

    std::string generated;
    for (const auto& b : ex.blocks) {
        generated += "```\n" + b + "```\n\n";
    }
    const bool same = doc == ex.blocks;
    if (!same) {
        std::ofstream(std::string(SIM_TEST_BUILD_DIR) + "/protocol_example.txt") << generated;
    }
    REQUIRE(doc.size() == ex.blocks.size());
    for (std::size_t i = 0; i < doc.size(); ++i) {
        if (doc[i] == ex.blocks[i]) {
            continue;
        }
        std::istringstream a(doc[i]);
        std::istringstream b(ex.blocks[i]);
        std::string la;
        std::string lb;
        while (std::getline(a, la) && std::getline(b, lb) && la == lb) {
        }
        FAIL_CHECK("Appendix A, code block " << i + 1 << ": the document says\n"
                                             << la << "\nthe library gives\n"
                                             << lb);
    }
}

TEST_CASE("docs/protocol.md 6.3: ENCRYPT with TDES-CBC-HMAC-SHA256 authenticates AD || header in the HMAC") {
    // The appendix uses AES-256-GCM; this follows 6.2-6.3 by hand for the TDES suite.
    RecordingRng bob_rng("libsim protocol example: tdes bob");
    RecordingRng alice_rng("libsim protocol example: tdes alice");
    const auto alice_ik = sim::e2e::identity_from_private(repeated(0xA1)).value();
    const auto bob_ik = sim::e2e::identity_from_private(repeated(0xB1)).value();
    const auto spk = sim::e2e::generate_signed_prekey(bob_ik, 1, bob_rng);
    sim::e2e::PrekeyBundle bundle;
    bundle.identity_key = bob_ik.public_key;
    bundle.signed_prekey_id = spk.id;
    bundle.signed_prekey = spk.public_key;
    bundle.signed_prekey_signature = spk.signature;
    auto session =
        sim::e2e::Session::initiate(alice_ik, "alice", bundle, "bob", sim::SuiteId::tdes_cbc_hmac_sha256, alice_rng)
            .value();
    const auto pt = text("Hello Bob!");
    const auto message = session.seal(pt).value();
    REQUIRE(alice_rng.draws.size() == 3);  // EK_A, the first ratchet key, the IV

    const auto seed_digest = sim::crypto::sha512(repeated(0xA1));
    const sim::Bytes ik_a_x(seed_digest.begin(), seed_digest.begin() + 32);
    const auto ik_b_u = sim::e2e::identity_dh_public(bob_ik.public_key).value();
    const auto& ek = alice_rng.draws[0];
    const auto dh1 = sim::crypto::x25519(ik_a_x, spk.public_key).value();
    const auto dh2 = sim::crypto::x25519(ek, ik_b_u).value();
    const auto dh3 = sim::crypto::x25519(ek, spk.public_key).value();
    const auto sk =
        sim::to_bytes(sim::crypto::hkdf_sha256(sim::Bytes(32, 0), cat({sim::Bytes(32, 0xFF), dh1, dh2, dh3}),
                                               text("libsim X3DH v1"), 32)
                          .value());
    const auto dh_r = sim::crypto::x25519(alice_rng.draws[1], spk.public_key).value();
    const auto rk_ck = sim::to_bytes(sim::crypto::hkdf_sha256(sk, dh_r, text("libsim ratchet v1"), 64).value());
    const auto mk = sim::to_bytes(sim::crypto::hmac_sha256(sim::ByteView{rk_ck}.subspan(32), sim::Bytes{0x01}));
    const auto k = sim::to_bytes(sim::crypto::hkdf_sha256({}, mk, text("libsim ratchet message"), 24).value());
    const auto prk = sim::crypto::hkdf_sha256_extract({}, k);
    const auto enc = sim::to_bytes(sim::crypto::hkdf_sha256_expand(prk, text("libsim v1 tdes enc"), 24).value());
    const auto mac = sim::to_bytes(sim::crypto::hkdf_sha256_expand(prk, text("libsim v1 tdes mac"), 32).value());

    const auto ik_a = sim::e2e::encode_public_key(sim::e2e::identity_dh_public(alice_ik.public_key).value());
    const auto ik_b = sim::e2e::encode_public_key(ik_b_u);
    const auto ad = cat({ik_a, ik_b, sim::Bytes{5}, text("alice"), sim::Bytes{3}, text("bob")});
    const std::size_t header_size = 1 + 8 + 32 + 32 + 4 + 4 + 1 + 32 + 4 + 4;
    const sim::ByteView m{message};
    REQUIRE(m[81] == 1);  // the suite byte of the initial message
    const auto body = m.subspan(header_size);
    REQUIRE(body.size() == 8 + 16 + 32);  // IV, two blocks (10 bytes + PKCS#7 padding), HMAC
    const auto iv = body.first(8);
    CHECK(sim::to_bytes(iv) == alice_rng.draws[2]);
    const auto c = body.subspan(8, 16);
    CHECK(sim::to_bytes(sim::crypto::hmac_sha256(mac, cat({ad, m.first(header_size), iv, c}))) ==
          sim::to_bytes(body.last(32)));
    CHECK(sim::crypto::tdes_cbc_decrypt(enc, iv, c, true).value() == pt);
}
