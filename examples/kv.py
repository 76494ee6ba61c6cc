"""A typed key-value service: framewire's way to write a service.

Run it:    framewire serve --app kv:app --app-dir examples --access-log
Call it:   framewire call 127.0.0.1 65432 put '{"key": "a", "value": 1}' --ext token=s3cret
Stream:    framewire call 127.0.0.1 65432 scan --stream
Ask it:    framewire describe 127.0.0.1 65432
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import msgspec

from framewire import App, Context, Failure

app = App()
store: dict[str, Any] = {}
log = logging.getLogger("kv")

#: The token a caller must send (a header extension) to change the store.
TOKEN = "s3cret"


class Entry(msgspec.Struct):
    """A key and its value."""

    key: str
    value: Any = None


class Stored(msgspec.Struct):
    """What a put did."""

    key: str
    created: bool


@app.middleware
def require_token(context: Context, call_next: Any) -> Any:
    """Writes need the token: sent as the header extension ``token``."""
    if context.action in ("put", "delete") and context.extensions.get("token") != TOKEN:
        raise Failure(
            "unauthorized", "This action needs the token extension.", details={"action": context.action}
        )
    return call_next()


@app.middleware
def timing(context: Context, call_next: Any) -> Any:
    """Log the actions slower than 100 ms."""
    started = time.perf_counter()
    try:
        return call_next()
    finally:
        took = time.perf_counter() - started
        if took > 0.1:
            log.warning("%s took %.0f ms", context.action, took * 1000)


@app.action
def put(entry: Entry) -> Stored:
    """Store a value under a key."""
    created = entry.key not in store
    store[entry.key] = entry.value
    return Stored(entry.key, created)


@app.action(errors=["not-found"])
def get(key: str) -> Any:
    """The value stored under a key."""
    if key not in store:
        raise Failure("not-found", f"There is no key {key!r}.", details={"key": key})
    return store[key]


@app.action
def keys(prefix: str | None = None) -> list[str]:
    """The keys, or those that start with a prefix."""
    return sorted(k for k in store if prefix is None or k.startswith(prefix))


@app.action
def scan(prefix: str | None = None) -> Iterator[Entry]:
    """Every entry, or those whose key starts with a prefix, one at a time (a stream)."""
    for key in sorted(store):
        if prefix is None or key.startswith(prefix):
            yield Entry(key, store[key])


@app.action(errors=["not-found"])
def delete(key: str) -> bool:
    """Remove a key."""
    if store.pop(key, None) is None:
        raise Failure("not-found", f"There is no key {key!r}.", details={"key": key})
    return True
