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

from framewire.errors import (
    BadContent,
    BadEncoding,
    BadHeader,
    BadHeaderLength,
    BadHeaderValue,
    ConnectionClosed,
    ContentError,
    ContentTooLarge,
    ErrorResponse,
    HandlerError,
    HeaderTooLarge,
    IncompleteMessage,
    MessageTimeout,
    MissingHeaderKey,
    ProtocolError,
    ServerBusy,
)
from framewire.message import Message
from framewire.protocol import Decoder, State, encode, encode_many

if TYPE_CHECKING:
    from framewire.app import App, echo, search_app
    from framewire.client import Client
    from framewire.multiclient import ConnectionReport, echo_concurrently, request_concurrently
    from framewire.server import Server

# `import framewire` loads the protocol core alone; the server, the clients
# and the applications are imported when first used (PEP 562).
_LAZY = {
    "App": "framewire.app",
    "echo": "framewire.app",
    "search_app": "framewire.app",
    "Client": "framewire.client",
    "ConnectionReport": "framewire.multiclient",
    "echo_concurrently": "framewire.multiclient",
    "request_concurrently": "framewire.multiclient",
    "Server": "framewire.server",
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
    "App",
    "BadContent",
    "BadEncoding",
    "BadHeader",
    "BadHeaderLength",
    "BadHeaderValue",
    "Client",
    "ConnectionClosed",
    "ConnectionReport",
    "ContentError",
    "ContentTooLarge",
    "Decoder",
    "ErrorResponse",
    "HandlerError",
    "HeaderTooLarge",
    "IncompleteMessage",
    "Message",
    "MessageTimeout",
    "MissingHeaderKey",
    "ProtocolError",
    "Server",
    "ServerBusy",
    "State",
    "__version__",
    "echo",
    "echo_concurrently",
    "encode",
    "encode_many",
    "request_concurrently",
    "search_app",
]
