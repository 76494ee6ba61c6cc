"""A user's application for the command-line tests: a key-value store."""

from __future__ import annotations

from typing import Any

from framewire import App, Failure

app = App()
store: dict[str, Any] = {}


@app.action("add")
def add(value: Any) -> Any:
    return sum(value)


@app.action("set")
def set_(value: Any) -> Any:
    key, item = value
    store[key] = item
    return "ok"


@app.action("get")
def get(value: Any) -> Any:
    if value not in store:
        raise Failure("not-found", f"There is no key {value!r}.")
    return store[value]
