"""Streams: many answers to one request (``framewire-stream``).

An action written as a generator or an async generator (or returning an
iterator) streams. The server takes its items in batches (:meth:`Stream.pull`,
:meth:`Stream.apull`), where the action runs (inline, on the thread pool,
on the event loop), and only while its connection may send: an ordered
request's items wait for the answers before it (so a stream holds its
connection's order until it ends), and every stream waits, its generator
not resumed, while the connection's unsent answers are above the
high-water mark. A client that asked for a stream (``framewire-stream:
true``) gets each item as its own message, ``framewire-stream: "item"``,
then ``"end"`` (content: the action's return value as ``{"result": ...}``);
any other client gets one answer, ``{"result": [item, ...]}``, within the
server's content limit.

A subscription of the hub (:mod:`framewire.server.hub`) is a source too:
returned by an action, it hands the server its events as many at a time as
are waiting, from the publish that brings them; iterated inside an async generator, it belongs to that stream
(closed when the stream ends) and marks the next item the stream sends
with the gap it had (``framewire-dropped``).
"""

from __future__ import annotations

import contextvars
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

import orjson

from framewire.core.probe import DROPPED_KEY
from framewire.core.topics import Event

__all__ = ["BATCH", "PULLING", "Batch", "Item", "Stream", "as_stream", "is_stream"]

#: Items taken from a synchronous source at most per pull: one turn of the
#: loop's worth, so that a stream shares the server with the others.
BATCH: Final = 128


def _item_json(item: Any) -> bytes:
    # An item's content: {"result": item}, typed objects as JSON sees them.
    if item.__class__ is Event:
        return b'{"result":' + item.json + b"}"  # (its JSON made once, at the publish)
    try:
        return b'{"result":' + orjson.dumps(item) + b"}"
    except TypeError:
        import msgspec  # noqa: PLC0415  (only for what orjson cannot write)

        return b'{"result":' + orjson.dumps(msgspec.to_builtins(item)) + b"}"


class Item:
    """A stream's item with header extensions of its own (a subscription's
    gap marker on an item an action made of an event)."""

    __slots__ = ("extensions", "value")

    def __init__(self, value: Any, extensions: dict[str, Any]) -> None:
        self.value = value
        self.extensions = extensions


class Batch:
    """What one pull took: items, and whether the source ended (with its
    return value)."""

    __slots__ = ("done", "error", "final", "items")

    def __init__(
        self, items: list[Any], done: bool, final: Any = None, error: Exception | None = None
    ) -> None:
        self.items = items
        self.done = done
        self.final = final
        #: What the source raised after these items (they are sent first).
        self.error = error


class Stream:
    """An action's items, with how each is written (see the module's text)."""

    __slots__ = ("closed", "feed", "gap", "is_async", "lock", "owned", "source")

    def __init__(self, source: Iterator[Any] | AsyncIterator[Any]) -> None:
        self.source = source
        #: Held while a pool thread takes or stops it.
        self.lock = threading.Lock()
        #: An async generator (or iterator): pulled on the event loop.
        self.is_async = not hasattr(source, "__next__")
        self.closed = False
        #: A source that hands its batches itself (a subscription's
        #: ``pull_into``): the server asks, the source answers when it can.
        self.feed: Callable[[Callable[[object], None]], None] | None = getattr(source, "pull_into", None)
        #: What the source's subscriptions missed before its next item.
        self.gap: int | bool = 0
        #: Subscriptions made while this stream was pulled: closed with it.
        self.owned: list[Any] = []

    def pull(self) -> Batch:
        """Up to :data:`BATCH` items of a synchronous source (it may raise)."""
        source = self.source
        assert not self.is_async
        items: list[Any] = []
        append = items.append
        try:
            for _ in range(BATCH):
                append(next(source))  # type: ignore[arg-type]
        except StopIteration as stop:
            self.closed = True
            return Batch(items, True, stop.value)
        except Exception as exc:
            self.closed = True
            if not items:
                raise
            return Batch(items, True, error=exc)  # the items it gave first still go
        return Batch(items, False)

    async def apull(self) -> Batch:
        """The next item of an asynchronous source (it may raise)."""
        try:
            token = PULLING.set(self)  # (this pull's task's own context)
            try:
                item = await self.source.__anext__()  # type: ignore[union-attr]
            finally:
                PULLING.reset(token)
        except StopAsyncIteration:
            self._ended()
            return Batch([], True)
        except BaseException:
            self._ended()
            raise
        gap = self.gap
        if gap:
            self.gap = 0
            if not (item.__class__ is Event and item.dropped):
                item = Item(item, {DROPPED_KEY: gap})
        return Batch([item], False)

    def _ended(self) -> None:
        self.closed = True
        for subscription in self.owned:
            subscription.close()
        self.owned.clear()

    def close(self) -> None:
        """Stop a synchronous source (its ``finally`` blocks run), on the
        thread that pulls it."""
        self.closed = True
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    async def aclose(self) -> None:
        """Stop an asynchronous source (and the subscriptions it made)."""
        try:
            aclose = getattr(self.source, "aclose", None)
            if callable(aclose):
                await aclose()
        finally:
            self._ended()

    @staticmethod
    def content(item: Any) -> bytes:
        """An item's content (a JSON item as ``{"result": item}``)."""
        return _item_json(item)

    @staticmethod
    def final_content(value: Any) -> bytes:
        """The end's content: the source's return value, ``{"result": ...}``."""
        return _item_json(value)


def is_stream(result: object) -> bool:
    """Whether a handler's result streams: a :class:`Stream`, a generator
    or an async generator."""
    return isinstance(result, Stream) or inspect.isgenerator(result) or inspect.isasyncgen(result)


def as_stream(result: object) -> Stream:
    """``result`` (see :func:`is_stream`) as a :class:`Stream`."""
    if isinstance(result, Stream):
        return result
    return Stream(result)  # type: ignore[arg-type]


#: The stream whose source is being pulled, in that pull's task: a
#: subscription made or iterated there reports to it.
PULLING: contextvars.ContextVar[Stream | None] = contextvars.ContextVar("framewire_pulling", default=None)

#: A function that takes the next batch of a slot's stream where its action
#: runs and posts it back (set by the dispatcher).
Puller = Callable[[Any, Any], None]
