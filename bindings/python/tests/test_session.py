"""Suites and record sessions from Python: seal/open, failures, and rotation driven by an injected clock."""

from __future__ import annotations

import threading

import pytest

import libsim
from libsim import Errc, ManualClock, RecvSession, RotationPolicy, SendSession, SuiteId, SuitePolicy

SUITES = list(SuiteId.__members__.values())


def key_for(suite: SuiteId, fill: int = 0x42) -> bytes:
    return bytes([fill]) * suite.key_size


def pair(suite: SuiteId = SuiteId.AES256_GCM, **options: object) -> tuple[SendSession, RecvSession]:
    key = key_for(suite)
    return SendSession(key, suite=suite, **options), RecvSession(key, suite=suite, **options)


def test_suite_ids() -> None:
    assert SuiteId.TDES_CBC_HMAC_SHA256.key_size == 24
    assert SuiteId.AES256_GCM.key_size == 32
    assert SuiteId.parse("aes-256-gcm") == SuiteId.AES256_GCM
    assert SuiteId.parse("ChaCha20-Poly1305") == SuiteId.CHACHA20_POLY1305
    assert SuiteId.TDES_CBC_HMAC_SHA256.display_name == "TDES-CBC-HMAC-SHA256"
    with pytest.raises(ValueError):
        SuiteId.parse("rot13")


def test_suite_policy() -> None:
    assert SuitePolicy.default().preference[0] == SuiteId.AES256_GCM
    assert SuitePolicy.require_tdes().preference == [SuiteId.TDES_CBC_HMAC_SHA256]
    assert SuiteId.TDES_CBC_HMAC_SHA256 not in SuitePolicy.forbid_tdes()
    policy = SuitePolicy([SuiteId.CHACHA20_POLY1305, SuiteId.AES256_GCM])
    assert policy.choose([SuiteId.AES256_GCM, SuiteId.CHACHA20_POLY1305]) == SuiteId.CHACHA20_POLY1305
    with pytest.raises(libsim.CryptoError) as info:
        policy.choose([SuiteId.TDES_CBC_HMAC_SHA256])
    assert info.value.code == Errc.NO_COMMON_SUITE
    with pytest.raises(libsim.InvalidArgument):
        SuitePolicy([])


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_seal_open(suite: SuiteId) -> None:
    send, recv = pair(suite)
    for text in (b"", b"hello", bytes(range(256)) * 10):
        record = send.seal(text)
        assert isinstance(record, bytes)
        assert len(record) >= libsim.session.RECORD_HEADER_SIZE + len(text)
        assert recv.open(record) == text
    assert send.status.next_seq == 3 and recv.status.next_seq == 3
    assert send.status.suite == suite


