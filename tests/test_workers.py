"""serve --workers, --fd and socket activation, as an operator runs them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import framewire_cmd, run_cli
from framewire import Client, Message
from framewire.server.workers import worker_command


def pids(text: str) -> dict[int, int]:
    """Worker number -> pid, the latest start of each, from the supervisor's log."""
    return {int(n): int(p) for n, p in re.findall(r"worker (\d+) started \(pid (\d+)\)", text)}


def read_until(proc: subprocess.Popen[str], text: str) -> str:
    """A process's stderr, line by line, until ``text`` (the test's timeout bounds it)."""
    assert proc.stderr is not None
    seen = ""
    while text not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    return seen


def ask(port: int, text: str = "hello") -> str:
    with Client("127.0.0.1", port, timeout=10) as client:
        return client.request(Message.from_text(text)).text()


def test_a_killed_worker_is_replaced_and_sigterm_stops_them_all(spawn: Any) -> None:
    server = spawn("serve", "--app", "echo", "--port", "0", "--workers", "2")
    port = int(server.wait_for(r"on 127\.0\.0\.1:(\d+) with 2 workers").group(1))
    server.wait_for("2 workers serving")
    assert ask(port) == "hello"
    victim = pids(server.err.decode())[1]
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    server.wait_for(rf"worker 1 \(pid {victim}\) was killed by SIGKILL: starting another")
    server.wait_for(rf"worker 1 started \(pid (?!{victim})\d+\)", timeout=2)
    assert time.monotonic() - started < 2
    for _ in range(10):
        assert ask(port) == "hello"
    code, _, err = server.stop()
    assert code == 0 and "all workers stopped" in err and "Traceback" not in err


def wait_in_file(path: Path, pattern: str, timeout: float = 30.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text(errors="replace"))
        if match:
            return match
        time.sleep(0.05)  # the log is a file another process writes: polled, with a deadline
    raise AssertionError(f"{pattern!r} never appeared in {path}:\n{path.read_text(errors='replace')[-3000:]}")


def test_sighup_replaces_every_worker_under_load_without_an_error(tmp_path: Path) -> None:
    # The log goes to a file: a pipe nobody reads during the load would fill
    # and stop the workers.
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(framewire_cmd("serve", "--app", "echo", "--port", "0", "--workers", "2"),
                                stderr=sink)  # fmt: skip
    try:
        port = int(wait_in_file(log, r"on 127\.0\.0\.1:(\d+) with 2 workers").group(1))
        wait_in_file(log, "2 workers serving")
        before = set(pids(log.read_text()).values())
        errors: list[str] = []
        done = [0]
        stop = threading.Event()

        def load() -> None:  # one request per connection, as the guide's client
            while not stop.is_set():
                try:
                    assert ask(port, "x") == "x"
                    done[0] += 1
                except Exception as exc:
                    errors.append(repr(exc))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            deadline = time.monotonic() + 10
            while done[0] < 200 and time.monotonic() < deadline:
                time.sleep(0.01)  # the load threads count; nothing else to wait on
            proc.send_signal(signal.SIGHUP)
            wait_in_file(log, "SIGHUP: 2 workers replaced")
            at_reload = done[0]
            deadline = time.monotonic() + 10
            while done[0] < at_reload + 200 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            stop.set()
            for thread in threads:
                thread.join(20)
        assert errors == []
        assert done[0] > at_reload + 100
        after = set(pids(log.read_text()).values())
        assert not before & after  # every worker is a new process
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def test_workers_on_a_unix_socket_remove_it_at_the_end(spawn: Any, tmp_path: Path) -> None:
    path = tmp_path / "fw.sock"
    server = spawn("serve", "--app", "echo", "--unix", str(path), "--workers", "2")
    server.wait_for("2 workers serving")
    answer = run_cli("request", f"unix:{path}", "--text", "hi")
    assert answer.stdout.strip() == "hi", answer.stderr
    code, _, _ = server.stop()
    assert code == 0 and not path.exists()


def test_serve_an_inherited_socket_and_systemd_s() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    serve = framewire_cmd("serve", "--app", "echo")
    # As systemd starts a service: the socket on descriptor 3, LISTEN_PID its pid.
    activate = (
        f"import os, sys; os.dup2({fd}, 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
        f"os.environ['LISTEN_FDS'] = '1'; os.execv(sys.executable, {serve!r})"
    )
    commands = {
        "--fd": [*serve, "--fd", str(fd)],
        "systemd": [sys.executable, "-c", activate],
    }
    for how, args in commands.items():
        proc = subprocess.Popen(args, pass_fds=(fd,), stderr=subprocess.PIPE, text=True)
        try:
            seen = read_until(proc, "listening on")
            assert f"127.0.0.1:{port}" in seen
            assert ask(port, how) == how
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        assert proc.returncode == 0
    listener.close()


