"""Peer: the echo service written the way the socket-programming guide's
final server is: a selectors loop, a Message object per connection with a
bytes buffer grown by recv(4096), the 2-byte length, the JSON header, the
content; one request per connection, closed after its answer.

    python guide_server.py PORT      (0: a free port; the port is printed)
"""

from __future__ import annotations

import json
import selectors
import socket
import struct
import sys
from typing import Any

sel = selectors.DefaultSelector()


class Message:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._recv_buffer = b""
        self._send_buffer = b""
        self._jsonheader_len: int | None = None
        self.jsonheader: dict[str, Any] | None = None
        self.request: bytes | None = None
        self.response_created = False

    def process_events(self, mask: int) -> None:
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
        self._recv_buffer += data
        if self._jsonheader_len is None and len(self._recv_buffer) >= 2:
            self._jsonheader_len = struct.unpack(">H", self._recv_buffer[:2])[0]
            self._recv_buffer = self._recv_buffer[2:]
        if self._jsonheader_len is not None and self.jsonheader is None:
            if len(self._recv_buffer) >= self._jsonheader_len:
                self.jsonheader = json.loads(self._recv_buffer[: self._jsonheader_len].decode("utf-8"))
                self._recv_buffer = self._recv_buffer[self._jsonheader_len :]
        if self.jsonheader is not None and self.request is None:
            length = self.jsonheader["content-length"]
            if len(self._recv_buffer) >= length:
                self.request = self._recv_buffer[:length]
                self._recv_buffer = self._recv_buffer[length:]
                sel.modify(self.sock, selectors.EVENT_WRITE, data=self)

    def write(self) -> None:
        if self.request is not None and not self.response_created:
            assert self.jsonheader is not None
            header = json.dumps(
                {
                    "byteorder": sys.byteorder,
                    "content-type": self.jsonheader["content-type"],
                    "content-encoding": self.jsonheader["content-encoding"],
                    "content-length": len(self.request),
                },
                ensure_ascii=False,
            ).encode("utf-8")
            self._send_buffer += struct.pack(">H", len(header)) + header + self.request
            self.response_created = True
        if self._send_buffer:
            try:
                sent = self.sock.send(self._send_buffer)
            except BlockingIOError:
                return
            self._send_buffer = self._send_buffer[sent:]
            if sent and not self._send_buffer:
                self.close()

    def close(self) -> None:
        sel.unregister(self.sock)
        self.sock.close()


def main(port: int) -> None:
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(4096)
    # Port 0 takes a free port; the port bound is printed for whoever started it.
    print(lsock.getsockname()[1], flush=True)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ, data=None)
    while True:
        for key, mask in sel.select(timeout=None):
            if key.data is None:
                conn, _ = lsock.accept()
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ, data=Message(conn))
            else:
                try:
                    key.data.process_events(mask)
                except Exception:
                    key.data.close()


if __name__ == "__main__":
    main(int(sys.argv[1]))
