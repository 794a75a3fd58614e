// Unit tests of the pure parts of `sim chat`'s full-screen mode (tools/chat_screen.*): key decoding, bracketed paste,
// the line editor, wrapping with wide characters, and the conversations model (unread counts, mark-read cursor).
#define DOCTEST_CONFIG_IMPLEMENT
#include "chat_screen.h"

#include <doctest/doctest.h>

#include <clocale>

using sim::tools::ChatModel;
using sim::tools::InputDecoder;
using sim::tools::Key;
using sim::tools::KeyEvent;
using sim::tools::LineEditor;

namespace {

/// Feeds `bytes` to a fresh editor (through a decoder) and returns what Enter produced, or the text left.
struct Typed {
    std::vector<std::string> lines;
    std::string text;
    std::size_t cursor = 0;
};

Typed type(std::string_view bytes) {
    InputDecoder d(1000);
    LineEditor e;
    Typed t;
    for (const auto& k : d.feed(bytes)) {
        if (auto line = e.apply(k)) {
            t.lines.push_back(*line);
        }
    }
    t.text = e.text();
    t.cursor = e.cursor();
    return t;
}

}  // namespace

TEST_CASE("keys: text, control keys and escape sequences") {
    InputDecoder d(100);
    auto keys = d.feed(
        "ab\x01\x05\x0b\x15\x17\x0e\x10\x7f\x1b[A\x1b[B\x1b[C\x1b[D\x1b[H\x1b[F\x1b[3~\x1b[5~\x1b[6~\x1b"
        "2\r");
    std::vector<Key> want{Key::text,
                          Key::home,
                          Key::end,
                          Key::kill_end,
                          Key::kill_start,
                          Key::kill_word,
                          Key::next_conversation,
                          Key::prev_conversation,
                          Key::backspace,
                          Key::up,
                          Key::down,
                          Key::right,
                          Key::left,
                          Key::home,
                          Key::end,
                          Key::del,
                          Key::page_up,
                          Key::page_down,
                          Key::alt_digit,
                          Key::enter};
    REQUIRE(keys.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
        CHECK(keys[i].key == want[i]);
    }
    CHECK(keys[0].text == "ab");
    CHECK(keys[18].digit == 2);
}

TEST_CASE("keys: a sequence or a UTF-8 character split across reads waits for its rest") {
    InputDecoder d(100);
    CHECK(d.feed("\x1b[").empty());
    auto k = d.feed("D");
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::left);
    CHECK(d.feed("\xc3").empty());
    k = d.feed("\xa9x");
    REQUIRE(k.size() == 1);
    CHECK(k[0].text == "\xc3\xa9x");
}

TEST_CASE("paste: one event whatever it holds, CR as newline, split markers") {
    InputDecoder d(100);
    auto k = d.feed("x\x1b[200~/quit\rsecond\r\nthird\x1b[20");
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::text);
    k = d.feed("1~\r");
    REQUIRE(k.size() == 2);
    CHECK(k[0].key == Key::paste);
    CHECK(k[0].text == "/quit\nsecond\nthird");
    CHECK_FALSE(k[0].too_large);
    CHECK(k[1].key == Key::enter);
}

TEST_CASE("paste: control keys inside are text, not keys") {
    InputDecoder d(100);
    const auto k = d.feed("\x1b[200~a\x03\x1b[Ab\x1b[201~");
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::paste);
    CHECK(k[0].text == "a\x03\x1b[Ab");
}

TEST_CASE("paste: longer than the limit is refused whole, not cut") {
    InputDecoder d(10);
    auto k = d.feed("\x1b[200~0123456789");
    CHECK(k.empty());
    k = d.feed("ABCDEF\x1b[201~z");
    REQUIRE(k.size() == 2);
    CHECK(k[0].key == Key::paste);
    CHECK(k[0].too_large);
    CHECK(k[0].text.empty());
    CHECK(k[0].size == 16);
    CHECK(k[1].text == "z");
}

