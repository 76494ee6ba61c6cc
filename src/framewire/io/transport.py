"""Transports: a connected non-blocking socket, plain or TLS, behind one interface.

(Compiled by mypyc with the epoll loop, which reads and writes through it.)

A driver reads, sends, half-closes and closes through a :class:`Transport`
and never asks which kind it has: what TLS changes (records of at most
16 KiB, a handshake, bytes decrypted and held inside OpenSSL where no
readiness event announces them, a close_notify before a close, an end of
stream that may really be a reset) is the :class:`TlsTransport`'s own
business, as trio keeps TLS a stream layered on a socket stream.
"""

from __future__ import annotations

import _socket
import contextlib
import errno
import fcntl
import os
import socket
import ssl
import termios
from collections.abc import Callable
from typing import Final

from mypy_extensions import mypyc_attr

from framewire.io import poller
from framewire.io.sendqueue import IOV_MAX, JOIN_BELOW
from framewire.io.tls import peer_certificate, send_parts

__all__ = ["WOULD_BLOCK", "TlsTransport", "Transport"]

#: What a transport's read or write raises when it cannot go on now: plain
#: sockets raise the first two, TLS sockets the last two (a record is
#: incomplete, or a write is pending). Nothing is lost: try again later.
WOULD_BLOCK: Final = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_WOULD_BLOCK: Final = WOULD_BLOCK
# FIONREAD's answer when nothing waits unread (a C int).
_NOTHING_UNREAD: Final = bytes(4)
_TCP_CLOSE: Final = 7  # tcp_info's tcpi_state of a connection closed (by a reset, here)
# A TLS read returns at most one record's plaintext, 16 KiB: asking for
# exactly that spares CPython allocating 64 KiB and shrinking it every read.
_TLS_RECORD: Final = 16 * 1024
# A plain socket's reads: as large as asked.
_ANY: Final = 1 << 62


def ended_by_error(sock: _socket.socket) -> int:
    """The errno of the error that ended ``sock``'s connection, or 0 for a
    true end of stream.

    Under TLS, OpenSSL reports a reset as an end of stream without a
    close_notify: a read returns b"", a write raises SSLEOFError. The kernel
    knows: a reset leaves the connection closed (TCP_CLOSE), a peer's FIN
    half-closed (CLOSE_WAIT). (The poller's EPOLLERR is no proof: OpenSSL's
    own recv may take the error before the poller sees it.)"""
    try:
        code: int = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            return code
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
    except OSError:  # not TCP (a Unix socket), or already gone
        return 0
    return errno.ECONNRESET if state == _TCP_CLOSE else 0


def _nothing_pending() -> int:
    return 0


