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

import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import dpkt

from framewire.protocol import Decoder
from framewire.wireview import Event, watch

__all__ = ["CaptureError", "read_capture"]

_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
_DLT_NULL, _DLT_EN10MB, _DLT_RAW, _DLT_LINUX_SLL, _DLT_LINUX_SLL2 = 0, 1, 101, 113, 276


class CaptureError(Exception):
    """The file is not a capture this reader understands."""


@dataclass
class _Direction:
    arrow: str
    next_seq: int | None = None
    held: dict[int, bytes] = field(default_factory=dict)
    decoder: Decoder | None = field(default_factory=Decoder)


@dataclass
class _Stream:
    name: str
    client: tuple[str, int]
    server: tuple[str, int]
    to_server: _Direction = field(default_factory=lambda: _Direction("->"))
    to_client: _Direction = field(default_factory=lambda: _Direction("<-"))


def _open(handle: BinaryIO) -> Any:
    magic = handle.read(4)
    handle.seek(0)
    try:
        if magic == _PCAPNG_MAGIC:
            return dpkt.pcapng.Reader(handle)
        return dpkt.pcap.Reader(handle)
    except (ValueError, dpkt.dpkt.Error) as exc:
        raise CaptureError(f"not a pcap or pcapng capture ({exc})") from None


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
    """Every framewire message on TCP ``port`` in the capture, per connection, in order."""
    reader = _open(handle)
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
                yield Event(when, stream.name, "--", note=f"{_show(client)} -> {_show(server)}")
            direction = stream.to_server if to_server else stream.to_client
            yield from _segment(when, stream, direction, tcp)
    except (dpkt.dpkt.NeedData, dpkt.dpkt.UnpackError, ValueError, struct.error) as exc:
        raise CaptureError(f"the capture is damaged or cut short ({exc})") from None
    for stream in streams.values():
        for direction in (stream.to_server, stream.to_client):
            if direction.held and direction.decoder is not None:
                yield Event(
                    0.0,
                    stream.name,
                    direction.arrow,
                    note=f"{len(direction.held)} segments after a gap the capture never filled: not decoded",
                )


def _show(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _segment(when: float, stream: _Stream, direction: _Direction, tcp: Any) -> Iterator[Event]:
    seq = tcp.seq
    payload = bytes(tcp.data)
    if tcp.flags & dpkt.tcp.TH_SYN:
        direction.next_seq = (seq + 1) & 0xFFFFFFFF
        return
    if direction.next_seq is None:
        direction.next_seq = seq  # the start was not captured: begin here
    if payload:
        offset = (seq - direction.next_seq) & 0xFFFFFFFF
        if offset >= 0x80000000:  # before what was delivered: a retransmission or overlap
            skip = (direction.next_seq - seq) & 0xFFFFFFFF
            payload = payload[skip:]
            seq = direction.next_seq
        if payload:
            current = direction.held.get(seq)
            if current is None or len(payload) > len(current):
                direction.held[seq] = payload
        data = []
        while direction.next_seq in direction.held:
            chunk = direction.held.pop(direction.next_seq)
            data.append(chunk)
            direction.next_seq = (direction.next_seq + len(chunk)) & 0xFFFFFFFF
            # Drop held segments now wholly delivered; trim one that overlaps.
            for start in [s for s in direction.held if (s - direction.next_seq) & 0xFFFFFFFF >= 0x80000000]:
                rest = direction.held.pop(start)
                cut = (direction.next_seq - start) & 0xFFFFFFFF
                if cut < len(rest):
                    direction.held[direction.next_seq] = rest[cut:]
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
