"""The epoll driver: :class:`Server`, one thread, one poller, any number of
connections (the loop itself is :mod:`framewire.server.epoll_loop`).

Server is a Python class over the loop's native one, so that it keeps what
mypyc refuses a native class that may be subclassed: the config's values as
attributes (``server.grace``), and subclasses of a user's own, in either build.
"""

from __future__ import annotations

from typing import Any

from framewire.server.config import ServerConfig
from framewire.server.epoll_loop import _Serving, raise_descriptor_limit

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
