"""framewire's echo server beside its peers under a load generator in C.

The speed targets are ratios against peers measured in the same run: the
C epoll server (the machine's practical limit), asyncio's ``Protocol`` on
uvloop and the guide's one-request-per-connection server. A Python load
client would be slower than the fastest of these servers, so the load here
comes from ``benchmarks/peers/loadgen.c`` (epoll, every answer checked),
pinned to CPU 1 with the server on CPU 0. Each pair runs framewire, then
the peer, ``--pairs`` times alternating; the figures are the medians.

Results are stored as JSON in ``benchmarks/results/`` (one file per run),
and the change against the last stored run is printed.

The targets are those of the build a user installs by default: ``pip
install .`` compiles the message, decoder and engine with mypyc where a C
compiler is (hatch_build.py). ``--build SRC`` names a tree holding that
build (``make compiled-copy`` puts the wheel's compiled modules in a copy of
the tree); the pure-Python build (this environment's) then runs once in each
pair too, and its ratios are stored beside them. Without ``--build``, the
pure build alone is measured as "framewire".

    python benchmarks/targets.py [--seconds 3] [--pairs 3] [--build build/compiled/src]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from compare import ROOT, build, build_of, c_server, framewire, machine, pinned, servers, serving
from stored import FRAMEWIRE, PURE, RESULTS, by_build, last_stored

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Target:
    name: str
    args: tuple[str, ...]
    #: Each peer and the least ratio framewire must reach against it.
    goals: tuple[tuple[str, float], ...]
    large: bool = False


TARGETS = [
    Target("pipelined -c16 -d16 -s64", ("-c", "16", "-d", "16", "-s", "64"), (("C epoll server", 0.5),)),
    Target("ping-pong -c1 -d1", ("-c", "1", "-d", "1", "-s", "64"), (("C epoll server", 1.0),)),
    Target("1000 connections -c1000 -d1", ("-c", "1000", "-d", "1", "-s", "64"),
           (("asyncio Protocol + uvloop", 2.0), ("C epoll server", 0.0))),
    Target("1 MiB -c4 -d2", ("-c", "4", "-d", "2", "-s", str(1 << 20)), (("C epoll server", 0.9),),
           large=True),
    Target("one request per connection -o -c16", ("-c", "16", "-o", "-s", "64"),
           (("guide's server", 1.5), ("C epoll server", 1.0))),
]  # fmt: skip


def loadgen() -> Path:
    """benchmarks/peers/loadgen.c, built with gcc into .venv."""
    binary = build("loadgen")
    if binary is None:
        sys.exit("targets.py: the load generator needs gcc (or cc)")
    return binary


def run(command: list[str], args: tuple[str, ...], seconds: float, binary: Path) -> dict[str, object]:
    with serving(command) as port:
        load = subprocess.run(
            pinned(1, [str(binary), "-p", str(port), *args, "-t", str(seconds)]),
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        )  # fmt: skip
        result: dict[str, object] = json.loads(load.stdout)
        return result


def figure(result: dict[str, object], large: bool) -> float:
    return float(str(result["mb_per_s" if large else "rps"]))


def measure(seconds: float, pairs: int, build: Path | None = None) -> dict[str, object]:
    binary = loadgen()
    commands = servers(build)
    if c_server() is None:
        sys.exit("targets.py: the C epoll server needs gcc (or cc)")
    default_build = build_of(framewire(build))
    if build is not None:
        if "compiled with mypyc" not in default_build:
            sys.exit(f"targets.py: {build} holds no compiled build (make compiled-copy): {default_build!r}")
        commands[PURE] = servers()[FRAMEWIRE]
    rows: dict[str, object] = {}
    for target in TARGETS:
        runs: dict[str, list[dict[str, object]]] = {FRAMEWIRE: []}
        for _ in range(pairs):
            for peer, _goal in target.goals:
                if peer not in commands:
                    continue
                runs[FRAMEWIRE].append(run(commands[FRAMEWIRE], target.args, seconds, binary))
                runs.setdefault(peer, []).append(run(commands[peer], target.args, seconds, binary))
            if PURE in commands:
                runs.setdefault(PURE, []).append(run(commands[PURE], target.args, seconds, binary))
        medians = {name: statistics.median(figure(r, target.large) for r in rs) for name, rs in runs.items()}
        failures = sum(int(str(r["errors"])) + int(str(r["mismatches"])) for rs in runs.values() for r in rs)
        peers = [peer for peer, _ in target.goals if peer in medians]
        ratios = {peer: medians[FRAMEWIRE] / medians[peer] for peer in peers}
        row: dict[str, object] = {
            "unit": "MB/s" if target.large else "msg/s",
            "medians": medians,
            "ratios": ratios,
            "goals": dict(target.goals),
            "errors_and_mismatches": failures,
        }
        said = ", ".join(f"{ratios[p]:.2f}x {p}" for p in ratios)
        if PURE in medians:
            row["pure_ratios"] = {peer: medians[PURE] / medians[peer] for peer in peers}
            said += f"; pure Python {medians[PURE]:,.1f}"
        rows[target.name] = row
        print(f"{target.name:38} framewire {medians[FRAMEWIRE]:>12,.1f} {row['unit']}: {said}"
              f" ({failures} errors and mismatches)", flush=True)  # fmt: skip
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seconds": seconds,
        "pairs": pairs,
        "command": "framewire serve --app echo --port PORT",
        "default_build": default_build,
        "targets": rows,
    }


def changes(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """framewire's figure and its ratios now against the last stored run, each
    build against the same build (an earlier run may have named them otherwise)."""
    lines = [f"change against the run of {before['date']}:"]
    old_rows = before["targets"]
    assert isinstance(old_rows, dict)
    new_rows = after["targets"]
    assert isinstance(new_rows, dict)
    for name, row in new_rows.items():
        old = old_rows.get(name)
        if old is None:
            continue
        was, now = by_build(before, old), by_build(after, row)
        said = [f"{build} {(now[build] / was[build] - 1) * 100:+.1f}%" for build in now if build in was]
        line = f"  {name:38} {', '.join(said)}"
        if before.get("default_build") == after.get("default_build"):  # the ratios are the same build's
            ratio_changes = ", ".join(
                f"{peer} {old['ratios'][peer]:.2f}x -> {ratio:.2f}x"
                for peer, ratio in row["ratios"].items()
                if peer in old["ratios"]
            )
            line += f" ({ratio_changes})"
        lines.append(line)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--build", type=Path, help="the default install's build is in this source tree")
    args = parser.parse_args()
    before = last_stored()
    result = measure(args.seconds, args.pairs, args.build)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    path = RESULTS / f"targets-{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    if before is not None:
        print("\n".join(changes(before, result)))
    rows = result["targets"]
    assert isinstance(rows, dict)
    return 1 if any(row["errors_and_mismatches"] for row in rows.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
