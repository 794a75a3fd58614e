"""The networked client for asyncio::

    async with await libsim.aio.connect("127.0.0.1", port, user="alice", state_password="...") as client:
        await client.login("alice", "password", "bob")
        await client.wait_for(EventKind.KEY_ASSIGNED, "bob", timeout=10)
        await client.send("bob", "hello")
        async for event in client.events(timeout=5):
            print(event)

An :class:`AsyncClient` wraps a :class:`libsim.Client` and runs on the event loop without a thread per call: the C++
client signals queued events on a file descriptor (``Client.event_fd``) that the loop watches; each wake-up takes
every queued event at once and hands it to the first waiting ``receive``/``wait_for``/``login`` that wants it, or
keeps it in order for later. Calls that only queue work (``send``, ``open``, ``probe``, the inbox) return at once;
calls that wait for the server (``login``, ``wait_for``) await the event that answers them. The only work done on a
worker thread is :func:`connect`'s, once per connection: the TCP connection, the channel handshake and opening the
state file (a password hash), which the C++ client does as one blocking step.
"""

from __future__ import annotations

import asyncio
import collections
import functools
from typing import Any, AsyncIterator, Callable, Generic, Optional, TypeVar

from ._libsim import Client, EventKind, Frame, InboxEntry, InboxStatus, PeerIdentity, SuiteId
from .client import Event, peer_of
from .errors import ClosedError, Errc
from .errors import TimeoutError as _Timeout

__all__ = ["AsyncClient", "connect"]

_Match = Callable[[Event], bool]
_T = TypeVar("_T")
# What ends a wait for the server's answer to login or registration, as in the blocking client.
_ANSWERS = (EventKind.AUTHENTICATED, EventKind.ERROR, EventKind.CLOSED)


async def connect(host: str, port: int, **options: Any) -> AsyncClient:
    """Connect to a libsim server and complete the handshake: ``await connect(host, port, **options)`` takes the
    options of :class:`libsim.Client` (``state_file``, ``state_password``, ``trust``, ``connect_timeout``...) and
    raises its errors. The blocking part (TCP connection, handshake, opening the state file) runs once on the
    loop's default executor; an ``ask_trust`` callback is called there, not on the loop."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, functools.partial(Client, host, port, **options))
    try:
        client = await asyncio.shield(future)
    except asyncio.CancelledError:
        # The connection may still complete on the worker: close it then rather than leaving it open.
        future.add_done_callback(_close_if_connected)
        raise
    return AsyncClient(client)


class _Forward(Generic[_T]):
    """A read-only attribute of the blocking client under the same name, read through (no network I/O)."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: Optional[AsyncClient], owner: Optional[type] = None) -> _T:
        if instance is None:
            return self  # type: ignore[return-value]  # the class attribute, e.g. for help()
        value: _T = getattr(instance.client, self._name)
        return value


def _close_if_connected(future: asyncio.Future[Client]) -> None:
    if not future.cancelled() and future.exception() is None:
        future.result().close()


