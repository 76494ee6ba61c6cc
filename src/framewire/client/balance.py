"""Which server of a pool gets the next request: the members, their health,
and the choice, with no I/O (the pools do the connecting and the timing).

A member that fails ``max_failures`` times in a row (a refused connect, a
connection lost under a request, a call that timed out: a member that
accepts and never answers is an outlier as much as one that refuses) is
taken out; after ``probe_after``
seconds (doubled at each failed probe, up to ``max_probe_after``) the next
pick hands it out *with a probe*: the pool pings it before use, and a
success puts it back. When every member is out, the one due soonest is
tried anyway (better a try than a certain failure).
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Literal

from framewire.client.options import ClientOptions, Default
from framewire.client.retry import NO_RETRY, Retry, next_delay
from framewire.io.netio import plain_host, split_address, unix_path

__all__ = ["Attempts", "Balancer", "Member", "PoolBase", "Strategy", "expand"]

Strategy = Literal["round-robin", "least-in-flight"]


@dataclasses.dataclass(eq=False, slots=True)
class Member:
    """One server address of a pool, and what the pool knows of it."""

    host: str
    port: int
    #: The name the pool was given for it (a host name, before it was
    #: resolved): what its TLS certificate is checked against.
    name: str = ""
    #: Requests under way on this member now.
    in_flight: int = 0
    #: Failures in a row (0 after any success).
    failures: int = 0
    #: Out of the rotation until this time (None: healthy).
    down_until: float | None = None
    #: Seconds before the next probe, if the one under way fails.
    wait: float = 0.0
    #: A probe is under way (handed out once per interval).
    probing: bool = False

    @property
    def healthy(self) -> bool:
        """In the rotation."""
        return self.down_until is None

    def __str__(self) -> str:
        if unix_path(self.host) is not None:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def expand(addresses: Iterable[str | tuple[str, int]]) -> list[Member]:
    """One member per address: ``"host:port"``, ``"[v6]:port"``,
    ``"unix:PATH"`` or ``(host, port)``; a host name with several addresses
    gives one member for each (``OSError`` if it does not resolve)."""
    members: list[Member] = []
    seen: set[tuple[str, int]] = set()
    for address in addresses:
        host, port = split_address(address) if isinstance(address, str) else address
        if unix_path(host) is not None:
            found = [host]
        else:
            try:
                infos = socket.getaddrinfo(plain_host(host), port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise OSError(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from exc
            found = [str(info[4][0]) for info in infos]
        for ip in found:
            if (ip, port) not in seen:
                seen.add((ip, port))
                members.append(Member(ip, port, name=plain_host(host)))
    if not members:
        raise ValueError("a pool needs at least one address")
    return members


class Balancer:
    """The members and the choice among them (the pools hold its lock)."""

    def __init__(
        self,
        members: Sequence[Member],
        strategy: Strategy = "round-robin",
        *,
        max_failures: int = 2,
        probe_after: float = 1.0,
        max_probe_after: float = 30.0,
    ) -> None:
        if strategy not in ("round-robin", "least-in-flight"):
            raise ValueError(f"strategy is 'round-robin' or 'least-in-flight', not {strategy!r}")
        if max_failures < 1:
            raise ValueError("max_failures is at least 1")
        self.members = list(members)
        self.strategy = strategy
        self.max_failures = max_failures
        self.probe_after = probe_after
        self.max_probe_after = max_probe_after
        self._turn = 0

    def pick(self, now: float, exclude: Collection[int] = ()) -> tuple[Member, bool] | None:
        """The member for the next request, and whether to probe it first;
        None when every member is in ``exclude`` (indexes already tried)."""
        members = self.members
        candidates = [i for i in range(len(members)) if i not in exclude]
        if not candidates:
            return None
        for i in candidates:
            member = members[i]
            if member.down_until is not None and not member.probing and member.down_until <= now:
                member.probing = True  # one probe per interval, whoever asks
                return member, True
        healthy = [i for i in candidates if members[i].healthy]
        if not healthy:
            # Everything is out: the member due soonest, probed.
            soonest = min(candidates, key=lambda i: members[i].down_until or 0.0)
            members[soonest].probing = True
            return members[soonest], True
        self._turn += 1
        if self.strategy == "least-in-flight":
            # Fewest requests under way; ties go round, so a quiet pool
            # still spreads its connections.
            fewest = min(members[i].in_flight for i in healthy)
            healthy = [i for i in healthy if members[i].in_flight == fewest]
        return members[healthy[self._turn % len(healthy)]], False

    def index(self, member: Member) -> int:
        """The member's place (for ``exclude``)."""
        return self.members.index(member)

    def failed(self, member: Member, now: float) -> bool:
        """A connect, probe or exchange with ``member`` failed; True if it is
        now out of the rotation."""
        member.failures += 1
        if member.probing or member.failures >= self.max_failures:
            member.wait = (
                self.probe_after if member.down_until is None else min(member.wait * 2, self.max_probe_after)
            )
            member.down_until = now + member.wait
        member.probing = False
        return member.down_until is not None

    def succeeded(self, member: Member) -> None:
        """An exchange with ``member`` (or its probe) went well."""
        member.failures = 0
        member.down_until = None
        member.probing = False


