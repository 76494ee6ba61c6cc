"""Settings declared once: a default, a range and a sentence each.

A frozen dataclass of settings (the server's
:class:`~framewire.server.config.ServerConfig`, the clients'
:class:`~framewire.client.options.ClientOptions`) declares each numeric
setting with :func:`setting`; :func:`check` validates them all when one is
made, and :func:`declared` lists them, from which the command line makes
its options and the docs their tables: library, command line and docs
cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Setting", "check", "declared", "setting"]


@dataclass(frozen=True)
class Setting:
    """What a setting accepts and how to explain it."""

    help: str
    minimum: float = 0
    #: True when the minimum itself is not allowed (a timeout of 0).
    above_minimum: bool = False
    maximum: float = math.inf
    #: None is allowed too (no limit).
    optional: bool = False


def setting(default: Any, help: str, **bounds: Any) -> Any:
    """A dataclass field for a numeric setting (see :class:`Setting`)."""
    return field(default=default, metadata={"setting": Setting(help, **bounds)})


def declared(cls: type) -> list[tuple[str, type, Any, Setting]]:
    """Each setting of ``cls``: its name, type (int or float), default and description."""
    return [
        (item.name, _kind(item), item.default, item.metadata["setting"])
        for item in dataclasses.fields(cls)
        if "setting" in item.metadata
    ]


def _kind(item: dataclasses.Field[Any]) -> type:
    # (With ``from __future__ import annotations`` the type is its text.)
    return int if str(item.type).startswith("int") else float


def check(values: Any) -> None:
    """Raise TypeError or ValueError, naming the setting, for any value of
    the dataclass ``values`` outside what its declaration allows."""
    for item in dataclasses.fields(values):
        if "setting" not in item.metadata:
            continue
        declaration: Setting = item.metadata["setting"]
        value = getattr(values, item.name)
        if value is None and declaration.optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{item.name} must be a number, not {value!r}")
        if _kind(item) is int and not isinstance(value, int):
            raise TypeError(f"{item.name} must be an integer, not {value!r}")
        low = value <= declaration.minimum if declaration.above_minimum else value < declaration.minimum
        if low or value > declaration.maximum or math.isnan(value):
            relation = ">" if declaration.above_minimum else ">="
            allowed = f"{relation} {declaration.minimum:g}"
            if declaration.maximum != math.inf:
                allowed = f"within {declaration.minimum:g}..{declaration.maximum:g}"
            raise ValueError(f"{item.name} must be {allowed}, not {value}")
