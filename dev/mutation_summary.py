"""The mutation score from mutmut's results, per module and in all.

    python dev/mutation_summary.py [--floor PERCENT] [PATTERN]

Killed counts killed and timed-out mutants (a mutant that makes the tests
hang is caught); the score is killed / (killed + survived). Mutants with no
test at all count as survivors. Lines marked ``# pragma: no mutate`` are
not mutated: each is an optimisation whose mutants behave the same (see
docs/mutation.md). Exits 1 below ``--floor``.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pattern", nargs="?", default="*", help="mutant names to count (fnmatch)")
    parser.add_argument("--floor", type=float, default=0.0, help="fail below this score, in percent")
    args = parser.parse_args()
    listing = subprocess.run(
        [str(BIN / "mutmut"), "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
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
        kind = "killed" if status in ("killed", "timeout") else "survived"
        counts[module][kind] += 1
        if kind == "survived":
            survivors.append(name)
    total: collections.Counter[str] = collections.Counter()
    print(f"{'module':<34} {'killed':>7} {'survived':>9} {'score':>7}")
    for module in sorted(counts):
        row = counts[module]
        total.update(row)
        print(f"{module:<34} {row['killed']:>7} {row['survived']:>9} {_score(row):>6.1f}%")
    print(f"{'all':<34} {total['killed']:>7} {total['survived']:>9} {_score(total):>6.1f}%")
    if not total:
        print("no mutants were run", file=sys.stderr)
        return 1
    if _score(total) < args.floor:
        print(f"the score is below the floor of {args.floor:g}%; survivors:", file=sys.stderr)
        for name in survivors:
            print(f"  {name}", file=sys.stderr)
        return 1
    return 0


def _score(row: collections.Counter[str]) -> float:
    checked = row["killed"] + row["survived"]
    return 100.0 * row["killed"] / checked if checked else 0.0


if __name__ == "__main__":
    sys.exit(main())
