"""Regression tests for the third adversarial review (issue 37): each
finding over real sockets or processes where it was found, written for the
class of input behind it rather than the one reproduction."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import connect, read_messages, running, tls
from framewire import Message, encode
from framewire.server.app import echo
from test_hardening import wait_until

pytestmark = pytest.mark.usefixtures("driver")


def _bin(content: bytes) -> Message:
    return Message(content, "binary/test", "binary")


# -- 2. nothing a handler raises ends the server ------------------------------------


class _Escape(BaseException):
    """A BaseException of the application's own."""


ESCAPES: list[type[BaseException]] = [SystemExit, KeyboardInterrupt, GeneratorExit, _Escape]


def _raising(kind: type[BaseException], how: str) -> Any:
    if how == "async":

        async def handler(request: Message) -> Message:
            if request.content == b"escape":
                await asyncio.sleep(0)
                raise kind()
            return echo(request)

        return handler

    def sync_handler(request: Message) -> Message:
        if request.content == b"escape":
            raise kind()
        return echo(request)

    return sync_handler


@pytest.mark.parametrize("how", ["inline", "threads", "async"])
@pytest.mark.parametrize("kind", ESCAPES, ids=lambda k: k.__name__)
def test_no_exception_a_handler_raises_stops_the_server(kind: type[BaseException], how: str) -> None:
    options: dict[str, Any] = {"threads": 2} if how == "threads" else {}
    with running(_raising(kind, how), **options) as server:
        for _ in range(2):  # the second time: the handlers' thread or loop still lives
            with connect(server.port) as sock:
                sock.sendall(encode(_bin(b"escape")) + encode(_bin(b"after")))
                first, second = read_messages(sock, 2)
            assert first.json()["error"]["code"] == "handler-error"
            assert kind.__name__ in first.json()["error"]["message"]
            assert second.content == b"after"


# -- 1. TLS handshakes count against the connection limit ---------------------------


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_handshakes_that_never_end_are_bounded_by_the_connection_limit() -> None:
    limit = 10
    with running(echo, ssl_context=tls().server(), max_connections=limit) as server:
        before = _open_fds()
        stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(60)]
        try:
            # Each stalled peer sent nothing: the server holds at most the
            # limit of them, and closes the rest at once.
            for sock in stalled[limit:]:
                sock.settimeout(10)
                with contextlib.suppress(ConnectionResetError):  # a reset is an end too
                    assert sock.recv(1) == b""
            assert server.connections <= limit
            # The test's own 60 sockets, and at most the limit of the server's.
            assert _open_fds() - before <= len(stalled) + limit + 2
        finally:
            for sock in stalled:
                sock.close()
        wait_until(lambda: server.connections == 0)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:  # served again
            with tls().client().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(encode(_bin(b"in")))
                assert read_messages(sock, 1)[0].content == b"in"


# -- 3. bytes a TLS layer holds are read when reading resumes --------------------------


@pytest.mark.parametrize("size", [100_000, 300_000, 1_000_000])
def test_a_pipelined_request_inside_a_tls_record_is_answered_after_a_pause(size: int) -> None:
    # The small request shares a TLS record with the end of the large one:
    # once the large answer passes the high-water mark, reading stops with
    # the small one already decrypted inside OpenSSL, where no poller event
    # announces it.
    with running(echo, ssl_context=tls().server(), high_water=65536) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            with tls().client().wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(encode(_bin(b"L" * size)) + encode(_bin(b"small")))
                large, small = read_messages(sock, 2)
    assert len(large.content) == size
    assert small.content == b"small"


# -- 4. one connection cannot take the whole handler queue ---------------------------


