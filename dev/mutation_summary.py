"""The mutation score from mutmut's results, per module and in all.

    python dev/mutation_summary.py [--floor PERCENT] [--list] [PATTERN]

Killed counts killed and timed-out mutants (a mutant that makes the tests
hang is caught). Survivors listed in docs/mutation-survivors.md as
*equivalent* (the program behaves the same) are counted apart and left out
of the score, which is killed / (killed + the other survivors): the share
of the mutants that change behaviour which the tests catch. Mutants with no
test at all count as survivors. Lines marked ``# pragma: no mutate`` are
not mutated (see docs/mutation.md). ``--list`` prints every survivor not
listed as equivalent, with its diff. Exits 1 below ``--floor``.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
SURVIVORS = Path(__file__).resolve().parent.parent / "docs" / "mutation-survivors.md"


def listed(path: Path = SURVIVORS) -> dict[str, str]:
    """The mutants the docs list: name -> why (the table rows of the file,
    whose first cell is the mutant's name in backticks)."""
    rows: dict[str, str] = {}
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\|\s*`(framewire\.[^`]+)`\s*\|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = match.group(2).split("|")[-1].strip()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", nargs="?", default="*", help="mutant names to count (fnmatch)")
    parser.add_argument("--floor", type=float, default=0.0, help="fail below this score, in percent")
    parser.add_argument("--list", action="store_true", help="print the survivors not listed as equivalent")
    args = parser.parse_args()
    listing = subprocess.run(
        [str(BIN / "mutmut"), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    accepted = listed()
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    survivors: list[str] = []
    for line in listing.splitlines():
        match = re.match(r"\s*(\S+): (.+)$", line)
        if not match or not fnmatch.fnmatch(match.group(1), args.pattern):
            continue
        name, status = match.groups()
        if status == "not checked":
            continue
        module = name.split(".x")[0]
        if status in ("killed", "timeout"):
            kind = "killed"
        elif accepted.get(name, "").startswith("equivalent"):
            kind = "equivalent"
        else:
            kind = "survived"
            survivors.append(name)
        counts[module][kind] += 1
    total: collections.Counter[str] = collections.Counter()
    print(f"{'module':<34} {'killed':>7} {'survived':>9} {'equivalent':>11} {'score':>7}")
    for module in sorted(counts):
        total.update(counts[module])
        _row(module, counts[module])
    _row("all", total)
    if not total:
        print("no mutants were run", file=sys.stderr)
        return 1
    unexplained = [name for name in survivors if name not in accepted]
    if unexplained:
        print(f"{len(unexplained)} survivors are not in {SURVIVORS.name}", file=sys.stderr)
    if args.list:
        for name in survivors:
            print(f"\n== {name}: {accepted.get(name, '(not listed)')}")
            diff = subprocess.run(
                [str(BIN / "mutmut"), "show", name], check=False, capture_output=True, text=True
            ).stdout
            print("\n".join(line for line in diff.splitlines() if re.match(r"^[-+][^-+]", line)))
    if _score(total) < args.floor:
        print(f"the score is below the floor of {args.floor:g}%", file=sys.stderr)
        return 1
    return 0


def _row(name: str, row: collections.Counter[str]) -> None:
    print(f"{name:<34} {row['killed']:>7} {row['survived']:>9} {row['equivalent']:>11} {_score(row):>6.1f}%")


def _score(row: collections.Counter[str]) -> float:
    checked = row["killed"] + row["survived"]
    return 100.0 * row["killed"] / checked if checked else 0.0


if __name__ == "__main__":
    sys.exit(main())
