"""framewire: the framed JSON-header message protocol over TCP, done properly.

A sans-I/O protocol core (:class:`Message`, :class:`Decoder`,
:func:`encode`), and on top of it the :class:`Server`, the blocking
:class:`Client` and the multi-connection client. The wire format
is a 2-byte big-endian header length, a UTF-8 JSON header, then the content.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from framewire.app import App, echo, search_app
from framewire.client import Client
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
from framewire.multiclient import ConnectionReport, echo_concurrently, request_concurrently
from framewire.protocol import Decoder, State, encode, encode_many
from framewire.server import Server

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
