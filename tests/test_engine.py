"""The connection engine, sans I/O: every policy with a fake clock, no
sockets and no sleeps. Time is whatever ``now`` the test says it is."""

from __future__ import annotations

import functools
import logging
import struct
from typing import Any

import pytest

from framewire import Decoder, Message, encode, encode_many
from framewire.core import limits
from framewire.core.errors import BadContent, BadHeader
from framewire.core.probe import PING_KEY
from framewire.server.app import echo
from framewire.server.config import ServerConfig
from framewire.server.engine import (
    CLOSE,
    LATER,
    LINGER,
    READ,
    WRITE,
    ContentBudget,
    FlowControl,
    Phase,
    ServerConnection,
    Slot,
)
from framewire.server.handlers import Dispatcher
from framewire.server.state import ServerState


def engine(**settings: Any) -> ServerConnection:
    return ServerConnection(ServerConfig(**settings), now=0.0, peer="test")


def echo_call(conn: ServerConnection, request: Message) -> object:
    return Message.from_bytes(request.content)


class Later:
    """A call that answers nothing now: every request gets a slot to fill."""

    def __init__(self) -> None:
        self.slots: list[tuple[Slot, Message]] = []

    def __call__(self, conn: ServerConnection, request: Message) -> object:
        self.slots.append((conn.reserve(), request))
        return LATER


def feed(conn: ServerConnection, data: bytes, now: float, call: Any) -> None:
    """``data`` from the peer at ``now``, answered by ``call(conn, request)``."""
    conn.bind(functools.partial(call, conn))
    conn.receive(data, now)


def sent_messages(conn: ServerConnection, now: float = 0.0) -> list[Message]:
    """Everything the engine queued, as the peer would decode it."""
    data = b"".join(bytes(p) for p in conn.out.parts)
    conn.flushed(conn.out.size, now)
    return Decoder().feed(data)


def reading(conn: ServerConnection) -> bool:
    """Whether the driver would read from the peer now."""
    wanted = conn.interest()
    return wanted != CLOSE and bool(wanted & READ)


def codes(messages: list[Message]) -> list[str | None]:
    return [m.json()["error"]["code"] if m.is_error else None for m in messages]


def req(content: bytes) -> bytes:
    return encode(Message.from_bytes(content))


# -- ordering ------------------------------------------------------------------------


def test_answers_go_out_in_request_order_whatever_finishes_first() -> None:
    conn = engine()
    later = Later()
    feed(conn, encode_many([Message.from_bytes(b"%d" % i) for i in range(4)]), 0.0, later)
    assert not conn.out and conn.owed == 4
    (s0, _), (s1, _), (s2, _), (s3, _) = later.slots
    conn.fulfil(s2, Message.from_bytes(b"two"), 1.0)
    conn.fulfil(s1, Message.from_bytes(b"one"), 1.0)
    assert not conn.out  # the first is not ready: nothing may go before it
    conn.fulfil(s0, Message.from_bytes(b"zero"), 2.0)
    assert [m.content for m in sent_messages(conn)] == [b"zero", b"one", b"two"]
    conn.fulfil(s3, RuntimeError("boom"), 3.0)
    assert codes(sent_messages(conn)) == ["handler-error"]


def test_an_inline_answer_after_a_pending_one_waits_for_it() -> None:
    conn = engine()
    later = Later()
    feed(conn, req(b"slow"), 0.0, later)
    feed(conn, req(b"fast"), 0.0, echo_call)
    assert not conn.out
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"slow!"), 0.5)
    assert [m.content for m in sent_messages(conn)] == [b"slow!", b"fast"]


def test_a_probe_is_answered_by_the_engine_in_its_place() -> None:
    conn = engine()
    later = Later()
    probe = Message.from_bytes(b"p", extensions={PING_KEY: 1})
    feed(conn, encode_many([Message.from_bytes(b"app"), probe]), 0.0, later)
    assert len(later.slots) == 1  # the application never saw the probe
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"app!"), 0.1)
    first, second = sent_messages(conn)
    assert first.content == b"app!" and second.get(PING_KEY) == 1


def test_a_framing_error_is_answered_after_the_answers_owed() -> None:
    conn = engine()
    later = Later()
    feed(conn, req(b"a") + struct.pack(">H", 1) + b"{", 0.0, later)
    assert conn.phase >= Phase.CLOSING and not conn.out
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"a!"), 0.1)
    assert codes(sent_messages(conn)) == [None, "bad-header-length"]
    assert conn.interest() == LINGER  # then the lingering close (below)


# -- the lingering close after an error answer ----------------------------------------------

BAD_HEADER = struct.pack(">H", 1) + b"{"


def errored(**settings: Any) -> ServerConnection:
    """An engine that answered a framing error, its answer sent."""
    conn = engine(**settings)
    feed(conn, BAD_HEADER, 0.0, echo_call)
    assert codes(sent_messages(conn)) == ["bad-header-length"]
    return conn


def test_an_error_answer_is_followed_by_a_half_close_and_reading_until_the_peer_closes() -> None:
    conn = errored()
    assert conn.interest() == LINGER and not conn.finished
    conn.linger(1.0)
    assert conn.interest() == READ and conn.deadline == 1.0 + ServerConfig().linger_time
    feed(conn, req(b"more") * 100, 1.5, echo_call)
    assert not conn.out and conn.interest() == READ  # dropped: no second answer
    feed(conn, b"", 1.6, echo_call)
    assert conn.interest() == CLOSE and conn.finished


