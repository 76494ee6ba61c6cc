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
from framewire import Client, Message, Retry

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


def haproxy(front: int, stats_path: str, backends: list[str]) -> subprocess.Popen[bytes]:
    """deploy/haproxy.cfg as shipped, on 127.0.0.1:``front`` in front of
    three ``backends``; returned once they are all UP."""
    env = dict(os.environ, FW_FRONT=f"127.0.0.1:{front}", FW_STATS=stats_path)
    env.update({f"FW_BACKEND{n}": address for n, address in enumerate(backends, 1)})
    proc = subprocess.Popen(
        [haproxy_or_skip(), "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_until(lambda: os.path.exists(stats_path), 10, "haproxy never opened its admin socket")
    wait_until(lambda: set(stats(stats_path).values()) == {"UP"}, 10, "the backends never came UP")
    return proc


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
        self.haproxy = haproxy(self.front, self.stats, self.addresses)

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


# -- publish and subscribe across hosts: brokers on Redis, behind HAProxy ---------------


def redis_server_or_skip() -> str:
    found = shutil.which("redis-server")
    if found is None:
        if os.environ.get("FRAMEWIRE_REQUIRE_HAPROXY"):
            pytest.fail("redis-server is required here (make test-deploy installs it)")
        pytest.skip("redis-server is not installed (make test-deploy installs it)")
    return found


class RedisServer:
    """A redis-server of the test's own: no persistence, a free port."""

    def __init__(self, tmp: Path) -> None:
        self.binary = redis_server_or_skip()
        self.port = free_port("127.0.0.1")
        self.tmp = tmp
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self.answers, 10, "redis-server never answered PING")

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Brokers:
    """Two brokers (`serve --app pubsub --workers 2 --hub redis://...`)
    behind HAProxy (deploy/haproxy.cfg as shipped; its third server is the
    first again: the layout of two hosts)."""

    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.front = free_port("127.0.0.1")
        self.backends: list[Logged] = []
        addresses = []
        for i in (2, 3):
            host = f"127.0.0.{i}"
            port = free_port(host)
            backend = Logged(tmp / f"broker{i}.log", "serve", "--host", host, "--port", str(port),
                             "--app", "pubsub", "--workers", "2", "--hub", redis_url,
                             "--proxy-protocol")  # fmt: skip
            backend.wait_for(r"listening on(.|\n)*listening on")  # (each worker says so)
            self.backends.append(backend)
            addresses.append(f"{host}:{port}")
        self.stats = str(tmp / "haproxy-brokers.sock")
        self.haproxy = haproxy(self.front, self.stats, [*addresses, addresses[0]])

    def client(self) -> Client:
        return Client("127.0.0.1", self.front, timeout=10)

    def close(self) -> None:
        self.haproxy.terminate()
        self.haproxy.communicate(timeout=10)
        for backend in self.backends:
            backend.proc.send_signal(signal.SIGTERM)
        for backend in self.backends:
            try:
                backend.proc.wait(20)
            except subprocess.TimeoutExpired:
                backend.kill()


class Subscriber:
    """A subscription through the balancer, read on a thread of its own."""

    def __init__(self, brokers: Brokers, topics: str) -> None:
        self.client = brokers.client()
        self.events: list[Any] = []
        self.changed = threading.Condition()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, args=(topics,), daemon=True)
        self.thread.start()

    def _read(self, topics: str) -> None:
        # Until an event on a topic ending in ".end" (the client is not
        # closed from another thread while this one reads).
        try:
            with self.client:
                for event in self.client.subscribe(topics, timeout=60):
                    with self.changed:
                        self.events.append(event)
                        self.changed.notify_all()
                    if event.topic.endswith(".end"):
                        break
        except BaseException as exc:  # (shown by the test)
            self.error = exc

    def end(self, brokers: Brokers, topic: str, subscribers: list[Subscriber]) -> None:
        publish_until(brokers, topic, None, lambda: not any(s.thread.is_alive() for s in subscribers))

    def wait_for(self, what: Any, timeout: float = 30) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: what(self.events) or self.error is not None, timeout), (
                f"never came; so far {self.events[-5:]}"
            )
        assert self.error is None, self.error


