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

The guide's server closes after one answer: a request after that close
fails with ``ConnectionClosed`` (the client does not reconnect by itself);
open a new connection for the next request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl as ssl_module
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from framewire.core import limits
from framewire.core.decoder import Decoder, encode_many
from framewire.core.errors import ConnectionClosed, ErrorResponse, IncompleteMessage, ProtocolError
from framewire.core.message import Message, raise_first_error
from framewire.core.probe import ID_KEY, tagged
from framewire.io.netio import plain_host, set_keepalive, translated, unix_path, where

__all__ = ["AioClient", "connect"]


class _Protocol(asyncio.Protocol):
    def __init__(self, client: AioClient) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client._received(data)

    def eof_received(self) -> bool:
        self.client._received(b"")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)


class AioClient:
    """A connection to a framewire (or guide-written) server, for asyncio."""

    def __init__(
        self,
        timeout: float | None,
        check: bool,
        max_header_size: int = limits.MAX_HEADER_SIZE,
        max_content_length: int = limits.MAX_CONTENT_LENGTH,
    ) -> None:
        self.timeout = timeout
        self.check = check
        self._decoder = Decoder(max_header_size=max_header_size, max_content_length=max_content_length)
        # One future per request sent and not yet answered, in order.
        self._waiting: collections.deque[asyncio.Future[Message]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self._failure: BaseException | None = None
        self.where = ""
        #: Tag each request with a framewire-id and check its answer carries it.
        self.ids = False
        self._idents: collections.deque[int] = collections.deque()  # with ids: in step with _waiting
        self._next_id = 0

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

    # -- the caller's side --------------------------------------------------------------

    async def request(self, message: Message, *, timeout: float | None = -1.0) -> Message:
        """Send ``message``; return its answer (raises as the module says).

        ``timeout``: seconds for this call (default: the client's).
        """
        (future,) = self._send([message])
        return await self._answer(future, self.timeout if timeout == -1.0 else timeout)

    async def request_many(
        self, messages: Iterable[Message], *, timeout: float | None = -1.0
    ) -> list[Message]:
        """Send every message at once (pipelined); return the answers, in order.

        ``timeout`` is a deadline for the whole call. With ``check``, an
        error response raises :class:`ErrorResponse` once every answer is in
        (its ``responses`` holds them all, in order), as the blocking
        client's ``request_many`` does.
        """
        futures = self._send(list(messages))
        limit = self.timeout if timeout == -1.0 else timeout
        try:
            async with asyncio.timeout(limit):
                answers = [await self._answer(future, None, check=False) for future in futures]
            if self.check:
                raise_first_error(answers)
            return answers
        finally:
            for future in futures:
                future.cancel()  # the answers not yet come are dropped when they do

    def _send(self, messages: list[Message]) -> list[asyncio.Future[Message]]:
        if self._failure is not None:
            raise self._failure
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionClosed(f"{self.where}: the connection is closed")
        loop = asyncio.get_running_loop()
        if self.ids:
            numbered = []
            for message in messages:
                self._next_id += 1
                self._idents.append(self._next_id)
                numbered.append(tagged(message, self._next_id))
            messages = numbered
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
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer from {self.where} within {timeout:g} s") from None
        except asyncio.CancelledError:
            future.cancel()
            raise
        if check and self.check and response.is_error:
            error = response.error()
            assert error is not None
            raise ErrorResponse(error)
        return response

    async def close(self) -> None:
        """Close the connection (answers still owed are dropped)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()
        self._fail(ConnectionClosed(f"{self.where}: the connection was closed by this client"))

    async def __aenter__(self) -> AioClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


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
) -> AioClient:
    """Open a connection. ``host`` may be ``"unix:PATH"``; ``ssl`` speaks
    TLS, the server's certificate checked against ``server_hostname`` (the
    host by default). ``connect_timeout`` bounds the connect and the TLS
    handshake (by default ``timeout``, each call's deadline); ``keepalive``
    sets TCP keepalive (0: off); ``ids`` tags each request with a
    ``framewire-id`` and checks its answer carries it, as the blocking
    client does."""
    client = AioClient(timeout, check, max_header_size, max_content_length)
    client.ids = ids
    limit = timeout if connect_timeout == -1.0 else connect_timeout  # -1: the same as timeout
    client.where = where(host, port)
    loop = asyncio.get_running_loop()
    path = unix_path(host)
    if ssl is not None and server_hostname is None and path is None:
        server_hostname = plain_host(host)
    tls: dict[str, Any] = {} if ssl is None else {"ssl": ssl, "server_hostname": server_hostname}
    with translated(host, port, limit):
        async with asyncio.timeout(limit):
            if path is not None:
                transport, _ = await loop.create_unix_connection(lambda: _Protocol(client), path, **tls)
            else:
                transport, _ = await loop.create_connection(
                    lambda: _Protocol(client), plain_host(host), port, **tls
                )
    sock = transport.get_extra_info("socket")
    if sock is not None:
        import socket  # noqa: PLC0415

        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_keepalive(sock, keepalive)
    client._transport = transport
    return client
