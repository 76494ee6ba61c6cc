"""The message value: :class:`Message`, its :class:`Header` and its content.

A message is immutable. Its header fields live in a shared, immutable
:class:`Header` record, so that the thousands of messages a connection sees
with the same header share one record (and one encoded copy of it).

The decoder (:mod:`framewire.core.decoder`) turns bytes into messages
through this module's interface: it parses and validates a header into a
:class:`Header` (:data:`REQUIRED_KEYS`, :data:`BYTEORDERS`,
:data:`NO_EXTENSIONS`) and makes each message with :func:`decoded`.
"""

from __future__ import annotations

import codecs
import encodings
import encodings.aliases
import functools
import json
import pkgutil
import sys
import warnings
from collections.abc import Iterable, Mapping
from types import FunctionType, MappingProxyType
from typing import Any, Final

import orjson
from mypy_extensions import mypyc_attr

from framewire.core.errors import BadContent, BadEncoding, ErrorResponse, ProtocolError, error_for_code
from framewire.core.frozen import FrozenDict, freeze

#: The four keys every header must carry.
REQUIRED_KEYS: Final = ("byteorder", "content-type", "content-encoding", "content-length")
#: Content types decoded as JSON.
JSON_TYPES: Final = frozenset({"text/json", "application/json"})
#: The header extension key that marks a response as an error or a success.
STATUS_KEY: Final = "status"


def is_text_type(content_type: str) -> bool:
    """True for ``text/...`` content types and the JSON synonym ``application/json``."""
    return content_type.startswith("text/") or content_type in JSON_TYPES


#: The byte orders a header may name.
BYTEORDERS: Final = frozenset({"little", "big"})
_UTF8_NAMES: Final = frozenset({"utf-8", "utf8", "UTF-8", "UTF8"})
#: The extensions of a header that has none (shared, read-only).
NO_EXTENSIONS: Final[Mapping[str, Any]] = FrozenDict()
#: True when this module runs compiled by mypyc (a wheel built where a C
#: compiler is, hatch_build.py): Message is then a native class, which
#: ``object.__new__`` refuses to make, and the decoder makes its messages
#: with :class:`Decoded` (see there). (Asked of
#: this module's own code, not of its file name, which a frozen or zipped
#: install may not have: compiled, a function is a built-in.)
NATIVE: Final = not isinstance(is_text_type, FunctionType)

# Codecs that warn (DeprecationWarning) about invalid escapes in what they decode.
_WARNING_CODECS: Final = frozenset({"unicode-escape", "raw-unicode-escape"})
# Codecs whose decoding time is not linear in the input: punycode's decoder
# is quadratic (a 200 KB content held a server for seconds), and idna runs
# punycode on each label. Every other text codec Python ships decoded 400 KB
# in at most 6.1x the time of 100 KB (docs/limits.md), i.e. linearly.
_NONLINEAR_CODECS: Final = frozenset({"punycode", "idna"})
# No codec Python ships has a longer name (the longest is 23 characters).
_MAX_CODEC_NAME: Final = 64


@functools.cache
def _codec_modules() -> tuple[frozenset[str], Mapping[str, str]]:
    # A constant, computed once: the codec modules Python ships and its aliases.
    modules = frozenset(m.name for m in pkgutil.iter_modules(encodings.__path__))
    return modules, MappingProxyType(dict(encodings.aliases.aliases))


def canonical_codec_name(name: str) -> str | None:
    """The name of the codec module ``name`` stands for, normalised exactly
    as Python's ``encodings`` package does, or None if Python ships no such
    codec (or the name is not ASCII, or longer than any codec's)."""
    if len(name) > _MAX_CODEC_NAME or not name.isascii() or not name.isprintable():
        return None
    # codecs.lookup() lower-cases and turns spaces into underscores, then
    # encodings.search_function() applies normalize_encoding and the aliases.
    norm = encodings.normalize_encoding(name.lower().replace(" ", "_"))
    modules, aliases = _codec_modules()
    module = aliases.get(norm) or aliases.get(norm.replace(".", "_")) or norm
    return module if module in modules else None


