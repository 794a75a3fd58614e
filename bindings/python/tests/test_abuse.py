"""simd attacked from outside without an account (issue 13, findings 2 and 3), against a real simd: one address
cannot take every connection slot, a connection that never logs in is closed at its login deadline however it
trickles bytes, and a guesser elsewhere does not lock the owner out. Linux routes all of 127/8 to the loopback
interface, so 127.0.0.2 and 127.0.0.3 are other client addresses (through a Relay)."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from typing import Callable, Iterator

import pytest
from conftest import TIMEOUT, receive_frame, send_frame
from relay import Relay

import libsim
from libsim import ClientHandshake, Errc, EventKind, Frame, FrameDecoder, FrameType

HALF_OPEN = 2000


@pytest.fixture
def exits() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def connect_from(server: libsim.Server, source: str, exits: ExitStack) -> libsim.Client:
    """A Client of `server` whose connection comes from `source`."""
    relay = Relay(server.port, source=source)
    exits.callback(relay.close)
    client = libsim.Client("127.0.0.1", relay.port, server_id=server.address, connect_timeout=TIMEOUT,
                           in_memory_state=True)
    exits.callback(client.close)
    return client


def test_one_address_cannot_take_every_connection_slot(sim_server_factory: Callable[..., libsim.Server],
                                                        exits: ExitStack) -> None:
    # 1000 slots, so that the flood would fill them all without the per-address limit (32 by default).
    server = sim_server_factory(conversation_mode="server-assigned", extra_args=["--max-connections", "1000"])
    bob = server.connect()
    exits.callback(bob.close)
    bob.login("bob", "bob's password")  # from 127.0.0.1, like the flood below

    flood: list[socket.socket] = []
    exits.callback(lambda: [s.close() for s in flood])
    for _ in range(HALF_OPEN):  # connected, and then silent: no handshake, no login
        flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT))

    alice = connect_from(server, "127.0.0.2", exits)
    alice.login("alice", "alice's password", "bob")
    alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    alice.send("bob", "through the flood")
    assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "through the flood"
    bob.send("alice", "bob, logged in from the flooding address, still here")
    assert alice.wait_for(EventKind.MESSAGE, "bob", timeout=TIMEOUT).text.startswith("bob, logged in")
    # The flood's refusals are logged once, not 1,968 times.
    assert server.output.count("refused connections from 127.0.0.1") == 1, server.output[-2000:]


def test_a_connection_that_never_logs_in_is_closed_at_its_deadline(
        sim_server_factory: Callable[..., libsim.Server]) -> None:
    server = sim_server_factory(extra_args=["--login-timeout", "1"])
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        decoder = FrameDecoder()
        hs = ClientHandshake(server.address)
        send_frame(sock, Frame(FrameType.HANDSHAKE, payload=hs.write_message()))
        hs.read_message(receive_frame(sock, decoder).payload)
        send_frame(sock, Frame(FrameType.HANDSHAKE, payload=hs.write_message()))
        hs.finish()
        # Part of a record frame's header, one byte at a time: a frame that never completes. Each byte would
        # restart an idle timer; the login deadline does not move, so simd closes the connection.
        header = Frame(FrameType.RECORD, payload=b"\0" * 1000).encode()[:6]
        sock.settimeout(0.2)
        closed = False
        for i in range(int(TIMEOUT / 0.2)):
            try:
                sock.sendall(header[i % len(header):][:1])
                closed = sock.recv(1) == b""
            except socket.timeout:
                continue
            except OSError:  # reset by simd
                closed = True
            if closed:
                break
        assert closed, "simd kept a connection that never logged in"


def test_a_guesser_does_not_lock_out_the_owner(sim_server_factory: Callable[..., libsim.Server],
                                               exits: ExitStack) -> None:
    server = sim_server_factory(conversation_mode="server-assigned")
    owner = server.connect()
    owner.login("olivia", "olivia's password")  # 127.0.0.1 is now a known address of hers
    token = owner.session_token
    assert token is not None
    owner.close()

    def guess(password: str, source: str = "127.0.0.2") -> Errc:
        guesser = connect_from(server, source, exits)
        with pytest.raises(libsim.AccountError) as info:
            guesser.login("olivia", password)
        guesser.close()
        return info.value.code

    # Wrong passwords until the throttle answers (after the free failures; no sleeping here, so it comes soon).
    answers = [guess(f"guess {i}") for i in range(5)]
    assert answers == [Errc.AUTH_REJECTED] * 5
    for i in range(10):
        if guess(f"more {i}") == Errc.THROTTLED:
            break
    else:
        pytest.fail("the guesser was never throttled")

    # The owner is not locked out: from her known address, and with her session token from a new one.
    owner = server.connect()
    exits.callback(owner.close)
    owner.login("olivia", "olivia's password")
    assert owner.authenticated
    elsewhere = connect_from(server, "127.0.0.3", exits)
    elsewhere.login_with_token("olivia", token[0])
    assert elsewhere.authenticated

    # Her success gave the guesser no new free failures, even from an address it has not used yet: it is
    # throttled again within a few attempts (each further failure doubles its wait, so this holds however slow
    # the machine is).
    later = [guess(f"after {i}", "127.0.0.4") for i in range(5)]
    assert Errc.THROTTLED in later, later
