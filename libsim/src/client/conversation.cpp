// The conversation of each mode (conversation.h).
#include "conversation.h"

namespace sim::client_detail {

std::unique_ptr<Conversation> make_conversation(ConversationMode mode, ConversationContext& context, std::string peer) {
    switch (mode) {
        case ConversationMode::server_assigned:
            return make_server_assigned_conversation(context, std::move(peer));
        case ConversationMode::end_to_end:
            return make_pairwise_conversation(context, std::move(peer));
    }
    return make_pairwise_conversation(context, std::move(peer));
}

}  // namespace sim::client_detail
