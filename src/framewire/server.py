"""The server: one thread, one selector, any number of connections.

Each connection owns its receive state (a :class:`Decoder`) and a send
queue; the selector asks for write readiness only while that queue holds
bytes. Every complete request of a read is handled, and the responses go
out in order, coalesced into as few ``send`` calls as possible.

Timers (message deadlines, idle timeouts) live in one heap for all
connections, pushed only when a deadline moves earlier and checked lazily
when it comes due, so a busy connection costs no timer work per message.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import heapq
import itertools
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Final

from framewire import limits
from framewire.app import Handler
from framewire.errors import (
    HandlerError,
    MessageTimeout,
    ProtocolError,
    ServerBusy,
)
from framewire.message import Message
from framewire.protocol import Decoder

__all__ = ["Server", "raise_descriptor_limit"]

log = logging.getLogger("framewire.server")

#: Bytes asked of the kernel per read.
RECV_SIZE: Final = 256 * 1024
# Below this many queued bytes, one joined buffer is cheaper than sendmsg.
_JOIN_BELOW: Final = 64 * 1024
_IOV_MAX: Final = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
# accept() errors that mean "out of descriptors or memory": back off, retry.
_ACCEPT_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_BACKOFF: Final = (0.05, 1.0)  # first and longest pause, seconds
_ACCEPTS_PER_TURN: Final = 128
_READ: Final = selectors.EVENT_READ
_WRITE: Final = selectors.EVENT_WRITE
_WAKE: Final = object()  # selector data of the wake-up socket
_LISTEN: Final = object()  # selector data of the listening socket


def raise_descriptor_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE toward ``wanted``, within the
    hard limit (raising that needs root). Returns the soft limit in force."""
    try:
        import resource  # noqa: PLC0415  (POSIX only)
    except ImportError:
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


