// tiny_client: the smallest libsim client. Connects, logs in, opens a conversation with PEER, sends one message,
// waits for one from PEER, prints it, leaves.   Usage: tiny_client PORT USER PASSWORD PEER
#include <sim/client.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {
int fail(const char* step, const sim::Error& e) {
    std::fprintf(stderr, "tiny_client: %s: %s\n", step, e.message().c_str());
    return 1;
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: tiny_client PORT USER PASSWORD PEER\n");
        return 2;
    }
    const std::string user = argv[2];
    const std::string peer = argv[4];
    const auto wait = std::chrono::seconds(20);

    sim::ClientOptions options;  // host 127.0.0.1; trust on first use, pins kept in memory
    options.port = static_cast<std::uint16_t>(std::atoi(argv[1]));
    auto client = sim::Client::connect(options);
    if (!client) {
        return fail("connect", client.error());
    }
    std::printf("%s: server fingerprint %s\n", user.c_str(), (*client)->server_fingerprint().c_str());

    if (auto st = (*client)->login(user, argv[3]); !st) {
        return fail("login", st.error());
    }
    if (auto st = (*client)->open(peer); !st) {
        return fail("open", st.error());
    }
    // The server assigns the conversation key (KEYGEN) once both are online.
    if (auto key = (*client)->wait_for(sim::ClientEventKind::key_assigned, peer, wait); !key) {
        return fail("waiting for the key", key.error());
    }
    if (auto st = (*client)->send(peer, "hello from " + user); !st) {
        return fail("send", st.error());
    }
    auto message = (*client)->wait_for(sim::ClientEventKind::message, peer, wait);
    if (!message) {
        return fail("receive", message.error());
    }
    std::printf("%s got from %s: %s\n", user.c_str(), message->peer.c_str(), message->text.c_str());

    (void)(*client)->leave(peer);
    (void)(*client)->logout();
    (*client)->close();
    return 0;
}
