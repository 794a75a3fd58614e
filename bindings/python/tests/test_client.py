"""Python clients talking through a real simd: conversations (end to end, and the seed's server-assigned mode for
waiting, key rotation and Triple-DES), the client API's behaviour on bad input, and that blocking calls release the
GIL and yield to Ctrl-C. End-to-end specifics (receipts, offline delivery, state files, identities): test_e2e.py."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import TIMEOUT, drain, login_pair, publish_prekeys

import libsim
from libsim import ConversationMode, Errc, EventKind

Connect = Callable[..., libsim.Client]


def test_conversation_between_two_clients(connect: Connect) -> None:
    alice, bob = login_pair(connect)
    assert alice.authenticated and alice.user == "alice"
    assert alice.conversations == ["bob"]
    assert alice.conversation_suite("bob") == libsim.SuiteId.AES256_GCM
    assert alice.conversation_suite("carol") is None

    sent_id = alice.send("bob", "Hello Bob!")
    event = bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT)
    assert isinstance(event, libsim.MessageEvent) and event.kind == EventKind.MESSAGE
    assert (event.peer, event.text, event.seq) == ("alice", "Hello Bob!", 1)
    assert (event.mode, event.message_id) == (ConversationMode.END_TO_END, sent_id)
    assert not hasattr(event, "error")  # each event class has only its own attributes
    assert "Hello Bob!" in repr(event) and sent_id.hex() in repr(event)

    text = "zoë says ✓ — 🎉"
    bob.send("alice", text)
    assert alice.wait_for(EventKind.MESSAGE, "bob", timeout=TIMEOUT).text == text

    for i in range(2, 6):
        alice.send("bob", f"message {i}")
    got = [bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT) for _ in range(4)]
    assert [e.text for e in got] == [f"message {i}" for i in range(2, 6)]
    assert [e.seq for e in got] == [2, 3, 4, 5]


def test_fingerprint_and_token_login(sim_server: libsim.Server, connect: Connect) -> None:
    alice = connect()
    assert alice.server_fingerprint
    if sim_server.fingerprint is not None:
        assert alice.server_fingerprint == sim_server.fingerprint
    alice.login("alice", "alice's password")
    token = alice.session_token
    assert token is not None
    secret, expires = token
    assert isinstance(secret, bytes) and len(secret) == 32 and expires > time.time() * 1000
    alice.close()
    again = connect()
    again.login_with_token("alice", secret)
    assert again.authenticated and again.session_token is None  # a token login issues no new token


def test_waiting_for_the_peer(seed_connect: Connect) -> None:
    connect = seed_connect
    alice = connect(tick_interval=0.2)
    alice.login("alice", "alice's password", "bob")
    waiting = alice.wait_for(EventKind.WAITING, "bob", timeout=TIMEOUT)
    assert waiting.peer == "bob"
    # The seed's waiting step: bob has no account yet, so there is no key; alice's message waits in her outbox.
    before_send = time.time()
    early = alice.send("bob", "while you were away")
    after_send = time.time()
    with pytest.raises(libsim.TimeoutError):
        alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=0.5)
    assert alice.outbox_size == 1

    bob = connect()
    bob.login("bob", "bob's password")
    alice.wait_for(EventKind.PEER_ONLINE, "bob", timeout=TIMEOUT)
    keyed = alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    assert keyed.mode == ConversationMode.SERVER_ASSIGNED
    bob.wait_for(EventKind.KEY_ASSIGNED, "alice", timeout=TIMEOUT)
    first = bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT)
    assert (first.text, first.message_id) == ("while you were away", early)
    # Its sender's timestamp is the time of send(), sealed then, not of the sealing once bob had a key (at least
    # the 0.5 s wait later), which is when the server received it. Times are whole milliseconds.
    assert first.sent_at is not None and before_send - 0.001 <= first.sent_at <= after_send
    assert first.received_at is not None and first.received_at - first.sent_at >= 0.5
    assert first.received_at <= time.time()
    (entry,) = bob.inbox()
    assert (entry.sent_at, entry.received_at) == (first.sent_at, first.received_at)
    # The pair's conversation (docs/protocol.md 6.5: SHA-256 of the tagged names, computed here from the spec) and
    # alice's one device.
    conversation = hashlib.sha256(b"libsim pair\0alice\0bob").digest()[:16]
    assert first.conversation == entry.conversation == conversation == libsim.pair_conversation_id("bob", "alice")
    assert first.sender_device == entry.sender_device == 1
    sent_id = alice.send("bob", "there you are")
    got = bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT)
    assert (got.text, got.mode, got.message_id) == ("there you are", ConversationMode.SERVER_ASSIGNED, sent_id)


def test_conversation_keys_rotate(seed_connect: Connect) -> None:
    rotation = libsim.RotationPolicy(interval=0.3)
    alice, bob = login_pair(seed_connect, rotation=rotation)
    alice.send("bob", "epoch 0")
    assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "epoch 0"
    time.sleep(0.4)  # the key is now older than the interval: the next send rotates first
    alice.send("bob", "epoch 1")
    rotated = alice.wait_for(EventKind.KEY_ROTATED, "bob", timeout=TIMEOUT)
    assert rotated.epoch == 1
    assert bob.wait_for(EventKind.KEY_ROTATED, "alice", timeout=TIMEOUT).epoch == 1
    assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "epoch 1"


def test_tdes_conversations(sim_server_factory: Callable[..., libsim.Server]) -> None:
    server = sim_server_factory(conversation_suite="tdes", conversation_mode="server-assigned")
    with server.connect() as bob, server.connect() as alice:
        bob.login("bob", "bob's password")
        alice.login("alice", "alice's password", "bob")
        keyed = alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
        assert keyed.suite == libsim.SuiteId.TDES_CBC_HMAC_SHA256
        assert keyed.mode == ConversationMode.SERVER_ASSIGNED
        bob.wait_for(EventKind.KEY_ASSIGNED, "alice", timeout=TIMEOUT)
        alice.send("bob", "the seed's Triple-DES")
        assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "the seed's Triple-DES"


def test_require_end_to_end_refuses_server_assigned_keys(seed_connect: Connect) -> None:
    bob = seed_connect()
    bob.login("bob", "bob's password")
    alice = seed_connect(require_end_to_end=True)
    alice.login("alice", "alice's password", "bob")
    refused = alice.wait_for(EventKind.ERROR, "bob", timeout=TIMEOUT)
    assert refused.error.code == Errc.SUITE_NOT_ALLOWED
    assert alice.conversation_suite("bob") is None
    # The message waits in the outbox for an end-to-end session, which this server never offers: nothing leaves.
    alice.send("bob", "must not leave readable by the server")
    drain(bob, 0.5)
    assert bob.inbox() == []
    assert alice.outbox_size == 1


def test_leaving_a_conversation(seed_connect: Connect) -> None:
    # The seed's conversations end; end-to-end sessions outlive connections (they live in the state), so there
    # PEER_LEFT is not reported.
    alice, bob = login_pair(seed_connect)
    alice.leave("bob")
    assert bob.wait_for(EventKind.PEER_LEFT, "alice", timeout=TIMEOUT).peer == "alice"


def test_iterating_over_events(connect: Connect) -> None:
    alice, bob = login_pair(connect)
    for i in range(3):
        alice.send("bob", f"n{i}")
    texts = []
    for event in bob.events(timeout=TIMEOUT):
        if event.kind == EventKind.MESSAGE:
            texts.append(event.text)
            if len(texts) == 3:
                break
    assert texts == ["n0", "n1", "n2"]
    started = time.monotonic()
    assert [e for e in bob.events(timeout=0.2) if e.kind == EventKind.MESSAGE] == []
    assert time.monotonic() - started < 5


def test_the_context_manager_closes(sim_server: libsim.Server) -> None:
    with sim_server.connect() as client:
        client.login("carol", "carol's password")
        assert not client.closed
    assert client.closed
    with pytest.raises(libsim.ClosedError):
        client.send("bob", "hi")


def test_bad_input_gives_python_exceptions(connect: Connect) -> None:
    alice, bob = login_pair(connect)
    with pytest.raises(TypeError):
        alice.send("bob", b"bytes are not text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        alice.send(b"bob", "hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        alice.send("bob")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        alice.receive(timeout="soon")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        alice.receive(timeout=-1)
    with pytest.raises(TypeError):
        alice.send_raw(b"\x01\x13")  # type: ignore[arg-type]

    with pytest.raises(libsim.MessageTooLarge) as info:
        alice.send("bob", "x" * (libsim.DEFAULT_MAX_FRAME_SIZE + 1))
    assert isinstance(info.value, ValueError)
    assert info.value.code == Errc.FRAME_TOO_LARGE

    with pytest.raises(libsim.RoutingError) as routing:
        alice.send("Server", "hi")
    assert routing.value.code == Errc.BAD_DESTINATION

    drain(alice, 0.2)
    with pytest.raises(libsim.TimeoutError) as timeout:
        alice.receive(timeout=0.05)
    assert isinstance(timeout.value, TimeoutError)  # the built-in one too

    # the oversize attempt did not disturb the conversation
    alice.send("bob", "still fine")
    assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "still fine"

    alice.close()
    alice.close()  # idempotent
    for call in (lambda: alice.send("bob", "x"), lambda: alice.receive(0.1), lambda: alice.open("bob"),
                 lambda: alice.login("alice", "pw"), lambda: alice.events(), lambda: iter(alice),
                 lambda: alice.server_fingerprint):
        with pytest.raises(libsim.ClosedError):
            call()
    # the server saw alice go: she is offline for bob now
    deadline = time.monotonic() + TIMEOUT
    while True:
        bob.probe("alice")
        try:
            bob.wait_for(EventKind.WAITING, "alice", timeout=0.5)
            break
        except libsim.TimeoutError:
            assert time.monotonic() < deadline, "the server still reports alice online"


def test_login_errors(connect: Connect) -> None:
    client = connect()
    with pytest.raises(libsim.AccountError) as info:
        client.login("", "password")
    assert info.value.code in (Errc.BAD_USERNAME, Errc.AUTH_REJECTED)
    client2 = connect()
    with pytest.raises(libsim.AccountError) as empty:
        client2.login("dave", "")
    assert empty.value.code == Errc.BAD_PASSWORD


def test_change_password(connect: Connect) -> None:
    alice = connect()
    alice.login("erin", "erin's first password")
    old_token = alice.session_token
    with pytest.raises(libsim.AccountError) as wrong:
        alice.change_password("not erin's password", "erin's second password")
    assert wrong.value.code == Errc.AUTH_REJECTED
    with pytest.raises(libsim.AccountError) as empty:
        alice.change_password("erin's first password", "")
    assert empty.value.code == Errc.BAD_PASSWORD
    alice.change_password("erin's first password", "erin's second password")
    assert alice.session_token is not None and alice.session_token != old_token
    refused = connect()
    with pytest.raises(libsim.AccountError):
        refused.login("erin", "erin's first password")
    connect().login("erin", "erin's second password")


def test_connect_errors() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(libsim.NetworkError) as info:
        libsim.Client("127.0.0.1", port, connect_timeout=5, in_memory_state=True)
    assert isinstance(info.value, OSError)
    with pytest.raises(TypeError):
        libsim.Client("127.0.0.1", 70000, in_memory_state=True)
    with pytest.raises(ValueError):
        libsim.Client("127.0.0.1", port, connect_timeout=-1, in_memory_state=True)


def test_state_persists_by_default(sim_server: libsim.Server, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14 finding 6: a bot's second run is the same identity to its peers (a state file by default)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))

    def bot_identity_seen_by_a_new_peer(**state: object) -> bytes:
        with libsim.Client("127.0.0.1", sim_server.port, **state) as bot:  # type: ignore[arg-type]
            bot.login("bot", "bot's password")
            publish_prekeys(bot)
            with sim_server.connect() as peer:  # in memory: a new peer every time
                peer.login("peer", "peer's password", "bot")
                peer.wait_for(EventKind.KEY_ASSIGNED, "bot", timeout=TIMEOUT)
                return peer.peer_identity("bot").identity_key

    first = bot_identity_seen_by_a_new_peer(user="bot", state_password="bot's state password")
    default_file = tmp_path / "libsim" / "keys" / f"127.0.0.1_{sim_server.port}-bot.db"
    assert default_file.is_file()
    assert bot_identity_seen_by_a_new_peer(user="bot", state_password="bot's state password") == first
    assert bot_identity_seen_by_a_new_peer(in_memory_state=True) != first  # only when asked
    assert bot_identity_seen_by_a_new_peer(state_file=default_file, state_password="bot's state password") == first


def test_state_options_errors(sim_server: libsim.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    port = sim_server.port
    with pytest.raises(ValueError, match="in_memory_state=True"):
        libsim.Client("127.0.0.1", port, user="bot")  # no password: no silent in-memory identity
    with pytest.raises(ValueError, match="user="):
        libsim.Client("127.0.0.1", port, state_password="pw")  # the default file needs the user's name
    with pytest.raises(ValueError):
        libsim.Client("127.0.0.1", port, in_memory_state=True, state_password="pw")
    libsim.Client("127.0.0.1", port, user="bot", state_password="pw").close()
    with pytest.raises(libsim.CryptoError) as wrong:
        libsim.Client("127.0.0.1", port, user="bot", state_password="not pw")
    assert wrong.value.code == Errc.AUTH_FAILED
    assert "bot.db" in str(wrong.value)
    (tmp_path / "file").write_text("")
    with pytest.raises(libsim.Error) as unusable:
        libsim.Client("127.0.0.1", port, state_file=tmp_path / "file" / "bot.db", state_password="pw")
    assert "file" in str(unusable.value)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_closed_becomes_true_when_the_server_goes_away(how: str) -> None:
    """Issue 14 finding 7, without reading any event: `closed` follows the connection itself."""
    with libsim.Server() as server:  # not the fixture: that one fails a test whose simd did not exit cleanly
        client = server.connect()
        client.login("alice", "alice's password")
        assert not client.closed
        if how == "stop":
            assert server.stop() == 0
        else:
            server._kill()  # SIGKILL: no goodbye from the server
        deadline = time.monotonic() + TIMEOUT
        while not client.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.closed
        client.close()


def test_bad_client_options(sim_server: libsim.Server) -> None:
    with pytest.raises(libsim.InvalidArgument):
        sim_server.connect(expected_fingerprint="not a fingerprint")
    with pytest.raises(libsim.InvalidArgument):
        sim_server.connect(trust=libsim.TrustMode.ASK)  # ASK needs ask_trust
    with pytest.raises(TypeError):
        sim_server.connect(ask_trust="yes")


def test_ask_trust_callback(sim_server: libsim.Server) -> None:
    seen: list[str] = []

    def refuse(fingerprint: str) -> bool:
        seen.append(fingerprint)
        return False

    with pytest.raises(libsim.HandshakeError) as info:
        sim_server.connect(trust=libsim.TrustMode.ASK, ask_trust=refuse)
    assert info.value.code == Errc.SERVER_KEY_UNKNOWN
    assert len(seen) == 1 and len(seen[0].split()) == 16

    def explode(fingerprint: str) -> bool:
        raise KeyError("from the callback")

    with pytest.raises(KeyError):
        sim_server.connect(trust=libsim.TrustMode.ASK, ask_trust=explode)

    with sim_server.connect(trust=libsim.TrustMode.ASK, ask_trust=lambda fp: fp == seen[0]) as client:
        assert client.server_fingerprint == seen[0]

    with pytest.raises(libsim.HandshakeError):
        sim_server.connect(trust=libsim.TrustMode.PINNED_ONLY)


def test_receive_releases_the_gil(connect: Connect) -> None:
    client = connect()
    client.login("erin", "erin's password")
    drain(client, 0.1)
    window: list[float] = []
    failures: list[BaseException] = []

    def blocked() -> None:
        window.append(time.monotonic())
        try:
            client.receive(timeout=1.5)
        except libsim.TimeoutError:
            pass
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)
        window.append(time.monotonic())

    thread = threading.Thread(target=blocked)
    stamps: list[float] = []
    thread.start()
    while thread.is_alive():  # pure-Python work on the main thread meanwhile
        stamps.append(time.monotonic())
    thread.join()
    assert not failures
    begin, end = window
    # Had receive() kept the GIL, the main thread could not have run while it waited: one gap of 1.5 s.
    points = [begin] + [t for t in stamps if begin < t < end] + [end]
    worst = max(b - a for a, b in zip(points, points[1:]))
    assert worst < 0.75, f"the main thread stalled for {worst:.2f} s while receive() waited"


def test_ctrl_c_interrupts_a_blocking_receive(connect: Connect) -> None:
    client = connect()
    client.login("frank", "frank's password")
    assert [e for e in drain(client, 0.1) if e.kind == EventKind.MESSAGE] == []

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGINT, handler)
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT))
    try:
        started = time.monotonic()
        timer.start()
        with pytest.raises(Interrupted):
            # Nothing will arrive. Python runs signal handlers between bytecodes, so without the extension's own
            # signal checks the handler would only run once receive() gives up after 10 s.
            client.receive(timeout=10.0)
        assert time.monotonic() - started < 3.0
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    # the client is still usable afterwards
    client.probe("nobody")
    assert client.wait_for(EventKind.WAITING, "nobody", timeout=TIMEOUT).peer == "nobody"


def test_linking_a_second_device(connect: Connect) -> None:
    laptop = connect()
    laptop.login("frank", "frank's password")
    assert laptop.device == 1
    phone = connect()
    phone.start_link("frank", "frank's password")
    ask = laptop.wait_for(EventKind.LINK_REQUEST, timeout=TIMEOUT)
    code = phone.wait_for(EventKind.LINK_CODE, timeout=TIMEOUT)
    assert isinstance(code, libsim.LinkCodeEvent) and code.device == ask.device == 2
    assert code.fingerprint == ask.fingerprint
    with pytest.raises(libsim.Error) as early:
        phone.send("frank", "not yet")
    assert early.value.code == Errc.NOT_AUTHENTICATED
    laptop.approve_device(code.code)
    phone.wait_for(EventKind.AUTHENTICATED, timeout=TIMEOUT)
    assert phone.device == 2
    # End to end, a peer's message reaches both devices; one sent from the phone shows on the laptop as frank's.
    gina = connect()
    gina.login("gina", "gina's password")
    gina.send("frank", "to both of you")
    for device in (laptop, phone):
        got = device.wait_for(EventKind.MESSAGE, timeout=TIMEOUT)
        assert (got.peer, got.text, got.from_me) == ("gina", "to both of you", False)
    phone.send("gina", "from the phone")
    answer = gina.wait_for(EventKind.MESSAGE, timeout=TIMEOUT)
    assert (answer.text, answer.sender_device, answer.from_me) == ("from the phone", 2, False)
    copy = laptop.wait_for(EventKind.MESSAGE, timeout=TIMEOUT)
    assert (copy.peer, copy.text, copy.from_me, copy.sender_device) == ("gina", "from the phone", True, 2)
    assert laptop.inbox(0, 10, peer="gina")[-1].from_me
    devices = laptop.devices()
    assert [(d.device, d.status) for d in devices] == [(1, "active"), (2, "active")]
    laptop.rename_device(2, "phone")
    assert laptop.wait_for(EventKind.DEVICE_INFO, timeout=TIMEOUT).devices[1].name == "phone"
    with pytest.raises(libsim.Error) as nobody:
        laptop.approve_device("ABCD-EFGH")  # no device asks now
    assert nobody.value.code == Errc.INVALID_STATE
    laptop.remove_device(2)
    removed = phone.wait_for(EventKind.ERROR, timeout=TIMEOUT)  # the server says why, then closes
    assert removed.error.code == Errc.DEVICE_UNKNOWN
    phone.wait_for(EventKind.CLOSED, timeout=TIMEOUT)
    assert [(d.device, d.status) for d in laptop.devices()] == [(1, "active"), (2, "removed")]
