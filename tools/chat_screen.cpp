#include "chat_screen.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <cwchar>

namespace sim::tools {

namespace {

constexpr std::string_view paste_begin = "\x1b[200~";
constexpr std::string_view paste_end = "\x1b[201~";
constexpr std::size_t max_entries = 20000;  // the pane's memory; older lines are in the inbox

KeyEvent key_event(Key k) {
    KeyEvent e;
    e.key = k;
    return e;
}

/// The key of a cursor sequence's final byte (ESC [ x or ESC O x), the same in both forms.
std::optional<Key> cursor_key(char final) {
    switch (final) {
        case 'A':
            return Key::up;
        case 'B':
            return Key::down;
        case 'C':
            return Key::right;
        case 'D':
            return Key::left;
        case 'H':
            return Key::home;
        case 'F':
            return Key::end;
        default:
            return std::nullopt;
    }
}

bool is_continuation(char c) {
    return (static_cast<unsigned char>(c) & 0xc0U) == 0x80U;
}

std::size_t prev_boundary(const std::string& s, std::size_t i) {
    while (i > 0) {
        --i;
        if (!is_continuation(s[i])) {
            break;
        }
    }
    return i;
}

std::size_t next_boundary(const std::string& s, std::size_t i) {
    if (i < s.size()) {
        ++i;
    }
    while (i < s.size() && is_continuation(s[i])) {
        ++i;
    }
    return i;
}

/// Decodes one UTF-8 sequence at `s[i]`: the code point and its length, or nullopt (length 1) when invalid.
std::optional<char32_t> decode_utf8(std::string_view s, std::size_t i, std::size_t& len) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    len = 1;
    if (b0 < 0x80) {
        return b0;
    }
    std::size_t n = 0;
    char32_t cp = 0;
    if ((b0 & 0xe0U) == 0xc0U) {
        n = 2;
        cp = b0 & 0x1fU;
    } else if ((b0 & 0xf0U) == 0xe0U) {
        n = 3;
        cp = b0 & 0x0fU;
    } else if ((b0 & 0xf8U) == 0xf0U) {
        n = 4;
        cp = b0 & 0x07U;
    } else {
        return std::nullopt;
    }
    if (i + n > s.size()) {
        return std::nullopt;
    }
    for (std::size_t k = 1; k < n; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if ((b & 0xc0U) != 0x80U) {
            return std::nullopt;
        }
        cp = (cp << 6U) | (b & 0x3fU);
    }
    const char32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return std::nullopt;  // overlong, beyond Unicode or a surrogate
    }
    len = n;
    return cp;
}

}  // namespace

// ---------------------------------------------------------------- InputDecoder

std::vector<KeyEvent> InputDecoder::feed(std::string_view bytes, Clock::time_point now) {
    std::vector<KeyEvent> out;
    // An Esc that waited longer than the timeout was typed alone: what comes after it is not part of its sequence.
    if (const auto due = deadline(); due && now >= *due) {
        out.push_back(key_event(Key::escape));
        m_pending.erase(0, 1);
        decode_pending(out);
    }
    const bool waiting = !m_pending.empty();
    m_pending.append(bytes);
    if (decode_pending(out) || !waiting) {
        m_pending_since = now;  // what is left (if anything) began to wait now
    }
    return out;
}

std::optional<InputDecoder::Clock::time_point> InputDecoder::deadline() const {
    if (m_in_paste || m_pending.empty() || m_pending[0] != '\x1b') {
        return std::nullopt;
    }
    return m_pending_since + m_escape_timeout;
}

bool InputDecoder::decode_pending(std::vector<KeyEvent>& out) {
    bool used_any = false;
    for (;;) {
        if (m_in_paste) {
            const std::size_t before = m_pending.size();
            feed_paste(out);
            used_any = used_any || m_pending.size() != before;
            if (m_in_paste) {
                return used_any;
            }
            continue;
        }
        if (m_pending.empty()) {
            return used_any;
        }
        const std::size_t used = decode_one(out);
        if (used == 0) {
            return used_any;  // incomplete: wait for the rest
        }
        used_any = true;
        m_pending.erase(0, used);
    }
}

