#pragma once
// In-memory connections for tests that drive sans-IO cores (ClientCore, ServerCore, test doubles) against each
// other: bytes are queued per direction and moved only when the test pumps, so nothing sleeps and every run is the
// same. Used by test_server.cpp and test_misbehaving_server.cpp.

#include <sim/client.h>
#include <sim/frame.h>
#include <sim/handshake.h>
#include <sim/messages.h>
#include <sim/session.h>
#include <sim/transport.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sim_test {

struct Pipe;

/// One end's output: what a core sends is queued in its Pipe for the other end.
class PipeOutput final : public sim::ConnectionOutput {
public:
    PipeOutput(Pipe& pipe, bool client_side) : m_pipe(pipe), m_client_side(client_side) {}
    void send(sim::Bytes data) override;
    void close(sim::Errc reason) override;
    void established() override {}
    void authenticated() override;

private:
    Pipe& m_pipe;
    bool m_client_side;
};

/// Both directions of one in-memory connection between a client handler and a server handler.
struct Pipe {
    std::shared_ptr<sim::ConnectionHandler> client;
    std::shared_ptr<sim::ConnectionHandler> server;
    std::deque<sim::Bytes> to_server;
    std::deque<sim::Bytes> to_client;
    std::vector<sim::Bytes> captured_to_server;  ///< what an eavesdropper on the wire saw
    bool closed = false;
    bool close_requested = false;
    bool authenticated = false;  ///< the server core said its peer logged in (ConnectionOutput::authenticated)
    sim::Errc close_reason = sim::Errc::ok;

    /// Deliver queued bytes both ways (and a requested close once the queues are empty); returns whether anything
    /// moved.
    bool pump() {
        bool moved = false;
        while (!closed && (!to_server.empty() || !to_client.empty())) {
            moved = true;
            if (!to_server.empty()) {
                auto b = std::move(to_server.front());
                to_server.pop_front();
                server->on_bytes(b);
            }
            if (!to_client.empty()) {
                auto b = std::move(to_client.front());
                to_client.pop_front();
                client->on_bytes(b);
            }
        }
        if (close_requested && !closed && to_server.empty() && to_client.empty()) {
            close_now(close_reason);
            moved = true;
        }
        return moved;
    }

    /// Drop the connection at once (queued bytes are lost), as a crash or a pulled cable would.
    void close_now(sim::Errc reason = sim::Errc::closed) {
        if (closed) {
            return;
        }
        closed = true;
        to_server.clear();
        to_client.clear();
        server->on_closed(reason);
        client->on_closed(reason);
    }
};

inline void PipeOutput::send(sim::Bytes data) {
    if (m_pipe.closed || m_pipe.close_requested) {
        return;
    }
    if (m_client_side) {
        m_pipe.captured_to_server.push_back(data);
        m_pipe.to_server.push_back(std::move(data));
    } else {
        m_pipe.to_client.push_back(std::move(data));
    }
}

inline void PipeOutput::authenticated() {
    m_pipe.authenticated = true;
}

inline void PipeOutput::close(sim::Errc reason) {
    if (!m_pipe.close_requested) {
        m_pipe.close_requested = true;
        m_pipe.close_reason = reason;
    }
}

/// A ClientCore on a Pipe, with the events it reported.
struct TestClient {
    std::shared_ptr<sim::ClientCore> core;
    std::vector<sim::ClientEvent> events;
    std::unique_ptr<Pipe> pipe;

    /// Whether an event of type `E` (about `peer`, when not empty) was reported.
    template <typename E>
    [[nodiscard]] bool saw(const std::string& peer = {}) const {
        return !of<E>(peer).empty();
    }
    /// The events of type `E` (about `peer`, when not empty), in order.
    template <typename E>
    [[nodiscard]] std::vector<E> of(const std::string& peer = {}) const {
        std::vector<E> out;
        for (const auto& e : events) {
            if (const auto* x = std::get_if<E>(&e); x != nullptr && (peer.empty() || sim::peer_of(e) == peer)) {
                out.push_back(*x);
            }
        }
        return out;
    }
    /// The texts of the message events (from `peer`, when not empty), in order.
    [[nodiscard]] std::vector<std::string> texts(const std::string& peer = {}) const {
        std::vector<std::string> out;
        for (const auto& e : of<sim::MessageEvent>(peer)) {
            out.push_back(e.text);
        }
        return out;
    }
};

/// Create a ClientCore whose events go to a new TestClient, on a new Pipe whose server end is `server_end`
/// (called with the server-side output). The caller keeps the TestClient alive while the core may report events.
template <typename AcceptFn>
std::unique_ptr<TestClient> make_test_client(sim::ClientConfig config, sim::KnownServers& known, sim::Rng& rng,
                                             const sim::Clock& clock, AcceptFn&& server_end) {
    auto tc = std::make_unique<TestClient>();
    tc->pipe = std::make_unique<Pipe>();
    auto* raw = tc.get();
    auto core = sim::ClientCore::create(std::move(config), known, rng, clock,
                                        [raw](const sim::ClientEvent& e) { raw->events.push_back(e); });
    if (!core) {
        return nullptr;
    }
    tc->core = std::move(*core);
    tc->pipe->client = tc->core;
    tc->pipe->server = server_end(std::make_shared<PipeOutput>(*tc->pipe, false));
    if (tc->pipe->server == nullptr || !tc->core->attach(std::make_shared<PipeOutput>(*tc->pipe, true))) {
        return nullptr;
    }
    return tc;
}

