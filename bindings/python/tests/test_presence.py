"""Presence (docs/protocol.md 6.10) through a real simd, in both conversation modes: contacts (each side named the
other) see each other online and offline, a hidden user looks offline, and a stranger who asks learns nothing (the
same answer as for an offline user). The blocking client and libsim.aio."""

from __future__ import annotations

import asyncio
from typing import Callable

import pytest
from conftest import TIMEOUT, publish_prekeys

import libsim
import libsim.aio
from libsim import EventKind


def presence(client: libsim.Client, peer: str) -> bool:
    event = client.wait_for(EventKind.PRESENCE, peer, timeout=TIMEOUT)
    assert isinstance(event, libsim.PresenceEvent)
    assert event.peer == peer
    return event.online


def contacts(connect: Callable[..., libsim.Client]) -> tuple[libsim.Client, libsim.Client]:
    """bob and alice, each having named the other: contacts."""
    bob = connect(in_memory_state=True)
    bob.login("bob", "bob's password")
    publish_prekeys(bob)
    alice = connect(in_memory_state=True)
    assert alice.presence_supported
    alice.login("alice", "alice's password", "bob")
    publish_prekeys(alice)
    bob.open("alice")
    return alice, bob


@pytest.mark.parametrize("mode", ["e2e", "server-assigned"])
def test_contacts_see_each_other_and_hiding(mode: str, sim_server_factory: Callable[..., libsim.Server]) -> None:
    server = sim_server_factory(conversation_mode=mode)
    clients: list[libsim.Client] = []

    def connect(**options: object) -> libsim.Client:
        clients.append(server.connect(**options))
        return clients[-1]

    try:
        alice, bob = contacts(connect)
        assert presence(alice, "bob") is True
        assert presence(bob, "alice") is True
        bob.set_presence_hidden(True)
        assert presence(alice, "bob") is False
        alice.query_presence("bob")
        assert presence(alice, "bob") is False
        bob.set_presence_hidden(False)
        assert presence(alice, "bob") is True
        bob.close()
        assert presence(alice, "bob") is False
    finally:
        for c in clients:
            c.close()


def test_a_stranger_learns_nothing(connect: Callable[..., libsim.Client]) -> None:
    alice, bob = contacts(connect)
    assert presence(bob, "alice") is True
    trudy = connect(in_memory_state=True)
    trudy.login("trudy", "trudy's password", "alice")  # naming alice does not make trudy her contact
    trudy.query_presence("alice")  # online
    assert presence(trudy, "alice") is False
    trudy.query_presence("nobody")  # no such user: the same answer
    assert presence(trudy, "nobody") is False
    alice.close()
    assert presence(bob, "alice") is False
    assert not [e for e in trudy.events(timeout=0.3) if e.kind == EventKind.PRESENCE]


def test_hidden_from_the_login_on(connect: Callable[..., libsim.Client]) -> None:
    alice, bob = contacts(connect)
    assert presence(alice, "bob") is True
    bob.close()
    assert presence(alice, "bob") is False
    again = connect(in_memory_state=True)
    again.set_presence_hidden(True)  # before login: part of the login
    again.login("bob", "bob's password")
    again.query_presence("alice")
    assert presence(again, "alice") is True
    alice.query_presence("bob")
    assert presence(alice, "bob") is False  # never shown online in between
    assert not [e for e in alice.events(timeout=0.3) if e.kind == EventKind.PRESENCE and e.online]


def test_async_client_presence(sim_server: libsim.Server) -> None:
    async def main() -> None:
        bob = await libsim.aio.connect(sim_server.host, sim_server.port, in_memory_state=True,
                                       connect_timeout=TIMEOUT)
        alice = await libsim.aio.connect(sim_server.host, sim_server.port, in_memory_state=True,
                                         connect_timeout=TIMEOUT)
        try:
            assert alice.presence_supported
            await bob.login("bob", "bob's password")
            await alice.login("alice", "alice's password", "bob")
            await bob.open("alice")
            event = await alice.wait_for(EventKind.PRESENCE, "bob", timeout=TIMEOUT)
            assert event.online
            await bob.set_presence_hidden(True)
            event = await alice.wait_for(EventKind.PRESENCE, "bob", timeout=TIMEOUT)
            assert not event.online
            await alice.query_presence("bob")
            event = await alice.wait_for(EventKind.PRESENCE, "bob", timeout=TIMEOUT)
            assert not event.online
        finally:
            await alice.close()
            await bob.close()

    asyncio.run(asyncio.wait_for(main(), 4 * TIMEOUT))
