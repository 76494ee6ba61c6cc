"""The exception hierarchy: one class per error code of the protocol (docs/protocol.md).

Every error a peer can cause is a :class:`ProtocolError` carrying the spec's
machine-readable ``code`` and a sentence for a person. ``framing`` tells
whether the byte stream can still be trusted afterwards: after a framing
error the connection must be closed; after a content error (``bad-encoding``,
``bad-content``, ``handler-error``) only that one message was bad.
"""

from __future__ import annotations

import re
from typing import Any


class ProtocolError(Exception):
    """A violation of the wire protocol, with the spec's error ``code``."""

    #: The machine-readable code of the error table in docs/protocol.md.
    code: str = "protocol-error"
    #: True when the stream can no longer be trusted and must be closed.
    framing: bool = True

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        #: One sentence for a person.
        self.message = message
        #: Data for programs (any JSON value), sent beside the code and the
        #: message as the error object's ``details``; None: none.
        self.details = details

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class HeaderTooLarge(ProtocolError):
    """The header length is above the receiver's header limit."""

    code = "header-too-large"


class BadHeaderLength(ProtocolError):
    """The header length field is 0 or 1."""

    code = "bad-header-length"


class BadHeader(ProtocolError):
    """The header is not UTF-8, not JSON, not an object, or nests too deep."""

    code = "bad-header"


class MissingHeaderKey(ProtocolError):
    """One of the four required header keys is absent."""

    code = "missing-header-key"


class BadHeaderValue(ProtocolError):
    """A required header key has the wrong type or range."""

    code = "bad-header-value"


class ContentTooLarge(ProtocolError):
    """``content-length`` is above the receiver's content limit."""

    code = "content-too-large"


class MessageTimeout(ProtocolError):
    """A message was started but not completed within the message deadline."""

    code = "timeout"


class IncompleteMessage(ProtocolError):
    """The stream ended in the middle of a message."""

    code = "incomplete-message"


class ContentError(ProtocolError):
    """One message's content is bad; the framing, and so the stream, is intact."""

    framing = False


class BadEncoding(ContentError):
    """Text content whose ``content-encoding`` is not a text codec Python knows."""

    code = "bad-encoding"


class BadContent(ContentError):
    """Content that does not decode with its encoding, or is not valid JSON."""

    code = "bad-content"


class ServerBusy(ProtocolError):
    """The server was at its connection limit and refused the connection."""

    code = "server-busy"


class HandlerError(ContentError):
    """The application's handler failed on this request."""

    code = "handler-error"


class DeadlineExceeded(ContentError):
    """A request's ``framewire-deadline`` passed before its handler ran (or
    finished, for an ``async`` handler): its answer is ``timeout``, and the
    connection is kept, since its framing is intact."""

    code = "timeout"


class UnknownAction(ContentError):
    """An application of named actions got a request for one it does not have."""

    code = "unknown-action"


class InvalidValue(ContentError):
    """A typed action got a value that does not fit its declared type: the
    message says where and what (``$.x: expected int, got str``), the
    details say it as data (``{"path": "$.x", "reason": ...}``)."""

    code = "invalid-value"


class Cancelled(ContentError):
    """The request was cancelled by its client (``framewire-cancel``)
    before it was fully answered."""

    code = "cancelled"


class Failure(ContentError):
    """An application's own error, with a code of its own: raise it from a
    handler (or an App action) to answer with that code, the connection kept.

    ```python
    raise Failure("not-found", "There is no key 'a'.")
    ```

    The code is lower-case letters, digits and hyphens (``not-found``,
    ``quota-exceeded``); the client raises it as an :class:`ErrorResponse`
    whose ``code`` is that code. ``details`` (any JSON value) goes with it,
    for programs: ``Failure("quota-exceeded", "...", details={"limit": 10})``
    reaches the client as :attr:`ErrorResponse.details`.
    """

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        if not _CODE.fullmatch(code):
            raise ValueError(f"an error code is lower-case letters, digits and hyphens, not {code!r}")
        super().__init__(message, details=details)
        self.code = code


_CODE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


#: Every code of the hierarchy, mapped to its class.
ERROR_CLASSES: dict[str, type[ProtocolError]] = {
    cls.code: cls
    for cls in (
        HeaderTooLarge,
        BadHeaderLength,
        BadHeader,
        MissingHeaderKey,
        BadHeaderValue,
        ContentTooLarge,
        MessageTimeout,
        IncompleteMessage,
        BadEncoding,
        BadContent,
        ServerBusy,
        HandlerError,
        UnknownAction,
        InvalidValue,
        Cancelled,
    )
}


def error_for_code(code: str, message: str, details: Any = None) -> ProtocolError:
    """Build the exception for ``code`` (as read from an error response)."""
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        if _CODE.fullmatch(code):
            return Failure(code, message, details)  # an application's own code
        err = ProtocolError(message, details=details)
        err.code = code  # not a well-formed code
        return err
    return cls(message, details=details)


class ErrorResponse(Exception):
    """The server answered a request with an error response.

    ``code`` is the spec's error code the server sent (``bad-content``,
    ``handler-error``, ``server-busy``, ...), ``message`` its sentence, and
    ``error`` the matching :class:`ProtocolError`.
    """

    def __init__(self, error: ProtocolError, *, responses: list[Any] | None = None) -> None:
        super().__init__(f"the server answered with an error: {error.code}: {error.message}")
        self.error = error
        self.code = error.code
        self.message = error.message
        #: The error's ``details`` (any JSON value), or None when it had none.
        self.details = error.details
        #: From a call that sent several requests: every response, in order
        #: (the error responses in their places).
        self.responses: list[Any] = responses or []


class ConnectionClosed(ConnectionError):
    """The peer closed the connection before the expected message arrived.

    ``responses`` holds what did arrive before the close, in order (from
    ``Client.request_many``: the answers to the first requests).
    """

    def __init__(self, *args: object, responses: list[Any] | None = None) -> None:
        super().__init__(*args)
        self.responses: list[Any] = responses or []
