"""One timer structure for every connection: a hashed timing wheel.

Deadlines fall into slots of ``tick`` seconds; each slot is a set, and a heap
holds the slot numbers in use. Scheduling, moving and cancelling are O(1)
set operations, so a server that opens and closes thousands of connections a
second keeps exactly one entry per live connection (a heap of entries with
lazy deletion would keep every closed connection's entry until it came due).
A timer fires at most one tick late, never early.
"""

from __future__ import annotations

import heapq
import math
from typing import Generic, Protocol, TypeVar

__all__ = ["Timed", "TimerWheel"]


class Timed(Protocol):
    """What the wheel needs of an item: a slot to remember where it is."""

    timer_slot: int | None


T = TypeVar("T", bound=Timed)


class TimerWheel(Generic[T]):
    """Items with deadlines; :meth:`pop_due` returns those whose slot has come."""

    __slots__ = ("_heap", "_slots", "tick")

    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._slots: dict[int, set[T]] = {}
        self._heap: list[int] = []

    def __len__(self) -> int:
        return sum(len(items) for items in self._slots.values())

    def schedule(self, item: T, when: float) -> None:
        """Fire ``item`` at ``when`` (or up to one tick later); replaces its previous time."""
        slot = math.ceil(when / self.tick)
        old = item.timer_slot
        if old == slot:
            return
        if old is not None:
            self._slots[old].discard(item)
        items = self._slots.get(slot)
        if items is None:
            items = self._slots[slot] = set()
            heapq.heappush(self._heap, slot)
        items.add(item)
        item.timer_slot = slot

    def cancel(self, item: T) -> None:
        """Forget ``item``'s timer, if it has one."""
        if item.timer_slot is not None:
            self._slots[item.timer_slot].discard(item)
            item.timer_slot = None

    def scheduled_at(self, item: T) -> float:
        """When ``item`` fires at the latest (infinity if never)."""
        return math.inf if item.timer_slot is None else item.timer_slot * self.tick

    def next_due(self) -> float | None:
        """When the earliest slot comes due, or None if there is none."""
        heap = self._heap
        while heap and not self._slots.get(heap[0]):
            self._slots.pop(heapq.heappop(heap), None)  # emptied by cancels
        return heap[0] * self.tick if heap else None

    def pop_due(self, now: float) -> list[T]:
        """Remove and return every item whose slot has come by ``now``."""
        due: list[T] = []
        heap = self._heap
        while heap and heap[0] * self.tick <= now:
            for item in self._slots.pop(heapq.heappop(heap), ()):
                item.timer_slot = None
                due.append(item)
        return due
