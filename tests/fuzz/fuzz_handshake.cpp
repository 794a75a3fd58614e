// libFuzzer target for the handshakes (docs/protocol.md section 3): every input is fed as a handshake message to
//   1. a Noise responder (XX and IK, both ciphers) as message 1;
//   2. a Noise initiator (XX and IK, both ciphers) as message 2, after it wrote an honest message 1;
//   3. the channel server (ServerHandshake) as msg1;
//   4. the channel client (ClientHandshake) as msg2, after it wrote an honest msg1;
//   5. the channel server as msg3, after an honest msg1 / msg2 exchange.
// Keys and ephemerals are fixed (deterministic RNG), so the corpus can hold genuine messages to mutate.
//
// Properties checked (any violation aborts, which libFuzzer reports as a crash):
// - a failed read leaves the object failed, hides the handshake hash, and every later call says invalid_state;
// - a successful read never returns more payload bytes than the message carried, and leaves the object alive;
// - a server that completes yields sessions whose suite is one the server allows.
#include <sim/channel.h>
#include <sim/clock.h>
#include <sim/crypto.h>
#include <sim/handshake.h>
#include <sim/rng.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace {

void require(bool condition, const char* what) {
    if (!condition) {
        std::fprintf(stderr, "fuzz_handshake: property violated: %s\n", what);
        std::abort();
    }
}

std::unique_ptr<sim::Rng> fixed_rng(std::uint8_t tag) {
    const std::array<std::uint8_t, 32> seed{0x6e, tag};
    return sim::make_deterministic_rng(seed);
}

sim::SecureBytes fixed_key(std::uint8_t tag) {
    sim::SecureBytes k(32);
    for (std::size_t i = 0; i < k.size(); ++i) {
        k[i] = static_cast<std::uint8_t>(tag + i);
    }
    return k;
}

void check_noise_read(sim::noise::HandshakeState& hs, const sim::Result<sim::Bytes>& r, sim::ByteView in) {
    if (r) {
        require(r->size() <= in.size(), "Noise payload longer than the message");
        require(hs.next_action() != sim::noise::Action::failed, "Noise failed after a successful read");
        return;
    }
    require(r.code() != sim::Errc::ok, "Noise failure without a code");
    require(hs.next_action() == sim::noise::Action::failed, "Noise not failed after a failed read");
    require(hs.handshake_hash().empty(), "Noise hash visible after a failure");
    require(hs.failure().code == r.code(), "Noise failure() differs from the returned error");
    require(hs.write_message({}).code() == sim::Errc::invalid_state, "Noise write after failure");
    require(hs.read_message(in).code() == sim::Errc::invalid_state, "Noise read after failure");
    require(hs.split().code() == sim::Errc::invalid_state, "Noise split after failure");
}

sim::noise::HandshakeConfig noise_config(sim::noise::Pattern p, sim::noise::Cipher c, sim::noise::Role role) {
    sim::noise::HandshakeConfig cfg;
    cfg.pattern = p;
    cfg.cipher = c;
    cfg.role = role;
    cfg.prologue = {'f', 'u', 'z', 'z'};
    cfg.local_static_private = fixed_key(role == sim::noise::Role::initiator ? 1 : 2);
    if (p == sim::noise::Pattern::IK && role == sim::noise::Role::initiator) {
        cfg.remote_static_public = sim::crypto::x25519_from_private(fixed_key(2))->public_key;
    }
    return cfg;
}

void fuzz_noise(sim::ByteView in) {
    for (const auto p : {sim::noise::Pattern::XX, sim::noise::Pattern::IK}) {
        for (const auto c : {sim::noise::Cipher::aes_gcm, sim::noise::Cipher::chacha_poly}) {
            {
                auto rng = fixed_rng(1);
                auto hs = sim::noise::HandshakeState::create(noise_config(p, c, sim::noise::Role::responder), *rng);
                require(hs.has_value(), "Noise responder create");
                const auto r = hs->read_message(in);
                check_noise_read(*hs, r, in);
                if (r) {
                    // Keep going: the responder answers, which runs its DH on the peer's ephemeral.
                    const auto w = hs->write_message({});
                    require(w.has_value() || hs->next_action() == sim::noise::Action::failed, "write after read");
                }
            }
            {
                auto rng = fixed_rng(2);
                auto hs = sim::noise::HandshakeState::create(noise_config(p, c, sim::noise::Role::initiator), *rng);
                require(hs.has_value(), "Noise initiator create");
                require(hs->write_message({}).has_value(), "Noise initiator first message");
                check_noise_read(*hs, hs->read_message(in), in);
            }
        }
    }
}

template <typename H>
void check_channel(H& h, const sim::Status& st, sim::ByteView in) {
    if (st) {
        require(h.next_action() != sim::ChannelAction::failed, "channel failed after a successful read");
        return;
    }
    require(h.next_action() == sim::ChannelAction::failed, "channel not failed after a failed read");
    require(h.failure().code == st.code(), "channel failure() differs from the returned error");
    require(h.write_message().code() == sim::Errc::invalid_state, "channel write after failure");
    require(h.read_message(in).code() == sim::Errc::invalid_state, "channel read after failure");
    require(h.finish().code() == sim::Errc::invalid_state, "channel finish after failure");
}

void fuzz_channel(sim::ByteView in) {
    sim::ManualClock clock;
    sim::ServerHandshakeConfig sc;
    sc.static_private_key = fixed_key(3);
    sim::ClientHandshakeConfig cc;
    cc.server_id = "fuzz";
    cc.static_private_key = fixed_key(4);

    {
        // 3. server reads msg1.
        auto rng = fixed_rng(3);
        auto s = sim::ServerHandshake::create(sc, *rng, clock);
        require(s.has_value(), "server create");
        const auto st = s->read_message(in);
        check_channel(*s, st, in);
        if (st) {
            const auto m2 = s->write_message();
            require(m2.has_value(), "server msg2 after an accepted msg1");
        }
    }
    {
        // 4. client reads msg2.
        auto rng = fixed_rng(4);
        sim::MemoryKnownServers known;
        auto c = sim::ClientHandshake::create(cc, known, *rng, clock);
        require(c.has_value(), "client create");
        require(c->write_message().has_value(), "client msg1");
        check_channel(*c, c->read_message(in), in);
    }
    {
        // 5. server reads msg3 after an honest start.
        auto srng = fixed_rng(5);
        auto crng = fixed_rng(6);
        sim::MemoryKnownServers known;
        auto s = sim::ServerHandshake::create(sc, *srng, clock);
        auto c = sim::ClientHandshake::create(cc, known, *crng, clock);
        require(s.has_value() && c.has_value(), "create pair");
        auto m1 = c->write_message();
        require(m1.has_value() && s->read_message(*m1).has_value(), "honest msg1");
        auto m2 = s->write_message();
        require(m2.has_value() && c->read_message(*m2).has_value(), "honest msg2");
        const auto st = s->read_message(in);
        check_channel(*s, st, in);
        if (st) {
            require(s->next_action() == sim::ChannelAction::complete, "server not complete after msg3");
            auto est = s->finish();
            require(est.has_value(), "finish after complete");
            require(sim::SuitePolicy::default_policy().allows(est->suite), "suite not allowed");
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const sim::ByteView in(data, size);
    fuzz_noise(in);
    fuzz_channel(in);
    return 0;
}
