"""Soak: hundreds of connections pipelining echo requests for a long time.

Starts ``framewire serve --app echo`` in its own process, loads it with
framewire's own load client (every response checked), and samples the
server's RSS: after a warm-up ("start") and at the end. Fails (exit 1) on any
error, any mismatch, or RSS growth beyond the allowed drift.

    python benchmarks/soak.py [--duration 60] [--connections 300] [--depth 4]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import psutil

from framewire import Message
from framewire.tools.loadgen import Progress, run_load


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "framewire",
            "serve",
            "--app",
            "echo",
            "--port",
            "0",
            "--log-level",
            "warning",
        ],
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()  # the banner comes once the server listens
    match = re.search(r"127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds before the start RSS (default 10%%)"
    )
    parser.add_argument("--max-drift-mib", type=float, default=8.0, help="RSS growth allowed after warm-up")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(1.0, args.duration * 0.1)

    proc, port = start_server()
    server = psutil.Process(proc.pid)
    rss: dict[str, float] = {"launch": server.memory_info().rss / 2**20}

    def sample(progress: Progress) -> None:
        if "start" not in rss and progress.elapsed >= warmup:
            rss["start"] = server.memory_info().rss / 2**20
        rss["peak"] = max(rss.get("peak", 0.0), server.memory_info().rss / 2**20)

    request = Message.from_bytes(bytes(range(256)) * (args.size // 256) + bytes(args.size % 256))
    try:
        result = run_load(
            "127.0.0.1",
            port,
            request,
            connections=args.connections,
            depth=args.depth,
            duration=args.duration,
            check=True,
            progress=sample,
            progress_every=0.5,
        )
        rss["end"] = server.memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(30)
    rss.setdefault("start", rss["end"])
    drift = rss["end"] - rss["start"]
    report = {
        **result.summary(),
        "rss_mib": {k: round(v, 1) for k, v in rss.items()},
        "rss_drift_mib": round(drift, 2),
        "server_exit": proc.returncode,
    }
    if args.json:
        print(json.dumps(report))
    else:
        lat = report["latency_us"]
        print(
            f"soak: {args.connections} connections x {args.depth} in flight, {args.size}-byte echo, "
            f"{result.duration:.0f} s\n"
            f"  {result.responses:,} responses, {result.rate:,.0f} msg/s, "
            f"errors {result.errors}, mismatches {result.mismatches}, "
            f"open at the end {result.open_at_end}/{args.connections}\n"
            f"  latency us p50 {lat['p50']:,.0f} p99 {lat['p99']:,.0f} max {lat['max']:,.0f}\n"
            f"  server RSS: {rss['start']:.1f} MiB at start (after {warmup:g} s), "
            f"{rss['end']:.1f} MiB at the end, "
            f"drift {drift:+.2f} MiB, peak {rss['peak']:.1f} MiB"
        )
    ok = (
        result.errors == 0
        and result.mismatches == 0
        and result.responses > 0
        and result.open_at_end == args.connections
        and drift <= args.max_drift_mib
        and proc.returncode == 0
    )
    if not ok:
        print("soak: FAILED", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