@mypyc_attr(allow_interpreted_subclasses=True)
class Transport:
    """A connected plain socket, non-blocking.

    Reading is the socket's own: :attr:`recv` (``size`` -> bytes, ``b""``
    at the peer's end) and :attr:`recv_into` (``view, size`` -> count), at
    most :attr:`record` bytes at a time, raising :data:`WOULD_BLOCK` when
    nothing can be read now and ``OSError`` when the connection failed: on
    the hot path, a transport adds no call of its own to a read."""

    __slots__ = ("_unread", "fd", "layered", "pending", "record", "records", "recv", "recv_into", "sock")

    def __init__(self, sock: _socket.socket, fd: int) -> None:
        self.sock = sock
        self.fd = fd
        self.recv: Callable[[int], bytes] = sock.recv
        self.recv_into: Callable[[memoryview, int], int] = sock.recv_into
        #: The most bytes one read returns.
        self.record = _ANY
        #: Reads come in records (TLS): a read of all that was asked is
        #: likely followed by more, answered or not (see ServerConnection.read_again).
        self.records = False
        #: A protocol layered over the socket (TLS): bytes may wait above the
        #: socket where no readiness event announces them (:attr:`pending`),
        #: an end of stream may hide a reset (:meth:`reset_at_end`), and a
        #: close says goodbye first (:meth:`close`). False: none of these.
        self.layered = False
        #: Bytes waiting above the socket, where no readiness event announces
        #: them (a layered transport's; the socket's own method, on the hot path).
        self.pending: Callable[[], int] = _nothing_pending
        self._unread = bytearray(4)  # FIONREAD's answer (see nothing_unread)

    # -- reading ----------------------------------------------------------------

    def reset_at_end(self) -> OSError | None:
        """After a read of ``b""`` with something at stake: the reset that
        really ended the connection, if it was one (a plain socket says so
        itself)."""
        return None

    def nothing_unread(self) -> bool:
        """Whether the kernel holds no unread byte for this socket (a reset
        with nothing unread, owed or half received needs no read at all)."""
        fcntl.ioctl(self.fd, termios.FIONREAD, self._unread)
        return self._unread == _NOTHING_UNREAD

    def error(self) -> OSError | None:
        """The socket's pending error (after an error event), if any."""
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        return OSError(code, os.strerror(code)) if code else None

    # -- writing and the end -------------------------------------------------------

    def send(self, parts: list[bytes | bytearray | memoryview], size: int) -> int:
        """Send ``parts`` (``size`` bytes in all) as far as the socket takes
        them now; returns the bytes sent. Small answers go joined in one
        ``send``, large ones without a copy (:meth:`_send_large`)."""
        if size > JOIN_BELOW:
            return self._send_large(parts)
        # What is not sent stays joined for the next try: cheaper, and over
        # TLS required (OpenSSL wants a write that had to wait retried with
        # the same bytes first; a shorter buffer fails with "bad length").
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            sent = self.sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        if sent < size and len(parts) > 1:
            parts[:] = [data]
        return sent

    def _send_large(self, parts: list[bytes | bytearray | memoryview]) -> int:
        # More than JOIN_BELOW bytes: one sendmsg of the parts, no copy.
        try:
            return self.sock.sendmsg(parts[:IOV_MAX])
        except _WOULD_BLOCK:
            return 0

    def explain(self, exc: OSError) -> OSError:
        """The error to report for ``exc``, raised by this transport."""
        return exc

    def handshake(self) -> int:
        """One step of the transport's handshake: 0 once done, else the
        poller interest it waits for (-1: as before). Raises OSError if it failed."""
        return 0

    def secured(self) -> tuple[str | None, object]:
        """The TLS version and the peer's verified certificate (None, None: plain)."""
        return None, None

    def half_close(self) -> bool:
        """End our side (a FIN after what was sent); False when the socket is gone."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        return True

    def close(self, goodbye: bool) -> None:
        """Close the socket (``goodbye``: the connection ended well)."""
        self.sock.close()


class TlsTransport(Transport):
    """A connected TLS socket (``ssl.SSLSocket``), non-blocking, its handshake driven step by step."""

    __slots__ = ()

    def __init__(self, sock: _socket.socket, fd: int) -> None:
        super().__init__(sock, fd)
        self.record = _TLS_RECORD
        self.records = True
        self.layered = True
        self.pending = sock.pending  # type: ignore[attr-defined]

    @staticmethod
    def wrap(context: ssl.SSLContext, sock: _socket.socket, fd: int) -> TlsTransport:
        """The server side of TLS over an accepted ``sock``, its handshake
        not begun (:meth:`handshake` drives it). Raises OSError or
        ValueError if TLS cannot start; the socket is then closed."""
        try:
            wrapped = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)  # type: ignore[arg-type]
        except BaseException:
            sock.close()
            raise
        return TlsTransport(wrapped, fd)

    def reset_at_end(self) -> OSError | None:
        # (With nothing at stake an end is an end: many TLS clients close with
        # the server's session tickets unread, which the kernel turns into a reset.)
        code = ended_by_error(self.sock)
        return OSError(code, os.strerror(code)) if code else None

    def nothing_unread(self) -> bool:
        return False  # bytes may wait inside OpenSSL: always read

    def _send_large(self, parts: list[bytes | bytearray | memoryview]) -> int:
        return send_parts(self.sock, parts)  # type: ignore[arg-type]  # (TLS sockets have no sendmsg)

    def explain(self, exc: OSError) -> OSError:
        # OpenSSL names a write (or read) cut by the peer's reset "EOF
        # occurred in violation of protocol": the kernel knows it was a
        # reset, and the log says so, as for a plain socket.
        if isinstance(exc, ssl.SSLEOFError):
            code = ended_by_error(self.sock)
            if code:
                return OSError(code, os.strerror(code))
        return exc

    def handshake(self) -> int:
        try:
            self.sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            return poller.READ
        except ssl.SSLWantWriteError:
            return poller.WRITE
        except (BlockingIOError, InterruptedError):
            return -1
        return 0

    def secured(self) -> tuple[str | None, object]:
        return self.sock.version(), peer_certificate(self.sock)  # type: ignore[attr-defined]

    def half_close(self) -> bool:
        # close_notify first, so the peer's TLS reads the answer as complete;
        # then the FIN (which also drops the TLS layer: what the peer still
        # sends is read raw, and dropped undecrypted).
        with contextlib.suppress(OSError, ValueError):
            self.sock.unwrap()  # type: ignore[attr-defined]
        return super().half_close()

    def close(self, goodbye: bool) -> None:
        if goodbye:
            # A TLS goodbye (close_notify), so the peer knows nothing was
            # cut off; it is not waited for: one non-blocking try.
            with contextlib.suppress(OSError, ValueError):
                self.sock.unwrap()  # type: ignore[attr-defined]
        self.sock.close()