def text_codec(name: str) -> codecs.CodecInfo | None:
    """The text codec called ``name``, or None if Python has no such text codec.

    Only the canonical module name (one of a fixed set of about 120) ever
    reaches ``codecs.lookup``: Python's codec registry remembers every name
    it is asked for, so passing a peer's spelling through would let endless
    variants (``utf!!8``, ``UTF--8``...) grow memory. Byte-to-byte codecs
    (``zlib``, ``base64``, ``rot13``...) and codecs whose decoding is not
    linear in the input (``punycode``, ``idna``) are refused.
    """
    module = canonical_codec_name(name)
    if module is None or module in _NONLINEAR_CODECS:
        return None
    try:
        info = codecs.lookup(module)
    except LookupError:
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info


def _dump_header(header: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(header)
    except TypeError:
        # orjson refuses integers beyond 64 bits and nesting deeper than 254,
        # both of which a header can hold (a peer's extension, read exactly,
        # or a handler's). The standard library writes both; only nesting
        # past Python's recursion limit is beyond it.
        try:
            return json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise UnencodableMessage(f"The header cannot be encoded as JSON: {exc}.") from None


class UnencodableMessage(ValueError):
    """A message that cannot be sent as a valid message of the protocol."""


class Header:
    """The header of one message: required fields, extensions, wire bytes.

    Shared by every message with the same header (and, through a decoder's
    cache, by connections): never changed once made, but for its wire copy,
    made once when first needed."""

    __slots__ = (
        "byteorder",
        "checked",
        "content_encoding",
        "content_length",
        "content_type",
        "extensions",
        "plain",
        "wire",
    )

    def __init__(
        self,
        content_type: str,
        content_encoding: str,
        byteorder: str,
        content_length: int,
        extensions: Mapping[str, Any],
        wire: bytes | None = None,
    ) -> None:
        self.content_type = content_type
        self.content_encoding = content_encoding
        self.byteorder = byteorder
        self.content_length = content_length
        self.extensions = extensions
        #: No extensions, and this machine's byte order: the header a server
        #: would give an answer of the same content, type and encoding (a
        #: handler that echoes can send the request back). Per header, and
        #: headers are shared, so an echo pays one attribute read for it.
        self.plain = not extensions and byteorder == sys.byteorder
        #: The 2-byte length and the JSON header, as sent; made when first needed.
        self.wire = wire
        #: True once :meth:`sendable` found this a valid message header.
        self.checked = False

    def as_dict(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            "byteorder": self.byteorder,
            "content-type": self.content_type,
            "content-encoding": self.content_encoding,
            "content-length": self.content_length,
        }
        header.update(self.extensions)
        return header

    def encoded(self) -> bytes:
        """The 2-byte length and the JSON header; raises :class:`UnencodableMessage`."""
        wire = self.wire
        if wire is None:
            body = _dump_header(self.as_dict())
            if len(body) > 0xFFFF:
                raise UnencodableMessage(
                    f"The header is {len(body)} bytes when encoded; the protocol allows at most 65535."
                )
            wire = self.wire = len(body).to_bytes(2, "big") + body
        return wire

    def sendable(self) -> bytes:
        """:meth:`encoded`, once the header is known to make a valid message:
        it encodes, and a text content type carries a text encoding. Checked
        once per header (headers are shared), so a server pays it once per
        shape of response. Raises :class:`UnencodableMessage`."""
        if self.checked:
            return self.wire  # type: ignore[return-value]  # set by encoded()
        wire = self.encoded()
        if is_text_type(self.content_type) and text_codec(self.content_encoding) is None:
            raise UnencodableMessage(
                f"A {self.content_type[:60]} message needs a text encoding, "
                f"not {self.content_encoding[:60]!r}."
            )
        self.checked = True
        return wire


def _make_header(
    content_type: str,
    content_encoding: str,
    byteorder: str,
    content_length: int,
    extensions: Mapping[str, Any] | None,
) -> Header:
    _check_fields(content_type, content_encoding, byteorder)
    if not extensions:
        return Header(content_type, content_encoding, byteorder, content_length, NO_EXTENSIONS)
    # Typed as objects, not str: compiled by mypyc, a str loop variable would
    # refuse a wrong key with its own words before this check could.
    names: Iterable[object] = extensions
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"extension keys must be strings, not {name!r}")
        if name in REQUIRED_KEYS:
            raise ValueError(f"{name!r} is a required key, set from the arguments, not an extension")
    # A read-only copy all the way down: the caller's dict may change later,
    # and the message must not.
    return Header(content_type, content_encoding, byteorder, content_length, freeze(extensions))


