"""The decoder's rules that a mutation run found untested (issue 18): its
fast path's checks, its limits at their boundaries, the words of its
errors, its counter, and how it joins a content that came in pieces."""

from __future__ import annotations

import json
import struct

import pytest

from framewire import Decoder, Message, encode, encode_many
from framewire.core.cache import BoundedCache
from framewire.core.decoder import HeaderCache
from framewire.core.errors import (
    ERROR_CLASSES,
    BadHeader,
    BadHeaderLength,
    BadHeaderValue,
    ContentTooLarge,
    HandlerError,
    HeaderTooLarge,
    IncompleteMessage,
    error_for_code,
)


def raw(header: dict[str, object] | str, content: bytes = b"") -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    return struct.pack(">H", len(text.encode())) + text.encode() + content


def binary(size: int, **extra: object) -> dict[str, object]:
    header: dict[str, object] = {
        "byteorder": "little",
        "content-type": "binary/x",
        "content-encoding": "binary",
    }
    return header | {"content-length": size} | extra


def refused(data: bytes, **limits: int) -> Exception:
    decoder = Decoder(**limits)  # type: ignore[arg-type]
    with pytest.raises(Exception) as info:
        decoder.feed(data)
        decoder.feed(b"")
    return info.value


# -- the fast path ------------------------------------------------------------------------


def test_a_header_cached_by_a_lenient_decoder_is_still_refused_by_a_strict_one() -> None:
    cache: HeaderCache = BoundedCache(1 << 20)
    big = raw(binary(5, note="x" * 100), b"hello")
    assert Decoder(cache=cache).feed(big)[0].content == b"hello"  # now cached
    assert len(cache) == 1  # in the cache given, shared
    with pytest.raises(HeaderTooLarge):
        Decoder(max_header_size=100, cache=cache).feed(big)
    with pytest.raises(ContentTooLarge):
        Decoder(max_content_length=4, cache=cache).feed(big)
    assert (
        Decoder(max_content_length=5, cache=cache).feed(big)[0].content == b"hello"
    )  # the limit itself is allowed


def test_a_content_that_is_itself_a_cached_message_stays_content() -> None:
    # The fast path takes a feed that *starts* with a known header only
    # between messages: not when that header is the content of another.
    decoder = Decoder()
    inner = raw(binary(3), b"abc")
    assert decoder.feed(inner)[0].content == b"abc"  # its header is now cached
    outer = raw(binary(len(inner)), inner)
    cut = len(outer) - len(inner)  # at the outer header / content boundary
    assert decoder.feed(outer[:cut]) == []
    (message,) = decoder.feed(outer[cut:])
    assert message.content == inner and message.content_length == len(inner)


def test_the_fast_path_counts_and_builds_the_same_message_as_the_loop() -> None:
    decoder = Decoder()
    data = raw(binary(2, trace="t"), b"hi")
    first = decoder.feed(data)  # parsed
    second = decoder.feed(data)  # the last message's header again
    assert first == second and second[0].extensions == {"trace": "t"}
    assert decoder.messages_decoded == 2
    decoder.feed(raw(binary(2), b"ok"))  # another header, parsed
    third = decoder.feed(data)  # not the last header, but cached
    assert third == first and decoder.messages_decoded == 4
    decoder.feed(data + data + data[:5])
    assert decoder.messages_decoded == 6
    decoder.feed(data[5:])
    assert decoder.messages_decoded == 7


def test_a_content_joined_from_many_pieces_keeps_the_bytes_after_it() -> None:
    decoder = Decoder()
    first, second = raw(binary(10), b"0123456789"), raw(binary(2), b"ok")
    stream = first + second
    out: list[Message] = []
    for piece in (
        stream[:30],
        stream[30:34],
        stream[34 : len(first) - 1],
        stream[len(first) - 1 : len(first) + 3],
    ):
        out += decoder.feed(piece)
    out += decoder.feed(stream[len(first) + 3 :])
    assert [m.content for m in out] == [b"0123456789", b"ok"]
    assert decoder.messages_decoded == 2
    # A content ending exactly at a piece's end, then the next message whole.
    decoder = Decoder()
    assert decoder.feed(first[:-4]) == []
    assert [m.content for m in decoder.feed(first[-4:])] == [b"0123456789"]
    assert decoder.messages_decoded == 1
    assert [m.content for m in decoder.feed(second)] == [b"ok"]
    assert decoder.messages_decoded == 2
    assert decoder.feed(first[:-4]) == []
    decoder.feed(first[-4:])
    assert decoder.messages_decoded == 3  # counted on the joined-content path too
    # Messages before a framing error in the same feed are returned, and counted.
    assert len(decoder.feed(second + second + b"\x00\x00")) == 2
    assert decoder.messages_decoded == 5


