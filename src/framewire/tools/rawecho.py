"""The guide's first programs, raw bytes with no framing, made to work for real.

:func:`echo_server_once` is the guide's first build: blocking, one client,
echoing until that client closes. :func:`echo_client` sends a text and reads
back as many bytes as it sent (one ``recv`` is not a message: TCP may split
it). :class:`MulticonnEchoServer` echoes to many clients at once on one
poller (the guide's ``selectors`` loop), never blocking on one of them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from framewire.io import netio, poller
from framewire.io.acceptor import Acceptor
from framewire.io.netio import connect, translated

__all__ = ["MulticonnEchoServer", "echo_client", "echo_server_once"]

log = logging.getLogger("framewire.tools.rawecho")
_CHUNK = 64 * 1024


def listen(host: str, port: int) -> socket.socket:
    """A listening socket with SO_REUSEADDR (raises OSError, EADDRINUSE if taken)."""
    return netio.listen(host, port)


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
        self.events = poller.READ


class MulticonnEchoServer:
    """Raw-bytes echo to any number of clients on one poller (the guide's
    ``selectors`` loop; epoll on Linux).

    Each connection keeps its own output buffer; write readiness is asked for
    only while it holds bytes, and a client that does not read stops being
    read once ``high_water`` bytes are waiting for it. Accepting backs off
    when descriptors run out, as the application server does.
    """

    def __init__(self, listener: socket.socket, high_water: int = 1024 * 1024) -> None:
        self.listener = listener
        self.high_water = high_water
        self._poll = poller.Poller()
        self._acceptor = Acceptor(listener, self._poll, log)
        self._waker = poller.Waker()
        self._stop = False
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on."""
        port: int = self.listener.getsockname()[1]
        return port

    def serve_forever(self) -> None:
        """Echo until :meth:`shutdown`."""
        peers: dict[int, _Peer] = {}
        self._acceptor.listen()
        self._poll.register(self._waker.fileno(), poller.READ)
        listen_fd = self._acceptor.fileno()
        try:
            while not self._stop:
                for fd, mask in self._poll.poll(self._acceptor.wait(time.monotonic())):
                    if fd == listen_fd:
                        self._accept(peers)
                    elif fd in peers:
                        self._service(peers, peers[fd], mask)
                    else:
                        self._waker.drain()
                self._acceptor.tick(time.monotonic())
        finally:
            for peer in peers.values():
                peer.sock.close()
            self._poll.close()
            self.listener.close()
            self._waker.close()

    def _accept(self, peers: dict[int, _Peer]) -> None:
        for fd, addr in self._acceptor.accept(time.monotonic()):
            sock = socket.socket(self.listener.family, socket.SOCK_STREAM, 0, fd)
            sock.setblocking(False)
            peer = peers[fd] = _Peer(sock, netio.show_address(addr))
            self._poll.register(fd, poller.READ)
            log.info("accepted connection from %s", peer.name)
            self._acceptor.established()

    def _service(self, peers: dict[int, _Peer], peer: _Peer, mask: int) -> None:
        sock = peer.sock
        try:
            if mask & (poller.READ | poller.ERROR) and peer.events & poller.READ:
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
            fd = sock.fileno()
            self._poll.forget(fd)
            del peers[fd]
            sock.close()
            log.info("closed connection to %s", peer.name)
            return
        events = poller.WRITE if peer.out else 0
        if not peer.eof and len(peer.out) < self.high_water:
            events |= poller.READ
        if peer.events != events:
            peer.events = events
            self._poll.modify(sock.fileno(), events)

    # -- embedding --------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop serving (from any thread)."""
        self._stop = True
        self._waker.wake()

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
