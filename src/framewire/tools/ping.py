"""Application-level ping: a real request per probe, on one kept-alive connection.

A probe is a binary message carrying the header extension ``framewire-ping``
(its sequence number). framewire's server answers probes itself, whatever
its application, echoing the content and the extension. A server that knows
no probes (the guide's) still gets a binary request it can answer; every
answer counts as the probe's reply. When the server closes the connection
after its answer (the guide's server does), the next probe reconnects.
"""

from __future__ import annotations

import math
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from framewire.core.decoder import Decoder
from framewire.core.errors import ConnectionClosed, ProtocolError
from framewire.core.message import Message
from framewire.core.probe import PING_KEY, is_probe, probe_reply
from framewire.io.netio import connect, translated

__all__ = ["PING_KEY", "PingStats", "is_probe", "ping", "probe_reply", "rtt_text"]

PROBE_CONTENT_TYPE = "binary/framewire-ping"


def rtt_text(ms: float) -> str:
    """A round-trip time the way iputils ping prints it (3 decimals under 1 ms)."""
    if ms < 1:
        return f"{ms:.3f}"
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


@dataclass
class PingStats:
    """What a run of probes saw."""

    transmitted: int = 0
    received: int = 0
    rtts: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def summary(self, target: str) -> list[str]:
        """The closing lines, in iputils' form."""
        elapsed = ((self.ended or time.monotonic()) - self.started) * 1000
        loss = 100.0 * (self.transmitted - self.received) / self.transmitted if self.transmitted else 0.0
        lines = [
            f"--- {target} framewire ping statistics ---",
            f"{self.transmitted} requests transmitted, {self.received} received, {loss:g}% loss, "
            f"time {elapsed:.0f}ms",
        ]
        if self.rtts:
            mean = sum(self.rtts) / len(self.rtts)
            mdev = math.sqrt(sum((r - mean) ** 2 for r in self.rtts) / len(self.rtts))  # population
            lines.append(
                f"rtt min/avg/max/mdev = {min(self.rtts):.3f}/{mean:.3f}/{max(self.rtts):.3f}/{mdev:.3f} ms"
            )
        return lines


@dataclass
class Reply:
    """One probe's outcome: its sequence number, round trip in ms (None: lost), a note."""

    seq: int
    rtt_ms: float | None
    size: int = 0
    note: str = ""


def ping(
    host: str,
    port: int,
    *,
    count: int | None = None,
    interval: float = 1.0,
    timeout: float = 5.0,
    size: int = 56,
    connect_only: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Iterator[Reply]:
    """Probe ``host:port`` (or ``unix:PATH``) ``count`` times (forever if
    None), one reply each; over TLS with ``ssl_context``.

    ``connect_only`` measures the connect alone (with TLS: and the
    handshake), which needs no framewire on the other side. Raises ``ConnectionRefusedError`` (and the
    other socket errors, translated) when the first connection fails.
    """
    sock: socket.socket | None = None
    decoder = Decoder()
    payload = bytes(i % 256 for i in range(size))
    seq = 0
    try:
        while count is None or seq < count:
            seq += 1
            if seq > 1:
                sleep(interval)
            start = time.perf_counter()
            if connect_only:
                try:
                    connect(host, port, timeout, ssl_context, server_hostname).close()
                except TimeoutError:
                    yield Reply(seq, None, note="no connection in time")
                    continue
                except ConnectionRefusedError:
                    if seq == 1:
                        raise
                    yield Reply(seq, None, note="connection refused")
                    continue
                yield Reply(seq, (time.perf_counter() - start) * 1000)
                continue
            probe = Message.from_bytes(payload, content_type=PROBE_CONTENT_TYPE, extensions={PING_KEY: seq})
            reply: Message | None = None
            note = ""
            for _attempt in range(2):
                fresh = sock is None
                if sock is None:
                    sock = connect(host, port, timeout, ssl_context, server_hostname)
                    decoder = Decoder()
                try:
                    with translated(host, port, timeout):
                        sock.settimeout(timeout)
                        sock.sendall(probe.encode())
                        reply = _read_one(sock, decoder, start + timeout)
                    break
                except TimeoutError:
                    note = "timeout"
                except (ConnectionClosed, ConnectionResetError, ProtocolError) as exc:
                    note = str(exc)
                sock.close()
                sock = None  # a late reply must not be taken for the next probe's
                if fresh or note == "timeout":
                    break
                # The server closed a kept-alive connection after its last answer
                # (the guide's server does, after each): try once on a new one.
                start = time.perf_counter()
            if reply is None:
                yield Reply(seq, None, note=note)
                continue
            rtt = (time.perf_counter() - start) * 1000
            if reply.get(PING_KEY) != seq:
                note = "(answered by the application: no probe support)"
            yield Reply(seq, rtt, reply.content_length, note)
    finally:
        if sock is not None:
            sock.close()


def _read_one(sock: socket.socket, decoder: Decoder, deadline: float) -> Message:
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        data = sock.recv(65536)
        messages = decoder.feed(data)
        if messages:
            return messages[0]
        if not data:
            raise ConnectionClosed("the server closed the connection before answering")
