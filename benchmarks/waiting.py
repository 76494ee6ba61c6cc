"""Handlers that wait, measured against a real `framewire serve`.

Starts `framewire serve --app <module>:app --threads 16` (and, for the
async case, without --threads), where `slow` sleeps for its value in a
blocking call, `aslow` awaits asyncio.sleep, and `fast` answers at once,
then prints the figures of the issue "Handlers that wait":

    .venv/bin/python benchmarks/waiting.py
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from framewire import Decoder, Message, encode

APP = """
import asyncio
import time

from framewire import App

app = App()


@app.action("slow")
def slow(value):
    time.sleep(value)
    return "slow"


@app.action("aslow")
async def aslow(value):
    await asyncio.sleep(value)
    return "aslow"


@app.action("fast")
def fast(value):
    return "fast"
"""


def call(action: str, value: object = None) -> bytes:
    return encode(Message.from_json({"action": action, "value": value}))


def answers(sock: socket.socket, count: int) -> list[Message]:
    decoder = Decoder()
    out: list[Message] = []
    while len(out) < count:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed early")
        out += decoder.feed(data)
    return out


def serve(folder: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    cmd = [sys.executable, "-m", "framewire", "serve", "--port", "0", "--app", "waitbench:app",
           "--log-level", "warning", *extra]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=folder, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
    return proc, port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def fast_beside_slow(port: int, slow: str) -> float:
    with connect(port) as a, connect(port) as b:
        a.sendall(call(slow, 0.5))
        time.sleep(0.05)  # the scenario: the fast request 50 ms after the slow one
        start = time.monotonic()
        b.sendall(call("fast"))
        answers(b, 1)
        took = time.monotonic() - start
        answers(a, 1)
    return took


def many_at_once(port: int, slow: str, count: int) -> float:
    socks = [connect(port) for _ in range(count)]
    start = time.monotonic()
    for sock in socks:
        sock.sendall(call(slow, 0.3))
    done = [0.0] * count

    def read(i: int) -> None:
        answers(socks[i], 1)
        done[i] = time.monotonic() - start

    readers = [threading.Thread(target=read, args=(i,)) for i in range(count)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    for sock in socks:
        sock.close()
    return max(done)


def pipelined_order(port: int, slow: str) -> list[str]:
    with connect(port) as sock:
        sock.sendall(b"".join([call(slow, 0.3), call("fast"), call(slow, 0.1), call("fast")]))
        return [m.json()["result"] for m in answers(sock, 4)]


def measure(label: str, port: int, slow: str, count: int) -> None:
    fast = fast_beside_slow(port, slow) * 1000
    print(f"{label}: fast sent 50 ms after {slow} 0.5 answered in {fast:.1f} ms")
    took = many_at_once(port, slow, count)
    print(f"{label}: {count} connections x {slow} 0.3 all answered within {took:.3f} s")
    order = pipelined_order(port, slow)
    print(f"{label}: pipelined [{slow} 0.3, fast, {slow} 0.1, fast] came back as {order}")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "waitbench.py").write_text(APP)
        for label, slow, count, extra in (("--threads 16", "slow", 32, ["--threads", "16"]),
                                          ("async, no --threads", "aslow", 100, [])):  # fmt: skip
            proc, port = serve(folder, *extra)
            try:
                measure(label, port, slow, count)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


if __name__ == "__main__":
    main()
