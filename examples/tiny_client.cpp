// tiny_client: the smallest libsim client.
//   tiny_client PORT USER PASSWORD PEER   log in, open a conversation with PEER, send a greeting, print the reply
//   tiny_client PORT USER PASSWORD        log in, wait for someone's message, print it, reply
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

/// A peer whose identity key changed (a reinstall, or an attack) is held until accept_identity(): say so.
void report_identity_change(sim::Client& c, const std::string& user) {
    if (auto changed = c.wait_for<sim::IdentityChangedEvent>({}, std::chrono::seconds(0)); changed) {
        std::printf("%s: the identity key of %s changed\n", user.c_str(), changed->peer.c_str());
    }
}
}  // namespace

int main(int argc, char** argv) {
    if (argc != 4 && argc != 5) {
        std::fprintf(stderr, "usage: tiny_client PORT USER PASSWORD [PEER]\n");
        return 2;
    }
    const std::string user = argv[2];
    const auto wait = std::chrono::seconds(20);

    sim::ClientOptions options;  // host 127.0.0.1; trust on first use, pins kept in memory
    options.port = static_cast<std::uint16_t>(std::atoi(argv[1]));
    // The identity key, sessions and outbox persist in an encrypted file per user and server (by default under
    // $XDG_CONFIG_HOME/libsim/keys), so the next run is the same identity to peers. Sealed here under the login
    // password for brevity; options.state.in_memory = true would make a new identity on every run.
    options.state.user = user;
    options.state.password = argv[3];
    auto client = sim::Client::connect(options);
    if (!client) {
        return fail("connect", client.error());
    }
    auto& c = **client;
    std::printf("%s: server fingerprint %s\n", user.c_str(), c.server_fingerprint().c_str());
    if (auto st = c.login(user, argv[3]); !st) {
        return fail("login", st.error());
    }
    std::printf("%s: logged in\n", user.c_str());
    std::fflush(stdout);

    std::string peer;
    if (argc == 5) {
        peer = argv[4];
        if (auto st = c.open(peer); !st) {
            return fail("open", st.error());
        }
        // End to end (the default): KEYGEN brings the peer's prekey bundle, published when it last logged in.
        auto key = c.wait_for<sim::KeyAssignedEvent>(peer, wait);
        if (!key) {
            report_identity_change(c, user);
            return fail("waiting for the key", key.error());
        }
        std::printf("%s: keyed with %s, safety number %s%s\n", user.c_str(), peer.c_str(), key->safety_number.c_str(),
                    key->first_contact ? " (first contact)" : "");
        if (auto st = c.send(peer, "hello from " + user); !st) {
            return fail("send", st.error());
        }
    }
    auto message = c.wait_for<sim::MessageEvent>(peer, wait);
    if (!message) {
        report_identity_change(c, user);
        return fail("receive", message.error());
    }
    std::printf("%s got from %s: %s\n", user.c_str(), message->peer.c_str(), message->text.c_str());
    if (argc == 4) {
        if (auto st = c.send(message->peer, "hello from " + user); !st) {
            return fail("reply", st.error());
        }
    } else {
        (void)c.leave(peer);
    }
    (void)c.logout();
    c.close();  // sends what is queued, then closes
    return 0;
}
