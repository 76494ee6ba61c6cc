"""Prometheus metrics of a server, with the official client library.

Off by default (``--metrics [HOST:]PORT`` turns them on): when off, the
connection engine's hot path does not change at all. When on, every
request is counted under labels that are bounded whatever peers send:
``action``, the App's action when it has one (an action it does not know
counts as ``other``; empty for other handlers and for errors that are not a
request's, such as a bad header), and ``content_type``, one
of a fixed set (:data:`CONTENT_TYPES`, plus those a deployment names,
:data:`LABEL_LIMIT` at most, each :data:`LABEL_LENGTH` characters at most);
any other is ``text/other`` or ``other``, so no peer chooses a label.
Handler times and error responses carry the same ``action`` label; error
codes are the protocol's own and those the App's actions declare
(``@app.action(..., errors=[...])``), any other ``other``. Handler time
is measured around the handler (for threaded and async handlers, from the
request's arrival to its answer: the time a client waits for it).

Under ``--workers`` each worker writes its figures to files in a folder the
supervisor makes (the client library's multiprocess mode), and the
supervisor serves their sum.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Final

from framewire.core.message import Message

__all__ = [
    "CONTENT_TYPES",
    "LABEL_LENGTH",
    "LABEL_LIMIT",
    "METRICS_CONNECTIONS",
    "METRICS_DEADLINE",
    "MULTIPROCESS_ENV",
    "Metrics",
    "serve_metrics",
]

#: The client library's variable naming the multiprocess folder.
MULTIPROCESS_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: The content types counted under their own name; any other text type is
#: ``text/other``, any other type ``other``.
CONTENT_TYPES: Final = frozenset(
    {
        "text/json",
        "application/json",
        "text/plain",
        "text/html",
        "text/csv",
        "binary/custom-client-binary-type",
        "binary/custom-server-binary-type",
        "binary/octet-stream",
        "application/octet-stream",
    }
)
#: Content types a deployment may add to :data:`CONTENT_TYPES`, at most, and
#: the longest of them.
LABEL_LIMIT: Final = 16
LABEL_LENGTH: Final = 64
#: HTTP connections the metrics endpoint serves at once (more are closed at
#: once), and the seconds each may take, all told: its descriptors are its
#: own budget, never the protocol port's.
METRICS_CONNECTIONS: Final = 8
METRICS_DEADLINE: Final = 10.0
_DURATION_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                            0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip


def _protocol_codes() -> frozenset[str]:
    from framewire.core import errors  # noqa: PLC0415

    return frozenset(
        {
            klass.code
            for klass in vars(errors).values()
            if isinstance(klass, type) and issubclass(klass, errors.ProtocolError) and klass.code
        }
    )


#: The error codes of the protocol itself.
_PROTOCOL_CODES: Final = _protocol_codes()


class Metrics:
    """The metrics of one server process (see the module's text)."""

    def __init__(self, handler: Any, registry: Any = None, content_types: tuple[str, ...] = ()) -> None:
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
            "framewire_errors",
            "Error responses the server sent, by App action and code.",
            ["action", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "framewire_request_duration_seconds",
            "Handler time per request, by App action (threads and async: arrival to answer).",
            ["action"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        # The unit before _total, as Prometheus' naming conventions ask
        # (framewire_received_bytes_total, not ..._bytes_received_total).
        self.bytes_received = Counter(
            "framewire_received_bytes", "Bytes received from peers.", registry=registry
        )
        self.bytes_sent = Counter("framewire_sent_bytes", "Bytes sent to peers.", registry=registry)
        from framewire import __version__  # noqa: PLC0415
        from framewire._build import build_name  # noqa: PLC0415

        self.handler_queue = Gauge(
            "framewire_handler_queue",
            "Requests handed to the thread pool or the handlers' event loop and not yet answered "
            "(at most --max-queued past which requests are answered server-busy).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.worker_restarts = Counter(
            "framewire_worker_restarts",
            "Workers that died unasked and were replaced (under --workers; counted by the supervisor).",
            registry=registry,
        )
        self.handshake_failures = Counter(
            "framewire_tls_handshake_failures",
            "TLS handshakes that failed, by reason (a bounded set: wrong-version-number, unknown-ca, "
            "peer-did-not-return-a-certificate, certificate, timeout, eof, connection, other, ...).",
            ["reason"],
            registry=registry,
        )
        self.build_info = Gauge(
            "framewire_build_info",
            "Always 1: the framewire version and build (compiled or pure Python) serving.",
            ["version", "build"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.build_info.labels(
            __version__, "pure Python" if build_name() == "pure Python" else "compiled"
        ).set(1)
        self.refusals = Counter(
            "framewire_connections_refused",
            "Connections refused at the connection limit: TLS ones closed at once (they cannot read"
            " server-busy before a handshake), plain ones answered server-busy.",
            registry=registry,
        )
        self.paused = Gauge(
            "framewire_paused_connections",
            "Connections not read for backpressure (their answers are not being read).",
            registry=registry,
            multiprocess_mode="livesum",  # (used only under --workers)
        )
        # Publish and subscribe (an App's hub): counted by the hub as it goes.
        self.subscribers = Gauge(
            "framewire_subscribers", "Subscriptions open now.", registry=registry, multiprocess_mode="livesum"
        )
        self.events_published = Counter(
            "framewire_events_published", "Events published to this process's subscribers.", registry=registry
        )
        self.events_delivered = Counter(
            "framewire_events_delivered",
            "Events handed to subscribers (one per subscriber).",
            registry=registry,
        )
        self.events_dropped = Counter(
            "framewire_events_dropped",
            "Events dropped for subscribers whose queue was full (--subscriber-queue).",
            registry=registry,
        )
        actions = getattr(handler, "action_names", None)
        self._actions: frozenset[str] | None = frozenset(actions()) if callable(actions) else None
        declared = getattr(handler, "error_codes", None)
        self._codes = _PROTOCOL_CODES | frozenset(declared() if callable(declared) else ())
        #: The action label of the request being answered (set per request).
        self.action = ""
        if len(content_types) > LABEL_LIMIT or any(len(t) > LABEL_LENGTH for t in content_types):
            raise ValueError(
                f"at most {LABEL_LIMIT} content types of {LABEL_LENGTH} characters each may be labels"
            )
        self._types = CONTENT_TYPES | frozenset(content_types)
        self._by_kind: dict[tuple[str, str], Any] = {}
        self._by_code: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def kind(self, request: Message) -> tuple[str, str]:
        """The bounded labels of a request: its App action (``""`` for other
        handlers and non-JSON requests) and its content type."""
        content_type = request.content_type
        if content_type not in self._types:
            content_type = "text/other" if request.is_text else "other"
        if self._actions is None or not request.is_json:
            return "", content_type
        try:
            body = request.json()
        except Exception:
            return "other", content_type
        action = body.get("action") if isinstance(body, dict) else None
        return (action if isinstance(action, str) and action in self._actions else "other"), content_type

    def request(self, request: Message) -> None:
        """A request arrived: counted, and its action is the label of what
        follows (its duration, its error)."""
        kind = self.kind(request)
        self.action = kind[0]
        child = self._by_kind.get(kind)
        if child is None:
            child = self._by_kind[kind] = self.requests.labels(*kind)
        child.inc()

    def opened(self, engine: Any) -> None:
        """A connection was accepted: its engine reports to these metrics."""
        engine.watch(self)
        self.connections_open.inc()
        self.connections_total.inc()

    def published(self, reached: int) -> None:
        """An event was published; ``reached`` subscribers got it."""
        self.events_published.inc()
        if reached:
            self.events_delivered.inc(reached)

    def subscribed(self, change: int) -> None:
        """Subscriptions opened (``change`` > 0) or ended (< 0)."""
        if change:
            self.subscribers.inc(change)

    def dropped(self, count: int) -> None:
        """Events dropped for a slow subscriber."""
        self.events_dropped.inc(count)

    def refused(self) -> None:
        """A connection was refused at the connection limit (a TLS one closed
        at once, a plain one answered server-busy)."""
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
        clock = time.perf_counter

        def counted(request: Message) -> object:
            self.request(request)
            started = clock()
            try:
                result = call(request)
            except BaseException:
                self.observe(clock() - started, self.action)  # a failed request is timed too
                raise
            if isinstance(result, Message):  # else it answers later, and is timed then
                self.observe(clock() - started, self.action)
            return result

        return counted

    def observe(self, seconds: float, action: str) -> None:
        """A request of ``action`` (its label) was answered in ``seconds``."""
        child = self._durations.get(action)
        if child is None:
            child = self._durations[action] = self.duration.labels(action)
        child.observe(seconds)

    def error(self, code: str) -> None:
        """The server sent an error response with ``code`` to a request of
        the current :attr:`action`: the protocol's own codes and those the
        App declares keep their name; any other counts as ``other``, in
        case an application makes codes from what peers send."""
        key = (self.action, code)
        child = self._by_code.get(key)
        if child is None:
            if code not in self._codes:
                key = (self.action, "other")
                child = self._by_code.get(key)
            if child is None:
                child = self._by_code[key] = self.errors.labels(*key)
        child.inc()


def serve_metrics(where: tuple[str, int], multiprocess_dir: str | None = None) -> tuple[str, int]:
    """Serve the text format on ``where`` (a thread of its own; port 0: any
    free port); with a multiprocess folder, the sum of every worker's
    figures. Returns the address served."""
    from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app  # noqa: PLC0415

    registry: Any = REGISTRY
    if multiprocess_dir is not None:
        from prometheus_client import multiprocess  # noqa: PLC0415

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        # The multiprocess collector sums the workers' own series only: the
        # usual process_* series (per worker, and the supervisor's) and
        # python_info come from here.
        from prometheus_client import PlatformCollector  # noqa: PLC0415

        PlatformCollector(registry=registry)
        registry.register(_WorkerProcesses())
    host, port = where
    httpd = _bounded_http_server(host, port, make_wsgi_app(registry))
    threading.Thread(target=httpd.serve_forever, name="framewire-metrics", daemon=True).start()
    address = httpd.server_address
    return str(address[0]), int(address[1])


class _WorkerProcesses:
    """The process_* series of the supervisor and of each worker (its
    children), labelled by role and pid: what each one's own
    ProcessCollector would give, which the multiprocess mode cannot carry."""

    def collect(self) -> Any:
        import psutil  # noqa: PLC0415
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        labels = ["role", "pid"]
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "Total user and system CPU time in seconds.", labels=labels
        )
        rss = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes.", labels=labels
        )
        fds = GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", labels=labels)
        start = GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            labels=labels,
        )
        supervisor = psutil.Process()
        for role, process in [("supervisor", supervisor)] + [("worker", c) for c in supervisor.children()]:
            try:
                with process.oneshot():
                    times, memory = process.cpu_times(), process.memory_info()
                    opened, started = process.num_fds(), process.create_time()
            except psutil.Error:
                continue  # gone meanwhile
            key = [role, str(process.pid)]
            cpu.add_metric(key, times.user + times.system)
            rss.add_metric(key, memory.rss)
            fds.add_metric(key, opened)
            start.add_metric(key, started)
        yield from (cpu, rss, fds, start)


def _bounded_http_server(host: str, port: int, app: Any) -> Any:
    # The client library's own server gives every connection a thread with
    # no timeout and no cap: idle clients on the metrics port took the
    # descriptors the protocol port needed. This one serves at most
    # METRICS_CONNECTIONS at once (the next is closed at once), each within
    # METRICS_DEADLINE seconds all told (and a read timeout below it).
    import socket  # noqa: PLC0415
    import socketserver  # noqa: PLC0415
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer  # noqa: PLC0415

    class Handler(WSGIRequestHandler):
        timeout = METRICS_DEADLINE / 2  # each read

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every few seconds: not worth a line

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True

        def __init__(self) -> None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.address_family = family
            self._slots = threading.BoundedSemaphore(METRICS_CONNECTIONS)
            super().__init__((host, port), Handler)

        def process_request(self, request: Any, client_address: Any) -> None:
            if not self._slots.acquire(blocking=False):
                self.shutdown_request(request)  # at the cap: closed, never queued
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self._slots.release()
                raise

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            # The whole exchange within the deadline, however slowly it trickles.
            timer = threading.Timer(METRICS_DEADLINE, _cut, (request,))
            timer.daemon = True
            timer.start()
            try:
                super().process_request_thread(request, client_address)
            finally:
                timer.cancel()
                self._slots.release()

    server = Server()
    server.set_app(app)
    return server


def _cut(sock: Any) -> None:
    import socket  # noqa: PLC0415

    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # the handler's read or write ends
