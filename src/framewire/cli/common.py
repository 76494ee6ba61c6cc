"""The ``framewire`` command line: the guide's programs and the wire tools.

Every failure a person can cause (a port in use, nothing listening, a bad
option) ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import click

from framewire import __version__
from framewire.core.errors import ConnectionClosed, ErrorResponse, IncompleteMessage, ProtocolError
from framewire.io.netio import UNIX, describe, plain_host, split_address, unix_path

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
    from framewire.tools import rawecho

    try:
        return rawecho.listen(host, port)
    except OSError as exc:
        raise _bind_error(exc, host, port) from None


def _bind_error(exc: OSError, host: str, port: int) -> click.exceptions.Exit:
    path = unix_path(host)
    if path is not None:
        if exc.errno == errno.EADDRINUSE:
            return _fail(f"{host} is in use by a running server: stop it or choose another --unix path")
        return _fail(f"cannot listen on {host}: {describe(exc)}")
    if exc.errno == errno.EADDRINUSE:
        return _fail(
            f"port {port} on {host} is already in use: stop the program using it "
            f"(ss -ltnp shows which) or choose another with --port"
        )
    if exc.errno == errno.EACCES:
        return _fail(f"no permission to listen on port {port}: ports below 1024 need root; choose another")
    return _fail(f"cannot listen on {host}:{port}: {describe(exc)}")


class ClientCommand(click.Command):
    """A command whose server is the positional ``HOST PORT``, where HOST may
    also be ``unix:PATH`` and then PORT is left out (``-`` stands for it)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value: set[str] = set()
        for param in self.params:
            if isinstance(param, click.Option) and not param.is_flag and not param.count:
                takes_value.update(param.opts)
                takes_value.update(param.secondary_opts)
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                i += 1
                break
            if arg.startswith("-") and arg != "-":
                i += 2 if arg in takes_value else 1
                continue
            break
        if i < len(args) and args[i].startswith(UNIX):
            args = [*args[: i + 1], "-", *args[i + 1 :]]
        return super().parse_args(ctx, args)


class PortType(click.ParamType):  # type: ignore[type-arg]
    """A TCP port, or ``-`` (0): none, for a ``unix:PATH`` host."""

    name = "port"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        if value == "-":
            return 0
        try:
            port = int(value)
        except ValueError:
            self.fail(f"{value!r} is not a port number", param, ctx)
        if not 1 <= port <= 65535:
            self.fail(f"{port} is not in the range 1-65535", param, ctx)
        return port


PORT = PortType()


def server_address(host: str, port: int) -> tuple[str, int]:
    """The HOST PORT of a client command, checked: ``[::1]`` as ``::1``; a
    port unless HOST is ``unix:PATH``."""
    if unix_path(host) is not None:
        return host, 0
    if port == 0:
        raise click.UsageError(f"give the server's PORT after {host} (or a unix:PATH address)")
    return plain_host(host), port


def tls_for(host: str, tls: tuple[Any, str | None] | None) -> tuple[Any, str | None]:
    """The TLS context and server name of a client command (None, None: plain)."""
    if tls is None:
        return None, None
    context, name = tls
    if name is None and unix_path(host) is not None:
        raise click.UsageError("TLS over a unix: address needs --tls-server-name (the certificate's name)")
    return context, name


@contextlib.contextmanager
def plain_hint(tls: object, answered: Callable[[], int] | None = None) -> Iterator[None]:
    """A plain client cut off by a server: perhaps that server speaks TLS
    (not when ``answered()`` says answers came: it speaks the protocol, and
    closed after them)."""
    try:
        yield
    except (ConnectionResetError, ConnectionClosed, IncompleteMessage) as exc:
        if tls is not None:
            raise
        text = describe(exc) if isinstance(exc, OSError) else str(exc)
        count = answered() if answered is not None else 0
        if count:
            raise _fail(f"{text} (after {count} answer{'s' if count > 1 else ''})") from None
        # Two servers close a plain client without a word: one that speaks
        # TLS, and one that expects a PROXY header first (from its balancer).
        raise _fail(
            f"{text}: if the server speaks TLS, add --tls (or --tls-ca FILE); if it expects a PROXY "
            "header (--proxy-protocol), connect through its load balancer"
        ) from None


