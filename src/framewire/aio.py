"""framewire on asyncio: the server and the client for code that already
runs an event loop.

    from framewire import Message, aio

    server = await aio.start_server(handler, "127.0.0.1", 0)   # handler: async def, plain function or App
    async with server:
        client = await aio.connect("127.0.0.1", server.port, timeout=5)
        async with client:
            response = await client.request(Message.from_json({"action": "search", "value": "ring"}))
            responses = await client.request_many(messages)       # pipelined

The server is the same connection engine as the epoll server (every limit,
error code, deadline and backpressure rule), driven by the loop.
"""

from __future__ import annotations

from framewire.client.aio import AioClient, connect
from framewire.client.aiopool import AioPool
from framewire.client.retry import Retry
from framewire.server.aio import AioServer, start_server

__all__ = ["AioClient", "AioPool", "AioServer", "Retry", "connect", "start_server"]
