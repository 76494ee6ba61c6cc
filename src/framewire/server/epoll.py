"""The epoll driver: :class:`Server`, one thread, one poller, any number of
connections (the loop itself is :mod:`framewire.server.epoll_loop`).

Server is a Python class over the loop's native one, so that it keeps what
mypyc refuses a native class that may be subclassed: the config's values as
attributes (``server.grace``), and subclasses of a user's own, in either build.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Self

from framewire.io.netio import raise_descriptor_limit
from framewire.server.config import ServerConfig
from framewire.server.epoll_loop import _Serving

__all__ = ["Server", "raise_descriptor_limit"]


class Server(_Serving):
    """A framed-message server for one handler (``Message -> Message``).

    >>> from framewire.server.app import echo
    >>> with Server(echo, port=0) as server:   # serves in a background thread
    ...     port = server.port

    or ``server.serve_forever()`` to serve in the calling thread. Every limit
    is a keyword argument (see :class:`~framewire.server.config.ServerConfig`
    for each and its default), or pass a whole ``config``.

    ``host`` is an IPv4 or IPv6 address or name (``"::"``: both, where the
    system allows), or ``"unix:PATH"`` for a Unix domain socket, created
    with permission ``unix_mode`` (e.g. ``0o660``) and removed at the end.
    ``sock``: serve a socket already listening (from a supervisor, or
    systemd's socket activation) instead of binding one.
    ``ssl_context`` (see :func:`framewire.io.tls.server_context`) serves TLS;
    with mutual TLS the handler sees the client's verified certificate in
    its :class:`~framewire.server.peer.Peer`.
    """

    def __getattr__(self, name: str) -> Any:
        # server.max_connections, server.grace...: the config's values.
        # ("config" is no config field: looked up before __init__ set it, it
        # raises rather than recursing.)
        if name in ServerConfig.__dataclass_fields__:
            return getattr(self.config, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

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
        return self._state.requests_total([c.engine for c in list(self._conns.values())])

    def start(self) -> Self:
        """Bind, then serve in a background thread; returns self."""
        self.bind()
        self._loop_thread = threading.Thread(target=self.serve_forever, name="framewire-server", daemon=True)
        self._loop_thread.start()
        self._running.wait()
        return self

    def close(self, timeout: float | None = None) -> None:
        """Stop (as :meth:`shutdown`) and wait for the serving thread to end."""
        self.shutdown()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout if timeout is not None else self.config.grace + 5)
        elif self._running.is_set():
            self._finished.wait(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
