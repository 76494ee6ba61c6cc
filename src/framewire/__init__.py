"""framewire: the framed JSON-header message protocol over TCP, done properly.

A sans-I/O protocol core (:class:`Decoder`, :func:`encode`), with the
server, clients and command-line tools built on top of it. The wire format
is a 2-byte big-endian header length, a UTF-8 JSON header, then the content.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from framewire.errors import (
    BadContent,
    BadEncoding,
    BadHeader,
    BadHeaderLength,
    BadHeaderValue,
    ContentError,
    ContentTooLarge,
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

try:
    __version__ = version("framewire")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "BadContent",
    "BadEncoding",
    "BadHeader",
    "BadHeaderLength",
    "BadHeaderValue",
    "ContentError",
    "ContentTooLarge",
    "Decoder",
    "HandlerError",
    "HeaderTooLarge",
    "IncompleteMessage",
    "Message",
    "MessageTimeout",
    "MissingHeaderKey",
    "ProtocolError",
    "ServerBusy",
    "State",
    "__version__",
    "encode",
    "encode_many",
]
