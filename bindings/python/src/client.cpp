// The networked client: connect, log in, open conversations, send, receive (with a timeout, as an iterator,
// interruptible by Ctrl-C), close; usable as a context manager.
#include "rng_clock.h"

#include <sim/client.h>
#include <sim/frame.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>

namespace simpy {

namespace {

using sim::ClientEvent;
using sim::ClientEventKind;

/// Blocking waits are cut into slices this long so that signals (Ctrl-C) are handled promptly.
constexpr auto signal_check_interval = std::chrono::milliseconds(50);

std::string event_repr(const ClientEvent& e) {
    std::string s = "Event(" + py::str(py::cast(e.kind)).cast<std::string>();
    if (!e.peer.empty()) {
        s += ", peer=" + py::repr(to_py_str(e.peer)).cast<std::string>();
    }
    if (e.kind == ClientEventKind::message) {
        s += ", text=" + py::repr(to_py_str(e.text)).cast<std::string>() + ", sid=" + std::to_string(e.sid);
    }
    if (e.kind == ClientEventKind::key_assigned || e.kind == ClientEventKind::channel_ready) {
        s += ", suite=" + py::str(py::cast(e.suite)).cast<std::string>();
    }
    if (e.kind == ClientEventKind::key_rotated) {
        s += ", epoch=" + std::to_string(e.epoch);
    }
    if (e.error.code != sim::Errc::ok) {
        s += ", error=" + py::str(py::cast(e.error.code)).cast<std::string>();
    }
    return s + ")";
}

/// Run `f` without the GIL.
template <typename F>
auto nogil(F&& f) {
    const py::gil_scoped_release release;
    return f();
}

class PyClient {
public:
    PyClient(const Text& host, std::uint16_t port, const std::optional<Text>& server_id, sim::TrustMode trust,
             const py::object& ask_trust, const Text& expected_fingerprint, const py::object& known_servers_file,
             const std::optional<sim::SuitePolicy>& suites, const std::optional<sim::RotationPolicy>& rotation,
             const std::optional<SecretBlob>& static_private_key, double connect_timeout, double tick_interval,
             std::size_t max_queued_events, std::size_t max_frame_size) {
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
            // str or os.PathLike, as Python's own file APIs accept
            PyObject* path = PyOS_FSPath(known_servers_file.ptr());
            if (path == nullptr) {
                throw py::error_already_set();
            }
            const auto owned = py::reinterpret_steal<py::object>(path);
            opts.known_servers_file = text_from(owned, "known_servers_file").value;
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
        }
    }
    PyClient(const PyClient&) = delete;
    PyClient& operator=(const PyClient&) = delete;

    void login(const Text& user, const Text& password, const Text& destination, double timeout) {
        auto& c = client();
        const auto t = seconds_to_duration(timeout, "timeout");
        check(nogil([&] { return c.login(user.value, password.value, destination.value, t); }));
    }
    void login_with_token(const Text& user, const SecretBlob& token, const Text& destination, double timeout) {
        auto& c = client();
        const auto t = seconds_to_duration(timeout, "timeout");
        check(nogil([&] { return c.login_with_token(user.value, token.value, destination.value, t); }));
    }
    void register_user(const Text& user, const Text& password, double timeout) {
        auto& c = client();
        const auto t = seconds_to_duration(timeout, "timeout");
        check(nogil([&] { return c.register_user(user.value, password.value, t); }));
    }
    void open(const Text& peer) {
        auto& c = client();
        check(nogil([&] { return c.open(peer.value); }));
    }
    py::bytes send(const Text& peer, const Text& text) {
        auto& c = client();
        const auto id = unwrap(nogil([&] { return c.send(peer.value, text.value); }));
        return to_py_bytes(id);
    }
    void probe(const Text& peer) {
        auto& c = client();
        check(nogil([&] { return c.core().probe(peer.value); }));
    }
    void leave(const Text& peer) {
        auto& c = client();
        check(nogil([&] { return c.leave(peer.value); }));
    }
    void logout(bool revoke_token, bool everywhere) {
        auto& c = client();
        const std::uint8_t revoke = everywhere ? 2 : (revoke_token ? 1 : 0);
        check(nogil([&] { return c.logout(revoke); }));
    }
    void send_raw(const sim::Frame& frame) {
        auto& c = client();
        check(nogil([&] { return c.core().send_raw(frame); }));
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
            auto r = nogil([&] { return kind ? c.wait_for(*kind, peer, slice) : c.receive(slice); });
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

    void close() {
        if (m_closed.exchange(true)) {
            return;
        }
        auto* c = m_client.get();
        nogil([c] {
            c->close();
            return 0;
        });
    }

    [[nodiscard]] bool closed() const noexcept { return m_closed; }
    sim::Client& client() {
        if (m_closed) {
            raise(sim::Error{sim::Errc::closed, "the client is closed"});
        }
        return *m_client;
    }
    sim::Client& raw() { return *m_client; }

private:
    std::unique_ptr<sim::Client> m_client;
    std::atomic<bool> m_closed{false};
};

/// Iterator over a client's events: stops when `timeout` passes without an event, or when the connection is gone.
struct EventIterator {
    py::object owner;  // the Client, kept alive
    PyClient* client;
    std::optional<double> timeout;

