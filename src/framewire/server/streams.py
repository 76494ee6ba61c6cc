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
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

import orjson

__all__ = ["BATCH", "Batch", "Stream", "as_stream", "is_stream"]

#: Items taken from a synchronous source at most per pull: one turn of the
#: loop's worth, so that a stream shares the server with the others.
BATCH: Final = 128


def _item_json(item: Any) -> bytes:
    # An item's content: {"result": item}, typed objects as JSON sees them.
    try:
        return b'{"result":' + orjson.dumps(item) + b"}"
    except TypeError:
        import msgspec  # noqa: PLC0415  (only for what orjson cannot write)

        return b'{"result":' + orjson.dumps(msgspec.to_builtins(item)) + b"}"


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

    __slots__ = ("closed", "is_async", "lock", "source")

    def __init__(self, source: Iterator[Any] | AsyncIterator[Any]) -> None:
        self.source = source
        #: Held while a pool thread takes or stops it.
        self.lock = threading.Lock()
        #: An async generator (or iterator): pulled on the event loop.
        self.is_async = not hasattr(source, "__next__")
        self.closed = False

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
            item = await self.source.__anext__()  # type: ignore[union-attr]
        except StopAsyncIteration:
            self.closed = True
            return Batch([], True)
        return Batch([item], False)

    def close(self) -> None:
        """Stop a synchronous source (its ``finally`` blocks run), on the
        thread that pulls it."""
        self.closed = True
        close = getattr(self.source, "close", None)
        if callable(close):
            close()

    async def aclose(self) -> None:
        """Stop an asynchronous source."""
        self.closed = True
        aclose = getattr(self.source, "aclose", None)
        if callable(aclose):
            await aclose()

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


#: A function that takes the next batch of a slot's stream where its action
#: runs and posts it back (set by the dispatcher).
Puller = Callable[[Any, Any], None]
