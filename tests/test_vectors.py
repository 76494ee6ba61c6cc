"""The protocol's test vectors (docs/vectors/framing.json), as any
implementation should run them: every vector decoded at once, split at each
of its offsets that matter, and byte by byte."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from framewire.core.decoder import Decoder
from framewire.core.message import Message

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).resolve().parent.parent / "docs/vectors/framing.json").read_text("utf-8")
)["vectors"]


def pieces_of(data: bytes, vector: dict[str, Any]) -> list[list[bytes]]:
    """The ways the stream is delivered: whole, cut at each split point,
    and (for short vectors) one byte at a time."""
    ways = [[data]]
    ways += [[data[:cut], data[cut:]] for cut in vector["splits"]]
    if len(data) <= 2048:
        ways.append([data[i : i + 1] for i in range(len(data))])
    return ways


def run(pieces: list[bytes], limits: dict[str, int]) -> tuple[list[Message], str | None]:
    decoder = Decoder(
        max_header_size=limits.get("max_header_size", 65535),
        max_content_length=limits.get("max_content_length", 64 * 1024 * 1024),
    )
    out: list[Message] = []
    for piece in [*pieces, b""]:  # b"": the end of the stream
        messages, error = decoder.feed_checked(piece)
        out += messages
        if error is not None:
            return out, error.code
    return out, None


def as_expected(message: Message) -> dict[str, Any]:
    return {"header": message.header, "content": message.content.hex()}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["input"])
    for pieces in pieces_of(data, vector):
        messages, error = run(pieces, vector.get("limits") or {})
        if vector["error"] is None:
            assert error is None, f"{vector['name']}: {error} (cut {[len(p) for p in pieces][:3]})"
            assert [as_expected(m) for m in messages] == vector["messages"]
        else:
            assert error == vector["error"], f"{vector['name']} in {len(pieces)} pieces: {error}"
            assert len(messages) == vector["messages"]


def test_every_error_code_of_the_framing_has_a_vector() -> None:
    codes = {v["error"] for v in VECTORS}
    framing = {"header-too-large", "bad-header-length", "bad-header", "missing-header-key"}
    framing |= {"bad-header-value", "content-too-large", "incomplete-message"}
    assert framing <= codes
