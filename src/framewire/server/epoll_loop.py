"""The epoll driver's loop: one thread, one poller, any number of connections.

Only a loop (compiled by mypyc where a compiler is; the public class is
:class:`framewire.server.epoll.Server`): readiness, reads, writes, timers.
Each connection is a transport (:mod:`framewire.io.transport`, plain or TLS
alike) beside its engine (:mod:`framewire.server.engine`); admission,
counting and stopping are the :class:`~framewire.server.state.ServerState`'s.
Write readiness is asked for only while an engine has bytes to send, and
timers live in one wheel, moved only when a deadline moves earlier.
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import math
import socket
import ssl
import sys
import threading
import time
from typing import Any, Final

from mypy_extensions import mypyc_attr

from framewire.io import poller
from framewire.io.netio import listener_host, readable_now
from framewire.io.poller import BusyPoll, poll_busily
from framewire.io.timers import TimerWheel
from framewire.io.transport import WOULD_BLOCK, TlsTransport, Transport
from framewire.server.app import Handler
from framewire.server.config import ServerConfig
from framewire.server.engine import LINGER, ServerConnection
from framewire.server.handlers import Dispatcher
from framewire.server.metrics import Metrics
from framewire.server.state import ServerState, check_listen
from framewire.server.stopping import Stopper

__all__: list[str] = []

log = logging.getLogger("framewire.server")

_READ: Final = poller.READ
_READABLE: Final = poller.READ | poller.ERROR
_WRITABLE: Final = poller.WRITE | poller.ERROR
_ERROR: Final = poller.ERROR
_FAILED: Final = poller.FAILED
# Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
# setsockopt per connection saved.
_NODELAY_INHERITED: Final = sys.platform.startswith("linux")


class _Socket:
    """What the driver keeps per connection: the transport beside its engine."""

    __slots__ = ("closed", "engine", "events", "fd", "io", "securing", "timer_slot")

    def __init__(self, io: Transport, engine: ServerConnection, securing: bool) -> None:
        self.io = io
        self.fd = io.fd
        self.engine = engine
        self.events = _READ
        self.closed = False
        self.securing = securing  # the transport's handshake is under way
        self.timer_slot: int | None = None  # where the timer wheel keeps this connection


# A native class open to Python subclasses (Server). Its methods call each
# other as _Serving._name(self, ...): compiled, a direct C call, where
# self._name(...) on a Python subclass is a look-up by name.
@mypyc_attr(allow_interpreted_subclasses=True)
class _Serving:
    """Everything of :class:`Server` but the config's values as attributes."""

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 65432,
        *,
        config: ServerConfig | None = None,
        backlog: int = 4096,
        ssl_context: ssl.SSLContext | None = None,
        unix_mode: int | None = None,
        sock: socket.socket | None = None,
        metrics: Metrics | None = None,
        **settings: Any,
    ) -> None:
        config = ServerConfig.of(config, settings)
        if sock is not None:
            host = listener_host(sock)  # a socket already listening: host and port are its own
        check_listen(ssl_context, config, host, backlog, unix_mode)
        self.ssl_context = ssl_context
        self.unix_mode = unix_mode
        self.config = config
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.backlog = backlog
        #: Prometheus metrics (:mod:`framewire.server.metrics`), when on.
        self.metrics = metrics
        self._listener: socket.socket | None = None
        self._given = sock
        self._poller: Any = None
        self._waker = poller.Waker()
        self._conns: dict[int, _Socket] = {}  # every connection with a socket, by descriptor
        # Connections with bytes held above the socket (TLS): read next turn (see _flush).
        self._held: list[_Socket] = []
        self._timers: TimerWheel[_Socket] = TimerWheel()
        self._dispatcher = Dispatcher(
            handler, threads=config.threads, max_queued=config.max_queued, wake=self._waker.wake
        )
        self._state = ServerState(config, self._dispatcher, ssl_context, metrics)
        self._stop_requested = False
        self._force_stop = False
        self._signal_received: int | None = None
        self._stopper = Stopper(config.grace, self._on_signal, self._state.snapshot)
        # Not `_thread`: compiled, mypyc names the field `__thread`, a C keyword (gcc fails).
        self._loop_thread: threading.Thread | None = None
        self._running = threading.Event()
        self._finished = threading.Event()

    def shutdown(self) -> None:
        """Ask the server to stop: stop accepting, answer what is in flight
        within the grace period, close everything. Safe from any thread and
        from a signal handler; returns at once."""
        if self._stop_requested:
            self._force_stop = True
        self._stop_requested = True
        self._waker.wake()

    def _on_signal(self, signum: int) -> None:
        # The first signal (stopping.py: the second): flags and a wake-up only;
        # logging here could re-enter a stream write the signal interrupted.
        self._signal_received = signum
        self.shutdown()

    def _loop(self, poll: Any) -> None:
        wait = poll.poll
        conns = self._conns
        timers = self._timers
        state = self._state
        acceptor = state.acceptor
        assert acceptor is not None and state.summary is not None
        listen_fd = acceptor.fileno()
        waker_fd = self._waker.fileno()
        stopping_since: float | None = None
        turns_stopping = 0
        now = time.monotonic()
        polling = BusyPoll(self.config.busy_poll / 1e6) if self.config.busy_poll else None
        while True:
            due = min(timers.next_due() or math.inf, state.summary.next_at)
            if stopping_since is not None:
                due = min(due, now + 0.05)  # the stop's turns: answered, closed, checked
            timeout = None if due == math.inf else max(0.0, due - now)
            if self._held or (stopping_since is not None and turns_stopping < 2):
                timeout = 0.0
            pause = acceptor.wait(now)
            if pause is not None:
                timeout = pause if timeout is None else min(timeout, pause)
            if polling is None or timeout == 0:
                events = wait(timeout)
            else:
                events = poll_busily(wait, timeout, polling, time.monotonic)
            now = time.monotonic()
            for fd, mask in events:
                conn = conns.get(fd)
                if conn is not None:
                    try:
                        if conn.securing:
                            _Serving._handshake(self, conn, now)
                            continue
                        if mask & _READABLE and conn.events & _READ:
                            if not (mask & _FAILED and _Serving._reset(self, conn)):
                                _Serving._on_readable(self, conn, now)
                        elif mask & _ERROR:
                            error = conn.io.error()
                            if error is not None:
                                _Serving._close(self, conn, error)  # as a read would have said
                        if mask & _WRITABLE and not conn.closed and conn.engine.unsent:
                            _Serving._flush(self, conn, now)
                    except Exception as exc:
                        _Serving._fault(self, conn, exc)
                elif fd == listen_fd:
                    _Serving._accept(self, now)
                elif fd == waker_fd:
                    self._waker.drain()
                    _Serving._completions(self, now)
            if self._held:
                _Serving._read_held(self, now)
            _Serving._run_timers(self, now)
            acceptor.tick(now)
            if now >= state.summary.next_at:
                state.summary_line(now, [c.engine for c in conns.values()])
            if self._stop_requested:
                if stopping_since is None:
                    stopping_since = now
                    _Serving._stop_accepting(self, now)
                turns_stopping += 1
                # Two turns first: what peers sent before the stop is read and answered.
                if turns_stopping >= 2:
                    for conn in list(conns.values()):
                        _Serving._flush(self, conn, now)  # drains: closes it once nothing is owed or unread
                if state.stop_over(now, stopping_since, self._force_stop):
                    return

    def _stop_accepting(self, now: float) -> None:
        if self._signal_received is not None:
            self._state.stop_signalled(self._signal_received)
        self._state.stop_accepting(lambda: _Serving._accept(self, now))
        for conn in list(self._conns.values()):
            if conn.securing:
                _Serving._close(self, conn)  # not yet a channel: nothing is owed on it

    def _accept(self, now: float) -> None:
        state = self._state
        acceptor = state.acceptor
        listener = self._listener
        assert acceptor is not None and listener is not None
        family = listener.family
        tls = self.ssl_context
        # The C socket type itself where ssl need not wrap it: socket.socket's
        # Python layers are a noticeable part of a one-request connection.
        make_socket = _socket.socket if tls is None else socket.socket
        accepted = acceptor.accept(now)
        if accepted:
            acceptor.established()
        debug = log.isEnabledFor(logging.DEBUG)
        for fd, addr in accepted:
            sock = make_socket(family, socket.SOCK_STREAM, 0, fd)
            engine = state.admit(sock, addr, now, debug)
            if engine is None:
                continue  # refused at once, or an untrusted balancer: closed, logged
            if family != socket.AF_UNIX and not _NODELAY_INHERITED:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                io = Transport(sock, fd) if tls is None else TlsTransport.wrap(tls, sock, fd)
            except (OSError, ValueError) as exc:
                log.info("connection from %s: TLS could not start: %s", engine.peer, exc)
                state.closed(engine)
                continue
            conn = engine.driver = _Socket(io, engine, tls is not None)
            self._conns[fd] = conn
            self._poller.register(fd, _READ)
            deadline = engine.deadline
            self._timers.schedule(conn, deadline if deadline is not None else now + self.config.idle_timeout)
            # Clients send as soon as they are connected: the request (or the
            # handshake's first flight) is usually here already, and reading
            # it now saves a loop turn.
            try:
                if conn.securing:
                    _Serving._handshake(self, conn, now)
                elif engine.refused:
                    _Serving._flush(self, conn, now)
                else:
                    _Serving._on_readable(self, conn, now)
            except Exception as exc:
                _Serving._fault(self, conn, exc)

    def _handshake(self, conn: _Socket, now: float) -> None:
        # One step of a TLS handshake, as far as the socket allows now.
        try:
            wanted = conn.io.handshake()
        except OSError as exc:  # refused certificate, not TLS at all, reset, closed
            _Serving._close(self, conn, handshake=exc)
            return
        if wanted:
            if wanted > 0:
                _Serving._want(self, conn, wanted)
            return
        engine = conn.engine
        conn.securing = False
        self._state.secured(engine, now, *conn.io.secured())
        self._timers.schedule(conn, engine.deadline)  # type: ignore[arg-type]  # open: never None
        _Serving._want(self, conn, _READ)
        _Serving._on_readable(self, conn, now)  # the first request may have come with the handshake

    def _on_readable(self, conn: _Socket, now: float) -> None:
        engine = conn.engine
        io = conn.io
        state = self._state
        metrics = self.metrics
        this_turn = 0
        read = False
        record = io.record
        state.in_handler = engine  # named by a forced stop, should the handler hang
        try:
            while True:
                # The rest of a large content is read into its own buffer (as
                # much as the kernel holds, in one call); anything else in chunks.
                view = engine.read_buffer()
                asked = engine.read_size if view is None else len(view)
                if asked > record:  # noqa: PLR1730  # (an if: cheaper than min() uncompiled)
                    asked = record
                try:
                    if view is None:
                        data = io.recv(asked)
                        count = len(data)
                    else:
                        count = io.recv_into(view, asked)
                    if not count and io.layered and engine.at_stake:
                        # An end here would be answered (incomplete-message) or
                        # cut answers off: over TLS it may really be a reset.
                        reset = io.reset_at_end()
                        if reset is not None:
                            raise reset
                except WOULD_BLOCK:
                    break
                except OSError as exc:
                    _Serving._close(self, conn, io.explain(exc))
                    return
                read = True
                if metrics is not None:
                    metrics.bytes_received.inc(count)
                if view is None:
                    engine.receive(data, now)
                else:
                    engine.received_into(count, now)
                this_turn += count
                if not engine.read_again(count, asked, this_turn, io.records):
                    break
        finally:
            state.in_handler = None
        if read:
            state.held(engine, now, time.monotonic())
            if engine.message_started is not None:  # (else the timer stands as it is)
                _Serving._sooner(self, conn)
            _Serving._flush(self, conn, now)

    def _sooner(self, conn: _Socket) -> None:
        # A message under way, or an answer sent, may bring the deadline
        # earlier than the connection's timer (the wheel only moves earlier).
        deadline = conn.engine.deadline
        if not conn.closed and deadline is not None and deadline < self._timers.scheduled_at(conn):
            self._timers.schedule(conn, deadline)

    def _reset(self, conn: _Socket) -> bool:
        # A reset with nothing at stake and nothing unread is closed without
        # the read, which would only raise ECONNRESET (a cost of the order of
        # a connection's work, for clients that end with SO_LINGER 0). False:
        # read as usual, so every request sent before the reset is answered.
        if conn.engine.at_stake or not conn.io.nothing_unread():
            return False
        _Serving._close(self, conn, conn.io.error() if log.isEnabledFor(logging.DEBUG) else None)
        return True

    def _completions(self, now: float) -> None:
        for engine, slot, result in self._dispatcher.completed():
            engine.fulfil(slot, result, now)
            conn = engine.driver
            if engine.closed or not isinstance(conn, _Socket) or conn.closed:
                continue  # the peer left before its answer: dropped quietly
            try:
                _Serving._flush(self, conn, now)
                _Serving._sooner(self, conn)
            except Exception as exc:
                _Serving._fault(self, conn, exc)

    def _flush(self, conn: _Socket, now: float) -> None:
        engine = conn.engine
        size = engine.unsent
        if size:
            try:
                sent = conn.io.send(engine.outgoing, size)
            except OSError as exc:
                _Serving._close(self, conn, conn.io.explain(exc))
                return
            if self.metrics is not None:
                self.metrics.bytes_sent.inc(sent)
        else:
            sent = 0
        wanted = engine.flushed(sent, now, self._stop_requested)
        if wanted < 0 and engine.idle_drained and readable_now(conn.fd):
            wanted = _READ  # the peer's last requests are still unread: read them first
        if wanted == LINGER:
            # After an error answer: a FIN, then the peer's bytes read and dropped.
            engine.linger(now)
            self._timers.schedule(conn, engine.deadline)  # type: ignore[arg-type]  # set by linger()
            wanted = _READ if conn.io.half_close() else -1
        if wanted < 0:
            _Serving._close(self, conn)
            return
        if wanted & _READ and conn.io.layered and conn.io.pending():
            self._held.append(conn)  # bytes wait above the socket: no event will say so
        if wanted != conn.events:
            conn.events = wanted
            self._poller.modify(conn.fd, wanted)

    def _want(self, conn: _Socket, wanted: int) -> None:
        if wanted != conn.events:
            conn.events = wanted
            self._poller.modify(conn.fd, wanted)

    def _read_held(self, now: float) -> None:
        held = self._held
        self._held = []
        for conn in held:
            if conn.closed or not conn.events & _READ:
                continue
            try:
                _Serving._on_readable(self, conn, now)
            except Exception as exc:
                _Serving._fault(self, conn, exc)

    def _run_timers(self, now: float) -> None:
        # Deadlines are checked when their slot comes, not moved on every
        # read: a busy connection costs no timer work per message.
        for conn in self._timers.pop_due(now):
            if conn.closed:
                continue
            try:
                engine = conn.engine
                engine.timer(now)
                if engine.closed:
                    _Serving._close(self, conn)
                    continue
                _Serving._flush(self, conn, now)
                deadline = engine.deadline
                if not conn.closed and deadline is not None:
                    self._timers.schedule(conn, deadline)
            except Exception as exc:
                _Serving._fault(self, conn, exc)

    def _fault(self, conn: _Socket, exc: Exception) -> None:
        # The last line of defence: a fault of framewire's own while serving
        # one connection closes that connection, never the server.
        log.error("internal error while serving %s: closing that connection", conn.engine.peer, exc_info=exc)
        with contextlib.suppress(Exception):
            _Serving._close(self, conn)

    def _close(self, conn: _Socket, lost: OSError | None = None, handshake: OSError | None = None) -> None:
        # ``lost``: the socket failed with it (logged by what it cost);
        # ``handshake``: the TLS handshake failed with it (logged as such).
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.fd]
        self._timers.cancel(conn)
        if self._poller is not None:
            self._poller.forget(conn.fd)
        engine = conn.engine
        io = conn.io
        io.close(io.layered and lost is None and not conn.securing and not engine.closed)
        if handshake is not None:
            self._state.handshake_failed(engine, handshake)
        else:
            self._state.closed(engine, None if lost is None else lost.strerror or lost)
