"""OpenTelemetry tracing, when the application has set it up.

framewire never imports OpenTelemetry itself: :func:`tracer` looks for the
API module among those already imported and for a tracer provider the
application has configured. Without both, tracing costs one dictionary
lookup a call and nothing is made. With them, the server makes a SERVER
span per request (continuing the trace of the request's ``traceparent``
header extension, W3C Trace Context) and every client a CLIENT span per
``call()``, whose ``traceparent`` goes with the request.

Span names and attributes follow OpenTelemetry's RPC conventions where they
fit: the span is named by the action, ``rpc.system`` is ``framewire``,
``rpc.method`` the action, and ``framewire.outcome`` is ``ok`` or the
error code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

__all__ = ["OUTCOME", "TRACEPARENT", "client_span", "server_span", "tracer"]

#: The W3C Trace Context header, carried as a header extension.
TRACEPARENT: Final = "traceparent"
#: The span attribute that says how the call ended: ``ok`` or the error code.
OUTCOME: Final = "framewire.outcome"

_TRACERS: dict[int, Any] = {}


def tracer() -> Any | None:
    """The framewire tracer of the tracer provider the application set, or
    None when OpenTelemetry is not imported or no provider is set."""
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    found = _TRACERS.get(id(provider))
    if found is None or found[0] is not provider:
        from framewire import __version__  # noqa: PLC0415

        found = _TRACERS[id(provider)] = (provider, provider.get_tracer("framewire", __version__))
    return found[1]


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    return TraceContextTextMapPropagator()


def _peer_attributes(address: str) -> dict[str, Any]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return {"network.peer.address": address}
    return {"network.peer.address": host.strip("[]"), "network.peer.port": int(port)}


def server_span(found: Any, action: str, extensions: Mapping[str, Any], peer: str) -> Any:
    """A SERVER span (not yet current) for a request of ``action`` from
    ``peer``, continuing the trace its ``traceparent`` names."""
    from opentelemetry.trace import SpanKind  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    carrier = {k: v for k, v in extensions.items() if k in (TRACEPARENT, "tracestate") and isinstance(v, str)}
    parent = _propagator().extract(carrier) if carrier else None
    attributes = {"rpc.system": "framewire", "rpc.method": action, **_peer_attributes(peer)}
    return found.start_span(action, context=parent, kind=SpanKind.SERVER, attributes=attributes)


def ended(span: Any, code: str | None) -> None:
    """End ``span`` with its outcome: ``code`` is the error code, or None."""
    span.set_attribute(OUTCOME, code or "ok")
    if code is not None:
        from opentelemetry.trace import Status, StatusCode  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

        span.set_status(Status(StatusCode.ERROR, code))
    span.end()


@contextmanager
def client_span(
    found: Any, action: str, where: str, extensions: Mapping[str, Any] | None
) -> Iterator[Mapping[str, Any]]:
    """Around a client's call of ``action`` on ``where``, with the tracer
    ``found`` (:func:`tracer`): a CLIENT span, yielding the extensions to
    send, ``traceparent`` among them."""
    from opentelemetry.trace import SpanKind, use_span  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

    attributes = {"rpc.system": "framewire", "rpc.method": action, "server.address": where}
    span = found.start_span(action, kind=SpanKind.CLIENT, attributes=attributes)
    code: str | None = None
    with use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        carried = dict(extensions or {})
        _propagator().inject(carried)
        try:
            yield carried
        except BaseException as exc:
            code = getattr(exc, "code", None) or type(exc).__name__
            raise
        finally:
            ended(span, code)
