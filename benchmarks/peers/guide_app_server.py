"""Peer: a model of the socket-programming guide's final application server
(its app-server.py and libserver.py), written for framewire's tests with the
same behaviour, faults included:

- one request per connection, the connection closed once its answer is sent;
- a ``text/json`` request is decoded with its ``content-encoding`` and
  answered by action (``search`` in the demo table, anything else "Error:
  invalid action"), every other content type with its first 10 bytes;
- the answer is written only ``if self.request:``: a request that is false
  (an empty content, ``{}``, ``[]``, ``0``, ``""``, ``null``) is never
  answered, and the loop spins on the writable socket;
- any exception while handling a connection (a header that is not JSON, a
  missing key, content that is not JSON, JSON that is not an object, a search
  for a list) closes that connection without an answer; the server goes on.

    python guide_app_server.py PORT      (0: a free port; the port is printed)
"""

from __future__ import annotations

import io
import json
import selectors
import socket
import struct
import sys
from typing import Any

TABLE = {
    "morpheus": "Follow the white rabbit. \U0001f430",
    "ring": "In the caves beneath the Misty Mountains. \U0001f48d",
    "\U0001f436": "\U0001f43e Playing ball! \U0001f3d0",
}
REQUIRED = ("byteorder", "content-length", "content-type", "content-encoding")

selector = selectors.DefaultSelector()


def json_encode(obj: Any, encoding: str) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode(encoding)


def json_decode(data: bytes, encoding: str) -> Any:
    with io.TextIOWrapper(io.BytesIO(data), encoding=encoding, newline="") as text:
        return json.load(text)


class Connection:
    """One client's request and answer, the guide's way."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""
        self.outgoing = b""
        self.header_length: int | None = None
        self.header: dict[str, Any] | None = None
        self.request: Any = None
        self.answered = False

    def events(self, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self.read()
        if mask & selectors.EVENT_WRITE:
            self.write()

    def read(self) -> None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        if not data:
            raise RuntimeError("Peer closed.")
        self.received += data
        if self.header_length is None and len(self.received) >= 2:
            self.header_length = struct.unpack(">H", self.received[:2])[0]
            self.received = self.received[2:]
        if self.header_length is not None and self.header is None:
            if len(self.received) >= self.header_length:
                self.header = json_decode(self.received[: self.header_length], "utf-8")
                self.received = self.received[self.header_length :]
                for key in REQUIRED:
                    if key not in self.header:
                        raise ValueError(f"Missing required header '{key}'.")
        if self.header and self.request is None:
            length = self.header["content-length"]
            if not len(self.received) >= length:
                return
            data, self.received = self.received[:length], self.received[length:]
            if self.header["content-type"] == "text/json":
                self.request = json_decode(data, self.header["content-encoding"])
            else:
                self.request = data
            selector.modify(self.sock, selectors.EVENT_WRITE, data=self)

    def write(self) -> None:
        if self.request and not self.answered:  # (a false request is never answered)
            self.outgoing += self.answer()
            self.answered = True
        if self.outgoing:
            try:
                sent = self.sock.send(self.outgoing)
            except BlockingIOError:
                return
            self.outgoing = self.outgoing[sent:]
            if sent and not self.outgoing:
                self.close()

    def answer(self) -> bytes:
        assert self.header is not None
        if self.header["content-type"] == "text/json":
            action = self.request.get("action")
            if action == "search":
                query = self.request.get("value")
                answer = TABLE.get(query) or f"No match for '{query}'."
                content = {"result": answer}
            else:
                content = {"result": f"Error: invalid action '{action}'."}
            return message(json_encode(content, "utf-8"), "text/json", "utf-8")
        first = b"First 10 bytes of request: " + self.request[:10]
        return message(first, "binary/custom-server-binary-type", "binary")

    def close(self) -> None:
        selector.unregister(self.sock)
        self.sock.close()


def message(content: bytes, content_type: str, content_encoding: str) -> bytes:
    header = {
        "byteorder": sys.byteorder,
        "content-type": content_type,
        "content-encoding": content_encoding,
        "content-length": len(content),
    }
    header_bytes = json_encode(header, "utf-8")
    return struct.pack(">H", len(header_bytes)) + header_bytes + content


def main(port: int) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen()
    print(listener.getsockname()[1], flush=True)
    listener.setblocking(False)
    selector.register(listener, selectors.EVENT_READ, data=None)
    while True:
        for key, mask in selector.select(timeout=None):
            if key.data is None:
                conn, _ = listener.accept()
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ, data=Connection(conn))
                continue
            try:
                key.data.events(mask)
            except Exception:
                key.data.close()  # the guide's loop: that connection ends, the server goes on


if __name__ == "__main__":
    main(int(sys.argv[1]))