def test_fd_that_is_not_a_listening_socket_is_one_line(tmp_path: Path) -> None:
    result = run_cli("serve", "--fd", "0")  # stdin: not a socket
    assert result.returncode == 2
    assert result.stderr.startswith("framewire: descriptor 0 is not ")
    assert result.stderr.count("\n") == 1


def test_the_worker_command_drops_what_the_supervisor_owns() -> None:
    command = worker_command(["serve", "--workers", "2", "--port=7000", "--host", "::", "--app", "echo"])
    assert command == [sys.executable, "-P", "-m", "framewire", "serve", "--app", "echo"]


@pytest.mark.parametrize("argv", [["--workers", "-1"], ["--workers", "x"]])
def test_bad_worker_counts(argv: list[str]) -> None:
    assert run_cli("serve", *argv).returncode == 2


def test_the_commands_in_deploy_files_are_valid() -> None:
    # What the systemd unit and the Kubernetes manifest run must be options
    # that exist: parsed by the command line itself (not run).
    import shlex

    from framewire.cli import main

    root = Path(__file__).resolve().parent.parent / "deploy"
    service = (root / "framewire.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=\S+/framewire (.+)$", service, re.M)
    manifest = (root / "kubernetes.yaml").read_text()
    args = re.search(r'args: \[("framewire", )?(.+?)\]', manifest.replace("\n", " "), re.S)
    assert args is not None
    k8s = [part.strip().strip('"') for part in args.group(2).split(",")]
    probes = re.findall(r'command: \["framewire", (.+?)\]', manifest)
    for argv in [shlex.split(exec_start), k8s[1:] if k8s[0] == "framewire" else k8s,
                 *([p.strip().strip('"') for p in probe.split(",")] for probe in probes)]:  # fmt: skip
        context = main.make_context("framewire", list(argv), resilient_parsing=False)
        command = main.get_command(context, argv[0])
        assert command is not None, argv
        command.make_context(argv[0], list(argv[1:]))  # raises on an unknown option or a bad value


def test_the_kubernetes_manifest_is_valid_against_the_kubernetes_schema() -> None:
    # As an operator's CI would check it (no cluster needed): strict, so a
    # misspelt field is an error, not a field Kubernetes silently drops.
    manifest = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes.yaml"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", str(manifest)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == 2, done.stdout
    text = manifest.read_text()
    # What the issue found wrong, each kept right: workers by the pod's CPUs,
    # probe timeouts above the pings', a drain delay before SIGTERM.
    assert '"--workers", "auto"' in text and 'limits: {cpu: "2"' in text
    assert text.count("timeoutSeconds:") == 2 and "preStop:" in text


