"""Socket errors, translated in one place.

The clients and the command line see the built-in exceptions the guide's
quick reference names (``ConnectionRefusedError``, ``TimeoutError``,
``ConnectionResetError``), each with a sentence that says which peer and
what to do, instead of a bare errno.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import os
import select
import socket
import ssl
import stat
import struct
from collections.abc import Iterator
from typing import Any

from framewire.core import limits

__all__ = [
    "UNIX",
    "adopt_listener",
    "connect",
    "describe",
    "dial",
    "listen",
    "listen_unix",
    "listener_host",
    "open_listener",
    "plain_host",
    "raise_descriptor_limit",
    "readable_now",
    "remove_unix",
    "resolve",
    "set_keepalive",
    "show_address",
    "tls_problem",
    "translated",
    "unix_file",
    "unix_path",
    "unix_peer",
    "where",
]

#: How an address names a Unix domain socket, everywhere: ``unix:/run/app.sock``.
UNIX = "unix:"


def unix_path(host: str) -> str | None:
    """The socket path of a ``unix:PATH`` address, else None."""
    return host[len(UNIX) :] if host.startswith(UNIX) else None


def plain_host(host: str) -> str:
    """A host as the resolver takes it: ``[::1]`` (as it is printed) -> ``::1``."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def split_address(text: str, default_host: str | None = None) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``, ``PORT`` alone (with a default host)
    or ``unix:PATH`` (port 0) as ``(host, port)``; ``ValueError`` otherwise."""
    if unix_path(text) is not None:
        return text, 0
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or (default_host or "")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        wanted = "[HOST:]PORT or unix:PATH" if default_host else "HOST:PORT or unix:PATH"
        raise ValueError(f"{text!r} is not {wanted}")
    return host, int(port)


def where(host: str, port: int) -> str:
    """The address a person reads: ``127.0.0.1:7000``, ``[::1]:7000``, ``unix:/path``."""
    if host.startswith(UNIX):
        return host
    return show_address((plain_host(host), port))


#: Why a certificate was refused, as a person can act on it (OpenSSL's
#: X509 verify codes).
_VERIFY_HINTS = {
    10: "its certificate has expired",
    9: "its certificate is not yet valid",
    18: "its certificate is self-signed and not trusted (give its CA with --tls-ca)",
    19: "its certificate chain ends in a CA this side does not trust (give the CA with --tls-ca)",
    20: "its certificate is signed by a CA this side does not trust (give the CA with --tls-ca)",
    62: "its certificate is not valid for this host name (see --tls-server-name)",
    64: "its certificate is not valid for this IP address (see --tls-server-name)",
}
#: OpenSSL reasons for a failed handshake, in words.
_TLS_REASONS = {
    "WRONG_VERSION_NUMBER": "the server does not speak TLS on this port",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate (--tls-cert, --tls-key)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused this client's certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the server does not trust the CA of this client's certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server says this client's certificate has expired",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version both sides accept (1.2 or newer here)",
}


#: The same, as a server sees its clients' handshakes fail.
_TLS_REASONS_SERVER = {
    "HTTP_REQUEST": "the client spoke HTTP, not TLS",
    "WRONG_VERSION_NUMBER": "the client did not speak TLS (plain framewire on a TLS port?)",
    "UNSUPPORTED_PROTOCOL": "the client offered only TLS versions older than 1.2",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the client presented no certificate (mutual TLS requires one)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client refused the server's certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the CA of the server's certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client refused the server's certificate",
    "UNEXPECTED_EOF_WHILE_READING": "the client closed the connection during the handshake",
    "EOF": "the client closed the connection during the handshake",
}


def tls_failure_label(exc: BaseException | None) -> str:
    """Why a client's handshake failed, as a metric label from a bounded
    set: OpenSSL's reasons the server words (``wrong-version-number``,
    ``unknown-ca``...), ``certificate``, ``timeout``, ``connection``, or
    ``other``; never a text a peer chooses."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "certificate"
    if isinstance(exc, ssl.SSLError):
        reason = "EOF" if isinstance(exc, ssl.SSLEOFError) else getattr(exc, "reason", None) or ""
        if reason in _TLS_REASONS_SERVER:
            return reason.lower().replace("_", "-").removeprefix("sslv3-alert-").removeprefix("tlsv1-alert-")
        return "other"
    if isinstance(exc, TimeoutError | ConnectionAbortedError):
        return "timeout"
    if isinstance(exc, OSError):
        return "connection"
    return "other"


