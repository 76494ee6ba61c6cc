"""The application layer: typed actions, call(), describe, middleware, the
access log, tracing, error details; on both drivers and every client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CALLERS, make_client, run_cli, running
from framewire import App, Context, ErrorResponse, Failure, Message, ProtocolError
from framewire.server.app import echo, search_app
from test_guide_compat import guide_server  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

pytestmark = pytest.mark.timeout(60)


class Point(msgspec.Struct):
    x: int
    y: int = 0


@dataclasses.dataclass
class Pair:
    a: str
    b: list[int]


class Named(TypedDict):
    name: str


class Odd:
    """A class msgspec cannot check."""


def typed_app() -> App:
    app = App()

    @app.action
    def move(p: Point) -> Point:
        """Move a point one step right."""
        return Point(p.x + 1, p.y)

    @app.action("pair")
    def pair(value: Pair) -> Pair:
        return Pair(value.a.upper(), sorted(value.b))

    @app.action("hello")
    def hello(value: Named) -> str:
        return f"hello {value['name']}"

    @app.action("double")
    def double(n: int) -> int:
        return n * 2

    @app.action("words")
    def words(value: list[str] | None) -> int:
        return 0 if value is None else len(value)

    @app.action("later")
    async def later(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    @app.action("untyped")
    def untyped(value):  # type: ignore[no-untyped-def]
        return value

    @app.action("fail", errors=["out-of-stock"])
    def fail(value: Any) -> Any:
        raise Failure("out-of-stock", "None left.", details={"item": value, "left": 0})

    return app


# -- the App itself, no network ---------------------------------------------------


def answer(app: App, action: str, value: Any) -> Any:
    reply = app(Message.from_json({"action": action, "value": value}))
    assert isinstance(reply, Message)
    return reply.json()


def test_typed_values_are_converted_and_results_sent_as_json() -> None:
    app = typed_app()
    assert answer(app, "move", {"x": 1}) == {"result": {"x": 2, "y": 0}}
    assert answer(app, "pair", {"a": "q", "b": [3, 1]}) == {"result": {"a": "Q", "b": [1, 3]}}
    assert answer(app, "hello", {"name": "ann"}) == {"result": "hello ann"}
    assert answer(app, "double", 21) == {"result": 42}
    assert answer(app, "words", None) == {"result": 0}
    assert answer(app, "untyped", {"any": [1]}) == {"result": {"any": [1]}}


@pytest.mark.parametrize(
    ("action", "value", "message", "details"),
    [
        ("move", {"x": "a"}, "$.x: expected int, got str", {"path": "$.x", "expected": "int", "got": "str"}),
        ("move", {}, "$: object missing required field `x`", {"path": "$"}),
        ("pair", {"a": "q", "b": [1, "2"]}, "$.b[1]: expected int, got str", {"path": "$.b[1]"}),
        ("double", "5", "$: expected int, got str", {"expected": "int", "got": "str"}),
        ("words", [1], "$[0]: expected str, got int", {"path": "$[0]"}),
    ],
)
def test_a_value_that_does_not_fit_is_invalid_value_saying_where_and_what(
    action: str, value: Any, message: str, details: dict[str, Any]
) -> None:
    app = typed_app()
    with pytest.raises(Exception) as raised:
        app(Message.from_json({"action": action, "value": value}))
    error = raised.value
    assert getattr(error, "code", None) == "invalid-value"
    assert error.message == message  # type: ignore[attr-defined]
    assert details.items() <= error.details.items()  # type: ignore[attr-defined]


_JSON = st.recursive(
    # (integers whose double still fits 64 bits: the "double" action answers with 2n)
    st.none() | st.booleans() | st.integers(-(2**62), 2**62 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(action=st.sampled_from(["move", "pair", "hello", "double", "words"]), value=_JSON)
def test_any_json_value_is_converted_or_refused_as_invalid_value(action: str, value: Any) -> None:
    # Whatever a peer sends as the value: the action's answer, or
    # invalid-value; never another error (a handler-error would be the
    # action running on a value it did not declare).
    app = typed_app()
    try:
        app(Message.from_json({"action": action, "value": value}))
    except ProtocolError as exc:
        assert exc.code == "invalid-value", exc
        assert exc.message.startswith("$")
        assert isinstance(exc.details, dict) and exc.details["path"].startswith("$")


def test_registration_refuses_functions_that_cannot_be_actions() -> None:
    app = App()
    with pytest.raises(TypeError, match=r"'none'.*takes no parameter"):
        app.action("none")(lambda: 1)

    def three(value: Any, context: Any, extra: Any) -> Any:
        return value

    with pytest.raises(TypeError, match="three requires extra"):
        app.action("three")(three)

    def keyword(value: Any, *, must: int) -> Any:
        return value

    with pytest.raises(TypeError, match="keyword requires must"):
        app.action("keyword")(keyword)

    def odd(value: Odd) -> None:
        return None

    with pytest.raises(TypeError, match=r"odd.*not one msgspec can check"):
        app.action("odd")(odd)

    def lost(value: NoSuchName) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(TypeError, match=r"lost.*annotations do not resolve"):
        app.action("lost")(lost)
    with pytest.raises(ValueError, match="error code"):
        app.action("x", errors=["Not A Code"])

    def fine(value: Any, context: Any = None, extra: int = 1) -> Any:
        return value

    app.action("fine")(fine)  # defaults beyond the value and the context are fine
    assert app.action_names() == ["fine"]


def test_describe_lists_actions_with_their_schemas_and_codes() -> None:
    document = typed_app().describe()
    actions = {a["name"]: a for a in document["actions"]}
    assert document["framewire"]
    assert actions["move"]["doc"] == "Move a point one step right."
    assert actions["move"]["value"]["$defs"]["Point"]["required"] == ["x"]
    assert actions["double"]["value"] == {"type": "integer"}
    assert actions["untyped"]["value"] == {} and actions["untyped"]["result"] == {}
    assert actions["fail"]["errors"] == ["out-of-stock"]
    assert actions["later"]["result"] == {"type": "integer"}


def test_middleware_runs_in_order_around_sync_and_async_actions() -> None:
    app = App()
    seen: list[str] = []

    @app.middleware
    def outer(context: Context, call_next: Any) -> Any:
        seen.append(f"outer {context.action} {context.value}")
        return call_next()

    @app.middleware
    async def inner(context: Context, call_next: Any) -> Any:
        seen.append("inner")
        result = await call_next()
        seen.append(f"inner saw {result}")
        return result

    @app.action("sync")
    def sync(n: int) -> int:
        return n + 1

    @app.action("coro")
    async def coro(n: int) -> int:
        return n + 2

    for action, want in (("sync", 2), ("coro", 3)):
        seen.clear()
        reply = app(Message.from_json({"action": action, "value": 1}))
        assert not isinstance(reply, Message)  # an async middleware: answered later
        assert asyncio.run(_awaited(reply)).json() == {"result": want}
        assert seen == [f"outer {action} 1", "inner", f"inner saw {want}"]


async def _awaited(reply: Any) -> Any:
    return await reply


def test_a_sync_middleware_around_an_async_action_passes_its_awaitable() -> None:
    app = App()

    @app.middleware
    def passing(context: Context, call_next: Any) -> Any:
        return call_next()

    @app.action("coro")
    async def coro(n: int) -> int:
        return n * 3

    reply = app(Message.from_json({"action": "coro", "value": 2}))
    assert asyncio.run(_awaited(reply)).json() == {"result": 6}


# -- over the network: both drivers, every client -----------------------------------


@pytest.fixture(scope="module")
def kv(driver: str) -> Iterator[Any]:
    import kv as kv_module

    with running(kv_module.app) as server:
        yield server


@pytest.mark.parametrize("kind", CALLERS)
def test_the_typed_kv_app_from_the_docs_works_end_to_end(kv: Any, kind: str) -> None:
    import kv as kv_module

    token = {"token": kv_module.TOKEN}
    key = f"k-{kind}"
    with make_client(kind, port=kv.port) as client:
        stored = client.call("put", {"key": key, "value": [1, 2]}, extensions=token)
        assert stored == {"key": key, "created": True}
        assert client.call("get", key) == [1, 2]
        typed = client.call("put", {"key": key, "value": 3}, extensions=token, result_type=kv_module.Stored)
        assert typed == kv_module.Stored(key, False)
        assert key in client.call("keys", "k-")
        with pytest.raises(ErrorResponse) as refused:
            client.call("put", {"key": key})
        assert refused.value.code == "unauthorized" and refused.value.details == {"action": "put"}
        with pytest.raises(ErrorResponse) as invalid:
            client.call("put", {"key": 5}, extensions=token)
        assert invalid.value.code == "invalid-value"
        assert invalid.value.message == "$.key: expected str, got int"
        assert invalid.value.details["path"] == "$.key"
        with pytest.raises(ErrorResponse) as missing:
            client.call("get", "nope")
        assert missing.value.code == "not-found" and missing.value.details == {"key": "nope"}
        with pytest.raises(ErrorResponse) as unknown:
            client.call("nosuch")
        assert unknown.value.code == "unknown-action" and unknown.value.details is None
        described = client.describe()
        names = [a["name"] for a in described["actions"]]
        assert names == ["put", "get", "keys", "scan", "delete"]
        put = described["actions"][0]
        assert put["doc"] == "Store a value under a key." and put["value"]["$defs"]["Entry"]["required"] == [
            "key"
        ]
        # The connection is kept through every error: one more call works.
        assert client.call("delete", key, extensions=token) is True


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_describe_without_an_app_lists_no_actions_and_call_needs_a_result(kind: str) -> None:
    with running(echo) as server, make_client(kind, port=server.port) as client:
        assert client.describe()["actions"] == []
        with pytest.raises(ProtocolError, match="not a JSON action result"):
            client.call("anything", 1)  # echo answers the request itself


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_call_works_against_the_guide_s_server(guide_server: int, kind: str) -> None:  # noqa: F811
    # The guide's server answers one request per connection, then closes.
    for query, start in (("morpheus", "Follow the white rabbit"), ("nobody", "No match for 'nobody'")):
        with make_client(kind, port=guide_server) as client:
            assert client.call("search", query).startswith(start)


@pytest.mark.parametrize("kind", ["blocking", "asyncio"])
def test_describe_of_a_server_that_does_not_know_it_says_so(guide_echo: int, kind: str) -> None:
    # An echo written the guide's way answers the probe as a request.
    with (
        make_client(kind, port=guide_echo) as client,
        pytest.raises(ProtocolError, match="does not describe"),
    ):
        client.describe()


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize("threads", [0, 2])
def test_the_access_log_writes_a_line_per_request(caplog: pytest.LogCaptureFixture, threads: int) -> None:
    app = typed_app()
    caplog.set_level(logging.INFO, logger="framewire.access")
    with (
        running(app, access_log=True, threads=threads) as server,
        make_client("blocking", port=server.port) as c,
    ):
        assert c.call("double", 2) == 4
        assert c.call("later", 1) == 2  # answered later, on the event loop
        with pytest.raises(ErrorResponse):
            c.call("double", "x")
        c.request(Message.from_json({"action": "double", "value": 1}, extensions={"framewire-id": "r 7"}))
        c.ping()
    lines = [r for r in caplog.records if r.name == "framewire.access"]
    texts = [r.getMessage() for r in lines]
    assert len(lines) == 5, texts
    assert texts[0].startswith("127.0.0.1:") and " double ok " in texts[0]
    assert " later ok " in texts[1]
    assert " double invalid-value " in texts[2]
    assert texts[3].endswith('id="r 7"')  # a peer's string, quoted: one line whatever it holds
    assert " framewire-ping ok " in texts[4]
    fields = lines[2].access  # type: ignore[attr-defined]
    assert fields["outcome"] == "invalid-value" and fields["bytes_in"] > 0 and fields["bytes_out"] > 0
    assert fields["duration_ms"] >= 0


def test_the_access_log_is_off_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with running(search_app()) as server, make_client("blocking", port=server.port) as client:
        client.call("search", "ring")
    assert not [r for r in caplog.records if r.name == "framewire.access"]


# -- the command line, as a person uses it --------------------------------------------


def test_serve_with_access_log_in_json_and_the_commands_that_use_extensions(spawn: Any) -> None:
    server = spawn("serve", "--app", "kv:app", "--app-dir", str(EXAMPLES), "--port", "0", "--access-log",
                   "--log-format", "json")  # fmt: skip
    port = str(server.port())
    refused = run_cli("call", "127.0.0.1", port, "put", '{"key": "a", "value": 1}')
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "framewire: put failed: unauthorized: This action needs the token extension."
        ' (details: {"action": "put"})'
    )
    stored = run_cli("call", "127.0.0.1", port, "put", '{"key": "a", "value": 1}', "--ext", "token=s3cret")
    assert stored.returncode == 0 and json.loads(stored.stdout) == {"key": "a", "created": True}
    got = run_cli("request", "127.0.0.1", port, "--json", '{"action": "get", "value": "a"}', "--ext",
                  "framewire-id=9", "--show-header")  # fmt: skip
    assert got.returncode == 0 and json.loads(got.stdout.splitlines()[0])["framewire-id"] == 9
    table = run_cli("describe", "127.0.0.1", port)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split() == ["ACTION", "VALUE", "RESULT", "DOC"]
    assert table.stdout.splitlines()[2].split()[:3] == ["put", "Entry", "Stored"]
    assert "keys    str | None  list[str]" in table.stdout
    document = run_cli("describe", "127.0.0.1", port, "--json")
    names = [a["name"] for a in json.loads(document.stdout)["actions"]]
    assert names == ["put", "get", "keys", "scan", "delete"]
    bad = run_cli("call", "127.0.0.1", port, "get", "a", "--ext", "nonsense")
    assert bad.returncode == 2 and "'nonsense' is not KEY=VALUE" in bad.stderr
    code, _, err = server.stop()
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(lines) == len(err.strip().splitlines())  # every line a JSON object
    access = [line for line in lines if line["logger"] == "framewire.access"]
    assert [line["outcome"] for line in access] == ["unauthorized", "ok", "ok", "ok", "ok"]
    assert [line["action"] for line in access] == [
        "put",
        "put",
        "get",
        "framewire-describe",
        "framewire-describe",
    ]
    assert access[2]["id"] == "9" and access[2]["bytes_in"] > 0


def test_describe_of_a_server_that_cannot_is_one_line(spawn: Any) -> None:
    server = spawn("serve", "--app", "echo", "--port", "0")
    listed = run_cli("describe", "127.0.0.1", str(server.port()))
    assert listed.returncode == 0 and listed.stdout.strip().endswith(": 0 actions")
    nothing = run_cli("describe", "127.0.0.1", "1")
    assert nothing.returncode == 1 and len(nothing.stderr.strip().splitlines()) == 1


# -- tracing --------------------------------------------------------------------------


def test_tracing_imports_nothing_when_open_telemetry_is_not_set_up() -> None:
    code = (
        "import sys, framewire\n"
        "from framewire import Client\n"
        "from framewire.server import Server\n"
        "from framewire.server.app import search_app\n"
        "with Server(search_app(), '127.0.0.1', 0) as s, Client('127.0.0.1', s.port) as c:\n"
        "    assert c.call('search', 'ring')\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def exporter() -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # set once a process
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize("kind", CALLERS)
@pytest.mark.parametrize("action", ["double", "later", "fail"])
def test_a_trace_continues_from_the_client_span_to_the_server_span(
    exporter: Any, kind: str, action: str
) -> None:
    from opentelemetry.trace import SpanKind, StatusCode

    exporter.clear()
    with running(typed_app()) as server, make_client(kind, port=server.port) as client:
        try:
            client.call(action, 3)
        except ErrorResponse:
            assert action == "fail"
    spans = exporter.get_finished_spans()
    client_span = next(s for s in spans if s.kind == SpanKind.CLIENT)
    server_span = next(s for s in spans if s.kind == SpanKind.SERVER)
    assert client_span.name == server_span.name == action
    assert server_span.context.trace_id == client_span.context.trace_id
    assert server_span.parent is not None and server_span.parent.span_id == client_span.context.span_id
    assert server_span.attributes["rpc.system"] == "framewire"
    assert server_span.attributes["rpc.method"] == action
    assert server_span.attributes["network.peer.address"] == "127.0.0.1"
    outcome = "out-of-stock" if action == "fail" else "ok"
    assert (
        server_span.attributes["framewire.outcome"] == client_span.attributes["framewire.outcome"] == outcome
    )
    assert (server_span.status.status_code == StatusCode.ERROR) == (action == "fail")


@pytest.mark.usefixtures("driver")
def test_metrics_count_by_action_with_the_app_s_declared_codes() -> None:
    from prometheus_client import CollectorRegistry

    from framewire.server.metrics import Metrics

    registry = CollectorRegistry()
    app = typed_app()
    with (
        running(app, metrics=Metrics(app, registry)) as server,
        make_client("blocking", port=server.port) as c,
    ):
        c.call("double", 1)
        c.call("later", 1)  # answered later: its duration under its action too
        for call in (("double", "x"), ("fail", 1), ("later", "x")):
            with pytest.raises(ErrorResponse):
                c.call(*call)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    assert value("framewire_errors_total", action="double", code="invalid-value") == 1
    assert value("framewire_errors_total", action="fail", code="out-of-stock") == 1  # declared
    assert value("framewire_errors_total", action="later", code="invalid-value") == 1
    assert value("framewire_request_duration_seconds_count", action="double") == 2
    assert value("framewire_request_duration_seconds_count", action="later") == 2
