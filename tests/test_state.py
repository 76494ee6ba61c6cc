"""The server's shared state and the engine's phases, sans I/O: admission,
refusal, counting and stopping, the same for every driver."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from framewire import Message, encode
from framewire.core.errors import ServerBusy
from framewire.io.netio import unix_peer
from framewire.server.app import echo
from framewire.server.config import ServerConfig
from framewire.server.engine import Phase, ServerConnection
from framewire.server.handlers import Dispatcher
from framewire.server.phase import TRANSITIONS, PhaseError, check
from framewire.server.state import PROXY_AND_TLS, ServerState, check_listen
from framewire.server.summary import Summary


class _Sock:
    """What admission asks of an accepted socket."""

    def __init__(self, family: int = socket.AF_INET) -> None:
        self.family = family
        self.closed = False
        self.sent = b""

    def setblocking(self, flag: bool) -> None:
        pass

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)

    def close(self) -> None:
        self.closed = True


class _Metrics:
    """The state's side of Metrics: what it counts."""

    class _Gauge:
        def inc(self, amount: int = 1) -> None:
            pass

    def __init__(self) -> None:
        self.counts = {"opened": 0, "closed": 0, "refused": 0}
        self.codes: list[str] = []
        self.paused = self._Gauge()

    def measured(self, call: Any) -> Any:
        return call

    def opened(self, engine: ServerConnection) -> None:
        engine.watch(self)  # type: ignore[arg-type]
        self.counts["opened"] += 1

    def closed(self, engine: ServerConnection) -> None:
        self.counts["closed"] += 1

    def refused(self) -> None:
        self.counts["refused"] += 1

    def error(self, code: str) -> None:
        self.codes.append(code)


def state(*, tls: bool = False, metrics: Any = None, **settings: Any) -> ServerState:
    dispatcher = Dispatcher(echo, threads=0, max_queued=4, wake=lambda: None)
    context = object() if tls else None
    made = ServerState(ServerConfig(**settings), dispatcher, context, metrics)  # type: ignore[arg-type]
    return made


def admit(
    server: ServerState, address: str = "192.0.2.1", family: int = socket.AF_INET
) -> ServerConnection | None:
    return server.admit(_Sock(family), (address, 4000), 0.0)  # type: ignore[arg-type]


def test_every_phase_move_follows_the_table_and_others_raise() -> None:
    for old in Phase:
        for new in Phase:
            if new in TRANSITIONS[old]:
                check(old, new)
            else:
                with pytest.raises(PhaseError, match=f"from {old.name} to {new.name}"):
                    check(old, new)
    assert TRANSITIONS[Phase.CLOSED] == {Phase.CLOSED}  # nothing comes back from a loss


def test_an_engine_refuses_a_move_its_phase_does_not_allow() -> None:
    conn = ServerConnection(ServerConfig(), 0.0, handshaking=True)
    with pytest.raises(PhaseError):
        conn.receive(b"", 0.0)  # an end of stream before the handshake: the driver's bug, not a close
    conn.secured(0.0, "TLSv1.3")
    assert conn.phase is Phase.OPEN


def test_connections_count_from_their_accept_to_their_close_and_past_the_limit_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = state(max_connections=2, max_refusing=1)
    first, second = admit(server), admit(server)
    assert first is not None and second is not None
    assert server.open == 2 and server.connections_total == 2
    refused = admit(server)
    assert refused is not None and refused.refused and refused.phase is Phase.HALF_CLOSING
    assert server.refusing == 1 and server.open == 2 and server.connections_total == 2
    sock = _Sock()
    caplog.clear()
    with caplog.at_level("WARNING", logger="framewire.server"):
        assert server.admit(sock, ("192.0.2.9", 1), 0.0) is None  # type: ignore[arg-type]  # past max_refusing
    assert sock.closed and ServerBusy.code.encode() in sock.sent
    assert caplog.messages == ["connection refused with server-busy: 2 connections open"]
    server.closed(refused)
    server.closed(first, "Connection reset by peer")
    assert server.open == 1 and server.refusing == 0 and first.phase is Phase.CLOSED


def test_every_path_is_counted_in_the_metrics_refusals_and_failed_handshakes_included() -> None:
    metrics = _Metrics()
    server = state(tls=True, max_connections=1, metrics=metrics)
    engine = admit(server)
    assert engine is not None and engine.handshaking and server.open == 1
    sock = _Sock()
    assert server.admit(sock, ("192.0.2.2", 1), 0.0) is None  # type: ignore[arg-type]
    assert sock.closed and sock.sent == b""  # over TLS: closed at once, no handshake spent on it
    server.closed(engine)  # a handshake that failed: closed as any connection
    assert server.open == 0 and metrics.counts == {"opened": 1, "closed": 1, "refused": 1}
    plain = state(max_connections=1, max_refusing=1, metrics=(counted := _Metrics()))
    kept, refused = admit(plain), admit(plain)
    assert kept is not None and refused is not None and admit(plain) is None
    plain.closed(refused)
    plain.closed(kept)
    assert counted.counts == {"opened": 1, "closed": 1, "refused": 2}
    assert counted.codes == ["server-busy", "server-busy"]  # the lingering refusal's, and the one at once


