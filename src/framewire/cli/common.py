"""The ``framewire`` command line: the guide's programs and the wire tools.

Every failure a person can cause (a port in use, nothing listening, a bad
option) ends as one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click

from framewire import __version__
from framewire.core.errors import ErrorResponse, ProtocolError
from framewire.io.netio import describe

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