def test_the_lingering_close_ends_at_its_time() -> None:
    conn = errored(linger_time=2.0, idle_timeout=1.0)
    conn.linger(10.0)
    assert conn.deadline == 12.0  # not the idle timeout: reading is all it does
    conn.timer(11.9)
    assert conn.interest() == READ
    conn.timer(12.0)
    assert conn.finished and not conn.closed


def test_the_lingering_close_ends_after_its_bytes_counted_from_the_error(caplog: Any) -> None:
    conn = engine(linger_bytes=100)
    feed(conn, BAD_HEADER + b"x" * 40, 0.0, echo_call)  # the error's own read: not counted
    feed(conn, b"x" * 30, 0.0, echo_call)  # before the answer is sent: counted
    assert codes(sent_messages(conn)) == ["bad-header-length"]
    conn.linger(0.0)
    feed(conn, b"x" * 69, 0.1, echo_call)
    assert conn.interest() == READ
    with caplog.at_level(logging.INFO, logger="framewire.server"):
        feed(conn, b"x", 0.2, echo_call)
    assert conn.finished
    assert caplog.messages == ["connection from test: over 100 bytes sent after its error answer: closing"]


def test_without_a_half_close_the_lingering_also_ends_when_the_peer_goes_quiet() -> None:
    conn = errored(linger_time=2.0)
    conn.linger(10.0, half_closed=False)
    assert conn.deadline == 10.0 + limits.LINGER_QUIET
    feed(conn, b"x" * 10, 10.1, echo_call)  # still sending: the quiet time starts again
    conn.timer(10.0 + limits.LINGER_QUIET)
    assert conn.interest() == READ and conn.deadline == 10.1 + limits.LINGER_QUIET
    conn.timer(10.1 + limits.LINGER_QUIET)
    assert conn.finished
    busy = errored(linger_time=0.5)
    busy.linger(0.0, half_closed=False)
    for i in range(1, 6):
        feed(busy, b"x", i / 10, echo_call)  # never quiet: the whole time still bounds it
    busy.timer(0.5)
    assert busy.finished


def test_a_message_deadline_answer_lingers_too() -> None:
    conn = engine(message_timeout=5)
    feed(conn, req(b"abc")[:-1], 0.0, echo_call)
    conn.timer(5.0)
    assert codes(sent_messages(conn)) == ["timeout"]
    assert conn.interest() == LINGER


@pytest.mark.parametrize(
    ("settings", "data"),
    [
        pytest.param({"linger_time": 0}, BAD_HEADER, id="turned-off"),
        pytest.param({}, req(b"abc")[:-1], id="incomplete-at-the-peer-s-end"),
    ],
)
def test_no_lingering_when_off_or_when_the_peer_has_closed_its_side(settings: Any, data: bytes) -> None:
    conn = engine(**settings)
    feed(conn, data, 0.0, echo_call)
    feed(conn, b"", 0.0, echo_call)
    assert len(sent_messages(conn)) == 1
    assert conn.interest() == CLOSE


def test_a_lost_connection_does_not_linger() -> None:
    conn = errored()
    conn.linger(0.0)
    conn.connection_lost()
    assert conn.finished


# -- what a handler may do ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        (RuntimeError("boom"), "handler-error"),
        (BadContent("not json"), "bad-content"),
        (BadHeader("a framing code from a handler"), "handler-error"),
        ("not a message", "handler-error"),
        (None, "handler-error"),
        (Message(b"x", "text/plain", "zlib"), "handler-error"),
        (Message.from_bytes(b"", extensions={"big": "x" * 70000}), "handler-error"),
    ],
)
def test_whatever_the_handler_does_the_answer_is_a_valid_message(outcome: object, code: str) -> None:
    def call(conn: ServerConnection, request: Message) -> object:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    conn = engine()
    feed(conn, req(b"x"), 0.0, call)
    assert codes(sent_messages(conn)) == [code]
    assert conn.phase < Phase.CLOSING  # content errors keep the connection
    # The same outcome arriving later (a thread, a coroutine) is answered the same way.
    later = Later()
    feed(conn, req(b"y"), 1.0, later)
    conn.fulfil(later.slots[0][0], outcome, 1.0)  # whatever a handler returns
    assert codes(sent_messages(conn)) == [code]


# -- backpressure -----------------------------------------------------------------------------


def test_flow_control_has_hysteresis() -> None:
    flow = FlowControl(high=1000, low=500, max_owed=100)
    assert not flow.update(1000, 1)  # at the mark: still reading
    assert flow.update(1001, 1)  # above it: paused
    assert flow.update(800, 1)  # between the marks: stays paused
    assert flow.update(501, 1)
    assert not flow.update(500, 1)  # at the low-water mark: reading again
    assert not flow.update(800, 1)  # and between the marks it stays reading
    assert flow.update(0, 100)  # too many answers owed pauses whatever the bytes


def test_a_peer_that_does_not_read_its_answers_is_not_read() -> None:
    conn = engine(high_water=10_000)
    big = req(b"z" * 3000)
    for _ in range(3):
        feed(conn, big, 0.0, echo_call)
        assert reading(conn)
    feed(conn, big, 0.0, echo_call)  # 4 answers of ~3 KB: above 10 KB
    assert not reading(conn)
    conn.flushed(conn.out.size - 6000, 1.0)  # below high water, above low water (5000)
    assert not reading(conn)
    conn.flushed(conn.out.size - 5000, 1.0)
    assert reading(conn)


