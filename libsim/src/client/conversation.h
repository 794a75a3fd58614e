#pragma once
// Private: one conversation of the client core, in the mode the server keyed it (docs/protocol.md 5.2, 6). The core
// keeps each peer's current conversation (the mode of the peer's last KEYGEN; end to end until one comes) and hands it
// what concerns it: texts to send, the outbox's seal step, delivered messages, keys, the end. Each mode is one
// implementation: server-assigned (a key from the server, sessions per direction, for this connection) and pairwise
// end to end (the E2eClient's identity and Double Ratchet sessions, kept in the client state); a group conversation
// is another one. Not thread-safe: the core calls it under its lock.

#include <sim/client.h>
#include <sim/messages.h>

#include "durable_outbox.h"
#include "e2e_client.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace sim::client_detail {

/// What the conversations of one core share; all of it is the core's and outlives them.
struct ConversationContext {
    const ClientConfig& config;
    const std::string& user;  ///< our canonical name (known at login, before any conversation exists)
    Rng& rng;
    const Clock& clock;
    E2eClient& e2e;  ///< the client state: identity, sessions, the ids seen, the inbox, and the commit of them all
    DurableOutbox& outbox;
    std::function<void(ClientEvent)> emit;
};

class Conversation {
public:
    Conversation() = default;
    virtual ~Conversation() = default;
    Conversation(const Conversation&) = delete;
    Conversation& operator=(const Conversation&) = delete;

    [[nodiscard]] virtual ConversationMode mode() const noexcept = 0;
    /// Its suite while it is keyed; nullopt without a key.
    [[nodiscard]] virtual std::optional<SuiteId> suite() const = 0;
    /// The server's KEYGEN for it (of its mode). False when this client refuses it (an event says why): nothing
    /// changed then.
    virtual bool on_key(const KeyAssignment& key) = 0;
    /// Queue `text`, stamped `sent_at`, in the outbox; committed before it returns. Errc::frame_too_large for a text
    /// that cannot fit a frame; Errc::identity_changed (end to end); storage errors.
    virtual Result<MessageId> send(std::string_view text, WallTime sent_at) = 0;
    /// The outbox's seal step for a text queued unsealed (outbox.h): its envelope now, or nullopt to hold it until a
    /// key comes (the core asks the server for one).
    virtual std::optional<Envelope> seal(const MessageId& id, const UnsealedText& text) = 0;
    /// A message delivered in its mode: shown once (an event, the inbox) and acknowledged, or reported and dropped.
    virtual void on_message(const Delivered& delivered) = 0;
    /// Either side ended it, or the connection is gone: what this connection keyed is forgotten. True when it had a
    /// key of this connection (the peer is then told to have left).
    virtual bool end() = 0;
};

/// A new, unkeyed conversation with `peer` in `mode`.
std::unique_ptr<Conversation> make_conversation(ConversationMode mode, ConversationContext& context, std::string peer);
/// The implementations (server_assigned_conversation.cpp, pairwise_conversation.cpp).
std::unique_ptr<Conversation> make_server_assigned_conversation(ConversationContext& context, std::string peer);
std::unique_ptr<Conversation> make_pairwise_conversation(ConversationContext& context, std::string peer);

}  // namespace sim::client_detail
