"""Peer: a hand-tuned asyncio Protocol for the echo service.

One bytearray per connection; every complete request of a ``data_received``
is answered, all answers of one read in one ``write``. ``--uvloop`` runs it
on uvloop, the fastest way to run asyncio; ``--tls CERT KEY`` serves TLS
(asyncio's own TLS, as a programmer would turn it on).

    python asyncio_protocol_server.py PORT [--uvloop] [--tls CERT KEY]
"""

from __future__ import annotations

import asyncio
import json
import ssl
import struct
import sys
from typing import cast


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = cast(asyncio.Transport, transport)
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        answers = []
        pos = 0
        while len(buffer) - pos >= 2:
            size = (buffer[pos] << 8) | buffer[pos + 1]
            if len(buffer) - pos < 2 + size:
                break
            header = json.loads(buffer[pos + 2 : pos + 2 + size])
            end = pos + 2 + size + header["content-length"]
            if len(buffer) < end:
                break
            answer = json.dumps(
                {
                    "byteorder": sys.byteorder,
                    "content-type": header["content-type"],
                    "content-encoding": header["content-encoding"],
                    "content-length": header["content-length"],
                }
            ).encode()
            answers += [struct.pack(">H", len(answer)), answer, bytes(buffer[pos + 2 + size : end])]
            pos = end
        if pos:
            del buffer[:pos]
        if answers:
            self.transport.write(b"".join(answers))


async def main(port: int, context: ssl.SSLContext | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", port, backlog=4096, ssl=context)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    tls = None
    if "--tls" in sys.argv:
        at = sys.argv.index("--tls")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(sys.argv[at + 1], sys.argv[at + 2])
    asyncio.run(main(int(sys.argv[1]), tls))
