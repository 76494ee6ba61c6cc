"""The connection engine: one server connection's whole policy, with no I/O.

The h11 idea one level up. A :class:`ServerConnection` is driven by calls,
each given the time (``now``) by its driver, and answers with what the
driver should do; it never touches a socket, a clock or a thread. Its life
is one :class:`~framewire.server.phase.Phase`, moved only along the
transitions that module declares and checks.

A driver reads into it (:meth:`~ServerConnection.receive`, or
:meth:`~ServerConnection.read_buffer` and
:meth:`~ServerConnection.received_into` for a large content read in place),
sends what :attr:`~ServerConnection.outgoing` holds and reports it to
:meth:`~ServerConnection.flushed`, does what that says (read, write,
close, or half-close and :meth:`~ServerConnection.linger`), and calls
:meth:`~ServerConnection.timer` at :attr:`~ServerConnection.deadline`,
:meth:`~ServerConnection.drain`, :meth:`~ServerConnection.secured` and
:meth:`~ServerConnection.connection_lost` when those happen. Every rule
(ordering, backpressure, deadlines, draining, lingering, which error code
for what) lives here and in :mod:`framewire.server.answers`, tested with a
fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from framewire.core import limits
from framewire.core.cache import BoundedCache
from framewire.core.decoder import Decoder, HeaderCache
from framewire.core.errors import IncompleteMessage, MessageTimeout, ProtocolError
from framewire.core.message import Message
from framewire.core.proxyheader import ProxyHeaderError
from framewire.core.proxyheader import parse as parse_proxy_header
from framewire.io.netio import show_address
from framewire.server.answers import LATER, Adopt, Answers, Call, ResponseCache, Slot, StreamState
from framewire.server.config import ServerConfig
from framewire.server.flow import ContentBudget, FlowControl, InPlace, Linger
from framewire.server.peer import Peer
from framewire.server.phase import ALLOWED, Phase, check

if TYPE_CHECKING:
    from framewire.server.access import AccessLog
    from framewire.server.metrics import Metrics
    from framewire.server.streams import Stream

__all__ = [
    "CLOSE",
    "LATER",
    "LINGER",
    "READ",
    "WRITE",
    "ContentBudget",
    "FlowControl",
    "Phase",
    "ServerConnection",
    "Slot",
]

log = logging.getLogger("framewire.server")

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

# The phases as plain ints: compiled, a Final int is a C constant, and the
# engine compares its phase on every read and send.
_PROXY: Final = 0
_HANDSHAKE: Final = 1
_OPEN: Final = 2
_DRAINING: Final = 3
_CLOSING: Final = 4
_HALF_CLOSING: Final = 5
_LINGERING: Final = 6
_CLOSED: Final = 7
assert tuple(Phase) == (_PROXY, _HANDSHAKE, _OPEN, _DRAINING, _CLOSING, _HALF_CLOSING, _LINGERING, _CLOSED)

# The read limits, bound once: compiled, a Final is a C constant, where
# ``limits.RECV_SIZE`` is a dictionary look-up on every read.
_RECV_SIZE: Final = limits.RECV_SIZE
_READ_AFTER_LARGE: Final = limits.READ_AFTER_LARGE
_READ_ON: Final = limits.READ_ON
_READ_TURN: Final = limits.READ_TURN
_READ_TURN_RECORDS: Final = limits.READ_TURN_RECORDS
# Every connection's until it lingers (the phases never use it: shared, unchanged).
_NO_LINGER: Final = Linger(0.0, 0)


class ServerConnection:
    """The sans-I/O state of one server connection (see the module's text)."""

    __slots__ = (
        "_answers",
        "_budget",
        "_config",
        "_drain_at",
        "_in_place",
        "_linger",
        "_low_water",
        "_peer",
        "_phase",
        "_proxy_bytes",
        "_unordered",
        "_waiting",
        "decoder",
        "driver",
        "flow",
        "last_active",
        "message_started",
        "out",
        "outgoing",
        "peer",
        "quiet",
        "read_size",
        "refused",
        "requests",
        "tls",
    )

    def __init__(
        self,
        config: ServerConfig,
        now: float,
        peer: str = "-",
        headers: HeaderCache | None = None,
        responses: ResponseCache | None = None,
        budget: ContentBudget | None = None,
        handshaking: bool = False,
    ) -> None:
        self._config = config
        #: How the logs name the peer (the PROXY header may rename it).
        self.peer = peer
        self.decoder = Decoder(
            max_header_size=config.max_header_size,
            max_content_length=config.max_content_length,
            cache=headers,
        )
        self._budget = (
            budget if budget is not None else ContentBudget(config.large_content_memory)
        )  # (else shared)
        self._in_place: InPlace | None = None  # made for the first large content (see read_buffer)
        self._answers = Answers(responses if responses is not None else BoundedCache(64 * 1024), peer)
        self.out = self._answers.out  # (the answers' queues, read on every call)
        #: The bytes queued for the peer, in parts, in order (:attr:`unsent`
        #: of them): send them, then call :meth:`flushed`. The same list for the
        #: connection's life; a driver reads it, or joins parts in place.
        self.outgoing = self.out.parts
        self._waiting = self._answers.waiting
        self._unordered = self._answers.unordered
        answers = self._answers
        answers.owner = self
        answers.high_water = config.high_water
        answers.limit = config.max_content_length
        answers.max_items = max(1, config.max_in_flight // 2)
        self._low_water = config.low_water
        #: Bytes to ask for in a read into no :meth:`read_buffer` (small after a large content).
        self.read_size = _RECV_SIZE
        self.flow = FlowControl(config.high_water, config.low_water, config.max_in_flight)
        self.last_active = now
        #: When the message (PROXY header, TLS handshake) under way began; None between messages.
        self.message_started: float | None = None
        #: Requests received so far.
        self.requests = 0
        #: The driver's own object for this connection (its socket record).
        self.driver: object = None
        #: What the TLS handshake agreed and verified (see :meth:`secured`).
        self.tls: tuple[str | None, object] | None = None
        self._peer: Peer | None = None
        self._drain_at: float | None = None  # see drain()
        #: Not worth a log line when it closes (a balancer's health check, a refusal).
        self.quiet = False
        #: Answered server-busy at the connection limit (see :meth:`refuse`).
        self.refused = False
        self._proxy_bytes = b""
        self._linger = _NO_LINGER  # a Linger of its own for a lingering close (see linger())
        self._phase = _HANDSHAKE if handshaking else _PROXY if config.proxy_protocol else _OPEN
        if self._phase != _OPEN:
            self.message_started = now  # the handshake, or the header, within the message deadline

    def _enter(self, phase: int) -> None:
        # Checked against the table on every move (a few per connection).
        if phase not in ALLOWED[self._phase]:
            check(self._phase, phase)  # raises, saying which move
        self._phase = phase

    # -- what the driver reads ------------------------------------------------

    @property
    def phase(self) -> Phase:
        """Where the connection is in its life."""
        return Phase(self._phase)

    @property
    def handshaking(self) -> bool:
        """In its TLS handshake (:data:`Phase.HANDSHAKE`)."""
        return self._phase == _HANDSHAKE

    @property
    def closed(self) -> bool:
        """Dropped (:data:`Phase.CLOSED`): the socket is lost, or the engine
        gave up on it (idle, no PROXY header, no handshake in time); nothing
        more is sent, late answers are dropped, the driver closes at once."""
        return self._phase == _CLOSED

    @property
    def owed(self) -> int:
        """Answers owed to the peer: queued unsent, and not yet ready."""
        return self.out.responses + len(self._waiting) + len(self._unordered)

    @property
    def at_stake(self) -> bool:
        """Whether losing the connection now would cost something: answers
        owed, or a message half received."""
        return bool(self.out.marks or self._waiting or self._unordered or self.decoder.in_message)

    @property
    def half_received(self) -> bool:
        """A message has begun to arrive and is not complete."""
        return self.decoder.in_message

    @property
    def errors(self) -> int:
        """Error responses this connection was sent."""
        return self._answers.errors

    @property
    def unsent(self) -> int:
        """Bytes queued for the peer (see :attr:`outgoing`)."""
        return self.out.size

    def interest(self) -> int:
        """What the driver should do next: :data:`CLOSE`, :data:`LINGER`, or
        the poller interest (:data:`READ` and/or :data:`WRITE`)."""
        return self.flushed(0, self.last_active)

    def flushed(self, count: int, now: float, stopping: bool = False) -> int:
        """After a send: the socket took ``count`` bytes of :attr:`outgoing`
        (0 too), and the server is ``stopping`` (see :meth:`drain`) or not.
        Returns what to do next, as :meth:`interest` does (one call a flush)."""
        out = self.out
        if count:
            if count == out.size:  # the common case: everything went at once
                out.parts.clear()
                out.size = 0
                out.marks.clear()
                out.sent += count
            else:
                out.consume(count)
            self.last_active = now
        if (
            self._answers.paused
            and out.size <= self._low_water
            and len(out.marks) * 2 <= self._answers.max_items
        ):
            self._answers.resume()  # streams waiting for the peer to read
        if stopping:
            self.drain(now)
        phase = self._phase
        if not out.size and not self._waiting and not self._unordered:
            # The common case: everything answered and sent.
            if phase < _DRAINING or (phase == _DRAINING and self.decoder.in_message):
                if self.flow.paused:
                    self.flow.update(0, 0)  # resumes (and says so, to metrics)
                return READ
            if phase == _HALF_CLOSING:
                return LINGER
            return READ if phase == _LINGERING else CLOSE
        if phase == _CLOSED:
            return CLOSE
        wanted = WRITE if out.size else 0
        owed = len(out.marks) + len(self._waiting) + len(self._unordered)
        if phase < _CLOSING and not self.flow.update(out.size, owed):
            wanted |= READ
        return wanted

    @property
    def finished(self) -> bool:
        """Nothing more will be sent: the driver closes the connection (see :meth:`interest`)."""
        return self.interest() == CLOSE

    @property
    def idle_drained(self) -> bool:
        """Closing only because the server is stopping and nothing is owed:
        a driver that finds unread bytes waiting reads them first."""
        return self._phase == _DRAINING

    def peer_info(self) -> Peer:
        """Who the peer is, as handlers that take a second argument see it."""
        peer = self._peer
        if peer is None:
            version, certificate = self.tls if self.tls is not None else (None, None)
            peer = self._peer = Peer(self.peer, version, certificate)  # type: ignore[arg-type]
        return peer

    @property
    def deadline(self) -> float | None:
        """When :meth:`timer` has work to do at the earliest (None: never)."""
        phase = self._phase
        if phase == _LINGERING:
            return self._linger.until(self.last_active)
        started = self.message_started
        if started is not None and (phase < _OPEN or self.decoder.in_message):
            return started + self._config.message_timeout
        if (self._waiting or self._unordered) and not self.out:
            return None  # a handler is working for this peer: not idle
        idle = self.last_active + self._config.idle_timeout
        return idle if self._drain_at is None or phase != _OPEN else min(idle, self._drain_at)

    # -- reading -----------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the peer (``b""``: it half-closed): answer what they complete."""
        self.last_active = now
        self.read_size = _RECV_SIZE
        phase = self._phase
        if phase >= _CLOSING:
            self._dropped(len(data))  # after an error answer, or past the end
            return
        if phase == _PROXY:
            rest = self._proxy_header(data)
            if rest is None:
                return
            data = rest
        requests, error = self.decoder.feed_checked(data)
        self._decoded(requests, error, not data, now)

    def read_buffer(self) -> memoryview | None:
        """Where the driver may read the next bytes in place (``recv_into``):
        the rest of a large content's own buffer, which becomes the
        request's content with no copy (see :class:`~framewire.server.flow.InPlace`).
        None: read as usual and pass the bytes to :meth:`receive`. After a
        read into it, call :meth:`received_into`."""
        if self.message_started is None:
            # Between messages (the usual case for small ones): no content to
            # read in place. Saves two calls a read, which the 1000
            # connections row notices.
            return None
        in_place = self._in_place
        if in_place is None:
            if not self._config.large_content:
                return None
            in_place = self._in_place = InPlace(self.decoder, self._budget, self._config.large_content)
        return in_place.buffer()

    def read_again(self, count: int, asked: int, this_turn: int, records: bool = False) -> bool:
        """Whether to read again before going back to the poller, after a read
        of ``count`` of the ``asked`` bytes (``this_turn`` since the poller's
        last word): while a message comes in fast (a full read, or of
        :data:`~framewire.core.limits.READ_ON` bytes or more), nothing is owed
        and the turn is under :data:`~framewire.core.limits.READ_TURN`. Reads
        in ``records`` (TLS) go on after a full one even with answers owed, up
        to the high-water mark: else a pipelining peer costs a turn a record."""
        if count < asked and (records or count < _READ_ON):
            return False  # the usual case: the kernel had no more
        if records:
            return (
                this_turn < _READ_TURN_RECORDS and self._phase < _CLOSING and self.out.size <= self.flow.high
            )
        return this_turn < _READ_TURN and self._phase < _CLOSING and not self.owed

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
        in_place = self._in_place
        if in_place is not None and in_place.held:  # (tested here: no call per read on the usual path)
            in_place.release()
        if requests:
            self._answers.answer(requests, self)
            self.requests += len(requests)
            if self._drain_at is not None and self._phase == _OPEN:
                self._enter(_DRAINING)  # a request came while the server stopped: answered, then closed
        if error is not None:
            log.info("protocol error from %s: %s", self.peer, error)
            self._close_for(error, lingering=not ended)
        elif ended:
            self._enter(_CLOSING)  # every answer still goes out, then close
        elif self.decoder.in_message:
            # A new message began in this read (or the first one did): its
            # deadline runs from now. Whole messages before it restart it.
            if requests or self.message_started is None:
                self.message_started = now
        else:
            self.message_started = None

    def _proxy_header(self, data: bytes) -> bytes | None:
        # The PROXY header first: None while it is incomplete (or failed:
        # then the connection is closed without an answer), else the bytes
        # after it, which are the protocol's.
        buffered = self._proxy_bytes + data
        try:
            header = parse_proxy_header(buffered, limits.PROXY_HEADER_MAX)
        except ProxyHeaderError as exc:
            log.info("connection from %s: %s: closing", self.peer, exc)
            self._enter(_CLOSED)
            return None
        if header is None:
            if not data:
                log.info("connection from %s closed before its PROXY header: closing", self.peer)
                self._enter(_CLOSED)
            else:
                self._proxy_bytes = buffered
            return None
        self._enter(_OPEN)
        self._proxy_bytes = b""
        self.message_started = None
        balancer = self.peer
        if header.source is not None:
            self.peer = self._answers.peer = show_address(header.source)
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

    def secured(self, now: float, version: str | None, certificate: object = None) -> None:
        """The TLS handshake is done: ``version`` agreed, and the subject of
        the client's verified ``certificate`` (None without one)."""
        self._enter(_OPEN)
        self.message_started = None
        self.last_active = now
        self.tls = (version, certificate)
        self._peer = None

    # -- answering -----------------------------------------------------------------

    def bind(
        self,
        call: Call,
        adopt: Adopt | None = None,
        description: bytes | None = None,
        streams: tuple[Callable[[Any, Slot], None], Callable[[Any, Slot], None]] | None = None,
    ) -> None:
        """How this connection's requests are answered: ``call`` (the handler
        itself when it runs inline), and ``adopt`` for a result that is not a
        Message (an awaitable, run elsewhere, becomes :data:`LATER`);
        ``description`` answers ``framewire-describe`` (JSON); ``streams``:
        how a stream's next batch is taken, and its source stopped, where
        its action runs (see :mod:`framewire.server.streams`)."""
        answers = self._answers
        answers.call = call
        answers.adopt = adopt
        if description is not None:
            answers.description = description
        if streams is not None:
            answers.puller, answers.closer = streams

    def stream_later(self, slot: Slot, source: Stream) -> None:
        """``slot`` (just reserved) is answered by ``source``'s items: they
        begin once the request's extensions are read (see :meth:`Answers.streams`)."""
        slot.stream = StreamState(source, b"", b"")

    def log_access(self, access: AccessLog) -> None:
        """Write a line per request to ``access`` (the access log)."""
        self._answers.access = access

    def watch(self, metrics: Metrics) -> None:
        """Report to ``metrics``: requests, handler times, errors, pauses."""
        self._answers.metrics = metrics
        self.flow.watch = metrics.paused.inc  # +1 paused, -1 resumed

    def reserve(self) -> Slot:
        """A place for an answer that comes later, after those owed before it."""
        return self._answers.reserve()

    def fulfil(self, slot: Slot, result: object, now: float) -> None:
        """The answer for ``slot`` came (or the handler raised ``result``):
        whatever the handler gave, which need not be a Message."""
        if self._phase == _CLOSED:
            return  # the peer is gone: the answer is dropped without noise
        self._answers.fulfil(slot, result)
        self.last_active = now

    def recent_actions(self, named: bool) -> list[str]:
        """What the requests of the last read asked for, as a warning names
        them (when ``named``): their actions (a JSON request's ``action``),
        else their content types; at most three, each once. The requests are
        let go either way: kept, a large content would outlive its answer
        for as long as the connection stays idle."""
        last = self._answers.last
        self._answers.last = []
        names: list[str] = []
        for request in last if named else ():
            name = request.content_type
            if request.is_json:
                try:
                    body = request.json()
                except ProtocolError:
                    body = None
                if isinstance(body, dict) and isinstance(body.get("action"), str):
                    name = body["action"][:64]
            if name not in names:
                names.append(name)
                if len(names) == 3:
                    break
        return names

    def count_error(self, code: str) -> None:
        """An error response with ``code`` is being sent on this connection."""
        self._answers.count_error(code)

    def _close_for(self, error: ProtocolError, lingering: bool) -> None:
        # Answer the error after everything owed, then close. A peer that has
        # not half-closed may still be sending: closing a socket with unread
        # bytes makes the kernel send a reset, which can cost the peer the
        # answer (its send fails, or its stack drops what it had received).
        # So the driver half-closes and reads on, dropping, for a bounded
        # time and number of bytes (HTTP servers call it a lingering close).
        self._answers.owe(error)
        self.message_started = None
        if lingering and self._config.linger_time:
            self._linger = Linger(self._config.linger_time, self._config.linger_bytes)
            self._enter(_HALF_CLOSING)
        else:
            self._enter(_CLOSING)

    def refuse(self, error: ProtocolError) -> None:
        """Answer ``error`` (``server-busy``: the server is at its connection
        limit) and nothing else, then close as after a framing error,
        lingering: the peer's first request is likely on its way already."""
        self.quiet = True  # the driver logs the refusal; no line when it closes
        self.refused = True
        self._close_for(error, lingering=True)

    # -- sending, time, the end ------------------------------------------------------

    def linger(self, now: float, half_closed: bool = True) -> None:
        """The driver half-closed after :data:`LINGER`: from now on it reads
        and the engine drops what comes, until the peer closes its side,
        ``linger_time`` passes or ``linger_bytes`` have come; then
        :meth:`interest` says :data:`CLOSE`.

        A driver that cannot half-close (asyncio's TLS) says so: the peer
        then sees no end until the close, so the engine also ends the
        lingering once the peer has been quiet for ``LINGER_QUIET``."""
        self._enter(_LINGERING)
        self._linger.start(now, half_closed)
        self.last_active = now

    def _dropped(self, count: int) -> None:
        phase = self._phase
        if not _HALF_CLOSING <= phase <= _LINGERING:
            return
        # Lingering, or about to: the end of the peer's side, or too much
        # from it, ends the lingering (closed once the answer is sent).
        if not self._linger.take(count):
            return
        if count:
            log.info(
                "connection from %s: over %d bytes sent after its error answer: closing",
                self.peer,
                self._config.linger_bytes,
            )
        self._enter(_CLOSING)  # (nothing owed while lingering: closed at once)

    def timer(self, now: float) -> None:
        """Act on the deadlines that have come: a message not complete in
        time gets ``timeout`` and the connection closes; an idle one closes;
        so does one whose PROXY header or TLS handshake is not done within
        the message deadline (without an answer: there is no channel yet)."""
        phase = self._phase
        if phase == _LINGERING:
            if now >= self._linger.until(self.last_active):
                self._enter(_CLOSING)  # long enough: closed, whatever the peer still sends
            return
        if phase >= _CLOSING:
            return
        if self._drain_at is not None and phase != _DRAINING and now >= self._drain_at:
            self.drain(now)  # no request came while the server stopped
            phase = self._phase
            if phase == _CLOSED:
                return
        started = self.message_started
        timeout = self._config.message_timeout
        if phase < _OPEN:
            if started is not None and started + timeout <= now:
                log.info(
                    "connection from %s: %s %g s after the connection opened: closing",
                    self.peer,
                    "no complete PROXY header" if phase == _PROXY else "TLS handshake not done",
                    timeout,
                )
                self._enter(_CLOSED)
            return
        if started is not None and self.decoder.in_message:
            if started + timeout <= now:
                error = MessageTimeout(f"The message was not complete {timeout:g} s after its first byte.")
                log.info("connection from %s: %s", self.peer, error)
                self.decoder.fail(error)
                if self._in_place is not None:
                    self._in_place.release()
                self._close_for(error, lingering=True)
                self.last_active = now  # the idle timeout ends it if the peer never reads this
            return
        deadline = self.deadline
        if deadline is not None and deadline <= now:
            log.info("connection from %s idle for %g s: closing", self.peer, self._config.idle_timeout)
            self.out.clear()
            self._enter(_CLOSED)

    def drain(self, now: float | None = None) -> None:
        """The server is stopping: finish what is owed, then close. An idle
        connection may be a client whose request is on its way: it is given
        :data:`FIRST_REQUEST_WAIT` from ``now`` to send it, and that request
        is answered before the close. ``now`` None: at once."""
        phase = self._phase
        if phase >= _DRAINING:
            return
        if now is None or self.out or self._waiting or self._unordered:
            due = True
        elif self._drain_at is None:
            self._drain_at = now + FIRST_REQUEST_WAIT
            due = False
        else:
            due = now >= self._drain_at
        if due:
            # Before the peer is known (PROXY) or secured (TLS) nothing can be owed.
            self._enter(_DRAINING if phase == _OPEN else _CLOSED)

    def connection_lost(self) -> None:
        """The socket is gone: nothing more is sent, the work still under way
        for the peer is cancelled, and late answers are dropped."""
        self._enter(_CLOSED)
        # The driver's record and the engine refer to each other: else only the
        # cycle collector frees a closed connection (a tenth of the throughput).
        self.driver = None
        in_place = self._in_place
        if in_place is not None and in_place.held:  # (failed, the decoder drops its buffer now)
            self.decoder.fail(IncompleteMessage("The connection was lost in the middle of a content."))
            in_place.release()
        self._answers.drop()
