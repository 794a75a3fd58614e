#include "chat_curses.h"

#include "chat_screen.h"

#include <curses.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <clocale>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>

namespace sim::tools {

namespace {

volatile std::sig_atomic_t g_resized = 0;

extern "C" void on_winch(int /*sig*/) {
    g_resized = 1;
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

class CursesScreen final : public ChatFrontEnd {
public:
    /// Takes over `screen`, which newterm() made current.
    CursesScreen(SCREEN* screen, std::size_t max_paste, std::chrono::milliseconds escape_timeout)
        : m_screen(screen), m_decoder(max_paste, escape_timeout), m_max_paste(max_paste) {
        raw();
        noecho();
        nonl();
        struct sigaction sa {};
        sa.sa_handler = on_winch;
        ::sigemptyset(&sa.sa_mask);
        ::sigaction(SIGWINCH, &sa, &m_old_winch);
        std::fputs("\x1b[?2004h", stdout);  // bracketed paste (xterm mode 2004)
        std::fflush(stdout);
        m_dirty = true;
    }

    ~CursesScreen() override {
        std::fputs("\x1b[?2004l", stdout);
        std::fflush(stdout);
        endwin();
        delscreen(m_screen);
        ::sigaction(SIGWINCH, &m_old_winch, nullptr);
    }

    CursesScreen(const CursesScreen&) = delete;
    CursesScreen& operator=(const CursesScreen&) = delete;

    void say(const std::string& line) override {
        m_model.add_status(line, now_ms());
        m_dirty = true;
    }

    void event(const sim::ClientEvent& e, const std::string& text) override {
        if (const auto* m = std::get_if<sim::MessageEvent>(&e)) {
            if (m->inbox_index < m_loaded_next) {
                return;  // already shown from the inbox
            }
            // An own copy (sent from another device of ours) is our line, and never unread.
            if (m_model.add_message(m->peer, m->from_me ? m_state.user : m->peer, m->text, ms_or_unknown(m->sent_at),
                                    m->inbox_index, !m->from_me, ms_or_unknown(m->received_at))) {
                beep();
            } else {
                mark_read();
            }
        } else {
            if (const auto* p = std::get_if<sim::PresenceEvent>(&e)) {
                m_model.set_presence(p->peer, p->online);
            }
            if (!text.empty()) {
                // About one peer: in that conversation (which it adds to the list); else in every one.
                const std::string peer{sim::peer_of(e)};
                m_model.add_status(text, now_ms(), peer == m_state.user ? std::string() : peer);
            }
        }
        m_dirty = true;
    }

    void listing(const std::vector<std::string>& lines) override {
        for (const auto& line : lines) {
            m_model.add_status(line, now_ms(), m_state.current);
        }
        m_model.scroll = 0;
        m_dirty = true;
    }

    void sent(const std::string& peer, const std::string& text) override {
        m_model.add_message(peer, m_state.user, text, now_ms(), std::nullopt);
        m_model.scroll = 0;
        m_dirty = true;
    }

    void update(const ChatState& state) override {
        if (state.core != nullptr && !m_loaded) {
            load_inbox(*state.core);
        }
        const bool changed = state.current != m_state.current || state.security != m_state.security ||
                             state.connected != m_state.connected || state.retry_at != m_state.retry_at;
        m_state = state;
        if (!state.current.empty() && (changed || m_model.current() != state.current)) {
            m_model.open(state.current);
            mark_read();
        }
        m_dirty = m_dirty || changed;
    }

    std::optional<std::vector<ChatInput>> input(std::chrono::milliseconds wait) override {
        std::vector<ChatInput> lines;
        if (g_resized != 0) {
            resize();
        }
        if (m_dirty || !m_state.connected) {
            draw();
        }
        // A pending Esc becomes the Esc key at its deadline if nothing follows it.
        const auto esc_due = m_decoder.deadline();
        if (esc_due) {
            const auto left = std::chrono::ceil<std::chrono::milliseconds>(*esc_due - InputDecoder::Clock::now());
            wait = std::clamp(left, std::chrono::milliseconds(0), wait);
        }
        pollfd pfd{STDIN_FILENO, POLLIN, 0};
        const int ready = ::poll(&pfd, 1, static_cast<int>(wait.count()));
        if (ready <= 0) {
            if (esc_due) {
                for (auto& k : m_decoder.feed({}, InputDecoder::Clock::now())) {
                    key(k, lines);
                }
                m_dirty = true;
            }
            return lines;  // timeout, or a signal (SIGWINCH): the next call redraws
        }
        char chunk[4096];
        const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                return lines;
            }
            return std::nullopt;
        }
        if (n == 0) {
            return std::nullopt;
        }
        for (auto& k :
             m_decoder.feed(std::string_view(chunk, static_cast<std::size_t>(n)), InputDecoder::Clock::now())) {
            key(k, lines);
        }
        m_dirty = true;
        return lines;
    }

private:
    void key(const KeyEvent& k, std::vector<ChatInput>& lines) {
        if (k.key != Key::tab) {
            m_hint.clear();  // the candidates of the last Tab, until the next key
            m_completer.reset();
        }
        switch (k.key) {
            case Key::tab:
                tab();
                return;
            case Key::escape:
                m_model.scroll = 0;  // back to the newest messages (the hint is gone already)
                return;
            case Key::paste:
                if (k.too_large) {
                    say("! paste refused: " + std::to_string(k.size) + " bytes, more than one message holds (" +
                        std::to_string(m_max_paste) + "); nothing was sent");
                } else if (!k.text.empty()) {
                    lines.push_back(ChatInput{k.text, false});
                }
                return;
            case Key::interrupt:
                lines.push_back(ChatInput{"/quit", true});
                return;
            case Key::redraw:
                clearok(curscr, TRUE);
                return;
            case Key::page_up:
                m_model.scroll += std::max(1, pane_rows() - 1);
                return;
            case Key::page_down:
                m_model.scroll = std::max(0, m_model.scroll - std::max(1, pane_rows() - 1));
                return;
            case Key::next_conversation:
            case Key::prev_conversation:
                if (auto peer = m_model.neighbour(k.key == Key::next_conversation ? 1 : -1)) {
                    lines.push_back(ChatInput{"/to " + *peer, true});
                }
                return;
            case Key::alt_digit:
                if (static_cast<std::size_t>(k.digit) <= m_model.conversations().size()) {
                    lines.push_back(
                        ChatInput{"/to " + m_model.conversations()[static_cast<std::size_t>(k.digit - 1)], true});
                }
                return;
            default:
                if (auto line = m_editor.apply(k)) {
                    m_model.scroll = 0;
                    lines.push_back(ChatInput{std::move(*line), true});
                }
                return;
        }
    }

