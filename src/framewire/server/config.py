"""One frozen, self-validating server configuration.

Each setting is declared once, here: its default (from
:mod:`framewire.core.limits`), its range, and the sentence that describes
it. :class:`~framewire.server.Server` takes them as keyword arguments and
``framewire serve`` generates its options from the same declarations
(:func:`settings`), so the library, the command line and the docs cannot
drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from framewire.core import limits

__all__ = ["ServerConfig", "Setting", "settings"]


@dataclass(frozen=True)
class Setting:
    """What a setting accepts and how to explain it."""

    help: str
    minimum: float = 0
    #: True when the minimum itself is not allowed (a timeout of 0).
    above_minimum: bool = False
    maximum: float = math.inf


def _setting(default: Any, help: str, **bounds: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(help, **bounds)})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every limit and knob of a server. Frozen; checked when made."""

    max_header_size: int = _setting(
        limits.MAX_HEADER_SIZE, "Largest JSON header, bytes.", minimum=2, maximum=65535
    )
    max_content_length: int = _setting(limits.MAX_CONTENT_LENGTH, "Largest content, bytes.")
    message_timeout: float = _setting(
        limits.MESSAGE_TIMEOUT, "Seconds from a message's first byte to its last.", above_minimum=True
    )
    idle_timeout: float = _setting(
        limits.IDLE_TIMEOUT, "Seconds a connection may sit idle.", above_minimum=True
    )
    max_connections: int = _setting(
        limits.MAX_CONNECTIONS, "Connections at once; more get server-busy.", minimum=1
    )
    high_water: int = _setting(
        limits.HIGH_WATER, "Unsent response bytes per connection before it stops being read.", minimum=1
    )
    max_in_flight: int = _setting(
        limits.MAX_IN_FLIGHT, "Unanswered requests per connection before it stops being read.", minimum=1
    )
    grace: float = _setting(limits.GRACE, "Seconds to answer in-flight requests on SIGTERM/SIGINT.")
    threads: int = _setting(
        limits.THREADS,
        "Run handlers on a pool of N threads (0: inline, the fastest; async handlers always run on an "
        "event loop).",
    )
    max_queued: int = _setting(
        limits.MAX_QUEUED,
        "Requests waiting for a threaded or async handler, server-wide; more get server-busy.",
        minimum=1,
    )

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            setting: Setting = item.metadata["setting"]
            value = getattr(self, item.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{item.name} must be a number, not {value!r}")
            if item.type == "int" and not isinstance(value, int):
                raise TypeError(f"{item.name} must be an integer, not {value!r}")
            low = value <= setting.minimum if setting.above_minimum else value < setting.minimum
            if low or value > setting.maximum or math.isnan(value):
                relation = ">" if setting.above_minimum else ">="
                allowed = f"{relation} {setting.minimum:g}"
                if setting.maximum != math.inf:
                    allowed = f"within {setting.minimum:g}..{setting.maximum:g}"
                raise ValueError(f"{item.name} must be {allowed}, not {value}")

    @classmethod
    def of(cls, config: ServerConfig | None, settings: dict[str, Any]) -> ServerConfig:
        """``config``, or one made of ``settings`` (a server takes either)."""
        if config is None:
            return cls(**settings)
        if settings:
            raise TypeError("give either config or settings, not both")
        return config

    @property
    def low_water(self) -> int:
        """Queued bytes below which a paused connection is read again (half the high-water mark)."""
        return self.high_water // 2


def settings() -> list[tuple[str, type, Any, Setting]]:
    """Each setting: its name, type (int or float), default and description."""
    return [
        (item.name, int if item.type == "int" else float, item.default, item.metadata["setting"])
        for item in dataclasses.fields(ServerConfig)
    ]
