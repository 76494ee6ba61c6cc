"""Fuzz target for the response path (atheris), and the property it checks.

The property: every message the decoder accepts, answered by the echo
application (or refused by it with an error response), encodes as a valid
message that decodes back to exactly what was sent. Nothing a peer sends can
make the answer unencodable (the server would otherwise have nothing valid to
send). The test suite checks the same property with hypothesis
(tests/test_attacks.py).

    make fuzz                       # every target, FUZZ_SECONDS each
    .venv/bin/python fuzz/fuzz_response.py -max_total_time=60 fuzz/corpus
"""

from __future__ import annotations

from framewire import Decoder, Message, ProtocolError
from framewire.server.app import echo


def answer(request: Message) -> Message:
    """What the server sends for ``request`` under the echo app."""
    try:
        return echo(request)
    except ProtocolError as exc:
        assert not exc.framing, exc
        return Message.for_error(exc)


def check_response_path(data: bytes) -> None:
    """Each message decoded from ``data``, echoed, encodes and decodes back."""
    try:
        requests = Decoder(max_content_length=1 << 16).feed(data)
    except ProtocolError:
        return
    for request in requests:
        response = answer(request)
        head = response._header.sendable()  # raises if the answer is not a valid message
        wire = head + response.content
        (again,) = Decoder().feed(wire)
        assert again == response, (again.header, response.header)
        assert again.content == request.content or response.is_error


def test_one_input(raw: bytes) -> None:
    check_response_path(raw)


if __name__ == "__main__":
    from fuzzing import run

    run(test_one_input)