def test_a_worker_that_keeps_dying_is_restarted_with_growing_delays(tmp_path: Path) -> None:
    # The supervisor alone, over a "worker" that exits at once with status 3.
    script = tmp_path / "supervise.py"
    script.write_text(
        "import logging, socket, sys\n"
        "from framewire.server.workers import Supervisor\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "listener = socket.create_server(('127.0.0.1', 0))\n"
        "dying = [sys.executable, '-c', 'import sys; sys.exit(3)']\n"
        "sys.exit(Supervisor(dying, listener, 1, grace=1).run())\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, text=True)
    seen = read_until(proc, "in 0.4 s (it keeps failing)")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == 0
    delays = re.findall(r"exited with status 3: starting another(?: in ([\d.]+) s)?", seen)
    assert delays[:4] == ["", "0.1", "0.2", "0.4"]


# -- issue 37: signals, orphans, socket activation and reloads under --workers ---------

SLOW_APP = """
import time
from framewire import Message

def app(request):
    if request.content == b"slow":
        time.sleep(1.0)  # the work: a request in flight when the stop comes
    return Message(request.content, request.content_type, request.content_encoding)
"""


def live_children(pid: int) -> list[Any]:
    import psutil

    return [p for p in psutil.Process(pid).children() if p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("how", ["process-group", "control-group"])
def test_one_stop_signal_however_delivered_is_one_graceful_drain(tmp_path: Path, how: str) -> None:
    # Ctrl-C reaches the supervisor and every worker (one process group);
    # systemd's KillMode=control-group sends SIGTERM to each process too.
    (tmp_path / "slowapp.py").write_text(SLOW_APP)
    proc = subprocess.Popen(
        framewire_cmd(
            "serve", "--app", "slowapp:app", "--app-dir", str(tmp_path), "--port", "0", "--workers", "2"
        ),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        seen = read_until(proc, "2 workers serving")
        port = int(re.findall(r"on 127\.0\.0\.1:(\d+) with 2 workers", seen)[0])
        answers: list[str] = []
        client = Client("127.0.0.1", port, timeout=20)
        asker = threading.Thread(
            target=lambda: answers.append(client.request(Message.from_text("slow")).text())
        )
        asker.start()
        deadline = time.monotonic() + 10
        while not any(c.net_connections("tcp4") for c in live_children(proc.pid)):
            assert time.monotonic() < deadline
            time.sleep(0.01)  # until a worker holds the connection
        if how == "process-group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            for member in [proc.pid, *(c.pid for c in live_children(proc.pid))]:
                os.kill(member, signal.SIGTERM)
        asker.join(20)
        client.close()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert answers == ["slow"], err
    assert proc.returncode == 0 and "stopping now" not in err


def test_workers_leave_when_their_supervisor_is_killed() -> None:
    import psutil

    proc = subprocess.Popen(
        framewire_cmd("serve", "--app", "echo", "--port", "0", "--workers", "2"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = read_until(proc, "2 workers serving")
        port = int(re.findall(r"on 127\.0\.0\.1:(\d+) with 2 workers", seen)[0])
        workers = live_children(proc.pid)
        assert len(workers) == 2
        proc.kill()
        proc.communicate(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert alive == []
    finally:
        if proc.poll() is None:
            proc.kill()
    # The port is free for the restart.
    socket.create_server(("127.0.0.1", port)).close()


def test_socket_activation_with_workers_supervises_and_reloads() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    serve = framewire_cmd("serve", "--app", "echo", "--workers", "2")
    activate = (
        f"import os, sys; os.dup2({fd}, 3); os.environ['LISTEN_PID'] = str(os.getpid()); "
        f"os.environ['LISTEN_FDS'] = '1'; os.execv(sys.executable, {serve!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", activate], pass_fds=(fd,), stderr=subprocess.PIPE, text=True
    )
    listener.close()
    try:
        read_until(proc, "2 workers serving")
        assert ask(port, "activated") == "activated"
        proc.send_signal(signal.SIGHUP)
        read_until(proc, "SIGHUP: 2 workers replaced")
        assert ask(port, "reloaded") == "reloaded"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_a_reload_of_code_that_does_not_start_ends_at_once_and_keeps_n_workers(tmp_path: Path) -> None:
    app = tmp_path / "reloadapp.py"
    app.write_text("from framewire.server.app import echo as app\n")
    proc = subprocess.Popen(
        framewire_cmd(
            "serve", "--app", "reloadapp:app", "--app-dir", str(tmp_path), "--port", "0", "--workers", "2"
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = read_until(proc, "2 workers serving")
        port = int(re.findall(r"on 127\.0\.0\.1:(\d+) with 2 workers", seen)[0])
        app.write_text("raise ImportError('broken on purpose')\n")
        started = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        seen = read_until(proc, "the new code does not start: keeping the old workers")
        assert time.monotonic() - started < 10  # not the 60 s readiness wait
        # A worker that dies now is replaced at once, as ever.
        survivors = [c.pid for c in live_children(proc.pid)]
        assert len(survivors) == 2
        victim = survivors[0]
        os.kill(victim, signal.SIGKILL)
        read_until(proc, f"(pid {victim}) was killed by SIGKILL: starting another")
        read_until(proc, "started (pid")
        app.write_text("from framewire.server.app import echo as app\n")
        proc.send_signal(signal.SIGHUP)
        read_until(proc, "SIGHUP: 2 workers replaced")
        assert ask(port, "fixed") == "fixed"
        deadline = time.monotonic() + 30
        while len(live_children(proc.pid)) != 2:  # the old ones drain and leave
            assert time.monotonic() < deadline, live_children(proc.pid)
            time.sleep(0.05)
        proc.send_signal(signal.SIGHUP)  # and once more: still exactly 2
        read_until(proc, "SIGHUP: 2 workers replaced")
        deadline = time.monotonic() + 30
        while len(live_children(proc.pid)) != 2:
            assert time.monotonic() < deadline, live_children(proc.pid)
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
