// A server-assigned conversation (docs/protocol.md 5.2, 6.7): the server hands both sides a key (KEYGEN mode 1), each
// direction is a record session under a key derived from it, and the server can read it. Its keys live as long as
// the connection; the texts wait unsealed in the outbox and are sealed under the current key each time they go, so
// one sent again after a restart or a new KEYGEN is readable with the key its recipient gets.
#include "conversation.h"

namespace sim::client_detail {

namespace {

/// How many epochs the receiving session follows in one record (docs/protocol.md 6.7). Offline delivery means a late
/// reader: records are kept in order, and the sender rotates at most once per record, but records sealed and then
/// refused by the server (rate limit, full queue) leave epochs out. Following costs one HKDF step per epoch, and these
/// records reach us only through the server's authenticated channel. A record further ahead is reported as an error
/// event (epoch_too_far) and not shown.
constexpr std::uint32_t conversation_max_skipped_epochs = max_epoch_skip;

class ServerAssignedConversation final : public Conversation {
public:
    ServerAssignedConversation(ConversationContext& context, std::string peer)
        : m_ctx(context), m_peer(std::move(peer)) {}

    [[nodiscard]] ConversationMode mode() const noexcept override { return ConversationMode::server_assigned; }

    [[nodiscard]] std::optional<SuiteId> suite() const override {
        return m_keys ? std::optional<SuiteId>{m_keys->suite} : std::nullopt;
    }

    bool on_key(const KeyAssignment& k) override {
        if (m_ctx.config.require_end_to_end) {
            error(Error{Errc::suite_not_allowed,
                        "server-assigned conversation refused: this client requires end-to-end encryption"});
            return false;
        }
        SessionConfig cfg;
        cfg.suite = k.suite;
        cfg.rotation = m_ctx.config.conversation_rotation;
        cfg.replay_window = 64;
        cfg.fail_closed = false;  // a forged body is dropped; the conversation lives on
        cfg.rotation.max_skipped_epochs = conversation_max_skipped_epochs;
        auto s =
            SendSession::create(cfg, conversation_direction_key(k.key, m_ctx.user, m_peer), m_ctx.rng, m_ctx.clock);
        if (!s) {
            error(s.error());
            return false;
        }
        m_keys.emplace(
            Keys{k.suite, cfg, std::move(*s), std::nullopt, conversation_direction_key(k.key, m_peer, m_ctx.user), 1});
        m_ctx.outbox.release(m_peer);
        m_ctx.emit(KeyAssignedEvent{m_peer, k.suite, ConversationMode::server_assigned, {}, false});
        return true;
    }

    Result<MessageId> send(std::string_view text, WallTime sent_at) override {
        // The text is sealed in a conversation record inside an envelope inside an inner frame, which is sealed in a
        // channel record: refuse what cannot fit the frame limit instead of failing half way.
        const std::size_t inner_overhead = 4 + 1 + 8 + single_device_message_overhead + max_record_overhead +
                                           min_frame_size + m_ctx.user.size() + m_peer.size();
        if (text.size() + inner_overhead > max_inner_frame_size(m_ctx.config.max_frame_size)) {
            return Error{Errc::frame_too_large, "message too long"};
        }
        // Kept unsealed in the outbox and sealed when it goes out: what it becomes on the wire depends on the key
        // the conversation has then.
        MessageId id{};
        m_ctx.rng.fill(id);
        SIM_TRY_STATUS(m_ctx.e2e.enqueue(id, m_peer, make_unsealed_text(id, sent_at, text)));
        return id;
    }

