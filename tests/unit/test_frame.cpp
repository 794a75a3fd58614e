#include <sim/clock.h>
#include <sim/frame.h>
#include <sim/rng.h>
#include <sim/session.h>
#include <sim/suite.h>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

using sim::Bytes;
using sim::ByteView;
using sim::Errc;
using sim::Frame;
using sim::FrameDecoder;
using sim::FrameType;

namespace {

Bytes hex(std::string_view h) {
    Bytes out;
    REQUIRE(sim::from_hex(h, out));
    return out;
}

Bytes text(std::string_view s) { return sim::to_bytes(sim::as_bytes(s)); }

Frame make(FrameType type, std::uint32_t sid, std::string src, std::string dst, Bytes payload) {
    Frame f;
    f.type = type;
    f.sid = sid;
    f.source = std::move(src);
    f.destination = std::move(dst);
    f.payload = std::move(payload);
    return f;
}

// One frame of each type, shaped as the protocol uses them.
std::vector<Frame> sample_frames() {
    return {
        make(FrameType::handshake, 0, "", "", text("noise message 1")),
        make(FrameType::record, 0, "", "", Bytes(300, 0xA5)),
        make(FrameType::init, 0, "Alice", "Bob", text("password")),
        make(FrameType::ack_init, static_cast<std::uint32_t>(sim::AckStage::authenticated), "Server", "Alice", {}),
        make(FrameType::ack_init, static_cast<std::uint32_t>(sim::AckStage::destination_online), "Server", "Alice",
             {}),
        make(FrameType::ack_init, static_cast<std::uint32_t>(sim::AckStage::destination_offline), "Server", "Alice",
             {}),
        make(FrameType::keygen, sim::keygen_sid, "Server", "Alice", Bytes(24, 0x42)),
        make(FrameType::message, 9, "Alice", "Bob", Bytes(57, 0x17)),
        make(FrameType::probe, 0, "Alice", "Bob", {}),
        sim::make_error_frame(Errc::destination_offline, "Bob is offline"),
        make(FrameType::close, 0, "Alice", "", {}),
        make(FrameType::message, 0xFFFFFFFFU, std::string(sim::max_name_size, 'x'),
             "\xC3\xA9l\xC3\xA8ve", {}),  // UTF-8 names pass through untouched
    };
}

Bytes encode_ok(const Frame& f, std::size_t max = sim::default_max_frame_size) {
    auto r = sim::encode_frame(f, max);
    REQUIRE_MESSAGE(r.has_value(), r.error().message());
    return std::move(r).value();
}

Errc decode_code(ByteView b, std::size_t max = sim::default_max_frame_size) {
    return sim::decode_frame(b, max).code();
}

// A valid init frame whose exact bytes are written out by hand from docs/protocol.md section 2.
const char* const init_hex =
    "01" "10" "0000" "00000014"  // version 1, type init, flags 0, body length 20
    "00000000"                   // sid 0
    "05" "416c696365"            // source "Alice"
    "03" "426f62"                // destination "Bob"
    "00000002" "7077";           // payload "pw"

// Body offsets within init_hex, for targeted corruption.
constexpr std::size_t off_src_len = 12;
constexpr std::size_t off_dst_len = 18;
constexpr std::size_t off_payload_len = 22;

void put_u32(Bytes& b, std::size_t off, std::uint32_t v) {
    b[off] = static_cast<std::uint8_t>(v >> 24U);
    b[off + 1] = static_cast<std::uint8_t>(v >> 16U);
    b[off + 2] = static_cast<std::uint8_t>(v >> 8U);
    b[off + 3] = static_cast<std::uint8_t>(v);
}

// Drains the decoder; fails the test on error.
std::vector<Frame> drain(FrameDecoder& d) {
    std::vector<Frame> out;
    for (;;) {
        auto r = d.next();
        REQUIRE_MESSAGE(r.has_value(), r.error().message());
        if (!r->has_value()) {
            return out;
        }
        out.push_back(std::move(**r));
    }
}

Bytes concat_all(const std::vector<Frame>& frames) {
    Bytes stream;
    for (const auto& f : frames) {
        REQUIRE(sim::encode_frame_into(f, stream).has_value());
    }
    return stream;
}

}  // namespace