def test_answers_owed_to_handlers_count_toward_the_in_flight_limit() -> None:
    conn = engine(max_in_flight=3)
    later = Later()
    feed(conn, encode_many([Message.from_bytes(b"x")] * 2), 0.0, later)
    assert reading(conn)
    feed(conn, req(b"x"), 0.0, later)
    assert not reading(conn)
    for slot, _ in later.slots:
        conn.fulfil(slot, Message.from_bytes(b"done"), 1.0)
    sent_messages(conn)
    assert reading(conn)


# -- time ------------------------------------------------------------------------------------------


def test_the_message_deadline_is_absolute_from_the_first_byte() -> None:
    conn = engine(message_timeout=30)
    whole = req(b"abcdef")
    for i in range(len(whole) - 1):
        feed(conn, whole[i : i + 1], float(i), echo_call)  # one byte a second
    assert conn.deadline == 30.0
    conn.timer(29.9)
    assert conn.phase < Phase.CLOSING
    conn.timer(30.0)
    assert conn.phase >= Phase.CLOSING and codes(sent_messages(conn)) == ["timeout"]


@pytest.mark.parametrize(
    "tail", [b"\x00", struct.pack(">H", 80), req(b"abc")[:-1]], ids=["1-byte", "length", "header"]
)
def test_the_deadline_starts_after_whole_requests_whatever_the_read_ended_on(tail: bytes) -> None:
    conn = engine(message_timeout=5)
    feed(conn, req(b"one") + tail, 100.0, echo_call)
    assert conn.deadline == 105.0
    sent_messages(conn)
    conn.timer(105.0)
    assert codes(sent_messages(conn)) == ["timeout"]


def test_complete_requests_restart_the_deadline_of_a_healthy_pipelined_stream() -> None:
    conn = engine(message_timeout=5)
    stream = encode_many([Message.from_bytes(b"m" * 100)] * 50)
    step = 170  # reads that end mid-message every time, one every 4 s
    for i, start in enumerate(range(0, len(stream), step)):
        feed(conn, stream[start : start + step], 4.0 * i, echo_call)
        conn.timer(4.0 * i)
        assert conn.phase < Phase.CLOSING, i
    assert len(sent_messages(conn)) == 50


def test_idle_closes_without_an_answer_but_not_while_a_handler_works() -> None:
    conn = engine(idle_timeout=10)
    feed(conn, req(b"a"), 0.0, echo_call)
    sent_messages(conn, 0.0)
    assert conn.deadline == 10.0
    later = Later()
    feed(conn, req(b"slow"), 5.0, later)
    assert conn.deadline is None  # the peer is waiting for us: not idle
    conn.timer(100.0)
    assert not conn.finished
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"done"), 100.0)
    sent_messages(conn, 100.0)
    assert conn.deadline == 110.0
    conn.timer(110.0)
    assert conn.finished and not conn.out


# -- ends ---------------------------------------------------------------------------------------------


def test_half_close_answers_everything_then_finishes() -> None:
    conn = engine()
    later = Later()
    feed(conn, req(b"a"), 0.0, later)
    feed(conn, b"", 0.0, later)
    assert conn.phase >= Phase.CLOSING and not conn.finished
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"a!"), 1.0)
    assert not conn.finished  # still to send
    sent_messages(conn)
    assert conn.finished


def test_end_of_stream_mid_message_is_incomplete_message() -> None:
    conn = engine()
    feed(conn, req(b"abc")[:-1], 0.0, echo_call)
    feed(conn, b"", 0.0, echo_call)
    assert codes(sent_messages(conn)) == ["incomplete-message"]
    assert conn.finished


def test_draining_waits_for_what_is_owed_and_half_received() -> None:
    conn = engine()
    later = Later()
    feed(conn, req(b"a") + req(b"b")[:5], 0.0, later)
    conn.drain()
    assert not conn.finished  # an answer owed and a message half-received
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"a!"), 1.0)
    sent_messages(conn)
    assert not conn.finished
    feed(conn, req(b"b")[5:], 1.0, echo_call)
    sent_messages(conn)
    assert conn.finished


def test_a_late_answer_for_a_lost_connection_is_dropped() -> None:
    conn = engine()
    later = Later()
    feed(conn, req(b"a"), 0.0, later)
    conn.connection_lost()
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"late"), 1.0)
    assert not conn.out and conn.finished


def test_a_lost_connection_lets_go_of_the_drivers_record() -> None:
    # The record refers to the engine: kept, the two would make a cycle that
    # only the cycle collector frees.
    conn = engine()
    conn.driver = record = object()
    assert conn.driver is record
    conn.connection_lost()
    assert conn.driver is None


def test_a_tls_handshake_must_end_within_the_message_deadline() -> None:
    conn = ServerConnection(ServerConfig(message_timeout=2.0, idle_timeout=30.0), now=10.0, handshaking=True)
    assert conn.deadline == 12.0  # from the accept, not from a first byte
    conn.timer(11.9)
    assert not conn.closed
    conn.timer(12.0)
    assert conn.closed and conn.finished and not conn.out  # closed without an answer: no channel yet