/// A client written against the channel alone (no ClientCore), as a third party would: it sends exactly the inner
/// frames it is given, records every inner frame the server sends (`inbox`) and, in order, every transport frame it
/// sent or received with the plaintext of each record (`log`).
class RawClient final : public sim::ConnectionHandler {
public:
    struct Entry {
        bool sent = false;
        sim::Bytes wire;                  ///< the transport frame as on TCP
        std::optional<sim::Bytes> inner;  ///< a record's plaintext (the encoded inner frame)
    };

    /// `static_key` empty: a fresh client static key.
    /// `features`: offered in the handshake (docs/protocol.md 3.2); agreed() says what the server accepted.
    RawClient(sim::KnownServers& known, sim::Rng& rng, const sim::Clock& clock, std::string server_id = "test-server:1",
              sim::ByteView static_key = {}, std::vector<sim::ChannelFeature> features = {}) {
        sim::ClientHandshakeConfig cfg;
        cfg.server_id = std::move(server_id);
        cfg.features = std::move(features);
        if (!static_key.empty()) {
            cfg.static_private_key = sim::to_bytes<sim::SecureBytes>(static_key);
        }
        m_hs.emplace(std::move(sim::ClientHandshake::create(std::move(cfg), known, rng, clock).value()));
    }
    void start(std::shared_ptr<sim::ConnectionOutput> out) {
        m_out = std::move(out);
        write_handshake();
    }
    void on_bytes(sim::ByteView data) override {
        m_decoder.feed(data);
        for (;;) {
            auto next = m_decoder.next();
            REQUIRE(next.has_value());
            if (!next->has_value()) {
                return;
            }
            const sim::Frame f = std::move(**next);
            auto wire = sim::encode_frame(f).value();
            if (f.type == sim::FrameType::handshake) {
                log.push_back({false, std::move(wire), std::nullopt});
                REQUIRE(m_hs->read_message(f.payload).has_value());
                write_handshake();
                continue;
            }
            REQUIRE(f.type == sim::FrameType::record);
            REQUIRE(m_recv.has_value());
            auto plain = m_recv->open(f.payload);
            REQUIRE(plain.has_value());
            auto inner = sim::decode_frame(*plain);
            REQUIRE(inner.has_value());
            log.push_back({false, std::move(wire), *plain});
            inbox.push_back(std::move(*inner));
        }
    }
    void on_closed(sim::Errc) override { closed = true; }

    void send(const sim::Frame& inner) {
        REQUIRE(m_send.has_value());
        auto plain = sim::encode_frame(inner).value();
        auto record = m_send->seal(plain);
        REQUIRE(record.has_value());
        auto wire = sim::encode_frame(sim::Frame{sim::FrameType::record, 0, {}, {}, std::move(*record)}).value();
        log.push_back({true, wire, std::move(plain)});
        m_out->send(std::move(wire));
    }

    /// The frames of one type received so far, removed from the inbox.
    std::vector<sim::Frame> take(sim::FrameType type) {
        std::vector<sim::Frame> out;
        std::erase_if(inbox, [&](const sim::Frame& f) {
            if (f.type == type) {
                out.push_back(f);
                return true;
            }
            return false;
        });
        return out;
    }
    /// Error codes received (and removed).
    std::vector<sim::Errc> errors() {
        std::vector<sim::Errc> out;
        for (const auto& f : take(sim::FrameType::error)) {
            out.push_back(sim::parse_error_frame(f).value().code);
        }
        return out;
    }

    std::vector<Entry> log;
    std::vector<sim::Frame> inbox;
    sim::ServerLimits limits{};  // from a test's login helper
    sim::Bytes handshake_hash;
    std::vector<sim::ChannelFeature> features;  // agreed in the handshake
    bool closed = false;
    bool ready = false;

private:
    void write_handshake() {
        if (m_hs->next_action() == sim::ChannelAction::write_message) {
            auto msg = m_hs->write_message();
            REQUIRE(msg.has_value());
            auto wire = sim::encode_frame(sim::Frame{sim::FrameType::handshake, 0, {}, {}, std::move(*msg)}).value();
            log.push_back({true, wire, std::nullopt});
            m_out->send(std::move(wire));
        }
        if (m_hs->next_action() == sim::ChannelAction::complete) {
            auto keys = m_hs->finish();
            REQUIRE(keys.has_value());
            handshake_hash = keys->handshake_hash;
            features = keys->features;
            m_send.emplace(std::move(keys->send));
            m_recv.emplace(std::move(keys->recv));
            ready = true;
        }
    }

    std::optional<sim::ClientHandshake> m_hs;
    std::shared_ptr<sim::ConnectionOutput> m_out;
    sim::FrameDecoder m_decoder;
    std::optional<sim::SendSession> m_send;
    std::optional<sim::RecvSession> m_recv;
};

}  // namespace sim_test
