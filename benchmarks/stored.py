"""The speed targets' stored runs (benchmarks/results/targets-*.json): the
last one, and its table. Read by targets.py, which writes them, and by
compare.py, which puts the table in docs/performance.md."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
#: framewire's name among the servers of a stored run: the build a user
#: installs by default (``pip install .``: compiled with mypyc where a C
#: compiler is, hatch_build.py), named in the run's ``default_build``.
FRAMEWIRE = "framewire"
#: The pure-Python build beside it (the editable install of .venv).
PURE = "framewire, pure Python"
#: Runs stored before the default install was compiled: "framewire" was the
#: pure build and this the compiled one.
EARLIER_COMPILED = "framewire, compiled"


def by_build(result: dict[str, object], row: dict[str, object]) -> dict[str, float]:
    """A stored row's medians under ``compiled`` and ``pure``, whichever
    naming its run used."""
    medians = row["medians"]
    assert isinstance(medians, dict)
    if "compiled" in str(result.get("default_build", "")):
        pairs = (("compiled", FRAMEWIRE), ("pure", PURE))
    else:
        pairs = (("pure", FRAMEWIRE), ("compiled", EARLIER_COMPILED))
    return {build: float(medians[name]) for build, name in pairs if name in medians}


def last_stored() -> dict[str, object] | None:
    stored = sorted(RESULTS.glob("targets-*.json"))
    return json.loads(stored[-1].read_text()) if stored else None


def markdown(result: dict[str, object]) -> list[str]:
    rows = result["targets"]
    assert isinstance(rows, dict)
    lines = [
        "| scenario | framewire | peer in the same run | ratio | target | met | pure-Python build |",
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
            pure = row.get("pure_ratios", {}).get(peer)
            cells += [f"{ratio:.2f}x", wanted, met, "-" if pure is None else f"{pure:.2f}x"]
            lines.append("| " + " | ".join(cells) + " |")
    return lines
