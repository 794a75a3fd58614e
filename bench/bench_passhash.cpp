// Password hashing throughput: one hash plus one verify per iteration, through the public hasher, for bcrypt
// (bcrypt_sha256 v2) at costs 10 and 12 and Argon2id with the OWASP defaults. The "hash+verify/s" counter is the
// number a login server can sustain per core (a first login hashes; later logins verify).
#include <benchmark/benchmark.h>

#include <sim/auth.h>

#include <cstdlib>

namespace {

void run(benchmark::State& state, const sim::auth::HashPolicy& policy) {
    auto hasher = sim::auth::make_password_hasher(policy);
    if (!hasher) {
        state.SkipWithError("hasher parameters rejected");
        return;
    }
    auto rng = sim::make_system_rng();
    const std::string password = "correct horse battery staple";
    for (auto _ : state) {
        auto hash = hasher.value()->hash(password, *rng);
        if (!hash) {
            state.SkipWithError("hash failed");
            return;
        }
        auto ok = hasher.value()->verify(password, hash.value());
        if (!ok || !ok.value()) {
            state.SkipWithError("verify failed");
            return;
        }
        benchmark::DoNotOptimize(ok);
    }
    state.counters["hash+verify/s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                         benchmark::Counter::kIsRate);
}

void bm_bcrypt(benchmark::State& state) {
    sim::auth::HashPolicy p;
    p.algorithm = sim::auth::HashAlgorithm::bcrypt;
    p.bcrypt.cost = static_cast<unsigned>(state.range(0));
    run(state, p);
}

void bm_argon2id_defaults(benchmark::State& state) {
    sim::auth::HashPolicy p;
    p.algorithm = sim::auth::HashAlgorithm::argon2id;  // 19 MiB, t=2, p=1
    run(state, p);
}

}  // namespace

BENCHMARK(bm_bcrypt)->Name("bcrypt_sha256/cost")->Arg(10)->Arg(12)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(bm_argon2id_defaults)->Name("argon2id/m=19456,t=2,p=1")->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
