// Throughput of libsim's record layer beside Botan's raw ciphers, channel handshakes per second, and the frame
// codec, and the MLS core (commits, Welcome size, application messages). Run: build/bench/bench_core  (see
// docs/performance.md)
#include "../libsim/src/client/e2e_client.h"
#include "../libsim/src/e2e/device_list.h"
#include "../libsim/src/mls/group_state.h"
#include "../libsim/src/mls/join.h"
#include "../libsim/src/mls/validation.h"
#include "../libsim/src/mls/welcome.h"

#include <sim/channel.h>
#include <sim/client_state.h>
#include <sim/crypto.h>
#include <sim/frame.h>
#include <sim/rng.h>
#include <sim/session.h>

#include <benchmark/benchmark.h>
#include <botan/aead.h>
#include <botan/cipher_mode.h>
#include <botan/mac.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

const sim::SuiteId suites[] = {sim::SuiteId::aes256_gcm, sim::SuiteId::chacha20_poly1305,
                               sim::SuiteId::tdes_cbc_hmac_sha256};

sim::SuiteId suite_arg(const benchmark::State& state) {
    return suites[state.range(0)];
}

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

/// One client of the device benchmark: an E2eClient on an in-memory state, logged in as `user`.
struct BenchDevice {
    std::unique_ptr<sim::ClientState> state = sim::make_memory_client_state();
    std::unique_ptr<sim::client_detail::DurableOutbox> outbox;
    std::unique_ptr<sim::client_detail::E2eClient> e2e;

    BenchDevice(const sim::ClientConfig& config, sim::Rng& rng, const sim::Clock& clock, const std::string& user)
        : outbox(std::make_unique<sim::client_detail::DurableOutbox>(*state, clock, std::chrono::seconds(10))),
          e2e(std::make_unique<sim::client_detail::E2eClient>(config, *state, rng, *outbox)) {
        if (!e2e->set_user(user)) {
            std::abort();
        }
    }

    /// Its prekey bundle, from the upload a fresh client makes (one one-time prekey in it).
    sim::e2e::PrekeyBundle bundle() {
        e2e->on_prekey_status(sim::PrekeyStatus{});
        if (!e2e->commit()) {
            std::abort();
        }
        for (const auto& f : e2e->take_frames()) {
            if (f.type == sim::FrameType::prekeys) {
                const auto up = sim::decode_prekey_upload(f.payload).value();
                sim::e2e::PrekeyBundle b;
                b.identity_key = up.identity_key;
                b.signed_prekey_id = up.signed_prekey_id;
                b.signed_prekey = up.signed_prekey;
                b.signed_prekey_signature = up.signed_prekey_signature;
                b.one_time_prekey_id = up.one_time_prekeys.front().first;
                b.one_time_prekey = up.one_time_prekeys.front().second;
                return b;
            }
        }
        std::abort();
    }
};

/// The sending client's cost of one end-to-end text when the recipient has N devices (docs/architecture.md,
/// "Sessions per device"): a Double Ratchet body sealed for each device, the queued text in the outbox and the
/// state commit of all of it. The receipt that empties the outbox again is in the loop too (the same for every N).
void BM_SendToDevices(benchmark::State& state) {
    const auto n = static_cast<std::size_t>(state.range(0));
    auto rng = sim::make_deterministic_rng(sim::as_bytes("bench devices"));
    const sim::ManualClock clock;
    sim::ClientConfig config;
    config.one_time_prekeys = 2;
    BenchDevice alice(config, *rng, clock, "alice");
    std::vector<std::unique_ptr<BenchDevice>> bob;
    sim::KeyAssignment keys;
    keys.mode = sim::ConversationMode::end_to_end;
    keys.peer = "bob";
    sim::e2e::DeviceList list{"bob", 1, 1, {}};
    for (std::size_t d = 1; d <= n; ++d) {
        bob.push_back(std::make_unique<BenchDevice>(config, *rng, clock, "bob"));
        keys.device_bundles.push_back({static_cast<sim::DeviceId>(d), bob.back()->bundle()});
        list.devices.push_back({static_cast<sim::DeviceId>(d), bob.back()->e2e->device_key().public_key});
    }
    const auto& account = bob.front()->e2e->device_key();  // device 1's key is the account key
    keys.account_key = account.public_key;
    keys.device_list =
        sim::e2e::encode_signed_device_list(sim::e2e::sign_device_list(list, account, account).value()).value();
    alice.e2e->on_keys(keys);
    if (!alice.e2e->commit() || !alice.e2e->has_session("bob")) {
        state.SkipWithError("no sessions with bob's devices");
        return;
    }
    const std::string text(100, 'x');
    for (auto _ : state) {
        auto id = alice.e2e->send_text("bob", text, sim::WallTime{}, 1 << 20);
        if (!id) {
            state.SkipWithError(id.error().message().c_str());
            break;
        }
        (void)alice.outbox->on_receipt(sim::ReceiptStatus::stored, sim::Receipt{"bob", 0, {*id}});
    }
    state.SetLabel(std::to_string(n) + (n == 1 ? " device" : " devices"));
}
BENCHMARK(BM_SendToDevices)->Arg(1)->Arg(2)->Arg(5);

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

