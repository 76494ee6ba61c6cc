"""A cache with a budget in bytes, for values made from a peer's input.

A cache keyed by what a peer sends must be bounded in bytes, not only in
entries: a few thousand entries of 64 KiB each is already hundreds of MiB.
Each entry is put with its cost (an estimate of the memory it holds, see
:func:`footprint`); an entry costing more than a sixteenth of the budget is
not kept at all, and when the budget would be exceeded the cache starts
over (cheaper than tracking recency, and the working set of a real peer,
a few header shapes, is back after one miss each).
"""

from __future__ import annotations

import sys
from typing import Any, Generic, TypeVar

__all__ = ["BoundedCache", "footprint"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A ``dict`` whose entries' costs add up to at most ``max_bytes``."""

    __slots__ = ("_data", "_size", "get", "max_bytes")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes
        self._data: dict[K, V] = {}
        self._size = 0
        #: ``get(key)``: the value, or None (the dict's own method: no call layer).
        self.get = self._data.get

    def put(self, key: K, value: V, cost: int) -> None:
        """Keep ``value`` under ``key`` if its ``cost`` (bytes) fits the budget."""
        if cost * 16 > self.max_bytes or key in self._data:
            return
        if self._size + cost > self.max_bytes:
            self._data.clear()
            self._size = 0
        self._data[key] = value
        self._size += cost

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()
        self._size = 0

    @property
    def size(self) -> int:
        """The summed cost of the entries held, in bytes."""
        return self._size

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


def footprint(value: Any) -> int:
    """The memory ``value`` holds, in bytes: ``sys.getsizeof`` summed over
    the lists, dicts and scalars inside it (iteratively: values may nest
    deeper than Python's recursion limit)."""
    total = 0
    stack = [value]
    sizeof = sys.getsizeof
    while stack:
        item = stack.pop()
        total += sizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total
