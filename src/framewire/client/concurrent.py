"""The multi-connection client: N non-blocking connections on one selector.

As the guide's multi-connection client does, each connection is opened with
``connect_ex``, sends its messages when writable and reads its replies when
readable, all in one thread. Two modes: *framed* (the requests are
:class:`Message` objects and the replies are decoded), and *raw* (bytes
echoed back, checked by count, for the guide's raw echo servers).
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from framewire.core import limits
from framewire.core.decoder import Decoder, encode_many
from framewire.core.errors import ConnectionClosed, ProtocolError
from framewire.core.message import Message, raise_first_error
from framewire.io.netio import dial, resolve, where

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
    __slots__ = ("chunks", "decoder", "expected", "payload", "report", "sock")

    def __init__(self, sock: socket.socket, number: int, payload: bytes, expected: int, framed: bool) -> None:
        self.sock = sock
        self.report = ConnectionReport(number)
        self.payload = memoryview(payload)
        self.expected = expected  # responses (framed) or bytes (raw)
        self.decoder = Decoder() if framed else None
        self.chunks: list[bytes] = []

    def done(self) -> bool:
        if self.decoder is not None:
            return len(self.report.responses) >= self.expected
        return self.report.received >= self.expected


def _run(
    host: str,
    port: int,
    work: Sequence[tuple[bytes, int]],
    *,
    framed: bool,
    timeout: float,
    on_event: Callable[[str], None] | None,
) -> list[ConnectionReport]:
    say = on_event or (lambda _line: None)
    family, address = resolve(host, port)
    deadline = time.monotonic() + timeout
    conns: list[_Conn] = []
    with selectors.DefaultSelector() as selector:
        for number, (payload, expected) in enumerate(work, 1):
            say(f"Starting connection {number} to {host}:{port}")
            sock, code = dial(family, address)
            conn = _Conn(sock, number, payload, expected, framed)
            if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                _fail(conn, selector, f"connect failed: {errno.errorcode.get(code, code)}", register=False)
            else:
                selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            conns.append(conn)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                for key in list(selector.get_map().values()):
                    _fail(key.data, selector, f"no complete answer within {timeout:g} s")
                break
            for key, mask in selector.select(left):
                conn = key.data
                try:
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
        if conn.decoder is None:
            conn.report.data = b"".join(conn.chunks)
    return [conn.report for conn in conns]


def _write(conn: _Conn, selector: selectors.BaseSelector, say: Callable[[str], None]) -> None:
    report = conn.report
    if report.sent == 0:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, f"connect failed: {errno.errorcode.get(code, code)}")
    if report.sent < len(conn.payload):
        sent = conn.sock.send(conn.payload[report.sent :])
        say(f"Sending {sent} bytes to connection {report.id}")
        report.sent += sent
    if report.sent >= len(conn.payload):
        selector.modify(conn.sock, selectors.EVENT_READ, conn)


def _read(conn: _Conn, selector: selectors.BaseSelector, say: Callable[[str], None]) -> None:
    try:
        data = conn.sock.recv(limits.RECV_SIZE)
    except BlockingIOError:
        return
    report = conn.report
    if conn.decoder is not None:
        report.responses += conn.decoder.feed(data)
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
    timeout: float = 30.0,
    check: bool = True,
    on_event: Callable[[str], None] | None = None,
) -> list[Message]:
    """Send ``requests`` over ``connections`` connections at once, each
    request once (request i on connection i mod N, pipelined there), and
    return the responses in request order.

    A connection that fails raises ``ConnectionError`` naming it. With
    ``check`` (the default) an error response raises :class:`ErrorResponse`
    (its ``responses`` holds every response, in order), as
    :meth:`Client.request_many <framewire.client.Client.request_many>` does;
    ``check=False`` returns error responses in place.
    """
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections}")
    count = min(connections, len(requests))
    shares = [list(requests[k::count]) for k in range(count)]
    reports = _run(
        host,
        port,
        [(encode_many(share), len(share)) for share in shares],
        framed=True,
        timeout=timeout,
        on_event=on_event,
    )
    for report in reports:
        if report.error is not None:
            raise ConnectionError(f"connection {report.id} to {where(host, port)}: {report.error}")
    responses = [reports[i % count].responses[i // count] for i in range(len(requests))]
    if check:
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
    return _run(
        host, port, [(payload, len(payload))] * connections, framed=False, timeout=timeout, on_event=on_event
    )
