"""Publish and subscribe: an application's hub (``app.hub``).

``hub.publish(topic, value)`` hands ``value`` to every subscription whose
topics take ``topic``; it is thread-safe and never waits for a subscriber,
so it may be called from sync and async actions and from any thread.
``hub.subscribe(*topics)`` is an async iterator of
:class:`~framewire.core.topics.Event`: returned by a streaming action (or
iterated inside one, ``async for event in app.hub.subscribe("chat")``), its
events go to the client as the stream's items.

Each subscription has a queue of at most ``queue`` events (the server's
``--subscriber-queue``). A subscriber that falls that far behind (its
client reads slower than events come, so its stream is paused) loses the
oldest, and the next event it gets carries how many it lost
(``framewire-dropped: N``); with ``slow="disconnect"`` (``--slow-subscriber
disconnect``) its subscription ends with ``server-busy`` instead. Either
way the publisher goes on at once and memory stays bounded.

This hub delivers within one process. :class:`~framewire.server.redis_hub.RedisHub`
(``--hub redis://HOST:PORT/DB``) sends every publish through Redis, so that
the subscribers of every worker and host that uses the same Redis get it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal

from framewire.core import limits
from framewire.core.errors import Failure
from framewire.core.topics import MAX_TOPICS, Event, check_pattern, check_topic, topic_list
from framewire.server.streams import BATCH, PULLING, Batch

__all__ = ["SLOW_POLICIES", "Hub", "Subscription"]

#: What becomes of a subscriber whose queue is full: its oldest events are
#: dropped (and the gap marked), or its subscription ends with server-busy.
SLOW_POLICIES: Final = ("drop", "disconnect")
SlowPolicy = Literal["drop", "disconnect"]


class Hub:
    """Topics and their subscriptions in this process (see the module's text)."""

    def __init__(
        self,
        *,
        queue: int = limits.SUBSCRIBER_QUEUE,
        queue_bytes: int = limits.SUBSCRIBER_QUEUE_BYTES,
        slow: SlowPolicy = "drop",
    ) -> None:
        self._lock = threading.Lock()
        self._exact: dict[str, list[Subscription]] = {}
        self._prefixes: dict[str, list[Subscription]] = {}
        self.queue = _at_least_one(queue, "event")
        self.queue_bytes = _at_least_one(queue_bytes, "byte")
        self.slow: SlowPolicy = slow
        self.configure()
        #: Counts since start: publishes, events handed to subscribers,
        #: events dropped for slow ones; and the subscriptions now.
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        self.subscribers = 0
        #: The server's metrics, when they are on (set by the server).
        self.metrics: Any = None

    def configure(
        self, *, queue: int | None = None, queue_bytes: int | None = None, slow: str | None = None
    ) -> None:
        """Set the queue's bounds and the slow-subscriber policy (the server's
        ``--subscriber-queue``, ``--subscriber-queue-bytes`` and
        ``--slow-subscriber``); ``ValueError`` for values outside them.
        Subscriptions made before keep theirs."""
        slow = self.slow if slow is None else slow
        if slow not in SLOW_POLICIES:
            raise ValueError(f"slow subscribers are dropped from or disconnected, not {slow!r}")
        if queue is not None:
            self.queue = _at_least_one(queue, "event")
        if queue_bytes is not None:
            self.queue_bytes = _at_least_one(queue_bytes, "byte")
        self.slow = slow  # type: ignore[assignment]

    # -- publishing --------------------------------------------------------------------

    def publish(self, topic: str, value: Any = None) -> int:
        """Hand ``value`` to every subscription that takes ``topic``; the
        number of subscriptions it reached in this process. ``ValueError``
        for a topic that cannot be published to, ``TypeError`` for a value
        JSON cannot hold."""
        event = Event(check_topic(topic), value)
        return self.deliver(event)

    def deliver(self, event: Event) -> int:
        """Hand a published ``event`` to this process's subscriptions."""
        topic = event.topic
        reached = 0
        ended: list[Subscription] = []
        with self._lock:
            self.published += 1
            exact = self._exact.get(topic)
            matching = [] if exact is None else [exact]
            for prefix, subscriptions in self._prefixes.items():
                if topic.startswith(prefix):
                    matching.append(subscriptions)
            for subscriptions in matching:
                for subscription in subscriptions:
                    if subscription._last is event:
                        continue  # (two of its patterns take it: once)
                    if subscription._put(event):
                        reached += 1
                    elif subscription.error is not None:
                        ended.append(subscription)
            for subscription in ended:  # (not while the tables are walked)
                self._remove(subscription)
            self.delivered += reached
        metrics = self.metrics
        if metrics is not None:
            metrics.published(reached)
        return reached

    # -- subscribing -------------------------------------------------------------------

    def subscribe(self, *topics: str | Iterable[str], queue: int | None = None) -> Subscription:
        """A subscription to ``topics`` (each a topic, or a prefix ending in
        ``*``; lists of them too): ``async for event in hub.subscribe("a")``.
        ``queue``: its bound, when not the hub's. ``ValueError`` for a topic
        that is not one, or for none or more than
        :data:`~framewire.core.topics.MAX_TOPICS`."""
        patterns = topic_list(topics)
        if len(patterns) > MAX_TOPICS:
            raise ValueError(f"a subscription names at most {MAX_TOPICS} topics, not {len(patterns)}")
        unique = list(dict.fromkeys(check_pattern(p) for p in patterns))
        limit = self.queue if queue is None else _at_least_one(queue, "event")
        subscription = Subscription(self, tuple(unique), limit, self.queue_bytes, self.slow)
        with self._lock:
            for pattern in unique:
                table, key = self._entry(pattern)
                table.setdefault(key, []).append(subscription)
            self.subscribers += 1
        if self.metrics is not None:
            self.metrics.subscribed(1)
        stream = PULLING.get()
        if stream is not None:
            stream.owned.append(subscription)  # made inside a stream's action: ends with it
        return subscription

    def _entry(self, pattern: str) -> tuple[dict[str, list[Subscription]], str]:
        # The table a pattern's subscriptions are in, and its key there.
        if pattern.endswith("*"):
            return self._prefixes, pattern[:-1]
        return self._exact, pattern

    def _remove(self, subscription: Subscription) -> None:
        # Under the lock.
        for pattern in subscription.topics:
            table, key = self._entry(pattern)
            subscriptions = table.get(key)
            if subscriptions is not None:
                with contextlib.suppress(ValueError):
                    subscriptions.remove(subscription)
                if not subscriptions:
                    del table[key]
        self.subscribers -= 1
        if self.metrics is not None:
            self.metrics.subscribed(-1)

    def gap(self) -> None:
        """Mark every subscription: some events may have been missed, how
        many is not known (a lost link to Redis)."""
        with self._lock:
            for table in (self._exact, self._prefixes):
                for subscriptions in table.values():
                    for subscription in subscriptions:
                        subscription._lost = True

    def close(self) -> None:
        """End every subscription (their streams end); the hub stays usable."""
        with self._lock:
            everyone = {
                id(s): s for table in (self._exact, self._prefixes) for ss in table.values() for s in ss
            }
        for subscription in everyone.values():
            subscription.close()


class Subscription:
    """One subscriber's events (see :meth:`Hub.subscribe`): an async
    iterator, an ``async with`` block, a stream's source."""

    __slots__ = (
        "_deliver",
        "_gap",
        "_last",
        "_lost",
        "_size",
        "_thread",
        "_waiter",
        "closed",
        "error",
        "events",
        "hub",
        "limit",
        "limit_bytes",
        "slow",
        "topics",
    )

    def __init__(
        self, hub: Hub, topics: tuple[str, ...], limit: int, limit_bytes: int, slow: SlowPolicy
    ) -> None:
        self.hub = hub
        #: The topics (and prefixes with ``*``) it takes.
        self.topics = topics
        #: The most events, and the most bytes of their JSON, it holds
        #: untaken (but always the newest event, whatever its size).
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.slow = slow
        #: The events waiting to be taken.
        self.events: collections.deque[Event] = collections.deque()
        self._size = 0  # the JSON bytes of the events waiting
        self._gap = 0  # events dropped since the last one taken
        self._lost = False  # events may have been lost meanwhile (Redis)
        self._last: Event | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._thread = 0
        # Where the next batch goes when a publish brings it (see pull_into).
        self._deliver: Callable[[object], None] | None = None
        self.closed = False
        #: Why it ended, when the hub ended it (a slow subscriber, disconnected).
        self.error: BaseException | None = None

    def _put(self, event: Event) -> bool:
        # Under the hub's lock, from any thread: never waits. False: not
        # delivered (its subscription ended, or ends now: ``error``).
        self._last = event
        if self.closed:
            return False
        events = self.events
        size = self._size + len(event.json)
        if events and (len(events) >= self.limit or size > self.limit_bytes):
            hub = self.hub
            if self.slow == "disconnect":
                behind = "events" if len(events) >= self.limit else "bytes of events"
                held = self.limit if len(events) >= self.limit else self.limit_bytes
                self.error = Failure(
                    "server-busy", f"This subscriber fell {held} {behind} behind; its subscription has ended."
                )
                self.closed = True  # (taken out of the tables by deliver)
                events.clear()  # (the error is what it gets next)
                self._size = 0
                self._wake()
                return False
            while events and (len(events) >= self.limit or size > self.limit_bytes):
                size -= len(events.popleft().json)
                self._gap += 1
                hub.dropped += 1
                if hub.metrics is not None:
                    hub.metrics.dropped(1)
        events.append(event)
        self._size = size
        if self._waiter is not None or self._deliver is not None:
            self._wake()
        return True

    def _wake(self) -> None:
        # Under the lock: the next batch goes where a server's pull asked
        # for it; a waiting ``async for`` is told, on its loop's thread.
        deliver = self._deliver
        if deliver is not None:
            self._deliver = None
            deliver(self._taken())
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if threading.get_ident() == self._thread:
            if not waiter.done():
                waiter.set_result(None)
        else:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits any more
                waiter.get_loop().call_soon_threadsafe(_resolve, waiter)

    def _taken(self) -> Batch | BaseException:
        # Under the lock: what a pull gets now (called only when there is
        # something: events, or the end).
        events = self.events
        if events:
            if len(events) <= BATCH:
                taken = list(events)
                events.clear()
                self._size = 0
            else:
                taken = [events.popleft() for _ in range(BATCH)]
                self._size -= sum(len(event.json) for event in taken)
            taken[0] = self._marked(taken[0])
            return Batch(taken, False)
        if self.error is not None:
            return self.error
        return Batch([], True)

    def _marked(self, event: Event) -> Event:
        # Under the lock: the first event taken after a gap carries it.
        if not (self._gap or self._lost):
            return event
        marked = event.gap(True if self._lost else self._gap)
        self._gap, self._lost = 0, False
        return marked

    def pull_into(self, deliver: Callable[[object], None]) -> None:
        """How a server takes a subscription that is a stream's source:
        ``deliver`` gets the next batch (the events waiting, at most
        :data:`~framewire.server.streams.BATCH`; the first after a gap
        marked), or the end, or the hub's reason to end it: at once when
        there is one, else from the publish (on its thread) that brings
        one. No task, no thread hop: a publish to a thousand subscribers
        hands each its batch directly."""
        with self.hub._lock:
            if not self.events and self.error is None and not self.closed:
                self._deliver = deliver
                return
            result = self._taken()
        deliver(result)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            with self.hub._lock:
                events = self.events
                if events:
                    event = self._marked(events.popleft())
                    self._size -= len(event.json)
                    if event.dropped:
                        stream = PULLING.get()
                        if stream is not None:
                            stream.gap = event.dropped  # the stream marks its next item
                    return event
            await self._wait()

    async def _wait(self) -> None:
        # Until an event comes (or the end).
        with self.hub._lock:
            if self.events:
                return
            if self.error is not None:
                raise self.error
            if self.closed:
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            self._thread = threading.get_ident()
        try:
            await waiter
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Unsubscribe: no more events; an ``async for`` over it ends."""
        with self.hub._lock:
            if self.closed:
                return
            self.closed = True
            self.hub._remove(self)
            self._wake()

    async def aclose(self) -> None:
        """:meth:`close` (for ``contextlib.aclosing`` and streams)."""
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.events)} waiting"
        return f"<Subscription {', '.join(self.topics)} ({state})>"


def _at_least_one(value: object, unit: str) -> int:
    # A queue bound, checked: a whole number of at least one.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"a subscriber's queue holds at least 1 {unit}, not {value!r}")
    return value


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
