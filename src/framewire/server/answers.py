"""The answers a server connection owes its peer, in request order, as bytes.

Part of the connection engine (:mod:`framewire.server.engine`), with no I/O:
each decoded request is answered through the connection's ``call`` (the
handler itself when it runs inline), probes and expired deadlines by the
server itself; whatever comes back (a Message, anything else, an exception)
becomes the bytes of a valid message, an error response at worst. An answer
that comes later (thread pool, async handler) holds a :class:`Slot`, and
every answer after it waits for it: the peer reads its answers in the order
it asked.
"""

from __future__ import annotations

import collections
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import orjson

from framewire.core.cache import BoundedCache
from framewire.core.errors import Cancelled, DeadlineExceeded, HandlerError, ProtocolError
from framewire.core.message import Decoded, Header, Message
from framewire.core.probe import (
    CANCEL_KEY,
    DEADLINE_KEY,
    DESCRIBE_KEY,
    DROPPED_KEY,
    ID_KEY,
    PING_KEY,
    STREAM_KEY,
    UNORDERED_KEY,
    deadline_ms,
    describe_reply,
    is_unordered,
    probe_reply,
    request_id,
    with_extensions,
    with_id,
)
from framewire.core.topics import Event
from framewire.io.sendqueue import SendQueue
from framewire.server.stopping import StopNow
from framewire.server.streams import Batch, Item, Stream, as_stream, is_stream

if TYPE_CHECKING:
    from framewire.server.access import AccessLog
    from framewire.server.metrics import Metrics

__all__ = ["LATER", "Adopt", "Answers", "Call", "ResponseCache", "Slot"]

log = logging.getLogger("framewire.server")

#: Encoded response headers (without extensions) by their fields; a server
#: shares one among its connections.
ResponseCache = BoundedCache[tuple[str, str, str, int], bytes]


class Slot:
    """An answer owed to the peer, in request order; filled when it is ready."""

    __slots__ = (
        "action",
        "cancel",
        "content",
        "head",
        "ident",
        "ready",
        "request",
        "started",
        "stream",
        "streaming",
        "unordered",
    )

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
        #: The metrics label of the request's action ("" when metrics are off).
        self.action = ""
        #: With the access log on: the request and when it arrived.
        self.request: Message | None = None
        self.started = 0.0
        #: Answered as soon as ready, not in request order (framewire-unordered).
        self.unordered = False
        #: The client takes many answers (framewire-stream: true).
        self.streaming = False
        #: The action's items, when it streams.
        self.stream: StreamState | None = None


class StreamState:
    """A slot's stream: its source, and what has been taken of it."""

    __slots__ = ("parts", "prefix", "pulling", "size", "source", "suffix")

    def __init__(self, source: Stream, prefix: bytes, suffix: bytes) -> None:
        self.source = source
        #: A pull is under way (its batch not yet come).
        self.pulling = False
        #: Collected items' JSON (a client that did not ask for a stream), and their bytes.
        self.parts: list[bytes] = []
        self.size = 0
        # An item's header, but for its content-length and its position.
        self.prefix = prefix
        self.suffix = suffix


