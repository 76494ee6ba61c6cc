"""The connection engine: one server connection's whole policy, with no I/O.

The h11 idea one level up. A :class:`ServerConnection` is driven by calls,
each given the time (``now``) by its driver, and answers with state the
driver acts on; it never touches a socket, a clock or a thread:

- :meth:`~ServerConnection.receive` bytes from the peer (``b""`` at end of
  stream): requests are decoded and answered through the ``call`` the
  driver passes, in order; protocol errors are answered and close;
- :meth:`~ServerConnection.fulfil` an answer that came later (a thread-pool
  or async handler): answers still go out in request order;
- :meth:`~ServerConnection.sent` reports bytes the socket took;
- :meth:`~ServerConnection.timer` when :attr:`~ServerConnection.deadline`
  has come: the message deadline and the idle timeout;
- :meth:`~ServerConnection.drain` when the server is stopping;
- :meth:`~ServerConnection.secured` when a TLS handshake (which the driver
  runs, from the moment of the accept, under the message deadline) is done.

The driver sends what :attr:`~ServerConnection.out` holds, reads while
:meth:`~ServerConnection.reading` says so, and closes when
:attr:`~ServerConnection.finished` is true; after an error answer,
:meth:`~ServerConnection.interest` may ask it to half-close first
(:data:`LINGER`, then :meth:`~ServerConnection.linger`). Every rule (ordering,
backpressure with hysteresis, the in-flight limit, deadlines, draining,
which error code for what) lives here and is tested with a fake clock.
"""

from __future__ import annotations

import _socket
import collections
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from framewire.core import limits
from framewire.core.cache import BoundedCache
from framewire.core.decoder import Decoder, HeaderCache
from framewire.core.errors import (
    DeadlineExceeded,
    HandlerError,
    IncompleteMessage,
    MessageTimeout,
    ProtocolError,
    ServerBusy,
)
from framewire.core.message import Message, _Decoded, _Header
from framewire.core.probe import DEADLINE_KEY, PING_KEY, deadline_ms, probe_reply, request_id, with_id
from framewire.core.proxyheader import ProxyHeaderError
from framewire.core.proxyheader import parse as parse_proxy_header
from framewire.io.netio import show_address, unix_peer, unix_peer_uid
from framewire.io.sendqueue import SendQueue
from framewire.server.config import ServerConfig
from framewire.server.peer import Peer
from framewire.server.stopping import StopNow

if TYPE_CHECKING:
    from framewire.server.metrics import Metrics

__all__ = [
    "LATER",
    "LINGER",
    "PROXY_AND_TLS",
    "Adopt",
    "Call",
    "FlowControl",
    "ResponseCache",
    "ServerConnection",
    "Slot",
    "accepted_peer",
]

log = logging.getLogger("framewire.server")

#: Encoded response headers (without extensions) by their fields; a server
#: shares one among its connections.
ResponseCache = BoundedCache[tuple[str, str, str, int], bytes]


#: Seconds a stopping server keeps reading an idle connection, for a
#: request that may be on its way (its client may have just connected, or
#: sent on a kept-open connection just before the stop reached it).
FIRST_REQUEST_WAIT: Final = 1.0

#: :meth:`ServerConnection.interest` bits: read from the peer, write to it,
#: or close the connection.
READ: Final = 1
WRITE: Final = 4
CLOSE: Final = -1
#: :meth:`ServerConnection.interest`: the error answer is sent; half-close
#: (``shutdown(SHUT_WR)``), call :meth:`ServerConnection.linger`, and read
#: (the bytes are dropped) until the engine says :data:`CLOSE`.
LINGER: Final = -2

# Lingering close (see ServerConnection.linger): not wanted, wanted once the
# error answer is sent, under way.
_NO_LINGER: Final = 0
_LINGER_WANTED: Final = 1
_LINGERING: Final = 2

# The read limits used on every read, bound once here: compiled, a Final
# module name is a C constant, where ``limits.RECV_SIZE`` is a look-up in the
# limits module's dictionary on each read (a measurable share of the 1000
# connections row: benchmarks/results/performance-notebook.md).
_RECV_SIZE: Final = limits.RECV_SIZE
_READ_AFTER_LARGE: Final = limits.READ_AFTER_LARGE
_READ_ON: Final = limits.READ_ON
_READ_TURN: Final = limits.READ_TURN


