// The seed's whole flow against a running simd, printed step by step: alice logs in and waits for bob, bob logs
// in late, the server assigns a TDES conversation key (KEYGEN), they talk across key rotations, and leave.
// Usage: seed_demo HOST PORT [ROTATION_SECONDS]   (scripts/demo.sh starts simd and runs this)
#include <sim/client.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

using namespace std::chrono_literals;

namespace {

void step(const char* who, const std::string& what) { std::printf("  %-6s| %s\n", who, what.c_str()); }

/// Print every event that arrives within `window` (or until `until` arrives) and return whether it did.
bool show(sim::Client& c, const char* who, sim::Duration window,
          sim::ClientEventKind until = sim::ClientEventKind::closed) {
    const auto deadline = std::chrono::steady_clock::now() + window;
    while (std::chrono::steady_clock::now() < deadline) {
        auto e = c.receive(std::chrono::duration_cast<sim::Duration>(deadline - std::chrono::steady_clock::now()));
        if (!e) {
            return false;
        }
        switch (e->kind) {
            case sim::ClientEventKind::waiting: step(who, "ack_init sid:3  " + e->peer + " is offline: waiting (probing)"); break;
            case sim::ClientEventKind::peer_online: step(who, "ack_init sid:2  " + e->peer + " is online"); break;
            case sim::ClientEventKind::key_assigned:
                step(who, "KEYGEN sid:9999 key for " + e->peer + " (" + std::string(sim::suite_name(e->suite)) +
                              ", 24-byte key; server-assigned: the server can read this conversation)");
                break;
            case sim::ClientEventKind::key_rotated:
                step(who, "key rotated: " + e->text + " key with " + e->peer + " now at epoch " + std::to_string(e->epoch));
                break;
            case sim::ClientEventKind::message:
                step(who, "<- " + e->peer + " [sid " + std::to_string(e->sid) + "] " + e->text);
                break;
            case sim::ClientEventKind::peer_left: step(who, e->peer + " left"); break;
            case sim::ClientEventKind::error: step(who, "error: " + e->error.message()); break;
            case sim::ClientEventKind::channel_ready: continue;  // printed by connect()
            default: step(who, std::string(sim::client_event_name(e->kind))); break;
        }
        if (e->kind == until) {
            return true;
        }
    }
    return false;
}

std::unique_ptr<sim::Client> connect(const char* who, const std::string& host, std::uint16_t port, double rotation) {
    sim::ClientOptions o;
    o.host = host;
    o.port = port;
    o.config.handshake.trust = sim::TrustMode::tofu;
    o.config.conversation_rotation.interval =
        std::chrono::duration_cast<sim::Duration>(std::chrono::duration<double>(rotation));
    o.tick_interval = 500ms;
    auto c = sim::Client::connect(o);
    if (!c) {
        std::fprintf(stderr, "%s: connect failed: %s\n", who, c.error().message().c_str());
        std::exit(1);
    }
    step(who, "handshake done (Noise_XX_25519_ChaChaPoly_SHA256); server fingerprint " + (*c)->server_fingerprint());
    return std::move(*c);
}

void must(const sim::Status& st, const char* what) {
    if (!st) {
        std::fprintf(stderr, "demo: %s failed: %s\n", what, st.error().message().c_str());
        std::exit(1);
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: seed_demo HOST PORT [ROTATION_SECONDS]\n");
        return 2;
    }
    const std::string host = argv[1];
    const auto port = static_cast<std::uint16_t>(std::atoi(argv[2]));
    const double rotation = argc > 3 ? std::atof(argv[3]) : 2.0;

    std::printf("== 1. alice connects, logs in (unknown name: registered on first login) and asks for bob\n");
    auto alice = connect("alice", host, port, rotation);
    must(alice->login("alice", "correct horse battery staple", "bob"), "alice login");
    step("alice", "ack_init sid:1  authenticated (session token issued)");
    show(*alice, "alice", 1500ms, sim::ClientEventKind::waiting);

    std::printf("== 2. bob logs in late; the server tells alice and assigns the key (alice, bob, True)\n");
    auto bob = connect("bob", host, port, rotation);
    must(bob->login("bob", "tr0ub4dor&3"), "bob login");
    step("bob", "ack_init sid:1  authenticated");
    if (!show(*alice, "alice", 5s, sim::ClientEventKind::key_assigned) ||
        !show(*bob, "bob", 5s, sim::ClientEventKind::key_assigned)) {
        std::fprintf(stderr, "demo: no conversation key arrived\n");
        return 1;
    }

    std::printf("== 3. conversation: bodies sealed end to end with the conversation key, inside the TDES/AEAD channel\n");
    int sent = 0;
    const auto talk = [&](sim::Client& from, const char* from_name, sim::Client& to, const char* to_name,
                          const std::string& text) {
        must(sim::status_of(from.send(to_name, text)), "send");
        step(from_name, "-> " + std::string(to_name) + ": " + text);
        ++sent;
        show(to, to_name, 3s, sim::ClientEventKind::message);
    };
    talk(*alice, "alice", *bob, "bob", "Hello Bob!");
    talk(*bob, "bob", *alice, "alice", "Hi Alice, the server only sees ciphertext of this body.");
    std::printf("== 4. waiting %.1f s: the conversation key rotates (the seed: every 30 s; shortened for the demo)\n",
                rotation);
    std::this_thread::sleep_for(std::chrono::duration<double>(rotation + 0.2));
    talk(*alice, "alice", *bob, "bob", "This one is sealed under the next key.");
    show(*alice, "alice", 200ms);
    talk(*bob, "bob", *alice, "alice", "And my reply too.");

    std::printf("== 5. alice leaves; bob is told\n");
    must(alice->leave("bob"), "leave");
    show(*bob, "bob", 3s, sim::ClientEventKind::peer_left);
    alice->close();
    bob->close();
    std::printf("== done: %d messages exchanged across key rotations\n", sent);
    return 0;
}
