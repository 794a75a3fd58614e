"""End-to-end mode through a real simd (docs/protocol.md section 6): sessions from prekey bundles, safety numbers,
receipts, offline storage and delivery at login, the encrypted state file across restarts, and a changed identity
key that stops the conversation until the user accepts it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest
from conftest import TIMEOUT, drain, publish_prekeys

import libsim
from libsim import ConversationMode, Errc, EventKind

Connect = Callable[..., libsim.Client]

SAFETY_NUMBER = re.compile(r"\d{5}( \d{5}){11}")
ALICE, BOB = "alice's password", "bob's password"
ALICE_STATE, BOB_STATE = "alice's state key", "bob's state key"


def receipts(client: libsim.Client, ids: list[bytes], status: libsim.ReceiptStatus) -> list[libsim.ReceiptEvent]:
    """Wait until every id in `ids` has a receipt with `status` (STORED skipped when waiting for DELIVERED)."""
    want = set(ids)
    got = []
    while want:
        event = client.wait_for(EventKind.RECEIPT, timeout=TIMEOUT)
        assert event.message_id is not None and len(event.message_id) == 16
        assert isinstance(event, libsim.ReceiptEvent), event
        if event.status == status and event.message_id in want:
            want.discard(event.message_id)
            got.append(event)
    return got


def no_messages(client: libsim.Client, quiet: float = 0.5) -> list[libsim.Event]:
    """The events of the next `quiet` seconds, after checking that no message and no identity change is among them."""
    events = drain(client, quiet)
    assert [e for e in events if e.kind in (EventKind.MESSAGE, EventKind.IDENTITY_CHANGED)] == []
    return events


def test_two_clients_end_to_end(connect: Connect) -> None:
    bob = connect()
    bob.login("bob", BOB)
    publish_prekeys(bob)
    alice = connect()
    alice.login("alice", ALICE, "bob")
    keyed = alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    assert keyed.mode == ConversationMode.END_TO_END and keyed.mode.display_name == "end-to-end"
    assert keyed.first_contact
    assert SAFETY_NUMBER.fullmatch(keyed.safety_number), keyed.safety_number
    assert keyed.suite == libsim.SuiteId.AES256_GCM

    sent = alice.send("bob", "Hello Bob!")
    assert isinstance(sent, bytes) and len(sent) == 16
    responder = bob.wait_for(EventKind.KEY_ASSIGNED, "alice", timeout=TIMEOUT)  # learnt from the first message
    assert responder.mode == ConversationMode.END_TO_END
    got = bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT)
    assert (got.text, got.mode, got.message_id, got.seq) == ("Hello Bob!", ConversationMode.END_TO_END, sent, 1)
    (delivered,) = receipts(alice, [sent], libsim.ReceiptStatus.DELIVERED)
    assert delivered.peer == "bob" and "DELIVERED" in repr(delivered)
    assert alice.outbox_size == 0

    # Both sides compute the same safety number, and it is the one the key events showed.
    alice_view, bob_view = alice.peer_identity("bob"), bob.peer_identity("alice")
    assert isinstance(alice_view, libsim.PeerIdentity)
    assert alice_view.safety_number == bob_view.safety_number == keyed.safety_number == responder.safety_number
    assert (alice_view.peer, bob_view.peer) == ("bob", "alice")
    assert len(alice_view.identity_key) == 32 and alice_view.identity_key != bob_view.identity_key
    assert not alice_view.verified and not alice_view.change_pending
    alice.verify_peer("bob")
    assert alice.peer_identity("bob").verified
    assert not bob.peer_identity("alice").verified  # verification is local
    assert "verified=True" in repr(alice.peer_identity("bob"))

    reply = bob.send("alice", "Hi Alice ✓")
    answer = alice.wait_for(EventKind.MESSAGE, "bob", timeout=TIMEOUT)
    assert (answer.text, answer.message_id) == ("Hi Alice ✓", reply)
    receipts(bob, [reply], libsim.ReceiptStatus.DELIVERED)
    assert bob.outbox_size == 0

    # Sequence numbers continue per sender; every id is new.
    ids = [alice.send("bob", f"n{i}") for i in range(3)]
    assert len(set(ids + [sent])) == 4
    got_all = [bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT) for _ in ids]
    assert [(e.text, e.seq, e.message_id) for e in got_all] == [(f"n{i}", i + 2, ids[i]) for i in range(3)]


def test_identity_calls_refuse_unknown_peers(connect: Connect) -> None:
    alice = connect()
    alice.login("alice", ALICE)
    for call in (alice.peer_identity, alice.verify_peer):
        with pytest.raises(libsim.RoutingError) as info:
            call("carol")
        assert info.value.code == Errc.NO_CONVERSATION
    with pytest.raises(libsim.StateError) as pending:
        alice.accept_identity("carol")
    assert pending.value.code == Errc.INVALID_STATE
    with pytest.raises(TypeError):
        alice.peer_identity(b"carol")  # type: ignore[arg-type]
    assert alice.outbox_size == 0


def test_message_to_an_offline_user_is_stored_then_delivered(connect: Connect, tmp_path: Path) -> None:
    bob_state = tmp_path / "bob.db"
    with connect(state_file=bob_state, state_password=BOB_STATE) as bob:
        bob.login("bob", BOB)
        publish_prekeys(bob)  # the bundle alice needs is on the server before bob leaves
        bob.logout()

    alice = connect()
    alice.login("alice", ALICE, "bob")
    alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    texts = ["while you were away", "second one", "third ✓"]
    ids = [alice.send("bob", t) for t in texts]
    stored = receipts(alice, ids, libsim.ReceiptStatus.STORED)  # durable on the server
    assert {e.peer for e in stored} == {"bob"}
    assert alice.outbox_size == 0

    bob = connect(state_file=bob_state, state_password=BOB_STATE)
    bob.login("bob", BOB)
    got = [bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT) for _ in texts]
    assert [(e.text, e.message_id, e.seq) for e in got] == [(t, i, n + 1) for n, (t, i) in
                                                              enumerate(zip(texts, ids))]
    receipts(alice, ids, libsim.ReceiptStatus.DELIVERED)
    assert not [e for e in no_messages(bob) if e.kind == EventKind.GAP]

    # Delivered once: a restart of bob does not show them again.
    bob.close()
    bob = connect(state_file=bob_state, state_password=BOB_STATE)
    bob.login("bob", BOB)
    no_messages(bob, 1.0)


def test_state_file_keeps_the_identity_across_restarts(connect: Connect, tmp_path: Path) -> None:
    alice_state, bob_state = tmp_path / "alice.db", str(tmp_path / "bob.db")  # os.PathLike and str
    bob = connect(state_file=bob_state, state_password=BOB_STATE)
    bob.login("bob", BOB)
    publish_prekeys(bob)
    alice = connect(state_file=alice_state, state_password=ALICE_STATE)
    alice.login("alice", ALICE, "bob")
    number = alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT).safety_number
    first = alice.send("bob", "first run")
    assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "first run"
    receipts(alice, [first], libsim.ReceiptStatus.DELIVERED)
    alice.verify_peer("bob")

    # The file is held while its client is open.
    with pytest.raises(libsim.Error) as busy:
        connect(state_file=alice_state, state_password=ALICE_STATE)
    assert busy.value.code == Errc.BUSY
    alice.close()
    bob.close()

    # A wrong password is refused and changes nothing.
    with pytest.raises(libsim.CryptoError) as wrong:
        connect(state_file=alice_state, state_password="not the state key")
    assert wrong.value.code == Errc.AUTH_FAILED

    alice = connect(state_file=alice_state, state_password=ALICE_STATE)
    alice.login("alice", ALICE)
    bob = connect(state_file=bob_state, state_password=BOB_STATE)
    bob.login("bob", BOB)
    view = alice.peer_identity("bob")
    assert (view.safety_number, view.verified, view.change_pending) == (number, True, False)
    assert bob.peer_identity("alice").safety_number == number

    # The ratchet session of the first run goes on: no new KEYGEN, no identity change, the sequence continues.
    second = alice.send("bob", "second run")
    got = bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT)
    assert (got.text, got.message_id, got.seq) == ("second run", second, 2)
    receipts(alice, [second], libsim.ReceiptStatus.DELIVERED)
    no_messages(alice)


def test_state_file_arguments(sim_server: libsim.Server, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        sim_server.connect(state_file=tmp_path / "x.db")  # no password
    with pytest.raises(ValueError):
        sim_server.connect(state_password="a key for no file")
    with pytest.raises(ValueError):
        sim_server.connect(state_file="", state_password="k")
    with pytest.raises(TypeError):
        sim_server.connect(state_file=tmp_path / "x.db", state_password=b"bytes")
    with pytest.raises(TypeError):
        sim_server.connect(state_file=42, state_password="k")
    assert not (tmp_path / "x.db").exists()
    with pytest.raises(libsim.Error) as info:
        sim_server.connect(state_file=tmp_path / "no-such-dir" / "x.db", state_password="k")
    assert info.value.code in (Errc.STORAGE_ERROR, Errc.IO_ERROR)


def test_changed_identity_key_stops_the_conversation_until_accepted(connect: Connect, tmp_path: Path) -> None:
    bob = connect(state_file=tmp_path / "bob-phone.db", state_password=BOB_STATE)
    bob.login("bob", BOB)
    publish_prekeys(bob)
    alice = connect()
    alice.login("alice", ALICE, "bob")
    old = alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT).safety_number
    alice.send("bob", "hi phone")
    assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "hi phone"
    alice.verify_peer("bob")
    bob.close()

    # bob on a new device: a new state file, so a new identity key.
    laptop = connect(state_file=tmp_path / "bob-laptop.db", state_password=BOB_STATE)
    laptop.login("bob", BOB, "alice")
    assert laptop.wait_for(EventKind.KEY_ASSIGNED, "alice", timeout=TIMEOUT).first_contact
    held = laptop.send("alice", "it's me, on my laptop")

    changed = alice.wait_for(EventKind.IDENTITY_CHANGED, "bob", timeout=TIMEOUT)
    assert SAFETY_NUMBER.fullmatch(changed.safety_number) and changed.safety_number != old
    view = alice.peer_identity("bob")
    assert view.change_pending and view.safety_number == old  # still the pinned key
    assert [e for e in drain(alice, 0.5) if e.kind == EventKind.MESSAGE] == []  # held, not shown
    with pytest.raises(libsim.StateError) as refused:
        alice.send("bob", "to whom?")
    assert refused.value.code == Errc.IDENTITY_CHANGED
    with pytest.raises(libsim.StateError) as unverifiable:
        alice.verify_peer("bob")
    assert unverifiable.value.code == Errc.IDENTITY_CHANGED

    alice.accept_identity("bob")
    shown = alice.wait_for(EventKind.MESSAGE, "bob", timeout=TIMEOUT)
    assert (shown.text, shown.message_id) == ("it's me, on my laptop", held)
    view = alice.peer_identity("bob")
    assert (view.safety_number, view.verified, view.change_pending) == (changed.safety_number, False, False)
    assert laptop.peer_identity("alice").safety_number == changed.safety_number
    with pytest.raises(libsim.StateError):
        alice.accept_identity("bob")  # nothing pending any more

    welcome = alice.send("bob", "welcome back")
    got = laptop.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT)
    assert (got.text, got.message_id) == ("welcome back", welcome)


def test_end_to_end_suites(sim_server_factory: Callable[..., libsim.Server]) -> None:
    """The server's conversation suite is only a hint in end-to-end mode: the initiator's policy decides."""
    server = sim_server_factory(conversation_suite="tdes")
    with server.connect() as bob, server.connect() as alice, server.connect(
            end_to_end_suites=libsim.SuitePolicy.forbid_tdes()) as carol:
        bob.login("bob", BOB)
        publish_prekeys(bob)
        alice.login("alice", ALICE, "bob")
        assert alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT).suite == \
            libsim.SuiteId.TDES_CBC_HMAC_SHA256
        alice.send("bob", "Triple-DES, end to end")
        assert bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT).text == "Triple-DES, end to end"
        assert bob.conversation_suite("alice") == libsim.SuiteId.TDES_CBC_HMAC_SHA256

        carol.login("carol", "carol's password", "bob")
        keyed = carol.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
        assert keyed.suite != libsim.SuiteId.TDES_CBC_HMAC_SHA256
        carol.send("bob", "not Triple-DES")
        assert bob.wait_for(EventKind.MESSAGE, "carol", timeout=TIMEOUT).text == "not Triple-DES"
        assert bob.conversation_suite("carol") == keyed.suite


def test_closed_when_the_server_dies_and_outbox_known_before_login(
        sim_server_factory: Callable[..., libsim.Server], tmp_path: Path) -> None:
    data = tmp_path / "simd"
    server = sim_server_factory(data_dir=data)
    alice_state = tmp_path / "alice.db"
    with server.connect() as bob:
        bob.login("bob", BOB)
        publish_prekeys(bob)
        bob.logout()
    alice = server.connect(state_file=alice_state, state_password=ALICE_STATE)
    alice.login("alice", ALICE, "bob")
    alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    assert not alice.closed
    assert server.stop() == 0
    alice.wait_for(EventKind.CLOSED, timeout=TIMEOUT)
    assert alice.closed  # the connection is gone, not only after close()
    ids = [alice.send("bob", f"written while the server was down {n}") for n in range(3)]
    assert alice.outbox_size == 3
    alice.close()

    # A new process on the same state knows its outbox before it logs in, and sends it after.
    server = sim_server_factory(data_dir=data)
    alice = server.connect(state_file=alice_state, state_password=ALICE_STATE)
    assert alice.outbox_size == 3
    alice.login("alice", ALICE)
    receipts(alice, ids, libsim.ReceiptStatus.STORED)
    assert alice.outbox_size == 0


def test_inbox_keeps_every_message_across_restarts(connect: Connect, tmp_path: Path) -> None:
    bob_state = tmp_path / "bob.db"
    bob = connect(state_file=bob_state, state_password=BOB_STATE)
    bob.login("bob", BOB)
    publish_prekeys(bob)
    with pytest.raises(libsim.Error) as before_login:
        connect().inbox()  # before login: whose inbox?
    assert before_login.value.code == Errc.NOT_AUTHENTICATED
    alice = connect()
    alice.login("alice", ALICE, "bob")
    alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    texts = [f"kept {n}" for n in range(5)]
    ids = [alice.send("bob", t) for t in texts]
    events = [bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT) for _ in texts]
    assert [e.inbox_index for e in events] == list(range(5))
    assert bob.inbox_status.next == 5 and bob.inbox_status.unread == 5
    bob.mark_read(3)
    bob.close()  # the application goes away without reading more

    bob = connect(state_file=bob_state, state_password=BOB_STATE)
    bob.login("bob", BOB)
    entries = bob.inbox()
    assert [(e.index, e.peer, e.message_id, e.text, e.read) for e in entries] == [
        (n, "alice", ids[n], texts[n], n < 3) for n in range(5)]
    # The sender's timestamp and the server's receive time, as the events gave them, kept in the state.
    assert [(e.sent_at, e.received_at) for e in entries] == [(e.sent_at, e.received_at) for e in events]
    assert all(e.sent_at is not None and e.received_at is not None for e in entries)
    assert all(e.sent_at <= e.received_at + 0.001 for e in entries)  # one machine's clock for both
    assert [e.text for e in bob.inbox(3, 10, peer="alice")] == texts[3:]
    assert bob.inbox(peer="carol") == []
    assert bob.inbox_status.unread == 2


def test_one_sender_cannot_fill_the_server_disk(sim_server_factory: Callable[..., libsim.Server],
                                                tmp_path: Path) -> None:
    """Offline messages count against their sender's quota (docs/protocol.md 6.7): a flood to offline recipients
    stops at it with quota_exceeded, keeps the refused messages in the sender's outbox, and others are still
    served."""
    server = sim_server_factory(extra_args=["--max-sender-bytes", "64K"])
    clients: list[libsim.Client] = []
    try:
        bob_state = tmp_path / "bob.db"
        for name in ("bob", "carol"):
            with server.connect(state_file=tmp_path / f"{name}.db", state_password=BOB_STATE) as peer:
                peer.login(name, BOB)
                publish_prekeys(peer)
                peer.logout()
        alice = server.connect()
        clients.append(alice)
        alice.login("alice", ALICE)
        for name in ("bob", "carol"):
            alice.open(name)
            alice.wait_for(EventKind.KEY_ASSIGNED, name, timeout=TIMEOUT)
        text = "x" * 4000
        ids = {alice.send("bob" if n % 2 == 0 else "carol", text): n for n in range(30)}
        stored: set[bytes] = set()
        errors: list[libsim.Event] = []
        event = alice.receive(timeout=TIMEOUT)
        while event is not None:  # until the refusal, then what the commits under way still answer
            if event.kind == EventKind.RECEIPT:
                assert event.status == libsim.ReceiptStatus.STORED, event
                stored.add(event.message_id)
            elif event.kind == EventKind.ERROR:
                errors.append(event)
            event = next(iter(alice.events(timeout=1.0 if errors else TIMEOUT)), None)
        assert errors, "no refusal"
        refused = errors[0]
        assert refused.error.code == Errc.QUOTA_EXCEEDED
        assert 10 <= len(stored) < 30  # about 64 KiB of 4 KB messages
        assert alice.outbox_size == 30 - len(stored)  # the refused ones wait to be sent again

        # Another sender is not affected.
        dave = server.connect()
        clients.append(dave)
        dave.login("dave", "dave's password", "bob")
        dave.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
        dave_id = dave.send("bob", "hello bob")
        assert dave.wait_for(EventKind.RECEIPT, timeout=TIMEOUT).message_id == dave_id

        # What was stored arrives, in the order sent.
        bob = server.connect(state_file=bob_state, state_password=BOB_STATE)
        clients.append(bob)
        bob.login("bob", BOB)
        want = sorted(ids[i] for i in stored if ids[i] % 2 == 0)
        got = [bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT) for _ in want]
        assert [ids[e.message_id] for e in got] == want
        assert bob.wait_for(EventKind.MESSAGE, "dave", timeout=TIMEOUT).text == "hello bob"
    finally:
        for c in clients:
            c.close()
