"""The PROXY protocol header parser: versions 1 and 2, every split, every
way a header can be wrong; then the engine with a fake clock."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import connect, read_messages, read_until_closed, running
from framewire import Message, Server, encode
from framewire.core.proxyheader import V1_MAX, V2_SIGNATURE, ProxyHeader, ProxyHeaderError, build_v2, parse
from framewire.server.app import echo
from framewire.server.config import ServerConfig
from framewire.server.engine import Phase, ServerConnection
from framewire.server.peer import Context

V1 = b"PROXY TCP4 198.51.100.7 203.0.113.1 40000 7000\r\n"
V1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 7000\r\n"


def test_version_1_lines() -> None:
    assert parse(V1) == ProxyHeader(1, ("198.51.100.7", 40000), ("203.0.113.1", 7000), len(V1))
    assert parse(V1_6 + b"rest") == ProxyHeader(1, ("2001:db8::7", 40000), ("2001:db8::1", 7000), len(V1_6))
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(1, None, None, 15)
    assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n") == ProxyHeader(1, None, None, 35)


def test_version_2_blocks() -> None:
    v4 = build_v2(("198.51.100.7", 40000), ("203.0.113.1", 7000))
    assert parse(v4) == ProxyHeader(2, ("198.51.100.7", 40000), ("203.0.113.1", 7000), 28)
    v6 = build_v2(("2001:db8::7", 1), ("2001:db8::1", 2))
    assert parse(v6 + b"x") == ProxyHeader(2, ("2001:db8::7", 1), ("2001:db8::1", 2), 52)
    local = V2_SIGNATURE + bytes([0x20, 0x00, 0, 0])  # a balancer's health check
    assert parse(local) == ProxyHeader(2, None, None, 16)
    with_tlv = V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", 12 + 7) + v4[16:] + b"\x04\x00\x04abcd"
    assert parse(with_tlv) == ProxyHeader(2, ("198.51.100.7", 40000), ("203.0.113.1", 7000), 16 + 19)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HTTP/1.1\r\n", id="http"),
        pytest.param(encode(Message.from_text("no header")), id="framewire-without-header"),
        pytest.param(b"PROXY TCP4 198.51.100.7 203.0.113.1 40000\r\n", id="v1-missing-port"),
        pytest.param(b"PROXY TCP4 2001:db8::7 203.0.113.1 1 2\r\n", id="v1-family-mismatch"),
        pytest.param(b"PROXY TCP4 198.51.100.7 203.0.113.1 040000 7000\r\n", id="v1-leading-zero"),
        pytest.param(b"PROXY TCP4 198.51.100.7 203.0.113.1 70000 7000\r\n", id="v1-port-range"),
        pytest.param(b"PROXY TCP5 a b 1 2\r\n", id="v1-protocol"),
        pytest.param(b"PROXY " + b"1" * V1_MAX, id="v1-too-long"),
        pytest.param(V2_SIGNATURE + bytes([0x11, 0x11, 0, 12]) + bytes(12), id="v2-version-1"),
        pytest.param(V2_SIGNATURE + bytes([0x22, 0x11, 0, 12]) + bytes(12), id="v2-command-2"),
        pytest.param(V2_SIGNATURE + bytes([0x21, 0x11, 0, 4]) + bytes(4), id="v2-short-addresses"),
        pytest.param(V2_SIGNATURE + bytes([0x21, 0x11, 0xFF, 0xFF]), id="v2-over-the-limit"),
        pytest.param(b"\r\n\r\nX", id="v2-bad-signature"),
    ],
)
def test_bad_headers_are_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)


@given(st.sampled_from([V1, V1_6, build_v2(("10.0.0.1", 5), ("10.0.0.2", 6))]), st.data())
def test_any_prefix_asks_for_more_and_the_whole_parses(header: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(header) - 1))
    assert parse(header[:cut]) is None
    assert parse(header) is not None


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        result = parse(data)
    except ProxyHeaderError:
        return
    assert result is None or 0 < result.size <= len(data)


def proxied(**settings: object) -> ServerConnection:
    conn = ServerConnection(ServerConfig(proxy_protocol=True, **settings), 0.0, "127.0.0.1:5000")  # type: ignore[arg-type]
    conn.bind(lambda request: request)
    return conn


def test_the_engine_takes_the_peer_from_the_header_split_anywhere() -> None:
    request = encode(Message.from_text("hello"))
    stream = V1 + request
    for cut in range(1, len(stream)):  # (b"" would be the end of the stream)
        conn = proxied()
        conn.receive(stream[:cut], 0.0)
        conn.receive(stream[cut:], 0.1)
        assert conn.peer == "198.51.100.7:40000"
        assert conn.peer_info().address == "198.51.100.7:40000"
        assert conn.out.size and not conn.closed


def test_a_local_header_keeps_the_connection_address() -> None:
    conn = proxied()
    conn.receive(V2_SIGNATURE + bytes([0x20, 0x00, 0, 0]), 0.0)
    assert conn.peer == "127.0.0.1:5000" and conn.phase is not Phase.PROXY and not conn.closed


def test_no_header_closes_without_an_answer() -> None:
    conn = proxied()
    conn.receive(encode(Message.from_text("sneaky")), 0.0)
    assert conn.closed and not conn.out and conn.finished


def test_the_header_must_come_within_the_message_deadline() -> None:
    conn = proxied(message_timeout=2.0)
    conn.receive(V1[:10], 0.5)
    assert conn.deadline == 2.0  # from the connection's opening
    conn.timer(1.9)
    assert not conn.closed
    conn.timer(2.0)
    assert conn.closed and not conn.out


def test_a_close_before_the_header_is_complete_is_quiet() -> None:
    conn = proxied()
    conn.receive(V1[:10], 0.0)
    conn.receive(b"", 0.1)
    assert conn.closed and not conn.out


def test_trusted_proxies() -> None:
    config = ServerConfig(proxy_protocol=True, trusted_proxies=("10.0.0.0/8", "127.0.0.2"))
    assert config.trusts("10.9.8.7") and config.trusts("127.0.0.2") and config.trusts("::ffff:10.1.1.1")
    assert not config.trusts("127.0.0.3") and not config.trusts("not an address")
    with pytest.raises(ValueError, match="not an address, a network"):
        ServerConfig(trusted_proxies=("10.0.0.0/33",))


# -- over real sockets, both drivers ----------------------------------------------


def whoami(request: Message, peer: Context) -> Message:
    return Message.from_text(peer.address)


@pytest.mark.usefixtures("driver")
def test_a_balancer_s_header_names_the_peer_the_handler_sees(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "framewire.server")  # connection lines are at DEBUG
    with running(whoami, proxy_protocol=True) as server, connect(server.port) as sock:
        sock.sendall(build_v2(("203.0.113.9", 4242), ("127.0.0.1", server.port)))
        sock.sendall(encode(Message.from_text("who?")))
        (answer,) = read_messages(sock, 1)
        assert answer.text() == "203.0.113.9:4242"
    assert any("203.0.113.9:4242 opened, through 127.0.0.1:" in r.getMessage() for r in caplog.records)


@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize(
    "first",
    [
        pytest.param(encode(Message.from_text("no header")), id="no-header"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", id="bad-header"),
    ],
)
def test_a_trusted_connection_without_a_valid_header_is_closed_silently(first: bytes) -> None:
    with running(whoami, proxy_protocol=True) as server:
        with connect(server.port) as sock:
            sock.sendall(first)
            assert read_until_closed(sock) == b""  # no answer at all
        with connect(server.port) as sock:  # still serving
            sock.sendall(V1 + encode(Message.from_text("?")))
            assert read_messages(sock, 1)[0].text() == "198.51.100.7:40000"


@pytest.mark.usefixtures("driver")
def test_an_untrusted_sender_is_closed_before_anything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "framewire.server")
    with running(whoami, proxy_protocol=True, trusted_proxies=("127.0.0.2",)) as server:
        with connect(server.port) as sock:
            sock.sendall(V1 + encode(Message.from_text("?")))
            with contextlib.suppress(ConnectionResetError):  # closed with the request unread
                assert read_until_closed(sock) == b""
        assert any("not a trusted proxy" in r.getMessage() for r in caplog.records)
        source = socket.create_connection(("127.0.0.1", server.port), source_address=("127.0.0.2", 0))
        with source as sock:
            sock.sendall(V1 + encode(Message.from_text("?")))
            assert read_messages(sock, 1)[0].text() == "198.51.100.7:40000"


def test_proxy_protocol_and_tls_together_are_refused() -> None:
    from conftest import tls

    with pytest.raises(ValueError, match="PROXY protocol with TLS"):
        Server(echo, port=0, proxy_protocol=True, ssl_context=tls().server())


def test_unix_socket_peers_are_trusted_by_user() -> None:
    config = ServerConfig(proxy_protocol=True, trusted_proxies=("uid:1234",))
    assert config.trusts_user(1234) and config.trusts_user(0) and config.trusts_user(os.getuid())
    assert not config.trusts_user(4321) and not config.trusts_user(None)
    with pytest.raises(ValueError, match="or uid:N"):
        ServerConfig(trusted_proxies=("uid:someone",))


_NOBODY = 65534


def _as_another_user(path: Path, data: bytes) -> str:
    """What a local process of another user gets when it connects, claims a
    client's address and asks: "closed" (at once), or "answered". (A fork:
    that user cannot run this interpreter, under /root.)"""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit
        outcome = b"failed"
        try:
            os.setgid(_NOBODY)
            os.setuid(_NOBODY)
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(10)
            sock.connect(str(path))
            try:
                sock.sendall(data)
                outcome = b"answered" if sock.recv(65536) else b"closed"
            except (BrokenPipeError, ConnectionResetError):  # closed before all was sent or read
                outcome = b"closed"
        finally:
            os.write(write_end, outcome)
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said


@pytest.mark.skipif(
    not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root, to connect as another user"
)
@pytest.mark.usefixtures("driver")
@pytest.mark.parametrize("trusted", [(), ("uid:65534",)], ids=["untrusted", "trusted-by-uid"])
def test_a_proxy_header_on_a_unix_socket_is_taken_only_from_trusted_users(trusted: tuple[str, ...]) -> None:
    # A folder the other user can reach (pytest's tmp_path is the owner's alone).
    folder = Path(tempfile.mkdtemp(prefix="fw-unix-"))
    folder.chmod(0o755)
    path = folder / "fw.sock"
    settings: dict[str, Any] = {"trusted_proxies": ("127.0.0.0/8", *trusted)}
    with running(whoami, host=f"unix:{path}", unix_mode=0o666, proxy_protocol=True, **settings):
        try:
            outcome = _as_another_user(path, V1 + encode(Message.from_text("?")))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    assert outcome == ("answered" if trusted else "closed")