// ---- MLS core (RFC 9420, ciphersuite 1) ----

namespace mls = sim::mls;

/// Setup failures end the program: a benchmark of a broken group measures nothing.
template <typename T>
T must(sim::Result<T> r, const char* what) {
    if (!r) {
        std::fprintf(stderr, "MLS bench setup: %s: %s\n", what, r.error().message().c_str());
        std::abort();
    }
    return std::move(*r);
}

void must(const sim::Status& s, const char* what) {
    if (!s) {
        std::fprintf(stderr, "MLS bench setup: %s: %s\n", what, s.error().message().c_str());
        std::abort();
    }
}

struct MlsMember {
    mls::KeyPackage kp;
    sim::SecureBytes signature_private;
    sim::SecureBytes init_private;
    sim::SecureBytes encryption_private;
};

/// A signed KeyPackage (basic credential, MLS 1.0, ciphersuite 1, unlimited lifetime) and its private keys.
MlsMember make_mls_member(sim::Rng& rng, const std::string& identity) {
    const auto sig = sim::crypto::ed25519_generate(rng);
    const auto enc = sim::crypto::x25519_generate(rng);
    const auto init = sim::crypto::x25519_generate(rng);
    MlsMember m;
    m.signature_private = sig.private_key;
    m.encryption_private = enc.private_key;
    m.init_private = init.private_key;
    auto& leaf = m.kp.leaf_node;
    leaf.encryption_key = enc.public_key;
    leaf.signature_key = sig.public_key;
    leaf.credential.type = 1;
    leaf.credential.identity = sim::to_bytes(sim::as_bytes(identity));
    leaf.capabilities.versions = {1};
    leaf.capabilities.cipher_suites = {1};
    leaf.capabilities.credentials = {1};
    leaf.source = mls::LeafNodeSource::key_package;
    leaf.not_before = 0;
    leaf.not_after = ~std::uint64_t{0};
    m.kp.init_key = init.public_key;
    must(leaf.sign(m.signature_private, {}, 0), "sign leaf");
    const auto tbs = must(m.kp.to_be_signed(), "KeyPackageTBS");
    m.kp.signature = must(mls::sign_with_label(m.signature_private, "KeyPackageTBS", tbs), "sign KeyPackage");
    return m;
}

const mls::AcceptBasicCredentials mls_basic;

/// A group of `size` members as seen by its creator A (leaf 0) and by B, the last member added (alone, in its own
/// commit: `welcome_bytes` is the size of the Welcome for one member joining a group of `size`). A adds the others
/// in one commit. With `removals`, A then removes a quarter of the members other than A and B, chosen at random,
/// in one commit, leaving blanks in the tree.
struct MlsFixture {
    std::optional<mls::GroupState> a;
    std::optional<mls::GroupState> b;
    sim::SecureBytes a_sig;
    sim::SecureBytes b_sig;
    std::size_t welcome_bytes = 0;
};

const MlsFixture& mls_fixture(std::uint32_t size, bool removals) {
    static std::map<std::pair<std::uint32_t, bool>, MlsFixture> cache;
    const auto key = std::make_pair(size, removals);
    if (const auto it = cache.find(key); it != cache.end()) {
        return it->second;
    }
    auto rng = sim::make_deterministic_rng(sim::as_bytes("mls bench " + std::to_string(size)));
    auto a = make_mls_member(*rng, "a/0");
    MlsFixture f;
    f.a_sig = a.signature_private;
    f.a.emplace(must(mls::GroupState::create(sim::to_bytes(sim::as_bytes("bench group")), a.kp.leaf_node,
                                             a.encryption_private, mls_basic, *rng),
                     "create"));
    if (size > 2) {
        std::vector<mls::KeyPackage> adds;
        for (std::uint32_t i = 1; i + 1 < size; ++i) {
            adds.push_back(make_mls_member(*rng, "m/" + std::to_string(i)).kp);
        }
        (void)must(f.a->commit(adds, {}, f.a_sig, *rng), "batch add");
    }
    auto b = make_mls_member(*rng, "b/0");
    f.b_sig = b.signature_private;
    const auto add_b = must(f.a->commit({b.kp}, {}, f.a_sig, *rng), "add B");
    f.welcome_bytes = must(mls::encode_welcome_message(*add_b.welcome), "encode Welcome").size();
    const mls::JoinKeys keys{b.kp, b.init_private, b.encryption_private};
    auto joined = must(mls::join_from_welcome(*add_b.welcome, keys, std::nullopt, mls_basic), "join B");
    f.b.emplace(must(mls::GroupState::from_join(std::move(joined), mls_basic), "B state"));
    if (removals && size > 2) {
        std::vector<std::uint32_t> others(size - 2);
        std::iota(others.begin(), others.end(), 1U);
        std::mt19937 gen(size);
        std::shuffle(others.begin(), others.end(), gen);
        others.resize(size / 4);
        const auto removal = must(f.a->commit({}, others, f.a_sig, *rng), "remove");
        must(f.b->process_commit(removal.message), "B processes the removal");
    }
    return cache.emplace(key, std::move(f)).first->second;
}