void InputDecoder::feed_paste(std::vector<KeyEvent>& out) {
    const auto end = m_pending.find(paste_end);
    // Without the end marker, keep back what could be its beginning.
    const std::size_t take = end != std::string::npos               ? end
                             : m_pending.size() >= paste_end.size() ? m_pending.size() - (paste_end.size() - 1)
                                                                    : 0;
    m_paste_size += take;
    if (m_paste_size <= m_max_paste) {
        m_paste.append(m_pending, 0, take);
    } else {
        m_paste.clear();
    }
    m_pending.erase(0, take);
    if (end == std::string::npos) {
        return;
    }
    m_pending.erase(0, paste_end.size());
    m_in_paste = false;
    KeyEvent k = key_event(Key::paste);
    k.size = m_paste_size;
    k.too_large = m_paste_size > m_max_paste;
    if (!k.too_large) {
        // Terminals send a pasted line end as CR; keep lines as '\n'.
        for (std::size_t i = 0; i < m_paste.size(); ++i) {
            if (m_paste[i] == '\r') {
                k.text.push_back('\n');
                if (i + 1 < m_paste.size() && m_paste[i + 1] == '\n') {
                    ++i;
                }
            } else {
                k.text.push_back(m_paste[i]);
            }
        }
        while (!k.text.empty() && k.text.back() == '\n') {
            k.text.pop_back();
        }
    }
    m_paste.clear();
    m_paste_size = 0;
    out.push_back(std::move(k));
}

std::size_t InputDecoder::decode_one(std::vector<KeyEvent>& out) {
    const std::string& p = m_pending;
    const auto c = static_cast<unsigned char>(p[0]);
    auto key = [&out](Key k) { out.push_back(key_event(k)); };
    if (c == 0x1b) {
        if (p.size() < 2) {
            return 0;
        }
        if (p[1] == '[') {
            std::size_t i = 2;
            while (i < p.size() && static_cast<unsigned char>(p[i]) >= 0x20 &&
                   static_cast<unsigned char>(p[i]) < 0x40) {
                ++i;
            }
            if (i >= p.size()) {
                return 0;
            }
            const std::string params = p.substr(2, i - 2);
            if (const auto k = cursor_key(p[i])) {
                key(*k);
            }
            switch (p[i]) {
                case '~':
                    if (params == "200") {
                        m_in_paste = true;
                    } else if (params == "1" || params == "7") {
                        key(Key::home);
                    } else if (params == "4" || params == "8") {
                        key(Key::end);
                    } else if (params == "3") {
                        key(Key::del);
                    } else if (params == "5") {
                        key(Key::page_up);
                    } else if (params == "6") {
                        key(Key::page_down);
                    }
                    break;
                default:
                    break;  // a key we do not use
            }
            return i + 1;
        }
        if (p[1] == 'O') {
            if (p.size() < 3) {
                return 0;
            }
            if (const auto k = cursor_key(p[2])) {
                key(*k);
            }
            return 3;
        }
        if (p[1] == '\x1b') {
            key(Key::escape);  // Esc Esc: the first one is alone; the second may start a sequence
            return 1;
        }
        if (p[1] >= '1' && p[1] <= '9') {
            KeyEvent k = key_event(Key::alt_digit);
            k.digit = p[1] - '0';
            out.push_back(std::move(k));
        }
        return 2;  // Alt-something else: ignored
    }
    if (c < 0x20 || c == 0x7f) {
        switch (c) {
            case 0x01:
                key(Key::home);
                break;
            case 0x02:
                key(Key::left);
                break;
            case 0x03:
                key(Key::interrupt);
                break;
            case 0x04:
                key(Key::del);
                break;
            case 0x05:
                key(Key::end);
                break;
            case 0x06:
                key(Key::right);
                break;
            case 0x09:
                key(Key::tab);
                break;
            case 0x08:
            case 0x7f:
                key(Key::backspace);
                break;
            case 0x0a:
            case 0x0d:
                key(Key::enter);
                break;
            case 0x0b:
                key(Key::kill_end);
                break;
            case 0x0c:
                key(Key::redraw);
                break;
            case 0x0e:
                key(Key::next_conversation);
                break;
            case 0x10:
                key(Key::prev_conversation);
                break;
            case 0x15:
                key(Key::kill_start);
                break;
            case 0x17:
                key(Key::kill_word);
                break;
            default:
                break;
        }
        return 1;
    }
    // Printable text up to the next control byte; a UTF-8 sequence cut at the end waits for its rest.
    std::size_t i = 0;
    while (i < p.size() && static_cast<unsigned char>(p[i]) >= 0x20 && static_cast<unsigned char>(p[i]) != 0x7f) {
        ++i;
    }
    std::size_t end = i;
    if (end == p.size()) {
        std::size_t start = end;
        while (start > 0 && is_continuation(p[start - 1]) && end - start < 3) {
            --start;
        }
        if (start > 0 && (static_cast<unsigned char>(p[start - 1]) & 0xc0U) == 0xc0U) {
            const auto lead = static_cast<unsigned char>(p[start - 1]);
            const std::size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
            if (end - (start - 1) < need) {
                end = start - 1;
            }
        }
        if (end == 0) {
            return 0;
        }
    }
    KeyEvent k = key_event(Key::text);
    k.text = p.substr(0, end);
    out.push_back(std::move(k));
    return end;
}

