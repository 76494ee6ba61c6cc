"""How the wire tools show a message: for people, and as JSON lines.

Shared by ``framewire proxy`` and ``framewire decode``: the header as JSON,
the content as pretty JSON, as text, or as a hex/ASCII preview with its
length, and the same as one JSON object per message for logs.
"""

from __future__ import annotations

import base64
import datetime
import json
from dataclasses import dataclass
from typing import Any

import orjson

from framewire.core.decoder import Decoder
from framewire.core.errors import ProtocolError
from framewire.core.message import Message

__all__ = [
    "Event",
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


@dataclass
class Event:
    """Something seen on the wire: a message, a protocol error, or a connection note."""

    time: float
    connection: str
    direction: str  # "->" client to server, "<-" server to client, "--" connection events
    message: Message | None = None
    error: ProtocolError | None = None
    note: str = ""


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


def message_lines(when: float, connection: str, direction: str, message: Message) -> list[str]:
    """A message for a person: a heading line, the header, the content, indented."""
    lines = [f"{timestamp(when)} {connection} {direction} {_header_text(message)}"]
    lines += [f"    {line}" for line in _content_lines(message)]
    return lines


def message_record(when: float, connection: str, direction: str, message: Message) -> dict[str, Any]:
    """A message as one JSON-ready object (content as JSON, text, or base64)."""
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
    decoder: Decoder, data: bytes, when: float, connection: str, direction: str
) -> tuple[list[Event], bool]:
    """Feed a watcher's decoder; return the events and whether the framing is lost.

    After a protocol error a watcher cannot find the next message boundary:
    it reports the error and stops decoding that direction.
    """
    messages, error = decoder.feed_checked(data)
    events = [Event(when, connection, direction, message=m) for m in messages]
    if error is not None:
        events.append(Event(when, connection, direction, error=error, note="the rest is not decoded"))
    return events, error is not None
