"""send_parts: how the epoll driver writes large queues on TLS sockets."""

from __future__ import annotations

import ssl
from typing import Any

from framewire.io.tls import send_parts


class FakeTls:
    """Takes at most ``room`` bytes per call; raises want-write when full."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.calls: list[Any] = []

    def send(self, data: Any) -> int:
        self.calls.append(data)
        if self.room == 0:
            raise ssl.SSLWantWriteError()
        taken = min(self.room, len(data))
        self.room -= taken
        return taken


def test_large_parts_are_written_as_they_are_and_small_ones_joined() -> None:
    big = b"B" * 1_000_000
    sock = FakeTls(10**9)
    assert send_parts(sock, [b"h1", b"c1", b"h2", big, b"h3", b"c3"]) == 1_000_010  # type: ignore[arg-type]
    assert sock.calls[0] == b"h1c1h2"
    assert sock.calls[1] is big  # not copied
    assert sock.calls[2] == b"h3c3"


def test_a_write_that_must_wait_starts_the_next_call_with_the_same_bytes() -> None:
    parts: list[bytes | memoryview] = [b"head", b"X" * 100_000, b"tail"]
    sock = FakeTls(0)
    assert send_parts(sock, parts) == 0  # type: ignore[arg-type]
    first = bytes(sock.calls[0])
    sock.room = 10**9
    sock.calls.clear()
    assert send_parts(sock, parts) == 100_008  # type: ignore[arg-type]
    assert bytes(sock.calls[0]) == first  # OpenSSL's rule for a retried write


def test_a_partial_write_reports_what_went() -> None:
    sock = FakeTls(50_000)
    assert send_parts(sock, [b"hh", b"Y" * 100_000]) == 50_000  # type: ignore[arg-type]
