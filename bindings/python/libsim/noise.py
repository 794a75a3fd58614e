"""The Noise handshake (revision 34): patterns XX and IK over Curve25519, AESGCM or ChaChaPoly, SHA256.

``HandshakeState`` says what it wants next (``next_action``); the caller moves the bytes::

    hs = HandshakeState(pattern=Pattern.XX, cipher=NoiseCipher.CHACHAPOLY, role=Role.INITIATOR,
                        static_private=private_key)
    message = hs.write_message(b"")
    ...
    send, receive = hs.split()    # CipherStates, initiator->responder first
"""

from ._libsim import (
    NOISE_MAX_MESSAGE_SIZE,
    Action,
    CipherState,
    HandshakeState,
    NoiseCipher,
    Pattern,
    Role,
    fingerprint,
    protocol_name,
    x25519_keypair,
    x25519_public_key,
)

__all__ = [
    "NOISE_MAX_MESSAGE_SIZE",
    "Action",
    "CipherState",
    "HandshakeState",
    "NoiseCipher",
    "Pattern",
    "Role",
    "fingerprint",
    "protocol_name",
    "x25519_keypair",
    "x25519_public_key",
]
