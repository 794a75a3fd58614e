// `sim chat`'s full-screen front end on ncursesw: a conversation list, the message pane, a status line and the
// input line. Drawing and terminal I/O only; the logic it shows is in chat_screen.* (pure) and sim.cpp's Chat.
#pragma once

#include "chat_front_end.h"

#include <memory>

namespace sim::tools {

/// Takes over the terminal (stdin and stdout must be one) until destroyed: raw mode, the alternate screen, bracketed
/// paste. Pastes longer than `max_paste` bytes are refused. An Esc waits $ESCDELAY ms (default 50) for the rest of a
/// key sequence. Null when curses cannot drive the terminal ($TERM unknown): the caller falls back to the line mode.
[[nodiscard]] std::unique_ptr<ChatFrontEnd> make_chat_screen(std::size_t max_paste);

}  // namespace sim::tools
