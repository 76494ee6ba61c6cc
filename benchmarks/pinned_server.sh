# Sourced by profile.sh and cpu_split.sh: builds the C load generator and
# starts `framewire serve --app echo` (plus SERVER_ARGS) pinned to CPU 0 on a
# free port, waiting until it listens. Sets $loadgen, $port and $server, and
# stops the server when the script exits (then runs $on_exit, if set).
# Needs $here (benchmarks/), $bin (.venv/bin) and $script (for messages).
loadgen=$("$bin/python" -c "import sys; sys.path.insert(0, '$here'); import compare; print(compare.build('loadgen') or '')")
if [ -z "$loadgen" ]; then
    echo "$script: cannot build benchmarks/peers/loadgen.c (is gcc installed?)" >&2
    exit 1
fi
port=$("$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# shellcheck disable=SC2086  # SERVER_ARGS is a list of options
taskset -c 0 "$bin/framewire" serve --app echo --port "$port" ${SERVER_ARGS:-} > /dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; eval "${on_exit:-}"' EXIT
"$bin/python" -c "
import socket, sys, time
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        socket.create_connection(('127.0.0.1', $port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)  # the server is starting
sys.exit('$script: the server did not listen within 10 s')
"