class PoolBase:
    """What the blocking and the asyncio pools share: the settings, the
    balancer, and the options of the connections they open."""

    def __init__(
        self,
        addresses: Iterable[str | tuple[str, int]],
        *,
        size: int,
        strategy: Strategy = "round-robin",
        max_failures: int = 2,
        probe_after: float = 1.0,
        probe_timeout: float = 1.0,
        options: ClientOptions | None = None,
        **settings: Any,
    ) -> None:
        if size < 1:
            raise ValueError("a pool keeps at least one connection per member (size >= 1)")
        self.balancer = Balancer(
            expand(addresses), strategy, max_failures=max_failures, probe_after=probe_after
        )
        self.size = size
        #: The options of the connections the pool opens; its calls take
        #: ``timeout`` (failovers and retries included) and ``retry`` (the
        #: back-off when every member has failed a call) from them.
        self.options = ClientOptions.of(options, settings)
        #: Seconds a probe (a ping before a member is used again) may take,
        #: at most: a member still hung does not eat the call's whole time.
        self.probe_timeout = probe_timeout
        self._closed = False

    @property
    def where(self) -> str:
        """The pool's servers, as messages name them."""
        return ", ".join(str(member) for member in self.balancer.members)

    @property
    def members(self) -> list[Member]:
        """The pool's members (addresses) and their health."""
        return self.balancer.members

    @property
    def timeout(self) -> float | None:
        """Each call's deadline, failovers and retries included."""
        return self.options.timeout

    def _client_options(self, member: Member) -> ClientOptions:
        # The pool fails over to another member itself: its connections
        # do not retry on their own. A member's certificate is checked
        # against the name the pool was given, not the address it resolved
        # to (as Client("localhost", port) checks "localhost").
        hostname = self.options.server_hostname
        if hostname is None and member.name and unix_path(member.name) is None:
            hostname = member.name
        return dataclasses.replace(self.options, retry=NO_RETRY, server_hostname=hostname)

    def attempts(self, timeout: float | Default | None) -> Attempts:
        """The tries of one call given ``timeout`` (DEFAULT: the pool's)."""
        return Attempts(self.options.seconds(timeout), self.options.retry)

    def probe_time(self, left: float | None) -> float:
        """Seconds for a probe, within the call's ``left``."""
        return self.probe_timeout if left is None else min(left, self.probe_timeout)


class Attempts:
    """One pool call's tries: its deadline, the members it has tried in
    this round, the last failure, and the back-off between rounds."""

    def __init__(self, timeout: float | None, retry: Retry) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.tried: set[int] = set()
        self.last: BaseException | None = None
        self._delays = retry.delays()

    def left(self) -> float | None:
        """Seconds to the deadline (a little at least), or None."""
        return None if self.deadline is None else max(0.001, self.deadline - time.monotonic())

    def failed(self, index: int, exc: BaseException) -> None:
        """The member at ``index`` failed this call: not again this round."""
        self.tried.add(index)
        self.last = exc

    def next_round(self) -> float:
        """Every member failed this round: the wait before the next, or the
        last failure raised when no round is left before the deadline."""
        delay = next_delay(self._delays, self.deadline)
        if delay is None:
            assert self.last is not None
            raise self.last
        self.tried.clear()
        return delay
