"""The conformance application: ``framewire serve --app conformance``.

A server under test runs it (or an application with the same actions, in
any language) so that the conformance suite can reach every error code and
extension of the protocol: actions that fail, that answer a code of the
application's own with details, that are slow, that stream, and that are
typed. Each action's bounds keep a hostile caller's cost small.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from framewire.core.errors import Failure
from framewire.server.app import App
from framewire.server.app import echo as echo_message

__all__ = ["MAX_ITEMS", "MAX_SLOW", "conformance_app"]

#: The most seconds ``slow`` waits, and the most items ``stream`` yields.
MAX_SLOW = 10.0
MAX_ITEMS = 1000


def conformance_app() -> App:
    """A new App with the actions the conformance suite calls; any content
    that is not ``text/json`` (binary, other text) is echoed, as the echo
    application does, so the suite's framing cases apply unchanged."""
    app = App(guide_text_as_binary=True)
    app.binary(echo_message)

    @app.action
    def echo(value: Any = None) -> Any:
        """The value, back."""
        return value

    @app.action
    def fail(value: Any = None) -> Any:
        """Raises: answered handler-error."""
        raise RuntimeError("this action fails on purpose")

    @app.action(errors=["conformance-code"])
    def code(value: Any = None) -> Any:
        """Answers the application's own code, conformance-code, with the value as its details."""
        raise Failure("conformance-code", "a code of the application's own", details={"value": value})

    @app.action
    async def slow(seconds: float) -> float:
        """Waits that many seconds (at most 10), then answers them."""
        await asyncio.sleep(max(0.0, min(seconds, MAX_SLOW)))
        return seconds

    @app.action
    def typed(value: int) -> int:
        """Takes an integer (anything else is invalid-value) and answers it."""
        return value

    @app.action
    async def stream(count: int) -> AsyncIterator[int]:
        """Yields 0, 1, ... count - 1 (at most 1000), as a stream when asked for one."""
        for number in range(max(0, min(count, MAX_ITEMS))):
            yield number

    return app
