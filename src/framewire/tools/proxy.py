"""A transparent TCP proxy that shows every framewire message passing through.

Bytes are forwarded unchanged, in both directions, on one poller (no thread
per connection). A decoder per direction watches the copy: each complete
message is reported with its time, direction and connection number; a
protocol error is reported once and that direction goes on undecoded (the
bytes are still forwarded, since the proxy must not change what the peers
see). A half-close on one side is passed on to the other.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from framewire.core import limits
from framewire.io import poller
from framewire.io.acceptor import Acceptor
from framewire.io.netio import dial, remove_unix, resolve, show_address, unix_file, where
from framewire.io.netio import listen as listen_on
from framewire.tools.wireview import Event, Watcher, watch

__all__ = ["Event", "Proxy"]

log = logging.getLogger("framewire.tools.proxy")
_HIGH_WATER = 1024 * 1024  # stop reading a side while this much waits for the other
_DRAIN_ON_CLOSE = 64 * 1024  # unforwarded bytes read and dropped at a close (see _close)


@dataclass(eq=False)
class _Side:
    sock: socket.socket
    direction: str  # the direction of what this side sends
    decoder: Watcher | None = field(default_factory=Watcher)
    out: bytearray = field(default_factory=bytearray)  # bytes waiting to be written to this side
    eof: bool = False  # this side sent FIN
    shut: bool = False  # we shut down writing to this side
    connected: bool = True
    events: int = 0  # the poller interest registered; 0: not registered


@dataclass(eq=False)
class _Pair:
    name: str
    client: _Side
    server: _Side

    def other(self, side: _Side) -> _Side:
        return self.server if side is self.client else self.client


class Proxy:
    """Listen on ``listen``; forward each connection to ``upstream``; report to ``on_event``."""

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        on_event: Callable[[Event], None],
    ) -> None:
        self.upstream = upstream
        self.on_event = on_event
        self.listener = listen_on(*listen)
        self._poll = poller.Poller()
        self._acceptor = Acceptor(self.listener, self._poll, log)
        self._sides: dict[int, tuple[_Pair, _Side]] = {}
        self._ids = itertools.count(1)
        self._stop = False
        self._waker = poller.Waker()

    @property
    def port(self) -> int:
        """The port listened on (0 on a Unix socket)."""
        name = self.listener.getsockname()
        port: int = name[1] if isinstance(name, tuple) else 0
        return port

    def shutdown(self) -> None:
        """Stop (from any thread or a signal handler)."""
        self._stop = True
        self._waker.wake()

    def serve_forever(self) -> None:
        """Forward until :meth:`shutdown`."""
        self._acceptor.listen()
        self._poll.register(self._waker.fileno(), poller.READ)
        listen_fd = self._acceptor.fileno()
        try:
            while not self._stop:
                for fd, mask in self._poll.poll(self._acceptor.wait(time.monotonic())):
                    if fd == listen_fd:
                        self._accept()
                    elif fd in self._sides:
                        pair, side = self._sides[fd]
                        self._service(pair, side, mask)
                    else:
                        self._waker.drain()
                self._acceptor.tick(time.monotonic())
        finally:
            for _, side in list(self._sides.values()):
                side.sock.close()
            self._poll.close()
            owned = unix_file(self.listener)
            self.listener.close()
            remove_unix(owned)
            self._waker.close()

    def _accept(self) -> None:
        # One at a time: each client needs a second descriptor for its
        # upstream, and when there is none, accepting more would only fail.
        for _ in range(128):
            accepted = self._acceptor.accept(time.monotonic(), limit=1)
            if not accepted:
                return
            fd, addr = accepted[0]
            if not self._pair(socket.socket(self.listener.family, socket.SOCK_STREAM, 0, fd), addr):
                return

    def _pair(self, sock: socket.socket, addr: Any) -> bool:
        sock.setblocking(False)
        name = f"#{next(self._ids)}"
        try:
            family, address = resolve(*self.upstream)
            upstream, code = dial(family, address)
        except OSError as exc:  # unresolvable, or out of descriptors for the upstream side
            self.on_event(Event(time.time(), name, "--", note=f"closed: upstream: {exc.strerror or exc}"))
            sock.close()
            return not self._acceptor.exhausted(exc, time.monotonic())
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            self.on_event(Event(time.time(), name, "--", note=f"closed: upstream: {os.strerror(code)}"))
            sock.close()
            return True
        pair = _Pair(name, _Side(sock, "->"), _Side(upstream, "<-", connected=False))
        for side in (pair.client, pair.server):
            self._sides[side.sock.fileno()] = (pair, side)
        pair.client.events = poller.READ
        pair.server.events = poller.WRITE
        self._poll.register(sock.fileno(), poller.READ)
        self._poll.register(upstream.fileno(), poller.WRITE)
        self.on_event(Event(time.time(), name, "--", note=f"{show_address(addr)} connected"))
        self._acceptor.established()
        return True

    def _service(self, pair: _Pair, side: _Side, mask: int) -> None:
        other = pair.other(side)
        try:
            if not side.connected:
                code = side.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    raise OSError(code, f"upstream {where(*self.upstream)}: {os.strerror(code)}")
                side.connected = True
            if mask & (poller.READ | poller.ERROR) and not side.eof and len(other.out) < _HIGH_WATER:
                data = side.sock.recv(limits.RECV_SIZE)
                if data:
                    other.out += data
                    self._watch(pair, side, data)
                else:
                    side.eof = True
                    self._watch(pair, side, b"")
            for target in (side, other):
                if target.out and target.connected:
                    with contextlib.suppress(BlockingIOError):
                        del target.out[: target.sock.send(target.out)]
                source = pair.other(target)
                if source.eof and not target.out and not target.shut and target.connected:
                    target.shut = True  # pass the half-close on, once all is forwarded
                    target.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._close(pair, f"closed: {exc.strerror or exc}")
            return
        if pair.client.shut and pair.server.shut:
            self._close(pair, "closed")
            return
        for target in (side, other):
            self._interest(pair, target)

    def _interest(self, pair: _Pair, side: _Side) -> None:
        other = pair.other(side)
        events = 0
        if not side.connected or side.out:
            events |= poller.WRITE
        if side.connected and not side.eof and len(other.out) < _HIGH_WATER:
            events |= poller.READ
        if events == side.events:
            return
        # A side with nothing to do is not registered at all: one at end of
        # stream is always readable (and a closed one always hung up), so any
        # registration would wake the loop for ever.
        fd = side.sock.fileno()
        if not events:
            self._poll.unregister(fd)
        elif not side.events:
            self._poll.register(fd, events)
        else:
            self._poll.modify(fd, events)
        side.events = events

    def _watch(self, pair: _Pair, side: _Side, data: bytes) -> None:
        if side.decoder is None:
            return  # the framing was lost: the rest is forwarded undecoded
        events, lost = watch(side.decoder, data, time.time(), pair.name, side.direction)
        if lost:
            side.decoder = None
        for event in events:
            self.on_event(event)

    def _close(self, pair: _Pair, why: str) -> None:
        for side in (pair.client, pair.server):
            self._sides.pop(side.sock.fileno(), None)
            if side.events:
                self._poll.forget(side.sock.fileno())
            # Bytes the peer sent that were never forwarded (a request to an
            # upstream that refused) would make the close a reset, which can
            # cost the peer what it had not read yet: read and dropped first,
            # once and bounded, so that the close is a FIN.
            with contextlib.suppress(OSError):
                side.sock.recv(_DRAIN_ON_CLOSE)
            side.sock.close()
        self.on_event(Event(time.time(), pair.name, "--", note=why))
