"""Publish and subscribe: the hub (in one process), the broker app, its
commands, slow subscribers (dropped events marked, or disconnected), on
both drivers and from both clients. Redis is tested in test_deploy.py."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import CLIENTS, Spawned, make_client, read_messages, run_cli, running
from framewire import App, Context, ErrorResponse, Message
from framewire.core.errors import Failure
from framewire.core.topics import MAX_TOPIC, MAX_TOPICS, Event, check_pattern, check_topic
from framewire.server.broker import pubsub_app
from framewire.server.hub import Hub, Subscription
from test_hardening import wait_until

pytestmark = pytest.mark.timeout(60)


def run(coroutine: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, 10))


async def take(subscription: Subscription, count: int) -> list[Event]:
    events = []
    async for event in subscription:
        events.append(event)
        if len(events) == count:
            break
    return events


# -- the hub, in one process --------------------------------------------------------


def test_a_publish_reaches_the_subscribers_of_its_topic_and_of_matching_prefixes() -> None:
    hub = Hub()

    async def scenario() -> None:
        exact = hub.subscribe("sensors.kitchen")
        prefix = hub.subscribe("sensors.*")
        everything = hub.subscribe("*")
        both = hub.subscribe("sensors.kitchen", "sensors.*")  # one event, once
        other = hub.subscribe("news")
        assert hub.publish("sensors.kitchen", 21.5) == 4
        assert hub.publish("sensors.hall", {"t": 19}) == 3
        assert hub.publish("weather", None) == 1
        assert [e.value for e in await take(exact, 1)] == [21.5]
        assert [(e.topic, e.value) for e in await take(prefix, 2)] == [
            ("sensors.kitchen", 21.5),
            ("sensors.hall", {"t": 19}),
        ]
        assert [e.topic for e in await take(everything, 3)] == ["sensors.kitchen", "sensors.hall", "weather"]
        assert [e.topic for e in await take(both, 2)] == ["sensors.kitchen", "sensors.hall"]
        assert not other.events
        for subscription in (exact, prefix, everything, both, other):
            subscription.close()
        assert hub.subscribers == 0 and not hub._exact and not hub._prefixes

    run(scenario())
    assert (hub.published, hub.delivered, hub.dropped) == (3, 8, 0)


def test_a_full_queue_drops_the_oldest_and_marks_the_gap_on_the_next_event() -> None:
    hub = Hub(queue=3)

    async def scenario() -> None:
        subscription = hub.subscribe("t")
        for i in range(10):
            hub.publish("t", i)  # never waits, whoever reads
        events = await take(subscription, 3)
        assert [(e.value, e.dropped) for e in events] == [(7, 7), (8, 0), (9, 0)]
        hub.publish("t", 10)
        assert [(e.value, e.dropped) for e in await take(subscription, 1)] == [(10, 0)]

    run(scenario())
    assert hub.dropped == 7


def test_a_slow_subscriber_can_be_disconnected_with_server_busy_instead() -> None:
    hub = Hub(queue=2, slow="disconnect")

    async def scenario() -> None:
        slow = hub.subscribe("t")
        fine = hub.subscribe("t", queue=100)
        for i in range(3):
            hub.publish("t", i)
        with pytest.raises(Failure) as caught:
            await take(slow, 1)
        assert caught.value.code == "server-busy"
        assert [e.value for e in await take(fine, 3)] == [0, 1, 2]
        assert hub.subscribers == 1

    run(scenario())


def test_a_publish_from_another_thread_wakes_the_waiting_subscriber() -> None:
    hub = Hub()

    async def scenario() -> list[Any]:
        subscription = hub.subscribe("t")
        threading.Thread(target=lambda: [hub.publish("t", i) for i in range(100)]).start()
        return [e.value for e in await take(subscription, 100)]

    assert run(scenario()) == list(range(100))


def test_closing_ends_the_iteration_and_a_cancelled_wait_unsubscribes() -> None:
    hub = Hub()

    async def scenario() -> None:
        ending = hub.subscribe("t")
        asyncio.get_running_loop().call_soon(ending.close)
        assert await take(ending, 1) == []
        waiting = hub.subscribe("t")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(waiting.__anext__(), 0.01)
        assert waiting.closed and hub.subscribers == 0
        async with hub.subscribe("t") as third:
            assert hub.subscribers == 1 and not third.closed
        assert third.closed and hub.subscribers == 0

    run(scenario())


@pytest.mark.parametrize(
    ("topics", "why"),
    [
        ((), "at least one topic"),
        (("",), "non-empty string"),
        (("a*b",), "'*' may only end"),
        (("x" * (MAX_TOPIC + 1),), f"at most {MAX_TOPIC} characters"),
        ((["t"] * 2, *[f"t{i}" for i in range(MAX_TOPICS)]), f"at most {MAX_TOPICS} topics"),
        ((3,), "non-empty string"),
    ],
)
def test_a_subscription_to_what_is_not_a_topic_is_refused(topics: tuple[Any, ...], why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        Hub().subscribe(*topics)


@pytest.mark.parametrize("topic", ["", "a*", "*", "x" * (MAX_TOPIC + 1), None, 7])
def test_a_publish_to_what_is_not_a_topic_is_refused(topic: Any) -> None:
    with pytest.raises(ValueError):
        Hub().publish(topic, 1)


JSON_VALUES = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.booleans(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


@given(st.text(min_size=1, max_size=MAX_TOPIC), JSON_VALUES)
def test_an_event_s_json_reads_back_as_the_same_event(topic: str, value: Any) -> None:
    if "*" in topic:
        with pytest.raises(ValueError):
            check_topic(topic)
        assert check_pattern(topic.replace("*", "") + "*")
        return
    event = Event(check_topic(topic), value)
    assert Event.from_json(event.json) == event
    assert orjson.loads(event.json) == {"topic": topic, "value": value}


@given(st.binary(max_size=200))
def test_an_event_from_bytes_that_are_not_one_is_a_value_error(data: bytes) -> None:
    try:
        event = Event.from_json(data)
    except ValueError:
        return
    assert isinstance(event.topic, str)


# -- the broker and App hubs over the network ----------------------------------------


class Probe:
    """Signals from the server's side: a subscription made, one ended."""

    def __init__(self) -> None:
        self.subscribed = threading.Semaphore(0)
        self.ended = threading.Event()

    def wait_subscribed(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.subscribed.acquire(timeout=10), "the subscription never came"


def broker(probe: Probe) -> App:
    """The broker app, with a signal when a subscription is made, and
    actions that make a gap on purpose."""
    app = pubsub_app()

    @app.middleware
    def signal_subscribed(context: Context, call_next: Any) -> Any:
        result = call_next()
        if context.action == "subscribe":
            probe.subscribed.release()
        return result

    @app.action
    def gapped(topic: str) -> Subscription:
        # Five publishes into a queue of two before the stream begins: three dropped.
        subscription = app.hub.subscribe(topic, queue=2)
        for i in range(5):
            app.hub.publish(topic, i)
        return subscription

    @app.action
    async def values(topic: str) -> AsyncIterator[Any]:
        # A generator over a subscription: the gap marks what it yields.
        subscription = app.hub.subscribe(topic, queue=2)
        for i in range(5):
            app.hub.publish(topic, i)
        try:
            async for event in subscription:
                yield event.value * 10
        finally:
            probe.ended.set()

    return app


@pytest.fixture(scope="module", params=[0, 2], ids=["inline", "threads"])
def served(request: pytest.FixtureRequest, driver: str) -> Iterator[tuple[Any, Probe, App]]:
    probe = Probe()
    app = broker(probe)
    with running(app, threads=request.param) as server:
        yield server, probe, app


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize("kind", CLIENTS)
def test_every_subscriber_gets_every_publish_in_order(served: tuple[Any, Probe, App], kind: str) -> None:
    server, probe, _ = served
    host, port = server.address
    results: dict[int, list[tuple[str, Any]]] = {}

    def subscriber(n: int) -> None:
        with make_client(kind, host, port, timeout=10) as client:
            got = results.setdefault(n, [])
            for event in client.subscribe("room.1", "alerts.*"):
                got.append((event.topic, event.value))
                if len(got) == 60:
                    break

    readers = [threading.Thread(target=subscriber, args=(n,)) for n in range(3)]
    for reader in readers:
        reader.start()
    probe.wait_subscribed(3)
    with make_client(kind, host, port, timeout=10) as publisher:
        for i in range(30):
            publisher.publish("room.1", {"n": i})
            publisher.publish("room.2", i)  # nobody's
            publisher.publish(f"alerts.{i % 3}", f"alert {i}")
    for reader in readers:
        reader.join(10)
    expected = [pair for i in range(30) for pair in (("room.1", {"n": i}), (f"alerts.{i % 3}", f"alert {i}"))]
    assert results == {0: expected, 1: expected, 2: expected}


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize("kind", CLIENTS)
def test_the_event_after_a_gap_carries_framewire_dropped(served: tuple[Any, Probe, App], kind: str) -> None:
    server, _, _ = served
    with make_client(kind, *server.address, timeout=10) as client:
        events = client.stream("gapped", "g1", result_type=Event)
        first, second = next(events), next(events)
        events.close()
        assert (first.value, first.dropped) == (3, 3) and (second.value, second.dropped) == (4, 0)
        # An action's own items made of events: the gap goes on what it yields.
        sock = socket.create_connection(server.address, timeout=10)
        with sock:
            request = Message.from_json(
                {"action": "values", "value": "g2"}, extensions={"framewire-id": 1, "framewire-stream": True}
            )
            sock.sendall(request.encode())
            answers = read_messages(sock, 2)
        assert [(a.json()["result"], a.extensions.get("framewire-dropped")) for a in answers] == [
            (30, 3),
            (40, None),
        ]


@pytest.mark.usefixtures("driver")
def test_a_subscriber_that_leaves_is_unsubscribed(served: tuple[Any, Probe, App]) -> None:
    server, probe, app = served
    probe.ended.clear()
    with make_client("blocking", *server.address, timeout=10) as client:
        items = client.stream("values", "leaving")
        assert next(items) == 30
        items.close()  # a cancel
        assert probe.ended.wait(10)
    wait_until(lambda: "leaving" not in app.hub._exact)


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize(
    ("action", "value", "where"),
    [
        ("publish", {"topic": "a*", "value": 1}, "$.topic"),
        ("publish", {"topic": "", "value": 1}, "$.topic"),
        ("publish", {"value": 1}, "topic"),
        ("publish", "news", "$"),
        ("subscribe", 7, "$"),
        ("subscribe", ["ok", "a*b"], "'*' may only end"),
        ("subscribe", [f"t{i}" for i in range(MAX_TOPICS + 1)], f"at most {MAX_TOPICS} topics"),
    ],
)
def test_what_is_not_a_topic_is_answered_invalid_value(
    served: tuple[Any, Probe, App], action: str, value: Any, where: str
) -> None:
    server, _, _ = served
    with make_client("blocking", *server.address, timeout=10) as client:
        with pytest.raises(ErrorResponse) as caught:
            if action == "subscribe":
                next(client.stream(action, value))
            else:
                client.call(action, value)
        assert caught.value.code == "invalid-value" and where in caught.value.message
        assert client.call("publish", {"topic": "still.fine", "value": 1}) is None


@pytest.mark.usefixtures("driver")
def test_a_disconnected_slow_subscriber_gets_server_busy() -> None:
    probe = Probe()
    with running(broker(probe), slow_subscriber="disconnect") as server:
        with make_client("blocking", *server.address, timeout=10) as client:
            with pytest.raises(ErrorResponse) as caught:
                list(client.stream("gapped", "d"))
            assert caught.value.code == "server-busy"
            assert "fell 2 events behind" in caught.value.message
            assert client.call("publish", {"topic": "d", "value": 1}) is None  # the connection goes on


@pytest.mark.usefixtures("driver")
def test_a_stopping_server_ends_its_subscriptions_at_once() -> None:
    probe = Probe()
    ended = threading.Event()
    with running(broker(probe), grace=30) as server:
        client = make_client("blocking", *server.address, timeout=10)

        def subscriber() -> None:
            for _ in client.subscribe("never"):
                pass
            ended.set()  # (the end, not an error)

        threading.Thread(target=subscriber, daemon=True).start()
        probe.wait_subscribed()
        started = time.monotonic()
    assert ended.wait(10)
    assert time.monotonic() - started < 10  # not the 30 s of grace
    client.close()


def test_describe_lists_subscribe_as_a_stream_of_events() -> None:
    described = {a["name"]: a for a in pubsub_app().describe()["actions"]}
    subscribe = described["subscribe"]
    assert subscribe.get("stream") is True
    assert subscribe["result"]["$defs"]["Published"]["required"] == ["topic", "value"]
    assert described["publish"]["value"]["$defs"]["Publish"]["required"] == ["topic"]


# -- the commands ---------------------------------------------------------------------


def test_serve_pubsub_with_the_publish_and_subscribe_commands() -> None:
    server = Spawned("serve", "--app", "pubsub", "--port", "0")
    try:
        port = server.port()
        banner = server.wait_for(r"Try:\n.*subscribe .*\n.*publish .*").group(0)
        assert f"subscribe 127.0.0.1 {port} news" in banner
        reader = Spawned("subscribe", "127.0.0.1", str(port), "news", "sensors.*", "--count", "3")
        # Published until the subscriber has shown the first: then it is subscribed.
        deadline = time.monotonic() + 20
        while b"ready" not in reader.out:
            assert time.monotonic() < deadline, reader.err
            assert run_cli("publish", "127.0.0.1", str(port), "news", "ready").returncode == 0
            try:
                reader.wait_for("ready", timeout=0.2, stream="stdout")
            except AssertionError:
                continue
        for topic, value in [("sensors.hall", '{"t": 19.5}'), ("weather", "rain"), ("news", "done")]:
            done = run_cli("publish", "127.0.0.1", str(port), topic, value)
            assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
        code, out, err = reader.stop(sig=None)
        assert code == 0, err
        lines = out.splitlines()
        assert lines[-2:] == ['sensors.hall {"t": 19.5}', "news done"]
        assert set(lines[:-2]) == {"news ready"}
        bad = run_cli("publish", "127.0.0.1", str(port), "a*", "1")
        assert bad.returncode == 1 and "invalid-value" in bad.stderr and "Traceback" not in bad.stderr
        assert len(bad.stderr.splitlines()) == 1
    finally:
        server.stop()


def test_subscribe_stops_quietly_on_ctrl_c() -> None:
    server = Spawned("serve", "--app", "pubsub", "--port", "0")
    try:
        port = server.port()
        reader = Spawned("subscribe", "127.0.0.1", str(port), "news", "--json")
        deadline = time.monotonic() + 20
        while b"first" not in reader.out:
            assert time.monotonic() < deadline, reader.err
            run_cli("publish", "127.0.0.1", str(port), "news", '{"first": true}')
            try:
                reader.wait_for("first", timeout=0.2, stream="stdout")
            except AssertionError:
                continue
        code, out, err = reader.stop(signal.SIGINT)
        assert code == 0 and err == ""
        assert orjson.loads(out.splitlines()[0]) == {"topic": "news", "value": {"first": True}}
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--app", "echo", "--hub", "redis://127.0.0.1:1/0"], "--hub is for an App's hub"),
        (["serve", "--app", "pubsub", "--hub", "http://x"], "--hub takes redis://"),
        (["serve", "--app", "pubsub", "--slow-subscriber", "never"], "'never' is not one of"),
        (["serve", "--app", "pubsub", "--subscriber-queue", "0"], "--subscriber-queue"),
        (["subscribe", "127.0.0.1", "1"], "Missing argument 'TOPICS...'"),
    ],
)
def test_pubsub_options_that_cannot_work_are_one_line(args: list[str], message: str) -> None:
    done = run_cli(*args, timeout=20)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