# -- limits at their boundaries --------------------------------------------------------


def test_the_smallest_limits_are_inclusive() -> None:
    assert isinstance(refused(raw("{}"), max_header_size=2), Exception)  # 2 is allowed: refused for its keys
    assert not isinstance(refused(raw("{}"), max_header_size=2), HeaderTooLarge)
    assert isinstance(refused(raw("{ }"), max_header_size=2), HeaderTooLarge)
    decoder = Decoder(max_content_length=0)
    assert decoder.feed(raw(binary(0)))[0].content == b""
    assert isinstance(
        refused(
            raw(
                binary(1),
            ),
            max_content_length=0,
        ),
        ContentTooLarge,
    )


def test_a_header_of_exactly_65535_bytes_is_accepted() -> None:
    header = binary(0, pad="")
    header["pad"] = "p" * (65535 - len(json.dumps(header)))
    data = raw(header)
    assert len(data) == 2 + 65535
    assert Decoder().feed(data)[0].extensions["pad"] == header["pad"]


# -- the words of the errors -------------------------------------------------------------


def test_every_error_says_what_was_wrong() -> None:
    assert (
        str(refused(b"\x00\x01{"))
        == "bad-header-length: The header length is 1; the smallest header, {}, is 2."
    )
    padded = raw(binary(0, pad="x" * 60))
    size = len(padded) - 2
    assert str(refused(padded, max_header_size=64)) == (
        f"header-too-large: The header length is {size} bytes; this receiver's limit is 64."
    )
    tls = refused(bytes.fromhex("160301020001"))
    assert isinstance(tls, BadHeader) and "begins with byte 0x01" in str(tls) and "TLS handshake" in str(tls)
    assert "HTTP message" in str(refused(b"HTTP/1.1 200 OK\r\n"))
    for verb in (b"GET / HTTP/1.1", b"POST /", b"PUT /x", b"HEAD /"):
        assert "HTTP request" in str(refused(verb)), verb
    for other in (b"\x16\x04[", b"\x17\x03[", b"HX[", b"GEX"):
        assert "(These" not in str(refused(other)), other
    early = Decoder()
    with pytest.raises(BadHeader, match="begins with byte 0x5b"):
        early.feed(raw("[1]")[:3])  # refused at its first byte, before the rest comes
    assert "a JSON list, not an object" in str(refused(raw("[1]")))
    assert (
        str(refused(raw(binary(-1)))) == "bad-header-value: content-length must be an integer >= 0, not -1."
    )
    long_type = "t" * 60
    assert str(refused(raw(binary(0) | {"content-type": 7}))).endswith("not 7.")
    assert refused(raw(binary(0) | {"byteorder": long_type})).message.endswith("not '" + "t" * 36 + "....")  # type: ignore[attr-defined]


def test_the_stream_ending_says_where_in_the_message() -> None:
    data = raw(binary(4), b"abcd")
    for cut, where, arrived in ((1, "header length", 1), (5, "header", 3), (len(data) - 1, "content", 3)):
        decoder = Decoder()
        decoder.feed(data[:cut])
        with pytest.raises(IncompleteMessage) as info:
            decoder.feed(b"")
        assert info.value.message == (
            f"The stream ended in the middle of a message's {where} ({arrived} bytes of it had arrived)."
        )
        with pytest.raises(IncompleteMessage):
            decoder.feed(b"more")  # failed for good
    decoder = Decoder()
    assert decoder.feed(b"") == []
    with pytest.raises(RuntimeError, match=r"^feed\(\) after the end of the stream$"):
        decoder.feed(data)


def test_integers_beyond_64_bits() -> None:
    huge = json.dumps(binary(0)).replace(
        '"content-length": 0', '"content-length": 123456789012345678901234567890'
    )
    assert isinstance(refused(raw(huge)), ContentTooLarge)
    error = refused(raw(huge.replace(": 1234", ": -1234")))
    assert isinstance(error, BadHeaderValue) and "-123456789012345678901234567890" in str(error)
    header = json.dumps(binary(0, big=2**70))
    assert Decoder().feed(raw(header))[0].extensions["big"] == 2**70  # kept exact
    assert isinstance(refused(raw('{"a": "\\ud800", "n": 123456789012345678901234567890}')), BadHeader)


