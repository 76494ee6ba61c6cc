"""Unix domain sockets: both drivers, the clients, and the socket file's life
(permissions, a stale file replaced, a live one refused, removed at the end)."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DRIVER, running_aio, tls
from framewire import Client, Message, Server
from framewire.client.aio import connect as aio_connect
from framewire.client.concurrent import request_concurrently
from framewire.io.netio import listen_unix
from framewire.server.app import echo
from framewire.server.peer import Context
from framewire.tools.loadgen import run_load

pytestmark = pytest.mark.usefixtures("driver")


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "fw.sock")


def serving(handler: object, path: str, **options: object) -> Iterator[object]:
    if DRIVER[0] == "asyncio":
        with running_aio(handler, host=f"unix:{path}", **options) as server:  # type: ignore[arg-type]
            yield server
        return
    with Server(handler, f"unix:{path}", **options) as server:  # type: ignore[arg-type]
        yield server


def whoami(request: Message, peer: Context) -> Message:
    return Message.from_text(peer.address)


def test_serve_and_request_over_a_unix_socket(path: str) -> None:
    for server in serving(whoami, path, unix_mode=0o600):
        assert server.address == (f"unix:{path}", 0)  # type: ignore[attr-defined]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with Client(f"unix:{path}") as client:
            answer = client.request(Message.from_text("?")).text()
        assert answer == f"unix:{path} (pid {os.getpid()})"
    assert not os.path.exists(path), "the socket file is removed at the end"


def test_the_other_clients_reach_a_unix_socket(path: str) -> None:
    async def aio_exchange() -> str:
        client = await aio_connect(f"unix:{path}")
        try:
            return (await client.request(Message.from_text("aio"))).text()
        finally:
            await client.close()

    for _server in serving(echo, path):
        assert asyncio.run(aio_exchange()) == "aio"
        answers = request_concurrently(f"unix:{path}", 0, [Message.from_text(str(i)) for i in range(6)])
        assert [m.text() for m in answers] == [str(i) for i in range(6)]
        result = run_load(f"unix:{path}", 0, Message.from_bytes(b"u" * 64), connections=2, depth=4,
                          duration=None, count=200, check=True)  # fmt: skip
        assert result.responses >= 200 and not result.errors and not result.mismatches


def test_a_stale_socket_file_is_replaced(path: str) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)
    dead.close()  # the file stays, nothing listens: a server that died
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    for _server in serving(echo, path):
        with Client(f"unix:{path}") as client:
            assert client.request(Message.from_text("fresh")).text() == "fresh"


def test_a_live_socket_is_in_use_and_other_files_are_left_alone(path: str, tmp_path: Path) -> None:
    for _server in serving(echo, path):
        with pytest.raises(OSError) as caught:
            listen_unix(path).close()
        assert caught.value.errno == errno.EADDRINUSE
        with Client(f"unix:{path}") as client:  # the first server is untouched
            assert client.request(Message.from_text("mine")).text() == "mine"
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    with pytest.raises(FileExistsError):
        listen_unix(str(regular))
    assert regular.read_text() == "keep me"


def test_a_replaced_socket_file_is_not_removed_by_the_old_server(path: str) -> None:
    for _server in serving(echo, path):
        os.unlink(path)  # someone else's server took the path meanwhile
        other = listen_unix(path)
    try:
        assert os.path.exists(path), "the old server removed a file that was no longer its own"
    finally:
        other.close()


def test_nothing_listening_on_a_unix_path_is_one_clear_error(path: str) -> None:
    with pytest.raises(ConnectionRefusedError, match="no socket at unix:"):
        Client(f"unix:{path}").connect()


def test_tls_over_a_unix_socket(path: str) -> None:
    for _server in serving(whoami, path, ssl_context=tls().server(mutual=True)):
        context = tls().client(with_cert=True)
        with Client(f"unix:{path}", ssl_context=context, server_hostname="localhost") as client:
            assert client.request(Message.from_text("?")).text().startswith(f"unix:{path}")
