"""Prometheus metrics of a server, with the official client library.

Off by default (``--metrics [HOST:]PORT`` turns them on): when off, the
connection engine's hot path does not change at all. When on, every
request is counted under labels that are bounded whatever peers send:
``action``, the App's action when it has one (an action it does not know
counts as ``other``; empty for other handlers), and ``content_type``, among
the first 16 seen (then ``other``).
Error codes are those the server itself sends (a fixed set). Handler time
is measured around the handler (for threaded and async handlers, from the
request's arrival to its answer: the time a client waits for it).

Under ``--workers`` each worker writes its figures to files in a folder the
supervisor makes (the client library's multiprocess mode), and the
supervisor serves their sum.
"""

from __future__ import annotations

import time
from typing import Any, Final

from framewire.core.message import Message

__all__ = ["LABEL_LIMIT", "MULTIPROCESS_ENV", "Metrics", "serve_metrics"]

#: The client library's variable naming the multiprocess folder.
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Distinct content-type labels before the rest count as ``other``.
LABEL_LIMIT: Final = 16
_DURATION_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                            0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip


class Metrics:
    """The metrics of one server process (see the module's text)."""

    def __init__(self, handler: Any, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram  # noqa: PLC0415  (only when on)

        registry = registry if registry is not None else REGISTRY
        self.connections_open = Gauge(
            "framewire_connections_open",
            "Connections open now.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.connections_total = Counter("framewire_connections", "Connections accepted.", registry=registry)
        self.requests = Counter(
            "framewire_requests", "Requests received, by App action (else empty) and content type.",
            ["action", "content_type"],
            registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "framewire_errors", "Error responses the server sent, by code.", ["code"], registry=registry
        )
        self.duration = Histogram(
            "framewire_request_duration_seconds",
            "Handler time per request (threads and async: arrival to answer).",
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.bytes_received = Counter(
            "framewire_bytes_received", "Bytes received from peers.", registry=registry
        )
        self.bytes_sent = Counter("framewire_bytes_sent", "Bytes sent to peers.", registry=registry)
        self.refusals = Counter(
            "framewire_connections_refused",
            "TLS connections closed at once at the connection limit (they cannot read server-busy"
            " before a handshake; plain ones are answered it, counted in framewire_errors).",
            registry=registry,
        )
        self.paused = Gauge(
            "framewire_paused_connections",
            "Connections not read for backpressure (their answers are not being read).",
            registry=registry,
            multiprocess_mode="livesum",  # (used only under --workers)
        )
        actions = getattr(handler, "action_names", None)
        self._actions: frozenset[str] | None = frozenset(actions()) if callable(actions) else None
        self._types: dict[str, Any] = {}
        self._by_kind: dict[tuple[str, str], Any] = {}
        self._by_code: dict[str, Any] = {}

    def kind(self, request: Message) -> tuple[str, str]:
        """The bounded labels of a request: its App action (``""`` for other
        handlers and non-JSON requests) and its content type."""
        content_type = request.content_type
        if content_type not in self._types:
            if len(self._types) >= LABEL_LIMIT:
                content_type = "other"
            else:
                self._types[content_type] = True
        if self._actions is None or not request.is_json:
            return "", content_type
        try:
            body = request.json()
        except Exception:
            return "other", content_type
        action = body.get("action") if isinstance(body, dict) else None
        return (action if isinstance(action, str) and action in self._actions else "other"), content_type

    def request(self, request: Message) -> None:
        """A request arrived."""
        kind = self.kind(request)
        child = self._by_kind.get(kind)
        if child is None:
            child = self._by_kind[kind] = self.requests.labels(*kind)
        child.inc()

    def opened(self, engine: Any) -> None:
        """A connection was accepted: its engine reports to these metrics."""
        engine.metrics = self
        engine.flow.watch = self.paused.inc  # +1 paused, -1 resumed
        self.connections_open.inc()
        self.connections_total.inc()

    def refused(self) -> None:
        """A TLS connection was closed at once at the connection limit."""
        self.refusals.inc()

    def closed(self, engine: Any) -> None:
        """A connection closed."""
        self.connections_open.dec()
        if engine.flow.paused:
            self.paused.dec()

    def measured(self, call: Any) -> Any:
        """``call`` (a connection's way of answering), counting each request
        and timing the handler; answers that come later are timed by the
        dispatcher (:meth:`observe`)."""
        observe = self.duration.observe
        clock = time.perf_counter

        def counted(request: Message) -> object:
            self.request(request)
            started = clock()
            result = call(request)
            if isinstance(result, Message):  # else it answers later, and is timed then
                observe(clock() - started)
            return result

        return counted

    def observe(self, seconds: float) -> None:
        """A later answer came ``seconds`` after its request."""
        self.duration.observe(seconds)

    def error(self, code: str) -> None:
        """The server sent an error response with ``code``."""
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code[code] = self.errors.labels(code)
        child.inc()


def serve_metrics(where: tuple[str, int], multiprocess_dir: str | None = None) -> tuple[str, int]:
    """Serve the text format on ``where`` (a thread of its own; port 0: any
    free port); with a multiprocess folder, the sum of every worker's
    figures. Returns the address served."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server  # noqa: PLC0415

    registry: Any = REGISTRY
    if multiprocess_dir is not None:
        from prometheus_client import multiprocess  # noqa: PLC0415

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    host, port = where
    httpd, _thread = start_http_server(port, addr=host, registry=registry)
    address = httpd.server_address
    return str(address[0]), int(address[1])
