"""The seed's three attacks, from Python, against a real simd in the seed's server-assigned mode (and attack 2
again in end-to-end mode).

1. Trudy logs in as Alice without Alice's password.
2. Trudy, logged in as herself, sends a message frame whose source says "alice".
3. A man in the middle: a server with another key, and a captured record replayed into the channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
from conftest import TIMEOUT, connector, drain, envelope, login_pair
from relay import Relay

import libsim
from libsim import ConversationMode, Errc, EventKind, Frame, FrameType

Connect = Callable[..., libsim.Client]


@pytest.fixture
def sim_server(sim_server_factory: Callable[..., libsim.Server]) -> libsim.Server:
    """This module's server (and so its `connect`): the seed's server-assigned mode."""
    return sim_server_factory(conversation_mode="server-assigned")


@pytest.fixture
def e2e_connect(sim_server_factory: Callable[..., libsim.Server]) -> Iterator[Connect]:
    yield from connector(sim_server_factory(conversation_mode="e2e"))


def test_attack_1_login_as_alice_without_her_password(connect: Connect) -> None:
    alice, bob = login_pair(connect)
    trudy = connect()
    with pytest.raises(libsim.AccountError) as info:
        trudy.login("alice", "a guess", "bob")
    assert info.value.code == Errc.AUTH_REJECTED
    assert not trudy.authenticated
    # the server closed Trudy's connection; Alice's conversation is untouched
    assert any(e.kind == EventKind.CLOSED for e in drain(trudy, 0.5))
    alice.send("bob", "still me")
    assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "still me"
    assert [e for e in drain(bob, 0.3) if e.kind == EventKind.MESSAGE] == []


def test_attack_1_forged_token(connect: Connect) -> None:
    alice = connect()
    alice.login("alice", "alice's password")
    trudy = connect()
    with pytest.raises(libsim.AccountError) as info:
        trudy.login_with_token("alice", b"\xab" * 32)
    assert info.value.code == Errc.AUTH_REJECTED


def test_attack_2_forged_source(connect: Connect) -> None:
    alice, bob = login_pair(connect)
    trudy = connect()
    trudy.login("trudy", "trudy's password", "bob")
    trudy.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    bob.wait_for(EventKind.KEY_ASSIGNED, "trudy", timeout=TIMEOUT)
    drain(bob, 0.2)

    # The seed's attack frame, s:"alice" d:"bob", inside Trudy's own valid channel.
    trudy.send_raw(Frame(FrameType.MESSAGE, sid=9, source="alice", destination="bob",
                         payload=envelope(b"Hello Bob!", source="alice", destination="bob")))
    refused = trudy.wait_for(EventKind.ERROR, timeout=TIMEOUT)
    assert isinstance(refused.error, libsim.RoutingError)
    assert refused.error.code == Errc.SOURCE_MISMATCH
    assert drain(bob, 0.5) == []  # nothing reached Bob

    # A forged body under Trudy's own name is forwarded but fails Bob's decryption: an error, never a message.
    trudy.send_raw(Frame(FrameType.MESSAGE, source="trudy", destination="bob", payload=envelope(bytes(80), source="trudy", destination="bob")))
    failed = bob.wait_for(EventKind.ERROR, "trudy", timeout=TIMEOUT)
    assert failed.error is not None
    assert [e for e in drain(bob, 0.3) if e.kind == EventKind.MESSAGE] == []

    # Trudy's connection stays usable and Bob's conversations survive.
    alice.send("bob", "real message")
    assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "real message"
    trudy.send("bob", "hi, it's trudy")
    assert bob.wait_for(EventKind.MESSAGE, "trudy", timeout=TIMEOUT).text == "hi, it's trudy"


def test_attack_2_other_forged_fields(connect: Connect) -> None:
    trudy = connect()
    trudy.login("trudy", "trudy's password")
    trudy.send_raw(Frame(FrameType.MESSAGE, source="trudy", destination="Server", payload=envelope(b"\x01", source="trudy", destination="Server")))
    assert trudy.wait_for(EventKind.ERROR, timeout=TIMEOUT).error.code == Errc.BAD_DESTINATION
    trudy.send_raw(Frame(FrameType.MESSAGE, source="trudy", destination="carol", payload=envelope(b"\x01", source="trudy", destination="carol")))
    assert trudy.wait_for(EventKind.ERROR, timeout=TIMEOUT).error.code == Errc.NO_CONVERSATION


def test_attack_2_end_to_end(e2e_connect: Connect) -> None:
    """End-to-end mode: the forged source is refused as before, and a forged ratchet message under Trudy's own
    name is relayed (the server cannot check it) but never shown by Bob."""
    connect = e2e_connect
    alice, bob = login_pair(connect)
    trudy = connect()
    trudy.login("trudy", "trudy's password", "bob")
    assert trudy.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT).mode == ConversationMode.END_TO_END

    trudy.send_raw(Frame(FrameType.MESSAGE, source="alice", destination="bob",
                         payload=envelope(b"Hello Bob!", mode=2, source="alice", destination="bob")))
    refused = trudy.wait_for(EventKind.ERROR, timeout=TIMEOUT)
    assert refused.error.code == Errc.SOURCE_MISMATCH

    # A type-1 (initial) ratchet message full of zeros: it claims an identity key and prekeys but cannot open.
    trudy.send_raw(Frame(FrameType.MESSAGE, source="trudy", destination="bob",
                         payload=envelope(b"\x01" + bytes(200), mode=2, source="trudy", destination="bob")))
    failed = bob.wait_for(EventKind.ERROR, "trudy", timeout=TIMEOUT)
    assert failed.error is not None
    assert [e for e in drain(bob, 0.3) if e.kind == EventKind.MESSAGE] == []

    alice.send("bob", "real message")
    got = bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT)
    assert (got.text, got.mode) == ("real message", ConversationMode.END_TO_END)


def test_attack_3_server_with_another_key(sim_server_factory: Callable[..., libsim.Server], tmp_path: Path) -> None:
    real = sim_server_factory(conversation_mode="server-assigned")
    impostor = sim_server_factory(conversation_mode="server-assigned")
    pins = tmp_path / "known_servers"  # os.PathLike is accepted like str
    server_id = "chat.example:7878"

    with real.connect(server_id=server_id, known_servers_file=pins) as first:
        fingerprint = first.server_fingerprint  # pinned on first use
    assert f"\n{server_id} " in pins.read_text()
    with pytest.raises(libsim.HandshakeError) as info:
        impostor.connect(server_id=server_id, known_servers_file=str(pins))
    assert info.value.code == Errc.SERVER_KEY_MISMATCH
    # a fingerprint from configuration is checked the same way
    with pytest.raises(libsim.HandshakeError) as configured:
        impostor.connect(expected_fingerprint=fingerprint)
    assert configured.value.code == Errc.SERVER_KEY_MISMATCH
    # the real server is still accepted
    with real.connect(server_id=server_id, known_servers_file=pins, trust=libsim.TrustMode.PINNED_ONLY) as again:
        assert again.server_fingerprint == fingerprint


def test_attack_3_replayed_record(sim_server: libsim.Server) -> None:
    relay = Relay(sim_server.port)
    try:
        alice = libsim.Client("127.0.0.1", relay.port, server_id=sim_server.address, in_memory_state=True)
        alice.login("alice", "alice's password")
        alice.probe("bob")
        alice.wait_for(EventKind.WAITING, "bob", timeout=TIMEOUT)
        records = [f for f in relay.client_frames if Frame.decode(f).type == FrameType.RECORD]
        assert records, "the relay saw no records"
        relay.inject_to_server(records[-1])  # the same sealed record again
        closed = alice.wait_for(EventKind.CLOSED, timeout=TIMEOUT)
        assert closed.kind == EventKind.CLOSED
        with pytest.raises(libsim.ClosedError):
            while True:
                alice.receive(timeout=TIMEOUT)
        alice.close()
    finally:
        relay.close()
