"""Handlers that wait: on a thread pool or as coroutines, other connections
are never held, answers stay in request order, the queue is bounded."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import waiting
from conftest import connect, read_messages, running
from framewire import App, Client, Message, encode, encode_many
from framewire.core.probe import PING_KEY


def make_app() -> App:
    app = App()

    @app.action("slow")
    def slow(value: float) -> str:
        time.sleep(value)
        return f"slow {value}"

    @app.action("aslow")
    async def aslow(value: float) -> str:
        await asyncio.sleep(value)
        return f"aslow {value}"

    @app.action("fast")
    def fast(value: Any) -> str:
        return "fast"

    return app


def call(action: str, value: Any = None) -> Message:
    return Message.from_json({"action": action, "value": value})


# The two ways a handler waits: a sync handler on 16 threads, a coroutine inline.
MODES = [pytest.param("slow", {"threads": 16}, id="threads"), pytest.param("aslow", {}, id="async")]


@pytest.fixture
def waiting_server(request: pytest.FixtureRequest) -> Iterator[Any]:
    with running(make_app(), **request.param) as server:
        yield server


def timed_request(port: int, message: Message, results: dict[str, float], name: str) -> None:
    with Client("127.0.0.1", port, timeout=20) as client:
        start = time.monotonic()
        client.request(message)
        results[name] = time.monotonic() - start


@pytest.mark.parametrize(("slow", "options"), MODES)
def test_a_slow_handler_does_not_hold_other_connections(slow: str, options: dict[str, Any]) -> None:
    with running(make_app(), **options) as server:
        results: dict[str, float] = {}
        waiter = threading.Thread(target=timed_request, args=(server.port, call(slow, 0.8), results, "slow"))
        waiter.start()
        with Client("127.0.0.1", server.port, timeout=20) as client:
            client.request(call("fast"))  # connected and warm
            start = time.monotonic()
            assert client.request(call("fast")).json() == {"result": "fast"}
            fast = time.monotonic() - start
        waiter.join(20)
        assert not waiter.is_alive()
    # The fast answer did not wait for the slow one (0.8 s) on the other connection.
    assert fast < 0.4, fast
    assert results["slow"] >= 0.8


@pytest.mark.parametrize(("slow", "options"), MODES)
def test_many_slow_requests_run_at_once(slow: str, options: dict[str, Any]) -> None:
    count = 32 if slow == "slow" else 100
    with running(make_app(), **options) as server:
        socks = [connect(server.port, timeout=20) for _ in range(count)]
        start = time.monotonic()
        for sock in socks:
            sock.sendall(encode(call(slow, 0.3)))
        answers = [read_messages(sock, 1)[0] for sock in socks]
        took = time.monotonic() - start
        for sock in socks:
            sock.close()
    assert all(a.json() == {"result": f"{slow} 0.3"} for a in answers)
    # One at a time this would take count x 0.3 s (9.6 s or 30 s).
    assert took < 2.5, took


@pytest.mark.parametrize(("slow", "options"), MODES)
def test_pipelined_answers_keep_request_order(slow: str, options: dict[str, Any]) -> None:
    requests = [call(slow, 0.3), call("fast"), call(slow, 0.1), call("fast")]
    with running(make_app(), **options) as server, connect(server.port) as sock:
        sock.sendall(encode_many(requests))
        answers = [m.json()["result"] for m in read_messages(sock, 4)]
    assert answers == [f"{slow} 0.3", "fast", f"{slow} 0.1", "fast"]


def test_a_probe_on_an_idle_connection_is_answered_at_once_whatever_handlers_do() -> None:
    with running(make_app(), threads=2) as server:
        busy = [connect(server.port) for _ in range(2)]
        for sock in busy:
            sock.sendall(encode(call("slow", 1.0)))  # every thread busy for 1 s
        with connect(server.port) as sock:
            start = time.monotonic()
            sock.sendall(encode(Message.from_bytes(b"p", extensions={PING_KEY: 1})))
            (reply,) = read_messages(sock, 1)
            took = time.monotonic() - start
        for sock in busy:
            assert read_messages(sock, 1)[0].json() == {"result": "slow 1.0"}
            sock.close()
    assert reply.get(PING_KEY) == 1
    assert took < 0.5, took


def test_beyond_the_queue_limit_requests_get_server_busy_and_the_connection_stays() -> None:
    with running(make_app(), threads=1, max_queued=2) as server, connect(server.port) as sock:
        sock.sendall(encode_many([call("slow", 0.2)] * 4))
        answers = read_messages(sock, 4)
        codes = [a.json()["error"]["code"] if a.is_error else "ok" for a in answers]
        assert codes == ["ok", "ok", "server-busy", "server-busy"]
        sock.sendall(encode(call("fast")))  # the connection is still served
        assert read_messages(sock, 1)[0].json() == {"result": "fast"}


def test_an_async_handler_that_raises_is_handler_error() -> None:
    async def handler(request: Message) -> Message:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    with running(handler) as server, connect(server.port) as sock:
        sock.sendall(encode_many([Message.from_bytes(b"a"), Message.from_bytes(b"b")]))
        answers = read_messages(sock, 2)
    assert [a.json()["error"]["code"] for a in answers] == ["handler-error"] * 2


def test_a_client_that_leaves_before_its_answer_costs_nothing(caplog: Any) -> None:
    with running(make_app(), threads=2) as server:
        sock = connect(server.port)
        sock.sendall(encode(call("slow", 0.3)))
        sock.close()  # gone before the answer
        with Client("127.0.0.1", server.port, timeout=10) as client:
            # Outlasts the first request: its answer comes, and is dropped, meanwhile.
            assert client.request(call("slow", 0.5)).json() == {"result": "slow 0.5"}
            assert client.request(call("fast")).json() == {"result": "fast"}
        assert server._dispatcher.outstanding == 0
    assert "internal error" not in caplog.text and "Traceback" not in caplog.text


# The same application module that benchmarks/waiting.py measures.
APP_MODULE = waiting.APP


@pytest.mark.parametrize("extra", [["--threads", "4"], []], ids=["threads", "inline"])
def test_serve_runs_threaded_and_async_actions(spawn: Any, tmp_path: Path, extra: list[str]) -> None:
    (tmp_path / "waitapp.py").write_text(APP_MODULE)
    server = spawn("serve", "--port", "0", "--app", "waitapp:app", *extra, cwd=str(tmp_path))
    port = server.port()
    with Client("127.0.0.1", port, timeout=10) as client:
        assert client.request(call("aslow", 0.01)).json() == {"result": "aslow"}
        assert client.request(call("slow", 0.01)).json() == {"result": "slow"}
        assert client.request(call("fast")).json() == {"result": "fast"}
    code, _, err = server.stop()
    assert code == 0, err
    assert "coroutine" not in err and "Traceback" not in err
