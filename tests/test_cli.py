"""The ``framewire`` commands, run as a person runs them: subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import framewire_cmd, read_messages, run_cli, running
from framewire import Message, __version__, encode
from framewire.client import Client
from framewire.server.app import echo, search_app

COMMANDS = [
    "echo-server", "echo-client", "multiconn-server", "multiconn-client", "serve", "request", "demo",
    "bench", "ping", "sockets", "proxy", "decode", "wireshark",
]  # fmt: skip


@pytest.fixture
def free_port() -> Iterator[int]:
    """A port that nothing listens on (bound, never listening: connects are refused)."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        yield placeholder.getsockname()[1]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


def no_traceback(result: Any) -> None:
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "Example" in result.stdout and f"framewire {command}" in result.stdout


def test_version_names_the_build() -> None:
    from framewire._build import build_name

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout == f"framewire {__version__} ({build_name()})\n"
    assert build_name() == "pure Python" or build_name().startswith("compiled with mypyc: message, decoder")


def test_demo_round_trips() -> None:
    result = run_cli("demo", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "Every message decoded, identical to what was sent." in result.stdout


def test_unknown_command() -> None:
    result = run_cli("no-such-command")
    assert result.returncode == 2 and "No such command" in result.stderr


# -- serve and request ---------------------------------------------------------------


def test_serve_and_request(spawn: Any) -> None:
    server = spawn("serve", "--port", "0")
    port = str(server.port())
    result = run_cli("request", "127.0.0.1", port, "search", "morpheus")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Follow the white rabbit. \N{RABBIT FACE}"
    result = run_cli("request", "127.0.0.1", port, "search", "\N{DOG FACE}", "--show-header")
    header, answer = result.stdout.strip().splitlines()
    assert '"content-type": "text/json"' in header and answer.endswith("\N{VOLLEYBALL}")
    result = run_cli("request", "127.0.0.1", port, "greet", "ing")
    assert result.stdout.strip() == repr(b"First 10 bytes of request: greeting")
    result = run_cli("request", "127.0.0.1", port, "search", "ring", "--count", "5")
    assert result.stdout.strip().splitlines() == ["In the caves beneath the Misty Mountains. \N{RING}"] * 5
    result = run_cli("request", "127.0.0.1", port, "--text", "hello")  # not JSON: binary, as in the guide
    assert result.returncode == 0 and result.stdout.strip() == repr(b"First 10 bytes of request: hello")
    result = run_cli("request", "127.0.0.1", port, "--json", '{"no": "action"}')  # the guide's answer
    assert result.returncode == 0 and result.stdout.strip() == "Error: invalid action 'None'."
    result = run_cli("request", "127.0.0.1", port, "--json", "[1]")  # where the guide's server fails
    assert result.returncode == 1 and "bad-content" in result.stderr
    no_traceback(result)
    code, _, err = server.stop()
    assert code == 0, err


def test_request_file_and_json(spawn: Any, tmp_path: Path) -> None:
    server = spawn("serve", "--port", "0", "--app", "echo")
    port = str(server.port())
    data = tmp_path / "data.bin"
    data.write_bytes(b"\x00\x01\x02")
    assert run_cli("request", "127.0.0.1", port, "--file", str(data)).stdout.strip() == repr(b"\x00\x01\x02")
    result = run_cli("request", "127.0.0.1", port, "--json", '{"a": [1, 2]}')
    assert result.stdout.strip().replace(" ", "").replace("\n", "") == '{"a":[1,2]}'
    result = run_cli("request", "127.0.0.1", port, "--json", "{nope")
    assert result.returncode == 2 and "not valid JSON" in result.stderr
    result = run_cli("request", "127.0.0.1", port)
    assert result.returncode == 2 and "ACTION and VALUE" in result.stderr


def test_request_with_nothing_listening(free_port: int) -> None:
    result = run_cli("request", "127.0.0.1", str(free_port), "search", "x")
    assert result.returncode == 1
    assert f"nothing is listening on 127.0.0.1:{free_port}" in result.stderr
    no_traceback(result)


def test_serve_on_a_port_in_use(taken_port: int) -> None:
    result = run_cli("serve", "--port", str(taken_port))
    assert result.returncode == 1
    assert f"port {taken_port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr
    no_traceback(result)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nope", "--app takes search, echo, pubsub, conformance or MODULE:CALLABLE"),
        ("no_such_module_xyz:handler", "cannot import module"),
        ("os:no_such_thing", "has no"),
        ("os:sep", "is not callable"),
    ],
)
def test_serve_with_a_bad_app(spec: str, expected: str) -> None:
    result = run_cli("serve", "--port", "0", "--app", spec)
    assert result.returncode == 2
    assert expected in result.stderr
    no_traceback(result)


