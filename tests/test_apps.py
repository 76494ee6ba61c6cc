"""The built-in apps as functions, without sockets: what they answer, and
when the echo app may send the request itself back (the server's fast path)."""

from __future__ import annotations

import sys

import pytest

from framewire import BadEncoding, Decoder, Message, encode
from framewire.server.app import echo


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
