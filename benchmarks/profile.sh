#!/bin/bash
# Where the server's time goes under one scenario: `framewire serve --app
# echo` pinned to CPU 0, the C load generator on CPU 1, and py-spy sampling
# the server (every thread, so the loop's own) for 8 of its 12 seconds.
#
#   benchmarks/profile.sh NAME LOADGEN-ARGS...     e.g.  mib -c 4 -d 2 -s 1048576
#
# Writes benchmarks/results/profile-NAME.txt (py-spy's raw stacks) and prints
# the self and inclusive time per line of code. Needs py-spy (pip install -e
# '.[profile]') and ptrace rights over the server (root, or kernel.yama.ptrace_scope 0).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
bin=$root/.venv/bin
name=${1:?usage: benchmarks/profile.sh NAME LOADGEN-ARGS...}
shift
spy=$(command -v py-spy || echo "$bin/py-spy")
if [ ! -x "$spy" ]; then
    echo "profile.sh: py-spy is not installed (.venv/bin/pip install -e '.[profile]')" >&2
    exit 1
fi
script=profile.sh
# shellcheck source=benchmarks/pinned_server.sh
. "$here/pinned_server.sh"
out=$here/results/profile-$name.txt
taskset -c 1 "$loadgen" -p "$port" -t 12 "$@" > "$here/results/profile-$name.json" &
load=$!
sleep 2  # past the connections' start
"$spy" record --pid "$server" --duration 8 --rate 500 --format raw -o "$out" > /dev/null
wait $load
cat "$here/results/profile-$name.json"
"$bin/python" - "$out" <<'PY'
import collections, sys
own, inclusive, total = collections.Counter(), collections.Counter(), 0
for line in open(sys.argv[1], encoding="utf-8"):
    stack, _, count = line.rstrip().rpartition(" ")
    frames, n = stack.split(";"), int(count)
    total += n
    own[frames[-1]] += n
    for frame in set(frames):
        inclusive[frame] += n
print(f"{total} samples; self time:")
for frame, n in own.most_common(12):
    print(f"  {100 * n / total:5.1f}%  {frame}")
print("inclusive, framewire's code:")
for frame, n in [(f, n) for f, n in inclusive.most_common(60) if "framewire/" in f and "cli/" not in f][:14]:
    print(f"  {100 * n / total:5.1f}%  {frame}")
PY