def _check_fields(content_type: object, content_encoding: object, byteorder: object) -> None:
    if not isinstance(content_type, str) or not content_type:
        raise ValueError(f"content_type must be a non-empty string, not {content_type!r}")
    if not isinstance(content_encoding, str) or not content_encoding:
        raise ValueError(f"content_encoding must be a non-empty string, not {content_encoding!r}")
    if byteorder not in BYTEORDERS:
        raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")


# Compiled by mypyc (a wheel built with a compiler), Message is a native class, whose fields
# the compiled decoder and engine reach directly; users may still subclass it.
@mypyc_attr(allow_interpreted_subclasses=True)
class Message:
    """One message of the protocol: a JSON header and ``content`` bytes.

    Build one with :meth:`from_json`, :meth:`from_text` or :meth:`from_bytes`
    (or the constructor, for full control); they fill the four required
    header keys. Any other header keys are *extensions*, kept and passed on.
    Messages are immutable and compare equal when header and content match.
    """

    __slots__ = ("_content", "_header")

    _header: Header
    # bytes, or the bytearray a large content was read into in place
    # (Decoder.direct_buffer): it is never written again once it is a
    # message's, and becomes bytes the first time ``content`` is asked for,
    # so a message passed on unread (an echo, a proxy) costs no copy.
    _content: bytes | bytearray

    def __init__(
        self,
        content: bytes | bytearray | memoryview,
        content_type: str,
        content_encoding: str,
        *,
        byteorder: str = sys.byteorder,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        if type(content) is not bytes:
            content = bytes(content)
        self._content = content
        self._header = _make_header(content_type, content_encoding, byteorder, len(content), extensions)

    # -- constructors ---------------------------------------------------------

    @classmethod
    def from_json(
        cls,
        obj: Any,
        *,
        content_type: str = "text/json",
        encoding: str = "utf-8",
        extensions: Mapping[str, Any] | None = None,
    ) -> Message:
        """A ``text/json`` message holding ``obj`` encoded as JSON.

        Raises ``TypeError`` for what JSON cannot hold (and for integers
        beyond 64 bits, which orjson refuses).
        """
        data = orjson.dumps(obj)
        if encoding not in _UTF8_NAMES:
            data = data.decode("utf-8").encode(encoding)
        return cls(data, content_type, encoding, extensions=extensions)

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        content_type: str = "text/plain",
        encoding: str = "utf-8",
        extensions: Mapping[str, Any] | None = None,
    ) -> Message:
        """A text message: ``text`` encoded with ``encoding`` (a text codec)."""
        return cls(text.encode(encoding), content_type, encoding, extensions=extensions)

    @classmethod
    def from_bytes(
        cls,
        data: bytes | bytearray | memoryview,
        *,
        content_type: str = "binary/octet-stream",
        extensions: Mapping[str, Any] | None = None,
    ) -> Message:
        """A binary message (content encoding ``binary``)."""
        if type(data) is not bytes:
            data = bytes(data)
        # The constructor's work, minus a call: this is the hot path of servers.
        # Compiled, object.__new__ refuses a native class (see NATIVE); that
        # branch runs only there (make test-compiled), never under mutmut.
        if NATIVE:
            return cls(data, content_type, "binary", extensions=extensions)  # pragma: no mutate
        message = object.__new__(cls)
        message._content = data
        message._header = _make_header(content_type, "binary", sys.byteorder, len(data), extensions)
        return message

    @classmethod
    def error_response(cls, code: str, message: str, details: Any = None) -> Message:
        """The spec's error response: ``status: error`` and ``{"error": {code,
        message}}``, with ``details`` beside them when not None.

        Details that JSON cannot hold (after :func:`msgspec.to_builtins`)
        raise ``TypeError``."""
        error: dict[str, Any] = {"code": code, "message": message}
        if details is not None:
            error["details"] = details
        try:
            return cls.from_json({"error": error}, extensions={STATUS_KEY: "error"})
        except TypeError:
            if details is None:
                raise
            # Typed objects (a msgspec Struct, a set): as JSON sees them.
            import msgspec  # noqa: PLC0415  (only for details orjson cannot write)

            error["details"] = msgspec.to_builtins(details)
            return cls.from_json({"error": error}, extensions={STATUS_KEY: "error"})

    @classmethod
    def for_error(cls, error: ProtocolError) -> Message:
        """The error response that reports ``error`` to the peer (its details
        left out when JSON cannot hold them: the code and message still go)."""
        try:
            return cls.error_response(error.code, error.message, error.details)
        except (TypeError, ValueError, OverflowError):
            return cls.error_response(error.code, error.message)

    # -- accessors ------------------------------------------------------------

    @property
    def content(self) -> bytes:
        """The content bytes."""
        content = self._content
        if type(content) is bytes:
            return content
        data = self._content = bytes(content)
        return data

    @property
    def content_type(self) -> str:
        """The ``content-type`` header value."""
        return self._header.content_type

    @property
    def content_encoding(self) -> str:
        """The ``content-encoding`` header value."""
        return self._header.content_encoding

    @property
    def byteorder(self) -> str:
        """The sender's byte order, ``"little"`` or ``"big"``."""
        return self._header.byteorder

    @property
    def content_length(self) -> int:
        """The number of content bytes."""
        return self._header.content_length

    @property
    def extensions(self) -> Mapping[str, Any]:
        """The header keys beyond the four required ones (read-only)."""
        return self._header.extensions

    @property
    def header(self) -> dict[str, Any]:
        """The whole header as a new dict: the required keys and the extensions."""
        return self._header.as_dict()

    def get(self, key: str, default: Any = None) -> Any:
        """The value of header ``key`` (required or extension), or ``default``."""
        if key in REQUIRED_KEYS:
            return self._header.as_dict()[key]
        return self._header.extensions.get(key, default)

    @property
    def is_text(self) -> bool:
        """True for ``text/...`` content types (JSON included)."""
        return is_text_type(self._header.content_type)

    @property
    def is_json(self) -> bool:
        """True for ``text/json`` (and its synonym ``application/json``)."""
        return self._header.content_type in JSON_TYPES

    @property
    def status(self) -> str | None:
        """The ``status`` extension (``"ok"``, ``"error"``) if present."""
        value = self._header.extensions.get(STATUS_KEY)
        return value if isinstance(value, str) else None

    @property
    def is_error(self) -> bool:
        """True for an error response (``status: error``)."""
        return self.status == "error"

    # -- content decoding -----------------------------------------------------

    def check_encoding(self) -> None:
        """Raise :class:`BadEncoding` if the content is text but its
        ``content-encoding`` is not a text codec (see :func:`text_codec`)."""
        header = self._header
        if (
            not header.checked
            and is_text_type(header.content_type)
            and text_codec(header.content_encoding) is None
        ):
            raise BadEncoding(f"{header.content_encoding[:60]!r} is not a text encoding.")

    def text(self) -> str:
        """The content decoded with its ``content-encoding``.

        Raises :class:`BadEncoding` when the encoding is not a text codec
        Python knows, :class:`BadContent` when the bytes do not decode.
        """
        encoding = self._header.content_encoding
        info = text_codec(encoding)
        if info is None:
            raise BadEncoding(f"{encoding[:60]!r} is not a text encoding.")
        try:
            # The codec's own name, never the peer's spelling (see text_codec).
            if info.name in _WARNING_CODECS:
                # unicode_escape warns about each invalid escape a peer sends.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return self._content.decode(info.name)
            return self._content.decode(info.name)
        except UnicodeError as exc:
            reason = getattr(exc, "reason", "undecodable bytes")
            raise BadContent(f"The content does not decode as {encoding[:60]}: {reason}.") from None

    def json(self) -> Any:
        """The content parsed as JSON (decoded with its encoding first).

        Raises :class:`BadEncoding` or :class:`BadContent` as :meth:`text`
        does, and :class:`BadContent` for invalid JSON, ``NaN``/``Infinity``
        or nesting deeper than the parser allows.
        """
        utf8 = self._header.content_encoding in _UTF8_NAMES
        data: bytes | bytearray | str = self._content if utf8 else self.text()
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadContent(f"The content is not valid JSON: {exc.msg}.") from None

    def error(self) -> ProtocolError | None:
        """For an error response, the exception its code names; else None."""
        if not self.is_error:
            return None
        try:
            body = self.json()["error"]
            code, text = body["code"], body["message"]
            details = body.get("details")
        except (ProtocolError, TypeError, KeyError, AttributeError):
            return ProtocolError("The error response did not say what went wrong.")
        return error_for_code(str(code), str(text), details)

    # -- wire -----------------------------------------------------------------

    def encode(self) -> bytes:
        """This message as bytes on the wire (same as :func:`framewire.encode`)."""
        return self._header.encoded() + self._content

    def wire_parts(self) -> tuple[bytes, bytes]:
        """The length-and-header bytes and the content, for scatter-gather sends."""
        return self._header.encoded(), self.content

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self._content == other._content and (
            self._header is other._header or self._header.as_dict() == other._header.as_dict()
        )

    def __hash__(self) -> int:
        return hash((self.content, self._header.content_type, self._header.content_length))

    def __repr__(self) -> str:
        preview = bytes(self._content[:40])
        more = "..." if len(self._content) > 40 else ""
        return f"<Message {self._header.content_type} {self.content_length} bytes {preview!r}{more}>"


