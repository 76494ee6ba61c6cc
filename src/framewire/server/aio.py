"""The asyncio driver: the same connection engine, driven by an event loop.

Each connection is an :class:`asyncio.BufferedProtocol` around a
:class:`~framewire.server.engine.ServerConnection`: bytes from the transport
go to the engine, what it queues goes to the transport, its deadlines
become ``loop.call_at`` timers, and its backpressure pauses the transport's
reading. Admission, counting and stopping are the server's
:class:`~framewire.server.state.ServerState`, as on the epoll driver; so
every limit, error code, deadline and backpressure rule is the epoll
server's, by construction. ``async def`` handlers run as tasks on the
server's own loop; with ``threads`` > 0, sync handlers run on a pool and
post their answers back with ``call_soon_threadsafe``. It runs on uvloop
when that is installed and asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import socket
import ssl
from types import TracebackType
from typing import Any, cast

from framewire.core import limits
from framewire.core.message import Message
from framewire.io.acceptor import LoopReaders
from framewire.io.netio import readable_now
from framewire.io.sendqueue import JOIN_BELOW
from framewire.io.tls import peer_certificate, tls_version
from framewire.server.app import Handler
from framewire.server.config import ServerConfig
from framewire.server.engine import CLOSE, LINGER, READ, ServerConnection, Slot
from framewire.server.handlers import LoopDispatcher
from framewire.server.metrics import Metrics
from framewire.server.state import ServerState
from framewire.server.view import ServerView

__all__ = ["AioServer", "start_server"]

log = logging.getLogger("framewire.server")

# Bytes the transport may hold before it asks us to stop writing: small, so
# that what waits is counted by the engine against the high-water mark.
_TRANSPORT_HIGH = 64 * 1024
# Seconds a closing TLS connection waits for the peer's close_notify.
_TLS_SHUTDOWN = 5.0


class _Connection(asyncio.BufferedProtocol):
    """One connection: the transport beside its engine.

    A BufferedProtocol, measured faster than a Protocol: asyncio's Protocol
    path calls ``recv(256 KiB)``, and CPython allocates the whole size before
    every read; here every read lands in one 64 KiB buffer the server shares
    (the loop fills it and hands it over in one go, so no two connections
    hold it).
    """

    def __init__(self, server: AioServer, engine: ServerConnection) -> None:
        self.server = server
        self.engine = engine
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
        engine = self.engine
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance.
        self.transport = transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=_TRANSPORT_HIGH)
        now = server._loop.time()
        tls = transport.get_extra_info("ssl_object")
        if tls is not None:  # the loop did the handshake before calling us
            server._state.secured(engine, now, tls_version(tls), peer_certificate(tls))
            self._tls = True
        engine.driver = self
        server._conns.add(self)
        self._schedule(engine.deadline)
        self.flush()  # (a refusal's server-busy, or a stop that came during the set-up)

    def get_buffer(self, sizehint: int) -> memoryview:
        # The rest of a large content is read into its own buffer; anything
        # else into the server's one read buffer, and copied out.
        engine = self.engine
        view = engine.read_buffer()
        self._direct = view is not None
        if view is not None:
            return view
        buffer = self.server._buffer
        return buffer if engine.read_size == len(buffer) else buffer[: engine.read_size]

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
        state = self.server._state
        if state.metrics is not None:
            state.metrics.bytes_received.inc(count)
        try:
            state.in_handler = engine  # named by a forced stop, should the handler hang
            loop = self.server._loop
            started = loop.time()
            try:
                if data is None:
                    engine.received_into(count, started)
                else:
                    engine.receive(data, started)
            finally:
                state.in_handler = None
            state.held(engine, started, loop.time())
            self.flush()
        except Exception as exc:
            self.fault(exc)

    def eof_received(self) -> bool:
        try:
            self.engine.receive(b"", self.server._loop.time())
            self.flush()
        except Exception as exc:
            self.fault(exc)
        # Keep the transport open: every answer still goes out. (Over TLS,
        # asyncio cannot: it answers the peer's close_notify by closing,
        # after what was written; answers not yet written are lost.)
        return not self._tls

    def fault(self, exc: Exception) -> None:
        """The last line of defence: a fault of framewire's own while serving
        this connection closes this connection, never the server."""
        log.error("internal error while serving %s: closing that connection", self.engine.peer, exc_info=exc)
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        self._writing = False

    def resume_writing(self) -> None:
        self._writing = True
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        # asyncio's TLS transport and this protocol refer to each other, and
        # the transport does not let go: dropped here, so that the closed
        # connection is freed at once, not by the cycle collector.
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
        if self not in server._conns:
            return  # (closed already: by abort())
        server._conns.discard(self)
        server._state.closed(self.engine, exc)
        server._check_all_closed()

    # -- driving the engine ---------------------------------------------------------

    def flush(self) -> None:
        engine = self.engine
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        now = self.server._loop.time()
        size = engine.unsent if self._writing else 0
        if size:
            if self._tls and size <= JOIN_BELOW:
                # asyncio's TLS makes a record of each buffer written: joined,
                # small answers share records (6.7x the pipelined throughput, 64 B).
                transport.write(b"".join(engine.outgoing))
            else:
                transport.writelines(engine.outgoing)
            if self.server.metrics is not None:
                self.server.metrics.bytes_sent.inc(size)
        wanted = engine.flushed(size, now, self.server._stopping)
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
        self._schedule(engine.deadline)

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
        if transport is None:
            return
        try:
            engine.timer(self.server._loop.time())
            if engine.closed:
                transport.abort()  # idle: closed without an answer
                return
            self.flush()
            self._schedule(engine.deadline)
        except Exception as exc:
            self.fault(exc)


class AioServer(ServerView):
    """A framewire server on an asyncio event loop (:func:`start_server`)."""

    def __init__(
        self,
        handler: Handler,
        config: ServerConfig,
        loop: asyncio.AbstractEventLoop,
        ssl_context: ssl.SSLContext | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.ssl_context = ssl_context
        self.handler = handler
        #: Prometheus metrics (:mod:`framewire.server.metrics`), when on.
        self.metrics = metrics
        self._loop = loop
        self._conns: set[_Connection] = set()
        # Every read lands here first (see _Connection).
        self._buffer = memoryview(bytearray(limits.RECV_SIZE))
        self._dispatcher = LoopDispatcher(
            loop, self._deliver, handler=handler, threads=config.threads, max_queued=config.max_queued
        )
        self._state = ServerState(config, self._dispatcher, ssl_context, metrics)
        self._stopping = False
        self._all_closed = asyncio.Event()
        self._closed = asyncio.Event()
        self._summary_timer: asyncio.TimerHandle | None = None

    def _deliver(self, engine: ServerConnection, slot: Slot, result: Message | BaseException) -> None:
        engine.fulfil(slot, result, self._loop.time())
        conn = engine.driver
        if isinstance(conn, _Connection) and not engine.closed:
            try:
                conn.flush()
            except Exception as exc:
                conn.fault(exc)

    # -- what users see ---------------------------------------------------------------

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets."""
        listener = self._state.listener
        return (listener,) if listener is not None else ()

    def _engines(self) -> list[ServerConnection]:
        return [conn.engine for conn in self._conns]

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
        self._state.bind(host, port, backlog, unix_mode, sock)
        self._state.listening(LoopReaders(self._loop, self._accept), self._loop.time())
        self._summary_tick()

    def _summary_tick(self) -> None:
        state = self._state
        if state.summary is None:
            return
        state.summary_line(self._loop.time(), [c.engine for c in self._conns])
        if state.summary.next_at != math.inf:
            self._summary_timer = self._loop.call_at(state.summary.next_at, self._summary_tick)

    def _accept(self) -> None:
        state = self._state
        acceptor = state.acceptor
        listener = state.listener
        if acceptor is None or listener is None:
            return
        now = self._loop.time()
        accepted = acceptor.accept(now)
        if accepted:
            acceptor.established()
        debug = log.isEnabledFor(logging.DEBUG)
        tls = self.ssl_context
        for fd, addr in accepted:
            sock = socket.socket(listener.family, socket.SOCK_STREAM, 0, fd)
            engine = state.admit(sock, addr, now, debug)
            if engine is None:
                continue  # refused at once, or an untrusted balancer: closed, logged
            factory = functools.partial(_Connection, self, engine)
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
            task.add_done_callback(functools.partial(self._adopted, engine))
        if acceptor.paused_until is not None:
            self._loop.call_at(acceptor.paused_until, acceptor.tick, acceptor.paused_until)

    def _adopted(self, engine: ServerConnection, task: asyncio.Task[Any]) -> None:
        if engine.driver is None and not engine.closed:  # never made: the handshake failed
            self._state.handshake_failed(engine, None if task.cancelled() else task.exception())
            self._check_all_closed()

    def _check_all_closed(self) -> None:
        if self._stopping and not self._state.open:
            self._all_closed.set()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` (or the task is cancelled)."""
        await self._closed.wait()

    def _signalled(self, signum: int) -> None:
        self._state.stop_signalled(signum)
        self.close()

    def close(self) -> None:
        """Stop accepting; answer what is in flight (within ``grace``), then close."""
        if self._stopping:
            return
        self._stopping = True
        self._state.stop_accepting(self._accept)
        for conn in list(self._conns):
            conn.flush()  # each closes once nothing is owed or half-received
        self._check_all_closed()
        self._loop.create_task(self._finish())

    async def _finish(self) -> None:
        since = self._loop.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), self.config.grace)
        self._state.stop_over(since + self.config.grace, since, forced=False)  # (logs what it cuts off)
        self.abort()

    def abort(self) -> None:
        """Close every connection now."""
        for conn in list(self._conns):
            if conn.transport is not None:
                conn.transport.abort()
            conn.connection_lost(None)
        if self._summary_timer is not None:
            self._summary_timer.cancel()
        self._state.close(self._loop.time())
        self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` has finished."""
        await self._closed.wait()

    async def __aenter__(self) -> AioServer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        await self.wait_closed()


async def start_server(
    handler: Handler, host: str = "127.0.0.1", port: int = 65432, *, config: ServerConfig | None = None,
    backlog: int = 4096, ssl_context: ssl.SSLContext | None = None, unix_mode: int | None = None,
    sock: socket.socket | None = None, metrics: Metrics | None = None, **settings: Any,
) -> AioServer:  # fmt: skip
    """Listen on ``host:port`` and serve ``handler`` on the running loop.

    ``handler``: an ``async def (Message) -> Message``, a plain function, or
    an :class:`~framewire.server.app.App`. Every setting of
    :class:`~framewire.server.config.ServerConfig` is a keyword. ``host``
    may be ``"unix:PATH"`` (with permission ``unix_mode``); ``ssl_context`` serves
    TLS (see :func:`framewire.io.tls.server_context`). ``sock``: serve a
    socket already listening instead of binding one.
    """
    config = ServerConfig.of(config, settings)
    server = AioServer(handler, config, asyncio.get_running_loop(), ssl_context, metrics)
    await server._listen(host, port, backlog, unix_mode, sock)
    return server
