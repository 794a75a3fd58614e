# Type stubs of the native extension libsim._libsim (kept in sync by tests/test_stubs.py).
from __future__ import annotations

import os
from typing import Any, Callable, ClassVar, Optional, Union

BytesLike = Union[bytes, bytearray, memoryview]
ClockLike = Union[None, "ManualClock", Callable[[], float]]

__version__: str

class _Enum:
    """A pybind11 enum: members are instances; int(member) is the value; members compare equal only to members."""
    def __init__(self, value: int) -> None: ...
    def __int__(self) -> int: ...
    def __index__(self) -> int: ...
    def __eq__(self, other: object) -> bool: ...
    def __ne__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...

# ---------------------------------------------------------------- errors

class Errc(_Enum):
    OK: ClassVar[Errc]  # 0
    TRUNCATED: ClassVar[Errc]  # 100
    FRAME_TOO_LARGE: ClassVar[Errc]  # 101
    UNSUPPORTED_VERSION: ClassVar[Errc]  # 102
    UNKNOWN_FRAME_TYPE: ClassVar[Errc]  # 103
    BAD_LENGTH: ClassVar[Errc]  # 104
    TRAILING_BYTES: ClassVar[Errc]  # 105
    BAD_FIELD: ClassVar[Errc]  # 106
    INVALID_KEY: ClassVar[Errc]  # 200
    AUTH_FAILED: ClassVar[Errc]  # 201
    REPLAYED: ClassVar[Errc]  # 202
    OUT_OF_WINDOW: ClassVar[Errc]  # 203
    EPOCH_TOO_FAR: ClassVar[Errc]  # 204
    STALE_EPOCH: ClassVar[Errc]  # 205
    KEY_EXPIRED: ClassVar[Errc]  # 206
    SUITE_NOT_ALLOWED: ClassVar[Errc]  # 207
    NO_COMMON_SUITE: ClassVar[Errc]  # 208
    LIMIT_REACHED: ClassVar[Errc]  # 209
    INVALID_STATE: ClassVar[Errc]  # 300
    HANDSHAKE_FAILED: ClassVar[Errc]  # 301
    SERVER_KEY_MISMATCH: ClassVar[Errc]  # 302
    SERVER_KEY_UNKNOWN: ClassVar[Errc]  # 303
    IDENTITY_CHANGED: ClassVar[Errc]  # 304
    BAD_USERNAME: ClassVar[Errc]  # 400
    BAD_PASSWORD: ClassVar[Errc]  # 401
    AUTH_REJECTED: ClassVar[Errc]  # 402
    USER_EXISTS: ClassVar[Errc]  # 403
    USER_NOT_FOUND: ClassVar[Errc]  # 404
    THROTTLED: ClassVar[Errc]  # 405
    REGISTRATION_CLOSED: ClassVar[Errc]  # 406
    BAD_HASH: ClassVar[Errc]  # 407
    TOKEN_INVALID: ClassVar[Errc]  # 408
    DEVICE_UNKNOWN: ClassVar[Errc]  # 409
    STORAGE_ERROR: ClassVar[Errc]  # 500
    SCHEMA_TOO_NEW: ClassVar[Errc]  # 501
    CORRUPT_DATABASE: ClassVar[Errc]  # 502
    STORE_FULL: ClassVar[Errc]  # 503
    NOT_AUTHENTICATED: ClassVar[Errc]  # 600
    SOURCE_MISMATCH: ClassVar[Errc]  # 601
    DESTINATION_OFFLINE: ClassVar[Errc]  # 602
    BAD_DESTINATION: ClassVar[Errc]  # 603
    NO_CONVERSATION: ClassVar[Errc]  # 604
    RATE_LIMITED: ClassVar[Errc]  # 605
    QUEUE_FULL: ClassVar[Errc]  # 606
    TIMEOUT: ClassVar[Errc]  # 607
    CLOSED: ClassVar[Errc]  # 608
    BUSY: ClassVar[Errc]  # 609
    OUT_OF_ORDER: ClassVar[Errc]  # 610
    QUOTA_EXCEEDED: ClassVar[Errc]  # 611
    DEVICE_PENDING: ClassVar[Errc]  # 612
    DEVICES_CHANGED: ClassVar[Errc]  # 613
    INVALID_ARGUMENT: ClassVar[Errc]  # 900
    NOT_IMPLEMENTED: ClassVar[Errc]  # 901
    IO_ERROR: ClassVar[Errc]  # 902
    INTERNAL: ClassVar[Errc]  # 999
    __members__: ClassVar[dict[str, Errc]]

