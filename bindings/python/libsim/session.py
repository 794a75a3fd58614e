"""Cipher suites and record sessions: seal and open records, with key rotation driven by an injectable clock.

::

    clock = ManualClock()
    rotation = RotationPolicy(interval=30.0)
    sender = SendSession(key, suite=SuiteId.AES256_GCM, rotation=rotation, clock=clock)
    receiver = RecvSession(key, suite=SuiteId.AES256_GCM, rotation=rotation, clock=clock)
    receiver.open(sender.seal(b"hello"))
    clock.advance(31)             # the next seal rotates the key
"""

from ._libsim import (
    RECORD_HEADER_SIZE,
    ManualClock,
    RecvSession,
    Rng,
    RotationPolicy,
    SendSession,
    SessionStatus,
    SuiteId,
    SuitePolicy,
    next_epoch_key,
)

__all__ = [
    "RECORD_HEADER_SIZE",
    "ManualClock",
    "RecvSession",
    "Rng",
    "RotationPolicy",
    "SendSession",
    "SessionStatus",
    "SuiteId",
    "SuitePolicy",
    "next_epoch_key",
]