def test_serve_a_users_handler_from_the_current_folder(spawn: Any, tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(
        textwrap.dedent(
            """
            from framewire import Message

            def handle(request):
                return Message.from_text(request.content.decode().upper())
            """
        )
    )
    server = spawn("serve", "--port", "0", "--app", "myapp:handle", cwd=str(tmp_path))
    with Client("127.0.0.1", server.port()) as client:
        assert client.request(Message.from_bytes(b"shout")).text() == "SHOUT"


def test_sigterm_with_clients_connected_loses_nothing(spawn: Any) -> None:
    server = spawn("serve", "--port", "0", "--app", "echo", "--log-level", "debug")  # connection lines
    port = server.port()
    clients = [Client("127.0.0.1", port).connect() for _ in range(5)]
    for i, client in enumerate(clients):
        assert client.request(Message.from_bytes(b"answered %d" % i)).content == b"answered %d" % i
    in_flight = socket.create_connection(("127.0.0.1", port), timeout=10)
    in_flight.sendall(encode(Message.from_bytes(b"in flight")))
    server.wait_for("connection from .* opened \\(6 open\\)")
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    # The request sent before the signal was answered before the server exited.
    assert [m.content for m in read_messages(in_flight, 1)] == [b"in flight"]
    assert in_flight.recv(1) == b""
    in_flight.close()
    for client in clients:
        client.close()
    assert "Traceback" not in err


def test_sigint_stops_serve_cleanly(spawn: Any) -> None:
    server = spawn("serve", "--port", "0")
    server.port()
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


# -- the guide's raw programs --------------------------------------------------------


def test_echo_server_and_client(spawn: Any) -> None:
    server = spawn("echo-server", "--port", "0")
    port = str(server.port())
    text = "Hello, \N{DOG FACE}"
    result = run_cli("echo-client", "127.0.0.1", port, text)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"Received {text.encode()!r}"
    # The guide's first server serves one client, then exits by itself.
    code, _, err = server.stop(None)
    assert code == 0 and "closed the connection" in err


def test_echo_client_default_text(spawn: Any) -> None:
    server = spawn("echo-server", "--port", "0")
    result = run_cli("echo-client", "127.0.0.1", str(server.port()))
    assert result.stdout.strip() == "Received b'Hello, world'"


def test_echo_client_with_nothing_listening(free_port: int) -> None:
    result = run_cli("echo-client", "127.0.0.1", str(free_port))
    assert result.returncode == 1 and "nothing is listening" in result.stderr
    no_traceback(result)


@pytest.mark.parametrize("command", ["echo-server", "multiconn-server"])
def test_raw_servers_on_a_port_in_use(command: str, taken_port: int) -> None:
    result = run_cli(command, "--port", str(taken_port))
    assert result.returncode == 1 and "already in use" in result.stderr
    no_traceback(result)


def test_multiconn_server_and_client(spawn: Any) -> None:
    server = spawn("multiconn-server", "--port", "0")
    port = str(server.port())
    result = run_cli("multiconn-client", "127.0.0.1", port, "--connections", "3", "Message 1", "Message 2")
    assert result.returncode == 0, result.stderr
    assert "Starting connection 3" in result.stdout
    assert (
        result.stdout.strip()
        .splitlines()[-1]
        .startswith("3 connections, 2 messages each: 54 bytes sent, 54 received, 3 complete, 0 failed")
    )
    result = run_cli("multiconn-client", "127.0.0.1", port, "-c", "100", "--quiet")
    assert "100 complete, 0 failed" in result.stdout
    code, _, err = server.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in err


def test_multiconn_client_with_nothing_listening(free_port: int) -> None:
    result = run_cli("multiconn-client", "127.0.0.1", str(free_port), "-q")
    assert result.returncode == 1
    assert "0 complete, 2 failed" in result.stdout
    assert "Traceback" not in result.stderr


def loaded_after(statement: str) -> list[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(sys.modules)))"
    args = [sys.executable, "-c", code]
    result = subprocess.run(args, capture_output=True, text=True, timeout=30, check=True)
    modules: list[str] = json.loads(result.stdout)
    return modules