def tls_problem(exc: ssl.SSLError, *, server: bool = False) -> str:
    """A TLS failure in words (a certificate refused, a handshake failed),
    as the client (default) or the ``server`` side can act on it."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if server:
            return f"the client's certificate was refused: {exc.verify_message}"
        return _VERIFY_HINTS.get(exc.verify_code) or f"its certificate was refused: {exc.verify_message}"
    reason = "EOF" if isinstance(exc, ssl.SSLEOFError) else getattr(exc, "reason", None) or ""
    table = _TLS_REASONS_SERVER if server else _TLS_REASONS
    if reason == "EOF" and not server:
        return (
            "the server closed the connection during the handshake (as one that requires a client"
            " certificate does when it gets none it accepts)"
        )
    return table.get(reason, (reason or str(exc)).replace("_", " ").lower())


def unix_peer_uid(sock: _socket.socket) -> int | None:
    """The user id of a Unix socket's peer (SO_PEERCRED), or None where the
    system does not say."""
    credentials = getattr(socket, "SO_PEERCRED", None)
    if credentials is None:
        return None
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, credentials, 12))
    except OSError:
        return None
    return int(uid)


def unix_peer(sock: _socket.socket, host: str) -> str:
    """A Unix socket client as logs show it: the server's address and, where
    the system says (SO_PEERCRED), the client's process id."""
    credentials = getattr(socket, "SO_PEERCRED", None)
    if credentials is not None:
        with contextlib.suppress(OSError):
            pid, _uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, credentials, 12))
            return f"{host} (pid {pid})"
    return host


@contextlib.contextmanager
def translated(host: str, port: int, timeout: float | None = None) -> Iterator[None]:
    """Re-raise socket errors of an exchange with ``host:port`` with a clear sentence."""
    where_ = where(host, port)
    try:
        yield
    except ConnectionRefusedError as exc:
        raise ConnectionRefusedError(
            errno.ECONNREFUSED, f"nothing is listening on {where_} (connection refused)"
        ) from exc
    except TimeoutError as exc:
        after = f" within {timeout:g} s" if timeout is not None else ""
        raise TimeoutError(errno.ETIMEDOUT, f"no answer from {where_}{after}") from exc
    except (BrokenPipeError, ConnectionAbortedError, ConnectionResetError) as exc:
        raise ConnectionResetError(
            exc.errno or errno.ECONNRESET, f"{where_} reset the connection ({exc.strerror or exc})"
        ) from exc
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
    except FileNotFoundError as exc:
        raise ConnectionRefusedError(errno.ENOENT, f"no socket at {where_}: is the server running?") from exc
    except ssl.SSLError as exc:
        raise OSError(errno.EPROTO, f"TLS with {where_} failed: {tls_problem(exc)}") from exc


def connect(
    host: str,
    port: int,
    timeout: float | None,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    source_address: tuple[str, int] | None = None,
    keepalive: float = limits.KEEPALIVE,
) -> socket.socket:
    """A connected socket, errors translated: TCP (TCP_NODELAY; a host name
    with several addresses tries each in turn) or ``unix:PATH``; with
    ``ssl_context``, TLS, its handshake done within ``timeout`` and the
    server's certificate checked against ``server_hostname`` (the host by
    default). ``source_address``: the local (host, port) to connect from;
    ``keepalive``: seconds of silence before TCP keepalive probes (0: off)."""
    with translated(host, port, timeout):
        path = unix_path(host)
        if path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(path)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(
                (plain_host(host), port), timeout=timeout, source_address=source_address
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_keepalive(sock, keepalive)
        if ssl_context is not None:
            name = server_hostname or (None if path is not None else plain_host(host))
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=name)
            except BaseException:
                sock.close()
                raise
    return sock


