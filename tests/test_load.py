"""Load: ten thousand concurrent connections, and a short soak.

Selected with ``-m load``; both run in ``make test``.
"""

from __future__ import annotations

import errno
import json
import resource
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from framewire import Decoder, Message, encode

CONNECTIONS = 10_000
ROOT = Path(__file__).resolve().parent.parent


def raise_own_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard descriptor limit is {hard}; this test needs {wanted}")
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


@pytest.mark.load
@pytest.mark.timeout(300)
def test_ten_thousand_concurrent_connections(spawn: Any, record_property: Any) -> None:
    raise_own_limit(CONNECTIONS + 200)
    # The server raises its own limit (within the hard limit) for --max-connections.
    server = spawn(
        "serve",
        "--port",
        "0",
        "--app",
        "echo",
        "--log-level",
        "warning",
        "--max-connections",
        str(CONNECTIONS),
    )
    port = server.port()
    process = psutil.Process(server.proc.pid)
    rss_before = process.memory_info().rss
    fds_before = process.num_fds()

    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    try:
        for _ in range(CONNECTIONS):
            sock = socket.socket()
            sock.setblocking(False)
            assert sock.connect_ex(("127.0.0.1", port)) in (0, errno.EINPROGRESS)
            socks.append(sock)
        # Every connection established and accepted: all held at once.
        deadline = time.monotonic() + 120
        while process.num_fds() < fds_before + CONNECTIONS:
            assert time.monotonic() < deadline, f"server holds {process.num_fds() - fds_before} connections"
            time.sleep(0.05)
        held = process.num_fds() - fds_before
        rss_held = process.memory_info().rss

        # Each sends a request of its own and must get exactly its answer back.
        decoders: dict[int, Decoder] = {}
        for i, sock in enumerate(socks):
            sock.setblocking(True)
            sock.sendall(encode(Message.from_bytes(b"connection %d" % i)))
            sock.setblocking(False)
            decoders[sock.fileno()] = Decoder()
            sel.register(sock, selectors.EVENT_READ, i)
        answered = 0
        deadline = time.monotonic() + 120
        while answered < CONNECTIONS:
            assert time.monotonic() < deadline, f"only {answered} answers"
            for key, _ in sel.select(1.0):
                sock = key.fileobj  # type: ignore[assignment]
                data = sock.recv(65536)
                assert data, f"connection {key.data} closed without an answer"
                for answer in decoders[sock.fileno()].feed(data):
                    assert answer.content == b"connection %d" % key.data
                    answered += 1
                    sel.unregister(sock)
        rss_after = process.memory_info().rss
    finally:
        sel.close()
        for sock in socks:
            sock.close()
    per_connection = (rss_held - rss_before) / CONNECTIONS
    report = {
        "connections_held": held,
        "answered": answered,
        "server_rss_mib_before": round(rss_before / 2**20, 1),
        "server_rss_mib_held": round(rss_held / 2**20, 1),
        "server_rss_mib_after_requests": round(rss_after / 2**20, 1),
        "bytes_per_connection": round(per_connection),
    }
    record_property("load", report)
    print(json.dumps(report))
    assert held >= CONNECTIONS and answered == CONNECTIONS
    code, _, err = server.stop()
    assert code == 0, err


@pytest.mark.load
@pytest.mark.timeout(120)
def test_soak_ten_seconds() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--duration", "10", "--json"],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == 0 and report["mismatches"] == 0
    assert report["responses"] > 0 and report["open_at_end"] == report["connections"]
    print(json.dumps(report))
