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
  grace period (plus 5 s), kills what remains, and exits; a second signal
  asks them to stop at once (SIGQUIT). A worker takes every SIGTERM and
  SIGINT as the one drain, however many copies reach it (the terminal's
  process group, systemd's control group, the supervisor);
- on SIGHUP, replaces the workers one at a time: a new one (the code and
  the application loaded afresh from disk) is started and must say it
  serves before the old one is asked to drain, so no connection is refused
  and no request in flight is dropped. A new worker that exits instead ends
  the reload at once (the old ones are kept); workers that die meanwhile
  are replaced meanwhile; there are always exactly N.

A worker says it serves by writing one byte to the descriptor named by
``FRAMEWIRE_READY_FD``, and leaves when its supervisor dies (a SIGKILL, the
OOM killer), so that no orphan holds the port.
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
import threading
import time
from collections.abc import Callable, Sequence

from framewire.server.stopping import SUPERVISOR_ENV

__all__ = ["READY_FD", "Supervisor", "follow_supervisor", "notify_ready"]

log = logging.getLogger("framewire.server")

#: The environment variable naming the descriptor a worker writes to when it serves.
READY_FD = "FRAMEWIRE_READY_FD"
_QUICK_DEATH = 5.0  # a worker dying sooner than this after its start is failing
_FIRST_DELAY = 0.1
_MAX_DELAY = 10.0
_READY_TIMEOUT = 60.0


_PR_SET_PDEATHSIG = 1  # prctl(2)
_PARENT_CHECK = 1.0  # seconds between looks at the parent, where prctl is not


def usable_cpus(cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: those its affinity allows, fewer when
    its cgroup has a CPU quota (a container's CPU limit), rounded up; at
    least 1. ``os.cpu_count()`` counts the host's, which in a container on a
    64-core node would start 64 workers for a limit of two CPUs."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        count = min(count, max(1, -(-quota[0] // quota[1])))
    return max(1, count)


def _cgroup_quota(root: str) -> tuple[int, int] | None:
    # (quota, period) in microseconds from cgroup v2's cpu.max ("max 100000"
    # when unlimited), else v1's cfs files (-1 when unlimited); None when
    # there is no limit or no cgroup to read.
    try:
        with open(os.path.join(root, "cpu.max")) as file:
            quota, period = file.read().split()[:2]
        return None if quota == "max" else (int(quota), int(period))
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us")) as file:
            v1_quota = int(file.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us")) as file:
            v1_period = int(file.read())
    except (OSError, ValueError):
        return None
    return None if v1_quota <= 0 or v1_period <= 0 else (v1_quota, v1_period)


def follow_supervisor() -> None:
    """In a worker: drain and leave (SIGTERM to itself) when the supervisor
    dies. Linux says so at once (``PR_SET_PDEATHSIG``); elsewhere a daemon
    thread looks at the parent every second. Nothing outside a worker."""
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if supervisor is None or not supervisor.isdigit():
        return
    if sys.platform.startswith("linux"):
        import ctypes  # noqa: PLC0415  (workers only)

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(supervisor):  # it died before the prctl
        log.warning("the supervisor (pid %s) is gone: not serving", supervisor)
        raise SystemExit(1)
    if sys.platform.startswith("linux"):
        return

    def watch() -> None:
        while os.getppid() == int(supervisor):
            time.sleep(_PARENT_CHECK)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="framewire-supervisor-watch", daemon=True).start()


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
    #: A new worker of a reload: on probation until it serves (if it
    #: exits first, the reload ends and it is not started again).
    candidate: bool = False


def _settled(worker: _Worker) -> bool:
    # A new worker of a reload has said it serves, or has exited.
    return worker.ready or worker.proc.poll() is not None


class Supervisor:
    """Run ``count`` workers of ``command`` on ``listener`` (see the module)."""

    def __init__(
        self,
        command: Sequence[str],
        listener: socket.socket,
        count: int,
        grace: float,
        on_exit: Callable[[int], None] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError(f"workers must be at least 1, not {count}")
        self.command = list(command)
        self.listener = listener
        self.count = count
        self.grace = grace
        #: Called with the pid of every worker that ended (e.g. metrics clean-up).
        self.on_exit = on_exit
        #: Called for every worker that died unasked and is replaced (metrics).
        self.on_restart = on_restart
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
        env = dict(os.environ, **{READY_FD: str(ready_w), SUPERVISOR_ENV: str(os.getpid())})
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
            if worker.candidate:
                log.error("the new worker %d (pid %d) %s before it served", worker.number, pid, why)
                continue  # the reload ends; its old worker is kept
            if self._serving(worker.number):
                continue  # its number is served (by a reload's new worker): N stay N
            failures = self._failures.get(worker.number, 0) + 1 if now - worker.started < _QUICK_DEATH else 1
            self._failures[worker.number] = failures
            delay = 0.0 if failures == 1 else min(_FIRST_DELAY * 2 ** (failures - 2), _MAX_DELAY)
            if self.on_restart is not None:
                self.on_restart()  # (before the line that says so: a reader of the log may scrape)
            log.warning(
                "worker %d (pid %d) %s: starting another%s",
                worker.number,
                pid,
                why,
                f" in {delay:g} s (it keeps failing)" if delay else "",
            )
            self._restart_at[worker.number] = now + delay

    def _serving(self, number: int) -> bool:
        # A live worker, not on its way out, has this number.
        return any(w.number == number and not w.stopping for w in self._workers.values())

    def _restart_due(self, now: float) -> None:
        for number, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[number]
                if not self._serving(number):
                    self._start(number)

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
                self._restart_due(now)
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
        # Wait for ``condition()`` until ``deadline``, False on time out or
        # a stop signal; meanwhile workers are reaped and replaced as usual.
        while time.monotonic() < deadline:
            now = time.monotonic()
            self._reap(now)
            self._restart_due(now)
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
            if worker.proc.poll() is not None or worker.stopping:
                continue  # it died meanwhile: replaced as any dead worker is
            fresh = self._start(worker.number)
            fresh.candidate = True
            # Ready, or exited (then reaped at once, and not started again).
            self._wait(functools.partial(_settled, fresh), time.monotonic() + _READY_TIMEOUT)
            fresh.candidate = False
            if not fresh.ready:
                if fresh.proc.poll() is None:
                    if not self._signals:
                        log.error(
                            "worker %d (pid %d) never said it serves: keeping the old one",
                            fresh.number,
                            fresh.proc.pid,
                        )
                    fresh.stopping = True
                    fresh.proc.kill()
                else:
                    self._reap(time.monotonic())
                    log.error("SIGHUP: the new code does not start: keeping the old workers")
                if not self._serving(worker.number):  # the old one died meanwhile
                    self._restart_at[worker.number] = time.monotonic()
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
        self._signals.clear()
        deadline = time.monotonic() + self.grace + 5
        forced = False
        while any(w.proc.poll() is None for w in workers) and time.monotonic() < deadline:
            if not forced and any(s in (signal.SIGTERM, signal.SIGINT) for s in self._signals):
                forced = True  # asked again: the workers stop at once
                log.warning("asked again: stopping the workers now")
                for worker in workers:
                    with contextlib.suppress(ProcessLookupError):
                        worker.proc.send_signal(signal.SIGQUIT)
            with contextlib.suppress(InterruptedError):
                select.select([self._wake_r], [], [], 0.05)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 4096):
                    pass
        for worker in workers:
            if worker.proc.poll() is None:
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
