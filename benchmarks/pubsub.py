"""Publish and subscribe: framewire's broker beside redis-server.

- **Throughput against Redis**: the server pinned to CPU 0 (``framewire
  serve --app pubsub``, default options; ``redis-server`` with persistence
  off), one Python publisher and one Python subscriber on CPU 1, each a
  process of its own: 200,000 items of 64 characters, the publisher
  pipelining its publishes in batches of 100 (framewire: ``call_many``;
  Redis: a redis-py pipeline of PUBLISH), the subscriber reading them as
  they come (framewire: ``Client.subscribe``; Redis: redis-py's
  ``pubsub.listen``). Items a second: from the publisher's first publish to
  the subscriber's last item. Alternating pairs, medians.
- **Fan-out latency**: 1,000 subscribers on one framewire server (two
  reader processes on CPU 1, 500 connections each), 10,000 publishes of a
  sequence number, paced (``--rate``); every subscriber must get every
  item, in order; p50/p99/max of publish-to-delivery.

    python benchmarks/pubsub.py [--pairs 3] [--build build/compiled/src] [--rate 100]

Writes benchmarks/results/pubsub-DATE.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import selectors
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil

from compare import ROOT, build_of, framewire, free_port, machine, pinned, serving_on
from framewire import Client

try:
    import redis
except ImportError:  # said in main()
    redis = None  # type: ignore[assignment]

ITEMS = 200_000
BATCH = 100
VALUE = "x" * 64
SUBSCRIBERS = 1000
READERS = 2
PUBLISHES = 10_000

# A subscriber process: subscribes, says "ready" once the first (warm-up)
# event came, counts ITEMS more, then prints the time of the last one.
_FRAMEWIRE_SUBSCRIBER = textwrap.dedent(
    """
    import sys, time
    from framewire import Client
    port, items = int(sys.argv[1]), int(sys.argv[2])
    with Client("127.0.0.1", port, timeout=60) as client:
        events = client.subscribe("bench")
        got = 0
        for event in events:
            if event.value == "warm":
                if got == 0:
                    print("ready", flush=True)
                continue
            got += 1
            if got == items:
                break
        print(time.monotonic(), flush=True)
    """
)

_REDIS_SUBSCRIBER = textwrap.dedent(
    """
    import sys, time
    import redis
    port, items = int(sys.argv[1]), int(sys.argv[2])
    pubsub = redis.Redis(port=port).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("bench")
    got = 0
    for message in pubsub.listen():
        if message["data"] == b"warm":
            if got == 0:
                print("ready", flush=True)
            continue
        got += 1
        if got == items:
            break
    print(time.monotonic(), flush=True)
    """
)

# A fan-out reader: N subscriptions on raw sockets, every item decoded and
# checked (in order, none missing); prints its latencies' summary as JSON.
_READER = textwrap.dedent(
    """
    import json, selectors, socket, sys, time
    import orjson
    from framewire import Decoder, Message
    port, count, publishes = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    request = Message.from_json({"action": "subscribe", "value": "fan"},
                                extensions={"framewire-id": 1, "framewire-stream": True}).encode()
    selector = selectors.DefaultSelector()
    state = {}
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        sock.setblocking(False)
        state[sock] = [Decoder(), 0]  # next sequence number expected
        selector.register(sock, selectors.EVENT_READ)
    latencies = []
    warmed = set()
    done = 0
    while done < count:
        for key, _ in selector.select(30):
            sock = key.fileobj
            data = sock.recv(262144)
            now = time.monotonic()
            entry = state[sock]
            for message in entry[0].feed(data):
                value = orjson.loads(message.content)["result"]["value"]
                if value[0] < 0:  # a warm-up: this subscription is in place
                    if sock not in warmed:
                        warmed.add(sock)
                        if len(warmed) == count:
                            print("ready", flush=True)
                    continue
                assert value[0] == entry[1], (value, entry[1])
                entry[1] += 1
                latencies.append(now - value[1])
                if entry[1] == publishes:
                    done += 1
                    selector.unregister(sock)
    latencies.sort()
    n = len(latencies)
    print(json.dumps({"deliveries": n, "p50": latencies[n // 2], "p99": latencies[n * 99 // 100],
                      "max": latencies[-1]}), flush=True)
    """
)


def _reader(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        pinned(1, [sys.executable, "-c", script, *args]), stdout=subprocess.PIPE, text=True, env=os.environ
    )


def _wait_ready(proc: subprocess.Popen[str], warm: Any, timeout: float = 30.0) -> None:
    # Warm-up publishes until the subscriber has one: it is subscribed.
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            warm()
            if selector.select(0.05):
                line = proc.stdout.readline()
                assert line.strip() == "ready", line
                return
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("pubsub.py: the subscriber never got its first event")


def run_framewire(build: Path | None) -> float:
    port = free_port()
    with serving_on([*framewire(build), "serve", "--app", "pubsub", "--port", str(port)], port):
        subscriber = _reader(_FRAMEWIRE_SUBSCRIBER, str(port), str(ITEMS))
        with Client("127.0.0.1", port, timeout=60) as publisher:
            _wait_ready(subscriber, lambda: publisher.publish("bench", "warm"))
            batch = [("publish", {"topic": "bench", "value": VALUE})] * BATCH
            started = time.monotonic()
            for _ in range(ITEMS // BATCH):
                publisher.call_many(batch)
        out, _ = subscriber.communicate(timeout=60)
    return ITEMS / (float(out.split()[-1]) - started)


def run_redis() -> float:
    assert redis is not None
    port = free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    with serving_on(command, port):
        subscriber = _reader(_REDIS_SUBSCRIBER, str(port), str(ITEMS))
        publisher = redis.Redis(port=port)
        _wait_ready(subscriber, lambda: publisher.publish("bench", "warm"))
        started = time.monotonic()
        for _ in range(ITEMS // BATCH):
            pipe = publisher.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.publish("bench", VALUE)
            pipe.execute()
        out, _ = subscriber.communicate(timeout=60)
        publisher.close()
    return ITEMS / (float(out.split()[-1]) - started)


def run_fanout(build: Path | None, rate: float) -> dict[str, Any]:
    port = free_port()
    with serving_on([*framewire(build), "serve", "--app", "pubsub", "--port", str(port)], port) as server:
        process = psutil.Process(server.pid)
        share = str(SUBSCRIBERS // READERS)
        readers = [_reader(_READER, str(port), share, str(PUBLISHES)) for _ in range(READERS)]
        with Client("127.0.0.1", port, timeout=60) as publisher:
            for reader in readers:
                _wait_ready(reader, lambda: publisher.publish("fan", [-1, 0]))
            # Every subscription in place: one more warm-up reaches them all.
            publisher.publish("fan", [-1, 0])
            rss = process.memory_info().rss
            cpu = sum(process.cpu_times()[:2])
            interval = 1 / rate
            started = time.monotonic()
            for seq in range(PUBLISHES):
                due = started + seq * interval
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)  # the pace of the publishes, not a wait for an outcome
                publisher.publish("fan", [seq, time.monotonic()])
            took = time.monotonic() - started
        summaries = []
        for reader in readers:
            out, _ = reader.communicate(timeout=120)
            assert reader.returncode == 0, out
            summaries.append(json.loads(out.splitlines()[-1]))
        lasted = time.monotonic() - started
        used = sum(process.cpu_times()[:2]) - cpu
        grown = process.memory_info().rss - rss
    deliveries = sum(s["deliveries"] for s in summaries)
    assert deliveries == SUBSCRIBERS * PUBLISHES, deliveries
    return {
        "subscribers": SUBSCRIBERS,
        "publishes": PUBLISHES,
        "rate": rate,
        "publish_seconds": took,
        # The server's CPU over the run: below 1, the readers (Python, on the other core) are the limit.
        "server_cpu_share": used / lasted,
        "deliveries": deliveries,
        # (Each reader's percentile; the worse of the two.)
        "p50_ms": max(s["p50"] for s in summaries) * 1000,
        "p99_ms": max(s["p99"] for s in summaries) * 1000,
        "max_ms": max(s["max"] for s in summaries) * 1000,
        "server_rss_growth_mib": grown / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=100.0, help="fan-out publishes a second")
    parser.add_argument("--build", type=Path, default=None, help="the compiled build's source tree")
    args = parser.parse_args()
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the clients on CPU 1, the servers on CPU 0
    if redis is None:
        sys.exit("pubsub.py: the Redis peer needs redis-py (pip install -e '.[bench]')")
    if subprocess.run(["redis-server", "--version"], capture_output=True, check=False).returncode != 0:
        sys.exit("pubsub.py: the Redis peer needs redis-server (apt-get install redis-server)")
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.pairs):
        ours.append(run_framewire(args.build))
        theirs.append(run_redis())
    ours_rate, theirs_rate = statistics.median(ours), statistics.median(theirs)
    throughput: dict[str, Any] = {
        "items": ITEMS,
        "batch": BATCH,
        "ours_items_per_s": ours_rate,
        "theirs_items_per_s": theirs_rate,
        "ratio": ours_rate / theirs_rate,
        "runs_ours": ours,
        "runs_theirs": theirs,
    }
    print(
        f"{ITEMS:,} items, publishes pipelined by {BATCH}: framewire {throughput['ours_items_per_s']:,.0f}"
        f" vs redis-server {throughput['theirs_items_per_s']:,.0f} items/s = {throughput['ratio']:.2f}x",
        flush=True,
    )
    fanout = run_fanout(args.build, args.rate)
    print(
        f"{SUBSCRIBERS:,} subscribers, {PUBLISHES:,} publishes at {args.rate:g}/s: every item, in order;"
        f" publish to delivery p50 {fanout['p50_ms']:.2f} ms, p99 {fanout['p99_ms']:.2f} ms,"
        f" max {fanout['max_ms']:.1f} ms (server CPU {fanout['server_cpu_share']:.0%})",
        flush=True,
    )
    stamp = datetime.datetime.now(datetime.UTC)
    result = {
        "date": stamp.isoformat(timespec="seconds"),
        "machine": machine(),
        "build": build_of(framewire(args.build)),
        "pairs": args.pairs,
        "throughput": throughput,
        "fanout": fanout,
    }
    out = ROOT / "benchmarks" / "results" / f"pubsub-{stamp:%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
