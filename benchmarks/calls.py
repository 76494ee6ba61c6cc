"""The application layer's cost, and framewire's typed call() beside gRPC.

Every server runs pinned to CPU 0, the client to CPU 1; each figure is the
median of alternating pairs (framewire, then its peer, ``--pairs`` times).

- **call() against gRPC**: a typed action taking and returning a
  64-character string, called from Python, against gRPC Python's unary call
  on a ``grpc.aio`` server doing the same work (the string in, the same
  string out): sequentially from the blocking client (gRPC: a blocking
  stub), and 64 calls at once on one asyncio connection (gRPC: one
  ``grpc.aio`` channel).
- **typed against untyped, access log on against off**: the same server with
  an untyped action (the value as it came), a typed one (``value: str``,
  checked by msgspec), and the untyped one with ``--access-log`` (to
  /dev/null), ping-pong (one call at a time) and pipelined (64 requests
  sent at once, then their answers). The Python client is the limit on the
  pipelined row, so it also gives requests per second of the server's CPU
  (``per_server_cpu_s``): what the server spends, whoever is the limit.

    python benchmarks/calls.py [--seconds 3] [--pairs 3] [--build build/compiled/src]

Writes benchmarks/results/calls-DATE.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import json
import os
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from compare import ROOT, build_of, framewire, free_port, machine, serving_on
from framewire import Client, Message, aio

try:
    import grpc
except ImportError:  # said in main()
    grpc = None

VALUE = "x" * 64
CONCURRENT = 64
PIPELINED = 64
STREAM_ITEMS = 200_000

# The service both sides serve, each in its own way.
_APP = textwrap.dedent(
    """
    from framewire import App

    app = App()

    @app.action("typed")
    def typed(value: str) -> str:
        return value

    @app.action("untyped")
    def untyped(value):
        return value

    @app.action("items")
    def items(n: int):
        item = "x" * 64
        for _ in range(n):
            yield item
    """
)

_GRPC_SERVER = textwrap.dedent(
    """
    import asyncio, sys
    import grpc

    async def echo(request, context):
        # The same work as the typed action: the bytes read as a string, the string written back.
        return request.decode().encode()

    async def items(request, context):
        item = ("x" * 64).encode()
        for _ in range(int(request.decode())):
            yield item

    async def main(port):
        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(echo)
        streaming = grpc.unary_stream_rpc_method_handler(items)
        generic = grpc.method_handlers_generic_handler("bench.Echo", {"Call": handler, "Items": streaming})
        server.add_generic_rpc_handlers((generic,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main(int(sys.argv[1])))
    """
)


@contextmanager
def server(command: list[str], port: int) -> Iterator[psutil.Process]:
    """``command`` serving on ``port`` (pinned to CPU 0), as its process."""
    with serving_on(command, port) as proc:
        yield psutil.Process(proc.pid)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def timed(process: psutil.Process, seconds: float, step: Callable[[], int]) -> dict[str, float]:
    """Run ``step`` (returns the calls it made) for ``seconds``: calls a
    second, and calls per second of the server's CPU."""
    step()  # warm up: connections, caches
    cpu = _cpu(process)
    started = time.perf_counter()
    calls = 0
    while time.perf_counter() - started < seconds:
        calls += step()
    elapsed = time.perf_counter() - started
    used = _cpu(process) - cpu
    return {"rps": calls / elapsed, "per_server_cpu_s": calls / used if used > 0 else 0.0}


def run_framewire(
    mode: str, action: str, seconds: float, build: Path | None, access_log: bool
) -> dict[str, float]:
    folder = ROOT / ".venv" / "bench-calls"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench_app.py").write_text(_APP)
    port = free_port()
    command = [*framewire(build), "serve", "--app", "bench_app:app", "--app-dir", str(folder)]
    command += ["--port", str(port)]
    if access_log:
        command.append("--access-log")
    with server(command, port) as process:
        if mode == "stream":
            with Client("127.0.0.1", port) as client:
                return one_stream(process, lambda n: sum(1 for _ in client.stream("items", n)))
        if mode == "sequential":
            with Client("127.0.0.1", port) as client:

                def one() -> int:
                    for _ in range(100):
                        client.call(action, VALUE)
                    return 100

                return timed(process, seconds, one)
        if mode == "pipelined":
            batch = [Message.from_json({"action": action, "value": VALUE})] * PIPELINED
            with Client("127.0.0.1", port) as client:

                def many() -> int:
                    client.request_many(batch)
                    return PIPELINED

                return timed(process, seconds, many)

        async def concurrent() -> dict[str, float]:
            client = await aio.connect("127.0.0.1", port)
            loop = asyncio.get_running_loop()

            async def burst() -> int:
                await asyncio.gather(*(client.call(action, VALUE) for _ in range(CONCURRENT)))
                return CONCURRENT

            try:
                return await _timed_async(process, seconds, burst, loop)
            finally:
                await client.close()

        return asyncio.run(concurrent())


async def _timed_async(
    process: psutil.Process, seconds: float, step: Callable[[], Any], loop: asyncio.AbstractEventLoop
) -> dict[str, float]:
    await step()
    cpu = _cpu(process)
    started = time.perf_counter()
    calls = 0
    while time.perf_counter() - started < seconds:
        calls += await step()
    elapsed = time.perf_counter() - started
    used = _cpu(process) - cpu
    return {"rps": calls / elapsed, "per_server_cpu_s": calls / used if used > 0 else 0.0}


def run_grpc(mode: str, seconds: float) -> dict[str, float]:
    port = free_port()
    with server([sys.executable, "-c", _GRPC_SERVER, str(port)], port) as process:
        target = f"127.0.0.1:{port}"
        if mode == "stream":
            with grpc.insecure_channel(target) as channel:
                items = channel.unary_stream(
                    "/bench.Echo/Items", request_serializer=str.encode, response_deserializer=bytes.decode
                )
                return one_stream(process, lambda n: sum(1 for _ in items(str(n))))
        if mode == "sequential":
            with grpc.insecure_channel(target) as channel:
                call = channel.unary_unary(
                    "/bench.Echo/Call", request_serializer=str.encode, response_deserializer=bytes.decode
                )

                def one() -> int:
                    for _ in range(100):
                        assert call(VALUE) == VALUE
                    return 100

                return timed(process, seconds, one)

        async def concurrent() -> dict[str, float]:
            async with grpc.aio.insecure_channel(target) as channel:
                call = channel.unary_unary(
                    "/bench.Echo/Call", request_serializer=str.encode, response_deserializer=bytes.decode
                )

                async def burst() -> int:
                    await asyncio.gather(*(call(VALUE) for _ in range(CONCURRENT)))
                    return CONCURRENT

                return await _timed_async(process, seconds, burst, asyncio.get_running_loop())

        return asyncio.run(concurrent())


def one_stream(process: psutil.Process, read: Callable[[int], int]) -> dict[str, float]:
    """Items a second of one stream of :data:`STREAM_ITEMS`, read at full
    speed (``read(n)`` reads a stream of n and returns the items it got)."""
    assert read(1000) == 1000  # warm up
    cpu = _cpu(process)
    started = time.perf_counter()
    got = read(STREAM_ITEMS)
    elapsed = time.perf_counter() - started
    assert got == STREAM_ITEMS
    used = _cpu(process) - cpu
    return {"rps": got / elapsed, "per_server_cpu_s": got / used if used > 0 else 0.0}


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--build", type=Path, default=None, help="the compiled build's source tree")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the clients on CPU 1, the servers on CPU 0
    if grpc is None:
        sys.exit("calls.py: the gRPC peer needs grpcio (pip install -e '.[bench]')")
    rows: dict[str, Any] = {}

    def pair(name: str, ours: Callable[[], dict[str, float]], theirs: Callable[[], dict[str, float]]) -> None:
        a: list[dict[str, float]] = []
        b: list[dict[str, float]] = []
        for _ in range(args.pairs):
            a.append(ours())
            b.append(theirs())
        row = {
            "ours_rps": median(a, "rps"),
            "theirs_rps": median(b, "rps"),
            "ours_per_server_cpu_s": median(a, "per_server_cpu_s"),
            "theirs_per_server_cpu_s": median(b, "per_server_cpu_s"),
        }
        row["ratio"] = row["ours_rps"] / row["theirs_rps"]
        row["cpu_ratio"] = row["ours_per_server_cpu_s"] / row["theirs_per_server_cpu_s"]
        rows[name] = row
        print(
            f"{name:52} {row['ours_rps']:>10,.0f} vs {row['theirs_rps']:>10,.0f} calls/s"
            f" = {row['ratio']:.2f}x (per server CPU-second {row['cpu_ratio']:.2f}x)",
            flush=True,
        )

    seconds, build = args.seconds, args.build
    ours = functools.partial(run_framewire, seconds=seconds, build=build)
    rows_to_run: list[tuple[str, Callable[[], dict[str, float]], Callable[[], dict[str, float]]]] = [
        ("typed call() vs gRPC unary, sequential",
         functools.partial(ours, "sequential", "typed", access_log=False),
         functools.partial(run_grpc, "sequential", seconds)),
        ("typed call() vs gRPC unary, 64 concurrent on one connection",
         functools.partial(ours, "concurrent", "typed", access_log=False),
         functools.partial(run_grpc, "concurrent", seconds)),
    ]  # fmt: skip
    rows_to_run.append(
        ("stream of 200,000 items to the blocking client vs gRPC server streaming",
         functools.partial(ours, "stream", "items", access_log=False),
         functools.partial(run_grpc, "stream", seconds)),
    )  # fmt: skip
    for mode in ("sequential", "pipelined"):
        rows_to_run += [
            (f"typed vs untyped action, {mode}", functools.partial(ours, mode, "typed", access_log=False),
             functools.partial(ours, mode, "untyped", access_log=False)),
            (f"access log on vs off, {mode}", functools.partial(ours, mode, "untyped", access_log=True),
             functools.partial(ours, mode, "untyped", access_log=False)),
        ]  # fmt: skip
    for name, first, second in rows_to_run:
        pair(name, first, second)
    stamp = datetime.datetime.now(datetime.UTC)
    result = {
        "date": stamp.isoformat(timespec="seconds"),
        "machine": machine(),
        "build": build_of(framewire(build)),
        "seconds": seconds,
        "pairs": args.pairs,
        "rows": rows,
    }
    out = ROOT / "benchmarks" / "results" / f"calls-{stamp:%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
