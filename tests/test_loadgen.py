"""The load client (framewire bench), run as a person runs it and as a library."""

from __future__ import annotations

import json
from typing import Any

from conftest import run_cli, running
from framewire import Message
from framewire.server import Server
from framewire.tools.loadgen import Histogram, run_load


def test_bench_json_with_count(echo_server: Server) -> None:
    result = run_cli(
        "bench",
        "127.0.0.1",
        str(echo_server.port),
        "-c",
        "4",
        "-d",
        "8",
        "-n",
        "2000",
        "--check",
        "--json",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["responses"] >= 2000 and summary["errors"] == 0 and summary["mismatches"] == 0
    assert set(summary["latency_us"]) == {"p50", "p90", "p99", "p99.9", "max"}
    assert summary["latency_us"]["p50"] <= summary["latency_us"]["p99"] <= summary["latency_us"]["max"]


def test_bench_oneshot_text_summary(echo_server: Server) -> None:
    result = run_cli("bench", "127.0.0.1", str(echo_server.port), "--oneshot", "-n", "300", "--check", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("300 responses in ")
    assert "errors 0, mismatches 0" in result.stdout


def test_bench_counts_mismatches_against_a_non_echo_server() -> None:
    with running(lambda request: Message.from_bytes(b"not an echo")) as server:
        result = run_cli("bench", "127.0.0.1", str(server.port), "-n", "100", "--check", "--json", "-q")
    assert result.returncode == 1
    assert json.loads(result.stdout)["mismatches"] >= 100


def test_bench_with_nothing_listening() -> None:
    import socket

    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        result = run_cli("bench", "127.0.0.1", str(placeholder.getsockname()[1]), "-n", "10", "-q")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


def test_run_load_large_content(echo_server: Server) -> None:
    request = Message.from_bytes(bytes(range(256)) * 4096)
    result = run_load("127.0.0.1", echo_server.port, request, connections=2, depth=2, count=20, check=True)
    assert result.responses >= 20 and result.errors == 0 and result.mismatches == 0


def test_histogram_percentiles() -> None:
    hist = Histogram()
    for us in range(1, 1001):
        hist.add(float(us))
    p50: Any = hist.percentile(0.5)
    assert 490 <= p50 <= 520  # 2 % buckets
    assert hist.percentile(1.0) == 1000.0 == hist.max_us
