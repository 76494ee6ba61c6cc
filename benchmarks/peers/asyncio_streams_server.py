"""Peer: the echo service the way asyncio's streams are usually written.

One coroutine per connection: readexactly the 2-byte length, the header, the
content; write the answer and drain. ``--uvloop`` runs it on uvloop.

    python asyncio_streams_server.py PORT [--uvloop]
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            (size,) = struct.unpack(">H", await reader.readexactly(2))
            header = json.loads(await reader.readexactly(size))
            content = await reader.readexactly(header["content-length"])
            answer = json.dumps(
                {
                    "byteorder": sys.byteorder,
                    "content-type": header["content-type"],
                    "content-encoding": header["content-encoding"],
                    "content-length": len(content),
                }
            ).encode()
            writer.write(struct.pack(">H", len(answer)) + answer + content)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.install()
    asyncio.run(main(int(sys.argv[1])))
