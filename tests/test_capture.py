"""framewire decode: messages out of captures, however TCP delivered them."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import dpkt
import pytest

from conftest import run_cli
from framewire import Message, encode, encode_many
from framewire.tools.capture import CaptureError, read_capture

CLIENT, SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 65432)


class Flow:
    """Writes the frames of one TCP connection, with sequence numbers kept right."""

    def __init__(self, writer: dpkt.pcap.Writer | dpkt.pcapng.Writer) -> None:
        self.writer = writer
        self.seq = {True: 1000, False: 5000}  # to_server -> next sequence number
        self.time = 1_700_000_000.0

    def frame(
        self, to_server: bool, payload: bytes = b"", flags: int = dpkt.tcp.TH_ACK, seq: int | None = None
    ) -> None:
        src, dst = (CLIENT, SERVER) if to_server else (SERVER, CLIENT)
        tcp = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=self.seq[to_server] if seq is None else seq,
                           flags=flags, data=payload)  # fmt: skip
        ip = dpkt.ip.IP(
            src=socket.inet_aton(src[0]), dst=socket.inet_aton(dst[0]), p=dpkt.ip.IP_PROTO_TCP, data=tcp
        )
        ip.len = len(bytes(ip))
        eth = dpkt.ethernet.Ethernet(
            src=b"\x00" * 6, dst=b"\x00" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip
        )
        self.time += 0.001
        self.writer.writepkt(bytes(eth), ts=self.time)

    def open(self) -> None:
        self.frame(True, flags=dpkt.tcp.TH_SYN, seq=999)
        self.frame(False, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, seq=4999)

    def send(self, to_server: bool, payload: bytes) -> None:
        self.frame(to_server, payload)
        self.seq[to_server] += len(payload)


REQUESTS = [
    Message.from_json({"action": "search", "value": "\N{DOG FACE}"}),
    Message.from_bytes(bytes(range(200)), content_type="binary/custom-client-binary-type"),
    Message.from_text("hello", encoding="utf-16"),
]


def write_capture(path: Path, ng: bool = False) -> None:
    with path.open("wb") as handle:
        writer = dpkt.pcapng.Writer(handle) if ng else dpkt.pcap.Writer(handle)
        flow = Flow(writer)
        flow.open()
        wire = encode_many(REQUESTS)
        # The first request split across three segments, the third one sent before the second.
        first = encode(REQUESTS[0])
        base = flow.seq[True]
        flow.frame(True, first[:10], seq=base)
        flow.frame(True, first[30:], seq=base + 30)  # out of order
        flow.frame(True, first[10:30], seq=base + 10)
        flow.frame(True, first[:10], seq=base)  # a retransmission
        flow.seq[True] = base + len(first)
        # The other two requests in one segment.
        flow.send(True, wire[len(first) :])
        flow.send(False, encode(Message.from_json({"result": "ok"})))
        flow.frame(True, flags=dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)


@pytest.mark.parametrize("ng", [False, True], ids=["pcap", "pcapng"])
def test_reassembly_out_of_order_retransmitted_and_coalesced(tmp_path: Path, ng: bool) -> None:
    path = tmp_path / ("wire.pcapng" if ng else "wire.pcap")
    write_capture(path, ng)
    with path.open("rb") as handle:
        events = list(read_capture(handle, 65432))
    messages = [e for e in events if e.message is not None]
    assert [(e.direction, e.message) for e in messages] == [
        ("->", REQUESTS[0]),
        ("->", REQUESTS[1]),
        ("->", REQUESTS[2]),
        ("<-", Message.from_json({"result": "ok"})),
    ]
    assert events[0].note == "10.0.0.1:40000 -> 10.0.0.2:65432"
    assert not [e for e in events if e.error is not None]


def test_decode_command(tmp_path: Path) -> None:
    path = tmp_path / "wire.pcap"
    write_capture(path)
    result = run_cli("decode", str(path))
    assert result.returncode == 0, result.stderr
    assert '#1 -> {"byteorder":' in result.stdout and '"value": "\N{DOG FACE}"' in result.stdout
    assert "(200 bytes)" in result.stdout and "hello" in result.stdout
    assert result.stdout.strip().endswith("4 messages on port 65432")
    lines = run_cli("decode", str(path), "--json").stdout.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r.get("direction") for r in records if "header" in r] == ["->", "->", "->", "<-"]
    assert run_cli("decode", str(path), "--port", "1").stdout.strip() == "0 messages on port 1"


def test_a_gap_the_capture_never_filled(tmp_path: Path) -> None:
    path = tmp_path / "gap.pcap"
    with path.open("wb") as handle:
        flow = Flow(dpkt.pcap.Writer(handle))
        flow.open()
        data = encode(REQUESTS[1])
        flow.frame(True, data[50:], seq=flow.seq[True] + 50)  # the first 50 bytes were lost
    with path.open("rb") as handle:
        events = list(read_capture(handle))
    assert not [e for e in events if e.message is not None]
    assert "never filled" in events[-1].note


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "junk.pcap"
    path.write_bytes(b"this is not a capture at all")
    with path.open("rb") as handle, pytest.raises(CaptureError):
        list(read_capture(handle))
    result = run_cli("decode", str(path))
    assert result.returncode == 1
    assert "not a pcap or pcapng capture" in result.stderr and "Traceback" not in result.stderr


def _stream_exchange() -> tuple[list[bytes], list[bytes]]:
    # A stream asked for (id 7, unordered), two items, a cancel, the cancelled end.
    def request(**extensions: object) -> Message:
        return Message.from_json({"action": "tail", "value": 3}, extensions=extensions)

    asked = request(**{"framewire-id": 7, "framewire-stream": True, "framewire-unordered": True})
    cancel = Message(b"null", "text/json", "utf-8", extensions={"framewire-cancel": 7})
    item = {"framewire-id": 7, "framewire-stream": "item", "framewire-unordered": True}
    items = [Message.from_json({"result": n}, extensions=item) for n in range(2)]
    items[1] = Message.from_json(
        {"result": 1}, extensions={**item, "framewire-dropped": 3}
    )  # (a subscriber's gap)
    ended = Message.from_json(
        {"error": {"code": "cancelled", "message": "Request 7 was cancelled by its client."}},
        extensions={"status": "error", "framewire-id": 7, "framewire-unordered": True},
    )
    return [asked.encode(), cancel.encode()], [m.encode() for m in [*items, ended]]


def write_stream_capture(path: Path) -> None:
    """A capture of a stream and its cancel (for decode and the dissector)."""
    to_server, to_client = _stream_exchange()
    with path.open("wb") as handle:
        flow = Flow(dpkt.pcap.Writer(handle))
        flow.open()
        flow.send(True, to_server[0])
        flow.send(False, to_client[0])
        flow.send(False, to_client[1])
        flow.send(True, to_server[1])
        flow.send(False, to_client[2])


def test_decode_shows_ids_stream_positions_and_cancels(tmp_path: Path) -> None:
    path = tmp_path / "stream.pcap"
    write_stream_capture(path)
    result = run_cli("decode", str(path))
    assert result.returncode == 0, result.stderr
    headings = [line for line in result.stdout.splitlines() if " #1 " in line and " {" in line]
    assert [h.split(" {", 1)[0].split(" #1 ", 1)[1] for h in headings] == [
        "-> [id 7, stream requested, unordered]",
        "<- [id 7, stream item, unordered]",
        "<- [id 7, stream item, unordered, dropped 3]",
        "-> [cancels 7]",
        "<- [id 7, unordered]",
    ]