def test_only_trusted_balancers_may_send_a_proxy_header(caplog: pytest.LogCaptureFixture) -> None:
    plain = state()
    proxied = state(proxy_protocol=True, trusted_proxies=("10.0.0.0/8",))
    for server in (plain, proxied):
        server._by_address = not server.config.proxy_protocol  # as bind() sets it for TCP
    named = admit(plain)
    assert named is not None and named.peer == "192.0.2.1:4000"
    trusted = admit(proxied, "10.1.2.3")
    assert trusted is not None and trusted.phase is Phase.PROXY
    sock = _Sock()
    with caplog.at_level("INFO", logger="framewire.server"):
        assert proxied.admit(sock, ("192.0.2.1", 10), 0.0) is None  # type: ignore[arg-type]
    assert sock.closed and proxied.open == 1
    assert caplog.messages == [
        "connection from 192.0.2.1:10: not a trusted proxy (see trusted_proxies): closing"
    ]


def test_a_unix_peer_is_named_by_the_server_s_path(tmp_path: Any) -> None:
    server = state()
    listener = server.bind(f"unix:{tmp_path}/app.sock", 0, 8, None, None)
    try:
        left = socket.socket(socket.AF_UNIX)
        left.connect(f"{tmp_path}/app.sock")
        right, _ = listener.accept()
        with left, right:
            engine = server.admit(right, "", 0.0)
            assert engine is not None and engine.peer == unix_peer(right, f"unix:{tmp_path}/app.sock")
            assert f"unix:{tmp_path}/app.sock" in engine.peer
    finally:
        server.unbind()


def test_listen_settings_that_cannot_go_together_are_refused_once_for_every_driver() -> None:
    with pytest.raises(ValueError, match="PROXY protocol with TLS"):
        check_listen(object(), ServerConfig(proxy_protocol=True))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="backlog must be > 0"):
        check_listen(None, ServerConfig(), "127.0.0.1", 0)
    with pytest.raises(ValueError, match="unix_mode is for a unix:PATH host"):
        check_listen(None, ServerConfig(), "127.0.0.1", 8, 0o600)
    assert "not supported" in PROXY_AND_TLS


def test_a_stop_is_over_when_all_closed_at_the_grace_period_or_when_forced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = state(grace=5)
    assert server.stop_over(0.0, 0.0, forced=False)  # nothing open
    engine = admit(server)
    assert engine is not None
    with caplog.at_level("WARNING", logger="framewire.server"):
        assert not server.stop_over(4.9, 0.0, forced=False)
        assert server.stop_over(5.0, 0.0, forced=False)
        assert server.stop_over(1.0, 0.0, forced=True)
    assert caplog.messages == [
        "grace period of 5 s over: closing 1 connections",
        "stopping now, as asked again: closing 1 connections",
    ]


def test_the_summary_counts_every_connection_and_request_whatever_closed_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = state(log_summary=10)
    server.summary = Summary(10, 0.0)
    engines = [admit(server) for _ in range(3)]
    assert all(engines)
    for engine in engines:
        assert engine is not None
        engine.receive(encode(Message.from_bytes(b"x")), 1.0)
    closed = engines.pop()
    assert closed is not None
    server.closed(closed)
    with caplog.at_level("INFO", logger="framewire.server"):
        server.summary_line(10.0, [e for e in engines if e is not None])
    assert caplog.messages == [
        "last 10.0 s: 3 connections opened, 1 closed, 3 requests, 0 error responses; 2 open"
    ]


def test_a_handler_that_holds_the_loop_is_named_once_in_a_while(caplog: pytest.LogCaptureFixture) -> None:
    # A fake clock: the times a driver passes, before and after a read's requests.
    from framewire.core import limits

    server = state()
    conn = admit(server)
    assert conn is not None
    server.dispatcher.bind(conn)
    conn.receive(
        encode(Message.from_json({"action": "report", "value": 1})) + encode(Message.from_bytes(b"x")), 0.0
    )
    with caplog.at_level("WARNING", logger="framewire.server"):
        server.held(conn, 10.0, 10.0 + limits.SLOW_HANDLER / 2)  # quick enough: nothing
        assert not caplog.records
        # The next read, the same two requests, held the loop longer.
        conn.receive(
            encode(Message.from_json({"action": "report", "value": 1})) + encode(Message.from_bytes(b"x")),
            10.0,
        )
        server.held(conn, 10.0, 10.0 + limits.SLOW_HANDLER)
        (record,) = caplog.records
        assert "held the server's loop for 0.25 s (report, binary/octet-stream, from 192.0.2.1" in (
            record.getMessage()
        )
        assert "--threads N" in record.getMessage()
        server.held(conn, 11.0, 12.0)  # within the quiet time: not again
        assert len(caplog.records) == 1
        conn.receive(encode(Message.from_json({"action": "later", "value": 2})), 20.0)
        server.held(conn, 20.0, 20.0 + limits.SLOW_HANDLER)  # past it: again
        assert len(caplog.records) == 2 and "(later, from" in caplog.records[1].getMessage()
        # Each read's requests are let go once looked at, slow or not: an
        # idle connection does not hold on to its last (large) request.
        server.held(conn, 30.0, 30.0)
        assert conn.recent_actions(True) == []
