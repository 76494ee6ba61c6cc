"""The epoll driver: :class:`Server`, one thread, one poller, any number of
connections (the loop itself is :mod:`framewire.server.epoll_loop`).

Server is a Python class over the loop's native one, so that it keeps what
mypyc refuses a native class that may be subclassed: the config's values as
attributes (``server.grace``), and subclasses of a user's own, in either build.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from framewire.io import poller
from framewire.io.netio import raise_descriptor_limit
from framewire.server.config import ServerConfig
from framewire.server.engine import ServerConnection
from framewire.server.epoll_loop import _Serving
from framewire.server.stopping import StopNow, log_stop_now
from framewire.server.view import ServerView

__all__ = ["Server", "raise_descriptor_limit"]

log = logging.getLogger("framewire.server")


class Server(_Serving, ServerView):
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

    def _engines(self) -> list[ServerConnection]:
        return [conn.engine for conn in list(self._conns.values())]

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

    def bind(self) -> None:
        """Create the listening socket (done by :meth:`start`/:meth:`serve_forever`).

        Raises ``OSError`` (``EADDRINUSE`` when the port is taken).
        """
        if self._listener is None:
            self._listener = self._state.bind(
                self.host, self.requested_port, self.backlog, self.unix_mode, self._given
            )

    def serve_forever(
        self, *, handle_signals: bool = False, on_ready: Callable[[], None] | None = None
    ) -> None:
        """Serve until :meth:`shutdown` (or SIGINT/SIGTERM with ``handle_signals``).

        ``handle_signals`` works only in the main thread. The first signal
        drains (answers what is in flight, up to ``grace`` seconds); a
        second signal, or the end of the grace period, stops at once, even
        while a handler is stuck. ``on_ready`` is called once the server
        listens and its signal handlers are in place.
        """
        self.bind()
        assert self._listener is not None
        if handle_signals:
            self._stopper.install(self._waker.write_fileno())
        poll = self._poller = poller.Poller()
        poll.register(self._waker.fileno(), poller.READ)
        self._running.set()
        try:
            if on_ready is not None:
                on_ready()
            self._state.listening(poll, time.monotonic())
            self._stopper.serving = True
            self._loop(poll)
        except StopNow:
            busy, connections = self._stopper.at_stop or self._state.snapshot()
            log_stop_now(log, busy, connections)
        finally:
            self._stopper.serving = False
            for conn in list(self._conns.values()):
                with contextlib.suppress(Exception):
                    self._close(conn)
            poll.close()
            self._state.close(time.monotonic())
            self._waker.close()
            self._stopper.restore()
            self._finished.set()
            log.info("server stopped")
