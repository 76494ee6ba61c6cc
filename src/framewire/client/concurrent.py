"""The multi-connection client: N non-blocking connections on one selector.

As the guide's multi-connection client does, each connection is opened with
``connect_ex``, sends its messages when writable and reads its replies when
readable, all in one thread. Two modes: *framed* (the requests are
:class:`Message` objects and the replies are decoded), and *raw* (bytes
echoed back, checked by count, for the guide's raw echo servers).
"""

from __future__ import annotations

import errno
import math
import selectors
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from framewire.client.connection import ClientConnection
from framewire.client.options import ClientOptions
from framewire.core import limits
from framewire.core.errors import ConnectionClosed, ProtocolError
from framewire.core.message import Message, raise_first_error
from framewire.io.netio import dial, plain_host, resolve, unix_path, where

__all__ = ["ConnectionReport", "echo_concurrently", "request_concurrently"]


@dataclass
class ConnectionReport:
    """What happened on one of the connections."""

    #: 1-based connection number.
    id: int
    #: Bytes sent and received.
    sent: int = 0
    received: int = 0
    #: Framed mode: the decoded responses, in order.
    responses: list[Message] = field(default_factory=list)
    #: Raw mode: the bytes received.
    data: bytes = b""
    #: Why the connection failed, or None.
    error: str | None = None


class _Conn:
    __slots__ = ("chunks", "engine", "expected", "payload", "ready", "report", "sock", "tls")

    def __init__(self, sock: socket.socket, number: int, payload: bytes, expected: int) -> None:
        self.sock = sock
        self.report = ConnectionReport(number)
        self.payload = memoryview(payload)
        self.expected = expected  # responses (framed) or bytes (raw)
        #: Framed: the client engine that frames and checks the answers.
        self.engine: ClientConnection | None = None
        self.tls = False  # a TLS handshake has begun
        self.ready = False  # connected (and secured): requests may go
        self.chunks: list[bytes] = []

    def done(self) -> bool:
        if self.engine is not None:
            return len(self.report.responses) >= self.expected
        return self.report.received >= self.expected


def _run(
    host: str,
    port: int,
    work: Sequence[tuple[list[Message] | bytes, int]],
    *,
    timeout: float | None,
    options: ClientOptions | None,
    on_event: Callable[[str], None] | None,
) -> list[ConnectionReport]:
    # ``options`` None: raw mode (bytes echoed back, counted); else framed.
    say = on_event or (lambda _line: None)
    family, address = resolve(host, port)
    deadline = math.inf if timeout is None else time.monotonic() + timeout
    conns: list[_Conn] = []
    with selectors.DefaultSelector() as selector:
        for number, (payload, expected) in enumerate(work, 1):
            say(f"Starting connection {number} to {host}:{port}")
            sock, code = dial(family, address)
            conn = _Conn(sock, number, b"", expected)
            if isinstance(payload, bytes):
                conn.payload = memoryview(payload)
            else:
                assert options is not None
                engine = conn.engine = ClientConnection(options, time.monotonic(), where(host, port))
                conn.payload = memoryview(engine.send(payload, [number] * expected, None, time.monotonic()))
            if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                _fail(conn, selector, f"connect failed: {errno.errorcode.get(code, code)}", register=False)
            else:
                selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            conns.append(conn)
        while selector.get_map():
            left = None if deadline == math.inf else deadline - time.monotonic()
            if left is not None and left <= 0:
                for key in list(selector.get_map().values()):
                    _fail(key.data, selector, f"no complete answer within {timeout:g} s")
                break
            for key, mask in selector.select(left):
                conn = key.data
                try:
                    if not (conn.ready or _secured(conn, selector, host, options)):
                        continue
                    if mask & selectors.EVENT_WRITE:
                        _write(conn, selector, say)
                    if mask & selectors.EVENT_READ:
                        _read(conn, selector, say)
                except (OSError, ProtocolError) as exc:
                    _fail(conn, selector, str(exc) or type(exc).__name__)
                    continue
                if conn.done():
                    say(f"Closing connection {conn.report.id}")
                    selector.unregister(conn.sock)
                    conn.sock.close()
    for conn in conns:
        if conn.engine is None:
            conn.report.data = b"".join(conn.chunks)
    return [conn.report for conn in conns]


