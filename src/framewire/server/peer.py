"""Who is on the other end of a connection, as a handler sees it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from framewire.core.message import Message

__all__ = ["Context", "Peer"]


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
    """What a handler or an action with a second parameter receives: the
    request and who sent it.

    >>> @app.action("whoami")
    ... def whoami(value, context):
    ...     return {"address": context.address, "trace": context.extensions.get("trace-id")}
    """

    #: The request being answered.
    request: Message
    #: The connection's peer.
    peer: Peer

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
