"""The send queue: what is left after any split of the sends, and how many responses are owed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framewire.io.sendqueue import SendQueue

responses = st.lists(st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=8)), max_size=12)


@given(responses, st.lists(st.integers(min_value=0, max_value=40), max_size=20))
def test_any_split_of_the_sends_leaves_the_rest_in_order_and_counts_the_owed(
    queued: list[tuple[bytes, bytes]], sends: list[int]
) -> None:
    queue = SendQueue()
    stream = b""
    ends = []
    for head, content in queued:
        queue.append(head, content)
        stream += head + content
        ends.append(len(stream))
    gone = 0
    for want in sends:
        sent = min(want, queue.size)  # a socket takes at most what it is given
        queue.consume(sent)
        gone += sent
        assert b"".join(bytes(part) for part in queue.parts) == stream[gone:]
        assert queue.size == len(stream) - gone
        assert queue.responses == sum(1 for end in ends if end > gone)
        assert bool(queue) == (gone < len(stream))


def test_a_partial_send_keeps_the_rest_of_a_part_without_copying_it() -> None:
    queue = SendQueue()
    content = bytearray(b"0123456789")
    queue.append(b"hh", content)
    queue.consume(5)
    (rest,) = queue.parts
    assert isinstance(rest, memoryview) and rest.obj is content and bytes(rest) == b"3456789"
    assert queue.responses == 1
    queue.consume(7)
    assert (queue.parts, queue.size, queue.responses) == ([], 0, 0)


@pytest.mark.parametrize("sent", [0, 3])
def test_clear_drops_everything(sent: int) -> None:
    queue = SendQueue()
    queue.append(b"ab", b"cd")
    queue.consume(sent)
    queue.clear()
    assert (queue.parts, queue.size, queue.responses, bool(queue)) == ([], 0, 0, False)