def test_bad_header_length_and_handler_error_classes() -> None:
    assert isinstance(refused(b"\x00\x00"), BadHeaderLength)
    for code, cls in ERROR_CLASSES.items():
        made = error_for_code(code, "m")
        assert type(made) is cls and made.code == code and made.message == "m"
    assert ERROR_CLASSES["handler-error"] is HandlerError


def test_encode_many_shares_one_header_per_shape_but_keeps_extensions() -> None:
    plain = [Message.from_bytes(b"a"), Message.from_bytes(b"b"), Message.from_bytes(b"cc")]
    tagged = Message.from_bytes(b"a", extensions={"n": 1})
    data = encode_many([*plain, tagged])
    assert data == b"".join(encode(m) for m in [*plain, tagged])
    assert [m.extensions for m in Decoder().feed(data)] == [{}, {}, {}, {"n": 1}]


def test_the_words_of_the_parser_s_refusals() -> None:
    hint = "(These are the first bytes of a TLS handshake: TLS where plain framewire was expected.)"
    assert str(refused(bytes.fromhex("160301020001"))).endswith("0x01. " + hint)
    assert str(refused(b"HTTP/1.1 200")).endswith(
        "0x54. (These are the first bytes of an HTTP message: is this a framewire server?)"
    )
    assert str(refused(b"GET / HTTP/1.1")).endswith(
        "0x54. (These are the first bytes of an HTTP request: this is not an HTTP server.)"
    )
    not_utf8 = b'{"a": "\xff"}'
    assert str(refused(struct.pack(">H", len(not_utf8)) + not_utf8)).startswith(
        "bad-header: The header is not valid"
    )
    bad = refused(raw(b'{"a": "\\ud800", "n": 123456789012345678901234567890}'.decode()))
    assert bad.message == "The header is not valid UTF-8 (or escapes a lone surrogate)."  # type: ignore[attr-defined]
    nan = refused(raw('{"a": NaN, "n": 123456789012345678901234567890}'))
    assert isinstance(nan, BadHeader) and nan.message.startswith(
        "The header is not valid JSON (NaN is not JSON"
    )
    many = "9" * 4301
    huge = json.dumps(binary(0)).replace('"content-length": 0', '"content-length": ' + many)
    assert refused(raw(huge)).message == "content-length has more than 4300 digits."  # type: ignore[attr-defined]
    listed = refused(raw("[" + many + "]"))
    assert isinstance(listed, BadHeaderValue)
    assert listed.message == "The header holds an integer of more than 4300 digits."
    encoding = refused(raw(binary(0) | {"content-encoding": ""}))
    assert encoding.message == "content-encoding must be a non-empty string, not ''."  # type: ignore[attr-defined]
    assert str(refused(raw("{not json"))).startswith("bad-header: The header is not valid UTF-8 JSON (")


def test_4300_digits_are_kept_and_a_shown_value_is_cut_at_forty_characters() -> None:
    header = json.dumps(binary(0)).replace("}", ', "n": ' + "9" * 4300 + "}")
    assert Decoder().feed(raw(header))[0].extensions["n"] == int("9" * 4300)
    assert isinstance(refused(raw(header.replace("9" * 4300, "9" * 4301))), BadHeaderValue)
    forty = "b" * 38  # its repr, quotes included, is 40 characters: shown whole
    assert refused(raw(binary(0) | {"byteorder": forty})).message.endswith(f"not '{forty}'.")  # type: ignore[attr-defined]
    cut = refused(raw(binary(0) | {"byteorder": forty + "b"})).message  # type: ignore[attr-defined]
    assert cut.endswith("not '" + "b" * 36 + "....")


def test_a_decoder_failed_from_outside_raises_that_error_for_good() -> None:
    from framewire.core.errors import MessageTimeout

    decoder = Decoder()
    decoder.feed(raw(binary(3), b"ab"))
    decoder.fail(MessageTimeout("too slow"))
    for data in (b"c", b"", raw(binary(0))):
        with pytest.raises(MessageTimeout, match="too slow"):
            decoder.feed(data)
    assert decoder.buffered == 0


def test_a_decoded_message_encodes_back_to_its_exact_bytes() -> None:
    text = '{ "content-type":"binary/x",  "byteorder":"big","content-encoding":"binary","content-length":2 }'
    data = raw(text, b"hi")
    (message,) = Decoder().feed(data)
    assert encode(message) == data and message.encode() == data


