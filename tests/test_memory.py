"""The C allocator keeps the memory of large contents (framewire.io.memory).

Each case runs in a process of its own: the setting is the process's.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's"),
]

# Makes, fills and frees a 16 MiB content buffer, and prints whether the
# process still holds its memory afterwards (resident pages, /proc).
SCRIPT = """
import sys
from framewire.core.buffers import uninitialized

how = sys.argv[1]
if how == "asked":
    from framewire.io.memory import keep_freed_memory
    assert keep_freed_memory(64 << 20)
elif how.startswith("server"):
    from framewire import Server
    settings = {"large_content": 0} if "off" in how else {}
    if how.endswith("asyncio"):
        import asyncio
        from framewire.server.aio import AioServer
        from framewire.server.config import ServerConfig
        AioServer(lambda message: message, ServerConfig(**settings), asyncio.new_event_loop())
    else:
        Server(lambda message: message, "127.0.0.1", 0, **settings)


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


before = resident()
buffer = uninitialized(16 << 20)
buffer[::4096] = b"x" * (len(buffer) // 4096)  # every page written
del buffer
print("kept" if resident() - before > 8 << 20 else "returned")
"""


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("none", "returned"),
        ("asked", "kept"),
        ("server", "kept"),
        ("server-asyncio", "kept"),
        ("server-off", "returned"),  # large_content=0: no buffers of that kind, nothing asked
    ],
)
def test_a_server_keeps_the_memory_of_large_contents(how: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, how], capture_output=True, text=True, timeout=50, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [expected]


def test_nothing_is_asked_for_no_memory() -> None:
    from framewire.io.memory import keep_freed_memory

    assert keep_freed_memory(0) is False
