// Throughput of libsim's record layer beside Botan's raw ciphers, channel handshakes per second, and the frame
// codec. Run: build/bench/bench_core  (see docs/performance.md)
#include <sim/channel.h>
#include <sim/crypto.h>
#include <sim/frame.h>
#include <sim/rng.h>
#include <sim/session.h>

#include <benchmark/benchmark.h>
#include <botan/aead.h>
#include <botan/cipher_mode.h>
#include <botan/mac.h>

#include <chrono>
#include <ctime>
#include <memory>

namespace {

const sim::SuiteId suites[] = {sim::SuiteId::aes256_gcm, sim::SuiteId::chacha20_poly1305,
                               sim::SuiteId::tdes_cbc_hmac_sha256};

sim::SuiteId suite_arg(const benchmark::State& state) { return suites[state.range(0)]; }

/// seal + open of one record through SendSession / RecvSession.
void BM_SessionSealOpen(benchmark::State& state) {
    auto rng = sim::make_deterministic_rng(sim::as_bytes("bench"));
    const sim::SteadyClock clock;
    sim::SessionConfig cfg;
    cfg.suite = suite_arg(state);
    const auto key = rng->bytes(sim::suite_key_size(cfg.suite));
    auto send = sim::SendSession::create(cfg, key, *rng, clock);
    auto recv = sim::RecvSession::create(cfg, key, *rng, clock);
    const sim::Bytes msg(static_cast<std::size_t>(state.range(1)), 0x61);
    for (auto _ : state) {
        auto rec = send->seal(msg);
        auto plain = recv->open(*rec);
        benchmark::DoNotOptimize(plain);
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(1));
    state.SetLabel(std::string(sim::suite_name(cfg.suite)));
}

/// The same work with Botan's cipher alone (no record header, no sequence checks, no rotation): encrypt + decrypt.
/// For TDES the raw baseline is TDES-CBC-PKCS7 plus HMAC-SHA256 over the ciphertext, the composition the suite uses.
void BM_BotanRaw(benchmark::State& state) {
    const auto id = suite_arg(state);
    const std::size_t size = static_cast<std::size_t>(state.range(1));
    Botan::secure_vector<uint8_t> buf;
    const std::vector<uint8_t> msg(size, 0x61);
    const std::vector<uint8_t> key(32, 7);
    const std::vector<uint8_t> nonce(12, 1);
    if (id == sim::SuiteId::tdes_cbc_hmac_sha256) {
        auto enc = Botan::Cipher_Mode::create_or_throw("TripleDES/CBC/PKCS7", Botan::ENCRYPTION);
        auto dec = Botan::Cipher_Mode::create_or_throw("TripleDES/CBC/PKCS7", Botan::DECRYPTION);
        auto mac = Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)");
        enc->set_key(key.data(), 24);
        dec->set_key(key.data(), 24);
        mac->set_key(key.data(), 32);
        std::vector<uint8_t> tag(32);
        for (auto _ : state) {
            buf.assign(msg.begin(), msg.end());
            enc->start(nonce.data(), 8);
            enc->finish(buf);
            mac->update(buf.data(), buf.size());
            mac->final(tag.data());
            mac->update(buf.data(), buf.size());
            mac->final(tag.data());
            dec->start(nonce.data(), 8);
            dec->finish(buf);
            benchmark::DoNotOptimize(buf);
        }
    } else {
        const char* name = id == sim::SuiteId::aes256_gcm ? "AES-256/GCM" : "ChaCha20Poly1305";
        auto enc = Botan::AEAD_Mode::create_or_throw(name, Botan::ENCRYPTION);
        auto dec = Botan::AEAD_Mode::create_or_throw(name, Botan::DECRYPTION);
        enc->set_key(key.data(), key.size());
        dec->set_key(key.data(), key.size());
        for (auto _ : state) {
            buf.assign(msg.begin(), msg.end());
            enc->start(nonce.data(), nonce.size());
            enc->finish(buf);
            dec->start(nonce.data(), nonce.size());
            dec->finish(buf);
            benchmark::DoNotOptimize(buf);
        }
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * state.range(1));
    state.SetLabel(std::string(sim::suite_name(id)) + " (Botan raw)");
}

void suite_sizes(benchmark::internal::Benchmark* b) {
    for (int s = 0; s < 3; ++s) {
        for (const int size : {100, 1024, 16384}) {
            b->Args({s, size});
        }
    }
}

