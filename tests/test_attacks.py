"""Regression tests for the attacks of the adversarial review (issue 9):
each finding, and the class of input behind it, over real sockets where the
finding was; the fuzz properties of the response path and of the tools'
printing, checked with hypothesis."""

from __future__ import annotations

import contextlib
import encodings
import json
import logging
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from fuzz_response import check_response_path
from fuzz_tools import check_printing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DRIVER, connect, read_messages, read_until_closed, run_cli, running
from framewire import Decoder, Message, encode, encode_many
from framewire.core.cache import BoundedCache, footprint
from framewire.core.decoder import HeaderCache
from framewire.core.errors import BadEncoding
from framewire.core.message import UnencodableMessage, text_codec
from framewire.server.app import echo
from framewire.tools.capture import read_capture
from framewire.tools.ping import PING_KEY, probe_reply

# Every test here runs on both drivers: the epoll server and framewire.aio.
pytestmark = pytest.mark.usefixtures("driver", "transport")


def frame(header: bytes, content: bytes = b"") -> bytes:
    return struct.pack(">H", len(header)) + header + content


def hdr(length: int, **extra: Any) -> bytes:
    base = {
        "byteorder": "big",
        "content-type": "binary/x",
        "content-encoding": "binary",
        "content-length": length,
    }
    return json.dumps({**base, **extra}).encode()


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def probe(
    value: Any, content: bytes = b"p", content_type: str = "binary/framewire-ping", enc: str = "binary"
) -> bytes:
    header = {"byteorder": "big", "content-type": content_type, "content-encoding": enc,
              "content-length": len(content), PING_KEY: "VALUE"}  # fmt: skip
    text = value if isinstance(value, bytes) else json.dumps(value).encode()
    raw = json.dumps(header).encode().replace(b'"VALUE"', text)
    return frame(raw, content)


def deep_text(depth: int) -> bytes:
    return b"[" * depth + b"0" + b"]" * depth


def one_answer(port: int, data: bytes) -> Message:
    with connect(port) as sock:
        sock.sendall(data)
        (answer,) = read_messages(sock, 1)
        # The connection is kept: a fresh request is still answered.
        sock.sendall(encode(Message.from_bytes(b"after")))
        assert len(read_messages(sock, 1)) == 1
    return answer


# -- 1. nothing a peer sends or a handler returns stops the server -----------------


def test_a_probe_nesting_300_deep_is_answered_exactly() -> None:
    with running() as server:
        answer = one_answer(server.port, probe(nested(300)))
        assert answer.get(PING_KEY) == nested(300)  # orjson writes 254 levels; the fallback the rest


def test_a_probe_too_deep_to_write_back_gets_handler_error_and_the_server_lives() -> None:
    with running() as server:
        answer = one_answer(server.port, probe(deep_text(1020)))
        assert answer.is_error
        error = answer.error()
        assert error is not None and error.code == "handler-error"


def bad_responses() -> list[Any]:
    return [
        pytest.param(lambda r: Message.from_bytes(b"x", extensions={"o": object()}), id="not-json"),
        pytest.param(
            lambda r: Message.from_bytes(b"x", extensions={"big": "x" * 70000}), id="header-over-64k"
        ),
        pytest.param(lambda r: Message(b"x", "text/plain", "zlib"), id="text-with-byte-codec"),
        pytest.param(lambda r: Message(b"x", "text/plain", "punycode"), id="text-with-nonlinear-codec"),
        pytest.param(lambda r: Message.from_bytes(b"x", extensions={"deep": nested(1100)}), id="too-deep"),
        pytest.param(lambda r: "a string", id="not-a-message"),
    ]


@pytest.mark.parametrize("handler", bad_responses())
def test_a_response_that_cannot_be_sent_is_handler_error(handler: Any, caplog: Any) -> None:
    with caplog.at_level(logging.ERROR, "framewire.server"), running(handler) as server:
        answer = one_answer(server.port, encode(Message.from_bytes(b"x")))
    error = answer.error()
    assert error is not None and error.code == "handler-error"


