"""One registered action of an :class:`~framewire.server.app.App`: how it is
called, the type of its value and result, and their JSON Schemas.

An action's first parameter takes the request's ``value``; a second one, if
any, the :class:`~framewire.server.peer.Context`. Annotating the value
(a ``msgspec.Struct``, a dataclass, a ``TypedDict``, ``int``,
``list[str]``, ``str | None``, ...) makes the action typed: the value is
converted with msgspec before the action runs, and one that does not fit
is answered ``invalid-value``, saying where and what. The return
annotation, if any, is the result's type (for describe).
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, Final

import msgspec

from framewire.core.errors import InvalidValue
from framewire.server.hub import Subscription

__all__ = ["UNTYPED", "ActionSpec"]


# Return annotations of an action that streams: its items' type is the first argument.
class Published(msgspec.Struct):
    """An event: the topic it was published on, and the value."""

    topic: str
    value: Any


_ITERATORS = frozenset(
    {
        collections.abc.Iterator,
        collections.abc.Iterable,
        collections.abc.Generator,
        collections.abc.AsyncIterator,
        collections.abc.AsyncIterable,
        collections.abc.AsyncGenerator,
    }
)
# Types a JSON value may already have exactly (str from a JSON string, ...).
_SCALARS = frozenset({str, int, float, bool})
#: The schema of a value or result of no declared type: anything.
UNTYPED: Final[dict[str, Any]] = {}

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
# msgspec's messages: "Expected `int`, got `str` - at `$.x`".
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_EXPECTED = re.compile(r"^Expected `(?P<expected>[^`]*)`, got `(?P<got>[^`]*)`$")


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _signature(fn: Callable[..., Any], name: str) -> tuple[bool, inspect.Parameter | None]:
    """Whether ``fn`` takes the context, and its value parameter; raises
    ``TypeError`` naming ``fn`` when it cannot be called with a value (and
    a context), or needs more."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False, None  # a builtin with no signature: called with the value alone
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
    where = f"action {name!r}: {_name(fn)}"
    if not positional and not variadic:
        raise TypeError(
            f"{where} takes no parameter; an action takes the request's value (def {name}(value): ...)"
        )
    required = [p for p in positional[2:] if p.default is inspect.Parameter.empty]
    required += [p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is p.empty]
    if required:
        names = ", ".join(p.name for p in required)
        raise TypeError(
            f"{where} requires {names} beyond the value and the context; give them defaults "
            "(an action is called with the value, and the context if it takes a second parameter)"
        )
    with_context = variadic or len(positional) >= 2
    return with_context, positional[0] if positional else None


def _hints(fn: Callable[..., Any], where: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception as exc:  # a name in an annotation that does not resolve
        raise TypeError(f"{where}: its annotations do not resolve: {exc}") from None


def _schema(kind: Any, where: str, what: str) -> dict[str, Any]:
    if kind is None:
        return dict(UNTYPED)
    try:
        return msgspec.json.schema(kind)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where}: its {what} type {kind!r} is not one msgspec can check: {exc}") from None


class ActionSpec:
    """An action, as registered (see the module's text)."""

    __slots__ = (
        "convert",
        "doc",
        "errors",
        "fn",
        "is_async",
        "name",
        "result_schema",
        "streams",
        "value_schema",
        "value_type",
        "with_context",
    )

    def __init__(self, name: str, fn: Callable[..., Any], errors: tuple[str, ...] = ()) -> None:
        where = f"action {name!r}: {_name(fn)}"
        self.name = name
        self.fn = fn
        self.with_context, parameter = _signature(fn, name)
        hints = _hints(fn, where) if inspect.isfunction(fn) or inspect.ismethod(fn) else {}
        value_type = hints.get(parameter.name) if parameter is not None else None
        result_type = hints.get("return")
        if value_type is Any:
            value_type = None
        #: It streams (a generator, or returns an iterator): describe says so,
        #: and ``result`` is the schema of each item.
        self.streams = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        if typing.get_origin(result_type) in _ITERATORS:
            self.streams = True
            args = typing.get_args(result_type)
            result_type = args[0] if args else None
        if result_type is Subscription:
            # A hub's subscription: a stream of events ({"topic", "value"}).
            self.streams = True
            result_type = Published
        if result_type is Any:
            result_type = None
        #: The declared type of the value, or None: the value as it came.
        self.value_type = value_type
        #: Turns the JSON value into ``value_type`` (raises InvalidValue), or None.
        self.convert: Callable[[Any], Any] | None = None
        if value_type is not None:
            self.convert = self._converter(value_type)
        self.value_schema = _schema(value_type, where, "value")
        self.result_schema = _schema(result_type, where, "result")
        #: The first paragraph of the function's docstring.
        self.doc = (inspect.getdoc(fn) or "").split("\n\n", 1)[0].strip()
        #: The error codes it declares (metrics label them; describe lists them).
        self.errors = errors
        self.is_async = inspect.iscoroutinefunction(fn)

    @staticmethod
    def _converter(kind: Any) -> Callable[[Any], Any]:
        convert = msgspec.convert
        if kind in _SCALARS:
            # A JSON scalar of exactly the declared type is already converted
            # (bool is not an int here: its type is bool): msgspec only when not.
            def scalar(value: Any) -> Any:
                if value.__class__ is kind:
                    return value
                try:
                    return convert(value, kind, str_keys=True)
                except msgspec.ValidationError as exc:
                    raise invalid(str(exc)) from None

            return scalar

        def converted(value: Any) -> Any:
            # str_keys: JSON object keys are strings, so dict[int, X] converts them.
            try:
                return convert(value, kind, str_keys=True)
            except msgspec.ValidationError as exc:
                raise invalid(str(exc)) from None

        return converted

    def described(self) -> dict[str, Any]:
        """This action as describe lists it."""
        entry: dict[str, Any] = {
            "name": self.name,
            "doc": self.doc,
            "value": self.value_schema,
            "result": self.result_schema,
        }
        if self.streams:
            entry["stream"] = True
        if self.errors:
            entry["errors"] = list(self.errors)
        return entry


def invalid(text: str) -> InvalidValue:
    """The ``invalid-value`` error for msgspec's message ``text``: a message
    that says where first (``$.x: expected int, got str``), and details."""
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    path = match["path"] or "$"
    reason = match["reason"]
    details: dict[str, Any] = {"path": path, "reason": reason}
    expected = _EXPECTED.match(reason)
    if expected is not None:
        details["expected"], details["got"] = expected["expected"], expected["got"]
        reason = f"expected {expected['expected']}, got {expected['got']}"
    else:
        reason = reason[:1].lower() + reason[1:]
    return InvalidValue(f"{path}: {reason}", details=details)
