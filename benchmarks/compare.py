"""framewire's server beside the ways a Python programmer would otherwise write it.

Starts each server on a free port (pinned to CPU 0 where ``taskset`` exists),
loads it with the same client, ``framewire bench`` (pinned to CPU 1), in the
same run, and writes a markdown table and a bar chart to docs/. Every run
checks every answer against the echo application.

Then the same over TLS (a development CA from ``framewire certs``), beside
asyncio's own TLS: the client is ``framewire bench --tls-ca``, and its CPU
share is reported, since over TLS a client works about as hard as a server.

    python benchmarks/compare.py [--seconds 3] [--out docs/performance.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable


@dataclass(frozen=True)
class Scenario:
    name: str
    args: tuple[str, ...]
    oneshot: bool = False


SCENARIOS = [
    Scenario("pipelined 16x16, 64 B", ("-c", "16", "-d", "16", "-s", "64")),
    Scenario("ping-pong 1x1, 64 B", ("-c", "1", "-d", "1", "-s", "64")),
    Scenario("many connections 1000x1, 64 B", ("-c", "1000", "-d", "1", "-s", "64")),
    Scenario("large 4x2, 1 MiB", ("-c", "4", "-d", "2", "-s", str(1024 * 1024))),
    Scenario("one request per connection, 16 at once", ("-c", "16", "-s", "64", "--oneshot"), oneshot=True),
]


TLS_SCENARIOS = [
    Scenario("TLS pipelined 16x16, 64 B", ("-c", "16", "-d", "16", "-s", "64")),
    Scenario("TLS 1000 connections x1, 64 B", ("-c", "1000", "-d", "1", "-s", "64")),
    Scenario("TLS large 4x2, 1 MiB", ("-c", "4", "-d", "2", "-s", str(1024 * 1024))),
    Scenario("TLS one request per connection (full handshake), 16 at once",
             ("-c", "16", "-s", "64", "--oneshot"), oneshot=True),
]  # fmt: skip


def framewire(build: Path | None = None) -> list[str]:
    """``python -m framewire`` of the build in the source tree ``build`` (the
    default install's: ``make compiled-copy``), or of this environment."""
    if build is None:
        return [PY, "-m", "framewire"]
    return ["env", f"PYTHONPATH={build.resolve()}", PY, "-m", "framewire"]


def build_of(command: list[str]) -> str:
    """What ``framewire --version`` says of the build ``command`` (``python -m
    framewire`` and what precedes it) runs: "pure Python", or "compiled with mypyc: ..."."""
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False).stdout
    return version.strip().split(" (", 1)[-1].rstrip(")")


def tls_servers(cert: str, key: str, build: Path | None = None) -> dict[str, list[str]]:
    peers = HERE / "peers"
    serve = [*framewire(build), "serve", "--app", "echo", "--port", "{port}", "--tls-cert", cert,
             "--tls-key", key]  # fmt: skip
    found = {
        "framewire": serve,
        "framewire --loop asyncio": [*serve, "--loop", "asyncio"],
        "asyncio Protocol": [PY, str(peers / "asyncio_protocol_server.py"), "{port}", "--tls", cert, key],
    }
    if importlib.util.find_spec("uvloop") is not None:
        found["asyncio Protocol + uvloop"] = [*found["asyncio Protocol"], "--uvloop"]
    return found


def c_server() -> list[str] | None:
    """The C epoll echo server (peers/c_echo_server.c), built with gcc into
    .venv, the practical limit of the machine; None without a compiler."""
    binary = build("c_echo_server")
    return None if binary is None else [str(binary), "{port}"]


def build(name: str) -> Path | None:
    """``peers/NAME.c``, built with gcc (or cc) into .venv when the source is
    newer than the binary; None without a compiler or when it fails."""
    source = HERE / "peers" / f"{name}.c"
    binary = ROOT / ".venv" / name
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            return None
        built = subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=False)
        if built.returncode != 0:
            return None
    return binary


