"""``call()`` and ``describe()``: what every client and pool offers on top of
its ``request()``, written once here (a blocking and an awaited flavour).

``call(action, value)`` sends the guide's JSON action request,
``{"action": ACTION, "value": VALUE}``, and returns the answer's
``result``; an error response raises :class:`ErrorResponse` (with the
error's ``details``), whatever the client's ``check``. It works against
any server of the protocol that answers JSON actions: framewire's App, the
guide's own server. ``describe()`` asks the server what it offers
(``framewire-describe``). With OpenTelemetry set up (:mod:`framewire.core.tracing`),
each call is a CLIENT span whose ``traceparent`` goes with the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, overload

import msgspec

from framewire.client.options import DEFAULT, Timeout
from framewire.core.errors import ErrorResponse, ProtocolError
from framewire.core.message import Message
from framewire.core.probe import DESCRIBE_KEY, DROPPED_KEY, STREAM_KEY, is_described
from framewire.core.topics import Event, topic_list
from framewire.core.tracing import client_span, tracer

__all__ = [
    "AioCalls",
    "Calls",
    "describe_probe",
    "described",
    "event_of",
    "request_for",
    "result_of",
    "result_of_item",
    "stream_answer",
    "subscribe_request",
]

_T = TypeVar("_T")


def request_for(action: str, value: Any, extensions: Mapping[str, Any] | None) -> Message:
    """The JSON action request: ``{"action": action, "value": value}``
    (typed values, such as msgspec Structs and dataclasses, as JSON)."""
    if not isinstance(action, str):
        raise TypeError(f"an action is named by a string, not {action!r}")
    body = {"action": action, "value": value}
    try:
        return Message.from_json(body, extensions=extensions)
    except TypeError:
        body["value"] = msgspec.to_builtins(value)  # a Struct, a set, ...: as JSON sees them
        return Message.from_json(body, extensions=extensions)


def result_of(response: Message, result_type: Any = None) -> Any:
    """The ``result`` of an action's answer, converted to ``result_type``
    when given; raises :class:`ErrorResponse` for an error response and
    :class:`ProtocolError` for an answer that is not ``{"result": ...}``."""
    error = response.error()
    if error is not None:
        raise ErrorResponse(error, responses=[response])
    body = response.json() if response.is_json else None
    if not isinstance(body, dict) or "result" not in body:
        raise ProtocolError(
            f'The answer is not a JSON action result ({{"result": ...}}): {response.content_type}, '
            f"{response.content_length} bytes."
        )
    result = body["result"]
    if result_type is None:
        return result
    return result_of_item(result, result_type)


def result_of_item(result: Any, result_type: Any) -> Any:
    """``result`` converted to ``result_type`` (:class:`ProtocolError` when it does not fit)."""
    try:
        return msgspec.convert(result, result_type, str_keys=True)
    except msgspec.ValidationError as exc:
        raise ProtocolError(f"The result does not fit {result_type!r}: {exc}.") from None


def stream_answer(answer: Message, result_type: Any = None) -> tuple[list[Any], bool]:
    """What one answer to a stream request gives: its items, and whether the
    stream is over. An item (``framewire-stream: "item"``) gives one; the
    end gives none; one plain answer (a server or an action that does not
    stream) gives every item of its result and ends it; an error response
    raises :class:`ErrorResponse`."""
    extensions = answer._header.extensions
    position = extensions.get(STREAM_KEY) if extensions else None
    if position == "item":
        if result_type is Event:
            return [event_of(answer)], False
        return [result_of(answer, result_type)], False
    result = result_of(answer, None)
    if position == "end":
        return [], True
    items = result if isinstance(result, list) else [result]
    if result_type is not None:
        items = [result_of_item(item, result_type) for item in items]
    return items, True


def event_of(answer: Message) -> Event:
    """The :class:`Event` a subscription's item carries, with the gap its
    header marks (``framewire-dropped``)."""
    result = result_of(answer)
    if not isinstance(result, dict) or not isinstance(result.get("topic"), str):
        raise ProtocolError('A subscription\'s item is not an event ({"topic": T, "value": V}).')
    extensions = answer._header.extensions
    dropped = extensions.get(DROPPED_KEY, 0) if extensions else 0
    if not (dropped is True or (isinstance(dropped, int) and dropped >= 0)):
        dropped = 0
    return Event(result["topic"], result.get("value"), dropped)


def subscribe_request(topics: tuple[Any, ...], extensions: Mapping[str, Any] | None = None) -> Message:
    """The request of ``subscribe(*topics)`` (the broker's action)."""
    return request_for("subscribe", topic_list(topics), extensions)


def describe_probe() -> Message:
    """The ``framewire-describe`` probe."""
    return Message(b"null", "text/json", "utf-8", extensions={DESCRIBE_KEY: True})


def described(response: Message, where: str) -> dict[str, Any]:
    """The description in the answer to a describe probe; raises
    :class:`ProtocolError` when the server answered it as a request (it does
    not know the extension)."""
    if not is_described(response) or response.is_error:
        raise ProtocolError(f"{where} does not describe itself (it answered the probe as a request).")
    document = response.json()
    if not isinstance(document, dict) or not isinstance(document.get("actions"), list):
        raise ProtocolError(f"{where} answered describe with something else than a description.")
    return document


class Calls:
    """``call()`` and ``describe()`` of a blocking client or pool (see the
    module's text); the class has ``request()`` and ``where``."""

    @property
    def where(self) -> str:
        raise NotImplementedError

    def request(self, message: Message, *, timeout: Timeout = DEFAULT, idempotent: bool = False) -> Message:
        raise NotImplementedError

    @overload
    def call(
        self,
        action: str,
        value: Any = None,
        *,
        timeout: Timeout = DEFAULT,
        extensions: Mapping[str, Any] | None = None,
        idempotent: bool = False,
        result_type: None = None,
    ) -> Any: ...

    @overload
    def call(
        self,
        action: str,
        value: Any = None,
        *,
        timeout: Timeout = DEFAULT,
        extensions: Mapping[str, Any] | None = None,
        idempotent: bool = False,
        result_type: type[_T],
    ) -> _T: ...

    def call(
        self,
        action: str,
        value: Any = None,
        *,
        timeout: Timeout = DEFAULT,
        extensions: Mapping[str, Any] | None = None,
        idempotent: bool = False,
        result_type: Any = None,
    ) -> Any:
        """Call ``action`` with ``value``; return its result.

        ``extensions``: header extensions to send with the request (a token,
        say); ``result_type``: convert the result (a Struct, a dataclass,
        ``list[int]``); ``timeout`` and ``idempotent`` as for ``request``.
        An error response raises :class:`ErrorResponse` (its ``code``,
        ``message`` and ``details``)."""
        found = tracer()
        if found is None:  # (no span: the usual case, kept short)
            message = request_for(action, value, extensions)
            return result_of(self.request(message, timeout=timeout, idempotent=idempotent), result_type)
        with client_span(found, action, self.where, extensions) as carried:
            message = request_for(action, value, carried)
            return result_of(self.request(message, timeout=timeout, idempotent=idempotent), result_type)

    def call_many(
        self,
        calls: Iterable[tuple[str, Any]],
        *,
        timeout: Timeout = DEFAULT,
        extensions: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Call each ``(action, value)``, pipelined on one connection; return
        the results in order (an error response raises :class:`ErrorResponse`).
        With ``unordered=True`` the server answers each as soon as it is ready."""
        messages = [request_for(action, value, extensions) for action, value in calls]
        return [result_of(response) for response in self.request_many(messages, timeout=timeout)]

    def request_many(
        self, messages: Iterable[Message], *, timeout: Timeout = DEFAULT, idempotent: bool = False
    ) -> list[Message]:
        raise NotImplementedError

    def publish(self, topic: str, value: Any = None, *, timeout: Timeout = DEFAULT) -> None:
        """Publish ``value`` on ``topic`` through a broker (its ``publish``
        action, ``framewire serve --app pubsub``); its subscribers get it."""
        self.call("publish", {"topic": topic, "value": value}, timeout=timeout)

    def describe(self, *, timeout: Timeout = DEFAULT) -> dict[str, Any]:
        """What the server offers: ``{"framewire": VERSION, "actions":
        [{"name", "doc", "value", "result"}, ...]}`` (JSON Schemas; ``{}``:
        any value). :class:`ProtocolError` when the server does not know
        ``framewire-describe``."""
        try:
            response = self.request(describe_probe(), timeout=timeout, idempotent=True)
        except ErrorResponse as exc:
            raise ProtocolError(f"{self.where} does not describe itself (it answered {exc.code}).") from exc
        return described(response, self.where)


class AioCalls:
    """``call()`` and ``describe()`` of an asyncio client or pool, awaited."""

    @property
    def where(self) -> str:
        raise NotImplementedError

    async def request(
        self, message: Message, *, timeout: Timeout = DEFAULT, idempotent: bool = False
    ) -> Message:
        raise NotImplementedError

    async def call(
        self,
        action: str,
        value: Any = None,
        *,
        timeout: Timeout = DEFAULT,
        extensions: Mapping[str, Any] | None = None,
        idempotent: bool = False,
        result_type: Any = None,
    ) -> Any:
        """Call ``action`` with ``value``; return its result (as
        :meth:`Calls.call`, awaited)."""
        found = tracer()
        if found is None:
            message = request_for(action, value, extensions)
            return result_of(await self.request(message, timeout=timeout, idempotent=idempotent), result_type)
        with client_span(found, action, self.where, extensions) as carried:
            message = request_for(action, value, carried)
            response = await self.request(message, timeout=timeout, idempotent=idempotent)
            return result_of(response, result_type)

    async def call_many(
        self,
        calls: Iterable[tuple[str, Any]],
        *,
        timeout: Timeout = DEFAULT,
        extensions: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """Call each ``(action, value)`` at once; return the results in order
        (as :meth:`Calls.call_many`, awaited)."""
        messages = [request_for(action, value, extensions) for action, value in calls]
        return [result_of(response) for response in await self.request_many(messages, timeout=timeout)]

    async def request_many(
        self, messages: Iterable[Message], *, timeout: Timeout = DEFAULT, idempotent: bool = False
    ) -> list[Message]:
        raise NotImplementedError

    async def publish(self, topic: str, value: Any = None, *, timeout: Timeout = DEFAULT) -> None:
        """Publish ``value`` on ``topic`` through a broker (its ``publish`` action)."""
        await self.call("publish", {"topic": topic, "value": value}, timeout=timeout)

    async def describe(self, *, timeout: Timeout = DEFAULT) -> dict[str, Any]:
        """What the server offers (as :meth:`Calls.describe`, awaited)."""
        try:
            response = await self.request(describe_probe(), timeout=timeout, idempotent=True)
        except ErrorResponse as exc:
            raise ProtocolError(f"{self.where} does not describe itself (it answered {exc.code}).") from exc
        return described(response, self.where)