def test_a_secured_connection_is_idle_from_the_handshake_and_knows_its_peer() -> None:
    config = ServerConfig(message_timeout=2.0, idle_timeout=30.0)
    conn = ServerConnection(config, 10.0, "p:1", handshaking=True)
    conn.secured(11.0, "TLSv1.3", {"commonName": "alice"})
    assert not conn.handshaking and conn.deadline == 41.0
    conn.timer(12.5)  # the handshake deadline has passed, but the handshake is done
    assert not conn.closed
    peer = conn.peer_info()
    assert (peer.address, peer.tls, peer.common_name) == ("p:1", "TLSv1.3", "alice")
    assert engine().peer_info().tls is None and engine().peer_info().certificate is None


def test_a_stopping_server_waits_a_moment_for_a_fresh_connection_s_first_request() -> None:
    conn = engine()
    conn.bind(lambda request: request)
    conn.drain(10.0)
    assert conn.interest() & READ and conn.deadline == 11.0  # a client that just connected
    conn.receive(req(b"first"), 10.5)
    assert [m.content for m in sent_messages(conn)] == [b"first"]
    assert conn.finished  # answered, then closed

    silent = engine()
    silent.drain(10.0)
    silent.drain(10.9)
    assert not silent.finished
    silent.drain(11.0)
    assert silent.finished
    timed = engine()
    timed.drain(10.0)
    timed.timer(11.0)
    assert timed.finished

    # A kept-open connection, idle between requests, gets the same moment:
    # its client may have sent just before the stop reached it (issue 37).
    kept = engine()
    kept.bind(lambda request: request)
    kept.receive(req(b"one"), 0.0)
    sent_messages(kept)
    kept.drain(10.0)
    assert not kept.finished and kept.deadline == 11.0
    kept.receive(req(b"on its way"), 10.05)
    assert [m.content for m in sent_messages(kept)] == [b"on its way"]
    assert kept.finished

    owing = engine()
    owing.bind(lambda request: request)
    owing.receive(req(b"owed"), 0.0)
    owing.drain(10.0)
    assert owing.phase is Phase.DRAINING  # an answer owed: it goes out, then the close


def test_a_request_whose_deadline_has_passed_is_answered_timeout_without_its_handler() -> None:
    conn = engine()
    ran: list[bytes] = []

    def call(conn: ServerConnection, request: Message) -> object:
        ran.append(request.content)
        return Message.from_bytes(request.content)

    late = Message.from_bytes(b"late", extensions={"framewire-deadline": 0, "framewire-id": 7})
    fine = Message.from_bytes(b"fine", extensions={"framewire-deadline": 5000})
    odd = Message.from_bytes(b"odd", extensions={"framewire-deadline": "soon"})  # not a number: ignored
    huge = Message.from_bytes(b"huge", extensions={"framewire-deadline": 10**400})  # beyond a float: none
    feed(conn, encode_many([late, fine, odd, huge]), 0.0, call)
    answers = sent_messages(conn)
    assert codes(answers) == ["timeout", None, None, None]
    assert answers[0].get("framewire-id") == 7  # the id still comes back
    assert ran == [b"fine", b"odd", b"huge"]
    assert conn.phase < Phase.CLOSING  # a content error: the framing is intact, the connection kept


def test_losing_the_peer_cancels_the_work_still_under_way() -> None:
    conn = engine()
    later = Later()
    feed(conn, req(b"a") + req(b"b"), 0.0, later)
    cancelled: list[int] = []
    for number, (slot, _) in enumerate(later.slots):
        slot.cancel = functools.partial(cancelled.append, number)
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"a"), 0.1)  # done: nothing to cancel
    conn.connection_lost()
    assert cancelled == [1]
    conn.fulfil(later.slots[1][0], Message.from_bytes(b"b"), 0.2)  # late: dropped
    assert not conn.out


# -- the PROXY protocol header, sans I/O ------------------------------------------------------


def test_a_proxy_header_names_the_peer_then_the_requests_are_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = engine(proxy_protocol=True)
    conn.peer = "127.0.0.1:40000"
    assert conn.phase is Phase.PROXY and conn.deadline == 30.0  # the header too must come within the deadline
    line = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n"
    with caplog.at_level("DEBUG", logger="framewire.server"):
        feed(conn, line[:10], 0.0, echo_call)  # split anywhere
        assert conn.phase is Phase.PROXY and conn.peer == "127.0.0.1:40000"
        feed(conn, line[10:] + req(b"hi"), 0.1, echo_call)
    assert conn.phase is not Phase.PROXY and conn.message_started is None
    assert conn.peer == "203.0.113.7:51000" and conn.peer_info().address == "203.0.113.7:51000"
    assert [m.content for m in sent_messages(conn)] == [b"hi"]
    assert "connection from 203.0.113.7:51000 opened, through 127.0.0.1:40000 (PROXY v1)" in caplog.messages


def test_a_bad_or_missing_proxy_header_closes_without_an_answer(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="framewire.server"):
        bad = engine(proxy_protocol=True)
        feed(bad, b"GET / HTTP/1.1\r\n\r\n", 0.0, echo_call)
        assert bad.closed and not bad.out and bad.finished
        cut = engine(proxy_protocol=True)
        feed(cut, b"PROXY TCP4 1.2.3.4", 0.0, echo_call)
        feed(cut, b"", 0.1, echo_call)
        assert cut.closed and not cut.out
        slow = engine(proxy_protocol=True, message_timeout=2)
        feed(slow, b"PROXY TCP4 ", 0.0, echo_call)
        slow.timer(1.9)
        assert not slow.closed
        slow.timer(2.0)
        assert slow.closed and not slow.out
    assert "connection from test closed before its PROXY header: closing" in caplog.messages
    assert (
        "connection from test: no complete PROXY header 2 s after the connection opened: closing"
        in caplog.messages
    )


