"""The networked client::

    with Client("127.0.0.1", port, user="alice", state_password="...") as client:
        client.login("alice", "password", "bob")
        client.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=10)
        client.send("bob", "hello")
        for event in client.events(timeout=5):
            match event:
                case MessageEvent(peer=peer, text=text):
                    print(f"{peer}: {text}")
                case ReceiptEvent(status=ReceiptStatus.DELIVERED):
                    print("delivered")

The identity key, ratchets, pinned peers and outbox persist in an encrypted file sealed under ``state_password``:
by default one per user and server under ``$XDG_CONFIG_HOME/libsim/keys`` (``user=`` names it), or ``state_file``.
``in_memory_state=True`` instead makes a new identity on every run, which peers see as a key change::

    with Client("127.0.0.1", port, state_file="alice.db", state_password="...") as client:
        client.login("alice", "password", "bob")
        client.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=10)
        print(client.peer_identity("bob").safety_number)   # compare with bob's, then:
        client.verify_peer("bob")

An ``IdentityChangedEvent`` means the peer's key changed (a new device, or an attack): ``send`` raises
``StateError`` (``Errc.IDENTITY_CHANGED``) until ``accept_identity(peer)``.
"""

from __future__ import annotations

from typing import Any, Union

from ._libsim import (AuthenticatedEvent, ChannelReadyEvent, Client, ClosedEvent, ConversationMode, DeviceInfo,
                      DeviceInfoEvent, DevicesChangedEvent, ErrorEvent, EventIterator, EventKind, GapEvent,
                      IdentityChangedEvent, InboxEntry, InboxStatus, KeyAssignedEvent, KeyDirection, KeyRotatedEvent,
                      LinkCodeEvent, LinkRequestEvent, MessageEvent, PasswordChangedEvent, PeerIdentity, PeerLeftEvent,
                      PeerOnlineEvent, PresenceEvent, ReceiptEvent, ReceiptStatus, TrustMode, TrustRequiredEvent,
                      WaitingEvent,
                      pair_conversation_id)

#: Any event: one class per kind, each with only its own attributes and a ``kind`` (an EventKind).
Event = Union[ChannelReadyEvent, TrustRequiredEvent, AuthenticatedEvent, WaitingEvent, PeerOnlineEvent, KeyAssignedEvent,
              KeyRotatedEvent, MessageEvent, PeerLeftEvent, ReceiptEvent, IdentityChangedEvent, GapEvent, ErrorEvent,
              ClosedEvent, PasswordChangedEvent, LinkCodeEvent, LinkRequestEvent, DevicesChangedEvent, DeviceInfoEvent,
              PresenceEvent]

__all__ = ["AuthenticatedEvent", "ChannelReadyEvent", "Client", "ClosedEvent", "ConversationMode", "DeviceInfo",
           "DeviceInfoEvent", "DevicesChangedEvent", "ErrorEvent", "Event", "LinkCodeEvent", "LinkRequestEvent",
           "EventIterator", "EventKind", "GapEvent", "IdentityChangedEvent", "InboxEntry", "InboxStatus",
           "KeyAssignedEvent", "KeyDirection", "KeyRotatedEvent", "MessageEvent", "PasswordChangedEvent", "PeerIdentity",
           "PeerLeftEvent", "PeerOnlineEvent", "PresenceEvent", "ReceiptEvent", "ReceiptStatus", "TrustMode", "TrustRequiredEvent",
           "WaitingEvent", "connect", "peer_of", "pair_conversation_id"]


def peer_of(event: Event) -> str:
    """Whom `event` is about, as ``wait_for(kind, peer)`` matches it: its ``peer``; our own name (``user``) for
    AuthenticatedEvent and PasswordChangedEvent; '' for the others."""
    return str(getattr(event, "peer", None) or getattr(event, "user", ""))


def connect(host: str, port: int, **options: Any) -> Client:
    """Connect to a libsim server and complete the handshake; the same as ``Client(host, port, **options)``."""
    return Client(host, port, **options)
