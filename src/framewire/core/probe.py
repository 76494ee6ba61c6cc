"""The ``framewire-ping`` extension, as the server sees it: which requests
are probes, and the reply the server itself gives them.

Part of the core (no I/O): the server needs it on every request, and must
not import the ping *client* (``framewire.tools.ping``) to get it.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Final

import orjson

from framewire.core.message import Message

__all__ = [
    "CANCEL_KEY",
    "DEADLINE_KEY",
    "DESCRIBE_KEY",
    "DROPPED_KEY",
    "ID_KEY",
    "PING_KEY",
    "STREAM_KEY",
    "UNORDERED_KEY",
    "deadline_ms",
    "describe_reply",
    "is_described",
    "is_probe",
    "is_unordered",
    "probe",
    "probe_reply",
    "request_id",
    "tagged",
    "with_extensions",
    "with_id",
]

#: The header extension that marks a probe; its value is the sequence number.
PING_KEY = "framewire-ping"


def is_probe(message: Message) -> bool:
    """True for a ping probe (the server answers it without the application)."""
    extensions = message.extensions
    return bool(extensions) and PING_KEY in extensions


def probe(sequence: int) -> Message:
    """A ping probe (an empty JSON content) with its sequence number."""
    return Message(b"null", "text/json", "utf-8", extensions={PING_KEY: sequence})


def probe_reply(probe: Message) -> Message:
    """The server's answer to a probe: its content, type, encoding and
    sequence number back (a valid message: a text probe whose encoding is
    not a text codec gets ``bad-encoding``)."""
    probe.check_encoding()
    return Message(
        probe.content,
        probe.content_type,
        probe.content_encoding,
        extensions={PING_KEY: probe.extensions[PING_KEY]},
    )


#: The header extension that asks a server to describe its application; the
#: server answers it itself, as a ping, with the description as JSON.
DESCRIBE_KEY = "framewire-describe"


def describe_reply(request: Message, description: bytes) -> Message:
    """The server's answer to a describe probe: ``description`` (JSON) as
    ``text/json`` content, and the probe's extension value back."""
    extensions = {DESCRIBE_KEY: request.extensions[DESCRIBE_KEY]}
    return Message(description, "text/json", "utf-8", extensions=extensions)


def is_described(message: Message) -> bool:
    """True for an answer to a describe probe (a server that does not know
    the extension answers it as an ordinary request, without it)."""
    extensions = message.extensions
    return bool(extensions) and DESCRIBE_KEY in extensions


#: The header extension a client may put on a request to match its answer:
#: a JSON string or integer the server copies onto the response, whatever
#: the application returns.
ID_KEY = "framewire-id"


def tagged(message: Message, ident: int | None = None, deadline: float | None = None) -> Message:
    """``message`` with the request id ``ident`` and the ``deadline`` (in
    milliseconds left) among its extensions (either may be None)."""
    extensions = dict(message.extensions)
    if ident is not None:
        extensions[ID_KEY] = ident
    if deadline is not None:
        extensions[DEADLINE_KEY] = max(0, round(deadline))
    return Message(message.content, message.content_type, message.content_encoding, extensions=extensions)


#: The header extension that tells the server how long the client will wait
#: for the answer: milliseconds left when the request was sent (a number).
DEADLINE_KEY = "framewire-deadline"


def deadline_ms(extensions: object) -> float | None:
    """The milliseconds a request's sender will still wait (its
    ``framewire-deadline``), or None when it has none or it is not a number
    (an extension a receiver does not understand is ignored, not refused)."""
    if not extensions:
        return None
    value = extensions.get(DEADLINE_KEY)  # type: ignore[attr-defined]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        ms = float(value)
    except OverflowError:
        return None  # an integer beyond any float: farther than any clock, so no deadline
    return ms if math.isfinite(ms) else None


def request_id(extensions: object) -> str | int | None:
    """The request id among a request's extensions (a string or an integer), or None."""
    if not extensions:
        return None
    ident = extensions.get(ID_KEY)  # type: ignore[attr-defined]
    if isinstance(ident, str) or (isinstance(ident, int) and not isinstance(ident, bool)):
        return ident
    return None


# An id and an unordered mark as written into a header.
_ID_JSON: Final = b',"framewire-id":'
_UNORDERED_JSON: Final = b',"framewire-unordered":true'


def with_id(head: bytes, ident: str | int, unordered: bool = False) -> bytes:
    """A response's header bytes (its 2-byte length included) with the
    request id added (and ``framewire-unordered: true`` for an answer out
    of order): every answer to a request that carries an id comes this way."""
    if head.endswith(b"}") and b'"framewire-' not in head:
        # The usual case, an answer with none of framewire's keys: the id
        # written in before the closing brace, in one step (with_extensions'
        # loop over a dict cost a tenth of an unordered answer's server time).
        added = _ID_JSON + orjson.dumps(ident)
        if unordered:
            added += _UNORDERED_JSON
        size = len(head) - 2 + len(added)
        if size <= 0xFFFF:
            return size.to_bytes(2, "big") + head[2:-1] + added + b"}"
    return with_extensions(head, {ID_KEY: ident, UNORDERED_KEY: True} if unordered else {ID_KEY: ident})


# The JSON of extension keys written into headers (framewire's own few).
_KEY_JSON: dict[str, bytes] = {}


def with_extensions(head: bytes, extensions: dict[str, Any]) -> bytes:
    """A response's header bytes (its 2-byte length included) with
    ``extensions`` added."""
    if head.endswith(b"}"):
        # The usual case, a header none of whose keys are these: the new keys
        # written in before its closing brace (no parse, no second encoding).
        # The servers' answers and the asyncio client's requests all come
        # this way: a loop, not generators, and the keys' JSON kept.
        added = b""
        for key, value in extensions.items():
            name = _KEY_JSON.get(key)
            if name is None:
                name = orjson.dumps(key)
                if len(_KEY_JSON) < 64:
                    _KEY_JSON[key] = name
            if key.encode() in head:
                break  # already there (or its text is): written the slow way
            added += b"," + name + b":" + (b"true" if value is True else orjson.dumps(value))
        else:
            size = len(head) - 2 + len(added)
            if size <= 0xFFFF:
                return size.to_bytes(2, "big") + head[2:-1] + added + b"}"
    header = json.loads(head[2:])
    header.update(extensions)
    raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    if len(raw) > 0xFFFF:
        return head  # no room for them in a header: the answer goes without
    return struct.pack(">H", len(raw)) + raw


#: On a request that carries an id: the server may answer it as soon as it
#: is ready, ahead of earlier ones (and marks that answer so).
UNORDERED_KEY = "framewire-unordered"
#: On a request, ``true``: the client takes many answers; on an answer,
#: ``"item"`` (one of them) or ``"end"`` (the last).
STREAM_KEY = "framewire-stream"
#: A message asking the server to stop the request of that id (no answer of its own).
CANCEL_KEY = "framewire-cancel"
#: On a subscription's item: how many events the subscriber missed just
#: before it (an integer), or ``true`` when that is not known.
DROPPED_KEY = "framewire-dropped"


def is_unordered(extensions: Any) -> bool:
    """Whether a request with these extensions may be answered out of order
    (``framewire-unordered: true`` and an id)."""
    return bool(extensions) and extensions.get(UNORDERED_KEY) is True and request_id(extensions) is not None