class _Later:
    """The type of :data:`LATER`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LATER"


#: What a ``Call`` returns when it has reserved a slot
#: (:meth:`Answers.reserve`) to fill later.
LATER: Final = _Later()

#: How a connection's requests are answered: the response now (whatever the
#: handler returned: a non-Message is answered with handler-error), or
#: :data:`LATER`. It may raise, as a handler does.
Call = Callable[[Message], object]
#: The description a server without one of its own gives (``framewire-describe``).
NO_DESCRIPTION: Final = b'{"actions":[]}'

#: What a connection does with a result that is not a Message (given the
#: connection, the request and the result): an awaitable is run elsewhere
#: and becomes :data:`LATER`; anything else is returned as it is.
Adopt = Callable[[Any, Message, object], object]


def _expired(extensions: object) -> bool:
    ms = deadline_ms(extensions)
    return ms is not None and ms <= 0


def _no_handler(request: Message) -> object:
    raise RuntimeError("this connection has no handler (ServerConnection.bind)")


def _ready(head: bytes, content: bytes | bytearray) -> Slot:
    slot = Slot()
    slot.head, slot.content, slot.ready = head, content, True
    return slot


class Answers:
    """One connection's answers: sent (:attr:`out`), and owed but waiting
    for an earlier one (:attr:`waiting`)."""

    __slots__ = (
        "access",
        "adopt",
        "by_id",
        "call",
        "closer",
        "code",
        "description",
        "errors",
        "high_water",
        "last",
        "limit",
        "max_items",
        "metrics",
        "out",
        "owner",
        "paused",
        "peer",
        "puller",
        "responses",
        "unordered",
        "waiting",
    )

    def __init__(self, responses: ResponseCache, peer: str) -> None:
        #: Answers ready to send.
        self.out = SendQueue()
        #: Answers owed but not yet in ``out``: the first is not ready, and
        #: answers after it wait for it, whatever finished first.
        self.waiting: collections.deque[Slot] = collections.deque()
        self.responses = responses
        self.call: Call = _no_handler
        self.adopt: Adopt | None = None
        #: The server's Metrics, when they are on.
        self.metrics: Metrics | None = None
        #: Error responses this connection was sent (the log summary's figure).
        self.errors = 0
        #: The requests of the last read, for a warning that names the
        #: actions of a handler that held the loop (one store a read).
        self.last: list[Message] = []
        #: Who the answers go to, as the logs name it.
        self.peer = peer
        #: The access log, when on: a line per request.
        self.access: AccessLog | None = None
        #: The code of the last error response counted ("" since :meth:`answer` began one).
        self.code = ""
        #: What ``framewire-describe`` is answered with (JSON).
        self.description = NO_DESCRIPTION
        #: Unordered answers owed and not yet ready (each goes out when it is).
        self.unordered: list[Slot] = []
        #: Answers owed and not yet ready, by their request's id (what a
        #: framewire-cancel names).
        self.by_id: dict[str | int, Slot] = {}
        #: Streams waiting for the peer to read (above ``high_water``).
        self.paused: list[Slot] = []
        #: Unsent bytes past which a stream is not pulled; the most a
        #: collected stream's answer may hold.
        self.high_water = 1 << 20
        self.limit = 64 << 20
        #: Unsent answers past which a stream is not pulled: below the count
        #: at which the connection stops being read (max_in_flight), so that
        #: a stream never keeps its connection's next request (a cancel,
        #: say) from being read.
        self.max_items = 512
        #: Take a slot's next batch, or stop its source, where its action
        #: runs (the dispatcher's; given the connection and the slot).
        self.puller: Callable[[Any, Slot], None] | None = None
        self.closer: Callable[[Any, Slot], None] | None = None
        #: The connection these answers are for (given to the puller).
        self.owner: object = None

    @property
    def owed(self) -> int:
        """Answers owed to the peer: queued unsent, and not yet ready."""
        return self.out.responses + len(self.waiting) + len(self.unordered)

    def answer(self, requests: list[Message], owner: object) -> None:
        """Answer ``requests`` of the connection ``owner``, in order (the hot
        path of the server: one pass per request, the send queue's fields
        kept in locals and written back once)."""
        self.last = requests
        if self.access is not None:
            for request in requests:
                self._logged(request, owner)
            return
        self._answer(requests, owner)

    def _logged(self, request: Message, owner: object) -> None:
        # With the access log: one request at a time, timed, its outcome known.
        access = self.access
        assert access is not None
        started = access.clock()
        waiting = self.waiting
        before, queued = len(waiting), self.out.queued
        self.code = ""
        self._answer([request], owner)
        if len(waiting) > before:
            slot = waiting[-1]
            if not slot.ready:  # answered later: logged by fulfil
                slot.request, slot.started = request, started
                return
            sent = len(slot.head) + len(slot.content)
        else:
            sent = self.out.queued - queued
        access.line(self.peer, request, self.code, access.clock() - started, sent)

    def _answer(self, requests: list[Message], owner: object) -> None:
        out = self.out
        parts = out.parts
        marks = out.marks
        queued = start = out.queued
        waiting = self.waiting
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
                elif extended and DESCRIBE_KEY in extensions:
                    response = describe_reply(request, self.description)
                elif extended and CANCEL_KEY in extensions:
                    # Not a request: no answer of its own.
                    out.size += queued - start
                    out.queued = queued
                    self._cancel(extensions[CANCEL_KEY])
                    queued = start = out.queued
                    continue
                elif extended and DEADLINE_KEY in extensions and _expired(extensions):
                    # The client had stopped waiting when it sent it: not worth running.
                    raise DeadlineExceeded("The request's deadline had passed when it arrived.")
                else:
                    response = call(request)
                    # type() tests, not isinstance: cheaper in pure Python (the
                    # pipelined row notices), and as cheap compiled, where a
                    # request echoed back is a Decoded (core/message.py).
                    if (
                        type(response) is not Message
                        and type(response) is not Decoded
                        and adopt is not None
                        and response is not LATER
                    ):
                        response = adopt(owner, request, response)
            except BaseException as exc:
                # Whatever a handler raises, SystemExit and KeyboardInterrupt
                # included (argparse exits on bad input, so a peer can cause
                # it), is that request's handler-error. Only the server's own
                # forced stop, raised by its signal handler, unwinds the loop.
                if isinstance(exc, StopNow):
                    raise
                head, content = self.failed(exc)
            else:
                if response is LATER:
                    slot = waiting[-1]
                    if (
                        extended or slot.stream is not None
                    ):  # the slot carries the id (and its way) to the answer
                        self._later(slot, extensions)
                    continue  # a slot is reserved; the answer comes later
                if (type(response) is Message or type(response) is Decoded) and response._header.checked:
                    head = response._header.wire  # type: ignore[assignment]  # set once checked
                    content = response._content
                else:
                    head, content = self.wire(response)
            unordered = False
            if extended:
                ident = request_id(extensions)
                if ident is not None:
                    unordered = is_unordered(extensions)
                    head = with_id(head, ident, unordered)  # (the id whatever the application answered)
            if waiting and not unordered:
                waiting.append(_ready(head, content))
            else:
                parts.append(head)
                parts.append(content)
                queued += len(head) + len(content)
                marks.append(queued)
        out.size += queued - start
        out.queued = queued

    def owe(self, error: ProtocolError) -> None:
        """Answer ``error`` (the server's own), after everything owed."""
        if self.metrics is not None:
            self.metrics.action = ""  # (not a request's error)
        self.count_error(error.code)
        head, content = Message.for_error(error).wire_parts()
        if self.waiting:
            self.waiting.append(_ready(head, content))
        else:
            self.out.append(head, content)

    def reserve(self) -> Slot:
        """A place for an answer that comes later, after those owed before it."""
        slot = Slot()
        if self.metrics is not None:
            slot.action = self.metrics.action  # the request being answered
        self.waiting.append(slot)
        return slot

    def _later(self, slot: Slot, extensions: Any) -> None:
        # A request answered later: its id, whether it is unordered, whether
        # its client takes a stream; an inline stream begins here.
        ident = request_id(extensions)
        slot.ident = ident
        slot.streaming = extensions.get(STREAM_KEY) is True
        if ident is not None:
            self.by_id[ident] = slot
            if is_unordered(extensions):
                slot.unordered = True
                self.waiting.pop()  # (the slot just reserved) out of the order
                self.unordered.append(slot)
        if slot.stream is not None:  # an inline stream, its source set aside by the dispatcher
            self.streams(slot, slot.stream.source)

    def fulfil(self, slot: Slot, result: object) -> None:
        """The answer for ``slot`` came (or the handler raised ``result``):
        a Message, a stream (its items follow), a stream's batch."""
        if slot.ready:
            return  # answered already (cancelled): what came is dropped
        if self.metrics is not None:
            self.metrics.action = slot.action
        self.code = ""
        state = slot.stream
        if state is not None:
            state.pulling = False
            if isinstance(result, Batch):
                self._items(slot, state, result)
                return
        elif is_stream(result):
            self.streams(slot, as_stream(result))
            return
        if isinstance(result, BaseException):
            head, content = self.failed(result)
        else:
            head, content = self.wire(result)
        self._finish(slot, head, content)

    def streams(self, slot: Slot, source: Stream) -> None:
        """``slot``'s action streams ``source``: its items are taken when the
        connection may send them (see :mod:`framewire.server.streams`)."""
        ident = slot.ident
        tail = b"" if ident is None else b',"framewire-id":' + orjson.dumps(ident)
        if slot.unordered:
            tail += b',"framewire-unordered":true'
        order = sys.byteorder.encode()
        prefix = (
            b'{"byteorder":"'
            + order
            + b'","content-type":"text/json","content-encoding":"utf-8","content-length":'
        )
        slot.stream = StreamState(source, prefix, tail + b"}")
        if ident is not None:
            self.by_id[ident] = slot
        self._begin(slot)

    def _begin(self, slot: Slot) -> None:
        # Pull a stream that may send now: unordered, or first in line.
        state = slot.stream
        if state is None or state.pulling or slot.ready:
            return
        if slot.unordered or (self.waiting and self.waiting[0] is slot):
            self._pull(slot, state)

    def _pull(self, slot: Slot, state: StreamState) -> None:
        if self.puller is None:
            return
        state.pulling = True
        self.puller(self.owner, slot)

    def _head(self, state: StreamState, content: bytes, position: bytes) -> bytes:
        raw = (
            state.prefix
            + str(len(content)).encode()
            + b',"framewire-stream":"'
            + position
            + b'"'
            + state.suffix
        )
        return len(raw).to_bytes(2, "big") + raw

    def _items(self, slot: Slot, state: StreamState, batch: Batch) -> None:
        out = self.out
        if slot.streaming:
            for item in batch.items:
                if isinstance(item, Message):
                    head, content = self.wire(item)
                    extra: dict[str, Any] = {STREAM_KEY: "item"}
                    if slot.ident is not None:
                        extra[ID_KEY] = slot.ident
                    if slot.unordered:
                        extra[UNORDERED_KEY] = True
                    head = with_extensions(head, extra)
                else:
                    marks, value = None, item
                    if item.__class__ is Event:
                        if item.dropped:
                            marks = {DROPPED_KEY: item.dropped}  # the first after a gap
                    elif item.__class__ is Item:
                        marks, value = item.extensions, item.value
                    try:
                        content = Stream.content(value)
                    except Exception as exc:
                        self._stop(slot, state, exc)
                        return
                    head = self._head(state, content, b"item")
                    if marks is not None:
                        head = with_extensions(head, marks)
                out.append(head, content)
        else:
            limit = self.limit
            for item in batch.items:
                value = item.value if item.__class__ is Item else item
                try:
                    part = Stream.content(value)[10:-1]  # (the item's JSON, out of {"result":...})
                except Exception as exc:
                    self._stop(slot, state, exc)
                    return
                state.parts.append(part)
                state.size += len(part) + 1
                if state.size + 13 > limit:
                    what = f"its items came to more than the {limit} bytes an answer may hold"
                    self._stop(slot, state, HandlerError(f"The stream asked for as one answer: {what}."))
                    return
        if batch.error is not None:
            self._stop(slot, state, batch.error)
            return
        if batch.done:
            if slot.streaming:
                content = Stream.final_content(batch.final)
                head = self._head(state, content, b"end")
            else:
                content = b'{"result":[' + b",".join(state.parts) + b"]}"
                head = self._tagged(slot, Message(content, "text/json", "utf-8").wire_parts()[0])
            slot.stream = None
            self._finish(slot, head, content, tagged=True)
            return
        if slot.streaming and (out.size >= self.high_water or len(out.marks) >= self.max_items):
            self.paused.append(slot)  # the peer reads slower than the stream: it waits
            return
        self._pull(slot, state)

    def resume(self) -> None:
        """The peer has read: streams paused for it are taken again."""
        paused = self.paused[:]
        self.paused.clear()
        for slot in paused:
            state = slot.stream
            if state is not None and not slot.ready:
                self._pull(slot, state)

    def _stop(self, slot: Slot, state: StreamState, exc: BaseException) -> None:
        # A stream ends in error: its source is stopped, the error ends it.
        if self.closer is not None and not state.source.closed:
            self.closer(self.owner, slot)
        slot.stream = None
        head, content = self.failed(exc)
        self._finish(slot, head, content)

    def _tagged(self, slot: Slot, head: bytes) -> bytes:
        # An answer's header with its request's id (and way) added.
        if slot.ident is None:
            return head
        return with_id(head, slot.ident, slot.unordered)

    def _finish(self, slot: Slot, head: bytes, content: bytes | bytearray, tagged: bool = False) -> None:
        # ``slot``'s last answer is ``head`` + ``content``: out now if it may go.
        slot.head = head if tagged else self._tagged(slot, head)
        slot.content = content
        slot.ready = True
        slot.stream = None
        if slot.ident is not None and self.by_id.get(slot.ident) is slot:
            del self.by_id[slot.ident]
        if slot.request is not None and self.access is not None:
            access = self.access
            sent = len(slot.head) + len(slot.content)
            access.line(self.peer, slot.request, self.code, access.clock() - slot.started, sent)
            slot.request = None
        out = self.out
        if slot.unordered:
            self.unordered.remove(slot)
            out.append(slot.head, slot.content)
            return
        waiting = self.waiting
        while waiting and waiting[0].ready:
            first = waiting.popleft()
            out.append(first.head, first.content)
        if waiting:
            self._begin(waiting[0])  # a stream whose turn it now is

    def _cancel(self, ident: object) -> None:
        # framewire-cancel: the request of that id is stopped and answered
        # ``cancelled``, if it is not answered yet; else nothing.
        if not isinstance(ident, str | int) or isinstance(ident, bool):
            return
        slot = self.by_id.get(ident)
        if slot is None or slot.ready:
            return
        if slot.cancel is not None:
            slot.cancel()
        state = slot.stream
        if state is not None and self.closer is not None and not state.source.closed:
            self.closer(self.owner, slot)
        if slot in self.paused:
            self.paused.remove(slot)
        self.code = ""
        head, content = self.failed(Cancelled(f"Request {ident!r} was cancelled by its client."))
        self._finish(slot, head, content)

    def drop(self) -> None:
        """The peer is gone: nothing more is sent, and the work still under
        way for it is cancelled (streams' sources stopped)."""
        # The ways of answering may refer back to the connection (a handler
        # that takes the peer, the thread pool's submit): dropped, so that a
        # closed connection is freed at once, not by the cycle collector.
        self.call = _no_handler
        self.adopt = None
        self.out.clear()
        for slot in [*self.waiting, *self.unordered]:
            if slot.cancel is not None:
                slot.cancel()
            state = slot.stream
            if state is not None and self.closer is not None and not state.source.closed:
                self.closer(self.owner, slot)
            slot.stream = None
            slot.ready = True  # whatever comes for it now is dropped
        self.waiting.clear()
        self.unordered.clear()
        self.paused.clear()
        self.by_id.clear()
        self.puller = self.closer = None
        self.owner = None

    def count_error(self, code: str) -> None:
        """An error response with ``code`` is being sent."""
        self.errors += 1
        self.code = code
        if self.metrics is not None:
            self.metrics.error(code)

    def failed(self, exc: BaseException) -> tuple[bytes, bytes | bytearray]:
        """The answer to a handler that raised ``exc``."""
        if isinstance(exc, ProtocolError):
            # bad-content and the like, raised while reading the request
            # (Message.json()); a framing code cannot come from a handler.
            if exc.framing:
                exc = HandlerError(f"The handler raised {exc.code} on a well-framed request.")
            self.count_error(exc.code)
            return Message.for_error(exc).wire_parts()
        return self._handler_failed(f"raised {type(exc).__name__}", exc)

    def _handler_failed(self, what: str, exc: BaseException | None = None) -> tuple[bytes, bytes | bytearray]:
        log.error("handler %s on a request from %s", what, self.peer, exc_info=exc)
        self.count_error(HandlerError.code)
        return Message.for_error(HandlerError(f"The application's handler {what}.")).wire_parts()

    def wire(self, response: object) -> tuple[bytes, bytes | bytearray]:
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

    def _sendable(self, header: Header) -> bytes:
        # Headers without extensions are cached by their fields: a handler
        # building the same shape of response each time encodes it once.
        if header.extensions:
            return header.sendable()
        key = (header.content_type, header.content_encoding, header.byteorder, header.content_length)
        wire = self.responses.get(key)
        if wire is None:
            wire = header.sendable()
            self.responses.put(key, wire, 2 * len(wire) + 256)
        else:
            header.wire = wire
            header.checked = True
        return wire
