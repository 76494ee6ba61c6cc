"""Fuzz target for the decoder (atheris), and the property it checks.

The property: whatever the bytes, the decoder returns well-formed messages or
raises a ProtocolError (nothing else), and gives the same messages and the
same error code whether the bytes come whole or split at any points. The test
suite checks the same property with hypothesis (tests/test_protocol.py).

    make fuzz                       # installs atheris, runs for FUZZ_SECONDS
    .venv/bin/python fuzz/fuzz_decoder.py -max_total_time=180 fuzz/corpus
"""

from __future__ import annotations

from framewire import Decoder, Message, ProtocolError

LIMIT = 1 << 16  # small content limit, so that large lengths are exercised too


def decode(pieces: list[bytes]) -> tuple[list[tuple[dict[str, object], bytes]], str | None]:
    decoder = Decoder(max_content_length=LIMIT)
    out: list[Message] = []
    code = None
    try:
        for piece in pieces:
            out += decoder.feed(piece)
            if decoder.error is not None:
                raise decoder.error
        out += decoder.feed(b"")
    except ProtocolError as exc:
        code = exc.code
    for message in out:
        assert len(message.content) == message.content_length
        assert message.content_length <= LIMIT
    return [(m.header, m.content) for m in out], code


def check_split_invariance(data: bytes, cuts: list[int]) -> None:
    """Decoding ``data`` whole and split at ``cuts`` gives the same result."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert decode([data] if data else []) == decode(pieces)


def test_one_input(raw: bytes) -> None:
    import atheris  # noqa: PLC0415  (only the fuzzer needs it)

    provider = atheris.FuzzedDataProvider(raw)
    cuts = [provider.ConsumeIntInRange(0, 4096) for _ in range(provider.ConsumeIntInRange(0, 8))]
    check_split_invariance(provider.ConsumeBytes(provider.remaining_bytes()), cuts)


if __name__ == "__main__":
    from fuzzing import run

    run(test_one_input)
