"""One frozen, self-validating set of options for every client.

:class:`~framewire.client.blocking.Client`, the asyncio client
(:func:`framewire.aio.connect`), both pools and
:func:`~framewire.client.concurrent.request_concurrently` take the same
options, spelled the same way, as keyword arguments or as one
``options=ClientOptions(...)``; each numeric one is declared once here, with
its default and range (:mod:`framewire.core.settings`).
"""

from __future__ import annotations

import dataclasses
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final

from framewire.client.retry import MAX_CONNECTION_AGE, Retry
from framewire.core import limits
from framewire.core.errors import ErrorResponse
from framewire.core.message import Message
from framewire.core.settings import check, setting

__all__ = ["DEFAULT", "ClientOptions", "Configured", "Default", "Timeout"]


class Default:
    """The type of :data:`DEFAULT`."""

    _instance: Default | None = None

    def __new__(cls) -> Default:  # one marker, whoever asks
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DEFAULT"


#: A call's ``timeout=`` when it is not given: the client's own. (None
#: means no limit, so it cannot mean "not given".)
DEFAULT: Final = Default()

#: What a call's ``timeout=`` takes: seconds, None (no limit) or :data:`DEFAULT`.
Timeout = float | Default | None


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """How a client connects, times its calls and checks its answers. Frozen; checked when made."""

    timeout: float | None = setting(
        10.0,
        "Seconds each call may take in all, connecting and retries included (None: no limit).",
        above_minimum=True,
        optional=True,
    )
    connect_timeout: float | None = setting(
        None,
        "Seconds for the connect and TLS handshake alone (None: as timeout).",
        above_minimum=True,
        optional=True,
    )
    max_header_size: int = setting(
        limits.MAX_HEADER_SIZE, "Largest JSON header accepted in an answer, bytes.", minimum=2, maximum=65535
    )
    max_content_length: int = setting(
        limits.MAX_CONTENT_LENGTH, "Largest content accepted in an answer, bytes."
    )
    keepalive: float = setting(
        limits.KEEPALIVE, "Seconds of silence before TCP keepalive probes check the server is there (0: off)."
    )
    heartbeat: float = setting(
        0.0, "Seconds a connection may be idle before a ping keeps it open and checks the server (0: off)."
    )
    max_connection_age: float | None = setting(
        MAX_CONNECTION_AGE,
        "Seconds (less up to a tenth, at random) after which a connection is replaced between calls, so "
        "load spreads again over servers restarted or added (None: kept for ever).",
        above_minimum=True,
        optional=True,
    )
    #: Error responses raise :class:`~framewire.core.errors.ErrorResponse`
    #: (False: they are returned as they are).
    check: bool = True
    #: Speak TLS (see :func:`framewire.io.tls.client_context`).
    ssl_context: ssl.SSLContext | None = None
    #: The name the server's certificate is checked against (default: the host).
    server_hostname: str | None = None
    #: The local ``(host, port)`` to connect from.
    source_address: tuple[str, int] | None = None
    #: Each request carries a ``framewire-id``, and its answer must carry the same.
    ids: bool = False
    #: Each request carries a ``framewire-deadline``: the milliseconds left of its call.
    deadlines: bool = False
    #: Requests carry an id and ``framewire-unordered``: the server answers
    #: each as soon as it is ready, and the client matches answers by id.
    #: None: the client's own default (on for the asyncio client, whose
    #: concurrent calls share a connection; off for the blocking client).
    unordered: bool | None = None
    #: How connecting is retried, and a request lost with its connection sent again.
    retry: Retry = Retry()  # noqa: RUF009  # frozen: one shared default is safe

    def __post_init__(self) -> None:
        check(self)
        for name in ("check", "ids", "deadlines"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, not {getattr(self, name)!r}")
        if self.unordered is not None and not isinstance(self.unordered, bool):
            raise TypeError(f"unordered must be True, False or None, not {self.unordered!r}")
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext, not {self.ssl_context!r}")
        if not isinstance(self.retry, Retry):
            raise TypeError(f"retry must be a Retry, not {self.retry!r}")

    @classmethod
    def of(cls, options: ClientOptions | None, settings: dict[str, Any]) -> ClientOptions:
        """``options``, or ``options`` with ``settings`` changed, or the defaults with them."""
        if options is None:
            return cls(**settings)
        return dataclasses.replace(options, **settings) if settings else options

    @property
    def connect_limit(self) -> float | None:
        """Seconds for a connect alone, at most."""
        return self.timeout if self.connect_timeout is None else self.connect_timeout

    def seconds(self, timeout: float | Default | None) -> float | None:
        """A call's time limit: its own ``timeout``, or the client's."""
        return self.timeout if isinstance(timeout, Default) else timeout

    def deadline(self, timeout: float | Default | None) -> float | None:
        """When a call given ``timeout`` must be over (monotonic clock)."""
        seconds = self.seconds(timeout)
        return None if seconds is None else time.monotonic() + seconds


class Configured:
    """What every client keeps: the server's address and its options, the
    options readable as its attributes (``client.timeout``)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 65432,
        *,
        options: ClientOptions | None = None,
        **settings: Any,
    ) -> None:
        self.host = host
        self.port = port
        #: Every option of the client (also readable as its attributes).
        self.options = ClientOptions.of(options, settings)
        self._start()

    def _start(self) -> None:
        """The client's own state, once its address and options are set."""

    def __getattr__(self, name: str) -> Any:
        if name in ClientOptions.__dataclass_fields__:
            return getattr(self.options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _checked(self, answer: Message) -> Message:
        # An error response raised, with ``check`` (the default).
        if self.options.check and answer.is_error:
            error = answer.error()
            assert error is not None
            raise ErrorResponse(error)
        return answer
