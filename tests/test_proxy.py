"""framewire proxy: bytes pass unchanged, every message is shown, bad streams too."""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from conftest import connect, half_closed_exchange, read_messages, read_until_closed, running
from framewire import Decoder, Message, encode
from framewire.server.app import search_app


def start_proxy(spawn: Any, upstream: int, *extra: str) -> tuple[Any, int]:
    proxy = spawn("proxy", "127.0.0.1", str(upstream), "--port", "0", *extra)
    return proxy, int(proxy.wait_for(r"proxy on 127\.0\.0\.1:(\d+)").group(1))


def test_messages_shown_both_ways_and_logged(spawn: Any, tmp_path: Path) -> None:
    log = tmp_path / "wire.jsonl"
    with running(search_app()) as server:
        proxy, port = start_proxy(spawn, server.port, "--log", str(log))
        with connect(port) as sock:
            sock.sendall(encode(Message.from_json({"action": "search", "value": "\N{DOG FACE}"})))
            (answer,) = read_messages(sock, 1)
        assert answer.json()["result"].startswith("\N{PAW PRINTS}")
        proxy.wait_for(r"#1 -- closed", stream="stdout")
        code, stdout, _ = proxy.stop()
    assert code == 0
    assert '#1 -> {"byteorder"' in stdout and '"value": "\N{DOG FACE}"' in stdout
    assert '#1 <- {"byteorder"' in stdout
    records = [json.loads(line) for line in log.read_text().splitlines()]
    messages = [r for r in records if "header" in r]
    assert [r["direction"] for r in messages] == ["->", "<-"]
    assert messages[0]["json"] == {"action": "search", "value": "\N{DOG FACE}"}
    assert messages[1]["json"]["result"].startswith("\N{PAW PRINTS}")


def test_bytes_pass_unchanged_pipelined_and_half_closed(spawn: Any) -> None:
    with running() as server:  # echo
        _proxy, port = start_proxy(spawn, server.port, "--quiet")
        requests = [Message.from_bytes(os.urandom(i * 37 % 5000)) for i in range(200)]
        answers = half_closed_exchange(port, requests)
        assert [m.content for m in answers] == [m.content for m in requests]


def test_malformed_stream_is_shown_and_still_forwarded(spawn: Any) -> None:
    with running(search_app()) as server:
        proxy, port = start_proxy(spawn, server.port)
        with connect(port) as sock:
            sock.sendall(struct.pack(">H", 1) + b"{")
            (answer,) = Decoder().feed(read_until_closed(sock))
        assert answer.json()["error"]["code"] == "bad-header-length"  # the server saw the bytes
        proxy.wait_for(r"#1 -> protocol error: bad-header-length", stream="stdout")
        proxy.wait_for(r"#1 <- .*\"status\":\"error\"", stream="stdout")


def test_upstream_refused(spawn: Any) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        proxy, port = start_proxy(spawn, placeholder.getsockname()[1])
        with connect(port) as sock:
            sock.sendall(encode(Message.from_bytes(b"x")))
            assert read_until_closed(sock) == b""
        proxy.wait_for(r"#1 -- closed: .*refused", stream="stdout")


def test_large_contents_pass_through_without_being_held(spawn: Any, tmp_path: Path) -> None:
    # Issue 37: the proxy's watchers held whole messages (64 MiB per direction
    # per connection). Four connections of 24 MiB each way now cost it no
    # more than its forwarding buffers; the messages are still shown.
    import threading

    import psutil

    size = 24 * 1024 * 1024
    log = tmp_path / "wire.jsonl"
    with running() as server:  # echo
        proxy, port = start_proxy(spawn, server.port, "--quiet", "--log", str(log))
        process = psutil.Process(proxy.proc.pid)
        before = process.memory_info().rss
        peak = [before]
        errors: list[BaseException] = []

        def one(number: int) -> None:
            try:
                content = bytes([number]) * size
                with connect(port, timeout=60) as sock:
                    sender = threading.Thread(
                        target=sock.sendall, args=(encode(Message.from_bytes(content)),)
                    )
                    sender.start()
                    (answer,) = read_messages(sock, 1)
                    sender.join(60)
                assert answer.content == content
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], process.memory_info().rss)
            threads[0].join(0.05)  # sampling the proxy's memory meanwhile
        assert not errors, errors
        code, _, err = proxy.stop()
    assert code == 0, err
    assert peak[0] - before < 32 * 1024 * 1024, f"the proxy grew by {(peak[0] - before) >> 20} MiB"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    shown = [r for r in records if "size" in r]
    assert len(shown) == 8 and {r["size"] for r in shown} == {size}  # each way, header and size