// ---------------------------------------------------------------- LineEditor

std::optional<std::string> LineEditor::apply(const KeyEvent& k) {
    switch (k.key) {
        case Key::text:
            m_text.insert(m_cursor, k.text);
            m_cursor += k.text.size();
            break;
        case Key::enter: {
            std::string line = std::move(m_text);
            m_text.clear();
            m_cursor = 0;
            if (!line.empty() && (m_history.empty() || m_history.back() != line)) {
                m_history.push_back(line);
            }
            m_history_pos = m_history.size();
            m_draft.clear();
            return line;
        }
        case Key::left:
            m_cursor = prev_boundary(m_text, m_cursor);
            break;
        case Key::right:
            m_cursor = next_boundary(m_text, m_cursor);
            break;
        case Key::home:
            m_cursor = 0;
            break;
        case Key::end:
            m_cursor = m_text.size();
            break;
        case Key::backspace:
            if (m_cursor > 0) {
                const std::size_t from = prev_boundary(m_text, m_cursor);
                m_text.erase(from, m_cursor - from);
                m_cursor = from;
            }
            break;
        case Key::del:
            m_text.erase(m_cursor, next_boundary(m_text, m_cursor) - m_cursor);
            break;
        case Key::kill_end:
            m_text.erase(m_cursor);
            break;
        case Key::kill_start:
            m_text.erase(0, m_cursor);
            m_cursor = 0;
            break;
        case Key::kill_word: {
            std::size_t from = m_cursor;
            while (from > 0 && m_text[from - 1] == ' ') {
                --from;
            }
            while (from > 0 && m_text[from - 1] != ' ') {
                --from;
            }
            m_text.erase(from, m_cursor - from);
            m_cursor = from;
            break;
        }
        case Key::up:
            history_move(-1);
            break;
        case Key::down:
            history_move(1);
            break;
        default:
            break;
    }
    return std::nullopt;
}

void LineEditor::set(std::string text, std::size_t cursor) {
    m_text = std::move(text);
    m_cursor = std::min(cursor, m_text.size());
    while (m_cursor > 0 && m_cursor < m_text.size() && is_continuation(m_text[m_cursor])) {
        --m_cursor;
    }
}

void LineEditor::history_move(int step) {
    if (step < 0 && m_history_pos == 0) {
        return;
    }
    if (step > 0 && m_history_pos >= m_history.size()) {
        return;
    }
    if (m_history_pos == m_history.size()) {
        m_draft = m_text;
    }
    m_history_pos = step < 0 ? m_history_pos - 1 : m_history_pos + 1;
    m_text = m_history_pos == m_history.size() ? m_draft : m_history[m_history_pos];
    m_cursor = m_text.size();
}

