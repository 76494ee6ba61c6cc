"""The server over real sockets: keep-alive, pipelining, half-close, handlers."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

from conftest import connect, half_closed_exchange, read_messages, read_until_closed, running
from framewire import BadContent, Decoder, Message, encode, encode_many
from framewire.server import Server
from framewire.server.app import echo, search_app


def test_reports_the_port_it_bound(echo_server: Server) -> None:
    assert echo_server.port > 0
    assert echo_server.address[0] == "127.0.0.1"


def test_keep_alive_many_requests_on_one_connection(echo_server: Server) -> None:
    with connect(echo_server.port) as sock:
        decoder = Decoder()
        for i in range(20):
            sock.sendall(encode(Message.from_bytes(b"n%d" % i)))
            (response,) = read_messages(sock, 1, decoder)
            assert response.content == b"n%d" % i


def test_pipelined_responses_come_in_order(echo_server: Server) -> None:
    requests = [Message.from_bytes(os.urandom(i % 100)) for i in range(500)]
    with connect(echo_server.port) as sock:
        sock.sendall(encode_many(requests))
        responses = read_messages(sock, len(requests))
    assert [r.content for r in responses] == [r.content for r in requests]


def test_echo_keeps_type_and_encoding(echo_server: Server) -> None:
    request = Message.from_text("h\N{LATIN SMALL LETTER E WITH ACUTE}llo", encoding="latin-1")
    with connect(echo_server.port) as sock:
        sock.sendall(encode(request))
        (response,) = read_messages(sock, 1)
    assert (response.content_type, response.content_encoding, response.content) == (
        "text/plain",
        "latin-1",
        request.content,
    )


def test_200_connections_pipelining_50_requests_each(echo_server: Server) -> None:
    sockets = [connect(echo_server.port, timeout=30) for _ in range(200)]
    sent: list[list[bytes]] = []
    try:
        for i, sock in enumerate(sockets):
            contents = [os.urandom(1 + (i * 50 + j) % 300) for j in range(50)]
            sent.append(contents)
            sock.sendall(encode_many(Message.from_bytes(c) for c in contents))
        for sock, contents in zip(sockets, sent, strict=True):
            responses = read_messages(sock, 50)
            assert [r.content for r in responses] == contents
    finally:
        for sock in sockets:
            sock.close()


def test_request_split_into_single_bytes_with_pauses(echo_server: Server) -> None:
    data = encode(Message.from_json({"action": "search", "value": "\N{DOG FACE}"}))
    with connect(echo_server.port) as sock:
        for i in range(len(data)):
            sock.send(data[i : i + 1])
            time.sleep(0.002)  # the pauses are the input under test, not a wait
        (response,) = read_messages(sock, 1)
    assert response.json() == {"action": "search", "value": "\N{DOG FACE}"}


def test_half_close_still_gets_every_response(echo_server: Server) -> None:
    requests = [Message.from_bytes(b"x" * i) for i in range(1, 30)]
    answers = half_closed_exchange(echo_server.port, requests)
    assert [m.content for m in answers] == [m.content for m in requests]


def test_large_content_round_trip(echo_server: Server) -> None:
    content = os.urandom(8 * 1024 * 1024)
    with connect(echo_server.port, timeout=30) as sock:
        result: list[Message] = []
        reader = threading.Thread(target=lambda: result.extend(read_messages(sock, 1)))
        reader.start()
        sock.sendall(encode(Message.from_bytes(content)))
        reader.join(30)
    assert result[0].content == content


def test_handler_that_raises_gets_handler_error_and_connection_stays() -> None:
    def handler(request: Message) -> Message:
        if request.content == b"boom":
            raise RuntimeError("kaput")
        return echo(request)

    with running(handler) as server, connect(server.port) as sock:
        sock.sendall(encode_many([Message.from_bytes(b"boom"), Message.from_bytes(b"ok")]))
        failed, fine = read_messages(sock, 2)
        assert failed.is_error
        assert failed.json()["error"]["code"] == "handler-error"
        assert fine.content == b"ok"
        sock.sendall(encode(Message.from_bytes(b"again")))
        assert read_messages(sock, 1)[0].content == b"again"


def test_handler_returning_something_else_or_too_big() -> None:
    def handler(request: Message) -> Message:
        if request.content == b"none":
            return None  # type: ignore[return-value]
        return Message.from_bytes(b"", extensions={"huge": "x" * 70_000})

    with running(handler) as server, connect(server.port) as sock:
        sock.sendall(encode_many([Message.from_bytes(b"none"), Message.from_bytes(b"big")]))
        for response in read_messages(sock, 2):
            assert response.json()["error"]["code"] == "handler-error"


def test_content_errors_from_the_handler_keep_the_connection() -> None:
    with running(search_app()) as server, connect(server.port) as sock:
        sock.sendall(
            encode_many(
                [
                    Message(b"{not json", "text/json", "utf-8"),
                    Message(b"{}", "text/json", "rot13"),
                    Message.from_json({"action": "search", "value": "ring"}),
                ]
            )
        )
        bad_json, bad_encoding, good = read_messages(sock, 3)
    assert bad_json.json()["error"]["code"] == BadContent.code
    assert bad_encoding.json()["error"]["code"] == "bad-encoding"
    assert "Misty Mountains" in good.json()["result"]


def test_framing_error_answers_earlier_requests_then_the_error_then_closes(echo_server: Server) -> None:
    with connect(echo_server.port) as sock:
        sock.sendall(encode(Message.from_bytes(b"first")) + struct.pack(">H", 1) + b"{")
        data = read_until_closed(sock)
    first, error = Decoder().feed(data)
    assert first.content == b"first"
    assert error.is_error and error.json()["error"]["code"] == "bad-header-length"


def test_peer_vanishing_does_not_hurt_others(echo_server: Server) -> None:
    for _ in range(20):
        sock = connect(echo_server.port)
        sock.sendall(encode(Message.from_bytes(b"x" * 1000))[:50])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST mid-message
    with connect(echo_server.port) as sock:
        sock.sendall(encode(Message.from_bytes(b"still here")))
        assert read_messages(sock, 1)[0].content == b"still here"


def test_close_from_python_answers_and_exits() -> None:
    server = Server(echo, "127.0.0.1", 0).start()
    sock = connect(server.port)
    sock.sendall(encode(Message.from_bytes(b"ping")))
    assert read_messages(sock, 1)[0].content == b"ping"
    server.close()
    assert read_until_closed(sock) == b""
    sock.close()
    assert server.connections == 0


def test_the_server_can_be_subclassed_in_either_build() -> None:
    # Compiled (a wheel built with a compiler), Server is a native class:
    # a subclass written in Python must work as it does in pure Python.
    class Counting(Server):
        def __init__(self) -> None:
            super().__init__(echo, "127.0.0.1", 0)
            self.closes = 0

        def close(self, timeout: float | None = None) -> None:
            self.closes += 1
            super().close(timeout)

    with Counting() as server:
        assert server.grace == 10.0  # the config's values, as attributes
        with connect(server.port) as sock:
            sock.sendall(encode(Message.from_bytes(b"sub")))
            assert read_messages(sock, 1)[0].content == b"sub"
    assert server.closes == 1  # __exit__ calls the override