class AsyncClient:
    """A :class:`libsim.Client` on an asyncio event loop (see the module's documentation).

    ``AsyncClient(client)`` adopts a connected blocking client (from inside a running loop, which it then belongs
    to); :func:`connect` is the usual way to get one. Use it as ``async with``: leaving the block closes it. The
    blocking client stays available as :attr:`client` (do not mix its ``receive``/``wait_for`` with this object's:
    they take from the same queue)."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._loop = asyncio.get_running_loop()
        self._pending: collections.deque[Event] = collections.deque()
        self._waiters: list[tuple[_Match, asyncio.Future[Event]]] = []
        self._gone = False  # the CLOSED event came: nothing more will
        self._closing = False  # close() was called
        self._fd = client.event_fd
        self._loop.add_reader(self._fd, self._on_events)
        self._on_events()  # what was queued before the loop watched (CHANNEL_READY)

    # ------------------------------------------------------------------ waiting for the server

    async def login(self, user: str, password: str, destination: str = "", *, timeout: float = 30.0) -> None:
        """Log in (an unknown user is registered under open registration) and wait for the server's answer;
        `destination` names a peer to talk to at once. Raises AccountError (AUTH_REJECTED...), TimeoutError,
        ClosedError."""
        self._client.start_login(user, password, destination)
        await self._answer(timeout)

    async def login_with_token(self, user: str, token: bytes, destination: str = "", *,
                               timeout: float = 30.0) -> None:
        """Log in with a session token from an earlier password login (``session_token``)."""
        self._client.start_login_with_token(user, token, destination)
        await self._answer(timeout)

    async def register(self, user: str, password: str, *, timeout: float = 30.0) -> None:
        """Explicit registration (servers with the explicit policy)."""
        self._client.start_register(user, password)
        await self._answer(timeout)

    async def receive(self, timeout: Optional[float] = None) -> Event:
        """The next event, waiting at most `timeout` seconds (None: until one comes). Raises TimeoutError, or
        ClosedError once the connection is gone and no events remain."""
        return await self._take(lambda _: True, timeout, "no event within the timeout")

    async def wait_for(self, kind: EventKind, peer: str = "", *, timeout: Optional[float] = None) -> Event:
        """The next event of `kind` (from `peer` when given), leaving the others queued in order. Raises
        TimeoutError, or ClosedError once the connection is gone and no such event remains."""
        return await self._take(lambda e: e.kind == kind and (not peer or peer_of(e) == peer), timeout,
                                "the awaited event did not come in time")

    async def events(self, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        """Iterate over events (``async for``); stops when `timeout` seconds pass without one, or when the
        connection is gone (after its CLOSED event) or closed."""
        while True:
            try:
                yield await self.receive(timeout)
            except (_Timeout, ClosedError):
                return

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    # ------------------------------------------------------------------ calls that only queue work

    async def open(self, peer: str) -> None:
        """Start a conversation with `peer` (KEY_ASSIGNED comes when it is keyed)."""
        self._client.open(peer)

    async def send(self, peer: str, text: str) -> bytes:
        """Seal `text` for `peer` and send it; returns the message id (16 bytes, named by RECEIPT events). Raises as
        ``Client.send`` (RoutingError NO_CONVERSATION before the key arrived, MessageTooLarge...)."""
        return self._client.send(peer, text)

    async def probe(self, peer: str) -> None:
        """Ask whether `peer` is online (answered by a PEER_ONLINE or WAITING event)."""
        self._client.probe(peer)

    async def leave(self, peer: str) -> None:
        """End the conversation with `peer`."""
        self._client.leave(peer)

    async def set_presence_hidden(self, hidden: bool) -> None:
        """Hide (True) or show this user's presence to their contacts (before login: for the login). Raises an
        Error NOT_IMPLEMENTED when the server does not speak presence."""
        self._client.set_presence_hidden(hidden)

    async def query_presence(self, peer: str) -> None:
        """Ask for `peer`'s presence (answered by a PRESENCE event; offline for anyone who is not a contact)."""
        self._client.query_presence(peer)

    @property
    def presence_supported(self) -> bool:
        """Whether the server speaks presence (agreed in the handshake)."""
        return self._client.presence_supported

    async def send_raw(self, frame: Frame) -> None:
        """Send any inner frame as is inside the encrypted channel (tests and diagnostics)."""
        self._client.send_raw(frame)

    async def logout(self, *, revoke_token: bool = False, everywhere: bool = False) -> None:
        """Log out (optionally revoking this or all session tokens) and close."""
        try:
            self._client.logout(revoke_token=revoke_token, everywhere=everywhere)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the connection (idempotent). Waits still pending raise ClosedError; later calls raise it too."""
        self._closing = True
        self._pending.clear()
        self._stop_watching()
        self._fail_waiters()
        self._client.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ local state (no network)

    def inbox(self, from_index: int = 0, limit: int = 100, *, peer: Optional[str] = None) -> list[InboxEntry]:
        """Received messages with index >= from_index, oldest first, at most `limit` (``Client.inbox``)."""
        return self._client.inbox(from_index, limit, peer=peer)

    inbox_status = _Forward[InboxStatus]("Next index, first unread, unread count (``Client.inbox_status``).")

    def mark_read(self, up_to: int) -> None:
        """Mark every message with index < up_to as read (the cursor never moves back)."""
        self._client.mark_read(up_to)

    def peer_identity(self, peer: str) -> PeerIdentity:
        """The pinned identity of `peer` and the safety number (``Client.peer_identity``)."""
        return self._client.peer_identity(peer)

    def verify_peer(self, peer: str) -> None:
        """Mark `peer`'s current identity key as verified."""
        self._client.verify_peer(peer)

    def accept_identity(self, peer: str) -> None:
        """Pin `peer`'s new identity key after IDENTITY_CHANGED."""
        self._client.accept_identity(peer)

    def conversation_suite(self, peer: str) -> Optional[SuiteId]:
        """The suite of the conversation with `peer`, or None when not keyed."""
        return self._client.conversation_suite(peer)

    outbox_size = _Forward[int]("Messages sent but without a receipt yet.")
    conversations = _Forward[list[str]]("Peers with a keyed conversation.")
    user = _Forward[str]("Our user name once logged in.")
    authenticated = _Forward[bool]("True once logged in.")
    server_fingerprint = _Forward[str]("The server key's fingerprint seen in the handshake.")
    session_token = _Forward[Optional[tuple[bytes, int]]](
        "(token, expires_unix_ms) issued at the last password login, or None. The token is a secret.")

    @property
    def closed(self) -> bool:
        """True once close() was called or the connection is gone."""
        return self._client.closed

    @property
    def client(self) -> Client:
        """The blocking client underneath."""
        return self._client

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<libsim.aio.AsyncClient {state}>"

    # ------------------------------------------------------------------ internals

    async def _answer(self, timeout: float) -> None:
        event = await self._take(lambda e: e.kind in _ANSWERS, timeout, "the server did not answer in time")
        if event.kind == EventKind.ERROR:
            raise event.error
        if event.kind == EventKind.CLOSED:
            raise event.reason if event.reason is not None else ClosedError(Errc.CLOSED, "connection closed")

    async def _take(self, match: _Match, timeout: Optional[float], late: str) -> Event:
        if self._closing:
            raise ClosedError(Errc.CLOSED, "the client is closed")
        if self._fd >= 0:
            self._on_events()  # what is queued but not yet seen by the loop (e.g. the CLOSED event)
        for i, event in enumerate(self._pending):
            if match(event):
                del self._pending[i]
                return event
        if self._gone:
            raise ClosedError(Errc.CLOSED, "connection closed")
        future: asyncio.Future[Event] = self._loop.create_future()
        waiter = (match, future)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise _Timeout(Errc.TIMEOUT, late) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._pending.appendleft(future.result())  # handed over just before the cancellation: keep it
            raise
        finally:
            self._waiters.remove(waiter)

    def _on_events(self) -> None:
        """The loop's reader callback: take every queued event and hand each to the first waiter that wants it."""
        try:
            events = self._client.take_events()
        except ClosedError:
            events = []
        for event in events:
            self._dispatch(event)
        if any(e.kind == EventKind.CLOSED for e in events):  # the last event: stop watching
            self._gone = True
            self._stop_watching()
            self._fail_waiters()

    def _dispatch(self, event: Event) -> None:
        for match, future in self._waiters:
            if not future.done() and match(event):
                future.set_result(event)
                return
        self._pending.append(event)

    def _fail_waiters(self) -> None:
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(ClosedError(Errc.CLOSED, "connection closed"))

    def _stop_watching(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