// ---------------------------------------------------------------- completion

namespace {

char lower(char c) {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

bool starts_with_nocase(std::string_view s, std::string_view prefix) {
    if (prefix.size() > s.size()) {
        return false;
    }
    for (std::size_t i = 0; i < prefix.size(); ++i) {
        if (lower(s[i]) != lower(prefix[i])) {
            return false;
        }
    }
    return true;
}

}  // namespace

std::optional<Completion> complete(std::string_view text, std::size_t cursor, const std::vector<std::string>& names) {
    cursor = std::min(cursor, text.size());
    std::size_t start = cursor;
    while (start > 0 && text[start - 1] != ' ') {
        --start;
    }
    const std::string_view word = text.substr(start, cursor - start);
    const bool command_line = !text.empty() && text[0] == '/';
    std::vector<std::string> pool;
    std::string_view after_one = " ";
    if (command_line && start == 0) {
        for (const auto& c : chat_commands) {
            pool.emplace_back(c.name);
        }
    } else if (command_line) {
        // Only the first argument, and only of a command that takes a user name.
        const std::string_view cmd = text.substr(0, text.find(' '));
        const auto first_arg = text.find_first_not_of(' ', cmd.size());
        const bool takes_name = std::any_of(std::begin(chat_commands), std::end(chat_commands),
                                            [&](const ChatCommand& c) { return c.takes_name && c.name == cmd; });
        if (!takes_name || start == 0 || (first_arg != std::string_view::npos && first_arg < start)) {
            return std::nullopt;
        }
        pool = names;
    } else if (start == 0) {
        pool = names;
        after_one = ": ";
    } else {
        return std::nullopt;
    }
    std::vector<std::string> matches;
    for (auto& p : pool) {
        if (!p.empty() && starts_with_nocase(p, word)) {
            matches.push_back(std::move(p));
        }
    }
    std::sort(matches.begin(), matches.end());
    matches.erase(std::unique(matches.begin(), matches.end()), matches.end());
    if (matches.empty()) {
        return std::nullopt;
    }
    Completion c;
    std::string insert;
    if (matches.size() == 1) {
        insert = matches[0];
        if (cursor == text.size()) {
            insert += after_one;
        }
    } else {
        std::size_t common = matches[0].size();
        for (const auto& m : matches) {
            std::size_t i = 0;
            while (i < common && i < m.size() && lower(m[i]) == lower(matches[0][i])) {
                ++i;
            }
            common = i;
        }
        while (common > 0 && common < matches[0].size() && is_continuation(matches[0][common])) {
            --common;  // never half a character
        }
        // Keep what was typed when the candidates add nothing to it.
        insert = common > word.size() ? matches[0].substr(0, common) : std::string(word);
        c.candidates = std::move(matches);
    }
    c.text = std::string(text.substr(0, start)) + insert + std::string(text.substr(cursor));
    c.cursor = start + insert.size();
    return c;
}

std::optional<Completion> TabCompleter::tab(std::string_view text, std::size_t cursor,
                                            const std::vector<std::string>& names) {
    if (!m_candidates.empty() && text == m_text && cursor == m_cursor) {
        Completion c;
        c.text = m_before + m_candidates[m_next] + m_after;
        c.cursor = m_before.size() + m_candidates[m_next].size();
        c.candidates = m_candidates;
        m_next = (m_next + 1) % m_candidates.size();
        m_text = c.text;
        m_cursor = c.cursor;
        return c;
    }
    m_candidates.clear();
    auto c = complete(text, cursor, names);
    if (c && !c->candidates.empty()) {
        std::size_t start = std::min(cursor, text.size());
        while (start > 0 && text[start - 1] != ' ') {
            --start;
        }
        m_before = std::string(text.substr(0, start));
        m_after = c->text.substr(c->cursor);
        const std::string word = c->text.substr(start, c->cursor - start);
        m_candidates = c->candidates;
        // Start with the first candidate that changes the line.
        m_next = m_candidates.front() == word && m_candidates.size() > 1 ? 1 : 0;
        m_text = c->text;
        m_cursor = c->cursor;
    }
    return c;
}

// ---------------------------------------------------------------- glyphs and wrapping

std::vector<Glyph> glyphs(std::string_view text, int column) {
    std::vector<Glyph> out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        std::size_t len = 1;
        const auto cp = decode_utf8(text, i, len);
        if (cp && *cp == '\n') {
            out.push_back(Glyph{"\n", 0});
            column = 0;
        } else if (cp && *cp == '\t') {
            const int spaces = 8 - column % 8;
            for (int s = 0; s < spaces; ++s) {
                out.push_back(Glyph{" ", 1});
            }
            column += spaces;
        } else if (cp && (*cp < 0x20 || *cp == 0x7f)) {
            out.push_back(Glyph{std::string{'^', static_cast<char>(*cp == 0x7f ? '?' : *cp + 0x40)}, 2});
            column += 2;
        } else {
            int width = cp && *cp >= 0xa0 ? ::wcwidth(static_cast<wchar_t>(*cp)) : cp && *cp < 0x80 ? 1 : -1;
            if (width < 0) {
                out.push_back(Glyph{"\xef\xbf\xbd", 1});  // U+FFFD for invalid UTF-8, C1 and unprintable characters
                column += 1;
            } else {
                out.push_back(Glyph{std::string(text.substr(i, len)), width});
                column += width;
            }
        }
        i += len;
    }
    return out;
}

