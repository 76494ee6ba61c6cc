"""Who is on the other end of a connection, as a handler sees it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any

from framewire.core.message import Message

__all__ = ["Cancel", "Context", "Peer"]


class Cancel:
    """The flag a thread-pool handler polls: set (on the server's thread)
    when the client has gone or cancelled the request, so its answer would
    be dropped anyway. A bool attribute: reading and writing it is atomic,
    no lock needed. ``hook``, when the work moved on (an awaitable the
    handler returned, now a task), is called too."""

    __slots__ = ("cancelled", "hook")

    def __init__(self) -> None:
        self.cancelled = False
        self.hook: Callable[[], object] | None = None

    def set(self) -> None:
        """Mark the work as no longer wanted."""
        self.cancelled = True  # (before the hook is read: see Dispatcher._on_loop)
        hook = self.hook
        if hook is not None:
            hook()


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """The peer of a connection (a handler sees it in its :class:`Context`)."""

    #: The peer's address: ``127.0.0.1:50000``, ``[::1]:50000``, or for a
    #: Unix socket ``unix:PATH (pid N)``.
    address: str
    #: The TLS version agreed (``"TLSv1.3"``); None on a plain connection.
    tls: str | None = None
    #: The subject of the client certificate the server verified (mutual
    #: TLS), e.g. ``{"commonName": "alice", "organizationName": "..."}``;
    #: None when the client presented none.
    certificate: Mapping[str, str] | None = None

    @property
    def common_name(self) -> str | None:
        """The verified client certificate's common name, if any."""
        return None if self.certificate is None else self.certificate.get("commonName")


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What a handler or an action with a second parameter receives, and
    what an App's middleware sees: the request and who sent it (and, in an
    App, the action and its value).

    >>> @app.action("whoami")
    ... def whoami(value, context):
    ...     return {"address": context.address, "trace": context.extensions.get("trace-id")}
    """

    #: The request being answered.
    request: Message
    #: The connection's peer.
    peer: Peer
    #: When the client stops waiting for the answer (``time.monotonic()``
    #: seconds, from the request's ``framewire-deadline``), or None.
    deadline: float | None = None
    _cancel: Cancel | None = None
    #: The App action called (None outside an App).
    action: str | None = None
    #: The request's ``value`` as it came (JSON), before a typed action's
    #: conversion (None outside an App).
    value: Any = None

    def time_left(self) -> float | None:
        """Seconds until the client stops waiting (0 when past), or None when
        the request carries no deadline: a handler may give up, or do less."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    @property
    def cancelled(self) -> bool:
        """True once the client has disconnected (its answer would be
        dropped): a long thread-pool handler may poll it and stop early.
        ``async`` handlers are cancelled instead (``CancelledError``)."""
        return self._cancel is not None and self._cancel.cancelled

    @property
    def address(self) -> str:
        """The peer's address (see :attr:`Peer.address`)."""
        return self.peer.address

    @property
    def tls(self) -> str | None:
        """The TLS version of the connection, or None."""
        return self.peer.tls

    @property
    def certificate(self) -> Mapping[str, str] | None:
        """The subject of the client's verified certificate (mutual TLS), or None."""
        return self.peer.certificate

    @property
    def common_name(self) -> str | None:
        """The verified client certificate's common name, if any."""
        return self.peer.common_name

    @property
    def extensions(self) -> Mapping[str, Any]:
        """The request's header extensions (read-only)."""
        return self.request.extensions
