// The networked client: connect, log in, open conversations, send, receive (with a timeout, as an iterator,
// interruptible by Ctrl-C), close; usable as a context manager. End-to-end mode: the encrypted local state file,
// peer identities (safety numbers, verification, accepting a changed key) and the outbox.
#include "rng_clock.h"

#include <sim/client.h>
#include <sim/client_state.h>
#include <sim/frame.h>
#include <sim/messages.h>
#include <sim/testing.h>

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <utility>

namespace simpy {

namespace {

using sim::ClientEvent;
using sim::ClientEventKind;

/// Blocking waits are cut into slices this long so that signals (Ctrl-C) are handled promptly.
constexpr auto signal_check_interval = std::chrono::milliseconds(50);

/// A timestamp for Python: seconds since the Unix epoch (float), or None when unknown (WallTime{}).
py::object py_time(sim::WallTime t) {
    if (t == sim::WallTime{}) {
        return py::none();
    }
    return py::float_(static_cast<double>(t.time_since_epoch().count()) / 1000.0);
}

/// An error for Python: a libsim.Error object (not raised), or None.
py::object py_error(const std::optional<sim::Error>& error) {
    if (!error || error->code == sim::Errc::ok) {
        return py::none();
    }
    return make_error_object(*error);
}

/// Binds one event struct as its own class: `kind` (its EventKind), __match_args__ = `fields` (for
/// `match event: case MessageEvent(peer, text): ...`) and a repr listing them.
template <typename E>
py::class_<E> bind_event(py::module_& m, const char* name, const char* doc, std::initializer_list<const char*> fields) {
    py::class_<E> cls(m, name, doc);
    cls.def_property_readonly(
        "kind", [](const E& /*e*/) { return sim::client_event_kind<E>; }, "The EventKind of this class.");
    py::tuple match_args(fields.size());
    std::size_t i = 0;
    for (const char* f : fields) {
        match_args[i++] = py::str(f);
    }
    cls.attr("__match_args__") = match_args;
    cls.def("__repr__", [name = std::string(name)](const py::object& self) {
        std::string s = name + "(";
        const char* sep = "";
        for (const auto& f : py::tuple(self.attr("__match_args__"))) {
            const auto field = f.cast<std::string>();
            const py::object value = self.attr(field.c_str());
            // Ids as hex, like sim::to_hex: shorter than a bytes repr, and what logs and the C++ tools show.
            const py::object shown = py::isinstance<py::bytes>(value) ? value.attr("hex")() : py::repr(value);
            s += sep + field + "=" + shown.cast<std::string>();
            sep = ", ";
        }
        return s + ")";
    });
    return cls;
}

/// The event classes, one per ClientEvent alternative.
void register_events(py::module_& m) {
    py::enum_<sim::KeyDirection>(m, "KeyDirection", "Which way a conversation key moved (KeyRotatedEvent).")
        .value("SENDING", sim::KeyDirection::sending, "the key we seal with")
        .value("RECEIVING", sim::KeyDirection::receiving, "the key we open with");
    py::enum_<sim::ReceiptStatus>(m, "ReceiptStatus", "What a receipt says about one of our messages (ReceiptEvent).")
        .value("STORED", sim::ReceiptStatus::stored, "durable on the server")
        .value("DELIVERED", sim::ReceiptStatus::delivered, "the recipient's client stored it");

    bind_event<sim::ChannelReadyEvent>(m, "ChannelReadyEvent", "The channel handshake is done.",
                                       {"suite", "fingerprint", "first_contact"})
        .def_readonly("suite", &sim::ChannelReadyEvent::suite)
        .def_readonly("fingerprint", &sim::ChannelReadyEvent::fingerprint, "The server key's fingerprint.")
        .def_readonly("first_contact", &sim::ChannelReadyEvent::first_contact, "The key was pinned just now.");
    bind_event<sim::TrustRequiredEvent>(m, "TrustRequiredEvent", "The server key needs a decision (TrustMode.ASK).",
                                        {"fingerprint"})
        .def_readonly("fingerprint", &sim::TrustRequiredEvent::fingerprint);
    bind_event<sim::AuthenticatedEvent>(m, "AuthenticatedEvent", "Logged in.", {"user"})
        .def_property_readonly(
            "user", [](const sim::AuthenticatedEvent& e) { return to_py_str(e.user); }, "Our canonical user name.");
    bind_event<sim::WaitingEvent>(m, "WaitingEvent",
                                  "`peer` cannot be talked to yet; messages to it wait in the outbox until it can.",
                                  {"peer", "reason"})
        .def_property_readonly("peer", [](const sim::WaitingEvent& e) { return to_py_str(e.peer); })
        .def_property_readonly(
            "reason", [](const sim::WaitingEvent& e) { return py_error(e.reason); },
            "None: the peer is offline (the client probes until it comes online). Else why the server cannot set "
            "up the conversation yet (a libsim.Error object, e.g. the peer has no prekeys).");
    bind_event<sim::PeerOnlineEvent>(m, "PeerOnlineEvent", "`peer` is online.", {"peer"})
        .def_property_readonly("peer", [](const sim::PeerOnlineEvent& e) { return to_py_str(e.peer); });
    bind_event<sim::KeyAssignedEvent>(m, "KeyAssignedEvent", "The conversation with `peer` got a key.",
                                      {"peer", "suite", "mode", "safety_number", "first_contact"})
        .def_property_readonly("peer", [](const sim::KeyAssignedEvent& e) { return to_py_str(e.peer); })
        .def_readonly("suite", &sim::KeyAssignedEvent::suite)
        .def_readonly("mode", &sim::KeyAssignedEvent::mode, "SERVER_ASSIGNED: the server can read it.")
        .def_property_readonly(
            "safety_number",
            [](const sim::KeyAssignedEvent& e) -> py::object {
                if (e.safety_number.empty()) {
                    return py::none();
                }
                return py::str(e.safety_number);
            },
            "End to end: the safety number with the peer; None for a server-assigned key.")
        .def_readonly("first_contact", &sim::KeyAssignedEvent::first_contact,
                      "End to end: the peer's identity key was pinned just now.");
    bind_event<sim::KeyRotatedEvent>(m, "KeyRotatedEvent", "A conversation key with `peer` moved on.",
                                     {"peer", "mode", "epoch", "direction"})
        .def_property_readonly("peer", [](const sim::KeyRotatedEvent& e) { return to_py_str(e.peer); })
        .def_readonly("mode", &sim::KeyRotatedEvent::mode)
        .def_readonly("epoch", &sim::KeyRotatedEvent::epoch,
                      "Server-assigned: the key's epoch; end to end: Double Ratchet DH steps so far.")
        .def_readonly("direction", &sim::KeyRotatedEvent::direction);
    bind_event<sim::MessageEvent>(m, "MessageEvent", "`peer` sent `text`.",
                                  {"peer", "text", "message_id", "seq", "mode", "sent_at", "received_at",
                                   "conversation", "sender_device", "inbox_index", "from_me"})
        .def_property_readonly("peer", [](const sim::MessageEvent& e) { return to_py_str(e.peer); })
        .def_property_readonly("text", [](const sim::MessageEvent& e) { return to_py_str(e.text); })
        .def_property_readonly(
            "message_id", [](const sim::MessageEvent& e) { return to_py_bytes(e.message_id); }, "The 16-byte id.")
        .def_readonly("seq", &sim::MessageEvent::seq,
                      "End to end: the sender's sequence number; server-assigned: the seed's sid.")
        .def_readonly("mode", &sim::MessageEvent::mode, "How the conversation is keyed.")
        .def_property_readonly(
            "sent_at", [](const sim::MessageEvent& e) { return py_time(e.sent_at); },
            "The sender's timestamp (seconds since the Unix epoch, sealed in the message: the server cannot change "
            "it), or None when the sender did not record it.")
        .def_property_readonly(
            "received_at", [](const sim::MessageEvent& e) { return py_time(e.received_at); },
            "When the server accepted it (seconds since the Unix epoch; the server's claim, not authenticated), or "
            "None when unknown.")
        .def_property_readonly(
            "conversation", [](const sim::MessageEvent& e) { return to_py_bytes(e.conversation); },
            "The 16-byte id of its conversation (pair_conversation_id() for two users).")
        .def_readonly("sender_device", &sim::MessageEvent::sender_device, "The sender's device it came from.")
        .def_readonly("inbox_index", &sim::MessageEvent::inbox_index,
                      "Its place in Client.inbox() (written there before it was acknowledged).")
        .def_readonly("from_me", &sim::MessageEvent::from_me,
                      "Sent by another device of ours to `peer` (an own copy), not by `peer`.");
    bind_event<sim::PeerLeftEvent>(m, "PeerLeftEvent", "`peer` ended the conversation or went offline.", {"peer"})
        .def_property_readonly("peer", [](const sim::PeerLeftEvent& e) { return to_py_str(e.peer); });
    bind_event<sim::ReceiptEvent>(m, "ReceiptEvent", "The server reports on one of our messages.",
                                  {"peer", "message_id", "status"})
        .def_property_readonly(
            "peer", [](const sim::ReceiptEvent& e) { return to_py_str(e.peer); }, "The message's recipient.")
        .def_property_readonly(
            "message_id", [](const sim::ReceiptEvent& e) { return to_py_bytes(e.message_id); },
            "The 16-byte id Client.send returned.")
        .def_readonly("status", &sim::ReceiptEvent::status);
    bind_event<sim::IdentityChangedEvent>(m, "IdentityChangedEvent",
                                          "`peer`'s identity key changed; nothing is sent to or shown from `peer` "
                                          "until accept_identity().",
                                          {"peer", "safety_number"})
        .def_property_readonly("peer", [](const sim::IdentityChangedEvent& e) { return to_py_str(e.peer); })
        .def_readonly("safety_number", &sim::IdentityChangedEvent::safety_number, "With the new key.");
    bind_event<sim::GapEvent>(m, "GapEvent", "`count` messages from `peer` are missing.", {"peer", "count"})
        .def_property_readonly("peer", [](const sim::GapEvent& e) { return to_py_str(e.peer); })
        .def_readonly("count", &sim::GapEvent::count);
    bind_event<sim::ErrorEvent>(m, "ErrorEvent",
                                "An error from the server, a message that failed to open (`peer` set), or a message "
                                "of ours dropped from the outbox (`message_id` set).",
                                {"error", "peer", "message_id"})
        .def_property_readonly(
            "error", [](const sim::ErrorEvent& e) { return make_error_object(e.error); },
            "A libsim.Error object (not raised).")
        .def_property_readonly(
            "peer", [](const sim::ErrorEvent& e) { return to_py_str(e.peer); }, "The peer it concerns, or ''.")
        .def_property_readonly(
            "message_id",
            [](const sim::ErrorEvent& e) -> py::object {
                if (!e.message_id) {
                    return py::none();
                }
                return to_py_bytes(*e.message_id);
            },
            "The 16-byte id of the dropped message of ours, or None.");
    bind_event<sim::ClosedEvent>(m, "ClosedEvent", "The connection is gone.", {"reason"})
        .def_property_readonly(
            "reason", [](const sim::ClosedEvent& e) { return py_error(e.reason); },
            "Why (a libsim.Error object), or None for a clean close.");
    bind_event<sim::PasswordChangedEvent>(m, "PasswordChangedEvent",
                                          "change_password() succeeded: the server and the local state have the new "
                                          "password.",
                                          {"user"})
        .def_property_readonly("user", [](const sim::PasswordChangedEvent& e) { return to_py_str(e.user); });
    bind_event<sim::LinkCodeEvent>(m, "LinkCodeEvent",
                                   "This installation is being linked as device `device` of `user`: show `code` and "
                                   "`fingerprint`; the user types the code on the approving device.",
                                   {"user", "device", "code", "fingerprint"})
        .def_property_readonly("user", [](const sim::LinkCodeEvent& e) { return to_py_str(e.user); })
        .def_readonly("device", &sim::LinkCodeEvent::device)
        .def_readonly("code", &sim::LinkCodeEvent::code)
        .def_readonly("fingerprint", &sim::LinkCodeEvent::fingerprint);
    bind_event<sim::LinkRequestEvent>(m, "LinkRequestEvent",
                                      "A new device asks to be linked to our account: approve it with the code it "
                                      "shows (Client.approve_device) if its fingerprint is the one it shows.",
                                      {"user", "device", "fingerprint"})
        .def_property_readonly("user", [](const sim::LinkRequestEvent& e) { return to_py_str(e.user); })
        .def_readonly("device", &sim::LinkRequestEvent::device)
        .def_readonly("fingerprint", &sim::LinkRequestEvent::fingerprint);
    bind_event<sim::DevicesChangedEvent>(m, "DevicesChangedEvent",
                                         "A checked device list of `user` (us or a peer) was accepted.",
                                         {"user", "version", "devices"})
        .def_property_readonly("user", [](const sim::DevicesChangedEvent& e) { return to_py_str(e.user); })
        .def_readonly("version", &sim::DevicesChangedEvent::version)
        .def_readonly("devices", &sim::DevicesChangedEvent::devices);
    py::class_<sim::DeviceInfo>(m, "DeviceInfo", "One device of our account, as the server knows it.")
        .def_readonly("device", &sim::DeviceInfo::device)
        .def_property_readonly("status",
                               [](const sim::DeviceInfo& d) {
                                   return d.status == sim::DeviceStatus::active    ? "active"
                                          : d.status == sim::DeviceStatus::pending ? "pending"
                                                                                   : "removed";
                               })
        .def_property_readonly("name", [](const sim::DeviceInfo& d) { return to_py_str(d.name); })
        .def_property_readonly("linked", [](const sim::DeviceInfo& d) { return py_time(d.linked); })
        .def_property_readonly("last_seen", [](const sim::DeviceInfo& d) { return py_time(d.last_seen); })
        .def("__repr__", [](const sim::DeviceInfo& d) {
            return "DeviceInfo(device=" + std::to_string(d.device) + ", name=" + py::repr(to_py_str(d.name)).cast<std::string>() + ")";
        });
    bind_event<sim::DeviceInfoEvent>(m, "DeviceInfoEvent", "Our account's devices (the answer to a request).",
                                     {"user", "devices"})
        .def_property_readonly("user", [](const sim::DeviceInfoEvent& e) { return to_py_str(e.user); })
        .def_readonly("devices", &sim::DeviceInfoEvent::devices);
    bind_event<sim::PresenceEvent>(m, "PresenceEvent",
                                   "A contact's presence: after login one per contact, then one per change, and the "
                                   "answer to query_presence(). Anyone who is not a contact is reported offline.",
                                   {"peer", "online"})
        .def_property_readonly("peer", [](const sim::PresenceEvent& e) { return to_py_str(e.peer); })
        .def_readonly("online", &sim::PresenceEvent::online,
                      "True while the contact has a device connected and does not hide.");
}

/// Run `f` without the GIL.
template <typename F>
auto nogil(F&& f) {
    const py::gil_scoped_release release;
    return f();
}

/// A file system path from str or os.PathLike (as Python's own file APIs accept), else TypeError naming `what`.
std::string fs_path(const py::object& obj, const char* what) {
    PyObject* path = PyOS_FSPath(obj.ptr());
    if (path == nullptr) {
        throw py::error_already_set();
    }
    const auto owned = py::reinterpret_steal<py::object>(path);
    return text_from(owned, what).value;
}

std::string peer_identity_repr(const sim::PeerIdentity& p) {
    return "PeerIdentity(peer=" + py::repr(to_py_str(p.peer)).cast<std::string>() + ", safety_number='" +
           p.safety_number + "', verified=" + (p.verified ? "True" : "False") +
           ", change_pending=" + (p.change_pending ? "True" : "False") + ")";
}

class PyClient {
public:
    PyClient(const Text& host, std::uint16_t port, const std::optional<Text>& server_id, sim::TrustMode trust,
             const py::object& ask_trust, const Text& expected_fingerprint, const py::object& known_servers_file,
             const std::optional<sim::SuitePolicy>& suites, const std::optional<sim::RotationPolicy>& rotation,
             const std::optional<SecretBlob>& static_private_key, double connect_timeout, double tick_interval,
             std::size_t max_queued_events, std::size_t max_frame_size, const py::object& state_file,
             std::optional<Text> state_password, bool require_end_to_end,
             const std::optional<sim::SuitePolicy>& end_to_end_suites, const std::optional<Text>& user,
             bool in_memory_state) {
        sim::ClientOptions opts;
        opts.host = host.value;
        opts.port = port;
        if (server_id) {
            opts.config.handshake.server_id = server_id->value;
        }
        opts.config.handshake.trust = trust;
        opts.config.handshake.expected_fingerprint = expected_fingerprint.value;
        if (suites) {
            opts.config.handshake.suites = *suites;
        }
        if (static_private_key) {
            opts.config.handshake.static_private_key = static_private_key->value;
        }
        if (rotation) {
            opts.config.conversation_rotation = *rotation;
        }
        opts.config.max_frame_size = max_frame_size;
        if (!known_servers_file.is_none()) {
            opts.known_servers_file = fs_path(known_servers_file, "known_servers_file");
        }
        opts.config.require_end_to_end = require_end_to_end;
        if (end_to_end_suites) {
            opts.config.end_to_end_suites = *end_to_end_suites;
        }
        // The end-to-end state persists by default (a file per user and server); in memory only when asked.
        sim::ClientStateOptions state_options;
        state_options.in_memory = in_memory_state;
        if (user) {
            state_options.user = user->value;
        }
        const auto state_error = [&](const char* why) {
            if (state_password) {
                sim::secure_zero(state_password->value.data(), state_password->value.size());
            }
            return py::value_error(why);
        };
        if (!state_file.is_none()) {
            state_options.file = fs_path(state_file, "state_file");
            if (state_options.file.empty()) {
                throw state_error("state_file must not be empty");
            }
        }
        if (in_memory_state && (state_password || !state_options.file.empty())) {
            throw state_error("in_memory_state=True keeps no state file: give no state_file or state_password");
        }
        if (!in_memory_state && !state_password) {
            throw state_error(
                "state_password is needed: the end-to-end state (identity key, sessions, outbox) is kept in a file "
                "sealed under it (state_file, or by default one per user and server, which needs user=...). "
                "Pass in_memory_state=True for a throwaway identity that peers see as a new key on every run");
        }
        if (!in_memory_state && state_options.file.empty() && state_options.user.empty()) {
            throw state_error("the default state file is named after the user: give user=... (or state_file)");
        }
        opts.connect_timeout = seconds_to_duration(connect_timeout, "connect_timeout");
        opts.tick_interval = seconds_to_duration(tick_interval, "tick_interval");
        if (opts.tick_interval < std::chrono::milliseconds(10)) {
            throw py::value_error("tick_interval must be at least 0.01 seconds");
        }
        if (max_queued_events == 0) {
            throw py::value_error("max_queued_events must be at least 1");
        }
        opts.max_queued_events = max_queued_events;

        std::function<bool(const std::string&)> ask;
        std::optional<py::error_already_set> callback_error;
        if (!ask_trust.is_none()) {
            if (PyCallable_Check(ask_trust.ptr()) == 0) {
                throw py::type_error("ask_trust must be a callable taking the fingerprint (str) and returning bool");
            }
            ask = [&ask_trust, &callback_error](const std::string& fingerprint) {
                const py::gil_scoped_acquire gil;
                try {
                    return ask_trust(fingerprint).cast<bool>();
                } catch (py::error_already_set& e) {
                    callback_error.emplace(std::move(e));
                } catch (const py::cast_error&) {
                    PyErr_SetString(PyExc_TypeError, "ask_trust must return a bool");
                    callback_error.emplace();
                }
                return false;
            };
        }
        {
            // Held here, not by the sim::Client, so that close() releases the file at once.
            if (state_password) {
                state_options.password = state_password->value;
                sim::secure_zero(state_password->value.data(), state_password->value.size());
            }
            const std::string state_server_id =
                server_id ? server_id->value : opts.host + ":" + std::to_string(opts.port);
            // Argon2id runs here (tens to hundreds of milliseconds): without the GIL.
            auto state = nogil([&] { return sim::open_client_state(state_options, state_server_id); });
            sim::secure_zero(state_options.password.data(), state_options.password.size());
            m_state = unwrap(std::move(state));
            opts.config.state = m_state.get();
        }
        auto r = [&] {
            const py::gil_scoped_release nogil;
            return sim::Client::connect(opts, ask);
        }();
        if (callback_error) {
            throw std::move(*callback_error);
        }
        m_client = unwrap(std::move(r));
    }

