"""The epoll driver's loop: one thread, one poller, any number of connections.

(Compiled by mypyc in a wheel built with a compiler; the public class,
:class:`framewire.server.epoll.Server`, is a Python subclass of its
:class:`_Serving`.)

A thin loop over the connection engine (:mod:`framewire.server.engine`):
it reads sockets into engines, sends what they queue, closes what they
finish, and calls their timers. The poller is epoll on Linux (``selectors``
elsewhere) and asks for write readiness only while an engine has bytes to
send. Every complete request of a read is answered, and the answers go out
in order, coalesced into as few ``send`` calls as possible.

Timers (message deadlines, idle timeouts) live in one timing wheel for all
connections, moved only when a deadline moves earlier and checked when their
slot comes, so a busy connection costs no timer work per message. Handlers
that answer later (threads, async) post their answers back through a
wake-up, and the engine keeps them in request order.

With TLS, each accepted socket is wrapped at once and its handshake is
driven by the same loop (never blocking it), under the message deadline;
connections in their handshake are kept apart, so the loop's hot path pays
nothing for them.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import fcntl
import logging
import math
import os
import signal
import socket
import ssl
import sys
import termios
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, Self

from mypy_extensions import mypyc_attr

from framewire.core import limits
from framewire.core.cache import BoundedCache
from framewire.core.decoder import HeaderCache
from framewire.core.message import Message
from framewire.io import poller
from framewire.io.acceptor import Acceptor
from framewire.io.memory import keep_freed_memory
from framewire.io.netio import (
    describe,
    listener_host,
    open_listener,
    readable_now,
    remove_unix,
    show_address,
    tls_problem,
    unix_path,
)
from framewire.io.poller import BusyPoll, poll_busily
from framewire.io.sendqueue import IOV_MAX, JOIN_BELOW
from framewire.io.timers import TimerWheel
from framewire.io.tls import peer_certificate, send_parts
from framewire.server.app import Handler
from framewire.server.config import ServerConfig
from framewire.server.engine import (
    LINGER,
    PROXY_AND_TLS,
    ContentBudget,
    ResponseCache,
    ServerConnection,
    accepted_peer,
    busy_error,
    close_at_limit,
)
from framewire.server.handlers import Dispatcher
from framewire.server.metrics import Metrics
from framewire.server.stopping import StopNow, Stopper, log_stop_now
from framewire.server.summary import Summary

__all__ = ["raise_descriptor_limit"]

log = logging.getLogger("framewire.server")

_TCP_CLOSE: Final = 7  # tcp_info's tcpi_state of a connection closed (by a reset, here)
_READ: Final = poller.READ
_WRITE: Final = poller.WRITE
_READABLE: Final = poller.READ | poller.ERROR
_WRITABLE: Final = poller.WRITE | poller.ERROR
_ERROR: Final = poller.ERROR
_FAILED: Final = poller.FAILED
# FIONREAD's answer when nothing waits unread (a C int).
_NOTHING_UNREAD: Final = bytes(4)
# Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
# setsockopt per connection saved.
_NODELAY_INHERITED: Final = sys.platform.startswith("linux")
# Bytes a TLS connection may read in one loop turn (see _on_readable_tls).
_TLS_READ_BUDGET: Final = 256 * 1024
# A TLS read returns at most one record's plaintext, 16 KiB: asking for
# exactly that spares CPython allocating 64 KiB and shrinking it every read.
_TLS_RECORD: Final = 16 * 1024
# A read or write that cannot go on now: plain sockets raise the first two,
# TLS sockets the last two (a record is incomplete, or a write is pending).
_WOULD_BLOCK: Final = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


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


def _ended_by_error(sock: _socket.socket) -> int:
    """Under TLS, OpenSSL reports a reset as an end of stream without a
    close_notify: a read returns b"", a write raises SSLEOFError ("EOF
    occurred in violation of protocol"). The errno of the error that ended
    the connection, or 0 for a true end. The kernel knows: a reset
    leaves the connection closed (TCP_CLOSE), a peer's FIN half-closed
    (CLOSE_WAIT). (The poller's EPOLLERR is no proof: OpenSSL's own recv may
    take the error before the poller sees it, 1 run in 15 with both cores busy.)"""
    try:
        code: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            return code
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:  # not TCP (a Unix socket), or already gone
        return 0
    return errno.ECONNRESET if state == _TCP_CLOSE else 0


class _Socket:
    """What the driver keeps per connection: the socket beside its engine."""

    __slots__ = ("closed", "engine", "events", "fd", "sock", "timer_slot", "tls")

    def __init__(self, sock: _socket.socket, fd: int, engine: ServerConnection, tls: bool = False) -> None:
        self.sock = sock
        self.fd = fd
        self.engine = engine
        self.events = _READ
        self.closed = False
        self.tls = tls
        self.timer_slot: int | None = None  # where the timer wheel keeps this connection


# Compiled by mypyc (a wheel built with a compiler), this is a native class,
# its fields at fixed offsets for the loop's code. It allows subclasses
# written in Python (framewire.server.epoll.Server is one, and a user's
# subclass of Server works as in pure Python); mypyc then refuses a
# __getattr__ here, so the config's values as attributes are Server's.
# Its private methods call each other as _Serving._name(self, ...), not
# self._name(...): compiled, the latter goes through the instance's vtable,
# which for a Python subclass (every Server) looks the method up by name and
# calls it through Python; the former is a direct C call (measured on the
# pipelined row: benchmarks/results/performance-notebook.md).
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
        if backlog <= 0:
            raise ValueError(f"backlog must be > 0, not {backlog}")
        if unix_mode is not None and unix_path(host) is None:
            raise ValueError("unix_mode is for a unix:PATH host")
        if ssl_context is not None and config.proxy_protocol:
            raise ValueError(PROXY_AND_TLS)
        self.ssl_context = ssl_context
        self.unix_mode = unix_mode
        self.config = config
        self.handler = handler
        self.host = host
        self.requested_port = port
        self.backlog = backlog
        self._listener: socket.socket | None = None
        self._given = sock
        self._address: tuple[str, int] | None = None
        self._poller: Any = None
        self._acceptor: Acceptor | None = None
        self._waker = poller.Waker()
        self._conns: dict[int, _Socket] = {}
        self._handshakes: dict[int, _Socket] = {}  # TLS connections not yet secured
        # TLS connections whose reading resumed with bytes already decrypted
        # inside OpenSSL: no readiness event announces those, so the loop
        # reads them itself on its next turn (see _flush).
        self._tls_held: list[_Socket] = []
        self._unread = bytearray(4)  # FIONREAD's answer (see _reset)
        self._unix_file: tuple[str, int] | None = None
        self._timers: TimerWheel[_Socket] = TimerWheel()
        self._dispatcher = Dispatcher(
            handler, threads=config.threads, max_queued=config.max_queued, wake=self._waker.wake
        )
        #: Prometheus metrics (:mod:`framewire.server.metrics`), when on.
        self.metrics = metrics
        self._dispatcher.metrics = metrics
        # Shared by the connections' engines: parsed headers by their bytes,
        # encoded response headers by their fields.
        self._headers = HeaderCache(limits.HEADER_CACHE_BYTES)
        self._budget = ContentBudget(self.config.large_content_memory)
        if self.config.large_content:
            keep_freed_memory(self.config.large_content_memory)  # (see framewire.io.memory)
        self._responses: ResponseCache = BoundedCache(limits.RESPONSE_CACHE_BYTES)
        self._stop_requested = False
        self._force_stop = False
        self._signal_received: int | None = None
        self._stopper = Stopper(config.grace, self._on_signal, self._stop_snapshot)
        self._in_handler: _Socket | None = None  # whose inline handler call is under way
        # Not `_thread`: compiled, mypyc names the field `__thread`, a C keyword (gcc fails).
        self._loop_thread: threading.Thread | None = None
        self._running = threading.Event()
        self._finished = threading.Event()
        self._busy_error = busy_error(config.max_connections)
        self._busy_response = Message.for_error(self._busy_error).encode()
        # Connections refused with server-busy, lingering (see _refuse).
        self._refusing: dict[int, _Socket] = {}
        self._requests_closed = 0
        self._errors_closed = 0
        self._connections_total = 0
        self._summary: Summary | None = None

    # -- settings, as attributes ------------------------------------------------

    # -- life cycle -----------------------------------------------------------

    def bind(self) -> None:
        """Create the listening socket (done by :meth:`start`/:meth:`serve_forever`).

        Raises ``OSError`` (``EADDRINUSE`` when the port is taken).
        """
        if self._listener is not None:
            return
        listener, self._unix_file = open_listener(
            self.host,
            self.requested_port,
            self.backlog,
            unix_mode=self.unix_mode,
            sock=self._given,
            keepalive=self.config.keepalive,
        )
        unix = unix_path(self.host) is not None
        self._address = (self.host, 0) if unix else listener.getsockname()[:2]
        self._listener = listener

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on; the real port when 0 was
        asked; ``("unix:PATH", 0)`` on a Unix socket."""
        if self._address is None:
            raise RuntimeError("the server is not bound yet: call start() or bind()")
        return self._address

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.address[1]

    @property
    def connections(self) -> int:
        """Connections open now (with those in their TLS handshake)."""
        return len(self._conns) + len(self._handshakes)

    @property
    def connections_total(self) -> int:
        """Connections accepted since the start."""
        return self._connections_total

    @property
    def requests_total(self) -> int:
        """Requests received since the start."""
        return self._requests_closed + sum(c.engine.requests for c in list(self._conns.values()))

    def _summary_line(self, summary: Summary, now: float, last: bool = False) -> None:
        # Summed over the connections only when a line is due (every
        # log_summary seconds), so counting costs the hot path nothing.
        conns = list(self._conns.values())
        line = summary.line(
            now,
            connections=self._connections_total,
            open_now=len(conns) + len(self._handshakes),
            requests=self.requests_total,
            errors=self._errors_closed + sum(c.engine.errors for c in conns),
            last=last,
        )
        if line is not None:
            log.info("%s", line)

    def start(self) -> Self:
        """Bind, then serve in a background thread; returns self."""
        self.bind()
        self._loop_thread = threading.Thread(target=self.serve_forever, name="framewire-server", daemon=True)
        self._loop_thread.start()
        self._running.wait()
        return self

    def shutdown(self) -> None:
        """Ask the server to stop: stop accepting, answer what is in flight
        within the grace period, close everything. Safe from any thread and
        from a signal handler; returns at once."""
        if self._stop_requested:
            self._force_stop = True
        self._stop_requested = True
        self._waker.wake()

    def close(self, timeout: float | None = None) -> None:
        """Stop (as :meth:`shutdown`) and wait for the serving thread to end."""
        self.shutdown()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout if timeout is not None else self.config.grace + 5)
        elif self._running.is_set():
            self._finished.wait(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def serve_forever(
        self, *, handle_signals: bool = False, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Serve until :meth:`shutdown` (or SIGINT/SIGTERM with ``handle_signals``).

        ``handle_signals`` works only in the main thread. The first signal
        drains (answers what is in flight, up to ``grace`` seconds); a
        second signal, or the end of the grace period, stops at once, even
        while a handler is stuck. ``on_ready`` is called once the server
        listens and its signal handlers are in place.
        """
        self.bind()
        assert self._listener is not None
        if handle_signals:
            self._stopper.install(self._waker.write_fileno())
        poll = self._poller = poller.Poller()
        poll.register(self._waker.fileno(), _READ)
        self._acceptor = Acceptor(self._listener, poll, log)
        self._acceptor.listen()
        self._running.set()
        try:
            if on_ready is not None:
                on_ready()
            self._stopper.serving = True
            _Serving._loop(self, poll)
        except StopNow:
            busy, connections = self._stopper.at_stop or _Serving._stop_snapshot(self)
            log_stop_now(log, busy, connections)
        finally:
            self._stopper.serving = False
            self._dispatcher.close()
            for conn in list(self._conns.values()):
                with contextlib.suppress(Exception):
                    _Serving._close(self, conn)
            for conn in [*self._handshakes.values(), *self._refusing.values()]:
                with contextlib.suppress(Exception):
                    _Serving._close(self, conn)
            poll.close()
            self._listener.close()
            remove_unix(self._unix_file)
            self._waker.close()
            self._stopper.restore()
            if self._summary is not None:
                _Serving._summary_line(self, self._summary, time.monotonic(), last=True)
            self._finished.set()
            log.info("server stopped")

    def _stop_snapshot(self) -> tuple[list[str], int]:
        # Taken when the forced stop is raised: who is at work, how many are open.
        busy = self._dispatcher.still_running(time.monotonic())
        if self._in_handler is not None:
            busy.insert(0, self._in_handler.engine.peer)
        return busy, self.connections

    def _on_signal(self, signum: int) -> None:
        # The first signal (see stopping.py for the second): only flags and a
        # wake-up here, since logging from a signal handler can re-enter a
        # stream write the handler interrupted.
        self._signal_received = signum
        self.shutdown()

    # -- the loop -------------------------------------------------------------

    def _loop(self, poll: Any) -> None:
        host, port = self.address
        where = host if port == 0 and unix_path(host) is not None else show_address((host, port))
        log.info("listening on %s%s", where, " (TLS)" if self.ssl_context is not None else "")
        wait = poll.poll
        conns = self._conns
        refusing = self._refusing
        timers = self._timers
        acceptor = self._acceptor
        assert acceptor is not None
        listen_fd = acceptor.fileno()
        waker_fd = self._waker.fileno()
        grace = self.config.grace
        draining_since: float | None = None
        turns_draining = 0
        now = time.monotonic()
        summary = self._summary = Summary(self.config.log_summary, now)
        polling = BusyPoll(self.config.busy_poll / 1e6) if self.config.busy_poll else None
        while True:
            if draining_since is not None:
                left = max(0.0, draining_since + grace - now)
                timeout: float | None = 0.0 if turns_draining < 2 else min(left, 0.05)
            else:
                due = timers.next_due()
                if due is None or summary.next_at < due:
                    due = summary.next_at if summary.next_at != math.inf else None
                timeout = None if due is None else max(0.0, due - now)
            if self._tls_held:
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
                conn = conns.get(fd) or refusing.get(fd)
                if conn is not None:
                    try:
                        if mask & _READABLE and conn.events & _READ:
                            if not (mask & _FAILED and _Serving._reset(self, conn)):
                                _Serving._on_readable(self, conn, now)
                        elif mask & _ERROR:
                            _Serving._on_error(self, conn)
                        if mask & _WRITABLE and not conn.closed and conn.engine.out:
                            _Serving._flush(self, conn, now)
                    except Exception as exc:
                        _Serving._fault(self, conn, exc)
                elif fd == listen_fd:
                    _Serving._accept(self, now)
                elif fd == waker_fd:
                    self._waker.drain()
                    _Serving._completions(self, now)
                else:
                    conn = self._handshakes.get(fd)
                    if conn is not None:
                        try:
                            _Serving._handshake(self, conn, now)
                        except Exception as exc:
                            _Serving._fault(self, conn, exc)
            if self._tls_held:
                _Serving._read_held(self, now)
            _Serving._run_timers(self, now)
            acceptor.tick(now)
            if now >= summary.next_at:
                _Serving._summary_line(self, summary, now)
            if self._stop_requested:
                if draining_since is None:
                    draining_since = now
                    if self._signal_received is not None:
                        log.info(
                            "%s received: answering in-flight requests (up to %g s; again to stop now)",
                            signal.Signals(self._signal_received).name,
                            grace,
                        )
                    # Connections the kernel completed before the stop are
                    # taken in (closing the listener would reset them), unless
                    # the listener is shared (workers, systemd): its queue is
                    # then the other processes' to serve.
                    if self._given is None:
                        _Serving._accept(self, now)
                    acceptor.stop()
                    # Closed now, not at the end: a client (or a balancer)
                    # connecting during the grace period is refused at once
                    # and goes elsewhere, instead of waiting in a backlog that
                    # the close would reset. (A shared listener stays open in
                    # the other processes.)
                    acceptor.listener.close()
                    for conn in list(self._handshakes.values()):
                        _Serving._close(self, conn)  # not yet a channel: nothing is owed on it
                    log.info("no longer accepting; %d connections open", len(conns))
                turns_draining += 1
                # Two turns first: what peers sent before the stop is read and answered.
                if turns_draining >= 2:
                    for conn in list(conns.values()):
                        _Serving._flush(self, conn, now)  # drains: closes it once nothing is owed or unread
                if not conns or self._force_stop or now >= draining_since + grace:
                    if conns and self._force_stop:
                        log.warning("stopping now, as asked again: closing %d connections", len(conns))
                    elif conns:
                        busy = self._dispatcher.still_running(now)
                        log.warning(
                            "grace period of %g s over: closing %d connections%s",
                            grace,
                            len(conns),
                            f" (handlers still running for {', '.join(busy)})" if busy else "",
                        )
                    return

    # -- accepting ------------------------------------------------------------

    def _accept(self, now: float) -> None:
        acceptor = self._acceptor
        listener = self._listener
        assert acceptor is not None and listener is not None
        family = listener.family
        register = self._poller.register
        config = self.config
        tls = self.ssl_context
        # A plain connection is the C socket type itself, not socket.socket,
        # whose Python __init__ and close() layers are a noticeable part of a
        # connection that carries one request. ssl needs a socket.socket to wrap.
        make_socket = _socket.socket if tls is None else socket.socket
        accepted = acceptor.accept(now)
        # Looked up once per batch, not per connection: with one request per
        # connection, per-connection look-ups are a measurable share of its work.
        debug = log.isEnabledFor(logging.DEBUG)
        named_by_address = family != socket.AF_UNIX and not config.proxy_protocol
        conns = self._conns
        if accepted:
            acceptor.established()
        handshakes = self._handshakes
        for fd, addr in accepted:
            sock = make_socket(family, socket.SOCK_STREAM, 0, fd)
            # A connection counts against the limit from its accept, its TLS
            # handshake included: handshakes that never end would otherwise
            # hold descriptors past any limit.
            refused = len(conns) + len(handshakes) >= config.max_connections
            if refused and tls is not None:
                close_at_limit(sock, self.metrics, self.connections)
                continue
            if refused and len(self._refusing) >= config.max_refusing:
                _Serving._refuse_now(self, sock)
                continue
            sock.setblocking(False)
            peer = show_address(addr) if named_by_address else accepted_peer(sock, addr, self.host, config)
            if peer is None:
                continue  # an untrusted balancer: closed, logged
            if family != socket.AF_UNIX and not _NODELAY_INHERITED:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            engine = ServerConnection(
                config,
                now,
                peer,
                headers=self._headers,
                responses=self._responses,
                budget=self._budget,
                handshaking=tls is not None,
            )
            if refused:
                conn = engine.driver = _Socket(sock, fd, engine)
                register(fd, _READ)
                _Serving._refuse(self, conn, now)
                continue
            if tls is not None:
                try:
                    sock = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)  # type: ignore[arg-type]
                except (OSError, ValueError) as exc:
                    log.info("connection from %s: TLS could not start: %s", peer, exc)
                    sock.close()
                    continue
            self._dispatcher.bind(engine)
            self._connections_total += 1
            if self.metrics is not None:
                self.metrics.opened(engine)
            if tls is not None:
                conn = engine.driver = _Socket(sock, fd, engine, tls=True)
                self._handshakes[fd] = conn
                register(fd, _READ)
                self._timers.schedule(conn, now + config.message_timeout)
                try:
                    _Serving._handshake(self, conn, now)
                except Exception as exc:
                    _Serving._fault(self, conn, exc)
                continue
            conn = engine.driver = _Socket(sock, fd, engine)
            conns[fd] = conn
            register(fd, _READ)
            self._timers.schedule(conn, engine.deadline or now + config.idle_timeout)
            if debug and not engine.awaiting_proxy:  # else: when it names the peer
                log.debug("connection from %s opened (%d open)", engine.peer, len(conns))
            # Clients send as soon as they are connected: the request is
            # usually here already, and reading it now saves a loop turn.
            try:
                _Serving._on_readable(self, conn, now)
            except Exception as exc:
                _Serving._fault(self, conn, exc)

    def _handshake(self, conn: _Socket, now: float) -> None:
        # One step of a TLS handshake, as far as the socket allows now.
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            wanted = _READ
        except ssl.SSLWantWriteError:
            wanted = _WRITE
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # refused certificate, not TLS at all, reset, closed
            problem = tls_problem(exc, server=True) if isinstance(exc, ssl.SSLError) else describe(exc)
            log.info("connection from %s: TLS handshake failed: %s", conn.engine.peer, problem)
            _Serving._close(self, conn)
            return
        else:
            engine = conn.engine
            del self._handshakes[conn.fd]
            engine.secured(now, sock.version(), peer_certificate(sock))
            self._conns[conn.fd] = conn  # (counted against the limit since its accept)
            self._timers.schedule(conn, engine.last_active + self.config.idle_timeout)
            engine.log_secured(self.connections)
            if conn.events != _READ:
                conn.events = _READ
                self._poller.modify(conn.fd, _READ)
            _Serving._on_readable(self, conn, now)  # the first request may have come with the handshake
            return
        if wanted != conn.events:
            conn.events = wanted
            self._poller.modify(conn.fd, wanted)

    def _refuse(self, conn: _Socket, now: float) -> None:
        # server-busy, then the lingering close of an error answer: the
        # client's request, sent as soon as it connected, is read and
        # dropped, where closing with it unread would reset the connection
        # and could cost the client the answer (see ServerConnection.refuse).
        engine = conn.engine
        engine.metrics = self.metrics  # counts the error; the connection is not counted open
        engine.refuse(self._busy_error)
        self._refusing[conn.fd] = conn
        log.warning("connection refused with server-busy: %d connections open", len(self._conns))
        _Serving._flush(self, conn, now)
        if not conn.closed:
            self._timers.schedule(conn, engine.deadline)  # type: ignore[arg-type]  # closing: never None

    def _refuse_now(self, sock: _socket.socket) -> None:
        # Past max_refusing: the answer, then the close at once.
        try:
            sock.setblocking(False)
            sock.send(self._busy_response)  # over TLS once secured (see _handshake)
            if self.metrics is not None:
                self.metrics.error("server-busy")
        except OSError:
            pass
        finally:
            sock.close()
        log.warning("connection refused with server-busy: %d connections open", len(self._conns))

    # -- reading, answering, writing ----------------------------------------------

    def _on_readable(self, conn: _Socket, now: float) -> None:
        if conn.tls:
            _Serving._on_readable_tls(self, conn, now)
            return
        engine = conn.engine
        sock = conn.sock
        this_turn = 0
        read = False
        while True:
            # The rest of a large content is read into its own buffer (as much
            # as the kernel holds, in one call); anything else in chunks.
            view = engine.read_buffer()
            try:
                if view is None:
                    asked = engine.read_size
                    data = sock.recv(asked)
                    count = len(data)
                else:
                    asked = len(view)
                    count = sock.recv_into(view)
            except _WOULD_BLOCK:
                break
            except OSError as exc:
                _Serving._lost(self, conn, exc)
                return
            read = True
            if self.metrics is not None:
                self.metrics.bytes_received.inc(count)
            self._in_handler = conn  # named by a forced stop, should the handler hang
            try:
                if view is None:
                    engine.receive(data, now)
                else:
                    engine.received_into(count, now)
            finally:
                self._in_handler = None
            this_turn += count
            if not engine.read_again(count, asked, this_turn):
                break
        if read:
            _Serving._received(self, conn, now)

    def _on_readable_tls(self, conn: _Socket, now: float) -> None:
        # A TLS read returns one record (16 KiB at most): reading every
        # record that is in before going back to the poller saves a loop
        # turn per record (with 1 MiB messages over TLS, most of the loop's turns).
        # Bounded per turn, so that one busy peer does not starve the others.
        sock = conn.sock
        engine = conn.engine
        high_water = self.config.high_water
        budget = _TLS_READ_BUDGET
        self._in_handler = conn  # named by a forced stop, should the handler hang
        try:
            while True:
                view = engine.read_buffer()
                # A read that completes a large content's buffer may stop
                # inside a record: the rest stays in OpenSSL, where no
                # readiness event announces it, and the loop goes on to it.
                asked = _TLS_RECORD if view is None else min(len(view), _TLS_RECORD)
                try:
                    if view is None:
                        data = sock.recv(asked)
                        count = len(data)
                    else:
                        count = sock.recv_into(view, asked)
                except _WOULD_BLOCK:
                    break
                except OSError as exc:
                    _Serving._lost(self, conn, exc)
                    return
                if not count and (engine.owed or engine.decoder.in_message):
                    # An end here would be answered (incomplete-message) or
                    # would cut answers off: say whether it was a reset. (With
                    # nothing at stake an end is an end: many TLS clients close
                    # with the server's session tickets unread, which the
                    # kernel turns into a reset.)
                    code = _ended_by_error(sock)
                    if code:  # lost, as on a plain socket: not an end of stream to answer
                        _Serving._lost(self, conn, OSError(code, os.strerror(code)))
                        return
                if view is None:
                    engine.receive(data, now)
                else:
                    engine.received_into(count, now)
                budget -= count
                if self.metrics is not None:
                    self.metrics.bytes_received.inc(count)
                if count < asked or engine.closing or engine.out.size > high_water:
                    # Less than a full record: a small exchange, most likely
                    # all there is (another read would only raise want-read;
                    # if more came, the poller says so).
                    break
                # Decrypted bytes OpenSSL holds are not in the kernel's buffer:
                # no readiness event would announce them, so they are read now.
                if budget <= 0 and not sock.pending():  # type: ignore[attr-defined]
                    break
        finally:
            self._in_handler = None
        _Serving._received(self, conn, now)

    def _received(self, conn: _Socket, now: float) -> None:
        engine = conn.engine
        deadline = engine.message_started
        if deadline is not None:
            # A message is under way: its deadline may be earlier than the
            # connection's timer (which the wheel only ever moves earlier).
            deadline += self.config.message_timeout
            if deadline < self._timers.scheduled_at(conn):
                self._timers.schedule(conn, deadline)
        _Serving._flush(self, conn, now)

    def _reset(self, conn: _Socket) -> bool:
        # The peer reset the connection (or it failed otherwise). With nothing
        # owed, nothing half received and nothing unread, it is closed without
        # the read, which would only raise ECONNRESET: clients that end every
        # connection with SO_LINGER 0 pay that raise on each, a cost of the
        # order of the connection's own work. False: read as usual. Bytes that
        # came before the reset are still read first, so every complete request
        # reaches its handler, and the log line says what the loss cost.
        engine = conn.engine
        if conn.tls or engine.owed or engine.decoder.in_message:
            return False
        unread = self._unread
        fcntl.ioctl(conn.fd, termios.FIONREAD, unread)
        if unread != _NOTHING_UNREAD:
            return False
        if log.isEnabledFor(logging.DEBUG):
            engine.log_lost(os.strerror(conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)))
        _Serving._close(self, conn)
        return True

    def _on_error(self, conn: _Socket) -> None:
        # An error or hang-up on a connection we are not reading (paused,
        # or waiting for a handler): find out which, and close if it is fatal.
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            _Serving._lost(self, conn, OSError(code, os.strerror(code)))  # as a read would have said

    def _completions(self, now: float) -> None:
        for engine, slot, result in self._dispatcher.completed():
            engine.fulfil(slot, result, now)
            conn = engine.driver
            if engine.lost or not isinstance(conn, _Socket) or conn.closed:
                continue  # the peer left before its answer: dropped quietly
            try:
                _Serving._flush(self, conn, now)
                deadline = engine.deadline
                if not conn.closed and deadline is not None and deadline < self._timers.scheduled_at(conn):
                    self._timers.schedule(conn, deadline)
            except Exception as exc:
                _Serving._fault(self, conn, exc)

    def _flush(self, conn: _Socket, now: float) -> None:
        engine = conn.engine
        out = engine.out
        size = out.size
        if size:
            parts = out.parts
            data = None
            try:
                if size <= JOIN_BELOW:
                    data = parts[0] if len(parts) == 1 else b"".join(parts)
                    sent = conn.sock.send(data)
                elif conn.tls:  # TLS sockets have no sendmsg
                    sent = send_parts(conn.sock, parts)  # type: ignore[arg-type]
                else:
                    sent = conn.sock.sendmsg(parts[:IOV_MAX])
            except _WOULD_BLOCK:
                sent = 0
            except OSError as exc:
                _Serving._lost(self, conn, exc)
                return
            if self.metrics is not None:
                self.metrics.bytes_sent.inc(sent)
            if sent == size:  # the common case: everything went at once
                parts.clear()
                out.size = 0
                out.marks.clear()
                out.sent += sent
                engine.last_active = now
            else:
                if data is not None and len(parts) > 1:
                    parts[:] = [data]  # keep the joined copy for the next try
                engine.sent(sent, now)
        if self._stop_requested:
            engine.drain(now)
        wanted = engine.interest()
        if wanted < 0 and engine.idle_drained and readable_now(conn.fd):
            wanted = _READ  # the peer's last requests are still unread: read them first
        if wanted < 0:
            if wanted != LINGER or not _Serving._half_close(self, conn, now):
                _Serving._close(self, conn)
                return
            wanted = _READ
            self._timers.schedule(conn, engine.deadline)  # type: ignore[arg-type]  # set by linger()
        if conn.tls and wanted & _READ and conn.sock.pending():  # type: ignore[attr-defined]
            # Reading stopped (the high-water mark) or resumes with bytes
            # already decrypted inside OpenSSL: no readiness event will say so.
            self._tls_held.append(conn)
        if wanted != conn.events:
            conn.events = wanted
            self._poller.modify(conn.fd, wanted)

    def _read_held(self, now: float) -> None:
        held = self._tls_held
        self._tls_held = []
        for conn in held:
            if conn.closed or not conn.events & _READ:
                continue
            try:
                _Serving._on_readable(self, conn, now)
            except Exception as exc:
                _Serving._fault(self, conn, exc)

    # -- timers and closing -------------------------------------------------------

    def _half_close(self, conn: _Socket, now: float) -> bool:
        # The lingering close after an error answer (see ServerConnection.linger):
        # a FIN after the answer, then the peer's bytes are read and dropped.
        # False: the socket is gone, close it now.
        conn.engine.linger(now)
        sock = conn.sock
        if conn.tls:
            # close_notify first, so the peer's TLS reads the answer as complete.
            with contextlib.suppress(OSError, ValueError):
                sock.unwrap()  # type: ignore[attr-defined]
        try:
            # (On a TLS socket this also drops the TLS layer: what the peer
            # still sends is read raw, and dropped undecrypted.)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        return True

    def _run_timers(self, now: float) -> None:
        # Deadlines are checked when their slot comes, not moved on every
        # read: a busy connection costs no timer work per message.
        for conn in self._timers.pop_due(now):
            if conn.closed:
                continue
            try:
                engine = conn.engine
                engine.timer(now)
                if engine.lost:
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

    def _lost(self, conn: _Socket, exc: OSError) -> None:
        if conn.tls and isinstance(exc, ssl.SSLEOFError):
            # OpenSSL names a write (or read) cut by the peer's reset "EOF
            # occurred in violation of protocol": the kernel knows it was a
            # reset, and the log says so, as for a plain socket.
            code = _ended_by_error(conn.sock)
            if code:
                exc = OSError(code, os.strerror(code))
        conn.engine.log_lost(exc.strerror or exc)
        _Serving._close(self, conn)

    def _close(self, conn: _Socket) -> None:
        if conn.closed:
            return
        conn.closed = True
        refused = False
        if self._conns.pop(conn.fd, None) is None and self._handshakes.pop(conn.fd, None) is None:
            refused = self._refusing.pop(conn.fd, None) is not None
        self._timers.cancel(conn)
        if self._poller is not None:
            self._poller.forget(conn.fd)
        engine = conn.engine
        if self.metrics is not None and not refused:
            self.metrics.closed(engine)
        if conn.tls and not engine.lost and not engine.handshaking:
            # A TLS goodbye (close_notify), so the peer knows nothing was
            # cut off; it is not waited for: one non-blocking try.
            with contextlib.suppress(OSError, ValueError):
                conn.sock.unwrap()  # type: ignore[attr-defined]
        conn.sock.close()
        engine.connection_lost()
        self._requests_closed += engine.requests
        self._errors_closed += engine.errors
        if log.isEnabledFor(logging.DEBUG) and not (engine.handshaking or engine.quiet):
            log.debug("connection from %s closed (%d open)", engine.peer, len(self._conns))
