"""The frame codec: the unit every libsim byte stream is cut into (docs/protocol.md section 2).

A frame has a type, a sid, a source and a destination name (``str``) and a payload (``bytes``)::

    data = Frame(FrameType.MESSAGE, source="alice", destination="bob", payload=b"...").encode()
    frame = Frame.decode(data)

    decoder = FrameDecoder()
    decoder.feed(chunk)           # bytes in any split
    for frame in decoder:         # the complete frames so far
        ...
"""

from ._libsim import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_HEADER_SIZE,
    FRAME_VERSION,
    KEYGEN_SID,
    MAX_ERROR_DETAIL_SIZE,
    MAX_NAME_SIZE,
    MIN_FRAME_SIZE,
    AckStage,
    Frame,
    FrameDecoder,
    FrameType,
    make_error_frame,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "FRAME_HEADER_SIZE",
    "FRAME_VERSION",
    "KEYGEN_SID",
    "MAX_ERROR_DETAIL_SIZE",
    "MAX_NAME_SIZE",
    "MIN_FRAME_SIZE",
    "AckStage",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "make_error_frame",
]
