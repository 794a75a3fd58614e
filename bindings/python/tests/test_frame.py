"""The frame codec from Python: round trips, the decoder's checks, and wrong types."""

from __future__ import annotations

import copy
import struct

import pytest

import libsim
from libsim import Errc, Frame, FrameDecoder, FrameType

INNER = [t for t in FrameType.__members__.values() if not t.is_transport]


def sample(kind: FrameType = FrameType.MESSAGE) -> Frame:
    return Frame(kind, sid=7, source="alice", destination="bob", payload=b"\x00\x01payload\xff")


@pytest.mark.parametrize("kind", INNER, ids=lambda t: t.name)
def test_round_trip(kind: FrameType) -> None:
    frame = sample(kind)
    data = frame.encode()
    assert isinstance(data, bytes)
    assert len(data) == frame.encoded_size
    back = Frame.decode(data)
    assert back == frame
    assert (back.type, back.sid, back.source, back.destination, back.payload) == (
        kind, 7, "alice", "bob", b"\x00\x01payload\xff")


def test_header_layout() -> None:
    data = sample().encode()
    version, ftype, flags, length = struct.unpack(">BBHI", data[:8])
    assert (version, ftype, flags) == (libsim.frame.FRAME_VERSION, int(FrameType.MESSAGE), 0)
    assert length == len(data) - libsim.frame.FRAME_HEADER_SIZE


def test_text_names_round_trip_as_str() -> None:
    frame = Frame(FrameType.MESSAGE, source="zoë", destination="名前")
    back = Frame.decode(frame.encode())
    assert back.source == "zoë" and back.destination == "名前"


def test_bytes_like_payloads_are_accepted() -> None:
    for payload in (b"abc", bytearray(b"abc"), memoryview(b"xabcx")[1:4]):
        assert Frame(FrameType.PROBE, payload=payload).payload == b"abc"
    frame = sample()
    assert Frame.decode(bytearray(frame.encode())) == frame


def test_attributes_are_mutable_and_copies_independent() -> None:
    frame = sample()
    other = copy.deepcopy(frame)
    other.payload = b"changed"
    other.sid = 1
    assert frame.payload == b"\x00\x01payload\xff" and frame.sid == 7
    assert frame != other
    assert "FrameType.MESSAGE" in repr(frame) and "'alice'" in repr(frame)