def test_a_handler_returning_a_128_bit_extension_is_answered_exactly() -> None:
    def handler(request: Message) -> Message:
        return Message.from_bytes(b"x", extensions={"n": 2**70, "m": -(2**100)})

    with running(handler) as server:
        answer = one_answer(server.port, encode(Message.from_bytes(b"x")))
    assert answer.get("n") == 2**70 and answer.get("m") == -(2**100)


def test_the_last_line_of_defence_closes_only_the_connection_concerned(caplog: Any, monkeypatch: Any) -> None:
    from prometheus_client import CollectorRegistry

    from framewire.server.engine import ServerConnection
    from framewire.server.metrics import Metrics

    faults: list[int] = []

    def fault(*args: Any) -> None:
        faults.append(1)
        raise RuntimeError("a fault of framewire's own")

    # The fault is injected where the driver looks a method up at run time.
    # The asyncio driver calls ServerConnection.receive through Python. The
    # epoll driver, compiled (as a wheel built with a compiler has it), calls
    # the engine directly and would never see a patched method; it counts
    # each read's bytes on its metrics' counter, a Python object.
    metrics = Metrics(echo, CollectorRegistry())
    options: dict[str, Any] = {} if DRIVER[0] == "asyncio" else {"metrics": metrics}
    with running(**options) as server:
        with connect(server.port) as good:
            good.sendall(encode(Message.from_bytes(b"first")))
            assert read_messages(good, 1)[0].content == b"first"
            if DRIVER[0] == "asyncio":
                original = ServerConnection.receive

                def faulty(self: ServerConnection, data: bytes, now: float) -> None:
                    if b"boom" in data and not faults:
                        fault()
                    original(self, data, now)

                monkeypatch.setattr(ServerConnection, "receive", faulty)
            else:
                # The next read is the bad connection's: the good one waits.
                monkeypatch.setattr(metrics.bytes_received, "inc", fault)
            with connect(server.port) as bad, caplog.at_level(logging.ERROR, "framewire.server"):
                bad.sendall(encode(Message.from_bytes(b"boom")))
                # Closed with the request unread: a reset is a close too.
                with contextlib.suppress(ConnectionResetError):
                    assert read_until_closed(bad) == b""
            monkeypatch.undo()
            good.sendall(encode(Message.from_bytes(b"still")))
            assert read_messages(good, 1)[0].content == b"still"
    assert faults == [1] and "internal error while serving" in caplog.text


# -- 2. the message deadline follows the decoder's state -----------------------------


@pytest.mark.parametrize(
    "tail",
    [struct.pack(">H", 80), frame(hdr(5))[:1], frame(hdr(5)), frame(hdr(5)) + b"ab"],
    ids=["after-length", "after-1-byte", "after-header", "mid-content"],
)
def test_the_deadline_starts_whatever_the_read_ended_on(tail: bytes) -> None:
    with running(message_timeout=0.3) as server, connect(server.port) as sock:
        sock.sendall(frame(hdr(3), b"abc") + tail)
        first, second = read_messages(sock, 2)
        assert first.content == b"abc"
        error = second.error()
        assert error is not None and error.code == "timeout"
        assert sock.recv(1) == b""


# -- 3. only codecs that decode in linear time --------------------------------------


@pytest.mark.parametrize("name", ["punycode", "idna", "PUNYCODE", "Puny-Code", "IDNA"])
def test_nonlinear_codecs_are_not_text_codecs(name: str) -> None:
    assert text_codec(name) is None
    with pytest.raises(BadEncoding):
        Message(b"abc", "text/plain", name).text()


def test_a_punycode_request_is_bad_encoding_over_a_socket() -> None:
    request = Message(b"-" + "\N{LATIN SMALL LETTER E WITH ACUTE}".encode("punycode") * 20000,
                      "text/plain", "punycode")  # fmt: skip
    with running() as server:
        answer = one_answer(server.port, encode(request))
    error = answer.error()
    assert error is not None and error.code == "bad-encoding"


