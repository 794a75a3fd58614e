"""The exceptions libsim raises.

Every libsim failure carries an :class:`Errc` code and a short detail text (never secrets or user content). The
classes group the codes so that callers can catch what they can handle::

    Error                      any libsim error; .code (Errc), .detail (str)
    ├── FrameError             malformed wire data: truncated, bad field, trailing bytes...
    │   └── MessageTooLarge    a frame or message over the size limit (also a ValueError)
    ├── CryptoError            bad key, failed MAC/tag, replay, stale epoch, suite refused...
    ├── HandshakeError         the handshake failed; the server key is unknown or does not match the pin
    ├── StateError             the call does not fit the object's state (e.g. a session that died)
    ├── AccountError           login refused, bad user name or password, throttled...
    ├── StorageError           the server's database failed
    ├── RoutingError           the server refused a request: source mismatch, destination offline...
    ├── TimeoutError           a deadline passed (also the built-in TimeoutError)
    ├── ClosedError            the connection or object is closed (also a ConnectionError)
    ├── NetworkError           an operating-system I/O error (also an OSError)
    └── InvalidArgument        a value outside the documented range (also a ValueError)

Wrong Python types (bytes where text is expected, a str where bytes are expected) raise the built-in TypeError.
"""

from __future__ import annotations

import builtins

from ._libsim import Errc, _set_error_factory, describe

__all__ = [
    "Errc",
    "describe",
    "Error",
    "FrameError",
    "MessageTooLarge",
    "CryptoError",
    "HandshakeError",
    "StateError",
    "AccountError",
    "StorageError",
    "RoutingError",
    "TimeoutError",
    "ClosedError",
    "NetworkError",
    "InvalidArgument",
    "error_class",
]


_KNOWN_CODES = frozenset(int(v) for v in Errc.__members__.values())


class Error(Exception):
    """A libsim error: ``code`` is an :class:`Errc`, ``detail`` a short text without secrets or user content."""

    code: Errc
    detail: str

    def __init__(self, code: Errc | int, detail: str = "") -> None:
        value = int(code)
        # A newer peer may send a code this build does not know: it stays a plain int.
        self.code = Errc(value) if value in _KNOWN_CODES else value  # type: ignore[assignment]
        self.detail = detail
        super().__init__(self._message())

    def _message(self) -> str:
        if isinstance(self.code, Errc):
            text, name = describe(self.code), self.code.name
        else:
            text, name = f"unknown error {self.code}", str(self.code)
        if self.detail:
            text += f": {self.detail}"
        return f"{text} [{name}]"

    def __reduce__(self):  # keep pickling (e.g. multiprocessing) working with the two-argument constructor
        return (type(self), (int(self.code), self.detail))

    def __repr__(self) -> str:
        code = f"Errc.{self.code.name}" if isinstance(self.code, Errc) else str(self.code)
        return f"{type(self).__name__}({code}, {self.detail!r})"


class FrameError(Error):
    """Wire data that does not decode, or a frame that cannot be encoded."""


class MessageTooLarge(FrameError, ValueError):
    """A frame or message exceeds the size limit."""


class CryptoError(Error):
    """A key, MAC, tag, replay or suite check failed."""


class HandshakeError(Error):
    """The handshake failed, or the server's key is unknown or does not match the pinned one."""


class StateError(Error):
    """The call does not fit the object's state (for instance a session that died after an error)."""


class AccountError(Error):
    """Login or registration refused, or a user name or password that is not allowed."""


class StorageError(Error):
    """The server's storage failed."""


class RoutingError(Error):
    """The server refused a request: not authenticated, source mismatch, destination offline, rate limited..."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - deliberately also the built-in TimeoutError
    """A deadline passed."""


class ClosedError(Error, ConnectionError):
    """The connection or the object is closed."""


class NetworkError(Error, OSError):
    """An operating-system I/O call failed (connection refused, unreachable...)."""


class InvalidArgument(Error, ValueError):
    """A value outside the documented range."""


_BY_CODE: dict[int, type[Error]] = {
    int(Errc.FRAME_TOO_LARGE): MessageTooLarge,
    int(Errc.INVALID_STATE): StateError,
    int(Errc.HANDSHAKE_FAILED): HandshakeError,
    int(Errc.SERVER_KEY_MISMATCH): HandshakeError,
    int(Errc.SERVER_KEY_UNKNOWN): HandshakeError,
    int(Errc.TIMEOUT): TimeoutError,
    int(Errc.CLOSED): ClosedError,
    int(Errc.IO_ERROR): NetworkError,
    int(Errc.INVALID_ARGUMENT): InvalidArgument,
}

_BY_HUNDREDS: dict[int, type[Error]] = {
    1: FrameError,
    2: CryptoError,
    3: StateError,
    4: AccountError,
    5: StorageError,
    6: RoutingError,
}


def error_class(code: Errc | int) -> type[Error]:
    """The exception class libsim uses for ``code``."""
    value = int(code)
    return _BY_CODE.get(value) or _BY_HUNDREDS.get(value // 100, Error)


def _from_code(code: int, detail: str) -> Error:
    return error_class(code)(code, detail)


_set_error_factory(_from_code)