TEST_CASE("frame layout matches the documented byte diagram") {
    const Frame f = make(FrameType::init, 0, "Alice", "Bob", text("pw"));
    const Bytes expected = hex(init_hex);
    CHECK(sim::to_hex(encode_ok(f)) == sim::to_hex(expected));
    CHECK(sim::encoded_frame_size(f) == expected.size());

    auto d = sim::decode_frame(expected);
    REQUIRE(d.has_value());
    CHECK(*d == f);

    const Frame k = make(FrameType::keygen, sim::keygen_sid, "S", "A", Bytes{0xAB});
    CHECK(sim::to_hex(encode_ok(k)) == "01120000" "0000000d" "0000270f" "0153" "0141" "00000001" "ab");
}

TEST_CASE("every frame type round-trips") {
    for (const Frame& f : sample_frames()) {
        CAPTURE(sim::frame_type_name(f.type));
        const Bytes wire = encode_ok(f);
        CHECK(wire.size() == sim::encoded_frame_size(f));
        auto back = sim::decode_frame(wire);
        REQUIRE_MESSAGE(back.has_value(), back.error().message());
        CHECK(*back == f);
        // Re-encoding the decoded frame gives the same bytes.
        CHECK(encode_ok(*back) == wire);
    }
}

TEST_CASE("frame type table: exactly the seventeen version-1 types are defined") {
    const std::vector<std::uint8_t> defined = {0x01, 0x02, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
                                               0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1E};
    int count = 0;
    for (unsigned v = 0; v < 256; ++v) {
        const auto t = sim::frame_type_from_wire(static_cast<std::uint8_t>(v));
        const bool expect = std::find(defined.begin(), defined.end(), v) != defined.end();
        CHECK_MESSAGE(t.has_value() == expect, v);
        if (t) {
            ++count;
            CHECK(static_cast<unsigned>(*t) == v);
            CHECK(sim::frame_type_name(*t) != "unknown");
        }
    }
    CHECK(count == 17);
    CHECK(sim::frame_type_name(FrameType::passwd) == "passwd");
    CHECK(sim::frame_type_name(FrameType::link) == "link");
    CHECK(sim::frame_type_name(FrameType::devices) == "devices");
    CHECK(sim::frame_type_name(FrameType::presence) == "presence");
    CHECK(sim::frame_type_name(FrameType::limits) == "limits");
    CHECK(sim::frame_type_name(FrameType::prekeys) == "prekeys");
    CHECK(sim::frame_type_name(FrameType::ack) == "ack");
    CHECK(sim::frame_type_name(FrameType::receipt) == "receipt");
    CHECK(sim::is_transport_frame(FrameType::handshake));
    CHECK(sim::is_transport_frame(FrameType::record));
    CHECK_FALSE(sim::is_transport_frame(FrameType::message));
    CHECK(sim::frame_type_name(static_cast<FrameType>(0x20)) == "unknown");
}

TEST_CASE("encode rejects invalid frames and leaves the output untouched") {
    Bytes out = {0xEE};
    const auto check = [&](const Frame& f, Errc want, std::size_t max = sim::default_max_frame_size) {
        CHECK(sim::encode_frame(f, max).code() == want);
        CHECK(sim::encode_frame_into(f, out, max).code() == want);
        CHECK(out == Bytes{0xEE});
    };
    check(make(static_cast<FrameType>(0x20), 0, "a", "b", {}), Errc::unknown_frame_type);
    check(make(static_cast<FrameType>(0x00), 0, "a", "b", {}), Errc::unknown_frame_type);
    check(make(FrameType::init, 0, std::string(sim::max_name_size + 1, 'a'), "b", {}), Errc::bad_field);
    check(make(FrameType::init, 0, "a", std::string(sim::max_name_size + 1, 'b'), {}), Errc::bad_field);
    check(make(FrameType::init, 0, std::string("a\0b", 3), "b", {}), Errc::bad_field);
    check(make(FrameType::init, 0, "a", "b\n", {}), Errc::bad_field);
    check(make(FrameType::init, 0, "a\x7F", "b", {}), Errc::bad_field);
    check(make(FrameType::init, 0, "\x1B[31m", "b", {}), Errc::bad_field);
    check(make(FrameType::record, 1, "", "", {}), Errc::bad_field);
    check(make(FrameType::handshake, 0, "Alice", "", {}), Errc::bad_field);
    check(make(FrameType::record, 0, "", "Bob", {}), Errc::bad_field);

    // Size limit: exactly max encodes, one byte more does not.
    const std::size_t max = 1024;
    Frame f = make(FrameType::message, 9, "Alice", "Bob", {});
    f.payload.resize(max - sim::encoded_frame_size(f));
    CHECK(encode_ok(f, max).size() == max);
    f.payload.push_back(0);
    check(f, Errc::frame_too_large, max);
    check(make(FrameType::close, 0, "", "", {}), Errc::frame_too_large, sim::min_frame_size - 1);
    CHECK(sim::encode_frame(make(FrameType::close, 0, "", "", {}), sim::min_frame_size).has_value());

    // Appending keeps what was there.
    REQUIRE(sim::encode_frame_into(make(FrameType::close, 0, "", "", {}), out).has_value());
    CHECK(out.size() == 1 + sim::min_frame_size);
    CHECK(out[0] == 0xEE);
}

