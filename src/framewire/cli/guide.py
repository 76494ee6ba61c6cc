"""The guide's raw-bytes programs: echo-server, echo-client, multiconn-server, multiconn-client."""

from __future__ import annotations

import signal
import time

import click

from framewire.cli.common import (
    PORT,
    ClientCommand,
    _fail,
    friendly_errors,
    host_option,
    listen_or_fail,
    log_level_option,
    main,
    port_option,
    server_address,
    setup_logging,
)
from framewire.io.netio import show_address


@main.command("echo-server")
@host_option
@port_option
@friendly_errors
def echo_server(host: str, port: int) -> None:
    """The guide's first server: one client, echo its bytes until it closes.

    Blocking and single-client on purpose; it exits when the client closes.

    \b
    Example:
      framewire echo-server --port 65432
    """
    from framewire.tools import rawecho

    listener = listen_or_fail(host, port)
    click.echo(f"Listening on {show_address((host, listener.getsockname()[1]))} for one client", err=True)
    rawecho.echo_server_once(listener, on_event=lambda line: click.echo(line, err=True))


@main.command("echo-client", cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.argument("text", default="Hello, world")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the echo.")
@friendly_errors
def echo_client(host: str, port: int, timeout: float, text: str) -> None:
    """Send TEXT to an echo server and print what comes back.

    \b
    Example:
      framewire echo-client 127.0.0.1 65432 "Hello, world"
    """
    from framewire.tools import rawecho

    host, port = server_address(host, port)
    data = text.encode()
    echoed = rawecho.echo_client(host, port, data, timeout)
    click.echo(f"Received {echoed!r}")
    if echoed != data:
        raise _fail(f"the echo differs from what was sent ({len(echoed)} of {len(data)} bytes came back)")


@main.command("multiconn-server")
@host_option
@port_option
@log_level_option
@friendly_errors
def multiconn_server(host: str, port: int, log_level: str) -> None:
    """Echo raw bytes to many clients at once, on selectors, until Ctrl-C.

    \b
    Example:
      framewire multiconn-server --port 65432
    """
    from framewire.tools import rawecho

    setup_logging(log_level)
    server = rawecho.MulticonnEchoServer(listen_or_fail(host, port))

    def on_signal(signum: int, frame: object) -> None:
        server.shutdown()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    # Announced only now, so that whoever waits for it can stop us cleanly.
    click.echo(f"Echoing on {show_address((host, server.port))} (Ctrl-C to stop)", err=True)
    server.serve_forever()


@main.command("multiconn-client", cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.argument("more", nargs=-1, metavar="[MESSAGE]...")
@click.option(
    "--connections",
    "-c",
    type=click.IntRange(1, 100_000),
    default=2,
    show_default=True,
    help="Connections to open at once.",
)
@click.option(
    "--messages",
    "messages",
    multiple=True,
    metavar="TEXT",
    help="A message each connection sends (repeatable; MESSAGE arguments do the same). "
    "Default: two short messages.",
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds for the whole run.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary.")
@friendly_errors
def multiconn_client(
    host: str,
    port: int,
    connections: int,
    messages: tuple[str, ...],
    timeout: float,
    quiet: bool,
    more: tuple[str, ...],
) -> None:
    """The guide's multi-connection client: N connections, each sends every
    message, reads the echoes back and checks the byte counts.

    \b
    Example:
      framewire multiconn-client 127.0.0.1 65432 -c 3 "Message 1" "Message 2"
    """
    from framewire.client import concurrent as multiclient

    host, port = server_address(host, port)
    texts = [*messages, *more] or ["Message 1 from client.", "Message 2 from client."]
    payloads = [t.encode() for t in texts]
    start = time.monotonic()
    reports = multiclient.echo_concurrently(
        host,
        port,
        payloads,
        connections=connections,
        timeout=timeout,
        on_event=None if quiet else click.echo,
    )
    elapsed = time.monotonic() - start
    expected = b"".join(payloads)
    bad = [r for r in reports if r.error is not None or r.data != expected]
    for report in bad:
        why = report.error or f"echo mismatch ({report.received} of {len(expected)} bytes)"
        click.echo(f"connection {report.id}: {why}", err=True)
    sent = sum(r.sent for r in reports)
    received = sum(r.received for r in reports)
    click.echo(
        f"{connections} connections, {len(texts)} messages each: {sent} bytes sent, {received} received, "
        f"{connections - len(bad)} complete, {len(bad)} failed, in {elapsed * 1000:.1f} ms"
    )
    if bad:
        raise click.exceptions.Exit(1)
