"""How the wire tools show a message: for people, and as JSON lines.

Shared by ``framewire proxy`` and ``framewire decode``: the header as JSON,
the content as pretty JSON, as text, or as a hex/ASCII preview with its
length, and the same as one JSON object per message for logs.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from framewire.core.decoder import Decoder
from framewire.core.errors import IncompleteMessage, ProtocolError
from framewire.core.message import Message
from framewire.core.probe import CANCEL_KEY, DROPPED_KEY, ID_KEY, STREAM_KEY, UNORDERED_KEY

__all__ = [
    "SHOWN",
    "Event",
    "Skimmed",
    "Watcher",
    "event_lines",
    "event_record",
    "hexdump",
    "json_line",
    "json_text",
    "message_lines",
    "message_record",
    "timestamp",
    "watch",
]

PREVIEW_BYTES = 64
#: Bytes of one content a watcher holds: a message whose content is larger is
#: shown by its header and its first SHOWN bytes, the rest counted, never held.
SHOWN = 64 * 1024


@dataclass
class Skimmed:
    """A message too large to hold whole, as a watcher saw it: its header
    (as on the wire, and parsed), its content's size and first bytes."""

    header_text: str
    header: dict[str, Any]
    size: int
    prefix: bytes

    @property
    def is_text(self) -> bool:
        """A text content type."""
        return str(self.header.get("content-type", "")).startswith("text/")


@dataclass
class Event:
    """Something seen on the wire: a message, a protocol error, or a connection note."""

    time: float
    connection: str
    direction: str  # "->" client to server, "<-" server to client, "--" connection events
    message: Message | Skimmed | None = None
    error: ProtocolError | None = None
    note: str = ""


class Watcher:
    """Follows one direction of a connection, message by message, for the
    wire tools, holding at most one header and :data:`SHOWN` bytes of a
    content, whatever the peers send: a message with a larger content is
    :class:`Skimmed`. Every message is framed and checked as the server's
    decoder does (it is handed each whole small message, and the head of a
    large one), so the same bytes give the same errors."""

    def __init__(self, shown: int = SHOWN) -> None:
        self._decoder = Decoder()
        self._shown = shown
        self._frame = bytearray()  # the message under way (of a large one: its head)
        self._need = 2  # bytes of the frame that make its head (length and header)
        self._large: Skimmed | None = None
        self._prefix = bytearray()
        self._left = 0  # content bytes of the large message still to come
        self._started = False  # the header's first byte was checked

    @property
    def in_message(self) -> bool:
        """A message has begun and not ended."""
        return bool(self._frame) or self._large is not None

    def feed(self, data: bytes) -> tuple[list[Message | Skimmed], ProtocolError | None]:
        """The messages ``data`` completes and the protocol error it holds,
        if any (after which nothing more can be framed). ``b""``: the end."""
        out: list[Message | Skimmed] = []
        if not data:
            if self.in_message:
                return out, IncompleteMessage("The stream ended in the middle of a message.")
            return out, None
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if self._large is not None:
                take = min(self._left, len(view) - pos)
                room = self._shown - len(self._prefix)
                if room > 0:
                    self._prefix += view[pos : pos + min(room, take)]
                self._left -= take
                pos += take
                if not self._left:
                    self._large.prefix = bytes(self._prefix)
                    out.append(self._large)
                    self._large = None
                    self._prefix = bytearray()
                continue
            take = min(self._need - len(self._frame), len(view) - pos)
            self._frame += view[pos : pos + take]
            pos += take
            if len(self._frame) < self._need:
                if self._need > 2 and not self._started:
                    # The header's first byte is in: a header that cannot be
                    # JSON (a TLS ClientHello) is refused now, as the decoder
                    # does, not when its claimed length has come.
                    self._started = True
                    _, error = Decoder().feed_checked(bytes(self._frame[:3]))
                    if error is not None:
                        return out, error
                continue
            error = self._framed(out)
            if error is not None:
                return out, error
        return out, None

    def _framed(self, out: list[Message | Skimmed]) -> ProtocolError | None:
        # The frame has the bytes it needed: its length, its head, or all of it.
        frame = self._frame
        if self._need == 2:  # the length: now the header
            self._started = False
            self._need = 2 + ((frame[0] << 8) | frame[1])
            if self._need < 4:
                return self._decoder.feed_checked(bytes(frame))[1]
            return None
        head_size = 2 + ((frame[0] << 8) | frame[1])
        if self._need == head_size:  # the header: now its content
            messages, error = Decoder().feed_checked(bytes(frame))  # the decoder's checks and limits
            if error is not None:
                return error
            if messages:  # no content at all: that was the whole message
                self._frame = bytearray()
                self._need = 2
                out.extend(messages)
                return None
            size = _content_length(bytes(frame[2:]))
            if size <= self._shown:
                self._need = head_size + size
                return None
            header_text = bytes(frame[2:]).decode("utf-8", "backslashreplace")
            self._large = Skimmed(header_text, orjson.loads(bytes(frame[2:])), size, b"")
            self._left = size
            self._frame = bytearray()
            self._need = 2
            return None
        messages, error = self._decoder.feed_checked(bytes(frame))  # a whole small message
        self._frame = bytearray()
        self._need = 2
        out.extend(messages)
        return error


