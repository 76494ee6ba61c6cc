"""The ``framewire-ping`` extension, as the server sees it: which requests
are probes, and the reply the server itself gives them.

Part of the core (no I/O): the server needs it on every request, and must
not import the ping *client* (``framewire.tools.ping``) to get it.
"""

from __future__ import annotations

from framewire.core.message import Message

__all__ = ["PING_KEY", "is_probe", "probe_reply"]

#: The header extension that marks a probe; its value is the sequence number.
PING_KEY = "framewire-ping"


def is_probe(message: Message) -> bool:
    """True for a ping probe (the server answers it without the application)."""
    extensions = message.extensions
    return bool(extensions) and PING_KEY in extensions


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
