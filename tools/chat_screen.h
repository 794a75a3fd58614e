// The pure parts of `sim chat`'s full-screen mode: terminal input decoding (keys, bracketed paste), the input line
// editor, wrapping to a width in terminal cells, and the model of conversations and unread counts. No curses and no
// I/O here, so that all of it is unit-tested without a terminal (tests/tools/test_chat_screen.cpp).
#pragma once

#include <chrono>
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
    tab,                ///< Tab, Ctrl-I: complete the word before the cursor
    escape,             ///< a lone Esc (nothing followed it within the escape timeout)
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
///
/// Esc starts both Alt chords (ESC x) and key sequences (ESC [ A), which a terminal sends in one go; an Esc that
/// nothing followed within the escape timeout is the Esc key itself (Key::escape), so that a key typed later is not
/// taken as Alt-key. The caller passes the time of each feed() and calls feed("", now) at deadline() when no byte came.
class InputDecoder {
public:
    using Clock = std::chrono::steady_clock;

    /// `max_paste`: longer pastes are not kept; they come out with too_large set. `escape_timeout`: how long an Esc
    /// waits for the rest of its sequence.
    explicit InputDecoder(std::size_t max_paste, std::chrono::milliseconds escape_timeout = default_escape_timeout)
        : m_max_paste(max_paste), m_escape_timeout(escape_timeout) {}

    /// The bytes read at `now` (empty: only the time passed). Without times (all `now` equal) an Esc waits forever.
    [[nodiscard]] std::vector<KeyEvent> feed(std::string_view bytes, Clock::time_point now = {});
    /// When a pending Esc becomes Key::escape if nothing else arrives: the caller's next feed() should come no later;
    /// nullopt when no Esc waits.
    [[nodiscard]] std::optional<Clock::time_point> deadline() const;

    static constexpr std::chrono::milliseconds default_escape_timeout{50};

private:
    /// Decodes what m_pending holds, as far as it is complete; true when it used any of it.
    bool decode_pending(std::vector<KeyEvent>& out);
    void feed_paste(std::vector<KeyEvent>& out);
    /// Decodes the key at the start of m_pending; 0 when it is incomplete, else the bytes it used.
    std::size_t decode_one(std::vector<KeyEvent>& out);

    std::size_t m_max_paste;
    std::chrono::milliseconds m_escape_timeout;
    std::string m_pending;
    Clock::time_point m_pending_since{};  // when what m_pending holds began to wait
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
    /// Replace the line being edited (a completion); `cursor` is clamped to it.
    void set(std::string text, std::size_t cursor);

private:
    void history_move(int step);

    std::string m_text;
    std::size_t m_cursor = 0;
    std::vector<std::string> m_history;
    std::size_t m_history_pos = 0;  // == m_history.size(): editing a new line (kept in m_draft while browsing)
    std::string m_draft;
};

/// A command of `sim chat` (sim.cpp's Chat runs them), for completion and help.
struct ChatCommand {
    std::string_view name;  ///< with its '/'
    bool takes_name;        ///< its argument is a user name
};

inline constexpr ChatCommand chat_commands[] = {
    {"/accept", true}, {"/approve", false}, {"/exit", false},    {"/help", false}, {"/history", false},
    {"/leave", true},  {"/open", true},     {"/presence", false}, {"/quit", false}, {"/r", false},
    {"/safety", true}, {"/search", false},  {"/to", true},        {"/verify", true}, {"/who", false},
};

/// What Tab does to the input line.
struct Completion {
    std::string text;                     ///< the line afterwards
    std::size_t cursor = 0;               ///< the cursor afterwards
    std::vector<std::string> candidates;  ///< when several matched: all of them, sorted; else empty
};

