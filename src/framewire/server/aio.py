"""The asyncio driver: the same connection engine, driven by an event loop.

Each connection is an :class:`asyncio.Protocol` around a
:class:`~framewire.server.engine.ServerConnection`: bytes from
``data_received`` go to the engine, what it queues goes to the transport,
its deadlines become ``loop.call_at`` timers, and its backpressure pauses
the transport's reading. So every limit, error code, deadline and
backpressure rule is the epoll server's, by construction. ``async def``
handlers run as tasks on the server's own loop; with ``threads`` > 0, sync
handlers run on a pool and post their answers back with
``call_soon_threadsafe``. It runs on uvloop when that is installed and
asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import signal
import socket
import ssl
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

from framewire.core import limits
from framewire.core.cache import BoundedCache
from framewire.core.decoder import HeaderCache
from framewire.core.message import Message
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
from framewire.io.poller import BusyPollSelector
from framewire.io.sendqueue import JOIN_BELOW
from framewire.io.tls import peer_certificate, tls_version
from framewire.server.app import Handler
from framewire.server.config import ServerConfig
from framewire.server.engine import (
    CLOSE,
    LINGER,
    PROXY_AND_TLS,
    READ,
    ContentBudget,
    ResponseCache,
    ServerConnection,
    Slot,
    accepted_peer,
    busy_error,
    close_at_limit,
)
from framewire.server.handlers import Dispatcher
from framewire.server.metrics import Metrics
from framewire.server.stopping import StopNow, Stopper, log_stop_now
from framewire.server.summary import Summary

__all__ = ["AioServer", "run", "start_server"]

log = logging.getLogger("framewire.server")

# Bytes the transport may hold before it asks us to stop writing: small, so
# that what waits is counted by the engine against the high-water mark.
_TRANSPORT_HIGH = 64 * 1024
# Seconds a closing TLS connection waits for the peer's close_notify.
_TLS_SHUTDOWN = 5.0


class _LoopReaders:
    """What the io Acceptor needs of a poller, on an event loop: a reader
    callback for the listener, added and removed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback

    def register(self, fd: int, events: int) -> None:
        self._loop.add_reader(fd, self._callback)

    def unregister(self, fd: int) -> None:
        self._loop.remove_reader(fd)


