"""Interoperation with programs written the guide's way, in both directions.

The guide's client and server below are written as the guide writes them:
selectors, ``connect_ex``, ``recv(4096)`` appended to a bytes buffer,
``struct`` for the 2-byte length, ``json`` for the header and content, and
one request per connection.
"""

from __future__ import annotations

import io
import json
import selectors
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import run_cli, running
from framewire.server.app import SEARCH_TABLE, search_app

DOG = "\N{DOG FACE}"

# Every test here runs on both drivers: the epoll server and framewire.aio.
pytestmark = pytest.mark.usefixtures("driver")


def json_encode(obj: Any, encoding: str) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode(encoding)


def json_decode(data: bytes, encoding: str) -> Any:
    with io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="") as tiow:
        return json.load(tiow)


def create_message(content_bytes: bytes, content_type: str, content_encoding: str) -> bytes:
    header = {
        "byteorder": sys.byteorder,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "content-length": len(content_bytes),
    }
    header_bytes = json_encode(header, "utf-8")
    return struct.pack(">H", len(header_bytes)) + header_bytes + content_bytes


class GuideReader:
    """The guide's receive side: protoheader, then JSON header, then content."""

    def __init__(self) -> None:
        self.buffer = b""
        self.header_len: int | None = None
        self.header: dict[str, Any] | None = None
        self.content: bytes | None = None

    def feed(self, data: bytes) -> bool:
        self.buffer += data
        if self.header_len is None and len(self.buffer) >= 2:
            self.header_len = struct.unpack(">H", self.buffer[:2])[0]
            self.buffer = self.buffer[2:]
        if self.header_len is not None and self.header is None and len(self.buffer) >= self.header_len:
            self.header = json_decode(self.buffer[: self.header_len], "utf-8")
            self.buffer = self.buffer[self.header_len :]
            for key in ("byteorder", "content-length", "content-type", "content-encoding"):
                if key not in self.header:
                    raise ValueError(f"Missing required header '{key}'.")
        if self.header is not None and self.content is None:
            length = self.header["content-length"]
            if len(self.buffer) >= length:
                self.content = self.buffer[:length]
                self.buffer = self.buffer[length:]
                return True
        return False


