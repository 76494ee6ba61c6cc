"""The sans-I/O protocol core: bytes in, messages out; messages in, bytes out.

Nothing here touches a socket, a clock or a thread. :class:`Decoder` turns
the byte stream of one direction of one connection into :class:`Message`
objects, whatever way the stream was split; :func:`encode` and
:func:`encode_many` do the reverse.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable
from typing import Any, Final

import orjson

from framewire.core import limits
from framewire.core.buffers import uninitialized
from framewire.core.cache import BoundedCache, footprint
from framewire.core.errors import (
    BadHeader,
    BadHeaderLength,
    BadHeaderValue,
    ContentTooLarge,
    HeaderTooLarge,
    IncompleteMessage,
    MissingHeaderKey,
    ProtocolError,
)
from framewire.core.frozen import FrozenDict, freeze
from framewire.core.message import (
    BYTEORDERS,
    NATIVE,
    NO_EXTENSIONS,
    REQUIRED_KEYS,
    Decoded,
    Header,
    Message,
    decoded,
)
from framewire.core.probe import DEADLINE_KEY, ID_KEY

__all__ = ["Decoder", "HeaderCache", "State", "encode", "encode_many", "parse_header"]

#: Parsed and validated headers by their exact bytes, with a budget in bytes.
#: A server makes one and shares it among its connections' decoders: the
#: entries are immutable and independent of any decoder's limits (the
#: content limit is checked after the look-up).
HeaderCache = BoundedCache[bytes, Header]

_MIN_HEADER_SIZE: Final = 2  # the smallest JSON object, "{}"
_REQUIRED: Final = frozenset(REQUIRED_KEYS)

# A run of 20 digits or more: an integer that may be beyond 64 bits, which
# orjson would read as an inexact float (or refuse as infinite).
_LONG_NUMBER: Final = re.compile(rb"\d{20}")
_DIGITS: Final = b"0123456789"


def _long_number(data: bytes) -> bool:
    # Whether ``data`` holds a run of 20 digits. Counting the digits first
    # (one C pass) spares the regex, a microsecond a header, for the usual
    # header with fewer than 20 digits in all.
    return len(data) - len(data.translate(None, _DIGITS)) >= 20 and _LONG_NUMBER.search(data) is not None


# Python converts at most this many digits to an int (the conversion is
# quadratic beyond: sys.get_int_max_str_digits); longer ones are too long.
_MAX_DIGITS: Final = 4300


class _TooLong:
    """Stands for an integer of more than _MAX_DIGITS digits."""

    def __init__(self, text: str) -> None:
        self.negative = text.startswith("-")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads_exact(data: bytes) -> Any:
    """The header parsed with the standard library, which reads integers of
    any size exactly; only for the rare header with a 20-digit number."""
    too_long: list[_TooLong] = []

    def parse_int(text: str) -> int | _TooLong:
        if len(text) <= _MAX_DIGITS:
            return int(text)
        too_long.append(_TooLong(text))
        return too_long[-1]

    try:
        obj = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant, parse_int=parse_int)
        if not too_long:
            # Refuse what orjson refuses on the usual path: a lone surrogate
            # escape (\ud800) is valid JSON text but no Unicode string.
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise BadHeader("The header is not valid UTF-8 (or escapes a lone surrogate).") from None
    except (ValueError, RecursionError) as exc:
        raise BadHeader(f"The header is not valid JSON ({exc}).") from None
    if too_long:
        length = obj.get("content-length") if isinstance(obj, dict) else None
        if isinstance(length, _TooLong) and not length.negative:
            raise ContentTooLarge(f"content-length has more than {_MAX_DIGITS} digits.")
        raise BadHeaderValue(f"The header holds an integer of more than {_MAX_DIGITS} digits.")
    return obj


class State(enum.Enum):
    """Where a :class:`Decoder` stands in the message it is receiving."""

    #: Waiting for the 2-byte header length (between messages, or after 1 byte).
    LENGTH = "length"
    #: Waiting for the rest of the JSON header.
    HEADER = "header"
    #: Waiting for the rest of the content.
    CONTENT = "content"
    #: The stream ended cleanly, between two messages.
    CLOSED = "closed"
    #: A protocol error was found; the decoder raises it on every feed.
    FAILED = "failed"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: The bytes a JSON object may begin with: JSON's whitespace, then ``{``.
_HEADER_STARTS: Final = frozenset(b"{ \t\r\n")


def _not_an_object(first: int, length: bytes) -> str:
    text = f"The header must be a JSON object; it begins with byte 0x{first:02x}."
    if length[:1] == b"\x16" and length[1:2] == b"\x03":
        text += " (These are the first bytes of a TLS handshake: TLS where plain framewire was expected.)"
    elif length == b"HT" and first == 0x54:
        text += " (These are the first bytes of an HTTP message: is this a framewire server?)"
    elif length in (b"GE", b"PO", b"PU", b"HE") and first in b"TSAE":
        text += " (These are the first bytes of an HTTP request: this is not an HTTP server.)"
    return text


#: Extensions whose value is new on every request (an id, a deadline, a
#: trace): a header that carries one is never seen again, so it is not
#: cached, where it would only push out the headers that do come back.
PER_REQUEST_KEYS: Final = frozenset({ID_KEY, DEADLINE_KEY, "framewire-cancel", "traceparent", "tracestate"})


def _reusable(header: Header) -> bool:
    extensions = header.extensions
    return not extensions or PER_REQUEST_KEYS.isdisjoint(extensions)


def parse_header(data: bytes) -> Header:
    """Parse and validate one JSON header (without its 2-byte length).

    Raises :class:`BadHeader`, :class:`MissingHeaderKey` or
    :class:`BadHeaderValue`. The content limit is the caller's to check.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson refuses invalid UTF-8, NaN/Infinity and deep nesting itself,
        # and integers too large for a double.
        if not _long_number(data):
            raise BadHeader(f"The header is not valid UTF-8 JSON ({exc.msg}).") from None
        obj = _loads_exact(data)
    else:
        if _long_number(data):
            obj = _loads_exact(data)  # integers beyond 64 bits, kept exact
    if type(obj) is not dict:
        raise BadHeader(f"The header is a JSON {type(obj).__name__}, not an object.")
    missing = [key for key in REQUIRED_KEYS if key not in obj]
    if missing:
        raise MissingHeaderKey(f"The header lacks the required key {missing[0]!r}.")
    length = obj["content-length"]
    if type(length) is not int or length < 0:
        raise BadHeaderValue(f"content-length must be an integer >= 0, not {_short(length)}.")
    content_type = obj["content-type"]
    if type(content_type) is not str or not content_type:
        raise BadHeaderValue(f"content-type must be a non-empty string, not {_short(content_type)}.")
    encoding = obj["content-encoding"]
    if type(encoding) is not str or not encoding:
        raise BadHeaderValue(f"content-encoding must be a non-empty string, not {_short(encoding)}.")
    byteorder = obj["byteorder"]
    if byteorder not in BYTEORDERS:
        raise BadHeaderValue(f"byteorder must be 'little' or 'big', not {_short(byteorder)}.")
    if len(obj) > 4:
        # Read-only all the way down: parsed headers are shared (see frozen.py).
        # The usual extensions (an id, a flag) are flat: copied once, here,
        # where the check is compiled (freeze's own check, a generator, was
        # a tenth of the server's time on an unordered call).
        rest: dict[str, Any] = {}
        flat = True
        for key, value in obj.items():
            if key not in _REQUIRED:
                rest[key] = value
                if type(value) is dict or type(value) is list:
                    flat = False
        extensions: Any = FrozenDict(rest) if flat else freeze(rest)
    else:
        extensions = NO_EXTENSIONS
    return Header(
        content_type,
        encoding,
        byteorder,
        length,
        extensions,
        len(data).to_bytes(2, "big") + data,
    )


