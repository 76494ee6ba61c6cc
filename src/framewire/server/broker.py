"""The broker: ``framewire serve --app pubsub``.

Two actions over the app's hub: ``publish`` takes ``{"topic": T, "value":
V}`` and hands V to every subscriber of T; ``subscribe`` takes a topic (or
a list of them; a trailing ``*`` takes a prefix) and streams ``{"topic": T,
"value": V}`` for every publish on them, until its client cancels or leaves.
With ``--hub redis://...``, every broker on that Redis is one broker.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from framewire.core.errors import InvalidValue
from framewire.core.topics import MAX_TOPIC
from framewire.server.app import App
from framewire.server.hub import Subscription

__all__ = ["Publish", "pubsub_app"]

#: A topic one can publish to.
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC, pattern=r"^[^*]*$")]


class Publish(msgspec.Struct, forbid_unknown_fields=True):
    """The ``publish`` action's value."""

    topic: Topic
    value: Any = None


def pubsub_app() -> App:
    """The broker's application (see the module's text)."""
    app = App()

    @app.action("publish")
    def publish(value: Publish) -> None:
        """Hand the value to every subscriber of the topic."""
        app.hub.publish(value.topic, value.value)

    @app.action("subscribe")
    def subscribe(value: str | list[str]) -> Subscription:
        """Stream {"topic": T, "value": V} for every publish on these topics
        (a trailing * takes every topic with that prefix)."""
        try:
            return app.hub.subscribe(value)
        except ValueError as exc:
            raise InvalidValue(f"$: {exc}.", details={"path": "$", "reason": str(exc)}) from None

    return app