int display_width(std::string_view text) {
    int width = 0;
    for (const auto& g : glyphs(text)) {
        width += g.width;
    }
    return width;
}

std::vector<std::string> wrap(std::string_view text, int width) {
    width = std::max(width, 2);  // room for one double-width character
    std::vector<std::string> lines;
    std::vector<Glyph> line;
    int used = 0;
    auto flush = [&](std::size_t count) {
        std::string s;
        for (std::size_t k = 0; k < count; ++k) {
            s += line[k].text;
        }
        lines.push_back(std::move(s));
        line.erase(line.begin(), line.begin() + static_cast<std::ptrdiff_t>(count));
        used = 0;
        for (const auto& g : line) {
            used += g.width;
        }
    };
    for (auto& g : glyphs(text)) {
        if (g.text == "\n") {
            flush(line.size());
            continue;
        }
        if (used + g.width > width) {
            // Break after the last space on the line, or else right here.
            std::size_t cut = line.size();
            for (std::size_t k = line.size(); k > 1; --k) {
                if (line[k - 1].text == " ") {
                    cut = k;
                    break;
                }
            }
            flush(cut);
            while (!lines.back().empty() && lines.back().back() == ' ') {
                lines.back().pop_back();  // the space the line broke at
            }
            while (!line.empty() && line.front().text == " ") {
                used -= line.front().width;
                line.erase(line.begin());
            }
        }
        used += g.width;
        line.push_back(std::move(g));
    }
    flush(line.size());
    return lines;
}

// ---------------------------------------------------------------- ChatModel

bool ChatModel::add_message(const std::string& peer, const std::string& sender, const std::string& text,
                            std::int64_t time_ms, std::optional<std::uint64_t> inbox_index, bool unread,
                            std::int64_t server_time_ms) {
    add_conversation(peer);
    m_entries.push_back(ChatEntry{peer, sender, text, time_ms, server_time_ms});
    if (m_entries.size() > max_entries) {
        m_entries.erase(m_entries.begin(), m_entries.begin() + static_cast<std::ptrdiff_t>(max_entries / 10));
    }
    if (peer == m_current || !unread || !inbox_index) {
        return false;
    }
    auto& u = m_unread[peer];
    ++u.count;
    if (!u.first_index || *inbox_index < *u.first_index) {
        u.first_index = inbox_index;
    }
    return true;
}