/// A commits an empty Commit with an UpdatePath (the cost of every commit; adds and removes change it little).
void BM_MlsCommitCreate(benchmark::State& state) {
    const auto& f = mls_fixture(static_cast<std::uint32_t>(state.range(0)), state.range(1) != 0);
    auto a = *f.a;
    auto rng = sim::make_deterministic_rng(sim::as_bytes("commit create"));
    std::size_t commit_bytes = 0;
    for (auto _ : state) {
        auto out = a.commit({}, {}, f.a_sig, *rng);
        if (!out) {
            state.SkipWithError("commit failed");
            return;
        }
        commit_bytes = out->message.size();
        benchmark::DoNotOptimize(out);
    }
    state.counters["members"] = static_cast<double>(a.tree().leaf_count());
    state.counters["commit_bytes"] = static_cast<double>(commit_bytes);
    state.counters["welcome_bytes"] = static_cast<double>(f.welcome_bytes);
}

/// B processes A's commit (created outside the timed region).
void BM_MlsCommitProcess(benchmark::State& state) {
    const auto& f = mls_fixture(static_cast<std::uint32_t>(state.range(0)), state.range(1) != 0);
    auto a = *f.a;
    auto b = *f.b;
    auto rng = sim::make_deterministic_rng(sim::as_bytes("commit process"));
    for (auto _ : state) {
        state.PauseTiming();
        auto out = a.commit({}, {}, f.a_sig, *rng);
        state.ResumeTiming();
        if (!out || !b.process_commit(out->message)) {
            state.SkipWithError("commit or processing failed");
            return;
        }
    }
}

void mls_sizes(benchmark::internal::Benchmark* b) {
    b->Args({2, 0});
    for (const std::int64_t n : {10, 100, 1000}) {
        b->Args({n, 0});
        b->Args({n, 1});
    }
    b->ArgNames({"members", "removed"})->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_MlsCommitCreate)->Apply(mls_sizes);
BENCHMARK(BM_MlsCommitProcess)->Apply(mls_sizes);

/// A encrypts one 100-byte application message (signed, PrivateMessage).
void BM_MlsAppEncrypt(benchmark::State& state) {
    const auto& f = mls_fixture(static_cast<std::uint32_t>(state.range(0)), false);
    auto a = *f.a;
    auto rng = sim::make_deterministic_rng(sim::as_bytes("app encrypt"));
    const sim::Bytes text(100, 0x61);
    for (auto _ : state) {
        auto msg = a.encrypt_application(text, f.a_sig, *rng);
        if (!msg) {
            state.SkipWithError("encrypt failed");
            return;
        }
        benchmark::DoNotOptimize(msg);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_MlsAppEncrypt)->Arg(2)->Arg(1000)->ArgName("members");

/// B decrypts one 100-byte application message from A (encrypted outside the timed region).
void BM_MlsAppDecrypt(benchmark::State& state) {
    const auto& f = mls_fixture(static_cast<std::uint32_t>(state.range(0)), false);
    auto a = *f.a;
    auto b = *f.b;
    auto rng = sim::make_deterministic_rng(sim::as_bytes("app decrypt"));
    const sim::Bytes text(100, 0x61);
    for (auto _ : state) {
        state.PauseTiming();
        auto msg = a.encrypt_application(text, f.a_sig, *rng);
        state.ResumeTiming();
        if (!msg) {
            state.SkipWithError("encrypt failed");
            return;
        }
        auto plain = b.decrypt_application(*msg);
        if (!plain) {
            state.SkipWithError("decrypt failed");
            return;
        }
        benchmark::DoNotOptimize(plain);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}
BENCHMARK(BM_MlsAppDecrypt)->Arg(2)->Arg(1000)->ArgName("members");

}  // namespace

BENCHMARK_MAIN();
