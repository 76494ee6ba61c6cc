"""Who is on the other end of a connection, as a handler sees it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

__all__ = ["Peer"]


@dataclasses.dataclass(frozen=True, slots=True)
class Peer:
    """The peer of a connection, for handlers that take a second argument.

    >>> def whoami(request, peer):      # a handler: Message, Peer -> Message
    ...     return Message.from_json({"you": peer.address, "cn": peer.common_name})
    """

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