def _content_length(header: bytes) -> int:
    length = orjson.loads(header)["content-length"]
    assert isinstance(length, int)
    return length


def timestamp(when: float) -> str:
    """Wall-clock time with microseconds, as a log line shows it."""
    return datetime.datetime.fromtimestamp(when).strftime("%H:%M:%S.%f")


def hexdump(data: bytes, limit: int = PREVIEW_BYTES) -> list[str]:
    """``hexdump -C``-style lines for the first ``limit`` bytes."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<47}  |{text}|")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return lines


def json_text(value: Any, *, indent: bool = False) -> str:
    """``value`` as JSON text, or raises ``ValueError``.

    Whatever a decoder accepted: orjson writes at most 254 levels and 64-bit
    integers, so deeper or larger values go to the standard library, which
    writes them up to Python's recursion limit (about 1000 levels; a header
    may nest 1024).
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()
    except TypeError:
        pass
    try:
        return json.dumps(value, ensure_ascii=False, indent=2 if indent else None, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not writable as JSON: {type(exc).__name__}") from None


def _header_text(message: Message) -> str:
    # The header exactly as it was on the wire: always printable, whatever it holds.
    return message.wire_parts()[0][2:].decode("utf-8", "backslashreplace")


def _content_lines(message: Message) -> list[str]:
    if message.is_text:
        try:
            if message.is_json:
                value = message.json()
                try:
                    pretty = json_text(value, indent=True)
                except ValueError:
                    pretty = None
                # Indenting deep nesting multiplies the size (1000 levels of
                # "[" become megabytes): then the content is shown as sent.
                if pretty is not None and len(pretty) <= 4 * message.content_length + 1024:
                    return pretty.splitlines()
                return message.text().splitlines() or [""]
            return message.text().splitlines() or [""]
        except ProtocolError as exc:
            return [f"(content does not decode: {exc})", *hexdump(message.content)]
    return [f"({message.content_length} bytes)", *hexdump(message.content)]


def _skimmed_lines(message: Skimmed) -> list[str]:
    shown = f"({message.size} bytes; the first {len(message.prefix)} shown)"
    if message.is_text:
        text = message.prefix.decode(str(message.header.get("content-encoding", "utf-8")), "replace")
        return [shown, *text[:1024].splitlines()]
    return [shown, *hexdump(message.prefix)]


def exchange_tags(extensions: Mapping[str, Any]) -> str:
    """What a message's extensions say of its exchange, in brackets: its
    request id, a stream's position, a cancel, out of order, a subscriber's
    gap ("" for none)."""
    tags = []
    if ID_KEY in extensions:
        tags.append(f"id {_short(extensions[ID_KEY])}")
    position = extensions.get(STREAM_KEY)
    if position is not None:
        tags.append("stream requested" if position is True else f"stream {_short(position)}")
    if CANCEL_KEY in extensions:
        tags.append(f"cancels {_short(extensions[CANCEL_KEY])}")
    if extensions.get(UNORDERED_KEY) is True:
        tags.append("unordered")
    if DROPPED_KEY in extensions:
        dropped = extensions[DROPPED_KEY]
        tags.append("dropped: some" if dropped is True else f"dropped {_short(dropped)}")
    return f" [{', '.join(tags)}]" if tags else ""


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if _writable(value) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def message_lines(when: float, connection: str, direction: str, message: Message | Skimmed) -> list[str]:
    """A message for a person: a heading line (what its extensions say of
    the exchange in brackets), the header, the content, indented."""
    if isinstance(message, Skimmed):
        tags = exchange_tags(message.header)
        lines = [f"{timestamp(when)} {connection} {direction}{tags} {message.header_text}"]
        return lines + [f"    {line}" for line in _skimmed_lines(message)]
    tags = exchange_tags(message.extensions)
    lines = [f"{timestamp(when)} {connection} {direction}{tags} {_header_text(message)}"]
    lines += [f"    {line}" for line in _content_lines(message)]
    return lines


def message_record(
    when: float, connection: str, direction: str, message: Message | Skimmed
) -> dict[str, Any]:
    """A message as one JSON-ready object (content as JSON, text, or base64;
    of a message too large to hold, its size and the base64 of its first bytes)."""
    if isinstance(message, Skimmed):
        return {
            "time": when,
            "connection": connection,
            "direction": direction,
            "header": message.header if _writable(message.header) else message.header_text,
            "size": message.size,
            "base64_prefix": base64.b64encode(message.prefix).decode(),
        }
    header: Any = message.header
    if not _writable(header):
        header = _header_text(message)  # too deep to write back as JSON: as sent
    record: dict[str, Any] = {
        "time": when,
        "connection": connection,
        "direction": direction,
        "header": header,
    }
    try:
        value = message.json() if message.is_json else None
        if message.is_json and _writable(value):
            record["json"] = value
        elif message.is_text:
            record["text"] = message.text()
        else:
            record["base64"] = base64.b64encode(message.content).decode()
    except ProtocolError as exc:
        record["base64"] = base64.b64encode(message.content).decode()
        record["content_error"] = exc.code
    return record


def event_lines(event: Event) -> list[str]:
    """An event for a person."""
    if event.message is not None:
        return message_lines(event.time, event.connection, event.direction, event.message)
    stamp = timestamp(event.time) if event.time else "end"
    if event.error is not None:
        return [f"{stamp} {event.connection} {event.direction} protocol error: {event.error} ({event.note})"]
    return [f"{stamp} {event.connection} {event.direction} {event.note}"]


def _writable(value: Any) -> bool:
    try:
        json_text(value)
    except ValueError:
        return False
    return True


def json_line(record: dict[str, Any]) -> str:
    """One record (from :func:`event_record`) as one line of JSON."""
    return json_text(record)


def event_record(event: Event) -> dict[str, Any]:
    """An event as one JSON-ready object."""
    if event.message is not None:
        return message_record(event.time, event.connection, event.direction, event.message)
    record: dict[str, Any] = {
        "time": event.time,
        "connection": event.connection,
        "direction": event.direction,
    }
    if event.error is not None:
        record["error"] = {"code": event.error.code, "message": event.error.message}
    if event.note:
        record["note"] = event.note
    return record


def watch(
    watcher: Watcher, data: bytes, when: float, connection: str, direction: str
) -> tuple[list[Event], bool]:
    """Feed a watcher; return the events and whether the framing is lost.

    After a protocol error a watcher cannot find the next message boundary:
    it reports the error and stops decoding that direction.
    """
    messages, error = watcher.feed(data)
    events = [Event(when, connection, direction, message=m) for m in messages]
    if error is not None:
        events.append(Event(when, connection, direction, error=error, note="the rest is not decoded"))
    return events, error is not None