TEST_CASE("decode: each header error has its own code") {
    const Bytes good = hex(init_hex);
    REQUIRE(sim::decode_frame(good).has_value());

    SUBCASE("unsupported version") {
        for (const std::uint8_t v : {0x00, 0x02, 0xFF}) {
            Bytes b = good;
            b[0] = v;
            CHECK(decode_code(b) == Errc::unsupported_version);
        }
    }
    SUBCASE("unknown type (unassigned and reserved values)") {
        for (const std::uint8_t t : {0x00, 0x03, 0x0F, 0x1F, 0x20, 0x7F, 0x80, 0xFF}) {
            Bytes b = good;
            b[1] = t;
            CHECK(decode_code(b) == Errc::unknown_frame_type);
        }
    }
    SUBCASE("nonzero flags") {
        for (const std::uint16_t fl : {0x0001, 0x0100, 0x8000, 0xFFFF}) {
            Bytes b = good;
            b[2] = static_cast<std::uint8_t>(fl >> 8U);
            b[3] = static_cast<std::uint8_t>(fl);
            CHECK(decode_code(b) == Errc::bad_field);
        }
    }
    SUBCASE("oversize is detected from the header alone") {
        Bytes header(good.begin(), good.begin() + sim::frame_header_size);
        put_u32(header, 4, static_cast<std::uint32_t>(sim::default_max_frame_size - sim::frame_header_size + 1));
        CHECK(decode_code(header) == Errc::frame_too_large);
        put_u32(header, 4, 0xFFFFFFFFU);
        CHECK(decode_code(header) == Errc::frame_too_large);
        // Exactly at the limit the header is fine; the body is then simply missing.
        put_u32(header, 4, static_cast<std::uint32_t>(sim::default_max_frame_size - sim::frame_header_size));
        CHECK(decode_code(header) == Errc::truncated);
    }
    SUBCASE("declared body shorter than the fixed fields") {
        for (std::uint32_t len = 0; len < sim::frame_min_body_size; ++len) {
            Bytes b(good.begin(), good.begin() + sim::frame_header_size);
            put_u32(b, 4, len);
            b.resize(sim::frame_header_size + len, 0);
            CHECK(decode_code(b) == Errc::bad_length);
        }
    }
    SUBCASE("header checks come before truncation") {
        CHECK(decode_code(hex("02")) == Errc::unsupported_version);
        CHECK(decode_code(hex("0120")) == Errc::unknown_frame_type);
        CHECK(decode_code(hex("01100001")) == Errc::bad_field);
        CHECK(decode_code(hex("011000")) == Errc::truncated);
    }
}

TEST_CASE("decode: truncated at every offset of a valid frame") {
    for (const Frame& f : sample_frames()) {
        const Bytes wire = encode_ok(f);
        for (std::size_t n = 0; n < wire.size(); ++n) {
            CAPTURE(n);
            CHECK(decode_code(ByteView(wire).first(n)) == Errc::truncated);
        }
    }
}

