"""The server: its config, the sans-I/O connection engine, the handler
dispatch, and the drivers that run it (epoll)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framewire.server.epoll import Server, raise_descriptor_limit

__all__ = ["Server", "raise_descriptor_limit"]


def __getattr__(name: str) -> Any:
    # framewire.server.config is read by the command line to build its
    # options; the driver (and asyncio, threads) load only when used.
    if name in __all__:
        value = getattr(importlib.import_module("framewire.server.epoll"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'framewire.server' has no attribute {name!r}")