class _LoopDispatcher(Dispatcher):
    """The dispatcher of an event loop server: coroutines run on that loop,
    answers from the pool come back with ``call_soon_threadsafe``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Callable[..., None], **kwargs: Any) -> None:
        super().__init__(wake=lambda: None, **kwargs)
        self._server_loop = loop
        self._deliver = deliver

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        return self._server_loop

    def _post(self, conn: ServerConnection, slot: Slot, result: Message | BaseException) -> None:
        # RuntimeError: the loop is closed, the server has stopped, and the
        # answer has nowhere to go.
        with contextlib.suppress(RuntimeError):
            self._server_loop.call_soon_threadsafe(self._arrived, conn, slot, result)

    def _arrived(self, conn: ServerConnection, slot: Slot, result: Message | BaseException) -> None:
        self._finished(conn, slot)
        self._deliver(conn, slot, result)


class _Connection(asyncio.BufferedProtocol):
    """One connection: the transport beside its engine.

    A BufferedProtocol, measured faster than a Protocol: asyncio's Protocol
    path calls ``recv(256 KiB)``, and CPython allocates the whole size before
    every read; here every read lands in one 64 KiB buffer the server shares
    (the loop fills it and hands it over in one go, so no two connections
    hold it).
    """

    def __init__(self, server: AioServer, peer: str) -> None:
        self.server = server
        self.peer = peer
        self.engine: ServerConnection | None = None
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._reading = True
        self._writing = True
        self._tls = False
        self._direct = False  # the last get_buffer() gave a large content's own buffer

    # -- the transport's events ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        server._adopting -= 1  # set up: counted in _conns (or refused) from here on
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance.
        self.transport = transport = cast(asyncio.Transport, transport)
        refused = len(server._conns) >= server.config.max_connections
        if refused:
            log.warning("connection refused with server-busy: %d connections open", len(server._conns))
            if len(server._refusing) >= server.config.max_refusing:
                if server.metrics is not None:
                    server.metrics.error("server-busy")
                transport.write(server._busy_response)
                transport.close()  # past max_refusing: the answer, then the close at once
                return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=_TRANSPORT_HIGH)
        now = server._loop.time()
        engine = ServerConnection(
            server.config,
            now,
            self.peer,
            headers=server._headers,
            responses=server._responses,
            budget=server._budget,
        )
        tls = transport.get_extra_info("ssl_object")
        if tls is not None:  # the loop did the handshake before calling us
            engine.secured(now, tls_version(tls), peer_certificate(tls))
            self._tls = True
        engine.driver = self
        self.engine = engine
        if refused:
            # server-busy, then the lingering close of an error answer: the
            # client's request, sent as soon as it connected, is read and
            # dropped, where closing with it unread would reset the
            # connection and could cost the client the answer.
            engine.metrics = server.metrics  # counts the error; the connection is not counted open
            engine.refuse(server._busy_error)
            server._refusing.add(self)
            self.flush()
            return
        server._dispatcher.bind(engine)
        if server.metrics is not None:
            server.metrics.opened(engine)
        server._conns.add(self)
        server.connections_total += 1
        if tls is not None:
            engine.log_secured(len(server._conns))
        elif not engine.awaiting_proxy and log.isEnabledFor(logging.DEBUG):  # else: once the header names it
            log.debug("connection from %s opened (%d open)", engine.peer, len(server._conns))
        self._schedule(engine.deadline)
        if server._stopping:
            engine.drain(self.server._loop.time())

    def get_buffer(self, sizehint: int) -> memoryview:
        # The rest of a large content is read into its own buffer; anything
        # else into the server's one read buffer, and copied out.
        engine = self.engine
        view = engine.read_buffer() if engine is not None else None
        self._direct = view is not None
        if view is not None:
            return view
        buffer = self.server._buffer
        return buffer if engine is None or engine.read_size == len(buffer) else buffer[: engine.read_size]

    def buffer_updated(self, nbytes: int) -> None:
        if self._direct:
            self._direct = False
            self._received(nbytes, None)
        else:
            self._received(nbytes, self.server._buffer[:nbytes].tobytes())

    def data_received(self, data: bytes) -> None:
        self._received(len(data), data)

    def _received(self, count: int, data: bytes | None) -> None:
        # ``count`` bytes came, in ``data`` or (None) in the large content's buffer.
        engine = self.engine
        if engine is None:
            return
        if self.server.metrics is not None:
            self.server.metrics.bytes_received.inc(count)
        try:
            self.server._in_handler = self  # named by a forced stop, should the handler hang
            try:
                if data is None:
                    engine.received_into(count, self.server._loop.time())
                else:
                    engine.receive(data, self.server._loop.time())
            finally:
                self.server._in_handler = None
            started = engine.message_started
            if started is not None:
                self._schedule(started + self.server.config.message_timeout)
            self.flush()
        except Exception as exc:
            self.fault(exc)

    def eof_received(self) -> bool:
        if self.engine is not None:
            try:
                self.engine.receive(b"", self.server._loop.time())
                self.flush()
            except Exception as exc:
                self.fault(exc)
        # Keep the transport open: every answer still goes out. (Over TLS,
        # asyncio cannot: it answers the peer's close_notify by closing,
        # after what was written; answers not yet written are lost.)
        return self.engine is None or not self.engine.tls

    def fault(self, exc: Exception) -> None:
        """The last line of defence: a fault of framewire's own while serving
        this connection closes this connection, never the server."""
        peer = self.engine.peer if self.engine is not None else "-"
        log.error("internal error while serving %s: closing that connection", peer, exc_info=exc)
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        self._writing = False

    def resume_writing(self) -> None:
        self._writing = True
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        engine = self.engine
        # asyncio's TLS transport and this protocol refer to each other, and
        # the transport does not let go: dropped here, so that the closed
        # connection is freed at once, not by the cycle collector.
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
        if engine is None or self not in server._conns:
            server._refusing.discard(self)
            if engine is not None:
                engine.connection_lost()
            return
        server._conns.discard(self)
        if server.metrics is not None:
            server.metrics.closed(engine)
        if exc is not None:
            engine.log_lost(exc)
        engine.connection_lost()
        server._requests_closed += engine.requests
        server._errors_closed += engine.errors
        if log.isEnabledFor(logging.DEBUG) and not engine.quiet:
            log.debug("connection from %s closed (%d open)", engine.peer, len(server._conns))
        server._check_all_closed()

    # -- driving the engine ---------------------------------------------------------

    def flush(self) -> None:
        engine = self.engine
        transport = self.transport
        if engine is None or transport is None or transport.is_closing():
            return
        now = self.server._loop.time()
        out = engine.out
        if out.size and self._writing:
            size = out.size
            if self._tls and size <= JOIN_BELOW:
                # asyncio's TLS makes a record of each buffer written: joined,
                # small answers share records (6.7x the pipelined throughput, 64 B).
                transport.write(b"".join(out.parts))
            else:
                transport.writelines(out.parts)
            engine.sent(size, now)
            if self.server.metrics is not None:
                self.server.metrics.bytes_sent.inc(size)
        if self.server._stopping:
            engine.drain(self.server._loop.time())
        wanted = engine.interest()
        if wanted == CLOSE and engine.idle_drained:
            sock = transport.get_extra_info("socket")
            if sock is not None and readable_now(sock.fileno()):
                wanted = READ  # the peer's last requests are still unread: read them first
        if wanted == LINGER:
            # The lingering close after an error answer (ServerConnection.linger).
            # asyncio's TLS cannot half-close, and its closing handshake
            # aborts (a reset) on data after its close_notify: it lingers
            # reading without the FIN, and closes once the peer is quiet.
            half_closed = not self._tls and transport.can_write_eof()
            engine.linger(now, half_closed)
            if half_closed:
                transport.write_eof()  # after what was written, as close() is
            wanted = READ
        if wanted == CLOSE:
            transport.close()  # after what was written: the transport flushes it first
            return
        # Reading follows the engine's flow control alone: while the transport
        # asks us to stop writing, answers wait in the engine's queue, which
        # counts them against the high-water mark (as the epoll driver's does).
        reading = bool(wanted & READ)
        if reading != self._reading:
            self._reading = reading
            if reading:
                transport.resume_reading()
            else:
                transport.pause_reading()
        deadline = engine.deadline
        if deadline is not None and deadline < self._timer_at:
            self._schedule(deadline)

    def _schedule(self, when: float | None) -> None:
        # Only ever earlier: a later deadline is found when this one fires.
        if when is None or when >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.server._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = float("inf")
        engine = self.engine
        transport = self.transport
        if engine is None or transport is None:
            return
        try:
            engine.timer(self.server._loop.time())
            if engine.lost:
                transport.abort()  # idle: closed without an answer
                return
            self.flush()
            self._schedule(engine.deadline)
        except Exception as exc:
            self.fault(exc)


class AioServer:
    """A framewire server on an asyncio event loop (:func:`start_server`)."""

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig,
        loop: asyncio.AbstractEventLoop,
        ssl_context: ssl.SSLContext | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if ssl_context is not None and config.proxy_protocol:
            raise ValueError(PROXY_AND_TLS)
        self.config = config
        self.ssl_context = ssl_context
        self.handler = handler
        self._loop = loop
        self._conns: set[_Connection] = set()
        # Every read lands here first (see _Connection).
        self._buffer = memoryview(bytearray(limits.RECV_SIZE))
        self._headers = HeaderCache(limits.HEADER_CACHE_BYTES)
        self._budget = ContentBudget(config.large_content_memory)
        if config.large_content:
            keep_freed_memory(config.large_content_memory)  # (see framewire.io.memory)
        self._responses: ResponseCache = BoundedCache(limits.RESPONSE_CACHE_BYTES)
        self._dispatcher = _LoopDispatcher(
            loop, self._deliver, handler=handler, threads=config.threads, max_queued=config.max_queued
        )
        self._busy_error = busy_error(config.max_connections)
        self._busy_response = Message.for_error(self._busy_error).encode()
        # Connections refused with server-busy, lingering (see _Connection.connection_made).
        self._refusing: set[_Connection] = set()
        #: Prometheus metrics (:mod:`framewire.server.metrics`), when on.
        self.metrics = metrics
        self._dispatcher.metrics = metrics
        self._listener: socket.socket | None = None
        self._unix_file: tuple[str, int] | None = None
        self._shared = False  # the listener came from elsewhere and others may accept on it
        self._address: tuple[str, int] = ("", 0)
        self._host = ""
        self._acceptor: Acceptor | None = None
        self._adopting = 0  # connections taken from the backlog at the stop, not yet made
        self._stopping = False
        self._in_handler: _Connection | None = None  # whose inline handler call is under way
        self._all_closed = asyncio.Event()
        self._closed = asyncio.Event()
        self._requests_closed = 0
        self._errors_closed = 0
        self._summary: Summary | None = None
        self._summary_timer: asyncio.TimerHandle | None = None
        #: Connections accepted since the start.
        self.connections_total = 0

    def _deliver(self, engine: ServerConnection, slot: Slot, result: Message | BaseException) -> None:
        engine.fulfil(slot, result, self._loop.time())
        conn = engine.driver
        if isinstance(conn, _Connection) and not engine.lost:
            try:
                conn.flush()
            except Exception as exc:
                conn.fault(exc)

    # -- what users see ---------------------------------------------------------------

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        return (self._listener,) if self._listener is not None else ()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) listened on; ``("unix:PATH", 0)`` on a Unix socket."""
        if self._unix_file is not None or unix_path(self._host) is not None:
            return self._host, 0
        return self._address

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked)."""
        return self.address[1]

    @property
    def connections(self) -> int:
        """Connections open now (with those in their TLS handshake)."""
        return len(self._conns) + self._adopting

    @property
    def requests_total(self) -> int:
        """Requests received since the start."""
        return self._requests_closed + sum(c.engine.requests for c in self._conns if c.engine is not None)

    async def _listen(
        self,
        host: str,
        port: int,
        backlog: int,
        unix_mode: int | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        # framewire accepts for itself, through the io Acceptor that every
        # loop shares: the same back-off on descriptor exhaustion, and the
        # server knows of every connection from the moment it is accepted
        # (asyncio's own accept hands each to a task of its own, which a
        # stop would cancel, resetting connections whose requests came
        # before the signal).
        if sock is not None:
            host = listener_host(sock)
        self._host = host
        path = unix_path(host)
        listener, self._unix_file = open_listener(
            host, port, backlog, unix_mode=unix_mode, sock=sock, keepalive=self.config.keepalive
        )
        self._shared = sock is not None
        self._listener = listener
        if listener.family != socket.AF_UNIX:
            self._address = listener.getsockname()[:2]
        self._acceptor = Acceptor(listener, _LoopReaders(self._loop, self._accept), log)
        self._acceptor.listen()
        where = host if path is not None else show_address(self.address)
        log.info("listening on %s%s", where, " (TLS)" if self.ssl_context is not None else "")
        self._summary = Summary(self.config.log_summary, self._loop.time())
        self._summary_tick()

    def _summary_tick(self, last: bool = False) -> None:
        # Summed over the connections only when a line is due (every
        # log_summary seconds), so counting costs the hot path nothing.
        summary = self._summary
        if summary is None:
            return
        engines = [c.engine for c in self._conns if c.engine is not None]
        line = summary.line(
            self._loop.time(),
            connections=self.connections_total,
            open_now=len(engines),
            requests=self.requests_total,
            errors=self._errors_closed + sum(e.errors for e in engines),
            last=last,
        )
        if line is not None:
            log.info("%s", line)
        if last:
            self._summary = None
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        if not last and summary.next_at != math.inf:
            self._summary_timer = self._loop.call_at(summary.next_at, self._summary_tick)

    def _accept(self) -> None:
        acceptor = self._acceptor
        listener = self._listener
        if acceptor is None or listener is None:
            return
        accepted = acceptor.accept(self._loop.time())
        if accepted:
            acceptor.established()
        tls = self.ssl_context
        for fd, addr in accepted:
            sock = socket.socket(listener.family, socket.SOCK_STREAM, 0, fd)
            if tls is not None and self.connections >= self.config.max_connections:
                # Counted from its accept, its handshake included.
                close_at_limit(sock, self.metrics, self.connections)
                continue
            sock.setblocking(False)
            peer = accepted_peer(sock, addr, self._host, self.config)
            if peer is None:
                continue  # an untrusted balancer: closed, logged
            self._adopting += 1
            factory = functools.partial(_Connection, self, peer)
            if tls is None:
                setup = self._loop.connect_accepted_socket(factory, sock)
            else:
                # The loop runs the handshake; it must end within the
                # message deadline, as on the epoll driver.
                setup = self._loop.connect_accepted_socket(
                    factory,
                    sock,
                    ssl=tls,
                    ssl_handshake_timeout=self.config.message_timeout,
                    ssl_shutdown_timeout=_TLS_SHUTDOWN,
                )
            task = self._loop.create_task(setup)
            task.add_done_callback(functools.partial(self._adopted, peer))
        if acceptor.paused_until is not None:
            self._loop.call_at(acceptor.paused_until, acceptor.tick, acceptor.paused_until)

    def _take_backlog(self) -> None:
        # Connections the kernel completed before the stop are the clients'
        # as much as any: closing the listener would reset them, and with
        # them requests sent before the signal. Take them in, then stop.
        # A shared listener's queue (workers, systemd) is the other processes' to serve.
        if self._acceptor is not None and self._acceptor.paused_until is None and not self._shared:
            self._accept()

    def _adopted(self, peer: str, task: asyncio.Task[Any]) -> None:
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or exc is not None:
            self._adopting -= 1  # never set up (else connection_made counted it)
        if isinstance(exc, ssl.SSLError):
            log.info("connection from %s: TLS handshake failed: %s", peer, tls_problem(exc, server=True))
        elif isinstance(exc, TimeoutError | ConnectionAbortedError) and self.ssl_context is not None:
            log.info(
                "connection from %s: TLS handshake not done %g s after the connection opened: closing",
                peer,
                self.config.message_timeout,
            )
        elif isinstance(exc, OSError):
            log.info("connection from %s: %s", peer, describe(exc))
        elif exc is not None:
            log.info("connection from %s could not be set up: %s", peer, exc)
        self._check_all_closed()

    def _check_all_closed(self) -> None:
        if self._stopping and not self._conns and not self._adopting:
            self._all_closed.set()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (or the task is cancelled)."""
        await self._closed.wait()

    def _signalled(self, signum: int) -> None:
        log.info(
            "%s received: answering in-flight requests (up to %g s; again to stop now)",
            signal.Signals(signum).name,
            self.config.grace,
        )
        self.close()

    def close(self) -> None:
        """Stop accepting; answer what is in flight (within ``grace``), then close."""
        if self._stopping:
            return
        self._stopping = True
        self._take_backlog()
        if self._acceptor is not None:
            self._acceptor.stop()
        if self._listener is not None:
            # Closed now: a client connecting during the grace period is
            # refused at once (a balancer sends it elsewhere) rather than
            # left in a backlog the close would reset.
            self._listener.close()
        log.info(
            "no longer accepting; %d connections open, %d more taken from the backlog",
            len(self._conns),
            self._adopting,
        )
        for conn in list(self._conns):
            conn.flush()  # each closes once nothing is owed or half-received
        self._check_all_closed()
        self._loop.create_task(self._finish())

    async def _finish(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), self.config.grace)
        self.abort()

    def abort(self) -> None:
        """Close every connection now."""
        if self._conns:
            log.warning(
                "grace period of %g s over: closing %d connections", self.config.grace, len(self._conns)
            )
        for conn in [*self._conns, *self._refusing]:
            if conn.transport is not None:
                conn.transport.abort()
            conn.connection_lost(None)
        self._dispatcher.close()
        self._summary_tick(last=True)
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has finished."""
        await self._closed.wait()
        if self._listener is not None:
            self._listener.close()
            remove_unix(self._unix_file)
            self._unix_file = None

    async def __aenter__(self) -> AioServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 65432,
    *,
    config: ServerConfig | None = None,
    backlog: int = 4096,
    ssl: ssl.SSLContext | None = None,
    unix_mode: int | None = None,
    sock: socket.socket | None = None,
    metrics: Metrics | None = None,
    **settings: Any,
) -> AioServer:
    """Listen on ``host:port`` and serve ``handler`` on the running loop.

    ``handler``: an ``async def (Message) -> Message``, a plain function, or
    an :class:`~framewire.server.app.App`. Every setting of
    :class:`~framewire.server.config.ServerConfig` is a keyword. ``host``
    may be ``"unix:PATH"`` (with permission ``unix_mode``); ``ssl`` serves
    TLS (see :func:`framewire.io.tls.server_context`). ``sock``: serve a
    socket already listening instead of binding one.
    """
    config = ServerConfig.of(config, settings)
    server = AioServer(handler, config, asyncio.get_running_loop(), ssl, metrics)
    await server._listen(host, port, backlog, unix_mode, sock)
    return server


def _loop_factory(config: ServerConfig) -> Callable[[], asyncio.AbstractEventLoop] | None:
    # The loop polls a while before it sleeps, as the epoll loop does
    # (busy_poll): sleeping and waking is most of a round trip here
    # (docs/performance.md, "Busy polling").
    if not config.busy_poll:
        return None
    limit = config.busy_poll / 1e6
    return lambda: asyncio.SelectorEventLoop(BusyPollSelector(limit))


def run(
    handler: Handler,
    host: str,
    port: int,
    config: ServerConfig,
    *,
    ssl_context: ssl.SSLContext | None = None,
    unix_mode: int | None = None,
    sock: socket.socket | None = None,
    metrics: Metrics | None = None,
    use_uvloop: bool = False,
    on_ready: Callable[[AioServer], None] | None = None,
) -> None:
    """Serve in this (main) thread until SIGINT/SIGTERM, the command line's
    driver: the first signal drains within ``grace``; a second, or the end
    of the grace period, stops at once even if a handler is stuck."""
    holder: list[AioServer] = []

    def drain(signum: int) -> None:
        # In the signal handler: hand the work to the loop.
        if holder:
            server = holder[0]
            server._loop.call_soon_threadsafe(server._signalled, signum)

    def snapshot() -> tuple[list[str], int]:
        if not holder:
            return [], 0
        server = holder[0]
        busy = server._dispatcher.still_running(time.monotonic())
        if server._in_handler is not None and server._in_handler.engine is not None:
            busy.insert(0, server._in_handler.engine.peer)
        return busy, server.connections

    stopper = Stopper(config.grace, drain, snapshot)

    async def main() -> None:
        server = await start_server(
            handler,
            host,
            port,
            config=config,
            ssl=ssl_context,
            unix_mode=unix_mode,
            sock=sock,
            metrics=metrics,
        )
        holder.append(server)
        if on_ready is not None:
            on_ready(server)
        await server.wait_closed()

    stopper.install()
    stopper.serving = True
    try:
        if use_uvloop:
            import uvloop  # noqa: PLC0415  (optional)

            uvloop.run(main())  # (libuv's loop: no polling before it sleeps)
        else:
            with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
                runner.run(main())
    except StopNow:
        busy, connections = stopper.at_stop or snapshot()
        log_stop_now(log, busy, connections)
    finally:
        stopper.serving = False
        stopper.restore()
    log.info("server stopped")
