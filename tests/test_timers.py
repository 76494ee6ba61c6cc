"""The timing wheel: O(1) moves and cancels, never early, at most a tick late."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from framewire.io.timers import TimerWheel


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.timer_slot: int | None = None


def test_fires_in_order_never_early() -> None:
    wheel: TimerWheel[Item] = TimerWheel(tick=0.1)
    a, b = Item("a"), Item("b")
    wheel.schedule(a, 1.0)
    wheel.schedule(b, 0.5)
    assert wheel.next_due() == 0.5
    assert wheel.pop_due(0.49) == []
    assert wheel.pop_due(0.5) == [b]
    assert wheel.pop_due(1.05) == [a]
    assert wheel.next_due() is None and len(wheel) == 0


def test_reschedule_and_cancel_leave_one_entry() -> None:
    wheel: TimerWheel[Item] = TimerWheel(tick=0.1)
    items = [Item(str(i)) for i in range(1000)]
    for i, item in enumerate(items):
        wheel.schedule(item, 300.0 + i)
        wheel.schedule(item, 30.0)  # moved earlier
    for item in items[:900]:
        wheel.cancel(item)  # closed connections leave nothing behind
    assert len(wheel) == 100
    assert wheel.next_due() == 30.0
    assert sorted(i.name for i in wheel.pop_due(30.0)) == sorted(i.name for i in items[900:])
    assert wheel.next_due() is None


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=50), st.floats(0, 120))
def test_pop_due_is_exactly_what_is_due(deadlines: list[float], now: float) -> None:
    wheel: TimerWheel[Item] = TimerWheel(tick=0.05)
    items = [Item(str(i)) for i in range(len(deadlines))]
    for item, when in zip(items, deadlines, strict=True):
        wheel.schedule(item, when)
    due = wheel.pop_due(now)
    for item, when in zip(items, deadlines, strict=True):
        if item in due:
            assert when <= now  # never early
        else:
            assert when > now - 0.05  # at most one tick late
