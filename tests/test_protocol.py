"""The decoder and encoder against docs/protocol.md: every error row, every split."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from fuzz_decoder import check_split_invariance
from hypothesis import given, settings
from hypothesis import strategies as st

from framewire import (
    BadHeader,
    BadHeaderLength,
    BadHeaderValue,
    ContentTooLarge,
    Decoder,
    HeaderTooLarge,
    IncompleteMessage,
    Message,
    MissingHeaderKey,
    ProtocolError,
    State,
    encode,
    encode_many,
)

REQUIRED = {"byteorder": "little", "content-type": "binary/x", "content-encoding": "binary"}


def frame(header: bytes, content: bytes = b"") -> bytes:
    return struct.pack(">H", len(header)) + header + content


def header_bytes(**overrides: Any) -> bytes:
    header: dict[str, Any] = {**REQUIRED, "content-length": 0}
    for key, value in overrides.items():
        header[key.replace("_", "-")] = value
    return json.dumps(header).encode()


def decode_all(data: bytes | bytearray, decoder: Decoder | None = None) -> list[Message]:
    decoder = decoder or Decoder()
    out = decoder.feed(data)
    decoder.feed(b"")
    return out


def expect_error(data: bytes, error: type[ProtocolError], **limits: Any) -> ProtocolError:
    decoder = Decoder(**limits)
    with pytest.raises(error) as info:
        decoder.feed(data)
    assert decoder.state is State.FAILED
    assert decoder.error is info.value
    # A decoder that raised stays failed.
    with pytest.raises(error):
        decoder.feed(frame(header_bytes()))
    return info.value


# -- the error table ----------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1])
def test_header_length_0_and_1_are_bad_header_length(size: int) -> None:
    err = expect_error(struct.pack(">H", size) + b"{}", BadHeaderLength)
    assert err.code == "bad-header-length"


def test_header_over_limit_is_refused_from_the_length_alone() -> None:
    err = expect_error(struct.pack(">H", 101), HeaderTooLarge, max_header_size=100)
    assert err.code == "header-too-large"


def test_default_header_limit_is_the_field_maximum() -> None:
    decoder = Decoder()
    assert decoder.feed(struct.pack(">H", 65535) + b" " * 1000) == []
    assert decoder.in_message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b'{"a": "\xff\xfe"}', id="invalid-utf8"),
        pytest.param(b'{"content-length": 0', id="truncated-json"),
        pytest.param(b"[1, 2, 3]", id="json-list"),
        pytest.param(b'"text"', id="json-string"),
        pytest.param(b'{"content-length": NaN}', id="nan"),
        pytest.param(b'{"content-length": Infinity}', id="infinity"),
        pytest.param(b"[" * 60000, id="60000-deep"),
        pytest.param(b"[" * 30000 + b"]" * 30000, id="30000-deep-closed"),
        pytest.param(b"{}garbage", id="trailing-garbage"),
    ],
)
def test_bad_header(raw: bytes) -> None:
    err = expect_error(frame(raw), BadHeader)
    assert err.code == "bad-header"


@pytest.mark.parametrize("key", ["content-length", "content-type", "content-encoding", "byteorder"])
def test_missing_header_key(key: str) -> None:
    header = {**REQUIRED, "content-length": 0}
    del header[key]
    err = expect_error(frame(json.dumps(header).encode()), MissingHeaderKey)
    assert err.code == "missing-header-key"
    assert key in err.message


def test_empty_object_header_is_missing_keys() -> None:
    expect_error(frame(b"{}"), MissingHeaderKey)


@pytest.mark.parametrize(
    "raw_value",
    [
        b"-1",
        b"1.5",
        b"1e3",
        b'"12"',
        b"true",
        b"false",
        b"null",
        b"[]",
        b"-1" + b"0" * 30,
        b"-1" + b"0" * 5000,
    ],
)
def test_bad_content_length(raw_value: bytes) -> None:
    raw = b'{"byteorder":"little","content-type":"a/b","content-encoding":"binary","content-length":%s}'
    err = expect_error(frame(raw % raw_value), BadHeaderValue)
    assert type(err) is BadHeaderValue


@pytest.mark.parametrize(
    "raw_value",
    [b"18446744073709551616", b"10" + b"0" * 29, b"1" + b"0" * 400, b"1" + b"0" * 5000],
    ids=["2**64", "10**30", "400-digits", "5001-digits"],
)
def test_integers_beyond_64_bits_are_too_large_not_malformed(raw_value: bytes) -> None:
    # PROTOCOL: an integer above the limit is content-too-large however large it is.
    raw = b'{"byteorder":"little","content-type":"a/b","content-encoding":"binary","content-length":%s}'
    err = expect_error(frame(raw % raw_value), ContentTooLarge)
    assert type(err) is ContentTooLarge


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("byteorder", "middle"),
        ("byteorder", 1),
        ("content-type", ""),
        ("content-type", 5),
        ("content-encoding", ""),
        ("content-encoding", None),
    ],
)
def test_bad_header_value(key: str, value: Any) -> None:
    header = {**REQUIRED, "content-length": 0, key: value}
    expect_error(frame(json.dumps(header).encode()), BadHeaderValue)


def test_content_too_large_is_refused_before_any_content_byte() -> None:
    raw = header_bytes(content_length=1001)
    err = expect_error(frame(raw), ContentTooLarge, max_content_length=1000)
    assert err.code == "content-too-large"


def test_content_length_2_to_the_63_is_content_too_large() -> None:
    expect_error(frame(header_bytes(content_length=2**63)), ContentTooLarge)


def test_content_at_the_limit_is_accepted() -> None:
    raw = header_bytes(content_length=1000)
    assert decode_all(frame(raw, b"x" * 1000), Decoder(max_content_length=1000))[0].content == b"x" * 1000


@pytest.mark.parametrize(
    "bad", [{"max_header_size": 1}, {"max_header_size": 65536}, {"max_content_length": -1}]
)
def test_limits_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Decoder(**bad)


# -- end of stream ------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 2, 5, 40])
def test_stream_cut_short_is_incomplete_message(cut: int) -> None:
    data = encode(Message.from_bytes(b"0123456789"))
    decoder = Decoder()
    assert decoder.feed(data[:cut]) == []
    with pytest.raises(IncompleteMessage) as info:
        decoder.feed(b"")
    assert info.value.code == "incomplete-message"
    assert decoder.state is State.FAILED


def test_clean_end_of_stream() -> None:
    decoder = Decoder()
    assert decoder.feed(encode(Message.from_bytes(b"x")))[0].content == b"x"
    assert decoder.feed(b"") == []
    assert decoder.state is State.CLOSED
    assert decoder.feed(b"") == []
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")


def test_messages_before_an_error_are_returned_then_the_error_raised() -> None:
    good = encode_many([Message.from_bytes(b"a"), Message.from_bytes(b"b")])
    decoder = Decoder()
    out = decoder.feed(good + struct.pack(">H", 0))
    assert [m.content for m in out] == [b"a", b"b"]
    assert isinstance(decoder.error, BadHeaderLength)
    assert decoder.state is State.FAILED
    with pytest.raises(BadHeaderLength):
        decoder.feed(b"")


def test_feed_checked_returns_the_error_beside_the_messages() -> None:
    good = encode_many([Message.from_bytes(b"a"), Message.from_bytes(b"b")])
    decoder = Decoder()
    messages, error = decoder.feed_checked(good + struct.pack(">H", 0))
    assert [m.content for m in messages] == [b"a", b"b"]
    assert isinstance(error, BadHeaderLength) and error is decoder.error
    assert decoder.feed_checked(b"more") == ([], error)  # failed for good, still not raised
    assert Decoder().feed_checked(good) == (Decoder().feed(good), None)


def test_states_are_named_and_followed() -> None:
    data = encode(Message.from_bytes(b"abc"))
    decoder = Decoder()
    assert decoder.state is State.LENGTH and not decoder.in_message
    decoder.feed(data[:1])
    assert decoder.state is State.LENGTH and decoder.in_message and decoder.buffered == 1
    decoder.feed(data[1:3])
    assert decoder.state is State.HEADER
    decoder.feed(data[3:-1])
    assert decoder.state is State.CONTENT
    assert decoder.feed(data[-1:])[0].content == b"abc"
    assert decoder.state is State.LENGTH and not decoder.in_message


def test_feed_accepts_bytearray_and_memoryview() -> None:
    data = encode(Message.from_bytes(b"abc"))
    assert decode_all(bytearray(data))[0].content == b"abc"
    assert Decoder().feed(memoryview(data))[0].content == b"abc"


def test_empty_content() -> None:
    (message,) = decode_all(frame(header_bytes(content_length=0)))
    assert message.content == b""


def test_duplicate_key_keeps_the_last_value() -> None:
    raw = (
        b'{"byteorder":"big","content-type":"a/b","content-encoding":"binary",'
        b'"content-length":9,"content-length":2}'
    )
    (message,) = decode_all(frame(raw, b"hi"))
    assert message.content == b"hi"


def test_extension_keys_are_kept_in_any_order() -> None:
    raw = (
        b'{"x-trace":[1,{"a":null}],"content-length":1,"status":"ok",'
        b'"byteorder":"big","content-encoding":"binary","content-type":"a/b"}'
    )
    (message,) = decode_all(frame(raw, b"!"))
    assert message.extensions == {"x-trace": [1, {"a": None}], "status": "ok"}
    assert message.byteorder == "big"
    assert message.header["x-trace"] == [1, {"a": None}]


def test_cached_headers_are_validated_against_each_decoders_limit() -> None:
    data = frame(header_bytes(content_length=10), b"0123456789")
    assert decode_all(data)[0].content == b"0123456789"
    expect_error(data, ContentTooLarge, max_content_length=9)
    assert decode_all(data)[0].content == b"0123456789"


def test_large_content_fed_in_small_chunks() -> None:
    content = bytes(range(256)) * 4096  # 1 MiB
    data = encode(Message.from_bytes(content))
    decoder = Decoder()
    out: list[Message] = []
    for i in range(0, len(data), 1000):
        out += decoder.feed(data[i : i + 1000])
    assert len(out) == 1 and out[0].content == content


# -- round trips under every split ----------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
extension_keys = st.text(min_size=1, max_size=12).filter(
    lambda k: k not in ("byteorder", "content-type", "content-encoding", "content-length")
)
extensions = st.dictionaries(extension_keys, json_values, max_size=3)
binary_messages = st.builds(
    lambda data, ext, ctype: Message.from_bytes(data, content_type=ctype, extensions=ext),
    st.binary(max_size=300),
    extensions,
    st.sampled_from(["binary/custom-client-binary-type", "image/png", "application/octet-stream"]),
)
text_messages = st.builds(
    lambda text, encoding, ext: Message.from_text(text, encoding=encoding, extensions=ext),
    st.text(max_size=100),
    st.sampled_from(["utf-8", "utf-16", "utf-16-be"]),
    extensions,
) | st.builds(
    lambda text, ext: Message.from_text(text, encoding="latin-1", extensions=ext),
    st.text(st.characters(max_codepoint=255), max_size=100),
    extensions,
)
json_messages = st.builds(
    lambda value, ext: Message.from_json(value, extensions=ext), json_values, extensions
)
messages = st.lists(binary_messages | text_messages | json_messages, min_size=1, max_size=8)


def check_same(decoded: list[Message], sent: list[Message]) -> None:
    assert decoded == sent
    for got, want in zip(decoded, sent, strict=True):
        assert got.header == want.header
        if want.is_json:
            assert got.json() == want.json()
        elif want.is_text:
            assert got.text() == want.text()


@settings(max_examples=150)
@given(messages)
def test_round_trip_whole(sent: list[Message]) -> None:
    check_same(decode_all(encode_many(sent)), sent)


@settings(max_examples=60)
@given(messages)
def test_round_trip_one_byte_at_a_time(sent: list[Message]) -> None:
    data = encode_many(sent)
    decoder = Decoder()
    decoded: list[Message] = []
    for i in range(len(data)):
        decoded += decoder.feed(data[i : i + 1])
    decoder.feed(b"")
    check_same(decoded, sent)


@settings(max_examples=200)
@given(messages, st.data())
def test_round_trip_split_at_random_points(sent: list[Message], data: st.DataObject) -> None:
    wire = encode_many(sent)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(wire) - 1)), max_size=20)))
    decoder = Decoder()
    decoded: list[Message] = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        decoded += decoder.feed(wire[a:b])
    decoder.feed(b"")
    check_same(decoded, sent)


def read_in_place(decoder: Decoder, piece: bytes, min_size: int, max_size: int, use: bool) -> list[Message]:
    """``piece`` given to ``decoder`` as a driver reading in place would:
    into the buffer :meth:`Decoder.direct_buffer` offers while it offers one
    (and ``use`` says to take it), the rest fed as usual."""
    out: list[Message] = []
    while piece:
        view = decoder.direct_buffer(min_size, max_size) if use else None
        if view is None:
            return out + decoder.feed(piece)
        count = min(len(view), len(piece))
        view[:count] = piece[:count]
        out += decoder.filled(count)
        piece = piece[count:]
    return out


# The same header again and again, as a pipelining client sends it: the
# decoder passes over a header it has just read without reading it again.
# Shapes that differ from each other in the content only, in one digit of
# the header, or in an extension; one large enough to be read in place.
like_messages = st.lists(
    st.sampled_from(
        [
            Message.from_bytes(b"a" * 40),
            Message.from_bytes(b"b" * 40),
            Message.from_bytes(b"c" * 41),
            Message.from_bytes(b"d" * 400),
            Message.from_bytes(b""),
            Message.from_bytes(b"a" * 40, extensions={"id": 1}),
            Message.from_bytes(b"a" * 40, extensions={"id": 2}),
        ]
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=400)
@given(st.one_of(messages, like_messages), st.data())
def test_reading_contents_in_place_gives_the_same_messages_under_every_split(
    sent: list[Message], data: st.DataObject
) -> None:
    wire = encode_many(sent)
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(wire) - 1)), max_size=20)))
    min_size = data.draw(st.integers(0, 64))
    max_size = data.draw(st.sampled_from([0, 100, 1 << 20]))
    decoder = Decoder()
    decoded: list[Message] = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        decoded += read_in_place(decoder, wire[a:b], min_size, max_size, data.draw(st.booleans()))
    decoder.feed(b"")
    check_same(decoded, sent)
    assert decoder.direct_size == 0 and decoder.buffered == 0
    for message in decoded:
        assert type(message.content) is bytes  # whatever buffer it was read into


def test_a_header_seen_before_is_still_held_to_the_limits() -> None:
    # A header read once is passed over the next time; one byte more of it
    # (a longer content-length) is read again, and refused when too large.
    decoder = Decoder(max_content_length=40)
    wire = encode_many([Message.from_bytes(b"a" * 40)] * 3)
    assert len(decoder.feed(wire)) == 3
    got = decoder.feed(encode_many([Message.from_bytes(b"a" * 40), Message.from_bytes(b"a" * 41)]))
    assert len(got) == 1 and isinstance(decoder.error, ContentTooLarge)


@settings(max_examples=300)
@given(st.binary(max_size=400), st.data())
def test_random_bytes_never_escape_the_error_hierarchy(junk: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(junk) - 1)), max_size=8)))
    decoder = Decoder(max_content_length=1 << 20)
    try:
        for a, b in zip([0, *cuts], [*cuts, len(junk)], strict=True):
            for message in decoder.feed(junk[a:b]):
                assert len(message.content) == message.content_length
        decoder.feed(b"")
    except ProtocolError as exc:
        assert exc.code
        assert decoder.state is State.FAILED


@settings(max_examples=400)
@given(
    st.one_of(
        st.binary(max_size=300),
        messages.map(encode_many),
        st.tuples(messages, st.binary(max_size=40)).map(lambda pair: encode_many(pair[0]) + pair[1]),
    ),
    st.lists(st.integers(0, 2000), max_size=8),
)
def test_split_invariance_the_fuzz_property(data: bytes, cuts: list[int]) -> None:
    check_split_invariance(data, cuts)


# -- compatibility with the guide's programs -------------------------------------


def guide_encode(content: Any, content_type: str, encoding: str) -> bytes:
    """A message written exactly as the guide's programs write one."""
    body = (
        json.dumps(content, ensure_ascii=False).encode(encoding) if content_type == "text/json" else content
    )
    header = {
        "byteorder": "little",
        "content-type": content_type,
        "content-encoding": encoding,
        "content-length": len(body),
    }
    raw = json.dumps(header, ensure_ascii=False).encode("utf-8")
    return struct.pack(">H", len(raw)) + raw + body