/// Completes the word before `cursor` in `text`: a command name when the line starts with '/' and the cursor is in
/// its first word; one of `names` (user names) in the argument of a command that takes one (`/open bo`) and in the
/// first word of a line that is not a command. One match completes the word (then a space, or ": " after a name at
/// the start of a message, when the cursor is at the end of the line); several complete their longest common prefix
/// and are listed. Matching ignores ASCII case. nullopt when nothing here can be completed or nothing matches.
[[nodiscard]] std::optional<Completion> complete(std::string_view text, std::size_t cursor,
                                                 const std::vector<std::string>& names);

/// Tab in the input line: complete() on the first press; each further press right after one that listed candidates
/// (the line and cursor unchanged since) puts the next candidate in place of the word, cyclically.
class TabCompleter {
public:
    [[nodiscard]] std::optional<Completion> tab(std::string_view text, std::size_t cursor,
                                                const std::vector<std::string>& names);
    /// Another key was pressed: the next Tab completes afresh.
    void reset() noexcept { m_candidates.clear(); }

private:
    std::vector<std::string> m_candidates;
    std::size_t m_next = 0;
    std::string m_before;  // the line before the word
    std::string m_after;   // the line after the cursor
    std::string m_text;    // the line and cursor the last Tab left
    std::size_t m_cursor = 0;
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

/// How far apart the sender's and the server's times of a message may be before both are shown.
inline constexpr std::int64_t time_skew_shown_ms = 5 * 60 * 1000;

/// Milliseconds since the Unix epoch of a library time whose epoch value means "unknown" (sim::WallTime{}), -1 then.
[[nodiscard]] std::int64_t ms_or_unknown(std::chrono::sys_time<std::chrono::milliseconds> t);

/// The time shown before a line, in local time: "HH:MM" for a time of the day `now_ms` falls on, else
/// "YYYY-MM-DD HH:MM"; five spaces when `time_ms` is negative (unknown).
[[nodiscard]] std::string clock_label(std::int64_t time_ms, std::int64_t now_ms);
/// The time shown before a message: the sender's time (authenticated with the message), or the server's when the
/// sender's is unknown; when both are known and more than time_skew_shown_ms apart, both: "09:12 (server 11:40)".
/// Negative = unknown.
[[nodiscard]] std::string message_time_label(std::int64_t sent_ms, std::int64_t server_ms, std::int64_t now_ms);

/// One line of the message pane.
struct ChatEntry {
    std::string conversation;  ///< the peer it belongs to; empty: a status line shown in every conversation
    std::string sender;        ///< who wrote it (a message), empty for a status line
    std::string text;
    std::int64_t time_ms = -1;         ///< Unix time in ms (a message: the sender's); negative: unknown
    std::int64_t server_time_ms = -1;  ///< a received message: the server's receive time; negative: unknown
};

/// The conversations of the full-screen chat: their order, unread counts, the current one and the lines shown.
class ChatModel {
public:
    /// A message from `peer` (or from us to `peer` with `sender` = our name). `inbox_index` is its place in the
    /// client's inbox (for mark_read), absent for our own. Returns true when it arrived in a conversation that is not
    /// the current one (it is then counted as unread: the caller rings the bell).
    bool add_message(const std::string& peer, const std::string& sender, const std::string& text, std::int64_t time_ms,
                     std::optional<std::uint64_t> inbox_index, bool unread = true, std::int64_t server_time_ms = -1);
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
    /// `peer`'s presence as the server last told it (a PresenceEvent); makes `peer` known in the list.
    void set_presence(const std::string& peer, bool online);
    /// True online, false offline, nullopt when the server never told (not a contact, or no presence on the server).
    [[nodiscard]] std::optional<bool> presence(const std::string& peer) const;
    /// The line of the conversation list for `peer`: "> " for the current one (else two spaces), the name, " *"
    /// when the peer is online, and the unread count in parentheses when there is one ("> bob * (2)").
    [[nodiscard]] std::string list_label(const std::string& peer) const;
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
    std::map<std::string, bool> m_presence;
    std::string m_current;
};

}  // namespace sim::tools