def test_a_balancer_health_check_is_quiet() -> None:
    from framewire.core.proxyheader import build_v2

    conn = engine(proxy_protocol=True)
    local = build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))
    local = local[:12] + bytes([0x20]) + local[13:]  # version 2, command LOCAL: no client
    feed(conn, local, 0.0, echo_call)
    assert conn.quiet and conn.phase is not Phase.PROXY and conn.peer == "test"


def test_the_deadlines_say_what_ran_out(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="framewire.server"):
        tls = ServerConnection(ServerConfig(message_timeout=3), now=0.0, peer="test", handshaking=True)
        tls.timer(2.9)
        assert not tls.closed
        tls.timer(3.0)
        assert tls.closed
        slow = engine(message_timeout=3)
        feed(slow, req(b"x")[:4], 0.0, echo_call)
        slow.timer(3.0)
        assert codes(sent_messages(slow, 3.0)) == ["timeout"] and slow.phase >= Phase.CLOSING
        idle = engine(idle_timeout=5)
        idle.timer(4.9)
        assert not idle.closed
        idle.timer(5.0)
        assert idle.closed
    assert caplog.messages == [
        "connection from test: TLS handshake not done 3 s after the connection opened: closing",
        "connection from test: timeout: The message was not complete 3 s after its first byte.",
        "connection from test idle for 5 s: closing",
    ]


# -- the rest of the engine's edges ------------------------------------------------------------


def test_the_flow_watcher_hears_each_pause_and_resume_once() -> None:
    heard: list[int] = []
    flow = FlowControl(high=1000, low=500, max_owed=100)
    flow.watch = heard.append
    flow.update(2000, 1)
    flow.update(3000, 1)  # still paused: nothing new to say
    flow.update(0, 0)
    flow.update(0, 0)
    assert heard == [1, -1]


def test_a_paused_connection_whose_answers_all_went_resumes_for_the_watcher() -> None:
    heard: list[int] = []
    conn = engine(high_water=100)
    conn.flow.watch = heard.append
    feed(conn, req(b"z" * 300), 0.0, echo_call)
    assert not reading(conn) and heard == [1]
    sent_messages(conn)
    assert conn.interest() == READ
    assert heard == [1, -1]  # the metrics' paused gauge goes back down


def test_the_connection_asks_to_write_only_while_it_has_bytes_queued() -> None:
    conn = engine()
    assert conn.interest() == READ
    feed(conn, req(b"x"), 0.0, echo_call)
    assert conn.interest() == READ | WRITE
    sent_messages(conn)
    assert conn.interest() == READ


def test_a_connection_beyond_the_limit_is_told_why_and_lingers_like_an_error_answer() -> None:
    conn = engine()
    dispatcher = Dispatcher(echo, threads=0, max_queued=1, wake=lambda: None)
    conn.refuse(ServerState(ServerConfig(max_connections=7), dispatcher).busy_error)
    feed(conn, req(b"the request it sent at once"), 0.0, echo_call)  # dropped, never answered
    (answer,) = sent_messages(conn)
    error = answer.error()
    assert error is not None and error.code == "server-busy"
    assert error.message == "The server is at its limit of 7 connections; try again later."
    assert conn.errors == 1 and conn.requests == 0 and conn.quiet
    assert conn.interest() == LINGER
    conn.linger(1.0)
    conn.timer(1.0 + ServerConfig().linger_time)
    assert conn.finished


def test_a_deadline_of_one_millisecond_still_runs_its_handler() -> None:
    conn = engine()
    feed(conn, encode(Message.from_bytes(b"x", extensions={"framewire-deadline": 1})), 0.0, echo_call)
    assert codes(sent_messages(conn)) == [None]


def test_an_engine_without_a_handler_answers_handler_error() -> None:
    conn = ServerConnection(ServerConfig(), now=0.0)
    assert conn.peer == "-"
    conn.receive(req(b"x"), 0.0)
    assert codes(sent_messages(conn)) == ["handler-error"]


def test_the_engine_s_decoder_has_the_configured_limits() -> None:
    conn = ServerConnection(ServerConfig(max_header_size=200, max_content_length=10), 0.0)
    feed(conn, req(b"x"), 0.0, echo_call)
    feed(conn, req(b"y" * 11), 0.0, echo_call)
    assert codes(sent_messages(conn)) == [None, "content-too-large"]
    other = ServerConnection(ServerConfig(max_header_size=20), 0.0)
    other.receive(req(b"x"), 0.0)
    assert codes(sent_messages(other)) == ["header-too-large"]