def tls_client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--tls``, ``--tls-ca``, ``--tls-cert``, ``--tls-key``,
    ``--tls-server-name``; the command receives ``tls``: None, or the
    context and the name to check the server's certificate against."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        on = kwargs.pop("tls_on")
        ca, cert, key = kwargs.pop("tls_ca"), kwargs.pop("tls_cert"), kwargs.pop("tls_key")
        name = kwargs.pop("tls_server_name")
        if key is not None and cert is None:
            raise click.UsageError("--tls-key goes with --tls-cert")
        kwargs["tls"] = None
        if on or ca or cert or name:
            from framewire.io.tls import client_context

            try:
                kwargs["tls"] = (client_context(ca, cert, key), name)
            except OSError as exc:
                raise _fail(describe(exc), 2) from None
        return fn(*args, **kwargs)

    options = [
        click.option("--tls", "tls_on", is_flag=True, help="Speak TLS; the server's certificate is checked "
                     "against the system's trust store (or --tls-ca)."),
        click.option("--tls-ca", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Trust the CA in this PEM file (implies --tls)."),
        click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="This client's certificate (PEM), for servers that require one (implies --tls)."),
        click.option("--tls-key", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="The key of --tls-cert, when it is not in the same file."),
        click.option("--tls-server-name", default=None, metavar="NAME",
                     help="The name the server's certificate must carry (default: HOST)."),
    ]  # fmt: skip
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def tls_server_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--tls-cert``, ``--tls-key``, ``--tls-client-ca``; the command
    receives ``ssl_context`` (None: plain TCP)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cert, key, client_ca = kwargs.pop("tls_cert"), kwargs.pop("tls_key"), kwargs.pop("tls_client_ca")
        if (key is not None or client_ca is not None) and cert is None:
            raise click.UsageError("--tls-key and --tls-client-ca go with --tls-cert")
        kwargs["ssl_context"] = None
        if cert is not None:
            from framewire.io.tls import server_context

            try:
                kwargs["ssl_context"] = server_context(cert, key, client_ca)
            except OSError as exc:
                raise _fail(describe(exc), 2) from None
        return fn(*args, **kwargs)

    options = [
        click.option("--tls-cert", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Serve TLS with this certificate chain (PEM); framewire certs DIR makes one."),
        click.option("--tls-key", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="The key of --tls-cert, when it is not in the same file."),
        click.option("--tls-client-ca", type=click.Path(dir_okay=False), default=None, metavar="FILE",
                     help="Mutual TLS: require client certificates signed by this CA (PEM)."),
    ]  # fmt: skip
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def unix_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--unix PATH`` and ``--unix-mode MODE`` for a server."""

    def mode(value: str | None) -> int | None:
        if value is None:
            return None
        try:
            number = int(value, 8)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an octal mode like 660") from None
        if not 0 <= number <= 0o777:
            raise click.BadParameter(f"{value!r} is not a mode between 000 and 777")
        return number

    fn = click.option("--unix-mode", default=None, metavar="MODE",
                      callback=lambda _ctx, _param, value: mode(value),
                      help="Permissions of the --unix socket file, in octal (e.g. 660).")(fn)  # fmt: skip
    return click.option(
        "--unix",
        "unix",
        type=click.Path(dir_okay=False),
        default=None,
        metavar="PATH",
        help="Listen on this Unix domain socket instead of TCP (a stale file is replaced; removed on exit).",
    )(fn)


def host_port(text: str, default_host: str | None) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``PORT`` alone (with a default host) or ``unix:PATH``."""
    try:
        return split_address(text, default_host)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def host_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to use.")(fn)


def port_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="TCP port."
    )(fn)


class JsonFormatter(logging.Formatter):
    """A log line as one JSON object: time, level, logger, message, the
    process id, and an access line's fields (framewire.server.access)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line.update(access)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(level: str, *, with_pid: bool = False, log_format: str = "text") -> None:
    """Log lines on stderr; with the process id where several processes
    share it; ``log_format="json"``: each line a JSON object."""
    pid = "[%(process)d] " if with_pid else ""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {pid}%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
    help="error: handlers that failed; warning: also refusals and peers closed for bad framing; info: also "
    "start, stop and a summary every --log-summary seconds (and with --access-log a line per request); "
    "debug: also a line per connection opened and closed.",
)

log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text lines, or one JSON object per line (for log collectors).",
)


def json_or_text(text: str) -> Any:
    """A command-line value: read as JSON when it is JSON (``'[1, 2]'``,
    ``3``, ``true``, ``'"007"'``), else the text as a string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_extensions(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """``--ext KEY=VALUE`` pairs as header extensions: VALUE read as JSON
    when it is JSON, else a string. Raises ``click.BadParameter``."""
    extensions: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--ext")
        if key in ("content-type", "content-encoding", "content-length", "byteorder"):
            raise click.BadParameter(f"{key} is a required key, not an extension", param_hint="--ext")
        extensions[key] = json_or_text(text)
    return extensions or None


ext_option = click.option(
    "--ext",
    "ext",
    multiple=True,
    metavar="KEY=VALUE",
    help="A header extension to send (repeatable); VALUE is JSON when it parses, else a string.",
)


def _show_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from framewire._build import build_name  # only for --version

    click.echo(f"framewire {__version__} ({build_name()})")
    ctx.exit()


@click.group(context_settings=CONTEXT)
@click.option(
    "-V",
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and the build (pure Python or compiled), and exit.",
)
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