    /// Tab: completes a command or a user name (chat_screen's complete()); several candidates go to the status line.
    void tab() {
        std::vector<std::string> names = m_model.conversations();
        names.insert(names.end(), m_state.names.begin(), m_state.names.end());
        std::erase(names, m_state.user);
        const auto c = m_completer.tab(m_editor.text(), m_editor.cursor(), names);
        if (!c) {
            m_hint = "no completion";
            return;
        }
        m_editor.set(c->text, c->cursor);
        m_hint.clear();
        for (const auto& candidate : c->candidates) {
            m_hint += (m_hint.empty() ? "" : "  ") + candidate;
        }
    }

    void load_inbox(sim::ClientCore& core) {
        m_loaded = true;
        constexpr std::uint64_t history = 1000;
        const auto status = core.inbox_status();
        const std::uint64_t from = status.next > history ? status.next - history : 0;
        auto entries = core.inbox(from, history);
        if (!entries) {
            say("! cannot read the inbox: " + entries.error().message());
            return;
        }
        for (const auto& e : *entries) {
            m_model.add_message(e.peer, e.from_me ? m_state.user : e.peer, e.text, ms_or_unknown(e.sent_at), e.index,
                                !e.from_me && e.index >= status.first_unread, ms_or_unknown(e.received_at));
            m_loaded_next = std::max(m_loaded_next, e.index + 1);
        }
    }

    void mark_read() {
        if (m_state.core == nullptr) {
            return;
        }
        const auto up_to = m_model.read_up_to(m_state.core->inbox_status().next);
        if (auto st = m_state.core->mark_read(up_to); !st) {
            m_model.add_status("! cannot mark messages read: " + st.error().message(), now_ms());
        }
    }

    void resize() {
        g_resized = 0;
        winsize ws{};
        if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
            resizeterm(ws.ws_row, ws.ws_col);
        }
        clearok(curscr, TRUE);
        m_dirty = true;
    }

    [[nodiscard]] int list_width() const { return COLS >= 48 ? std::min(22, COLS / 4) : 0; }
    [[nodiscard]] static int pane_rows() { return std::max(1, LINES - 2); }

    /// Draws `text` (already safe glyphs) at (y, x), at most `width` columns.
    static void put(int y, int x, const std::string& text, int width) {
        int used = 0;
        move(y, x);
        for (const auto& g : glyphs(text)) {
            if (g.text == "\n" || used + g.width > width) {
                break;
            }
            addstr(g.text.c_str());
            used += g.width;
        }
    }

    void draw() {
        m_dirty = false;
        erase();
        const int lw = list_width();
        const int rows = pane_rows();
        if (lw > 0) {
            int y = 0;
            for (const auto& peer : m_model.conversations()) {
                if (y >= rows) {
                    break;
                }
                const std::string line = m_model.list_label(peer);
                if (peer == m_model.current()) {
                    attron(A_BOLD);
                }
                put(y++, 0, line, lw - 1);
                attroff(A_BOLD);
            }
            for (int r = 0; r < rows; ++r) {
                mvaddch(r, lw - 1, '|');
            }
        }
        draw_pane(lw, rows);
        draw_status(rows);
        draw_input(rows + 1);
        refresh();
    }