def test_a_secured_connection_s_debug_line_names_its_tls_and_certificate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = ServerState(ServerConfig(), Dispatcher(echo, threads=0, max_queued=1, wake=lambda: None))
    with caplog.at_level("INFO", logger="framewire.server"):
        server.secured(ServerConnection(ServerConfig(), 0.0, "p:1", handshaking=True), 0.5, "TLSv1.3", None)
    assert caplog.messages == []  # at INFO: nothing (the summary counts it)
    with caplog.at_level("DEBUG", logger="framewire.server"):
        conn = ServerConnection(ServerConfig(), 0.0, "p:1", handshaking=True)
        server.secured(conn, 0.5, "TLSv1.3", {"commonName": "alice"})
        plain = ServerConnection(ServerConfig(), 0.0, "q:2", handshaking=True)
        server.secured(plain, 0.5, "TLSv1.2", None)
    assert caplog.messages == [
        "connection from p:1 opened, TLSv1.3, client certificate alice",
        "connection from q:2 opened, TLSv1.2",
    ]


# -- what the operator reads, and what the metrics count ---------------------------------------


class CountingMetrics:
    """The engine's side of the metrics: the calls it measures, the codes it counts."""

    def __init__(self) -> None:
        self.measured_calls = 0
        self.codes: list[str] = []

    def measured(self, call: Any) -> Any:
        def counted(request: Message) -> object:
            self.measured_calls += 1
            return call(request)

        return counted

    def error(self, code: str) -> None:
        self.codes.append(code)


