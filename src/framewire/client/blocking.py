"""The blocking client: one connection, requests and their responses in order.

Every call takes at most ``timeout`` seconds in all (an absolute deadline for
the call, not a per-read timeout). Errors are the guide's: nothing listening
(``ConnectionRefusedError``), no answer in time (``TimeoutError``), a reset
(``ConnectionResetError``), the peer closing before the answer
(:class:`ConnectionClosed`) or in the middle of it
(:class:`IncompleteMessage`), and an error response
(:class:`ErrorResponse`, carrying the server's code).
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import ssl
import time
from collections.abc import Iterable
from types import TracebackType

from framewire.core import limits
from framewire.core.decoder import Decoder, encode_many
from framewire.core.errors import ConnectionClosed, ErrorResponse, ProtocolError
from framewire.core.message import Message, raise_first_error
from framewire.core.probe import ID_KEY, tagged
from framewire.io.netio import connect, translated, where

__all__ = ["Client"]

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Default:
    """The type of the "use the client's timeout" default (None means no timeout)."""


_DEFAULT = _Default()


class Client:
    """A blocking connection to a framewire (or guide-written) server.

    >>> with Client("127.0.0.1", 65432) as client:          # doctest: +SKIP
    ...     client.request(Message.from_json({"action": "search", "value": "ring"})).json()
    {'result': 'In the caves beneath the Misty Mountains. 💍'}

    ``check=True`` (the default) turns error responses into
    :class:`ErrorResponse`; with ``check=False`` they are returned as they are.

    ``host`` is a name, an IPv4 or IPv6 address (a name with several
    addresses is tried in each in turn), or ``"unix:PATH"`` (``port`` is then
    ignored). ``ssl_context`` speaks TLS (see
    :func:`framewire.io.tls.client_context`), checking the server's
    certificate against ``server_hostname`` (the host by default).
    ``source_address``: the local ``(host, port)`` to connect from.
    ``connect_timeout``: seconds for the connect and TLS handshake alone
    (default: ``timeout``); ``timeout`` is each call's deadline, which
    ``request(..., timeout=)`` and ``request_many(..., timeout=)`` override.
    ``keepalive``: seconds of silence before TCP keepalive probes check that
    the server is still there (0: off); a half-open connection then fails
    instead of hanging. ``ids``: each request carries a ``framewire-id``
    extension and its answer must carry the same (a framewire server copies
    it); a mismatch closes the connection and raises ``ProtocolError``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 65432,
        *,
        timeout: float | None = 10.0,
        check: bool = True,
        max_header_size: int = limits.MAX_HEADER_SIZE,
        max_content_length: int = limits.MAX_CONTENT_LENGTH,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        source_address: tuple[str, int] | None = None,
        keepalive: float = limits.KEEPALIVE,
        ids: bool = False,
        connect_timeout: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.source_address = source_address
        self.keepalive = keepalive
        #: Tag each request with a framewire-id and check its answer carries it.
        self.ids = ids
        self._next_id = 0
        self.timeout = timeout
        #: Seconds for the connect (and TLS handshake) alone; None: ``timeout``.
        self.connect_timeout = connect_timeout
        self.check = check
        self._limits = (max_header_size, max_content_length)
        self._decoder = Decoder(max_header_size=max_header_size, max_content_length=max_content_length)
        self._ready: collections.deque[Message] = collections.deque()
        self._sock: socket.socket | None = None

    # -- connection -----------------------------------------------------------

    def connect(self) -> Client:
        """Open the connection (done by ``with`` and by the first request)."""
        if self._sock is None:
            self._sock = connect(
                self.host,
                self.port,
                self.timeout if self.connect_timeout is None else self.connect_timeout,
                self.ssl_context,
                self.server_hostname,
                self.source_address,
                self.keepalive,
            )
        return self

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        # Nothing of this connection may reach the next one's callers.
        self._ready.clear()
        self._decoder = Decoder(max_header_size=self._limits[0], max_content_length=self._limits[1])

    def shutdown_write(self) -> None:
        """Half-close: tell the server no more requests will come."""
        self._connected().shutdown(socket.SHUT_WR)

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _connected(self) -> socket.socket:
        return self.connect()._sock  # type: ignore[return-value]

    def _deadline(self, timeout: float | _Default | None = _DEFAULT) -> float | None:
        seconds = self.timeout if isinstance(timeout, _Default) else timeout
        return None if seconds is None else time.monotonic() + seconds

    def _remaining(self, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    # -- exchanges ------------------------------------------------------------

    def send(self, *messages: Message) -> None:
        """Send one or more messages without waiting for answers."""
        sock = self._connected()
        with translated(self.host, self.port, self.timeout):
            sock.settimeout(self.timeout)
            sock.sendall(encode_many(messages))

    def receive(self) -> Message:
        """The next message from the server (an error response is raised if ``check``)."""
        deadline = self._deadline()
        with translated(self.host, self.port, self.timeout):
            message = self._next(deadline)
        return self._checked(message)

    def request(self, message: Message, *, timeout: float | _Default | None = _DEFAULT) -> Message:
        """Send ``message``, return its response; ``timeout`` overrides the
        client's for this call (a deadline for the whole call)."""
        deadline = self._deadline(timeout)
        seconds = self.timeout if isinstance(timeout, _Default) else timeout
        sock = self._connected()
        (message,) = idents = self._tag([message])
        try:
            with translated(self.host, self.port, seconds):
                sock.settimeout(self._remaining(deadline))
                sock.sendall(message.encode())
                response = self._next(deadline)
            self._match(idents, [response])
        except BaseException:
            # A timeout, a reset, Ctrl-C: the answer may still come. The
            # connection is closed, so that it can never be taken for the
            # next call's (the next call connects again).
            self.close()
            raise
        return self._checked(response)

    def request_many(
        self, messages: Iterable[Message], *, timeout: float | _Default | None = _DEFAULT
    ) -> list[Message]:
        """Send all ``messages`` pipelined, return their responses in order.

        Sending and receiving interleave, so that any number of requests
        works even when the server stops reading until its answers are read.
        With ``check`` (as :meth:`request`), an error response raises
        :class:`ErrorResponse`, whose ``responses`` holds every response in
        order; with ``check=False`` error responses are returned in place.
        """
        messages_list = self._tag(list(messages))
        payload = memoryview(encode_many(messages_list))
        count = len(messages_list)
        deadline = self._deadline(timeout)
        sock = self._connected()
        responses: list[Message] = []
        try:
            self._exchange_many(sock, payload, count, deadline, responses)
            self._match(messages_list, responses[:count])
        except BaseException:
            self.close()  # answers still owed must not reach a later call (see request)
            raise
        extra = responses[count:]
        self._ready.extend(extra)
        answers = responses[:count]
        if self.check:
            raise_first_error(answers)
        return answers

    def _exchange_many(
        self,
        sock: socket.socket,
        payload: memoryview,
        count: int,
        deadline: float | None,
        responses: list[Message],
    ) -> None:
        with translated(self.host, self.port, self.timeout):
            while self._ready and len(responses) < count:
                responses.append(self._ready.popleft())
            sock.setblocking(False)
            try:
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                    sent = 0
                    while len(responses) < count:
                        events = selector.select(self._remaining(deadline))
                        if not events:
                            raise TimeoutError
                        mask = events[0][1]
                        if mask & selectors.EVENT_WRITE and sent < len(payload):
                            with contextlib.suppress(*_WOULD_BLOCK):
                                sent += sock.send(payload[sent:])
                            if sent == len(payload):
                                selector.modify(sock, selectors.EVENT_READ)
                        if mask & selectors.EVENT_READ:
                            try:
                                data = self._recv_all(sock)
                            except _WOULD_BLOCK:
                                continue
                            try:
                                responses += self._feed(data)
                            except ConnectionClosed as exc:
                                exc.responses = responses[:count]  # what came before the close
                                raise
            finally:
                if self._sock is sock:  # still open: back to blocking with a timeout
                    sock.settimeout(self.timeout)

    # -- internals ------------------------------------------------------------

    def _feed(self, data: bytes) -> list[Message]:
        try:
            messages = self._decoder.feed(data)
        except ProtocolError:
            self.close()
            raise
        if not data:
            self.close()
            text = f"{where(self.host, self.port)} closed the connection before answering"
            if self.ssl_context is not None:
                # TLS 1.3 ends the client's handshake before the server checks
                # its certificate: a refusal comes as this close.
                text += (
                    " (a TLS server that requires a client certificate closes like this"
                    " when it is missing or refused)"
                )
            raise ConnectionClosed(text)
        return messages

    def _next(self, deadline: float | None) -> Message:
        sock = self._connected()
        while not self._ready:
            sock.settimeout(self._remaining(deadline))
            self._ready.extend(self._feed(self._recv_all(sock)))
        return self._ready.popleft()

    def _tag(self, messages: list[Message]) -> list[Message]:
        if not self.ids:
            return messages
        tagged_messages = []
        for message in messages:
            self._next_id += 1
            tagged_messages.append(tagged(message, self._next_id))
        return tagged_messages

    def _match(self, requests: list[Message], responses: list[Message]) -> None:
        # With ids: each answer must carry its request's (else the stream is
        # out of step, and nothing on it can be trusted).
        if not self.ids:
            return
        for request, response in zip(requests, responses, strict=False):
            sent, came = request.get(ID_KEY), response.get(ID_KEY)
            if came != sent:
                raise ProtocolError(
                    f"the answer to request {sent!r} carries framewire-id {came!r}: "
                    "the connection is out of step"
                )

    @staticmethod
    def _recv_all(sock: socket.socket) -> bytes:
        # A TLS socket may hold decrypted bytes beyond one read, which no
        # readiness event announces: take them too.
        data = sock.recv(limits.RECV_SIZE)
        if isinstance(sock, ssl.SSLSocket):
            more = sock.pending()
            while more and data:
                data += sock.recv(more)
                more = sock.pending()
        return data

    def _checked(self, message: Message) -> Message:
        if self.check and message.is_error:
            error = message.error()
            assert error is not None
            raise ErrorResponse(error)
        return message
