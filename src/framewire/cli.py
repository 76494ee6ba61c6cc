"""The ``framewire`` command line: the guide's programs and the wire tools.

Every failure a person can cause (a port in use, nothing listening, a bad
option) ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import errno
import functools
import importlib.resources
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click

from framewire import __version__, capture, limits, loadgen, multiclient, rawecho, wireview
from framewire import ping as ping_module
from framewire import proxy as proxy_module
from framewire import sockets as sockets_module
from framewire.app import load_handler
from framewire.client import Client
from framewire.errors import ErrorResponse, ProtocolError
from framewire.message import Message
from framewire.netio import describe
from framewire.protocol import Decoder, encode_many
from framewire.server import Server, raise_descriptor_limit

log = logging.getLogger("framewire.cli")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 65432

P = ParamSpec("P")
R = TypeVar("R")


def _fail(text: str, code: int = 1) -> click.exceptions.Exit:
    click.echo(f"framewire: {text}", err=True)
    return click.exceptions.Exit(code)


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the errors a person can cause into one line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ErrorResponse as exc:
            raise _fail(f"the server answered with an error: {exc.code}: {exc.message}") from None
        except ProtocolError as exc:
            raise _fail(f"protocol error from the peer: {exc}") from None
        except OSError as exc:
            raise _fail(describe(exc)) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None

    return wrapper


def listen_or_fail(host: str, port: int) -> socket.socket:
    """A listening socket, or one clear line when the port cannot be had."""
    try:
        return rawecho.listen(host, port)
    except OSError as exc:
        raise _bind_error(exc, host, port) from None


def _bind_error(exc: OSError, host: str, port: int) -> click.exceptions.Exit:
    if exc.errno == errno.EADDRINUSE:
        return _fail(
            f"port {port} on {host} is already in use: stop the program using it "
            f"(ss -ltnp shows which) or choose another with --port"
        )
    if exc.errno == errno.EACCES:
        return _fail(f"no permission to listen on port {port}: ports below 1024 need root; choose another")
    return _fail(f"cannot listen on {host}:{port}: {describe(exc)}")


def host_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to use.")(fn)


def port_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="TCP port."
    )(fn)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="info: a line per connection; debug: a line per message.",
)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="framewire")
def main() -> None:
    """framewire: speak the framed JSON-header message protocol over TCP.

    \b
    Start the demo server, then ask it something from a second terminal:
      framewire serve
      framewire request 127.0.0.1 65432 search morpheus
    """
    # What a peer sent may hold text no terminal encoding can show (a lone
    # surrogate from unicode_escape content): escaped, never a traceback.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


# -- the guide's raw-bytes programs ---------------------------------------------


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
    listener = listen_or_fail(host, port)
    click.echo(f"Listening on {host}:{listener.getsockname()[1]} for one client", err=True)
    rawecho.echo_server_once(listener, on_event=lambda line: click.echo(line, err=True))


@main.command("echo-client")
@host_option
@port_option
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the echo.")
@click.argument("text", default="Hello, world")
@friendly_errors
def echo_client(host: str, port: int, timeout: float, text: str) -> None:
    """Send TEXT to an echo server and print what comes back.

    \b
    Example:
      framewire echo-client --port 65432 "Hello, world"
    """
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
    setup_logging(log_level)
    server = rawecho.MulticonnEchoServer(listen_or_fail(host, port))

    def on_signal(signum: int, frame: object) -> None:
        server.shutdown()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    # Announced only now, so that whoever waits for it can stop us cleanly.
    click.echo(f"Echoing on {host}:{server.port} (Ctrl-C to stop)", err=True)
    server.serve_forever()


@main.command("multiconn-client")
@host_option
@port_option
@click.option("--connections", "-n", type=click.IntRange(1, 100_000), default=2, show_default=True)
@click.option(
    "--messages",
    "messages",
    multiple=True,
    metavar="TEXT...",
    help="The messages each connection sends (one or more). Default: two short messages.",
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds for the whole run.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary.")
@click.argument("more", nargs=-1, metavar="")
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
      framewire multiconn-client --port 65432 --connections 3 --messages "Message 1" "Message 2"
    """
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


# -- the application server and client ------------------------------------------


