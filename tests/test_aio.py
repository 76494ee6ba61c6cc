"""framewire.aio: the asyncio server and client, over real sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from framewire import App, Message, aio
from framewire.core.errors import ConnectionClosed, ErrorResponse, IncompleteMessage


def run(coroutine: Callable[[], Coroutine[Any, Any, None]], *, uv: bool = False) -> None:
    if uv:
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(coroutine())
    else:
        asyncio.run(coroutine())


async def slow_echo(request: Message) -> Message:
    await asyncio.sleep(0.01)
    return Message.from_bytes(request.content)


@pytest.mark.parametrize("uv", [False, True], ids=["asyncio", "uvloop"])
def test_200_concurrent_callers_on_one_connection_each_get_their_own_answer(uv: bool) -> None:
    async def main() -> None:
        async with await aio.start_server(slow_echo, "127.0.0.1", 0) as server:
            async with await aio.connect("127.0.0.1", server.port, timeout=10) as client:
                start = time.monotonic()
                answers = await asyncio.gather(
                    *(client.request(Message.from_bytes(b"%d" % i)) for i in range(200))
                )
                took = time.monotonic() - start
        assert [a.content for a in answers] == [b"%d" % i for i in range(200)]
        assert took < 1.0, took  # pipelined: 200 x 10 ms one after another would be 2 s

    run(main, uv=uv)


def test_a_timed_out_call_never_hands_its_answer_to_the_next() -> None:
    app = App()

    @app.action("slow")
    async def slow(value: float) -> str:
        await asyncio.sleep(value)
        return "slow"

    @app.action("fast")
    def fast(value: Any) -> str:
        return "fast"

    async def main() -> None:
        async with await aio.start_server(app, "127.0.0.1", 0) as server:
            async with await aio.connect("127.0.0.1", server.port, timeout=0.2) as client:
                with pytest.raises(TimeoutError):
                    await client.request(Message.from_json({"action": "slow", "value": 0.5}))
                answer = await client.request(Message.from_json({"action": "fast"}), timeout=2)
                assert answer.json() == {"result": "fast"}

    run(main)


def test_a_cancelled_caller_neither_breaks_the_connection_nor_steals_an_answer() -> None:
    async def handler(request: Message) -> Message:
        await asyncio.sleep(float(request.content))
        return Message.from_bytes(request.content)

    async def main() -> None:
        async with await aio.start_server(handler, "127.0.0.1", 0) as server:
            async with await aio.connect("127.0.0.1", server.port, timeout=5) as client:
                doomed = asyncio.create_task(client.request(Message.from_bytes(b"0.3")))
                await asyncio.sleep(0.05)
                doomed.cancel()
                after = await client.request(Message.from_bytes(b"0.01"))
                assert after.content == b"0.01"
                with pytest.raises(asyncio.CancelledError):
                    await doomed

    run(main)


def test_error_responses_raise_unless_asked_for_as_values() -> None:
    async def main() -> None:
        async with await aio.start_server(App(), "127.0.0.1", 0) as server:
            request = Message(b"{not json", "text/json", "utf-8")
            async with await aio.connect("127.0.0.1", server.port) as client:
                with pytest.raises(ErrorResponse) as info:
                    await client.request(request)
                assert info.value.code == "bad-content"
            async with await aio.connect("127.0.0.1", server.port, check=False) as client:
                assert (await client.request(request)).is_error

    run(main)


def test_a_connection_lost_mid_way_fails_every_waiting_call() -> None:
    async def main() -> None:
        async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            writer.write(Message.from_bytes(b"0123456789").encode()[:-3])  # the answer cut short
            await writer.drain()
            writer.close()

        async def closer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            writer.close()  # closes before answering

        for handler, error in ((cut_short, IncompleteMessage), (closer, ConnectionClosed)):
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            async with await aio.connect("127.0.0.1", port, timeout=5) as client:
                calls = [client.request(Message.from_bytes(b"x")) for _ in range(3)]
                results = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(r, error) for r in results), results
            server.close()
            await server.wait_closed()

    run(main)


def test_request_many_and_nothing_listening() -> None:
    async def main() -> None:
        async with await aio.start_server(slow_echo, "127.0.0.1", 0) as server:
            port = server.port
            async with await aio.connect("127.0.0.1", port) as client:
                answers = await client.request_many([Message.from_bytes(b"%d" % i) for i in range(50)])
            assert [a.content for a in answers] == [b"%d" % i for i in range(50)]
        with pytest.raises(ConnectionRefusedError, match="nothing is listening"):
            await aio.connect("127.0.0.1", port)

    run(main)


def test_threads_on_the_asyncio_driver_keep_order() -> None:
    def blocking(request: Message) -> Message:
        time.sleep(float(request.content))
        return Message.from_bytes(request.content)

    async def main() -> None:
        async with await aio.start_server(blocking, "127.0.0.1", 0, threads=4) as server:
            async with await aio.connect("127.0.0.1", server.port, timeout=5) as client:
                answers = await client.request_many(
                    [Message.from_bytes(b) for b in (b"0.2", b"0.0", b"0.1", b"0.0")]
                )
        assert [a.content for a in answers] == [b"0.2", b"0.0", b"0.1", b"0.0"]

    run(main)


def test_the_calls_deadlines_share_one_timer_and_their_heap_stays_bounded() -> None:
    from framewire.client.aio import _Deadlines, _TimedOut

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadlines = _Deadlines(loop)
        late, soon, answered = loop.create_future(), loop.create_future(), loop.create_future()
        now = time.monotonic()
        deadlines.watch(late, now + 60)
        deadlines.watch(answered, now + 0.02)
        deadlines.watch(soon, now + 0.01)  # earlier than any before it: the timer moves
        answered.set_result(Message.from_bytes(b"in time"))
        with pytest.raises(_TimedOut):
            await asyncio.wait_for(soon, 5)
        await asyncio.wait_for(asyncio.shield(answered), 5)
        assert not late.done()  # its time has not come
        # Calls answered at once leave their entries behind; the heap is
        # weeded as it doubles, so it stays near the calls in flight.
        for _ in range(20_000):
            future = loop.create_future()
            deadlines.watch(future, now + 60)
            future.set_result(Message.from_bytes(b""))
        assert len(deadlines._heap) <= 2 * 1 + 1024 + 1
        late.cancel()

    asyncio.run(main())
