"""The exception hierarchy: every code maps to a class, classes mix in the matching built-ins."""

from __future__ import annotations

import builtins
import pickle
import re

import pytest

import libsim
from libsim import Errc, errors

from conftest import SOURCE_ROOT


def test_every_code_has_a_description_and_a_class() -> None:
    assert len(Errc.__members__) >= 40
    for name, code in Errc.__members__.items():
        assert libsim.describe(code) != "unknown error", name
        cls = errors.error_class(code)
        assert issubclass(cls, libsim.Error)
        err = cls(code, "detail")
        assert err.code is code or err.code == code
        assert str(err).endswith(f": detail [{name}]")


def test_every_code_of_the_library_is_bound() -> None:
    header = SOURCE_ROOT / "libsim" / "include" / "sim" / "error.h"
    codes = {int(m.group(1)) for m in re.finditer(r"^\s+[a-z_]+ = (\d+),", header.read_text(), re.MULTILINE)}
    assert len(codes) >= 40
    assert codes == {int(code) for code in Errc.__members__.values()}


@pytest.mark.parametrize(
    ("code", "cls", "builtin"),
    [
        (Errc.TRUNCATED, libsim.FrameError, None),
        (Errc.FRAME_TOO_LARGE, libsim.MessageTooLarge, ValueError),
        (Errc.AUTH_FAILED, libsim.CryptoError, None),
        (Errc.SERVER_KEY_MISMATCH, libsim.HandshakeError, None),
        (Errc.INVALID_STATE, libsim.StateError, None),
        (Errc.AUTH_REJECTED, libsim.AccountError, None),
        (Errc.STORAGE_ERROR, libsim.StorageError, None),
        (Errc.SOURCE_MISMATCH, libsim.RoutingError, None),
        (Errc.TIMEOUT, libsim.TimeoutError, builtins.TimeoutError),
        (Errc.CLOSED, libsim.ClosedError, ConnectionError),
        (Errc.IO_ERROR, libsim.NetworkError, OSError),
        (Errc.INVALID_ARGUMENT, libsim.InvalidArgument, ValueError),
        (Errc.INTERNAL, libsim.Error, None),
    ],
    ids=lambda v: v.name if isinstance(v, Errc) else getattr(v, "__name__", str(v)),
)
def test_classes(code: Errc, cls: type, builtin: type | None) -> None:
    assert errors.error_class(code) is cls
    err = errors._from_code(int(code), "why")
    assert type(err) is cls
    if builtin is not None:
        assert isinstance(err, builtin)
    with pytest.raises(libsim.Error):
        raise err


def test_unknown_code_from_a_newer_peer_stays_an_int() -> None:
    err = errors._from_code(1234, "")
    assert type(err) is libsim.Error
    assert err.code == 1234 and not isinstance(err.code, Errc)
    assert "unknown error 1234" in str(err)
    assert errors.error_class(650) is libsim.RoutingError


def test_pickle_round_trip() -> None:
    err = errors._from_code(int(Errc.REPLAYED), "seq 7")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is libsim.CryptoError
    assert back.code == Errc.REPLAYED and back.detail == "seq 7"
    assert repr(back) == "CryptoError(Errc.REPLAYED, 'seq 7')"


def test_errors_raised_by_the_extension_carry_code_and_detail() -> None:
    with pytest.raises(libsim.FrameError) as info:
        libsim.Frame.decode(b"\x01\x13\x00")
    assert info.value.code == Errc.TRUNCATED
    assert info.value.detail  # a clear detail text
    assert "[TRUNCATED]" in str(info.value)
