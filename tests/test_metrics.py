"""Prometheus metrics: exact counts on both drivers, bounded labels, and the
command line (one process and --workers)."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from conftest import connect, read_until_closed, running, tls
from framewire import Client, Message, encode_many
from framewire._build import compiled_modules
from framewire.server.app import App, echo, search_app
from framewire.server.metrics import LABEL_LENGTH, LABEL_LIMIT, Metrics
from test_hardening import fill_until_paused, finish_and_read


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.usefixtures("driver")
def test_every_request_byte_connection_and_error_is_counted() -> None:
    registry = CollectorRegistry()
    app = search_app()
    metrics = Metrics(app, registry)
    with running(app, metrics=metrics) as server:
        with Client("127.0.0.1", server.port) as client:
            client.request_many([Message.from_json({"action": "search", "value": "ring"})] * 7)
            client.request_many([Message.from_json({"action": "nosuch"})] * 2)
            client.request(Message.from_bytes(b"abc"))
            sent, received = 0, 0
        with connect(server.port) as sock:
            sock.sendall(struct.pack(">H", 3) + b"[1]")  # bad-header
            read_until_closed(sock)
        deadline = time.monotonic() + 5
        while value(registry, "framewire_connections_open") and time.monotonic() < deadline:
            time.sleep(0.01)  # the server counts the close on its own thread
    requests = "framewire_requests_total"
    assert value(registry, requests, action="search", content_type="text/json") == 7
    assert value(registry, requests, action="other", content_type="text/json") == 2  # not one of the App's
    assert value(registry, requests, action="", content_type="binary/octet-stream") == 1
    assert value(registry, "framewire_errors_total", action="", code="bad-header") == 1  # not a request's
    assert value(registry, "framewire_connections_total") == 2
    assert value(registry, "framewire_connections_open") == 0
    durations = "framewire_request_duration_seconds_count"
    assert value(registry, durations, action="search") == 7
    assert value(registry, durations, action="other") == 2
    assert value(registry, durations, action="") == 1
    assert value(registry, "framewire_received_bytes_total") > 7 * 50
    assert value(registry, "framewire_sent_bytes_total") > 7 * 50
    from framewire import __version__

    build = "compiled" if compiled_modules() else "pure Python"
    assert value(registry, "framewire_build_info", version=__version__, build=build) == 1
    del sent, received


def test_peers_never_choose_a_content_type_label() -> None:
    # Issue 37: the first 16 types any peer sent, of any length, became
    # permanent labels. Now a fixed set, plus what the deployment names.
    metrics = Metrics(echo, CollectorRegistry(), content_types=("binary/mine",))
    kinds = {metrics.kind(Message.from_bytes(b"", content_type=f"binary/t{i}" * 50)) for i in range(100)}
    kinds |= {metrics.kind(Message.from_text("", content_type=f"text/t{i}")) for i in range(100)}
    assert kinds == {("", "other"), ("", "text/other")}
    assert metrics.kind(Message.from_bytes(b"", content_type="binary/mine")) == ("", "binary/mine")
    assert metrics.kind(Message.from_json(1)) == ("", "text/json")
    with pytest.raises(ValueError, match="at most"):
        Metrics(echo, CollectorRegistry(), content_types=tuple(f"t/{i}" for i in range(LABEL_LIMIT + 1)))
    with pytest.raises(ValueError, match="characters"):
        Metrics(echo, CollectorRegistry(), content_types=("t/" + "x" * LABEL_LENGTH,))


def test_idle_clients_of_the_metrics_port_never_take_the_protocol_port() -> None:
    from framewire.server.metrics import METRICS_CONNECTIONS, serve_metrics

    _, port = serve_metrics(("127.0.0.1", 0), None)
    before = len(os.listdir("/proc/self/fd"))
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    try:
        # Past the cap, each is closed at once, never queued with a thread.
        closed = 0
        for sock in idle[METRICS_CONNECTIONS + 8 :]:
            sock.settimeout(10)
            with contextlib.suppress(ConnectionResetError):
                closed += sock.recv(1) == b""
        assert closed >= 100 - METRICS_CONNECTIONS - 8 - 1
        # The server side holds at most the cap of them (beside the test's 100).
        assert len(os.listdir("/proc/self/fd")) - before <= 100 + METRICS_CONNECTIONS + 2
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while True:  # the slots free as the idle ones go: scraped again
        try:
            text = scrape(port)
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert "python_info" in text


def test_a_client_that_trickles_is_cut_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from framewire.server import metrics as metrics_module

    monkeypatch.setattr(metrics_module, "METRICS_DEADLINE", 0.5)
    _, port = metrics_module.serve_metrics(("127.0.0.1", 0), None)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
        started = time.monotonic()
        with contextlib.suppress(ConnectionResetError):
            sock.recv(65536)
        assert time.monotonic() - started < 5


@pytest.mark.usefixtures("driver")
def test_every_tls_path_that_opens_a_connection_closes_it_in_the_gauge() -> None:
    # Issue 37: a TLS refusal was counted open at the accept and never closed.
    registry = CollectorRegistry()
    metrics = Metrics(echo, registry)
    context = tls().server()
    with running(echo, metrics=metrics, ssl_context=context, max_connections=1) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as plain:  # a failed handshake
            plain.sendall(b"not TLS at all" * 100)
            with contextlib.suppress(OSError):
                plain.recv(100)
        deadline = time.monotonic() + 5
        while server.connections and time.monotonic() < deadline:
            time.sleep(0.01)  # the server closes it on its own thread
        with connect_tls(server.port) as first:
            first.sendall(encode_many([Message.from_bytes(b"in")]))
            for _ in range(3):  # past the limit: closed at once
                with pytest.raises(OSError):
                    connect_tls(server.port).close()
        deadline = time.monotonic() + 5
        while value(registry, "framewire_connections_open") and time.monotonic() < deadline:
            time.sleep(0.01)  # the server counts the close on its own thread
    assert value(registry, "framewire_connections_open") == 0
    assert value(registry, "framewire_connections_refused_total") == 3
    # The failed handshake and the one served, on either driver (the asyncio
    # one counted a connection only once its handshake was done).
    assert value(registry, "framewire_connections_total") == 2


def connect_tls(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return tls().client().wrap_socket(sock, server_hostname="127.0.0.1")


@pytest.mark.usefixtures("driver")
def test_paused_connections_and_server_busy_are_seen() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(echo, registry)
    request = encode_many([Message.from_bytes(b"p" * 16384)])
    with running(echo, metrics=metrics, max_in_flight=4, max_connections=1) as server:
        with connect(server.port, timeout=20) as sock:
            _, stream, sent = fill_until_paused(server, sock, request)
            assert value(registry, "framewire_paused_connections") == 1
            with connect(server.port) as second:
                read_until_closed(second)
            assert value(registry, "framewire_errors_total", action="", code="server-busy") == 1
            assert value(registry, "framewire_connections_refused_total") == 1  # plain: answered, counted
            finish_and_read(sock, request, stream, sent)
            assert value(registry, "framewire_paused_connections") == 0
        deadline = time.monotonic() + 5
        while value(registry, "framewire_connections_open") and time.monotonic() < deadline:
            time.sleep(0.01)  # the server counts the close on its own thread
    assert value(registry, "framewire_connections_open") == 0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
        return text


def requests_total(text: str) -> float:
    return sum(float(v) for v in re.findall(r"^framewire_requests_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["one-process", "workers-2"])
def test_the_command_line_serves_metrics(spawn: Any, workers: tuple[str, ...]) -> None:
    server = spawn("serve", "--app", "echo", "--port", "0", "--metrics", "0", *workers)
    metrics_port = int(
        server.wait_for(r"metrics (?:of every worker )?on http://127\.0\.0\.1:(\d+)/metrics").group(1)
    )
    # From the first scrape, before any worker reports: the series, at zero.
    first = scrape(metrics_port)
    assert "framewire_connections_total 0.0" in first and "framewire_build_info{" in first, first
    port = int(server.wait_for(r"app on 127\.0\.0\.1:(\d+)").group(1))
    if workers:
        server.wait_for("2 workers serving")
    before = requests_total(scrape(metrics_port))
    for i in range(25):  # new connections: under --workers both workers take some
        with Client("127.0.0.1", port) as client:
            client.request(Message.from_text(str(i)))
    deadline = time.monotonic() + 10
    while requests_total(scrape(metrics_port)) < before + 25 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests_total(scrape(metrics_port)) == before + 25
    # One build_info series, whatever the number of workers (their max).
    page = scrape(metrics_port)
    info = [line for line in page.splitlines() if line.startswith("framewire_build_info{")]
    assert len(info) == 1 and info[0].endswith(" 1.0") and 'build="' in info[0], info
    # The usual process series: the process's own, or each worker's and the supervisor's.
    cpu = re.findall(r"^process_cpu_seconds_total(\{[^}]*\})? ", page, re.M)
    assert "python_info{" in page
    if workers:
        roles = sorted(re.search(r'role="(\w+)"', label).group(1) for label in cpu)  # type: ignore[union-attr]
        assert roles == ["supervisor", "worker", "worker"]
        assert page.count("# TYPE process_cpu_seconds_total") + page.count("# TYPE process_cpu_seconds ") == 1
    else:
        assert cpu == [""]
    code, _, err = server.stop()
    assert code == 0 and "Traceback" not in err


def test_app_actions_name_the_label() -> None:
    app = App()

    @app.action("get")
    def get(value: Any) -> Any:
        return value

    metrics = Metrics(app, CollectorRegistry())
    assert metrics.kind(Message.from_json({"action": "get"})) == ("get", "text/json")
    assert metrics.kind(Message.from_json({"action": "x" * 1000})) == ("other", "text/json")
    assert metrics.kind(Message.from_json([1, 2])) == ("other", "text/json")


def test_error_code_labels_are_the_protocol_s_and_those_the_app_declares() -> None:
    registry = CollectorRegistry()
    app = App()

    @app.action("get", errors=["not-found"])
    def get(value: Any) -> Any:
        return value

    metrics = Metrics(app, registry)
    metrics.action = "get"
    metrics.error("server-busy")
    metrics.error("not-found")
    for i in range(100):  # an application making codes from what peers send
        metrics.error(f"no-such-key-{i}")
    codes = {s.labels["code"] for m in registry.collect() for s in m.samples if "code" in s.labels}
    assert codes == {"server-busy", "not-found", "other"}
    assert value(registry, "framewire_errors_total", action="get", code="other") == 100
    assert value(registry, "framewire_errors_total", action="get", code="not-found") == 1


@pytest.mark.usefixtures("driver")
def test_tls_handshake_failures_are_counted_by_a_bounded_reason() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(echo, registry)
    with running(echo, metrics=metrics, ssl_context=tls().server()) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"\x00\x20" + b"{" * 32)  # plain framewire on a TLS port
            with contextlib.suppress(ConnectionResetError):  # (asyncio's TLS resets)
                read_until_closed(sock)
        deadline = time.monotonic() + 5
        label = {"reason": "wrong-version-number"}
        while (
            not value(registry, "framewire_tls_handshake_failures_total", **label)
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)  # the server counts it on its own thread
    assert value(registry, "framewire_tls_handshake_failures_total", **label) == 1


def test_a_handshake_failure_label_is_never_the_peer_s_text() -> None:
    import ssl

    from framewire.io.netio import _TLS_REASONS_SERVER, tls_failure_label

    odd = ssl.SSLError(1, "[SSL: SOMETHING_A_PEER_CAUSED] made up")
    odd.reason = "SOMETHING_A_PEER_CAUSED"
    labels = {tls_failure_label(odd), tls_failure_label(TimeoutError()), tls_failure_label(OSError())}
    for reason in _TLS_REASONS_SERVER:
        known = ssl.SSLError(1, reason)
        known.reason = reason
        labels.add(tls_failure_label(known))
    labels.add(tls_failure_label(None))
    assert "other" in labels and "timeout" in labels and "connection" in labels
    assert "unknown-ca" in labels and "wrong-version-number" in labels
    assert len(labels) <= len(_TLS_REASONS_SERVER) + 4 and all(len(label) <= 40 for label in labels)


def test_a_worker_that_dies_is_counted_as_restarted(spawn: Any) -> None:
    import signal

    server = spawn("serve", "--app", "echo", "--port", "0", "--metrics", "0", "--workers", "2")
    metrics_port = int(
        server.wait_for(r"metrics of every worker on http://127\.0\.0\.1:(\d+)/metrics").group(1)
    )
    pid = int(server.wait_for(r"worker 1 started \(pid (\d+)\)").group(1))
    server.wait_for("2 workers serving")
    assert "framewire_worker_restarts_total 0.0" in scrape(metrics_port)
    os.kill(pid, signal.SIGKILL)
    server.wait_for(rf"worker 1 \(pid {pid}\) was killed by SIGKILL: starting another")
    assert "framewire_worker_restarts_total 1.0" in scrape(metrics_port)
    code, _, err = server.stop()
    assert code == 0, err


@pytest.mark.usefixtures("driver")
def test_the_handler_queue_depth_is_a_gauge() -> None:
    import threading

    registry = CollectorRegistry()
    release = threading.Event()
    app = App()

    @app.action("wait")
    def wait(value: Any) -> Any:
        release.wait(10)
        return value

    metrics = Metrics(app, registry)
    with running(app, metrics=metrics, threads=2) as server:
        with Client("127.0.0.1", server.port) as client:
            client.send(*[Message.from_json({"action": "wait", "value": i}) for i in range(5)])
            deadline = time.monotonic() + 5
            while value(registry, "framewire_handler_queue") < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert value(registry, "framewire_handler_queue") == 5  # 2 running, 3 waiting
            release.set()
            assert [client.receive().json()["result"] for _ in range(5)] == list(range(5))
        deadline = time.monotonic() + 5
        while value(registry, "framewire_handler_queue") and time.monotonic() < deadline:
            time.sleep(0.01)
    assert value(registry, "framewire_handler_queue") == 0


def test_every_series_is_in_the_table_of_the_deploy_page() -> None:
    # One table documents every series the server defines (docs/deploy.md).
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    defined = set(
        re.findall(r'"(framewire_[a-z_]+)"', (root / "src/framewire/server/metrics.py").read_text())
    )
    table = (root / "docs" / "deploy.md").read_text()
    assert len(defined) > 15
    assert [name for name in sorted(defined) if f"`{name}" not in table] == []
