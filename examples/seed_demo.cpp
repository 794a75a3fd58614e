// The main job, printed step by step against running simds (scripts/demo.sh starts them and runs this twice).
// Server-assigned mode (the seed): alice logs in and waits for bob, bob logs in late, the server assigns a TDES
// conversation key (KEYGEN), they talk across key rotations, and leave.
// End-to-end mode (--e2e): bob publishes prekeys, alice sets up the conversation with X3DH from his prekey bundle,
// both see the same safety number, they talk under the Double Ratchet, and a message to bob while he is offline
// is stored by the server (ciphertext only) and delivered when he logs in; receipts say "stored" and "delivered".
// Usage: seed_demo HOST PORT [ROTATION_SECONDS]
//        seed_demo --e2e HOST PORT
#include <sim/client.h>
#include <sim/client_state.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <map>
#include <string>
#include <string_view>
#include <thread>

using namespace std::chrono_literals;

namespace {

void step(const char* who, const std::string& what) {
    std::printf("  %-6s| %s\n", who, what.c_str());
}

/// The safety number each side was shown (end-to-end mode).
std::map<std::string, std::string, std::less<>> g_safety;

/// Print one event as a protocol step.
void print_event(const char* who, const sim::ClientEvent& event) {
    if (const auto* e = std::get_if<sim::WaitingEvent>(&event)) {
        step(who, "ack_init sid:3  " + e->peer + " is offline: waiting (probing)");
    } else if (const auto* e = std::get_if<sim::PeerOnlineEvent>(&event)) {
        step(who, "ack_init sid:2  " + e->peer + " is online");
    } else if (const auto* e = std::get_if<sim::KeyAssignedEvent>(&event)) {
        if (e->mode == sim::ConversationMode::server_assigned) {
            step(who, "KEYGEN sid:9999 key for " + e->peer + " (" + std::string(sim::suite_name(e->suite)) +
                          ", 24-byte key; server-assigned: the server can read this conversation)");
            return;
        }
        step(who, std::string(e->first_contact ? "" : "again: ") + "end-to-end session with " + e->peer + " (X3DH, " +
                      std::string(sim::suite_name(e->suite)) + "); safety number");
        // 12 groups of 5 digits: shown as two rows of 6
        std::size_t cut = 0;
        for (int spaces = 0; cut < e->safety_number.size() && spaces < 6; ++cut) {
            spaces += e->safety_number[cut] == ' ' ? 1 : 0;
        }
        step("", "  " + e->safety_number.substr(0, cut));
        step("", "  " + e->safety_number.substr(cut));
        g_safety[who] = e->safety_number;
    } else if (const auto* e = std::get_if<sim::KeyRotatedEvent>(&event)) {
        const std::string direction = e->direction == sim::KeyDirection::sending ? "sending" : "receiving";
        step(who,
             e->mode == sim::ConversationMode::end_to_end
                 ? "Double Ratchet DH step (" + direction + ") with " + e->peer + ": step " + std::to_string(e->epoch)
                 : "key rotated: " + direction + " key with " + e->peer + " now at epoch " + std::to_string(e->epoch));
    } else if (const auto* e = std::get_if<sim::MessageEvent>(&event); e != nullptr && e->from_me) {
        step(who, "copy of our own message to " + e->peer + " (sent from our device " +
                      std::to_string(e->sender_device) + "): " + e->text);
    } else if (const auto* e = std::get_if<sim::MessageEvent>(&event)) {
        step(who, "<- " + e->peer + (e->mode == sim::ConversationMode::end_to_end ? " [seq " : " [sid ") +
                      std::to_string(e->seq) + "] " + e->text);
    } else if (const auto* e = std::get_if<sim::ReceiptEvent>(&event)) {
        step(who, "receipt: message to " + e->peer +
                      (e->status == sim::ReceiptStatus::delivered ? " delivered" : " stored"));
    } else if (const auto* e = std::get_if<sim::GapEvent>(&event)) {
        step(who, "gap: " + std::to_string(e->count) + " message(s) missing from " + e->peer);
    } else if (const auto* e = std::get_if<sim::IdentityChangedEvent>(&event)) {
        step(who, "IDENTITY CHANGED: identity key of " + e->peer + " changed: new safety number " + e->safety_number);
    } else if (const auto* e = std::get_if<sim::PeerLeftEvent>(&event)) {
        step(who, e->peer + " left");
    } else if (const auto* e = std::get_if<sim::DevicesChangedEvent>(&event)) {
        std::string ids;
        for (const auto d : e->devices) {
            ids += (ids.empty() ? "" : ", ") + std::to_string(d);
        }
        step(who, "device list of " + e->user + " (version " + std::to_string(e->version) +
                      ", signed by the account key): devices " + ids);
    } else if (const auto* e = std::get_if<sim::ErrorEvent>(&event)) {
        step(who, "error: " + e->error.message());
    } else if (!std::holds_alternative<sim::ChannelReadyEvent>(event)) {  // that one is printed by connect()
        step(who, std::string(sim::client_event_name(sim::kind_of(event))));
    }
}

/// Print every event that arrives within `window` (or until `until` arrives) and return whether it did.
bool show(sim::Client& c, const char* who, sim::Duration window,
          sim::ClientEventKind until = sim::ClientEventKind::closed) {
    const auto deadline = std::chrono::steady_clock::now() + window;
    while (std::chrono::steady_clock::now() < deadline) {
        auto e = c.receive(std::chrono::duration_cast<sim::Duration>(deadline - std::chrono::steady_clock::now()));
        if (!e) {
            return false;
        }
        print_event(who, *e);
        if (sim::kind_of(*e) == until) {
            return true;
        }
    }
    return false;
}

std::unique_ptr<sim::Client> connect(const char* who, const std::string& host, std::uint16_t port, double rotation,
                                     sim::ClientState* state = nullptr) {
    sim::ClientOptions o;
    o.config.state = state;
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

/// The end-to-end half of the demo, against a simd in its default mode (--conversation-mode e2e).
int run_end_to_end(const std::string& host, std::uint16_t port) {
    // Each client keeps its identity, prekeys, ratchets and outbox in a state; sim uses an encrypted file
    // (open_client_state), the demo keeps them in memory for the length of the run.
    auto alice_state = sim::make_memory_client_state();
    auto bob_state = sim::make_memory_client_state();

    std::printf(
        "== 6. bob logs in: his client creates his identity key and uploads a signed prekey and one-time\n"
        "      prekeys; the server keeps only their public halves\n");
    auto bob = connect("bob", host, port, 30.0, bob_state.get());
    must(bob->login("bob", "tr0ub4dor&3"), "bob login");
    step("bob", "ack_init sid:1  authenticated; prekeys uploaded");

    std::printf(
        "== 7. alice opens the conversation: KEYGEN carries bob's prekey bundle instead of a key, and her\n"
        "      client runs X3DH; the server never learns the conversation key\n");
    auto alice = connect("alice", host, port, 30.0, alice_state.get());
    must(alice->login("alice", "correct horse battery staple"), "alice login");
    step("alice", "ack_init sid:1  authenticated");
    bool keyed = false;
    for (int i = 0; i < 50 && !keyed; ++i) {  // bob's upload may still be on its way: ask again
        must(alice->open("bob"), "open");
        auto k = alice->wait_for<sim::KeyAssignedEvent>("bob", 200ms);
        if (k) {
            print_event("alice", sim::ClientEvent{*k});
            keyed = true;
        }
        while (alice->wait_for<sim::ErrorEvent>("", 0ms)) {  // "peer has no prekeys" from early tries
        }
    }
    if (!keyed) {
        std::fprintf(stderr, "demo: no prekey bundle for bob\n");
        return 1;
    }

    std::printf(
        "== 8. they talk under the Double Ratchet (a new key for every message); bob's client sets up its\n"
        "      side from alice's first message and shows the same safety number\n");
    const auto talk = [](sim::Client& from, const char* from_name, sim::Client& to, const char* to_name,
                         const std::string& text) {
        must(sim::status_of(from.send(to_name, text)), "send");
        step(from_name, "-> " + std::string(to_name) + ": " + text);
        show(to, to_name, 3s, sim::ClientEventKind::message);
        show(from, from_name, 3s, sim::ClientEventKind::receipt);
    };
    talk(*alice, "alice", *bob, "bob", "Hello Bob! Only our two clients can read this.");
    talk(*bob, "bob", *alice, "alice", "Hi Alice. Our safety numbers match.");
    const bool same = !g_safety["alice"].empty() && g_safety["alice"] == g_safety["bob"];
    std::printf("   safety numbers shown to alice and bob are %s\n", same ? "EQUAL" : "DIFFERENT");
    if (!same) {
        return 1;
    }

    std::printf("== 9. bob logs out; alice writes anyway: the server stores the ciphertext durably ('stored')\n");
    must(bob->logout(), "bob logout");
    if (!bob->wait_for<sim::ClosedEvent>("", 3s)) {
        std::fprintf(stderr, "demo: bob's logout did not complete\n");
        return 1;
    }
    step("bob", "logged out");
    bob.reset();
    for (const char* text : {"Are you there?", "Call me when you are back."}) {
        must(sim::status_of(alice->send("bob", text)), "send");
        step("alice", std::string("-> bob (offline): ") + text);
        show(*alice, "alice", 3s, sim::ClientEventKind::receipt);
    }

    std::printf(
        "== 10. bob logs in again with his client state: the stored messages arrive in order, his client\n"
        "       acknowledges them after saving them, the server deletes them and alice sees 'delivered'\n");
    bob = connect("bob", host, port, 30.0, bob_state.get());
    must(bob->login("bob", "tr0ub4dor&3"), "bob login");
    step("bob", "ack_init sid:1  authenticated");
    for (int i = 0; i < 2; ++i) {
        if (!show(*bob, "bob", 5s, sim::ClientEventKind::message)) {
            std::fprintf(stderr, "demo: a stored message did not arrive\n");
            return 1;
        }
    }
    for (int i = 0; i < 2; ++i) {
        if (!show(*alice, "alice", 5s, sim::ClientEventKind::receipt)) {
            std::fprintf(stderr, "demo: no 'delivered' receipt\n");
            return 1;
        }
    }
    // Devices (docs/protocol.md 6.9): a new installation links itself with an existing device's approval.
    const auto link = [&](const char* who, const char* user, const char* password, sim::Client& approver,
                          sim::ClientState* state) {
        auto device = connect(who, host, port, 30.0, state);
        std::promise<std::string> code;
        auto shown = code.get_future();
        sim::Status linked = sim::ok();
        std::thread joining([&] {
            linked = device->link_device(user, password, [&](const sim::LinkCodeEvent& e) {
                step(who, "link code " + e.code + " (device " + std::to_string(e.device) + ", fingerprint " +
                              e.fingerprint + "): typed on the first device");
                code.set_value(e.code);
            });
        });
        if (shown.wait_for(10s) == std::future_status::ready) {
            // The first device hears of the new one (its reveal) just after the code is shown: try until it has.
            const auto typed = shown.get();
            auto approved = approver.approve_device(typed);
            for (int i = 0; i < 50 && approved.code() == sim::Errc::invalid_state; ++i) {
                std::this_thread::sleep_for(100ms);
                approved = approver.approve_device(typed);
            }
            if (!approved) {
                std::fprintf(stderr, "demo: approve failed: %s\n", approved.error().message().c_str());
                std::_Exit(1);
            }
        }
        joining.join();
        must(linked, "link");
        step(who, "linked: device " + std::to_string(device->core().device()) + " of " + user +
                      ", with the account key and the signed list that admits it");
        return device;
    };
    std::printf(
        "== 11. bob links a phone and alice a tablet: each new device shows a code, which the user types on\n"
        "       the first device; the server alone, or anyone with the password, cannot add a device\n");
    auto bob_phone_state = sim::make_memory_client_state();
    auto alice_tablet_state = sim::make_memory_client_state();
    auto bob_phone = link("bob#2", "bob", "tr0ub4dor&3", *bob, bob_phone_state.get());
    auto alice_tablet = link("alice#2", "alice", "correct horse battery staple", *alice, alice_tablet_state.get());

    std::printf(
        "== 12. alice writes once from her first device: the server says bob's devices changed and sends his\n"
        "       signed list; her client checks it, opens sessions with each of bob's devices and with her own\n"
        "       tablet (KEYGEN mode 3) and seals one copy for each: both of bob's devices show it, and her tablet\n"
        "       shows it as hers\n");
    must(sim::status_of(alice->send("bob", "This reaches your laptop, your phone and my tablet.")), "send");
    step("alice", "-> bob: This reaches your laptop, your phone and my tablet.");
    show(*alice, "alice", 5s, sim::ClientEventKind::receipt);
    const bool fanned_out = show(*bob, "bob", 10s, sim::ClientEventKind::message) &&
                            show(*bob_phone, "bob#2", 10s, sim::ClientEventKind::message) &&
                            show(*alice_tablet, "alice#2", 10s, sim::ClientEventKind::message);
    if (!fanned_out) {
        std::fprintf(stderr, "demo: the message did not reach every device\n");
        return 1;
    }
    for (auto* c : {alice.get(), bob.get(), bob_phone.get(), alice_tablet.get()}) {
        c->close();
    }
    std::printf("== done: end to end, with offline delivery and two devices per user\n");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const bool end_to_end = argc > 1 && std::string_view(argv[1]) == "--e2e";
    if (end_to_end) {
        --argc;
        ++argv;
    }
    if (argc < 3) {
        std::fprintf(stderr, "usage: seed_demo HOST PORT [ROTATION_SECONDS]\n       seed_demo --e2e HOST PORT\n");
        return 2;
    }
    const std::string host = argv[1];
    const auto port = static_cast<std::uint16_t>(std::atoi(argv[2]));
    if (end_to_end) {
        return run_end_to_end(host, port);
    }
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

    std::printf(
        "== 3. conversation: bodies sealed with the server-assigned conversation key (the server could read\n"
        "      them), inside the encrypted client-server channel\n");
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
