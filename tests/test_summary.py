"""The server's periodic INFO summary (connections, requests and errors per
interval) that replaces a line per connection: its policy on a fake clock,
then what both drivers log."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator

import pytest

from conftest import connect, read_messages, running
from framewire import Message
from framewire.core.decoder import encode
from framewire.server.summary import Summary


def _line(summary: Summary, now: float, last: bool = False, /, **totals: int) -> str | None:
    # The totals not given are 0.
    return summary.line(
        now,
        connections=totals.get("connections", 0),
        open_now=totals.get("open_now", 0),
        requests=totals.get("requests", 0),
        errors=totals.get("errors", 0),
        last=last,
    )


def test_a_line_is_due_each_interval_and_only_when_something_happened() -> None:
    summary = Summary(10.0, now=100.0)
    assert summary.next_at == 110.0
    assert summary.line(109.9, connections=3, open_now=1, requests=7, errors=0) is None  # not yet
    assert summary.line(110.0, connections=3, open_now=1, requests=7, errors=1) == (
        "last 10.0 s: 3 connections opened, 2 closed, 7 requests, 1 error responses; 1 open"
    )
    assert summary.next_at == 120.0
    # Only what changed since the last line counts; nothing changed: no line.
    assert summary.line(120.0, connections=3, open_now=1, requests=7, errors=1) is None
    assert summary.next_at == 130.0
    assert summary.line(131.0, connections=1003, open_now=0, requests=2007, errors=1) == (
        "last 11.0 s: 1,000 connections opened, 1,001 closed, 2,000 requests, 0 error responses; 0 open"
    )
    assert summary.next_at == 141.0


def test_each_kind_of_activity_alone_is_worth_a_line() -> None:
    changes: list[dict[str, int]] = [{"connections": 1, "open_now": 1}, {"requests": 1}, {"errors": 1}]
    for change in changes:
        summary = Summary(1.0, now=0.0)
        assert _line(summary, 1.0, **change) is not None, change
    closed_only = Summary(1.0, now=0.0)
    assert _line(closed_only, 1.0, connections=1, open_now=1) is not None
    line = _line(closed_only, 2.0, connections=1, open_now=0)
    assert line is not None and "0 connections opened, 1 closed" in line


def test_the_last_line_comes_at_the_stop_for_the_part_of_an_interval_passed() -> None:
    summary = Summary(10.0, now=0.0)
    assert _line(summary, 2.5, True, requests=4) == (
        "last 2.5 s: 0 connections opened, 0 closed, 4 requests, 0 error responses; 0 open"
    )
    off = Summary(0.0, now=0.0)  # 0: no summary at all, not even at the stop
    assert off.next_at == float("inf")
    assert _line(off, 1e9, requests=4) is None
    assert _line(off, 1e9, True, requests=4) is None


class Lines(logging.Handler):
    """The summary lines logged, and an event for the totals awaited."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno == logging.INFO and text.startswith("last "):
            with self.changed:
                self.lines.append(text)
                self.changed.notify_all()

    def total(self, what: str) -> int:
        found = [re.search(rf"([\d,]+) {what}", line) for line in self.lines]
        return sum(int(match.group(1).replace(",", "")) for match in found if match is not None)

    def wait_total(self, what: str, value: int, timeout: float = 10.0) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.total(what) >= value, timeout):
                pytest.fail(f"the summaries counted {self.total(what)} {what}, not {value}: {self.lines}")


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("framewire.server")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.usefixtures("driver")
def test_both_drivers_sum_up_connections_requests_and_errors(lines: Lines) -> None:
    with running(log_summary=0.05) as server:
        for _ in range(3):
            with connect(server.port) as sock:
                sock.sendall(encode(Message.from_bytes(b"a")) + encode(Message.from_bytes(b"b")))
                assert len(read_messages(sock, 2)) == 2
        lines.wait_total("requests", 6)  # said while serving, not only at the stop
        with connect(server.port) as sock:
            sock.sendall(b"\x00\x02{}")  # a header without the required keys
            (answer,) = read_messages(sock, 1)
            assert answer.is_error
        lines.wait_total("error responses", 1)
    assert lines.total("connections opened") == 4
    assert lines.total("closed") == 4
    assert lines.total("requests") == 6
    assert lines.total("error responses") == 1
    assert not [line for line in lines.lines if ": 0 connections opened, 0 closed, 0 requests, 0 " in line]


@pytest.mark.usefixtures("driver")
def test_connection_lines_are_at_debug_and_the_stop_sums_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "framewire.server")
    with running(log_summary=3600) as server, connect(server.port) as sock:
        sock.sendall(encode(Message.from_bytes(b"a")))
        read_messages(sock, 1)
    connection_lines = [r for r in caplog.records if r.getMessage().startswith("connection from")]
    assert any(" opened (1 open)" in r.getMessage() for r in connection_lines)
    assert {r.levelno for r in connection_lines} == {logging.DEBUG}
    # No line was due in the hour, so the stop says what happened.
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("last ")]
    assert len(summaries) == 1
    assert summaries[0].endswith(": 1 connections opened, 1 closed, 1 requests, 0 error responses; 0 open")


@pytest.mark.usefixtures("driver")
def test_a_server_nobody_used_logs_no_summary(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "framewire.server")
    with running(log_summary=0.01):
        pass
    assert not [r for r in caplog.records if r.getMessage().startswith("last ")]
