"""What every driver of one server shares: admission, counting, stopping.

(Compiled by mypyc with the engine: :meth:`ServerState.admit` runs once per
connection.)

A driver (:mod:`framewire.server.epoll_loop`, :mod:`framewire.server.aio`) is
only its loop: readiness, reads, writes, timers. Everything else a server
decides about its connections is decided here, once, whatever the driver:

- which accepted connection gets an engine, which is refused (``server-busy``
  then a lingering close; past ``max_refusing``, the answer and the close at
  once; over TLS, the close at once), and which is closed as an untrusted
  PROXY sender; a connection counts against ``max_connections`` from its
  accept, its TLS handshake included;
- the counters, the periodic summary line and the metrics, opened and closed
  on every path (refusals and failed handshakes included);
- the log lines and the decisions of a stop: draining within ``grace``, or
  at once when asked twice.
"""

from __future__ import annotations

import _socket
import logging
import math
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from framewire.core import limits
from framewire.core.cache import BoundedCache
from framewire.core.decoder import HeaderCache
from framewire.core.errors import ServerBusy
from framewire.core.message import Message
from framewire.io.acceptor import Acceptor
from framewire.io.memory import keep_freed_memory
from framewire.io.netio import (
    describe,
    listener_host,
    open_listener,
    remove_unix,
    show_address,
    tls_failure_label,
    tls_problem,
    unix_path,
    unix_peer,
    unix_peer_uid,
)
from framewire.server.access import AccessLog
from framewire.server.answers import ResponseCache
from framewire.server.config import ServerConfig
from framewire.server.engine import ContentBudget, Phase, ServerConnection
from framewire.server.handlers import Dispatcher
from framewire.server.hub import Hub
from framewire.server.metrics import Metrics
from framewire.server.summary import Summary

__all__ = ["PROXY_AND_TLS", "ServerState", "check_listen"]

log = logging.getLogger("framewire.server")

#: Why a server refuses the PROXY protocol and TLS together.
PROXY_AND_TLS: Final = (
    "the PROXY protocol with TLS is not supported: let the balancer end TLS (or pass TLS through "
    "without the PROXY protocol)"
)


def check_listen(
    ssl_context: ssl.SSLContext | None,
    config: ServerConfig,
    host: str = "",
    backlog: int = 1,
    unix_mode: int | None = None,
) -> None:
    """Raise ValueError for settings no listener can serve together."""
    if ssl_context is not None and config.proxy_protocol:
        raise ValueError(PROXY_AND_TLS)
    if backlog <= 0:
        raise ValueError(f"backlog must be > 0, not {backlog}")
    if unix_mode is not None and unix_path(host) is None:
        raise ValueError("unix_mode is for a unix:PATH host")


