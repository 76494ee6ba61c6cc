"""The server: one thread, one poller, any number of connections.

Each connection owns its receive state (a :class:`Decoder`) and a send
queue; the poller (epoll, or ``selectors`` where there is no epoll) asks for
write readiness only while that queue holds bytes. Every complete request of
a read is handled, and the responses go out in order, coalesced into as few
``send`` calls as possible.

Timers (message deadlines, idle timeouts) live in one timing wheel for all
connections, moved only when a deadline moves earlier and checked when their
slot comes, so a busy connection costs no timer work per message.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Final

from framewire.core import limits
from framewire.core.cache import BoundedCache
from framewire.core.decoder import Decoder, HeaderCache
from framewire.core.errors import (
    HandlerError,
    MessageTimeout,
    ProtocolError,
    ServerBusy,
)
from framewire.core.message import Message, _Header
from framewire.core.probe import is_probe, probe_reply
from framewire.io import poller
from framewire.io.timers import TimerWheel
from framewire.server.app import Handler

__all__ = ["Server", "raise_descriptor_limit"]

log = logging.getLogger("framewire.server")

# Below this many queued bytes, one joined buffer is cheaper than sendmsg.
_JOIN_BELOW: Final = 64 * 1024
_IOV_MAX: Final = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
# accept() errors that mean "out of descriptors or memory": back off, retry.
_ACCEPT_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_BACKOFF: Final = (0.05, 1.0)  # first and longest pause, seconds
_ACCEPTS_PER_TURN: Final = 128
_READ: Final = poller.READ
_WRITE: Final = poller.WRITE
_READABLE: Final = poller.READ | poller.ERROR
_WRITABLE: Final = poller.WRITE | poller.ERROR
# Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
# setsockopt per connection saved.
_NODELAY_INHERITED: Final = sys.platform.startswith("linux")


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


class _StopNow(BaseException):
    """Raised in the main thread by the second signal (or the end of the
    grace period) to stop even a handler that never returns."""


class _Connection:
    """One client connection's state."""

    __slots__ = (
        "addr",
        "closed",
        "closing",
        "decoder",
        "events",
        "fd",
        "last_active",
        "marks",
        "message_started",
        "out",
        "out_size",
        "paused",
        "queued",
        "sent",
        "sock",
        "timer_slot",
    )

    def __init__(self, sock: socket.socket, fd: int, addr: Any, decoder: Decoder, now: float) -> None:
        self.sock = sock
        self.fd = fd
        self.addr = addr
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
        self.timer_slot: int | None = None  # where the timer wheel keeps this connection

    @property
    def name(self) -> str:
        """The peer's address, for the log."""
        return f"{self.addr[0]}:{self.addr[1]}" if isinstance(self.addr, tuple) else str(self.addr)