# -- 4. caches bounded in bytes ------------------------------------------------------


def test_the_decoder_cache_stays_within_its_byte_budget() -> None:
    cache = HeaderCache(256 * 1024)
    for i in range(3000):
        raw = hdr(0, x=nested(100), i=i)  # a short header that parses into many objects
        Decoder(cache=cache).feed(frame(raw))
        assert cache.size <= cache.max_bytes
    # The cost counted covers what an entry really holds.
    raw = hdr(0, x=nested(100))
    Decoder(cache=cache).feed(frame(raw))
    header = cache.get(raw)
    assert (
        header is not None
        and footprint(header.extensions) < 2 * len(raw) + 512 + footprint(header.extensions) + 1
    )


def test_a_bounded_cache_refuses_entries_too_large_and_starts_over_when_full() -> None:
    cache: BoundedCache[int, str] = BoundedCache(1600)
    cache.put(1, "big", 101)  # more than a sixteenth of the budget: not kept
    assert 1 not in cache
    for key in range(20):
        cache.put(key, "v", 100)
        assert cache.size <= 1600
    assert len(cache) == 20 - 16


def test_big_content_types_do_not_grow_the_server() -> None:
    process = psutil.Process()
    with running() as server, connect(server.port) as sock:

        def batch(n: int) -> None:
            for part in range(30):
                requests = [Message(b"x", f"binary/{n}-{part}-{i}-" * 4000, "binary", extensions={"e": 1})
                            for i in range(10)]  # fmt: skip
                sock.sendall(encode_many(requests))
                assert len(read_messages(sock, 10)) == 10

        batch(0)
        before = process.memory_info().rss
        for n in range(1, 4):
            batch(n)
        grown = process.memory_info().rss - before
    # Each batch is ~19 MiB of distinct headers: none of it may stay behind.
    assert grown < 24 * 1024 * 1024, grown


# -- 5. codec names that Python would remember ---------------------------------------


@pytest.mark.parametrize(
    "name",
    ["utf-\N{CYRILLIC SMALL LETTER IE}8", "\N{LATIN SMALL LETTER DOTLESS I}dna", "utf\N{NO-BREAK SPACE}8",
     "la\N{LATIN SMALL LETTER LONG S}in-1", "utf-8\x00"],
)  # fmt: skip
def test_non_ascii_codec_names_are_refused(name: str) -> None:
    assert text_codec(name) is None


def test_endless_spellings_of_a_codec_grow_nothing() -> None:
    before = len(encodings._cache)
    names = [f"utf{'-' * (i % 7 + 1)}{'_' * (i // 7 % 5)}8" for i in range(35)]
    names += [f"UTF{'!' * i}8" for i in range(1, 40)] + [f"latin{' ' * i}1" for i in range(1, 40)]
    for name in names:
        info = text_codec(name)
        assert info is not None, name
        assert Message(b"abc", "text/plain", name).text() == "abc"
    # Python's codec registry saw only canonical names: nothing new remembered.
    assert len(encodings._cache) <= before + 2


# -- 6. extensions immutable all the way down -----------------------------------------


def test_extensions_from_the_wire_are_read_only_and_not_shared() -> None:
    cache = HeaderCache(1 << 20)
    raw = frame(hdr(0, x=[1, {"y": [2]}]))
    first = Decoder(cache=cache).feed(raw)[0]
    second = Decoder(cache=cache).feed(raw)[0]
    with pytest.raises(TypeError):
        first.extensions["x"].append(3)
    with pytest.raises(TypeError):
        first.extensions["x"][1]["y"].append(3)
    with pytest.raises(TypeError):
        first.extensions["x"][1]["z"] = 1
    assert second.extensions["x"] == [1, {"y": [2]}]
    import copy

    mutable = copy.deepcopy(first.extensions["x"])
    mutable[1]["y"].append(3)  # a copy to change: the message keeps its own
    assert first.extensions["x"] == [1, {"y": [2]}]