TEST_CASE("decode: body length and field mismatches") {
    const Bytes good = hex(init_hex);

    SUBCASE("bytes after the frame") {
        Bytes b = good;
        b.push_back(0);
        CHECK(decode_code(b) == Errc::trailing_bytes);
        b = good;
        const Bytes second = good;
        b.insert(b.end(), second.begin(), second.end());
        CHECK(decode_code(b) == Errc::trailing_bytes);
    }
    SUBCASE("body length larger than the fields (extra byte inside the body)") {
        Bytes b = good;
        b.push_back(0x00);
        put_u32(b, 4, 21);
        CHECK(decode_code(b) == Errc::trailing_bytes);
    }
    SUBCASE("body length smaller than the fields") {
        Bytes b = good;
        b.pop_back();
        put_u32(b, 4, 19);
        CHECK(decode_code(b) == Errc::bad_length);
    }
    SUBCASE("payload length past the body") {
        Bytes b = good;
        put_u32(b, off_payload_len, 3);
        CHECK(decode_code(b) == Errc::bad_length);
        put_u32(b, off_payload_len, 0xFFFFFFFFU);
        CHECK(decode_code(b) == Errc::bad_length);
    }
    SUBCASE("payload length short of the body") {
        Bytes b = good;
        put_u32(b, off_payload_len, 1);
        CHECK(decode_code(b) == Errc::trailing_bytes);
    }
    SUBCASE("name lengths past the body") {
        // Source claims 20 bytes: allowed length, but the body ends first.
        Bytes b = good;
        b[off_src_len] = 20;
        CHECK(decode_code(b) == Errc::bad_length);
        b = good;
        b[off_dst_len] = 12;
        CHECK(decode_code(b) == Errc::bad_length);
    }
    SUBCASE("name too long") {
        Bytes b = good;
        b[off_src_len] = static_cast<std::uint8_t>(sim::max_name_size + 1);
        CHECK(decode_code(b) == Errc::bad_field);
        b = good;
        b[off_dst_len] = 0xFF;
        CHECK(decode_code(b) == Errc::bad_field);
        // A 64-byte name is fine.
        const Frame f = make(FrameType::init, 0, std::string(64, 'n'), std::string(64, 'm'), {});
        CHECK(sim::decode_frame(encode_ok(f)).has_value());
    }
    SUBCASE("control byte in a name") {
        for (const std::uint8_t c : {0x00, 0x01, 0x0A, 0x1F, 0x7F}) {
            Bytes b = good;
            b[off_src_len + 2] = c;  // second letter of "Alice"
            CHECK(decode_code(b) == Errc::bad_field);
            b = good;
            b[off_dst_len + 1] = c;
            CHECK(decode_code(b) == Errc::bad_field);
        }
    }
    SUBCASE("transport frame with sid or names") {
        Bytes b = encode_ok(make(FrameType::record, 0, "", "", text("sealed")));
        REQUIRE(sim::decode_frame(b).has_value());
        put_u32(b, 8, 1);
        CHECK(decode_code(b) == Errc::bad_field);
        Bytes c = good;
        c[1] = static_cast<std::uint8_t>(FrameType::handshake);
        CHECK(decode_code(c) == Errc::bad_field);
    }
}

TEST_CASE("decode: every single-bit flip either fails cleanly or re-encodes to the flipped bytes") {
    const Bytes good = encode_ok(make(FrameType::message, 9, "Alice", "Bob", text("hello")));
    for (std::size_t i = 0; i < good.size() * 8; ++i) {
        Bytes b = good;
        b[i / 8] ^= static_cast<std::uint8_t>(1U << (i % 8));
        auto r = sim::decode_frame(b);
        if (r) {
            CHECK(encode_ok(*r) == b);
        } else {
            CHECK(r.code() != Errc::ok);
            CHECK_FALSE(r.error().detail.empty());
        }
    }
}

TEST_CASE("decode: configurable maximum (1 KiB)") {
    const std::size_t max = 1024;
    Frame f = make(FrameType::record, 0, "", "", {});
    f.payload.resize(max - sim::min_frame_size);
    const Bytes at_max = encode_ok(f, max);
    CHECK(sim::decode_frame(at_max, max).has_value());
    f.payload.push_back(1);
    const Bytes over = encode_ok(f);  // fine under the default maximum
    CHECK(sim::decode_frame(over).has_value());
    CHECK(decode_code(over, max) == Errc::frame_too_large);
    CHECK(decode_code(ByteView(over).first(sim::frame_header_size), max) == Errc::frame_too_large);
    // A maximum below the header size refuses everything without underflowing.
    CHECK(decode_code(at_max, 4) == Errc::frame_too_large);
}

