"""The speed targets' stored runs (benchmarks/results/targets-*.json): the
last one, and its table. Read by targets.py, which writes them, and by
compare.py, which puts the table in docs/performance.md."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: framewire's name among the servers of a stored run.
FRAMEWIRE = "framewire"
#: The compiled build's (targets.py --compiled).
COMPILED = "framewire, compiled"


def last_stored() -> dict[str, object] | None:
    stored = sorted(RESULTS.glob("targets-*.json"))
    return json.loads(stored[-1].read_text()) if stored else None


def markdown(result: dict[str, object]) -> list[str]:
    rows = result["targets"]
    assert isinstance(rows, dict)
    lines = [
        "| scenario | framewire | peer in the same run | ratio | target | met | compiled build |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        unit = row["unit"]
        for peer, ratio in row["ratios"].items():
            goal = row["goals"][peer]
            met = ("yes" if ratio >= goal else "**no**") if goal else "-"
            wanted = f">= {goal:g}x" if goal else "reported"
            ours, theirs = row["medians"][FRAMEWIRE], row["medians"][peer]
            cells = [name, f"{ours:,.0f} {unit}", f"{peer} {theirs:,.0f} {unit}"]
            compiled = row.get("compiled_ratios", {}).get(peer)
            cells += [f"{ratio:.2f}x", wanted, met, "-" if compiled is None else f"{compiled:.2f}x"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines
