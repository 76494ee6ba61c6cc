"""Streams, answers out of order and cancellation (framewire-stream,
framewire-unordered, framewire-cancel): on both drivers, with handlers
inline and on threads, from the blocking and the asyncio clients."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psutil
import pytest

from conftest import CLIENTS, make_client, run_cli, running
from framewire import App, Context, Decoder, ErrorResponse, Message, aio, encode_many
from framewire.server.streams import BATCH
from test_guide_compat import guide_client

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("driver")]


class Row(msgspec.Struct):
    n: int
    text: str


class Probe:
    """What a test sees of the server's work: the items taken, the sources closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.started = threading.Event()
        self.taken = 0


def stream_app(probe: Probe) -> App:
    app = App()

    @app.action
    def count(n: int) -> Iterator[int]:
        """0 to n-1, one at a time."""
        yield from range(n)

    @app.action
    def rows(n: int) -> Iterator[Row]:
        for i in range(n):
            yield Row(i, "x" * 64)

    @app.action
    def finishing(n: int) -> Generator[int, None, str]:
        yield from range(n)
        return f"counted {n}"

    @app.action
    async def acount(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @app.action
    def listed(n: int) -> Any:
        return iter(range(n))  # an iterator returned streams too

    @app.action
    def broken(n: int) -> Iterator[int]:
        yield from range(n)
        raise ValueError("the source failed")

    @app.action
    def endless(size: int) -> Iterator[str]:
        try:
            while True:
                probe.taken += 1
                yield "y" * size
        finally:
            probe.closed.set()

    @app.action
    async def aendless(size: int) -> AsyncIterator[str]:
        try:
            while True:
                probe.taken += 1
                await asyncio.sleep(0)
                yield "y" * size
        finally:
            probe.closed.set()

    @app.action
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slow"

    @app.action
    def fast(n: int) -> int:
        return n

    @app.action
    async def patient(n: int) -> int:
        probe.started.set()
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            probe.closed.set()
        return n

    @app.action
    def polling(n: int, context: Context) -> int:
        # A thread-pool handler that stops once its request is cancelled.
        probe.started.set()
        deadline = time.monotonic() + 10
        while not context.cancelled and time.monotonic() < deadline:
            time.sleep(0.001)  # its own work, between looks at the flag
        if context.cancelled:
            probe.closed.set()
        return n

    return app


@pytest.fixture(scope="module", params=[0, 2], ids=["inline", "threads"])
def served(request: pytest.FixtureRequest, driver: str) -> Iterator[tuple[Any, Probe]]:
    probe = Probe()
    with running(stream_app(probe), threads=request.param) as server:
        yield server, probe


@pytest.mark.parametrize("kind", CLIENTS)
def test_a_stream_s_items_come_one_by_one_and_a_call_gets_them_all(served: Any, kind: str) -> None:
    server, _ = served
    with make_client(kind, port=server.port) as client:
        assert list(client.stream("count", 5)) == [0, 1, 2, 3, 4]
        assert list(client.stream("count", 0)) == []
        assert list(client.stream("count", 3 * BATCH + 1)) == list(range(3 * BATCH + 1))
        assert list(client.stream("acount", 4)) == [0, 1, 2, 3]
        assert list(client.stream("listed", 3)) == [0, 1, 2]
        assert list(client.stream("finishing", 2)) == [0, 1]
        assert list(client.stream("rows", 2, result_type=Row)) == [Row(0, "x" * 64), Row(1, "x" * 64)]
        # A call that did not ask for a stream: one answer, every item.
        assert client.call("count", 4) == [0, 1, 2, 3]
        assert client.call("acount", 2) == [0, 1]
        assert client.call("rows", 1) == [{"n": 0, "text": "x" * 64}]
        # A stream that fails: the items before, then the error; the connection goes on.
        seen: list[int] = []
        with pytest.raises(ErrorResponse) as failed:
            seen.extend(client.stream("broken", 3))
        assert seen == [0, 1, 2] and failed.value.code == "handler-error"
        with pytest.raises(ErrorResponse, match="invalid-value"):
            list(client.stream("count", "x"))
        assert client.call("fast", 7) == 7


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("action", ["endless", "aendless"])
def test_leaving_a_stream_early_stops_the_server_s_source(served: Any, kind: str, action: str) -> None:
    server, probe = served
    probe.closed.clear()
    with make_client(kind, port=server.port) as client:
        for index, item in enumerate(client.stream(action, 8)):
            assert item == "y" * 8
            if index == 2:
                break
        assert probe.closed.wait(5), "the source was not closed"
        assert client.call("fast", 1) == 1  # the connection is ready for the next call
        assert list(client.stream("count", 2)) == [0, 1]


def test_a_stream_items_on_the_wire_and_a_cancel_answered_cancelled(served: Any) -> None:
    server, probe = served
    probe.closed.clear()

    def request(action: str, value: Any, **extensions: Any) -> Message:
        return Message.from_json({"action": action, "value": value}, extensions=extensions or None)

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        decoder = Decoder()
        queue: list[Message] = []

        def read(count: int) -> list[Message]:
            while len(queue) < count:
                queue.extend(decoder.feed(sock.recv(65536)))
            got = queue[:count]
            del queue[:count]
            return got

        sock.sendall(
            encode_many([request("finishing", 2, **{"framewire-id": "s", "framewire-stream": True})])
        )
        item, _, end = read(3)
        assert item.extensions == {"framewire-stream": "item", "framewire-id": "s"}
        assert item.json() == {"result": 0}
        assert end.extensions == {"framewire-stream": "end", "framewire-id": "s"} and end.json() == {
            "result": "counted 2"
        }
        endless = request(
            "endless", 1, **{"framewire-id": 9, "framewire-stream": True, "framewire-unordered": True}
        )
        sock.sendall(encode_many([endless]))
        read(3)
        sock.sendall(Message(b"null", "text/json", "utf-8", extensions={"framewire-cancel": 9}).encode())
        while True:
            (answer,) = read(1)
            if answer.get("framewire-stream") != "item":
                break
        assert answer.is_error and answer.json()["error"]["code"] == "cancelled"
        assert answer.extensions["framewire-id"] == 9 and answer.extensions["framewire-unordered"] is True
        assert probe.closed.wait(5)
        # A cancel for an id the server does not know, or has answered: ignored, no answer.
        sock.sendall(Message(b"null", "text/json", "utf-8", extensions={"framewire-cancel": "s"}).encode())
        sock.sendall(request("fast", 3, **{"framewire-id": 10}).encode())
        (answer,) = read(1)
        assert answer.json() == {"result": 3} and answer.extensions["framewire-id"] == 10


def test_a_slow_call_does_not_hold_a_hundred_fast_ones_on_one_asyncio_connection(served: Any) -> None:
    server, _ = served

    async def calls() -> tuple[float, list[int], str]:
        async with await aio.connect("127.0.0.1", server.port, timeout=10) as client:
            slow = asyncio.ensure_future(client.call("slow", 0.5))
            started = time.monotonic()
            fast = await asyncio.gather(*(client.call("fast", i) for i in range(100)))
            took = time.monotonic() - started
            return took, fast, await slow

    took, fast, slow = asyncio.run(calls())
    assert fast == list(range(100)) and slow == "slow"
    assert took < 0.4, f"the fast calls waited for the slow one ({took:.3f} s)"


def test_a_fast_call_answers_while_a_stream_runs_on_the_same_connection(served: Any) -> None:
    server, _ = served

    async def both() -> tuple[int, int]:
        async with await aio.connect("127.0.0.1", server.port, timeout=10) as client:
            seen = 0
            answered_at = -1
            async for _ in client.stream("count", 50_000):
                seen += 1
                if seen == 10:
                    fast = asyncio.ensure_future(client.call("fast", 1))
                if seen > 10 and answered_at < 0 and fast.done():
                    answered_at = seen
            return answered_at, seen

    answered_at, seen = asyncio.run(both())
    assert seen == 50_000
    assert 0 < answered_at < seen, "the fast call waited for the whole stream"


@pytest.mark.parametrize("kind", CLIENTS)
def test_unordered_calls_against_a_server_that_answers_in_order(kind: str) -> None:
    # A server of the protocol that knows ids but not framewire-unordered
    # (an older framewire): it answers in order, which is still right.
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            decoder = Decoder()
            while data := conn.recv(65536):
                for request in decoder.feed(data):
                    answer = Message.from_json(
                        {"result": request.json()["value"]},
                        extensions={"framewire-id": request.extensions["framewire-id"]},
                    )
                    conn.sendall(answer.encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        with make_client(kind, port=port, unordered=True) as client:
            assert client.call_many([("echo", i) for i in range(20)]) == list(range(20))
            assert client.call("echo", "x") == "x"
    finally:
        listener.close()
        thread.join(10)


def test_the_blocking_client_returns_unordered_answers_in_request_order(served: Any) -> None:
    server, _ = served
    with make_client("blocking", port=server.port, unordered=True) as client:
        assert client.call_many([("slow", 0.2), *(("fast", i) for i in range(5))]) == ["slow", 0, 1, 2, 3, 4]


def test_the_guide_s_client_gets_one_answer_with_every_item(served: Any) -> None:
    server, _ = served
    _, body = guide_client(
        server.port,
        {"type": "text/json", "encoding": "utf-8", "content": {"action": "count", "value": 5}},
    )
    assert body == {"result": [0, 1, 2, 3, 4]}


def test_a_collected_stream_is_bounded_by_the_content_limit(driver: str) -> None:
    probe = Probe()
    with (
        running(stream_app(probe), max_content_length=4096) as server,
        make_client("blocking", port=server.port) as c,
    ):
        with pytest.raises(ErrorResponse) as refused:
            c.call("endless", 100)  # endless: only the limit ends it
        assert refused.value.code == "handler-error" and "4096 bytes" in refused.value.message
        assert probe.closed.wait(5)
        assert c.call("count", 3) == [0, 1, 2]


# -- a slow reader never grows the server ------------------------------------------------

_SLOW_APP = textwrap.dedent(
    """
    from framewire import App

    app = App()

    @app.action
    def big(n):
        for i in range(n):
            yield "z" * 1000
    """
)


def test_a_slow_reader_keeps_the_server_s_memory_bounded(driver: str, tmp_path: Path) -> None:
    (tmp_path / "slow_app.py").write_text(_SLOW_APP)
    server = subprocess.Popen(
        [sys.executable, "-m", "framewire", "serve", "--app", "slow_app:app", "--app-dir", str(tmp_path),
         "--port", "0", "--loop", driver],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        while "127.0.0.1:" not in line:
            line = server.stderr.readline()
        port = int(line.split("127.0.0.1:")[1].split()[0].rstrip(".,"))
        process = psutil.Process(server.pid)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            request = Message.from_json(
                {"action": "big", "value": 100_000}, extensions={"framewire-id": 1, "framewire-stream": True}
            )
            sock.sendall(request.encode())
            baseline = process.memory_info().rss
            peak = baseline
            decoder = Decoder()
            items = reads = 0
            ended = False
            while not ended:
                data = sock.recv(32768)
                assert data, "the server closed before the stream's end"
                reads += 1
                for message in decoder.feed(data):
                    ended = message.get("framewire-stream") == "end"
                    items += not ended
                if reads % 64 == 0:
                    peak = max(peak, process.memory_info().rss)
                    time.sleep(0.002)  # a slow reader's pace (nothing is awaited)
            assert items == 100_000
        growth = peak - baseline
        # 100 MB went through; the server held at most its high-water mark
        # (1 MiB) and a batch of items more, plus the allocator's slack.
        assert growth < 24 << 20, f"the server grew by {growth / 1e6:.1f} MB"
    finally:
        server.terminate()
        server.wait(10)


def test_framewire_call_stream_prints_items_as_they_come(spawn: Any) -> None:
    examples = Path(__file__).resolve().parent.parent / "examples"
    server = spawn("serve", "--app", "kv:app", "--app-dir", str(examples), "--port", "0")
    port = str(server.port())
    for key in ("a", "b"):
        entry = f'{{"key": "{key}", "value": 1}}'
        stored = run_cli("call", "127.0.0.1", port, "put", entry, "--ext", "token=s3cret")
        assert stored.returncode == 0, stored.stderr
    listed = run_cli("call", "127.0.0.1", port, "scan", "--stream")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ['{"key": "a", "value": 1}', '{"key": "b", "value": 1}']
    whole = run_cli("call", "127.0.0.1", port, "scan")
    assert whole.stdout.strip() == '[{"key": "a", "value": 1}, {"key": "b", "value": 1}]'


@pytest.mark.parametrize("action", ["patient", "polling"])
def test_a_cancel_stops_a_call_s_work_and_answers_cancelled(served: Any, action: str) -> None:
    server, probe = served
    if action == "polling" and server.config.threads == 0:
        pytest.skip("a sync handler that waits runs on threads")
    probe.closed.clear()
    probe.started.clear()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        request = Message.from_json(
            {"action": action, "value": 1}, extensions={"framewire-id": 4, "framewire-unordered": True}
        )
        cancel = Message(b"null", "text/json", "utf-8", extensions={"framewire-cancel": 4})
        after = Message.from_json({"action": "fast", "value": 2}, extensions={"framewire-id": 5})
        sock.sendall(request.encode())
        assert probe.started.wait(5)  # the handler is at work (a cancel before it starts stops it sooner)
        sock.sendall(encode_many([cancel, after]))
        decoder = Decoder()
        answers: list[Message] = []
        while len(answers) < 2:
            answers += decoder.feed(sock.recv(65536))
        by_id = {answer.get("framewire-id"): answer for answer in answers}
        assert by_id[4].is_error and by_id[4].json()["error"]["code"] == "cancelled"
        assert by_id[5].json() == {"result": 2}
    assert probe.closed.wait(5), "the work was not stopped"
