"""The wheel pip builds from this tree: compiled where a C compiler is, pure
Python where none is, and working either way (hatch_build.py).

The wheels are built as ``pip wheel`` builds them, but without build
isolation (the build uses this environment's hatchling and mypy rather than
downloading its own): ``make serve`` and ``make compiled-wheel`` take the
isolated path in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from framewire._build import COMPILED_MODULES

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
EXT_SUFFIX = sysconfig.get_config_var("EXT_SUFFIX")
NO_COMPILER = {"CC": "/nonexistent/cc"}


def pip_wheel(into: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "FRAMEWIRE_BUILD"}
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(into), str(ROOT)],
        env={**environ, **env}, capture_output=True, text=True, timeout=170, check=False,
    )  # fmt: skip


def built(into: Path, **env: str) -> tuple[Path, str]:
    """The wheel built into ``into`` with ``env``, installed beside it; the
    folder it is installed in, and what the build printed."""
    done = pip_wheel(into, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = into.glob("framewire-*.whl")
    target = into / "installed"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)],
        check=True, timeout=120,
    )  # fmt: skip
    return target, done.stdout + done.stderr


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return built(tmp_path_factory.mktemp("compiled"))


@pytest.fixture(scope="module")
def without_compiler(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return built(tmp_path_factory.mktemp("pure"), **NO_COMPILER)


def wheel_of(target: Path) -> Path:
    (wheel,) = target.parent.glob("framewire-*.whl")
    return wheel


def extensions(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return [name for name in archive.namelist() if name.endswith(EXT_SUFFIX)]


def version(target: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``framewire --version`` of the wheel installed in ``target`` (and not
    of this tree, which the environment also holds)."""
    monkeypatch.setenv("PYTHONPATH", str(target))
    where = subprocess.run(
        [sys.executable, "-c", "import framewire; print(framewire.__file__)"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert Path(where.strip()).is_relative_to(target), where
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_where_a_compiler_is_the_wheel_carries_the_compiled_hot_path(
    compiled: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, printed = compiled
    wheel = wheel_of(target)
    assert not wheel.name.endswith("-none-any.whl"), wheel.name  # tagged for this interpreter
    names = extensions(wheel)
    for module in COMPILED_MODULES:
        assert module.replace(".", "/") + EXT_SUFFIX in names
    assert any("__mypyc" in name for name in names)  # mypyc's shared runtime, at the top
    assert "framewire: compiled with mypyc" in printed
    short = ", ".join(module.rsplit(".", 1)[1] for module in COMPILED_MODULES)
    assert short == (
        "message, decoder, probe, sendqueue, timers, transport, answers, flow, engine, state, epoll_loop, "
        "connection"
    )
    assert version(target, monkeypatch) == f"framewire 0.1.0 (compiled with mypyc: {short})\n"


def test_without_a_compiler_the_wheel_is_pure_python_and_the_build_says_why(
    without_compiler: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, printed = without_compiler
    wheel = wheel_of(target)
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    assert extensions(wheel) == []
    (said,) = [line.strip() for line in printed.splitlines() if "could not compile" in line]
    assert said.startswith("framewire: could not compile the hot path (")
    assert "/nonexistent/cc" in said
    assert said.endswith("); building the pure-Python wheel")
    assert version(target, monkeypatch) == "framewire 0.1.0 (pure Python)\n"


@pytest.mark.parametrize("build", ["compiled", "without_compiler"])
def test_the_installed_wheel_serves(
    build: str, request: pytest.FixtureRequest, spawn: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, _ = request.getfixturevalue(build)
    monkeypatch.setenv("PYTHONPATH", str(target))
    server = spawn("serve", "--port", "0")
    port = server.port()
    answer = run_cli("request", "127.0.0.1", str(port), "search", "morpheus")
    assert (answer.returncode, answer.stdout) == (0, "Follow the white rabbit. 🐰\n"), answer.stderr
    code, _, err = server.stop()
    assert code == 0, err


def test_compiled_on_demand_fails_the_build_without_a_compiler(tmp_path: Path) -> None:
    done = pip_wheel(tmp_path, FRAMEWIRE_BUILD="compiled", **NO_COMPILER)
    assert done.returncode != 0
    assert "framewire: FRAMEWIRE_BUILD=compiled, but mypyc failed: " in done.stdout + done.stderr
    assert list(tmp_path.glob("*.whl")) == []


def test_pure_on_demand_does_not_try(tmp_path: Path) -> None:
    done = pip_wheel(tmp_path, FRAMEWIRE_BUILD="pure")
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("framewire-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert "could not compile" not in done.stdout + done.stderr


def test_an_unknown_choice_is_refused_in_one_line(tmp_path: Path) -> None:
    done = pip_wheel(tmp_path, FRAMEWIRE_BUILD="fast")
    assert done.returncode != 0
    assert "FRAMEWIRE_BUILD='fast': expected one of auto, compiled, pure" in done.stdout + done.stderr


@pytest.mark.parametrize("build", ["compiled", "without_compiler"])
def test_make_compiled_takes_the_compiled_modules_out_of_the_wheel(
    build: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target, _ = request.getfixturevalue(build)
    wheel = wheel_of(target)
    done = subprocess.run(
        [sys.executable, str(ROOT / "dev/wheel_extensions.py"), str(wheel), str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    if build == "compiled":
        # and mypyc's shared runtime
        said = f"{len(COMPILED_MODULES) + 1} compiled modules from {wheel.name} into {tmp_path}\n"
        assert (done.returncode, done.stdout) == (0, said)
        for module in COMPILED_MODULES:
            assert (tmp_path / (module.replace(".", "/") + EXT_SUFFIX)).is_file()
    else:
        said = f"wheel_extensions.py: {wheel.name} is a pure-Python wheel\n"
        assert (done.returncode, done.stderr) == (1, said)
        assert list(tmp_path.iterdir()) == []