# The states as module constants: reading an Enum member through its class
# goes through the enum metaclass, and feed() checks one per call.
_LENGTH: Final[State] = State.LENGTH
_HEADER_STATE: Final[State] = State.HEADER
_CONTENT: Final[State] = State.CONTENT
_CLOSED: Final[State] = State.CLOSED
_new_message: Final = Message.__new__


class Decoder:
    """Receive state for one direction of one connection.

    Call :meth:`feed` with whatever bytes arrived (``b""`` for end of
    stream); it returns the messages those bytes completed, in order. The
    result is the same however the stream is split.

    Limits are checked at the earliest byte that shows a breach: the header
    length as soon as its 2 bytes are in, ``content-length`` as soon as the
    header is parsed, before any content is buffered.

    On a protocol error the decoder fails for good (``state`` is
    :attr:`State.FAILED`, ``error`` holds the error) and every later
    :meth:`feed` raises it. If the same feed also completed messages before
    the error, those are returned first and ``error`` is set: check it after
    handling them (a server answers them, then reports the error).
    """

    __slots__ = (
        "_cache",
        "_direct",
        "_error",
        "_header",
        "_header_size",
        "_last_head",
        "_last_header",
        "_max_content_length",
        "_max_header_size",
        "_need",
        "_pending",
        "_pending_size",
        "_state",
        "messages_decoded",
    )

    def __init__(
        self,
        *,
        max_header_size: int = limits.MAX_HEADER_SIZE,
        max_content_length: int = limits.MAX_CONTENT_LENGTH,
        cache: HeaderCache | None = None,
    ) -> None:
        if not _MIN_HEADER_SIZE <= max_header_size <= 0xFFFF:
            raise ValueError(f"max_header_size must be within 2..65535, not {max_header_size}")
        if max_content_length < 0:
            raise ValueError(f"max_content_length must be >= 0, not {max_content_length}")
        self._max_header_size = max_header_size
        self._max_content_length = max_content_length
        # A server passes one cache to all its decoders; alone, a decoder
        # keeps a small one of its own.
        self._cache: HeaderCache = HeaderCache(limits.DECODER_CACHE_BYTES) if cache is None else cache
        self._state = _LENGTH
        self._error: ProtocolError | None = None
        # Bytes of the step not yet complete, kept as the chunks they came in:
        # joined once when enough are there, so a trickle costs O(n), not O(n^2).
        self._pending: list[bytes] = []  # pragma: no mutate
        self._pending_size = 0
        self._need = 2  # pragma: no mutate  # (set before it is read)
        self._header_size = 0  # pragma: no mutate  # (set before it is read)
        self._header: Header | None = None
        # The length and header bytes of the last message whose header was
        # read (when short enough to cache), and that header: a message that
        # begins with the same bytes has the same header, known valid here.
        self._last_head: bytes | None = None  # pragma: no mutate  # (tested before use)
        self._last_header: Header | None = None  # pragma: no mutate  # (set with _last_head)
        # The buffer a large content is being read into (see direct_buffer):
        # it becomes the message's content, so the content is never joined.
        self._direct: bytearray | None = None
        #: How many messages this decoder has returned.
        self.messages_decoded = 0

    @property
    def state(self) -> State:
        """The receive state (see :class:`State`)."""
        return self._state

    @property
    def error(self) -> ProtocolError | None:
        """The protocol error that failed this decoder, if any."""
        return self._error

    @property
    def buffered(self) -> int:
        """Bytes held of a message not yet complete."""
        return self._pending_size

    @property
    def in_message(self) -> bool:
        """True while part of a message has arrived but not all of it."""
        return self._pending_size > 0 or self._state is _HEADER_STATE or self._state is _CONTENT

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Take the next bytes of the stream; return the messages they complete.

        ``b""`` means end of stream: it raises :class:`IncompleteMessage` if
        a message was cut short.
        """
        if self._error is not None:
            raise self._error
        if not data:
            return self._end()
        if self._state is _CLOSED:
            raise RuntimeError("feed() after the end of the stream")
        if self._direct is not None:
            return self._feed_direct(data)
        if type(data) is not bytes:  # pragma: no mutate  # (a copy of bytes is the same bytes)
            data = bytes(data)
        if not self._pending and self._state is _LENGTH:  # pragma: no mutate
            # The fast path: exactly one whole message whose header was seen
            # before (a request/response exchange); anything else is scanned.
            # The last message's header is matched by its bytes in place, with
            # no slice, hash or look-up; another cached one, by the cache. (A
            # fast path and a cache only save work: their mutants that miss
            # fall through to _scan, which gives the same messages, so they
            # are not mutated; docs/mutation.md.)
            head = self._last_head  # pragma: no mutate  # (None: the cache's path, the same message)
            if head is not None and data.startswith(head):  # pragma: no mutate
                header = self._last_header
                assert header is not None
                if len(head) + header.content_length == len(data):  # pragma: no mutate
                    self.messages_decoded += 1
                    return [decoded(header, data[len(head) :])]
            else:
                end = len(data)
                size = (data[0] << 8) | data[1] if end >= 2 else 0  # pragma: no mutate
                key = data[2 : 2 + size]  # pragma: no mutate
                header = self._cache.get(key) if size >= _MIN_HEADER_SIZE else None  # pragma: no mutate
                if (
                    header is not None
                    and 2 + size + header.content_length == end  # pragma: no mutate
                    and size <= self._max_header_size
                    and header.content_length <= self._max_content_length
                ):
                    self._last_head = data[: 2 + size]  # pragma: no mutate
                    self._last_header = header  # pragma: no mutate
                    self.messages_decoded += 1
                    return [decoded(header, data[2 + size :])]
        out: list[Message] = []
        if not self._pending:  # (the usual case: no call to join nothing)
            return Decoder._scan(self, data, out)
        buf = Decoder._joined(self, data, out)
        if buf is None:
            return out
        return Decoder._scan(self, buf, out)

    def _joined(self, data: bytes, out: list[Message]) -> bytes | None:
        # The bytes to scan: ``data`` after those held of an unfinished step,
        # joined once enough are in (a trickle costs O(n), not O(n^2)). A
        # content completed here goes to ``out``. None: nothing more to scan.
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size < self._need:
            return None
        if self._state is not _CONTENT:
            buf = b"".join(self._pending)
            self._pending = []  # pragma: no mutate
            return buf
        # Join exactly the content: joining everything and slicing the
        # content out would copy a large content twice.
        header = self._header
        assert header is not None
        content, buf = _join_exact(self._pending, header.content_length)
        out.append(decoded(header, content))
        self._state = _LENGTH
        self._pending = []  # pragma: no mutate  # (only read when not empty)
        self._pending_size = 0
        if buf:
            return buf
        self.messages_decoded += 1
        return None

    def _scan(self, buf: bytes, out: list[Message]) -> list[Message]:
        # The per-message loop: every whole message in ``buf`` to ``out``, the
        # rest kept. Its state lives in locals, written back once (a look-up
        # per test would cost a noticeable part of it).
        append = out.append
        new_message = _new_message
        native = NATIVE  # pragma: no mutate  # (see message.NATIVE; each build's tests run one branch)
        pos = 0
        end = len(buf)
        state: State = self._state
        header = self._header
        need = 2  # pragma: no mutate  # (set before it is read)
        last_head = self._last_head  # pragma: no mutate  # (None: the header is read again)
        last_header = self._last_header
        last_length = 0 if last_header is None else last_header.content_length  # pragma: no mutate
        last_size = 0 if last_head is None else len(last_head)  # pragma: no mutate  # (a miss: read as usual)
        length_state, header_state, content_state = _LENGTH, _HEADER_STATE, _CONTENT
        try:
            while True:
                if state is length_state:
                    if last_head is not None and buf[pos : pos + last_size] == last_head:  # pragma: no mutate
                        # The same length and header bytes as the last message (a
                        # stream of like ones): no look-up, limits checked before.
                        pos += last_size
                        header = last_header
                        stop = pos + last_length
                        if stop > end:  # pragma: no mutate  # (the same message, below)
                            state = content_state
                        elif native:  # pragma: no mutate  # (compiled: see message.NATIVE)
                            append(Decoded(header, buf[pos:stop]))  # type: ignore[arg-type]  # pragma: no mutate
                            pos = stop
                            continue
                        else:
                            message = new_message(Message)
                            message._header = header  # type: ignore[assignment]  # (set with last_head)
                            message._content = buf[pos:stop]
                            append(message)
                            pos = stop
                            continue
                    elif end - pos < 2:
                        need = 2
                        break
                    else:
                        self._header_size = Decoder._header_length(
                            (buf[pos] << 8) | buf[pos + 1], self._max_header_size
                        )
                        pos += 2
                        state = header_state
                if state is header_state:
                    size = self._header_size
                    if end - pos < size:
                        Decoder._check_start(buf, pos, end)
                        need = size
                        break
                    header = Decoder._header_of(self, buf[pos : pos + size])
                    pos += size
                    if size <= limits.HEADER_CACHE_MAX_SIZE and pos >= size + 2:  # pragma: no mutate
                        # (Not when the length came in an earlier read.)
                        last_head = buf[pos - size - 2 : pos]  # pragma: no mutate
                        last_size = size + 2  # pragma: no mutate
                        last_header = header  # pragma: no mutate
                        last_length = header.content_length  # pragma: no mutate
                    state = content_state
                assert header is not None
                size = header.content_length
                if end - pos < size:
                    need = size
                    break
                if native:  # pragma: no mutate
                    append(Decoded(header, buf[pos : pos + size]))  # pragma: no mutate
                else:
                    message = new_message(Message)
                    message._header = header
                    message._content = buf[pos : pos + size]
                    append(message)
                pos += size
                state = length_state
        except ProtocolError as exc:
            self._fail(exc)
            self.messages_decoded += len(out)
            if out:
                return out
            raise
        self._last_head = last_head  # pragma: no mutate  # (None: the header is read again)
        self._last_header = last_header
        Decoder._keep(self, buf, pos, state, header, need)
        self.messages_decoded += len(out)
        return out

    def _keep(self, buf: bytes, pos: int, state: State, header: Header | None, need: int) -> None:
        # Where a scan stopped: its state, and the bytes from ``pos`` on, held
        # until ``need`` are in.
        self._state = state
        self._header = header
        self._need = need
        end = len(buf)
        if pos < end:
            self._pending = [buf[pos:] if pos else buf]  # pragma: no mutate
            self._pending_size = end - pos
        else:
            self._pending_size = 0

    @staticmethod
    def _header_length(size: int, limit: int) -> int:
        # A header length just read, checked against the protocol and the limit.
        if size < _MIN_HEADER_SIZE:
            raise BadHeaderLength(f"The header length is {size}; the smallest header, {{}}, is 2.")
        if size > limit:
            raise HeaderTooLarge(f"The header length is {size} bytes; this receiver's limit is {limit}.")
        return size

    @staticmethod
    def _check_start(buf: bytes, pos: int, end: int) -> None:
        # A header not all in yet is refused at its first byte if that cannot
        # begin a JSON object: a TLS ClientHello on a plain port would
        # otherwise wait for 5 KB that never come. The length's two bytes,
        # when this read holds them (a slice from a negative start would
        # wrap around to the end of the buffer).
        if end > pos and buf[pos] not in _HEADER_STARTS:
            raise BadHeader(_not_an_object(buf[pos], buf[pos - 2 : pos] if pos >= 2 else b""))

    def _header_of(self, raw: bytes) -> Header:
        # The header of these bytes: cached, or parsed and cached when it
        # may come again; its content length checked against the limit.
        header = self._cache.get(raw)  # pragma: no mutate
        if header is None:
            header = parse_header(raw)
            if len(raw) <= limits.HEADER_CACHE_MAX_SIZE and _reusable(header):  # pragma: no mutate
                self._cache.put(raw, header, _cost(raw, header))  # pragma: no mutate
        if header.content_length > self._max_content_length:
            raise ContentTooLarge(
                f"content-length is {header.content_length}; this receiver's limit is "
                f"{self._max_content_length} bytes."
            )
        return header

    # -- reading a large content in place --------------------------------------

    @property
    def direct_size(self) -> int:
        """The size of the buffer :meth:`direct_buffer` is filling (0: none)."""
        return 0 if self._direct is None else len(self._direct)

    def direct_buffer(self, min_size: int, max_size: int) -> memoryview | None:
        """Where the rest of a large content can be read to, with no copy.

        When the decoder is in the middle of a content of which at least
        ``min_size`` bytes are still to come, and the whole content is at
        most ``max_size`` bytes, it returns a writable view of the rest of a
        buffer the size of the content (made at the first call, with the
        content bytes already in it): an I/O layer reads into it
        (``recv_into``) and calls :meth:`filled` with the count. Otherwise
        None: read as usual and :meth:`feed` the bytes.

        ``max_size`` is the caller's bound on the memory a peer can make it
        set aside by announcing a large content without sending it.
        """
        direct = self._direct
        if direct is not None:
            return memoryview(direct)[self._pending_size :]
        if self._state is not _CONTENT or self._error is not None:
            return None
        header = self._header
        assert header is not None
        size = header.content_length
        if size - self._pending_size < min_size or size > max_size:
            return None
        # Not zeroed (see core.buffers): handed out only once every byte is written.
        direct = self._direct = uninitialized(size)
        taken = 0
        for chunk in self._pending:
            direct[taken : taken + len(chunk)] = chunk
            taken += len(chunk)
        self._pending = []  # pragma: no mutate  # (not read while the direct buffer is in use)
        return memoryview(direct)[taken:]

    def filled(self, count: int) -> list[Message]:
        """``count`` bytes were written at the start of the last view
        :meth:`direct_buffer` returned (0: the stream ended); returns the
        message they complete, if they do."""
        if self._error is not None:
            raise self._error
        direct = self._direct
        if direct is None:
            raise RuntimeError("filled() without a direct_buffer() in use")
        left = len(direct) - self._pending_size
        if not 0 <= count <= left:
            raise ValueError(f"filled({count}): the buffer has {left} bytes left")
        if count == 0:
            return self._end()
        self._pending_size += count
        if count < left:
            return []
        return [self._finish_direct(direct)]

    def _finish_direct(self, direct: bytearray) -> Message:
        header = self._header
        assert header is not None
        message = decoded(header, direct)
        self._direct = None
        self._pending_size = 0
        self._state = _LENGTH
        self.messages_decoded += 1
        return message

    def _feed_direct(self, data: bytes | bytearray | memoryview) -> list[Message]:
        # Bytes fed while a direct buffer is in use (a driver that read them
        # some other way): copied into it, and what follows decoded as usual.
        direct = self._direct
        assert direct is not None
        start = self._pending_size
        take = min(len(data), len(direct) - start)
        direct[start : start + take] = data[:take]
        self._pending_size = start + take
        if self._pending_size < len(direct):
            return []
        message = self._finish_direct(direct)
        if take == len(data):
            return [message]
        try:
            rest = self.feed(data[take:])
        except ProtocolError:
            return [message]  # the error is set: the caller answers the message first
        return [message, *rest]

    def feed_checked(
        self, data: bytes | bytearray | memoryview
    ) -> tuple[list[Message], ProtocolError | None]:
        """:meth:`feed`, with the protocol error returned, not raised, beside the
        messages that came before it: for I/O layers that answer those
        messages and then report the error."""
        try:
            messages = self.feed(data)
        except ProtocolError as exc:
            return [], exc
        return messages, self._error

    def fail(self, error: ProtocolError) -> None:
        """Fail this decoder with ``error`` (e.g. a ``timeout`` found by the I/O layer)."""
        self._fail(error)

    def _fail(self, error: ProtocolError) -> None:
        self._error = error
        self._state = State.FAILED
        self._pending = []  # pragma: no mutate  # (never read once failed)
        self._pending_size = 0
        self._direct = None

    def _end(self) -> list[Message]:
        if self.in_message:
            where = {State.LENGTH: "header length", State.HEADER: "header"}.get(self._state, "content")
            error = IncompleteMessage(
                f"The stream ended in the middle of a message's {where} "
                f"({self._pending_size} bytes of it had arrived)."
            )
            self._fail(error)
            raise error
        self._state = State.CLOSED
        return []


def _cost(raw: bytes, header: Header) -> int:
    # The key, the wire copy, the record and its strings; and the
    # extensions' objects, which a short header can make many of ("[[[[").
    cost = 2 * len(raw) + 512
    if header.extensions:
        cost += footprint(header.extensions)
    return cost


def _join_exact(chunks: list[bytes], size: int) -> tuple[bytes, bytes]:
    """The first ``size`` bytes of ``chunks`` joined, and the rest of the last chunk used."""
    taken = 0
    for i, chunk in enumerate(chunks):
        if taken + len(chunk) >= size:
            cut = size - taken
            if cut == len(chunk):
                # (The decoder joins as soon as the content is in: the chunk
                # that completes it is the last, nothing comes after it.)
                return b"".join(chunks[: i + 1]), b"".join(chunks[i + 1 :])  # pragma: no mutate
            return b"".join([*chunks[:i], chunk[:cut]]), b"".join(
                [chunk[cut:], *chunks[i + 1 :]]
            )  # pragma: no mutate
        taken += len(chunk)
    raise AssertionError("fewer bytes than the decoder needed")  # pragma: no mutate


def encode(message: Message) -> bytes:
    """One message as the bytes to send."""
    return message.encode()


def encode_many(messages: Iterable[Message]) -> bytes:
    """Many messages, back to back, in one buffer (one copy of each content).

    Headers without extensions are encoded once per shape within the call
    (a local memo: the core keeps no state between calls), so a batch of
    like messages costs one JSON dump, not one each.
    """
    parts: list[bytes | bytearray] = []
    append = parts.append
    memo: dict[tuple[str, str, str, int], bytes] = {}
    for message in messages:
        header = message._header
        wire = header.wire  # pragma: no mutate  # (the memo and the wire copy save work only)
        if wire is None:
            if header.extensions:
                wire = header.encoded()
            else:
                key = (header.content_type, header.content_encoding, header.byteorder, header.content_length)
                wire = memo.get(key)  # pragma: no mutate
                if wire is None:
                    wire = memo[key] = header.encoded()
                else:
                    header.wire = wire  # pragma: no mutate
        append(wire)
        append(message._content)
    return b"".join(parts)
