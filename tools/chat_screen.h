// The pure parts of `sim chat`'s full-screen mode: terminal input decoding (keys, bracketed paste), the input line
// editor, wrapping to a width in terminal cells, and the model of conversations and unread counts. No curses and no
// I/O here, so that all of it is unit-tested without a terminal (tests/tools/test_chat_screen.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sim::tools {

/// What one decoded piece of terminal input means.
enum class Key : std::uint8_t {
    text,   ///< printable UTF-8 typed (KeyEvent::text)
    paste,  ///< a bracketed paste, complete (KeyEvent::text, or KeyEvent::too_large)
    enter,
    left,
    right,
    home,  ///< Home, Ctrl-A
    end,   ///< End, Ctrl-E
    backspace,
    del,         ///< Delete, Ctrl-D
    kill_end,    ///< Ctrl-K
    kill_start,  ///< Ctrl-U
    kill_word,   ///< Ctrl-W
    up,
    down,
    page_up,
    page_down,
    next_conversation,  ///< Ctrl-N
    prev_conversation,  ///< Ctrl-P
    alt_digit,          ///< Alt-1..Alt-9 (KeyEvent::digit)
    interrupt,          ///< Ctrl-C
    redraw,             ///< Ctrl-L
};

struct KeyEvent {
    Key key = Key::text;
    std::string text;        ///< Key::text, Key::paste
    int digit = 0;           ///< Key::alt_digit
    std::size_t size = 0;    ///< Key::paste: its size in bytes (also when too large to keep)
    bool too_large = false;  ///< Key::paste: longer than the decoder's limit; `text` is empty
};

/// Turns the bytes a terminal sends (raw mode) into keys. Keeps an incomplete escape sequence or paste for the next
/// feed(). A bracketed paste (ESC[200~ ... ESC[201~, xterm's mode 2004) comes out as one Key::paste whatever it
/// contains: the bytes in it are never keys, so a pasted '/' or newline cannot run a command or send a line. Line
/// ends in a paste become '\n'; trailing ones are dropped.
class InputDecoder {
public:
    /// `max_paste`: longer pastes are not kept; they come out with too_large set.
    explicit InputDecoder(std::size_t max_paste) : m_max_paste(max_paste) {}

    [[nodiscard]] std::vector<KeyEvent> feed(std::string_view bytes);

private:
    void feed_paste(std::vector<KeyEvent>& out);
    /// Decodes the key at the start of m_pending; 0 when it is incomplete, else the bytes it used.
    std::size_t decode_one(std::vector<KeyEvent>& out);

    std::size_t m_max_paste;
    std::string m_pending;
    bool m_in_paste = false;
    std::string m_paste;
    std::size_t m_paste_size = 0;
};

/// The input line: a UTF-8 string with a cursor (a byte offset on a character boundary) and a history.
class LineEditor {
public:
    /// Apply an editing key. Returns the line (and clears the editor, remembering it in the history) on Key::enter;
    /// keys that do not edit are ignored.
    std::optional<std::string> apply(const KeyEvent& k);

    [[nodiscard]] const std::string& text() const noexcept { return m_text; }
    [[nodiscard]] std::size_t cursor() const noexcept { return m_cursor; }

private:
    void history_move(int step);

    std::string m_text;
    std::size_t m_cursor = 0;
    std::vector<std::string> m_history;
    std::size_t m_history_pos = 0;  // == m_history.size(): editing a new line (kept in m_draft while browsing)
    std::string m_draft;
};

/// One character cell group on screen: what to draw and how many columns it takes (0 for combining marks).
struct Glyph {
    std::string text;
    int width = 1;
};

/// `text` as glyphs safe to draw: invalid UTF-8 and C1 controls become U+FFFD, other control characters ^X, a tab
/// spaces up to the next multiple of 8 columns (counted from `column`); '\n' stays a glyph of width 0 with text
/// "\n" so that wrap() breaks there. Widths are wcwidth()'s (the caller sets a UTF-8 LC_CTYPE).
[[nodiscard]] std::vector<Glyph> glyphs(std::string_view text, int column = 0);

/// Columns `text` takes on one line (after glyphs()).
[[nodiscard]] int display_width(std::string_view text);

/// `text` broken into lines of at most `width` columns: at '\n', else after the last space that fits, else inside a
/// word. A double-width character never straddles the edge. At least one line (possibly empty).
[[nodiscard]] std::vector<std::string> wrap(std::string_view text, int width);

/// One line of the message pane.
struct ChatEntry {
    std::string conversation;  ///< the peer it belongs to; empty: a status line shown in every conversation
    std::string sender;        ///< who wrote it (a message), empty for a status line
    std::string text;
    std::int64_t time_ms = -1;  ///< Unix time in ms; negative: unknown (history from the inbox)
};

/// The conversations of the full-screen chat: their order, unread counts, the current one and the lines shown.
class ChatModel {
public:
    /// A message from `peer` (or from us to `peer` with `sender` = our name). `inbox_index` is its place in the
    /// client's inbox (for mark_read), absent for our own. Returns true when it arrived in a conversation that is not
    /// the current one (it is then counted as unread: the caller rings the bell).
    bool add_message(const std::string& peer, const std::string& sender, const std::string& text, std::int64_t time_ms,
                     std::optional<std::uint64_t> inbox_index, bool unread = true);
    /// A status line: about the conversation with `peer` (shown only there), or, with `peer` empty, shown whatever
    /// the current conversation.
    void add_status(const std::string& text, std::int64_t time_ms, const std::string& peer = {});
    /// Make `peer` known (in the list) without a message.
    void add_conversation(const std::string& peer);
    /// Make `peer` current (adding it if new) and clear its unread count.
    void open(const std::string& peer);
    /// The conversation `step` places after (negative: before) the current one, cyclically; nullopt if none.
    [[nodiscard]] std::optional<std::string> neighbour(int step) const;

    [[nodiscard]] const std::vector<std::string>& conversations() const noexcept { return m_order; }
    [[nodiscard]] const std::string& current() const noexcept { return m_current; }
    [[nodiscard]] std::size_t unread(const std::string& peer) const;
    /// The inbox index below which every message is read: the first unread message of any conversation, or `next`
    /// (the inbox's next index) when there is none.
    [[nodiscard]] std::uint64_t read_up_to(std::uint64_t next) const;
    /// The lines of the current conversation (and the status lines), oldest first.
    [[nodiscard]] std::vector<const ChatEntry*> visible() const;

    /// Scroll-back: how many screen lines the pane is scrolled up from the bottom.
    int scroll = 0;

private:
    struct Unread {
        std::size_t count = 0;
        std::optional<std::uint64_t> first_index;  // the first unread message's inbox index
    };
    std::vector<ChatEntry> m_entries;
    std::vector<std::string> m_order;
    std::map<std::string, Unread> m_unread;
    std::string m_current;
};

}  // namespace sim::tools
