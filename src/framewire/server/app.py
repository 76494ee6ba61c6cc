"""Applications: what a server does with each request.

A handler is any callable ``Message -> Message``; one with a second
parameter is also given a :class:`~framewire.server.peer.Context` (the peer's address,
TLS client certificate). :class:`App` routes the
guide's ``{"action": ..., "value": ...}`` JSON requests to functions and
binary requests to one more; :func:`search_app` is the guide's demo and
:func:`echo` the load-testing application of the protocol (docs/protocol.md).
"""

from __future__ import annotations

import importlib
import inspect
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from framewire.core.errors import BadContent, UnknownAction
from framewire.core.message import Message
from framewire.server.peer import Context

#: What a server calls for each request: a Message back, or an awaitable of
#: one (``async def`` handlers run on the server's event loop). A handler
#: with a second parameter is called ``handler(request, context)``.
Reply: TypeAlias = "Message | Awaitable[Message]"
Handler: TypeAlias = Callable[[Message], Reply] | Callable[[Message, Context], Reply]
#: An action function: the request's ``value`` in, the ``result`` out (or an
#: awaitable of it: ``async def`` actions).
Action: TypeAlias = Callable[[Any], Any] | Callable[[Any, Context], Any]
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


class App:
    """Route JSON requests by ``action`` and binary requests to one handler.

    >>> app = App()
    >>> @app.action("search")
    ... def search(value):
    ...     return f"found {value}"

    A JSON request ``{"action": "search", "value": "ring"}`` is answered with
    ``{"result": "found ring"}``; an action function may also return a
    :class:`Message` to answer with it as it is. An action with a second
    parameter, ``def search(value, context)``, is also given the
    :class:`~framewire.server.peer.Context` (the request, its extensions,
    the peer's address and TLS certificate). Actions may be ``async def``
    functions: the server awaits them on its event loop, and the
    connection's other answers stay in order.

    An unknown action is answered with the ``unknown-action`` error (the
    guide's demo, ``App(guide_unknown_action=True)``, answers it as a
    success, ``{"result": "Error: invalid action 'A'."}``). To fail with a
    code of your own, raise :class:`~framewire.core.errors.Failure`:
    ``raise Failure("not-found", "There is no key 'a'.")``.

    Text that is not JSON (``text/plain``) is answered with ``bad-content``;
    ``App(guide_text_as_binary=True)`` hands it to the binary handler
    instead, as the guide's server does with every content type but
    ``text/json``.
    """

    def __init__(self, *, guide_unknown_action: bool = False, guide_text_as_binary: bool = False) -> None:
        self._actions: dict[str, Action] = {}
        #: Answer an unknown action the guide's demo way (a success whose
        #: result says so) instead of the ``unknown-action`` error.
        self.guide_unknown_action = guide_unknown_action
        #: Give text that is not JSON to the binary handler (the guide's
        #: server's way) instead of answering it ``bad-content``.
        self.guide_text_as_binary = guide_text_as_binary
        self._with_peer: set[str] = set()
        self._binary: BinaryHandler | None = None
        #: Content type of responses built from the bytes a binary handler returns.
        self.binary_content_type = "binary/custom-server-binary-type"

    def action(self, name: str) -> Callable[[Action], Action]:
        """Decorator: answer JSON requests whose ``action`` is ``name``."""

        def register(fn: Action) -> Action:
            self._actions[name] = fn
            if takes_peer(fn):
                self._with_peer.add(name)
            else:
                self._with_peer.discard(name)
            return fn

        return register

    def action_names(self) -> list[str]:
        """The actions registered (metrics label requests with them)."""
        return list(self._actions)

    def binary(self, fn: BinaryHandler) -> BinaryHandler:
        """Decorator: answer requests whose content is not text (nor JSON,
        with ``guide_text_as_binary``)."""
        self._binary = fn
        return fn

    def __call__(self, request: Message, context: Context | None = None) -> Message | Awaitable[Message]:
        if request.is_json:
            body = request.json()
            if not isinstance(body, dict) or "action" not in body:
                raise BadContent('The request must be a JSON object with an "action" key.')
            action = body["action"]
            fn = self._actions.get(action) if isinstance(action, str) else None
            if fn is None:
                if self.guide_unknown_action:
                    return Message.from_json({"result": f"Error: invalid action {action!r}."})
                known = ", ".join(sorted(self._actions)) or "none"
                raise UnknownAction(f"There is no action {action!r} here (the actions: {known}).")
            value = body.get("value")
            result = fn(value, context) if action in self._with_peer else fn(value)  # type: ignore[call-arg, arg-type]
            if inspect.isawaitable(result):
                return self._later(result, self._json_answer)
            return self._json_answer(result)
        if self._binary is None or (request.is_text and not self.guide_text_as_binary):
            kinds = "text/json" + (" or binary" if self._binary is not None else "")
            raise BadContent(f"This application takes {kinds} requests, not {request.content_type}.")
        answer = self._binary(request)
        if inspect.isawaitable(answer):
            return self._later(answer, self._binary_answer)
        return self._binary_answer(answer)

    @staticmethod
    def _json_answer(result: Any) -> Message:
        return result if isinstance(result, Message) else Message.from_json({"result": result})

    def _binary_answer(self, answer: Any) -> Message:
        if isinstance(answer, Message):
            return answer
        return Message.from_bytes(answer, content_type=self.binary_content_type)

    @staticmethod
    async def _later(awaitable: Awaitable[Any], finish: Callable[[Any], Message]) -> Message:
        # An async action: the server runs this on its event loop.
        return finish(await awaitable)


#: The guide's demo table: each answer ends in an emoji.
SEARCH_TABLE = {
    "morpheus": "Follow the white rabbit. \N{RABBIT FACE}",
    "ring": "In the caves beneath the Misty Mountains. \N{RING}",
    "\N{DOG FACE}": "\N{DOG FACE} Playing ball! \N{VOLLEYBALL}",
}


def search_app() -> App:
    """The guide's demo application (docs/protocol.md, "The guide's demo application")."""
    app = App(guide_unknown_action=True, guide_text_as_binary=True)

    @app.action("search")
    def search(value: Any) -> str:
        if isinstance(value, str) and value in SEARCH_TABLE:
            return SEARCH_TABLE[value]
        return f"No match for {value!r}."

    @app.binary
    def first_bytes(request: Message) -> bytes:
        return b"First 10 bytes of request: " + request.content[:10]

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


def load_handler(spec: str) -> Handler:
    """The handler named by ``search``, ``echo`` or ``MODULE:CALLABLE``.

    Raises ``ValueError`` with a sentence for a person when it cannot.
    """
    if spec == "search":
        return search_app()
    if spec == "echo":
        return echo
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--app takes search, echo or MODULE:CALLABLE, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} for --app: {exc}") from None
    except Exception as exc:  # the module itself failed: say where, in one line
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
        raise ValueError(
            f"importing module {module_name!r} for --app failed: {type(exc).__name__}: {exc}{where}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no {attr!r} for --app") from None
    if not callable(target):
        raise ValueError(f"{spec!r} is not callable; --app needs a function taking a Message")
    handler: Handler = target
    return handler