class _Connection:
    """One client connection's state."""

    __slots__ = (
        "closed",
        "closing",
        "decoder",
        "events",
        "fd",
        "last_active",
        "marks",
        "message_started",
        "name",
        "out",
        "out_size",
        "paused",
        "queued",
        "scheduled",
        "sent",
        "sock",
    )

    def __init__(self, sock: socket.socket, name: str, decoder: Decoder, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.name = name
        self.decoder = decoder
        self.events = _READ
        # Send queue: bytes objects sent in order; out_size is their total.
        self.out: list[bytes | memoryview] = []
        self.out_size = 0
        # Byte counts since the start, and where each queued response ends:
        # a response is in flight until the byte at its mark has been sent.
        self.queued = 0
        self.sent = 0
        self.marks: collections.deque[int] = collections.deque()
        self.closing = False  # answer what is queued, then close
        self.paused = False  # not reading: the peer is not reading its answers
        self.closed = False
        self.last_active = now
        self.message_started: float | None = None
        self.scheduled = float("inf")  # when this connection's live timer entry is due


class Server:
    """A framed-message server for one handler (``Message -> Message``).

    >>> from framewire.app import echo
    >>> with Server(echo, port=0) as server:   # serves in a background thread
    ...     port = server.port

    or ``server.serve_forever()`` to serve in the calling thread. Every limit
    is an argument, with the defaults of :mod:`framewire.limits`.
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 65432,
        *,
        max_header_size: int = limits.MAX_HEADER_SIZE,
        max_content_length: int = limits.MAX_CONTENT_LENGTH,
        message_timeout: float = limits.MESSAGE_TIMEOUT,
        idle_timeout: float = limits.IDLE_TIMEOUT,
        max_connections: int = limits.MAX_CONNECTIONS,
        high_water: int = limits.HIGH_WATER,
        max_in_flight: int = limits.MAX_IN_FLIGHT,
        grace: float = limits.GRACE,
        backlog: int = 4096,
    ) -> None:
        Decoder(max_header_size=max_header_size, max_content_length=max_content_length)  # checks them
        for name, value in (
            ("message_timeout", message_timeout),
            ("idle_timeout", idle_timeout),
            ("max_connections", max_connections),
            ("high_water", high_water),
            ("max_in_flight", max_in_flight),
            ("backlog", backlog),
        ):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, not {value}")
        if grace < 0:
            raise ValueError(f"grace must be >= 0, not {grace}")
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.max_header_size = max_header_size
        self.max_content_length = max_content_length
        self.message_timeout = message_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.high_water = high_water
        self.low_water = high_water // 2
        self.max_in_flight = max_in_flight
        self.grace = grace
        self.backlog = backlog
        self._listener: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conns: dict[int, _Connection] = {}
        self._timers: list[tuple[float, int, _Connection]] = []
        self._seq = itertools.count()
        self._stop_requested = False
        self._force_stop = False
        self._signal_received: int | None = None
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._finished = threading.Event()
        self._busy_response = Message.for_error(
            ServerBusy(f"The server is at its limit of {max_connections} connections; try again later.")
        ).encode()
        self._accept_paused_until: float | None = None
        self._accept_backoff = _ACCEPT_BACKOFF[0]
        self._exhausted = False
        #: Connections accepted since the start.
        self.connections_total = 0
        #: Requests answered since the start.
        self.requests_total = 0

    # -- life cycle -----------------------------------------------------------

    def bind(self) -> None:
        """Create the listening socket (done by :meth:`start`/:meth:`serve_forever`).

        Raises ``OSError`` (``EADDRINUSE`` when the port is taken).
        """
        if self._listener is not None:
            return
        listener = socket.create_server((self.host, self.requested_port), backlog=self.backlog)
        listener.setblocking(False)
        self._listener = listener
        self._address = listener.getsockname()[:2]

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on; the real port when 0 was asked."""
        if self._address is None:
            raise RuntimeError("the server is not bound yet: call start() or bind()")
        return self._address

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.address[1]

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    def start(self) -> Server:
        """Bind, then serve in a background thread; returns self."""
        self.bind()
        self._thread = threading.Thread(target=self.serve_forever, name="framewire-server", daemon=True)
        self._thread.start()
        self._running.wait()
        return self

    def shutdown(self) -> None:
        """Ask the server to stop: stop accepting, answer what is in flight
        within the grace period, close everything. Safe from any thread and
        from a signal handler; returns at once."""
        if self._stop_requested:
            self._force_stop = True
        self._stop_requested = True
        # A full or closed wake-up socket means a wake-up is pending anyway.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def close(self, timeout: float | None = None) -> None:
        """Stop (as :meth:`shutdown`) and wait for the serving thread to end."""
        self.shutdown()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.grace + 5)
        elif self._running.is_set():
            self._finished.wait(timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def serve_forever(
        self, *, handle_signals: bool = False, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Serve until :meth:`shutdown` (or SIGINT/SIGTERM with ``handle_signals``).

        ``handle_signals`` works only in the main thread; a second signal
        during the grace period stops at once. ``on_ready`` is called once
        the server listens and its signal handlers are in place.
        """
        self.bind()
        assert self._listener is not None
        previous: dict[int, Any] = {}
        if handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, self._on_signal)
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self._wake_r, _READ, _WAKE)
        selector.register(self._listener, _READ, _LISTEN)
        self._running.set()
        try:
            if on_ready is not None:
                on_ready()
            self._loop(selector)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn)
            selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()
            for number, old in previous.items():
                signal.signal(number, old)
            self._finished.set()
            log.info("server stopped")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags and a wake-up here: logging from a signal handler can
        # re-enter a stream write the handler interrupted.
        self._signal_received = signum
        self.shutdown()

    # -- the loop -------------------------------------------------------------

    def _loop(self, selector: selectors.BaseSelector) -> None:
        host, port = self.address
        log.info("listening on %s:%d", host, port)
        select = selector.select
        conns = self._conns
        timers = self._timers
        draining_since: float | None = None
        turns_draining = 0
        now = time.monotonic()
        while True:
            if draining_since is not None:
                timeout: float | None = (
                    0.0 if turns_draining < 2 else max(0.0, draining_since + self.grace - now)
                )
            elif timers:
                timeout = max(0.0, timers[0][0] - now)
            else:
                timeout = None
            if self._accept_paused_until is not None:
                pause = max(0.0, self._accept_paused_until - now)
                timeout = pause if timeout is None else min(timeout, pause)
            events = select(timeout)
            now = time.monotonic()
            for key, mask in events:
                conn = key.data
                if conn.__class__ is _Connection:
                    if mask & _READ and not conn.closed:
                        self._on_readable(conn, now)
                    if mask & _WRITE and not conn.closed:
                        self._flush(conn, now)
                elif conn is _LISTEN:
                    self._accept(selector, now)
                else:
                    self._drain_wake()
            if timers and timers[0][0] <= now:
                self._run_timers(now)
            if self._accept_paused_until is not None and now >= self._accept_paused_until:
                self._resume_accepting(selector)
            if self._stop_requested:
                if draining_since is None:
                    draining_since = now
                    if self._signal_received is not None:
                        log.info(
                            "%s received: answering in-flight requests (up to %g s; again to stop now)",
                            signal.Signals(self._signal_received).name,
                            self.grace,
                        )
                    self._stop_accepting(selector)
                turns_draining += 1
                # Two turns first: what peers sent before the stop is read and answered.
                if turns_draining >= 2:
                    for conn in list(conns.values()):
                        if not conn.out and not conn.decoder.in_message:
                            self._close(conn)
                if not conns or self._force_stop or now >= draining_since + self.grace:
                    if conns:
                        log.warning("grace period over: closing %d connections", len(conns))
                    return

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # -- accepting ------------------------------------------------------------

    def _accept(self, selector: selectors.BaseSelector, now: float) -> None:
        listener = self._listener
        assert listener is not None
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                sock, addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_EXHAUSTED:
                    self._pause_accepting(selector, exc, now)
                elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("accept failed: %s", exc)
                return
            if self._exhausted:
                self._exhausted = False
                self._accept_backoff = _ACCEPT_BACKOFF[0]
                log.warning("descriptors available again: accepting")
            if len(self._conns) >= self.max_connections:
                self._refuse_busy(sock)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            name = f"{addr[0]}:{addr[1]}"
            conn = _Connection(
                sock,
                name,
                Decoder(max_header_size=self.max_header_size, max_content_length=self.max_content_length),
                now,
            )
            self._conns[conn.fd] = conn
            selector.register(sock, _READ, conn)
            self.connections_total += 1
            self._schedule(conn, now + self.idle_timeout)
            log.info("connection from %s opened (%d open)", name, len(self._conns))

    def _refuse_busy(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            sock.send(self._busy_response)
        except OSError:
            pass
        finally:
            sock.close()
        log.warning("connection refused with server-busy: %d connections open", len(self._conns))

    def _pause_accepting(self, selector: selectors.BaseSelector, exc: OSError, now: float) -> None:
        if self._accept_paused_until is None and self._listener is not None:
            selector.unregister(self._listener)
        if not self._exhausted:  # once per episode, not once per retry
            self._exhausted = True
            log.error(
                "accept failed (%s): out of descriptors or memory; retrying with a back-off of up to %g s",
                os.strerror(exc.errno or 0),
                _ACCEPT_BACKOFF[1],
            )
        self._accept_paused_until = now + self._accept_backoff
        self._accept_backoff = min(self._accept_backoff * 2, _ACCEPT_BACKOFF[1])

    def _resume_accepting(self, selector: selectors.BaseSelector) -> None:
        self._accept_paused_until = None
        if self._listener is not None and not self._stop_requested:
            selector.register(self._listener, _READ, _LISTEN)

    def _stop_accepting(self, selector: selectors.BaseSelector) -> None:
        if self._listener is not None and self._accept_paused_until is None:
            selector.unregister(self._listener)
        self._accept_paused_until = None
        log.info("no longer accepting; %d connections open", len(self._conns))

    # -- reading and answering --------------------------------------------------

    def _on_readable(self, conn: _Connection, now: float) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(conn, exc)
            return
        conn.last_active = now
        decoder = conn.decoder
        error: ProtocolError | None
        try:
            requests = decoder.feed(data)
        except ProtocolError as exc:
            requests, error = [], exc
        else:
            error = decoder.error
        if requests:
            self._answer(conn, requests)
        if error is not None:
            log.info("protocol error from %s: %s", conn.name, error)
            self._queue(conn, Message.for_error(error))
            conn.closing = True
        elif not data:
            # The peer half-closed: every response still goes out, then we close.
            conn.closing = True
        elif decoder.in_message:
            if requests or conn.message_started is None:
                conn.message_started = now
                deadline = now + self.message_timeout
                if deadline < conn.scheduled:
                    self._schedule(conn, deadline)
        else:
            conn.message_started = None
        self._flush(conn, now)

    def _answer(self, conn: _Connection, requests: list[Message]) -> None:
        handler = self.handler
        out = conn.out
        marks = conn.marks
        queued = conn.queued
        debug = log.isEnabledFor(logging.DEBUG)
        for request in requests:
            try:
                response = handler(request)
            except ProtocolError as exc:
                # bad-content and the like, raised while reading the request;
                # a framing code cannot come from a well-framed request.
                if exc.framing:
                    exc = HandlerError(f"The handler raised {exc.code} on a well-framed request.")
                response = Message.for_error(exc)
            except Exception as exc:
                response = self._handler_failed(conn, f"raised {type(exc).__name__}", exc)
            if response.__class__ is not Message and not isinstance(response, Message):
                response = self._handler_failed(conn, f"returned {type(response).__name__}, not a Message")
            try:
                head = response._header.encoded()
            except ValueError as exc:
                response = self._handler_failed(conn, "returned a message too large to encode", exc)
                head = response._header.encoded()
            content = response._content
            out.append(head)
            out.append(content)
            queued += len(head) + len(content)
            marks.append(queued)
            if debug:
                log.debug(
                    "%s: %s %d bytes -> %s %d bytes",
                    conn.name,
                    request.content_type,
                    request.content_length,
                    response.content_type,
                    response.content_length,
                )
        conn.out_size += queued - conn.queued
        conn.queued = queued
        self.requests_total += len(requests)

    def _handler_failed(self, conn: _Connection, what: str, exc: Exception | None = None) -> Message:
        log.error("handler %s on a request from %s", what, conn.name, exc_info=exc)
        return Message.for_error(HandlerError(f"The application's handler {what}."))

    def _queue(self, conn: _Connection, message: Message) -> None:
        head, content = message.wire_parts()
        conn.out.append(head)
        conn.out.append(content)
        size = len(head) + len(content)
        conn.out_size += size
        conn.queued += size
        conn.marks.append(conn.queued)

    # -- writing ----------------------------------------------------------------

    def _flush(self, conn: _Connection, now: float) -> None:
        out = conn.out
        if out:
            try:
                if len(out) == 1:
                    sent = conn.sock.send(out[0])
                elif conn.out_size <= _JOIN_BELOW:
                    data = b"".join(out)
                    out[:] = [data]
                    sent = conn.sock.send(data)
                else:
                    sent = conn.sock.sendmsg(out[:_IOV_MAX])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lost(conn, exc)
                return
            if sent:
                conn.last_active = now
                self._consume(conn, sent)
        if conn.out:
            # Backpressure with hysteresis: stop reading above the high-water
            # mark (or with too many answers unread), resume below low water.
            if conn.paused:
                conn.paused = conn.out_size > self.low_water or len(conn.marks) >= self.max_in_flight
            else:
                conn.paused = conn.out_size > self.high_water or len(conn.marks) >= self.max_in_flight
            wanted = _WRITE if conn.closing or conn.paused else _WRITE | _READ
        elif conn.closing or (self._stop_requested and not conn.decoder.in_message):
            self._close(conn)
            return
        else:
            conn.paused = False
            wanted = _READ
        if wanted != conn.events:
            conn.events = wanted
            assert self._selector is not None
            self._selector.modify(conn.sock, wanted, conn)

    def _consume(self, conn: _Connection, sent: int) -> None:
        conn.sent += sent
        if sent == conn.out_size:
            conn.out.clear()
            conn.out_size = 0
            conn.marks.clear()
            return
        conn.out_size -= sent
        out = conn.out
        i = 0
        while sent >= len(out[i]):
            sent -= len(out[i])
            i += 1
        del out[:i]
        if sent:
            out[0] = memoryview(out[0])[sent:]  # no copy of what is left
        marks = conn.marks
        while marks and marks[0] <= conn.sent:
            marks.popleft()

    # -- timers and closing -------------------------------------------------------

    def _schedule(self, conn: _Connection, when: float) -> None:
        conn.scheduled = when
        heapq.heappush(self._timers, (when, next(self._seq), conn))

    def _run_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            when, _, conn = heapq.heappop(timers)
            if conn.closed or when != conn.scheduled:
                continue  # stale: the connection closed or its deadline moved
            conn.scheduled = float("inf")
            if conn.message_started is not None and conn.decoder.in_message:
                due = conn.message_started + self.message_timeout
                if due <= now:
                    self._timed_out(conn, now)
                    continue
            else:
                due = conn.last_active + self.idle_timeout
                if due <= now:
                    log.info("connection from %s idle for %g s: closing", conn.name, self.idle_timeout)
                    self._close(conn)
                    continue
            self._schedule(conn, due)

    def _timed_out(self, conn: _Connection, now: float) -> None:
        error = MessageTimeout(
            f"The message was not complete {self.message_timeout:g} s after its first byte."
        )
        log.info("connection from %s: %s", conn.name, error)
        conn.decoder.fail(error)
        conn.message_started = None
        self._queue(conn, Message.for_error(error))
        conn.closing = True
        # If the peer does not read the error either, the idle timeout ends it.
        self._schedule(conn, now + self.idle_timeout)
        self._flush(conn, now)

    def _lost(self, conn: _Connection, exc: OSError) -> None:
        log.info("connection from %s lost: %s", conn.name, exc.strerror or exc)
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.fd]
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        conn.sock.close()
        conn.out.clear()
        log.info("connection from %s closed (%d open)", conn.name, len(self._conns))
