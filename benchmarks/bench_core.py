"""Micro-benchmark of the protocol core beside a plain struct+json loop.

Decodes 200,000 back-to-back messages with 64-byte binary content from one
buffer, and encodes as many into one buffer, with framewire and with a loop
written the guide's way (``struct`` for the length, ``json`` for the header),
in the same run. Prints messages per second and the ratio; best of N rounds.

    python benchmarks/bench_core.py [--messages N] [--rounds R] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framewire import Decoder, Message, encode_many

CONTENT_TYPE = "binary/custom-client-binary-type"
TARGET = 2.0


def plain_encode(contents: list[bytes]) -> bytes:
    parts = []
    for content in contents:
        header = {
            "byteorder": sys.byteorder,
            "content-type": CONTENT_TYPE,
            "content-encoding": "binary",
            "content-length": len(content),
        }
        raw = json.dumps(header, ensure_ascii=False).encode("utf-8")
        parts.append(struct.pack(">H", len(raw)) + raw + content)
    return b"".join(parts)


def plain_decode(buffer: bytes) -> list[tuple[dict[str, Any], bytes]]:
    # Offsets instead of the guide's buffer = buffer[n:], which is quadratic
    # on one large buffer and would flatter framewire.
    out = []
    pos = 0
    end = len(buffer)
    while pos < end:
        (size,) = struct.unpack(">H", buffer[pos : pos + 2])
        pos += 2
        header = json.loads(buffer[pos : pos + size].decode("utf-8"))
        pos += size
        length = header["content-length"]
        out.append((header, buffer[pos : pos + length]))
        pos += length
    return out


def framewire_encode(contents: list[bytes]) -> bytes:
    return encode_many([Message.from_bytes(c, content_type=CONTENT_TYPE) for c in contents])


def framewire_decode(buffer: bytes) -> list[Message]:
    return Decoder().feed(buffer)


def best_rates(
    ours: Callable[[Any], object], plain: Callable[[Any], object], arg: Any, count: int, rounds: int
) -> tuple[float, float]:
    """Best rate of each, the two run in turn so that both see the same noise."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((ours, plain)):
            start = time.perf_counter()
            fn(arg)
            best[i] = min(best[i], time.perf_counter() - start)
    return count / best[0], count / best[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    contents = [os.urandom(64) for _ in range(args.messages)]
    wire = plain_encode(contents)
    # Both sides must agree on every message before their speed means anything.
    ours = framewire_decode(framewire_encode(contents))
    theirs = plain_decode(wire)
    assert [m.content for m in ours] == [c for _, c in theirs] == contents
    assert len(framewire_decode(wire)) == args.messages
    # Hundreds of thousands of live objects would make every garbage
    # collection during the timed runs slower, for both sides.
    del ours, theirs
    gc.collect()

    n, r = args.messages, args.rounds
    results = {
        "decode": best_rates(framewire_decode, plain_decode, wire, n, r),
        "encode": best_rates(framewire_encode, plain_encode, contents, n, r),
    }
    figures = {k: {"framewire": a, "plain": b, "ratio": a / b} for k, (a, b) in results.items()}
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(figures))
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"{n:,} messages, 64-byte binary content, best of {r} rounds")
        print(f"{'':8}{'framewire msg/s':>18}{'struct+json msg/s':>20}{'ratio':>8}  target")
        for name, (ours_rate, plain_rate) in results.items():
            ratio = ours_rate / plain_rate
            verdict = "met" if ratio >= TARGET else "NOT met"
            print(f"{name:8}{ours_rate:18,.0f}{plain_rate:20,.0f}{ratio:7.2f}x  >= {TARGET}x {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
