"""Socket errors, translated in one place.

The clients and the command line see the built-in exceptions the guide's
quick reference names (``ConnectionRefusedError``, ``TimeoutError``,
``ConnectionResetError``), each with a sentence that says which peer and
what to do, instead of a bare errno.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
import struct
from collections.abc import Iterator
from typing import Any

__all__ = ["connect", "describe", "dial", "listen", "readable_now", "resolve", "show_address", "translated"]


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


def resolve(host: str, port: int) -> tuple[int, Any]:
    """The address family and socket address for ``host:port`` (the first the
    resolver gives), or ``OSError`` naming the host."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
    return family, address


def dial(family: int, address: Any, *, linger_reset: bool = False) -> tuple[socket.socket, int]:
    """A non-blocking TCP socket (TCP_NODELAY) whose connect has started, and
    the errno of that start: 0 or EINPROGRESS mean under way (wait for it to
    be writable, then read SO_ERROR); anything else failed at once and the
    socket is closed. ``linger_reset`` closes with a reset, so that a client
    making many short connections leaves no ports in TIME_WAIT."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if linger_reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    code = sock.connect_ex(address)
    if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
        sock.close()
    return sock, code


def readable_now(fd: int) -> bool:
    """Whether bytes (or the end of the stream) wait on ``fd`` unread: a
    draining server reads them before it closes, rather than reset a peer
    whose last requests are still in the kernel. (``poll``, not ``select``:
    any descriptor number.)"""
    probe = select.poll()
    probe.register(fd, select.POLLIN)
    return bool(probe.poll(0))


def show_address(address: Any) -> str:
    """A socket address as a person reads it: ``127.0.0.1:7000``,
    ``[::1]:7000`` (IPv6 in brackets), a Unix path as itself."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) or "-"


def listen(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A listening TCP socket on ``host:port`` (SO_REUSEADDR), whatever the
    address family: ``127.0.0.1``, ``::1``, a host name, or ``::`` (both IPv6
    and IPv4, where the system allows one socket to take both). Raises
    ``OSError`` (``EADDRINUSE`` when the port is taken)."""
    if host in ("::", "") and socket.has_dualstack_ipv6():
        return socket.create_server((host or "::", port), family=socket.AF_INET6, backlog=backlog,
                                    dualstack_ipv6=True)  # fmt: skip
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
    return socket.create_server((host, port), family=family, backlog=backlog)
