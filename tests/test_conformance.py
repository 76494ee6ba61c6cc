"""The conformance suite: framewire's servers pass it, the guide's server
passes its level, and deliberately broken servers fail it for the right
cases (a suite that cannot fail would prove nothing)."""

from __future__ import annotations

import contextlib
import json
import re
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli, running, tls
from framewire.core.decoder import Decoder
from framewire.core.errors import MessageTimeout, ProtocolError
from framewire.core.message import Message
from framewire.server.conformance_app import conformance_app
from framewire.tools.conformance import CASES, Target, run_suite
from framewire.tools.rules import RULES

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def failures(port: int, level: str = "strict", **settings: Any) -> set[str]:
    target = Target("127.0.0.1", port, app="echo", message_timeout=1.0, patience=2.0, **settings)
    return {r.case.name for r in run_suite(target, level) if r.outcome.status == "FAIL"}  # type: ignore[arg-type]


#: What the server under test is told, and the suite too (limits low
#: enough to reach, so their cases run).
_LIMITS = ["--max-connections", "4", "--idle-timeout", "2", "--max-header-size", "1024"]


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize(
    ("app", "asked", "summary"),
    [
        ("echo", [], "28 passed, 0 failed, 23 not applicable"),
        # framewire's extensions (ids, unordered, streams, cancel, describe, ping, deadlines), when asked for.
        ("echo", ["--extensions"], "35 passed, 0 failed, 16 not applicable"),
        # The default application (make serve's): the demo cases apply too.
        ("search", ["--extensions"], "37 passed, 0 failed, 14 not applicable"),
        # The conformance app, with limits low enough to reach: every case
        # but those of TLS and the PROXY protocol (below).
        ("conformance", ["--extensions", *_LIMITS], "46 passed, 0 failed, 5 not applicable"),
        # The broker: its framing cases publish (its actions are all it takes).
        ("pubsub", ["--extensions"], "36 passed, 0 failed, 15 not applicable"),
    ],
)
def test_framewire_serve_passes_every_case(spawn: Any, app: str, asked: list[str], summary: str) -> None:
    limits = [word for word in asked if word != "--extensions"]
    server = spawn("serve", "--app", app, "--port", "0", "--message-timeout", "1", *limits)
    port = server.wait_for(r"127\.0\.0\.1:(\d+)").group(1)
    result = run_cli(
        "conformance", "127.0.0.1", port, "--app", app, "--message-timeout", "1", *asked, timeout=60
    )
    assert result.returncode == 0, result.stdout
    assert result.stdout.rstrip().endswith(summary)


@pytest.mark.usefixtures("driver")
def test_framewire_s_server_passes_over_tls_unix_sockets_and_the_proxy_protocol(tmp_path: Path) -> None:
    authority = tls()
    ca = tmp_path / "ca.pem"
    authority.ca.cert_pem.write_to_path(str(ca))
    asked = ("--app", "conformance", "--extensions", "--message-timeout", "1")
    with running(conformance_app(), message_timeout=1.0, ssl_context=authority.server()) as server:
        result = run_cli(
            "conformance", "localhost", str(server.port), "--tls-ca", str(ca), *asked, timeout=60
        )
        assert result.returncode == 0, result.stdout
        assert "N/A   half-close" in result.stdout  # a TLS client cannot half-close
        assert "PASS  tls-framing" in result.stdout and "PASS  tls-handshake-stall" in result.stdout
    path = tmp_path / "fw.sock"
    with running(conformance_app(), message_timeout=1.0, host=f"unix:{path}") as server:
        result = run_cli("conformance", f"unix:{path}", *asked, timeout=60)
        assert result.returncode == 0, result.stdout
    with running(conformance_app(), message_timeout=1.0, proxy_protocol=True) as server:
        result = run_cli("conformance", "127.0.0.1", str(server.port), *asked, "--proxy-protocol", timeout=60)
        assert result.returncode == 0, result.stdout
        assert "PASS  proxy-header" in result.stdout and "PASS  proxy-missing" in result.stdout


# -- the rules --------------------------------------------------------------------------------


def test_every_rule_of_the_spec_is_numbered_there_and_has_a_case() -> None:
    text = (ROOT / "docs/protocol.md").read_text()
    marked = set(re.findall(r"\*\*§(\d+\.\d+)\*\*", text))
    assert marked == set(RULES)
    for number in RULES:
        assert any(number in case.rules for case in CASES), f"§{number} has no case"
    listed = run_cli("conformance", "127.0.0.1", "1", "--list", timeout=30)
    assert listed.returncode == 0 and "NONE" not in listed.stdout
    assert (
        "  §2.6   a key given twice keeps its last value\n         cases: duplicate-keys\n" in listed.stdout
    )