def test_a_handler_cannot_change_another_connections_extensions() -> None:
    def handler(request: Message) -> Message:
        request.extensions["x"].append("mine")
        return request

    with running(handler) as server:
        raw = frame(hdr(0, x=[1]))
        for _ in range(2):
            answer = one_answer(server.port, raw)
            error = answer.error()
            assert error is not None and error.code == "handler-error"


def test_extensions_given_to_a_message_are_copied() -> None:
    given_ext: dict[str, Any] = {"x": [1]}
    message = Message.from_bytes(b"", extensions=given_ext)
    given_ext["x"].append(2)
    assert message.extensions["x"] == [1]


# -- 7. the proxy does not spin once the upstream has closed --------------------------


def test_proxy_is_idle_after_the_upstream_closes_first(spawn: Any) -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    proxy = spawn("proxy", "127.0.0.1", str(upstream.getsockname()[1]), "--port", "0", "-q")
    port = int(proxy.wait_for(r"proxy on 127\.0\.0\.1:(\d+)").group(1))
    with connect(port) as client:
        upstream.settimeout(10)
        conn, _ = upstream.accept()
        conn.close()  # the upstream closes first (an idle timeout, the guide's server)
        upstream.close()
        assert client.recv(1) == b""  # the half-close reached the client, which stays open
        process = psutil.Process(proxy.proc.pid)
        before = process.cpu_times()
        time.sleep(1.0)  # a window to measure CPU use in, not a wait for an event
        after = process.cpu_times()
    assert (after.user + after.system) - (before.user + before.system) < 0.3  # no busy loop


# -- 8. the tools show every message ----------------------------------------------------


def nasty_messages() -> list[Message]:
    deep = "[" * 300 + "]" * 300
    return [
        Message(deep.encode(), "text/json", "utf-8"),
        Message.from_bytes(b"x", extensions={"deep": nested(300)}),
        Message(b"\\ud800", "text/plain", "unicode_escape"),
        Message(b"+2AA-", "text/plain", "utf-7"),
        Message(b"\xff", "text/plain", "utf-8"),
        Message(("[" * 1000 + "]" * 1000).encode(), "text/json", "utf-8"),
    ]


def test_request_prints_every_nasty_answer(tmp_path: Path) -> None:
    answers = iter(nasty_messages())

    def handler(request: Message) -> Message:
        return next(answers)

    with running(handler) as server:
        for _ in nasty_messages():
            result = run_cli("request", "127.0.0.1", str(server.port), "--text", "x", "--show-header")
            assert "Traceback" not in result.stderr, result.stderr
            assert result.returncode in (0, 1)
            assert result.stdout or result.stderr


def test_proxy_and_decode_show_every_nasty_message(spawn: Any, tmp_path: Path) -> None:
    from test_wireshark import synthetic_capture

    wire = encode_many(nasty_messages())
    with running() as server:  # echo: the nasty messages go both ways
        proxy = spawn("proxy", "127.0.0.1", str(server.port), "--port", "0",
                      "--log", str(tmp_path / "log.jsonl"))  # fmt: skip
        port = int(proxy.wait_for(r"proxy on 127\.0\.0\.1:(\d+)").group(1))
        with connect(port) as sock:
            sock.sendall(wire)
            read_messages(sock, len(nasty_messages()))
        proxy.wait_for(r"\\ud800", stream="stdout")
        code, out, err = proxy.stop()
    assert code == 0 and "Traceback" not in err, err
    assert out.count(" -> {") == len(nasty_messages()) == out.count(" <- {")
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert sum("header" in r for r in records) == 2 * len(nasty_messages())
    synthetic_capture(tmp_path / "nasty.pcap", 47000, [wire])
    for extra in ([], ["--json"]):
        result = run_cli("decode", str(tmp_path / "nasty.pcap"), "--port", "47000", *extra)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (
        f"{len(nasty_messages())} messages"
        in run_cli("decode", str(tmp_path / "nasty.pcap"), "--port", "47000").stdout
    )