def guide_decode(buffer: bytes) -> list[tuple[dict[str, Any], bytes]]:
    """A reader written the guide's way: struct, then json, then a slice."""
    out = []
    while buffer:
        (hlen,) = struct.unpack(">H", buffer[:2])
        header = json.loads(buffer[2 : 2 + hlen].decode("utf-8"))
        end = 2 + hlen + header["content-length"]
        out.append((header, buffer[2 + hlen : end]))
        buffer = buffer[end:]
    return out


def test_guide_written_messages_decode() -> None:
    wire = (
        guide_encode({"action": "search", "value": "\N{DOG FACE}"}, "text/json", "utf-8")
        + guide_encode(b"binary\x00request", "binary/custom-client-binary-type", "binary")
        + guide_encode({"result": "ok"}, "text/json", "utf-16")
    )
    first, second, third = decode_all(wire)
    assert first.json() == {"action": "search", "value": "\N{DOG FACE}"}
    assert first.byteorder == "little"
    assert second.content == b"binary\x00request"
    assert second.content_type == "binary/custom-client-binary-type"
    assert third.json() == {"result": "ok"}


def test_our_messages_read_the_guide_way() -> None:
    sent = [
        Message.from_json({"result": "Follow the white rabbit. \N{RABBIT}"}),
        Message.from_bytes(b"\xff\x00", content_type="binary/custom-server-binary-type"),
        Message.from_json({"x": 1}, extensions={"status": "ok"}),
    ]
    (h1, c1), (h2, c2), (h3, c3) = guide_decode(encode_many(sent))
    assert json.loads(c1.decode(h1["content-encoding"])) == {"result": "Follow the white rabbit. \N{RABBIT}"}
    assert h1["content-type"] == "text/json" and h1["byteorder"] in ("little", "big")
    assert (h2["content-type"], h2["content-encoding"], c2) == (
        "binary/custom-server-binary-type",
        "binary",
        b"\xff\x00",
    )
    assert h3["status"] == "ok" and json.loads(c3) == {"x": 1}


def test_encode_refuses_a_header_beyond_65535_bytes() -> None:
    message = Message.from_bytes(b"", extensions={"big": "x" * 70000})
    with pytest.raises(ValueError, match="65535"):
        encode(message)
