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
import errno
import logging
import math
import selectors
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from types import TracebackType

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
from framewire.core.errors import ConnectionClosed, ErrorResponse, ProtocolError
from framewire.core.message import Message, raise_first_error
from framewire.core.probe import ID_KEY, PING_KEY, probe, tag_requests
from framewire.io.netio import connect, idle_dropped, translated, where

log = logging.getLogger("framewire.client")

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
    ``deadlines``: each request carries a ``framewire-deadline`` (the
    milliseconds left of its call's timeout), so a framewire server does not
    run a request its client has stopped waiting for.

    ``retry``: how connecting is retried (a server restarting refuses
    connections for a moment), and how a request lost with its connection
    is sent again when the call says it is safe (``idempotent=True``); see
    :class:`~framewire.client.retry.Retry`. A connection kept open between
    calls is checked before it is used again: if the server closed it
    meanwhile (a restart, its idle timeout), a new one is opened.
    ``heartbeat``: seconds; when the connection has been idle that long, a
    thread sends a ping (``framewire-ping``) to keep it open through NATs
    and firewalls and to find out that the server has gone (the connection
    is then closed, and the next call opens a new one). 0: off.
    ``max_connection_age``: seconds (less up to a tenth, at random) after
    which a connection is replaced by a new one between calls, so that load
    spreads again over servers that restarted or were added behind a
    balancer (gRPC's ``max_connection_age``); None: kept for ever.

    Answers are handed out in the order they arrive: a call made while
    answers to :meth:`send` are still owed takes those first (take them with
    :meth:`receive` before). A call that fails mid-way (timeout, reset,
    Ctrl-C; a :meth:`send` cut short too) aborts its connection
    (a TCP reset), so no late answer can reach a later call and a framewire
    server stops the work it was doing for it. One client is for one thread
    at a time (the heartbeat excepted); a :class:`~framewire.client.pool.Pool`
    shares connections among threads.
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
        deadlines: bool = False,
        retry: Retry = Retry(),  # noqa: B008  # frozen: one shared default is safe
        heartbeat: float = 0.0,
        max_connection_age: float | None = MAX_CONNECTION_AGE,
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
        #: Tell the server how long each call will wait (framewire-deadline).
        self.deadlines = deadlines
        self.retry = retry
        #: Seconds of idleness before a ping (0: no heartbeat).
        self.heartbeat = heartbeat
        #: Seconds before a connection is replaced between calls (None: kept).
        self.max_connection_age = checked_age(max_connection_age)
        self._retire_at = math.inf
        self._owed = 0  # answers to send() not yet taken by receive()
        self._lock = threading.RLock()  # the heartbeat thread against the caller's
        self._last_used = 0.0
        self._beating: threading.Event | None = None  # set: the heartbeat thread stops
        self._limits = (max_header_size, max_content_length)
        self._decoder = Decoder(max_header_size=max_header_size, max_content_length=max_content_length)
        self._ready: collections.deque[Message] = collections.deque()
        self._sock: socket.socket | None = None

    # -- connection -----------------------------------------------------------

    def connect(self) -> Client:
        """Open the connection, or check that the open one is still usable
        (done by ``with`` and by every call): one the server has closed
        meanwhile is replaced by a new one."""
        with self._lock:
            self._open(None)
        return self

    def _open(self, deadline: float | None) -> socket.socket:
        sock = self._sock
        if sock is not None:
            if self._owed or self._ready:
                return sock
            if time.monotonic() >= self._retire_at:
                log.debug(
                    "%s: the connection reached its age: opening a new one", where(self.host, self.port)
                )
                self.close()  # a plain close: nothing is owed on it
                return self._open(deadline)
            if not idle_dropped(sock):
                return sock
            # Readable while idle: the server closed it, or sent what nobody
            # asked for; either way it is not to be used again.
            log.debug("%s closed the idle connection: opening a new one", where(self.host, self.port))
            self._abort()
        limit = self.timeout if self.connect_timeout is None else self.connect_timeout
        delays = self.retry.delays()
        refused: OSError | None = None
        while True:
            seconds = limit
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:  # the call's own deadline bounds the connect too
                # Reached after a back-off wait that overslept the deadline
                # (a sleep may end late): the refusals before it are the
                # cause a caller wants to see, not only the time.
                text = f"no connection to {where(self.host, self.port)} before the call's deadline"
                raise TimeoutError(errno.ETIMEDOUT, text) from refused
            if left is not None:
                seconds = left if limit is None else min(limit, left)
            try:
                sock = connect(
                    self.host,
                    self.port,
                    seconds,
                    self.ssl_context,
                    self.server_hostname,
                    self.source_address,
                    self.keepalive,
                )
            except OSError as exc:
                if not (worth_reconnecting(exc) and _wait(delays, deadline)):
                    raise
                refused = exc
                continue
            self._sock = sock
            self._last_used = time.monotonic()
            self._retire_at = retire_at(self._last_used, self.max_connection_age)
            if self.heartbeat > 0:
                self._start_heartbeat()
            return sock

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._beating is not None:
                self._beating.set()
                self._beating = None
            # Nothing of this connection may reach the next one's callers.
            self._ready.clear()
            self._owed = 0
            self._decoder = Decoder(max_header_size=self._limits[0], max_content_length=self._limits[1])

    def _unsolicited(self) -> None:
        # More came than was asked for (nothing is owed to a send()): the
        # server is out of step, and an extra answer must never be taken for
        # the next call's. The connection goes; the next call opens another.
        log.warning(
            "%s sent %d answer(s) nobody asked for: the connection is closed",
            where(self.host, self.port),
            len(self._ready),
        )
        self._abort()

    def _abort(self) -> None:
        # Closed with a reset (SO_LINGER 0), not a FIN: the server learns at
        # once that the answers owed are not wanted (it cancels the work
        # under way), and its unsent answers are discarded by the kernel.
        sock = self._sock
        if sock is not None and sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def shutdown_write(self) -> None:
        """Half-close: tell the server no more requests will come; its
        answers can still be read.

        Not over TLS (``OSError`` EOPNOTSUPP, nothing sent): a TCP half-close
        would cut the TLS layer under the answers, and TLS's own, a
        close_notify, cannot be sent by Python's ssl module without also
        reading, which loses an answer that arrives meanwhile (1 run in 6 on
        loopback). Read the answers, then :meth:`close`."""
        sock = self._connected()
        if isinstance(sock, ssl.SSLSocket):
            raise OSError(
                errno.EOPNOTSUPP,
                "half-close is not supported over TLS: read the answers, then close()",
            )
        sock.shutdown(socket.SHUT_WR)

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _connected(self) -> socket.socket:
        with self._lock:
            return self._open(None)

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
        """Send one or more messages without waiting for answers (take them
        with :meth:`receive`)."""
        with self._lock:
            sock = self._open(self._deadline())
            try:
                with translated(self.host, self.port, self.timeout):
                    sock.settimeout(self.timeout)
                    sock.sendall(encode_many(messages))
            except BaseException:
                # Part of a message may have gone out: nothing more can be
                # sent on this stream, nor its answers trusted.
                self._abort()
                raise
            self._owed += len(messages)

    def receive(self) -> Message:
        """The next message from the server (an error response is raised if ``check``)."""
        deadline = self._deadline()
        with self._lock, translated(self.host, self.port, self.timeout):
            message = self._next(deadline)
            self._owed = max(0, self._owed - 1)
            self._last_used = time.monotonic()
        return self._checked(message)

    def request(
        self, message: Message, *, timeout: float | _Default | None = _DEFAULT, idempotent: bool = False
    ) -> Message:
        """Send ``message``, return its response; ``timeout`` overrides the
        client's for this call (a deadline for the whole call, retries
        included). ``idempotent=True``: the request may be sent again if its
        connection is lost before the answer (see ``retry``)."""
        return self._call([message], timeout, idempotent, single=True)[0]

    def request_many(
        self,
        messages: Iterable[Message],
        *,
        timeout: float | _Default | None = _DEFAULT,
        idempotent: bool = False,
    ) -> list[Message]:
        """Send all ``messages`` pipelined, return their responses in order.

        Sending and receiving interleave, so that any number of requests
        works even when the server stops reading until its answers are read.
        With ``check`` (as :meth:`request`), an error response raises
        :class:`ErrorResponse`, whose ``responses`` holds every response in
        order; with ``check=False`` error responses are returned in place.
        ``timeout`` and ``idempotent`` as for :meth:`request`.
        """
        return self._call(list(messages), timeout, idempotent, single=False)

    def _call(
        self, messages: list[Message], timeout: float | _Default | None, idempotent: bool, *, single: bool
    ) -> list[Message]:
        deadline = self._deadline(timeout)
        seconds = self.timeout if isinstance(timeout, _Default) else timeout
        delays = self.retry.delays()
        with self._lock:
            while True:
                sock = self._open(deadline)
                sent = self._tag(messages, deadline)
                responses: list[Message] = []
                try:
                    if single:
                        with translated(self.host, self.port, seconds):
                            sock.settimeout(self._remaining(deadline))
                            sock.sendall(sent[0].encode())
                            responses.append(self._next(deadline))
                    else:
                        payload = memoryview(encode_many(sent))
                        self._exchange_many(sock, payload, len(sent), deadline, seconds, responses)
                    self._match(sent, responses[: len(sent)])
                except BaseException as exc:
                    # A timeout, a reset, Ctrl-C: the answers may still come.
                    # The connection is aborted, so that none can ever be
                    # taken for a later call's (the next call connects again).
                    self._abort()
                    if idempotent and lost_in_exchange(exc) and _wait(delays, deadline):
                        log.debug("connection lost under an idempotent request (%s): sending it again", exc)
                        continue
                    raise
                break
            self._last_used = time.monotonic()
        count = len(sent)
        self._ready.extend(responses[count:])
        answers = responses[:count]
        if self._ready and not self._owed:
            self._unsolicited()
        if single:
            return [self._checked(answers[0])]
        if self.check:
            raise_first_error(answers)
        return answers

    def _exchange_many(
        self,
        sock: socket.socket,
        payload: memoryview,
        count: int,
        deadline: float | None,
        seconds: float | None,
        responses: list[Message],
    ) -> None:
        # ``seconds``: the call's timeout, which its error message names.
        with translated(self.host, self.port, seconds):
            while self._ready and len(responses) < count:
                responses.append(self._ready.popleft())
            sock.setblocking(False)
            try:
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                    sent = 0
                    # Until every request is out, even when answers owed
                    # to earlier sends already make up the count.
                    while len(responses) < count or sent < len(payload):
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
        # The connection the request went out on: never a new one (an
        # answer waiting to be read makes the socket readable, which is not
        # the idle check's business).
        sock = self._sock
        if sock is None:
            raise ConnectionClosed(f"{where(self.host, self.port)}: no connection to receive from")
        while not self._ready:
            sock.settimeout(self._remaining(deadline))
            self._ready.extend(self._feed(self._recv_all(sock)))
        return self._ready.popleft()

    def _tag(self, messages: list[Message], deadline: float | None) -> list[Message]:
        # framewire-id and framewire-deadline, when asked for.
        ms = None
        if self.deadlines and deadline is not None:
            ms = (deadline - time.monotonic()) * 1000
        if not self.ids and ms is None:
            return messages
        first = None
        if self.ids:
            first = self._next_id + 1
            self._next_id += len(messages)
        return tag_requests(messages, first, ms)

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
        # readiness event announces: take them too. (With RECV_SIZE above a
        # TLS record's 16 KiB, one read empties the record OpenSSL holds, so
        # this loop is a guard no test can reach: not mutated,
        # docs/mutation.md.)
        data = sock.recv(limits.RECV_SIZE)
        if isinstance(sock, ssl.SSLSocket):
            more = sock.pending()  # pragma: no mutate
            while more and data:  # pragma: no mutate
                data += sock.recv(more)  # pragma: no mutate
                more = sock.pending()  # pragma: no mutate
        return data

    # -- heartbeat ----------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        stop = self._beating = threading.Event()
        thread = threading.Thread(
            target=_heartbeat, args=(weakref.ref(self), stop), name="framewire-heartbeat", daemon=True
        )
        thread.start()

    def _beat(self) -> float:
        # One ping, if the connection is idle and no call is under way; the
        # seconds until the next look.
        if not self._lock.acquire(blocking=False):
            return self.heartbeat  # a call is under way: the connection is not idle
        try:
            if self._sock is None or self._owed or self._ready:
                return self.heartbeat  # answers are owed: not idle either
            due = self._last_used + self.heartbeat - time.monotonic()
            if due > 0:
                return due
            seconds = self.timeout if self.timeout is not None else max(self.heartbeat, 1.0)
            try:
                self._probe(seconds)
            except (OSError, ProtocolError) as exc:
                log.info("heartbeat to %s failed (%s): connection closed", where(self.host, self.port), exc)
            return self.heartbeat
        finally:
            self._lock.release()

    def ping(self, *, timeout: float | _Default | None = _DEFAULT) -> float:
        """Send a ``framewire-ping`` probe and wait for its echo; return the
        round trip in seconds. The server answers it itself, whatever its
        application (a server that does not know the extension answers it
        as a request: with a different reply, ``ProtocolError``)."""
        seconds = self.timeout if isinstance(timeout, _Default) else timeout
        with self._lock:
            self._open(self._deadline(timeout))
            return self._probe(seconds)

    def _probe(self, seconds: float | None) -> float:
        # Under the lock, on an open connection; a failure aborts it.
        sock = self._sock
        assert sock is not None
        self._next_id += 1
        sequence = self._next_id
        started = time.monotonic()
        try:
            with translated(self.host, self.port, seconds):
                sock.settimeout(seconds)
                sock.sendall(probe(sequence).encode())
                reply = self._next(None if seconds is None else started + seconds)
            if reply.get(PING_KEY) != sequence:
                raise ProtocolError("the reply to a ping is not the server's echo of it")
        except BaseException:
            self._abort()
            raise
        self._last_used = time.monotonic()
        return self._last_used - started

    def _checked(self, message: Message) -> Message:
        if self.check and message.is_error:
            error = message.error()
            assert error is not None
            raise ErrorResponse(error)
        return message


def _wait(delays: Iterator[float], deadline: float | None) -> bool:
    """Wait before another attempt: False when there are no attempts left,
    or the wait would pass the call's deadline."""
    delay = next_delay(delays, deadline)
    if delay is None:
        return False
    time.sleep(delay)  # back-off between attempts, not a wait for an event
    return True


def _heartbeat(ref: weakref.ReferenceType[Client], stop: threading.Event) -> None:
    # The heartbeat thread of one connection: it holds the client weakly, so
    # a client dropped without close() does not live on for its thread. It
    # sleeps until the next ping is due (never 0 in a loop: a busy or owed
    # connection is looked at again a heartbeat later).
    wait = 0.0
    while not stop.wait(wait):
        client = ref()
        if client is None:
            return
        wait = client._beat()
        del client
