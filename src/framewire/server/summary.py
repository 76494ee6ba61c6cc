"""The periodic INFO summary a server logs instead of a line per connection.

A line per connection at INFO cost more than the rest of a short
connection's work (docs/internals.md). So every
``log_summary`` seconds in which anything happened, one line says what:
connections opened and closed, requests received, error responses sent,
connections open now. The connection lines themselves are at DEBUG
(``--log-level debug``).

It costs the hot path nothing: the drivers already keep the totals (for
``requests_total`` and the metrics), and sum them over their connections
only when a line is due. No I/O and no clock of its own: the driver gives
the time, so the policy is tested with a fake clock.
"""

from __future__ import annotations

import math

__all__ = ["Summary"]


class Summary:
    """What a server did between two summary lines (see the module's text)."""

    __slots__ = ("_connections", "_errors", "_open", "_requests", "_since", "interval", "next_at")

    def __init__(self, interval: float, now: float) -> None:
        #: Seconds between lines; 0 turns the summary off.
        self.interval = interval
        #: When the next line is due (``inf`` when off).
        self.next_at = now + interval if interval > 0 else math.inf
        self._since = now
        self._connections = self._open = self._requests = self._errors = 0

    def line(
        self, now: float, *, connections: int, open_now: int, requests: int, errors: int, last: bool = False
    ) -> str | None:
        """The line due at ``now``, from the server's totals so far
        (connections accepted, requests received, error responses sent) and
        the connections open now; ``None`` before it is due or when nothing
        happened since the last one. The next is due an interval later.
        ``last``: the server is stopping; the line is due now (if the
        summary is on), for whatever part of an interval has passed."""
        if now < self.next_at and not (last and self.interval > 0):
            return None
        elapsed = now - self._since
        self._since = now
        self.next_at = now + self.interval
        opened = connections - self._connections
        closed = self._open + opened - open_now
        new_requests = requests - self._requests
        new_errors = errors - self._errors
        self._connections, self._open, self._requests, self._errors = connections, open_now, requests, errors
        if not (opened or closed or new_requests or new_errors):
            return None
        return (
            f"last {elapsed:.1f} s: {opened:,} connections opened, {closed:,} closed, "
            f"{new_requests:,} requests, {new_errors:,} error responses; {open_now:,} open"
        )
