"""framewire: the framed JSON-header message protocol over TCP, done properly.

A sans-I/O protocol core (:class:`Message`, :class:`Decoder`,
:func:`encode`), and on top of it the :class:`Server`, the blocking
:class:`Client` and the multi-connection client. The wire format
is a 2-byte big-endian header length, a UTF-8 JSON header, then the content.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from framewire.core.decoder import Decoder, State, encode, encode_many
from framewire.core.errors import (
    BadContent,
    BadEncoding,
    BadHeader,
    BadHeaderLength,
    BadHeaderValue,
    Cancelled,
    ConnectionClosed,
    ContentError,
    ContentTooLarge,
    ErrorResponse,
    Failure,
    HandlerError,
    HeaderTooLarge,
    IncompleteMessage,
    InvalidValue,
    MessageTimeout,
    MissingHeaderKey,
    ProtocolError,
    ServerBusy,
    UnknownAction,
)
from framewire.core.message import Message
from framewire.core.topics import Event

if TYPE_CHECKING:
    from framewire.client import Client
    from framewire.client.concurrent import ConnectionReport, echo_concurrently, request_concurrently
    from framewire.client.options import DEFAULT, ClientOptions
    from framewire.client.pool import Pool
    from framewire.client.retry import Retry
    from framewire.io.tls import client_context, server_context
    from framewire.server import Server
    from framewire.server.app import App, echo, search_app
    from framewire.server.config import ServerConfig
    from framewire.server.hub import Hub, Subscription
    from framewire.server.peer import Context
    from framewire.server.redis_hub import RedisHub

# `import framewire` loads the protocol core alone; the server, the clients
# and the applications are imported when first used (PEP 562).
_LAZY = {
    "App": "framewire.server.app",
    "echo": "framewire.server.app",
    "search_app": "framewire.server.app",
    "Client": "framewire.client",
    "ClientOptions": "framewire.client.options",
    "DEFAULT": "framewire.client.options",
    "ConnectionReport": "framewire.client.concurrent",
    "Context": "framewire.server.peer",
    "Hub": "framewire.server.hub",
    "RedisHub": "framewire.server.redis_hub",
    "Subscription": "framewire.server.hub",
    "Pool": "framewire.client.pool",
    "Retry": "framewire.client.retry",
    "echo_concurrently": "framewire.client.concurrent",
    "request_concurrently": "framewire.client.concurrent",
    "Server": "framewire.server",
    "ServerConfig": "framewire.server.config",
    "client_context": "framewire.io.tls",
    "server_context": "framewire.io.tls",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'framewire' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


try:
    __version__ = version("framewire")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "DEFAULT",
    "App",
    "BadContent",
    "BadEncoding",
    "BadHeader",
    "BadHeaderLength",
    "BadHeaderValue",
    "Cancelled",
    "Client",
    "ClientOptions",
    "ConnectionClosed",
    "ConnectionReport",
    "ContentError",
    "ContentTooLarge",
    "Context",
    "Decoder",
    "ErrorResponse",
    "Event",
    "Failure",
    "HandlerError",
    "HeaderTooLarge",
    "Hub",
    "IncompleteMessage",
    "InvalidValue",
    "Message",
    "MessageTimeout",
    "MissingHeaderKey",
    "Pool",
    "ProtocolError",
    "RedisHub",
    "Retry",
    "Server",
    "ServerBusy",
    "ServerConfig",
    "State",
    "Subscription",
    "UnknownAction",
    "__version__",
    "client_context",
    "echo",
    "echo_concurrently",
    "encode",
    "encode_many",
    "request_concurrently",
    "search_app",
    "server_context",
]