class Decoded(Message):
    """A message the decoder read, in the compiled build: its header shared
    and checked already, its content as read.

    Compiled by mypyc, Message is a native class: ``object.__new__`` refuses
    to make one without running ``__init__``, as the pure-Python decoder
    does, and this native constructor is the fastest way left (faster than
    a ``__new__`` defined on Message, in the decoder's loop). In pure Python a
    call of this ``__init__`` would cost more than ``object.__new__`` and
    two stores, so the decoder does not use it there (message.NATIVE).
    """

    __slots__ = ()

    def __init__(self, header: Header, content: bytes | bytearray) -> None:
        # Compiled only (make test-compiled runs it; mutation testing runs pure Python).
        self._header = header  # pragma: no mutate
        self._content = content  # pragma: no mutate


def decoded(header: Header, content: bytes | bytearray) -> Message:
    """The message of a decoded ``header`` (validated, shared) and its
    ``content``: how a decoder makes its messages, with no check and no copy.
    (The decoder's per-message loop does the same inline, to save the call.)"""
    if NATIVE:  # pragma: no mutate  # (compiled only: make test-compiled runs it)
        return Decoded(header, content)  # pragma: no mutate
    message = _new_message(Message)
    message._header = header
    message._content = content
    return message


_new_message: Final = Message.__new__


def raise_first_error(responses: list[Message]) -> None:
    """Raise :class:`ErrorResponse` for the first error response among
    ``responses`` (all of them on the exception, in order); else nothing."""
    for response in responses:
        if response.is_error:
            error = response.error()
            assert error is not None
            raise ErrorResponse(error, responses=responses)