def _secured(conn: _Conn, selector: selectors.BaseSelector, host: str, options: ClientOptions | None) -> bool:
    # Before the first send: the connect done (or failed), and over TLS the
    # handshake, a step per readiness event. False: not ready to send yet.
    context = None if options is None else options.ssl_context
    if not conn.tls:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, f"connect failed: {errno.errorcode.get(code, code)}")
        if context is None:
            conn.ready = True
            return True
        assert options is not None
        selector.unregister(conn.sock)
        name = options.server_hostname or (None if unix_path(host) else plain_host(host))
        conn.sock = context.wrap_socket(conn.sock, server_hostname=name, do_handshake_on_connect=False)
        selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        conn.tls = True
    try:
        conn.sock.do_handshake()  # type: ignore[attr-defined]
    except ssl.SSLWantReadError:
        selector.modify(conn.sock, selectors.EVENT_READ, conn)
        return False
    except ssl.SSLWantWriteError:
        selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        return False
    conn.ready = True
    selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
    return True


def _write(conn: _Conn, selector: selectors.BaseSelector, say: Callable[[str], None]) -> None:
    report = conn.report
    if report.sent < len(conn.payload):
        try:
            sent = conn.sock.send(conn.payload[report.sent :])
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        say(f"Sending {sent} bytes to connection {report.id}")
        report.sent += sent
    if report.sent >= len(conn.payload):
        selector.modify(conn.sock, selectors.EVENT_READ, conn)


def _read(conn: _Conn, selector: selectors.BaseSelector, say: Callable[[str], None]) -> None:
    try:
        data = conn.sock.recv(limits.RECV_SIZE)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return
    report = conn.report
    engine = conn.engine
    if engine is not None:
        report.responses += [message for _, message in engine.receive(data, time.monotonic())]
        if engine.failure is not None and not conn.done():
            raise engine.failure
    else:
        conn.chunks.append(data)
    if not data and not conn.done():
        raise ConnectionClosed("the server closed the connection before answering everything")
    report.received += len(data)
    say(f"Received {data[:60]!r}{'...' if len(data) > 60 else ''} from connection {report.id}")


def _fail(conn: _Conn, selector: selectors.BaseSelector, why: str, *, register: bool = True) -> None:
    conn.report.error = why
    if register:
        selector.unregister(conn.sock)
    conn.sock.close()


def request_concurrently(
    host: str,
    port: int,
    requests: Sequence[Message],
    *,
    connections: int = 2,
    on_event: Callable[[str], None] | None = None,
    options: ClientOptions | None = None,
    **settings: Any,
) -> list[Message]:
    """Send ``requests`` over ``connections`` connections at once, each
    request once (request i on connection i mod N, pipelined there), and
    return the responses in request order.

    Every option of :class:`~framewire.client.options.ClientOptions` is a
    keyword, as for :class:`~framewire.client.blocking.Client`
    (``ssl_context``, ``ids``, ``check``...); ``timeout`` (30 s here by
    default) bounds the whole exchange. A connection that fails raises
    ``ConnectionError`` naming it. With ``check`` (the default) an error
    response raises :class:`ErrorResponse` (its ``responses`` holds every
    response, in order), as :meth:`Client.request_many
    <framewire.client.Client.request_many>` does; ``check=False`` returns
    error responses in place.
    """
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections}")
    options = ClientOptions.of(options, settings if options is not None else {"timeout": 30.0, **settings})
    count = min(connections, len(requests))
    shares = [list(requests[k::count]) for k in range(count)]
    work = [(share, len(share)) for share in shares]
    reports = _run(host, port, work, timeout=options.timeout, options=options, on_event=on_event)
    for report in reports:
        if report.error is not None:
            raise ConnectionError(f"connection {report.id} to {where(host, port)}: {report.error}")
    responses = [reports[i % count].responses[i // count] for i in range(len(requests))]
    if options.check:
        raise_first_error(responses)
    return responses


def echo_concurrently(
    host: str,
    port: int,
    messages: Sequence[bytes],
    *,
    connections: int = 2,
    timeout: float = 30.0,
    on_event: Callable[[str], None] | None = None,
) -> list[ConnectionReport]:
    """The guide's raw client: each connection sends every message and
    reads until as many bytes came back as it sent."""
    payload = b"".join(messages)
    work = [(payload, len(payload))] * connections
    return _run(host, port, work, timeout=timeout, options=None, on_event=on_event)