BENCHMARK(BM_SessionSealOpen)->Apply(suite_sizes);
BENCHMARK(BM_BotanRaw)->Apply(suite_sizes);

/// A complete channel handshake (Noise XX + suite negotiation + session keys) on both sides, in memory.
void BM_ChannelHandshakeXX(benchmark::State& state) {
    auto rng = sim::make_system_rng();
    const sim::SteadyClock clock;
    sim::ServerHandshakeConfig server_cfg;
    server_cfg.static_private_key = rng->secure_bytes(32);
    sim::MemoryKnownServers known;
    for (auto _ : state) {
        sim::ClientHandshakeConfig client_cfg;
        client_cfg.server_id = "bench";
        auto client = sim::ClientHandshake::create(client_cfg, known, *rng, clock);
        auto server = sim::ServerHandshake::create(server_cfg, *rng, clock);
        auto m1 = client->write_message();
        (void)server->read_message(*m1);
        auto m2 = server->write_message();
        (void)client->read_message(*m2);
        auto m3 = client->write_message();
        (void)server->read_message(*m3);
        auto a = client->finish();
        auto b = server->finish();
        if (!a || !b) {
            state.SkipWithError("handshake failed");
            break;
        }
        benchmark::DoNotOptimize(a);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_ChannelHandshakeXX);

/// The server's share of one channel handshake: reading message 1, writing message 2, reading message 3 and
/// finishing, timed alone (the client's steps run untimed) by this thread's CPU clock, so other processes on a
/// shared machine do not inflate it. This is the CPU a server spends per handshake.
std::chrono::nanoseconds thread_cpu_now() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

void BM_ChannelHandshakeServerSide(benchmark::State& state) {
    auto rng = sim::make_system_rng();
    const sim::SteadyClock clock;
    sim::ServerHandshakeConfig server_cfg;
    server_cfg.static_private_key = rng->secure_bytes(32);
    sim::MemoryKnownServers known;
    for (auto _ : state) {
        sim::ClientHandshakeConfig client_cfg;
        client_cfg.server_id = "bench";
        auto client = sim::ClientHandshake::create(client_cfg, known, *rng, clock);
        auto m1 = client->write_message();
        const auto t0 = thread_cpu_now();
        auto server = sim::ServerHandshake::create(server_cfg, *rng, clock);
        (void)server->read_message(*m1);
        auto m2 = server->write_message();
        auto t1 = thread_cpu_now();
        (void)client->read_message(*m2);
        auto m3 = client->write_message();
        auto a = client->finish();
        const auto t2 = thread_cpu_now();
        (void)server->read_message(*m3);
        auto b = server->finish();
        const auto t3 = thread_cpu_now();
        if (!a || !b) {
            state.SkipWithError("handshake failed");
            break;
        }
        state.SetIterationTime(std::chrono::duration<double>((t1 - t0) + (t3 - t2)).count());
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_ChannelHandshakeServerSide)->UseManualTime();

/// One X25519 scalar multiplication with a peer's point (Botan 2's curve25519_donna): Noise XX costs each side
/// three of these (ee, es, se) plus one with the base point for its ephemeral key.
void BM_X25519(benchmark::State& state) {
    auto rng = sim::make_system_rng();
    const auto a = sim::crypto::x25519_generate(*rng);
    const auto b = sim::crypto::x25519_generate(*rng);
    for (auto _ : state) {
        auto shared = sim::crypto::x25519(a.private_key, b.public_key);
        benchmark::DoNotOptimize(shared);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_X25519);

/// A fresh ephemeral key pair (scalar multiplication with the base point).
void BM_X25519Generate(benchmark::State& state) {
    auto rng = sim::make_system_rng();
    for (auto _ : state) {
        auto kp = sim::crypto::x25519_generate(*rng);
        benchmark::DoNotOptimize(kp);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_X25519Generate);

void BM_FrameEncodeDecode(benchmark::State& state) {
    const sim::Frame f{sim::FrameType::message, 9, "alice", "bob",
                       sim::Bytes(static_cast<std::size_t>(state.range(0)), 0x5A)};
    sim::Bytes out;
    for (auto _ : state) {
        out.clear();
        (void)sim::encode_frame_into(f, out);
        auto back = sim::decode_frame(out);
        benchmark::DoNotOptimize(back);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_FrameEncodeDecode)->Arg(256)->Arg(16384);

}  // namespace

BENCHMARK_MAIN();