TEST_CASE("error frames") {
    SUBCASE("round trip") {
        const Frame f = sim::make_error_frame(Errc::auth_rejected, "login refused");
        CHECK(f.type == FrameType::error);
        CHECK(f.sid == 0);
        CHECK(f.payload[0] == 0x01);  // 402 = 0x0192
        CHECK(f.payload[1] == 0x92);
        auto back = sim::decode_frame(encode_ok(f));
        REQUIRE(back.has_value());
        auto e = sim::parse_error_frame(*back);
        REQUIRE(e.has_value());
        CHECK(e->code == Errc::auth_rejected);
        CHECK(e->detail == "login refused");
        CHECK(e->to_error().message() == "wrong username or password: login refused");
    }
    SUBCASE("empty detail") {
        auto e = sim::parse_error_frame(sim::make_error_frame(Errc::busy));
        REQUIRE(e.has_value());
        CHECK(e->code == Errc::busy);
        CHECK(e->detail.empty());
    }
    SUBCASE("control bytes are replaced, long details cut at a character boundary") {
        auto e = sim::parse_error_frame(sim::make_error_frame(Errc::bad_field, "a\nb\x1B[0m\x7F"));
        REQUIRE(e.has_value());
        CHECK(e->detail == "a?b?[0m?");

        std::string long_detail(sim::max_error_detail_size - 1, 'x');
        long_detail += "\xC3\xA9";  // two-byte character straddling the limit
        long_detail += "tail";
        const Frame f = sim::make_error_frame(Errc::internal, long_detail);
        auto cut = sim::parse_error_frame(f);
        REQUIRE(cut.has_value());
        CHECK(cut->detail == std::string(sim::max_error_detail_size - 1, 'x'));
        const Frame g = sim::make_error_frame(Errc::internal, std::string(1000, 'y'));
        CHECK(g.payload.size() == 2 + sim::max_error_detail_size);
    }
    SUBCASE("a code this build does not know is passed on") {
        Frame f = sim::make_error_frame(Errc::internal);
        f.payload[0] = 0x12;
        f.payload[1] = 0x34;
        auto e = sim::parse_error_frame(f);
        REQUIRE(e.has_value());
        CHECK(static_cast<std::uint16_t>(e->code) == 0x1234);
    }
    SUBCASE("malformed error frames") {
        Frame f = sim::make_error_frame(Errc::closed, "bye");
        f.type = FrameType::close;
        CHECK(sim::parse_error_frame(f).code() == Errc::invalid_argument);
        f = make(FrameType::error, 0, "", "", {});
        CHECK(sim::parse_error_frame(f).code() == Errc::truncated);
        f.payload = {0x01};
        CHECK(sim::parse_error_frame(f).code() == Errc::truncated);
        f.payload = {0x00, 0x00};
        CHECK(sim::parse_error_frame(f).code() == Errc::bad_field);
        f.payload = {0x02, 0x60, 'a', 0x0A};
        CHECK(sim::parse_error_frame(f).code() == Errc::bad_field);
        f.payload = {0x02, 0x60};
        f.payload.resize(2 + sim::max_error_detail_size + 1, 'z');
        CHECK(sim::parse_error_frame(f).code() == Errc::bad_field);
        f.payload.pop_back();
        CHECK(sim::parse_error_frame(f).has_value());
    }
}

TEST_CASE("stream decoder: every split point of a multi-frame stream") {
    const std::vector<Frame> frames = sample_frames();
    const Bytes stream = concat_all(frames);
    for (std::size_t split = 0; split <= stream.size(); ++split) {
        CAPTURE(split);
        FrameDecoder d;
        d.feed(ByteView(stream).first(split));
        std::vector<Frame> got = drain(d);
        d.feed(ByteView(stream).subspan(split));
        const std::vector<Frame> rest = drain(d);
        got.insert(got.end(), rest.begin(), rest.end());
        REQUIRE(got.size() == frames.size());
        CHECK(got == frames);
        CHECK(d.buffered() == 0);
        CHECK(d.bytes_needed() == sim::min_frame_size);
    }
}