# -- the guide's server ---------------------------------------------------------------------

#: What the guide's server does not do at the strict level, found by running
#: the suite against the model of it (docs/conformance.md lists them).
GUIDE_GAPS = {
    "back-to-back",
    "keep-alive",
    "pipelining-order",
    "half-close",
    "bad-header-length",
    "bad-header",
    "missing-header-key",
    "bad-header-value",
    "incomplete-message",
    "error-while-sending",
    "huge-content-length",
    "trickle-cut-at-deadline",
    "empty-content",
    "bad-content",
    "bad-encoding",
    "content-length-forms",
    "header-value-forms",
    "header-not-an-object",
    "hello-on-plain-port",
}
#: ... and at the guide's own level.
GUIDE_LEVEL_GAPS = {"empty-content"}


def _failed(output: str) -> set[str]:
    return {line.split()[1] for line in output.splitlines() if line.startswith("  FAIL  ")}


def test_the_guide_s_server_fails_exactly_its_known_gaps(guide_app: int) -> None:
    port = str(guide_app)
    guide = run_cli(
        "conformance", "127.0.0.1", port, "--level", "guide", "--app", "search", "--patience", "2", timeout=60
    )
    assert guide.returncode == len(GUIDE_LEVEL_GAPS), guide.stdout
    assert _failed(guide.stdout) == GUIDE_LEVEL_GAPS
    strict = run_cli(
        "conformance",
        "127.0.0.1",
        port,
        "--app",
        "search",
        "--message-timeout",
        "1",
        "--patience",
        "2",
        timeout=120,
    )
    assert strict.returncode == len(GUIDE_GAPS), strict.stdout
    assert _failed(strict.stdout) == GUIDE_GAPS
    assert "PASS  application-answers" in strict.stdout  # (one request per connection: enough for it)


def test_the_documented_gaps_are_the_tested_ones() -> None:
    text = (ROOT / "docs/conformance.md").read_text()
    for name in GUIDE_GAPS:
        assert f"`{name}`" in text
    for case in CASES:
        assert f"`{case.name}`" in text, f"{case.name} is not described in docs/conformance.md"


# -- servers broken on purpose ----------------------------------------------------------------


