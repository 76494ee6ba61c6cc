"""The client engine: one client connection's whole policy, with no I/O.

The server's engine (:mod:`framewire.server.engine`) has its twin here. A
:class:`ClientConnection` turns requests into bytes (tagged with ids and
deadlines as the options say) and bytes from the server into answers, each
handed to whoever it is owed to, in the order the requests went out; it
decides what an unsolicited answer, a mismatched id, a wrong ping echo, an
end of stream or a loss means for every call in flight (the connection is
failed, with one readable error, and must be aborted), when a heartbeat ping
is due and when the connection has lived long enough. It never touches a
socket or a clock: the time is given.

The blocking client (:mod:`framewire.client.blocking`) and the asyncio
client (:mod:`framewire.client.aio`) only do the I/O around it, so their
behaviour is the same by construction.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from typing import Any, Final

from framewire.client.options import ClientOptions
from framewire.client.retry import retire_at
from framewire.core.decoder import Decoder, encode_many
from framewire.core.errors import ConnectionClosed, ProtocolError
from framewire.core.message import Message
from framewire.core.probe import (
    CANCEL_KEY,
    DEADLINE_KEY,
    ID_KEY,
    PING_KEY,
    STREAM_KEY,
    UNORDERED_KEY,
    probe,
    request_id,
    with_extensions,
)

__all__ = ["PROBE", "ClientConnection"]


class _Probe:
    """The type of :data:`PROBE`."""

    def __repr__(self) -> str:
        return "PROBE"


#: Whom a ping's echo is owed to when nobody waits for it by name (a heartbeat).
PROBE: Final = _Probe()


class _Owed:
    """One answer owed by the server (many, for a stream): to whom, and what
    it must carry."""

    __slots__ = ("cancelled", "ident", "owner", "sequence", "stream", "unordered")

    def __init__(
        self,
        owner: object,
        ident: int | None,
        sequence: int | None = None,
        stream: bool = False,
        unordered: bool = False,
    ) -> None:
        self.owner = owner
        self.ident = ident  # the framewire-id it must carry (with ids)
        self.sequence = sequence  # a ping's: the echo it must carry
        self.stream = stream  # items, then an end (or one answer, from a server that does not stream)
        self.unordered = unordered  # may come ahead of earlier answers
        self.cancelled = False  # what still comes for it is dropped


class ClientConnection:
    """The sans-I/O state of one client connection (see the module's text)."""

    __slots__ = (
        "_by_id",
        "_decoder",
        "_next_id",
        "_owed",
        "_tls",
        "failure",
        "knows_streams",
        "last_used",
        "options",
        "retire_at",
        "unordered",
        "where",
    )

    def __init__(
        self, options: ClientOptions, now: float, where: str = "the server", unordered: bool = False
    ) -> None:
        self.options = options
        #: Requests go out with ``framewire-unordered`` (and ids), answers matched by id.
        self.unordered = unordered if options.unordered is None else options.unordered
        #: The server has shown it knows streams and out-of-order answers
        #: (so a cancel will not be answered as a request).
        self.knows_streams = False
        self._by_id: dict[int, _Owed] = {}
        #: How errors name the server.
        self.where = where
        self._tls = options.ssl_context is not None
        self._decoder = Decoder(
            max_header_size=options.max_header_size, max_content_length=options.max_content_length
        )
        self._owed: collections.deque[_Owed] = collections.deque()
        self._next_id = 0
        #: Why the connection cannot be used any more (None: it can). Every
        #: call in flight has been failed with it; the driver aborts it.
        self.failure: BaseException | None = None
        #: When the connection last carried an answer (or was opened).
        self.last_used = now
        #: When it is to be replaced, between calls (``max_connection_age``).
        self.retire_at = retire_at(now, options.max_connection_age)

    # -- what the driver reads ------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Answers owed by the server."""
        return len(self._owed)

    def owes(self, owner: object) -> bool:
        """Whether an answer is still owed to ``owner``."""
        return any(owed.owner is owner for owed in self._owed)

    def reusable(self, now: float) -> bool:
        """Whether a new call may use this connection: not failed, and not
        old enough to be replaced (once nothing is owed on it)."""
        return self.failure is None and (bool(self._owed) or now < self.retire_at)

    def heartbeat_in(self, now: float) -> float:
        """Seconds until a heartbeat ping is due (0 or less: now; ``inf``:
        never, or not while answers are owed: the connection is not idle)."""
        beat = self.options.heartbeat
        if not beat or self.failure is not None:
            return math.inf
        if self._owed:
            return beat
        return self.last_used + beat - now

    # -- sending --------------------------------------------------------------

    def send(
        self,
        messages: list[Message],
        owners: Iterable[object],
        deadline: float | None,
        now: float,
        stream: bool = False,
    ) -> bytes:
        """The bytes of ``messages`` (tagged as the options say; ``deadline``:
        the call's, on the monotonic clock), their answers owed to
        ``owners``, one each (``stream``: many each, until an end), matched
        in order, or by id when unordered. Raises the connection's failure."""
        if self.failure is not None:
            raise self.failure
        options = self.options
        ms = None if not options.deadlines or deadline is None else (deadline - now) * 1000
        unordered = self.unordered
        first = None
        if options.ids or unordered or stream:
            first = self._next_id + 1
            self._next_id += len(messages)
        owed = self._owed
        by_id = self._by_id
        for index, owner in enumerate(owners):
            ident = None if first is None else first + index
            entry = _Owed(owner, ident, None, stream, unordered)
            owed.append(entry)
            if ident is not None:
                by_id[ident] = entry
        if first is None and ms is None:
            return encode_many(messages)
        # Each request's header with its tags written in (no second Message
        # made a request: the asyncio client tags every one).
        parts: list[bytes | bytearray] = []
        tail = b""  # the tags after the id, the same for every request
        if ms is not None:
            tail += b',"framewire-deadline":' + str(max(0, round(ms))).encode()
        if unordered:
            tail += b',"framewire-unordered":true'
        if stream:
            tail += b',"framewire-stream":true'
        tail += b"}"
        for index, message in enumerate(messages):
            head, content = message.wire_parts()
            if message.extensions:  # (a key of its own may be one of the tags: written the slow way)
                tags: dict[str, Any] = {} if first is None else {ID_KEY: first + index}
                if ms is not None:
                    tags[DEADLINE_KEY] = max(0, round(ms))
                if unordered:
                    tags[UNORDERED_KEY] = True
                if stream:
                    tags[STREAM_KEY] = True
                head = with_extensions(head, tags)
            else:  # the four required keys alone: the tags go before the closing brace
                raw = head[2:-1] + (
                    b"" if first is None else b',"framewire-id":' + str(first + index).encode()
                )
                raw += tail
                head = len(raw).to_bytes(2, "big") + raw
            parts.append(head)
            parts.append(content)
        return b"".join(parts)

    def cancel(self, owner: object) -> bytes | None:
        """Stop the request owed to ``owner`` (a stream left early): the bytes
        of a ``framewire-cancel`` to send, what still comes for it being
        dropped; None when the server has not shown it knows the extension
        (the connection must then be aborted to stop the work)."""
        for entry in self._owed:
            if entry.owner is owner:
                if entry.ident is None or not self.knows_streams:
                    return None
                entry.cancelled = True
                return Message(b"null", "text/json", "utf-8", extensions={CANCEL_KEY: entry.ident}).encode()
        return b""  # nothing owed: nothing to stop

    def ping(self, owner: object = PROBE) -> bytes:
        """The bytes of a ``framewire-ping`` probe, its echo owed to ``owner``."""
        if self.failure is not None:
            raise self.failure
        self._next_id += 1
        self._owed.append(_Owed(owner, None, self._next_id))
        return probe(self._next_id).encode()

    # -- receiving ------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[tuple[object, Message]]:
        """Bytes from the server (``b""``: it closed its side): the answers
        they complete, each with whom it is owed to. Anything wrong fails
        the connection (:attr:`failure`) after the answers before it."""
        if self.failure is not None:
            return []
        try:
            messages = self._decoder.feed(data)
        except ProtocolError as exc:
            self.fail(exc)
            return []
        answered: list[tuple[object, Message]] = []
        for message in messages:
            expected = self._match(message)
            if expected is None:
                self.fail(ProtocolError(f"{self.where} sent an answer nobody asked for"))
                return answered
            problem = _mismatch(expected, message, self.options.ids)
            if problem is not None:
                self.fail(ProtocolError(problem))
                return answered
            if expected.stream and message._header.extensions.get(STREAM_KEY) == "item":
                self.knows_streams = True
                if not expected.cancelled:
                    answered.append((expected.owner, message))
                continue  # more to come for it
            self._settled(expected)
            if not expected.cancelled:
                answered.append((expected.owner, message))
        if messages:
            self.last_used = now
        if not data:
            self.fail(self._closed_early())
        return answered

    def _match(self, message: Message) -> _Owed | None:
        # Whom ``message`` answers: by id when it carries one of ours, else
        # the oldest answer owed (a server that does not echo ids answers in
        # order); a ping's echo by its sequence.
        owed = self._owed
        if not owed:
            return None
        extensions = message._header.extensions
        if extensions:
            if extensions.get(UNORDERED_KEY) is True:
                self.knows_streams = True
            ident = request_id(extensions)
            if ident is not None and self._by_id:
                found = self._by_id.get(ident)  # type: ignore[arg-type]
                if found is not None:
                    return found
            sequence = extensions.get(PING_KEY)
            if sequence is not None:
                for entry in owed:
                    if entry.sequence == sequence:
                        return entry
        return owed[0]

    def _settled(self, entry: _Owed) -> None:
        # Nothing more is owed to ``entry``.
        owed = self._owed
        if owed[0] is entry:
            owed.popleft()
        else:
            owed.remove(entry)
        if entry.ident is not None:
            self._by_id.pop(entry.ident, None)

    def _closed_early(self) -> ConnectionClosed:
        text = f"{self.where} closed the connection before answering"
        if self._tls:
            # TLS 1.3 ends the client's handshake before the server checks
            # its certificate: a refusal comes as this close.
            text += (
                " (a TLS server that requires a client certificate closes like this"
                " when it is missing or refused)"
            )
        return ConnectionClosed(text)

    # -- failing ----------------------------------------------------------------

    def lost(self, exc: BaseException | None) -> None:
        """The transport failed (``exc``) or ended (None) under the calls."""
        if exc is None:
            self.fail(self._closed_early())
        elif isinstance(exc, ConnectionClosed | ProtocolError):  # (IncompleteMessage is one)
            self.fail(exc)
        else:
            self.fail(ConnectionResetError(f"{self.where} reset the connection ({exc})"))

    def fail(self, exc: BaseException) -> None:
        """The connection cannot be used any more: ``exc`` for every call in
        flight (see :meth:`take_failed`)."""
        if self.failure is None:
            self.failure = exc

    def take_failed(self) -> list[object]:
        """After a failure: the owners still owed an answer, which will never
        come (each is to be failed with :attr:`failure`)."""
        owners = [owed.owner for owed in self._owed if not owed.cancelled]
        self._owed.clear()
        self._by_id.clear()
        return owners

    def abandon(self) -> list[object]:
        """The driver ends the connection (a timeout, a close, an abort):
        the calls in flight are failed with a :class:`ConnectionClosed`."""
        self.fail(ConnectionClosed(f"{self.where}: the connection was closed by this client"))
        return self.take_failed()


def _mismatch(expected: _Owed, message: Message, strict: bool) -> str | None:
    # Why ``message`` cannot be the answer ``expected`` (None: it is);
    # ``strict``: ids were asked for, so an answer must carry its own.
    if expected.sequence is not None:
        if message.get(PING_KEY) != expected.sequence:
            return "the reply to a ping is not the server's echo of it"
    elif expected.ident is not None:
        came = message.get(ID_KEY)
        # Without an id, from a server that does not know them: in order,
        # which is right for a request that did not need them.
        tolerated = came is None and not strict and (expected.unordered or expected.stream)
        if came != expected.ident and not tolerated:
            return (
                f"the answer to request {expected.ident!r} carries framewire-id {came!r}: "
                "the connection is out of step"
            )
    return None