def describe(code: Errc) -> str: ...
def _set_error_factory(factory: Callable[[int, str], BaseException]) -> None: ...

# ---------------------------------------------------------------- frames

class FrameType(_Enum):
    HANDSHAKE: ClassVar[FrameType]  # 0x01
    RECORD: ClassVar[FrameType]  # 0x02
    INIT: ClassVar[FrameType]  # 0x10
    ACK_INIT: ClassVar[FrameType]  # 0x11
    KEYGEN: ClassVar[FrameType]  # 0x12
    MESSAGE: ClassVar[FrameType]  # 0x13
    PROBE: ClassVar[FrameType]  # 0x14
    ERROR: ClassVar[FrameType]  # 0x15
    CLOSE: ClassVar[FrameType]  # 0x16
    PREKEYS: ClassVar[FrameType]  # 0x17
    ACK: ClassVar[FrameType]  # 0x18
    RECEIPT: ClassVar[FrameType]  # 0x19
    LIMITS: ClassVar[FrameType]  # 0x1a
    PASSWD: ClassVar[FrameType]  # 0x1b
    __members__: ClassVar[dict[str, FrameType]]
    @property
    def is_transport(self) -> bool: ...

class AckStage(_Enum):
    AUTHENTICATED: ClassVar[AckStage]  # 1
    DESTINATION_ONLINE: ClassVar[AckStage]  # 2
    DESTINATION_OFFLINE: ClassVar[AckStage]  # 3
    __members__: ClassVar[dict[str, AckStage]]

FRAME_VERSION: int
FRAME_HEADER_SIZE: int
MIN_FRAME_SIZE: int
MAX_NAME_SIZE: int
DEFAULT_MAX_FRAME_SIZE: int
MAX_ERROR_DETAIL_SIZE: int
KEYGEN_SID: int

class Frame:
    type: FrameType
    sid: int
    source: str
    destination: str
    payload: bytes
    def __init__(
        self, type: FrameType, *, sid: int = 0, source: str = "", destination: str = "", payload: BytesLike = b""
    ) -> None: ...
    def encode(self, *, max_frame_size: int = ...) -> bytes: ...
    @staticmethod
    def decode(data: BytesLike, *, max_frame_size: int = ...) -> Frame: ...
    @property
    def encoded_size(self) -> int: ...
    def peer_error(self) -> Any: ...  # a libsim.errors.Error instance
    def __eq__(self, other: object) -> bool: ...
    def __copy__(self) -> Frame: ...
    def __deepcopy__(self, memo: dict[Any, Any]) -> Frame: ...

def make_error_frame(code: Errc, detail: str = "") -> Frame: ...