void ChatModel::add_status(const std::string& text, std::int64_t time_ms, const std::string& peer) {
    add_conversation(peer);
    m_entries.push_back(ChatEntry{peer, {}, text, time_ms});
}

void ChatModel::add_conversation(const std::string& peer) {
    if (!peer.empty() && std::find(m_order.begin(), m_order.end(), peer) == m_order.end()) {
        m_order.push_back(peer);
    }
}

void ChatModel::open(const std::string& peer) {
    add_conversation(peer);
    if (m_current != peer) {
        scroll = 0;
    }
    m_current = peer;
    m_unread.erase(peer);
}

std::optional<std::string> ChatModel::neighbour(int step) const {
    if (m_order.empty()) {
        return std::nullopt;
    }
    const auto it = std::find(m_order.begin(), m_order.end(), m_current);
    const auto n = static_cast<long>(m_order.size());
    const long here = it == m_order.end() ? (step > 0 ? -1 : 0) : it - m_order.begin();
    return m_order[static_cast<std::size_t>(((here + step) % n + n) % n)];
}

std::size_t ChatModel::unread(const std::string& peer) const {
    const auto it = m_unread.find(peer);
    return it == m_unread.end() ? 0 : it->second.count;
}

void ChatModel::set_presence(const std::string& peer, bool online) {
    add_conversation(peer);
    m_presence[peer] = online;
}

std::optional<bool> ChatModel::presence(const std::string& peer) const {
    const auto it = m_presence.find(peer);
    if (it == m_presence.end()) {
        return std::nullopt;
    }
    return it->second;
}

std::string ChatModel::list_label(const std::string& peer) const {
    const auto n = unread(peer);
    return (peer == m_current ? "> " : "  ") + peer + (presence(peer).value_or(false) ? " *" : "") +
           (n > 0 ? " (" + std::to_string(n) + ")" : std::string());
}

std::uint64_t ChatModel::read_up_to(std::uint64_t next) const {
    std::uint64_t up_to = next;
    for (const auto& [peer, u] : m_unread) {
        if (u.first_index && *u.first_index < up_to) {
            up_to = *u.first_index;
        }
    }
    return up_to;
}

std::vector<const ChatEntry*> ChatModel::visible() const {
    std::vector<const ChatEntry*> out;
    for (const auto& e : m_entries) {
        if (e.conversation.empty() || e.conversation == m_current) {
            out.push_back(&e);
        }
    }
    return out;
}

namespace {

std::tm local_time(std::int64_t time_ms) {
    const auto t = static_cast<std::time_t>(time_ms / 1000);
    std::tm tm{};
    ::localtime_r(&t, &tm);
    return tm;
}

}  // namespace

std::int64_t ms_or_unknown(std::chrono::sys_time<std::chrono::milliseconds> t) {
    return t == std::chrono::sys_time<std::chrono::milliseconds>{}
               ? -1
               : static_cast<std::int64_t>(t.time_since_epoch().count());
}

std::string clock_label(std::int64_t time_ms, std::int64_t now_ms) {
    if (time_ms < 0) {
        return "     ";
    }
    const std::tm tm = local_time(time_ms);
    const std::tm now = local_time(now_ms);
    char buf[64];
    if (tm.tm_year == now.tm_year && tm.tm_yday == now.tm_yday) {
        std::snprintf(buf, sizeof buf, "%02d:%02d", tm.tm_hour, tm.tm_min);
    } else {
        std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour, tm.tm_min);
    }
    return buf;
}

std::string message_time_label(std::int64_t sent_ms, std::int64_t server_ms, std::int64_t now_ms) {
    if (sent_ms < 0) {
        return clock_label(server_ms, now_ms);
    }
    std::string out = clock_label(sent_ms, now_ms);
    if (server_ms >= 0 && (sent_ms > server_ms ? sent_ms - server_ms : server_ms - sent_ms) > time_skew_shown_ms) {
        out += " (server " + clock_label(server_ms, now_ms) + ")";
    }
    return out;
}

}  // namespace sim::tools
