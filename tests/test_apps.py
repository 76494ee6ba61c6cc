"""The built-in apps as functions, without sockets: what they answer, and
when the echo app may send the request itself back (the server's fast path)."""

from __future__ import annotations

import sys

import pytest

from framewire import BadContent, BadEncoding, Decoder, Message, encode
from framewire.server.app import App, echo


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("extensions", [None, {"id": 7}])
@pytest.mark.parametrize("encoding", ["utf-8", "base64"])
def test_echo_sends_the_request_back_only_when_it_is_already_the_answer(
    byteorder: str, extensions: dict[str, int] | None, encoding: str
) -> None:
    raw = encode(Message(b"abc", "text/plain", encoding, byteorder=byteorder, extensions=extensions))
    decoder = Decoder()  # one header cache: the second request shares the first's header
    for checked in (False, True):  # the header as first seen, then once the server has checked it
        (request,) = decoder.feed(raw)
        assert request._header.checked == (checked and encoding == "utf-8")
        if encoding == "base64":
            with pytest.raises(BadEncoding):  # echoed, it would not be a valid message
                echo(request)
            continue
        answer = echo(request)
        assert (answer is request) == (byteorder == sys.byteorder and not extensions)
        assert (answer.content, answer.content_type) == (b"abc", "text/plain")
        assert answer.content_encoding == encoding
        assert (answer.byteorder, dict(answer.extensions)) == (sys.byteorder, {})
        request._header.sendable()  # what the server does when it sends an answer of this header


@pytest.mark.parametrize("guide", [False, True])
def test_text_that_is_not_json_goes_to_the_binary_handler_only_the_guide_s_way(guide: bool) -> None:
    app = App(guide_text_as_binary=guide)
    app.binary(lambda request: b"got " + request.content)
    text = Message.from_text("plain", encoding="utf-8")
    if guide:
        answer = app(text)
        assert isinstance(answer, Message)
        assert (answer.content, answer.content_type) == (b"got plain", "binary/custom-server-binary-type")
    else:
        with pytest.raises(
            BadContent,
            match=r"^bad-content: This application takes text/json or binary requests, not text/plain\.$",
        ):
            app(text)
    answer = app(Message.from_bytes(b"\x00\x01"))  # binary content, either way
    assert isinstance(answer, Message) and answer.content == b"got \x00\x01"


def test_an_app_without_a_binary_handler_refuses_any_content_but_json() -> None:
    app = App(guide_text_as_binary=True)
    for request in (Message.from_bytes(b"x"), Message.from_text("x")):
        with pytest.raises(
            BadContent, match=r"^bad-content: This application takes text/json requests, not "
        ):
            app(request)
