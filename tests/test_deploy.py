"""HAProxy for real in front of three framewire servers (deploy/haproxy.cfg).

TCP mode, PROXY protocol v2 to the backends, health checks that send a
framewire ping probe and expect its answer. Needs haproxy: ``make
test-deploy`` installs it from the system's packages and sets
FRAMEWIRE_REQUIRE_HAPROXY=1, which turns a skip into a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import framewire_cmd
from framewire import Client, Message

pytestmark = pytest.mark.deploy

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
CLIENT_ADDRESS = "127.0.0.5"  # the "real client", as the backends must see it


def haproxy_or_skip() -> str:
    found = shutil.which("haproxy")
    if found is None:
        if os.environ.get("FRAMEWIRE_REQUIRE_HAPROXY"):
            pytest.fail("haproxy is required here (make test-deploy installs it)")
        pytest.skip("haproxy is not installed (make test-deploy installs it)")
    return found


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def stats(path: str) -> dict[str, str]:
    """Each backend server's status (UP, DOWN...), from HAProxy's admin socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    rows = [line.split(",") for line in data.decode().splitlines() if line and not line.startswith("#")]
    return {row[1]: row[17] for row in rows if row[0] == "framewire_servers" and row[1].startswith("s")}


def wait_until(what: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message
        time.sleep(0.05)  # HAProxy's state is polled through its socket, with a deadline


class Logged:
    """A framewire command whose log goes to a file (a pipe nobody reads
    while the test runs would fill and stop it)."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("w") as sink:
            self.proc = subprocess.Popen(framewire_cmd(*args), stderr=sink, cwd=str(TESTS))

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log.read_text(errors="replace"))
            if match:
                return match
            assert time.monotonic() < deadline, (
                f"{pattern!r} never in {self.log}: {self.log.read_text()[-2000:]}"
            )
            time.sleep(0.05)  # a file another process writes: polled, with a deadline

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.front = free_port("127.0.0.1")
        self.backends: list[Logged] = []
        self.addresses: list[str] = []
        for i in (2, 3, 4):
            host = f"127.0.0.{i}"
            port = free_port(host)
            backend = Logged(tmp / f"backend{i}.log", "serve", "--host", host, "--port", str(port),
                             "--app", "deploy_app:whoami", "--proxy-protocol", "--threads", "8",
                             "--log-level", "debug")  # fmt: skip
            backend.wait_for("listening on")
            self.backends.append(backend)
            self.addresses.append(f"{host}:{port}")
        self.stats = str(tmp / "haproxy.sock")
        env = dict(os.environ, FW_FRONT=f"127.0.0.1:{self.front}", FW_STATS=self.stats)
        env.update({f"FW_BACKEND{n}": address for n, address in enumerate(self.addresses, 1)})
        self.haproxy = subprocess.Popen(
            [haproxy_or_skip(), "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: os.path.exists(self.stats), 10, "haproxy never opened its admin socket")
        wait_until(lambda: set(stats(self.stats).values()) == {"UP"}, 10, "the backends never came UP")

    def ask(self, content: bytes = b"") -> dict[str, Any]:
        with Client("127.0.0.1", self.front, timeout=10, source_address=(CLIENT_ADDRESS, 0)) as client:
            answer: dict[str, Any] = client.request(Message.from_bytes(content)).json()
            return answer

    def close(self) -> None:
        self.haproxy.terminate()
        self.haproxy.communicate(timeout=10)
        for backend in self.backends:
            backend.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    haproxy_or_skip()
    made = Cluster(tmp_path_factory.mktemp("deploy"))
    try:
        yield made
    finally:
        made.close()


def test_requests_are_spread_and_backends_see_the_real_client(cluster: Cluster) -> None:
    answers = [cluster.ask() for _ in range(30)]
    assert {a["pid"] for a in answers} == {b.proc.pid for b in cluster.backends}
    assert all(a["peer"].startswith(f"{CLIENT_ADDRESS}:") for a in answers)
    port = answers[-1]["peer"].rsplit(":", 1)[1]
    # ... and it is the address in the backend's own log.
    logs = [b for b in cluster.backends if b.proc.pid == answers[-1]["pid"]]
    logs[0].wait_for(
        rf"connection from {CLIENT_ADDRESS}:{port} opened, through 127\.0\.0\.1:\d+ \(PROXY v2\)"
    )


def test_a_killed_backend_is_marked_down_and_requests_keep_succeeding(cluster: Cluster) -> None:
    victim = cluster.backends[0]
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)  # gone: a request now cannot be in flight to it
    killed = time.monotonic()
    errors = 0
    while stats(cluster.stats).get("s1") != "DOWN":
        assert time.monotonic() - killed < 2, "the dead backend was not marked down within 2 s"
        try:
            assert cluster.ask()["pid"] != victim.proc.pid
        except OSError:
            errors += 1
    answers = [cluster.ask() for _ in range(20)]
    assert errors == 0
    assert {a["pid"] for a in answers} == {b.proc.pid for b in cluster.backends[1:]}


def test_a_backend_drained_with_sigterm_loses_no_request_in_flight(cluster: Cluster) -> None:
    draining = cluster.backends[1]
    results: list[Any] = []

    def slow() -> None:
        try:
            results.append(cluster.ask(b"0.5"))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=slow) for _ in range(8)]
    for thread in threads:
        thread.start()
    draining.wait_for(r"connection from 127\.0\.0\.5:\d+ opened")  # some are in flight there
    draining.proc.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(20)
    more = [cluster.ask() for _ in range(10)]
    assert [r for r in results if isinstance(r, Exception)] == []
    assert len(results) == 8
    assert draining.proc.pid in {r["pid"] for r in results}  # it answered its share before leaving
    assert all(a["pid"] == cluster.backends[2].proc.pid for a in more)
    draining.proc.wait(20)
    assert draining.proc.returncode == 0
