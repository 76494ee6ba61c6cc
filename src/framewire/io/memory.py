"""The process's C allocator, asked to keep the memory of large contents.

A content read in place (``large_content``) gets a buffer of its own size,
freed once its answer is sent. glibc's ``malloc`` returns freed memory at
the top of its heap to the kernel once more than a few MiB of it is free
(its trim threshold follows the largest block freed, twice 1 MiB for 1 MiB
contents), so a server echoing large messages gave memory back and faulted
it in again, zeroed by the kernel, over and over: about ten page faults
per 1 MiB message, where the C server, which keeps its buffers, makes
almost none. With the heap kept up to the server's ``large_content_memory``
they are gone, a small gain (the figures:
benchmarks/results/performance-notebook.md).

What is kept is bounded by the budget the server already has for large
contents, and it is memory the server had in use a moment before. The
setting is the process's: the last server started sets it. Elsewhere than
glibc (musl, macOS) nothing is changed.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["keep_freed_memory"]

# mallopt's parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks at least this large are mapped on their own, and unmapped when freed
# (glibc's largest allowed threshold on 64-bit systems; the default adapts
# up to it anyway, following the largest block freed).
_MMAP_THRESHOLD = 32 * 1024 * 1024


def keep_freed_memory(size: int) -> bool:
    """Ask the C allocator to keep up to ``size`` bytes of freed memory at the
    top of its heap for reuse instead of returning it to the kernel (and
    blocks under 32 MiB in its heap, which its default also does once such a
    block has been freed). True if it could: glibc only."""
    if size <= 0 or platform.libc_ver()[0] != "glibc":
        return False
    try:
        # The process's own symbols, libc's among them (find_library would
        # run ldconfig in a subprocess at every server start).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Setting either threshold turns glibc's adaptive thresholds off, so both
    # are set: the mapping one where the adaptive one would have gone.
    trim = min(size, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, trim))
