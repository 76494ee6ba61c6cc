"""Flow control for server connections: backpressure on reading, the memory
set aside for large contents read in place, and the lingering close."""

from __future__ import annotations

from collections.abc import Callable

from framewire.core import limits
from framewire.core.decoder import Decoder

__all__ = ["ContentBudget", "FlowControl", "InPlace", "Linger"]


class ContentBudget:
    """The memory a server sets aside for large contents read in place,
    shared by its connections (see :meth:`ServerConnection.read_buffer`).

    A buffer the size of the content is made as soon as the rest of a large
    content is read, before its bytes come; without a bound shared by all
    connections, peers announcing large contents and sending nothing more
    could make the server set aside ``max_content_length`` bytes each.
    """

    __slots__ = ("available",)

    def __init__(self, size: int) -> None:
        #: Bytes not set aside now.
        self.available = size


class FlowControl:
    """Backpressure with hysteresis: stop reading a connection when its
    queued answers pass the high-water mark in bytes (or too many answers
    are owed), and read again only once they are below the low-water mark,
    so a connection does not flap between the two at every send."""

    __slots__ = ("high", "low", "max_owed", "paused", "watch")

    def __init__(self, high: int, low: int, max_owed: int) -> None:
        self.high = high
        self.low = low
        self.max_owed = max_owed
        self.paused = False
        #: Called with +1 / -1 when reading pauses / resumes (metrics), if set.
        self.watch: Callable[[int], None] | None = None

    def update(self, queued: int, owed: int) -> bool:
        """Whether reading is paused, given the bytes queued and answers owed."""
        was = self.paused
        limit = self.low if was else self.high
        paused = self.paused = queued > limit or owed >= self.max_owed
        if paused is not was and self.watch is not None:
            self.watch(1 if paused else -1)
        return paused


class Linger:
    """The bounds of a lingering close: after an error answer and a
    half-close, what the peer still sends is read and dropped, for at most
    ``time`` seconds and ``size`` bytes (HTTP servers do the same)."""

    __slots__ = ("end", "left", "quiet")

    def __init__(self, time: float, size: int) -> None:
        self.end = time  # (relative until start())
        self.left = size
        #: Not half-closed (asyncio's TLS cannot): the peer sees no end, so
        #: the lingering also ends once the peer is quiet for LINGER_QUIET.
        self.quiet = False

    def start(self, now: float, half_closed: bool) -> None:
        """The half-close is done (or, ``half_closed`` False, could not be)."""
        self.end += now
        self.quiet = not half_closed

    def until(self, last_active: float) -> float:
        """When the lingering ends, the peer last heard at ``last_active``."""
        if self.quiet:
            return min(self.end, last_active + limits.LINGER_QUIET)
        return self.end

    def take(self, count: int) -> bool:
        """``count`` bytes came (0: the peer closed its side); whether the
        lingering is over."""
        if not count or count >= self.left:
            return True
        self.left -= count
        return False


class InPlace:
    """A connection's large contents read in place: into a buffer the size
    of the content, which becomes the request's content with no copy.

    Only contents of at least ``minimum`` bytes are read so, and only while
    the server's :class:`ContentBudget` has room for the whole content: a
    peer that announces a large content and sends no more holds that memory
    until its message deadline."""

    __slots__ = ("budget", "decoder", "held", "minimum")

    def __init__(self, decoder: Decoder, budget: ContentBudget, minimum: int) -> None:
        self.decoder = decoder
        self.budget = budget
        self.minimum = minimum
        #: Bytes of the budget this connection's decoder holds.
        self.held = 0

    def buffer(self) -> memoryview | None:
        """The rest of the content's buffer, or None: read as usual."""
        if self.held:
            return self.decoder.direct_buffer(0, self.held)
        if not self.minimum:
            return None
        view = self.decoder.direct_buffer(self.minimum, self.budget.available)
        if view is not None:
            self.held = self.decoder.direct_size
            self.budget.available -= self.held
        return view

    def release(self) -> None:
        """Once the decoder no longer holds the buffer (it is the request's
        now, or dropped), the budget gets its size back."""
        if self.held and not self.decoder.direct_size:
            self.budget.available += self.held
            self.held = 0
