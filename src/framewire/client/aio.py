"""The asyncio client: one connection, any number of concurrent callers.

Many tasks may call :meth:`AioClient.request` on one connection at once: each
request is written at once (pipelined) and its caller waits for the answer
in its place, since the server answers in request order. The client engine
(:mod:`framewire.client.connection`) is the blocking client's: the same
options, ids, deadlines, pings and checks, and the same meaning for an
answer nobody asked for, a wrong id, a timeout or a loss. A caller that is
cancelled leaves its place in the queue: its answer, when it comes, is
dropped; a caller that times out aborts the connection, as the blocking
client does. A connection lost mid-way fails every waiting call with the
blocking client's errors (``ConnectionClosed``, ``IncompleteMessage``,
``ConnectionResetError``); error responses raise :class:`ErrorResponse`
(or are returned, with ``check=False``).

A connection that was lost or closed by the server (the guide's server
closes after each answer; a server restarts) is opened again by the next
call, with the back-off of the client's ``retry``; a request lost with its
connection is sent again only when its call says it is ``idempotent``.
``close()`` with answers still owed aborts the connection (a TCP reset), so
a framewire server cancels the work under way for it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import heapq
import itertools
import logging
import math
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

from framewire.client.calls import AioCalls, request_for, stream_answer, subscribe_request
from framewire.client.connection import ClientConnection
from framewire.client.options import DEFAULT, ClientOptions, Configured, Timeout
from framewire.client.retry import lost_in_exchange, next_delay, worth_reconnecting
from framewire.core.errors import ConnectionClosed, ProtocolError
from framewire.core.message import Message, raise_first_error
from framewire.core.topics import Event
from framewire.io.netio import plain_host, readable_now, set_keepalive, translated, unix_path, where

log = logging.getLogger("framewire.client")

#: Unsent bytes the transport may hold before callers wait to send more.
_WRITE_HIGH = 1024 * 1024

__all__ = ["AioClient", "connect"]


class _Protocol(asyncio.Protocol):
    # One per connection: the events of a connection the client has since
    # replaced (its late connection_lost) are not the new one's.
    def __init__(self, client: AioClient) -> None:
        self.client = client
        self.generation = client._generation

    def data_received(self, data: bytes) -> None:
        if self.generation == self.client._generation:
            self.client._received(data)

    def eof_received(self) -> bool:
        if self.generation == self.client._generation:
            self.client._received(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.generation == self.client._generation:
            self.client._lost(exc)
        self.resume_writing()  # no caller waits for a connection that is gone

    def pause_writing(self) -> None:
        if self.generation == self.client._generation:
            self.client._writable.clear()

    def resume_writing(self) -> None:
        if self.generation == self.client._generation:
            self.client._writable.set()


class AioClient(Configured, AioCalls):
    """A connection to a framewire (or guide-written) server, for asyncio
    (made by :func:`connect`). Every option of
    :class:`~framewire.client.options.ClientOptions` is a keyword, or pass
    ``options=``; the client's values read as attributes."""

    def _start(self) -> None:
        self._where = where(self.host, self.port)
        self._conn: ClientConnection | None = None
        self._transport: asyncio.Transport | None = None
        self._opening: asyncio.Lock | None = None
        self._generation = 0  # of the connection: one per dial
        self._closed = False  # by close(): no more reconnecting
        self._beat: asyncio.Task[None] | None = None
        self._refused: OSError | None = None  # the last refused attempt of the opening under way
        # Cleared while the transport holds more than _WRITE_HIGH unsent
        # bytes (a server that does not read): callers wait, within their
        # timeout, rather than grow the buffer without a bound.
        self._writable = asyncio.Event()
        self._writable.set()
        # Requests written in this turn of the loop, sent as one write at its
        # end (many concurrent calls: one send, not one each), with the
        # transport they were made for.
        self._unwritten: list[bytes] = []
        self._unwritten_for: asyncio.Transport | None = None
        self._watch: _Deadlines | None = None

    def _deadlines(self) -> _Deadlines:
        # The calls' deadlines, on the loop the client is used from.
        watch = self._watch
        loop = asyncio.get_running_loop()
        if watch is None or watch.loop is not loop:
            watch = self._watch = _Deadlines(loop)
        return watch

    # -- the protocol's side ----------------------------------------------------------

    def _received(self, data: bytes) -> None:
        conn = self._conn
        if conn is None:
            return
        for future, message in conn.receive(data, time.monotonic()):
            if isinstance(future, asyncio.Future):
                if not future.done():  # done: its caller gave up
                    future.set_result(message)
            elif isinstance(future, _Inbox):
                future.put(message)
        if conn.failure is not None:
            # As the blocking client: the stream cannot be trusted after
            # this; a reset tells the server to drop the work under way.
            self._abort()

    def _lost(self, exc: Exception | None) -> None:
        if self._conn is not None:
            self._conn.lost(exc)
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        conn = self._conn
        assert conn is not None and conn.failure is not None
        for future in conn.take_failed():
            if isinstance(future, asyncio.Future):
                if not future.done():
                    future.set_exception(conn.failure)
            elif isinstance(future, _Inbox):
                future.fail(conn.failure)

    # -- the connection -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the connection is open and usable."""
        transport = self._transport
        conn = self._conn
        return (
            transport is not None and not transport.is_closing() and conn is not None and conn.failure is None
        )

    def _usable(self) -> bool:
        # Open, not closed by the server meanwhile, not old enough to be replaced.
        conn = self._conn
        return (
            self.connected
            and conn is not None
            and conn.reusable(time.monotonic())
            and not self._idle_dropped()
        )

    async def _open(self, deadline: float | None) -> None:
        # Open the connection if it is not (again, after a loss), connects
        # that are refused retried with back-off; one task opens, the others
        # wait for it.
        if self._usable():
            return
        if self._closed:
            raise ConnectionClosed(f"{self.where}: the connection was closed by this client")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._usable():
                return
            if self._transport is not None:
                conn = self._conn
                if self.connected and conn is not None and not conn.reusable(time.monotonic()):
                    log.debug("%s: the connection reached its age: opening a new one", self.where)
                    self._transport.close()  # nothing is owed on it: a plain close
                else:
                    self._transport.abort()  # what is left of the old one
            self._transport = None
            delays = self.options.retry.delays()
            self._refused = None
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    # The call's own deadline bounds the connect too; the
                    # refusals before it are the cause a caller wants to see.
                    text = f"no connection to {self.where} before the call's deadline"
                    raise TimeoutError(errno.ETIMEDOUT, text) from self._refused
                try:
                    await self._dial(_left(deadline, self.options.connect_limit))
                    break
                except OSError as exc:
                    if not worth_reconnecting(exc):
                        raise
                    # Kept for the call's timeout, which may come in the wait.
                    self._refused = exc
                    if not await _wait(delays, deadline):
                        raise
            self._refused = None

    def _idle_dropped(self) -> bool:
        # Before a call on an idle connection: has the server closed it
        # (its end of stream not yet seen by the loop)? Plain sockets only:
        # under TLS the loop's own reads are the check.
        conn = self._conn
        if conn is None or conn.in_flight or self.options.ssl_context is not None or self._transport is None:
            return False
        sock = self._transport.get_extra_info("socket")
        return sock is not None and readable_now(sock.fileno())

    async def _dial(self, limit: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._generation += 1
        options = self.options
        path = unix_path(self.host)
        tls: dict[str, Any] = {}
        if options.ssl_context is not None:
            server_hostname = options.server_hostname
            if server_hostname is None and path is None:
                server_hostname = plain_host(self.host)
            tls = {"ssl": options.ssl_context, "server_hostname": server_hostname}
        elif options.source_address is not None and path is None:
            tls = {"local_addr": options.source_address}
        with translated(self.host, self.port, limit):
            async with asyncio.timeout(limit):
                if path is not None:
                    transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), path, **tls)
                else:
                    if options.ssl_context is not None and options.source_address is not None:
                        tls["local_addr"] = options.source_address
                    transport, _ = await loop.create_connection(
                        lambda: _Protocol(self), plain_host(self.host), self.port, **tls
                    )
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                set_keepalive(sock, options.keepalive)
        # A new connection: a new engine, nothing of the old one's failure.
        self._conn = ClientConnection(options, time.monotonic(), self.where, unordered=True)
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        self._writable.set()
        self._transport = transport
        if options.heartbeat > 0 and (self._beat is None or self._beat.done()):
            self._beat = asyncio.create_task(self._heartbeat())

    @property
    def where(self) -> str:
        """The server, as messages name it (``127.0.0.1:65432``, ``unix:PATH``)."""
        return self._where

    # -- the caller's side --------------------------------------------------------------

    async def request(
        self, message: Message, *, timeout: Timeout = DEFAULT, idempotent: bool = False
    ) -> Message:
        """Send ``message``; return its answer (raises as the module says).

        ``timeout``: seconds for this call (default: the client's), retries
        included; ``idempotent=True``: the request may be sent again if its
        connection is lost before the answer.
        """
        (answer,) = await self._call([message], timeout, idempotent, single=True)
        return answer

    async def request_many(
        self, messages: Iterable[Message], *, timeout: Timeout = DEFAULT, idempotent: bool = False
    ) -> list[Message]:
        """Send every message at once (pipelined); return the answers, in order.

        ``timeout`` is a deadline for the whole call. With ``check``, an
        error response raises :class:`ErrorResponse` once every answer is in
        (its ``responses`` holds them all, in order), as the blocking
        client's ``request_many`` does. ``idempotent`` as for :meth:`request`.
        """
        return await self._call(list(messages), timeout, idempotent, single=False)

    async def _call(
        self, messages: list[Message], timeout: Timeout, idempotent: bool, *, single: bool
    ) -> list[Message]:
        limit = self.options.seconds(timeout)
        deadline = None if limit is None else time.monotonic() + limit
        delays = self.options.retry.delays()
        while True:
            await self._ready_to_send(limit, deadline)
            futures = self._send(messages, deadline)
            try:
                try:
                    if single:
                        if deadline is not None:
                            self._deadlines().watch(futures[0], deadline)
                        answers = [await futures[0]]
                    else:
                        async with asyncio.timeout(_left(deadline, None)):
                            answers = [await asyncio.shield(future) for future in futures]
                except TimeoutError as exc:
                    text = f"no answer from {self.where} within {limit:g} s"
                    raise TimeoutError(errno.ETIMEDOUT, text) from exc
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    # As the blocking client: the answer may still come, and
                    # the server may be hung. The connection goes (a reset:
                    # the server drops the work), with every request queued
                    # in it; the next call opens a new one.
                    self._abort()
                if idempotent and lost_in_exchange(exc) and await _wait(delays, deadline):
                    log.debug("connection lost under an idempotent request (%s): sending it again", exc)
                    continue
                raise
            finally:
                for future in futures:
                    future.cancel()  # the answers not yet come are dropped when they do
            if single:
                return [self._checked(answers[0])]
            if self.options.check:
                raise_first_error(answers)
            return answers

    async def _ready_to_send(self, limit: float | None, deadline: float | None) -> None:
        # Connected, and the transport taking more bytes, within the call's time.
        if self._writable.is_set() and self._usable():
            return  # (the usual case: nothing to wait for, no timer to set)
        try:
            async with asyncio.timeout(limit):
                await self._open(deadline)
                await self._writable.wait()
        except TimeoutError as exc:
            if exc.errno is not None:
                raise  # worded already (the deadline came before a connect)
            if self.connected:  # it would not take the request: a hung server
                self._abort()
                text = f"no answer from {self.where} within {limit:g} s (it reads nothing)"
                raise TimeoutError(errno.ETIMEDOUT, text) from exc
            # Worded as the blocking client does: a connect that hung is "no
            # answer", the deadline come in a wait between refusals is not.
            if self._refused is None:
                raise TimeoutError(
                    errno.ETIMEDOUT, f"no answer from {self.where} within {limit:g} s"
                ) from exc
            text = f"no connection to {self.where} before the call's deadline"
            raise TimeoutError(errno.ETIMEDOUT, text) from self._refused

    def _send(self, messages: list[Message], deadline: float | None) -> list[asyncio.Future[Message]]:
        conn = self._conn
        transport = self._transport
        if conn is not None and conn.failure is not None:
            raise conn.failure
        if conn is None or transport is None or transport.is_closing():
            raise ConnectionClosed(f"{self.where}: the connection is closed")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in messages]
        self._write(transport, conn.send(messages, futures, deadline, time.monotonic()))
        return futures

    def _write(self, transport: asyncio.Transport, data: bytes) -> None:
        # Every request and probe goes this way, so they leave in the order
        # the connection engine expects their answers.
        unwritten = self._unwritten
        if unwritten and self._unwritten_for is not transport:
            self._write_now()
        unwritten.append(data)
        if len(unwritten) == 1:
            self._unwritten_for = transport
            asyncio.get_running_loop().call_soon(self._write_now)

    def _write_now(self) -> None:
        unwritten, transport = self._unwritten, self._unwritten_for
        if not unwritten:
            return
        data = unwritten[0] if len(unwritten) == 1 else b"".join(unwritten)
        unwritten.clear()
        self._unwritten_for = None
        if transport is not None and transport is self._transport and not transport.is_closing():
            transport.write(data)  # (a connection gone since: its calls have failed already)

    def stream(
        self,
        action: str,
        value: Any = None,
        *,
        timeout: Timeout = DEFAULT,
        extensions: Mapping[str, Any] | None = None,
        result_type: Any = None,
    ) -> AsyncIterator[Any]:
        """Call a streaming ``action``: ``async for item in client.stream(...)``.

        ``timeout`` is the wait for each item (default: the client's).
        Leaving the loop early (``break``, an exception, a cancelled task)
        cancels the stream (``framewire-cancel``): the server stops its work.
        Other calls share the connection meanwhile (answers out of order).
        From a server that does not stream, the one answer's items are
        yielded in turn. A consumer slower than the stream holds the
        connection's reading once :data:`INBOX_HIGH` items wait."""
        return self._stream(request_for(action, value, extensions), timeout, result_type)

    def subscribe(
        self,
        *topics: str | Iterable[str],
        timeout: Timeout = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[Event]:
        """Subscribe to ``topics`` on a broker: ``async for event in
        client.subscribe("news")`` (see :meth:`Client.subscribe
        <framewire.client.blocking.Client.subscribe>`)."""
        return self._stream(subscribe_request(topics, extensions), timeout, Event)

    async def _stream(self, message: Message, timeout: Timeout, result_type: Any) -> AsyncIterator[Any]:
        limit = self.options.seconds(timeout)
        await self._ready_to_send(limit, None if limit is None else time.monotonic() + limit)
        conn, transport = self._conn, self._transport
        assert conn is not None and transport is not None
        inbox = _Inbox(transport)
        self._write(transport, conn.send([message], [inbox], None, time.monotonic(), stream=True))
        finished = False
        try:
            while True:
                try:
                    answer = await inbox.get(limit)
                except TimeoutError as exc:
                    raise TimeoutError(
                        errno.ETIMEDOUT, f"no item from {self.where} within {limit:g} s"
                    ) from exc
                items, finished = stream_answer(answer, result_type)
                for item in items:
                    yield item
                if finished:  # (set before the last items: the server has ended, nothing to cancel)
                    return
        finally:
            inbox.close()
            if not finished:
                self._leave_stream(inbox)

    def _leave_stream(self, inbox: _Inbox) -> None:
        # Left early: the server is asked to stop (what still comes for the
        # stream is dropped); one that has not shown it knows cancel is
        # stopped by aborting the connection.
        conn, transport = self._conn, self._transport
        if conn is None or transport is None or conn.failure is not None or transport is not inbox.transport:
            return
        cancel = conn.cancel(inbox)
        if cancel is None:
            self._abort()
        elif cancel:
            self._write(transport, cancel)

    async def ping(self, *, timeout: Timeout = DEFAULT) -> float:
        """Send a ``framewire-ping`` probe and wait for its echo; return the
        round trip in seconds (``ProtocolError`` if the reply is not the
        echo: a server that does not know the extension)."""
        limit = self.options.seconds(timeout)
        started = time.monotonic()
        deadline = None if limit is None else started + limit
        await self._ready_to_send(limit, deadline)
        conn, transport = self._conn, self._transport
        assert conn is not None and transport is not None
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._write(transport, conn.ping(future))
        try:
            async with asyncio.timeout(_left(deadline, None)):
                await asyncio.shield(future)
        except TimeoutError as exc:
            self._abort()  # as the blocking client: a ping not answered in time ends the connection
            raise TimeoutError(errno.ETIMEDOUT, f"no answer from {self.where} within {limit:g} s") from exc
        except BaseException:
            self._abort()
            raise
        finally:
            future.cancel()
        return time.monotonic() - started

    @property
    def in_flight(self) -> int:
        """Requests sent on this connection and not yet answered."""
        return self._conn.in_flight if self._conn is not None else 0

    async def _heartbeat(self) -> None:
        # A ping when the connection has been idle ``heartbeat`` seconds: in
        # line with the calls (the server answers in order), so it needs no
        # lock; a ping not answered in time aborts the connection, and the
        # next call opens a new one.
        beat = self.options.heartbeat
        while not self._closed and self.connected and self._conn is not None:
            due = self._conn.heartbeat_in(time.monotonic())
            if due > 0:
                await asyncio.sleep(min(due, beat))
                continue
            timeout = self.options.timeout
            try:
                await self.ping(timeout=timeout if timeout is not None else max(beat, 1.0))
            except (OSError, ProtocolError) as exc:
                log.info("heartbeat to %s failed (%s): connection closed", self.where, exc)
                self._abort()
                return

    def _abort(self) -> None:
        # A reset (SO_LINGER 0), not a FIN: the server learns at once that
        # the answers owed are not wanted, and cancels the work under way.
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        self._end("aborted")

    def _end(self, how: str) -> None:
        conn = self._conn
        if conn is not None:
            conn.fail(ConnectionClosed(f"{self.where}: the connection was {how} by this client"))
            self._fail_waiting()

    async def close(self) -> None:
        """Close the connection for good (answers still owed are dropped,
        and the connection aborted so the server stops working on them)."""
        self._closed = True
        if self._beat is not None:
            self._beat.cancel()
        if self.in_flight:  # answers still owed, to callers waiting or gone
            self._abort()
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._end("closed")

    async def __aenter__(self) -> AioClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


#: Items a stream's consumer may leave unread before the connection stops
#: being read (it is read again below a quarter of it).
INBOX_HIGH = 1024


class _Inbox:
    """A stream's items, as they come, for its ``async for``."""

    __slots__ = ("failure", "items", "paused", "transport", "waiter")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.items: collections.deque[Message] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None
        self.paused = False

    def put(self, message: Message) -> None:
        self.items.append(message)
        if len(self.items) >= INBOX_HIGH and not self.paused and not self.transport.is_closing():
            self.paused = True
            self.transport.pause_reading()  # a slow consumer: the server waits, not this memory
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.failure = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, limit: float | None) -> Message:
        while not self.items:
            if self.failure is not None:
                raise self.failure
            loop = asyncio.get_running_loop()
            self.waiter = waiter = loop.create_future()
            timer = None if limit is None else loop.call_later(limit, _time_out, waiter)
            try:
                await waiter
            finally:
                self.waiter = None
                if timer is not None:
                    timer.cancel()
        if self.paused and len(self.items) <= INBOX_HIGH // 4:
            self.close()
        return self.items.popleft()

    def close(self) -> None:
        if self.paused:
            self.paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()


