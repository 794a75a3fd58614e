#pragma once
/// @file
/// The frame codec: the unit every libsim byte stream is cut into (docs/protocol.md section 2).
///
/// A frame is an 8-byte header (version, type, flags, body length) and a body (sid, source name, destination name,
/// payload). The same format carries the transport frames on TCP (handshake messages and sealed records) and the
/// inner frames inside the encrypted channel (the seed's init / ack_init / KEYGEN / conversation messages).
/// Decoding is bounded by a configurable maximum frame size, checked from the header alone, and never throws.

#include <sim/bytes.h>
#include <sim/error.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sim {

/// The only frame version this library speaks (header byte 0).
inline constexpr std::uint8_t frame_version = 1;
/// Size of the frame header: version (1), type (1), flags (2), body length (4).
inline constexpr std::size_t frame_header_size = 8;
/// Smallest possible body: sid (4), source length (1), destination length (1), payload length (4).
inline constexpr std::size_t frame_min_body_size = 10;
/// Smallest possible frame (header plus the smallest body).
inline constexpr std::size_t min_frame_size = frame_header_size + frame_min_body_size;
/// Largest source or destination name, in bytes.
inline constexpr std::size_t max_name_size = 64;
/// Default hard maximum of a whole frame (header plus body): 64 KiB.
inline constexpr std::size_t default_max_frame_size = 64U * 1024U;
/// Largest detail text carried by an error frame, in bytes.
inline constexpr std::size_t max_error_detail_size = 256;
/// Largest number of bytes sealing adds to an inner frame: the record header (16, session.h record_header_size)
/// plus the largest suite overhead (TDES-CBC-HMAC-SHA256: IV 8 + padding up to 8 + MAC 32 = 48; the AEADs add 16).
inline constexpr std::size_t max_record_overhead = 16 + 48;
/// Largest inner frame that, sealed into one record, still fits a record frame of at most `max_frame_size` bytes
/// (a record frame adds min_frame_size: its names are empty). 0 when nothing fits.
[[nodiscard]] constexpr std::size_t max_inner_frame_size(std::size_t max_frame_size) noexcept {
    constexpr std::size_t overhead = min_frame_size + max_record_overhead;
    return max_frame_size > overhead ? max_frame_size - overhead : 0;
}
/// The sid of a KEYGEN frame (the seed's `sid:9999`).
inline constexpr std::uint32_t keygen_sid = 9999;

/// Frame types (header byte 1). Values are stable. 0x00, 0x03-0x0F, 0x1A-0x1F and 0x80-0xFF are unassigned and
/// 0x20-0x7F are reserved for later types; a version-1 decoder rejects all of them with Errc::unknown_frame_type.
enum class FrameType : std::uint8_t {
    // transport layer, directly on TCP
    handshake = 0x01,  ///< payload = one handshake message; sid 0, empty names
    record = 0x02,     ///< payload = one sealed record of the client-server session; sid 0, empty names
    // inner frames, each the plaintext of one record
    init = 0x10,       ///< login and start a conversation: source, destination, sid 0, payload = credentials
    ack_init = 0x11,   ///< server's answer to init / probe: sid = an AckStage
    keygen = 0x12,     ///< conversation key assignment: sid keygen_sid, payload = key material
    message = 0x13,    ///< conversation message: names readable, sid = stream sequence number (0: unsequenced),
                       ///< payload = envelope, body sealed end to end
    probe = 0x14,      ///< "is the destination online yet?" while waiting (ack_init stage 3)
    error = 0x15,      ///< payload = u16 Errc (big-endian) + UTF-8 detail; see make_error_frame
    close = 0x16,      ///< leave a conversation or log out (section 5.3)
    prekeys = 0x17,    ///< client: prekey upload; server: prekey status (section 6.1); sid 0
    ack = 0x18,        ///< recipient to server: these message ids are stored (section 6.6); sid 0
    receipt = 0x19,    ///< server to sender: sid = ReceiptStatus, payload = peer + message ids (section 6.6)
    limits = 0x1A,     ///< server to client after login: the rates and window to pace sending by (section 6.6)
    passwd = 0x1B,     ///< client: change the password (old + new); server: changed, with a new session token (5.5)
    link = 0x1C,       ///< linking a new device: step, device, data (section 6.9)
    devices = 0x1D,    ///< device lists and the owner's devices: op and its fields (section 6.9)
    presence = 0x1E,   ///< presence of contacts: op and its fields (section 6.10); only after the handshake
                       ///< announced it (ChannelEstablished::features)
};

/// Stages carried in the sid of an ack_init frame.
enum class AckStage : std::uint32_t {
    authenticated = 1,        ///< the seed's `ack_init, sid:1`: the user is authenticated
    destination_online = 2,   ///< the seed's `ack_init, sid:2`: the destination is online
    destination_offline = 3,  ///< waiting: the destination is offline; the client probes until stage 2 arrives
};

/// The frame type of a wire byte, or nullopt if version 1 does not define it.
[[nodiscard]] std::optional<FrameType> frame_type_from_wire(std::uint8_t value) noexcept;

/// Lower-case name of a type ("handshake", "ack_init", ...), or "unknown" for a value outside the enum.
[[nodiscard]] std::string_view frame_type_name(FrameType type) noexcept;

/// True for the types that travel directly on TCP (handshake, record); false for inner frames.
[[nodiscard]] bool is_transport_frame(FrameType type) noexcept;