def describe(exc: OSError) -> str:
    """One line for a person about a socket error."""
    return exc.strerror or str(exc) or type(exc).__name__


def resolve(host: str, port: int, timeout: float = 2.0) -> tuple[int, Any]:
    """The address family and socket address for ``host:port`` or
    ``unix:PATH``, or ``OSError`` naming the host. A name with several
    addresses (``localhost``: ``::1`` and ``127.0.0.1``) gives the first that
    accepts a connection, tried in turn, so that tools opening many
    connections at once reach the one the server listens on."""
    path = unix_path(host)
    if path is not None:
        return socket.AF_UNIX, path
    try:
        found = socket.getaddrinfo(plain_host(host), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
    candidates = list(dict.fromkeys((family, address) for family, _, _, _, address in found))
    if len(candidates) > 1:
        for family, address in candidates:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.settimeout(timeout)
                if probe.connect_ex(address) == 0:
                    return family, address
    return candidates[0]


def dial(family: int, address: Any, *, linger_reset: bool = False) -> tuple[socket.socket, int]:
    """A non-blocking TCP socket (TCP_NODELAY) whose connect has started, and
    the errno of that start: 0 or EINPROGRESS mean under way (wait for it to
    be writable, then read SO_ERROR); anything else failed at once and the
    socket is closed. ``linger_reset`` closes with a reset, so that a client
    making many short connections leaves no ports in TIME_WAIT."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    if family != socket.AF_UNIX:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if linger_reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    code = sock.connect_ex(address)
    if family == socket.AF_UNIX and code == errno.ENOENT:
        code = errno.ECONNREFUSED  # no socket file: nothing listening
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


def idle_dropped(sock: socket.socket) -> bool:
    """Whether an idle client connection is no longer to be used (urllib3's
    check before reuse): it is readable only when the server closed it (end
    of stream) or sent bytes nobody asked for. Over TLS, records without
    application data (TLS 1.3 session tickets, read late) do not count."""
    try:
        if not readable_now(sock.fileno()):
            return False
    except (OSError, ValueError):
        return True
    if not isinstance(sock, ssl.SSLSocket):
        return True
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        sock.recv(1)  # b"": closed; a byte: out of step. Either way, dropped.
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False  # TLS housekeeping only
    except OSError:
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)
    return True


def show_address(address: Any) -> str:
    """A socket address as a person reads it: ``127.0.0.1:7000``,
    ``[::1]:7000`` (IPv6 in brackets), a Unix path as itself."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, bytes):  # a Linux abstract socket
        address = address.decode("utf-8", "backslashreplace")
    return f"{UNIX}{address}" if address else "-"


def listen(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A listening TCP socket on ``host:port`` (SO_REUSEADDR), whatever the
    address family: ``127.0.0.1``, ``::1``, a host name, or ``::`` (both IPv6
    and IPv4, where the system allows one socket to take both). Raises
    ``OSError`` (``EADDRINUSE`` when the port is taken)."""
    path = unix_path(host)
    if path is not None:
        return listen_unix(path, backlog=backlog)
    host = plain_host(host)
    if host in ("::", "") and socket.has_dualstack_ipv6():
        return socket.create_server((host or "::", port), family=socket.AF_INET6, backlog=backlog,
                                    dualstack_ipv6=True)  # fmt: skip
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
    return socket.create_server((host, port), family=family, backlog=backlog)


def listen_unix(path: str, mode: int | None = None, backlog: int = 4096) -> socket.socket:
    """A listening Unix domain socket at ``path``, with permission ``mode``
    (e.g. ``0o660``; None: the umask's). A socket file left by a server that
    is gone (nothing accepts on it) is replaced; one a live server listens
    on is ``EADDRINUSE``; any other file there is left alone (``EEXIST``)."""
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(existing.st_mode):
            raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket: not replacing it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(path) == 0:
                raise OSError(errno.EADDRINUSE, f"a server is already listening on {UNIX}{path}")
        os.unlink(path)  # stale: its server is gone
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if mode is None:
            sock.bind(path)
        else:
            # Bound with no access first, so that no client connects in the
            # moment before the mode is set.
            old = os.umask(0o777)
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def unix_file(sock: socket.socket) -> tuple[str, int] | None:
    """A Unix listening socket's path and the file's inode (to remove it at
    the end with :func:`remove_unix`), or None for other sockets."""
    if sock.family != socket.AF_UNIX:
        return None
    path = sock.getsockname()
    if not isinstance(path, str) or not path:
        return None  # abstract or unnamed: no file
    return path, os.stat(path).st_ino


def remove_unix(owned: tuple[str, int] | None) -> None:
    """Remove a closing server's socket file, if it is still its own (a
    newer server may have replaced it since)."""
    if owned is None:
        return
    path, inode = owned
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)


def adopt_listener(fd: int) -> socket.socket:
    """The listening socket open on descriptor ``fd`` (passed by a parent
    process, or by systemd's socket activation), or ``OSError`` saying why
    it cannot serve: not a socket, not a stream socket, not listening."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise OSError(exc.errno, f"descriptor {fd} is not an open socket ({exc.strerror})") from exc
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise OSError(errno.EINVAL, f"descriptor {fd} is not a listening stream socket")
    return sock


def listener_host(sock: socket.socket) -> str:
    """How a listening socket's address reads as a host: ``unix:PATH`` or an IP."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"{UNIX}{name if isinstance(name, str) else name.decode('utf-8', 'replace')}"
    host: str = name[0]
    return host


def set_keepalive(sock: socket.socket, idle: float) -> None:
    """TCP keepalive on ``sock`` (``idle`` seconds of silence, then a probe
    every KEEPALIVE_INTERVAL s; reset after KEEPALIVE_PROBES unanswered),
    where the system has the options; ``idle`` 0 turns it off. On a
    listener, Linux hands the settings to every accepted socket: no cost per
    connection."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    if idle <= 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", max(1, round(idle))),
        ("TCP_KEEPINTVL", limits.KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", limits.KEEPALIVE_PROBES),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


def open_listener(
    host: str,
    port: int,
    backlog: int,
    *,
    unix_mode: int | None = None,
    sock: socket.socket | None = None,
    keepalive: float = limits.KEEPALIVE,
) -> tuple[socket.socket, tuple[str, int] | None]:
    """A server's listening socket, as every driver opens it: ``sock`` if
    given (already listening: its file, if any, is its owner's), else a Unix
    socket for ``unix:PATH`` or TCP (TCP_NODELAY) for the rest; non-blocking,
    with TCP keepalive, which accepted sockets inherit. Returns it and the
    Unix socket file to remove at the end (see :func:`remove_unix`), if any."""
    path = unix_path(host)
    owned = None
    if sock is not None:
        listener = sock
    elif path is not None:
        listener = listen_unix(path, unix_mode, backlog)
        owned = unix_file(listener)
    else:
        if unix_mode is not None:
            raise ValueError("unix_mode is for a unix:PATH host")
        listener = listen(host, port, backlog)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.setblocking(False)
    set_keepalive(listener, keepalive)
    return listener, owned


def raise_descriptor_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE toward ``wanted``, within the
    hard limit (raising that needs root). Returns the soft limit in force."""
    try:
        import resource  # noqa: PLC0415  (POSIX only)
    except ImportError:
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft
