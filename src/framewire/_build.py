"""Which build of framewire is running: pure Python, or with its hot path
compiled by mypyc (what ``pip install`` builds where a C compiler is:
hatch_build.py compiles :data:`COMPILED_MODULES`; docs/performance.md)."""

from __future__ import annotations

import importlib.machinery
import importlib.util

#: The modules a wheel's build compiles: the message, the decoder, the
#: extension keys' reader, the send queue, the timer wheel, the transport,
#: the server engine's modules, the epoll driver and the clients' connection
#: engine (docs/internals.md, "The compiled build").
COMPILED_MODULES = (
    "framewire.core.message",
    "framewire.core.decoder",
    "framewire.core.probe",
    "framewire.io.sendqueue",
    "framewire.io.timers",
    "framewire.io.transport",
    "framewire.server.answers",
    "framewire.server.flow",
    "framewire.server.engine",
    "framewire.server.state",
    "framewire.server.epoll_loop",
    "framewire.client.connection",
)


def compiled_modules() -> list[str]:
    """The modules of :data:`COMPILED_MODULES` loaded from a compiled extension."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    found = []
    for name in COMPILED_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and spec.origin.endswith(suffixes):
            found.append(name)
    return found


def build_name() -> str:
    """``pure Python``, or ``compiled with mypyc: ...`` naming the compiled modules."""
    found = compiled_modules()
    if not found:
        return "pure Python"
    return "compiled with mypyc: " + ", ".join(name.rsplit(".", 1)[1] for name in found)