    ~PyClient() {
        if (m_client) {
            const py::gil_scoped_release nogil;
            m_client->close();
            m_client->set_event_notifier({});
        }
        if (m_event_fd >= 0) {
            ::close(m_event_fd);
        }
    }
    PyClient(const PyClient&) = delete;
    PyClient& operator=(const PyClient&) = delete;

    void login(const Text& user, const Text& password, const Text& destination, double timeout) {
        const auto t = seconds_to_duration(timeout, "timeout");
        check(with_core([&](sim::Client& c) { return c.login(user.value, password.value, destination.value, t); }));
    }
    void login_with_token(const Text& user, const SecretBlob& token, const Text& destination, double timeout) {
        const auto t = seconds_to_duration(timeout, "timeout");
        check(with_core(
            [&](sim::Client& c) { return c.login_with_token(user.value, token.value, destination.value, t); }));
    }
    void change_password(const Text& old_password, const Text& new_password, double timeout) {
        const auto t = seconds_to_duration(timeout, "timeout");
        check(with_core([&](sim::Client& c) { return c.change_password(old_password.value, new_password.value, t); }));
    }
    void register_user(const Text& user, const Text& password, double timeout) {
        const auto t = seconds_to_duration(timeout, "timeout");
        check(with_core([&](sim::Client& c) { return c.register_user(user.value, password.value, t); }));
    }
    /// Send the login (or registration) and return at once; the AUTHENTICATED or ERROR event is the answer.
    void start_login(sim::CredentialKind kind, const std::string& user, sim::ByteView secret,
                     const std::string& destination) {
        check(with_core([&](sim::Client& c) {
            return c.core().login(user, sim::Credentials{kind, sim::to_bytes<sim::SecureBytes>(secret)}, destination);
        }));
    }
    void start_link(const Text& user, const Text& password) {
        check(with_core([&](sim::Client& c) {
            return c.core().login(user.value,
                                  sim::Credentials{sim::CredentialKind::password,
                                                   sim::to_bytes<sim::SecureBytes>(sim::as_bytes(password.value)),
                                                   sim::DeviceId{0}},
                                  {});
        }));
    }
    void approve_device(const Text& code, double timeout) {
        const auto t = seconds_to_duration(timeout, "timeout");
        check(with_core([&](sim::Client& c) { return c.approve_device(code.value, t); }));
    }
    void remove_device(sim::DeviceId device, double timeout) {
        const auto t = seconds_to_duration(timeout, "timeout");
        check(with_core([&](sim::Client& c) { return c.remove_device(device, t); }));
    }
    void rename_device(sim::DeviceId device, const Text& name) {
        check(with_core([&](sim::Client& c) { return c.core().rename_device(device, name.value); }));
    }
    std::vector<sim::DeviceInfo> devices(double timeout) {
        const auto t = seconds_to_duration(timeout, "timeout");
        return unwrap(with_core([&](sim::Client& c) { return c.devices(t); }));
    }
    void open(const Text& peer) {
        check(with_core([&](sim::Client& c) { return c.open(peer.value); }));
    }
    sim::DeviceId device() {
        return unwrap(with_core([](sim::Client& c) { return sim::Result<sim::DeviceId>(c.core().device()); }));
    }
    py::bytes send(const Text& peer, const Text& text) {
        const auto id = unwrap(with_core([&](sim::Client& c) { return c.send(peer.value, text.value); }));
        return to_py_bytes(id);
    }
    sim::PeerIdentity peer_identity(const Text& peer) {
        return unwrap(with_core([&](sim::Client& c) { return c.core().peer_identity(peer.value); }));
    }
    void verify_peer(const Text& peer) {
        check(with_core([&](sim::Client& c) { return c.core().verify_peer(peer.value); }));
    }
    void accept_identity(const Text& peer) {
        check(with_core([&](sim::Client& c) { return c.core().accept_identity(peer.value); }));
    }
    std::size_t outbox_size() {
        return unwrap(with_core([](sim::Client& c) { return sim::Result<std::size_t>(c.core().outbox_size()); }));
    }
    std::vector<sim::InboxEntry> inbox(std::uint64_t from, std::size_t limit, const std::optional<Text>& peer) {
        const std::string who = peer ? peer->value : std::string();
        return unwrap(with_core([&](sim::Client& c) { return c.core().inbox(from, limit, who); }));
    }
    sim::InboxStatus inbox_status() {
        return unwrap(with_core([](sim::Client& c) { return sim::Result<sim::InboxStatus>(c.core().inbox_status()); }));
    }
    void mark_read(std::uint64_t up_to) {
        check(with_core([&](sim::Client& c) { return c.core().mark_read(up_to); }));
    }
    void probe(const Text& peer) {
        check(with_core([&](sim::Client& c) { return c.core().probe(peer.value); }));
    }
    void leave(const Text& peer) {
        check(with_core([&](sim::Client& c) { return c.leave(peer.value); }));
    }
    void set_presence_hidden(bool hidden) {
        check(with_core([&](sim::Client& c) { return c.core().set_presence_hidden(hidden); }));
    }
    void query_presence(const Text& peer) {
        check(with_core([&](sim::Client& c) { return c.core().query_presence(peer.value); }));
    }
    void logout(bool revoke_token, bool everywhere) {
        const std::uint8_t revoke = everywhere ? 2 : (revoke_token ? 1 : 0);
        check(with_core([&](sim::Client& c) { return c.logout(revoke); }));
    }
    void send_raw(const sim::Frame& frame) {
        check(with_core([&](sim::Client& c) { return sim::testing::send_raw(c.core(), frame); }));
    }