def guide_client(port: int, request: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """The guide's application client: one request, one response, then close."""
    sel = selectors.DefaultSelector()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    outgoing = create_message(
        json_encode(request["content"], request["encoding"])
        if request["type"] == "text/json"
        else request["content"],
        request["type"],
        request["encoding"],
    )
    reader = GuideReader()
    try:
        while True:
            events = sel.select(timeout=10)
            assert events, "the server did not answer in 10 s"
            for _, mask in events:
                if mask & selectors.EVENT_WRITE and outgoing:
                    try:
                        sent = sock.send(outgoing)
                    except BlockingIOError:
                        continue
                    outgoing = outgoing[sent:]
                    if not outgoing:
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    data = sock.recv(4096)
                    if not data:
                        raise RuntimeError("Peer closed.")
                    if reader.feed(data):
                        assert reader.header is not None and reader.content is not None
                        header = reader.header
                        if header["content-type"] == "text/json":
                            return header, json_decode(reader.content, header["content-encoding"])
                        return header, reader.content
    finally:
        sel.close()
        sock.close()


# The guide's own table, as its libserver.py has it (not framewire's copy).
GUIDE_TABLE = {
    "morpheus": "Follow the white rabbit. \U0001f430",
    "ring": "In the caves beneath the Misty Mountains. \U0001f48d",
    "\U0001f436": "\U0001f43e Playing ball! \U0001f3d0",
}


@pytest.fixture
def guide_server() -> Iterator[int]:
    """The guide's application server: one request per connection, then close."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, data=None)
    wake_r, wake_w = socket.socketpair()
    sel.register(wake_r, selectors.EVENT_READ, data="stop")

    def respond(header: dict[str, Any], content: bytes) -> bytes:
        if header["content-type"] == "text/json":
            request = json_decode(content, header["content-encoding"])
            action = request.get("action")
            if action == "search":
                query = request.get("value")
                answer = GUIDE_TABLE.get(query) or f"No match for '{query}'."
                body = {"result": answer}
            else:
                body = {"result": f"Error: invalid action '{action}'."}
            return create_message(json_encode(body, "utf-8"), "text/json", "utf-8")
        return create_message(
            b"First 10 bytes of request: " + content[:10], "binary/custom-server-binary-type", "binary"
        )

    def serve() -> None:
        readers: dict[socket.socket, GuideReader] = {}
        outgoing: dict[socket.socket, bytes] = {}
        while True:
            for key, mask in sel.select():
                if key.data == "stop":
                    return
                if key.data is None:
                    conn, _ = listener.accept()
                    conn.setblocking(False)
                    readers[conn] = GuideReader()
                    sel.register(conn, selectors.EVENT_READ, data="conn")
                    continue
                conn = key.fileobj  # type: ignore[assignment]
                if mask & selectors.EVENT_READ:
                    data = conn.recv(4096)
                    if not data:
                        sel.unregister(conn)
                        conn.close()
                        continue
                    reader = readers[conn]
                    if reader.feed(data):
                        assert reader.header is not None and reader.content is not None
                        outgoing[conn] = respond(reader.header, reader.content)
                        sel.modify(conn, selectors.EVENT_WRITE, data="conn")
                elif mask & selectors.EVENT_WRITE:
                    sent = conn.send(outgoing[conn])
                    outgoing[conn] = outgoing[conn][sent:]
                    if not outgoing[conn]:
                        sel.unregister(conn)
                        conn.close()  # the guide's server: one response, then close

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    wake_w.send(b"x")
    thread.join(10)
    listener.close()


# -- the guide's client against framewire serve -----------------------------------


@pytest.fixture
def search_port() -> Iterator[int]:
    with running(search_app()) as server:
        yield server.port


@pytest.mark.parametrize("query", ["morpheus", "ring", DOG])
def test_guide_client_search(search_port: int, query: str) -> None:
    header, body = guide_client(
        search_port,
        {"type": "text/json", "encoding": "utf-8", "content": {"action": "search", "value": query}},
    )
    assert header["content-type"] == "text/json"
    assert body == {"result": GUIDE_TABLE[query]}


def test_guide_client_no_match_and_unknown_action(search_port: int) -> None:
    request = {"type": "text/json", "encoding": "utf-8", "content": {"action": "search", "value": "x" + DOG}}
    assert guide_client(search_port, request)[1] == {"result": f"No match for 'x{DOG}'."}
    request["content"] = {"action": "dance", "value": DOG}
    assert guide_client(search_port, request)[1] == {"result": "Error: invalid action 'dance'."}


def _one_answer(port: int, data: bytes) -> bytes:
    # One message's bytes as they came: the 2-byte length, the header, the content.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        got = b""
        need = 2
        while True:
            while len(got) < need:
                chunk = sock.recv(65536)
                assert chunk, f"the connection closed after {got!r}"
                got += chunk
            if need == 2:
                need = 2 + struct.unpack(">H", got[:2])[0]
                continue
            size = 2 + struct.unpack(">H", got[:2])[0]
            total = size + json.loads(got[2:size])["content-length"]
            if need == total:
                return got[:total]
            need = total


def _guide_request(content: Any, content_type: str = "text/json", encoding: str = "utf-8") -> bytes:
    body = content if isinstance(content, bytes) else json_encode(content, encoding)
    return create_message(body, content_type, encoding)


#: Requests the guide's server answers (it fails on the others: see docs/protocol.md).
GUIDE_REQUESTS = {
    "morpheus": _guide_request({"action": "search", "value": "morpheus"}),
    "ring": _guide_request({"action": "search", "value": "ring"}),
    "dog": _guide_request({"action": "search", "value": DOG}),
    "a quote": _guide_request({"action": "search", "value": "it's"}),
    "unicode, no match": _guide_request({"action": "search", "value": "x\N{SNOWMAN}\N{DOG FACE}"}),
    "no value": _guide_request({"action": "search"}),
    "a number": _guide_request({"action": "search", "value": 5}),
    "a float": _guide_request({"action": "search", "value": 1.5}),
    "true": _guide_request({"action": "search", "value": True}),
    "empty string": _guide_request({"action": "search", "value": ""}),
    "another action": _guide_request({"action": "dance", "value": DOG}),
    "no action": _guide_request({"value": "morpheus"}),
    "action null": _guide_request({"action": None}),
    "action a number": _guide_request({"action": 7}),
    "utf-16 JSON": _guide_request({"action": "search", "value": "ring"}, encoding="utf-16"),
    "binary": _guide_request(b"binary\x00\xff" + DOG.encode(), "binary/custom-client-binary-type", "binary"),
    "short binary": _guide_request(b"abc", "binary/custom-client-binary-type", "binary"),
    "text/plain": _guide_request(b"hello there", "text/plain", "utf-8"),
    "application/json": _guide_request(b'{"action": "search", "value": "ring"}', "application/json", "utf-8"),
}


@pytest.mark.parametrize("name", list(GUIDE_REQUESTS))
def test_the_demo_answers_each_request_with_the_guide_s_own_bytes(
    search_port: int, guide_server: int, name: str
) -> None:
    data = GUIDE_REQUESTS[name]
    assert _one_answer(search_port, data) == _one_answer(guide_server, data)


def test_guide_client_binary(search_port: int) -> None:
    content = ("binary" + DOG).encode()
    header, body = guide_client(
        search_port, {"type": "binary/custom-client-binary-type", "encoding": "binary", "content": content}
    )
    assert header["content-type"] == "binary/custom-server-binary-type"
    assert body == b"First 10 bytes of request: " + content[:10]


def test_text_that_is_not_json_is_answered_as_the_guide_s_server_does(
    search_port: int, guide_server: int
) -> None:
    # The guide's server takes every content type but text/json as binary.
    content = "h\N{LATIN SMALL LETTER E WITH ACUTE}llo, plain text".encode("utf-16")
    request = {"type": "text/plain", "encoding": "utf-16", "content": content}
    theirs = guide_client(guide_server, request)
    ours = guide_client(search_port, request)
    assert ours == theirs
    assert ours[0]["content-type"] == "binary/custom-server-binary-type"
    assert ours[1] == b"First 10 bytes of request: " + content[:10]


def test_guide_client_utf16_request(search_port: int) -> None:
    request = {"type": "text/json", "encoding": "utf-16", "content": {"action": "search", "value": DOG}}
    assert guide_client(search_port, request)[1] == {"result": SEARCH_TABLE[DOG]}


# -- framewire request against the guide's server ---------------------------------


def test_framewire_request_search_on_the_guide_server(guide_server: int) -> None:
    result = run_cli("request", "127.0.0.1", str(guide_server), "search", DOG)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == GUIDE_TABLE[DOG]
    result = run_cli("request", "127.0.0.1", str(guide_server), "search", "nobody")
    assert result.stdout.strip() == "No match for 'nobody'."


def test_framewire_request_unknown_action_on_the_guide_server(guide_server: int) -> None:
    result = run_cli(
        "request", "127.0.0.1", str(guide_server), "--json", json.dumps({"action": "x", "value": DOG})
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Error: invalid action 'x'."


def test_framewire_request_binary_on_the_guide_server(guide_server: int) -> None:
    result = run_cli("request", "127.0.0.1", str(guide_server), "binary", DOG, "--show-header")
    assert result.returncode == 0, result.stderr
    header_line, body_line = result.stdout.strip().splitlines()
    assert json.loads(header_line)["content-type"] == "binary/custom-server-binary-type"
    assert body_line == repr(b"First 10 bytes of request: " + ("binary" + DOG).encode()[:10])


def test_pipelining_against_the_guide_server_says_it_closed(guide_server: int) -> None:
    result = run_cli("request", "127.0.0.1", str(guide_server), "search", "morpheus", "--count", "3")
    assert result.returncode == 1
    # It closed with the other requests unread: an orderly close or, when
    # they had arrived, its kernel's reset, which can cost the client the
    # answer already sent. Said either way, in one line, after the answer
    # when it came.
    assert "closed the connection" in result.stderr or "reset the connection" in result.stderr
    assert result.stderr.count("\n") == 1
    if result.stdout:
        assert result.stdout.startswith("Follow the white rabbit")
        assert result.stderr.rstrip().endswith("(after 1 answer)")
    assert "Traceback" not in result.stderr


def test_aio_client_against_the_guide_server(guide_server: int) -> None:
    # The guide's server answers one request, then closes: the client opens
    # a new connection for the next request. (Marked idempotent: the request
    # may cross the server's close on the wire, and is then sent again.)
    import asyncio

    from framewire import Message, aio

    async def main() -> None:
        client = await aio.connect("127.0.0.1", guide_server, timeout=10)
        async with client:
            for value, start in (("morpheus", "Follow the white rabbit"), ("nosuch", "No match")):
                message = Message.from_json({"action": "search", "value": value})
                answer = await client.request(message, idempotent=True)
                assert answer.json()["result"].startswith(start)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("content", "content_type", "answer"),
    [
        (b"{}", "text/json", {"result": "Error: invalid action 'None'."}),
        (b'{"action": "search", "value": [1]}', "text/json", {"result": "No match for '[1]'."}),
        (b"[1]", "text/json", "bad-content"),
        (b"null", "text/json", "bad-content"),
        (b"{not json", "text/json", "bad-content"),
        (b"", "binary/custom-client-binary-type", b"First 10 bytes of request: "),
    ],
)
def test_where_the_guide_s_server_fails_the_demo_answers_and_stays(
    search_port: int, content: bytes, content_type: str, answer: Any
) -> None:
    # docs/protocol.md, "The guide's demo application": each of these makes
    # the guide's server close the connection or never answer.
    from framewire import Client, Message

    with Client("127.0.0.1", search_port, timeout=10, check=False) as client:
        encoding = "utf-8" if content_type == "text/json" else "binary"
        response = client.request(Message(content, content_type, encoding))
        if isinstance(answer, dict):
            assert response.json() == answer
        elif isinstance(answer, bytes):
            assert response.content == answer
        else:
            error = response.error()
            assert error is not None and error.code == answer
        assert client.request(Message.from_json({"action": "search", "value": "ring"})).json() == {
            "result": GUIDE_TABLE["ring"]
        }  # the connection goes on