def test_import_framewire_loads_only_the_core() -> None:
    tools = ("click", "psutil", "dpkt")
    assert [m for m in loaded_after("import framewire") if m.split(".")[0] in tools] == []
    cli = loaded_after("import framewire.cli")
    # The command line itself needs click; each command imports its tools when it runs.
    assert [m for m in cli if m.split(".")[0] in ("psutil", "dpkt")] == []
    for heavy in ("server.epoll", "server.epoll_loop", "server.handlers", "client.blocking", "tools.proxy",
                  "tools.capture", "tools.sockets", "tools.loadgen", "tools.ping"):  # fmt: skip
        assert f"framewire.{heavy}" not in cli
    assert "asyncio" not in cli


def ipv6_available() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback on this machine")
def test_ipv6_serve_request_ping_proxy_bench(spawn: Any) -> None:
    server = spawn("serve", "--host", "::1", "--port", "0", "--app", "echo")
    port = server.wait_for(r"on \[::1\]:(\d+)").group(1)
    answer = run_cli("request", "::1", port, "--text", "over IPv6")
    assert answer.returncode == 0 and answer.stdout.strip() == "over IPv6", answer.stderr
    pinged = run_cli("ping", "::1", port, "-n", "1")
    assert pinged.returncode == 0 and f"[::1]:{port}" in pinged.stdout
    proxy = spawn("proxy", "::1", port, "--host", "::1", "--port", "0", "-q")
    proxied = proxy.wait_for(r"proxy on \[::1\]:(\d+) -> \[::1\]:" + port).group(1)
    through = run_cli("request", "::1", proxied, "--text", "through the proxy")
    assert through.returncode == 0 and through.stdout.strip() == "through the proxy", through.stderr
    loaded = run_cli("bench", "::1", port, "-c", "2", "-d", "2", "-n", "200", "--check", "-q")
    assert loaded.returncode == 0, loaded.stderr


@pytest.mark.usefixtures("driver")
def test_unix_socket_serve_request_ping_proxy_bench(spawn: Any, tmp_path: Path) -> None:
    path = tmp_path / "fw.sock"
    server = spawn("serve", "--unix", str(path), "--unix-mode", "660", "--app", "echo")
    server.wait_for(f"on unix:{path}")
    assert path.stat().st_mode & 0o777 == 0o660
    answer = run_cli("request", f"unix:{path}", "--text", "over a unix socket")
    assert answer.returncode == 0 and answer.stdout.strip() == "over a unix socket", answer.stderr
    pinged = run_cli("ping", f"unix:{path}", "-n", "1")
    assert pinged.returncode == 0 and f"from unix:{path}: seq=1" in pinged.stdout, pinged.stdout
    loaded = run_cli("bench", f"unix:{path}", "-c", "2", "-d", "2", "-n", "200", "--check", "-q")
    assert loaded.returncode == 0, loaded.stderr
    front = tmp_path / "proxy.sock"
    proxy = spawn("proxy", f"unix:{path}", "--unix", str(front), "-q")
    proxy.wait_for(f"proxy on unix:{front} -> unix:{path}")
    through = run_cli("request", f"unix:{front}", "--text", "through the proxy")
    assert through.returncode == 0 and through.stdout.strip() == "through the proxy", through.stderr
    second = run_cli("serve", "--unix", str(path), timeout=20)
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"framewire: unix:{path} is in use by a running server: stop it or choose another --unix path"
    )
    code, _, _ = server.stop()
    assert code == 0 and not path.exists()
    gone = run_cli("request", f"unix:{path}", "--text", "anyone?")
    assert gone.returncode == 1
    assert gone.stderr == f"framewire: no socket at unix:{path}: is the server running?\n"


def test_unix_address_usage_errors(tmp_path: Path) -> None:
    missing_port = run_cli("request", "127.0.0.1", "--text", "x")
    assert missing_port.returncode == 2
    bad_mode = run_cli("serve", "--unix", str(tmp_path / "s"), "--unix-mode", "999")
    assert bad_mode.returncode == 2 and "octal mode" in bad_mode.stderr
    mode_alone = run_cli("serve", "--unix-mode", "600")
    assert mode_alone.returncode == 2 and "--unix-mode goes with --unix" in mode_alone.stderr