TEST_CASE("stream decoder: three-way splits") {
    const std::vector<Frame> frames = {make(FrameType::init, 0, "Alice", "Bob", text("pw")),
                                       make(FrameType::ack_init, 1, "Server", "Alice", {}),
                                       make(FrameType::close, 0, "", "", {})};
    const Bytes stream = concat_all(frames);
    for (std::size_t a = 0; a <= stream.size(); ++a) {
        for (std::size_t b = a; b <= stream.size(); ++b) {
            FrameDecoder d;
            d.feed(ByteView(stream).first(a));
            std::vector<Frame> got = drain(d);
            d.feed(ByteView(stream).subspan(a, b - a));
            for (auto& f : drain(d)) {
                got.push_back(std::move(f));
            }
            d.feed(ByteView(stream).subspan(b));
            for (auto& f : drain(d)) {
                got.push_back(std::move(f));
            }
            REQUIRE(got == frames);
        }
    }
}

TEST_CASE("stream decoder: byte at a time, with bytes_needed at each step") {
    const std::vector<Frame> frames = sample_frames();
    const Bytes stream = concat_all(frames);
    FrameDecoder d;
    std::vector<Frame> got;
    std::size_t frame_start = 0;  // offset in `stream` of the frame being assembled
    std::size_t frame_index = 0;
    CHECK(d.bytes_needed() == sim::min_frame_size);
    for (std::size_t i = 0; i < stream.size(); ++i) {
        d.feed(ByteView(stream).subspan(i, 1));
        const std::size_t have = i + 1 - frame_start;
        const std::size_t total = sim::encoded_frame_size(frames[frame_index]);
        const std::size_t expect = have < sim::frame_header_size ? sim::min_frame_size - have : total - have;
        CAPTURE(i);
        CHECK(d.bytes_needed() == expect);
        CHECK(d.buffered() == have);
        auto r = d.next();
        REQUIRE(r.has_value());
        if (have == total) {
            REQUIRE(r->has_value());
            got.push_back(std::move(**r));
            frame_start = i + 1;
            ++frame_index;
            CHECK(d.buffered() == 0);
        } else {
            CHECK_FALSE(r->has_value());
        }
    }
    CHECK(got == frames);
}

TEST_CASE("stream decoder: many frames in one feed, and bytes_needed with a full frame buffered") {
    const std::vector<Frame> frames = sample_frames();
    Bytes stream = concat_all(frames);
    const Bytes partial = encode_ok(make(FrameType::message, 1, "A", "B", Bytes(100, 1)));
    stream.insert(stream.end(), partial.begin(), partial.begin() + 30);
    FrameDecoder d;
    d.feed(stream);
    CHECK(d.bytes_needed() == 0);  // a complete frame is waiting
    CHECK(drain(d) == frames);
    CHECK(d.buffered() == 30);
    CHECK(d.bytes_needed() == partial.size() - 30);
    d.feed(ByteView(partial).subspan(30));
    const auto last = drain(d);
    REQUIRE(last.size() == 1);
    CHECK(last[0].payload == Bytes(100, 1));
}

