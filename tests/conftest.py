"""Shared fixtures: servers on port 0, commands as subprocesses, deadlines."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trustme

from framewire import Decoder, Message, encode_many
from framewire.client import Client
from framewire.server import Server
from framewire.server.app import Handler, echo

# The driver the servers of a test run on: tests of modules marked with the
# ``driver`` fixture run once per driver (the same test, not a copy).
DRIVER = ["epoll"]


# Module-scoped, so that a module's shared servers are made once per driver.
@pytest.fixture(scope="module", params=["epoll", "asyncio"])
def driver(request: pytest.FixtureRequest) -> Iterator[str]:
    DRIVER[0] = request.param
    try:
        yield request.param
    finally:
        DRIVER[0] = "epoll"


# The transport of a test's connections: tests marked with the
# ``transport`` fixture run on plain TCP and on TLS (``running`` serves TLS,
# ``connect`` speaks it), the same test, not a copy.
TRANSPORT = ["tcp"]


class Tls:
    """A test CA (trustme), a server certificate for localhost, 127.0.0.1
    and ::1, and contexts for both ends; one per test session."""

    def __init__(self) -> None:
        self.ca = trustme.CA()
        self.server_cert = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        self.client_cert = self.ca.issue_cert("client@example.com", common_name="alice")

    def server(self, *, mutual: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server_cert.configure_cert(context)
        if mutual:
            self.ca.configure_trust(context)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client(self, *, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_cert:
            self.client_cert.configure_cert(context)
        return context


_TLS: list[Tls] = []


def tls() -> Tls:
    """The session's test certificates."""
    if not _TLS:
        _TLS.append(Tls())
    return _TLS[0]


@pytest.fixture(scope="module", params=["tcp", "tls"])
def transport(request: pytest.FixtureRequest) -> Iterator[str]:
    TRANSPORT[0] = request.param
    try:
        yield request.param
    finally:
        TRANSPORT[0] = "tcp"


def pytest_configure(config: pytest.Config) -> None:
    # A script that starts the suite in the background (a CI runner's shell,
    # with no job control) makes it ignore SIGINT, and an ignored signal
    # stays ignored across exec: the commands the tests interrupt as a person
    # does, with Ctrl-C, would never see it (framewire bench ran its whole
    # 30 s and failed test_bench_ctrl_c_prints_the_summary_so_far). A caught
    # signal is reset to the default in every child, so catch it here.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Commands run as subprocesses do not follow the transport: their TLS
    # runs would repeat the TCP ones.
    items[:] = [
        item
        for item in items
        if not ("[tls" in item.name or "-tls" in item.name)
        or "spawn" not in getattr(item, "fixturenames", ())
    ]


@contextmanager
def running(handler: Handler = echo, **options: Any) -> Iterator[Any]:
    """A server on 127.0.0.1, a free port, serving in a background thread,
    on the driver of the test (epoll unless the test runs per driver), over
    TLS when the test's transport is (or with ``ssl_context``)."""
    if TRANSPORT[0] == "tls" and "ssl_context" not in options:
        options["ssl_context"] = tls().server()
    if DRIVER[0] == "asyncio":
        with running_aio(handler, **options) as server:
            yield server
        return
    server = Server(handler, options.pop("host", "127.0.0.1"), 0, **options)
    with server:
        yield server