    /// The next event (of `kind` from `peer` when given), waiting at most `timeout` seconds (None: forever).
    ClientEvent wait(std::optional<ClientEventKind> kind, const std::string& peer, std::optional<double> timeout) {
        auto& c = client();
        const auto start = std::chrono::steady_clock::now();
        const bool bounded = timeout.has_value();
        const sim::Duration limit = bounded ? seconds_to_duration(*timeout, "timeout") : sim::Duration::zero();
        for (;;) {
            sim::Duration slice = signal_check_interval;
            if (bounded) {
                const auto left = limit - (std::chrono::steady_clock::now() - start);
                slice = std::clamp<sim::Duration>(left, sim::Duration::zero(), slice);
            }
            auto r = nogil([&] { return kind ? c.wait_for_kind(*kind, peer, slice) : c.receive(slice); });
            if (r) {
                return std::move(r).value();
            }
            if (r.code() != sim::Errc::timeout) {
                raise(std::move(r).error());
            }
            if (PyErr_CheckSignals() != 0) {
                throw py::error_already_set();
            }
            if (bounded && std::chrono::steady_clock::now() - start >= limit) {
                raise(sim::Error{sim::Errc::timeout,
                                 kind ? "the awaited event did not come in time" : "no event within the timeout"});
            }
        }
    }

