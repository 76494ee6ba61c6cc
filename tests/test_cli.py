"""The ``framewire`` command, run as a person runs it: a subprocess."""

from __future__ import annotations

import subprocess
import sys

from framewire import __version__


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "framewire", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout
    assert "Example" in result.stdout


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_demo_round_trips() -> None:
    result = run("demo", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "Every message decoded, identical to what was sent." in result.stdout
    assert "decoded text/plain (utf-16): 'Hello, world \N{DOG FACE}'" in result.stdout


def test_unknown_command_is_one_clear_line() -> None:
    result = run("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "No such command" in result.stderr
