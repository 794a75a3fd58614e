"""libsim's channel handshake from Python: in process, and over a raw socket against a real simd."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from conftest import receive_frame, send_frame

import libsim
from libsim import ChannelAction, ClientHandshake, Errc, Frame, FrameDecoder, FrameType, ServerHandshake, SuiteId
from libsim import SuitePolicy, TrustMode


def run(client: ClientHandshake, server: ServerHandshake) -> tuple[libsim.Channel, libsim.Channel]:
    server.read_message(client.write_message())
    client.read_message(server.write_message())
    server.read_message(client.write_message())
    assert client.next_action == ChannelAction.COMPLETE and server.next_action == ChannelAction.COMPLETE
    return client.finish(), server.finish()


def test_in_process_handshake_and_records() -> None:
    server_key, server_public = libsim.x25519_keypair()
    known = libsim.KnownServers()
    client, server = ClientHandshake("test:1", known=known), ServerHandshake(server_key)
    assert client.next_action == ChannelAction.WRITE_MESSAGE
    c, s = run(client, server)
    assert c.suite == s.suite == SuiteId.AES256_GCM
    assert c.protocol == libsim.HandshakeProtocol.NOISE_XX_25519_CHACHAPOLY_SHA256
    assert c.handshake_hash == s.handshake_hash and len(c.handshake_hash) == 32
    assert c.peer_static == server_public
    assert c.server_fingerprint == s.server_fingerprint == libsim.fingerprint(server_public)
    assert known.lookup("test:1") == server_public  # pinned on first use
    assert s.recv.open(c.send.seal(b"to the server")) == b"to the server"
    assert c.recv.open(s.send.seal(b"to the client")) == b"to the client"
    with pytest.raises(libsim.StateError):
        client.finish()  # the sessions are handed over once


def test_suite_negotiation() -> None:
    server_key, _ = libsim.x25519_keypair()
    c, s = run(ClientHandshake("t", suites=SuitePolicy.require_tdes()), ServerHandshake(server_key))
    assert c.suite == s.suite == SuiteId.TDES_CBC_HMAC_SHA256
    assert s.recv.open(c.send.seal(b"tdes")) == b"tdes"

    client = ClientHandshake("t", suites=SuitePolicy.require_tdes())
    server = ServerHandshake(server_key, suites=SuitePolicy.forbid_tdes())
    server.read_message(client.write_message())
    with pytest.raises(libsim.CryptoError) as info:
        client.read_message(server.write_message())
    assert info.value.code == Errc.NO_COMMON_SUITE
    assert client.next_action == ChannelAction.FAILED
    assert isinstance(client.failure, libsim.CryptoError)


def test_pinning_and_asking() -> None:
    key_a, public_a = libsim.x25519_keypair()
    key_b, _ = libsim.x25519_keypair()
    known = libsim.KnownServers()
    known.remember("srv", public_a)
    client = ClientHandshake("srv", known=known)
    server = ServerHandshake(key_b)  # someone else's key
    server.read_message(client.write_message())
    with pytest.raises(libsim.HandshakeError) as info:
        client.read_message(server.write_message())
    assert info.value.code == Errc.SERVER_KEY_MISMATCH
    with pytest.raises(libsim.StateError):
        client.write_message()

    asking = ClientHandshake("new", trust=TrustMode.ASK)
    server = ServerHandshake(key_a)
    server.read_message(asking.write_message())
    asking.read_message(server.write_message())
    assert asking.next_action == ChannelAction.AWAITING_TRUST
    assert asking.server_fingerprint == libsim.fingerprint(public_a)
    asking.trust(True)
    server.read_message(asking.write_message())
    assert server.next_action == ChannelAction.COMPLETE


def test_tampered_messages_fail() -> None:
    server_key, _ = libsim.x25519_keypair()
    client, server = ClientHandshake("t"), ServerHandshake(server_key)
    msg1 = bytearray(client.write_message())
    # The ClientHello ends with the suite offer (AES-256-GCM, ChaCha20-Poly1305, TDES). Reordered, it still parses,
    # but the offer is hashed into the transcript, so the client cannot decrypt the server's answer.
    assert msg1[-3:] == bytes([2, 3, 1])
    msg1[-3:-1] = bytes([3, 2])
    server.read_message(bytes(msg1))
    with pytest.raises(libsim.CryptoError) as info:
        client.read_message(server.write_message())
    assert info.value.code == Errc.AUTH_FAILED
    with pytest.raises(libsim.FrameError):
        ServerHandshake(server_key).read_message(b"")
    with pytest.raises(TypeError):
        ServerHandshake(server_key).read_message("text")  # type: ignore[arg-type]
    with pytest.raises(libsim.CryptoError):
        ServerHandshake(b"short")
    with pytest.raises(libsim.InvalidArgument):
        ClientHandshake("")


def test_known_servers_file(tmp_path: Path) -> None:
    path = tmp_path / "pins"
    known = libsim.KnownServers.open(path)
    known.remember("srv", bytes(range(32)))
    assert libsim.KnownServers.open(str(path)).lookup("srv") == bytes(range(32))
    assert path.stat().st_mode & 0o077 == 0


def test_raw_handshake_with_a_real_simd(sim_server: libsim.Server) -> None:
    with socket.create_connection((sim_server.host, sim_server.port), timeout=15) as sock:
        decoder = FrameDecoder()
        hs = ClientHandshake(sim_server.address)
        send_frame(sock, Frame(FrameType.HANDSHAKE, payload=hs.write_message()))
        reply = receive_frame(sock, decoder)
        assert reply.type == FrameType.HANDSHAKE
        hs.read_message(reply.payload)
        if sim_server.fingerprint is not None:
            assert hs.server_fingerprint == sim_server.fingerprint
        send_frame(sock, Frame(FrameType.HANDSHAKE, payload=hs.write_message()))
        channel = hs.finish()

        # Any inner frame before login is refused with NOT_AUTHENTICATED, sealed in the channel.
        probe = Frame(FrameType.PROBE, source="mallory", destination="bob")
        send_frame(sock, Frame(FrameType.RECORD, payload=channel.send.seal(probe.encode())))
        record = receive_frame(sock, decoder)
        assert record.type == FrameType.RECORD
        inner = Frame.decode(channel.recv.open(record.payload))
        assert inner.type == FrameType.ERROR
        assert inner.peer_error().code == Errc.NOT_AUTHENTICATED