# -- 9. decode reassembles in O(n log n) -----------------------------------------------


@pytest.mark.timeout(20)
def test_decode_reassembles_many_reversed_segments() -> None:
    import io

    import dpkt

    message = encode(Message.from_bytes(bytes(range(256)) * 80))  # 20 KB, one byte a segment, reversed
    buf = io.BytesIO()
    writer = dpkt.pcap.Writer(buf, linktype=dpkt.pcap.DLT_RAW)
    for offset in reversed(range(len(message))):
        tcp = dpkt.tcp.TCP(sport=40000, dport=47000, seq=1000 + offset, flags=dpkt.tcp.TH_ACK)
        tcp.data = message[offset : offset + 1]
        ip = dpkt.ip.IP(src=b"\x7f\0\0\1", dst=b"\x7f\0\0\1", p=dpkt.ip.IP_PROTO_TCP, data=tcp)
        ip.len = len(bytes(ip))
        writer.writepkt(bytes(ip), ts=1.0)
    # The first segment seen is the last byte: decoding starts there, so the
    # stream begins with the SYN's successor instead, as a real capture's does.
    syn = dpkt.tcp.TCP(sport=40000, dport=47000, seq=999, flags=dpkt.tcp.TH_SYN)
    ip = dpkt.ip.IP(src=b"\x7f\0\0\1", dst=b"\x7f\0\0\1", p=dpkt.ip.IP_PROTO_TCP, data=syn)
    ip.len = len(bytes(ip))
    head = io.BytesIO()
    w2 = dpkt.pcap.Writer(head, linktype=dpkt.pcap.DLT_RAW)
    w2.writepkt(bytes(ip), ts=0.5)
    data = head.getvalue() + buf.getvalue()[24:]  # one file header, the SYN, then the segments
    handle = io.BytesIO(data)
    events = list(read_capture(handle, 47000))
    decoded = [e.message for e in events if isinstance(e.message, Message)]
    assert [m.content for m in decoded] == [bytes(range(256)) * 80]


# -- 11. integers beyond 64 bits ---------------------------------------------------------


def test_extension_integers_beyond_64_bits_arrive_exactly() -> None:
    (message,) = Decoder().feed(frame(hdr(0, n=2**64 + 1, m=-(10**30), f=1.5)))
    assert message.get("n") == 2**64 + 1 and type(message.get("n")) is int
    assert message.get("m") == -(10**30)
    assert message.get("f") == 1.5
    assert message.encode() == frame(hdr(0, n=2**64 + 1, m=-(10**30), f=1.5))


def test_a_lone_surrogate_is_refused_on_both_parse_paths() -> None:
    for extra in ({}, {"n": 2**70}):  # without and with a 20-digit number
        raw = hdr(0, **extra)[:-1] + b', "s": "\\ud800"}'
        with pytest.raises(Exception) as info:
            Decoder().feed(frame(raw))
        assert getattr(info.value, "code", None) == "bad-header"


# -- 12. every response is a valid message -----------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "encoding", "content"),
    [("text/plain", "utf-16", "h\N{DOG FACE}".encode("utf-16")), ("text/json", "utf-8", b'{"a": 1}'),
     ("binary/x", "binary", b"\x00\x01")],
)  # fmt: skip
def test_a_probe_reply_keeps_the_probes_type_and_encoding(
    content_type: str, encoding: str, content: bytes
) -> None:
    with running() as server:
        answer = one_answer(server.port, probe(7, content, content_type, encoding))
    assert (answer.content_type, answer.content_encoding, answer.content) == (content_type, encoding, content)
    assert answer.get(PING_KEY) == 7
    if answer.is_text:
        answer.text()  # a valid text message