@pytest.mark.usefixtures("driver")
def test_tls_in_two_commands_and_every_failure_is_one_line(spawn: Any, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    made = run_cli("certs", str(certs))
    assert made.returncode == 0, made.stderr
    names = ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem", "ca-key.pem"]
    assert made.stdout.split() == [str(certs / name) for name in names]
    assert (certs / "server-key.pem").stat().st_mode & 0o777 == 0o600
    assert (certs / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    again = run_cli("certs", str(certs))
    assert again.returncode == 1 and "--force" in again.stderr
    (tmp_path / "a-file").write_text("")
    for folder, expected in (
        (
            tmp_path / "a-file" / "certs",
            f"framewire: cannot create the folder {tmp_path}/a-file/certs: Not a directory\n",
        ),
        (
            "/proc/framewire-certs",
            "framewire: cannot create the folder /proc/framewire-certs: No such file or directory\n",
        ),
    ):
        refused = run_cli("certs", str(folder))
        assert (refused.returncode, refused.stderr) == (1, expected)
    ca, cert, key = (str(certs / n) for n in ("ca.pem", "client.pem", "client-key.pem"))
    server = spawn("serve", "--port", "0", "--tls-cert", str(certs / "server.pem"),
                   "--tls-key", str(certs / "server-key.pem"), "--tls-client-ca", ca,
                   "--log-level", "debug")  # fmt: skip
    port = server.wait_for(r"127\.0\.0\.1:(\d+) over TLS").group(1)
    mutual = ("--tls-ca", ca, "--tls-cert", cert, "--tls-key", key)
    answer = run_cli("request", "localhost", port, *mutual, "search", "ring")
    assert answer.returncode == 0 and "Misty Mountains" in answer.stdout, answer.stderr
    server.wait_for("opened, TLSv1.3, client certificate framewire-client")
    pinged = run_cli("ping", "localhost", port, *mutual, "-n", "1")
    assert pinged.returncode == 0, pinged.stderr
    loaded = run_cli("bench", "localhost", port, *mutual, "--search", "-c", "2", "-d", "2", "-n", "100", "-q")
    assert loaded.returncode == 0, loaded.stderr
    failures = {
        "no client certificate": (("--tls-ca", ca), "client certificate"),
        "untrusted server": (("--tls",), "does not trust"),
        "plaintext": ((), "if the server speaks TLS, add --tls"),
        "wrong name": ((*mutual, "--tls-server-name", "example.com"), "not valid for this host name"),
    }
    for why, (options, expected) in failures.items():
        failed = run_cli("request", "localhost", port, *options, "search", "ring")
        assert failed.returncode == 1, why
        assert failed.stderr.count("\n") == 1 and expected in failed.stderr, (why, failed.stderr)
        assert "Traceback" not in failed.stderr
    server.wait_for("TLS handshake failed: the client presented no certificate")
    still = run_cli("request", "localhost", port, *mutual, "search", "ring")
    assert still.returncode == 0, still.stderr
    # A second client, signed by the same CA, with the server's certificate untouched.
    server_pem = (certs / "server.pem").read_bytes()
    issued = run_cli("certs", "issue", str(certs), "bob", "--client")
    assert issued.returncode == 0, issued.stderr
    assert issued.stdout.split() == [str(certs / "bob.pem"), str(certs / "bob-key.pem")]
    assert (certs / "bob-key.pem").stat().st_mode & 0o777 == 0o600
    assert (certs / "server.pem").read_bytes() == server_pem
    bob = ("--tls-ca", ca, "--tls-cert", str(certs / "bob.pem"), "--tls-key", str(certs / "bob-key.pem"))
    assert run_cli("request", "localhost", port, *bob, "search", "ring").returncode == 0
    server.wait_for("client certificate bob")
    again = run_cli("certs", "issue", str(certs), "bob", "--client")
    assert (again.returncode, again.stderr) == (
        1,
        f"framewire: {certs} already has bob.pem, bob-key.pem (--force replaces them)\n",
    )
    missing = run_cli("certs", "issue", str(tmp_path / "none"), "bob")
    assert missing.returncode == 1 and "make the CA first" in missing.stderr
    code, _, err = server.stop()
    assert code == 0 and "Traceback" not in err


def test_tls_option_errors(tmp_path: Path) -> None:
    key_alone = run_cli("request", "127.0.0.1", "1", "--tls-key", "k.pem", "search", "x")
    assert key_alone.returncode == 2 and "--tls-key goes with --tls-cert" in key_alone.stderr
    missing = run_cli("serve", "--tls-cert", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2
    assert (
        missing.stderr == f"framewire: cannot read the server certificate or key: {tmp_path / 'nope.pem'}\n"
    )
    (tmp_path / "junk.pem").write_text("not a certificate")
    junk = run_cli("request", "127.0.0.1", "1", "--tls-ca", str(tmp_path / "junk.pem"), "search", "x")
    assert junk.returncode == 2 and "does not load" in junk.stderr


def test_call_runs_the_actions_of_a_user_s_app(spawn: Any) -> None:
    tests = str(Path(__file__).resolve().parent)
    server = spawn("serve", "--app", "kv_app:app", "--port", "0", cwd=tests)
    port = str(server.port())
    added = run_cli("call", "127.0.0.1", port, "add", "[1, 2]")
    assert (added.returncode, added.stdout) == (0, "3\n"), added.stderr
    assert run_cli("call", "127.0.0.1", port, "set", '["a", {"x": 1}]').stdout == "ok\n"
    assert run_cli("call", "127.0.0.1", port, "get", "a").stdout == '{"x": 1}\n'  # "a" is not JSON: a string
    missing = run_cli("call", "127.0.0.1", port, "get", "b")
    assert missing.returncode == 1
    assert missing.stderr == "framewire: get failed: not-found: There is no key 'b'.\n"
    unknown = run_cli("call", "127.0.0.1", port, "nosuch")
    assert (
        unknown.returncode == 1 and "unknown-action" in unknown.stderr and "add, get, set" in unknown.stderr
    )


@pytest.mark.parametrize(
    "command", ["request", "call", "ping", "bench", "echo-client", "multiconn-client", "proxy"]
)
def test_every_client_command_takes_the_server_as_host_port(command: str) -> None:
    shown = run_cli(command, "--help")
    assert shown.returncode == 0
    usage = " ".join(shown.stdout.split("\n\n")[0].split())
    assert re.match(rf"Usage: .*framewire {command} \[OPTIONS\] HOST PORT", usage), usage
    options = shown.stdout
    assert "-c, --connections" in options or " -c," not in options  # -c is connections, or nothing
    assert "-n, --count" in options or " -n," not in options  # -n is a count, or nothing
    assert "-W" not in options


def test_failures_a_new_user_met_are_one_line(tmp_path: Path) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        closed = str(placeholder.getsockname()[1])
    refused = run_cli("bench", "127.0.0.1", closed, "-n", "10", "-q")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == f"framewire: nothing is listening on 127.0.0.1:{closed} (connection refused)\n"
    unresolved = run_cli("multiconn-client", "nosuchhost.invalid", "1", "-q")
    assert unresolved.returncode != 0 and "'nosuchhost.invalid'" in unresolved.stderr
    assert unresolved.stderr.count("\n") == 1
    (tmp_path / "brokenapp.py").write_text("x = 1\nraise RuntimeError('boom')\n")
    broken = subprocess.run(framewire_cmd("serve", "--app", "brokenapp:app", "--port", "0"), cwd=tmp_path,
                            capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
    assert broken.returncode == 2
    assert (
        broken.stderr.count("\n") == 1 and "RuntimeError: boom" in broken.stderr and "line 2" in broken.stderr
    )
    both = run_cli("request", "127.0.0.1", "1", "search", "x", "--json", "{}")
    assert both.returncode == 2 and "not both" in both.stderr


def test_an_http_server_is_named_as_such() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer_http() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_http)
        thread.start()
        result = run_cli("request", "127.0.0.1", str(port), "search", "x")
        thread.join(10)
    assert result.returncode == 1
    assert "HTTP message: is this a framewire server?" in result.stderr and result.stderr.count("\n") == 1


def test_bench_check_against_another_app_says_why(echo_server: Any) -> None:
    with running(search_app()) as server:
        result = run_cli("bench", "127.0.0.1", str(server.port), "-n", "50", "--check", "-q")
    assert result.returncode == 1
    assert "is the server running the echo app (framewire serve --app echo)?" in result.stderr


def test_bench_ctrl_c_prints_the_summary_so_far(spawn: Any) -> None:
    with running(echo) as server:
        proc = subprocess.Popen(framewire_cmd("bench", "127.0.0.1", str(server.port), "-t", "30", "-q"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 20
        while server.requests_total < 1000:
            assert time.monotonic() < deadline, "the load never came"
            time.sleep(0.02)  # the server's counter, polled with a deadline
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert " responses in " in out and "errors 0" in out


def test_request_raw_writes_the_content_bytes(echo_server: Any) -> None:
    result = subprocess.run(
        framewire_cmd("request", "127.0.0.1", str(echo_server.port), "--text", "caf\\u00e9", "--raw"),
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == b"caf\\u00e9"


def test_decode_lists_the_ports_a_capture_does_have(tmp_path: Path) -> None:
    import dpkt

    path = tmp_path / "other.pcap"
    with path.open("wb") as out:
        writer = dpkt.pcap.Writer(out)
        syn_ack = dpkt.tcp.TCP(sport=7000, dport=50000, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        ip = dpkt.ip.IP(
            src=socket.inet_aton("127.0.0.1"), dst=socket.inet_aton("127.0.0.1"), p=6, data=syn_ack
        )
        writer.writepkt(dpkt.ethernet.Ethernet(type=dpkt.ethernet.ETH_TYPE_IP, data=ip).pack(), ts=1.0)
    result = run_cli("decode", str(path))
    # Nothing found is a failure a script can see, said in one line.
    assert result.returncode == 1
    assert result.stderr.startswith("framewire: no framewire message on port 65432")
    assert result.stderr.endswith("7000 (1); give one with --port\n") and result.stderr.count("\n") == 1


def test_the_banner_of_a_wildcard_address_says_where_to_connect(spawn: Any) -> None:
    server = spawn("serve", "--host", "0.0.0.0", "--port", "0")
    line = server.wait_for(r"Try:\n  (.+)").group(1)
    assert " request 127.0.0.1 " in line and "0.0.0.0" not in line


def test_the_banner_names_the_command_as_it_can_be_typed(tmp_path: Path) -> None:
    # As after make serve: the console script run by its path, not on the PATH.
    script = Path(sys.executable).parent / "framewire"
    if not script.exists():
        pytest.skip("no framewire console script beside this Python")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.Popen([str(script), "serve", "--port", "0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        banner = proc.stderr.readline() + proc.stderr.readline()
    finally:
        proc.kill()  # only the banner matters here (stopping is tested elsewhere)
        proc.communicate(timeout=20)
    command = banner.split("Try:\n  ", 1)[1].split(" request ", 1)[0]
    assert command != "framewire" and Path(command).resolve() == script.resolve(), banner


def test_certs_force_replaces_files_never_writing_through_an_old_descriptor_or_a_link(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    assert run_cli("certs", str(certs)).returncode == 0
    old_key = certs / "server-key.pem"
    old_key.chmod(0o644)  # as if someone had made it readable
    reader = old_key.open("rb")  # a descriptor opened on the old, readable file
    before = reader.read()
    victim = tmp_path / "victim"
    victim.write_text("not a key")
    (certs / "client-key.pem").unlink()
    (certs / "client-key.pem").symlink_to(victim)  # planted in a key's place
    try:
        assert run_cli("certs", str(certs), "--force").returncode == 0
        reader.seek(0)
        assert reader.read() == before  # the old file, not the new key
    finally:
        reader.close()
    assert victim.read_text() == "not a key"  # the link was replaced, not followed
    assert not (certs / "client-key.pem").is_symlink()
    for name in ("server-key.pem", "client-key.pem", "ca-key.pem"):
        assert (certs / name).stat().st_mode & 0o777 == 0o600
    assert (certs / "server.pem").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        ["ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem", "ca-key.pem"]
    )  # no temporary file left behind


@pytest.mark.parametrize("loop", ["epoll", "asyncio"])
def test_a_single_process_logs_and_ignores_a_hang_up(spawn: Any, loop: str) -> None:
    server = spawn("serve", "--port", "0", "--app", "echo", "--loop", loop)
    port = server.port()
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for("SIGHUP ignored: one process does not reload")
    with Client("127.0.0.1", port) as client:
        assert client.request(Message.from_bytes(b"still here")).content == b"still here"
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err


def test_workers_auto_counts_the_cpus_the_process_may_use(tmp_path: Path) -> None:
    from framewire.server.workers import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(str(tmp_path)) == affinity  # no cgroup files: the affinity alone
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert usable_cpus(str(tmp_path)) == affinity
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one worker
    assert usable_cpus(str(tmp_path)) == 1
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1: one CPU
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(str(tmp_path)) == 1
    bad = run_cli("serve", "--workers", "many")
    assert bad.returncode == 2 and "'many' is neither a count of workers nor auto" in bad.stderr


def test_request_n_prints_what_arrived_before_the_server_closed(guide_app: int) -> None:
    # The guide's server answers one request a connection, then closes.
    result = run_cli("request", "127.0.0.1", str(guide_app), "search", "ring", "-n", "2")
    assert result.returncode == 1
    assert result.stdout == "In the caves beneath the Misty Mountains. 💍\n"
    assert result.stderr.startswith("framewire: ") and result.stderr.endswith("(after 1 answer)\n")
    assert "--tls" not in result.stderr  # it speaks the protocol: no TLS hint to mislead


def test_request_n_pipelines_more_than_its_window(spawn: Any) -> None:
    server = spawn("serve", "--port", "0", "--app", "echo")
    result = run_cli("request", "127.0.0.1", str(server.port()), "--text", "x", "-n", "300")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "x\n" * 300


def test_a_plain_client_closed_by_a_proxy_protocol_port_is_told_both_reasons(spawn: Any) -> None:
    server = spawn("serve", "--port", "0", "--proxy-protocol")
    result = run_cli("request", "127.0.0.1", str(server.port()), "search", "ring")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert "add --tls" in result.stderr and "connect through its load balancer" in result.stderr


@pytest.mark.parametrize("loop", ["epoll", "asyncio"])
def test_a_slow_inline_handler_is_named_in_a_warning(spawn: Any, loop: str, tmp_path: Path) -> None:
    (tmp_path / "slow_app.py").write_text(
        "import time\nfrom framewire import App\napp = App()\n\n"
        "@app.action\ndef report(value: int) -> int:\n    time.sleep(0.4)\n    return value\n"
    )
    server = spawn(
        "serve", "--port", "0", "--app", "slow_app:app", "--app-dir", str(tmp_path), "--loop", loop
    )
    port = str(server.port())
    assert run_cli("call", "127.0.0.1", port, "report", "1").stdout == "1\n"
    line = server.wait_for(r"WARNING .*held the server's loop for .*").group(0)
    assert "(report, from 127.0.0.1:" in line and "--threads N" in line


def test_serve_reload_restarts_the_server_when_the_app_changes(spawn: Any, tmp_path: Path) -> None:
    app = tmp_path / "greet_app.py"
    app.write_text(
        "from framewire import App\napp = App()\n\n"
        '@app.action\ndef hello(value: str) -> str:\n    return "hello " + value\n'
    )
    with socket.socket() as probe:  # a port the restarted server binds again
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    server = spawn("serve", "--reload", "--app", "greet_app:app", "--app-dir", str(tmp_path), "--port", port)
    server.wait_for("listening on")
    assert run_cli("call", "127.0.0.1", port, "hello", "world").stdout == "hello world\n"
    app.write_text(app.read_text().replace('"hello "', '"bonjour "'))
    server.wait_for("greet_app.py changed: restarting the server")
    server.wait_for("listening on")
    assert run_cli("call", "127.0.0.1", port, "hello", "world").stdout == "bonjour world\n"
    code, _, err = server.stop(signal.SIGTERM)
    assert code == 0, err
    with pytest.raises(OSError):  # the server went with the watcher
        socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()


def test_serve_reload_is_not_for_workers() -> None:
    result = run_cli("serve", "--reload", "--workers", "2")
    assert result.returncode == 1
    assert (
        result.stderr
        == "framewire: --reload is for development: not with --workers or --fd (SIGHUP reloads workers)\n"
    )