@contextmanager
def running_aio(handler: Handler = echo, **options: Any) -> Iterator[Any]:
    """framewire.aio's server, on an event loop in a background thread."""
    from framewire import aio

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-aio-loop", daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(
            aio.start_server(handler, options.pop("host", "127.0.0.1"), 0, **options), loop
        ).result(10)
        try:
            yield server
        finally:

            async def stop() -> None:
                server.close()
                await server.wait_closed()

            asyncio.run_coroutine_threadsafe(stop(), loop).result(server.config.grace + 10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        assert not thread.is_alive(), "the test's event loop did not stop"
        loop.close()


def engines(server: Any) -> list[Any]:
    """The connection engines of a server, whatever its driver."""
    conns = server._conns.values() if isinstance(server._conns, dict) else server._conns
    return [conn.engine for conn in list(conns)]


@pytest.fixture
def echo_server() -> Iterator[Server]:
    with running(echo) as server:
        yield server


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    """A connection to 127.0.0.1:port, TLS when the test's transport is."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if TRANSPORT[0] == "tls":
        return tls().client().wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def read_messages(sock: socket.socket, count: int, decoder: Decoder | None = None) -> list[Message]:
    """Read exactly ``count`` messages (the socket's timeout is the deadline)."""
    decoder = decoder or Decoder()
    out: list[Message] = []
    while len(out) < count:
        data = sock.recv(65536)
        out += decoder.feed(data)
        if not data:
            break
    return out


def shut_write(sock: socket.socket) -> None:
    """Half-close. A Python TLS socket cannot: ``SSLSocket.shutdown`` drops
    TLS and what follows is raw records; such tests are plain-TCP only."""
    if isinstance(sock, ssl.SSLSocket):
        pytest.skip("a Python TLS socket cannot half-close")
    sock.shutdown(socket.SHUT_WR)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def half_closed_exchange(port: int, requests: list[Message]) -> list[Message]:
    """Send ``requests`` pipelined, half-close, read every answer until the close."""
    with connect(port) as sock:
        sock.sendall(encode_many(requests))
        shut_write(sock)
        data = read_until_closed(sock)
    decoder = Decoder()
    answers = decoder.feed(data)
    decoder.feed(b"")  # nothing cut short
    return answers


def framewire_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "framewire", *args]


def framewire_script(*args: str) -> list[str]:
    """The ``framewire`` command itself, as a person runs it (not ``python
    -m``, which puts the current folder first on the path before any of
    framewire's code runs)."""
    return [os.path.join(os.path.dirname(sys.executable), "framewire"), *args]


def run_cli(*args: str, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        framewire_cmd(*args), capture_output=True, text=True, timeout=timeout, check=False, input=input
    )


class Spawned:
    """A command running in the background, with its stderr read as it comes."""

    def __init__(
        self,
        *args: str,
        cwd: str | None = None,
        preexec: Callable[[], None] | None = None,
        script: bool = False,
    ) -> None:
        if args and args[0] == "serve" and DRIVER[0] != "epoll" and "--loop" not in args:
            args = (*args, "--loop", DRIVER[0])  # the same test, on the test's driver
        # preexec only sets a resource limit in the child, before exec.
        self.proc = subprocess.Popen(
            framewire_script(*args) if script else framewire_cmd(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            preexec_fn=preexec,  # noqa: PLW1509
        )
        self.err = b""
        self.out = b""

    def wait_for(self, pattern: str, timeout: float = 20.0, stream: str = "stderr") -> re.Match[str]:
        """Wait until ``stream`` (stderr or stdout) matches ``pattern``; return the match."""
        pipe = self.proc.stderr if stream == "stderr" else self.proc.stdout
        assert pipe is not None
        fd = pipe.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                text = (self.err if stream == "stderr" else self.out).decode(errors="replace")
                match = re.search(pattern, text)
                if match:
                    return match
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not sel.select(0)):
                    raise AssertionError(f"{pattern!r} never appeared in {stream}; so far:\n{text}")
                if sel.select(left):
                    chunk = os.read(fd, 65536)
                    if not chunk and self.proc.poll() is not None:
                        continue
                    if stream == "stderr":
                        self.err += chunk
                    else:
                        self.out += chunk

    def port(self, timeout: float = 20.0) -> int:
        return int(self.wait_for(r"127\.0\.0\.1:(\d+)", timeout).group(1))

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 20.0) -> tuple[int, str, str]:
        """Send ``sig`` (None: none, it is exiting already) and wait for the exit."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, (self.out + out).decode(), (self.err + err).decode()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=10)


def _peer(script: str) -> Iterator[int]:
    # A peer server of benchmarks/peers/ on a free port: its port, while it runs.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [sys.executable, os.path.join(root, "benchmarks", "peers", script), "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait(10)


@pytest.fixture
def guide_echo() -> Iterator[int]:
    """The echo written the guide's way (benchmarks/peers/guide_server.py):
    one request per connection, no extensions; its port."""
    yield from _peer("guide_server.py")


@pytest.fixture
def guide_app() -> Iterator[int]:
    """The model of the guide's own application server, faults included
    (benchmarks/peers/guide_app_server.py); its port."""
    yield from _peer("guide_app_server.py")


@pytest.fixture
def spawn() -> Iterator[Any]:
    procs: list[Spawned] = []

    def start(
        *args: str, cwd: str | None = None, preexec: Callable[[], None] | None = None, script: bool = False
    ) -> Spawned:
        spawned = Spawned(*args, cwd=cwd, preexec=preexec, script=script)
        procs.append(spawned)
        return spawned

    yield start
    for spawned in procs:
        spawned.kill()


def pytest_ignore_collect(collection_path: Any, config: Any) -> bool | None:
    """``FRAMEWIRE_ONLY_TESTS=a.py,b.py``: collect only those test files (the
    mutation smoke runs the decoder's mutants against the decoder's tests)."""
    only = os.environ.get("FRAMEWIRE_ONLY_TESTS")
    name = collection_path.name
    if only and name.startswith("test_") and name.endswith(".py"):
        return name not in only.split(",")
    return None


class SyncAioClient:
    """The asyncio client, called as the blocking one is: each call runs on
    an event loop of its own in a background thread. So one contract test
    can run every client through the same cases."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 65432, *, pool: bool = False, **options: Any
    ) -> None:
        from framewire.client.aio import AioClient
        from framewire.client.aiopool import AioPool

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-aio-client", daemon=True)
        self._thread.start()

        async def make() -> Any:
            return AioPool([(host, port)], **options) if pool else AioClient(host, port, **options)

        self.client = self._run(make())

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def connect(self) -> SyncAioClient:
        if hasattr(self.client, "_open"):  # (a pool connects at its first call)
            self._run(self.client._open(None))
        return self

    def call(self, action: str, value: Any = None, **kwargs: Any) -> Any:
        return self._run(self.client.call(action, value, **kwargs))

    def describe(self, **kwargs: Any) -> Any:
        return self._run(self.client.describe(**kwargs))

    def call_many(self, calls: Any, **kwargs: Any) -> Any:
        return self._run(self.client.call_many(list(calls), **kwargs))

    def stream(self, action: str, value: Any = None, **kwargs: Any) -> Iterator[Any]:
        return self._stepped(self.client.stream(action, value, **kwargs))

    def subscribe(self, *topics: Any, **kwargs: Any) -> Iterator[Any]:
        return self._stepped(self.client.subscribe(*topics, **kwargs))

    def publish(self, topic: str, value: Any = None, **kwargs: Any) -> None:
        self._run(self.client.publish(topic, value, **kwargs))

    def _stepped(self, items: Any) -> Iterator[Any]:
        # The async generator stepped from this thread; leaving the loop
        # closes it (as an async for left early does).
        try:
            while True:
                try:
                    yield self._run(items.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(items.aclose())

    def request(self, message: Message, **kwargs: Any) -> Message:
        return self._run(self.client.request(message, **kwargs))  # type: ignore[no-any-return]

    def request_many(self, messages: Any, **kwargs: Any) -> list[Message]:
        return self._run(self.client.request_many(list(messages), **kwargs))  # type: ignore[no-any-return]

    def ping(self, **kwargs: Any) -> float:
        return self._run(self.client.ping(**kwargs))  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> SyncAioClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


CLIENTS = ["blocking", "asyncio"]
#: Every client and pool, for what all four offer (call, describe).
CALLERS = [*CLIENTS, "pool", "aiopool"]


def make_client(kind: str, host: str = "127.0.0.1", port: int = 65432, **options: Any) -> Any:
    """A client of ``kind`` (one of :data:`CALLERS`), called the blocking way."""
    if kind == "blocking":
        return Client(host, port, **options)
    if kind == "pool":
        from framewire import Pool

        return Pool([(host, port)], **options)
    return SyncAioClient(host, port, pool=kind == "aiopool", **options)