def test_a_text_probe_with_a_byte_codec_gets_bad_encoding() -> None:
    with pytest.raises(BadEncoding):
        probe_reply(Message(b"x", "text/plain", "zlib", extensions={PING_KEY: 1}))
    with pytest.raises(BadEncoding):
        echo(Message(b"x", "text/plain", "base64"))
    with pytest.raises(UnencodableMessage):
        Message(b"x", "text/plain", "rot13")._header.sendable()


# -- 13. clear words for cut captures and the second signal ------------------------------


def test_decode_says_a_capture_was_cut_mid_record(tmp_path: Path) -> None:
    from test_wireshark import synthetic_capture

    whole = tmp_path / "whole.pcap"
    synthetic_capture(whole, 47000, [encode(Message.from_bytes(b"x" * 500))])
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole.read_bytes()[:-100])
    result = run_cli("decode", str(cut), "--port", "47000")
    assert result.returncode == 1
    assert "ends in the middle of a record" in result.stderr
    assert "Traceback" not in result.stderr


def test_decode_gives_the_reason_for_an_impossible_block_length(tmp_path: Path) -> None:
    block = struct.pack("<II", 0x0A0D0D0A, 0x7FFFFFF0) + struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)
    path = tmp_path / "huge.pcapng"
    path.write_bytes(block + b"\0" * 64)
    result = run_cli("decode", str(path))
    assert result.returncode == 1
    assert "ends in the middle of a record" in result.stderr and "2147483604 bytes" in result.stderr


def test_the_second_signal_says_what_it_does(spawn: Any) -> None:
    import signal

    server = spawn("serve", "--port", "0", "--app", "echo", "--grace", "30", "--log-level", "debug")
    port = server.port()
    with connect(port) as sock:
        sock.sendall(frame(hdr(10), b"part"))  # a message in progress keeps the server draining
        server.wait_for("connection from")  # its DEBUG line
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("answering in-flight requests")
        server.proc.send_signal(signal.SIGTERM)
        code, _, err = server.stop(None)
    assert code == 0
    assert "stopping now: closing 1 connections" in err
    assert "grace period" not in err.split("answering in-flight requests")[1]


# -- the fuzz properties, with hypothesis -------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8),
)  # fmt: skip
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=12,
)
ENCODINGS = [
    "utf-8",
    "utf-16",
    "latin-1",
    "binary",
    "zlib",
    "punycode",
    "unicode_escape",
    "utf-7",
    "rot13",
    "x",
]


@st.composite
def framed(draw: Any) -> bytes:
    content = draw(st.binary(max_size=40))
    header: dict[str, Any] = {
        "byteorder": draw(st.sampled_from(["little", "big"])),
        "content-type": draw(st.sampled_from(["text/plain", "text/json", "binary/x", "application/json"])),
        "content-encoding": draw(st.sampled_from(ENCODINGS)),
        "content-length": len(content),
    }
    extras = draw(st.dictionaries(st.sampled_from([PING_KEY, "x", "status", "y"]), json_values, max_size=2))
    if draw(st.booleans()):
        extras["deep"] = nested(draw(st.integers(200, 400)))
    raw = json.dumps({**header, **extras}).encode()
    return frame(raw, content)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(framed(), min_size=1, max_size=3))
def test_every_accepted_message_echoes_into_a_valid_message(messages: list[bytes]) -> None:
    check_response_path(b"".join(messages))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(framed(), min_size=1, max_size=3), st.binary(max_size=20))
def test_the_tools_print_whatever_a_stream_holds(messages: list[bytes], junk: bytes) -> None:
    check_printing(b"".join(messages) + junk)


def test_fuzz_corpus_passes_both_properties() -> None:
    for path in sorted((Path(__file__).parent.parent / "fuzz" / "corpus").iterdir()):
        check_response_path(path.read_bytes())
        check_printing(path.read_bytes())


def test_python_version_supported() -> None:
    assert sys.version_info >= (3, 11)