def servers(build: Path | None = None) -> dict[str, list[str]]:
    peers = HERE / "peers"
    serve = [*framewire(build), "serve", "--app", "echo", "--port", "{port}"]  # the default options
    found = {
        "framewire": serve,
        "framewire --loop asyncio": [*serve, "--loop", "asyncio"],
        "framewire --threads 4": [*serve, "--threads", "4"],
        "asyncio streams": [PY, str(peers / "asyncio_streams_server.py"), "{port}"],
        "asyncio Protocol": [PY, str(peers / "asyncio_protocol_server.py"), "{port}"],
        "guide's server": [PY, str(peers / "guide_server.py"), "{port}"],
    }
    c = c_server()
    if c is not None:
        found["C epoll server"] = c
    if importlib.util.find_spec("uvloop") is not None:
        found["framewire --loop uvloop"] = [*serve, "--loop", "uvloop"]
        found["asyncio Protocol + uvloop"] = [
            PY,
            str(peers / "asyncio_protocol_server.py"),
            "{port}",
            "--uvloop",
        ]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(cpu: int, command: list[str]) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu), *command]
    return command


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # a separate process: nothing to wait on but its port
    raise RuntimeError("server never listened")


def measure(
    command: list[str], scenario: Scenario, seconds: float, client: tuple[str, ...] = ()
) -> dict[str, object]:
    with serving(command) as port:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        load = subprocess.run(
            pinned(1, [PY, "-m", "framewire", "bench", "127.0.0.1", str(port), *scenario.args, *client,
                       "-t", str(seconds), "--check", "--json", "--quiet", "--timeout", "5"]),
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )  # fmt: skip
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result: dict[str, object] = json.loads(load.stdout)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result["client_cpu"] = round(used / wall, 2)  # the load client's share of a CPU
        return result


@contextlib.contextmanager
def serving(command: list[str]) -> Iterator[int]:
    """``command`` (``{port}`` standing for a free port) running pinned to
    CPU 0 until the block ends; yields the port once it listens."""
    port = free_port()
    with serving_on([part.replace("{port}", str(port)) for part in command], port):
        yield port


