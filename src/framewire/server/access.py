"""The access log: one INFO line per request, on the ``framewire.access`` logger.

Off by default (``--access-log``, ``Server(..., access_log=True)``). Each
line names the peer, the App action (or, for content that is not a JSON
action request, its content type), the outcome (``ok`` or the error code),
the time from the request's arrival to its answer, the bytes in and out,
and the request's ``framewire-id`` when it has one:

    127.0.0.1:53012 get ok 0.041ms in=96 out=71 id=7

With ``--log-format json`` the same fields are keys of the line's object
(``peer``, ``action``, ``outcome``, ``duration_ms``, ``bytes_in``,
``bytes_out``, ``id``). What a peer chose (its action name, its id) is
written as JSON strings, cut to :data:`FIELD_LENGTH` characters: a line is
one line, whatever was sent.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

from framewire.core.message import Message
from framewire.core.probe import DESCRIBE_KEY, ID_KEY, PING_KEY

__all__ = ["FIELD_LENGTH", "AccessLog", "action_of"]

#: The longest action name or id written to a line, in characters.
FIELD_LENGTH: Final = 64

log = logging.getLogger("framewire.access")


def _field(value: Any) -> str:
    # A peer's string, safe on one line: plain when it is a plain word, else JSON.
    text = value if isinstance(value, str) else json.dumps(value)
    text = text[:FIELD_LENGTH]
    if text and text.isprintable() and " " not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=True)


def action_of(request: Message) -> str:
    """What a request asks for: the probe it is (``framewire-ping``,
    ``framewire-describe``), its App action (a JSON object's ``action``),
    else its content type."""
    extensions = request._header.extensions
    if extensions:
        for probe in (PING_KEY, DESCRIBE_KEY):
            if probe in extensions:
                return probe
    if request.is_json:
        try:
            body = request.json()
        except Exception:
            return request.content_type
        if isinstance(body, dict) and isinstance(body.get("action"), str):
            return str(body["action"])
    return request.content_type


class AccessLog:
    """Writes the access log's lines (see the module's text)."""

    __slots__ = ("clock",)

    def __init__(self) -> None:
        self.clock = time.perf_counter

    def line(self, peer: str, request: Message, code: str, seconds: float, sent: int) -> None:
        """``request`` from ``peer`` was answered after ``seconds``: ``code``
        the error code ("" for a success), ``sent`` the answer's bytes."""
        if not log.isEnabledFor(logging.INFO):
            return
        header = request._header
        received = len(header.wire) + len(request._content) if header.wire else len(request.encode())
        action = _field(action_of(request))
        ident = header.extensions.get(ID_KEY) if header.extensions else None
        outcome = code or "ok"
        ms = seconds * 1000
        fields = {
            "peer": peer,
            "action": action,
            "outcome": outcome,
            "duration_ms": round(ms, 3),
            "bytes_in": received,
            "bytes_out": sent,
        }
        if ident is None:
            log.info(
                "%s %s %s %.3fms in=%d out=%d", peer, action, outcome, ms, received, sent,
                extra={"access": fields},
            )  # fmt: skip
            return
        fields["id"] = ident = _field(ident)
        log.info(
            "%s %s %s %.3fms in=%d out=%d id=%s", peer, action, outcome, ms, received, sent, ident,
            extra={"access": fields},
        )  # fmt: skip