def _limit_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--max-header-size", type=click.IntRange(2, 65535), default=limits.MAX_HEADER_SIZE,
                     show_default=True, help="Largest JSON header, bytes."),
        click.option("--max-content-length", type=click.IntRange(0), default=limits.MAX_CONTENT_LENGTH,
                     show_default=True, help="Largest content, bytes."),
        click.option("--message-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=limits.MESSAGE_TIMEOUT, show_default=True,
                     help="Seconds from a message's first byte to its last."),
        click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True),
                     default=limits.IDLE_TIMEOUT, show_default=True,
                     help="Seconds a connection may sit idle."),
        click.option("--max-connections", type=click.IntRange(1), default=limits.MAX_CONNECTIONS,
                     show_default=True, help="Connections at once; more get server-busy."),
        click.option("--high-water", type=click.IntRange(1), default=limits.HIGH_WATER, show_default=True,
                     help="Unsent response bytes per connection before it stops being read."),
        click.option("--max-in-flight", type=click.IntRange(1), default=limits.MAX_IN_FLIGHT,
                     show_default=True, help="Unsent responses per connection before it stops being read."),
        click.option("--grace", type=click.FloatRange(min=0), default=limits.GRACE, show_default=True,
                     help="Seconds to answer in-flight requests on SIGTERM/SIGINT."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


@main.command()
@host_option
@port_option
@click.option(
    "--app",
    "app_spec",
    default="search",
    show_default=True,
    metavar="search|echo|MODULE:CALLABLE",
    help="The application: the guide's search demo, echo, or your handler (a callable Message -> Message).",
)
@_limit_options
@log_level_option
@friendly_errors
def serve(host: str, port: int, app_spec: str, log_level: str, **limit_values: Any) -> None:
    """The application server: answers every request with its app.

    Keep-alive and pipelining; clean shutdown on Ctrl-C or SIGTERM.

    \b
    Example:
      framewire serve --port 65432 --app search
      framewire request 127.0.0.1 65432 search morpheus     (from a second terminal)
    """
    setup_logging(log_level)
    if "" not in sys.path:
        sys.path.insert(0, "")  # MODULE:CALLABLE from the current folder, as python -m does
    try:
        handler = load_handler(app_spec)
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    server = Server(handler, host, port, **limit_values)
    # Each connection is a descriptor: make room for the connection limit.
    wanted = server.max_connections + 64
    have = raise_descriptor_limit(wanted)
    if have < wanted:
        log.warning(
            "the descriptor limit is %d, below the %d that --max-connections %d needs; "
            "past it, accepts pause until descriptors free up (raise it with ulimit -n)",
            have,
            wanted,
            server.max_connections,
        )
    try:
        server.bind()
    except OSError as exc:
        raise _bind_error(exc, host, port) from None
    bound_host, bound_port = server.address

    # A request to try, for the applications whose requests we know.
    hint = {
        "search": "search morpheus",
        "echo": "--text hello",
    }.get(app_spec)

    def ready() -> None:
        banner = f"framewire: serving the {app_spec} app on {bound_host}:{bound_port} (Ctrl-C to stop)."
        if hint is not None:
            banner += f" Try:\n  framewire request {bound_host} {bound_port} {hint}"
        click.echo(banner, err=True)

    server.serve_forever(handle_signals=True, on_ready=ready)


def _build_request(action: str | None, value: str | None, json_text: str | None, text: str | None,
                   file: Path | None) -> Message:  # fmt: skip
    chosen = [
        name
        for name, given in (("--json", json_text), ("--text", text), ("--file", file))
        if given is not None
    ]
    if len(chosen) > 1:
        raise click.UsageError(f"give only one of {', '.join(chosen)}")
    if json_text is not None:
        try:
            return Message.from_json(json.loads(json_text))
        except ValueError as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--json") from None
    if text is not None:
        return Message.from_text(text)
    if file is not None:
        return Message.from_bytes(file.read_bytes(), content_type="binary/custom-client-binary-type")
    if action is None or value is None:
        raise click.UsageError("give ACTION and VALUE, or one of --json, --text, --file")
    if action == "search":
        return Message.from_json({"action": "search", "value": value})
    return Message.from_bytes((action + value).encode(), content_type="binary/custom-client-binary-type")


def _show(response: Message) -> str:
    if response.is_json:
        body = response.json()
        try:
            if isinstance(body, dict) and set(body) == {"result"}:
                result = body["result"]
                return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
            return json.dumps(body, ensure_ascii=False, indent=2)
        except (RecursionError, ValueError):
            return response.text()  # too deep to write back as JSON: as sent
    if response.is_text:
        return response.text()
    return repr(response.content)


@main.command()
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.argument("action", required=False)
@click.argument("value", required=False)
@click.option("--json", "json_text", metavar="JSON", help="Send this JSON as text/json content.")
@click.option("--text", metavar="TEXT", help="Send this text as text/plain (utf-8) content.")
@click.option("--file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Send this file's bytes as binary content.")  # fmt: skip
@click.option("--count", type=click.IntRange(1), default=1, show_default=True,
              help="Send N copies pipelined on one connection.")  # fmt: skip
@click.option("--show-header", is_flag=True, help="Print each response's header too.")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds for the whole exchange."
)
@friendly_errors
def request(
    host: str,
    port: int,
    action: str | None,
    value: str | None,
    json_text: str | None,
    text: str | None,
    file: Path | None,
    count: int,
    show_header: bool,
    timeout: float,
) -> None:
    """The guide's application client: send a request, print the response.

    `search VALUE` sends the text/json search request; any other ACTION sends
    binary content ACTION+VALUE.

    \b
    Examples:
      framewire request 127.0.0.1 65432 search morpheus
      framewire request 127.0.0.1 65432 binary "some bytes"
      framewire request 127.0.0.1 65432 --json '{"action": "search", "value": "ring"}' --show-header
    """
    message = _build_request(action, value, json_text, text, file)
    with Client(host, port, timeout=timeout, check=False) as client:
        responses = [client.request(message)] if count == 1 else client.request_many([message] * count)
    failed = 0
    for response in responses:
        if show_header:
            try:
                click.echo(json.dumps(response.header, ensure_ascii=False))
            except (RecursionError, ValueError):  # too deep to write back: as sent
                click.echo(response.wire_parts()[0][2:].decode("utf-8", "backslashreplace"))
        if response.is_error:
            failed += 1
            error = response.error()
            assert error is not None
            click.echo(f"error from the server: {error.code}: {error.message}", err=True)
        else:
            click.echo(_show(response))
    if failed:
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("host", default=DEFAULT_HOST)
@click.argument("port", type=click.IntRange(1, 65535), default=DEFAULT_PORT)
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
) -> None:
    """Load a server: throughput and latency percentiles.

    Each of the connections keeps DEPTH requests in flight; the run ends
    after DURATION seconds or COUNT responses. Exits 1 if any error or
    mismatch was seen.

    \b
    Example:
      framewire serve --app echo --port 65432 --log-level warning &
      framewire bench 127.0.0.1 65432 -c 16 -d 16 -s 64 -t 5 --check
    """
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
    )  # fmt: skip
    if live:
        click.echo(err=True)
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
    if result.errors or result.mismatches or not result.responses:
        raise click.exceptions.Exit(1)