TEST_CASE("editor: insertion, cursor moves, deletion over UTF-8") {
    auto t = type("h\xc3\xa9llo\x1b[D\x1b[D\x1b[D\x7f");
    CHECK(t.text == "hllo");
    CHECK(t.cursor == 1);
    t = type("abc\x01X\x05Y");
    CHECK(t.text == "XabcY");
    t = type("abc\x01\x1b[3~");
    CHECK(t.text == "bc");
    t = type("hello world\x1b[D\x1b[D\x0b");
    CHECK(t.text == "hello wor");
    t = type("hello world\x1b[D\x1b[D\x15");
    CHECK(t.text == "ld");
    CHECK(t.cursor == 0);
    t = type("one two  \x17");
    CHECK(t.text == "one ");
}

TEST_CASE("editor: Enter returns the line; history with Up and Down") {
    auto t = type("first\rsecond\r\x1b[A\x1b[A\r\x1b[Bdraft\x1b[A\x1b[B");
    REQUIRE(t.lines.size() == 3);
    CHECK(t.lines[0] == "first");
    CHECK(t.lines[1] == "second");
    CHECK(t.lines[2] == "first");
    CHECK(t.text == "draft");
}

TEST_CASE("display: control characters are shown safely, newlines break lines") {
    CHECK(sim::tools::display_width("abc") == 3);
    CHECK(sim::tools::display_width("\xe6\x97\xa5\xe6\x9c\xac") == 4);  // two double-width characters
    CHECK(sim::tools::display_width("a\x1b[2J") == 6);                  // ^[ [ 2 J
    const auto g = sim::tools::glyphs("\x1b\xc2\x9b\xff\t");
    REQUIRE(g.size() == 7);  // ^[, U+FFFD for the C1 CSI, U+FFFD for the invalid byte, the tab to column 8
    CHECK(g[0].text == "^[");
    CHECK(g[1].text == "\xef\xbf\xbd");
    CHECK(g[2].text == "\xef\xbf\xbd");
    CHECK(g[3].text == " ");
    CHECK(g[6].text == " ");
    CHECK(sim::tools::wrap("one\ntwo", 20) == std::vector<std::string>{"one", "two"});
}

TEST_CASE("wrap: at spaces, inside long words, wide characters never split") {
    using sim::tools::wrap;
    CHECK(wrap("hello big world", 10) == std::vector<std::string>{"hello big", "world"});
    CHECK(wrap("abcdefghij", 4) == std::vector<std::string>{"abcd", "efgh", "ij"});
    // Five double-width characters in 5 columns: two per line, the third would straddle the edge.
    const std::string wide = "\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5\xe6\x97\xa5";
    const auto lines = wrap(wide, 5);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] == "\xe6\x97\xa5\xe6\x97\xa5");
    for (const auto& l : lines) {
        CHECK(sim::tools::display_width(l) <= 5);
    }
    CHECK(wrap("", 10) == std::vector<std::string>{""});
}

TEST_CASE("model: unread counts, switching, mark-read cursor") {
    ChatModel m;
    m.open("bob");
    CHECK_FALSE(m.add_message("bob", "bob", "hi", 0, 0));  // the current conversation: read
    CHECK(m.add_message("carol", "carol", "psst", 0, 1));  // background: unread, bell
    CHECK(m.add_message("carol", "carol", "again", 0, 3));
    CHECK_FALSE(m.add_message("bob", "bob", "there", 0, 2));
    CHECK(m.unread("carol") == 2);
    CHECK(m.unread("bob") == 0);
    CHECK(m.read_up_to(4) == 1);  // carol's first unread message holds the cursor back
    CHECK(m.conversations() == std::vector<std::string>{"bob", "carol"});
    CHECK(m.neighbour(1) == "carol");
    CHECK(m.neighbour(-1) == "carol");
    m.add_status("* status", 0);
    m.add_status("* about carol", 0, "carol");
    CHECK(m.visible().size() == 3);  // bob's two and the status line
    m.open("carol");
    CHECK(m.unread("carol") == 0);
    CHECK(m.read_up_to(4) == 4);
    CHECK(m.visible().size() == 4);  // carol's two, her status line and the general one
    CHECK(m.neighbour(1) == "bob");
    // History read from the inbox as already read does not count.
    CHECK_FALSE(m.add_message("dave", "dave", "old", -1, 0, false));
    CHECK(m.unread("dave") == 0);
}

int main(int argc, char** argv) {
    std::setlocale(LC_ALL, "C.UTF-8");  // wcwidth() follows LC_CTYPE
    doctest::Context context(argc, argv);
    return context.run();
}