def publish_until(brokers: Brokers, topic: str, value: Any, done: Any, timeout: float = 30) -> None:
    """Publish ``value`` again and again until ``done()``: a subscription
    made through another process is not known to be in place until an
    event has gone through it (publishes Redis refuses meanwhile fail)."""
    from framewire.core.errors import ErrorResponse

    deadline = time.monotonic() + timeout
    with brokers.client() as client:
        while not done():
            assert time.monotonic() < deadline, "the subscribers never got it"
            try:
                client.publish(topic, value)
            except ErrorResponse as exc:
                assert exc.code == "server-busy"  # Redis away: refused at once, never a wait
            threading.Event().wait(0.05)  # (between publishes: not a wait for an outcome)


def all_got(subscribers: list[Subscriber], topic: str) -> bool:
    return all(any(e.topic == topic for e in s.events) for s in subscribers)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    haproxy_or_skip()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def brokers(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Brokers]:
    made = Brokers(tmp_path_factory.mktemp("brokers"), redis_server.url)
    try:
        yield made
    finally:
        made.close()


def test_brokers_on_redis_deliver_every_publish_once_in_order(brokers: Brokers) -> None:
    subscribers = [Subscriber(brokers, "run1.*") for _ in range(8)]
    publish_until(brokers, "run1.ready", 1, lambda: all_got(subscribers, "run1.ready"))
    count = 300
    publishers = [brokers.client() for _ in range(4)]  # spread over the two brokers' workers
    try:
        for seq in range(count):
            for number, publisher in enumerate(publishers):
                publisher.publish(f"run1.data.{number}", {"from": number, "seq": seq})
    finally:
        for publisher in publishers:
            publisher.close()
    for subscriber in subscribers:
        subscriber.wait_for(lambda events: sum(e.topic.startswith("run1.data") for e in events) >= 4 * count)
    for subscriber in subscribers:
        data = [e.value for e in subscriber.events if e.topic.startswith("run1.data")]
        for number in range(4):
            assert [v["seq"] for v in data if v["from"] == number] == list(range(count))  # once, in order
        assert all(not e.dropped for e in subscriber.events)
    subscribers[0].end(brokers, "run1.end", subscribers)


def test_subscribers_survive_a_redis_restart_and_see_the_gap(
    brokers: Brokers, redis_server: RedisServer
) -> None:
    subscribers = [Subscriber(brokers, "run2.*") for _ in range(4)]
    publish_until(brokers, "run2.ready", 1, lambda: all_got(subscribers, "run2.ready"))
    redis_server.stop()
    with brokers.client() as client:
        refused = 0
        deadline = time.monotonic() + 10
        while not refused:  # the brokers notice at once: publish is refused, never held
            assert time.monotonic() < deadline
            started = time.monotonic()
            try:
                client.publish("run2.lost", 0)
            except Exception as exc:
                assert getattr(exc, "code", None) == "server-busy", exc
                refused += 1
            assert time.monotonic() - started < 2
    redis_server.start()
    publish_until(brokers, "run2.after", 1, lambda: all_got(subscribers, "run2.after"))
    for subscriber in subscribers:
        after = [e for e in subscriber.events if e.topic != "run2.ready"]
        assert after and after[0].dropped is True, after[:3]  # the gap, marked on the first event after it
        assert subscriber.error is None and subscriber.thread.is_alive()  # the same subscription goes on
    subscribers[0].end(brokers, "run2.end", subscribers)
    assert all(s.error is None for s in subscribers)


