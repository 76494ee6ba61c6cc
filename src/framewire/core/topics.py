"""Topics and the events published on them (publish and subscribe).

A topic is a string of 1 to :data:`MAX_TOPIC` characters. A subscription
names topics; one that ends in ``*`` takes every topic that begins with what
comes before it (``"sensors.*"``, and ``"*"`` for all). A published topic
may not contain ``*``.

An :class:`Event` is what a subscriber gets: the topic and the value, and
how many events it missed just before this one (``dropped``). Its JSON,
``{"topic": T, "value": V}``, is written once per publish and shared by
every subscriber: a publish to a thousand subscribers encodes its value
once.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from framewire.core.probe import DROPPED_KEY

__all__ = ["DROPPED_KEY", "MAX_TOPIC", "MAX_TOPICS", "Event", "check_pattern", "check_topic", "topic_list"]

#: The longest topic, in characters.
MAX_TOPIC: Final = 256
#: Topics (and patterns) one subscription may name.
MAX_TOPICS: Final = 64


def check_topic(topic: object) -> str:
    """``topic`` if it can be published to; ``ValueError`` with a sentence
    if not."""
    text = _text(topic)
    if "*" in text:
        raise ValueError(f"a published topic may not contain '*' (only a subscription's pattern): {text!r}")
    return text


def check_pattern(pattern: object) -> str:
    """``pattern`` if it can be subscribed to (a topic, or a prefix and a
    trailing ``*``); ``ValueError`` with a sentence if not."""
    text = _text(pattern)
    if "*" in text[:-1]:
        raise ValueError(f"'*' may only end a topic pattern (a prefix): {text!r}")
    return text


def _text(topic: object) -> str:
    # What every topic and pattern is: a string of 1 to MAX_TOPIC characters.
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"a topic is a non-empty string, not {topic!r}")
    if len(topic) > MAX_TOPIC:
        raise ValueError(f"a topic has at most {MAX_TOPIC} characters, not {len(topic)}")
    return topic


def topic_list(topics: tuple[Any, ...]) -> list[str]:
    """``subscribe(*topics)``'s arguments as one list: each a topic or a
    list of them (``ValueError`` for anything else, or for none). The
    topics themselves are checked where they are subscribed to."""
    names: list[Any] = []
    for given in topics:
        if isinstance(given, str):
            names.append(given)
        elif isinstance(given, list | tuple):
            names.extend(given)
        else:
            raise ValueError(f"a topic is a non-empty string, not {given!r}")
    if not names:
        raise ValueError("a subscription names at least one topic")
    return names


class Event:
    """One published value, as a subscriber gets it."""

    __slots__ = ("dropped", "json", "topic", "value")

    def __init__(
        self, topic: str, value: Any = None, dropped: int | bool = 0, json: bytes | None = None
    ) -> None:
        #: The topic it was published on.
        self.topic = topic
        #: The published value.
        self.value = value
        #: Events this subscriber missed just before this one (its queue was
        #: full, see ``--subscriber-queue``); ``True`` when some may have
        #: been missed and how many is not known (the link to Redis was lost).
        self.dropped = dropped
        #: ``{"topic": T, "value": V}`` as JSON (made once, shared).
        self.json = json if json is not None else orjson.dumps({"topic": topic, "value": value})

    @classmethod
    def from_json(cls, data: bytes) -> Event:
        """The event whose JSON is ``data`` (``ValueError`` if it is not one)."""
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"an event is JSON: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("topic"), str) or "value" not in body:
            raise ValueError('an event is {"topic": T, "value": V}')
        return cls(body["topic"], body["value"], json=data)

    def gap(self, dropped: int | bool) -> Event:
        """This event, marked as the first after ``dropped`` missed ones."""
        return Event(self.topic, self.value, dropped, self.json)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (self.topic, self.value, self.dropped) == (other.topic, other.value, other.dropped)

    __hash__ = None  # type: ignore[assignment]  # (its value may be mutable)

    def __repr__(self) -> str:
        gap = f", dropped={self.dropped!r}" if self.dropped else ""
        return f"Event({self.topic!r}, {self.value!r}{gap})"
