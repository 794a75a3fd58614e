"""The networked client::

    with Client("127.0.0.1", port) as client:
        client.login("alice", "password", "bob")
        client.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=10)
        client.send("bob", "hello")
        for event in client.events(timeout=5):
            print(event)
"""

from __future__ import annotations

from typing import Any

from ._libsim import Client, Event, EventIterator, EventKind, TrustMode

__all__ = ["Client", "Event", "EventIterator", "EventKind", "TrustMode", "connect"]


def connect(host: str, port: int, **options: Any) -> Client:
    """Connect to a libsim server and complete the handshake; the same as ``Client(host, port, **options)``."""
    return Client(host, port, **options)
