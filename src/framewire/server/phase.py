"""The phases of a server connection's life, and the only ways between them.

A connection is in exactly one :class:`Phase`; the engine
(:mod:`framewire.server.engine`) moves it only along :data:`TRANSITIONS`,
and a move the table does not list is a bug of framewire's own, raised as
:class:`PhaseError` where it happens (h11 and wsproto keep their
lifecycles the same way). The order of the values means something: a phase
before :data:`Phase.CLOSING` reads requests; from it on, nothing more is
read as a request.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["ALLOWED", "TRANSITIONS", "Phase", "PhaseError", "check"]


class Phase(enum.IntEnum):
    """Where a server connection is in its life."""

    #: Waiting for the PROXY protocol header a trusted balancer sends first
    #: (it names the real peer); it must come within the message deadline.
    PROXY = 0
    #: The TLS handshake is under way, within the message deadline.
    HANDSHAKE = 1
    #: Requests are read and answered.
    OPEN = 2
    #: The server is stopping: what is owed or half received is finished,
    #: then the connection closes.
    DRAINING = 3
    #: Nothing more is read as a request: what is owed goes out, then the
    #: connection closes (the peer half-closed, or an error without lingering).
    CLOSING = 4
    #: An error answer is owed: once it is sent the driver half-closes and
    #: the connection lingers (:data:`LINGERING`).
    HALF_CLOSING = 5
    #: Half-closed after an error answer; what the peer still sends is read
    #: and dropped, for a bounded time and number of bytes (then CLOSING).
    LINGERING = 6
    #: Dropped: the socket is lost, or the engine gave up on it (idle, no
    #: header or handshake in time); late answers are dropped.
    CLOSED = 7


#: Where each phase may go next.
TRANSITIONS: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.PROXY: frozenset({Phase.OPEN, Phase.CLOSED}),
    Phase.HANDSHAKE: frozenset({Phase.OPEN, Phase.CLOSED}),
    Phase.OPEN: frozenset({Phase.DRAINING, Phase.CLOSING, Phase.HALF_CLOSING, Phase.CLOSED}),
    Phase.DRAINING: frozenset({Phase.CLOSING, Phase.HALF_CLOSING, Phase.CLOSED}),
    Phase.CLOSING: frozenset({Phase.CLOSED}),
    Phase.HALF_CLOSING: frozenset({Phase.CLOSING, Phase.LINGERING, Phase.CLOSED}),
    Phase.LINGERING: frozenset({Phase.CLOSING, Phase.CLOSED}),
    Phase.CLOSED: frozenset({Phase.CLOSED}),  # a loss reported after the close changes nothing
}

#: The table as integers, indexed by phase: what the engine checks each move
#: against (compiled, a tuple of frozensets of ints is plain C work).
ALLOWED: Final = tuple(frozenset(int(p) for p in TRANSITIONS[phase]) for phase in Phase)


class PhaseError(RuntimeError):
    """A move between phases that :data:`TRANSITIONS` does not allow."""


def check(old: int, new: int) -> None:
    """Raise :class:`PhaseError` unless a connection may go from ``old`` to ``new``."""
    if new not in ALLOWED[old]:
        raise PhaseError(f"a connection cannot go from {Phase(old).name} to {Phase(new).name}")
