"""The blocking client and the multi-connection client, against real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from conftest import read_messages, running
from framewire import Failure, IncompleteMessage, Message, UnknownAction, encode
from framewire.client import Client
from framewire.client.concurrent import echo_concurrently, request_concurrently
from framewire.core.decoder import Decoder
from framewire.core.errors import ConnectionClosed, ErrorResponse, ProtocolError
from framewire.server import Server
from framewire.server.app import App, echo, search_app
from framewire.server.peer import Context
from framewire.tools.rawecho import MulticonnEchoServer, listen


@contextmanager
def fake_server(behaviour: Callable[[socket.socket], object]) -> Iterator[int]:
    """A one-connection server that does ``behaviour`` with the accepted socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    errors: list[BaseException] = []
    ended = threading.Event()

    def serve() -> None:
        try:
            try:
                conn, _ = listener.accept()
            except OSError:
                if ended.is_set():
                    # The test was over before this thread took its connection
                    # (a slow start under load): closing the listener was the
                    # error, and there was nothing left to serve.
                    return
                raise
            with conn:
                conn.settimeout(10)
                behaviour(conn)
        except BaseException as exc:  # raised in the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        ended.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes an accept() under way
        listener.close()
        thread.join(10)
        assert not thread.is_alive(), "the fake server did not finish"
    if errors:
        raise errors[0]


def test_request_and_pipelining(echo_server: Server) -> None:
    with Client("127.0.0.1", echo_server.port) as client:
        assert client.request(Message.from_bytes(b"one")).content == b"one"
        client.send(Message.from_bytes(b"two"), Message.from_bytes(b"three"))
        assert client.receive().content == b"two"
        assert client.receive().content == b"three"
        many = [Message.from_bytes(b"%d" % i) for i in range(3000)]
        assert [r.content for r in client.request_many(many)] == [m.content for m in many]


def test_request_many_survives_server_backpressure() -> None:
    with running(high_water=4096, max_in_flight=8) as server, Client("127.0.0.1", server.port) as client:
        many = [Message.from_bytes(b"x" * 1000) for _ in range(2000)]
        assert len(client.request_many(many)) == 2000


def test_nothing_listening_is_connection_refused() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = placeholder.getsockname()[1]
        with pytest.raises(ConnectionRefusedError, match="nothing is listening"):
            Client("127.0.0.1", port).connect()


def test_no_answer_in_time_is_timeout() -> None:
    done = threading.Event()
    with fake_server(lambda conn: done.wait(10)) as port, Client("127.0.0.1", port, timeout=0.3) as client:
        with pytest.raises(TimeoutError, match="no answer"):
            client.request(Message.from_bytes(b"hello"))
        done.set()


def read_request(conn: socket.socket) -> None:
    # All of it: closing with unread bytes would send a reset instead of FIN.
    assert read_messages(conn, 1)


