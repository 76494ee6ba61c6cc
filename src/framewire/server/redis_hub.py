"""A hub on Redis: every publish reaches every process that uses the same Redis.

``RedisHub("redis://HOST:PORT/DB")`` (or ``framewire serve --hub
redis://...``) is a :class:`~framewire.server.hub.Hub` whose publishes go
through Redis pub/sub (channel ``framewire:TOPIC``, the event's JSON as the
message) and whose subscribers get what comes back from Redis: the
subscribers of every worker and every host that uses that Redis get every
publish, each publisher's in the order it made them.

It runs on a thread of its own, with its own event loop and two
connections (redis-py's asyncio client, ``pip install framewire[redis]``):
one sends the publishes, pipelined in order; one receives every
``framewire:*`` message and hands it to this process's subscribers.
``publish`` only puts the event in a bounded outbox (:data:`HUB_OUTBOX`),
so it never waits for Redis, from any thread.

When Redis goes away, publish fails at once with ``server-busy`` (what was
in the outbox is lost), subscribers stay subscribed, and the hub reconnects
with back-off (0.1 s doubling to 5 s). Once it is back, every subscriber's
next event carries ``framewire-dropped: true``: what was published
meanwhile, it did not get, and how much that was is not known.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import urlsplit

from framewire.core import limits
from framewire.core.errors import Failure
from framewire.core.topics import Event, check_topic
from framewire.server.hub import Hub, SlowPolicy, Subscription

__all__ = ["CHANNEL_PREFIX", "RedisHub"]

log = logging.getLogger("framewire.hub")

#: The Redis channel of topic T is CHANNEL_PREFIX + T.
CHANNEL_PREFIX: Final = "framewire:"
#: Publishes sent to Redis in one pipeline at most.
_PIPELINE: Final = 1000
#: Reconnection back-off: the first wait, and the longest, in seconds.
_BACKOFF_FIRST: Final = 0.1
_BACKOFF_MOST: Final = 5.0


def check_url(url: str) -> str:
    """``url`` if it names a Redis server; ``ValueError`` with a sentence if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise ValueError(f"--hub takes redis://HOST:PORT/DB (or rediss://, unix://), not {url!r}")
    return url


class RedisHub(Hub):
    """A :class:`Hub` whose publishes go through Redis (see the module's text)."""

    def __init__(
        self,
        url: str,
        *,
        queue: int = limits.SUBSCRIBER_QUEUE,
        queue_bytes: int = limits.SUBSCRIBER_QUEUE_BYTES,
        slow: SlowPolicy = "drop",
        outbox: int = limits.HUB_OUTBOX,
    ) -> None:
        super().__init__(queue=queue, queue_bytes=queue_bytes, slow=slow)
        #: The Redis server, as a URL.
        self.url = check_url(url)
        self._outbox: collections.deque[Event] = collections.deque()
        self._outbox_limit = outbox
        self._out_lock = threading.Lock()
        #: False while Redis cannot be reached: publish fails at once.
        self.connected = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._kick: asyncio.Event | None = None
        self._kicked = False
        #: Publishes lost on their way to Redis (the link broke under them).
        self.lost = 0

    # -- the application's side ---------------------------------------------------------

    def publish(self, topic: str, value: Any = None) -> int:
        """Send ``value`` to every subscriber of ``topic`` through Redis; 0
        (who it reaches is Redis's to know). Fails with ``server-busy`` while
        Redis cannot be reached or while :data:`HUB_OUTBOX` publishes wait."""
        event = Event(check_topic(topic), value)
        loop = self.start()
        with self._out_lock:
            if not self.connected:
                raise Failure("server-busy", f"The hub cannot reach Redis at {self.url}; try again later.")
            if len(self._outbox) >= self._outbox_limit:
                raise Failure(
                    "server-busy", f"{self._outbox_limit} publishes are waiting for Redis; try again later."
                )
            self._outbox.append(event)
            if self._kicked:
                return 0
            self._kicked = True
        loop.call_soon_threadsafe(self._wake_sender)
        return 0

    def subscribe(self, *topics: str | Iterable[str], queue: int | None = None) -> Subscription:
        self.start()
        return super().subscribe(*topics, queue=queue)

    def start(self) -> asyncio.AbstractEventLoop:
        """Start the hub's thread (at the first use; again in a forked worker)."""
        with self._out_lock:
            if self._loop is not None and self._pid == os.getpid():
                return self._loop
            try:
                import redis.asyncio  # noqa: F401, PLC0415
            except ImportError:
                raise RuntimeError("a Redis hub needs redis-py: pip install 'framewire[redis]'") from None
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=self._run, args=(loop, ready), name="framewire-hub", daemon=True)
            self._loop, self._thread, self._pid = loop, thread, os.getpid()
            self._outbox.clear()
            self._kicked = False
            thread.start()
        ready.wait()
        return loop

    def stop(self) -> None:
        """End the subscriptions and stop the hub's thread and its links
        (a stopping server only ends the subscriptions: publishes still
        answered in its grace period go on to Redis)."""
        self.close()
        with self._out_lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None and self._pid == os.getpid():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)

    # -- the hub's thread ---------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        self._kick = asyncio.Event()
        tasks = [loop.create_task(self._listen()), loop.create_task(self._send())]
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    def _wake_sender(self) -> None:
        assert self._kick is not None
        self._kick.set()

    async def _send(self) -> None:
        # Publishes to Redis in the order they were made, pipelined.
        import redis.asyncio as aioredis  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415

        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2, socket_timeout=5)
        kick = self._kick
        assert kick is not None
        outbox = self._outbox
        try:
            while True:
                await kick.wait()
                kick.clear()
                while True:
                    with self._out_lock:
                        if not outbox:
                            self._kicked = False
                            break
                        batch = [outbox.popleft() for _ in range(min(len(outbox), _PIPELINE))]
                    pipe = client.pipeline(transaction=False)
                    for event in batch:
                        pipe.publish(CHANNEL_PREFIX + event.topic, event.json)
                    try:
                        await pipe.execute()
                    except (RedisError, OSError) as exc:
                        self.lost += len(batch)
                        log.warning("the hub lost %d publishes on their way to Redis: %s", len(batch), exc)
        finally:
            await client.aclose()

    async def _listen(self) -> None:
        # Every framewire:* message, to this process's subscribers; the
        # link kept up, with back-off, for as long as the hub runs.
        import redis.asyncio as aioredis  # noqa: PLC0415
        from redis.exceptions import RedisError  # noqa: PLC0415

        backoff = _BACKOFF_FIRST
        linked_before = False
        while True:
            client = aioredis.Redis.from_url(self.url, socket_connect_timeout=2)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                if linked_before:
                    self.gap()  # (published meanwhile: not received)
                    log.warning("the hub is linked to Redis at %s again", self.url)
                self._linked(True)
                linked_before = True
                backoff = _BACKOFF_FIRST
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None or message.get("type") != "pmessage":
                        continue
                    try:
                        event = Event.from_json(message["data"])
                    except ValueError as exc:
                        log.warning("a message on %s is not an event: %s", message.get("channel"), exc)
                        continue
                    self.deliver(event)
            except (RedisError, OSError) as exc:
                if self.connected or not linked_before:
                    log.warning("the hub cannot reach Redis at %s (%s); trying again", self.url, exc)
                self._linked(False)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except (RedisError, OSError):
                    pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MOST)

    def _linked(self, up: bool) -> None:
        with self._out_lock:
            self.connected = up
            if not up:
                self.lost += len(self._outbox)
                self._outbox.clear()