    std::optional<Envelope> seal(const MessageId& id, const UnsealedText& unsealed) override {
        if (!m_keys) {
            return std::nullopt;
        }
        auto& keys = *m_keys;
        const auto before = keys.send.status().epoch;
        auto body = encode_conversation_body(
            ConversationBody{keys.next_sid, std::string(unsealed.text.begin(), unsealed.text.end()), unsealed.sent_at});
        auto record = keys.send.seal(body);
        secure_zero(body.data(), body.size());
        if (!record) {
            error(record.error());
            return std::nullopt;
        }
        ++keys.next_sid;
        note_rotation(before, keys.send.status().epoch, KeyDirection::sending);
        return Envelope{id, ConversationMode::server_assigned, std::move(*record)};
    }

    void on_message(const Delivered& delivered) override {
        const auto& env = delivered.envelope;
        if (!m_keys) {
            error(Error{Errc::no_conversation, "message outside a keyed conversation dropped"});
            return;
        }
        if (m_ctx.e2e.seen(m_peer, env.id)) {
            m_ctx.e2e.ack(m_peer, env.id);  // a retry: acknowledged again, shown once
            return;
        }
        auto& keys = *m_keys;
        if (!keys.recv) {
            auto r = RecvSession::create(keys.config, keys.recv_key, m_ctx.rng, m_ctx.clock);
            if (!r) {
                error(r.error());
                return;
            }
            keys.recv.emplace(std::move(*r));
            keys.recv_key = SecureBytes{};
        }
        const auto before = keys.recv->status().epoch;
        auto plain = keys.recv->open(env.body);
        if (!plain) {
            // Not shown: a forged or replayed body (the seed's attack 2 if it ever got through), or a record
            // further ahead than conversation_max_skipped_epochs.
            error(plain.error());
            return;
        }
        note_rotation(before, keys.recv->status().epoch, KeyDirection::receiving);
        auto body = decode_conversation_body(*plain);
        secure_zero(plain->data(), plain->size());
        if (!body) {
            error(body.error());
            return;
        }
        m_ctx.e2e.remember(m_peer, env.id);
        m_ctx.e2e.ack(m_peer, env.id);
        MessageEvent e;
        e.peer = m_peer;
        e.text = std::move(body->text);
        e.message_id = env.id;
        e.seq = body->sid;
        e.mode = ConversationMode::server_assigned;
        e.sent_at = body->sent_at;
        e.received_at = delivered.received_at;
        e.conversation = delivered.conversation;
        e.sender_device = delivered.sender_device;
        e.inbox_index =
            m_ctx.e2e.keep_received(InboxEntry{0, m_peer, env.id, body->sid, e.text, ConversationMode::server_assigned,
                                               false, e.sent_at, e.received_at, e.conversation, e.sender_device});
        m_ctx.emit(std::move(e));
    }

    bool end() override {
        const bool keyed = m_keys.has_value();
        m_keys.reset();
        return keyed;
    }

private:
    /// A session per direction under keys derived from the KEYGEN key.
    struct Keys {
        SuiteId suite;
        SessionConfig config;
        SendSession send;
        /// Created at the first record received, so that its key-age clock (`key_expired`) starts when the peer's
        /// first record arrives: after an offline delivery the peer got its KEYGEN, and started its epoch 0, long
        /// after ours.
        std::optional<RecvSession> recv;
        SecureBytes recv_key;  // until `recv` exists
        std::uint32_t next_sid = 1;
    };

    void error(const Error& err) { m_ctx.emit(ErrorEvent{err, m_peer, std::nullopt}); }

    void note_rotation(std::uint32_t before, std::uint32_t after, KeyDirection direction) {
        if (after != before) {
            m_ctx.emit(KeyRotatedEvent{m_peer, ConversationMode::server_assigned, after, direction});
        }
    }

    ConversationContext& m_ctx;
    std::string m_peer;
    std::optional<Keys> m_keys;  // none: not keyed on this connection (yet, or any more)
};

}  // namespace

std::unique_ptr<Conversation> make_server_assigned_conversation(ConversationContext& context, std::string peer) {
    return std::make_unique<ServerAssignedConversation>(context, std::move(peer));
}

}  // namespace sim::client_detail