class FrameDecoder:
    def __init__(self, *, max_frame_size: int = ...) -> None: ...
    def feed(self, data: BytesLike) -> None: ...
    def next(self) -> Optional[Frame]: ...
    def __iter__(self) -> FrameDecoder: ...
    def __next__(self) -> Frame: ...
    @property
    def bytes_needed(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def failed(self) -> bool: ...
    @property
    def max_frame_size(self) -> int: ...

# ---------------------------------------------------------------- randomness, clocks, keys

class Rng:
    def __init__(self) -> None: ...
    @staticmethod
    def deterministic(seed: BytesLike) -> Rng: ...
    def bytes(self, n: int) -> bytes: ...
    @property
    def is_deterministic(self) -> bool: ...

class ManualClock:
    def __init__(self, start: float = 0.0) -> None: ...
    def advance(self, seconds: float) -> None: ...
    def set(self, seconds: float) -> None: ...
    def now(self) -> float: ...
    def __call__(self) -> float: ...

def x25519_keypair(*, rng: Optional[Rng] = None) -> tuple[bytes, bytes]: ...
def x25519_public_key(private_key: BytesLike) -> bytes: ...
def fingerprint(public_key: BytesLike) -> str: ...
def pair_conversation_id(a: str, b: str) -> bytes: ...

# ---------------------------------------------------------------- suites and sessions

class SuiteId(_Enum):
    TDES_CBC_HMAC_SHA256: ClassVar[SuiteId]  # 1
    AES256_GCM: ClassVar[SuiteId]  # 2
    CHACHA20_POLY1305: ClassVar[SuiteId]  # 3
    __members__: ClassVar[dict[str, SuiteId]]
    @property
    def display_name(self) -> str: ...
    @property
    def key_size(self) -> int: ...
    @staticmethod
    def parse(name: str) -> SuiteId: ...

class SuitePolicy:
    def __init__(self, preference: list[SuiteId]) -> None: ...
    @staticmethod
    def default() -> SuitePolicy: ...
    @staticmethod
    def require_tdes() -> SuitePolicy: ...
    @staticmethod
    def forbid_tdes() -> SuitePolicy: ...
    def allows(self, suite: SuiteId) -> bool: ...
    def __contains__(self, suite: SuiteId) -> bool: ...
    @property
    def preference(self) -> list[SuiteId]: ...
    def choose(self, peer_offer: list[SuiteId]) -> SuiteId: ...

class RotationPolicy:
    interval: float
    max_records: int
    max_bytes: int
    max_skipped_epochs: int
    grace: float
    def __init__(
        self,
        *,
        interval: float = 30.0,
        max_records: int = 1048576,
        max_bytes: int = 4294967296,
        max_skipped_epochs: int = 8,
        grace: float = 30.0,
    ) -> None: ...

class SessionStatus:
    @property
    def suite(self) -> SuiteId: ...
    @property
    def epoch(self) -> int: ...
    @property
    def next_seq(self) -> int: ...
    @property
    def dead(self) -> bool: ...

RECORD_HEADER_SIZE: int

class SendSession:
    def __init__(
        self,
        key: BytesLike,
        *,
        suite: SuiteId = SuiteId.AES256_GCM,
        rotation: Optional[RotationPolicy] = None,
        replay_window: int = 64,
        fail_closed: bool = True,
        clock: ClockLike = None,
        rng: Optional[Rng] = None,
    ) -> None: ...
    def seal(self, plaintext: BytesLike) -> bytes: ...
    def rotate(self) -> None: ...
    @property
    def status(self) -> SessionStatus: ...
    @property
    def epoch(self) -> int: ...
    @property
    def dead(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> SendSession: ...
    def __exit__(self, *args: object) -> bool: ...

class RecvSession:
    def __init__(
        self,
        key: BytesLike,
        *,
        suite: SuiteId = SuiteId.AES256_GCM,
        rotation: Optional[RotationPolicy] = None,
        replay_window: int = 64,
        fail_closed: bool = True,
        clock: ClockLike = None,
        rng: Optional[Rng] = None,
    ) -> None: ...
    def open(self, record: BytesLike) -> bytes: ...
    @property
    def status(self) -> SessionStatus: ...
    @property
    def epoch(self) -> int: ...
    @property
    def dead(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> RecvSession: ...
    def __exit__(self, *args: object) -> bool: ...

def next_epoch_key(key: BytesLike) -> bytes: ...

# ---------------------------------------------------------------- Noise handshake

class Pattern(_Enum):
    XX: ClassVar[Pattern]  # 0
    IK: ClassVar[Pattern]  # 1
    __members__: ClassVar[dict[str, Pattern]]

class NoiseCipher(_Enum):
    AESGCM: ClassVar[NoiseCipher]  # 0
    CHACHAPOLY: ClassVar[NoiseCipher]  # 1
    __members__: ClassVar[dict[str, NoiseCipher]]

class Role(_Enum):
    INITIATOR: ClassVar[Role]  # 0
    RESPONDER: ClassVar[Role]  # 1
    __members__: ClassVar[dict[str, Role]]

class Action(_Enum):
    WRITE_MESSAGE: ClassVar[Action]  # 0
    READ_MESSAGE: ClassVar[Action]  # 1
    SPLIT: ClassVar[Action]  # 2
    COMPLETE: ClassVar[Action]  # 3
    FAILED: ClassVar[Action]  # 4
    __members__: ClassVar[dict[str, Action]]

def protocol_name(pattern: Pattern, cipher: NoiseCipher) -> str: ...

NOISE_MAX_MESSAGE_SIZE: int

class CipherState:
    nonce: int
    def __init__(self, cipher: NoiseCipher, key: BytesLike) -> None: ...
    def encrypt_with_ad(self, ad: BytesLike, plaintext: BytesLike) -> bytes: ...
    def decrypt_with_ad(self, ad: BytesLike, ciphertext: BytesLike) -> bytes: ...
    def rekey(self) -> None: ...
    @property
    def has_key(self) -> bool: ...
    @property
    def cipher(self) -> NoiseCipher: ...

class HandshakeState:
    def __init__(
        self,
        *,
        pattern: Pattern,
        cipher: NoiseCipher,
        role: Role,
        static_private: BytesLike,
        prologue: BytesLike = b"",
        remote_static: Optional[BytesLike] = None,
        fixed_ephemeral: Optional[BytesLike] = None,
        rng: Optional[Rng] = None,
    ) -> None: ...
    @property
    def next_action(self) -> Action: ...
    def write_message(self, payload: BytesLike = b"") -> bytes: ...
    def read_message(self, message: BytesLike) -> bytes: ...
    def split(self) -> tuple[CipherState, CipherState]: ...
    @property
    def handshake_hash(self) -> bytes: ...
    @property
    def remote_static(self) -> bytes: ...
    @property
    def local_static(self) -> bytes: ...
    @property
    def failure(self) -> Any: ...  # a libsim.errors.Error instance, or None

# ---------------------------------------------------------------- client

class EventKind(_Enum):
    CHANNEL_READY: ClassVar[EventKind]  # 0
    TRUST_REQUIRED: ClassVar[EventKind]  # 1
    AUTHENTICATED: ClassVar[EventKind]  # 2
    WAITING: ClassVar[EventKind]  # 3
    PEER_ONLINE: ClassVar[EventKind]  # 4
    KEY_ASSIGNED: ClassVar[EventKind]  # 5
    KEY_ROTATED: ClassVar[EventKind]  # 6
    MESSAGE: ClassVar[EventKind]  # 7
    PEER_LEFT: ClassVar[EventKind]  # 8
    RECEIPT: ClassVar[EventKind]  # 9
    IDENTITY_CHANGED: ClassVar[EventKind]  # 10
    GAP: ClassVar[EventKind]  # 11
    ERROR: ClassVar[EventKind]  # 12
    CLOSED: ClassVar[EventKind]  # 13
    PASSWORD_CHANGED: ClassVar[EventKind]  # 14
    PRESENCE: ClassVar[EventKind]  # 15
    __members__: ClassVar[dict[str, EventKind]]

class ConversationMode(_Enum):
    SERVER_ASSIGNED: ClassVar[ConversationMode]  # 1
    END_TO_END: ClassVar[ConversationMode]  # 2
    __members__: ClassVar[dict[str, ConversationMode]]
    @property
    def display_name(self) -> str: ...

class TrustMode(_Enum):
    TOFU: ClassVar[TrustMode]  # 0
    ASK: ClassVar[TrustMode]  # 1
    PINNED_ONLY: ClassVar[TrustMode]  # 2
    __members__: ClassVar[dict[str, TrustMode]]

class KeyDirection(_Enum):
    SENDING: ClassVar[KeyDirection]  # 0
    RECEIVING: ClassVar[KeyDirection]  # 1
    __members__: ClassVar[dict[str, KeyDirection]]

class ReceiptStatus(_Enum):
    STORED: ClassVar[ReceiptStatus]  # 1
    DELIVERED: ClassVar[ReceiptStatus]  # 2
    __members__: ClassVar[dict[str, ReceiptStatus]]

class ChannelReadyEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def suite(self) -> SuiteId: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def first_contact(self) -> bool: ...

class TrustRequiredEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def fingerprint(self) -> str: ...

class AuthenticatedEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def user(self) -> str: ...

class WaitingEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...
    @property
    def reason(self) -> Any: ...  # a libsim.errors.Error instance, or None

class PeerOnlineEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...

class KeyAssignedEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...
    @property
    def suite(self) -> SuiteId: ...
    @property
    def mode(self) -> ConversationMode: ...
    @property
    def safety_number(self) -> Optional[str]: ...
    @property
    def first_contact(self) -> bool: ...

class KeyRotatedEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...
    @property
    def mode(self) -> ConversationMode: ...
    @property
    def epoch(self) -> int: ...
    @property
    def direction(self) -> KeyDirection: ...

class MessageEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def message_id(self) -> bytes: ...
    @property
    def seq(self) -> int: ...
    @property
    def mode(self) -> ConversationMode: ...
    @property
    def sent_at(self) -> Optional[float]: ...
    @property
    def received_at(self) -> Optional[float]: ...
    @property
    def conversation(self) -> bytes: ...
    @property
    def sender_device(self) -> int: ...
    @property
    def inbox_index(self) -> int: ...

class PeerLeftEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...

class ReceiptEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...
    @property
    def message_id(self) -> bytes: ...
    @property
    def status(self) -> ReceiptStatus: ...

class IdentityChangedEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...
    @property
    def safety_number(self) -> str: ...

class GapEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...
    @property
    def count(self) -> int: ...

class ErrorEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def error(self) -> Any: ...  # a libsim.errors.Error instance
    @property
    def peer(self) -> str: ...
    @property
    def message_id(self) -> Optional[bytes]: ...

class ClosedEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def reason(self) -> Any: ...  # a libsim.errors.Error instance, or None

class PasswordChangedEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def user(self) -> str: ...

class PresenceEvent:
    __match_args__: ClassVar[tuple[str, ...]]
    @property
    def kind(self) -> EventKind: ...
    @property
    def peer(self) -> str: ...
    @property
    def online(self) -> bool: ...

Event = Union[ChannelReadyEvent, TrustRequiredEvent, AuthenticatedEvent, WaitingEvent, PeerOnlineEvent, KeyAssignedEvent,
              KeyRotatedEvent, MessageEvent, PeerLeftEvent, ReceiptEvent, IdentityChangedEvent, GapEvent, ErrorEvent,
              ClosedEvent, PasswordChangedEvent, PresenceEvent]

class InboxEntry:
    @property
    def index(self) -> int: ...
    @property
    def peer(self) -> str: ...
    @property
    def message_id(self) -> bytes: ...
    @property
    def seq(self) -> int: ...
    @property
    def text(self) -> str: ...
    @property
    def mode(self) -> ConversationMode: ...
    @property
    def read(self) -> bool: ...
    @property
    def sent_at(self) -> Optional[float]: ...
    @property
    def received_at(self) -> Optional[float]: ...
    @property
    def conversation(self) -> bytes: ...
    @property
    def sender_device(self) -> int: ...

class InboxStatus:
    @property
    def next(self) -> int: ...
    @property
    def first_unread(self) -> int: ...
    @property
    def unread(self) -> int: ...

class PeerIdentity:
    @property
    def peer(self) -> str: ...
    @property
    def identity_key(self) -> bytes: ...
    @property
    def safety_number(self) -> str: ...
    @property
    def verified(self) -> bool: ...
    @property
    def change_pending(self) -> bool: ...

class EventIterator:
    def __iter__(self) -> EventIterator: ...
    def __next__(self) -> Event: ...

class Client:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        server_id: Optional[str] = None,
        trust: TrustMode = TrustMode.TOFU,
        ask_trust: Optional[Callable[[str], bool]] = None,
        expected_fingerprint: str = "",
        known_servers_file: Optional[Union[str, os.PathLike[str]]] = None,
        suites: Optional[SuitePolicy] = None,
        rotation: Optional[RotationPolicy] = None,
        static_private_key: Optional[BytesLike] = None,
        connect_timeout: float = 10.0,
        tick_interval: float = 5.0,
        max_queued_events: int = 10000,
        max_frame_size: int = ...,
        state_file: Optional[Union[str, os.PathLike[str]]] = None,
        state_password: Optional[str] = None,
        require_end_to_end: bool = False,
        end_to_end_suites: Optional[SuitePolicy] = None,
        user: Optional[str] = None,
        in_memory_state: bool = False,
    ) -> None: ...
    def login(self, user: str, password: str, destination: str = "", *, timeout: float = 30.0) -> None: ...
    def login_with_token(self, user: str, token: BytesLike, destination: str = "", *, timeout: float = 30.0) -> None: ...
    def register(self, user: str, password: str, *, timeout: float = 30.0) -> None: ...
    def change_password(self, old_password: str, new_password: str, *, timeout: float = 30.0) -> None: ...
    def start_login(self, user: str, password: str, destination: str = "") -> None: ...
    def start_login_with_token(self, user: str, token: BytesLike, destination: str = "") -> None: ...
    def start_register(self, user: str, password: str) -> None: ...
    def open(self, peer: str) -> None: ...
    def send(self, peer: str, text: str) -> bytes: ...
    def peer_identity(self, peer: str) -> PeerIdentity: ...
    def verify_peer(self, peer: str) -> None: ...
    def accept_identity(self, peer: str) -> None: ...
    @property
    def outbox_size(self) -> int: ...
    def inbox(self, from_index: int = 0, limit: int = 100, *, peer: Optional[str] = None) -> list[InboxEntry]: ...
    @property
    def inbox_status(self) -> InboxStatus: ...
    def mark_read(self, up_to: int) -> None: ...
    def probe(self, peer: str) -> None: ...
    def leave(self, peer: str) -> None: ...
    def set_presence_hidden(self, hidden: bool) -> None: ...
    def query_presence(self, peer: str) -> None: ...
    @property
    def presence_supported(self) -> bool: ...
    def logout(self, *, revoke_token: bool = False, everywhere: bool = False) -> None: ...
    def send_raw(self, frame: Frame) -> None: ...
    def receive(self, timeout: Optional[float] = None) -> Event: ...
    def wait_for(self, kind: EventKind, peer: str = "", *, timeout: Optional[float] = None) -> Event: ...
    def events(self, timeout: Optional[float] = None) -> EventIterator: ...
    def __iter__(self) -> EventIterator: ...
    @property
    def server_fingerprint(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def authenticated(self) -> bool: ...
    @property
    def conversations(self) -> list[str]: ...
    def conversation_suite(self, peer: str) -> Optional[SuiteId]: ...
    @property
    def session_token(self) -> Optional[tuple[bytes, int]]: ...
    @property
    def event_fd(self) -> int: ...
    def take_events(self) -> list[Event]: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...
    def __enter__(self) -> Client: ...
    def __exit__(self, *args: object) -> bool: ...

# ---------------------------------------------------------------- channel handshake

class HandshakeProtocol(_Enum):
    NOISE_XX_25519_CHACHAPOLY_SHA256: ClassVar[HandshakeProtocol]  # 1
    NOISE_XX_25519_AESGCM_SHA256: ClassVar[HandshakeProtocol]  # 2
    __members__: ClassVar[dict[str, HandshakeProtocol]]

class ChannelAction(_Enum):
    WRITE_MESSAGE: ClassVar[ChannelAction]  # 0
    READ_MESSAGE: ClassVar[ChannelAction]  # 1
    AWAITING_TRUST: ClassVar[ChannelAction]  # 2
    COMPLETE: ClassVar[ChannelAction]  # 3
    FAILED: ClassVar[ChannelAction]  # 4
    __members__: ClassVar[dict[str, ChannelAction]]

CHANNEL_PROLOGUE: bytes

class KnownServers:
    def __init__(self) -> None: ...
    @staticmethod
    def open(path: Union[str, os.PathLike[str]]) -> KnownServers: ...
    def lookup(self, server_id: str) -> Optional[bytes]: ...
    def remember(self, server_id: str, public_key: BytesLike) -> None: ...

class Channel:
    @property
    def protocol(self) -> HandshakeProtocol: ...
    @property
    def suite(self) -> SuiteId: ...
    @property
    def send(self) -> SendSession: ...
    @property
    def recv(self) -> RecvSession: ...
    @property
    def handshake_hash(self) -> bytes: ...
    @property
    def peer_static(self) -> bytes: ...
    @property
    def server_fingerprint(self) -> str: ...

class ClientHandshake:
    def __init__(
        self,
        server_id: str,
        *,
        known: Optional[KnownServers] = None,
        static_private_key: Optional[BytesLike] = None,
        protocol: HandshakeProtocol = HandshakeProtocol.NOISE_XX_25519_CHACHAPOLY_SHA256,
        suites: Optional[SuitePolicy] = None,
        trust: TrustMode = TrustMode.TOFU,
        expected_fingerprint: str = "",
        rotation: Optional[RotationPolicy] = None,
        clock: ClockLike = None,
        rng: Optional[Rng] = None,
    ) -> None: ...
    def trust(self, accept: bool) -> None: ...
    @property
    def next_action(self) -> ChannelAction: ...
    @property
    def server_fingerprint(self) -> str: ...
    @property
    def failure(self) -> Any: ...  # a libsim.errors.Error instance, or None
    def write_message(self) -> bytes: ...
    def read_message(self, message: BytesLike) -> None: ...
    def finish(self) -> Channel: ...

class ServerHandshake:
    def __init__(
        self,
        static_private_key: BytesLike,
        *,
        protocols: Optional[list[HandshakeProtocol]] = None,
        suites: Optional[SuitePolicy] = None,
        rotation: Optional[RotationPolicy] = None,
        clock: ClockLike = None,
        rng: Optional[Rng] = None,
    ) -> None: ...
    @property
    def next_action(self) -> ChannelAction: ...
    @property
    def server_fingerprint(self) -> str: ...
    @property
    def failure(self) -> Any: ...  # a libsim.errors.Error instance, or None
    def write_message(self) -> bytes: ...
    def read_message(self, message: BytesLike) -> None: ...
    def finish(self) -> Channel: ...
