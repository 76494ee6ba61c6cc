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
import dataclasses
import errno
import logging
import selectors
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, MutableSequence
from types import TracebackType
from typing import Any

from framewire.client.calls import Calls, request_for, stream_answer, subscribe_request
from framewire.client.connection import ClientConnection
from framewire.client.options import DEFAULT, ClientOptions, Configured, Timeout
from framewire.client.retry import lost_in_exchange, next_delay, worth_reconnecting
from framewire.core import limits
from framewire.core.errors import ConnectionClosed, ProtocolError
from framewire.core.message import Message, raise_first_error
from framewire.core.probe import ID_KEY
from framewire.core.topics import Event
from framewire.io.netio import connect, idle_dropped, translated, where

log = logging.getLogger("framewire.client")

__all__ = ["Client"]

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


# Whom the answers to send() are owed to: receive().
_RECEIVE = object()


class Client(Configured, Calls):
    """A blocking connection to a framewire (or guide-written) server.

    ```python
    with Client("127.0.0.1", 65432) as client:
        client.request(Message.from_json({"action": "search", "value": "ring"})).json()
        # {'result': 'In the caves beneath the Misty Mountains. 💍'}
    ```

    ``check=True`` (the default) turns error responses into
    :class:`ErrorResponse`; with ``check=False`` they are returned as they are.

    ``host`` is a name, an IPv4 or IPv6 address (a name with several
    addresses is tried in each in turn), or ``"unix:PATH"`` (``port`` is then
    ignored). Every option of :class:`~framewire.client.options.ClientOptions`
    is a keyword (``timeout``, ``ssl_context``, ``ids``, ``retry``,
    ``heartbeat``, ...), or pass ``options=``; the client's values read as
    attributes (``client.timeout``). ``timeout`` is each call's deadline,
    which a call's own ``timeout=`` overrides. A connection kept open between
    calls is checked before it is used again: if the server closed it
    meanwhile (a restart, its idle timeout), a new one is opened. With
    ``heartbeat``, a thread pings an idle connection to keep it open through
    NATs and firewalls and to find out that the server has gone.

    Each answer goes to the call it answers: answers to :meth:`send` wait
    for :meth:`receive`, whatever calls are made meanwhile. A call that
    fails mid-way (timeout, reset, Ctrl-C; a :meth:`send` cut short too)
    aborts its connection (a TCP reset), so no late answer can reach a later
    call and a framewire server stops the work it was doing for it; so does
    an answer nobody asked for, or one with the wrong id. One client is for
    one thread at a time (the heartbeat excepted); a
    :class:`~framewire.client.pool.Pool` shares connections among threads.
    """

    def _start(self) -> None:
        self._lock = threading.RLock()  # the heartbeat thread against the caller's
        self._beating: threading.Event | None = None  # set: the heartbeat thread stops
        self._sock: socket.socket | None = None
        self._conn: ClientConnection | None = None
        self._received: collections.deque[Message] = collections.deque()  # answers to send()
        self._streaming = False  # a stream() is being read

    def __setattr__(self, name: str, value: Any) -> None:
        # client.timeout = 2: the options with that one changed (checked as when made).
        if name in ClientOptions.__dataclass_fields__:
            name, value = "options", dataclasses.replace(self.options, **{name: value})
        object.__setattr__(self, name, value)

    # -- connection -----------------------------------------------------------

    def connect(self) -> Client:
        """Open the connection, or check that the open one is still usable
        (done by ``with`` and by every call): one the server has closed
        meanwhile is replaced by a new one."""
        with self._lock:
            self._open(None)
        return self

    def _open(self, deadline: float | None) -> tuple[socket.socket, ClientConnection]:
        sock, conn = self._sock, self._conn
        if sock is not None and conn is not None:
            if conn.in_flight:
                return sock, conn
            if not conn.reusable(time.monotonic()):
                log.debug("%s: the connection reached its age: opening a new one", self.where)
                self.close()  # a plain close: nothing is owed on it
            elif not idle_dropped(sock):
                return sock, conn
            else:
                # Readable while idle: the server closed it, or sent what nobody
                # asked for; either way it is not to be used again.
                log.debug("%s closed the idle connection: opening a new one", self.where)
                self._abort()
        options = self.options
        limit = options.connect_limit
        delays = options.retry.delays()
        refused: OSError | None = None
        while True:
            seconds = limit
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:  # the call's own deadline bounds the connect too
                # Reached after a back-off wait that overslept the deadline
                # (a sleep may end late): the refusals before it are the
                # cause a caller wants to see, not only the time.
                text = f"no connection to {self.where} before the call's deadline"
                raise TimeoutError(errno.ETIMEDOUT, text) from refused
            if left is not None:
                seconds = left if limit is None else min(limit, left)
            try:
                sock = connect(
                    self.host,
                    self.port,
                    seconds,
                    options.ssl_context,
                    options.server_hostname,
                    options.source_address,
                    options.keepalive,
                )
            except OSError as exc:
                if not (worth_reconnecting(exc) and _wait(delays, deadline)):
                    raise
                refused = exc
                continue
            self._sock = sock
            self._conn = conn = ClientConnection(options, time.monotonic(), self.where)
            if options.heartbeat > 0:
                self._start_heartbeat()
            return sock, conn

    @property
    def where(self) -> str:
        """The server, as messages name it (``127.0.0.1:65432``, ``unix:PATH``)."""
        return where(self.host, self.port)

    def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self._conn is not None:
                self._conn.abandon()
                self._conn = None
            if self._beating is not None:
                self._beating.set()
                self._beating = None
            self._received.clear()  # nothing of this connection may reach the next one's callers

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
        with self._lock:
            sock, _ = self._open(None)
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

    @staticmethod
    def _remaining(deadline: float | None) -> float | None:
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
        timeout = self.options.timeout
        with self._lock:
            sock, conn = self._open(self.options.deadline(DEFAULT))
            try:
                with translated(self.host, self.port, timeout):
                    data = conn.send(list(messages), [_RECEIVE] * len(messages), None, time.monotonic())
                    sock.settimeout(timeout)
                    sock.sendall(data)
            except BaseException:
                # Part of a message may have gone out: nothing more can be
                # sent on this stream, nor its answers trusted.
                self._abort()
                raise

    def receive(self) -> Message:
        """The next answer to :meth:`send` (an error response is raised if ``check``)."""
        deadline = self.options.deadline(DEFAULT)
        with self._lock:
            if not self._received:
                try:
                    with translated(self.host, self.port, self.options.timeout):
                        self._await(_RECEIVE, 1, deadline, self._received)
                except BaseException:
                    self._abort()
                    raise
            message = self._received.popleft()
        return self._checked(message)

    def request(self, message: Message, *, timeout: Timeout = DEFAULT, idempotent: bool = False) -> Message:
        """Send ``message``, return its response; ``timeout`` overrides the
        client's for this call (a deadline for the whole call, retries
        included). ``idempotent=True``: the request may be sent again if its
        connection is lost before the answer (see ``retry``)."""
        return self._call([message], timeout, idempotent, single=True)[0]

    def request_many(
        self, messages: Iterable[Message], *, timeout: Timeout = DEFAULT, idempotent: bool = False
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
        self, messages: list[Message], timeout: Timeout, idempotent: bool, *, single: bool
    ) -> list[Message]:
        options = self.options
        deadline = options.deadline(timeout)
        seconds = options.seconds(timeout)
        delays = options.retry.delays()
        with self._lock:
            if self._streaming:
                raise RuntimeError("a stream is being read on this client: finish or close it first")
            while True:
                sock, conn = self._open(deadline)
                token = object()  # whom this call's answers are owed to
                answers: list[Message] = []
                try:
                    with translated(self.host, self.port, seconds):
                        data = conn.send(messages, [token] * len(messages), deadline, time.monotonic())
                        if single:
                            sock.settimeout(self._remaining(deadline))
                            sock.sendall(data)
                            self._await(token, 1, deadline, answers)
                        else:
                            self._exchange_many(
                                sock, memoryview(data), token, len(messages), deadline, answers
                            )
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
            if conn.failure is not None:  # after this call's answers
                if isinstance(conn.failure, ProtocolError):  # one nobody asked for
                    log.warning("%s: %s: the connection is closed", self.where, conn.failure)
                self._abort()
        if single:
            return [self._checked(answers[0])]
        if conn.unordered:
            answers.sort(key=_request_order)  # as they came; returned in request order
        if options.check:
            raise_first_error(answers)
        return answers

    def stream(
        self,
        action: str,
        value: Any = None,
        *,
        timeout: Timeout = DEFAULT,
        extensions: Mapping[str, Any] | None = None,
        result_type: Any = None,
    ) -> Iterator[Any]:
        """Call a streaming ``action``: its items, each as it comes.

        ``timeout`` is the wait for each item (default: the client's).
        Leaving the loop early (``break``, an exception) cancels the stream
        (``framewire-cancel``): the server stops its work, and the connection
        is ready for the next call. From a server that does not stream, the
        one answer's items (a list) are yielded in turn. An error response
        raises :class:`ErrorResponse`. While a stream is read, the client
        makes no other call (a :class:`~framewire.client.pool.Pool` can).
        """
        message = request_for(action, value, extensions)
        return self._stream(message, timeout, result_type)

    def subscribe(
        self,
        *topics: str | Iterable[str],
        timeout: Timeout = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> Iterator[Event]:
        """Subscribe to ``topics`` on a broker (``framewire serve --app
        pubsub``, or any App with a ``subscribe`` action that returns its
        hub's subscription): each :class:`~framewire.core.topics.Event` as
        it is published, ``event.dropped`` telling how many this subscriber
        missed before it. ``timeout``: the longest wait for an event
        (default: none). Leaving the loop unsubscribes."""
        return self._stream(subscribe_request(topics, extensions), timeout, Event)

    def _stream(self, message: Message, timeout: Timeout, result_type: Any) -> Iterator[Any]:
        options = self.options
        seconds = options.seconds(timeout)
        with self._lock:
            if self._streaming:
                raise RuntimeError("a stream is being read on this client: finish or close it first")
            sock, conn = self._open(options.deadline(timeout))
            token = object()
            with translated(self.host, self.port, seconds):
                data = conn.send([message], [token], None, time.monotonic(), stream=True)
                sock.settimeout(seconds)
                try:
                    sock.sendall(data)
                except BaseException:
                    self._abort()
                    raise
            self._streaming = True
        finished = False
        try:
            pending: collections.deque[Message] = collections.deque()
            while True:
                if not pending:
                    with self._lock, translated(self.host, self.port, seconds):
                        batch: list[Message] = []
                        deadline = None if seconds is None else time.monotonic() + seconds
                        self._await(token, 1, deadline, batch)  # (with the rest of what that read brought)
                        pending.extend(batch)
                items, finished = stream_answer(pending.popleft(), result_type)
                yield from items
                if finished:  # (set before the last items: the server has ended, nothing to cancel)
                    return
        finally:
            self._streaming = False
            if not finished:
                self._leave_stream(token)

    def _leave_stream(self, token: object) -> None:
        # The loop was left early: the server is asked to stop (what still
        # comes for the stream is dropped as it arrives); a server that has
        # not shown it knows cancel is stopped by aborting the connection.
        with self._lock:
            conn, sock = self._conn, self._sock
            if conn is None or sock is None or conn.failure is not None:
                return
            cancel = conn.cancel(token)
            if cancel is None:
                self._abort()
                return
            if cancel:
                try:
                    sock.settimeout(self.options.timeout)
                    sock.sendall(cancel)
                except OSError:
                    self._abort()

    def _exchange_many(
        self,
        sock: socket.socket,
        payload: memoryview,
        token: object,
        count: int,
        deadline: float | None,
        answers: list[Message],
    ) -> None:
        sock.setblocking(False)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
                sent = 0
                while len(answers) < count or sent < len(payload):
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
                        self._take(data, token, answers, count - len(answers))
        finally:
            if self._sock is sock:  # still open: back to blocking with a timeout
                sock.settimeout(self.options.timeout)

    def _await(
        self, token: object, count: int, deadline: float | None, answers: MutableSequence[Message]
    ) -> None:
        # Read until ``count`` answers owed to ``token`` are in ``answers``
        # (those owed to send() go aside, for receive()), on the connection
        # the request went out on: never a new one.
        sock, conn = self._sock, self._conn
        if sock is None or conn is None:
            raise ConnectionClosed(f"{self.where}: no connection to receive from")
        start = len(answers)
        while len(answers) - start < count:
            sock.settimeout(self._remaining(deadline))
            self._take(self._recv_all(sock), token, answers, count - (len(answers) - start))

    def _take(self, data: bytes, token: object, answers: MutableSequence[Message], missing: int) -> None:
        # The answers ``data`` completes, each to whom it is owed (``missing``
        # more are awaited for ``token``): the engine's failure is raised if
        # they cannot all come now.
        conn = self._conn
        assert conn is not None
        before = len(answers)
        for owner, message in conn.receive(data, time.monotonic()):
            (answers if owner is token else self._received).append(message)
        failure = conn.failure
        if failure is not None and len(answers) - before < missing:
            conn.take_failed()
            if isinstance(failure, ConnectionClosed) and token is not _RECEIVE:
                failure.responses = list(answers)  # what came before the close
            raise failure

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
        beat = self.options.heartbeat
        if not self._lock.acquire(blocking=False):
            return beat  # a call is under way: the connection is not idle
        try:
            conn = self._conn
            if self._sock is None or conn is None or self._received:
                return beat  # answers to send() wait for receive(): not idle either
            due = conn.heartbeat_in(time.monotonic())
            if due > 0:
                return min(due, beat)
            timeout = self.options.timeout
            try:
                self._probe(timeout if timeout is not None else max(beat, 1.0))
            except (OSError, ProtocolError) as exc:
                log.info("heartbeat to %s failed (%s): connection closed", self.where, exc)
            return beat
        finally:
            self._lock.release()

    def ping(self, *, timeout: Timeout = DEFAULT) -> float:
        """Send a ``framewire-ping`` probe and wait for its echo; return the
        round trip in seconds. The server answers it itself, whatever its
        application (a server that does not know the extension answers it
        as a request: with a different reply, ``ProtocolError``)."""
        with self._lock:
            self._open(self.options.deadline(timeout))
            return self._probe(self.options.seconds(timeout))

    def _probe(self, seconds: float | None) -> float:
        # Under the lock, on an open connection; a failure aborts it.
        sock, conn = self._sock, self._conn
        assert sock is not None and conn is not None
        token = object()
        started = time.monotonic()
        try:
            with translated(self.host, self.port, seconds):
                sock.settimeout(seconds)
                sock.sendall(conn.ping(token))
                self._await(token, 1, None if seconds is None else started + seconds, [])
        except BaseException:
            self._abort()
            raise
        return time.monotonic() - started


def _request_order(answer: Message) -> int:
    # An unordered answer's place among its call's: its id (consecutive).
    ident = answer._header.extensions.get(ID_KEY) if answer._header.extensions else None
    return ident if isinstance(ident, int) else 0


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
