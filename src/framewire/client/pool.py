"""A thread-safe pool of connections to one or more servers.

    with Pool(["10.0.0.1:65432", "10.0.0.2:65432", "db.internal:65432"]) as pool:
        answer = pool.request(Message.from_json({"action": "get", "value": "a"}))

Each request takes a connection to one member (round-robin, or the member
with the fewest requests under way), idle connections kept for the next
(checked before reuse, see :class:`~framewire.client.blocking.Client`).
A member that refuses connections is skipped at once for another (nothing
was sent); a connection lost under a request moves the request to another
member only when the call says it is ``idempotent``. Members failing in a
row (refusing, losing connections, or letting calls time out) are taken out
and probed back with a ping of at most ``probe_timeout`` seconds (see
:mod:`framewire.client.balance`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from framewire.client.balance import Member, PoolBase
from framewire.client.blocking import Client
from framewire.client.calls import Calls
from framewire.client.options import DEFAULT, Timeout
from framewire.client.retry import lost_in_exchange
from framewire.core.errors import ErrorResponse, ProtocolError
from framewire.core.message import Message

__all__ = ["Pool"]


class Pool(PoolBase, Calls):
    """Connections to ``addresses`` shared by threads (see the module's text).

    ``size``: idle connections kept per member (more may be open at once
    while many threads call; those beyond ``size`` are closed when done).
    ``strategy``: ``"round-robin"`` or ``"least-in-flight"``.
    ``max_failures``: failures in a row that take a member out;
    ``probe_after``: seconds before it is probed with a ping.
    Every option of :class:`~framewire.client.options.ClientOptions` is a
    keyword (or pass ``options=``), for the connections it opens; its
    ``timeout`` is each call's deadline, failovers and retries included, and
    its ``retry`` the back-off when every member has failed a call.
    """

    def __init__(self, addresses: Iterable[str | tuple[str, int]], *, size: int = 4, **settings: Any) -> None:
        super().__init__(addresses, size=size, **settings)
        self._lock = threading.Lock()
        self._idle: dict[int, collections.deque[Client]] = {
            id(member): collections.deque() for member in self.balancer.members
        }

    # -- calls ------------------------------------------------------------------

    def request(self, message: Message, *, timeout: Timeout = DEFAULT, idempotent: bool = False) -> Message:
        """Send ``message`` to a member, return its answer (as
        :meth:`Client.request`); ``timeout`` overrides the pool's."""
        (answer,) = self._call(lambda c, left: [c.request(message, timeout=left)], timeout, idempotent)
        return answer

    def request_many(
        self, messages: Iterable[Message], *, timeout: Timeout = DEFAULT, idempotent: bool = False
    ) -> list[Message]:
        """Send ``messages`` pipelined on one connection, return the answers in order."""
        batch = list(messages)
        return self._call(lambda c, left: c.request_many(batch, timeout=left), timeout, idempotent)

    def _call(self, exchange: Any, timeout: Timeout, idempotent: bool) -> list[Message]:
        attempts = self.attempts(timeout)
        balancer = self.balancer
        while True:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the pool is closed")
                choice = balancer.pick(time.monotonic(), attempts.tried)
                if choice is not None:
                    choice[0].in_flight += 1
            if choice is None:
                time.sleep(attempts.next_round())  # back-off between rounds, not a wait for an event
                continue
            member, probe = choice
            client = self._checkout(member)
            left = attempts.left()
            try:
                try:
                    client.connect()
                    if probe:
                        client.ping(timeout=self.probe_time(left))
                except (OSError, ProtocolError) as exc:
                    # Nothing was sent: another member can take the request.
                    self._failed(member, client, exc)
                    attempts.failed(balancer.index(member), exc)
                    continue
                try:
                    answers: list[Message] = exchange(client, left)
                except ErrorResponse:
                    self._done(member, client, ok=True)
                    raise
                except TimeoutError as exc:
                    self._failed(member, client, exc)  # an outlier: counted, as a refusal is
                    raise
                except BaseException as exc:
                    if not lost_in_exchange(exc):
                        self._done(member, client, ok=False)
                        raise
                    self._failed(member, client, exc)
                    if not idempotent:
                        raise
                    attempts.failed(balancer.index(member), exc)
                    continue
                self._done(member, client, ok=True)
                return answers
            finally:
                with self._lock:
                    member.in_flight -= 1

    # -- connections ----------------------------------------------------------------

    def _checkout(self, member: Member) -> Client:
        with self._lock:
            idle = self._idle[id(member)]
            if idle:
                return idle.pop()  # the most recently used: the likeliest still open
        return Client(member.host, member.port, options=self._client_options(member))

    def _done(self, member: Member, client: Client, *, ok: bool) -> None:
        with self._lock:
            if ok:
                self.balancer.succeeded(member)
            idle = self._idle[id(member)]
            if ok and not self._closed and len(idle) < self.size:
                idle.append(client)
                return
        client.close()

    def _failed(self, member: Member, client: Client, exc: BaseException) -> None:
        client.close()
        with self._lock:
            self.balancer.failed(member, time.monotonic())

    def close(self) -> None:
        """Close every idle connection; later calls raise."""
        with self._lock:
            self._closed = True
            clients = [client for idle in self._idle.values() for client in idle]
            for idle in self._idle.values():
                idle.clear()
        for client in clients:
            client.close()

    def __enter__(self) -> Pool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
