"""Serving on the asyncio driver in the main thread, as ``framewire serve
--loop asyncio|uvloop`` does: until SIGINT/SIGTERM, the first signal
draining within ``grace``, a second (or the end of the grace period)
stopping at once even if a handler is stuck."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable

from framewire.io.poller import BusyPollSelector
from framewire.server.aio import AioServer, start_server
from framewire.server.app import Handler
from framewire.server.config import ServerConfig
from framewire.server.metrics import Metrics
from framewire.server.stopping import StopNow, Stopper, log_stop_now

__all__ = ["run"]

log = logging.getLogger("framewire.server")


def _loop_factory(config: ServerConfig) -> Callable[[], asyncio.AbstractEventLoop] | None:
    # The loop polls a while before it sleeps, as the epoll loop does
    # (busy_poll): sleeping and waking is most of a round trip here
    # (docs/performance.md, "Busy polling").
    if not config.busy_poll:
        return None
    limit = config.busy_poll / 1e6
    return lambda: asyncio.SelectorEventLoop(BusyPollSelector(limit))


def run(
    handler: Handler,
    host: str,
    port: int,
    config: ServerConfig,
    *,
    ssl_context: ssl.SSLContext | None = None,
    unix_mode: int | None = None,
    sock: socket.socket | None = None,
    metrics: Metrics | None = None,
    use_uvloop: bool = False,
    on_ready: Callable[[AioServer], None] | None = None,
) -> None:
    """Serve in this (main) thread until SIGINT/SIGTERM, the command line's
    driver: the first signal drains within ``grace``; a second, or the end
    of the grace period, stops at once even if a handler is stuck."""
    holder: list[AioServer] = []

    def drain(signum: int) -> None:
        # In the signal handler: hand the work to the loop.
        if holder:
            server = holder[0]
            server._loop.call_soon_threadsafe(server._signalled, signum)

    def snapshot() -> tuple[list[str], int]:
        return holder[0]._state.snapshot() if holder else ([], 0)

    stopper = Stopper(config.grace, drain, snapshot)

    async def main() -> None:
        server = await start_server(
            handler,
            host,
            port,
            config=config,
            ssl_context=ssl_context,
            unix_mode=unix_mode,
            sock=sock,
            metrics=metrics,
        )
        holder.append(server)
        if on_ready is not None:
            on_ready(server)
        await server.wait_closed()

    stopper.install()
    stopper.serving = True
    try:
        if use_uvloop:
            import uvloop  # noqa: PLC0415  (optional)

            uvloop.run(main())  # (libuv's loop: no polling before it sleeps)
        else:
            with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
                runner.run(main())
    except StopNow:
        busy, connections = stopper.at_stop or snapshot()
        log_stop_now(log, busy, connections)
    finally:
        stopper.serving = False
        stopper.restore()
    log.info("server stopped")
