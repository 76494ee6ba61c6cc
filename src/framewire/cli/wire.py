"""The wire tools: proxy, decode, wireshark, sockets, ping."""

from __future__ import annotations

import importlib.resources
import os
import signal
import time
from pathlib import Path
from typing import Any

import click

from framewire.cli.common import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    PORT,
    ClientCommand,
    _bind_error,
    _fail,
    main,
    server_address,
    tls_client_options,
    tls_for,
)
from framewire.io.netio import describe, where


@main.command("proxy", cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.option(
    "--host", "listen_host", default=DEFAULT_HOST, show_default=True, help="The address clients connect to."
)
@click.option(
    "--port",
    "listen_port",
    type=click.IntRange(0, 65535),
    default=7000,
    show_default=True,
    help="The port clients connect to (0: any free one).",
)
@click.option("--unix", default=None, metavar="PATH", help="Listen on this Unix socket instead.")
@click.option(
    "--log",
    "log_file",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also write every message as a JSON line to this file.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing (with --log).")  # fmt: skip
def proxy_command(
    host: str,
    port: int,
    listen_host: str,
    listen_port: int,
    unix: str | None,
    log_file: Path | None,
    quiet: bool,
) -> None:
    """A transparent proxy that prints every message in both directions.

    Bytes pass unchanged. Each message is shown with its time, connection
    (#N), direction (-> to the server, <- to the client), header and content:
    JSON pretty, text as text, binary as a hex/ASCII preview. A malformed
    stream is reported and still forwarded.

    The server to forward to is HOST PORT (or unix:PATH), as for every
    client command; where clients connect is --host/--port (or --unix), as
    for every server.

    \b
    Example:
      framewire proxy 127.0.0.1 65432 --port 7000 --log wire.jsonl
      framewire request 127.0.0.1 7000 search morpheus      (from a second terminal)
    """
    from framewire.tools import proxy as proxy_module
    from framewire.tools import wireview

    target = server_address(host, port)
    listen = (f"unix:{unix}", 0) if unix is not None else (listen_host, listen_port)
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
        f"framewire: proxy on {where(listen[0], proxy.port)} -> {where(*target)} (Ctrl-C to stop)", err=True
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
    from framewire.tools import capture, wireview

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
    if not found:
        with capture_file.open("rb") as handle:
            ports = capture.server_ports(handle)
        others = ", ".join(f"{p} ({n})" for p, n in ports[:8] if p != port)
        hint = (
            f"the capture's TCP servers: {others}; give one with --port"
            if others
            else "it has no TCP traffic"
        )
        raise _fail(f"no framewire message on port {port} in {capture_file}: {hint}")


def _lua_source() -> str:
    return importlib.resources.files("framewire.tools").joinpath("wireshark/framewire.lua").read_text("utf-8")


@main.command("wireshark")
@click.option("--install", is_flag=True, help="Copy the dissector to your Wireshark plugins folder.")
@click.option("--print", "print_it", is_flag=True, help="Print the dissector (Lua) to stdout (the default).")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Plugins folder for --install [default: ~/.local/lib/wireshark/plugins].")  # fmt: skip
def wireshark_command(install: bool, print_it: bool, folder: Path | None) -> None:
    """The Wireshark dissector for framewire (Lua), to install or print.

    It registers on TCP port 65432 (more ports in Preferences > Protocols >
    FRAMEWIRE), reassembles messages across TCP segments, and shows each
    header field as a filterable field: framewire.content_type,
    framewire.content_length, framewire.content_encoding, framewire.byteorder,
    framewire.status, framewire.header_length, framewire.content.

    Over TLS: list the port under "TLS ports" (framewire.tls_ports), and
    give Wireshark the key log that a framewire client or server writes when
    SSLKEYLOGFILE is set (tls.keylog_file): the framewire fields then show
    inside the decrypted TLS.

    \b
    Example:
      framewire wireshark --install
      tshark -r wire.pcapng -Y framewire -T fields -e framewire.content_type -e framewire.content_length
      tshark -X lua_script:framewire.lua -o framewire.ports:7000 -r wire.pcapng -Y framewire
    \b
    Over TLS:
      SSLKEYLOGFILE=keys.log framewire request localhost 7443 --tls-ca ca.pem search ring
      tshark -o framewire.tls_ports:7443 -o tls.keylog_file:keys.log -r tls.pcapng -Y framewire
    """
    if install and print_it:
        raise click.UsageError("give one of --install or --print")
    source = _lua_source()
    if not install:  # --print, the default
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
    from framewire.tools import sockets as sockets_module

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


@main.command("ping", cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.option("-n", "--count", type=click.IntRange(1), default=None, help="Stop after COUNT probes.")
@click.option("-i", "--interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between probes.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Seconds to wait for each reply.")  # fmt: skip
@click.option(
    "-s", "--size", type=click.IntRange(0), default=56, show_default=True, help="Content bytes per probe."
)
@click.option("--connect", "connect_only", is_flag=True,
              help="Time the connect alone (with TLS, and its handshake): any server.")  # fmt: skip
@tls_client_options
def ping_command(
    host: str,
    port: int,
    count: int | None,
    interval: float,
    timeout: float,
    size: int,
    connect_only: bool,
    tls: tuple[Any, str | None] | None,
) -> None:
    """Application-level ping: a real request per probe on one connection.

    framewire servers answer probes themselves (header extension
    framewire-ping), whatever their application; other servers answer them as
    binary requests, and a server that closes after each answer (the guide's)
    is reconnected to. Ends after COUNT probes or Ctrl-C, with iputils'
    summary. Exit status: 0 if any reply came, 1 if none, 2 on other errors.

    \b
    Example:
      framewire ping 127.0.0.1 65432 -n 5 -i 0.2
      framewire ping 127.0.0.1 22 --connect -n 3
      framewire ping unix:/tmp/framewire.sock -n 3
    """
    from framewire.tools import ping as ping_module

    host, port = server_address(host, port)
    context, name = tls_for(host, tls)
    target = where(host, port)
    what = (
        ("TLS" if context is not None else "TCP") + " connect to"
        if connect_only
        else f"{size} bytes of content to"
    )
    click.echo(f"FRAMEWIRE PING {what} {target}")
    stats = ping_module.PingStats()
    try:
        for reply in ping_module.ping(
            host,
            port,
            count=count,
            interval=interval,
            timeout=timeout,
            size=size,
            connect_only=connect_only,
            ssl_context=context,
            server_hostname=name,
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
