"""Readiness polling by descriptor: epoll itself on Linux, else ``selectors``.

The server keeps its own map from descriptor to connection, so it needs no
more of a poller than register/modify/poll. On Linux this talks to
``select.epoll`` directly: ``selectors.DefaultSelector`` is the same epoll
underneath, but its per-call bookkeeping (a key object per registration, a
map look-up per event, an ``epoll_ctl`` to unregister a descriptor that is
about to be closed anyway) costs a measurable share of a small request.
Elsewhere (kqueue on macOS and BSD) ``selectors.DefaultSelector`` serves.
Never ``select()``: it stops at 1024 descriptors.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import socket
import time
from collections.abc import Callable
from typing import Final, TypeVar

__all__ = [
    "ERROR",
    "FAILED",
    "READ",
    "WRITE",
    "BusyPoll",
    "BusyPollSelector",
    "Poller",
    "Waker",
    "poll_busily",
]

E = TypeVar("E")

#: Interest and readiness bits (epoll's values, translated elsewhere).
READ: Final = 0x001
WRITE: Final = 0x004
#: Error or hang-up: reported whatever the interest.
ERROR: Final = 0x008 | 0x010
#: An error is pending on the socket (epoll's EPOLLERR): for TCP, the
#: connection is dead (a reset, a timeout).
FAILED: Final = 0x008


class _EpollPoller:
    __slots__ = ("_epoll",)

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def register(self, fd: int, events: int) -> None:
        self._epoll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self._epoll.unregister(fd)

    def forget(self, fd: int) -> None:
        """The descriptor is about to be closed: closing removes it from epoll."""

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return self._epoll.poll(-1 if timeout is None else timeout)

    def close(self) -> None:
        self._epoll.close()


class _SelectorPoller:
    __slots__ = ("_selector",)

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()

    @staticmethod
    def _mask(events: int) -> int:
        return (selectors.EVENT_READ if events & READ else 0) | (
            selectors.EVENT_WRITE if events & WRITE else 0
        )

    def register(self, fd: int, events: int) -> None:
        self._selector.register(fd, self._mask(events))

    def modify(self, fd: int, events: int) -> None:
        # selectors cannot hold a descriptor with no interest (epoll can):
        # such a descriptor leaves the selector until it has interest again.
        registered = fd in self._selector.get_map()
        if not events:
            if registered:
                self._selector.unregister(fd)
        elif registered:
            self._selector.modify(fd, self._mask(events))
        else:
            self._selector.register(fd, self._mask(events))

    def unregister(self, fd: int) -> None:
        self._selector.unregister(fd)

    def forget(self, fd: int) -> None:
        """The descriptor is about to be closed: drop it (if it is registered)."""
        if fd in self._selector.get_map():
            self._selector.unregister(fd)

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return [
            (
                key.fd,
                (READ if mask & selectors.EVENT_READ else 0) | (WRITE if mask & selectors.EVENT_WRITE else 0),
            )
            for key, mask in self._selector.select(timeout)
        ]

    def close(self) -> None:
        self._selector.close()


Poller: type[_EpollPoller] | type[_SelectorPoller] = (
    _EpollPoller if hasattr(select, "epoll") else _SelectorPoller
)


class Waker:
    """A way to wake a poller from another thread or a signal handler: a
    socket pair whose read end the poller watches."""

    __slots__ = ("_pending", "_r", "_w")

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        # A wake-up is written and not yet drained: more are not needed (a
        # publish to a thousand subscribers wakes the loop once, not a
        # thousand times). Set before the write; cleared after the drain has
        # read every byte (cleared before, a byte written meanwhile would be
        # read with the flag left set, and every later wake-up skipped), and
        # before the work is looked at: what came before a skipped wake-up
        # is seen then.
        self._pending = False

    def fileno(self) -> int:
        """The descriptor to register for reading."""
        return self._r.fileno()

    def write_fileno(self) -> int:
        """The descriptor a wake-up is written to (for ``signal.set_wakeup_fd``)."""
        return self._w.fileno()

    def wake(self) -> None:
        """Wake the poller (safe from any thread and from a signal handler)."""
        if self._pending:
            return
        self._pending = True
        # A full or closed socket means a wake-up is pending anyway.
        with contextlib.suppress(OSError):
            self._w.send(b"\0")

    def drain(self) -> None:
        """Empty the wake-up bytes (on the poller's thread), before the
        work they announce is looked at."""
        try:
            while self._r.recv(4096):
                pass
        except OSError:
            pass
        self._pending = False

    def close(self) -> None:
        """Close both ends."""
        self._r.close()
        self._w.close()


#: The first polling window (seconds) once work is seen coming soon after
#: the loop goes idle; it doubles from there up to the limit.
BUSY_POLL_START: Final = 25e-6


class BusyPoll:
    """How long an idle loop keeps polling before it sleeps, adapted to the
    traffic (in the manner of Linux's haltpoll, which does this for the idle
    CPUs of a virtual machine).

    Sleeping in ``epoll_wait`` and being woken when a peer's bytes come
    costs the scheduler's work on both sides: on the machine this was
    measured on, most of a request/response round trip on loopback
    (docs/performance.md, "Busy polling"). Polling a
    while before sleeping catches what comes soon, at the price of the CPU
    spent polling.

    The window grows (from :data:`BUSY_POLL_START`, doubling, up to
    ``limit``) while work comes within ``limit`` of the loop going idle
    without being caught, and halves (to none below the start) when the
    loop stays idle longer: with sparse traffic the loop goes to sleep at
    once and polling costs nothing. No clock here: the loop reports each
    idle spell (see :func:`poll_busily`).
    """

    __slots__ = ("_level", "limit", "window")

    def __init__(self, limit: float) -> None:
        if limit < 0:
            raise ValueError(f"the busy-poll limit must be >= 0, not {limit}")
        #: The longest the loop polls, seconds (0: it never polls).
        self.limit = limit
        #: How long the loop polls at its next idle spell, seconds.
        self.window = 0.0
        self._level = 0  # the window is the start times 2 ** (level - 1); 0: none

    def idle(self, waited: float, caught: bool) -> None:
        """The loop was idle for ``waited`` seconds until work came, or its
        timeout ended; ``caught``: while it was polling."""
        if caught:
            return  # the window was long enough
        if waited <= self.limit:
            if self.window < self.limit:  # a longer window would have caught it
                self._level += 1
        elif self._level:
            self._level -= 1
        self.window = min(self.limit, BUSY_POLL_START * 2 ** (self._level - 1)) if self._level else 0.0


def poll_busily(
    poll: Callable[[float | None], list[E]],
    timeout: float | None,
    busy: BusyPoll,
    clock: Callable[[], float],
) -> list[E]:
    """``poll(timeout)``, polling for up to ``busy.window`` first (and
    telling ``busy`` how the idle spell went).

    While polling, the loop yields the CPU between polls (``sched_yield``):
    a process that shares the core, the peer itself perhaps, runs then
    rather than waiting for the window to end.
    """
    start = clock()
    window = busy.window if timeout is None else min(busy.window, timeout)
    if window > 0:
        end = start + window
        while True:
            events = poll(0)
            if events:
                busy.idle(clock() - start, True)
                return events
            if clock() >= end:
                break
            os.sched_yield()
    left = None
    if timeout is not None:
        left = timeout - (clock() - start)
        if left <= 0:
            busy.idle(timeout, False)
            return []  # the loop's timer is due
    events = poll(left)
    busy.idle(clock() - start, False)
    return events


class BusyPollSelector(selectors.DefaultSelector):
    """The platform's selector, polling before it sleeps as the epoll loop
    does (:class:`BusyPoll`, up to ``limit`` seconds): for an asyncio loop,
    ``asyncio.SelectorEventLoop(BusyPollSelector(limit))``. A select that
    must not wait (the loop has callbacks ready) goes straight through."""

    def __init__(self, limit: float) -> None:
        super().__init__()
        #: The polling policy, adapted to the traffic.
        self.busy = BusyPoll(limit)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if not self.busy.limit or (timeout is not None and timeout <= 0):
            return super().select(timeout)
        return poll_busily(super().select, timeout, self.busy, time.monotonic)
