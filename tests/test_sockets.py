"""framewire sockets: the netstat view, checked against sockets the test makes."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
from typing import Any

import psutil

from conftest import run_cli
from framewire.tools.sockets import list_sockets


def wait_for_rows(port: int, predicate: Any, timeout: float = 10.0) -> list[Any]:
    """The port's sockets once ``predicate`` holds for them (fails at the deadline).

    TIME_WAIT rows are left out: the kernel may give port 0 a number that
    earlier tests' closed connections still hold in TIME_WAIT."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [row for row in list_sockets(port) if row.state != "TIME_WAIT"]
        if predicate(rows):
            return rows
        assert time.monotonic() < deadline, f"port {port}: not within {timeout:g} s: {rows}"
        time.sleep(0.02)  # polling the kernel's table: no event to wait on


def test_states_and_queues_of_a_port() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:  # never accepts: the data waits in Recv-Q
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"x" * 1234)
            rows = wait_for_rows(port, lambda rows: any(r.recv_q == 1234 for r in rows))
            states = sorted(r.state for r in rows)
            assert states == ["ESTABLISHED", "ESTABLISHED", "LISTEN"]
            server_side = next(r for r in rows if r.state == "ESTABLISHED" and r.local.endswith(f":{port}"))
            assert server_side.recv_q == 1234
            # Not accepted yet: in no process's descriptor table, so no owner.
            assert server_side.pid is None
            assert {r.pid for r in rows if r is not server_side} == {os.getpid()}

            result = run_cli("sockets", "--port", str(port))
            assert result.returncode == 0, result.stderr
            lines = result.stdout.strip().splitlines()
            assert lines[0].split() == ["Local", "Address", "Foreign", "Address", "State", "Recv-Q", "Send-Q",
                                        "PID/Program"]  # fmt: skip
            # A listener's Recv-Q is its accept queue: the one connection waiting.
            listen = rf"127\.0\.0\.1:{port}\s+0\.0\.0\.0:\*\s+LISTEN\s+1\s+\d+\s+{os.getpid()}/"
            assert re.search(listen, result.stdout)
            assert re.search(
                rf"127\.0\.0\.1:{port}\s+127\.0\.0\.1:\d+\s+ESTABLISHED\s+1234\s+0", result.stdout
            )


def test_default_view_shows_framewire_servers(spawn: Any) -> None:
    server = spawn("serve", "--port", "0", "--log-level", "warning")
    port = server.port()
    result = run_cli("sockets")
    assert result.returncode == 0, result.stderr
    assert re.search(
        rf"127\.0\.0\.1:{port}\s+0\.0\.0\.0:\*\s+LISTEN\s+\d+\s+\d+\s+{server.proc.pid}/", result.stdout
    )


def quiet_port(placeholder: socket.socket) -> int:
    """Bind ``placeholder`` (not listening: no TCP state of its own) to a
    port no TCP socket on this host uses. A free port may still have
    connections of an earlier test to it in TIME_WAIT, which the command
    rightly shows (once seen in CI): such ports are passed over."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        used = {end[1] for c in psutil.net_connections("tcp") for end in (c.laddr, c.raddr) if len(end) == 2}
        if port not in used:
            with contextlib.suppress(OSError):
                placeholder.bind(("127.0.0.1", port))
                return port
    raise AssertionError("no quiet port in 50 tries")


def test_a_port_with_no_sockets() -> None:
    with socket.socket() as placeholder:
        port = quiet_port(placeholder)
        result = run_cli("sockets", "--port", str(port))
    assert result.returncode == 0
    assert result.stdout.strip() == f"no TCP sockets on port {port}"