def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(TypeError):
        Frame(FrameType.MESSAGE, source=b"alice")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Frame(FrameType.MESSAGE, payload="text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Frame(19)  # type: ignore[arg-type]  # an int is not a FrameType
    with pytest.raises(TypeError):
        Frame(FrameType.MESSAGE, sid=-1)
    with pytest.raises(TypeError):
        Frame(FrameType.MESSAGE, sid=2**32)
    with pytest.raises(TypeError):
        Frame.decode("not bytes")  # type: ignore[arg-type]
    frame = sample()
    with pytest.raises(TypeError, match="Frame.source must be str"):
        frame.source = b"x"  # type: ignore[assignment]
    with pytest.raises(TypeError, match="Frame.payload must be bytes-like"):
        frame.payload = "x"  # type: ignore[assignment]


def test_encode_refuses_bad_frames() -> None:
    with pytest.raises(libsim.FrameError) as info:
        Frame(FrameType.MESSAGE, source="a" * (libsim.frame.MAX_NAME_SIZE + 1)).encode()
    assert info.value.code == Errc.BAD_FIELD
    with pytest.raises(libsim.FrameError):
        Frame(FrameType.MESSAGE, source="al\x07ice").encode()
    with pytest.raises(libsim.FrameError):
        Frame(FrameType.RECORD, sid=1).encode()  # transport frames carry no sid
    with pytest.raises(libsim.FrameError) as info:
        Frame(FrameType(0x7F)).encode()
    assert info.value.code == Errc.UNKNOWN_FRAME_TYPE


def test_oversize_is_message_too_large_and_value_error() -> None:
    big = Frame(FrameType.MESSAGE, payload=bytes(libsim.DEFAULT_MAX_FRAME_SIZE))
    with pytest.raises(libsim.MessageTooLarge) as info:
        big.encode()
    assert isinstance(info.value, ValueError)
    assert info.value.code == Errc.FRAME_TOO_LARGE
    data = big.encode(max_frame_size=2 * libsim.DEFAULT_MAX_FRAME_SIZE)
    with pytest.raises(libsim.MessageTooLarge):
        Frame.decode(data)
    assert Frame.decode(data, max_frame_size=len(data)) == big


def test_every_truncation_is_refused() -> None:
    data = sample().encode()
    for n in range(len(data)):
        with pytest.raises(libsim.FrameError) as info:
            Frame.decode(data[:n])
        assert info.value.code in (Errc.TRUNCATED, Errc.BAD_LENGTH), n


@pytest.mark.parametrize(
    ("offset", "value", "code"),
    [
        (0, 2, Errc.UNSUPPORTED_VERSION),
        (1, 0x7F, Errc.UNKNOWN_FRAME_TYPE),
        (3, 1, Errc.BAD_FIELD),  # flags
    ],
)
def test_corrupted_header(offset: int, value: int, code: Errc) -> None:
    data = bytearray(sample().encode())
    data[offset] = value
    with pytest.raises(libsim.FrameError) as info:
        Frame.decode(bytes(data))
    assert info.value.code == code


def test_trailing_bytes_and_bad_inner_lengths() -> None:
    data = sample().encode()
    with pytest.raises(libsim.FrameError) as info:
        Frame.decode(data + b"\x00")
    assert info.value.code == Errc.TRAILING_BYTES
    # the source-length byte (after the 8-byte header and the 4-byte sid) claims more than the body holds
    bad = bytearray(data)
    bad[12] = 200
    with pytest.raises(libsim.FrameError):
        Frame.decode(bytes(bad))


def test_invalid_utf8_in_a_received_name_does_not_raise() -> None:
    body = struct.pack(">I", 0) + b"\x02\xff\xfe" + b"\x01b" + struct.pack(">I", 0)
    data = struct.pack(">BBHI", 1, int(FrameType.MESSAGE), 0, len(body)) + body
    frame = Frame.decode(data)
    assert frame.source == "\ufffd\ufffd"


def test_decoder_accepts_any_split() -> None:
    frames = [sample(t) for t in INNER]
    stream = b"".join(f.encode() for f in frames)
    decoder = FrameDecoder()
    out = []
    for i in range(len(stream)):
        decoder.feed(stream[i:i + 1])
        out.extend(decoder)
    assert out == frames
    assert decoder.buffered == 0
    assert decoder.bytes_needed == libsim.frame.MIN_FRAME_SIZE


def test_decoder_reports_bytes_needed() -> None:
    data = sample().encode()
    decoder = FrameDecoder()
    decoder.feed(data[:10])
    assert decoder.next() is None
    assert decoder.bytes_needed == len(data) - 10
    decoder.feed(data[10:])
    assert decoder.next() == sample()
    assert decoder.next() is None


def test_decoder_refuses_oversize_from_the_header_and_stays_failed() -> None:
    decoder = FrameDecoder(max_frame_size=1024)
    decoder.feed(struct.pack(">BBHI", 1, int(FrameType.MESSAGE), 0, 1 << 20))
    with pytest.raises(libsim.MessageTooLarge):
        decoder.next()
    assert decoder.failed
    decoder.feed(sample().encode())
    with pytest.raises(libsim.MessageTooLarge):
        list(decoder)


def test_error_frames() -> None:
    frame = libsim.make_error_frame(Errc.SOURCE_MISMATCH, "bad\nsource")
    assert frame.type == FrameType.ERROR
    err = Frame.decode(frame.encode()).peer_error()
    assert isinstance(err, libsim.RoutingError)
    assert err.code == Errc.SOURCE_MISMATCH
    assert err.detail == "bad?source"  # control characters are replaced
    long = libsim.make_error_frame(Errc.INTERNAL, "x" * 1000).peer_error()
    assert len(long.detail) == libsim.frame.MAX_ERROR_DETAIL_SIZE
    with pytest.raises(libsim.InvalidArgument):
        sample().peer_error()
    with pytest.raises(libsim.FrameError):
        Frame(FrameType.ERROR, payload=b"\x00").peer_error()