    /// An eventfd that becomes readable when events are queued, created on first use (an event loop watches it,
    /// then calls take_events()). It stays open while the Client object lives, also after close().
    int event_fd() {
        auto& c = client();
        if (m_event_fd < 0) {
            const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
            if (fd < 0) {
                raise(sim::Error{sim::Errc::io_error, "eventfd failed"});
            }
            m_event_fd = fd;
            c.set_event_notifier([fd] {
                const std::uint64_t one = 1;
                // Fails only when the counter would overflow, and then the fd is readable anyway.
                [[maybe_unused]] const auto written = ::write(fd, &one, sizeof one);
            });
        }
        return m_event_fd;
    }

    /// Every queued event, without waiting. Resets event_fd() first, so an event queued meanwhile makes it readable
    /// again rather than being missed.
    std::vector<ClientEvent> take_events() {
        auto& c = client();
        return nogil([&] {
            if (m_event_fd >= 0) {
                std::uint64_t count = 0;
                [[maybe_unused]] const auto got = ::read(m_event_fd, &count, sizeof count);  // EAGAIN: nothing new
            }
            std::vector<ClientEvent> out;
            for (auto e = c.receive(sim::Duration::zero()); e; e = c.receive(sim::Duration::zero())) {
                out.push_back(std::move(e).value());
            }
            return out;
        });
    }