# -- bounded memory ---------------------------------------------------------------------


def until_got(publisher: Any, got: Any, timeout: float = 10.0) -> None:
    """Publish warm-up events (-1) until ``got()``: a subscription in
    another process is known to be in place once an event went through."""
    deadline = time.monotonic() + timeout
    while not got():
        assert time.monotonic() < deadline, "the subscription never got an event"
        publisher.publish("feed", -1)
        threading.Event().wait(0.02)  # (the pace of the warm-ups)


@pytest.mark.usefixtures("driver")
def test_a_subscriber_that_never_reads_holds_bounded_memory_and_slows_nobody() -> None:
    server = Spawned("serve", "--app", "pubsub", "--port", "0")
    try:
        port = server.port()
        process = psutil.Process(server.proc.pid)
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        request = Message.from_json(
            {"action": "subscribe", "value": "feed"}, extensions={"framewire-id": 1, "framewire-stream": True}
        )
        stuck.sendall(request.encode())  # and never reads (a peek says it is subscribed)
        stuck.settimeout(0)

        def stuck_got() -> bool:
            try:
                return bool(stuck.recv(1, socket.MSG_PEEK))
            except BlockingIOError:
                return False

        count = 100_000
        with make_client("blocking", "127.0.0.1", port, timeout=30) as publisher:
            until_got(publisher, stuck_got)
            with make_client("blocking", "127.0.0.1", port, timeout=30) as reader:
                items = reader.subscribe("feed")
                first = threading.Thread(target=lambda: next(items))
                first.start()
                until_got(publisher, lambda: not first.is_alive())
                payload = "x" * 64
                before = expected = 0
                for start in range(0, count, 100):
                    if start == count // 4:
                        # By now the stuck one holds all it ever will (its queue, a
                        # high-water of unsent answers): from here on, no growth.
                        before = process.memory_info().rss
                    batch = range(start, start + 100)
                    publishes = [("publish", {"topic": "feed", "value": [i, payload]}) for i in batch]
                    publisher.call_many(publishes)
                    while expected < start + 100:
                        event = next(items)
                        if event.value == -1:
                            continue  # (warm-ups still on their way)
                        assert event.value[0] == expected and event.dropped == 0  # every one, in order
                        expected += 1
                grown = process.memory_info().rss - before
        stuck.close()
    finally:
        server.stop()
    assert grown < 4 * 1024 * 1024, f"{grown / 2**20:.1f} MiB more for the last 75,000 publishes"


