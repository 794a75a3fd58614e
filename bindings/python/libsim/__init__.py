"""libsim: secure instant messaging, from Python.

The package wraps the C++ library: the frame codec (:mod:`libsim.frame`), cipher suites and record sessions
(:mod:`libsim.session`), the Noise handshake (:mod:`libsim.noise`) and libsim's channel handshake built on it
(:mod:`libsim.channel`), the networked client (:mod:`libsim.client`; for asyncio ``import libsim.aio``),
and a helper that runs a real ``simd`` for tests (:mod:`libsim.server`, fixtures in :mod:`libsim.pytest_plugin`).
Errors are the exceptions in :mod:`libsim.errors`. Bytes are ``bytes``, text is ``str``. Blocking calls and
cryptography release the GIL.

::

    import libsim

    with libsim.Client("127.0.0.1", 7000, user="alice", state_password="alice's state password") as client:
        client.login("alice", "correct horse", "bob")
        client.wait_for(libsim.EventKind.KEY_ASSIGNED, "bob", timeout=30)
        client.send("bob", "hello")
        for event in client.events(timeout=10):
            if isinstance(event, libsim.MessageEvent):
                print(f"{event.peer}: {event.text}")

Conversations are end to end by default. The identity key persists in an encrypted state file, by default one per
user and server under ``$XDG_CONFIG_HOME/libsim/keys`` (``state_file=`` chooses another, ``in_memory_state=True``
keeps none); ``peer_identity``, ``verify_peer`` and ``accept_identity`` handle safety numbers and changed keys.
"""

from . import errors  # first: registers the exception factory of the extension
from ._libsim import __version__
from .channel import Channel, ChannelAction, ClientHandshake, HandshakeProtocol, KnownServers, ServerHandshake
from .client import (AuthenticatedEvent, ChannelReadyEvent, Client, ClosedEvent, ConversationMode, DeviceInfo,
                     DeviceInfoEvent, DevicesChangedEvent, ErrorEvent, Event, LinkCodeEvent, LinkRequestEvent,
                     EventIterator, EventKind, GapEvent, IdentityChangedEvent, InboxEntry, InboxStatus, KeyAssignedEvent,
                     KeyDirection, KeyRotatedEvent, MessageEvent, PasswordChangedEvent, PeerIdentity, PeerLeftEvent,
                     PeerOnlineEvent, PresenceEvent, ReceiptEvent, ReceiptStatus, TrustMode, TrustRequiredEvent,
                     WaitingEvent, connect, peer_of, pair_conversation_id)
from .errors import (
    AccountError,
    ClosedError,
    CryptoError,
    Errc,
    Error,
    FrameError,
    HandshakeError,
    InvalidArgument,
    MessageTooLarge,
    NetworkError,
    RoutingError,
    StateError,
    StorageError,
    TimeoutError,
    describe,
)
from .frame import (
    DEFAULT_MAX_FRAME_SIZE,
    AckStage,
    Frame,
    FrameDecoder,
    FrameType,
    make_error_frame,
)
from .noise import (
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
from .server import Server, ServerError, SimdNotFound
from .session import (
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
    "__version__",
    "errors",
    # channel handshake
    "Channel",
    "ChannelAction",
    "ClientHandshake",
    "HandshakeProtocol",
    "KnownServers",
    "ServerHandshake",
    # client
    "AuthenticatedEvent",
    "ChannelReadyEvent",
    "Client",
    "ClosedEvent",
    "ConversationMode",
    "ErrorEvent",
    "Event",
    "EventIterator",
    "EventKind",
    "DeviceInfo",
    "DeviceInfoEvent",
    "DevicesChangedEvent",
    "GapEvent",
    "LinkCodeEvent",
    "LinkRequestEvent",
    "IdentityChangedEvent",
    "InboxEntry",
    "InboxStatus",
    "KeyAssignedEvent",
    "KeyDirection",
    "KeyRotatedEvent",
    "MessageEvent",
    "PasswordChangedEvent",
    "PeerIdentity",
    "PeerLeftEvent",
    "PeerOnlineEvent",
    "PresenceEvent",
    "ReceiptEvent",
    "ReceiptStatus",
    "TrustMode",
    "TrustRequiredEvent",
    "WaitingEvent",
    "connect",
    "peer_of",
    "pair_conversation_id",
    # errors
    "AccountError",
    "ClosedError",
    "CryptoError",
    "Errc",
    "Error",
    "FrameError",
    "HandshakeError",
    "InvalidArgument",
    "MessageTooLarge",
    "NetworkError",
    "RoutingError",
    "StateError",
    "StorageError",
    "TimeoutError",
    "describe",
    # frames
    "DEFAULT_MAX_FRAME_SIZE",
    "AckStage",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "make_error_frame",
    # noise
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
    # server helper
    "Server",
    "ServerError",
    "SimdNotFound",
    # sessions
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