    /// Stop the transport, then release the state file (so that it can be opened again at once), waiting for
    /// calls that use it to finish.
    void close() {
        if (m_closed.exchange(true)) {
            return;
        }
        auto* c = m_client.get();
        nogil([this, c] {
            c->close();
            const std::unique_lock lock(m_state_mutex);
            m_state.reset();
            return 0;
        });
    }

    /// Closed by close(), or the connection is gone (the server died or closed it).
    [[nodiscard]] bool closed() const { return m_closed || (m_client && m_client->closed()); }
    /// close() was called (the events still queued after the connection went away can be read until then).
    [[nodiscard]] bool closed_by_application() const noexcept { return m_closed; }
    sim::Client& client() {
        if (m_closed) {
            raise(sim::Error{sim::Errc::closed, "the client is closed"});
        }
        return *m_client;
    }
    sim::Client& raw() { return *m_client; }

private:
    /// Run `f(client)` without the GIL, for calls that may use the state: close() cannot release the state while
    /// one runs, and one that starts after close() reports Errc::closed.
    template <typename F>
    auto with_core(F&& f) -> decltype(f(std::declval<sim::Client&>())) {
        client();  // ClosedError at once when closed
        const py::gil_scoped_release release;
        const std::shared_lock lock(m_state_mutex);
        if (m_closed) {
            return sim::Error{sim::Errc::closed, "the client is closed"};
        }
        return f(*m_client);
    }

    // Declared before the client: destroyed after it, since the client's core uses it.
    std::unique_ptr<sim::ClientState> m_state;
    std::shared_mutex m_state_mutex;
    std::unique_ptr<sim::Client> m_client;
    std::atomic<bool> m_closed{false};
    int m_event_fd = -1;
};

/// Iterator over a client's events: stops when `timeout` passes without an event, or when the connection is gone.
struct EventIterator {
    py::object owner;  // the Client, kept alive
    PyClient* client;
    std::optional<double> timeout;