class Server:
    """A framed-message server for one handler (``Message -> Message``).

    >>> from framewire.server.app import echo
    >>> with Server(echo, port=0) as server:   # serves in a background thread
    ...     port = server.port

    or ``server.serve_forever()`` to serve in the calling thread. Every limit
    is an argument, with the defaults of :mod:`framewire.core.limits`.
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
        self._poller: poller._EpollPoller | poller._SelectorPoller | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conns: dict[int, _Connection] = {}
        self._timers: TimerWheel[_Connection] = TimerWheel()
        self._stop_requested = False
        self._force_stop = False
        self._looping = False  # serving: a forced stop may unwind the loop
        self._in_handler: _Connection | None = None  # whose handler call is under way
        self._signal_received: int | None = None
        self._debug = False
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        self._finished = threading.Event()
        self._busy_response = Message.for_error(
            ServerBusy(f"The server is at its limit of {max_connections} connections; try again later.")
        ).encode()
        # Shared by the connections' decoders: parsed headers by their bytes.
        self._header_cache = HeaderCache(limits.HEADER_CACHE_BYTES)
        self._response_cache: BoundedCache[tuple[str, str, str, int], bytes] = BoundedCache(
            limits.RESPONSE_CACHE_BYTES
        )
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
        if listener.family in (socket.AF_INET, socket.AF_INET6):
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
        poll = self._poller = poller.Poller()
        poll.register(self._wake_r.fileno(), _READ)
        poll.register(self._listener.fileno(), _READ)
        self._running.set()
        try:
            if on_ready is not None:
                on_ready()
            self._looping = True
            self._loop(poll)
        except _StopNow:
            busy = self._in_handler
            if busy is not None:
                log.warning(
                    "stopping now: the handler for a request from %s was still running; "
                    "closing %d connections",
                    busy.name,
                    len(self._conns),
                )
            else:
                log.warning("stopping now: closing %d connections", len(self._conns))
        finally:
            self._looping = False
            for conn in list(self._conns.values()):
                with contextlib.suppress(Exception):
                    self._close(conn)
            poll.close()
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
        again = self._stop_requested
        self._signal_received = signum
        self.shutdown()
        if not again:
            # The loop ends the grace period itself, unless a handler holds
            # it (stuck in a call that never returns): then this timer
            # interrupts the main thread as a second signal would.
            timer = threading.Timer(self.grace + 0.25, self._grace_over, args=(signum,))
            timer.daemon = True
            timer.start()
        elif self._looping:
            # The second signal stops at once, even inside a handler that
            # never returns: the exception unwinds it and the loop.
            raise _StopNow

    def _grace_over(self, signum: int) -> None:
        if self._looping:
            # A real signal, to the main thread: it interrupts a blocking call
            # there (time.sleep, a socket read), which interrupt_main cannot.
            signal.pthread_kill(threading.main_thread().ident or 0, signum)

    # -- the loop -------------------------------------------------------------

    def _loop(self, poll: poller._EpollPoller | poller._SelectorPoller) -> None:
        host, port = self.address
        log.info("listening on %s:%d", host, port)
        wait = poll.poll
        conns = self._conns
        timers = self._timers
        assert self._listener is not None
        listen_fd = self._listener.fileno()
        draining_since: float | None = None
        turns_draining = 0
        now = time.monotonic()
        while True:
            if draining_since is not None:
                left = max(0.0, draining_since + self.grace - now)
                timeout: float | None = 0.0 if turns_draining < 2 else left
            else:
                due = timers.next_due()
                timeout = None if due is None else max(0.0, due - now)
            if self._accept_paused_until is not None:
                pause = max(0.0, self._accept_paused_until - now)
                timeout = pause if timeout is None else min(timeout, pause)
            events = wait(timeout)
            now = time.monotonic()
            self._debug = log.isEnabledFor(logging.DEBUG)  # once a turn, not once a message
            for fd, mask in events:
                conn = conns.get(fd)
                if conn is not None:
                    try:
                        if mask & _READABLE and conn.events & _READ:
                            self._on_readable(conn, now)
                        if mask & _WRITABLE and conn.out and not conn.closed:
                            self._flush(conn, now)
                    except Exception as exc:
                        self._fault(conn, exc)
                elif fd == listen_fd:
                    self._accept(now)
                else:
                    self._drain_wake()
            self._run_timers(now)
            if self._accept_paused_until is not None and now >= self._accept_paused_until:
                self._resume_accepting()
            if self._stop_requested:
                if draining_since is None:
                    draining_since = now
                    if self._signal_received is not None:
                        log.info(
                            "%s received: answering in-flight requests (up to %g s; again to stop now)",
                            signal.Signals(self._signal_received).name,
                            self.grace,
                        )
                    self._stop_accepting()
                turns_draining += 1
                # Two turns first: what peers sent before the stop is read and answered.
                if turns_draining >= 2:
                    for conn in list(conns.values()):
                        if not conn.out and not conn.decoder.in_message:
                            self._close(conn)
                if not conns or self._force_stop or now >= draining_since + self.grace:
                    if conns and self._force_stop:
                        log.warning("stopping now, as asked again: closing %d connections", len(conns))
                    elif conns:
                        log.warning(
                            "grace period of %g s over: closing %d connections", self.grace, len(conns)
                        )
                    return

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # -- accepting ------------------------------------------------------------

    def _accept(self, now: float) -> None:
        listener = self._listener
        assert listener is not None and self._poller is not None
        # socket._accept gives the descriptor without socket.accept()'s
        # family/type enum conversions, a noticeable cost per connection.
        accept = listener._accept  # type: ignore[attr-defined]
        family = listener.family
        register = self._poller.register
        for _ in range(_ACCEPTS_PER_TURN):
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_EXHAUSTED:
                    self._pause_accepting(exc, now)
                elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("accept failed: %s", exc)
                return
            sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            if self._exhausted:
                self._exhausted = False
                self._accept_backoff = _ACCEPT_BACKOFF[0]
                log.warning("descriptors available again: accepting")
            if len(self._conns) >= self.max_connections:
                self._refuse_busy(sock)
                continue
            sock.setblocking(False)
            if not _NODELAY_INHERITED:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(
                sock,
                fd,
                addr,
                Decoder(
                    max_header_size=self.max_header_size,
                    max_content_length=self.max_content_length,
                    cache=self._header_cache,
                ),
                now,
            )
            self._conns[fd] = conn
            register(fd, _READ)
            self.connections_total += 1
            self._timers.schedule(conn, now + self.idle_timeout)
            if log.isEnabledFor(logging.INFO):
                log.info("connection from %s opened (%d open)", conn.name, len(self._conns))
            # Clients send as soon as they are connected: the request is
            # usually here already, and reading it now saves a loop turn.
            try:
                self._on_readable(conn, now)
            except Exception as exc:
                self._fault(conn, exc)

    def _refuse_busy(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            sock.send(self._busy_response)
        except OSError:
            pass
        finally:
            sock.close()
        log.warning("connection refused with server-busy: %d connections open", len(self._conns))

    def _pause_accepting(self, exc: OSError, now: float) -> None:
        assert self._poller is not None
        if self._accept_paused_until is None and self._listener is not None:
            self._poller.unregister(self._listener.fileno())
        if not self._exhausted:  # once per episode, not once per retry
            self._exhausted = True
            log.error(
                "accept failed (%s): out of descriptors or memory; retrying with a back-off of up to %g s",
                os.strerror(exc.errno or 0),
                _ACCEPT_BACKOFF[1],
            )
        self._accept_paused_until = now + self._accept_backoff
        self._accept_backoff = min(self._accept_backoff * 2, _ACCEPT_BACKOFF[1])

    def _resume_accepting(self) -> None:
        self._accept_paused_until = None
        if self._listener is not None and self._poller is not None and not self._stop_requested:
            self._poller.register(self._listener.fileno(), _READ)

    def _stop_accepting(self) -> None:
        if self._listener is not None and self._poller is not None and self._accept_paused_until is None:
            self._poller.unregister(self._listener.fileno())
        self._accept_paused_until = None
        log.info("no longer accepting; %d connections open", len(self._conns))

    # -- reading and answering --------------------------------------------------

    def _on_readable(self, conn: _Connection, now: float) -> None:
        try:
            data = conn.sock.recv(limits.RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(conn, exc)
            return
        conn.last_active = now
        decoder = conn.decoder
        requests, error = decoder.feed_checked(data)
        if requests:
            self._answer(conn, requests)
            if error is None and data and not decoder.in_message:
                # The common exchange: whole requests in, nothing partial, so no
                # deadline to track: straight to sending.
                conn.message_started = None
                self._flush(conn, now)
                return
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
                if deadline < self._timers.scheduled_at(conn):
                    self._timers.schedule(conn, deadline)
        elif conn.message_started is not None:
            conn.message_started = None
        if conn.out or conn.closing:
            self._flush(conn, now)

    def _answer(self, conn: _Connection, requests: list[Message]) -> None:
        out = conn.out
        marks = conn.marks
        queued = conn.queued
        debug = self._debug
        for request in requests:
            head, content = self._respond(conn, request)
            out.append(head)
            out.append(content)
            queued += len(head) + len(content)
            marks.append(queued)
            if debug:
                log.debug(
                    "%s: %s %d bytes -> %d bytes",
                    conn.name,
                    request.content_type,
                    request.content_length,
                    len(head) + len(content),
                )
        conn.out_size += queued - conn.queued
        conn.queued = queued
        self.requests_total += len(requests)

    def _respond(self, conn: _Connection, request: Message) -> tuple[bytes, bytes]:
        """The bytes that answer ``request``: whatever the handler does (raises,
        returns something else, returns a message that cannot be sent), the
        answer is a valid message, an error response at worst."""
        try:
            # Pings are answered by the server itself, whatever the application.
            if is_probe(request):
                response = probe_reply(request)
            else:
                self._in_handler = conn  # one store: a forced stop names it
                response = self.handler(request)
        except ProtocolError as exc:
            self._in_handler = None
            # bad-content and the like, raised while reading the request;
            # a framing code cannot come from a well-framed request.
            if exc.framing:
                exc = HandlerError(f"The handler raised {exc.code} on a well-framed request.")
            return Message.for_error(exc).wire_parts()
        except Exception as exc:
            response = self._handler_failed(conn, f"raised {type(exc).__name__}", exc)
        self._in_handler = None
        if response.__class__ is not Message and not isinstance(response, Message):
            response = self._handler_failed(conn, f"returned {type(response).__name__}, not a Message")
        header = response._header
        if header.checked:
            return header.wire, response._content  # type: ignore[return-value]  # set once checked
        try:
            return self._sendable(header), response._content
        except Exception as exc:
            response = self._handler_failed(conn, f"returned a message that cannot be sent ({exc})")
            return response.wire_parts()

    def _sendable(self, header: _Header) -> bytes:
        # Headers without extensions are cached by their fields: a handler
        # building the same shape of response each time encodes it once.
        if header.extensions:
            return header.sendable()
        key = (header.content_type, header.content_encoding, header.byteorder, header.content_length)
        wire = self._response_cache.get(key)
        if wire is None:
            wire = header.sendable()
            self._response_cache.put(key, wire, 2 * len(wire) + 256)
        else:
            header.wire = wire
            header.checked = True
        return wire

    def _handler_failed(self, conn: _Connection, what: str, exc: BaseException | None = None) -> Message:
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
            size = conn.out_size
            try:
                if size <= _JOIN_BELOW:
                    data = out[0] if len(out) == 1 else b"".join(out)
                    sent = conn.sock.send(data)
                else:
                    data = None
                    sent = conn.sock.sendmsg(out[:_IOV_MAX])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._lost(conn, exc)
                return
            if sent == size:  # the common case: everything went at once
                out.clear()
                conn.out_size = 0
                conn.marks.clear()
                conn.sent += sent
                conn.last_active = now
            else:
                if data is not None and len(out) > 1:
                    out[:] = [data]  # keep the joined copy for the next try
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
            assert self._poller is not None
            self._poller.modify(conn.fd, wanted)

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

    def _run_timers(self, now: float) -> None:
        # Deadlines are checked when their slot comes, not moved on every
        # read: a busy connection costs no timer work per message.
        for conn in self._timers.pop_due(now):
            if conn.closed:
                continue
            try:
                self._run_timer(conn, now)
            except Exception as exc:
                self._fault(conn, exc)

    def _run_timer(self, conn: _Connection, now: float) -> None:
        if conn.message_started is not None and conn.decoder.in_message:
            due = conn.message_started + self.message_timeout
            if due <= now:
                self._timed_out(conn, now)
                return
        else:
            due = conn.last_active + self.idle_timeout
            if due <= now:
                log.info("connection from %s idle for %g s: closing", conn.name, self.idle_timeout)
                self._close(conn)
                return
        self._timers.schedule(conn, due)

    def _fault(self, conn: _Connection, exc: Exception) -> None:
        # The last line of defence: a fault of framewire's own while serving
        # one connection closes that connection, never the server.
        log.error("internal error while serving %s: closing that connection", conn.name, exc_info=exc)
        with contextlib.suppress(Exception):
            self._close(conn)

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
        self._timers.schedule(conn, now + self.idle_timeout)
        self._flush(conn, now)

    def _lost(self, conn: _Connection, exc: OSError) -> None:
        log.info("connection from %s lost: %s", conn.name, exc.strerror or exc)
        self._close(conn)

    def _close(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.fd]
        self._timers.cancel(conn)
        if self._poller is not None:
            self._poller.forget(conn.fd)
        conn.sock.close()
        conn.out.clear()
        if log.isEnabledFor(logging.INFO):
            log.info("connection from %s closed (%d open)", conn.name, len(self._conns))
