"""framewire bench: load a server."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from framewire.cli.common import (
    PORT,
    ClientCommand,
    _fail,
    friendly_errors,
    main,
    server_address,
    tls_client_options,
    tls_for,
)
from framewire.core.message import Message
from framewire.io.netio import where


@main.command(cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.option("--connections", "-c", type=click.IntRange(1), default=16, show_default=True)
@click.option("--depth", "-d", type=click.IntRange(1), default=16, show_default=True,
              help="Requests kept in flight per connection (pipelining).")  # fmt: skip
@click.option("--size", "-s", type=click.IntRange(0), default=64, show_default=True,
              help="Content bytes per request (binary).")  # fmt: skip
@click.option("--search", is_flag=True, help="Send the demo app's search request instead of binary content.")
@click.option("--duration", "-t", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds to run.")  # fmt: skip
@click.option("--count", "-n", type=click.IntRange(1), default=None, help="Stop after this many responses.")
@click.option("--check", is_flag=True, help="Check every response echoes its request (the echo app).")
@click.option(
    "--oneshot",
    is_flag=True,
    help="One request per connection (the guide's client): connect, send, read, close.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="End the run after this long with no answer.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No live progress line.")
@tls_client_options
@friendly_errors
def bench(
    host: str,
    port: int,
    connections: int,
    depth: int,
    size: int,
    search: bool,
    duration: float,
    count: int | None,
    check: bool,
    oneshot: bool,
    timeout: float,
    as_json: bool,
    quiet: bool,
    tls: tuple[Any, str | None] | None,
) -> None:
    """Load a server: throughput and latency percentiles.

    Each of the connections keeps DEPTH requests in flight; the run ends
    after DURATION seconds or COUNT responses. Exits 1 if any error or
    mismatch was seen.

    \b
    Example:
      framewire serve --app echo --port 65432 --log-level warning &
      framewire bench 127.0.0.1 65432 -c 16 -d 16 -s 64 -t 5 --check
      framewire bench unix:/tmp/framewire.sock -t 5
    """
    from framewire.tools import loadgen

    host, port = server_address(host, port)
    context, name = tls_for(host, tls)
    if search:
        message = Message.from_json({"action": "search", "value": "ring"})
    else:
        message = Message.from_bytes(
            bytes(i % 251 for i in range(size)), content_type="binary/custom-client-binary-type"
        )
    live = not quiet and sys.stderr.isatty()

    def show(p: loadgen.Progress) -> None:
        click.echo(
            f"\r{p.elapsed:6.1f} s {p.done:>12,} responses {p.done / p.elapsed:>10,.0f}/s "
            f"{p.errors} errors {p.open_connections} open ",
            nl=False,
            err=True,
        )

    result = loadgen.run_load(
        host, port, message, connections=connections, depth=depth, duration=duration, count=count,
        check=check, timeout=timeout, progress=show if live else None, oneshot=oneshot,
        ssl_context=context, server_hostname=name,
    )  # fmt: skip
    if live:
        click.echo(err=True)
    samples = result.error_samples
    if not result.responses and samples and all(s.startswith("connect:") for s in samples):
        # Not one connection: one line, as every command says it.
        refused = "ECONNREFUSED" in samples[0]
        target = where(host, port)
        raise _fail(
            f"nothing is listening on {target} (connection refused)"
            if refused
            else f"cannot connect to {target}: {samples[0].removeprefix('connect: ')}"
        )
    summary = result.summary()
    if as_json:
        click.echo(json.dumps(summary))
    else:
        lat = summary["latency_us"]
        click.echo(
            f"{summary['responses']:,} responses in {summary['duration_s']:.2f} s: "
            f"{summary['rps']:,.0f} msg/s, {summary['mb_per_s']:.1f} MB/s received\n"
            f"latency us: p50 {lat['p50']:,.0f}  p90 {lat['p90']:,.0f}  p99 {lat['p99']:,.0f}  "
            f"p99.9 {lat['p99.9']:,.0f}  max {lat['max']:,.0f}\n"
            f"errors {summary['errors']}, mismatches {summary['mismatches']}, "
            f"connections open at the end {summary['open_at_end']}/{connections}"
        )
        for sample in summary["error_samples"]:
            click.echo(f"  error: {sample}", err=True)
    if result.mismatches and not result.errors:
        click.echo(
            "framewire: --check expects every answer to echo its request: is the server running the "
            "echo app (framewire serve --app echo)?",
            err=True,
        )
    if result.interrupted:
        raise click.exceptions.Exit(130)
    if result.errors or result.mismatches or not result.responses:
        raise click.exceptions.Exit(1)
