"""Message construction, accessors and content decoding by the spec's rules."""

from __future__ import annotations

import sys

import pytest

from framewire import BadContent, BadEncoding, Decoder, Message, ProtocolError, encode
from framewire._build import compiled_modules
from framewire.core.message import NATIVE, UnencodableMessage, text_codec


def test_from_json_fills_the_required_keys() -> None:
    message = Message.from_json({"action": "search", "value": "ring"})
    assert message.header == {
        "byteorder": sys.byteorder,
        "content-type": "text/json",
        "content-encoding": "utf-8",
        "content-length": len(message.content),
    }
    assert message.json() == {"action": "search", "value": "ring"}
    assert message.is_json and message.is_text


def test_from_text_with_other_encodings() -> None:
    for encoding in ("utf-16", "latin-1", "utf-8"):
        message = Message.from_text("caf\N{LATIN SMALL LETTER E WITH ACUTE}", encoding=encoding)
        assert message.content_encoding == encoding
        assert message.text() == "caf\N{LATIN SMALL LETTER E WITH ACUTE}"


def test_from_json_in_utf16() -> None:
    message = Message.from_json({"a": "\N{DOG FACE}"}, encoding="utf-16")
    assert message.json() == {"a": "\N{DOG FACE}"}


def test_from_bytes() -> None:
    message = Message.from_bytes(bytearray(b"\x00\x01"), content_type="binary/custom-client-binary-type")
    assert message.content == b"\x00\x01"
    assert message.content_encoding == "binary"
    assert message.content_length == 2
    assert not message.is_text


@pytest.mark.parametrize("encoding", ["zlib_codec", "zlib", "base64", "rot13", "hex", "bz2", "uu", "quopri"])
def test_byte_to_byte_codecs_are_refused_never_run(encoding: str) -> None:
    message = Message(b"eJzLSM3JyQcABiwCFQ==", "text/plain", encoding)
    with pytest.raises(BadEncoding) as info:
        message.text()
    assert info.value.code == "bad-encoding"
    assert not info.value.framing
    with pytest.raises(BadEncoding):
        Message(b"{}", "text/json", encoding).json()


@pytest.mark.parametrize("encoding", ["no-such-codec", "binary", "utf-8\x00", "x" * 5000, "?"])
def test_unknown_encodings_are_bad_encoding(encoding: str) -> None:
    message = Message(b"abc", "text/plain", encoding)
    with pytest.raises(BadEncoding):
        message.text()


def test_unknown_codec_names_are_not_remembered_by_python() -> None:
    import encodings

    name = "definitely-not-a-codec-4711"
    assert text_codec(name) is None
    # encodings' search function caches every miss forever; we never ask it.
    assert name.replace("-", "_") not in encodings._cache


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (b"\xff\xfe\xfd", "utf-8"),
        (b'{"a": NaN}', "utf-8"),
        (b'{"a": Infinity}', "utf-8"),
        (b"[" * 60000, "utf-8"),
        (b"not json", "utf-8"),
        (b"\x00", "utf-16"),
    ],
)
def test_bad_json_content(content: bytes, encoding: str) -> None:
    with pytest.raises(BadContent) as info:
        Message(content, "text/json", encoding).json()
    assert info.value.code == "bad-content"


def test_text_that_does_not_decode_is_bad_content() -> None:
    with pytest.raises(BadContent):
        Message(b"\xff", "text/plain", "utf-8").text()


def test_extension_keys_cannot_replace_required_keys() -> None:
    with pytest.raises(ValueError):
        Message.from_bytes(b"", extensions={"content-length": 5})
    with pytest.raises(TypeError):
        Message.from_bytes(b"", extensions={1: "x"})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "kwargs",
    [{"content_type": ""}, {"content_encoding": ""}, {"byteorder": "middle"}],
)
def test_constructor_checks_fields(kwargs: dict[str, str]) -> None:
    args = {"content_type": "a/b", "content_encoding": "binary", **kwargs}
    byteorder = args.pop("byteorder", "little")
    with pytest.raises(ValueError):
        Message(b"", args["content_type"], args["content_encoding"], byteorder=byteorder)


def test_error_response_shape_and_round_trip() -> None:
    response = Message.error_response("bad-header", "The header is not JSON.")
    assert response.is_error and response.status == "error"
    assert response.content_type == "text/json" and response.content_encoding == "utf-8"
    assert response.json() == {"error": {"code": "bad-header", "message": "The header is not JSON."}}
    error = response.error()
    assert isinstance(error, ProtocolError) and error.code == "bad-header"
    assert Message.from_json({}).error() is None


def test_unknown_error_codes_keep_their_code() -> None:
    error = Message.error_response("some-future-code", "x").error()
    assert error is not None and error.code == "some-future-code"


def test_equality_and_repr() -> None:
    a = Message.from_bytes(b"x", extensions={"k": 1})
    assert a == Message.from_bytes(b"x", extensions={"k": 1})
    assert a != Message.from_bytes(b"x", extensions={"k": 2})
    assert a != Message.from_bytes(b"y", extensions={"k": 1})
    assert "binary/octet-stream" in repr(a)
    assert a.get("k") == 1 and a.get("content-length") == 1 and a.get("nope", 7) == 7


def test_extensions_are_read_only() -> None:
    message = Message.from_bytes(b"", extensions={"k": 1})
    with pytest.raises(TypeError):
        message.extensions["k"] = 2  # type: ignore[index]


# -- what each refusal says, and the edges of the header -------------------------------------


