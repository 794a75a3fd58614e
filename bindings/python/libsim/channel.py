"""libsim's channel handshake, sans-IO: Noise XX with suite negotiation and server key pinning.

The caller moves the messages, each the payload of a HANDSHAKE frame; the result is a pair of record sessions::

    hs = ClientHandshake("chat.example:7878", known=KnownServers.open("known_servers"))
    send_frame(Frame(FrameType.HANDSHAKE, payload=hs.write_message()))
    hs.read_message(receive_frame().payload)        # HandshakeError if the key does not match the pin
    send_frame(Frame(FrameType.HANDSHAKE, payload=hs.write_message()))
    channel = hs.finish()                           # channel.send / channel.recv: SendSession / RecvSession
"""

from ._libsim import (
    CHANNEL_PROLOGUE,
    Channel,
    ChannelAction,
    ClientHandshake,
    HandshakeProtocol,
    KnownServers,
    ServerHandshake,
)

__all__ = [
    "CHANNEL_PROLOGUE",
    "Channel",
    "ChannelAction",
    "ClientHandshake",
    "HandshakeProtocol",
    "KnownServers",
    "ServerHandshake",
]