def test_limits_out_of_range_are_refused_when_the_decoder_is_made() -> None:
    with pytest.raises(ValueError, match=r"^max_header_size must be within 2\.\.65535, not 1$"):
        Decoder(max_header_size=1)
    with pytest.raises(ValueError, match=r"^max_header_size must be within 2\.\.65535, not 65536$"):
        Decoder(max_header_size=65536)
    with pytest.raises(ValueError, match=r"^max_content_length must be >= 0, not -1$"):
        Decoder(max_content_length=-1)


def test_the_header_cache_counts_what_each_entry_holds() -> None:
    # Each entry costs twice its header's bytes and a fixed 512 for the
    # record, plus what its extensions hold: the cache's bound in bytes is
    # only as true as this count.
    from framewire.core.cache import footprint

    cache: HeaderCache = BoundedCache(1 << 20)
    plain = raw(binary(0))
    Decoder(cache=cache).feed(plain)
    assert cache.size == 2 * (len(plain) - 2) + 512
    tagged = raw(binary(0, tags=["a", "b"]))
    Decoder(cache=cache).feed(tagged)
    extensions = Decoder().feed(tagged)[0].extensions
    assert cache.size == 2 * (len(plain) - 2) + 512 + 2 * (len(tagged) - 2) + 512 + footprint(extensions)


def test_content_too_large_says_both_numbers() -> None:
    error = refused(raw(binary(10)), max_content_length=4)
    assert str(error) == "content-too-large: content-length is 10; this receiver's limit is 4 bytes."


def test_messages_of_different_shapes_in_one_read_are_each_read_from_their_own_start() -> None:
    shapes = [
        Message.from_bytes(b"a"),
        Message.from_json({"action": "search", "value": "ring"}),
        Message.from_bytes(b"", extensions={"framewire-id": 7}),
        Message.from_text("last"),
    ]
    assert Decoder().feed(b"".join(m.encode() for m in shapes)) == shapes


def test_an_http_request_is_named_when_its_first_bytes_come_in_one_read() -> None:
    with pytest.raises(BadHeader) as whole:
        Decoder().feed(b"GET / HTTP/1.1\r\n")
    assert str(whole.value).endswith(
        "(These are the first bytes of an HTTP request: this is not an HTTP server.)"
    )
    split = Decoder()
    assert split.feed(b"GE") == []
    with pytest.raises(BadHeader) as cut:
        split.feed(b"T / HTTP/1.1\r\n")  # the length's bytes came in the read before
    assert str(cut.value) == "bad-header: The header must be a JSON object; it begins with byte 0x54."


# -- reading a large content in place -------------------------------------------------------


def test_a_large_content_is_read_into_its_own_buffer_which_becomes_the_content() -> None:
    content = bytes(range(256)) * 4
    wire = encode(Message.from_bytes(content))
    head = len(wire) - len(content)
    decoder = Decoder()
    assert decoder.direct_buffer(0, 1 << 20) is None  # between messages: nothing to read in place
    assert decoder.feed(wire[: head + 100]) == []
    assert decoder.direct_buffer(1000, 1 << 20) is None  # 924 bytes to come: below the minimum
    assert decoder.direct_buffer(100, 1023) is None  # the whole content is over the caller's bound
    view = decoder.direct_buffer(924, 1024)
    assert view is not None and len(view) == 924 and not view.readonly
    assert decoder.direct_size == 1024 and decoder.buffered == 100 and decoder.in_message
    view[:500] = content[100:600]
    assert decoder.filled(500) == []
    again = decoder.direct_buffer(0, 0)  # the buffer in use, whatever the arguments
    assert again is not None and len(again) == 424
    again[:] = content[600:]
    (message,) = decoder.filled(424)
    assert type(message._content) is bytearray  # handed over, not copied
    assert repr(message).startswith("<Message binary/octet-stream 1024 bytes b'\\x00\\x01")
    assert message == Message.from_bytes(content) and hash(message) == hash(Message.from_bytes(content))
    assert type(message.content) is bytes and message.content == content
    assert message.encode() == wire
    assert decoder.direct_size == 0 and decoder.buffered == 0 and not decoder.in_message
    assert decoder.messages_decoded == 1


def test_bytes_fed_while_a_buffer_is_in_use_complete_it_and_the_rest_is_decoded() -> None:
    first, second = Message.from_bytes(b"a" * 300), Message.from_bytes(b"b" * 10)
    wire = encode_many([first, second]) + raw(binary(2), b"x")[:1] + b"\x00"  # then a bad length
    decoder = Decoder()
    start = len(encode(first)) - 250  # 50 bytes into the first content
    decoder.feed(wire[:start])
    assert decoder.direct_buffer(1, 1000) is not None
    assert decoder.feed(wire[start:]) == [first, second]  # the messages before the error first
    assert isinstance(decoder.error, BadHeaderLength)
    with pytest.raises(BadHeaderLength):
        decoder.feed(b"more")


