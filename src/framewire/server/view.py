"""What a server tells about itself, the same on every driver."""

from __future__ import annotations

from framewire.server.engine import ServerConnection
from framewire.server.state import ServerState

__all__ = ["ServerView"]


class ServerView:
    """The read-only side of a server: where it listens and what it counts."""

    _state: ServerState

    def _engines(self) -> list[ServerConnection]:
        raise NotImplementedError  # (each driver knows where its connections are)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on; the real port when 0 was
        asked; ``("unix:PATH", 0)`` on a Unix socket."""
        if self._state.address is None:
            raise RuntimeError("the server is not bound yet: call start() or bind()")
        return self._state.address

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.address[1]

    @property
    def connections(self) -> int:
        """Connections open now (with those in their TLS handshake)."""
        return self._state.open

    @property
    def connections_total(self) -> int:
        """Connections accepted since the start."""
        return self._state.connections_total

    @property
    def requests_total(self) -> int:
        """Requests received since the start."""
        return self._state.requests_total(self._engines())
