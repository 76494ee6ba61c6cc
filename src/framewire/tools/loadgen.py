"""A load client: many connections, each keeping requests in flight.

One thread, one selector. Each connection keeps ``depth`` requests in flight
(pipelining) and sends a new batch for every batch of answers, in one
``send``. Answers can be checked against the echo application (same content
back). Latencies go into a log-scale histogram (2 % buckets), so a run of
any length costs constant memory.
"""

from __future__ import annotations

import collections
import errno
import math
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from framewire.core import limits
from framewire.core.decoder import Decoder
from framewire.core.errors import ProtocolError
from framewire.core.message import Message
from framewire.io.netio import describe, dial, plain_host, resolve, tls_problem

__all__ = ["LoadResult", "Progress", "run_load"]

_BUCKET_BASE = 1.02
_LOG_BASE = math.log(_BUCKET_BASE)
_BUCKETS = 1200  # 1 us .. 1.02**1200 us (~ 20,000 s)


class Histogram:
    """Latencies in microseconds, in 2 % log buckets."""

    __slots__ = ("counts", "max_us", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0
        self.max_us = 0.0

    def add(self, us: float) -> None:
        index = int(math.log(us) / _LOG_BASE) if us > 1 else 0
        self.counts[min(index, _BUCKETS - 1)] += 1
        self.total += 1
        self.max_us = max(self.max_us, us)

    def percentile(self, fraction: float) -> float:
        """The latency below which ``fraction`` of the samples fall (upper bucket edge)."""
        if not self.total:
            return 0.0
        goal = fraction * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= goal:
                return min(_BUCKET_BASE ** (index + 1), self.max_us)
        return self.max_us


@dataclass
class Progress:
    """A snapshot during the run, for a live progress line."""

    elapsed: float
    done: int
    errors: int
    open_connections: int


@dataclass
class LoadResult:
    """What a load run measured."""

    duration: float
    requests: int
    responses: int
    errors: int
    mismatches: int
    bytes_sent: int
    bytes_received: int
    connections: int
    open_at_end: int
    latency: Histogram = field(repr=False)
    error_samples: list[str] = field(default_factory=list)
    #: The run was cut short by Ctrl-C: the figures are those so far.
    interrupted: bool = False

    @property
    def rate(self) -> float:
        """Responses per second."""
        return self.responses / self.duration if self.duration else 0.0

    def summary(self) -> dict[str, Any]:
        """The figures, as a JSON-ready dict (latencies in microseconds)."""
        lat = self.latency
        return {
            "duration_s": round(self.duration, 3),
            "requests": self.requests,
            "responses": self.responses,
            "rps": round(self.rate, 1),
            "mb_per_s": round(self.bytes_received / self.duration / 1e6, 2) if self.duration else 0.0,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "connections": self.connections,
            "open_at_end": self.open_at_end,
            "latency_us": {
                "p50": round(lat.percentile(0.50), 1),
                "p90": round(lat.percentile(0.90), 1),
                "p99": round(lat.percentile(0.99), 1),
                "p99.9": round(lat.percentile(0.999), 1),
                "max": round(lat.max_us, 1),
            },
            "error_samples": self.error_samples[:5],
        }


# A read or write that cannot go on now (plain, then TLS).
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class _Conn:
    __slots__ = ("connected", "decoder", "handshaking", "pending", "sent_at", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.connected = False
        self.handshaking = False
        self.decoder = Decoder()
        self.sent_at: collections.deque[float] = collections.deque()
        self.pending = bytearray()  # bytes not yet taken by the kernel


def run_load(
    host: str,
    port: int,
    request: Message,
    *,
    connections: int = 16,
    depth: int = 16,
    duration: float | None = 10.0,
    count: int | None = None,
    check: bool = False,
    timeout: float = 10.0,
    progress: Callable[[Progress], None] | None = None,
    progress_every: float = 1.0,
    oneshot: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> LoadResult:
    """Load ``host:port`` with copies of ``request``; stop after ``duration``
    seconds or ``count`` responses, whichever comes first.

    ``oneshot``: the guide's client pattern: each of the ``connections``
    slots connects, sends one request, reads one response, closes, and
    starts over (``depth`` is 1). ``ssl_context``: every connection speaks
    TLS (its handshake is part of the connection's setup, not of any
    request's latency).

    ``check``: every response must carry the request's content (the echo
    app), else it counts as a mismatch. A connection that fails counts one
    error and is not replaced. ``timeout``: a run with no answer at all for
    that long ends.
    """
    if duration is None and count is None:
        raise ValueError("give a duration, a count, or both")
    wire = request.encode()
    expected = request.content
    hist = Histogram()
    stats = {"requests": 0, "responses": 0, "errors": 0, "mismatches": 0, "sent": 0, "received": 0}
    samples: list[str] = []
    family, address = resolve(host, port)
    name = server_hostname
    if ssl_context is not None and name is None and family != socket.AF_UNIX:
        name = plain_host(host)
    selector = selectors.DefaultSelector()
    conns: list[_Conn] = []

    def fail(conn: _Conn, why: str) -> None:
        stats["errors"] += 1
        if len(samples) < 20:
            samples.append(why)
        selector.unregister(conn.sock)
        conn.sock.close()
        conns.remove(conn)

    def budget(want: int) -> int:
        if count is None:
            return want
        return max(0, min(want, count - stats["requests"]))

    def send(conn: _Conn, n: int, now: float) -> None:
        n = budget(n)
        if n:
            conn.pending += wire * n
            conn.sent_at.extend([now] * n)
            stats["requests"] += n
        if conn.pending:
            try:
                sent = conn.sock.send(conn.pending)
            except _WOULD_BLOCK:
                sent = 0
            del conn.pending[:sent]
            stats["sent"] += sent
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.pending else 0)
        if selector.get_key(conn.sock).events != events:
            selector.modify(conn.sock, events, conn)

    def open_connection() -> None:
        sock, code = dial(family, address, linger_reset=oneshot)
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            stats["errors"] += 1
            samples.append(f"connect: {errno.errorcode.get(code, code)}")
            return
        conn = _Conn(sock)
        conns.append(conn)
        selector.register(sock, selectors.EVENT_WRITE, conn)

    if oneshot:
        depth = 1
    start = time.monotonic()
    for _ in range(connections):
        open_connection()
    end = start + duration if duration is not None else math.inf
    next_progress = start + progress_every
    last_answer = start
    now = start
    interrupted = False
    try:
        while conns:
            if now >= end or (count is not None and stats["responses"] >= count):
                break
            if now - last_answer > timeout:
                samples.append(f"no answer for {timeout:g} s")
                stats["errors"] += len(conns)
                break
            for key, mask in selector.select(min(0.1, max(0.0, end - now))):
                conn = key.data
                now = time.monotonic()
                if not conn.connected:
                    code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code:
                        fail(conn, f"connect: {errno.errorcode.get(code, code)}")
                        continue
                    conn.connected = True
                    if ssl_context is None:
                        send(conn, depth, now)
                        continue
                    conn.sock = ssl_context.wrap_socket(
                        conn.sock, do_handshake_on_connect=False, server_hostname=name
                    )
                    conn.handshaking = True
                if conn.handshaking:
                    try:
                        conn.sock.do_handshake()
                    except ssl.SSLWantReadError:
                        selector.modify(conn.sock, selectors.EVENT_READ, conn)
                        continue
                    except ssl.SSLWantWriteError:
                        selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
                        continue
                    except OSError as exc:
                        why = tls_problem(exc) if isinstance(exc, ssl.SSLError) else describe(exc)
                        fail(conn, f"TLS: {why}")
                        continue
                    conn.handshaking = False
                    send(conn, depth, now)
                    continue
                try:
                    if mask & selectors.EVENT_READ:
                        try:
                            data = conn.sock.recv(limits.RECV_SIZE)
                            if ssl_context is not None:
                                more = conn.sock.pending()
                                while more and data:
                                    data += conn.sock.recv(more)
                                    more = conn.sock.pending()
                        except _WOULD_BLOCK:
                            continue
                        if not data:
                            fail(conn, "the server closed the connection")
                            continue
                        stats["received"] += len(data)
                        answers = conn.decoder.feed(data)
                        if answers:
                            last_answer = now
                            sent_at = conn.sent_at
                            for answer in answers:
                                hist.add((now - sent_at.popleft()) * 1e6)
                                if answer.is_error:
                                    stats["errors"] += 1
                                    if len(samples) < 20:
                                        samples.append(f"error response: {answer.error()}")
                                elif check and answer.content != expected:
                                    stats["mismatches"] += 1
                            stats["responses"] += len(answers)
                            if oneshot:
                                selector.unregister(conn.sock)
                                conn.sock.close()
                                conns.remove(conn)
                                if budget(1):
                                    open_connection()
                                continue
                            send(conn, len(answers), now)
                    elif mask & selectors.EVENT_WRITE:
                        send(conn, 0, now)
                except (OSError, ProtocolError) as exc:
                    fail(conn, f"{type(exc).__name__}: {exc}")
            now = time.monotonic()
            if progress is not None and now >= next_progress:
                next_progress = now + progress_every
                progress(Progress(now - start, stats["responses"], stats["errors"], len(conns)))
    except KeyboardInterrupt:
        interrupted = True  # Ctrl-C: the figures so far are the result
        now = time.monotonic()
    finally:
        open_at_end = len(conns)
        for conn in conns:
            conn.sock.close()
        selector.close()
    return LoadResult(
        duration=max(now - start, 1e-9),
        requests=stats["requests"],
        responses=stats["responses"],
        errors=stats["errors"],
        mismatches=stats["mismatches"],
        bytes_sent=stats["sent"],
        bytes_received=stats["received"],
        connections=connections,
        open_at_end=open_at_end,
        latency=hist,
        error_samples=samples,
        interrupted=interrupted,
    )