def test_wrong_key_size_and_types() -> None:
    with pytest.raises(libsim.CryptoError) as info:
        SendSession(b"short", suite=SuiteId.AES256_GCM)
    assert info.value.code == Errc.INVALID_KEY
    with pytest.raises(libsim.CryptoError):
        RecvSession(bytes(32), suite=SuiteId.TDES_CBC_HMAC_SHA256)  # TDES keys are 24 bytes
    with pytest.raises(TypeError):
        SendSession("a str is not a key" * 2)  # type: ignore[arg-type]
    send, _ = pair()
    with pytest.raises(TypeError):
        send.seal("text is not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="clock must be"):
        SendSession(bytes(32), clock=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RotationPolicy(interval=-1)
    with pytest.raises(ValueError):
        RotationPolicy(grace=float("nan"))
    with pytest.raises(libsim.InvalidArgument):
        SendSession(bytes(32), replay_window=1 << 20)


@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_tampering_kills_a_fail_closed_session(suite: SuiteId) -> None:
    send, recv = pair(suite)
    record = bytearray(send.seal(b"attack at dawn"))
    record[-1] ^= 0x01
    with pytest.raises(libsim.CryptoError) as info:
        recv.open(bytes(record))
    assert info.value.code == Errc.AUTH_FAILED
    assert recv.dead
    with pytest.raises(libsim.StateError):
        recv.open(send.seal(b"too late"))


def test_a_lenient_session_drops_only_the_bad_record() -> None:
    send, recv = pair(fail_closed=False)
    good = send.seal(b"one")
    bad = bytearray(send.seal(b"two"))
    bad[20] ^= 0x80
    with pytest.raises(libsim.CryptoError):
        recv.open(bytes(bad))
    assert recv.open(good) == b"one"
    assert not recv.dead


def test_replay_and_truncation() -> None:
    send, recv = pair(fail_closed=False)
    record = send.seal(b"once")
    assert recv.open(record) == b"once"
    with pytest.raises(libsim.CryptoError) as info:
        recv.open(record)
    assert info.value.code == Errc.REPLAYED
    with pytest.raises(libsim.FrameError) as truncated:
        recv.open(record[:10])
    assert truncated.value.code == Errc.TRUNCATED


def test_wrong_key_fails() -> None:
    send = SendSession(key_for(SuiteId.AES256_GCM, 1))
    recv = RecvSession(key_for(SuiteId.AES256_GCM, 2))
    with pytest.raises(libsim.CryptoError):
        recv.open(send.seal(b"x"))


def test_rotation_follows_the_injected_manual_clock() -> None:
    clock = ManualClock()
    rotation = RotationPolicy(interval=30.0, grace=30.0)
    send, recv = pair(rotation=rotation, clock=clock)
    assert recv.open(send.seal(b"epoch 0")) == b"epoch 0"
    clock.advance(29.0)
    send.seal(b"still epoch 0")
    assert send.epoch == 0
    clock.advance(2.0)
    old = send.seal(b"epoch 1")  # the key is 31 s old: rotated first
    assert send.epoch == 1
    assert recv.open(old) == b"epoch 1"
    assert recv.epoch == 1
    clock.advance(31.0)
    assert recv.open(send.seal(b"epoch 2")) == b"epoch 2"
    assert (send.epoch, recv.epoch) == (2, 2)


def test_stale_epoch_after_rotation() -> None:
    send, recv = pair(fail_closed=False)
    before = send.seal(b"epoch 0, delivered late")
    send.rotate()
    assert recv.open(send.seal(b"epoch 1")) == b"epoch 1"
    with pytest.raises(libsim.CryptoError) as info:
        recv.open(before)
    assert info.value.code == Errc.STALE_EPOCH


def test_a_sender_that_never_rotates_is_refused_after_interval_plus_grace() -> None:
    clock = ManualClock()
    key = key_for(SuiteId.AES256_GCM)
    send = SendSession(key, rotation=RotationPolicy(interval=0), clock=clock)  # time rotation off
    recv = RecvSession(key, rotation=RotationPolicy(interval=10.0, grace=5.0), clock=clock)
    assert recv.open(send.seal(b"fresh")) == b"fresh"
    clock.advance(16.0)
    with pytest.raises(libsim.CryptoError) as info:
        recv.open(send.seal(b"stale key"))
    assert info.value.code == Errc.KEY_EXPIRED


def test_a_callable_clock_is_injected() -> None:
    now = [100.0]
    send, recv = pair(rotation=RotationPolicy(interval=5.0), clock=lambda: now[0])
    recv.open(send.seal(b"a"))
    now[0] += 6.0
    recv.open(send.seal(b"b"))
    assert send.epoch == 1 and recv.epoch == 1


def test_errors_of_a_callable_clock_propagate() -> None:
    class Broken(Exception):
        pass

    calls = []

    def clock() -> float:
        calls.append(1)
        if len(calls) > 1:
            raise Broken("clock failed")
        return 0.0

    send = SendSession(bytes(32), clock=clock)
    with pytest.raises(Broken):
        send.seal(b"x")
    with pytest.raises(TypeError, match="number of seconds"):
        SendSession(bytes(32), clock=lambda: "noon").seal(b"x")


def test_next_epoch_key_is_one_way_and_deterministic() -> None:
    k0 = bytes(32)
    k1 = libsim.next_epoch_key(k0)
    assert len(k1) == 32 and k1 != k0
    assert libsim.next_epoch_key(k0) == k1
    assert libsim.next_epoch_key(k1) != k1


def test_closed_sessions_raise_state_error() -> None:
    with SendSession(bytes(32)) as send:
        send.seal(b"x")
    assert send.dead
    with pytest.raises(libsim.StateError):
        send.seal(b"y")
    with pytest.raises(libsim.StateError):
        send.rotate()


def test_concurrent_seal_from_threads() -> None:
    send, recv = pair(replay_window=1024)
    records: list[bytes] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(200):
            r = send.seal(f"{n}:{i}".encode())
            with lock:
                records.append(r)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    opened = {recv.open(r) for r in records}
    assert len(opened) == 800
    assert send.status.next_seq == 800


def test_rng() -> None:
    a = libsim.Rng.deterministic(b"seed")
    b = libsim.Rng.deterministic(b"seed")
    assert a.bytes(32) == b.bytes(32)
    assert a.is_deterministic and not libsim.Rng().is_deterministic
    assert libsim.Rng().bytes(32) != libsim.Rng().bytes(32)
    with pytest.raises(ValueError):
        libsim.Rng.deterministic(b"")