TEST_CASE("stream decoder: errors are reported early and stick") {
    const Bytes good = hex(init_hex);

    SUBCASE("bad version on the first byte") {
        FrameDecoder d;
        d.feed(hex("07"));
        CHECK(d.bytes_needed() == 0);
        CHECK(d.next().code() == Errc::unsupported_version);
        CHECK(d.failed());
    }
    SUBCASE("unknown type on the second byte") {
        FrameDecoder d;
        d.feed(hex("0130"));
        CHECK(d.next().code() == Errc::unknown_frame_type);
    }
    SUBCASE("nonzero flags") {
        FrameDecoder d;
        d.feed(hex("01100100"));
        CHECK(d.next().code() == Errc::bad_field);
    }
    SUBCASE("oversize from the header, before the body") {
        FrameDecoder d(1024);
        Bytes header(good.begin(), good.begin() + 8);
        put_u32(header, 4, 1024 - 8 + 1);
        d.feed(header);
        CHECK(d.bytes_needed() == 0);
        CHECK(d.next().code() == Errc::frame_too_large);
    }
    SUBCASE("body error after a good frame") {
        FrameDecoder d;
        Bytes b = good;
        Bytes bad = good;
        bad[off_src_len] = 65;
        b.insert(b.end(), bad.begin(), bad.end());
        d.feed(b);
        auto first = d.next();
        REQUIRE(first.has_value());
        REQUIRE(first->has_value());
        CHECK(d.next().code() == Errc::bad_field);
    }
    SUBCASE("body length mismatches") {
        Bytes longer = good;
        longer.push_back(0);
        put_u32(longer, 4, 21);
        FrameDecoder d1;
        d1.feed(longer);
        CHECK(d1.next().code() == Errc::trailing_bytes);
        Bytes shorter = good;
        shorter.pop_back();
        put_u32(shorter, 4, 19);
        FrameDecoder d2;
        d2.feed(shorter);
        CHECK(d2.next().code() == Errc::bad_length);
    }

    // Stickiness: after any error, good input does not revive the decoder.
    FrameDecoder d;
    d.feed(hex("02"));
    const auto err = d.next();
    REQUIRE_FALSE(err.has_value());
    d.feed(good);
    CHECK(d.buffered() == 1);  // input after the failure is dropped
    CHECK(d.bytes_needed() == 0);
    for (int i = 0; i < 3; ++i) {
        const auto again = d.next();
        REQUIRE_FALSE(again.has_value());
        CHECK(again.code() == Errc::unsupported_version);
        CHECK(again.error().detail == err.error().detail);
    }
    CHECK(d.failed());
}

TEST_CASE("stream decoder: configurable maximum and bounded buffering") {
    const std::size_t max = 1024;
    FrameDecoder d(max);
    CHECK(d.max_frame_size() == max);
    Frame f = make(FrameType::record, 0, "", "", {});
    f.payload.resize(max - sim::min_frame_size);
    const Bytes one = encode_ok(f, max);
    REQUIRE(one.size() == max);

    // 50 maximal frames fed in 700-byte chunks, drained after each chunk: never more than one frame buffered.
    Bytes stream;
    for (int i = 0; i < 50; ++i) {
        stream.insert(stream.end(), one.begin(), one.end());
    }
    std::size_t count = 0;
    for (std::size_t off = 0; off < stream.size(); off += 700) {
        d.feed(ByteView(stream).subspan(off, std::min<std::size_t>(700, stream.size() - off)));
        count += drain(d).size();
        CHECK(d.buffered() < max);
        CHECK(d.memory_held() <= 2 * max + 700);
    }
    CHECK(count == 50);
    CHECK(d.buffered() == 0);

    // A burst fed without draining is released once it has been parsed.
    d.feed(stream);
    CHECK(d.memory_held() >= stream.size());
    CHECK(drain(d).size() == 50);
    CHECK(d.memory_held() <= sim::decoder_idle_capacity);

    // One byte over the maximum fails from the header alone.
    f.payload.push_back(0);
    const Bytes too_big = encode_ok(f);
    d.feed(ByteView(too_big).first(sim::frame_header_size));
    CHECK(d.next().code() == Errc::frame_too_large);
}

TEST_CASE("stream decoder agrees with decode_frame on corrupted input") {
    // For every single-byte corruption of a two-frame stream, the decoder either yields the frames decode_frame
    // yields or fails with the code decode_frame gives for the first bad frame.
    const Bytes a = hex(init_hex);
    const Bytes b = encode_ok(make(FrameType::probe, 0, "Alice", "Bob", {}));
    for (std::size_t i = 0; i < a.size(); ++i) {
        for (const std::uint8_t x : {0x01, 0x80, 0xFF}) {
            Bytes bad = a;
            bad[i] ^= x;
            Bytes stream = bad;
            stream.insert(stream.end(), b.begin(), b.end());
            FrameDecoder d;
            d.feed(stream);
            auto r = d.next();
            const auto direct = sim::decode_frame(bad);
            CAPTURE(i);
            if (direct) {
                // The corruption kept the frame valid with the same size.
                REQUIRE(r.has_value());
                REQUIRE(r->has_value());
                CHECK(**r == *direct);
            } else if (direct.code() == Errc::truncated || direct.code() == Errc::trailing_bytes) {
                // The declared length changed, so the stream cuts at a different boundary: whatever it yields
                // must fit in the bytes it was given, and each frame must re-encode to a slice of the stream.
                std::size_t used = 0;
                while (r.has_value() && r->has_value()) {
                    const Bytes again = encode_ok(**r);
                    REQUIRE(used + again.size() <= stream.size());
                    CHECK(std::equal(again.begin(), again.end(), stream.begin() + static_cast<std::ptrdiff_t>(used)));
                    used += again.size();
                    r = d.next();
                }
            } else {
                REQUIRE_FALSE(r.has_value());
                CHECK(r.code() == direct.code());
            }
        }
    }
}