    void draw_pane(int x, int rows) {
        const int width = std::max(2, COLS - x);
        const auto entries = m_model.visible();
        std::vector<std::string> lines;  // newest first
        const auto want = static_cast<std::size_t>(rows + m_model.scroll);
        const auto now = now_ms();
        for (auto it = entries.rbegin(); it != entries.rend() && lines.size() < want; ++it) {
            const ChatEntry& e = **it;
            const std::string text = message_time_label(e.time_ms, e.server_time_ms, now) + " " +
                                     (e.sender.empty() ? e.text : "[" + e.sender + "] " + e.text);
            auto wrapped = wrap(text, width);
            for (auto w = wrapped.rbegin(); w != wrapped.rend(); ++w) {
                lines.push_back(std::move(*w));
            }
        }
        const int max_scroll = std::max(0, static_cast<int>(lines.size()) - rows);
        m_model.scroll = std::min(m_model.scroll, max_scroll);
        for (int r = 0; r < rows; ++r) {
            const auto idx = static_cast<std::size_t>(m_model.scroll + (rows - 1 - r));
            if (idx < lines.size()) {
                put(r, x, lines[idx], width);
            }
        }
    }

    void draw_status(int y) {
        if (!m_hint.empty()) {
            attron(A_REVERSE);
            mvhline(y, 0, ' ', COLS);
            put(y, 0, " " + m_hint, COLS);
            attroff(A_REVERSE);
            return;
        }
        std::string s = " " + m_state.user + " | ";
        if (m_state.connected) {
            s += "connected";
        } else {
            const auto left =
                std::chrono::duration_cast<std::chrono::seconds>(m_state.retry_at - std::chrono::steady_clock::now());
            s += "reconnecting in " + std::to_string(std::max<long long>(0, left.count())) + " s";
        }
        if (!m_state.current.empty()) {
            s += " | " + m_state.current + ": " + m_state.security;
        }
        if (m_model.scroll > 0) {
            s += " | scrolled back (PageDown)";
        }
        attron(A_REVERSE);
        mvhline(y, 0, ' ', COLS);
        put(y, 0, s, COLS);
        attroff(A_REVERSE);
    }

    void draw_input(int y) {
        const std::string prompt = "> ";
        const int avail = std::max(2, COLS - static_cast<int>(prompt.size()) - 1);
        const std::string& text = m_editor.text();
        auto left = glyphs(std::string_view(text).substr(0, m_editor.cursor()));
        const auto right = glyphs(std::string_view(text).substr(m_editor.cursor()));
        int left_width = 0;
        for (const auto& g : left) {
            left_width += g.width;
        }
        std::size_t drop = 0;
        while (left_width > avail - 1 && drop < left.size()) {
            left_width -= left[drop++].width;  // scroll the line so that the cursor stays visible
        }
        mvaddstr(y, 0, prompt.c_str());
        for (std::size_t i = drop; i < left.size(); ++i) {
            addstr(left[i].text.c_str());
        }
        const int cursor_x = static_cast<int>(prompt.size()) + left_width;
        int used = left_width;
        for (const auto& g : right) {
            if (used + g.width > avail) {
                break;
            }
            addstr(g.text.c_str());
            used += g.width;
        }
        move(y, cursor_x);
    }

    SCREEN* m_screen;
    InputDecoder m_decoder;
    std::size_t m_max_paste;
    std::string m_hint;  // Tab's candidates (or that there are none), shown in place of the status line
    LineEditor m_editor;
    TabCompleter m_completer;
    ChatModel m_model;
    ChatState m_state;
    bool m_dirty = true;
    bool m_loaded = false;
    std::uint64_t m_loaded_next = 0;
    struct sigaction m_old_winch {};
};

}  // namespace

std::unique_ptr<ChatFrontEnd> make_chat_screen(std::size_t max_paste) {
    // ncurses' $ESCDELAY (milliseconds) sets how long an Esc waits for the rest of a key sequence.
    auto escape_timeout = InputDecoder::default_escape_timeout;
    if (const char* env = std::getenv("ESCDELAY"); env != nullptr && *env != '\0') {
        char* end = nullptr;
        const long ms = std::strtol(env, &end, 10);
        if (*end == '\0' && ms > 0 && ms <= 10000) {
            escape_timeout = std::chrono::milliseconds(ms);
        }
    }
    std::setlocale(LC_ALL, "");  // UTF-8 output and wcwidth() follow the user's locale
    SCREEN* screen = newterm(nullptr, stdout, stdin);
    if (screen == nullptr) {
        return nullptr;  // a terminal type curses does not know
    }
    return std::make_unique<CursesScreen>(screen, max_paste, escape_timeout);
}

}  // namespace sim::tools
