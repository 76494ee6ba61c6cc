"""framewire ping, run as a person runs it, against framewire and other servers."""

from __future__ import annotations

import math
import re
import socket

from conftest import run_cli, running
from framewire import Message
from framewire.server.app import search_app
from framewire.tools.ping import PING_KEY, PingStats, is_probe, probe_reply, rtt_text
from test_guide_compat import guide_server  # noqa: F401  (a fixture)

REPLY = re.compile(r"^56 bytes from 127\.0\.0\.1:\d+: seq=(\d+) time=(\d+\.\d+|\d+) ms")


def check_summary(lines: list[str], port: int, sent: int, received: int) -> None:
    assert lines[-3] == f"--- 127.0.0.1:{port} framewire ping statistics ---"
    loss = 100 * (sent - received) / sent
    assert re.fullmatch(
        rf"{sent} requests transmitted, {received} received, {loss:g}% loss, time \d+ms", lines[-2]
    ), lines[-2]
    assert re.fullmatch(r"rtt min/avg/max/mdev = \d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3} ms", lines[-1])


def test_ping_a_framewire_server() -> None:
    with running(search_app()) as server:
        result = run_cli("ping", "127.0.0.1", str(server.port), "-n", "3", "-i", "0.01")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    replies = [REPLY.match(line) for line in lines[1:4]]
    assert [int(m.group(1)) for m in replies if m] == [1, 2, 3]
    assert "no probe support" not in result.stdout  # the server answered the probes itself
    check_summary(lines, server.port, 3, 3)


def test_ping_the_guides_server_reconnects(guide_server: int) -> None:  # noqa: F811
    result = run_cli("ping", "127.0.0.1", str(guide_server), "-n", "3", "-i", "0.01")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert sum("no probe support" in line for line in lines) == 3
    check_summary(lines, guide_server, 3, 3)


def test_ping_with_nothing_listening() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        result = run_cli("ping", "127.0.0.1", str(placeholder.getsockname()[1]), "-n", "2")
    assert result.returncode == 2
    assert "nothing is listening" in result.stderr and "Traceback" not in result.stderr


def test_ping_with_no_replies_exits_1() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (in the backlog), never answers
        port = silent.getsockname()[1]
        result = run_cli("ping", "127.0.0.1", str(port), "-n", "2", "-i", "0", "--timeout", "0.2")
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert "seq=1 no reply (timeout)" in result.stdout
    assert lines[-1] == f"2 requests transmitted, 0 received, 100% loss, time {lines[-1].split('time ')[1]}"


def test_ping_connect_only() -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:
        port = plain.getsockname()[1]
        result = run_cli("ping", "127.0.0.1", str(port), "--connect", "-n", "2", "-i", "0")
    assert result.returncode == 0, result.stderr
    assert re.search(r"connected to 127\.0\.0\.1:\d+: seq=2 time=", result.stdout)


def test_probe_helpers_and_summary_math() -> None:
    probe = Message.from_bytes(b"abc", extensions={PING_KEY: 7})
    assert is_probe(probe) and not is_probe(Message.from_bytes(b"abc"))
    assert probe_reply(probe).extensions[PING_KEY] == 7 and probe_reply(probe).content == b"abc"
    assert [rtt_text(x) for x in (0.0456, 1.234, 12.34, 123.4)] == ["0.046", "1.23", "12.3", "123"]
    stats = PingStats(transmitted=4, received=3, rtts=[1.0, 2.0, 3.0], started=0.0, ended=1.5)
    lines = stats.summary("h:1")
    assert lines[1] == "4 requests transmitted, 3 received, 25% loss, time 1500ms"
    mdev = math.sqrt(2 / 3)  # population standard deviation of 1, 2, 3
    assert lines[2] == f"rtt min/avg/max/mdev = 1.000/2.000/3.000/{mdev:.3f} ms"
