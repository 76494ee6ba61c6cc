"""Worker processes on one listening socket, kept alive by a supervisor.

``framewire serve --workers N`` binds once, then runs N copies of itself
(``framewire serve --fd 3 ...``), each serving the inherited listener: the
kernel hands each connection to one worker. One inherited listener rather
than ``SO_REUSEPORT``: with REUSEPORT each worker owns a queue of its own,
and the connections still queued to a worker that stops are reset, which a
rolling restart must not do; a shared queue is taken over by the others.

The supervisor (this module, in the parent process):

- replaces a worker that dies, at once the first time and with a growing
  delay (0.1 s doubling to 10 s) while it keeps dying within 5 s of its
  start, logging why (exit status or signal);
- on SIGTERM/SIGINT, asks every worker to drain (SIGTERM), waits up to the
  grace period (plus 5 s), kills what remains, and exits;
- on SIGHUP, replaces the workers one at a time: a new one (the code and
  the application loaded afresh from disk) is started and must say it
  serves before the old one is asked to drain, so no connection is refused
  and no request in flight is dropped.

A worker says it serves by writing one byte to the descriptor named by
``FRAMEWIRE_READY_FD``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["READY_FD", "Supervisor", "notify_ready"]

log = logging.getLogger("framewire.server")

#: The environment variable naming the descriptor a worker writes to when it serves.
READY_FD = "FRAMEWIRE_READY_FD"
_QUICK_DEATH = 5.0  # a worker dying sooner than this after its start is failing
_FIRST_DELAY = 0.1
_MAX_DELAY = 10.0
_READY_TIMEOUT = 60.0


def notify_ready() -> None:
    """In a worker: tell the supervisor that this process serves."""
    fd = os.environ.pop(READY_FD, None)
    if fd is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(fd), b"1")
        os.close(int(fd))


@dataclasses.dataclass
class _Worker:
    number: int
    proc: subprocess.Popen[bytes]
    started: float
    ready_fd: int  # the read end of its readiness pipe (-1 once read)
    ready: bool = False
    stopping: bool = False


def _is_ready(worker: _Worker) -> bool:
    return worker.ready


class Supervisor:
    """Run ``count`` workers of ``command`` on ``listener`` (see the module)."""

    def __init__(
        self,
        command: Sequence[str],
        listener: socket.socket,
        count: int,
        grace: float,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, not {count}")
        self.command = list(command)
        self.listener = listener
        self.count = count
        self.grace = grace
        #: Called with the pid of every worker that ended (e.g. metrics clean-up).
        self.on_exit = on_exit
        self._workers: dict[int, _Worker] = {}  # by pid
        self._failures: dict[int, int] = {}  # quick deaths in a row, by worker number
        self._restart_at: dict[int, float] = {}  # worker number -> when to start it again
        self._signals: list[int] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- starting and reaping ---------------------------------------------------

    def _start(self, number: int) -> _Worker:
        ready_r, ready_w = os.pipe()
        fd = self.listener.fileno()
        env = dict(os.environ, **{READY_FD: str(ready_w)})
        env.pop("LISTEN_FDS", None)
        env.pop("LISTEN_PID", None)
        proc = subprocess.Popen([*self.command, "--fd", str(fd)], pass_fds=(fd, ready_w), env=env)
        os.close(ready_w)
        worker = _Worker(number, proc, time.monotonic(), ready_r)
        self._workers[proc.pid] = worker
        log.info("worker %d started (pid %d)", number, proc.pid)
        return worker

    def _read_ready(self, worker: _Worker) -> None:
        if worker.ready_fd < 0:
            return
        try:
            data = os.read(worker.ready_fd, 1)
        except BlockingIOError:
            return
        if data:
            worker.ready = True
        os.close(worker.ready_fd)
        worker.ready_fd = -1

    def _reap(self, now: float) -> None:
        for pid, worker in list(self._workers.items()):
            code = worker.proc.poll()
            if code is None:
                continue
            del self._workers[pid]
            if worker.ready_fd >= 0:
                os.close(worker.ready_fd)
            if self.on_exit is not None:
                self.on_exit(pid)
            if worker.stopping:
                continue
            why = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            failures = self._failures.get(worker.number, 0) + 1 if now - worker.started < _QUICK_DEATH else 1
            self._failures[worker.number] = failures
            delay = 0.0 if failures == 1 else min(_FIRST_DELAY * 2 ** (failures - 2), _MAX_DELAY)
            log.warning(
                "worker %d (pid %d) %s: starting another%s",
                worker.number,
                pid,
                why,
                f" in {delay:g} s (it keeps failing)" if delay else "",
            )
            self._restart_at[worker.number] = now + delay

    # -- the loop -----------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; returns the exit status (0)."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
        }
        old_wakeup = signal.set_wakeup_fd(self._wake_w)
        try:
            for number in range(1, self.count + 1):
                self._start(number)
            announced = False
            while True:
                now = time.monotonic()
                self._reap(now)
                for number, when in list(self._restart_at.items()):
                    if when <= now:
                        del self._restart_at[number]
                        self._start(number)
                for worker in list(self._workers.values()):
                    self._read_ready(worker)
                if not announced and sum(w.ready for w in self._workers.values()) >= self.count:
                    announced = True
                    log.info("%d workers serving", self.count)
                while self._signals:
                    signum = self._signals.pop(0)
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        self._stop_all(signal.Signals(signum).name)
                        return 0
                    if signum == signal.SIGHUP:
                        self._reload()
                timeout = 1.0
                if self._restart_at:
                    timeout = max(0.0, min(min(self._restart_at.values()) - now, timeout))
                watched = [self._wake_r] + [w.ready_fd for w in self._workers.values() if w.ready_fd >= 0]
                with contextlib.suppress(InterruptedError):
                    readable, _, _ = select.select(watched, [], [], timeout)
                    if self._wake_r in readable:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(self._wake_r, 4096):
                                pass
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _wait(self, condition: Callable[[], bool], deadline: float) -> bool:
        # Wait for ``condition()`` (with reaping) until ``deadline``; False on time out.
        while time.monotonic() < deadline:
            self._reap(time.monotonic())
            for worker in list(self._workers.values()):
                self._read_ready(worker)
            if condition():
                return True
            if any(s in (signal.SIGTERM, signal.SIGINT) for s in self._signals):
                return False
            with contextlib.suppress(InterruptedError):
                watched = [self._wake_r] + [w.ready_fd for w in self._workers.values() if w.ready_fd >= 0]
                select.select(watched, [], [], 0.05)
        return False

    def _reload(self) -> None:
        old = [w for w in self._workers.values() if not w.stopping]
        log.info(
            "SIGHUP: replacing %d workers one by one, the code and the application loaded afresh", len(old)
        )
        for worker in old:
            fresh = self._start(worker.number)
            if not self._wait(functools.partial(_is_ready, fresh), time.monotonic() + _READY_TIMEOUT):
                if fresh.proc.poll() is None and not self._signals:
                    log.error(
                        "worker %d (pid %d) never said it serves: keeping the old one",
                        fresh.number,
                        fresh.proc.pid,
                    )
                    fresh.stopping = True
                    fresh.proc.kill()
                elif fresh.proc.poll() is not None:
                    log.error(
                        "the new worker %d exited with status %s: keeping the old one (is the code broken?)",
                        fresh.number,
                        fresh.proc.returncode,
                    )
                return
            worker.stopping = True
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)  # it drains: in-flight requests are answered
        log.info("SIGHUP: %d workers replaced", len(old))

    def _stop_all(self, why: str) -> None:
        workers = list(self._workers.values())
        log.info(
            "%s received: stopping %d workers (each answers what is in flight, up to %g s)",
            why,
            len(workers),
            self.grace,
        )
        for worker in workers:
            worker.stopping = True
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace + 5
        for worker in workers:
            try:
                worker.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "worker %d (pid %d) did not stop in time: killing it", worker.number, worker.proc.pid
                )
                worker.proc.kill()
                worker.proc.wait()
        log.info("all workers stopped")


def worker_command(argv: Sequence[str]) -> list[str]:
    """The command line of a worker: this ``serve`` command without
    ``--workers``, ``--fd`` and the address options (the listener is inherited)."""
    dropped_with_value = {"--workers", "--fd", "--host", "--port", "--unix", "--unix-mode"}
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in dropped_with_value:
            skip = "=" not in arg
            continue
        out.append(arg)
    # -P: the current folder is not put first on the worker's path (a
    # tempfile.py there would run in place of the standard module).
    return [sys.executable, "-P", "-m", "framewire", *out]
