"""Shared fixtures. The `sim_server` fixture (a real simd) comes from libsim's pytest plugin."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Callable, Iterator

import pytest

import libsim
from libsim import Frame, FrameDecoder

pytest_plugins = ["libsim.pytest_plugin"]

SOURCE_ROOT = Path(__file__).resolve().parents[3]

# Waits on the network are bounded by this (a loaded CI machine, bcrypt cost 4); tests that expect silence use
# much shorter windows.
TIMEOUT = 15.0


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [f"libsim {libsim.__version__} from {Path(libsim.__file__).parent}",
            f"SIM_SIMD={os.environ.get('SIM_SIMD', '(unset)')}"]


@pytest.fixture(scope="session")
def noise_vectors_dir() -> Path:
    path = Path(os.environ.get("SIM_NOISE_VECTORS") or SOURCE_ROOT / "tests" / "vectors" / "noise")
    if not path.is_dir():
        pytest.fail(f"Noise vectors not found at {path} (set SIM_NOISE_VECTORS)")
    return path


def connector(server: libsim.Server) -> Iterator[Callable[..., libsim.Client]]:
    clients: list[libsim.Client] = []

    def make(**options: object) -> libsim.Client:
        client = server.connect(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def connect(sim_server: libsim.Server) -> Iterator[Callable[..., libsim.Client]]:
    """connect(**options) -> a Client of `sim_server` (end-to-end mode unless overridden), closed at teardown."""
    yield from connector(sim_server)


@pytest.fixture
def seed_server(sim_server_factory: Callable[..., libsim.Server]) -> libsim.Server:
    """A simd in the seed's server-assigned mode (the server generates the conversation keys)."""
    return sim_server_factory(conversation_mode="server-assigned")


@pytest.fixture
def seed_connect(seed_server: libsim.Server) -> Iterator[Callable[..., libsim.Client]]:
    """connect(**options) -> a Client of `seed_server`, closed at teardown."""
    yield from connector(seed_server)


def drain(client: libsim.Client, quiet: float = 0.3) -> list[libsim.Event]:
    """Every event that arrives until `quiet` seconds pass without one."""
    return list(client.events(timeout=quiet))


def envelope(body: bytes, *, source: str, destination: str, mode: int = 1, message_id: bytes | None = None) -> bytes:
    """A client's `message` payload (docs/protocol.md 6.5) from `source`'s device 1 with one body for `destination`'s
    device 1: message id (16 random bytes) | mode u8 (1 = server-assigned record, 2 = end-to-end RatchetMessage) |
    the pair's conversation id | sender device u32 | count u8 | device u32 | body length u32 | body. Built here from
    the spec, independently of the C++ encoder."""
    message_id = os.urandom(16) if message_id is None else message_id
    assert len(message_id) == 16
    lo, hi = sorted([source.encode(), destination.encode()])
    conversation = hashlib.sha256(b"libsim pair\0" + lo + b"\0" + hi).digest()[:16]
    return (message_id + bytes([mode]) + conversation + (1).to_bytes(4, "big") + bytes([1]) +
            (1).to_bytes(4, "big") + len(body).to_bytes(4, "big") + body)


def publish_prekeys(client: libsim.Client) -> None:
    """Wait until `client` has answered the server's prekey status (its upload is then on the wire before anything
    it sends next): a probe's answer comes after the status, on the same ordered connection."""
    client.probe("nobody")
    client.wait_for(libsim.EventKind.WAITING, "nobody", timeout=TIMEOUT)


def login_pair(connect: Callable[..., libsim.Client], **options: object) -> tuple[libsim.Client, libsim.Client]:
    """bob logs in, then alice logs in asking for bob. Server-assigned mode: both hold the conversation key when
    this returns. End-to-end mode: alice holds a session from bob's prekey bundle; bob learns of it from alice's
    first message."""
    bob = connect(**options)
    bob.login("bob", "bob's password")
    publish_prekeys(bob)
    alice = connect(**options)
    alice.login("alice", "alice's password", "bob")
    keyed = alice.wait_for(libsim.EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    if keyed.mode == libsim.ConversationMode.SERVER_ASSIGNED:
        bob.wait_for(libsim.EventKind.KEY_ASSIGNED, "alice", timeout=TIMEOUT)
    return alice, bob


def send_frame(sock: socket.socket, frame: Frame) -> None:
    """Write one encoded frame to a raw socket."""
    sock.sendall(frame.encode())


def receive_frame(sock: socket.socket, decoder: FrameDecoder) -> Frame:
    """The next frame from a raw socket (fails the test if the peer closes first)."""
    while (frame := decoder.next()) is None:
        data = sock.recv(65536)
        assert data, "simd closed the connection"
        decoder.feed(data)
    return frame