def test_filled_is_checked_and_zero_is_the_end_of_the_stream() -> None:
    decoder = Decoder()
    with pytest.raises(RuntimeError, match=r"^filled\(\) without a direct_buffer\(\) in use$"):
        decoder.filled(1)
    decoder.feed(raw(binary(100), b"12345"))
    view = decoder.direct_buffer(10, 100)
    assert view is not None and len(view) == 95
    with pytest.raises(ValueError, match="the buffer has 95 bytes left"):
        decoder.filled(96)
    with pytest.raises(ValueError):
        decoder.filled(-1)
    with pytest.raises(IncompleteMessage, match="5 bytes of it had arrived"):
        decoder.filled(0)
    assert decoder.direct_size == 0  # failed: the buffer is dropped
    with pytest.raises(IncompleteMessage):
        decoder.filled(1)
    assert decoder.direct_buffer(0, 100) is None


def test_a_decoder_failed_from_outside_drops_its_buffer() -> None:
    decoder = Decoder()
    decoder.feed(raw(binary(1000)))
    assert decoder.direct_buffer(1, 1000) is not None
    decoder.fail(IncompleteMessage("gone"))
    assert decoder.direct_size == 0 and decoder.direct_buffer(1, 1000) is None


def test_contents_read_in_place_one_after_another_from_chunks_already_in() -> None:
    first, second = Message.from_bytes(b"1234567890" * 30), Message.from_bytes(b"abcdefghij" * 20)
    decoder = Decoder()
    for message in (first, second):
        wire = encode(message)
        head = len(wire) - message.content_length
        decoder.feed(wire[: head + 7])  # two pieces of the content already in,
        decoder.feed(wire[head + 7 : head + 20])  # kept as they came
        view = decoder.direct_buffer(1, 1000)
        assert view is not None and len(view) == message.content_length - 20
        view[:1] = wire[head + 20 : head + 21]
        assert decoder.filled(1) == []  # a single byte counts
        rest = decoder.direct_buffer(1, 1000)
        assert rest is not None
        rest[:] = wire[head + 21 :]
        assert decoder.filled(len(rest)) == [message]
    assert decoder.messages_decoded == 2


def test_a_message_made_of_a_bytearray_keeps_its_own_copy() -> None:
    data = bytearray(b"before")
    made, binary_ = Message(data, "binary/x", "binary"), Message.from_bytes(data)
    data[:] = b"AFTER!"
    assert made.content == b"before" and binary_.content == b"before"


def test_a_buffer_made_without_zeroing_is_a_bytearray_of_its_size() -> None:
    from framewire.core.buffers import uninitialized

    buffer = uninitialized(3 * 1024 * 1024)
    assert type(buffer) is bytearray and len(buffer) == 3 * 1024 * 1024
    buffer[-3:] = b"end"
    assert buffer[-3:] == b"end" and len(uninitialized(0)) == 0


# -- per-request extensions do not fill the header cache (issue 37, item 13) ---------------------------


def test_request_ids_and_deadlines_leave_the_header_cache_to_headers_that_return() -> None:
    from framewire.core.probe import tagged

    cache = HeaderCache(1 << 20)
    decoder = Decoder(cache=cache)
    plain = encode(Message(b"x", "binary/test", "binary"))
    stream = b"".join(
        encode(tagged(Message(b"x", "binary/test", "binary"), ident=i, deadline=5000)) + plain
        for i in range(5000)
    )
    messages = decoder.feed(stream)
    assert len(messages) == 10000
    assert messages[-2].extensions["framewire-id"] == 4999
    assert len(cache) == 1  # the plain header, which comes back; none of the 5000 unique ones


@pytest.mark.parametrize("digits", ["9" * 20, "1" + "0" * 19])
def test_a_length_of_exactly_twenty_digits_is_read_exactly(digits: str) -> None:
    # Twenty digits are the fewest that may pass 64 bits (which orjson would
    # read as an inexact float): the digit count that spares the regex must
    # let such a header through to the exact reading.
    from framewire.core.decoder import parse_header

    raw = (
        '{"byteorder":"little","content-type":"binary/x","content-encoding":"binary","content-length":'
        + digits
        + "}"
    )
    header = parse_header(raw.encode())
    assert type(header.content_length) is int and header.content_length == int(digits)
