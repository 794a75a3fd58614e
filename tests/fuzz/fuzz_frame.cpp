// libFuzzer target for the frame codec: decode_frame and FrameDecoder on arbitrary bytes.
//
// Properties checked (any violation aborts, which libFuzzer reports as a crash):
// - a buffer that decode_frame accepts re-encodes to exactly the same bytes;
// - a smaller maximum never accepts what the default maximum refuses, and accepts every frame that fits it;
// - FrameDecoder gives the same frames and the same final error whether the input is fed at once, byte by byte
//   or in input-derived chunks, and every frame it yields re-encodes to the next slice of the input;
// - bytes_needed() is exact once a header is buffered, and the decoder never buffers a whole frame after draining.
#include <sim/frame.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <vector>

namespace {

void require(bool condition, const char* what) {
    if (!condition) {
        std::fprintf(stderr, "fuzz_frame: property violated: %s\n", what);
        std::abort();
    }
}

// The first input byte picks a small maximum so the size checks are exercised at many boundaries.
constexpr std::size_t small_max_base = sim::min_frame_size;

struct StreamOutcome {
    std::vector<sim::Frame> frames;
    sim::Errc error = sim::Errc::ok;  // ok: the stream ended cleanly or mid-frame
    std::size_t buffered = 0;
};

// Drains `d`, appending frames to `out`; checks the stream invariants. Returns false after an error.
bool drain(sim::FrameDecoder& d, StreamOutcome& out) {
    for (;;) {
        auto r = d.next();
        if (!r) {
            require(d.failed(), "error without the failed state");
            require(d.bytes_needed() == 0, "bytes_needed after failure");
            out.error = r.code();
            auto again = d.next();
            require(!again && again.code() == r.code(), "failed state is not sticky");
            return false;
        }
        if (!r->has_value()) {
            require(d.bytes_needed() > 0, "needs more bytes but bytes_needed is 0");
            require(d.buffered() < d.max_frame_size(), "a whole frame left buffered after draining");
            out.buffered = d.buffered();
            return true;
        }
        out.frames.push_back(std::move(**r));
    }
}

StreamOutcome run_chunked(sim::ByteView in, std::size_t max, const std::vector<std::size_t>& chunks) {
    sim::FrameDecoder d(max);
    StreamOutcome out;
    std::size_t pos = 0;
    std::size_t i = 0;
    while (pos < in.size()) {
        const std::size_t n = std::min(in.size() - pos, chunks[i % chunks.size()]);
        d.feed(in.subspan(pos, n));
        pos += n;
        ++i;
        if (!drain(d, out)) {
            d.feed(in.subspan(pos));  // must be ignored
            require(d.buffered() <= in.size(), "buffer grew after failure");
            return out;
        }
    }
    return out;
}

StreamOutcome run_bytewise(sim::ByteView in, std::size_t max) {
    sim::FrameDecoder d(max);
    StreamOutcome out;
    for (std::size_t pos = 0; pos < in.size(); ++pos) {
        const std::size_t need = d.bytes_needed();
        const std::size_t before = out.frames.size();
        d.feed(in.subspan(pos, 1));
        if (!drain(d, out)) {
            return out;
        }
        // One byte completes a frame exactly when exactly one byte was missing.
        require((out.frames.size() > before) == (need == 1), "bytes_needed disagrees with frame completion");
        require(out.frames.size() <= before + 1, "one byte completed two frames");
    }
    return out;
}

void check_same(const StreamOutcome& a, const StreamOutcome& b) {
    require(a.frames == b.frames, "frames differ between feeding patterns");
    require(a.error == b.error, "final error differs between feeding patterns");
    if (a.error == sim::Errc::ok) {
        require(a.buffered == b.buffered, "buffered bytes differ between feeding patterns");
    }
}

void check_stream(sim::ByteView in, std::size_t max) {
    std::vector<std::size_t> chunks;
    for (std::size_t i = 0; i < in.size() && chunks.size() < 16; ++i) {
        chunks.push_back(static_cast<std::size_t>(in[i] % 23U) + 1U);
    }
    if (chunks.empty()) {
        chunks.push_back(1);
    }
    const StreamOutcome whole = run_chunked(in, max, {in.size() + 1});
    check_same(whole, run_chunked(in, max, chunks));
    check_same(whole, run_bytewise(in, max));

    // Each frame re-encodes to the next slice of the input, and decode_frame agrees on that slice.
    std::size_t used = 0;
    for (const sim::Frame& f : whole.frames) {
        auto enc = sim::encode_frame(f, max);
        require(enc.has_value(), "a decoded frame does not encode");
        require(used + enc->size() <= in.size(), "frames longer than the input");
        require(std::equal(enc->begin(), enc->end(), in.begin() + static_cast<std::ptrdiff_t>(used)),
                "stream frame does not re-encode to its bytes");
        auto one = sim::decode_frame(in.subspan(used, enc->size()), max);
        require(one.has_value() && *one == f, "decode_frame disagrees with the stream decoder");
        used += enc->size();
    }
    if (whole.error == sim::Errc::ok) {
        require(used + whole.buffered == in.size(), "bytes lost by the stream decoder");
    } else {
        // The failing frame is the first one after `used`: decode_frame on the rest fails with the same code, or
        // with trailing_bytes when more frames follow it (that check comes before the body is read).
        auto rest = sim::decode_frame(in.subspan(used), max);
        require(!rest.has_value(), "stream failed on bytes decode_frame accepts");
        require(rest.code() == whole.error || rest.code() == sim::Errc::trailing_bytes,
                "stream and decode_frame report different errors");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const sim::ByteView in(data, size);

    auto r = sim::decode_frame(in);
    if (r) {
        auto enc = sim::encode_frame(*r);
        require(enc.has_value(), "decoded frame does not encode");
        require(*enc == sim::Bytes(in.begin(), in.end()), "round trip changed the bytes");
        require(sim::encoded_frame_size(*r) == size, "encoded_frame_size disagrees");
        if (r->type == sim::FrameType::error) {
            auto e = sim::parse_error_frame(*r);
            if (e) {
                const sim::Frame again = sim::make_error_frame(e->code, e->detail);
                require(again.payload == r->payload, "error frame payload does not round-trip");
            }
        }
    } else {
        require(r.code() != sim::Errc::ok, "failure without a code");
    }

    const std::size_t small_max = small_max_base + (size == 0 ? 0 : static_cast<std::size_t>(in[0]) * 4U);
    auto s = sim::decode_frame(in, small_max);
    if (s) {
        require(r.has_value() && *r == *s, "a smaller maximum accepted what the default refused");
    } else if (r && size <= small_max) {
        require(false, "a frame that fits the smaller maximum was refused");
    }

    check_stream(in, sim::default_max_frame_size);
    check_stream(in, small_max);
    return 0;
}