@pytest.mark.usefixtures("driver")
def test_metrics_count_subscribers_and_events_published_delivered_dropped() -> None:
    from prometheus_client import CollectorRegistry

    from framewire.server.metrics import Metrics

    probe = Probe()
    app = broker(probe)
    registry = CollectorRegistry()

    def value(name: str) -> float:
        return registry.get_sample_value(name) or 0.0

    with running(app, metrics=Metrics(app, registry)) as server:
        with make_client("blocking", *server.address, timeout=10) as client:
            gapped = client.stream("gapped", "m1", result_type=Event)  # 5 published, 3 dropped
            assert next(gapped).dropped == 3
            assert value("framewire_subscribers") == 1
            with make_client("blocking", *server.address, timeout=10) as publisher:
                publisher.publish("m1", "one more")
            assert [next(gapped).value for _ in range(2)] == [4, "one more"]
            gapped.close()
        wait_until(lambda: value("framewire_subscribers") == 0)
    assert value("framewire_events_published_total") == 6
    assert value("framewire_events_delivered_total") == 6
    assert value("framewire_events_dropped_total") == 3


def test_a_queue_is_bounded_in_bytes_too() -> None:
    # Ten events of 100 KiB into a queue of 1,000 events but 300 KiB: the
    # oldest go once their JSON passes the bytes; one larger than the bound
    # alone is still kept (it is the newest).
    hub = Hub(queue_bytes=300 * 1024)

    async def scenario() -> None:
        subscription = hub.subscribe("big")
        for i in range(10):
            hub.publish("big", [i, "x" * 100 * 1024])
        assert len(subscription.events) == 2 and subscription._size <= 300 * 1024
        hub.publish("big", [10, "y" * 400 * 1024])
        events = await take(subscription, 1)
        assert [(e.value[0], e.dropped) for e in events] == [(10, 10)]
        assert subscription._size == 0

    run(scenario())
    assert hub.dropped == 10


def test_a_slow_subscriber_is_disconnected_past_the_bytes_too() -> None:
    hub = Hub(queue_bytes=1024, slow="disconnect")

    async def scenario() -> None:
        subscription = hub.subscribe("t")
        hub.publish("t", "x" * 800)
        hub.publish("t", "x" * 800)
        with pytest.raises(Failure) as caught:
            await take(subscription, 1)
        assert caught.value.code == "server-busy" and "1024 bytes of events behind" in caught.value.message

    run(scenario())
