"""The guide's first programs, raw bytes with no framing, made to work for real.

:func:`echo_server_once` is the guide's first build: blocking, one client,
echoing until that client closes. :func:`echo_client` sends a text and reads
back as many bytes as it sent (one ``recv`` is not a message: TCP may split
it). :class:`MulticonnEchoServer` echoes to many clients at once on
``selectors``, never blocking on one of them.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from types import TracebackType

from framewire.io.netio import accept, connect, translated

__all__ = ["MulticonnEchoServer", "echo_client", "echo_server_once"]

log = logging.getLogger("framewire.tools.rawecho")
_CHUNK = 64 * 1024


def listen(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEADDR (raises OSError, EADDRINUSE if taken)."""
    return socket.create_server((host, port))


def echo_server_once(listener: socket.socket, on_event: Callable[[str], None] | None = None) -> int:
    """Accept one client, echo its bytes until it closes; return the byte count."""
    say = on_event or (lambda _line: None)
    with listener:
        conn, addr = listener.accept()
    total = 0
    with conn:
        say(f"Connected by {addr[0]}:{addr[1]}")
        while data := conn.recv(_CHUNK):
            conn.sendall(data)
            total += len(data)
    say(f"Echoed {total} bytes; {addr[0]}:{addr[1]} closed the connection")
    return total


def echo_client(host: str, port: int, data: bytes, timeout: float | None = 10.0) -> bytes:
    """Send ``data``, return the echo once as many bytes came back."""
    sock = connect(host, port, timeout)
    with sock, translated(host, port, timeout):
        sock.sendall(data)
        chunks: list[bytes] = []
        received = 0
        while received < len(data):
            chunk = sock.recv(_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
        return b"".join(chunks)


class _Peer:
    __slots__ = ("eof", "events", "name", "out", "sock")

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.out = bytearray()
        self.eof = False
        self.events = selectors.EVENT_READ


class MulticonnEchoServer:
    """Raw-bytes echo to any number of clients on one selector.

    Each connection keeps its own output buffer; write readiness is asked for
    only while it holds bytes, and a client that does not read stops being
    read once ``high_water`` bytes are waiting for it.
    """

    def __init__(self, listener: socket.socket, high_water: int = 1024 * 1024) -> None:
        self.listener = listener
        self.high_water = high_water
        listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on."""
        port: int = self.listener.getsockname()[1]
        return port

    def serve_forever(self) -> None:
        """Echo until :meth:`shutdown`."""
        peers: dict[socket.socket, _Peer] = {}
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            try:
                while not self._stop:
                    for key, mask in selector.select():
                        if key.fileobj is self.listener:
                            self._accept(selector, peers)
                        elif key.data is not None:
                            self._service(selector, peers, key.data, mask)
            finally:
                for sock in peers:
                    sock.close()
                self.listener.close()
                self._wake_r.close()
                self._wake_w.close()

    def _accept(self, selector: selectors.BaseSelector, peers: dict[socket.socket, _Peer]) -> None:
        accepted = accept(self.listener, log)
        if accepted is None:
            return
        sock, addr = accepted
        peer = peers[sock] = _Peer(sock, f"{addr[0]}:{addr[1]}")
        selector.register(sock, selectors.EVENT_READ, peer)
        log.info("accepted connection from %s", peer.name)

    def _service(
        self, selector: selectors.BaseSelector, peers: dict[socket.socket, _Peer], peer: _Peer, mask: int
    ) -> None:
        sock = peer.sock
        try:
            if mask & selectors.EVENT_READ:
                data = sock.recv(_CHUNK)
                if data:
                    peer.out += data
                else:
                    peer.eof = True  # half-closed: echo what is left, then close
            if peer.out:
                del peer.out[: sock.send(peer.out)]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            log.info("connection to %s lost: %s", peer.name, exc)
            peer.eof, peer.out = True, bytearray()
        if peer.eof and not peer.out:
            selector.unregister(sock)
            del peers[sock]
            sock.close()
            log.info("closed connection to %s", peer.name)
            return
        events = selectors.EVENT_WRITE if peer.out else 0
        if not peer.eof and len(peer.out) < self.high_water:
            events |= selectors.EVENT_READ
        if peer.events != events:
            peer.events = events
            selector.modify(sock, events, peer)

    # -- embedding --------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop serving (from any thread)."""
        self._stop = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def __enter__(self) -> MulticonnEchoServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()
        if self._thread is not None:
            self._thread.join(5)
