// Unit tests of the pure parts of `sim chat`'s full-screen mode (tools/chat_screen.*): key decoding, bracketed paste,
// the line editor, wrapping with wide characters, and the conversations model (unread counts, mark-read cursor).
#define DOCTEST_CONFIG_IMPLEMENT
#include "chat_screen.h"

#include <doctest/doctest.h>

#include <chrono>
#include <clocale>
#include <cstdlib>
#include <ctime>

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

TEST_CASE("keys: a lone Esc is Esc after the timeout, not Alt with the next key") {
    using namespace std::chrono_literals;
    const InputDecoder::Clock::time_point t0{10s};
    InputDecoder d(100, 50ms);
    CHECK(d.feed("\x1b", t0).empty());
    REQUIRE(d.deadline());
    CHECK(*d.deadline() == t0 + 50ms);
    CHECK(d.feed("", t0 + 49ms).empty());  // not yet: the rest of a sequence may still come
    auto k = d.feed("", t0 + 50ms);
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::escape);
    CHECK_FALSE(d.deadline());
    k = d.feed("1", t0 + 300ms);  // typed later: the digit, not Alt-1
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::text);
    CHECK(k[0].text == "1");

    // No feed at the deadline (a busy caller): a late key still does not join the Esc.
    CHECK(d.feed("\x1b", t0 + 1s).empty());
    k = d.feed("x", t0 + 2s);
    REQUIRE(k.size() == 2);
    CHECK(k[0].key == Key::escape);
    CHECK(k[1].text == "x");

    // Alt-digit and cursor keys arrive within the timeout, even split across reads.
    k = d.feed("\0333", t0 + 3s);  // ESC, then the digit 3
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::alt_digit);
    CHECK(k[0].digit == 3);
    CHECK(d.feed("\x1b[", t0 + 4s).empty());
    k = d.feed("A", t0 + 4s + 10ms);
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::up);
    CHECK(d.feed("\x1b", t0 + 5s).empty());
    k = d.feed("2", t0 + 5s + 49ms);
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::alt_digit);
    // An Esc cut off from an incomplete sequence: Esc, then the rest as typed text.
    CHECK(d.feed("\x1b[", t0 + 6s).empty());
    k = d.feed("", t0 + 7s);
    REQUIRE(k.size() == 2);
    CHECK(k[0].key == Key::escape);
    CHECK(k[1].text == "[");
    // Esc Esc: the first one is alone.
    k = d.feed("\x1b\x1b[B", t0 + 8s);
    REQUIRE(k.size() == 2);
    CHECK(k[0].key == Key::escape);
    CHECK(k[1].key == Key::down);
    // Inside a paste an Esc is text and never times out.
    CHECK(d.feed("\x1b[200~a\x1b", t0 + 9s).empty());
    CHECK_FALSE(d.deadline());
    k = d.feed("b\x1b[201~", t0 + 10s);
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::paste);
    CHECK(k[0].text == "a\033b");
}

TEST_CASE("completion: command names") {
    using sim::tools::complete;
    const std::vector<std::string> names{"bob", "bobby", "carol"};
    auto c = complete("/op", 3, names);
    REQUIRE(c);
    CHECK(c->text == "/open ");
    CHECK(c->cursor == 6);
    CHECK(c->candidates.empty());
    c = complete("/s", 2, names);  // /safety, /search: nothing in common beyond "/s"
    REQUIRE(c);
    CHECK(c->text == "/s");
    CHECK(c->candidates == std::vector<std::string>{"/safety", "/search"});
    c = complete("/h", 2, names);
    REQUIRE(c);
    CHECK(c->candidates == std::vector<std::string>{"/help", "/history"});
    CHECK(c->text == "/h");
    c = complete("/hi", 3, names);
    REQUIRE(c);
    CHECK(c->text == "/history ");
    c = complete("/HIS", 4, names);  // case does not matter
    REQUIRE(c);
    CHECK(c->text == "/history ");
    CHECK_FALSE(complete("/xyz", 4, names));
    // The cursor inside the first word: only what is before it is completed, the rest stays.
    c = complete("/ve bob", 3, names);
    REQUIRE(c);
    CHECK(c->text == "/verify bob");
    CHECK(c->cursor == 7);
}

TEST_CASE("completion: user names in arguments and at the start of a message") {
    using sim::tools::complete;
    const std::vector<std::string> names{"carol", "bobby", "bob", "bob"};
    auto c = complete("/open ca", 8, names);
    REQUIRE(c);
    CHECK(c->text == "/open carol ");
    CHECK(c->cursor == 12);
    c = complete("/to b", 5, names);  // bob and bobby: "bob" is common, both listed
    REQUIRE(c);
    CHECK(c->text == "/to bob");
    CHECK(c->cursor == 7);
    CHECK(c->candidates == std::vector<std::string>{"bob", "bobby"});
    c = complete("/leave ", 7, names);  // nothing typed yet: the common prefix of all, and the list
    REQUIRE(c);
    CHECK(c->text == "/leave ");
    CHECK(c->candidates.size() == 3);
    c = complete("Car", 3, names);  // the start of a message
    REQUIRE(c);
    CHECK(c->text == "carol: ");
    c = complete("ca is here", 2, names);
    REQUIRE(c);
    CHECK(c->text == "carol is here");
    CHECK(c->cursor == 5);
    CHECK_FALSE(complete("hello ca", 8, names));       // not the first word of a message
    CHECK_FALSE(complete("/who ca", 7, names));        // /who takes no name
    CHECK_FALSE(complete("/open bob ca", 12, names));  // only the first argument
    CHECK_FALSE(complete("/open zed", 9, names));      // no such name
    CHECK_FALSE(complete("/search ca", 10, names));    // a search text is not a name
}

