"""When a client tries again: the back-off between attempts, and which
failures are worth another attempt.

Shared by the blocking client, the asyncio client and the pools, which
differ only in how they wait (``time.sleep`` or ``asyncio.sleep``).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Iterator

from framewire.core.errors import ConnectionClosed, IncompleteMessage

__all__ = ["NO_RETRY", "Retry", "lost_in_exchange", "next_delay", "worth_reconnecting"]


@dataclasses.dataclass(frozen=True, slots=True)
class Retry:
    """How many times a call tries, and how long it waits in between.

    ``attempts`` counts every try (1: never again). The waits grow
    exponentially from ``backoff`` seconds, doubled each time up to
    ``max_backoff``, with "equal jitter": half the wait fixed, half random,
    so that clients cut off by one restart do not all come back at the same
    instant, yet none comes back at once. Every wait is bounded by the
    call's own deadline.

    A failure to *connect* (nothing listening: a server restarting) is
    always worth another attempt. A request that was *sent* and lost with
    its connection is sent again only when the caller says it is safe
    (``idempotent=True``): the server may have acted on it.
    """

    attempts: int = 3
    backoff: float = 0.05
    max_backoff: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Retry.attempts is at least 1 (one try), not {self.attempts}")
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError("Retry needs 0 <= backoff <= max_backoff")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits before the 2nd, 3rd, ... attempts (``attempts - 1`` of them)."""
        uniform = (rng or random).uniform
        wait = self.backoff
        for _ in range(self.attempts - 1):
            yield wait / 2 + uniform(0, wait / 2)
            wait = min(wait * 2, self.max_backoff)


#: One attempt, no waiting: errors reach the caller at once.
NO_RETRY = Retry(attempts=1)


def next_delay(delays: Iterator[float], deadline: float | None) -> float | None:
    """The wait before the next attempt, or None when no attempt is left or
    the wait would pass the call's ``deadline`` (``time.monotonic()``)."""
    delay = next(delays, None)
    if delay is None or (deadline is not None and time.monotonic() + delay >= deadline):
        return None
    return delay


def worth_reconnecting(exc: BaseException) -> bool:
    """A failure to connect that another attempt may not meet: nothing
    listening yet (a server restarting), or a connection cut during its
    opening. Not a certificate refused, a name unknown, or a timeout (the
    call's time is spent)."""
    return isinstance(exc, ConnectionRefusedError | ConnectionResetError | ConnectionAbortedError)


def lost_in_exchange(exc: BaseException) -> bool:
    """The connection failed under a request already sent: the request may
    or may not have been acted on (so it is retried only if idempotent)."""
    return isinstance(exc, ConnectionClosed | ConnectionResetError | BrokenPipeError | IncompleteMessage)


#: Seconds a client keeps one connection by default before it opens a new
#: one between calls (gRPC's ``max_connection_age`` idea, client side): a
#: server that restarted, or joined behind a balancer, gets its share again.
MAX_CONNECTION_AGE = 300.0


def checked_age(max_age: float | None) -> float | None:
    """``max_age`` as given, or ``ValueError`` unless it is None or > 0."""
    if max_age is not None and max_age <= 0:
        raise ValueError(f"max_connection_age must be > 0 seconds or None, not {max_age}")
    return max_age


def retire_at(opened: float, max_age: float | None, rng: random.Random | None = None) -> float:
    """When a connection opened at ``opened`` is to be replaced (between
    calls): ``max_age`` less up to a tenth, at random, so that many clients
    started together do not all reconnect at once. None: never."""
    if max_age is None:
        return math.inf
    return opened + max_age * (rng or random).uniform(0.9, 1.0)