class ServerState:
    """One server's shared state, driven by its driver (see the module's text)."""

    def __init__(
        self,
        config: ServerConfig,
        dispatcher: Dispatcher,
        ssl_context: ssl.SSLContext | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        check_listen(ssl_context, config)
        self.config = config
        self.ssl_context = ssl_context
        #: Prometheus metrics (:mod:`framewire.server.metrics`), when on.
        self.metrics = metrics
        self.dispatcher = dispatcher
        dispatcher.metrics = metrics
        #: The application's hub (publish and subscribe), when it has one.
        self.hub = _served_hub(dispatcher.handler, config, metrics)
        #: The access log (a line per request), when on.
        self.access = AccessLog() if config.access_log else None
        # Shared by the connections' engines: parsed headers by their bytes,
        # encoded response headers by their fields, the memory for large
        # contents read in place.
        self.headers = HeaderCache(limits.HEADER_CACHE_BYTES)
        self.responses: ResponseCache = BoundedCache(limits.RESPONSE_CACHE_BYTES)
        self.budget = ContentBudget(config.large_content_memory)
        if config.large_content:
            keep_freed_memory(config.large_content_memory)  # (see framewire.io.memory)
        self.busy_error = ServerBusy(
            f"The server is at its limit of {config.max_connections} connections; try again later."
        )
        self.busy_response = Message.for_error(self.busy_error).encode()
        #: Connections counted against ``max_connections``: from the accept
        #: (TLS handshakes included) to the close.
        self.open = 0
        #: Connections refused with server-busy, lingering.
        self.refusing = 0
        #: Connections accepted since the start.
        self.connections_total = 0
        self._requests_closed = 0
        self._errors_closed = 0
        self.summary: Summary | None = None
        #: The connection whose inline handler call is under way (named by a
        #: forced stop, should the handler hang); set by the driver.
        self.in_handler: ServerConnection | None = None
        self._slow_quiet_until = -math.inf
        #: The listening socket (see :meth:`bind`), and what accepts on it.
        self.listener: socket.socket | None = None
        self.acceptor: Acceptor | None = None
        #: The (host, port) listened on; ``("unix:PATH", 0)`` on a Unix socket.
        self.address: tuple[str, int] | None = None
        #: The listener came from elsewhere (a supervisor, systemd), and others
        #: may accept on it: its backlog is theirs too.
        self.shared = False
        self._host = ""
        self._unix_file: tuple[str, int] | None = None
        self._by_address = True  # peers named by their address alone (no PROXY, not Unix)

    # -- listening and admission ---------------------------------------------------

    def bind(
        self, host: str, port: int, backlog: int, unix_mode: int | None, sock: socket.socket | None
    ) -> socket.socket:
        """Open the listening socket (``sock``: one already listening) and return it."""
        if sock is not None:
            host = listener_host(sock)  # a socket already listening: host and port are its own
        listener, self._unix_file = open_listener(
            host, port, backlog, unix_mode=unix_mode, sock=sock, keepalive=self.config.keepalive
        )
        self._host = host
        self.shared = sock is not None
        self.address = (host, 0) if unix_path(host) is not None else listener.getsockname()[:2]
        self._by_address = listener.family != socket.AF_UNIX and not self.config.proxy_protocol
        self.listener = listener
        return listener

    def unbind(self) -> None:
        """Close the listener and remove its socket file, if it is ours."""
        if self.listener is not None:
            self.listener.close()
        remove_unix(self._unix_file)
        self._unix_file = None

    def listening(self, readers: Any, now: float) -> Acceptor:
        """Accept on the listener, its readiness watched by ``readers`` (a
        poller, or what stands for one on an event loop); log it, start the
        summary. Returns the acceptor."""
        assert self.address is not None and self.listener is not None
        acceptor = self.acceptor = Acceptor(self.listener, readers, log)
        acceptor.listen()
        where = self._host if unix_path(self._host) is not None else show_address(self.address)
        log.info("listening on %s%s", where, " (TLS)" if self.ssl_context is not None else "")
        self.summary = Summary(self.config.log_summary, now)
        return acceptor

    def admit(
        self, sock: _socket.socket, addr: Any, now: float, debug: bool = False
    ) -> ServerConnection | None:
        """The engine of a just-accepted connection, or None when it was
        closed here (an untrusted PROXY sender; past the limit over TLS, or
        past ``max_refusing``). Past the limit, the engine refuses: answer
        and linger as it says, then :meth:`closed`. ``debug``: the log is at
        DEBUG (asked once per batch of accepts, not per connection)."""
        config = self.config
        refused = self.open >= config.max_connections
        if refused and (self.ssl_context is not None or self.refusing >= config.max_refusing):
            self._refuse_now(sock)
            return None
        sock.setblocking(False)
        peer = show_address(addr) if self._by_address else self._named(sock, addr)
        if peer is None:
            return None
        handshaking = self.ssl_context is not None and not refused
        engine = ServerConnection(config, now, peer, self.headers, self.responses, self.budget, handshaking)
        metrics = self.metrics
        if refused:
            self.refusing += 1
            if metrics is not None:
                metrics.refused()
                engine.watch(metrics)  # counts the error; the connection is not counted open
            engine.refuse(self.busy_error)
            log.warning("connection refused with server-busy: %d connections open", self.open)
            return engine
        self.dispatcher.bind(engine)
        if self.access is not None:
            engine.log_access(self.access)
        self.open += 1
        self.connections_total += 1
        if metrics is not None:
            metrics.opened(engine)
        if debug and engine.phase == Phase.OPEN:  # else: once secured or named
            log.debug("connection from %s opened (%d open)", peer, self.open)
        return engine

    def secured(self, engine: ServerConnection, now: float, version: str | None, certificate: object) -> None:
        """``engine``'s TLS handshake is done (``version``, the client's
        verified ``certificate`` or None); its DEBUG line says so."""
        engine.secured(now, version, certificate)
        if log.isEnabledFor(logging.DEBUG):
            peer = engine.peer_info()
            log.debug(
                "connection from %s opened, %s%s",
                engine.peer,
                peer.tls,
                f", client certificate {peer.common_name or peer.certificate}" if peer.certificate else "",
            )

    def _named(self, sock: _socket.socket, addr: Any) -> str | None:
        # How a connection is named in logs, or None when it came from a
        # sender the PROXY protocol does not trust: then it is closed and logged.
        config = self.config
        if sock.family == socket.AF_UNIX:
            peer = unix_peer(sock, self._host)
            if config.proxy_protocol and not config.trusts_user(uid := unix_peer_uid(sock)):
                # Any local user may connect to the socket: only the trusted ones
                # may name a client (else any process could claim any address).
                log.info("connection from %s (uid %s): not a trusted proxy: closing", peer, uid)
                sock.close()
                return None
            return peer
        peer = show_address(addr)
        if config.proxy_protocol and not config.trusts(addr[0]):
            log.info("connection from %s: not a trusted proxy (see trusted_proxies): closing", peer)
            sock.close()
            return None
        return peer

    def _refuse_now(self, sock: _socket.socket) -> None:
        # Past the limit over TLS, the close at once: the peer could read a
        # server-busy only after a handshake, the very cost the limit is there
        # to bound. Past max_refusing, the answer and the close at once.
        tls = self.ssl_context is not None
        try:
            if not tls:
                sock.setblocking(False)
                sock.send(self.busy_response)
                if self.metrics is not None:
                    self.metrics.error("server-busy")
        except OSError:
            pass
        finally:
            sock.close()
        if self.metrics is not None:
            self.metrics.refused()
        if tls:
            log.warning("TLS connection closed at once: %d connections open (the limit)", self.open)
        else:
            log.warning("connection refused with server-busy: %d connections open", self.open)

    def held(self, engine: ServerConnection, started: float, now: float) -> None:
        """The requests of one read of ``engine`` were answered inline from
        ``started`` to ``now``: warn when that held the loop (and so every
        connection) past ``limits.SLOW_HANDLER``, at most once in
        ``limits.SLOW_HANDLER_QUIET`` seconds."""
        slow = now - started >= limits.SLOW_HANDLER and now >= self._slow_quiet_until
        actions = engine.recent_actions(slow)  # (and lets that read's requests go)
        if not slow:
            return
        self._slow_quiet_until = now + limits.SLOW_HANDLER_QUIET
        log.warning(
            "a handler held the server's loop for %.2f s (%s, from %s): every connection waited; "
            "run slow handlers on threads (--threads N) or write them as async def",
            now - started,
            ", ".join(actions) or "no request",
            engine.peer,
        )

    def closed(self, engine: ServerConnection, reason: object = None) -> None:
        """The driver closed ``engine``'s connection (``reason``: why, when
        the socket was lost rather than closed as the engine asked)."""
        debug = log.isEnabledFor(logging.DEBUG)
        handshaking = debug and engine.handshaking  # (never named as opened)
        if reason is not None:
            _log_lost(engine, reason)
        engine.connection_lost()
        if engine.refused:
            self.refusing -= 1
        else:
            self.open -= 1
            if self.metrics is not None:
                self.metrics.closed(engine)
        self._requests_closed += engine.requests
        self._errors_closed += engine.errors
        if debug and not (handshaking or engine.quiet):
            log.debug("connection from %s closed (%d open)", engine.peer, self.open)

    def handshake_failed(self, engine: ServerConnection, exc: BaseException | None) -> None:
        """``engine``'s TLS handshake failed with ``exc`` (None: for no
        reason given): log why, in words, count it by reason, and count it closed."""
        peer = engine.peer
        if self.metrics is not None:
            self.metrics.handshake_failures.labels(tls_failure_label(exc)).inc()
        if isinstance(exc, ssl.SSLError):
            log.info("connection from %s: TLS handshake failed: %s", peer, tls_problem(exc, server=True))
        elif isinstance(exc, TimeoutError | ConnectionAbortedError):
            log.info(
                "connection from %s: TLS handshake not done %g s after the connection opened: closing",
                peer,
                self.config.message_timeout,
            )
        elif isinstance(exc, OSError):
            log.info("connection from %s: TLS handshake failed: %s", peer, describe(exc))
        elif exc is not None:
            log.info("connection from %s could not be set up: %s", peer, exc)
        self.closed(engine)

    # -- counting ----------------------------------------------------------------------

    def requests_total(self, engines: Iterable[ServerConnection]) -> int:
        """Requests received since the start (``engines``: those open now)."""
        return self._requests_closed + sum(engine.requests for engine in engines)

    def summary_line(self, now: float, engines: Iterable[ServerConnection], last: bool = False) -> None:
        """Log the summary line if one is due (``engines``: those open now).
        Summed over the connections only then (every ``log_summary``
        seconds), so counting costs the hot path nothing."""
        summary = self.summary
        if summary is None or (now < summary.next_at and not last):
            return
        engines = list(engines)
        line = summary.line(
            now,
            connections=self.connections_total,
            open_now=self.open,
            requests=self.requests_total(engines),
            errors=self._errors_closed + sum(engine.errors for engine in engines),
            last=last,
        )
        if line is not None:
            log.info("%s", line)
        if last:
            self.summary = None

    # -- stopping ----------------------------------------------------------------------

    def stop_signalled(self, signum: int) -> None:
        """Log the first stop signal (never from the signal handler itself:
        logging there can re-enter a stream write the handler interrupted)."""
        log.info(
            "%s received: answering in-flight requests (up to %g s; again to stop now)",
            signal.Signals(signum).name,
            self.config.grace,
        )

    def stop_accepting(self, take: Callable[[], None]) -> None:
        """Stop accepting; ``take`` in first what the kernel has completed.
        Subscriptions end (their streams with them): they would hold the
        stop for its whole grace."""
        if self.hub is not None:
            self.hub.close()
        acceptor = self.acceptor
        if acceptor is None:
            return
        # Connections the kernel completed before the stop are the clients'
        # as much as any: closing the listener would reset them, and with
        # them requests sent before the signal. A shared listener's queue
        # (workers, systemd) is the other processes' to serve.
        if not self.shared and acceptor.paused_until is None:
            take()
        acceptor.stop()
        # Closed now, not at the end: a client (or a balancer) connecting
        # during the grace period is refused at once and goes elsewhere,
        # instead of waiting in a backlog that the close would reset.
        acceptor.listener.close()
        log.info("no longer accepting; %d connections open", self.open)

    def stop_over(self, now: float, since: float, forced: bool) -> bool:
        """Whether the stop that began at ``since`` is over at ``now``: every
        connection closed, the grace period over, or ``forced`` (asked
        twice); the last two are logged with what they cut off."""
        if not self.open:
            return True  # (refusals still lingering are closed with the loop)
        if forced:
            log.warning("stopping now, as asked again: closing %d connections", self.open)
            return True
        if now < since + self.config.grace:
            return False
        busy = self.dispatcher.still_running(now)
        log.warning(
            "grace period of %g s over: closing %d connections%s",
            self.config.grace,
            self.open,
            f" (handlers still running for {', '.join(busy)})" if busy else "",
        )
        return True

    def close(self, now: float) -> None:
        """The server has stopped: the handlers' pool and loop end, the
        listener closes, the last summary line is logged."""
        self.dispatcher.close()
        self.unbind()
        self.summary_line(now, (), last=True)

    def snapshot(self) -> tuple[list[str], int]:
        """Who is at work and how many are open: what a forced stop logs."""
        busy = self.dispatcher.still_running(time.monotonic())
        if self.in_handler is not None:
            busy.insert(0, self.in_handler.peer)
        return busy, self.open


def _log_lost(engine: ServerConnection, reason: object) -> None:
    # The line of a connection lost (a reset, say): INFO when the loss cost
    # something (answers owed, a message half received); DEBUG when it lost
    # no more than a close: clients that end with a reset (SO_LINGER 0) would
    # otherwise log a line per connection, costlier than its work
    # (docs/performance.md).
    owed = engine.owed
    partial = engine.half_received
    if engine.quiet or engine.closed or not (owed or partial):
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection from %s lost: %s", engine.peer, reason)
        return
    cost = []
    if owed:
        cost.append(f"{owed} answer{'s' if owed > 1 else ''} not sent")
    if partial:
        cost.append("a message half received")
    log.info("connection from %s lost: %s (%s)", engine.peer, reason, ", ".join(cost))


def _served_hub(handler: object, config: Any, metrics: Any = None) -> Hub | None:
    """The hub of ``handler`` (an App's ``hub``), set as the server's
    ``config`` says (its queue, its slow-subscriber policy; on Redis with
    ``hub``) and counted in ``metrics``. ``ValueError`` for ``hub`` given
    to a handler that has none."""
    hub = getattr(handler, "hub", None)
    if not isinstance(hub, Hub):
        if config.hub is not None:
            raise ValueError("--hub is for an App's hub: this application has none")
        return None
    if config.hub is not None and getattr(hub, "url", None) != config.hub:
        from framewire.server.redis_hub import RedisHub  # noqa: PLC0415

        hub = RedisHub(config.hub)
        handler.hub = hub  # type: ignore[attr-defined]
    hub.configure(
        queue=config.subscriber_queue, queue_bytes=config.subscriber_queue_bytes, slow=config.slow_subscriber
    )
    hub.metrics = metrics
    if metrics is not None:
        metrics.subscribed(hub.subscribers)
    return hub