def _address(text: str, default_host: str | None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or (default_host or "")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        wanted = "[HOST:]PORT" if default_host else "HOST:PORT"
        raise click.BadParameter(f"{text!r} is not {wanted}")
    return host, int(port)


@main.command("proxy")
@click.option("--listen", "listen_at", required=True, metavar="[HOST:]PORT", help="Where clients connect.")
@click.option("--upstream", required=True, metavar="HOST:PORT", help="The server to forward to.")
@click.option("--log", "log_file", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Also write every message as a JSON line to this file.")  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="Print nothing (with --log).")
def proxy_command(listen_at: str, upstream: str, log_file: Path | None, quiet: bool) -> None:
    """A transparent proxy that prints every message in both directions.

    Bytes pass unchanged. Each message is shown with its time, connection
    (#N), direction (-> to the server, <- to the client), header and content:
    JSON pretty, text as text, binary as a hex/ASCII preview. A malformed
    stream is reported and still forwarded.

    \b
    Example:
      framewire proxy --listen 7000 --upstream 127.0.0.1:65432 --log wire.jsonl
      framewire request 127.0.0.1 7000 search morpheus      (from a second terminal)
    """
    listen = _address(listen_at, "127.0.0.1")
    target = _address(upstream, None)
    sink = log_file.open("a", encoding="utf-8", errors="backslashreplace") if log_file is not None else None

    def show(event: wireview.Event) -> None:
        if not quiet:
            click.echo("\n".join(wireview.event_lines(event)))
        if sink is not None:
            sink.write(wireview.json_line(wireview.event_record(event)) + "\n")
            sink.flush()

    try:
        proxy = proxy_module.Proxy(listen, target, show)
    except OSError as exc:
        raise _bind_error(exc, listen[0], listen[1]) from None
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: proxy.shutdown())
    click.echo(
        f"framewire: proxy on {listen[0]}:{proxy.port} -> {target[0]}:{target[1]} (Ctrl-C to stop)", err=True
    )
    try:
        proxy.serve_forever()
    finally:
        if sink is not None:
            sink.close()


@main.command("decode")
@click.argument("capture_file", metavar="FILE", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True,
              help="The framewire server's TCP port in the capture.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead.")
def decode_command(capture_file: Path, port: int, as_json: bool) -> None:
    """Every framewire message in a packet capture (pcap or pcapng).

    Reassembles each TCP connection on PORT (segments in sequence order,
    retransmissions dropped, out-of-order segments held until the gap
    fills) and prints the messages as the proxy does.

    \b
    Example:
      tshark -i lo -f "tcp port 65432" -w wire.pcapng      (or tcpdump -i lo -w wire.pcap port 65432)
      framewire decode wire.pcapng --port 65432
    """
    found = 0
    try:
        with capture_file.open("rb") as handle:
            for event in capture.read_capture(handle, port):
                found += event.message is not None
                if as_json:
                    click.echo(wireview.json_line(wireview.event_record(event)))
                else:
                    click.echo("\n".join(wireview.event_lines(event)))
    except capture.CaptureError as exc:
        raise _fail(f"{capture_file}: {exc}") from None
    if not as_json:
        click.echo(f"{found} messages on port {port}")


def _lua_source() -> str:
    return importlib.resources.files("framewire").joinpath("wireshark/framewire.lua").read_text("utf-8")


@main.command("wireshark")
@click.option("--install", is_flag=True, help="Copy the dissector to your Wireshark plugins folder.")
@click.option("--print", "print_it", is_flag=True, help="Print the dissector (Lua) to stdout.")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Plugins folder for --install [default: ~/.local/lib/wireshark/plugins].")  # fmt: skip
def wireshark_command(install: bool, print_it: bool, folder: Path | None) -> None:
    """The Wireshark dissector for framewire (Lua), to install or print.

    It registers on TCP port 65432 (more ports in Preferences > Protocols >
    FRAMEWIRE), reassembles messages across TCP segments, and shows each
    header field as a filterable field: framewire.content_type,
    framewire.content_length, framewire.content_encoding, framewire.byteorder,
    framewire.status, framewire.header_length, framewire.content.

    \b
    Example:
      framewire wireshark --install
      tshark -r wire.pcapng -Y framewire -T fields -e framewire.content_type -e framewire.content_length
      tshark -X lua_script:framewire.lua -o framewire.ports:7000 -r wire.pcapng -Y framewire
    """
    if install == print_it:
        raise click.UsageError("give one of --install or --print")
    source = _lua_source()
    if print_it:
        click.echo(source, nl=False)
        return
    target_dir = folder or Path.home() / ".local" / "lib" / "wireshark" / "plugins"
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / "framewire.lua"
        target.write_text(source, encoding="utf-8")
    except OSError as exc:
        raise _fail(f"cannot install into {target_dir}: {describe(exc)}") from None
    click.echo(f"installed {target}; restart Wireshark (or run tshark) to load it")


@main.command("sockets")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Every TCP socket with this port at either end, whatever the process.")  # fmt: skip
def sockets_command(port: int | None) -> None:
    """The netstat view of framewire's sockets on this host.

    Local and remote address, TCP state, Recv-Q and Send-Q (from
    /proc/net/tcp) and the owning process. Without --port: the sockets of
    framewire processes and of their peers on this host. Without root, the
    process of another user's socket shows as "-".

    \b
    Example:
      framewire sockets --port 65432
    """
    try:
        rows = sockets_module.list_sockets(port)
    except PermissionError as exc:
        raise _fail(str(exc)) from None
    if not rows:
        click.echo("no framewire sockets" if port is None else f"no TCP sockets on port {port}")
        return
    click.echo(sockets_module.render(rows))
    if any(row.pid is None and row.state != "TIME_WAIT" for row in rows) and os.geteuid() != 0:
        click.echo('(a "-" process belongs to another user: run as root to see it)', err=True)


@main.command("ping")
@click.argument("host")
@click.argument("port", type=click.IntRange(1, 65535))
@click.option("-c", "--count", type=click.IntRange(1), default=None, help="Stop after COUNT probes.")
@click.option("-i", "--interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between probes.")  # fmt: skip
@click.option("-W", "--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Seconds to wait for each reply.")  # fmt: skip
@click.option(
    "-s", "--size", type=click.IntRange(0), default=56, show_default=True, help="Content bytes per probe."
)
@click.option("--connect", "connect_only", is_flag=True, help="Time the TCP connect alone (any server).")
def ping_command(
    host: str, port: int, count: int | None, interval: float, timeout: float, size: int, connect_only: bool
) -> None:
    """Application-level ping: a real request per probe on one connection.

    framewire servers answer probes themselves (header extension
    framewire-ping), whatever their application; other servers answer them as
    binary requests, and a server that closes after each answer (the guide's)
    is reconnected to. Ends after COUNT probes or Ctrl-C, with iputils'
    summary. Exit status: 0 if any reply came, 1 if none, 2 on other errors.

    \b
    Example:
      framewire ping 127.0.0.1 65432 -c 5 -i 0.2
      framewire ping 127.0.0.1 22 --connect -c 3
    """
    target = f"{host}:{port}"
    what = "TCP connect to" if connect_only else f"{size} bytes of content to"
    click.echo(f"FRAMEWIRE PING {what} {target}")
    stats = ping_module.PingStats()
    try:
        for reply in ping_module.ping(
            host, port, count=count, interval=interval, timeout=timeout, size=size, connect_only=connect_only
        ):
            stats.transmitted += 1
            if reply.rtt_ms is None:
                click.echo(f"from {target}: seq={reply.seq} no reply ({reply.note})")
                continue
            stats.received += 1
            stats.rtts.append(reply.rtt_ms)
            head = "connected to" if connect_only else f"{reply.size} bytes from"
            note = f" {reply.note}" if reply.note else ""
            click.echo(f"{head} {target}: seq={reply.seq} time={ping_module.rtt_text(reply.rtt_ms)} ms{note}")
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        if not stats.transmitted:
            raise _fail(describe(exc), 2) from None
        click.echo(f"framewire: {describe(exc)}", err=True)
    stats.ended = time.monotonic()
    click.echo()
    for line in stats.summary(target):
        click.echo(line)
    raise click.exceptions.Exit(0 if stats.received else 1)


@main.command()
@click.option("--seed", type=int, default=None, help="Seed for the random split points.")
def demo(seed: int | None) -> None:
    """Encode three messages, split the bytes at random, decode them again.

    A look at the protocol core with no network: what goes on the wire and
    how the decoder puts it back together whatever way TCP splits it.

    \b
    Example:
      framewire demo --seed 7
    """
    rng = random.Random(seed)
    messages = [
        Message.from_json({"action": "search", "value": "morpheus"}),
        Message.from_text("Hello, world \N{DOG FACE}", encoding="utf-16"),
        Message.from_bytes(b"\x00\x01binary\xff", content_type="binary/custom-client-binary-type"),
    ]
    wire = encode_many(messages)
    click.echo(f"{len(messages)} messages encode to {len(wire)} bytes:")
    for message in messages:
        head, content = message.wire_parts()
        click.echo(f"  {head[:2].hex(' ')} | {head[2:].decode()} | {content!r}")
    cuts = sorted(rng.sample(range(1, len(wire)), 5))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    click.echo(f"Split into {len(pieces)} reads of {', '.join(str(len(p)) for p in pieces)} bytes.")
    decoder = Decoder()
    decoded: list[Message] = []
    for piece in pieces:
        for message in decoder.feed(piece):
            shown = (
                message.json() if message.is_json else message.text() if message.is_text else message.content
            )
            click.echo(f"  decoded {message.content_type} ({message.content_encoding}): {shown!r}")
            decoded.append(message)
    decoder.feed(b"")
    if decoded != messages:
        raise click.ClickException("the decoded messages differ from those sent")
    click.echo("Every message decoded, identical to what was sent.")
