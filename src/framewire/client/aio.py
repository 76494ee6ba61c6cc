"""The asyncio client: one connection, any number of concurrent callers.

Many tasks may call :meth:`AioClient.request` on one connection at once: each
request is written at once (pipelined) and its caller waits for the answer
in its place, since the server answers in request order. A caller that is
cancelled or times out leaves its place in the queue: its answer, when it
comes, is dropped, so no later caller ever gets an earlier call's answer. A
connection lost mid-way fails every waiting call with the blocking
client's errors (``ConnectionClosed``, ``IncompleteMessage``,
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
import logging
import math
import socket
import ssl as ssl_module
import struct
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import Any

from framewire.client.retry import (
    MAX_CONNECTION_AGE,
    Retry,
    checked_age,
    lost_in_exchange,
    next_delay,
    retire_at,
    worth_reconnecting,
)
from framewire.core import limits
from framewire.core.decoder import Decoder, encode_many
from framewire.core.errors import ConnectionClosed, ErrorResponse, IncompleteMessage, ProtocolError
from framewire.core.message import Message, raise_first_error
from framewire.core.probe import ID_KEY, PING_KEY, probe, tag_requests
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


class AioClient:
    """A connection to a framewire (or guide-written) server, for asyncio
    (made by :func:`connect`, whose parameters it keeps)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 65432,
        *,
        timeout: float | None = 10.0,
        check: bool = True,
        max_header_size: int = limits.MAX_HEADER_SIZE,
        max_content_length: int = limits.MAX_CONTENT_LENGTH,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        connect_timeout: float | None = -1.0,
        keepalive: float = limits.KEEPALIVE,
        ids: bool = False,
        deadlines: bool = False,
        retry: Retry = Retry(),  # noqa: B008  # frozen: one shared default is safe
        heartbeat: float = 0.0,
        max_connection_age: float | None = MAX_CONNECTION_AGE,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.check = check
        self._limits = (max_header_size, max_content_length)
        self._ssl = ssl
        self._server_hostname = server_hostname
        self.connect_timeout = timeout if connect_timeout == -1.0 else connect_timeout  # -1: as timeout
        self.keepalive = keepalive
        #: Tag each request with a framewire-id and check its answer carries it.
        self.ids = ids
        #: Tell the server how long each call will wait (framewire-deadline).
        self.deadlines = deadlines
        self.retry = retry
        #: Seconds of idleness before a ping (0: no heartbeat).
        self.heartbeat = heartbeat
        #: Seconds before a connection is replaced between calls (None: kept).
        self.max_connection_age = checked_age(max_connection_age)
        self._retire_at = math.inf
        self.where = where(host, port)
        self._decoder = Decoder(max_header_size=max_header_size, max_content_length=max_content_length)
        # One future per request sent and not yet answered, in order.
        self._waiting: collections.deque[asyncio.Future[Message]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._failure: BaseException | None = None
        self._idents: collections.deque[int] = collections.deque()  # with ids: in step with _waiting
        self._next_id = 0
        self._opening: asyncio.Lock | None = None
        self._generation = 0  # of the connection: one per dial
        self._closed = False  # by close(): no more reconnecting
        self._last_used = 0.0
        self._beat: asyncio.Task[None] | None = None
        self._refused: OSError | None = None  # the last refused attempt of the opening under way
        # Cleared while the transport holds more than _WRITE_HIGH unsent
        # bytes (a server that does not read): callers wait, within their
        # timeout, rather than grow the buffer without a bound.
        self._writable = asyncio.Event()
        self._writable.set()

    # -- the protocol's side ----------------------------------------------------------

    def _received(self, data: bytes) -> None:
        try:
            messages = self._decoder.feed(data)
        except IncompleteMessage as exc:
            self._fail(exc)
            return
        except ProtocolError as exc:
            self._fail(exc)
            if self._transport is not None:
                self._transport.close()  # the stream cannot be trusted after this
            return
        waiting = self._waiting
        for message in messages:
            if not waiting:
                self._fail(ProtocolError("The server sent an answer nobody asked for."))
                if self._transport is not None:
                    self._transport.close()
                return
            future = waiting.popleft()  # this answer's place, in request order
            if self.ids:
                sent = self._idents.popleft()
                if message.get(ID_KEY) != sent:
                    self._fail(
                        ProtocolError(
                            f"the answer to request {sent!r} carries framewire-id {message.get(ID_KEY)!r}: "
                            "the connection is out of step"
                        ),
                        first=future,
                    )
                    if self._transport is not None:
                        self._transport.close()
                    return
            if not future.done():  # done: its caller gave up, and the answer is dropped
                future.set_result(message)
        if not data:
            self._fail(ConnectionClosed(f"{self.where} closed the connection before answering"))

    def _lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self._fail(ConnectionResetError(f"{self.where} reset the connection ({exc})"))
        else:
            self._fail(ConnectionClosed(f"{self.where} closed the connection before answering"))

    def _fail(self, exc: BaseException, first: asyncio.Future[Message] | None = None) -> None:
        if self._failure is None:
            self._failure = exc
        if first is not None and not first.done():
            first.set_exception(self._failure)
        self._idents.clear()
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._failure)

    # -- the connection -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the connection is open and usable."""
        transport = self._transport
        return transport is not None and not transport.is_closing() and self._failure is None

    async def _open(self, deadline: float | None) -> None:
        # Open the connection if it is not (again, after a loss), connects
        # that are refused retried with back-off; one task opens, the others
        # wait for it.
        if self.connected and not self._idle_dropped() and not self._retiring():
            return
        if self._closed:
            raise ConnectionClosed(f"{self.where}: the connection was closed by this client")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.connected and not self._idle_dropped() and not self._retiring():
                return
            if self._transport is not None:
                if self._retiring():
                    log.debug("%s: the connection reached its age: opening a new one", self.where)
                    self._transport.close()  # nothing is owed on it: a plain close
                else:
                    self._transport.abort()  # what is left of the old one
            self._transport = None
            delays = self.retry.delays()
            self._refused = None
            while True:
                try:
                    await self._dial(_left(deadline, self.connect_timeout))
                    break
                except OSError as exc:
                    if not worth_reconnecting(exc):
                        raise
                    # Kept for the call's timeout, which may come in the wait.
                    self._refused = exc
                    if not await _wait(delays, deadline):
                        raise
            self._refused = None

    def _retiring(self) -> bool:
        # Old enough to be replaced, and nothing is waiting on it.
        return not self._waiting and time.monotonic() >= self._retire_at

    def _idle_dropped(self) -> bool:
        # Before a call on an idle connection: has the server closed it
        # (its end of stream not yet seen by the loop)? Plain sockets only:
        # under TLS the loop's own reads are the check.
        if self._waiting or self._ssl is not None or self._transport is None:
            return False
        sock = self._transport.get_extra_info("socket")
        return sock is not None and readable_now(sock.fileno())

    async def _dial(self, limit: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._generation += 1
        path = unix_path(self.host)
        server_hostname = self._server_hostname
        if self._ssl is not None and server_hostname is None and path is None:
            server_hostname = plain_host(self.host)
        tls: dict[str, Any] = {}
        if self._ssl is not None:
            tls = {"ssl": self._ssl, "server_hostname": server_hostname}
        with translated(self.host, self.port, limit):
            async with asyncio.timeout(limit):
                if path is not None:
                    transport, _ = await loop.create_unix_connection(lambda: _Protocol(self), path, **tls)
                else:
                    transport, _ = await loop.create_connection(
                        lambda: _Protocol(self), plain_host(self.host), self.port, **tls
                    )
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                set_keepalive(sock, self.keepalive)
        # A new connection: a new decoder, nothing of the old one's failure.
        self._decoder = Decoder(max_header_size=self._limits[0], max_content_length=self._limits[1])
        self._failure = None
        transport.set_write_buffer_limits(high=_WRITE_HIGH)
        self._writable.set()
        self._transport = transport
        self._last_used = time.monotonic()
        self._retire_at = retire_at(self._last_used, self.max_connection_age)
        if self.heartbeat > 0 and (self._beat is None or self._beat.done()):
            self._beat = asyncio.create_task(self._heartbeat())

    # -- the caller's side --------------------------------------------------------------

    async def request(
        self, message: Message, *, timeout: float | None = -1.0, idempotent: bool = False
    ) -> Message:
        """Send ``message``; return its answer (raises as the module says).

        ``timeout``: seconds for this call (default: the client's), retries
        included; ``idempotent=True``: the request may be sent again if its
        connection is lost before the answer.
        """
        (answer,) = await self._call([message], timeout, idempotent, single=True)
        return answer

    async def request_many(
        self, messages: Iterable[Message], *, timeout: float | None = -1.0, idempotent: bool = False
    ) -> list[Message]:
        """Send every message at once (pipelined); return the answers, in order.

        ``timeout`` is a deadline for the whole call. With ``check``, an
        error response raises :class:`ErrorResponse` once every answer is in
        (its ``responses`` holds them all, in order), as the blocking
        client's ``request_many`` does. ``idempotent`` as for :meth:`request`.
        """
        return await self._call(list(messages), timeout, idempotent, single=False)

    async def _call(
        self, messages: list[Message], timeout: float | None, idempotent: bool, *, single: bool
    ) -> list[Message]:
        limit = self.timeout if timeout == -1.0 else timeout
        deadline = None if limit is None else time.monotonic() + limit
        delays = self.retry.delays()
        while True:
            try:
                async with asyncio.timeout(limit):
                    await self._open(deadline)
                    await self._writable.wait()
            except TimeoutError as exc:
                if self.connected:  # it would not take the request: a hung server
                    self._abort()
                    text = f"no answer from {self.where} within {limit:g} s (it reads nothing)"
                    raise TimeoutError(errno.ETIMEDOUT, text) from exc
                text = f"no connection to {self.where} within {limit:g} s"
                raise TimeoutError(errno.ETIMEDOUT, text) from self._refused
            futures = self._send(messages, deadline)
            try:
                if single:
                    answers = [await self._answer(futures[0], _left(deadline, None))]
                else:
                    try:
                        async with asyncio.timeout(_left(deadline, None)):
                            answers = [await self._answer(future, None, check=False) for future in futures]
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
            self._last_used = time.monotonic()
            if not single and self.check:
                raise_first_error(answers)
            return answers

    def _send(self, messages: list[Message], deadline: float | None) -> list[asyncio.Future[Message]]:
        if self._failure is not None:
            raise self._failure
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"{self.where}: the connection is closed")
        loop = asyncio.get_running_loop()
        ms = None
        if self.deadlines and deadline is not None:
            ms = (deadline - time.monotonic()) * 1000
        if self.ids or ms is not None:
            first = None
            if self.ids:
                first = self._next_id + 1
                self._next_id += len(messages)
                self._idents.extend(range(first, self._next_id + 1))
            messages = tag_requests(messages, first, ms)
        futures = [loop.create_future() for _ in messages]
        self._waiting.extend(futures)
        transport.write(encode_many(messages))
        return futures

    async def _answer(
        self, future: asyncio.Future[Message], timeout: float | None, *, check: bool = True
    ) -> Message:
        try:
            async with asyncio.timeout(timeout):
                # shield: a timeout cancels the wait, not the place in line,
                # which _received skips (and drops the answer) once done.
                response = await asyncio.shield(future)
        except TimeoutError as exc:
            future.cancel()
            raise TimeoutError(errno.ETIMEDOUT, f"no answer from {self.where} within {timeout:g} s") from exc
        except asyncio.CancelledError:
            future.cancel()
            raise
        if check and self.check and response.is_error:
            error = response.error()
            assert error is not None
            raise ErrorResponse(error)
        return response

    async def ping(self, *, timeout: float | None = -1.0) -> float:
        """Send a ``framewire-ping`` probe and wait for its echo; return the
        round trip in seconds (``ProtocolError`` if the reply is not the
        echo: a server that does not know the extension)."""
        limit = self.timeout if timeout == -1.0 else timeout
        started = time.monotonic()
        deadline = None if limit is None else started + limit
        await self._open(deadline)
        self._next_id += 1
        sequence = self._next_id
        (future,) = self._send([probe(sequence)], None)
        try:
            reply = await self._answer(future, _left(deadline, None), check=False)
        except BaseException:
            self._abort()  # as the blocking client: a ping not answered in time ends the connection
            raise
        if reply.get(PING_KEY) != sequence:
            self._abort()
            raise ProtocolError("the reply to a ping is not the server's echo of it")
        self._last_used = time.monotonic()
        return self._last_used - started

    @property
    def in_flight(self) -> int:
        """Requests sent on this connection and not yet answered."""
        return len(self._waiting)

    async def _heartbeat(self) -> None:
        # A ping when the connection has been idle ``heartbeat`` seconds: in
        # line with the calls (the server answers in order), so it needs no
        # lock; a ping not answered in time aborts the connection, and the
        # next call opens a new one.
        while not self._closed and self.connected:
            await asyncio.sleep(max(0.0, self._last_used + self.heartbeat - time.monotonic()))
            if self._closed or not self.connected:
                return
            if self._waiting or time.monotonic() - self._last_used < self.heartbeat:
                continue  # not idle
            seconds = self.timeout if self.timeout is not None else max(self.heartbeat, 1.0)
            try:
                await self.ping(timeout=seconds)
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
        self._fail(ConnectionClosed(f"{self.where}: the connection was aborted by this client"))

    async def close(self) -> None:
        """Close the connection for good (answers still owed are dropped,
        and the connection aborted so the server stops working on them)."""
        self._closed = True
        if self._beat is not None:
            self._beat.cancel()
        if self._waiting:  # answers still owed, to callers waiting or gone
            self._abort()
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._fail(ConnectionClosed(f"{self.where}: the connection was closed by this client"))

    async def __aenter__(self) -> AioClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


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
    host: str = "127.0.0.1",
    port: int = 65432,
    *,
    timeout: float | None = 10.0,
    check: bool = True,
    max_header_size: int = limits.MAX_HEADER_SIZE,
    max_content_length: int = limits.MAX_CONTENT_LENGTH,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    connect_timeout: float | None = -1.0,
    keepalive: float = limits.KEEPALIVE,
    ids: bool = False,
    deadlines: bool = False,
    retry: Retry = Retry(),  # noqa: B008  # frozen: one shared default is safe
    heartbeat: float = 0.0,
    max_connection_age: float | None = MAX_CONNECTION_AGE,
) -> AioClient:
    """Open a connection. ``host`` may be ``"unix:PATH"``; ``ssl`` speaks
    TLS, the server's certificate checked against ``server_hostname`` (the
    host by default). ``connect_timeout`` bounds the connect and the TLS
    handshake (by default ``timeout``, each call's deadline); ``keepalive``
    sets TCP keepalive (0: off); ``ids`` tags each request with a
    ``framewire-id`` and checks its answer carries it, ``deadlines`` with a
    ``framewire-deadline``; ``retry``, ``heartbeat`` and
    ``max_connection_age`` as for the blocking
    :class:`~framewire.client.blocking.Client`."""
    client = AioClient(
        host,
        port,
        timeout=timeout,
        check=check,
        max_header_size=max_header_size,
        max_content_length=max_content_length,
        ssl=ssl,
        server_hostname=server_hostname,
        connect_timeout=connect_timeout,
        keepalive=keepalive,
        ids=ids,
        deadlines=deadlines,
        retry=retry,
        heartbeat=heartbeat,
        max_connection_age=max_connection_age,
    )
    await client._open(None)
    return client
