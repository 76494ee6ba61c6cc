"""How a server stops on SIGINT/SIGTERM, whatever its driver.

The first signal asks the server to drain: stop accepting, answer what is
in flight within the grace period. The second signal, or the end of the
grace period, stops at once, even while an inline handler is stuck in a
call that never returns (``time.sleep(60)``, a blocking read): the Python
signal handler runs in the main thread between two bytecodes of that very
call and raises :class:`StopNow`, which unwinds it and the loop. The end
of the grace period is a real signal too (SIGALRM, from ``setitimer``), for
the same effect: ``_thread.interrupt_main`` cannot break a blocking call,
and a timer thread started from the signal handler could deadlock on a lock
the interrupted code holds.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["SUPERVISOR_ENV", "StopNow", "Stopper", "log_stop_now"]

#: Set by ``serve --workers`` in each worker's environment: the
#: supervisor's process id.
SUPERVISOR_ENV = "FRAMEWIRE_SUPERVISOR_PID"


class StopNow(SystemExit):
    """Raised in the main thread to stop at once. A SystemExit, so that
    neither a handler's ``except Exception`` nor asyncio's callback guard
    swallows it."""


class Stopper:
    """The signal handlers of a serving loop in the main thread."""

    def __init__(
        self,
        grace: float,
        drain: Callable[[int], None],
        snapshot: Callable[[], tuple[list[str], int]] | None = None,
    ) -> None:
        self.grace = grace
        self._drain = drain
        self._snapshot = snapshot
        #: What ``snapshot`` said when the stop was forced: the peers whose
        #: handlers were running, and the connections open. Taken then, since
        #: unwinding (asyncio's, above all) closes connections on its way out.
        self.at_stop: tuple[list[str], int] | None = None
        self.signals = 0
        #: True while the loop runs: only then may a stop unwind it.
        self.serving = False
        self._previous: dict[int, Any] = {}
        self._wakeup: int | None = None  # the wake-up descriptor before install()

    def install(self, wakeup_fd: int | None = None) -> None:
        """Handle SIGINT and SIGTERM (main thread only). ``wakeup_fd``: a
        non-blocking descriptor the loop polls; the C-level handler writes to
        it, so that a loop blocked in its poller wakes even when the signal
        was delivered to another thread of the process.

        A worker of ``serve --workers`` (:data:`SUPERVISOR_ENV` set) gets one
        stop signal several times: from the terminal (same process group),
        from systemd (``KillMode=control-group``) and again through its
        supervisor. There every SIGINT and SIGTERM means one graceful drain;
        stopping at once is SIGQUIT, which the supervisor sends on its own
        second signal."""
        supervised = SUPERVISOR_ENV in os.environ
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_drain if supervised else self._on_signal)
        if supervised:
            self._previous[signal.SIGQUIT] = signal.signal(signal.SIGQUIT, self._stop_now)
        self._previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._grace_over)
        if wakeup_fd is not None:
            self._wakeup = signal.set_wakeup_fd(wakeup_fd, warn_on_full_buffer=False)

    def restore(self) -> None:
        """Put the previous handlers back (and forget a grace period under way)."""
        signal.setitimer(signal.ITIMER_REAL, 0)
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._wakeup)
            self._wakeup = None
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals == 1:
            self._drain(signum)
            # The loop ends the grace period itself, unless a handler holds it.
            signal.setitimer(signal.ITIMER_REAL, self.grace + 0.25)
        elif self.serving:
            if self._snapshot is not None:
                self.at_stop = self._snapshot()
            raise StopNow(0)

    def _on_drain(self, signum: int, frame: FrameType | None) -> None:
        # A supervised worker: the same stop, however many times it comes.
        if self.signals == 0:
            self._on_signal(signum, frame)

    def _stop_now(self, signum: int, frame: FrameType | None) -> None:
        # A supervised worker's SIGQUIT: its supervisor was asked twice.
        self.signals = max(self.signals, 1)
        self._on_signal(signum, frame)

    def _grace_over(self, signum: int, frame: FrameType | None) -> None:
        # SIGALRM: the grace period is over and the loop has not ended it.
        if self.serving:
            self.signals = max(self.signals, 1)
            self._on_signal(signum, frame)  # counts as the second signal


def log_stop_now(log: logging.Logger, busy: list[str], connections: int) -> None:
    """The line a forced stop leaves: whose handlers were still running."""
    if busy:
        log.warning(
            "stopping now: the handler for a request from %s was still running; closing %d connections",
            ", ".join(busy),
            connections,
        )
    else:
        log.warning("stopping now: closing %d connections", connections)
