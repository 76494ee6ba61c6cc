"""Applications: what a server does with each request.

A handler is any callable ``Message -> Message``; one with a second
parameter is also given a :class:`~framewire.server.peer.Context` (the peer's address,
TLS client certificate). :class:`App` routes the
guide's ``{"action": ..., "value": ...}`` JSON requests to functions (typed
with msgspec, wrapped by middleware, described by ``framewire-describe``) and
binary requests to one more; :func:`search_app` is the guide's demo and
:func:`echo` the load-testing application of the protocol (docs/protocol.md).
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeAlias, TypeVar, overload

import msgspec

from framewire.core import tracing
from framewire.core.decoder import parse_header
from framewire.core.errors import BadContent, Failure, HandlerError, ProtocolError, UnknownAction
from framewire.core.message import Message, decoded
from framewire.server.actions import ActionSpec
from framewire.server.hub import Hub
from framewire.server.peer import Context, Peer
from framewire.server.streams import Stream, as_stream

#: What a server calls for each request: a Message back, or an awaitable of
#: one (``async def`` handlers run on the server's event loop), or a stream (a
#: generator, an async generator, an iterator: its items answer). A handler
#: with a second parameter is called ``handler(request, context)``.
Reply: TypeAlias = "Message | Stream | Iterator[Any] | AsyncIterator[Any] | Awaitable[Message | Stream]"
Handler: TypeAlias = Callable[[Message], Reply] | Callable[[Message, Context], Reply]
#: An action function: the request's ``value`` in, the ``result`` out (or an
#: awaitable of it: ``async def`` actions).
Action: TypeAlias = Callable[[Any], Any] | Callable[[Any, Context], Any]
_F = TypeVar("_F", bound=Callable[..., Any])
#: A handler of binary requests: the request in, the response (or its bytes) out.
BinaryHandler: TypeAlias = Callable[[Message], Any]


def takes_peer(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has a second positional parameter (or ``*args``): it
    is then called with the :class:`Context` as well."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature
        return False
    positional = 0
    for parameter in parameters:
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            return True
        if parameter.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


#: A middleware: ``(context, call_next)``, where ``call_next()`` runs the
#: rest of the chain and the action and returns the result (an awaitable of
#: it for ``async def`` middleware, or when the action is ``async def``).
Middleware: TypeAlias = Callable[[Context, Callable[[], Any]], Any]

# Results that cannot be awaitable, spared the question.
_PLAIN = frozenset({str, int, float, bool, list, dict, type(None)})
# Without a peer (an App called directly, as a function): who the context names.
_NOBODY = Peer("-")
_MODULES = sys.modules


class App:
    """Route JSON requests by ``action`` and binary requests to one handler.

    >>> app = App()
    >>> @app.action("search")
    ... def search(value: str) -> str:
    ...     return f"found {value}"

    A JSON request ``{"action": "search", "value": "ring"}`` is answered with
    ``{"result": "found ring"}``; ``client.call("search", "ring")`` returns
    ``"found ring"``. An action takes the request's ``value`` first; a
    second parameter, ``def search(value, context)``, is given the
    :class:`~framewire.server.peer.Context` (the request, its extensions,
    the peer's address and TLS certificate). Actions may be ``async def``
    functions: the server awaits them on its event loop.

    **Types.** Annotate the value (a ``msgspec.Struct``, a dataclass, a
    ``TypedDict``, ``int``, ``list[str]``, ``str | None``, ...) and it is
    checked and converted before the action runs: a value that does not fit
    is answered ``invalid-value`` (``$.x: expected int, got str``, with the
    same as data in the error's details), and the action never sees it. An
    action may return typed objects (Structs, dataclasses, datetimes): they
    are sent as JSON, or a :class:`Message` to answer with it as it is.
    ``describe`` lists each action with its doc and the JSON Schemas of its
    value and result (:meth:`describe`).

    **Errors.** Raise :class:`~framewire.core.errors.Failure` to fail with a
    code of your own, ``raise Failure("not-found", "There is no key 'a'.",
    details={"key": "a"})``, and declare the codes an action may raise,
    ``@app.action("get", errors=["not-found"])``: describe lists them and
    metrics count them by name. An unknown action is answered with the
    ``unknown-action`` error (the guide's demo, ``App(guide_unknown_action=True)``,
    answers it as a success, ``{"result": "Error: invalid action 'A'."}``).

    **Middleware.** :meth:`middleware` wraps every action call.

    **Publish and subscribe.** ``app.hub`` (:class:`~framewire.server.hub.Hub`)
    pushes events to clients: ``app.hub.publish("chat", text)`` from
    anywhere, and an action that returns ``app.hub.subscribe("chat")`` (or
    iterates it in an ``async def`` generator) streams them to its client.
    ``App(hub=RedisHub("redis://..."))`` (or ``framewire serve --hub``)
    shares them across workers and hosts.

    Text that is not JSON (``text/plain``) is answered with ``bad-content``;
    ``App(guide_text_as_binary=True)`` hands it to the binary handler
    instead, as the guide's server does with every content type but
    ``text/json``.
    """

    def __init__(
        self,
        *,
        guide_unknown_action: bool = False,
        guide_text_as_binary: bool = False,
        hub: Hub | None = None,
    ) -> None:
        #: Publish and subscribe (see the class's text).
        self.hub = hub if hub is not None else Hub()
        self._actions: dict[str, ActionSpec] = {}
        self._middleware: list[Middleware] = []
        # Each action's call through the middleware, made at its first call.
        self._chains: dict[str, Callable[[Context], Any]] = {}
        #: Answer an unknown action the guide's demo way (a success whose
        #: result says so) instead of the ``unknown-action`` error.
        self.guide_unknown_action = guide_unknown_action
        #: Give text that is not JSON to the binary handler (the guide's
        #: server's way) instead of answering it ``bad-content``.
        self.guide_text_as_binary = guide_text_as_binary
        self._binary: BinaryHandler | None = None
        #: Content type of responses built from the bytes a binary handler returns.
        self.binary_content_type = "binary/custom-server-binary-type"

    @overload
    def action(self, name: _F, *, errors: Iterable[str] = ()) -> _F: ...

    @overload
    def action(self, name: str | None = None, *, errors: Iterable[str] = ()) -> Callable[[_F], _F]: ...

    def action(self, name: Any = None, *, errors: Iterable[str] = ()) -> Any:
        """Decorator: answer JSON requests whose ``action`` is ``name`` (the
        function's name when not given: ``@app.action`` alone). ``errors``:
        the codes of the :class:`Failure` it may raise.

        Raises ``TypeError`` at once, naming the function, for one that
        cannot take a value, or requires parameters beyond the value and the
        context, or whose types msgspec cannot check."""
        codes = tuple(errors)
        for code in codes:
            Failure(code, "")  # raises ValueError for a code that is not one

        def register(fn: _F) -> _F:
            action_name = name if isinstance(name, str) else getattr(fn, "__name__", None)
            if not isinstance(action_name, str) or not action_name:
                raise TypeError(f"an action needs a name: @app.action('name') for {fn!r}")
            if not callable(fn):
                raise TypeError(f"action {action_name!r}: {fn!r} is not callable")
            self._actions[action_name] = ActionSpec(action_name, fn, codes)
            self._chains.pop(action_name, None)
            return fn

        if callable(name):  # @app.action without parentheses
            return register(name)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"an action's name is a string, not {name!r}")
        return register

    def middleware(self, fn: Middleware) -> Middleware:
        """Decorator: wrap every action call in ``fn(context, call_next)``.

        Middleware run in registration order, the first outermost. One sees
        ``context.action``, ``context.value`` (as it came), the peer
        (``context.address``, ``context.certificate``) and the request's
        ``context.extensions``; it may refuse the call by raising
        :class:`Failure` before calling ``call_next()``, and sees the result
        (or the exception) and can time it. ``call_next()`` returns the
        result; with ``async def`` middleware it is awaited
        (``await call_next()``), and it must be for an ``async def`` action
        to be timed: a plain ``def`` middleware gets, for an ``async def``
        action, the awaitable to return as it is.

        >>> @app.middleware
        ... def require_token(context, call_next):
        ...     if context.extensions.get("token") != "s3cret":
        ...         raise Failure("unauthorized", "This service needs a token.")
        ...     return call_next()
        """
        if not callable(fn):
            raise TypeError(f"a middleware is a function (context, call_next), not {fn!r}")
        self._middleware.append(fn)
        self._chains.clear()
        return fn

    def action_names(self) -> list[str]:
        """The actions registered (metrics label requests with them)."""
        return list(self._actions)

    def error_codes(self) -> list[str]:
        """The error codes the actions declare (metrics label errors with them)."""
        return sorted({code for spec in self._actions.values() for code in spec.errors})

    def describe(self) -> dict[str, Any]:
        """The application as ``framewire-describe`` tells it: every action
        with its doc, and the JSON Schemas of its value and result (``{}``:
        any JSON)."""
        from framewire import __version__  # noqa: PLC0415

        return {"framewire": __version__, "actions": [spec.described() for spec in self._actions.values()]}

    def binary(self, fn: BinaryHandler) -> BinaryHandler:
        """Decorator: answer requests whose content is not text (nor JSON,
        with ``guide_text_as_binary``)."""
        self._binary = fn
        return fn

    def __call__(
        self, request: Message, context: Context | None = None
    ) -> Message | Stream | Awaitable[Message | Stream]:
        if request.is_json:
            body = request.json()
            if not isinstance(body, dict) or "action" not in body:
                raise BadContent('The request must be a JSON object with an "action" key.')
            action = body["action"]
            spec = self._actions.get(action) if isinstance(action, str) else None
            if spec is None:
                if self.guide_unknown_action:
                    return Message.from_json({"result": f"Error: invalid action {action!r}."})
                known = ", ".join(sorted(self._actions)) or "none"
                raise UnknownAction(f"There is no action {action!r} here (the actions: {known}).")
            value = body.get("value")
            if self._middleware or "opentelemetry.trace" in _MODULES:
                return self._through(spec, value, request, context)
            # The plain way: no middleware, no tracing.
            if spec.convert is not None:
                value = spec.convert(value)
            result = spec.fn(value, context) if spec.with_context else spec.fn(value)
            # (A plain JSON value is not awaitable: asked of the rest only.)
            if result.__class__ not in _PLAIN and inspect.isawaitable(result):
                return self._later(result, self._json_answer)
            return self._json_answer(result)
        if self._binary is None or (request.is_text and not self.guide_text_as_binary):
            kinds = "text/json" + (" or binary" if self._binary is not None else "")
            raise BadContent(f"This application takes {kinds} requests, not {request.content_type}.")
        answer = self._binary(request)
        if inspect.isawaitable(answer):
            return self._later(answer, self._binary_answer)
        return self._binary_answer(answer)

    def _through(
        self, spec: ActionSpec, value: Any, request: Message, context: Context | None
    ) -> Message | Stream | Awaitable[Message | Stream]:
        # Through the middleware (and a span, when tracing is on).
        if context is None:
            context = Context(request, _NOBODY)
        context = Context(request, context.peer, context.deadline, context._cancel, spec.name, value)
        chain = self._chains.get(spec.name)
        if chain is None:
            chain = self._chains[spec.name] = self._chain(spec)
        found = tracing.tracer()
        if found is None:
            result = chain(context)
            if inspect.isawaitable(result):
                return self._later(result, self._json_answer)
            return self._json_answer(result)
        span = tracing.server_span(found, spec.name, request.extensions, context.address)
        from opentelemetry.trace import use_span  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415  (imported by the application already)

        with use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
            try:
                result = chain(context)
                if inspect.isawaitable(result):
                    return self._later(_traced(result, span), self._json_answer)
                answer = self._json_answer(result)
            except BaseException as exc:
                tracing.ended(span, _code_of(exc))
                raise
        tracing.ended(span, None)
        return answer

    def _chain(self, spec: ActionSpec) -> Callable[[Context], Any]:
        convert, fn, with_context = spec.convert, spec.fn, spec.with_context

        def invoke(context: Context) -> Any:
            value = context.value if convert is None else convert(context.value)
            return fn(value, context) if with_context else fn(value)

        chain: Callable[[Context], Any] = invoke
        for middleware in reversed(self._middleware):
            chain = _layer(middleware, chain)
        return chain

    @staticmethod
    def _json_answer(result: Any) -> Message | Stream:
        if result.__class__ in _PLAIN:
            return Message.from_json({"result": result})
        if isinstance(result, Message | Stream):
            return result
        if isinstance(result, Iterator | AsyncIterator):
            return as_stream(result)  # a generator, or an iterator returned: its items stream
        try:
            return Message.from_json({"result": result})
        except TypeError:
            # Typed objects orjson does not know (a msgspec Struct): as JSON
            # sees them; what JSON cannot hold at all raises again.
            return Message.from_json({"result": msgspec.to_builtins(result)})

    def _binary_answer(self, answer: Any) -> Message:
        if isinstance(answer, Message):
            return answer
        return Message.from_bytes(answer, content_type=self.binary_content_type)

    @staticmethod
    async def _later(
        awaitable: Awaitable[Any], finish: Callable[[Any], Message | Stream]
    ) -> Message | Stream:
        # An async action: the server runs this on its event loop.
        return finish(await awaitable)


def _layer(middleware: Middleware, inner: Callable[[Context], Any]) -> Callable[[Context], Any]:
    # One middleware around the rest of the chain.
    if inspect.iscoroutinefunction(middleware):

        async def layer_async(context: Context) -> Any:
            async def call_next() -> Any:
                result = inner(context)
                if inspect.isawaitable(result):
                    result = await result
                return result

            return await middleware(context, call_next)

        return layer_async

    def layer(context: Context) -> Any:
        return middleware(context, lambda: inner(context))

    return layer


def _code_of(exc: BaseException) -> str:
    # The code the client gets for what a handler raised (answers.py decides).
    if isinstance(exc, ProtocolError) and not exc.framing:
        return exc.code
    return HandlerError.code


async def _traced(awaitable: Awaitable[Any], span: Any) -> Any:
    # An async action's span: current while it runs, ended with its outcome.
    from opentelemetry.trace import use_span  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    with use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        try:
            result = await awaitable
        except BaseException as exc:
            tracing.ended(span, _code_of(exc))
            raise
    tracing.ended(span, None)
    return result


#: The guide's demo table: each answer ends in an emoji.
SEARCH_TABLE = {
    "morpheus": "Follow the white rabbit. \N{RABBIT FACE}",
    "ring": "In the caves beneath the Misty Mountains. \N{RING}",
    "\N{DOG FACE}": "\N{PAW PRINTS} Playing ball! \N{VOLLEYBALL}",
}


def guide_message(content: bytes, content_type: str, content_encoding: str) -> Message:
    """A message whose header is the bytes the guide's programs write: its
    keys in their order, ``json.dumps`` spacing (``", "``, ``": "``), not
    framewire's compact form. Checked once here, so the server sends those
    bytes as they are."""
    header = {
        "byteorder": sys.byteorder,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "content-length": len(content),
    }
    message = decoded(parse_header(json.dumps(header, ensure_ascii=False).encode("utf-8")), content)
    message._header.sendable()
    return message


class GuideApp(App):
    """The guide's demo server's application, to the byte (docs/protocol.md,
    "The guide's demo application"): a ``text/json`` request is an action
    (``search`` looks its value up in :data:`SEARCH_TABLE`; any other, or
    none, is answered ``Error: invalid action '...'.`` as a success), every
    other content type gets the binary answer; each answer's header and
    content are the bytes the guide's ``app-server.py`` writes. Where the
    guide's server fails (a request that is not a JSON object, content that
    is not JSON) this one answers ``bad-content`` and stays up."""

    def __call__(self, request: Message, context: Context | None = None) -> Message:
        if request.content_type != "text/json":  # (the guide's test: this type alone is JSON)
            return guide_message(
                b"First 10 bytes of request: " + bytes(request.content[:10]),
                "binary/custom-server-binary-type",
                "binary",
            )
        body = request.json()
        if not isinstance(body, dict):
            raise BadContent("The request must be a JSON object (the guide's server fails on any other).")
        action = body.get("action")
        spec = self._actions.get(action) if isinstance(action, str) else None
        if spec is None:
            result: Any = f"Error: invalid action '{action}'."
        else:
            result = spec.fn(body.get("value"))
        content = json.dumps({"result": result}, ensure_ascii=False).encode("utf-8")
        return guide_message(content, "text/json", "utf-8")


def search_app() -> App:
    """The guide's demo application (docs/protocol.md, "The guide's demo application")."""
    app = GuideApp()

    @app.action("search")
    def search(value: Any) -> str:
        """Look a value up in the guide's table: "morpheus", "ring" or "\N{DOG FACE}"."""
        try:
            found = SEARCH_TABLE.get(value)
        except TypeError:  # a list or an object: the guide's server fails here
            found = None
        return found or f"No match for '{value}'."

    return app


def echo(request: Message) -> Message:
    """The echo application: the request's content, type and encoding, back.

    A text request whose encoding is not a text codec gets ``bad-encoding``:
    echoed, it would not be a valid message.
    """
    header = request._header
    if header.checked and header.plain:
        # The usual case, in two attribute reads: a request of this shape was
        # answered before, and messages are immutable, so this one is already
        # exactly the answer. (Two reads instead of the byte order, the
        # extensions and sys.byteorder: the pipelined row notices.)
        return request
    request.check_encoding()
    if header.plain:
        return request
    return Message(request.content, request.content_type, request.content_encoding)
