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

The targets are the default build's. With ``--compiled SRC`` (a copy of the
tree whose message, decoder and engine mypyc compiled: ``make compiled-copy``), that
build runs once in each pair too, and its ratios are stored beside them.

    python benchmarks/targets.py [--seconds 3] [--pairs 3] [--compiled build/compiled/src]
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

from compare import PY, ROOT, build, c_server, machine, pinned, servers, serving
from stored import COMPILED, FRAMEWIRE, RESULTS, last_stored

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


def compiled_server(src: Path) -> list[str]:
    """The echo server of the compiled build in ``src``; exits if that build
    does not load (a stale or pure copy would be measured under its name)."""
    command = ["env", f"PYTHONPATH={src.resolve()}", PY, "-m", "framewire"]
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, check=False).stdout
    if "compiled with mypyc" not in version:
        sys.exit(f"targets.py: {src} holds no compiled build (make compiled-copy): {version.strip()!r}")
    return [*command, "serve", "--app", "echo", "--port", "{port}"]


def measure(seconds: float, pairs: int, compiled: Path | None = None) -> dict[str, object]:
    binary = loadgen()
    commands = servers()
    if c_server() is None:
        sys.exit("targets.py: the C epoll server needs gcc (or cc)")
    if compiled is not None:
        commands[COMPILED] = compiled_server(compiled)
    rows: dict[str, object] = {}
    for target in TARGETS:
        runs: dict[str, list[dict[str, object]]] = {FRAMEWIRE: []}
        for _ in range(pairs):
            for peer, _goal in target.goals:
                if peer not in commands:
                    continue
                runs[FRAMEWIRE].append(run(commands[FRAMEWIRE], target.args, seconds, binary))
                runs.setdefault(peer, []).append(run(commands[peer], target.args, seconds, binary))
            if COMPILED in commands:
                runs.setdefault(COMPILED, []).append(run(commands[COMPILED], target.args, seconds, binary))
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
        if COMPILED in medians:
            row["compiled_ratios"] = {peer: medians[COMPILED] / medians[peer] for peer in peers}
            said += f"; compiled {medians[COMPILED]:,.1f}"
        rows[target.name] = row
        print(f"{target.name:38} framewire {medians[FRAMEWIRE]:>12,.1f} {row['unit']}: {said}"
              f" ({failures} errors and mismatches)", flush=True)  # fmt: skip
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "seconds": seconds,
        "pairs": pairs,
        "command": f"{PY} -m framewire serve --app echo --port PORT",
        "targets": rows,
    }


def changes(before: dict[str, object], after: dict[str, object]) -> list[str]:
    """framewire's figure and its ratios now against the last stored run."""
    lines = [f"change against the run of {before['date']}:"]
    old_rows = before["targets"]
    assert isinstance(old_rows, dict)
    new_rows = after["targets"]
    assert isinstance(new_rows, dict)
    for name, row in new_rows.items():
        old = old_rows.get(name)
        if old is None:
            continue
        was, now = old["medians"][FRAMEWIRE], row["medians"][FRAMEWIRE]
        ratio_changes = ", ".join(
            f"{peer} {old['ratios'][peer]:.2f}x -> {ratio:.2f}x"
            for peer, ratio in row["ratios"].items()
            if peer in old["ratios"]
        )
        line = f"  {name:38} {(now / was - 1) * 100:+6.1f}% ({ratio_changes})"
        if COMPILED in old["medians"] and COMPILED in row["medians"]:
            line += f"; compiled {(row['medians'][COMPILED] / old['medians'][COMPILED] - 1) * 100:+.1f}%"
        lines.append(line)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--compiled", type=Path, help="also measure the compiled build in this source tree")
    args = parser.parse_args()
    before = last_stored()
    result = measure(args.seconds, args.pairs, args.compiled)
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