@contextlib.contextmanager
def serving_on(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running pinned to CPU 0 until the block ends; yields its
    process once it listens on ``port``."""
    server = subprocess.Popen(pinned(0, command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, server)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{model}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def chart(rows: dict[str, dict[str, dict[str, object]]], path: Path) -> bool:
    try:
        import matplotlib  # noqa: PLC0415  (optional: the bench extra)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    names = list(next(iter(rows.values())).keys())
    fig, axes = plt.subplots(1, len(rows), figsize=(4 * len(rows), 4.5))
    for ax, (scenario, results) in zip(axes, rows.items(), strict=True):
        large = "MiB" in scenario
        values = [
            float(str(results[n]["mb_per_s" if large else "rps"])) if results.get(n) else 0.0 for n in names
        ]
        colors = ["#d62728" if n == "framewire" else "#7f7f7f" for n in names]
        ax.bar(range(len(names)), values, color=colors)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(scenario, fontsize=9)
        ax.set_ylabel("MB/s" if large else "messages/s")
    fig.suptitle("Echo throughput, same load client for every server (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def table(
    rows: dict[str, dict[str, dict[str, object]]], names: list[str], client_cpu: bool = False
) -> list[str]:
    lines = ["| scenario | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for scenario, results in rows.items():
        large = "MiB" in scenario
        cells = []
        for name in names:
            r = results.get(name)
            if not r:
                cells.append("n/a")
                continue
            lat = r["latency_us"]
            assert isinstance(lat, dict)
            value = f"{r['mb_per_s']} MB/s" if large else f"{r['rps']:,.0f} msg/s"
            errors = "" if not (r["errors"] or r["mismatches"]) else f" ({r['errors']} errors)"
            cpu = f", client CPU {r['client_cpu']}" if client_cpu else ""
            cells.append(f"{value}, p99 {lat['p99'] / 1000:.1f} ms{cpu}{errors}")
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--core", type=Path, default=None, help="JSON from bench_core.py --json, to include")
    parser.add_argument("--build", type=Path, help="framewire's servers run the build in this source tree")
    args = parser.parse_args()
    peers = servers(args.build)
    rows = run_all(SCENARIOS, peers, args.seconds)
    with tempfile.TemporaryDirectory() as folder:
        from framewire.tools.certs import write_certificates  # noqa: PLC0415

        ca, cert, key = (str(p) for p in write_certificates(Path(folder)).paths[:3])
        tls_peers = tls_servers(cert, key, args.build)
        tls_rows = run_all(TLS_SCENARIOS, tls_peers, args.seconds, ("--tls-ca", ca))
    png = args.out.with_suffix(".png")
    drew = chart(rows, png)
    write_doc(args.out, rows, list(peers), png if drew else None, args.core, args.seconds,
              (tls_rows, list(tls_peers)), build_of(framewire(args.build)))  # fmt: skip
    print(f"wrote {args.out}" + (f" and {png}" if drew else " (no chart: matplotlib is missing)"))
    failed = any(
        r and (r["errors"] or r["mismatches"])
        for table in (rows, tls_rows)
        for s in table.values()
        for r in s.values()
    )
    return 1 if failed else 0


def run_all(
    scenarios: list[Scenario], peers: dict[str, list[str]], seconds: float, client: tuple[str, ...] = ()
) -> dict[str, dict[str, dict[str, object]]]:
    rows: dict[str, dict[str, dict[str, object]]] = {}
    for scenario in scenarios:
        rows[scenario.name] = {}
        for name, command in peers.items():
            if name == "guide's server" and not scenario.oneshot:
                rows[scenario.name][name] = {}  # it closes after one answer
                continue
            result = measure(command, scenario, seconds, client)
            rows[scenario.name][name] = result
            print(f"{scenario.name:42} {name:28} {result['rps']:>10,.0f} msg/s {result['mb_per_s']:>8} MB/s "
                  f"errors {result['errors']} mismatches {result['mismatches']} "
                  f"client CPU {result['client_cpu']}", flush=True)  # fmt: skip
    return rows


def targets_section() -> list[str]:
    """The speed targets, from the last run of benchmarks/targets.py."""
    from stored import RESULTS, last_stored, markdown  # noqa: PLC0415

    result = last_stored()
    if result is None:
        return []
    stored = sorted(RESULTS.glob("targets-*.json"))[-1].relative_to(ROOT)
    return [
        "## The targets, under a load generator in C",
        "",
        "Each figure is the median of the runs of one `make bench`, framewire and",
        "its peer alternating in pairs, loaded by `benchmarks/peers/loadgen.c` (C,",
        "epoll, every answer checked) so that the client is never the bottleneck;",
        f"measured {result['date']} on {result['machine']}, {result['pairs']} pairs",
        f"of {result['seconds']:g} s, stored in `{stored}`. framewire runs with the",
        "default options (`framewire serve --app echo`), built as `pip install .`",
        f"builds it where a C compiler is ({result.get('default_build', 'pure Python')}); the last",
        "column is the pure-Python build's ratio in the same pairs.",
        "",
        *markdown(result),
        "",
    ]


def calls_section() -> list[str]:
    """The application layer's cost and call() beside gRPC, from the last
    run of benchmarks/calls.py."""
    from stored import RESULTS  # noqa: PLC0415

    runs = sorted(RESULTS.glob("calls-*.json"))
    if not runs:
        return []
    result = json.loads(runs[-1].read_text())
    lines = [
        "## The application layer",
        "",
        "A typed `call()` from Python (a 64-character string in and out) beside gRPC",
        "Python's unary call on a `grpc.aio` server doing the same work, and what typed",
        "values and the access log cost (`benchmarks/calls.py`: server on CPU 0, the",
        "Python client on CPU 1, the median of alternating pairs; measured",
        f"{result['date']} on {result['machine']}, {result['pairs']} pairs of",
        f"{result['seconds']:g} s, {result['build']}, stored in",
        f"`{runs[-1].relative_to(ROOT)}`). Where the Python client is the limit (the",
        "pipelined rows), the server's own cost is the last column: requests per",
        "second of the server's CPU.",
        "",
        "| row | framewire per s | peer per s | ratio | per server CPU-second |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        lines.append(
            f"| {name} | {row['ours_rps']:,.0f} | {row['theirs_rps']:,.0f} | {row['ratio']:.2f}x"
            f" | {row['cpu_ratio']:.2f}x |"
        )
    lines.append("")
    return lines


def pubsub_section() -> list[str]:
    """The broker beside redis-server, and fan-out latency, from the last
    run of benchmarks/pubsub.py."""
    from stored import RESULTS  # noqa: PLC0415

    runs = sorted(RESULTS.glob("pubsub-*.json"))
    if not runs:
        return []
    result = json.loads(runs[-1].read_text())
    put, fan = result["throughput"], result["fanout"]
    return [
        "## Publish and subscribe",
        "",
        "`framewire serve --app pubsub` beside `redis-server`, each on CPU 0 with its default",
        "options, one Python publisher and one Python subscriber (processes of their own, on",
        f"CPU 1): {put['items']:,} items of 64 characters, publishes pipelined in batches of",
        f"{put['batch']} (framewire: `call_many`; Redis: a redis-py pipeline of PUBLISH), read",
        "as they come (`Client.subscribe`; redis-py's `pubsub.listen`). Items a second from",
        "the first publish to the last item, the median of alternating pairs",
        f"(`benchmarks/pubsub.py`, measured {result['date']} on {result['machine']},",
        f"{result['pairs']} pairs, {result['build']}, stored in `{runs[-1].relative_to(ROOT)}`).",
        "",
        "| row | framewire | redis-server | ratio |",
        "|---|---|---|---|",
        f"| items a second | {put['ours_items_per_s']:,.0f} | {put['theirs_items_per_s']:,.0f}"
        f" | {put['ratio']:.2f}x |",
        "",
        f"Fan-out: {fan['subscribers']:,} subscribers on one server (two reader processes",
        f"on CPU 1), {fan['publishes']:,} publishes at {fan['rate']:g} a second: all",
        f"{fan['deliveries']:,} deliveries made, each subscriber's in order. Publish to",
        f"delivery: p50 {fan['p50_ms']:.2f} ms, p99 {fan['p99_ms']:.2f} ms, max",
        f"{fan['max_ms']:.1f} ms. The server's CPU was busy {fan['server_cpu_share']:.0%} of the run (each",
        "publish is a write to a thousand connections), and its memory grew by",
        f"{fan['server_rss_growth_mib']:.1f} MiB.",
        "",
    ]


#: Where docs/performance.md's hand-written analysis begins (see write_doc).
HAND_WRITTEN = "<!-- Written by hand from here on; make bench keeps it as it is. -->"


def write_doc(
    out: Path,
    rows: dict[str, dict[str, dict[str, object]]],
    names: list[str],
    png: Path | None,
    core: Path | None,
    seconds: float,
    tls: tuple[dict[str, dict[str, dict[str, object]]], list[str]] | None = None,
    build_name: str = "pure Python",
) -> None:
    today = datetime.date.today().isoformat()
    lines = [
        "# Performance",
        "",
        f"Measured on {today}, on {machine()}, by `make bench`",
        f"(`benchmarks/compare.py`, {seconds:g} s a run). Every server echoes; each is",
        "loaded by the same client, `framewire bench --check` (every answer checked),",
        "server pinned to CPU 0 and client to CPU 1. framewire runs with the default",
        "options a user gets (`framewire serve --app echo`, logging at INFO), built",
        f"as `pip install .` builds it ({build_name}), beside",
        "its other drivers. The client is Python too, so the fastest servers here are",
        "held back by it: these are ratios between servers under one client, not",
        "each server's ceiling. The machine is shared and noisy: compare ratios",
        "within one run. The C epoll server (`benchmarks/peers/c_echo_server.c`, built",
        "with gcc) writes every message back as it came: the machine's practical limit",
        "under this client. The peers are in `benchmarks/peers/`.",
        "",
    ]
    lines += targets_section()
    lines += calls_section()
    lines += pubsub_section()
    lines += ["## Beside the ways Python is otherwise written", ""]
    if png is not None:
        lines += [f"![throughput]({png.name})", ""]
    lines += table(rows, names)
    lines += [
        "",
        "n/a: the guide's server answers one request per connection, then closes.",
        "",
    ]
    if tls is not None:
        tls_rows, tls_names = tls
        lines += [
            "## Over TLS",
            "",
            "The same echo over TLS 1.3 (a development certificate from `framewire certs`),",
            "beside asyncio's own TLS on the same `Protocol` server, loaded by",
            "`framewire bench --tls-ca`. Over TLS a client works about as hard as the",
            "server: `client CPU` is the load client's share of its CPU, and near 1.0 the",
            "figure is the client's ceiling, not the server's (the one-request-per-connection",
            "row, a full handshake each, is bound by it whatever the server).",
            "",
        ]
        lines += table(tls_rows, tls_names, client_cpu=True)
        lines.append("")
    if core is not None and core.exists():
        figures = json.loads(core.read_text())
        lines += [
            "## The protocol core",
            "",
            "200,000 messages with 64-byte binary content, from one buffer and into one",
            "buffer, beside a plain `struct` + `json` loop written the guide's way",
            "(`benchmarks/bench_core.py`):",
            "",
            "| | framewire msg/s | struct+json msg/s | ratio |",
            "|---|---|---|---|",
        ]
        for what, f in figures.items():
            lines.append(f"| {what} | {f['framewire']:,.0f} | {f['plain']:,.0f} | {f['ratio']:.2f}x |")
        lines.append("")
    # The analysis below the marker is written by hand: kept as it is.
    if out.exists() and HAND_WRITTEN in out.read_text():
        lines += [HAND_WRITTEN + out.read_text().split(HAND_WRITTEN, 1)[1].rstrip("\n"), ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
