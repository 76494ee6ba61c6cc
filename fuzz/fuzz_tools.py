"""Fuzz target for the wire tools' printing (atheris), and the property it checks.

The property: whatever a stream holds, ``framewire proxy`` and ``framewire
decode`` can show every message it decodes to, for a person and as a JSON
line, and what they print can be written to a terminal (lone surrogates and
the like escaped): no message makes a tool die. The test suite checks the
same property with hypothesis (tests/test_attacks.py).

    make fuzz
    .venv/bin/python fuzz/fuzz_tools.py -max_total_time=60 fuzz/corpus
"""

from __future__ import annotations

import json

from framewire.tools.wireview import Watcher, event_lines, event_record, json_line, watch


def check_printing(data: bytes) -> None:
    """Every event of ``data`` renders, as lines and as one JSON line."""
    events, _lost = watch(Watcher(shown=1 << 10), data, 0.0, "#1", "->")
    for event in events:
        for line in event_lines(event):
            line.encode("utf-8", "backslashreplace")  # what the CLI's streams do
        line = json_line(event_record(event))
        line.encode("utf-8", "backslashreplace")
        assert "\n" not in line
        json.loads(line)


def test_one_input(raw: bytes) -> None:
    check_printing(raw)


if __name__ == "__main__":
    from fuzzing import run

    run(test_one_input)
