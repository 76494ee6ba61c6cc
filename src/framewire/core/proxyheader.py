"""HAProxy's PROXY protocol header, versions 1 and 2, with no I/O.

A TCP load balancer in front of a server sends, as the very first bytes of
each connection, who the client really is: version 1 is one text line
(``PROXY TCP4 198.51.100.7 203.0.113.1 40000 7000\\r\\n``), version 2 a
binary block (a 12-byte signature, a version and command byte, the address
family, a length, the addresses, then optional TLVs, which are skipped).
:func:`parse` takes the bytes received so far and says: not enough yet,
the header and where it ends, or :class:`ProxyHeaderError`.

A version 2 ``LOCAL`` header (the balancer's own health check) and the
version 1 ``UNKNOWN`` line carry no client: :attr:`ProxyHeader.source` is
None and the connection's own address stands.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["V1_MAX", "V2_SIGNATURE", "ProxyHeader", "ProxyHeaderError", "parse"]

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX: Final = b"PROXY "
#: The longest version 1 line, CRLF included (the specification's bound).
V1_MAX: Final = 107
_V2_FIXED: Final = 16
_V2_ADDRESS_SIZES: Final = {0x1: 12, 0x2: 36, 0x3: 216}  # INET, INET6, UNIX


class ProxyHeaderError(ValueError):
    """The connection does not begin with a valid PROXY protocol header."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the balancer said: the client's address and the one it reached."""

    version: int
    #: The client's (host, port), or None (a health check, UNKNOWN, UNIX).
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    #: Bytes the header took at the start of the stream.
    size: int


def parse(data: bytes, max_size: int = 4096) -> ProxyHeader | None:
    """The header at the start of ``data``, or None when more bytes are
    needed. Raises :class:`ProxyHeaderError` as soon as the bytes cannot
    begin a valid header, or the header would exceed ``max_size`` bytes."""
    if not data:
        return None
    if data[0] == 0x0D:
        return _parse_v2(data, max_size)
    if data[0] == 0x50:  # "P"
        return _parse_v1(data)
    raise ProxyHeaderError(f"no PROXY protocol header: the connection begins with byte 0x{data[0]:02x}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    head = data[: len(_V1_PREFIX)]
    if not _V1_PREFIX.startswith(head):
        raise ProxyHeaderError("no PROXY protocol header: the first bytes are neither version 1 nor 2")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY version 1 line longer than {V1_MAX} bytes")
        return None
    try:
        words = data[:end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY version 1 line is not ASCII") from None
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(1, None, None, end + 2)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"PROXY version 1 line malformed: {data[:end]!r}")
    version = 4 if words[1] == "TCP4" else 6
    source = (_ip(words[2], version), _port(words[4]))
    destination = (_ip(words[3], version), _port(words[5]))
    return ProxyHeader(1, source, destination, end + 2)


def _ip(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"PROXY header: {text!r} is not an IP address") from None
    if address.version != version:
        raise ProxyHeaderError(f"PROXY header: {text} is not an IPv{version} address")
    return str(address)


def _port(text: str) -> int:
    if not text.isdigit() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY header: {text!r} is not a port")
    return int(text)


def _parse_v2(data: bytes, max_size: int) -> ProxyHeader | None:
    signature = data[: len(V2_SIGNATURE)]
    if not V2_SIGNATURE.startswith(signature):
        raise ProxyHeaderError("no PROXY protocol header: the first bytes are neither version 1 nor 2")
    if len(data) < _V2_FIXED:
        return None
    version_command, family_transport, length = struct.unpack_from(">BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY version 2 header with version {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY version 2 header with command {command}")
    size = _V2_FIXED + length
    if size > max_size:
        raise ProxyHeaderError(f"PROXY version 2 header of {size} bytes; the limit is {max_size}")
    if len(data) < size:
        return None
    if command == 0:  # LOCAL: the balancer's own connection (a health check)
        return ProxyHeader(2, None, None, size)
    family = family_transport >> 4
    needed = _V2_ADDRESS_SIZES.get(family)
    if needed is None or family == 0x3:  # UNSPEC, or UNIX: no client address to use
        return ProxyHeader(2, None, None, size)
    if length < needed:
        raise ProxyHeaderError(f"PROXY version 2 addresses need {needed} bytes, the header has {length}")
    block = data[_V2_FIXED : _V2_FIXED + needed]
    if family == 0x1:
        src, dst = str(ipaddress.IPv4Address(block[0:4])), str(ipaddress.IPv4Address(block[4:8]))
        ports = block[8:12]
    else:
        src, dst = str(ipaddress.IPv6Address(block[0:16])), str(ipaddress.IPv6Address(block[16:32]))
        ports = block[32:36]
    source_port, destination_port = struct.unpack(">HH", ports)
    return ProxyHeader(2, (src, source_port), (dst, destination_port), size)


def build_v2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """A version 2 PROXY header for a TCP connection (for tests and tools)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    family = 0x11 if src.version == 4 else 0x21
    block = src.packed + dst.packed + struct.pack(">HH", source[1], destination[1])
    return V2_SIGNATURE + struct.pack(">BBH", 0x21, family, len(block)) + block
