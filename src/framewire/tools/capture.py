"""framewire messages out of a packet capture (pcap or pcapng).

dpkt reads the capture format and the Ethernet/IP/TCP headers. dpkt does not
reassemble TCP, so this module does, per direction of each connection: it
orders segments by sequence number, holds out-of-order segments until the
gap before them is filled, and drops what was already delivered
(retransmissions, overlaps). What it does not handle: a gap that is never
filled (bytes the capture missed; that direction stops being decoded at the
gap, and it is reported), IP fragments, and streams whose start was not
captured (decoding then begins at the first segment seen, which is likely
mid-message; the protocol error is reported).
"""

from __future__ import annotations

import collections
import heapq
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import dpkt

from framewire.io.netio import show_address
from framewire.tools.wireview import Event, Watcher, watch

__all__ = ["CaptureError", "read_capture"]

_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_DLT_NULL, _DLT_EN10MB, _DLT_RAW, _DLT_LINUX_SLL, _DLT_LINUX_SLL2 = 0, 1, 101, 113, 276


class CaptureError(Exception):
    """The file is not a capture this reader understands."""


class _Reader:
    """The capture file, read no further than its end: a record whose length
    field claims more than the file holds is noticed (and never allocated:
    a file object asked for 4 GiB allocates 4 GiB before it reads)."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        try:
            self._size: int | None = os.fstat(handle.fileno()).st_size
        except (AttributeError, OSError, ValueError):  # not a file: an in-memory buffer
            start = handle.tell()
            self._size = handle.seek(0, os.SEEK_END)
            handle.seek(start)
        #: (bytes a record claimed, bytes the file had left) of the first short read.
        self.cut: tuple[int, int] | None = None

    def read(self, size: int = -1) -> bytes:
        if size < 0 or self._size is None:
            return self._handle.read(size)
        left = max(0, self._size - self._handle.tell())
        data = self._handle.read(min(size, left))
        # An empty read is the clean end of the file, between two records.
        if data and len(data) < size and self.cut is None:
            self.cut = (size, len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()


@dataclass
class _Direction:
    arrow: str
    #: Sequence number of stream offset 0 (None until the first segment).
    base: int | None = None
    #: Stream offset delivered to the decoder so far.
    delivered: int = 0
    #: Segments after a gap, by stream offset, with a heap of those offsets:
    #: reassembly is O(n log n) in held segments, however they arrive.
    held: dict[int, bytes] = field(default_factory=dict)
    heap: list[int] = field(default_factory=list)
    decoder: Watcher | None = field(default_factory=Watcher)


@dataclass
class _Stream:
    name: str
    client: tuple[str, int]
    server: tuple[str, int]
    to_server: _Direction = field(default_factory=lambda: _Direction("->"))
    to_client: _Direction = field(default_factory=lambda: _Direction("<-"))


def _open(handle: _Reader) -> Any:
    magic = handle.read(4)
    handle.seek(0)
    try:
        if magic == _PCAPNG_MAGIC:
            return dpkt.pcapng.Reader(handle)
        return dpkt.pcap.Reader(handle)
    except (ValueError, dpkt.dpkt.Error) as exc:
        raise CaptureError(_damage(handle, exc, "not a pcap or pcapng capture")) from None


def _damage(handle: _Reader, exc: Exception, what: str) -> str:
    """Why the capture could not be read, in words."""
    if handle.cut is not None:
        claimed, left = handle.cut
        return (
            f"{what}: the file ends in the middle of a record "
            f"(a record needs {claimed} bytes, {left} are left)"
        )
    reason = str(exc) or type(exc).__name__
    return f"{what} ({reason})"


def _ip_of(datalink: int, frame: bytes) -> Any:
    if datalink == _DLT_EN10MB:
        return dpkt.ethernet.Ethernet(frame).data
    if datalink == _DLT_LINUX_SLL:
        return dpkt.sll.SLL(frame).data
    if datalink == _DLT_LINUX_SLL2:
        return dpkt.sll2.SLL2(frame).data
    if datalink == _DLT_NULL:
        return dpkt.loopback.Loopback(frame).data
    if datalink in (_DLT_RAW, 12, 14):
        return dpkt.ip.IP(frame) if frame[:1] and frame[0] >> 4 == 4 else dpkt.ip6.IP6(frame)
    raise CaptureError(
        f"link type {datalink} is not supported (Ethernet, Linux cooked, loopback, raw IP are)"
    )


def _address(ip: Any, raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if isinstance(ip, dpkt.ip6.IP6) else socket.AF_INET, raw)


def read_capture(handle: BinaryIO, port: int = 65432) -> Iterator[Event]:
    """Every framewire message on TCP ``port`` in the capture, per connection, in order.

    Raises :class:`CaptureError` for a file that is not a capture, and at the
    end for one that was cut short (after the events of what it did hold).
    """
    source = _Reader(handle)
    reader = _open(source)
    datalink = reader.datalink()
    streams: dict[tuple[tuple[str, int], tuple[str, int]], _Stream] = {}
    try:
        for when, frame in reader:
            try:
                ip = _ip_of(datalink, frame)
            except (dpkt.dpkt.Error, struct.error, IndexError):
                continue
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP) or port not in (tcp.sport, tcp.dport):
                continue
            src = (_address(ip, ip.src), tcp.sport)
            dst = (_address(ip, ip.dst), tcp.dport)
            to_server = tcp.dport == port
            client, server = (src, dst) if to_server else (dst, src)
            stream = streams.get((client, server))
            if stream is None:
                stream = streams[(client, server)] = _Stream(f"#{len(streams) + 1}", client, server)
                yield Event(when, stream.name, "--", note=f"{show_address(client)} -> {show_address(server)}")
            direction = stream.to_server if to_server else stream.to_client
            yield from _segment(when, stream, direction, tcp)
    except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError, ValueError, struct.error) as exc:
        raise CaptureError(_damage(source, exc, "the capture is damaged")) from None
    for stream in streams.values():
        for direction in (stream.to_server, stream.to_client):
            if direction.held and direction.decoder is not None:
                yield Event(
                    0.0,
                    stream.name,
                    direction.arrow,
                    note=f"{len(direction.held)} segments after a gap the capture never filled: not decoded",
                )
    if source.cut is not None:
        # dpkt hands over a last record cut short as if it were whole.
        raise CaptureError(_damage(source, ValueError(), "the capture is cut short"))


def server_ports(handle: BinaryIO) -> list[tuple[int, int]]:
    """The TCP ports that accepted connections in the capture (the port of
    each SYN-ACK's sender), with how many, most first; for a capture with
    no handshake, every port that carried data. Raises :class:`CaptureError`."""
    source = _Reader(handle)
    reader = _open(source)
    datalink = reader.datalink()
    accepted: collections.Counter[int] = collections.Counter()
    carried: collections.Counter[int] = collections.Counter()
    try:
        for _when, frame in reader:
            try:
                ip = _ip_of(datalink, frame)
            except (dpkt.dpkt.Error, struct.error, IndexError):
                continue
            tcp = getattr(ip, "data", None)
            if not isinstance(tcp, dpkt.tcp.TCP):
                continue
            if tcp.flags & dpkt.tcp.TH_SYN and tcp.flags & dpkt.tcp.TH_ACK:
                accepted[tcp.sport] += 1
            elif tcp.data:
                carried[min(tcp.sport, tcp.dport)] += 1
    except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError, ValueError, struct.error) as exc:
        raise CaptureError(_damage(source, exc, "the capture is damaged")) from None
    return (accepted or carried).most_common()


def _segment(when: float, stream: _Stream, direction: _Direction, tcp: Any) -> Iterator[Event]:
    payload = bytes(tcp.data)
    if tcp.flags & dpkt.tcp.TH_SYN:
        direction.base = (tcp.seq + 1) & 0xFFFFFFFF
        direction.delivered = 0
        return
    if direction.base is None:
        direction.base = tcp.seq  # the start was not captured: begin here
    if payload:
        # The segment's stream offset: its sequence number unwrapped to the
        # offset nearest what was delivered (sequence numbers wrap at 2**32).
        expected = (direction.base + direction.delivered) & 0xFFFFFFFF
        delta = (tcp.seq - expected) & 0xFFFFFFFF
        if delta >= 0x80000000:
            delta -= 0x100000000
        offset = direction.delivered + delta
        if offset < direction.delivered:  # a retransmission or overlap: keep what is new
            payload = payload[direction.delivered - offset :]
            offset = direction.delivered
        if payload:
            current = direction.held.get(offset)
            if current is None:
                heapq.heappush(direction.heap, offset)
            if current is None or len(payload) > len(current):
                direction.held[offset] = payload
        data = []
        heap, held = direction.heap, direction.held
        while heap and heap[0] <= direction.delivered:
            start = heapq.heappop(heap)
            chunk = held.pop(start)
            cut = direction.delivered - start  # the part already delivered
            if cut < len(chunk):
                data.append(chunk[cut:] if cut else chunk)
                direction.delivered += len(chunk) - cut
        if data:
            yield from _decode(when, stream, direction, b"".join(data))
    if tcp.flags & dpkt.tcp.TH_FIN and not direction.held:
        yield from _decode(when, stream, direction, b"")


def _decode(when: float, stream: _Stream, direction: _Direction, data: bytes) -> Iterator[Event]:
    if direction.decoder is None:
        return
    events, lost = watch(direction.decoder, data, when, stream.name, direction.arrow)
    if lost:
        direction.decoder = None
    yield from events