def test_a_message_built_from_any_bytes_like_holds_bytes() -> None:
    for data in (bytearray(b"abc"), memoryview(b"abc")):
        built = Message(data, "binary/octet-stream", "binary")  # a caller's bytes-like
        assert type(built.content) is bytes and built.content == b"abc"
        plain = Message.from_bytes(data)
        assert type(plain.content) is bytes and plain.content_type == "binary/octet-stream"


def test_the_constructors_say_what_is_wrong() -> None:
    with pytest.raises(TypeError, match=r"^extension keys must be strings, not 1$"):
        Message.from_bytes(b"", extensions={1: "x"})  # type: ignore[dict-item]  # what a caller may pass
    with pytest.raises(
        ValueError, match=r"^'content-length' is a required key, set from the arguments, not an extension$"
    ):
        Message.from_bytes(b"", extensions={"content-length": 3})
    with pytest.raises(ValueError, match=r"^content_encoding must be a non-empty string, not ''$"):
        Message(b"", "text/plain", "")
    with pytest.raises(ValueError, match=r"^byteorder must be 'little' or 'big', not 'middle'$"):
        Message(b"", "text/plain", "utf-8", byteorder="middle")


def test_a_header_the_standard_library_writes_is_compact_utf8() -> None:
    # A 70-bit integer is beyond orjson: the standard library writes the header.
    message = Message.from_bytes(b"", extensions={"big": 2**70, "ring": "💍"})
    header = message.encode()[2:]
    assert b'"big":1180591620717411303424,"ring":"\xf0\x9f\x92\x8d"}' in header and b", " not in header
    nan = r"^The header cannot be encoded as JSON: Out of range float values are not JSON compliant\.$"
    with pytest.raises(UnencodableMessage, match=nan):
        Message.from_bytes(b"", extensions={"big": 2**70, "nan": float("nan")}).encode()


def test_a_header_of_exactly_65535_bytes_is_sent_and_one_more_is_not() -> None:
    base = len(Message.from_bytes(b"", extensions={"pad": ""}).encode()) - 2
    fits = Message.from_bytes(b"", extensions={"pad": "x" * (65535 - base)})
    assert int.from_bytes(fits.encode()[:2], "big") == 65535
    with pytest.raises(UnencodableMessage, match=r"^The header is 65536 bytes when encoded; the protocol"):
        Message.from_bytes(b"", extensions={"pad": "x" * (65536 - base)}).encode()


def test_text_refusals_name_the_encoding_cut_to_sixty_characters() -> None:
    with pytest.raises(BadEncoding, match=r"^bad-encoding: 'base64' is not a text encoding\.$"):
        Message(b"x", "text/plain", "base64").text()
    with pytest.raises(BadEncoding) as info:
        Message(b"x", "text/plain", "b" * 100).text()
    assert str(info.value) == f"bad-encoding: {'b' * 60!r} is not a text encoding."
    with pytest.raises(
        BadContent, match=r"^bad-content: The content does not decode as utf-8: invalid start byte\.$"
    ):
        Message(b"\xff", "text/plain", "utf-8").text()
    with pytest.raises(BadContent, match=r"^bad-content: The content is not valid JSON: .+\.$"):
        Message.from_text("not json", content_type="text/json", encoding="latin-1").json()


def test_a_deprecated_escape_decodes_without_a_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Message(b"\\d", "text/plain", "unicode-escape").text() == "\\d"


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("UTF 8", "utf_8"),
        ("iso.8859.1", "latin_1"),
        ("latin-1", "latin_1"),
        ("u" * 64, None),
        ("utf-8" + " " * 59, "utf_8"),  # 64 characters: the longest name read
        ("utf-8" + " " * 60, None),
    ],
)
def test_codec_names_are_read_as_python_reads_them(name: str, canonical: str | None) -> None:
    from framewire.core.message import canonical_codec_name

    assert canonical_codec_name(name) == canonical


def test_the_repr_shows_forty_bytes_then_an_ellipsis() -> None:
    assert repr(Message.from_bytes(b"x" * 40)) == f"<Message binary/octet-stream 40 bytes {b'x' * 40!r}>"
    assert repr(Message.from_bytes(b"y" * 41)) == f"<Message binary/octet-stream 41 bytes {b'y' * 40!r}...>"


def test_the_remaining_refusals_say_what_is_wrong_cut_to_sixty_characters() -> None:
    with pytest.raises(ValueError, match=r"^content_type must be a non-empty string, not ''$"):
        Message(b"", "", "utf-8")
    with pytest.raises(BadEncoding) as info:
        Message(b"x", "text/plain", "q" * 100).check_encoding()
    assert str(info.value) == f"bad-encoding: {'q' * 60!r} is not a text encoding."
    padded = "utf-8" + " " * 59  # 64 characters that name UTF-8
    with pytest.raises(BadContent) as undecodable:
        Message(b"\xff", "text/plain", padded).text()
    assert (
        str(undecodable.value)
        == f"bad-content: The content does not decode as {padded[:60]}: invalid start byte."
    )


def test_the_decoder_knows_which_build_it_runs_in() -> None:
    # message.NATIVE picks how the decoder makes messages: the wrong way fails
    # in the compiled build (object.__new__ refuses a native class), where
    # make test-compiled runs this.
    assert ("framewire.core.message" in compiled_modules()) == NATIVE
    (message,) = Decoder().feed(encode(Message.from_bytes(b"read", extensions={"x": 1})))
    assert isinstance(message, Message) and message == Message.from_bytes(b"read", extensions={"x": 1})
