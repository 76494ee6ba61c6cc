"""A send queue: bytes waiting for a socket, in order, with response marks.

Responses are queued as their parts (header bytes, content bytes), never
copied into one buffer on the way in; a partial send leaves a memoryview of
the rest of the first part (no copy either). Each response's end is
remembered as a mark in the byte stream, so the queue knows how many
responses are still owed to the peer: what backpressure counts.
"""

from __future__ import annotations

import bisect
import os
from typing import Final

__all__ = ["IOV_MAX", "JOIN_BELOW", "SendQueue"]

#: Below this many queued bytes, one joined buffer and ``send`` cost less
#: than ``sendmsg`` with a vector of parts (the epoll driver's choice).
JOIN_BELOW: Final = 64 * 1024
#: Most parts one ``sendmsg`` call takes.
IOV_MAX: Final = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


class SendQueue:
    """Bytes to send, as parts, and where each queued response ends."""

    __slots__ = ("marks", "parts", "queued", "sent", "size")

    def __init__(self) -> None:
        self.parts: list[bytes | bytearray | memoryview] = []
        #: Bytes waiting.
        self.size = 0
        #: Bytes ever queued and ever sent: a response whose mark (its last
        #: byte's position in the stream) is at most ``sent`` has gone out.
        self.queued = 0
        self.sent = 0
        # A list, not a deque: a response appends its mark, and a send that
        # takes everything clears them all (the usual case), so the list's
        # append, which compiled code calls directly, is what matters; a
        # partial send drops the marks it passed in one slice.
        self.marks: list[int] = []

    def __bool__(self) -> bool:
        return self.size > 0 or bool(self.parts)

    @property
    def responses(self) -> int:
        """Responses queued and not wholly sent."""
        return len(self.marks)

    def append(self, head: bytes, content: bytes | bytearray) -> None:
        """Queue one response (its header bytes and its content)."""
        self.parts.append(head)
        self.parts.append(content)
        size = len(head) + len(content)
        self.size += size
        self.queued += size
        self.marks.append(self.queued)

    def consume(self, sent: int) -> None:
        """``sent`` bytes went out."""
        self.sent += sent
        if sent >= self.size:
            self.parts.clear()
            self.size = 0
            self.marks.clear()
            return
        self.size -= sent
        parts = self.parts
        i = 0
        while sent >= len(parts[i]):
            sent -= len(parts[i])
            i += 1
        del parts[:i]
        if sent:
            parts[0] = memoryview(parts[0])[sent:]  # no copy of what is left
        passed = bisect.bisect_right(self.marks, self.sent)
        if passed:
            del self.marks[:passed]

    def clear(self) -> None:
        """Drop everything (the connection is gone)."""
        self.parts.clear()
        self.size = 0
        self.marks.clear()
