"""TLS and mutual TLS, on both drivers: what a handler sees, and every way a
handshake can fail ending as one clear line, with the server still serving."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme

from conftest import running, tls
from framewire import Client, ConnectionClosed, Message
from framewire.client.aio import connect as aio_connect
from framewire.server.app import App, echo
from framewire.server.peer import Context
from framewire.tools.certs import write_certificates

pytestmark = pytest.mark.usefixtures("driver")


def whoami(request: Message, peer: Context) -> Message:
    return Message.from_json(
        {"address": peer.address, "tls": peer.tls, "cn": peer.common_name, "subject": peer.certificate}
    )


def still_serves(port: int) -> None:
    with Client("127.0.0.1", port, ssl_context=tls().client(with_cert=True), timeout=5) as client:
        assert client.request(Message.from_text("still here")).text() == "still here"


def handshake_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]


def wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in caplog.records:
            if text in record.getMessage():
                return record.getMessage()
        time.sleep(0.01)  # polling the log records: there is no event to wait on
    raise AssertionError(f"no log line with {text!r}: {[r.getMessage() for r in caplog.records]}")


def test_the_handler_sees_the_verified_client_certificate() -> None:
    with running(whoami, ssl_context=tls().server(mutual=True)) as server:
        with Client("127.0.0.1", server.port, ssl_context=tls().client(with_cert=True)) as client:
            answer = client.request(Message.from_text("who am I?")).json()
    assert answer["tls"] in ("TLSv1.2", "TLSv1.3")
    assert answer["cn"] == "alice"
    assert answer["subject"]["commonName"] == "alice"
    assert answer["address"].startswith("127.0.0.1:")


def test_without_mutual_tls_the_handler_sees_no_certificate() -> None:
    app = App()

    @app.action("who")
    def who(value: Any, peer: Context) -> Any:
        return [peer.tls is not None, peer.certificate]

    @app.action("plain")
    def plain(value: Any) -> Any:
        return value

    with running(app, ssl_context=tls().server()) as server:
        with Client("localhost", server.port, ssl_context=tls().client()) as client:
            assert client.request(Message.from_json({"action": "who"})).json() == {"result": [True, None]}
            assert client.request(Message.from_json({"action": "plain", "value": 3})).json() == {"result": 3}


def test_pipelined_large_messages_over_tls() -> None:
    with running(echo, ssl_context=tls().server()) as server:
        with Client("127.0.0.1", server.port, ssl_context=tls().client(), timeout=20) as client:
            contents = [bytes([i]) * (300_000 + i) for i in range(8)]
            answers = client.request_many([Message.from_bytes(c) for c in contents])
    assert [a.content for a in answers] == contents


def test_mutual_tls_refuses_a_client_without_a_certificate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "framewire.server")
    with running(echo, ssl_context=tls().server(mutual=True)) as server:
        # The refusal comes after the client's side of a TLS 1.3 handshake:
        # as an alert (epoll) or a close (asyncio drops the alert).
        with pytest.raises((OSError, ConnectionClosed), match=r"requires a client certificate|client cert"):
            Client("127.0.0.1", server.port, ssl_context=tls().client()).request(Message.from_text("x"))
        line = wait_for_log(caplog, "TLS handshake failed")
        assert "presented no certificate" in line
        still_serves(server.port)


def test_a_client_that_does_not_trust_the_server_gets_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "framewire.server")
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)  # some other CA
    with running(echo, ssl_context=tls().server()) as server:
        with pytest.raises(OSError, match="CA this side does not trust") as caught:
            Client("127.0.0.1", server.port, ssl_context=stranger).connect()
        assert "\n" not in str(caught.value)
        assert "does not trust the CA" in wait_for_log(caplog, "TLS handshake failed")
        still_serves(server.port)


def test_a_certificate_for_another_name_is_refused() -> None:
    with running(echo, ssl_context=tls().server()) as server:
        with pytest.raises(OSError, match="not valid for this host name"):
            Client(
                "127.0.0.1", server.port, ssl_context=tls().client(), server_hostname="example.com"
            ).connect()
        still_serves(server.port)


def test_an_expired_certificate_is_refused() -> None:
    ca = trustme.CA()
    expired = ca.issue_cert(
        "127.0.0.1",
        not_before=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC),
        not_after=datetime.datetime(2021, 1, 1, tzinfo=datetime.UTC),
    )
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    expired.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with running(echo, ssl_context=server_context) as server:
        with pytest.raises(OSError, match="expired"):
            Client("127.0.0.1", server.port, ssl_context=client_context).connect()


@pytest.mark.parametrize(
    "junk",
    [
        pytest.param(Message.from_text("plain framewire").encode(), id="plaintext-framewire"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
        pytest.param(bytes(range(256)) * 4, id="garbage"),
    ],
)
def test_a_client_that_does_not_speak_tls_gets_closed_and_logged(
    caplog: pytest.LogCaptureFixture, junk: bytes
) -> None:
    caplog.set_level(logging.INFO, "framewire.server")
    with running(echo, ssl_context=tls().server()) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(junk)
            try:
                while sock.recv(65536):  # whatever a TLS alert holds, then the close
                    pass
            except ConnectionResetError:
                pass
        wait_for_log(caplog, "TLS handshake failed")
        assert len(handshake_failures(caplog)) == 1  # one line, no traceback
        assert not [r for r in caplog.records if r.exc_info]
        still_serves(server.port)


def test_a_tls_client_on_a_plain_port_is_told_so() -> None:
    with running(echo) as server:
        with pytest.raises(OSError, match="does not speak TLS"):
            Client("127.0.0.1", server.port, ssl_context=tls().client(), timeout=5).connect()
        with Client("127.0.0.1", server.port) as client:
            assert client.request(Message.from_text("plain")).text() == "plain"


def test_a_stalled_handshake_is_cut_at_the_message_deadline(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "framewire.server")
    hello_start = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # a ClientHello, cut short
    with running(echo, ssl_context=tls().server(), message_timeout=0.5) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            started = time.monotonic()
            sock.sendall(hello_start)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(65536) == b""
            waited = time.monotonic() - started
        assert 0.4 <= waited < 5, waited
        wait_for_log(caplog, "TLS handshake not done 0.5 s after")
        still_serves(server.port)


def test_the_asyncio_client_speaks_tls() -> None:
    async def exchange(port: int) -> dict[str, Any]:
        client = await aio_connect("127.0.0.1", port, ssl_context=tls().client(with_cert=True))
        try:
            return (await client.request(Message.from_text("hi"))).json()  # type: ignore[no-any-return]
        finally:
            await client.close()

    with running(whoami, ssl_context=tls().server(mutual=True)) as server:
        answer = asyncio.run(exchange(server.port))
    assert answer["cn"] == "alice"


def test_key_log_file_is_written_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from framewire.io.tls import client_context, server_context

    files = write_certificates(tmp_path / "certs")
    ca, server_cert, server_key = (str(p) for p in files.paths[:3])
    keylog = tmp_path / "keys.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    with running(echo, ssl_context=server_context(server_cert, server_key)) as server:
        with Client("localhost", server.port, ssl_context=client_context(ca)) as client:
            assert client.request(Message.from_text("secret")).text() == "secret"
    lines = keylog.read_text().splitlines()
    assert any(line.startswith("CLIENT_TRAFFIC_SECRET_0 ") for line in lines), lines[:3]
