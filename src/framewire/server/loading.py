"""The application a command line names: ``framewire serve --app``."""

from __future__ import annotations

import importlib
import traceback
from typing import Any

from framewire.server.app import Handler, echo, search_app
from framewire.server.broker import pubsub_app
from framewire.server.conformance_app import conformance_app

__all__ = ["load_handler"]


def load_handler(spec: str) -> Handler:
    """The handler named by ``search``, ``echo``, ``pubsub``, ``conformance`` or ``MODULE:CALLABLE``.

    Raises ``ValueError`` with a sentence for a person when it cannot.
    """
    if spec == "search":
        return search_app()
    if spec == "echo":
        return echo
    if spec == "pubsub":
        return pubsub_app()
    if spec == "conformance":
        return conformance_app()
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--app takes search, echo, pubsub, conformance or MODULE:CALLABLE, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for --app: {exc}") from None
    except Exception as exc:  # the module itself failed: say where, in one line
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
        raise ValueError(
            f"importing module {module_name!r} for --app failed: {type(exc).__name__}: {exc}{where}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no {attr!r} for --app") from None
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable; --app needs a function taking a Message")
    handler: Handler = target
    return handler
