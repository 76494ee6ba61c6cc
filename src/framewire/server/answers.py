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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from framewire.core.cache import BoundedCache
from framewire.core.errors import DeadlineExceeded, HandlerError, ProtocolError
from framewire.core.message import Decoded, Header, Message
from framewire.core.probe import (
    DEADLINE_KEY,
    DESCRIBE_KEY,
    PING_KEY,
    deadline_ms,
    describe_reply,
    probe_reply,
    request_id,
    with_id,
)
from framewire.io.sendqueue import SendQueue
from framewire.server.stopping import StopNow

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

    __slots__ = ("action", "cancel", "content", "head", "ident", "ready", "request", "started")

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
        "call",
        "code",
        "description",
        "errors",
        "metrics",
        "out",
        "peer",
        "responses",
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
        #: Who the answers go to, as the logs name it.
        self.peer = peer
        #: The access log, when on: a line per request.
        self.access: AccessLog | None = None
        #: The code of the last error response counted ("" since :meth:`answer` began one).
        self.code = ""
        #: What ``framewire-describe`` is answered with (JSON).
        self.description = NO_DESCRIPTION

    @property
    def owed(self) -> int:
        """Answers owed to the peer: queued unsent, and not yet ready."""
        return self.out.responses + len(self.waiting)

    def answer(self, requests: list[Message], owner: object) -> None:
        """Answer ``requests`` of the connection ``owner``, in order (the hot
        path of the server: one pass per request, the send queue's fields
        kept in locals and written back once)."""
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
                    if extended:  # the reserved slot carries the id to the answer
                        waiting[-1].ident = request_id(extensions)
                    continue  # a slot is reserved; the answer comes later
                if (type(response) is Message or type(response) is Decoded) and response._header.checked:
                    head = response._header.wire  # type: ignore[assignment]  # set once checked
                    content = response._content
                else:
                    head, content = self.wire(response)
            if extended:
                ident = request_id(extensions)
                if ident is not None:
                    head = with_id(head, ident)  # whatever the application answered
            if waiting:
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

    def fulfil(self, slot: Slot, result: object) -> None:
        """The answer for ``slot`` came (or the handler raised ``result``)."""
        if self.metrics is not None:
            self.metrics.action = slot.action
        self.code = ""
        if isinstance(result, BaseException):
            slot.head, slot.content = self.failed(result)
        else:
            slot.head, slot.content = self.wire(result)
        if slot.ident is not None:
            slot.head = with_id(slot.head, slot.ident)
        slot.ready = True
        if slot.request is not None and self.access is not None:
            access = self.access
            sent = len(slot.head) + len(slot.content)
            access.line(self.peer, slot.request, self.code, access.clock() - slot.started, sent)
            slot.request = None
        waiting = self.waiting
        out = self.out
        while waiting and waiting[0].ready:
            first = waiting.popleft()
            out.append(first.head, first.content)

    def drop(self) -> None:
        """The peer is gone: nothing more is sent, and the work still under
        way for it is cancelled."""
        # The ways of answering may refer back to the connection (a handler
        # that takes the peer, the thread pool's submit): dropped, so that a
        # closed connection is freed at once, not by the cycle collector.
        self.call = _no_handler
        self.adopt = None
        self.out.clear()
        for slot in self.waiting:
            if slot.cancel is not None:
                slot.cancel()
        self.waiting.clear()

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