@contextmanager
def broken_server(
    *,
    wrong_codes: bool = False,
    no_limits: bool = False,
    one_per_connection: bool = False,
    never_times_out: bool = False,
    no_linger: bool = False,
) -> Iterator[int]:
    """An echo server right in all but the ways asked for."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def refuse(conn: socket.socket, error: ProtocolError) -> None:
        if wrong_codes:
            error.code = "bad-header"  # every error, the same code
        conn.sendall(Message.for_error(error).encode())
        if no_linger:
            # Closed with the client's bytes unread, so the kernel resets. Wait
            # until more of them are here: a close that happens to find the
            # queue empty (the client's thread not yet on with its write) would
            # end in order, and the broken server would pass by chance.
            select.select([conn], [], [], 0.5)  # well within the suite's patience
            return
        conn.shutdown(socket.SHUT_WR)  # the orderly end, then what comes is dropped
        conn.settimeout(2.0)
        while conn.recv(65536):
            pass

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # the suite resets connections on purpose
            answer(conn)

    def answer(conn: socket.socket) -> None:
        decoder = Decoder(max_content_length=1 << 60 if no_limits else 64 << 20)
        with conn:
            while not stop.is_set():
                conn.settimeout(1.0 if decoder.in_message and not never_times_out else 0.5)
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    if decoder.in_message and not never_times_out:
                        refuse(conn, MessageTimeout("too slow"))
                        return
                    continue
                except OSError:
                    return
                try:
                    for request in decoder.feed(data):
                        conn.sendall(request.encode())
                        if one_per_connection:
                            return
                except ProtocolError as exc:
                    refuse(conn, exc)
                    return
                if not data:
                    return

    with accepting(listener, stop, serve) as port:
        yield port


@contextmanager
def accepting(
    listener: socket.socket, stop: threading.Event, serve: Callable[[socket.socket], None]
) -> Iterator[int]:
    """``serve`` each connection ``listener`` accepts, on a thread of its
    own, until ``stop``; yields the port."""

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(10)
        listener.close()
        assert not thread.is_alive()


@pytest.mark.parametrize(
    ("broken", "failed"),
    [
        ({}, set()),  # the fake itself is right when nothing is broken
        (
            {"wrong_codes": True},
            {"bad-header-length", "missing-header-key", "bad-header-value", "incomplete-message"}
            | {"error-while-sending", "content-length-forms", "header-value-forms"}
            | {"huge-content-length", "trickle-cut-at-deadline"},
        ),
        ({"no_limits": True}, {"huge-content-length"}),
        (
            {"one_per_connection": True},
            {"back-to-back", "keep-alive", "pipelining-order", "half-close", "application-answers"},
        ),
        ({"never_times_out": True}, {"trickle-cut-at-deadline"}),
        ({"no_linger": True}, {"error-while-sending"}),
    ],
)
def test_the_suite_catches_each_broken_server_for_the_right_cases(
    broken: dict[str, bool], failed: set[str]
) -> None:
    with broken_server(**broken) as port:
        assert failures(port) == failed


# -- the command -------------------------------------------------------------------------------


def test_the_command_prints_a_table_writes_reports_and_exits_with_the_failures(tmp_path: Path) -> None:
    with broken_server(never_times_out=True) as port:
        result = run_cli(
            "conformance", "127.0.0.1", str(port), "--app", "echo", "--message-timeout", "1",
            "--patience", "2", "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"),
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "  FAIL  trickle-cut-at-deadline" in result.stdout
    assert "received:" in result.stdout and "sent:" in result.stdout
    assert result.stdout.rstrip().endswith("27 passed, 1 failed, 23 not applicable")
    # The failure names the rule it breaks.
    assert f"        broken: §5.7 {RULES['5.7']}\n" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"] == {"PASS": 27, "FAIL": 1, "NOT-APPLICABLE": 23}
    (failed,) = [case for case in report["cases"] if case["status"] == "FAIL"]
    assert failed["name"] == "trickle-cut-at-deadline" and failed["sent_hex"] and failed["rules"] == ["5.7"]
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!doctype html>") and 'class="bar"' in page and "<details>" in page
    # Grouped by rule, in the rules' order: a section, then each rule with its cases.
    assert page.index("§1 A message") < page.index("§1.1 ") < page.index("§5.7 ") < page.index("§9.2 ")
    assert page.index("§5.7 ") < page.index("<b>trickle-cut-at-deadline</b>")


def test_the_command_against_nothing_is_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        result = run_cli("conformance", "127.0.0.1", str(holder.getsockname()[1]))
    assert result.returncode == 125
    assert result.stderr.startswith("framewire: cannot run the suite: nothing is listening")
    assert "Traceback" not in result.stderr


@contextmanager
def streaming_server(header: bytes) -> Iterator[int]:
    """A hostile server: to every connection, ``header`` then zeros, without end."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    chunk = bytes(1 << 16)

    def flood(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.sendall(struct.pack(">H", len(header)) + header)
            while not stop.is_set():
                conn.sendall(chunk)

    with accepting(listener, stop, flood) as port:
        yield port


@pytest.mark.timeout(120)
def test_the_suite_is_bounded_in_memory_against_a_server_that_streams_without_end() -> None:
    import tracemalloc

    from framewire.tools.conformance import MAX_RECEIVED

    huge = json.dumps(
        {
            "content-length": 1 << 30,
            "content-type": "binary/x",
            "content-encoding": "binary",
            "byteorder": "little",
        }
    ).encode()
    with streaming_server(huge) as port:
        tracemalloc.start()
        try:
            failed = failures(port)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert failed  # judged, not hung
    assert peak < 6 * MAX_RECEIVED, f"the suite held {peak >> 20} MiB"


def test_a_server_that_does_not_know_the_extensions_fails_their_cases(guide_echo: int) -> None:
    # The guide-shaped echo, told to be checked for framewire's extensions:
    # it answers the probes and the cancel as requests, without ids.
    cases = [case for case in CASES if case.group == "extensions"]
    target = Target("127.0.0.1", guide_echo, app="echo", patience=0.5, extensions=True)
    outcomes = {case.name: case.run(target).status for case in cases}
    assert outcomes == {
        "id-echoed": "FAIL",
        "unordered-marked": "FAIL",
        "cancel-unknown": "FAIL",
        "describe-probe": "FAIL",
        "stream-asked-once": "FAIL",
        "ping-echoed": "FAIL",  # answered as a request: the probe's extension is not on it
        "deadline-passed": "FAIL",  # run, not answered timeout
        "stream-items": "NOT-APPLICABLE",  # (they need the conformance app)
        "cancelled": "NOT-APPLICABLE",
        "broker-delivers": "NOT-APPLICABLE",
    }
    plain = Target("127.0.0.1", guide_echo, app="echo")
    assert {case.run(plain).status for case in cases} == {"NOT-APPLICABLE"}