    ClientEvent next() {
        if (client->closed_by_application()) {
            throw py::stop_iteration();
        }
        try {
            return client->wait(std::nullopt, {}, timeout);
        } catch (const SimException& e) {
            if (e.error().code == sim::Errc::timeout || e.error().code == sim::Errc::closed) {
                throw py::stop_iteration();
            }
            throw;
        }
    }
};

}  // namespace

void register_client(py::module_& m) {
    py::enum_<ClientEventKind>(m, "EventKind", "The kind of an event: each event class's `kind`.")
        .value("CHANNEL_READY", ClientEventKind::channel_ready, "ChannelReadyEvent")
        .value("TRUST_REQUIRED", ClientEventKind::trust_required, "TrustRequiredEvent")
        .value("AUTHENTICATED", ClientEventKind::authenticated, "AuthenticatedEvent")
        .value("WAITING", ClientEventKind::waiting, "WaitingEvent")
        .value("PEER_ONLINE", ClientEventKind::peer_online, "PeerOnlineEvent")
        .value("KEY_ASSIGNED", ClientEventKind::key_assigned, "KeyAssignedEvent")
        .value("KEY_ROTATED", ClientEventKind::key_rotated, "KeyRotatedEvent")
        .value("MESSAGE", ClientEventKind::message, "MessageEvent")
        .value("PEER_LEFT", ClientEventKind::peer_left, "PeerLeftEvent")
        .value("RECEIPT", ClientEventKind::receipt, "ReceiptEvent")
        .value("IDENTITY_CHANGED", ClientEventKind::identity_changed, "IdentityChangedEvent")
        .value("GAP", ClientEventKind::gap, "GapEvent")
        .value("ERROR", ClientEventKind::error, "ErrorEvent")
        .value("CLOSED", ClientEventKind::closed, "ClosedEvent")
        .value("PASSWORD_CHANGED", ClientEventKind::password_changed, "PasswordChangedEvent")
        .value("LINK_CODE", ClientEventKind::link_code, "LinkCodeEvent")
        .value("LINK_REQUEST", ClientEventKind::link_request, "LinkRequestEvent")
        .value("DEVICES_CHANGED", ClientEventKind::devices_changed, "DevicesChangedEvent")
        .value("DEVICE_INFO", ClientEventKind::device_info, "DeviceInfoEvent")
        .value("PRESENCE", ClientEventKind::presence, "PresenceEvent");

    py::enum_<sim::ConversationMode>(m, "ConversationMode", "How a conversation is keyed.")
        .value("SERVER_ASSIGNED", sim::ConversationMode::server_assigned,
               "the seed's mode: the server generates the key and could read the conversation")
        .value("END_TO_END", sim::ConversationMode::end_to_end, "X3DH + Double Ratchet: the server never learns a key")
        .def_property_readonly(
            "display_name", [](sim::ConversationMode mode) { return std::string(sim::conversation_mode_name(mode)); },
            "'server-assigned' or 'end-to-end'.");

    py::enum_<sim::TrustMode>(m, "TrustMode", "What the client does with a server key it has not pinned yet.")
        .value("TOFU", sim::TrustMode::tofu, "trust on first use: pin it and continue")
        .value("ASK", sim::TrustMode::ask, "call ask_trust(fingerprint) and continue only when it returns True")
        .value("PINNED_ONLY", sim::TrustMode::pinned_only, "refuse unknown keys (HandshakeError)");

    register_events(m);

    py::class_<sim::InboxEntry>(m, "InboxEntry", "One received message as the client keeps it in its state.")
        .def_readonly("index", &sim::InboxEntry::index, "Its place: 0, 1, 2... in the order messages arrived.")
        .def_readonly("peer", &sim::InboxEntry::peer, "The sender.")
        .def_property_readonly(
            "message_id", [](const sim::InboxEntry& e) { return to_py_bytes(e.message_id); }, "The 16-byte id.")
        .def_readonly("seq", &sim::InboxEntry::seq, "The sender's sequence number (server-assigned: the seed's sid).")
        .def_readonly("text", &sim::InboxEntry::text)
        .def_readonly("mode", &sim::InboxEntry::mode)
        .def_readonly("read", &sim::InboxEntry::read, "True once mark_read() passed it.")
        .def_property_readonly(
            "sent_at", [](const sim::InboxEntry& e) { return py_time(e.sent_at); },
            "The sender's timestamp (seconds since the Unix epoch, sealed in the message), or None when unknown.")
        .def_property_readonly(
            "received_at", [](const sim::InboxEntry& e) { return py_time(e.received_at); },
            "When the server accepted it (seconds since the Unix epoch, the server's claim), or None when unknown.")
        .def_property_readonly(
            "conversation", [](const sim::InboxEntry& e) { return to_py_bytes(e.conversation); },
            "The 16-byte id of its conversation (pair_conversation_id() for two users).")
        .def_readonly("sender_device", &sim::InboxEntry::sender_device, "The sender's device it came from.")
        .def_readonly("from_me", &sim::InboxEntry::from_me,
                      "Sent by another device of ours to `peer` (an own copy); `peer` is then the recipient.")
        .def("__repr__", [](const sim::InboxEntry& e) {
            return "<InboxEntry " + std::to_string(e.index) + " from " + e.peer + (e.read ? " read>" : " unread>");
        });
    py::class_<sim::InboxStatus>(m, "InboxStatus", "Where the inbox stands.")
        .def_readonly("next", &sim::InboxStatus::next, "The index the next message gets (= how many there are).")
        .def_readonly("first_unread", &sim::InboxStatus::first_unread, "Every message below it is read.")
        .def_property_readonly(
            "unread", [](const sim::InboxStatus& s) { return s.next - s.first_unread; }, "How many are unread.");

    py::class_<sim::PeerIdentity>(m, "PeerIdentity", "What the client knows about a peer's identity (end-to-end mode).")
        .def_property_readonly(
            "peer", [](const sim::PeerIdentity& p) { return to_py_str(p.peer); }, "The peer's user name.")
        .def_property_readonly(
            "identity_key", [](const sim::PeerIdentity& p) { return to_py_bytes(p.identity_key); },
            "The pinned Ed25519 identity key (32 bytes, public).")
        .def_readonly("safety_number", &sim::PeerIdentity::safety_number,
                      "12 groups of 5 digits; both sides compute the same one. Compare it out of band, then call "
                      "verify_peer().")
        .def_readonly("verified", &sim::PeerIdentity::verified, "True once verify_peer() marked this key.")
        .def_readonly("change_pending", &sim::PeerIdentity::change_pending,
                      "True when a different key was seen and not yet accepted (accept_identity()).")
        .def("__repr__", &peer_identity_repr);

    py::class_<EventIterator>(m, "EventIterator")
        .def("__iter__", [](py::object self) { return self; })
        .def("__next__", &EventIterator::next);

    py::class_<PyClient>(m, "Client",
                         "A connection to a libsim server: connects and completes the handshake on construction. "
                         "Blocking calls release the GIL; receive() can be interrupted with Ctrl-C.")
        .def(py::init<const Text&, std::uint16_t, const std::optional<Text>&, sim::TrustMode, const py::object&,
                      const Text&, const py::object&, const std::optional<sim::SuitePolicy>&,
                      const std::optional<sim::RotationPolicy>&, const std::optional<SecretBlob>&, double, double,
                      std::size_t, std::size_t, const py::object&, std::optional<Text>, bool,
                      const std::optional<sim::SuitePolicy>&, const std::optional<Text>&, bool>(),
             py::arg("host"), py::arg("port"), py::kw_only(), py::arg("server_id") = py::none(),
             py::arg("trust") = sim::TrustMode::tofu, py::arg("ask_trust") = py::none(),
             py::arg("expected_fingerprint") = Text{}, py::arg("known_servers_file") = py::none(),
             py::arg("suites") = py::none(), py::arg("rotation") = py::none(),
             py::arg("static_private_key") = py::none(), py::arg("connect_timeout") = 10.0,
             py::arg("tick_interval") = 5.0, py::arg("max_queued_events") = 10000,
             py::arg("max_frame_size") = sim::default_max_frame_size, py::arg("state_file") = py::none(),
             py::arg("state_password") = py::none(), py::arg("require_end_to_end") = false,
             py::arg("end_to_end_suites") = py::none(), py::arg("user") = py::none(),
             py::arg("in_memory_state") = false,
             "Connect to host:port. `server_id` names the pinned key (default 'host:port'); `rotation` is the "
             "conversation key RotationPolicy; `suites` the channel SuitePolicy. The end-to-end state (identity "
             "key, ratchets, pinned peers, outbox) persists in an encrypted file, opened or created with "
             "`state_password` and held until close(): `state_file` (str or os.PathLike), by default "
             "$XDG_CONFIG_HOME/libsim/keys/<server_id>-<user>.db (~/.config when XDG_CONFIG_HOME is unset), which "
             "needs `user`. `in_memory_state=True` keeps it in memory instead: every run is then a new identity, "
             "which peers see as a key change. `require_end_to_end` refuses server-assigned conversations; "
             "`end_to_end_suites` is the SuitePolicy of end-to-end conversations. Raises ValueError (no "
             "state_password and not in_memory_state; no user for the default file), NetworkError, "
             "TimeoutError, HandshakeError (e.g. SERVER_KEY_MISMATCH), and for the state file CryptoError "
             "AUTH_FAILED (wrong password), RoutingError BUSY (in use), StorageError.")
        .def("login", &PyClient::login, py::arg("user"), py::arg("password"), py::arg("destination") = Text{},
             py::kw_only(), py::arg("timeout") = 30.0,
             "Log in (an unknown user is registered under open registration) and wait for the server's "
             "answer; `destination` names a peer to talk to at once. Raises AccountError (AUTH_REJECTED...).")
        .def("login_with_token", &PyClient::login_with_token, py::arg("user"), py::arg("token"),
             py::arg("destination") = Text{}, py::kw_only(), py::arg("timeout") = 30.0)
        .def("register", &PyClient::register_user, py::arg("user"), py::arg("password"), py::kw_only(),
             py::arg("timeout") = 30.0, "Explicit registration (servers with the explicit policy).")
        .def(
            "start_login",
            [](PyClient& c, const Text& user, const Text& password, const Text& destination) {
                c.start_login(sim::CredentialKind::password, user.value, sim::as_bytes(password.value),
                              destination.value);
            },
            py::arg("user"), py::arg("password"), py::arg("destination") = Text{},
            "login() without the wait, for event loops: the answer is an AUTHENTICATED event, or an ERROR event "
            "(AUTH_REJECTED...). Raises StateError when already logged in.")
        .def(
            "start_login_with_token",
            [](PyClient& c, const Text& user, const SecretBlob& token, const Text& destination) {
                c.start_login(sim::CredentialKind::token, user.value, token.value, destination.value);
            },
            py::arg("user"), py::arg("token"), py::arg("destination") = Text{},
            "login_with_token() without the wait (see start_login).")
        .def(
            "start_register",
            [](PyClient& c, const Text& user, const Text& password) {
                c.start_login(sim::CredentialKind::register_password, user.value, sim::as_bytes(password.value), {});
            },
            py::arg("user"), py::arg("password"), "register() without the wait (see start_login).")
        .def("change_password", &PyClient::change_password, py::arg("old_password"), py::arg("new_password"),
             py::kw_only(), py::arg("timeout") = 30.0,
             "Change the account's password on the server and seal the local state under the new one; waits for "
             "PASSWORD_CHANGED. Every session of the user ends (this one within a second): log in again with the "
             "new password or session_token(). Raises AccountError (AUTH_REJECTED for a wrong old password, "
             "THROTTLED, BAD_PASSWORD).")
        .def("start_link", &PyClient::start_link, py::arg("user"), py::arg("password"),
             "Link this installation (a new state) as a new device of `user`'s account: log in as a new "
             "installation and return at once. A LINK_CODE event brings the code to show; AUTHENTICATED follows "
             "once an existing device approved it (approve_device there). Raises StateError INVALID_STATE for a "
             "state that already holds an identity.")
        .def("approve_device", &PyClient::approve_device, py::arg("code"), py::kw_only(), py::arg("timeout") = 30.0,
             "Approve the new device that asked (a LINK_REQUEST event) with the code it shows; waits until the "
             "server stored the list that admits it (DEVICES_CHANGED). Raises AUTH_FAILED for a wrong code (that "
             "link is over), INVALID_STATE when no device asked.")
        .def("devices", &PyClient::devices, py::kw_only(), py::arg("timeout") = 30.0,
             "The account's devices as the server knows them: a list of DeviceInfo.")
        .def("remove_device", &PyClient::remove_device, py::arg("device"), py::kw_only(), py::arg("timeout") = 30.0,
             "Remove a device from the account (a new signed list without it; it can no longer log in); waits "
             "until the server stored it.")
        .def("rename_device", &PyClient::rename_device, py::arg("device"), py::arg("name"),
             "Name a device (at most 64 bytes, no control characters); a DEVICE_INFO event follows.")
        .def_property_readonly(
            "device", [](PyClient& c) { return c.device(); }, "The device this client is (1 until login).")
        .def("open", &PyClient::open, py::arg("peer"), "Start a conversation with `peer`.")
        .def("send", &PyClient::send, py::arg("peer"), py::arg("text"),
             "Seal `text` for `peer` and send it; returns the message id (16 bytes, named by receipts). To a peer "
             "without a key yet the text waits in the outbox (in the state) and goes once the key arrives. Raises "
             "MessageTooLarge for a text that does not fit a frame, StateError IDENTITY_CHANGED while a changed "
             "identity key of `peer` is not accepted, "
             "StorageError when the state file cannot be written.")
        .def("peer_identity", &PyClient::peer_identity, py::arg("peer"),
             "The pinned identity of `peer` and our safety number with it (a PeerIdentity). Raises RoutingError "
             "NO_CONVERSATION when no key of `peer` is known.")
        .def("verify_peer", &PyClient::verify_peer, py::arg("peer"),
             "Mark `peer`'s current identity key as verified (after comparing the safety numbers). Raises "
             "RoutingError NO_CONVERSATION, StateError IDENTITY_CHANGED while a change is pending.")
        .def("accept_identity", &PyClient::accept_identity, py::arg("peer"),
             "Pin `peer`'s new identity key after IDENTITY_CHANGED (it is then unverified); held messages are "
             "shown and sending resumes. Raises StateError INVALID_STATE when no change is pending.")
        .def_property_readonly("outbox_size", &PyClient::outbox_size,
                               "Messages sent but without a receipt yet (they are re-sent until one comes).")
        .def("inbox", &PyClient::inbox, py::arg("from_index") = 0, py::arg("limit") = 100, py::kw_only(),
             py::arg("peer") = std::nullopt,
             "Received messages (InboxEntry) with index >= from_index, oldest first, at most `limit`, only from "
             "`peer` if given. Every message is written here before it is acknowledged, so none is lost when the "
             "application is slow or restarts. Raises an Error with code NOT_AUTHENTICATED before login.")
        .def_property_readonly("inbox_status", &PyClient::inbox_status,
                               "An InboxStatus: next index, first unread, unread count (zero before login).")
        .def("mark_read", &PyClient::mark_read, py::arg("up_to"),
             "Mark every message with index < up_to as read (the cursor never moves back).")
        .def("probe", &PyClient::probe, py::arg("peer"), "Ask whether `peer` is online (answered by an event).")
        .def("leave", &PyClient::leave, py::arg("peer"), "End the conversation with `peer`.")
        .def("set_presence_hidden", &PyClient::set_presence_hidden, py::arg("hidden"),
             "Hide (True) or show this user's presence to their contacts; before login() it applies to the login. "
             "Raises an Error NOT_IMPLEMENTED when the server does not speak presence.")
        .def("query_presence", &PyClient::query_presence, py::arg("peer"),
             "Ask for `peer`'s presence: a PRESENCE event follows (offline for anyone who is not a contact). Raises "
             "an Error NOT_IMPLEMENTED when the server does not speak presence.")
        .def_property_readonly(
            "presence_supported", [](PyClient& c) { return c.client().core().presence_supported(); },
            "Whether the server speaks presence (agreed in the handshake).")
        .def("logout", &PyClient::logout, py::kw_only(), py::arg("revoke_token") = false, py::arg("everywhere") = false,
             "Log out and close (optionally revoking this or all session tokens).")
        .def("send_raw", &PyClient::send_raw, py::arg("frame"),
             "Send any inner frame as is inside the encrypted channel (tests and diagnostics).")
        .def(
            "receive", [](PyClient& c, std::optional<double> timeout) { return c.wait(std::nullopt, {}, timeout); },
            py::arg("timeout") = py::none(),
            "The next event, waiting at most `timeout` seconds (None: until one comes). Raises TimeoutError, or "
            "ClosedError once the connection is gone and no events remain.")
        .def(
            "wait_for",
            [](PyClient& c, ClientEventKind kind, const Text& peer, std::optional<double> timeout) {
                return c.wait(kind, peer.value, timeout);
            },
            py::arg("kind"), py::arg("peer") = Text{}, py::kw_only(), py::arg("timeout") = py::none(),
            "The next event of `kind` (from `peer` when given), leaving the others queued in order.")
        .def(
            "events",
            [](py::object self, std::optional<double> timeout) {
                auto& c = self.cast<PyClient&>();
                c.client();  // ClosedError now rather than an empty iteration
                return EventIterator{self, &c, timeout};
            },
            py::arg("timeout") = py::none(),
            "Iterate over events; stops when `timeout` seconds pass without one, or when the connection is gone.")
        .def("__iter__",
             [](py::object self) {
                 auto& c = self.cast<PyClient&>();
                 c.client();
                 return EventIterator{self, &c, std::nullopt};
             })
        .def_property_readonly("server_fingerprint", [](PyClient& c) { return c.client().server_fingerprint(); })
        .def_property_readonly("user", [](PyClient& c) { return to_py_str(c.client().core().user()); })
        .def_property_readonly("authenticated", [](PyClient& c) { return c.client().core().authenticated(); })
        .def_property_readonly("conversations",
                               [](PyClient& c) {
                                   py::list out;
                                   for (const auto& p : c.client().core().conversations()) {
                                       out.append(to_py_str(p));
                                   }
                                   return out;
                               })
        .def(
            "conversation_suite",
            [](PyClient& c, const Text& peer) { return c.client().core().conversation_suite(peer.value); },
            py::arg("peer"), "The suite of the conversation with `peer`, or None when not keyed.")
        .def_property_readonly(
            "session_token",
            [](PyClient& c) -> py::object {
                const auto t = c.client().core().session_token();
                if (t.token.empty()) {
                    return py::none();
                }
                return py::make_tuple(to_py_bytes(t.token), t.expires_unix_ms);
            },
            "(token, expires_unix_ms) issued at the last password login, or None. The token is a secret.")
        .def_property_readonly("event_fd", &PyClient::event_fd,
                               "A file descriptor that becomes readable when events are queued (created on first "
                               "use; for event loops such as libsim.aio): watch it, then call take_events(). Raises "
                               "ClosedError after close().")
        .def("take_events", &PyClient::take_events,
             "Every queued event (a list, maybe empty), without waiting; makes event_fd unreadable until the next "
             "event. Raises ClosedError after close().")
        .def_property_readonly("closed", &PyClient::closed)
        .def("close", &PyClient::close, "Close the connection (idempotent); later calls raise ClosedError.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyClient& c, const py::args&) {
            c.close();
            return false;
        });
}

}  // namespace simpy