TEST_CASE("completion: repeated Tab cycles through the candidates") {
    sim::tools::TabCompleter t;
    const std::vector<std::string> names{"bob", "bobby", "bert"};
    auto c = t.tab("/to b", 5, names);  // common prefix "b": nothing added, all listed
    REQUIRE(c);
    CHECK(c->text == "/to b");
    CHECK(c->candidates == std::vector<std::string>{"bert", "bob", "bobby"});
    c = t.tab(c->text, c->cursor, names);
    REQUIRE(c);
    CHECK(c->text == "/to bert");
    c = t.tab(c->text, c->cursor, names);
    REQUIRE(c);
    CHECK(c->text == "/to bob");
    CHECK(c->cursor == 7);
    c = t.tab(c->text, c->cursor, names);
    REQUIRE(c);
    CHECK(c->text == "/to bobby");
    c = t.tab(c->text, c->cursor, names);
    REQUIRE(c);
    CHECK(c->text == "/to bert");  // round again
    // The line changed in between (or another key reset it): a fresh completion.
    c = t.tab("/to bo", 6, names);
    REQUIRE(c);
    CHECK(c->text == "/to bob");
    CHECK(c->candidates == std::vector<std::string>{"bob", "bobby"});
    c = t.tab(c->text, c->cursor, names);  // "bob" is what the line has: the next one first
    REQUIRE(c);
    CHECK(c->text == "/to bobby");
    t.reset();
    c = t.tab("/to bobby", 9, names);
    REQUIRE(c);
    CHECK(c->text == "/to bobby ");
    CHECK(c->candidates.empty());
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

TEST_CASE("editor: set replaces the line; Tab is a key of its own") {
    LineEditor e;
    e.set("/open bob ", 42);
    CHECK(e.text() == "/open bob ");
    CHECK(e.cursor() == 10);
    InputDecoder d(100);
    const auto k = d.feed("\t");
    REQUIRE(k.size() == 1);
    CHECK(k[0].key == Key::tab);
    CHECK_FALSE(e.apply(k[0]));
    CHECK(e.text() == "/open bob ");  // the editor leaves Tab to the completion
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

TEST_CASE("time labels: HH:MM today, the date otherwise, the server's time when it is far from the sender's") {
    ::setenv("TZ", "UTC", 1);
    ::tzset();
    using sim::tools::clock_label;
    using sim::tools::message_time_label;
    const std::int64_t now = 1'800'000'000'000;  // 2027-01-15 08:00:00 UTC
    CHECK(clock_label(now, now) == "08:00");
    CHECK(clock_label(now - 60'000, now) == "07:59");
    CHECK(clock_label(now - 9 * 3'600'000LL, now) == "2027-01-14 23:00");  // yesterday: with the date
    CHECK(clock_label(-1, now) == "     ");
    // The sender's time; the server's too only when they are more than five minutes apart.
    CHECK(message_time_label(now - 60'000, now, now) == "07:59");
    CHECK(message_time_label(now - 300'000, now, now) == "07:55");
    CHECK(message_time_label(now - 300'001, now, now) == "07:54 (server 08:00)");
    CHECK(message_time_label(now + 3'600'000, now, now) == "09:00 (server 08:00)");  // a sender clock ahead
    CHECK(message_time_label(-1, now, now) == "08:00");                              // sender's time unknown
    CHECK(message_time_label(now, -1, now) == "08:00");
    CHECK(message_time_label(-1, -1, now) == "     ");
    // The model keeps both times of a received message.
    ChatModel m;
    m.open("alice");
    m.add_message("alice", "alice", "hi", now - 600'000, 0, true, now);
    REQUIRE(m.visible().size() == 1);
    CHECK(m.visible()[0]->time_ms == now - 600'000);
    CHECK(m.visible()[0]->server_time_ms == now);
}

TEST_CASE("model: presence marks online contacts in the conversation list") {
    ChatModel m;
    m.open("bob");
    CHECK(m.list_label("bob") == "> bob");
    CHECK_FALSE(m.presence("bob").has_value());
    m.set_presence("bob", true);
    m.set_presence("carol", false);  // a contact the server told about: in the list
    CHECK(m.conversations() == std::vector<std::string>{"bob", "carol"});
    CHECK(m.presence("bob") == true);
    CHECK(m.presence("carol") == false);
    CHECK(m.list_label("bob") == "> bob *");
    CHECK(m.list_label("carol") == "  carol");
    CHECK(m.add_message("carol", "carol", "hi", 0, 0));
    m.set_presence("carol", true);
    CHECK(m.list_label("carol") == "  carol * (1)");
    m.set_presence("bob", false);
    CHECK(m.list_label("bob") == "> bob");
}
