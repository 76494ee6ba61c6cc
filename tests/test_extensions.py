"""The header extensions framewire defines, without I/O: the ping probe, the
request id and the deadline, and the client-side errors that carry them."""

from __future__ import annotations

import json
import struct

from framewire import Message
from framewire.core.decoder import Decoder, encode
from framewire.core.errors import ConnectionClosed, ErrorResponse, HandlerError
from framewire.core.probe import DEADLINE_KEY, ID_KEY, PING_KEY, is_probe, probe, tagged, with_id


def test_a_probe_is_json_null_with_its_sequence_and_is_recognised() -> None:
    ping = probe(7)
    assert (ping.content, ping.content_type, ping.content_encoding) == (b"null", "text/json", "utf-8")
    assert ping.json() is None and ping.extensions == {PING_KEY: 7}
    assert is_probe(ping)
    assert not is_probe(Message.from_text("hi"))  # no extensions at all
    assert not is_probe(Message.from_text("hi", extensions={ID_KEY: 1}))  # others, not the ping


def test_a_deadline_is_whole_milliseconds_never_below_zero() -> None:
    message = Message.from_text("hi", extensions={"x-keep": 1})
    assert tagged(message, 5, 1234.4).extensions == {"x-keep": 1, ID_KEY: 5, DEADLINE_KEY: 1234}
    assert tagged(message, None, 0.4).extensions[DEADLINE_KEY] == 0  # under half a millisecond left: 0
    assert tagged(message, None, -50.0).extensions[DEADLINE_KEY] == 0
    assert tagged(message).extensions == {"x-keep": 1}


def _head(header: dict[str, object]) -> bytes:
    raw = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    return struct.pack(">H", len(raw)) + raw


def test_an_id_is_written_into_a_response_header_compactly_and_in_utf8() -> None:
    head = encode(Message.from_text("ok"))[:-2]  # the header of a 2-byte content
    tagged_head = with_id(head, "caf\u00e9")
    assert tagged_head[2:].endswith(b',"framewire-id":"caf\xc3\xa9"}')  # compact, UTF-8 as is
    assert struct.unpack(">H", tagged_head[:2])[0] == len(tagged_head) - 2
    (decoded,) = Decoder().feed(tagged_head + b"ok")
    assert decoded.extensions == {ID_KEY: "caf\u00e9"} and decoded.text() == "ok"


def test_an_id_goes_in_up_to_the_largest_header_and_not_beyond() -> None:
    base = {
        "byteorder": "little",
        "content-type": "text/plain",
        "content-encoding": "utf-8",
        "content-length": 0,
    }
    padding = 65535 - len(_head({**base, "p": "", ID_KEY: 1})) + 2
    fits = _head({**base, "p": "x" * padding})
    grown = with_id(fits, 1)
    assert len(grown) == 2 + 65535  # exactly the largest header the 2-byte length can say
    assert json.loads(grown[2:])[ID_KEY] == 1
    too_big = _head({**base, "p": "x" * (padding + 1)})
    assert with_id(too_big, 1) == too_big  # no room: the answer goes without its id


def test_the_client_side_errors_say_what_happened() -> None:
    error = ErrorResponse(HandlerError("it broke"))
    assert str(error) == "the server answered with an error: handler-error: it broke"
    assert error.code == "handler-error" and error.message == "it broke" and error.responses == []
    assert ConnectionClosed("gone").responses == []
    first = [Message.from_text("a")]
    assert ConnectionClosed("gone", responses=first).responses is first


def test_an_infinite_deadline_or_a_boolean_id_is_no_deadline_and_no_id() -> None:
    from framewire.core.probe import DEADLINE_KEY, ID_KEY, deadline_ms, request_id

    assert deadline_ms({DEADLINE_KEY: float("inf")}) is None and deadline_ms({DEADLINE_KEY: 1e400}) is None
    assert (
        request_id({ID_KEY: True}) is None
        and request_id({ID_KEY: 7}) == 7
        and request_id({ID_KEY: "a"}) == "a"
    )


def test_an_unknown_code_is_kept_as_sent_whatever_its_shape() -> None:
    from framewire.core.errors import Failure, ProtocolError, error_for_code

    odd = error_for_code("Not A Code!", "what the server said")
    assert type(odd) is ProtocolError and odd.code == "Not A Code!" and odd.message == "what the server said"
    own = error_for_code("out-of-stock", "none left")
    assert type(own) is Failure and own.code == "out-of-stock"


def test_text_is_utf8_unless_told_otherwise() -> None:
    from framewire import Message

    assert Message.from_text("x").content_encoding == "utf-8"
