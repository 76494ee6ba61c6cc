"""A client you can leave running: reconnects, retries, deadlines, pools,
heartbeats, and cancellation that reaches the server (issue 17).

The same behaviour of the blocking and the asyncio client is one test,
parametrised by ``kind``; the server's side runs on both drivers.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import read_messages, running
from framewire import Message, Pool, Retry, aio
from framewire.client import Client
from framewire.core.errors import ConnectionClosed, ErrorResponse
from framewire.core.probe import PING_KEY
from framewire.server import Server
from framewire.server.app import App, echo
from framewire.server.peer import Context

pytestmark = pytest.mark.timeout(60)


# -- one interface over both clients -----------------------------------------------------


class _AioAdapter:
    """framewire.aio's client driven from a test's thread, on a loop of its own."""

    def __init__(self, host: str, port: int, **options: Any) -> None:
        self.runner = asyncio.Runner()
        self.client: Any = self.runner.run(aio.connect(host, port, **options))

    def request(self, message: Message, **options: Any) -> Message:
        answer: Message = self.runner.run(self.client.request(message, **options))
        return answer

    def close(self) -> None:
        if self.client is not None:  # once
            self.runner.run(self.client.close())
            self.runner.close()
            self.client = None


@pytest.fixture(params=["blocking", "asyncio"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def client_of(kind: str, port: int, **options: Any) -> Iterator[Any]:
    client: Any = (
        Client("127.0.0.1", port, **options).connect()
        if kind == "blocking"
        else _AioAdapter("127.0.0.1", port, **options)
    )
    try:
        yield client
    finally:
        client.close()


def hello(text: str = "hello") -> Message:
    return Message.from_json({"action": "echo", "value": text})


def wait_for(event: threading.Event, what: str, seconds: float = 10.0) -> None:
    assert event.wait(seconds), f"{what}: not within {seconds:g} s"


# -- reconnect and retry -------------------------------------------------------------------


def test_a_server_restarted_between_two_calls(kind: str) -> None:
    first = Server(echo, "127.0.0.1", 0).start()
    port = first.port
    with client_of(kind, port) as client:
        assert client.request(hello("one")).json() == {"action": "echo", "value": "one"}
        first.close()
        with Server(echo, "127.0.0.1", port):  # the same address, a new process's worth
            assert client.request(hello("two")).json() == {"action": "echo", "value": "two"}


def test_refused_connects_are_retried_with_backoff_until_the_server_is_up(kind: str) -> None:
    # The port is held, bound but not listening (connects are refused), and
    # handed to a server at the first wait between attempts.
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    servers: list[Server] = []

    class StartAtFirstWait(Retry):
        def delays(self, rng: random.Random | None = None) -> Iterator[float]:
            for delay in Retry.delays(self, rng):
                if not servers:
                    holder.close()
                    servers.append(Server(echo, "127.0.0.1", port).start())
                yield delay

    try:
        if kind == "blocking":
            with Client("127.0.0.1", port, retry=StartAtFirstWait(attempts=4)) as client:
                assert client.request(hello()).json()["value"] == "hello"
        else:
            with client_of(kind, port, retry=StartAtFirstWait(attempts=4)) as client:
                assert client.request(hello()).json()["value"] == "hello"
        assert len(servers) == 1, "the first attempt was refused, and waited for"
    finally:
        holder.close()
        for server in servers:
            server.close()


def test_without_retries_a_refused_connect_fails_at_once(kind: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(ConnectionRefusedError, match="nothing is listening"):
            with client_of(kind, port, retry=Retry(attempts=1)):
                pass
        assert time.monotonic() - started < 5


@contextmanager
def drops_first_request(connections: int) -> Iterator[tuple[int, list[int]]]:
    """A server of ``connections`` connections: the first reads a request and
    closes unanswered, the second answers (an echo). Yields its port and the
    numbers of the connections that got a request."""
    seen: list[int] = []
    errors: list[BaseException] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            for number in range(connections):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(10)
                    (request,) = read_messages(conn, 1)
                    seen.append(number)
                    if number == 0:
                        continue  # closed without an answer
                    conn.sendall(request.encode())
                    with contextlib.suppress(OSError):
                        conn.recv(1)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.close()
        thread.join(10)
        assert not thread.is_alive(), "the fake server did not stop"
        assert not errors, errors


def test_a_lost_request_is_sent_again_only_when_idempotent(kind: str) -> None:
    with drops_first_request(connections=1) as (port, seen):
        with client_of(kind, port) as client:
            with pytest.raises(ConnectionClosed):
                client.request(hello())
            assert seen == [0]
    with drops_first_request(connections=2) as (port, seen):
        with client_of(kind, port) as client:
            assert client.request(hello("again"), idempotent=True).json()["value"] == "again"
            assert seen == [0, 1]


# -- deadlines -------------------------------------------------------------------------------


def deadline_app(ran: list[str]) -> App:
    app = App()

    @app.action("slow")
    def slow(value: Any) -> Any:
        ran.append("slow")
        time.sleep(value)  # the work of a slow handler (the scenario, not a wait)
        return "slow"

    @app.action("fast")
    def fast(value: Any) -> Any:
        ran.append("fast")
        return "fast"

    @app.action("left")
    def left(value: Any, context: Context) -> Any:
        return context.time_left()

    return app


def with_deadline(action: str, ms: float, value: Any = None) -> Message:
    return Message.from_json({"action": action, "value": value}, extensions={"framewire-deadline": ms})


@pytest.mark.usefixtures("driver")
def test_a_request_queued_past_its_deadline_is_answered_timeout_unrun() -> None:
    ran: list[str] = []
    with running(deadline_app(ran), threads=1) as server:
        with Client("127.0.0.1", server.port, check=False) as client:
            slow, late, fine = client.request_many(
                [
                    Message.from_json({"action": "slow", "value": 0.05}),
                    with_deadline("fast", 1),  # waits 50 ms behind "slow" for the one thread
                    with_deadline("fast", 60_000),
                ]
            )
            assert slow.json() == {"result": "slow"}
            error = late.error()
            assert error is not None and error.code == "timeout"
            assert fine.json() == {"result": "fast"}
            assert ran == ["slow", "fast"], "the late request's handler never ran"
            assert client.request(Message.from_json({"action": "fast"})).json() == {"result": "fast"}


@pytest.mark.usefixtures("driver")
def test_a_handler_reads_the_time_left_and_an_expired_deadline_is_not_run() -> None:
    ran: list[str] = []
    with running(deadline_app(ran)) as server, Client("127.0.0.1", server.port) as client:
        left = client.request(with_deadline("left", 5000)).json()["result"]
        assert 0 < left <= 5
        assert client.request(Message.from_json({"action": "left"})).json() == {"result": None}
        with pytest.raises(ErrorResponse) as info:
            client.request(with_deadline("fast", 0))
        assert info.value.code == "timeout"
        assert ran == []
        with Client("127.0.0.1", server.port, deadlines=True, timeout=3) as timed:
            assert 2 < timed.request(Message.from_json({"action": "left"})).json()["result"] <= 3


@pytest.mark.usefixtures("driver")
def test_an_async_handler_is_stopped_at_its_deadline() -> None:
    async def forever(request: Message) -> Message:
        await asyncio.Event().wait()
        return request

    with running(forever) as server, Client("127.0.0.1", server.port) as client:
        with pytest.raises(ErrorResponse) as info:
            client.request(with_deadline("x", 50))
        assert info.value.code == "timeout"
        assert client.ping() > 0  # the connection is kept


# -- cancellation --------------------------------------------------------------------------


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize("how", ["async", "threads"])
def test_a_client_that_gives_up_stops_the_work_on_the_server(how: str, kind: str) -> None:
    started = threading.Event()
    stopped = threading.Event()

    async def waits(request: Message) -> Message:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        return request

    def polls(request: Message, context: Context) -> Message:
        started.set()
        deadline = time.monotonic() + 30
        while not context.cancelled and time.monotonic() < deadline:
            stopped.wait(0.01)  # a long job, checking between its steps
        if context.cancelled:
            stopped.set()
        return request

    handler: Callable[..., Any] = waits if how == "async" else polls
    with running(handler, threads=2 if how == "threads" else 0) as server:
        with client_of(kind, server.port, timeout=0.5) as client:
            with pytest.raises(TimeoutError):
                client.request(hello())
            wait_for(started, "the handler started")
            if kind == "asyncio":
                client.close()  # the asyncio client keeps the connection after a timeout
            wait_for(stopped, "the server stopped the handler once its client left")


# -- heartbeat -------------------------------------------------------------------------------


@contextmanager
def ping_counter(answer_pings: int) -> Iterator[tuple[int, list[Any], threading.Event]]:
    """A server answering the first ``answer_pings`` pings as framewire does
    (then none); yields its port, the probes seen, and an event set when the
    client gave up on it (a reset)."""
    probes: list[Any] = []
    reset = threading.Event()
    errors: list[BaseException] = []
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(20)
                while True:
                    try:
                        (message,) = read_messages(conn, 1)
                    except (ConnectionResetError, ConnectionClosed):
                        reset.set()
                        return
                    probes.append(message.get(PING_KEY))
                    if len(probes) <= answer_pings:
                        conn.sendall(message.encode())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], probes, reset
    finally:
        listener.close()
        thread.join(20)
        assert not thread.is_alive(), "the fake server did not stop"
        assert not errors, errors


def test_the_heartbeat_pings_an_idle_connection_and_closes_a_dead_one() -> None:
    with ping_counter(answer_pings=2) as (port, probes, reset):
        client = Client("127.0.0.1", port, heartbeat=0.05, timeout=1)
        client.connect()
        wait_for(reset, "the client aborted the connection whose ping went unanswered")
        assert len(probes) == 3 and probes == sorted(probes)
        client.close()


def test_the_asyncio_heartbeat_pings_an_idle_connection_and_closes_a_dead_one() -> None:
    async def main() -> None:
        with ping_counter(answer_pings=2) as (port, probes, reset):
            client = await aio.connect("127.0.0.1", port, heartbeat=0.05, timeout=1)
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, reset.wait, 10), "no reset"
            assert len(probes) == 3 and probes == sorted(probes)
            assert not client.connected
            await client.close()

    asyncio.run(main())


# -- pools -------------------------------------------------------------------------------------


def named(name: str) -> App:
    app = App()

    @app.action("who")
    def who(value: Any) -> Any:
        return name

    return app


@contextmanager
def three_servers() -> Iterator[list[Server]]:
    servers = [Server(named(f"s{i}"), "127.0.0.1", 0).start() for i in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


WHO = Message.from_json({"action": "who"})


def test_a_pool_over_three_servers_survives_one_killed() -> None:
    with three_servers() as servers, Pool([f"127.0.0.1:{s.port}" for s in servers], probe_after=0) as pool:
        assert {pool.request(WHO).json()["result"] for _ in range(6)} == {"s0", "s1", "s2"}
        port = servers[1].port
        servers[1].close()
        for _ in range(30):
            assert pool.request(WHO).json()["result"] in {"s0", "s2"}  # every call succeeds
        assert not pool.members[1].healthy
        with Server(named("back"), "127.0.0.1", port):
            answers = {pool.request(WHO).json()["result"] for _ in range(6)}
            assert "back" in answers, "the member was probed back into the rotation"
            assert pool.members[1].healthy


def test_a_pool_is_shared_by_threads() -> None:
    with running(echo) as a, running(echo) as b, Pool([("127.0.0.1", a.port), ("127.0.0.1", b.port)]) as pool:
        errors: list[BaseException] = []

        def calls(number: int) -> None:
            try:
                for i in range(40):
                    text = f"{number}-{i}"
                    assert pool.request(hello(text)).json()["value"] == text
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=calls, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert not errors, errors


def test_the_asyncio_pool_survives_one_killed() -> None:
    async def main(servers: list[Server]) -> None:
        async with aio.AioPool([("127.0.0.1", s.port) for s in servers], probe_after=0) as pool:
            first = await asyncio.gather(*(pool.request(WHO) for _ in range(6)))
            assert {m.json()["result"] for m in first} == {"s0", "s1", "s2"}
            servers[2].close()
            answers = [await pool.request(WHO) for _ in range(20)]
            assert {m.json()["result"] for m in answers} <= {"s0", "s1"}
            assert not pool.members[2].healthy

    with three_servers() as servers:
        asyncio.run(main(servers))


# -- issue 37: outliers that time out, TLS names, connection age -------------------------


@contextmanager
def black_hole() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def _pool_calls(pool_kind: str, addresses: list[tuple[str, int]], count: int, **options: Any) -> list[str]:
    """Each call's outcome: its answer's text, or the name of what it raised."""

    def outcome_of(call: Callable[[], Message]) -> str:
        try:
            return call().text()
        except TimeoutError:
            return "timeout"

    if pool_kind == "blocking":
        with Pool(addresses, **options) as pool:
            return [outcome_of(lambda: pool.request(Message.from_text("ok"))) for _ in range(count)]

    async def main() -> list[str]:
        async with aio.AioPool(addresses, **options) as pool:
            outcomes = []
            for _ in range(count):
                try:
                    outcomes.append((await pool.request(Message.from_text("ok"))).text())
                except TimeoutError:
                    outcomes.append("timeout")
            return outcomes

    return asyncio.run(main())


@pytest.mark.parametrize("pool_kind", ["blocking", "asyncio"])
def test_a_member_whose_calls_time_out_is_taken_out(pool_kind: str) -> None:
    with running(echo) as good, black_hole() as hole:
        outcomes = _pool_calls(
            pool_kind, [("127.0.0.1", good.port), ("127.0.0.1", hole)], 20, timeout=0.3, probe_after=60
        )
    # Until max_failures (2) timeouts take the black hole out; then all answer.
    assert outcomes.count("timeout") <= 2
    assert outcomes[-10:] == ["ok"] * 10


@pytest.mark.parametrize("pool_kind", ["blocking", "asyncio"])
def test_a_pool_checks_a_certificate_against_the_name_it_was_given(pool_kind: str) -> None:
    import ssl

    from conftest import tls

    only_the_name = tls().ca.issue_cert("localhost")  # no IP address in it
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    only_the_name.configure_cert(context)
    with running(echo, ssl_context=context) as server:
        outcomes = _pool_calls(pool_kind, [("localhost", server.port)], 3, ssl_context=tls().client())
    assert outcomes == ["ok"] * 3


def test_a_connection_is_replaced_once_it_reaches_its_age(kind: str) -> None:
    with running(echo) as server, client_of(kind, server.port, max_connection_age=0.01) as client:
        client.request(hello("one"))
        time.sleep(0.02)  # the connection's age passes (the time itself is the subject)
        client.request(hello("two"))
        assert server.connections_total == 2
    with running(echo) as server, client_of(kind, server.port) as client:
        for _ in range(5):
            client.request(hello("kept"))
        assert server.connections_total == 1  # the default age is minutes
