// The seam between `sim chat`'s logic (commands, events, reconnecting: the Chat class in sim.cpp) and what the user
// sees: the line-mode front end (stdin / stdout lines) and the full-screen one (chat_curses.*).
#pragma once

#include <sim/client.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace sim::tools {

/// A line from the user. Only typed lines may be commands: pasted text is always a message.
struct ChatInput {
    std::string text;
    bool typed = true;
};

/// Where the chat stands, for the front end to show.
struct ChatState {
    sim::ClientCore* core = nullptr;  ///< the current client core (it changes on reconnect); null while down
    std::string user;
    std::string current;             ///< the current peer, or empty
    std::string security;            ///< the current conversation's protection, in words; empty without a current peer
    std::vector<std::string> names;  ///< user names the chat knows (conversations, inbox senders), for completion
    bool connected = true;
    std::chrono::steady_clock::time_point retry_at{};  ///< when not connected: the next attempt
};

class ChatFrontEnd {
public:
    virtual ~ChatFrontEnd() = default;
    /// A status line ('* ...') or a problem ('! ...').
    virtual void say(const std::string& line) = 0;
    /// An event of the client; `text` is how describe() words it (empty: not shown).
    virtual void event(const sim::ClientEvent& e, const std::string& text) = 0;
    /// Lines listing stored messages (/history, /search), shown together: in full screen in the current
    /// conversation's message pane, in line mode printed.
    virtual void listing(const std::vector<std::string>& lines) = 0;
    /// A message we sent (or queued) to `peer`.
    virtual void sent(const std::string& peer, const std::string& text) = 0;
    /// The chat's state changed (or may have): the current peer, the connection.
    virtual void update(const ChatState& state) = 0;
    /// Waits at most `wait` for input and returns the lines it completed (maybe none); nullopt at end of input.
    virtual std::optional<std::vector<ChatInput>> input(std::chrono::milliseconds wait) = 0;
};

}  // namespace sim::tools
