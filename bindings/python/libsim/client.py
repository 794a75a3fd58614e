"""The networked client::

    with Client("127.0.0.1", port) as client:
        client.login("alice", "password", "bob")
        client.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=10)
        client.send("bob", "hello")
        for event in client.events(timeout=5):
            print(event)

End-to-end mode (the server's default) keeps the identity key, ratchets and pinned peers in an encrypted file::

    with Client("127.0.0.1", port, state_file="alice.db", state_password="...") as client:
        client.login("alice", "password", "bob")
        client.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=10)
        print(client.peer_identity("bob").safety_number)   # compare with bob's, then:
        client.verify_peer("bob")

An ``IDENTITY_CHANGED`` event means the peer's key changed (a new device, or an attack): ``send`` raises
``StateError`` (``Errc.IDENTITY_CHANGED``) until ``accept_identity(peer)``.
"""

from __future__ import annotations

from typing import Any

from ._libsim import (Client, ConversationMode, Event, EventIterator, EventKind, InboxEntry, InboxStatus, PeerIdentity,
                      TrustMode, pair_conversation_id)

__all__ = ["Client", "ConversationMode", "Event", "EventIterator", "EventKind", "InboxEntry", "InboxStatus", "PeerIdentity",
           "TrustMode", "connect", "pair_conversation_id"]


def connect(host: str, port: int, **options: Any) -> Client:
    """Connect to a libsim server and complete the handshake; the same as ``Client(host, port, **options)``."""
    return Client(host, port, **options)