def reset(conn: socket.socket) -> None:
    read_request(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def test_peer_reset_is_connection_reset() -> None:
    with fake_server(reset) as port, Client("127.0.0.1", port) as client:
        with pytest.raises(ConnectionResetError):
            client.request(Message.from_bytes(b"hello"))


def test_peer_closing_mid_message_is_incomplete_message() -> None:
    def half_answer(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(encode(Message.from_bytes(b"0123456789"))[:-3])

    with fake_server(half_answer) as port, Client("127.0.0.1", port) as client:
        with pytest.raises(IncompleteMessage):
            client.request(Message.from_bytes(b"hello"))


def test_peer_closing_before_answering_is_connection_closed() -> None:
    with fake_server(read_request) as port, Client("127.0.0.1", port) as client:
        with pytest.raises(ConnectionClosed):
            client.request(Message.from_bytes(b"hello"))


def test_error_response_is_raised_with_its_code() -> None:
    with running(search_app()) as server, Client("127.0.0.1", server.port) as client:
        with pytest.raises(ErrorResponse) as info:
            client.request(Message.from_json([1]))  # (the demo answers a JSON object without an action)
        assert info.value.code == "bad-content"
        # The connection goes on after a content error.
        answer = client.request(Message.from_json({"action": "search", "value": "morpheus"}))
        assert "white rabbit" in answer.json()["result"]
        with Client("127.0.0.1", server.port, check=False) as unchecked:
            assert unchecked.request(Message.from_json([1])).is_error


def test_request_concurrently_sends_each_request_once_and_answers_in_order() -> None:
    seen: list[bytes] = []

    def counting(request: Message) -> Message:
        seen.append(request.content)
        return Message.from_bytes(request.content)

    with running(counting) as server:
        requests = [Message.from_bytes(b"r%d" % i) for i in range(30)]
        answers = request_concurrently("127.0.0.1", server.port, requests, connections=4)
        assert [a.content for a in answers] == [r.content for r in requests]
        assert sorted(seen) == sorted(r.content for r in requests)  # each handled once
        few = request_concurrently("127.0.0.1", server.port, requests[:2], connections=50)
        assert [a.content for a in few] == [b"r0", b"r1"]


def test_request_concurrently_speaks_tls_and_checks_ids_as_the_clients_do() -> None:
    from conftest import tls

    with running(echo, ssl_context=tls().server()) as server:
        requests = [Message.from_bytes(b"t%d" % i) for i in range(12)]
        answers = request_concurrently(
            "127.0.0.1", server.port, requests, connections=3, ssl_context=tls().client(), ids=True
        )
        assert [a.content for a in answers] == [r.content for r in requests]
        assert [a.get("framewire-id") for a in answers[:3]] == [1, 1, 1]  # each connection counts its own
        with pytest.raises(ConnectionError, match=r"^connection 1 to 127\.0\.0\.1:\d+: "):
            request_concurrently("127.0.0.1", server.port, requests[:1], timeout=5)  # plain to a TLS port


def test_one_rule_for_error_responses_in_every_call() -> None:
    # Raised by default (with every response on the exception), returned with check=False.
    requests = [
        Message.from_bytes(b"ok"),
        Message(b"bad", "text/plain", "zlib_codec"),
        Message.from_bytes(b"2"),
    ]
    with running(echo) as server:
        with Client("127.0.0.1", server.port) as client:
            with pytest.raises(ErrorResponse) as caught:
                client.request_many(requests)
            assert caught.value.code == "bad-encoding"
            assert [r.is_error for r in caught.value.responses] == [False, True, False]
        with Client("127.0.0.1", server.port, check=False) as unchecked:
            assert [r.is_error for r in unchecked.request_many(requests)] == [False, True, False]
        with pytest.raises(ErrorResponse) as concurrently:
            request_concurrently("127.0.0.1", server.port, requests, connections=2)
        assert len(concurrently.value.responses) == 3
        unchecked_answers = request_concurrently("127.0.0.1", server.port, requests, check=False)
        assert [r.is_error for r in unchecked_answers] == [False, True, False]

        async def aio_many() -> ErrorResponse:
            from framewire import aio

            async with await aio.connect("127.0.0.1", server.port) as client:
                try:
                    await client.request_many(requests)
                except ErrorResponse as exc:
                    return exc
            raise AssertionError("no error raised")

        assert len(asyncio.run(aio_many()).responses) == 3


def test_app_unknown_action_and_failures_with_codes_of_their_own() -> None:
    app = App()

    @app.action("get")
    def get(value: Any) -> Any:
        raise Failure("not-found", f"There is no key {value!r}.")

    @app.action("later")
    async def later(value: Any) -> Any:
        raise Failure("quota-exceeded", "Too many.")

    with running(app) as server, Client("127.0.0.1", server.port) as client:
        with pytest.raises(ErrorResponse) as unknown:
            client.request(Message.from_json({"action": "nosuch"}))
        assert unknown.value.code == "unknown-action" and isinstance(unknown.value.error, UnknownAction)
        assert "get" in unknown.value.message
        with pytest.raises(ErrorResponse) as missing:
            client.request(Message.from_json({"action": "get", "value": "a"}))
        assert missing.value.code == "not-found" and isinstance(missing.value.error, Failure)
        assert missing.value.message == "There is no key 'a'."
        with pytest.raises(ErrorResponse) as quota:
            client.request(Message.from_json({"action": "later"}))
        assert quota.value.code == "quota-exceeded"
        with pytest.raises(ErrorResponse):  # the connection is kept: it still answers
            client.request(Message.from_json({"action": "get", "value": "b"}))
    with pytest.raises(ValueError, match="lower-case letters"):
        Failure("Not Found", "x")


def test_echo_concurrently_against_the_raw_multiconn_server() -> None:
    with MulticonnEchoServer(listen("127.0.0.1", 0)) as server:
        reports = echo_concurrently("127.0.0.1", server.port, [b"Message 1", b"Message 2"], connections=100)
    assert all(r.error is None and r.data == b"Message 1Message 2" for r in reports)


def test_concurrent_client_reports_refused_connections() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        reports = echo_concurrently(
            "127.0.0.1", placeholder.getsockname()[1], [b"x"], connections=3, timeout=5
        )
    assert all(r.error for r in reports)


def test_request_many_keeps_the_answers_that_came_before_a_close() -> None:
    def answer_two_then_close(conn: socket.socket) -> None:
        requests = read_messages(conn, 5)  # all of them: unread bytes would make the close a reset
        conn.sendall(b"".join(encode(m) for m in requests[:2]))

    with fake_server(answer_two_then_close) as port, Client("127.0.0.1", port) as client:
        with pytest.raises(ConnectionClosed) as info:
            client.request_many([Message.from_bytes(b"%d" % i) for i in range(5)])
    assert [m.content for m in info.value.responses] == [b"0", b"1"]


@pytest.mark.usefixtures("driver")
def test_handlers_and_actions_get_a_context_with_extensions_and_peer() -> None:
    app = App()

    @app.action("trace")
    def trace(value: Any, context: Context) -> Any:
        return {"trace": context.extensions.get("trace-id"), "address": context.address, "tls": context.tls}

    def raw(request: Message, context: Context) -> Message:
        assert context.request is request
        return Message.from_json({"trace": context.extensions.get("trace-id")})

    request = Message.from_json({"action": "trace"}, extensions={"trace-id": "t-1"})
    for handler in (app, raw):
        with running(handler) as server, Client("127.0.0.1", server.port) as client:
            body = client.request(request).json()
            assert body.get("result", body)["trace"] == "t-1"
            if handler is app:
                assert body["result"]["address"].startswith("127.0.0.1:") and body["result"]["tls"] is None
            assert server.connections == 1 and server.connections_total == 1 and server.requests_total == 1


@pytest.mark.usefixtures("driver")
def test_a_call_that_timed_out_never_hands_its_answer_to_the_next() -> None:
    import time as clock

    app = App()

    @app.action("slow")
    def slow(value: Any) -> Any:
        clock.sleep(value)
        return "slow"

    @app.action("fast")
    def fast(value: Any) -> Any:
        return "fast"

    with running(app, threads=2) as server, Client("127.0.0.1", server.port, timeout=0.2) as client:
        with pytest.raises(TimeoutError):
            client.request(Message.from_json({"action": "slow", "value": 0.5}))
        client.timeout = 2
        assert client.request(Message.from_json({"action": "fast"})).json() == {"result": "fast"}
        client.timeout = 0.2
        with pytest.raises(TimeoutError):
            client.request_many([Message.from_json({"action": "slow", "value": 0.5})] * 2)
        client.timeout = 2
        assert client.request_many([Message.from_json({"action": "fast"})])[0].json() == {"result": "fast"}


def keepalive_of(sock: Any) -> tuple[int, int]:
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
    )


def accepted_socket(server: Any) -> Any:
    from conftest import engines

    (engine,) = engines(server)
    driver = engine.driver
    return driver.io.sock if hasattr(driver, "io") else driver.transport.get_extra_info("socket")


@pytest.mark.usefixtures("driver")
def test_tcp_keepalive_is_on_for_accepted_and_client_sockets() -> None:
    with running(echo, keepalive=45) as server, Client("127.0.0.1", server.port, keepalive=30) as client:
        client.request(Message.from_bytes(b"x"))
        assert client._sock is not None
        assert keepalive_of(client._sock) == (1, 30)
        assert keepalive_of(accepted_socket(server)) == (1, 45)
    with running(echo, keepalive=0) as server, Client("127.0.0.1", server.port, keepalive=0) as client:
        client.request(Message.from_bytes(b"x"))
        assert client._sock is not None and keepalive_of(client._sock)[0] == 0
        assert keepalive_of(accepted_socket(server))[0] == 0


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize("threads", [0, 2])
def test_the_server_copies_request_ids_whatever_the_app_answers(threads: int) -> None:
    app = App()

    @app.action("ok")
    def ok(value: Any) -> Any:
        return value

    @app.action("fails")
    def fails(value: Any) -> Any:
        raise Failure("not-found", "no")

    @app.action("later")
    async def later(value: Any) -> Any:
        return value

    with running(app, threads=threads) as server, Client("127.0.0.1", server.port, check=False) as client:
        requests = [
            Message.from_json({"action": name, "value": 1}, extensions={"framewire-id": ident})
            for name, ident in (("ok", 7), ("fails", "abc"), ("later", 9), ("nosuch", 10))
        ]
        answers = client.request_many(requests)
        assert [a.get("framewire-id") for a in answers] == [7, "abc", 9, 10]
        assert [a.is_error for a in answers] == [False, True, False, True]
        plain = client.request(Message.from_json({"action": "ok", "value": 2}))
        assert plain.get("framewire-id") is None  # none asked, none added
    with running(app) as server, Client("127.0.0.1", server.port, ids=True) as tagged_client:
        assert tagged_client.request(Message.from_json({"action": "ok", "value": 3})).json() == {"result": 3}
        assert len(tagged_client.request_many([Message.from_json({"action": "ok", "value": 4})] * 5)) == 5


def test_a_client_with_ids_refuses_an_answer_out_of_step() -> None:
    with server_without_ids() as port, Client("127.0.0.1", port, ids=True) as client:
        with pytest.raises(ProtocolError, match="out of step"):
            client.request(Message.from_bytes(b"q"))
        assert client._sock is None  # closed: nothing more is trusted on it


@contextmanager
def server_without_ids() -> Iterator[int]:
    """A server that does not copy ids (not framewire): one answer, with none."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def answer_without_id() -> None:
            conn, _ = listener.accept()
            with conn:
                read_messages(conn, 1)
                conn.sendall(Message.from_bytes(b"x").encode())
                with contextlib.suppress(ConnectionResetError):
                    conn.recv(1)  # until the client aborts the connection (a reset)

        thread = threading.Thread(target=answer_without_id)
        thread.start()
        try:
            yield listener.getsockname()[1]
        finally:
            thread.join(10)


def test_connect_timeout_and_per_call_timeouts() -> None:
    import time as clock

    app = App()

    @app.action("slow")
    def slow(value: Any) -> Any:
        clock.sleep(value)
        return value

    with running(app, threads=2) as server:
        client = Client("127.0.0.1", server.port, timeout=0.1, connect_timeout=5)
        with client:
            # The call's own timeout wins over the client's, both ways.
            assert client.request(Message.from_json({"action": "slow", "value": 0.3}), timeout=5).json() == {
                "result": 0.3
            }
            with pytest.raises(TimeoutError, match=r"within 0\.05 s"):
                client.request(Message.from_json({"action": "slow", "value": 0.3}), timeout=0.05)
            answers = client.request_many(
                [Message.from_json({"action": "slow", "value": 0.2})] * 2, timeout=5
            )
            assert len(answers) == 2


def test_the_asyncio_client_has_ids_keepalive_and_a_connect_timeout() -> None:
    from framewire import aio

    async def exchange(port: int) -> list[Message]:
        client = await aio.connect("127.0.0.1", port, timeout=5, connect_timeout=2, keepalive=30, ids=True)
        async with client:
            sock = client._transport.get_extra_info("socket") if client._transport is not None else None
            assert sock is not None and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
            return await client.request_many([Message.from_bytes(b"%d" % i) for i in range(5)])

    with running(echo) as server:
        answers = asyncio.run(exchange(server.port))
    assert [a.get("framewire-id") for a in answers] == [1, 2, 3, 4, 5]

    async def out_of_step(port: int) -> None:
        client = await aio.connect("127.0.0.1", port, ids=True)
        async with client:
            await client.request(Message.from_bytes(b"q"))

    with server_without_ids() as port, pytest.raises(ProtocolError, match="out of step"):
        asyncio.run(out_of_step(port))


def test_a_call_s_timeout_is_one_deadline_not_one_per_read() -> None:
    # A server that trickles its answer a byte at a time: each read is
    # quick, but the whole answer takes longer than the call may.
    done = threading.Event()

    def trickle(conn: socket.socket) -> None:
        read_request(conn)
        for byte in Message.from_bytes(b"x" * 40).encode():
            if done.wait(0.02):  # the trickle's pace; stops once the client gave up
                return
            with contextlib.suppress(OSError):
                conn.sendall(bytes([byte]))

    with fake_server(trickle) as port, Client("127.0.0.1", port, timeout=0.3) as client:
        with pytest.raises(TimeoutError):
            client.request(Message.from_bytes(b"q"))
        done.set()


def test_answers_that_came_in_one_read_are_all_kept() -> None:
    def both_at_once(conn: socket.socket) -> None:
        read_messages(conn, 2)
        conn.sendall(Message.from_bytes(b"one").encode() + Message.from_bytes(b"two").encode())
        conn.recv(1)  # until the client closes

    with fake_server(both_at_once) as port, Client("127.0.0.1", port) as client:
        client.send(Message.from_bytes(b"a"), Message.from_bytes(b"b"))
        assert client.receive().content == b"one"
        assert client.receive().content == b"two"


def test_a_protocol_error_from_the_server_closes_the_connection() -> None:
    accepted: list[int] = []

    def garbage_then_echo(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(b"\x00\x00")  # a header length of 0
        with contextlib.suppress(OSError):
            conn.recv(1)
        accepted.append(1)

    with fake_server(garbage_then_echo) as port:
        client = Client("127.0.0.1", port)
        with pytest.raises(ProtocolError, match="bad-header-length"):
            client.request(Message.from_bytes(b"q"))
        assert client._sock is None  # nothing more is read from that stream
        client.close()
    assert accepted == [1]  # the server saw the client go


def silent(conn: socket.socket) -> None:
    """A server that reads and never answers, until the client leaves."""
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


@pytest.mark.parametrize("call", ["request", "request_many", "receive"])
def test_a_timeout_names_the_server_and_the_call_s_own_seconds(call: str) -> None:
    with fake_server(silent) as port, Client("127.0.0.1", port, timeout=5) as client:
        with pytest.raises(
            TimeoutError, match=rf"^\[Errno 110\] no answer from 127\.0\.0\.1:{port} within (\S+) s$"
        ) as e:
            if call == "request":
                client.request(Message.from_bytes(b"q"), timeout=0.2)
            elif call == "request_many":
                client.request_many([Message.from_bytes(b"q")] * 2, timeout=0.2)
            else:
                client.timeout = 0.2
                client.send(Message.from_bytes(b"q"))
                client.receive()
        assert str(e.value).endswith("within 0.2 s")


def test_the_client_s_timeout_bounds_sending_and_is_the_socket_s_after_a_call() -> None:
    with fake_server(silent) as port, Client("127.0.0.1", port, timeout=0.7) as client:
        client.send(Message.from_bytes(b"q"))
        assert client._sock is not None and client._sock.gettimeout() == 0.7
        with pytest.raises(TimeoutError):
            client.request_many([Message.from_bytes(b"q")], timeout=0.1)
        assert client._sock is None  # aborted: its late answers can reach no one


def test_after_send_and_receive_the_next_calls_get_their_own_answers() -> None:
    def echo_all(conn: socket.socket) -> None:
        decoder = Decoder()
        while data := conn.recv(65536):
            for message in decoder.feed(data):
                conn.sendall(message.encode())

    with fake_server(echo_all) as port, Client("127.0.0.1", port, timeout=5) as client:
        client.send(Message.from_bytes(b"1"), Message.from_bytes(b"2"))
        assert client.receive().content == b"1"
        client.send(Message.from_bytes(b"3"))
        assert [client.receive().content for _ in range(2)] == [b"2", b"3"]
        assert client.request(Message.from_bytes(b"4")).content == b"4"
        answers = client.request_many([Message.from_bytes(b"5"), Message.from_bytes(b"6")])
        assert [m.content for m in answers] == [b"5", b"6"]
        client.shutdown_write()  # the server's loop ends: it sees the end of requests
        with pytest.raises(
            ConnectionClosed, match=rf"^127\.0\.0\.1:{port} closed the connection before answering$"
        ):
            client.receive()


def heartbeats() -> set[threading.Thread]:
    """The clients' heartbeat threads alive now (other tests' may be among them)."""
    return {t for t in threading.enumerate() if t.name == "framewire-heartbeat"}


def test_no_heartbeat_thread_without_a_heartbeat() -> None:
    before = heartbeats()  # other tests' clients may still have theirs
    with fake_server(silent) as port:
        client = Client("127.0.0.1", port, timeout=5).connect()  # heartbeat=0, the default
        try:
            assert heartbeats() - before == set()
        finally:
            client.close()


def test_the_heartbeat_runs_in_a_named_daemon_thread() -> None:
    with fake_server(silent) as port:
        client = Client("127.0.0.1", port, heartbeat=60, timeout=5).connect()
        try:
            beats = list(heartbeats())
            assert len(beats) == 1 and beats[0].daemon  # it never keeps a program alive
        finally:
            client.close()
