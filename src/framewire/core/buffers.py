"""Buffers for the bytes of a large content, made without zeroing them.

``bytearray(size)`` fills its memory with zeros, which a content read in
place (:meth:`framewire.core.decoder.Decoder.direct_buffer`) overwrites at
once: for 1 MiB contents the zeroing was a visible part of the echo
server's CPU (``perf``: ``memset`` in libc; docs/performance.md, "Large
contents, read in place"). CPython makes
the same kind of buffer for ``socket.recv(n)``, through the C API's
``PyByteArray_FromStringAndSize(NULL, size)`` counterpart for bytes.

The memory holds whatever was there before, so such a buffer is never read
until every byte of it is written: the decoder hands it out only whole (a
content cut short or timed out is dropped with its buffer).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["uninitialized"]


def _maker() -> Callable[[int], bytearray]:
    try:
        # A prototype of our own (PYFUNCTYPE holds the GIL, as a call that
        # makes an object must), not ctypes.pythonapi's shared attribute.
        prototype = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_ssize_t)
        make = prototype(("PyByteArray_FromStringAndSize", ctypes.pythonapi))
    except (AttributeError, OSError):  # not CPython: zeroed, as usual
        return bytearray

    def uninitialized(size: int) -> bytearray:
        buffer: bytearray = make(None, size)
        return buffer

    return uninitialized


#: ``uninitialized(size)``: a bytearray of ``size`` bytes whose content is
#: undefined until written.
uninitialized: Callable[[int], bytearray] = _maker()
