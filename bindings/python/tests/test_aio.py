"""The asyncio client (libsim.aio) through a real simd: two async clients end to end (messages both ways, receipts,
the inbox), an async client with a blocking one, many concurrent sends without a thread per call, timeouts, and
what waits and iterations do when the server goes away or the client is closed. Each test drives its own loop with
asyncio.run()."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

import pytest
from conftest import TIMEOUT, publish_prekeys

import libsim
import libsim.aio
from libsim import ConversationMode, Errc, EventKind
from libsim.aio import AsyncClient

T = TypeVar("T")


def run(main: Callable[[], Awaitable[T]]) -> T:
    """Run `main()` on a fresh loop, bounded so that a hang fails the test instead of stalling the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), 4 * TIMEOUT)

    return asyncio.run(bounded())


def os_threads() -> int:
    """Threads of this process, Python's and C++'s alike."""
    return len(os.listdir("/proc/self/task"))


async def connect(server: libsim.Server, **options: Any) -> AsyncClient:
    options.setdefault("in_memory_state", "state_password" not in options)
    return await libsim.aio.connect(server.host, server.port, connect_timeout=TIMEOUT, **options)


async def async_pair(server: libsim.Server) -> tuple[AsyncClient, AsyncClient]:
    """bob logs in and publishes his prekeys; alice logs in and opens a conversation with him."""
    bob = await connect(server)
    await bob.login("bob", "bob's password")
    await bob.probe("nobody")  # answered after bob's prekey upload went out (see conftest.publish_prekeys)
    await bob.wait_for(EventKind.WAITING, "nobody", timeout=TIMEOUT)
    alice = await connect(server)
    await alice.login("alice", "alice's password")
    await alice.open("bob")
    keyed = await alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
    assert keyed.mode == ConversationMode.END_TO_END
    return alice, bob


async def delivered(client: AsyncClient, ids: list[bytes]) -> None:
    """Wait for a 'delivered' receipt of every id (skipping 'stored' ones)."""
    want = set(ids)
    while want:
        event = await client.wait_for(EventKind.RECEIPT, timeout=TIMEOUT)
        assert isinstance(event, libsim.ReceiptEvent), event
        if event.status == libsim.ReceiptStatus.DELIVERED:
            want.discard(event.message_id)


def test_two_async_clients_end_to_end(sim_server: libsim.Server, tmp_path: Any) -> None:
    async def main() -> None:
        alice, bob = await async_pair(sim_server)
        async with alice, bob:
            assert alice.authenticated and alice.user == "alice" and alice.conversations == ["bob"]
            assert alice.conversation_suite("bob") == libsim.SuiteId.AES256_GCM
            sent = await alice.send("bob", "Hello Bob!")
            assert isinstance(sent, bytes) and len(sent) == 16
            got = await bob.wait_for(EventKind.MESSAGE, "alice", timeout=TIMEOUT)
            assert (got.text, got.message_id, got.mode) == ("Hello Bob!", sent, ConversationMode.END_TO_END)
            await delivered(alice, [sent])
            assert alice.outbox_size == 0

            reply = await bob.send("alice", "Hi Alice ✓")
            assert (await alice.wait_for(EventKind.MESSAGE, "bob", timeout=TIMEOUT)).text == "Hi Alice ✓"
            await delivered(bob, [reply])
            assert alice.peer_identity("bob").safety_number == bob.peer_identity("alice").safety_number

            # The inbox: every message bob received, read or not.
            assert bob.inbox_status.next == 1 and bob.inbox_status.unread == 1
            (entry,) = bob.inbox()
            assert (entry.peer, entry.text, entry.message_id, entry.read) == ("alice", "Hello Bob!", sent, False)
            bob.mark_read(1)
            assert bob.inbox_status.unread == 0 and bob.inbox(peer="alice")[0].read
        assert alice.closed and bob.closed

    run(main)


def test_state_file_keeps_the_identity(sim_server: libsim.Server, tmp_path: Any) -> None:
    state = {"state_file": tmp_path / "carol.db", "state_password": "carol's state key"}

    async def main() -> tuple[bytes, bytes]:
        keys = []
        for _ in range(2):
            async with await connect(sim_server, **state) as carol:
                await carol.login("carol", "carol's password")
                token = carol.session_token
                assert token is not None
                keys.append(token[0])
        return keys[0], keys[1]

    first, second = run(main)
    assert first != second  # a new session token per login, same account and state file
    assert (tmp_path / "carol.db").is_file()


def test_async_and_blocking_clients(sim_server: libsim.Server) -> None:
    bob = sim_server.connect()
    bob.login("bob", "bob's password")
    publish_prekeys(bob)

    async def main() -> None:
        async with await connect(sim_server) as alice:
            await alice.login("alice", "alice's password", "bob")
            await alice.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=TIMEOUT)
            sent = await alice.send("bob", "from the loop")
            # The blocking client waits on a worker thread so that the loop goes on delivering alice's events.
            got = await asyncio.to_thread(bob.wait_for, EventKind.MESSAGE, "alice", timeout=TIMEOUT)
            assert (got.text, got.message_id) == ("from the loop", sent)
            bob.send("alice", "from a thread")
            assert (await alice.wait_for(EventKind.MESSAGE, "bob", timeout=TIMEOUT)).text == "from a thread"
            await delivered(alice, [sent])

    try:
        run(main)
    finally:
        bob.close()