    ClientEvent next() {
        if (client->closed()) {
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
    py::enum_<ClientEventKind>(m, "EventKind", "What happened on a client.")
        .value("CHANNEL_READY", ClientEventKind::channel_ready, "handshake done")
        .value("TRUST_REQUIRED", ClientEventKind::trust_required, "the server key needs a decision")
        .value("AUTHENTICATED", ClientEventKind::authenticated, "logged in as `peer`")
        .value("WAITING", ClientEventKind::waiting, "`peer` is offline; the client waits for it")
        .value("PEER_ONLINE", ClientEventKind::peer_online, "`peer` is online")
        .value("KEY_ASSIGNED", ClientEventKind::key_assigned, "conversation with `peer` keyed (`suite`)")
        .value("KEY_ROTATED", ClientEventKind::key_rotated, "conversation key with `peer` moved to `epoch`")
        .value("MESSAGE", ClientEventKind::message, "`peer` sent `text`")
        .value("PEER_LEFT", ClientEventKind::peer_left, "`peer` ended the conversation or went offline")
        .value("ERROR", ClientEventKind::error, "`error` reported by the server, or a message that failed to open")
        .value("CLOSED", ClientEventKind::closed, "the connection is gone (`error` says why)");

    py::enum_<sim::TrustMode>(m, "TrustMode", "What the client does with a server key it has not pinned yet.")
        .value("TOFU", sim::TrustMode::tofu, "trust on first use: pin it and continue")
        .value("ASK", sim::TrustMode::ask, "call ask_trust(fingerprint) and continue only when it returns True")
        .value("PINNED_ONLY", sim::TrustMode::pinned_only, "refuse unknown keys (HandshakeError)");

    py::class_<ClientEvent>(m, "Event", "One thing that happened on a client; which fields matter depends on `kind`.")
        .def_readonly("kind", &ClientEvent::kind)
        .def_property_readonly("peer", [](const ClientEvent& e) { return to_py_str(e.peer); })
        .def_property_readonly("text", [](const ClientEvent& e) { return to_py_str(e.text); })
        .def_readonly("sid", &ClientEvent::sid)
        .def_readonly("suite", &ClientEvent::suite)
        .def_readonly("epoch", &ClientEvent::epoch)
        .def_readonly("fingerprint", &ClientEvent::fingerprint)
        .def_readonly("first_contact", &ClientEvent::first_contact)
        .def_property_readonly(
            "error",
            [](const ClientEvent& e) -> py::object {
                if (e.error.code == sim::Errc::ok) {
                    return py::none();
                }
                return make_error_object(e.error);
            },
            "The error (a libsim.Error object, not raised), or None.")
        .def("__repr__", &event_repr);

    py::class_<EventIterator>(m, "EventIterator")
        .def("__iter__", [](py::object self) { return self; })
        .def("__next__", &EventIterator::next);

    py::class_<PyClient>(m, "Client",
                         "A connection to a libsim server: connects and completes the handshake on construction. "
                         "Blocking calls release the GIL; receive() can be interrupted with Ctrl-C.")
        .def(py::init<const Text&, std::uint16_t, const std::optional<Text>&, sim::TrustMode, const py::object&,
                      const Text&, const py::object&, const std::optional<sim::SuitePolicy>&,
                      const std::optional<sim::RotationPolicy>&, const std::optional<SecretBlob>&, double, double,
                      std::size_t, std::size_t>(),
             py::arg("host"), py::arg("port"), py::kw_only(), py::arg("server_id") = py::none(),
             py::arg("trust") = sim::TrustMode::tofu, py::arg("ask_trust") = py::none(),
             py::arg("expected_fingerprint") = Text{}, py::arg("known_servers_file") = py::none(),
             py::arg("suites") = py::none(), py::arg("rotation") = py::none(),
             py::arg("static_private_key") = py::none(), py::arg("connect_timeout") = 10.0,
             py::arg("tick_interval") = 5.0, py::arg("max_queued_events") = 10000,
             py::arg("max_frame_size") = sim::default_max_frame_size,
             "Connect to host:port. `server_id` names the pinned key (default 'host:port'); `rotation` is the "
             "conversation key RotationPolicy; `suites` the channel SuitePolicy. Raises NetworkError, "
             "TimeoutError or HandshakeError (e.g. SERVER_KEY_MISMATCH).")
        .def("login", &PyClient::login, py::arg("user"), py::arg("password"), py::arg("destination") = Text{},
             py::kw_only(), py::arg("timeout") = 30.0,
             "Log in (an unknown user is registered under open registration) and wait for the server's "
             "answer; `destination` names a peer to talk to at once. Raises AccountError (AUTH_REJECTED...).")
        .def("login_with_token", &PyClient::login_with_token, py::arg("user"), py::arg("token"),
             py::arg("destination") = Text{}, py::kw_only(), py::arg("timeout") = 30.0)
        .def("register", &PyClient::register_user, py::arg("user"), py::arg("password"), py::kw_only(),
             py::arg("timeout") = 30.0, "Explicit registration (servers with the explicit policy).")
        .def("open", &PyClient::open, py::arg("peer"), "Start a conversation with `peer`.")
        .def("send", &PyClient::send, py::arg("peer"), py::arg("text"),
             "Seal `text` for `peer` and send it; returns the message id (16 bytes, named by receipts). Raises "
             "RoutingError NO_CONVERSATION before the key arrived, MessageTooLarge for a text that does not fit a "
             "frame.")
        .def("probe", &PyClient::probe, py::arg("peer"), "Ask whether `peer` is online (answered by an event).")
        .def("leave", &PyClient::leave, py::arg("peer"), "End the conversation with `peer`.")
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
        .def_property_readonly("closed", &PyClient::closed)
        .def("close", &PyClient::close, "Close the connection (idempotent); later calls raise ClosedError.")
        .def("__enter__", [](py::object self) { return self; })
        .def("__exit__", [](PyClient& c, const py::args&) {
            c.close();
            return false;
        });
}

}  // namespace simpy
