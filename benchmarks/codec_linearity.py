"""Is every text codec framewire accepts linear in its decoding time?

Decodes 1 MB and 4 MB of each text codec's own output (best of 3) and
prints the ratio of the two times, worst first: about 4 for a linear
decoder, 16 for a quadratic one. docs/limits.md quotes its result.

    .venv/bin/python benchmarks/codec_linearity.py
"""

from __future__ import annotations

import codecs
import encodings
import pkgutil
import time

from framewire.core.message import text_codec


def best_time(data: bytes, name: str, size: int) -> float | None:
    sample = (data * (size // len(data) + 1))[:size]
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        try:
            sample.decode(name, errors="replace")
        except (UnicodeError, ValueError):
            return None
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    rows = []
    for module in sorted({m.name for m in pkgutil.iter_modules(encodings.__path__)}):
        try:
            info = codecs.lookup(module)
        except LookupError:
            continue
        if not getattr(info, "_is_text_encoding", True):
            continue
        data = None
        for text in ("a\N{LATIN SMALL LETTER E WITH ACUTE}\N{EURO SIGN}" * 100, "a" * 300):
            try:
                data = text.encode(module)
                break
            except UnicodeError:
                pass
        small = best_time(data, module, 1_000_000) if data else None
        large = best_time(data, module, 4_000_000) if data else None
        if small and large:
            accepted = "accepted" if text_codec(module) is not None else "REFUSED"
            rows.append((large / small, module, large * 1000, accepted))
    rows.sort(reverse=True)
    for ratio, module, ms, accepted in rows:
        print(f"{module:24} {ratio:5.1f}x  {ms:8.2f} ms for 4 MB  {accepted}")
    print(f"{len(rows)} text codecs measured")


if __name__ == "__main__":
    main()