TEST_CASE("an inner frame of max_inner_frame_size fits a record frame of max_frame_size under every suite") {
    const std::size_t max = 4096;
    const std::size_t inner_max = sim::max_inner_frame_size(max);
    CHECK(inner_max == max - sim::min_frame_size - sim::max_record_overhead);
    CHECK(sim::max_inner_frame_size(sim::min_frame_size + sim::max_record_overhead) == 0);
    CHECK(sim::max_inner_frame_size(0) == 0);

    auto rng = sim::make_deterministic_rng(sim::as_bytes("frame test"));
    sim::ManualClock clock;
    for (const sim::SuiteId suite :
         {sim::SuiteId::tdes_cbc_hmac_sha256, sim::SuiteId::aes256_gcm, sim::SuiteId::chacha20_poly1305}) {
        CAPTURE(sim::suite_name(suite));
        sim::SessionConfig config;
        config.suite = suite;
        const sim::Bytes key(sim::suite_key_size(suite), 0x11);
        auto send = sim::SendSession::create(config, key, *rng, clock);
        REQUIRE(send.has_value());
        // Every inner-frame length modulo the TDES block, up to the largest allowed.
        for (std::size_t extra = 0; extra < 16; ++extra) {
            Frame inner = make(FrameType::message, 0, "Alice", "Bob", {});
            inner.payload.resize(inner_max - sim::encoded_frame_size(inner) - extra);
            auto inner_bytes = sim::encode_frame(inner, inner_max);
            REQUIRE(inner_bytes.has_value());
            auto record = send->seal(*inner_bytes);
            REQUIRE(record.has_value());
            CHECK(record->size() - inner_bytes->size() <= sim::max_record_overhead);
            auto outer = sim::encode_frame(make(FrameType::record, 0, "", "", *record), max);
            CHECK_MESSAGE(outer.has_value(), "record frame over the maximum");
        }
    }
}

TEST_CASE("stream decoder keeps a partial frame and releases a large buffer only once it is empty") {
    Frame f = make(FrameType::message, 7, "alice", "bob", Bytes(3000, 0x5A));
    const Bytes big = encode_ok(f);
    const Bytes small = encode_ok(make(FrameType::probe, 0, "alice", "bob", {}));
    REQUIRE(small.size() < sim::decoder_idle_capacity);
    FrameDecoder d;
    // Small frames: the buffer is kept between feeds (no allocation per frame on a busy connection).
    d.feed(small);
    REQUIRE(drain(d).size() == 1);
    const auto kept = d.memory_held();
    CHECK(kept >= small.size());
    CHECK(kept <= sim::decoder_idle_capacity);
    d.feed(small);
    REQUIRE(drain(d).size() == 1);
    CHECK(d.memory_held() == kept);
    // A large frame in two pieces: the first piece is held (not released) until the frame completes.
    d.feed(ByteView(big).first(2000));
    CHECK(drain(d).empty());
    CHECK(d.buffered() == 2000);
    CHECK(d.memory_held() >= 2000);
    d.feed(ByteView(big).subspan(2000));
    const auto frames = drain(d);
    REQUIRE(frames.size() == 1);
    CHECK(frames[0].payload == f.payload);
    CHECK(d.buffered() == 0);
    CHECK(d.memory_held() <= sim::decoder_idle_capacity);
    // A large frame followed by the start of another: the partial bytes survive the parse of the first.
    Bytes two = big;
    two.insert(two.end(), small.begin(), small.begin() + 5);
    d.feed(two);
    CHECK(drain(d).size() == 1);
    CHECK(d.buffered() == 5);
    d.feed(ByteView(small).subspan(5));
    const auto rest = drain(d);
    REQUIRE(rest.size() == 1);
    CHECK(rest[0].type == FrameType::probe);
    CHECK(d.memory_held() <= sim::decoder_idle_capacity);
}
