"""Socket errors, translated in one place.

The clients and the command line see the built-in exceptions the guide's
quick reference names (``ConnectionRefusedError``, ``TimeoutError``,
``ConnectionResetError``), each with a sentence that says which peer and
what to do, instead of a bare errno.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
from collections.abc import Iterator
from typing import Any

__all__ = ["accept", "connect", "describe", "translated"]


@contextlib.contextmanager
def translated(host: str, port: int, timeout: float | None = None) -> Iterator[None]:
    """Re-raise socket errors of an exchange with ``host:port`` with a clear sentence."""
    where = f"{host}:{port}"
    try:
        yield
    except ConnectionRefusedError:
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"nothing is listening on {where} (connection refused)"
        ) from None
    except TimeoutError:
        after = f" within {timeout:g} s" if timeout is not None else ""
        raise TimeoutError(errno.ETIMEDOUT, f"no answer from {where}{after}") from None
    except (BrokenPipeError, ConnectionAbortedError, ConnectionResetError) as exc:
        raise ConnectionResetError(
            exc.errno or errno.ECONNRESET, f"{where} reset the connection ({exc.strerror or exc})"
        ) from None
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None


def connect(host: str, port: int, timeout: float | None) -> socket.socket:
    """A connected TCP socket with TCP_NODELAY, errors translated."""
    with translated(host, port, timeout):
        sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def describe(exc: OSError) -> str:
    """One line for a person about a socket error."""
    return exc.strerror or str(exc) or type(exc).__name__


def accept(listener: socket.socket, log: logging.Logger) -> tuple[socket.socket, Any] | None:
    """One pending connection from a non-blocking listener, made non-blocking,
    or None when there is none or accept failed (logged)."""
    try:
        sock, addr = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        log.warning("accept failed: %s", exc)
        return None
    sock.setblocking(False)
    return sock, addr
