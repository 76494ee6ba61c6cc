"""Accepting connections without ever spinning on descriptor exhaustion.

When ``accept`` fails with EMFILE/ENFILE (or ENOBUFS/ENOMEM) the listener is
still readable, so a loop that simply retries burns a core and logs without
end. :class:`Acceptor` takes the listener out of the poller instead, logs
once per episode, and retries after a back-off from 50 ms doubling to 1 s;
connections already open are served throughout.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import Any, Final

from framewire.io import poller

__all__ = ["Acceptor", "LoopReaders"]

_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_BACKOFF: Final = (0.05, 1.0)  # first and longest pause, seconds
_PER_TURN: Final = 128  # accepts per loop turn: the open connections get their turn too


class Acceptor:
    """The listening socket of a loop, with back-off on exhaustion."""

    __slots__ = (
        "_backoff",
        "_exhausted",
        "_listening",
        "_log",
        "_poll",
        "listener",
        "paused_until",
    )

    def __init__(self, listener: socket.socket, poll: Any, log: logging.Logger) -> None:
        listener.setblocking(False)
        self.listener = listener
        self._poll = poll
        self._log = log
        self._listening = False
        self._exhausted = False
        self._backoff = _BACKOFF[0]
        #: When accepting resumes after exhaustion (None: not paused).
        self.paused_until: float | None = None

    def fileno(self) -> int:
        """The listener's descriptor."""
        return self.listener.fileno()

    def listen(self) -> None:
        """Register the listener with the poller."""
        if not self._listening:
            self._poll.register(self.listener.fileno(), poller.READ)
            self._listening = True

    def stop(self) -> None:
        """Accept no more (the listener stays open until closed)."""
        if self._listening:
            self._poll.unregister(self.listener.fileno())
            self._listening = False
        self.paused_until = None

    def accept(self, now: float, limit: int = _PER_TURN) -> list[tuple[int, Any]]:
        """The pending connections, as (descriptor, address), up to ``limit``."""
        # socket._accept gives the descriptor without socket.accept()'s
        # family/type enum conversions, a noticeable cost per connection.
        accept = self.listener._accept  # type: ignore[attr-defined]
        accepted: list[tuple[int, Any]] = []
        for _ in range(limit):
            try:
                accepted.append(accept())
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _EXHAUSTED:
                    self._pause(exc, now)
                elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    self._log.warning("accept failed: %s", exc)
                break
        return accepted

    def established(self) -> None:
        """A connection is set up in full (for the proxy: its upstream side
        too): an exhaustion episode is over, unless accepting is paused again."""
        if self._exhausted and self.paused_until is None:
            self._exhausted = False
            self._backoff = _BACKOFF[0]
            self._log.warning("descriptors available again: accepting")

    def wait(self, now: float) -> float | None:
        """Seconds until a back-off pause ends (None: not paused), for a
        loop's poll timeout."""
        return None if self.paused_until is None else max(0.0, self.paused_until - now)

    def tick(self, now: float) -> None:
        """Resume accepting when a back-off pause is over."""
        if self.paused_until is not None and now >= self.paused_until:
            self.paused_until = None
            self.listen()

    def exhausted(self, exc: OSError, now: float) -> bool:
        """Back off if ``exc`` (from making a socket for an accepted
        connection, e.g. the proxy's upstream side) is exhaustion; True if so."""
        if exc.errno not in _EXHAUSTED:
            return False
        self._pause(exc, now)
        return True

    def _pause(self, exc: OSError, now: float) -> None:
        if self._listening:
            self._poll.unregister(self.listener.fileno())
            self._listening = False
        if not self._exhausted:  # once per episode, not once per retry
            self._exhausted = True
            self._log.error(
                "accept failed (%s): out of descriptors or memory; retrying with a back-off of up to %g s",
                os.strerror(exc.errno or 0),
                _BACKOFF[1],
            )
        self.paused_until = now + self._backoff
        self._backoff = min(self._backoff * 2, _BACKOFF[1])


class LoopReaders:
    """What the io Acceptor needs of a poller, on an event loop: a reader
    callback for the listener, added and removed."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback

    def register(self, fd: int, events: int) -> None:
        self._loop.add_reader(fd, self._callback)

    def unregister(self, fd: int) -> None:
        self._loop.remove_reader(fd)
