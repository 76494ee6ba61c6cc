"""Writes framing.json: the protocol's test vectors.

Each vector is bytes on the wire and what a receiver must make of them,
declared here from the rules of docs/protocol.md (never computed by
framewire's decoder, which the tests hold to these). Run it after changing
a vector: ``python docs/vectors/make_vectors.py``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BINARY = {
    "byteorder": "little",
    "content-type": "binary/custom-client-binary-type",
    "content-encoding": "binary",
}


def raw_header(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


def message(
    content: bytes, header: dict[str, Any] | None = None, **extra: Any
) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a message and the header a receiver must see."""
    fields = dict(BINARY if header is None else header)
    fields.setdefault("content-length", len(content))
    fields.update({k.replace("_", "-"): v for k, v in extra.items()})
    return raw_header(json.dumps(fields, ensure_ascii=False)) + content, fields


def splits(data: bytes) -> list[int]:
    """The offsets that matter: inside and after the length, inside and at the
    end of the header, inside the content."""
    size = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 0
    points = {1, 2, 3, 2 + size // 2, 2 + size, 2 + size + 1}
    return sorted(p for p in points if 0 < p < len(data))


VECTORS: list[dict[str, Any]] = []


def valid(
    name: str, rule: str, *parts: tuple[bytes, dict[str, Any]], expect: list[dict[str, Any]] | None = None
) -> None:
    data = b"".join(p[0] for p in parts)
    VECTORS.append(
        {
            "name": name,
            "rule": rule,
            "input": data.hex(),
            "splits": splits(data),
            "messages": expect
            if expect is not None
            else [{"header": h, "content": d[2 + struct.unpack(">H", d[:2])[0] :].hex()} for d, h in parts],
            "error": None,
        }
    )


def invalid(
    name: str, rule: str, data: bytes, code: str, *, before: int = 0, at_end: bool = False, **limits: int
) -> None:
    VECTORS.append(
        {
            "name": name,
            "rule": rule,
            "input": data.hex(),
            "splits": splits(data),
            "messages": before,
            "error": code,
            "at_end": at_end,
            "limits": limits,
        }
    )


# -- valid streams -------------------------------------------------------------------------

valid("one-binary", "a message: length, JSON header, content", message(b"hello"))
valid("empty-content", "content-length 0 is a message with no content", message(b""))
valid(
    "back-to-back",
    "messages follow each other with nothing between",
    message(b"a"),
    message(b"bc"),
    message(b""),
)
valid(
    "text-json",
    "text/json content in utf-8",
    message(
        b'{"action": "search", "value": "ring"}',
        {"byteorder": "big", "content-type": "text/json", "content-encoding": "utf-8"},
    ),
)
valid(
    "utf-16-text",
    "text content in another text codec; the header stays UTF-8",
    message(
        "héllo ✓".encode("utf-16"),
        {"byteorder": "little", "content-type": "text/plain", "content-encoding": "utf-16"},
    ),
)
valid(
    "key-order",
    "keys in any order",
    message(
        b"xy",
        {"content-length": 2, "content-encoding": "binary", "content-type": "binary/x", "byteorder": "big"},
    ),
)
valid(
    "extensions-kept", "other keys are extensions, kept", message(b"z", None, x_trace="abc", framewire_id=7)
)
valid(
    "unicode-header",
    "the header is UTF-8 JSON: non-ASCII extension values",
    message(b"", None, note="café 🐰"),
)
valid(
    "whitespace-header",
    "JSON whitespace before the object is allowed",
    (
        raw_header(
            ' \n{"byteorder":"little","content-type":"binary/x",'
            '"content-encoding":"binary","content-length":1}'
        )
        + b"!",
        {},
    ),
    expect=[
        {
            "header": {
                "byteorder": "little",
                "content-type": "binary/x",
                "content-encoding": "binary",
                "content-length": 1,
            },
            "content": "21",
        }
    ],
)
valid(
    "duplicate-key",
    "a key given twice keeps its last value",
    (
        raw_header(
            '{"byteorder":"little","content-type":"binary/x","content-encoding":"binary","content-length":9,"content-length":2}'
        )
        + b"ok",
        {},
    ),
    expect=[
        {
            "header": {
                "byteorder": "little",
                "content-type": "binary/x",
                "content-encoding": "binary",
                "content-length": 2,
            },
            "content": "6f6b",
        }
    ],
)
big = "y" * (65535 - len(json.dumps({**BINARY, "content-length": 0, "pad": ""}, ensure_ascii=False)))
valid("largest-header", "a header of exactly 65535 bytes", message(b"", None, pad=big))

# -- framing errors --------------------------------------------------------------------------

invalid("header-length-0", "H is at least 2", b"\x00\x00", "bad-header-length")
invalid("header-length-1", "H is at least 2", b"\x00\x01{", "bad-header-length")
invalid("not-json", "the header is JSON", raw_header("{nope}"), "bad-header")
invalid("not-utf8", "the header is UTF-8", raw_header(b'{"a":"\xff"}'), "bad-header")
invalid("not-an-object", "the header is a JSON object", raw_header("[1, 2]"), "bad-header")
invalid("nan", "NaN is not JSON", raw_header('{"content-length": NaN}'), "bad-header")
invalid(
    "tls-hello",
    "a first header byte that cannot start an object is refused",
    bytes.fromhex("160301020001"),
    "bad-header",
)
invalid(
    "deep-nesting",
    "nesting deeper than the parser allows is refused, not a crash",
    raw_header("[" * 60000),
    "bad-header",
)
for key in ("content-length", "content-type", "content-encoding", "byteorder"):
    fields = {**BINARY, "content-length": 0}
    del fields[key]
    invalid(f"missing-{key}", f"{key} is required", raw_header(json.dumps(fields)), "missing-header-key")
for name, key, value in (
    ("negative-length", "content-length", -1),
    ("fractional-length", "content-length", 1.5),
    ("boolean-length", "content-length", True),
    ("string-length", "content-length", "1"),
    ("empty-type", "content-type", ""),
    ("empty-encoding", "content-encoding", ""),
    ("bad-byteorder", "byteorder", "middle"),
):
    fields = {**BINARY, "content-length": 0, key: value}
    invalid(name, f"{key} has a type and range", raw_header(json.dumps(fields)), "bad-header-value")
invalid(
    "exponent-length",
    "content-length is an integer without exponent",
    raw_header(
        '{"byteorder":"little","content-type":"binary/x","content-encoding":"binary","content-length":1e2}'
    ),
    "bad-header-value",
)
invalid(
    "header-over-limit",
    "H above the receiver's limit",
    message(b"", None, pad="x" * 100)[0],
    "header-too-large",
    max_header_size=64,
)
invalid(
    "content-over-limit",
    "content-length above the limit, refused before any content",
    message(b"", {**BINARY, "content-length": 1 << 40})[0],
    "content-too-large",
)
invalid(
    "error-after-good",
    "messages before a framing error are delivered, then the error",
    message(b"first")[0] + b"\x00\x00",
    "bad-header-length",
    before=1,
)
invalid(
    "cut-in-content",
    "the stream ending mid-message",
    message(b"0123456789")[0][:-3],
    "incomplete-message",
    at_end=True,
)
invalid("cut-in-length", "the stream ending inside the length", b"\x00", "incomplete-message", at_end=True)

if __name__ == "__main__":
    out = Path(__file__).with_name("framing.json")
    out.write_text(
        json.dumps(
            {"about": "framewire protocol test vectors: see docs/vectors.md", "vectors": VECTORS},
            indent=1,
            ensure_ascii=False,
        )
        + "\n",
        "utf-8",
    )
    print(f"{len(VECTORS)} vectors written to {out}")
