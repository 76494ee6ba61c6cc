"""One frozen, self-validating server configuration.

Each setting is declared once, here: its default (from
:mod:`framewire.core.limits`), its range, and the sentence that describes
it. :class:`~framewire.server.Server` takes them as keyword arguments and
``framewire serve`` generates its options from the same declarations
(:func:`settings`), so the library, the command line and the docs cannot
drift apart.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from framewire.core import limits
from framewire.core.settings import Setting, check, declared, setting

__all__ = ["ServerConfig", "Setting", "settings"]


_setting = setting


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every limit and knob of a server. Frozen; checked when made."""

    max_header_size: int = _setting(
        limits.MAX_HEADER_SIZE, "Largest JSON header, bytes.", minimum=2, maximum=65535
    )
    max_content_length: int = _setting(limits.MAX_CONTENT_LENGTH, "Largest content, bytes.")
    large_content: int = _setting(
        limits.LARGE_CONTENT,
        "Contents of at least this many bytes are read straight into a buffer of their size, "
        "never copied (0: off).",
    )
    large_content_memory: int = _setting(
        limits.LARGE_CONTENT_MEMORY,
        "Bytes set aside at once, server-wide, for large contents being read in place; past it "
        "they are read in chunks.",
    )
    message_timeout: float = _setting(
        limits.MESSAGE_TIMEOUT, "Seconds from a message's first byte to its last.", above_minimum=True
    )
    idle_timeout: float = _setting(
        limits.IDLE_TIMEOUT, "Seconds a connection may sit idle.", above_minimum=True
    )
    linger_time: float = _setting(
        limits.LINGER_TIME,
        "Seconds a connection closed for an error keeps reading, and dropping, what its peer still "
        "sends, so that the peer gets the error answer, not a reset (0: close at once).",
    )
    linger_bytes: int = _setting(
        limits.LINGER_BYTES,
        "Most bytes read and dropped while lingering; past them the connection is closed.",
        minimum=1,
    )
    keepalive: float = _setting(
        limits.KEEPALIVE,
        "Seconds of silence before TCP keepalive probes check the peer still exists (0: off).",
    )
    max_connections: int = _setting(
        limits.MAX_CONNECTIONS, "Connections at once; more get server-busy.", minimum=1
    )
    max_refusing: int = _setting(
        limits.MAX_REFUSING,
        "Connections refused with server-busy that may linger at once (reading and dropping their "
        "request, within linger_time and linger_bytes, so that they get the answer, not a reset); "
        "past it a refusal closes at once.",
    )
    high_water: int = _setting(
        limits.HIGH_WATER, "Unsent response bytes per connection before it stops being read.", minimum=1
    )
    max_in_flight: int = _setting(
        limits.MAX_IN_FLIGHT, "Unanswered requests per connection before it stops being read.", minimum=1
    )
    grace: float = _setting(limits.GRACE, "Seconds to answer in-flight requests on SIGTERM/SIGINT.")
    log_summary: float = _setting(
        limits.LOG_SUMMARY,
        "Seconds between INFO summaries of connections, requests and errors (0: off); each "
        "connection's own lines are at DEBUG.",
    )
    busy_poll: int = _setting(
        limits.BUSY_POLL,
        "Microseconds the loop may keep polling before it sleeps, while work comes that soon; a "
        "request/response exchange then skips the wake-up (0: off; the epoll loop and --loop asyncio, "
        "not uvloop).",
    )
    threads: int = _setting(
        limits.THREADS,
        "Run handlers on a pool of N threads (0: inline, the fastest; async handlers always run on an "
        "event loop).",
    )
    max_queued: int = _setting(
        limits.MAX_QUEUED,
        "Requests waiting for a threaded or async handler, server-wide, shared fairly between "
        "connections (taken in turn; past it, only a connection under its share gets a place); "
        "more get server-busy.",
        minimum=1,
    )
    subscriber_queue: int = _setting(
        limits.SUBSCRIBER_QUEUE,
        "Events one subscriber may have waiting; past it its oldest are dropped (the gap marked), or "
        "with --slow-subscriber disconnect its subscription ends with server-busy.",
        minimum=1,
    )
    subscriber_queue_bytes: int = _setting(
        limits.SUBSCRIBER_QUEUE_BYTES,
        "Bytes of events (their JSON) one subscriber may have waiting; past it, as past --subscriber-queue.",
        minimum=1,
    )

    #: What becomes of a subscriber whose queue is full: ``drop`` (its
    #: oldest events, the gap marked ``framewire-dropped``) or ``disconnect``
    #: (its subscription ends with server-busy).
    slow_subscriber: str = "drop"
    #: Publish and subscribe through Redis (``redis://HOST:PORT/DB``): the
    #: app's hub becomes a :class:`~framewire.server.redis_hub.RedisHub`.
    hub: str | None = None
    #: Write an INFO line per request on the ``framewire.access`` logger
    #: (:mod:`framewire.server.access`).
    access_log: bool = False
    #: Take the client's address from a PROXY protocol header (v1 or v2)
    #: that every connection must begin with; only from ``trusted_proxies``.
    proxy_protocol: bool = False
    #: The balancers allowed to send PROXY headers: addresses or networks
    #: (CIDR), and ``uid:N`` for a balancer connecting to a Unix socket as
    #: user N (the kernel says who: SO_PEERCRED). On a Unix socket the
    #: server's own user and root are trusted too (they can act as the
    #: server anyway); any other local user only when listed. A connection
    #: from anywhere else is closed, with a log line.
    trusted_proxies: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), init=False, repr=False, compare=False
    )
    _uids: frozenset[int] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for flag in ("proxy_protocol", "access_log"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, not {getattr(self, flag)!r}")
        from framewire.server.hub import SLOW_POLICIES  # noqa: PLC0415

        if self.slow_subscriber not in SLOW_POLICIES:
            raise ValueError(f"slow_subscriber is drop or disconnect, not {self.slow_subscriber!r}")
        if self.hub is not None:
            from framewire.server.redis_hub import check_url  # noqa: PLC0415

            check_url(self.hub)
        if isinstance(self.trusted_proxies, str) or not all(isinstance(t, str) for t in self.trusted_proxies):
            raise TypeError("trusted_proxies must be a tuple of addresses or networks (CIDR)")
        networks = []
        uids = {0, os.getuid()} if hasattr(os, "getuid") else set()
        for given in self.trusted_proxies:
            text = given.strip()
            if text.startswith("uid:") and text[4:].isdigit() and text[4:].isascii():
                uids.add(int(text[4:]))
                continue
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                raise ValueError(
                    f"trusted_proxies: {text!r} is not an address, a network (CIDR) or uid:N"
                ) from None
        object.__setattr__(self, "trusted_proxies", tuple(self.trusted_proxies))
        object.__setattr__(self, "_networks", tuple(networks))
        object.__setattr__(self, "_uids", frozenset(uids))
        check(self)

    @classmethod
    def of(cls, config: ServerConfig | None, settings: dict[str, Any]) -> ServerConfig:
        """``config``, or one made of ``settings`` (a server takes either)."""
        if config is None:
            return cls(**settings)
        if settings:
            raise TypeError("give either config or settings, not both")
        return config

    def trusts_user(self, uid: int | None) -> bool:
        """Whether a Unix socket peer running as ``uid`` (None: the system
        does not say) may send a PROXY header."""
        return uid is not None and uid in self._uids

    def trusts(self, host: str) -> bool:
        """Whether ``host`` (an IP address) may send a PROXY header."""
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack listener
        return any(address in network for network in self._networks)

    @property
    def low_water(self) -> int:
        """Queued bytes below which a paused connection is read again (half the high-water mark)."""
        return self.high_water // 2


def settings() -> list[tuple[str, type, Any, Setting]]:
    """Each setting: its name, type (int or float), default and description."""
    return declared(ServerConfig)
