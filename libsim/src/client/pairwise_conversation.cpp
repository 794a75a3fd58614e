// A pairwise end-to-end conversation (docs/protocol.md 6): what the E2eClient keeps for the peer in the client
// state (its pinned identity, the Double Ratchet sessions), which outlives connections.
#include "conversation.h"

namespace sim::client_detail {

namespace {

class PairwiseConversation final : public Conversation {
public:
    PairwiseConversation(ConversationContext& context, std::string peer) : m_ctx(context), m_peer(std::move(peer)) {}

    [[nodiscard]] ConversationMode mode() const noexcept override { return ConversationMode::end_to_end; }
    [[nodiscard]] std::optional<SuiteId> suite() const override { return m_ctx.e2e.session_suite(m_peer); }
    bool on_key(const KeyAssignment& key) override {
        m_ctx.e2e.on_keys(key);
        return true;
    }
    Result<MessageId> send(std::string_view text, WallTime sent_at) override {
        return m_ctx.e2e.send_text(m_peer, text, sent_at, max_inner_frame_size(m_ctx.config.max_frame_size));
    }
    /// A text queued before there was a session is sealed once, in the state, when the session comes
    /// (E2eClient::seal_pending), not here.
    std::optional<Envelope> seal(const MessageId& /*id*/, const UnsealedText& /*text*/) override {
        return std::nullopt;
    }
    void on_message(const Delivered& delivered) override { m_ctx.e2e.on_message(m_peer, delivered); }
    /// Its sessions outlive the connection and the conversation: nothing to forget.
    bool end() override { return false; }

private:
    ConversationContext& m_ctx;
    std::string m_peer;
};

}  // namespace

std::unique_ptr<Conversation> make_pairwise_conversation(ConversationContext& context, std::string peer) {
    return std::make_unique<PairwiseConversation>(context, std::move(peer));
}

}  // namespace sim::client_detail