/// One decoded frame. Names are UTF-8 (not validated beyond length and the absence of control bytes).
struct Frame {
    FrameType type = FrameType::close;
    std::uint32_t sid = 0;
    std::string source;
    std::string destination;
    Bytes payload;

    friend bool operator==(const Frame&, const Frame&) = default;
};

/// Size of the encoding of `frame` (header included), without checking it.
[[nodiscard]] std::size_t encoded_frame_size(const Frame& frame) noexcept;

/// Encode one frame.
/// Errors: Errc::unknown_frame_type (type not defined in version 1), Errc::bad_field (a name longer than
/// max_name_size or holding a control byte; a transport frame with a nonzero sid or a name),
/// Errc::frame_too_large (the encoding would exceed `max_frame_size`).
[[nodiscard]] Result<Bytes> encode_frame(const Frame& frame, std::size_t max_frame_size = default_max_frame_size);

/// Append the encoding of `frame` to `out` (reuses the caller's buffer on hot paths). Same errors as encode_frame;
/// on error `out` is left unchanged.
[[nodiscard]] Status encode_frame_into(const Frame& frame, Bytes& out,
                                       std::size_t max_frame_size = default_max_frame_size);

/// Decode a buffer that holds exactly one frame.
/// Errors, checked in this order: Errc::truncated (the buffer ends inside the header; header fields that are present
/// are checked first), Errc::unsupported_version, Errc::unknown_frame_type, Errc::bad_field (nonzero flags),
/// Errc::frame_too_large (declared size above `max_frame_size`), Errc::bad_length (declared body shorter than
/// frame_min_body_size), Errc::truncated (the buffer ends inside the body), Errc::trailing_bytes (bytes after the
/// declared frame), then, reading the body field by field: Errc::bad_length (a field runs past the declared body),
/// Errc::bad_field (a name length above max_name_size, a control byte in a name), Errc::trailing_bytes (the body
/// is longer than its fields), and last Errc::bad_field (a transport frame with a nonzero sid or a name).
[[nodiscard]] Result<Frame> decode_frame(ByteView exactly_one_frame,
                                         std::size_t max_frame_size = default_max_frame_size);

/// An error frame: sid 0, empty names, payload = u16 code + detail. Control bytes in `detail` become '?', and a
/// detail longer than max_error_detail_size is cut (at a UTF-8 character boundary). Never put secrets or user
/// content in `detail`.
[[nodiscard]] Frame make_error_frame(Errc code, std::string_view detail = {});

/// What a peer reported in an error frame. `code` may be a value this build does not know (a newer peer).
struct PeerError {
    Errc code = Errc::internal;
    std::string detail;

    /// As a local Error (same code and detail).
    [[nodiscard]] Error to_error() const { return Error{code, detail}; }
};

/// Read an error frame.
/// Errors: Errc::invalid_argument (not an error frame), Errc::truncated (payload shorter than 2 bytes),
/// Errc::bad_field (code 0 = ok, a control byte in the detail, detail longer than max_error_detail_size).
[[nodiscard]] Result<PeerError> parse_error_frame(const Frame& frame);

/// Incremental decoder for a byte stream of frames (e.g. TCP). Accepts the bytes in any split.
///
/// Usage: after each `feed`, call `next()` until it returns nullopt (needs more bytes) or an error. The decoder
/// keeps only the bytes not yet parsed, so a caller that drains it this way never leaves more than one partial
/// frame (< max_frame_size bytes) buffered. A frame too large is refused from its header, before its body arrives.
/// After the first error the decoder stays failed: `feed` ignores input and `next` repeats the error.
/// Buffer capacity a FrameDecoder keeps once it has parsed everything fed to it; a larger buffer is released.
inline constexpr std::size_t decoder_idle_capacity = 1024;

class FrameDecoder {
public:
    /// `max_frame_size` bounds a whole frame (header plus body).
    explicit FrameDecoder(std::size_t max_frame_size = default_max_frame_size);

    /// Append received bytes (copied). Ignored once the decoder has failed.
    void feed(ByteView data);

    /// The next complete frame, or nullopt when more bytes are needed. Errors: those of decode_frame except
    /// Errc::truncated and the outer Errc::trailing_bytes (a stream simply waits / continues with the next frame).
    /// Header fields are checked as soon as their bytes arrive.
    [[nodiscard]] Result<std::optional<Frame>> next();

    /// How many more bytes the next frame needs: exact once its header is buffered, otherwise the minimum
    /// (min_frame_size minus what is buffered). 0 when next() has a frame or an error to return, or has failed.
    [[nodiscard]] std::size_t bytes_needed() const noexcept;

    /// Bytes received but not yet returned as frames.
    [[nodiscard]] std::size_t buffered() const noexcept { return m_buf.size() - m_pos; }

    /// Bytes of buffer memory the decoder holds (for monitoring). For a caller that drains after each feed it stays
    /// below about two maximal frames plus one feed, and at most decoder_idle_capacity once everything fed has been
    /// parsed (an idle connection does not keep the memory of its last burst).
    [[nodiscard]] std::size_t memory_held() const noexcept { return m_buf.capacity(); }

    /// True after an error; every later next() returns that error.
    [[nodiscard]] bool failed() const noexcept { return m_failed; }

    [[nodiscard]] std::size_t max_frame_size() const noexcept { return m_max; }

private:
    Bytes m_buf;
    std::size_t m_pos = 0;  // start of the unparsed bytes in m_buf
    std::size_t m_max;
    bool m_failed = false;
    Error m_error;
};

}  // namespace sim