@pytest.mark.parametrize("how", ["threads", "async"])
def test_one_greedy_connection_cannot_starve_the_others(how: str) -> None:
    ran: list[bytes] = []

    def handler(request: Message) -> Message:
        ran.append(request.content)
        if request.content.startswith(b"slow"):
            time.sleep(0.05)  # the work itself, not a wait in the test
        return echo(request)

    async def async_handler(request: Message) -> Message:
        ran.append(request.content)
        if request.content.startswith(b"slow"):
            await asyncio.sleep(0.05)
        return echo(request)

    greedy_count = 20
    options: dict[str, Any] = {"max_queued": 8, "threads": 1} if how == "threads" else {"max_queued": 8}
    with running(handler if how == "threads" else async_handler, **options) as server:
        with connect(server.port) as greedy, connect(server.port) as polite:
            greedy.sendall(b"".join(encode(_bin(b"slow%d" % i)) for i in range(greedy_count)))
            wait_until(lambda: len(ran) >= 1)
            polite.sendall(encode(_bin(b"fast")))
            (answer,) = read_messages(polite, 1)
            assert answer.content == b"fast"  # not server-busy
            answers = read_messages(greedy, greedy_count)
    # The greedy connection's own excess is what is refused.
    refused = [a.json()["error"]["code"] for a in answers if a.is_json]
    assert refused and set(refused) == {"server-busy"}
    if how == "threads":  # taken in turn: the polite request runs before the greedy backlog
        assert ran.index(b"fast") <= 3


# -- 6. the folder serve starts in never shadows a module ------------------------------

_PLANTED = """
import pathlib
pathlib.Path({marker!r}).write_text("ran")
raise ImportError("planted")
"""


@pytest.mark.parametrize("workers", [(), ("--workers", "2")], ids=["one-process", "workers-2"])
def test_files_in_the_starting_folder_never_replace_standard_modules(
    spawn: Any, tmp_path: Path, workers: tuple[str, ...]
) -> None:
    marker = tmp_path / "marker"
    # Imported lazily, after the server has started (resource for the
    # descriptor limit, tempfile for the workers' metrics folder, ...).
    for name in ("resource", "tempfile", "shlex", "ctypes", "multiprocessing"):
        (tmp_path / f"{name}.py").write_text(_PLANTED.format(marker=str(marker)))
    (tmp_path / "myapp.py").write_text("from framewire.server.app import echo as app\n")
    for app in ("echo", "myapp:app"):
        server = spawn("serve", "--app", app, "--port", "0", *workers, cwd=str(tmp_path), script=True)
        port = server.port()
        with connect(port) as sock:
            sock.sendall(encode(_bin(b"served")))
            assert read_messages(sock, 1)[0].content == b"served"
        code, _, err = server.stop()
        assert code == 0, err
    assert not marker.exists()


def test_app_dir_names_where_the_app_is_imported_from(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "elsewhere_app.py").write_text("from framewire.server.app import echo as app\n")
    server = spawn("serve", "--app", "elsewhere_app:app", "--app-dir", str(tmp_path), "--port", "0")
    with connect(server.port()) as sock:
        sock.sendall(encode(_bin(b"found")))
        assert read_messages(sock, 1)[0].content == b"found"


# -- 12. a drain answers a request already on its way over a kept-open connection -------


def test_a_request_sent_on_an_idle_connection_as_the_drain_starts_is_answered(spawn: Any) -> None:
    server = spawn("serve", "--app", "echo", "--port", "0")
    port = server.port()
    with connect(port) as kept_open, connect(port) as fresh:
        kept_open.sendall(encode(_bin(b"first")))
        assert read_messages(kept_open, 1)[0].content == b"first"
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("no longer accepting")
        # Sent after the server began to drain, as a request 50 ms away is.
        kept_open.sendall(encode(_bin(b"in flight")))
        fresh.sendall(encode(_bin(b"first of a new one")))
        assert read_messages(kept_open, 1)[0].content == b"in flight"
        assert read_messages(fresh, 1)[0].content == b"first of a new one"
        assert kept_open.recv(1) == b""  # then closed
    code, _, err = server.stop(None)
    assert code == 0, err


# -- 21. over TLS, a half-close is refused in words, never a corrupt stream ---------------


def test_a_tls_half_close_is_refused_and_the_connection_still_serves() -> None:
    import errno

    from framewire import Client

    with running(echo, ssl_context=tls().server()) as server:
        with Client("127.0.0.1", server.port, ssl_context=tls().client(), timeout=10) as client:
            client.send(_bin(b"first"))
            with pytest.raises(OSError, match="not supported over TLS") as info:
                client.shutdown_write()
            assert info.value.errno == errno.EOPNOTSUPP
            assert client.receive().content == b"first"  # nothing was cut
            assert client.request(_bin(b"second")).content == b"second"