class Slot:
    """An answer owed to the peer, in request order; filled when it is ready."""

    __slots__ = ("cancel", "content", "head", "ident", "ready")

    def __init__(self) -> None:
        self.head = b""
        self.content: bytes | bytearray = b""
        self.ready = False
        #: The request's framewire-id, copied onto the answer.
        self.ident: str | int | None = None
        #: Stops the work for this answer (an async handler's task, a
        #: thread-pool handler's flag) when the peer is lost; set by whoever
        #: does the work.
        self.cancel: Callable[[], object] | None = None


class _Later:
    """The type of :data:`LATER`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LATER"


#: What a ``Call`` returns when it has reserved a slot
#: (:meth:`ServerConnection.reserve`) to fill later.
LATER: Final = _Later()

#: How a connection's requests are answered (:attr:`ServerConnection.call`):
#: the response now (whatever the handler returned: a non-Message is
#: answered with handler-error), or :data:`LATER`. It may raise, as a
#: handler does.
Call = Callable[[Message], object]
#: What a connection does with a result that is not a Message
#: (:attr:`ServerConnection.adopt`): an awaitable is run elsewhere and
#: becomes :data:`LATER`; anything else is returned as it is.
Adopt = Callable[["ServerConnection", Message, object], object]


class ContentBudget:
    """The memory a server sets aside for large contents read in place,
    shared by its connections (see :meth:`ServerConnection.read_buffer`).

    A buffer the size of the content is made as soon as the rest of a large
    content is read, before its bytes come; without a bound shared by all
    connections, peers announcing large contents and sending nothing more
    could make the server set aside ``max_content_length`` bytes each.
    """

    __slots__ = ("available",)

    def __init__(self, size: int) -> None:
        #: Bytes not set aside now.
        self.available = size


class FlowControl:
    """Backpressure with hysteresis: stop reading a connection when its
    queued answers pass the high-water mark in bytes (or too many answers
    are owed), and read again only once they are below the low-water mark,
    so a connection does not flap between the two at every send."""

    __slots__ = ("high", "low", "max_owed", "paused", "watch")

    def __init__(self, high: int, low: int, max_owed: int) -> None:
        self.high = high
        self.low = low
        self.max_owed = max_owed
        self.paused = False
        #: Called with +1 / -1 when reading pauses / resumes (metrics), if set.
        self.watch: Callable[[int], None] | None = None

    def update(self, queued: int, owed: int) -> bool:
        """Whether reading is paused, given the bytes queued and answers owed."""
        was = self.paused
        limit = self.low if was else self.high
        paused = self.paused = queued > limit or owed >= self.max_owed
        if paused is not was and self.watch is not None:
            self.watch(1 if paused else -1)
        return paused


#: Why a server refuses the PROXY protocol and TLS together.
PROXY_AND_TLS: Final = (
    "the PROXY protocol with TLS is not supported: let the balancer end TLS (or pass TLS through "
    "without the PROXY protocol)"
)


def accepted_peer(sock: _socket.socket, addr: Any, host: str, config: ServerConfig) -> str | None:
    """How a just-accepted connection is named in logs (``host`` is the
    server's own address, for Unix sockets), or None when it came from a
    sender the PROXY protocol does not trust: then it is closed and logged."""
    if sock.family == socket.AF_UNIX:
        peer = unix_peer(sock, host)
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


def close_at_limit(sock: _socket.socket, metrics: Metrics | None, open_now: int) -> None:
    """Past the connection limit, a TLS peer is closed at once: it could read
    a ``server-busy`` only after a handshake, which is the very cost the
    limit is there to bound (a plain peer is answered ``server-busy``)."""
    sock.close()
    if metrics is not None:
        metrics.refused()
    log.warning("TLS connection closed at once: %d connections open (the limit)", open_now)


def busy_error(max_connections: int) -> ServerBusy:
    """What a connection beyond the limit is answered before it is closed
    (see :meth:`ServerConnection.refuse`)."""
    return ServerBusy(f"The server is at its limit of {max_connections} connections; try again later.")


def _expired(extensions: object) -> bool:
    ms = deadline_ms(extensions)
    return ms is not None and ms <= 0


def _no_handler(request: Message) -> object:
    raise RuntimeError("this connection has no handler (ServerConnection.call)")


class ServerConnection:
    """The sans-I/O state of one server connection (see the module's text)."""

    __slots__ = (
        "_budget",
        "_config",
        "_drain_at",
        "_held",
        "_linger",
        "_linger_end",
        "_linger_left",
        "_linger_quiet",
        "_peer",
        "_proxy_bytes",
        "_responses",
        "_waiting",
        "adopt",
        "awaiting_proxy",
        "call",
        "closing",
        "decoder",
        "draining",
        "driver",
        "errors",
        "flow",
        "handshaking",
        "last_active",
        "lost",
        "message_started",
        "metrics",
        "out",
        "peer",
        "quiet",
        "read_size",
        "requests",
        "tls",
    )

    def __init__(
        self,
        config: ServerConfig,
        now: float,
        peer: str = "-",
        *,
        call: Call | None = None,
        adopt: Adopt | None = None,
        headers: HeaderCache | None = None,
        responses: ResponseCache | None = None,
        budget: ContentBudget | None = None,
        handshaking: bool = False,
    ) -> None:
        self._config = config
        # Shared by a server's connections; alone, an engine has one of its own.
        self._budget = budget if budget is not None else ContentBudget(config.large_content_memory)
        self._held = 0  # bytes of the budget this connection's decoder holds
        #: Answers a request (the handler itself when it runs inline).
        self.call: Call = call if call is not None else _no_handler
        #: Takes a result that is not a Message (e.g. runs an awaitable).
        self.adopt = adopt
        self.peer = peer
        self.decoder = Decoder(
            max_header_size=config.max_header_size,
            max_content_length=config.max_content_length,
            cache=headers,
        )
        self._responses: ResponseCache = responses if responses is not None else BoundedCache(64 * 1024)
        #: Bytes the driver asks for when it reads as usual (when
        #: :meth:`read_buffer` gives no buffer): small after a large content.
        self.read_size = _RECV_SIZE
        #: Answers ready to send.
        self.out = SendQueue()
        # Answers owed but not yet in ``out``: the first is not ready, and
        # answers after it wait for it, whatever finished first.
        self._waiting: collections.deque[Slot] = collections.deque()
        self.flow = FlowControl(config.high_water, config.low_water, config.max_in_flight)
        #: Answer what is owed, then close (an error, or the peer half-closed).
        self.closing = False
        #: The server is stopping: close once nothing is owed or half-received.
        self.draining = False
        #: The connection is gone (the driver saw it reset): drop late answers.
        self.lost = False
        self.last_active = now
        #: When the message being received began (None between messages).
        self.message_started: float | None = None
        #: Requests received so far.
        self.requests = 0
        #: Error responses this connection was sent (the log summary's figure).
        self.errors = 0
        #: The driver's own object for this connection (its socket record).
        self.driver: object = None
        #: The server's Metrics, when they are on (None: nothing is measured).
        self.metrics: Metrics | None = None
        #: A TLS handshake is under way; it must end within the message
        #: deadline, counted from the accept.
        self.handshaking = handshaking
        if handshaking:
            self.message_started = now
        #: What the TLS handshake agreed and verified (see :meth:`secured`).
        self.tls: tuple[str | None, object] | None = None
        self._peer: Peer | None = None
        #: The connection must begin with a PROXY protocol header (from a
        #: trusted balancer), which names the real peer; it too must come
        #: within the message deadline.
        self._drain_at: float | None = None  # see drain()
        #: Not worth a log line when it closes (a balancer's health check).
        self.quiet = False
        self.awaiting_proxy = config.proxy_protocol
        self._proxy_bytes = b""
        # The lingering close after an error answer (see linger()).
        self._linger = _NO_LINGER
        self._linger_end = 0.0
        self._linger_left = 0
        self._linger_quiet = False
        if self.awaiting_proxy:
            self.message_started = now

    # -- what the driver reads ------------------------------------------------

    @property
    def owed(self) -> int:
        """Answers owed to the peer: queued unsent, and not yet ready."""
        return self.out.responses + len(self._waiting)

    def reading(self) -> bool:
        """Whether the driver should read from the peer now (see :meth:`interest`)."""
        wanted = self.interest()
        return wanted != CLOSE and bool(wanted & READ)

    def interest(self) -> int:
        """What the driver should do next, in one call: :data:`CLOSE`, or the
        poller interest (:data:`READ` and/or :data:`WRITE`)."""
        out = self.out
        if not out.size and not self._waiting:
            # The common case: everything answered and sent.
            if self.lost or self.closing or (self.draining and not self.decoder.in_message):
                if self._linger and not self.lost:
                    return LINGER if self._linger == _LINGER_WANTED else READ
                return CLOSE
            if self.flow.paused:
                self.flow.update(0, 0)  # resumes (and says so, to metrics)
            return READ
        if self.lost:
            return CLOSE
        wanted = WRITE if out.size else 0
        if not self.closing and not self.flow.update(out.size, len(out.marks) + len(self._waiting)):
            wanted |= READ
        return wanted

    def peer_info(self) -> Peer:
        """Who the peer is, as handlers that take a second argument see it."""
        peer = self._peer
        if peer is None:
            version, certificate = self.tls if self.tls is not None else (None, None)
            peer = self._peer = Peer(self.peer, version, certificate)  # type: ignore[arg-type]
        return peer

    def log_secured(self, open_now: int) -> None:
        """The log line (DEBUG, like every connection's) of a connection whose
        TLS handshake is done."""
        if not log.isEnabledFor(logging.DEBUG):
            return
        peer = self.peer_info()
        log.debug(
            "connection from %s opened, %s%s (%d open)",
            self.peer,
            peer.tls,
            f", client certificate {peer.common_name or peer.certificate}" if peer.certificate else "",
            open_now,
        )

    @property
    def idle_drained(self) -> bool:
        """Closing only because the server is stopping and nothing is owed:
        a driver that finds unread bytes waiting reads them first."""
        return self.draining and not (self.closing or self.lost)

    @property
    def finished(self) -> bool:
        """Nothing more will be sent: the driver closes the connection (see :meth:`interest`)."""
        return self.interest() == CLOSE

    @property
    def deadline(self) -> float | None:
        """When :meth:`timer` has work to do at the earliest (None: never)."""
        if self._linger == _LINGERING:
            return self._linger_until()
        if self.message_started is not None and (
            self.decoder.in_message or self.handshaking or self.awaiting_proxy
        ):
            return self.message_started + self._config.message_timeout
        if self._waiting and not self.out:
            return None  # a handler is working for this peer: not idle
        idle = self.last_active + self._config.idle_timeout
        return idle if self._drain_at is None or self.draining else min(idle, self._drain_at)

    # -- events ----------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the peer (``b""``: it half-closed): answer what they complete."""
        self.last_active = now
        self.read_size = _RECV_SIZE
        if self.closing:
            self._dropped(len(data))  # after an error answer, or past the end
            return
        if self.awaiting_proxy:
            rest = self._proxy_header(data)
            if rest is None:
                return
            data = rest
        requests, error = self.decoder.feed_checked(data)
        self._decoded(requests, error, not data, now)

    def read_buffer(self) -> memoryview | None:
        """Where the driver may read the next bytes in place (``recv_into``):
        the rest of a large content's own buffer, which becomes the
        request's content with no copy. None: read as usual and pass the
        bytes to :meth:`receive`. After a read into it, call :meth:`received_into`.

        Only contents of at least ``large_content`` bytes are read so, and
        only while the server's ``large_content_memory`` has room for the
        whole content: a peer that announces a large content and sends no
        more holds that memory until its message deadline.
        """
        if self.message_started is None:
            # Between messages (the usual case for small ones): no content to
            # read in place. Saves two calls a read, which the 1000
            # connections row notices.
            return None
        if self._held:
            return self.decoder.direct_buffer(0, self._held)
        minimum = self._config.large_content
        if not minimum:
            return None
        view = self.decoder.direct_buffer(minimum, self._budget.available)
        if view is not None:
            self._held = self.decoder.direct_size
            self._budget.available -= self._held
        return view

    def read_again(self, count: int, asked: int, this_turn: int) -> bool:
        """Whether the driver should read again before it goes back to its
        poller, after a read that returned ``count`` of the ``asked`` bytes,
        ``this_turn`` bytes read from this peer since the poller's last word.

        Yes while a message is coming in fast (a read of all it asked, or of
        :data:`~framewire.core.limits.READ_ON` bytes or more), nothing is
        owed to the peer, and the turn has read less than
        :data:`~framewire.core.limits.READ_TURN`: the poller would only say
        "readable" again. A short read, an answer to send or a closing
        connection goes back to the poller (and the answer out first).
        """
        if count < asked and count < _READ_ON:
            return False  # the usual case: the kernel had no more
        return this_turn < _READ_TURN and not self.closing and not self.owed

    def received_into(self, count: int, now: float) -> None:
        """``count`` bytes were read into the view :meth:`read_buffer` gave
        (0: the peer half-closed): answer the request they complete."""
        self.last_active = now
        error: ProtocolError | None = None  # (filled() raises its errors, never sets them)
        try:
            requests = self.decoder.filled(count)
        except ProtocolError as exc:
            requests, error = [], exc
        if requests:  # the next message is likely large too (see limits.READ_AFTER_LARGE)
            self.read_size = _READ_AFTER_LARGE
        self._decoded(requests, error, not count, now)

    def _decoded(self, requests: list[Message], error: ProtocolError | None, ended: bool, now: float) -> None:
        decoder = self.decoder
        if self._held:  # (tested here: no call per read on the usual path)
            self._release()
        if requests:
            self._answer(requests)
            if self._drain_at is not None:
                self.draining = True  # a request came while the server stopped: answered, then closed
        if error is not None:
            log.info("protocol error from %s: %s", self.peer, error)
            self._close_for(error, lingering=not ended)
        elif ended:
            self.closing = True  # every answer still goes out, then close
        elif decoder.in_message:
            # A new message began in this read (or the first one did): its
            # deadline runs from now. Whole messages before it restart it.
            if requests or self.message_started is None:
                self.message_started = now
        else:
            self.message_started = None

    def _release(self) -> None:
        # Once the decoder no longer holds the large content's buffer (it is
        # the request's now, or dropped), the server's budget gets its size back.
        if self._held and not self.decoder.direct_size:
            self._budget.available += self._held
            self._held = 0

    def secured(self, now: float, version: str | None, certificate: object = None) -> None:
        """The TLS handshake is done: ``version`` agreed, and the subject of
        the client's verified ``certificate`` (None without one)."""
        self.handshaking = False
        self.message_started = None
        self.last_active = now
        self.tls = (version, certificate)
        self._peer = None

    def _proxy_header(self, data: bytes) -> bytes | None:
        # The PROXY header first: None while it is incomplete (or failed:
        # then the connection is lost, closed without an answer), else the
        # bytes after it, which are the protocol's.
        buffered = self._proxy_bytes + data
        try:
            header = parse_proxy_header(buffered, limits.PROXY_HEADER_MAX)
        except ProxyHeaderError as exc:
            log.info("connection from %s: %s: closing", self.peer, exc)
            self.lost = True
            return None
        if header is None:
            if not data:
                log.info("connection from %s closed before its PROXY header: closing", self.peer)
                self.lost = True
            else:
                self._proxy_bytes = buffered
            return None
        self.awaiting_proxy = False
        self._proxy_bytes = b""
        self.message_started = None
        balancer = self.peer
        if header.source is not None:
            self.peer = show_address(header.source)
            self._peer = None
            log.debug(
                "connection from %s opened, through %s (PROXY v%d)", self.peer, balancer, header.version
            )
        else:
            # The balancer's own connection (a health check every few hundred
            # ms): logged at DEBUG, or it would drown the operator's log.
            self.quiet = True
            log.debug(
                "connection from %s opened (PROXY v%d, no client: a health check)", balancer, header.version
            )
        return buffered[header.size :] or None

    def reserve(self) -> Slot:
        """A place for an answer that comes later, after those owed before it."""
        slot = Slot()
        self._waiting.append(slot)
        return slot

    def fulfil(self, slot: Slot, result: object, now: float) -> None:
        """The answer for ``slot`` came (or the handler raised ``result``):
        whatever the handler gave, which need not be a Message."""
        if self.lost:
            return  # the peer is gone: the answer is dropped without noise
        if isinstance(result, BaseException):
            slot.head, slot.content = self._failed(result)
        else:
            slot.head, slot.content = self._wire(result)
        if slot.ident is not None:
            slot.head = with_id(slot.head, slot.ident)
        slot.ready = True
        self.last_active = now
        waiting = self._waiting
        out = self.out
        while waiting and waiting[0].ready:
            first = waiting.popleft()
            out.append(first.head, first.content)

    def _close_for(self, error: ProtocolError, lingering: bool) -> None:
        # Answer the error after everything owed, then close. A peer that has
        # not half-closed may still be sending: closing a socket with unread
        # bytes makes the kernel send a reset, which can cost the peer the
        # answer (its send fails, or its stack drops what it had received).
        # So the driver half-closes and reads on, dropping, for a bounded
        # time and number of bytes (HTTP servers call it a lingering close).
        self.count_error(error.code)
        self._owe(*Message.for_error(error).wire_parts())
        self.closing = True
        self.message_started = None
        if lingering and self._config.linger_time:
            self._linger = _LINGER_WANTED
            self._linger_left = self._config.linger_bytes

    def refuse(self, error: ProtocolError) -> None:
        """Answer ``error`` (``server-busy``: the server is at its connection
        limit) and nothing else, then close as after a framing error,
        lingering: the peer's first request is likely on its way already."""
        self.quiet = True  # the driver logs the refusal; no line when it closes
        self._close_for(error, lingering=True)

    def linger(self, now: float, half_closed: bool = True) -> None:
        """The driver half-closed after :data:`LINGER`: from now on it reads
        and the engine drops what comes, until the peer closes its side,
        ``linger_time`` passes or ``linger_bytes`` have come; then
        :meth:`interest` says :data:`CLOSE`.

        A driver that cannot half-close (asyncio's TLS) says so: the peer
        then sees no end until the close, so the engine also ends the
        lingering once the peer has been quiet for ``LINGER_QUIET``."""
        self._linger = _LINGERING
        self._linger_end = now + self._config.linger_time
        self._linger_quiet = not half_closed
        self.last_active = now

    def _linger_until(self) -> float:
        if self._linger_quiet:
            return min(self._linger_end, self.last_active + limits.LINGER_QUIET)
        return self._linger_end

    def _dropped(self, count: int) -> None:
        if not self._linger:
            return
        if not count:
            self._linger = _NO_LINGER  # the peer closed its side: nothing more comes
        elif count >= self._linger_left:
            self._linger = _NO_LINGER
            log.info(
                "connection from %s: over %d bytes sent after its error answer: closing",
                self.peer,
                self._config.linger_bytes,
            )
        else:
            self._linger_left -= count

    def sent(self, count: int, now: float) -> None:
        """The socket took ``count`` bytes of :attr:`out`."""
        if count:
            self.out.consume(count)
            self.last_active = now

    def timer(self, now: float) -> None:
        """Act on the deadlines that have come: a message not complete in
        time gets ``timeout`` and the connection closes; an idle one closes;
        so does one whose TLS handshake is not done within the message
        deadline (without an answer: there is no channel to send it on)."""
        if self._linger == _LINGERING:
            if now >= self._linger_until():
                self._linger = _NO_LINGER  # long enough: closed, whatever the peer still sends
            return
        if self._drain_at is not None and not self.draining and now >= self._drain_at:
            self.draining = True  # no request came while the server stopped
        if self.awaiting_proxy:
            started = self.message_started
            if started is not None and started + self._config.message_timeout <= now:
                log.info(
                    "connection from %s: no complete PROXY header %g s after the connection opened: closing",
                    self.peer,
                    self._config.message_timeout,
                )
                self.lost = True
            return
        if self.handshaking:
            started = self.message_started
            if started is not None and started + self._config.message_timeout <= now:
                log.info(
                    "connection from %s: TLS handshake not done %g s after the connection opened: closing",
                    self.peer,
                    self._config.message_timeout,
                )
                self.lost = True
            return
        if self.message_started is not None and self.decoder.in_message:
            if self.message_started + self._config.message_timeout <= now:
                error = MessageTimeout(
                    f"The message was not complete {self._config.message_timeout:g} s after its first byte."
                )
                log.info("connection from %s: %s", self.peer, error)
                self.decoder.fail(error)
                self._release()
                self._close_for(error, lingering=True)
                self.last_active = now  # the idle timeout ends it if the peer never reads this
            return
        deadline = self.deadline
        if deadline is not None and deadline <= now:
            log.info("connection from %s idle for %g s: closing", self.peer, self._config.idle_timeout)
            self.out.clear()
            self.lost = True

    def drain(self, now: float | None = None) -> None:
        """The server is stopping: finish what is owed, then close.

        An idle connection, new or kept open, may be a client whose request
        is on its way (with 50 ms between client and server, every request
        sent in the last 50 ms is): it is given until ``now`` + one second
        (or the end of the grace period, if sooner) to send it, and that
        request is answered before the close."""
        if self.draining:
            return
        if now is None or self.out or self._waiting:
            self.draining = True
        elif self._drain_at is None:
            self._drain_at = now + FIRST_REQUEST_WAIT
        elif now >= self._drain_at:
            self.draining = True

    def log_lost(self, reason: object) -> None:
        """The log line of a connection the driver lost (a reset, say), for ``reason``.

        INFO when the loss cost something (answers owed, a message half
        received); DEBUG when it came between messages with nothing owed,
        which loses no more than a close: clients that end with a reset
        (``SO_LINGER`` 0) would otherwise log a line per connection, which
        costs more than the connection's own work (docs/performance.md,
        "Where the time goes").
        """
        owed = self.owed
        partial = self.decoder.in_message
        if self.quiet or not (owed or partial):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("connection from %s lost: %s", self.peer, reason)
            return
        cost = []
        if owed:
            cost.append(f"{owed} answer{'s' if owed > 1 else ''} not sent")
        if partial:
            cost.append("a message half received")
        log.info("connection from %s lost: %s (%s)", self.peer, reason, ", ".join(cost))

    def connection_lost(self) -> None:
        """The driver lost the socket: nothing more is sent, the work still
        under way for the peer is cancelled, and late answers are dropped."""
        self.lost = True
        # The driver's record and the engine refer to each other: left as it
        # is, each closed connection would be garbage that only the cycle
        # collector frees, and its collections cost a tenth of the throughput
        # of one request per connection.
        self.driver = None
        self.out.clear()
        if self._held:
            # (Failing the decoder drops its buffer now, not when the
            # connection's objects are collected.)
            self.decoder.fail(IncompleteMessage("The connection was lost in the middle of a content."))
            self._release()
        for slot in self._waiting:
            if slot.cancel is not None:
                slot.cancel()
        self._waiting.clear()

    # -- answering -------------------------------------------------------------

    def _answer(self, requests: list[Message]) -> None:
        # The hot path of the server: one pass per request, the send queue's
        # fields kept in locals and written back once.
        out = self.out
        parts = out.parts
        marks = out.marks
        queued = start = out.queued
        waiting = self._waiting
        call = self.call
        adopt = self.adopt
        if self.metrics is not None:
            call = self.metrics.measured(call)  # counts each request, times its handler
        for request in requests:
            extensions = request._header.extensions
            extended = bool(extensions)  # one truth test a request, not two (a generic call compiled)
            try:
                if extended and PING_KEY in extensions:
                    # Probes are answered by the server itself, whatever the application.
                    response: object = probe_reply(request)
                elif extended and DEADLINE_KEY in extensions and _expired(extensions):
                    # The client had stopped waiting when it sent it: not worth running.
                    raise DeadlineExceeded("The request's deadline had passed when it arrived.")
                else:
                    response = call(request)
                    # type() tests, not isinstance: cheaper in pure Python (the
                    # pipelined row notices), and as cheap compiled, where a
                    # request echoed back is a _Decoded (core/message.py).
                    if (
                        type(response) is not Message
                        and type(response) is not _Decoded
                        and adopt is not None
                        and response is not LATER
                    ):
                        response = adopt(self, request, response)
            except BaseException as exc:
                # Whatever a handler raises, SystemExit and KeyboardInterrupt
                # included (argparse exits on bad input, so a peer can cause
                # it), is that request's handler-error. Only the server's own
                # forced stop, raised by its signal handler, unwinds the loop.
                if isinstance(exc, StopNow):
                    raise
                head, content = self._failed(exc)
            else:
                if response is LATER:
                    if extended:  # the reserved slot carries the id to the answer
                        waiting[-1].ident = request_id(extensions)
                    continue  # a slot is reserved; the answer comes later
                if (type(response) is Message or type(response) is _Decoded) and response._header.checked:
                    head = response._header.wire  # type: ignore[assignment]  # set once checked
                    content = response._content
                else:
                    head, content = self._wire(response)
            if extended:
                ident = request_id(extensions)
                if ident is not None:
                    head = with_id(head, ident)  # whatever the application answered
            if waiting:
                slot = Slot()
                slot.head, slot.content, slot.ready = head, content, True
                waiting.append(slot)
            else:
                parts.append(head)
                parts.append(content)
                queued += len(head) + len(content)
                marks.append(queued)
        out.size += queued - start
        out.queued = queued
        self.requests += len(requests)

    def _owe(self, head: bytes, content: bytes | bytearray) -> None:
        # An answer of the server's own (an error), after everything owed.
        if self._waiting:
            slot = Slot()
            slot.head, slot.content, slot.ready = head, content, True
            self._waiting.append(slot)
        else:
            self.out.append(head, content)

    def _failed(self, exc: BaseException) -> tuple[bytes, bytes | bytearray]:
        if isinstance(exc, ProtocolError):
            # bad-content and the like, raised while reading the request
            # (Message.json()); a framing code cannot come from a handler.
            if exc.framing:
                exc = HandlerError(f"The handler raised {exc.code} on a well-framed request.")
            self.count_error(exc.code)
            return Message.for_error(exc).wire_parts()
        return self._handler_failed(f"raised {type(exc).__name__}", exc)

    def count_error(self, code: str) -> None:
        """An error response with ``code`` is being sent on this connection."""
        self.errors += 1
        if self.metrics is not None:
            self.metrics.error(code)

    def _handler_failed(self, what: str, exc: BaseException | None = None) -> tuple[bytes, bytes | bytearray]:
        log.error("handler %s on a request from %s", what, self.peer, exc_info=exc)
        self.count_error(HandlerError.code)
        return Message.for_error(HandlerError(f"The application's handler {what}.")).wire_parts()

    def _wire(self, response: object) -> tuple[bytes, bytes | bytearray]:
        """The bytes of a valid message for ``response``, an error response at worst."""
        if response.__class__ is not Message and not isinstance(response, Message):
            return self._handler_failed(f"returned {type(response).__name__}, not a Message")
        header = response._header
        if header.checked:
            return header.wire, response._content  # type: ignore[return-value]  # set once checked
        try:
            return self._sendable(header), response._content
        except Exception as exc:
            return self._handler_failed(f"returned a message that cannot be sent ({exc})")

    def _sendable(self, header: _Header) -> bytes:
        # Headers without extensions are cached by their fields: a handler
        # building the same shape of response each time encodes it once.
        if header.extensions:
            return header.sendable()
        key = (header.content_type, header.content_encoding, header.byteorder, header.content_length)
        wire = self._responses.get(key)
        if wire is None:
            wire = header.sendable()
            self._responses.put(key, wire, 2 * len(wire) + 256)
        else:
            header.wire = wire
            header.checked = True
        return wire