def test_two_redis_hubs_in_one_process_are_one_hub(redis_server: RedisServer) -> None:
    import asyncio

    from framewire import RedisHub
    from framewire.core.errors import Failure

    first, second = RedisHub(redis_server.url), RedisHub(redis_server.url)

    async def scenario() -> list[Any]:
        subscription = second.subscribe("lib.*")
        deadline = time.monotonic() + 10
        while not subscription.events:  # until the link is up: a publish gets through
            assert time.monotonic() < deadline, "no publish ever came back from Redis"
            first.publish("lib.warm", None)
            await asyncio.sleep(0.05)  # (the pace of the warm-ups)
        for i in range(100):
            first.publish("lib.data", i)
        got = []
        async for event in subscription:
            if event.topic == "lib.data":  # (warm-ups may still be on their way)
                got.append(event.value)
                if len(got) == 100:
                    break
        return got

    try:
        assert asyncio.run(asyncio.wait_for(scenario(), 20)) == list(range(100))
    finally:
        first.stop()
        second.stop()
    nowhere = RedisHub(f"redis://127.0.0.1:{free_port('127.0.0.1')}/0")
    try:
        with pytest.raises(Failure) as refused:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                nowhere.publish("t", 1)  # accepted until the hub knows Redis is not there
                threading.Event().wait(0.02)
        assert refused.value.code == "server-busy" and "cannot reach Redis" in refused.value.message
    finally:
        nowhere.stop()


# -- systemd socket activation (deploy/framewire.socket + framewire.service) -------------------


def _unit(name: str, key: str) -> str:
    # One setting of a unit file in deploy/ (its last, as systemd takes it).
    values: list[str] = re.findall(rf"^{key}=(.+)$", (ROOT / "deploy" / name).read_text(), re.M)
    assert values, f"{name} has no {key}="
    return values[-1].strip()


def test_the_systemd_pair_serves_reloads_and_stops_as_shipped(tmp_path: Path) -> None:
    # The socket unit's ListenStream, the service's ExecStart (its app the
    # echo, its metrics on a free port) and ExecReload, run as systemd runs
    # them: systemd-socket-activate holds the socket and starts the server
    # on the first connection, with LISTEN_FDS.
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        if os.environ.get("FRAMEWIRE_REQUIRE_HAPROXY"):
            pytest.fail("systemd-socket-activate is required here (the systemd package)")
        pytest.skip("systemd-socket-activate is not installed")
    host = _unit("framewire.socket", "ListenStream").rsplit(":", 1)[0].replace("0.0.0.0", "127.0.0.1")
    port = free_port(host)
    exec_start = _unit("framewire.service", "ExecStart").split()
    assert exec_start[0].endswith("/framewire") and exec_start[1] == "serve"
    args = exec_start[2:]
    args[args.index("--app") + 1] = "echo"
    args[args.index("--metrics") + 1] = f"127.0.0.1:{free_port('127.0.0.1')}"
    assert _unit("framewire.service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    from framewire.server.workers import usable_cpus

    replaced = f"SIGHUP: {usable_cpus()} workers replaced"  # --workers auto
    server = subprocess.Popen(
        [activate, "-l", f"{host}:{port}", *framewire_cmd("serve", *args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        with Client(host, port, timeout=20) as client:  # the first connection starts the service
            assert client.request(Message.from_bytes(b"first")).content == b"first"
        # A reload under load: every request is answered, by old or new
        # workers. (A kept connection whose worker drains is closed between
        # two requests; the next request, safe to repeat, goes again on a
        # new connection, as docs/deploy.md tells clients to.)
        answered: list[bytes] = []
        stop = threading.Event()

        def load() -> None:
            with Client(host, port, timeout=10, retry=Retry(attempts=3)) as client:
                while not stop.is_set():
                    answer = client.request(Message.from_bytes(b"during"), idempotent=True)
                    answered.append(answer.content)

        loader = threading.Thread(target=load)
        loader.start()
        subprocess.run(["/bin/kill", "-HUP", str(server.pid)], check=True, timeout=10)  # ExecReload
        seen = ""
        deadline = time.monotonic() + 30
        while replaced not in seen and time.monotonic() < deadline:
            line = server.stderr.readline() if server.stderr else ""
            seen += line
            if not line and server.poll() is not None:
                break
        stop.set()
        loader.join(30)
        assert replaced in seen, seen
        assert answered and set(answered) == {b"during"}
        with Client(host, port, timeout=10) as client:
            assert client.request(Message.from_bytes(b"after")).content == b"after"
        server.send_signal(signal.SIGTERM)  # systemctl stop (KillSignal=SIGTERM)
        _, err = server.communicate(timeout=30)
        assert server.returncode == 0, err
        assert "all workers stopped" in err and "Traceback" not in seen + err
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)
