"""Prometheus metrics: exact counts on both drivers, bounded labels, and the
command line (one process and --workers)."""

from __future__ import annotations

import re
import struct
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from conftest import connect, read_until_closed, running
from framewire import Client, Message, encode_many
from framewire.server.app import App, echo, search_app
from framewire.server.metrics import LABEL_LIMIT, Metrics
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
    assert value(registry, "framewire_errors_total", code="bad-header") == 1
    assert value(registry, "framewire_connections_total") == 2
    assert value(registry, "framewire_connections_open") == 0
    assert value(registry, "framewire_request_duration_seconds_count") == 10
    assert value(registry, "framewire_bytes_received_total") > 7 * 50
    assert value(registry, "framewire_bytes_sent_total") > 7 * 50
    del sent, received


def test_content_type_labels_are_bounded() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(echo, registry)
    kinds = {metrics.kind(Message.from_bytes(b"", content_type=f"binary/t{i}")) for i in range(100)}
    assert len(kinds) == LABEL_LIMIT + 1 and ("", "other") in kinds


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
            assert value(registry, "framewire_errors_total", code="server-busy") == 1
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
