"""The asyncio pool: connections to one or more servers shared by tasks.

    pool = AioPool(["10.0.0.1:65432", "10.0.0.2:65432"])
    async with pool:
        answer = await pool.request(Message.from_json({"action": "get", "value": "a"}))

The same choice and health rules as the blocking
:class:`~framewire.client.pool.Pool` (:mod:`framewire.client.balance`).
An asyncio connection carries many calls at once (pipelined), so each
member holds up to ``size`` connections, and a call takes the one with the
fewest calls under way, opening another while all are busy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any

from framewire.client.aio import AioClient
from framewire.client.balance import Member, PoolBase
from framewire.client.calls import AioCalls
from framewire.client.options import DEFAULT, Timeout
from framewire.client.retry import lost_in_exchange
from framewire.core.errors import ErrorResponse, ProtocolError
from framewire.core.message import Message

__all__ = ["AioPool"]

Exchange = Callable[[AioClient, "float | None"], Awaitable[list[Message]]]


class AioPool(PoolBase, AioCalls):
    """Connections to ``addresses`` for asyncio tasks; the parameters are the
    blocking :class:`~framewire.client.pool.Pool`'s, ``size`` being the
    connections per member (each carries many calls at once)."""

    def __init__(self, addresses: Iterable[str | tuple[str, int]], *, size: int = 2, **settings: Any) -> None:
        super().__init__(addresses, size=size, **settings)
        self._clients: dict[int, list[AioClient]] = {id(m): [] for m in self.balancer.members}

    async def request(
        self, message: Message, *, timeout: Timeout = DEFAULT, idempotent: bool = False
    ) -> Message:
        """Send ``message`` to a member, return its answer (as :meth:`AioClient.request`)."""

        async def one(client: AioClient, left: float | None) -> list[Message]:
            return [await client.request(message, timeout=left)]

        (answer,) = await self._call(one, timeout, idempotent)
        return answer

    async def request_many(
        self, messages: Iterable[Message], *, timeout: Timeout = DEFAULT, idempotent: bool = False
    ) -> list[Message]:
        """Send ``messages`` pipelined on one connection, return the answers in order."""
        batch = list(messages)

        async def many(client: AioClient, left: float | None) -> list[Message]:
            return await client.request_many(batch, timeout=left)

        return await self._call(many, timeout, idempotent)

    async def _call(self, exchange: Exchange, timeout: Timeout, idempotent: bool) -> list[Message]:
        attempts = self.attempts(timeout)
        balancer = self.balancer
        while True:
            if self._closed:
                raise RuntimeError("the pool is closed")
            choice = balancer.pick(time.monotonic(), attempts.tried)  # one thread: no lock
            if choice is None:
                await asyncio.sleep(attempts.next_round())
                continue
            member, probe = choice
            member.in_flight += 1
            try:
                client = self._client_for(member)
                left = attempts.left()
                try:
                    await client._open(attempts.deadline)
                    if probe:
                        await client.ping(timeout=self.probe_time(left))
                except (OSError, ProtocolError) as exc:
                    balancer.failed(member, time.monotonic())  # nothing was sent: try another
                    attempts.failed(balancer.index(member), exc)
                    continue
                try:
                    answers = await exchange(client, left)
                except ErrorResponse:
                    balancer.succeeded(member)
                    raise
                except TimeoutError:
                    balancer.failed(member, time.monotonic())  # an outlier: counted, as a refusal is
                    raise
                except Exception as exc:
                    if not lost_in_exchange(exc):
                        raise
                    balancer.failed(member, time.monotonic())
                    if not idempotent:
                        raise
                    attempts.failed(balancer.index(member), exc)
                    continue
                balancer.succeeded(member)
                return answers
            finally:
                member.in_flight -= 1

    def _client_for(self, member: Member) -> AioClient:
        clients = self._clients[id(member)]
        # Lost connections go; those not opened yet (or being opened by
        # another task) stay.
        clients[:] = [c for c in clients if c.connected or c._transport is None]
        if clients:
            best = min(clients, key=lambda client: client.in_flight)
            if best.in_flight == 0 or len(clients) >= self.size:
                return best
        client = AioClient(member.host, member.port, options=self._client_options(member))
        clients.append(client)  # opened by the caller
        return client

    async def close(self) -> None:
        """Close every connection; later calls raise."""
        self._closed = True
        for clients in self._clients.values():
            for client in clients:
                await client.close()
            clients.clear()

    async def __aenter__(self) -> AioPool:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
