// tiny_server: the smallest libsim server. Accounts in memory (open registration: a first login creates the
// account), loopback on a free port. Prints "port N fingerprint ..." and serves until SIGINT or SIGTERM.
#include <sim/auth.h>
#include <sim/net.h>
#include <sim/server.h>
#include <sim/store.h>

#include <pthread.h>
#include <csignal>
#include <cstdio>
#include <cstdlib>

namespace {
/// The value of a Result, or exit with its error.
template <typename T>
T must(sim::Result<T> r, const char* what) {
    if (!r) {
        std::fprintf(stderr, "tiny_server: %s: %s\n", what, r.error().message().c_str());
        std::exit(1);
    }
    return std::move(r).value();
}
}  // namespace

int main() {
    // Block the stop signals before any thread starts (threads inherit the mask); sigwait below takes them.
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, nullptr);

    auto rng = sim::make_system_rng();
    auto accounts = sim::store::make_memory_backend();
    sim::auth::HashPolicy hashing;
    hashing.bcrypt.cost = 10;
    auto hasher = must(sim::auth::make_password_hasher(hashing), "hasher");
    auto authenticator = must(sim::auth::Authenticator::create(*accounts, *hasher, *rng, sim::steady_clock()), "auth");
    sim::auth::SessionTokens tokens(*accounts, *rng);
    sim::net::WorkerPool workers(2, 256);  // password hashing runs here, never on the I/O threads

    sim::ServerConfig config;
    config.static_private_key = rng->secure_bytes(32);  // a new server key each run (simd keeps its key in a file)
    auto core = must(
        sim::ServerCore::create(std::move(config), *authenticator, tokens, nullptr, accounts.get(), accounts.get(),
                                workers, *rng, sim::steady_clock(), accounts.get()),
        "server core");

    sim::net::ServerOptions listen;  // 127.0.0.1, port 0: a free port
    auto server = must(sim::net::TcpServer::start(
                           listen, [&core](std::shared_ptr<sim::ConnectionOutput> out,
                                           const std::string& peer) { return core->accept(std::move(out), peer); }),
                       "listen");
    std::printf("port %u fingerprint %s\n", static_cast<unsigned>(server->port()), core->fingerprint().c_str());
    std::fflush(stdout);

    int sig = 0;
    sigwait(&stop, &sig);
    core->shutdown();  // close frames to every client
    server->stop();
    workers.stop();
    return 0;
}
