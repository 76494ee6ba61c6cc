"""Regression tests for the third adversarial review (issue 37): each
finding over real sockets or processes where it was found, written for the
class of input behind it rather than the one reproduction."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest

from conftest import DRIVER, connect, read_messages, running
from framewire import Message, encode
from framewire.server.app import echo

pytestmark = pytest.mark.usefixtures("driver")


def _bin(content: bytes) -> Message:
    return Message(content, "binary/test", "binary")


# -- 2. nothing a handler raises ends the server ------------------------------------


class _Escape(BaseException):
    """A BaseException of the application's own."""


ESCAPES: list[type[BaseException]] = [SystemExit, KeyboardInterrupt, GeneratorExit, _Escape]


def _raising(kind: type[BaseException], how: str) -> Any:
    if how == "async":

        async def handler(request: Message) -> Message:
            if request.content == b"escape":
                await asyncio.sleep(0)
                raise kind()
            return echo(request)

        return handler

    def sync_handler(request: Message) -> Message:
        if request.content == b"escape":
            raise kind()
        return echo(request)

    return sync_handler


@pytest.mark.parametrize("how", ["inline", "threads", "async"])
@pytest.mark.parametrize("kind", ESCAPES, ids=lambda k: k.__name__)
def test_no_exception_a_handler_raises_stops_the_server(kind: type[BaseException], how: str) -> None:
    options: dict[str, Any] = {"threads": 2} if how == "threads" else {}
    with running(_raising(kind, how), **options) as server:
        for _ in range(2):  # the second time: the handlers' thread or loop still lives
            with connect(server.port) as sock:
                sock.sendall(encode(_bin(b"escape")) + encode(_bin(b"after")))
                first, second = read_messages(sock, 2)
            assert first.json()["error"]["code"] == "handler-error"
            assert kind.__name__ in first.json()["error"]["message"]
            assert second.content == b"after"