def test_many_concurrent_sends_use_no_thread_per_call(sim_server: libsim.Server) -> None:
    count = 200

    async def main() -> None:
        alice, bob = await async_pair(sim_server)
        async with alice, bob:
            threads = (threading.active_count(), os_threads())
            ids = await asyncio.gather(*(alice.send("bob", f"message {i}") for i in range(count)))
            assert (threading.active_count(), os_threads()) == threads
            assert len(set(ids)) == count
            texts = []
            async for event in bob.events(timeout=TIMEOUT):
                if event.kind == EventKind.MESSAGE:
                    texts.append(event.text)
                    if len(texts) == count:
                        break
            assert texts == [f"message {i}" for i in range(count)]
            await delivered(alice, list(ids))
            assert (threading.active_count(), os_threads()) == threads

    run(main)


def test_a_wait_times_out_without_blocking_the_loop(sim_server: libsim.Server) -> None:
    async def main() -> None:
        async with await connect(sim_server) as alice:
            await alice.login("alice", "alice's password")
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            task = asyncio.create_task(ticker())
            start = time.monotonic()
            with pytest.raises(libsim.TimeoutError) as info:
                await alice.wait_for(EventKind.MESSAGE, "bob", timeout=0.3)
            assert 0.25 <= time.monotonic() - start < 3
            assert info.value.code == Errc.TIMEOUT and isinstance(info.value, TimeoutError)
            assert ticks >= 5  # the loop ran other tasks meanwhile
            task.cancel()
            kinds = [e.kind async for e in alice.events(timeout=0.2)]  # what login left queued, then silence
            assert EventKind.CHANNEL_READY in kinds and EventKind.MESSAGE not in kinds
            with pytest.raises(libsim.TimeoutError):
                await alice.receive(timeout=0.05)
            assert not alice.closed

    run(main)


def test_a_wrong_password_raises(sim_server: libsim.Server) -> None:
    async def main() -> None:
        async with await connect(sim_server) as alice:
            await alice.login("alice", "the real password")
        async with await connect(sim_server) as mallory:
            with pytest.raises(libsim.AccountError) as info:
                await mallory.login("alice", "a wrong password")
            assert info.value.code == Errc.AUTH_REJECTED

    run(main)


def test_the_server_going_away_ends_iteration(sim_server: libsim.Server) -> None:
    async def main() -> None:
        alice = await connect(sim_server)
        await alice.login("alice", "alice's password")
        waiting = asyncio.create_task(alice.wait_for(EventKind.MESSAGE, "bob"))
        await asyncio.sleep(0.05)
        stop = asyncio.create_task(asyncio.to_thread(sim_server.stop))
        kinds = [event.kind async for event in alice]  # no timeout: ends because the connection is gone
        assert kinds[-1] == EventKind.CLOSED
        assert alice.closed
        with pytest.raises(libsim.ClosedError):
            await waiting
        with pytest.raises(libsim.ClosedError):
            await alice.wait_for(EventKind.MESSAGE, timeout=TIMEOUT)
        queued = await alice.send("bob", "anyone?")  # kept in the outbox for the next connection
        assert len(queued) == 16 and alice.outbox_size == 1
        await alice.close()
        assert await stop == 0

    run(main)


def test_close_fails_pending_waits_and_later_calls(sim_server: libsim.Server) -> None:
    async def main() -> None:
        alice = await connect(sim_server)
        await alice.login("alice", "alice's password")
        assert "open" in repr(alice)
        waiting = asyncio.create_task(alice.wait_for(EventKind.MESSAGE))
        await asyncio.sleep(0.05)
        await alice.close()
        await alice.close()  # idempotent
        assert alice.closed and "closed" in repr(alice)
        with pytest.raises(libsim.ClosedError):
            await waiting
        with pytest.raises(libsim.ClosedError):
            await alice.send("bob", "too late")
        with pytest.raises(libsim.ClosedError):
            await alice.receive(timeout=1)
        with pytest.raises(libsim.ClosedError):
            alice.inbox()

    run(main)


def test_connect_errors_are_the_blocking_clients(sim_server: libsim.Server, tmp_path: Any) -> None:
    async def main() -> None:
        with pytest.raises(ValueError, match="state_password"):
            await connect(sim_server, state_file=tmp_path / "x.db")
        with pytest.raises(libsim.InvalidArgument):
            await connect(sim_server, expected_fingerprint="not a fingerprint")
        with pytest.raises(libsim.HandshakeError) as info:
            await connect(sim_server, trust=libsim.TrustMode.PINNED_ONLY)  # nothing is pinned
        assert info.value.code == Errc.SERVER_KEY_UNKNOWN

    run(main)
