"""The idle loop's polling policy (io.poller.BusyPoll), on a fake clock and
a fake poller; and a server that polls, or not, answering over real sockets."""

from __future__ import annotations

import asyncio
import collections
import select
import socket
import threading
import time

import pytest

from conftest import connect, read_messages, running
from framewire import Decoder, Message, aio, encode
from framewire.io.poller import BUSY_POLL_START, BusyPoll, BusyPollSelector, Waker, poll_busily
from framewire.server.app import echo

US = 1e-6


class Peer:
    """A fake clock and a fake poller: work arrives at the given instants.
    ``poll(0)`` costs a microsecond; ``poll(t)`` sleeps until the next
    arrival or for ``t``, whichever comes first."""

    def __init__(self, arrivals: list[float]) -> None:
        self.now = 0.0
        self.arrivals = arrivals
        self.polls: list[float | None] = []

    def clock(self) -> float:
        return self.now

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        self.polls.append(timeout)
        if timeout == 0:
            self.now += 1 * US
        else:
            due = self.arrivals[0] if self.arrivals else float("inf")
            self.now = max(self.now, min(due, float("inf") if timeout is None else self.now + timeout))
        if self.arrivals and self.arrivals[0] <= self.now:
            self.arrivals.pop(0)
            return [(5, 1)]
        return []


def serve_spells(busy: BusyPoll, gaps: list[float], timeout: float | None = None) -> Peer:
    """One idle spell per gap: work comes ``gap`` seconds after the loop goes idle."""
    peer = Peer([])
    for gap in gaps:
        peer.arrivals = [peer.now + gap]
        events = poll_busily(peer.poll, timeout, busy, peer.clock)
        if timeout is None or gap <= timeout:
            assert events == [(5, 1)]
    return peer


def test_sparse_traffic_never_polls() -> None:
    busy = BusyPoll(100 * US)
    peer = serve_spells(busy, [1e-3, 5e-3, 0.2, 2e-3])
    assert busy.window == 0
    assert peer.polls == [None] * 4  # straight to sleep, every time


def test_work_that_comes_soon_grows_the_window_until_polling_catches_it() -> None:
    busy = BusyPoll(100 * US)
    peer = serve_spells(busy, [60 * US] * 3)
    assert busy.window == pytest.approx(4 * BUSY_POLL_START)  # 25, then 50, then 100 us
    peer.polls.clear()
    serve_spells(busy, [60 * US] * 20)
    assert busy.window == pytest.approx(100 * US)  # it caught them all: unchanged


def warmed(limit: float) -> BusyPoll:
    """A policy whose window has grown to ``limit`` (work kept coming soon)."""
    busy = BusyPoll(limit)
    serve_spells(busy, [limit] * 8)
    assert busy.window == pytest.approx(limit)
    return busy


def test_polling_catches_work_and_so_skips_the_sleep() -> None:
    busy = warmed(100 * US)
    peer = Peer([30 * US])
    assert poll_busily(peer.poll, None, busy, peer.clock) == [(5, 1)]
    assert set(peer.polls) == {0}  # never slept
    assert 25 <= len(peer.polls) <= 31  # polled about once a microsecond until it came


def test_the_window_halves_and_closes_when_traffic_thins_out() -> None:
    busy = warmed(100 * US)
    serve_spells(busy, [1e-3])
    assert busy.window == pytest.approx(50 * US)
    serve_spells(busy, [1e-3])
    assert busy.window == pytest.approx(25 * US)
    serve_spells(busy, [1e-3])
    assert busy.window == 0


def test_polling_ends_at_the_loop_s_timeout() -> None:
    busy = warmed(100 * US)
    peer = Peer([1.0])
    assert poll_busily(peer.poll, 10 * US, busy, peer.clock) == []
    assert peer.now == pytest.approx(10 * US)  # a timer was due: not a moment later
    assert peer.polls[-1] == 0  # nothing left to sleep for


def test_a_limit_of_zero_never_polls_and_a_negative_one_is_refused() -> None:
    busy = BusyPoll(0)
    peer = serve_spells(busy, [1 * US, 10 * US])
    assert busy.window == 0 and peer.polls == [None, None]
    with pytest.raises(ValueError, match="busy-poll limit must be >= 0"):
        BusyPoll(-1)


@pytest.mark.parametrize("busy_poll", [0, 100, 10_000])
def test_the_server_answers_whether_it_polls_or_not(busy_poll: int) -> None:
    with running(busy_poll=busy_poll) as server, connect(server.port) as sock:
        decoder = Decoder()
        for i in range(200):  # request/response: the loop goes idle between them
            sock.sendall(encode(Message.from_bytes(b"%d" % i)))
            (answer,) = read_messages(sock, 1, decoder)
            assert answer.content == b"%d" % i


def test_the_window_never_passes_the_limit() -> None:
    busy = BusyPoll(60 * US)
    serve_spells(busy, [55 * US] * 2)
    assert busy.window == pytest.approx(50 * US)
    serve_spells(busy, [59 * US] * 5)
    assert busy.window == pytest.approx(60 * US)


def test_an_asyncio_loop_on_the_polling_selector_serves_and_its_window_grows() -> None:
    # framewire serve --loop asyncio makes its loop so (server.aiorun.run).
    selector = BusyPollSelector(0.05)  # far above the time between this test's requests
    loop = asyncio.SelectorEventLoop(selector)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        server = asyncio.run_coroutine_threadsafe(aio.start_server(echo, "127.0.0.1", 0), loop).result(10)
        with connect(server.port) as sock:
            decoder = Decoder()
            for i in range(100):  # request/response: the loop goes idle between them
                sock.sendall(encode(Message.from_bytes(b"%d" % i)))
                (answer,) = read_messages(sock, 1, decoder)
                assert answer.content == b"%d" % i
        assert selector.busy.window > 0  # work kept coming soon: it polls
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(20)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_the_polling_selector_does_not_wait_when_told_not_to() -> None:
    left, right = socket.socketpair()
    with BusyPollSelector(0.05) as selector, left, right:
        selector.register(left, 1)  # EVENT_READ
        selector.busy.window = 0.05  # as if warmed
        right.send(b"x")
        # The loop has callbacks ready: a plain look, which finds what is there
        # (the polling policy's own zero timeout means "a timer is due": nothing).
        ((key, events),) = selector.select(0)
        assert key.fileobj is left and events == 1
        ((key, events),) = selector.select(None)
        assert key.fileobj is left and events == 1


def test_a_waker_loses_no_wake_up_whatever_threads_race_its_drain() -> None:
    # Wake-ups are coalesced (one byte until the next drain): many threads
    # posting work and waking while the loop drains must never leave work
    # that no byte announces.
    waker = Waker()
    epoll = select.epoll()
    epoll.register(waker.fileno(), select.EPOLLIN)
    posted: collections.deque[int] = collections.deque()
    threads, each = 8, 5000

    def worker() -> None:
        for i in range(each):
            posted.append(i)
            waker.wake()
            if i % 50 == 0:
                time.sleep(0)  # (let the others and the loop interleave)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    taken = 0
    try:
        while taken < threads * each:
            assert epoll.poll(5), f"work left unannounced: {len(posted)} posted, {taken} taken"
            waker.drain()
            while posted:
                posted.popleft()
                taken += 1
    finally:
        for thread in workers:
            thread.join(10)
        epoll.close()
        waker.close()