class _TimedOut(TimeoutError):
    """Set on an answer's future when its call's deadline passes."""


def _time_out(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_TimedOut())


class _Deadlines:
    """The deadlines of a client's calls, on one timer of the loop's.

    A timeout scope per call was a fifth of a call when 64 run at once, and
    a timer per call (made, then cancelled, and weeded from the loop's heap)
    a tenth: the calls' futures go in one heap here instead, and one timer,
    set for the earliest, fails those whose time has come. A future that is
    done (answered, or given up by its caller) stays in the heap until it is
    at the top or the heap is weeded, which happens when it has doubled
    since it last was: its size stays within twice the calls in flight,
    plus a constant.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[Message]]] = []
        self._count = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf
        self._weed_at = _WEED_AT

    def watch(self, future: asyncio.Future[Message], deadline: float) -> None:
        """Fail ``future`` with :class:`_TimedOut` at ``deadline`` (the
        monotonic clock), unless it is done by then."""
        loop = self.loop
        when = loop.time() + max(0.0, deadline - time.monotonic())
        heap = self._heap
        heapq.heappush(heap, (when, next(self._count), future))
        if when < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._at = when
            self._timer = loop.call_at(when, self._fire)
        if len(heap) > self._weed_at:
            heap[:] = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(heap)
            self._weed_at = 2 * len(heap) + _WEED_AT

    def _fire(self) -> None:
        self._timer = None
        self._at = math.inf
        heap = self._heap
        now = self.loop.time()
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            future = heapq.heappop(heap)[2]
            if not future.done():
                future.set_exception(_TimedOut())
        if heap:
            self._at = heap[0][0]
            self._timer = self.loop.call_at(self._at, self._fire)


#: The least size at which a client's heap of deadlines is weeded.
_WEED_AT = 1024


def _left(deadline: float | None, limit: float | None) -> float | None:
    """Seconds to the call's deadline, at most ``limit`` (None: no bound)."""
    if deadline is None:
        return limit
    left = max(0.0, deadline - time.monotonic())
    return left if limit is None else min(left, limit)


async def _wait(delays: Iterator[float], deadline: float | None) -> bool:
    """Wait before another attempt: False when none is left, or the wait
    would pass the call's deadline."""
    delay = next_delay(delays, deadline)
    if delay is None:
        return False
    await asyncio.sleep(delay)
    return True


async def connect(
    host: str = "127.0.0.1", port: int = 65432, *, options: ClientOptions | None = None, **settings: Any
) -> AioClient:
    """Open a connection. ``host`` may be ``"unix:PATH"``; every option of
    :class:`~framewire.client.options.ClientOptions` is a keyword
    (``ssl_context``, ``timeout``, ``ids``, ``retry``, ``heartbeat``, ...),
    as for the blocking :class:`~framewire.client.blocking.Client`."""
    client = AioClient(host, port, options=options, **settings)
    await client._open(None)
    return client
