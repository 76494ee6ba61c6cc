#!/bin/bash
# Where the server's CPU goes, Python against the kernel: `framewire serve
# --app echo` pinned to CPU 0, the C load generator on CPU 1, and `perf
# record` on the server for 3 of its 6 seconds. py-spy (profile.sh) names
# Python's lines but counts a system call's whole time on its line; perf
# splits the samples by where the CPU really was.
#
#   benchmarks/cpu_split.sh LOADGEN-ARGS...     e.g.  -c 1000 -d 1 -s 64
#
# Prints the load generator's figures, then the share of samples in the
# kernel, in libpython and in the rest, and the kernel's top symbols. Needs
# perf (linux-tools) and the rights to record another process (root, or
# kernel.perf_event_paranoid <= 1). Extra server options: SERVER_ARGS="...".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=$root/.venv/bin
if ! command -v perf >/dev/null; then
    echo "cpu_split.sh: perf is not installed (linux-tools)" >&2
    exit 1
fi
data=$(mktemp)
on_exit='rm -f "$data"'
script=cpu_split.sh
# shellcheck source=benchmarks/pinned_server.sh
. "$here/pinned_server.sh"
taskset -c 1 "$loadgen" -p "$port" -t 6 "$@" &
load=$!
sleep 2  # past the connections' start
perf record -q -F 999 -p "$server" -o "$data" -- sleep 3 > /dev/null 2>&1
wait $load
perf report -i "$data" --sort dso --stdio 2>/dev/null | awk '
    /%/ { share = $1 + 0; if ($2 ~ /kernel/) k += share; else if ($2 ~ /libpython/) p += share; else o += share }
    END { printf "server CPU samples: kernel %.1f %%, libpython %.1f %%, other %.1f %%\n", k, p, o }'
echo "the kernel's top symbols:"
perf report -i "$data" --sort sym --stdio 2>/dev/null | grep '\[k\]' | head -5