@pytest.mark.parametrize(
    ("outcome", "what"),
    [
        (RuntimeError("boom"), "raised RuntimeError"),
        ("not a message", "returned str, not a Message"),
        (None, "returned NoneType, not a Message"),
    ],
)
def test_a_failing_handler_is_logged_with_its_traceback_and_answered_in_words(
    outcome: object, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    def call(conn: ServerConnection, request: Message) -> object:
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    conn = engine()
    with caplog.at_level("ERROR", logger="framewire.server"):
        feed(conn, req(b"x"), 0.0, call)
    (answer,) = sent_messages(conn)
    assert answer.json()["error"] == {
        "code": "handler-error",
        "message": f"The application's handler {what}.",
    }
    (record,) = caplog.records
    assert record.getMessage() == f"handler {what} on a request from test"
    assert (record.exc_info[1] if record.exc_info else None) is (
        outcome if isinstance(outcome, Exception) else None
    )


def test_an_answer_that_cannot_be_sent_is_logged_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    conn = engine()
    with caplog.at_level("ERROR", logger="framewire.server"):
        # Both names are cut at 60 characters: a handler's strings must not
        # flood the log.
        answer = Message(b"x", "text/" + "t" * 70, "zlib" + "z" * 70)
        feed(conn, req(b"x"), 0.0, lambda conn, request: answer)
    (record,) = caplog.records
    reason = f"A text/{'t' * 55} message needs a text encoding, not 'zlib{'z' * 56}'."
    assert record.getMessage().startswith(f"handler returned a message that cannot be sent ({reason})")
    assert codes(sent_messages(conn)) == ["handler-error"]


def test_a_framing_code_raised_by_a_handler_is_named_in_the_answer() -> None:
    conn = engine()

    def call(conn: ServerConnection, request: Message) -> object:
        raise BadHeader("not the handler's to say")

    feed(conn, req(b"x"), 0.0, call)
    (answer,) = sent_messages(conn)
    assert answer.json()["error"] == {
        "code": "handler-error",
        "message": "The handler raised bad-header on a well-framed request.",
    }


def test_error_responses_are_counted_by_code_and_requests_measured() -> None:
    conn = engine(message_timeout=3)
    metrics = CountingMetrics()
    conn._answers.metrics = metrics  # type: ignore[assignment]  # the engine's side of Metrics

    def call(conn: ServerConnection, request: Message) -> object:
        if request.content == b"boom":
            raise RuntimeError("boom")
        if request.content == b"text":
            raise BadContent("not JSON")
        return Message.from_bytes(request.content)

    feed(conn, req(b"ok") + req(b"boom"), 0.0, call)
    feed(conn, req(b"text"), 1.0, call)
    feed(conn, req(b"x")[:4], 2.0, call)  # the start of a message that never ends
    conn.timer(5.0)
    assert metrics.measured_calls == 3 and conn.requests == 3
    assert metrics.codes == ["handler-error", "bad-content", "timeout"] and conn.errors == 3
    framing = engine()
    counted = CountingMetrics()
    framing._answers.metrics = counted  # type: ignore[assignment]
    feed(framing, b"\x00\x00", 0.0, echo_call)
    assert counted.codes == ["bad-header-length"] and framing.errors == 1


def test_a_protocol_error_is_logged_with_the_peer_and_the_error(caplog: pytest.LogCaptureFixture) -> None:
    conn = engine()
    with caplog.at_level("INFO", logger="framewire.server"):
        feed(conn, b"\x00\x00", 0.0, echo_call)
    (line,) = caplog.messages
    assert line.startswith("protocol error from test: bad-header-length: ")


def test_an_expired_request_is_answered_in_words() -> None:
    conn = engine()
    late = Message.from_bytes(b"x", extensions={"framewire-deadline": 0})
    feed(conn, encode(late), 0.0, echo_call)
    (answer,) = sent_messages(conn)
    assert answer.json()["error"] == {
        "code": "timeout",
        "message": "The request's deadline had passed when it arrived.",
    }


def test_the_proxy_header_s_refusals_and_health_checks_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    from framewire.core.proxyheader import build_v2

    with caplog.at_level("DEBUG", logger="framewire.server"):
        bad = engine(proxy_protocol=True)
        feed(bad, b"GET / HTTP/1.1\r\n\r\n", 0.0, echo_call)
        local = build_v2(("1.2.3.4", 1), ("5.6.7.8", 2))
        check = engine(proxy_protocol=True)
        feed(check, local[:12] + bytes([0x20]) + local[13:], 0.0, echo_call)
        too_long = engine(proxy_protocol=True)
        feed(too_long, b"PROXY TCP4 " + b"1" * 200, 0.0, echo_call)
    first, health, long = caplog.messages
    assert first.startswith("connection from test: ") and first.endswith(": closing") and "PROXY" in first
    assert health == "connection from test opened (PROXY v2, no client: a health check)"
    assert long.startswith("connection from test: ") and too_long.closed


def test_a_drain_deadline_is_kept_to_the_instant() -> None:
    timed = engine()
    timed.drain(10.0)
    timed.timer(10.99)
    assert not timed.finished and timed.phase is not Phase.DRAINING
    timed.timer(11.0)
    assert timed.finished and timed.phase is Phase.DRAINING
    timed.timer(12.0)
    assert timed.phase is Phase.DRAINING  # stays so
    queued = engine()
    queued.bind(lambda request: request)
    queued.receive(req(b"one"), 0.0)  # answered, not yet sent
    queued.drain(10.0)
    assert queued.phase is Phase.DRAINING and not queued.finished
    sent_messages(queued)
    assert queued.finished


def test_the_call_given_to_the_engine_answers_and_without_one_the_log_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    given = ServerConnection(ServerConfig(), now=0.0)
    given.bind(lambda request: Message.from_bytes(b"given"))
    given.receive(req(b"x"), 0.0)
    assert [m.content for m in sent_messages(given)] == [b"given"]
    with caplog.at_level("ERROR", logger="framewire.server"):
        bare = ServerConnection(ServerConfig(), now=0.0)
        bare.receive(req(b"x"), 0.0)
    (record,) = caplog.records
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "this connection has no handler (ServerConnection.bind)"


def test_a_subclass_of_message_is_an_answer_like_any() -> None:
    class Reply(Message):
        pass

    conn = engine()
    feed(conn, req(b"x"), 0.0, lambda conn, request: Reply(b"sub", "binary/octet-stream", "binary"))
    assert [m.content for m in sent_messages(conn)] == [b"sub"]


def test_a_connection_waiting_on_its_handler_asks_only_to_read() -> None:
    conn = engine()
    later = Later()
    feed(conn, req(b"x"), 0.0, later)
    assert conn.interest() == READ  # nothing queued: no write interest to spin on


def test_the_idle_clock_restarts_when_an_answer_is_given_or_a_timeout_sent() -> None:
    conn = engine(idle_timeout=10)
    later = Later()
    feed(conn, req(b"x"), 0.0, later)
    conn.fulfil(later.slots[0][0], Message.from_bytes(b"done"), 5.0)
    sent_messages(conn, 5.0)
    assert conn.deadline == 15.0
    slow = engine(message_timeout=3, idle_timeout=10)
    feed(slow, req(b"y")[:4], 0.0, echo_call)
    slow.timer(3.0)
    assert slow.deadline == 13.0
    assert codes(sent_messages(slow, 3.0)) == ["timeout"] and slow.phase >= Phase.CLOSING


def test_a_response_shape_cached_by_one_connection_is_sent_right_by_another() -> None:
    first, second = engine(), engine()
    one, two = Message.from_bytes(b"ok"), Message.from_bytes(b"ok")
    feed(first, req(b"a") + req(b"b"), 0.0, lambda conn, request: one if request.content == b"a" else two)
    feed(second, req(b"c"), 0.0, lambda conn, request: two)
    assert [m.content for m in sent_messages(first) + sent_messages(second)] == [b"ok"] * 3


# -- large contents read in place ---------------------------------------------------


def into(conn: ServerConnection, data: bytes, now: float) -> None:
    """``data`` read into the buffer the engine offers, as a driver would."""
    view = conn.read_buffer()
    assert view is not None and len(view) >= len(data)
    view[: len(data)] = data
    conn.bind(functools.partial(echo_call, conn))
    conn.received_into(len(data), now)


def test_large_contents_share_the_server_s_budget_and_give_it_back() -> None:
    config = ServerConfig(large_content=100, large_content_memory=2000)
    budget = ContentBudget(config.large_content_memory)
    first = ServerConnection(config, 0.0, "first", budget=budget)
    second = ServerConnection(config, 0.0, "second", budget=budget)
    big, other = req(b"b" * 1500), req(b"o" * 1000)
    start = len(big) - 1500 + 10
    feed(first, big[:start], 0.0, echo_call)
    assert first.read_buffer() is not None and budget.available == 500
    feed(second, other[:start], 0.0, echo_call)
    assert second.read_buffer() is None  # no room: read in chunks, answered all the same
    feed(second, other[start:], 0.0, echo_call)
    assert [m.content for m in sent_messages(second)] == [b"o" * 1000]
    into(first, big[start:-100], 1.0)
    assert budget.available == 500 and not first.out
    into(first, big[-100:], 2.0)
    assert budget.available == 2000
    assert first.last_active == 2.0 and first.phase < Phase.CLOSING
    assert [m.content for m in sent_messages(first)] == [b"b" * 1500]
    feed(first, big[:start], 3.0, echo_call)  # the next large content: in place again
    assert first.read_buffer() is not None and budget.available == 500
    into(first, big[start:], 4.0)
    assert budget.available == 2000 and [m.content for m in sent_messages(first)] == [b"b" * 1500]
    feed(first, req(b"s" * 99)[:-50], 5.0, echo_call)
    assert first.read_buffer() is None  # 50 bytes to come: under large_content


def test_the_read_after_a_large_content_is_small_then_the_usual_size() -> None:
    # So that the next large content is read in place nearly from its first
    # byte, instead of its first RECV_SIZE bytes being copied into its buffer.
    conn = engine(large_content=100)
    big = req(b"b" * 1500)
    assert conn.read_size == limits.RECV_SIZE
    feed(conn, big[:-1400], 0.0, echo_call)
    into(conn, big[-1400:-700], 1.0)
    assert conn.read_size == limits.RECV_SIZE  # not complete yet
    into(conn, big[-700:], 2.0)
    assert conn.read_size == limits.READ_AFTER_LARGE < limits.RECV_SIZE
    feed(conn, req(b"small"), 3.0, echo_call)
    assert conn.read_size == limits.RECV_SIZE
    assert [m.content for m in sent_messages(conn)] == [b"b" * 1500, b"small"]


def test_the_driver_reads_again_while_a_message_comes_in_fast() -> None:
    # The read policy of one poller turn (what the epoll driver asks after each read).
    on, turn = limits.READ_ON, limits.READ_TURN
    conn = engine(large_content=100)
    assert not conn.read_again(10, limits.RECV_SIZE, 10)  # a short read: the kernel had no more
    assert not conn.read_again(0, limits.RECV_SIZE, 0)  # the peer half-closed
    big = req(b"b" * 3000)
    feed(conn, big[:-2000], 0.0, echo_call)  # in the middle of a content, nothing owed
    assert conn.read_again(2048, 2048, 2048)  # all it asked for: there is likely more
    assert conn.read_again(on, 2 * on, on)  # a long read, if short of the buffer
    assert not conn.read_again(on - 1, 2 * on, on - 1)
    assert conn.read_again(on, on, turn - 1)
    assert not conn.read_again(on, on, turn)  # the turn's bytes are spent: the others' turn
    into(conn, big[-2000:], 1.0)  # complete: an answer is owed, and goes out first
    assert conn.owed and not conn.read_again(on, on, on)
    bad = engine()
    feed(bad, b"\x00\x05{bad}" + b"x" * 100, 0.0, echo_call)  # an error answer, then the close
    bad.flushed(bad.out.size, 1.0)
    assert bad.phase >= Phase.CLOSING and not bad.owed and not bad.read_again(on, on, on)


def test_an_engine_made_alone_has_a_budget_of_its_own() -> None:
    conn = engine(large_content=100, large_content_memory=3000)
    feed(conn, req(b"x" * 2000)[:-1500], 0.0, echo_call)
    assert conn.read_buffer() is not None
    assert conn._budget.available == 1000


@pytest.mark.parametrize("how", ["timeout", "lost", "half-close"])
def test_a_content_that_never_ends_gives_its_memory_back(how: str) -> None:
    config = ServerConfig(large_content=100, message_timeout=5)
    budget = ContentBudget(10_000)
    conn = ServerConnection(config, 0.0, "test", budget=budget)
    feed(conn, req(b"x" * 5000)[:-4000], 0.0, echo_call)
    into(conn, b"x" * 1000, 1.0)
    assert budget.available == 5000
    if how == "timeout":
        conn.timer(5.0)
        assert codes(sent_messages(conn)) == ["timeout"]
    elif how == "lost":
        conn.connection_lost()
        assert conn.finished
    else:
        conn.received_into(0, 2.0)
        assert codes(sent_messages(conn)) == ["incomplete-message"] and conn.finished
    assert budget.available == 10_000 and conn.read_buffer() is None


def test_large_content_0_reads_every_content_in_chunks() -> None:
    conn = engine(large_content=0)
    feed(conn, req(b"x" * 500_000)[:-400_000], 0.0, echo_call)
    assert conn.read_buffer() is None


def test_a_lost_connection_is_logged_at_info_only_when_the_loss_cost_something(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="framewire")
    clean = engine()
    feed(clean, req(b"done"), 0.0, echo_call)
    sent_messages(clean)
    owing, one, partial, both = engine(), engine(), engine(), engine()
    feed(owing, req(b"a") + req(b"b"), 0.0, echo_call)
    feed(one, req(b"a"), 0.0, echo_call)
    feed(partial, req(b"abc")[:-1], 0.0, echo_call)
    feed(both, req(b"a") + req(b"abc")[:-1], 0.0, echo_call)
    server = ServerState(ServerConfig(), Dispatcher(echo, threads=0, max_queued=1, wake=lambda: None))
    for conn in (clean, owing, one, partial, both):
        server.open += 1  # (made here, not admitted: counted as the server would)
        server.closed(conn, "Connection reset by peer")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "lost" in r.getMessage()]
    lost = "connection from test lost: Connection reset by peer"
    assert lines == [
        (logging.DEBUG, lost),
        (logging.INFO, f"{lost} (2 answers not sent)"),
        (logging.INFO, f"{lost} (1 answer not sent)"),
        (logging.INFO, f"{lost} (a message half received)"),
        (logging.INFO, f"{lost} (1 answer not sent, a message half received)"),
    ]


def test_later_names_itself() -> None:
    assert repr(LATER) == "LATER"  # what a log line or a debugger shows of a deferred answer
