"""The wheel's build hook: framewire's hot path compiled with mypyc when it can be.

A wheel built from this tree (``pip install .``, ``pip wheel .``, ``python -m
build``) carries the modules ``framewire._build.COMPILED_MODULES`` lists (the
message, the decoder, the send queue, the timers, the connection engine and
the epoll loop) compiled by mypyc beside their Python sources, where Python
imports the compiled ones first: the build a user gets by default is the fast one (docs/internals.md,
"The compiled build"). Where it cannot compile (no C compiler, no Python
headers) the build says why in one warning and makes the pure-Python wheel,
which works everywhere: the package still installs.

``FRAMEWIRE_BUILD`` chooses:

- ``auto`` (the default): compiled if it can be, else pure Python;
- ``compiled``: compiled, and the build fails if it cannot be (CI and
  ``make compiled-copy``, which must not test a pure build by mistake);
- ``pure``: pure Python, without installing mypy into the build.

An editable install (``pip install -e .``, what ``make test`` uses) is always
pure Python: a compiled module beside its source would shadow every edit to it.
``framewire --version`` says which build is running.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.config import BuilderConfig
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

CHOICE = "FRAMEWIRE_BUILD"
CHOICES = ("auto", "compiled", "pure")
# The compiler is pinned: the compiled build CI tests (make test-compiled
# builds its wheel with this hook) is the one every wheel gets.
MYPYC_REQUIREMENTS = ["mypy==2.4.1", "setuptools>=70"]


def _choice() -> str:
    choice = os.environ.get(CHOICE, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{CHOICE}={choice!r}: expected one of {', '.join(CHOICES)}")
    return choice


def compiled_modules(root: Path) -> tuple[str, ...]:
    """The modules to compile, as framewire itself lists them (``framewire._build``),
    so that the build and ``--version`` cannot disagree."""
    spec = importlib.util.spec_from_file_location("_framewire_build", root / "src/framewire/_build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names: tuple[str, ...] = module.COMPILED_MODULES
    return names


class CompileHotPath(BuildHookInterface[BuilderConfig]):
    """Compiles :func:`compiled_modules` into the standard wheel, or leaves it pure."""

    PLUGIN_NAME = "custom"

    def dependencies(self) -> list[str]:
        """mypy (which carries mypyc) and setuptools (which mypyc builds with),
        unless the build is to be pure."""
        if _choice() == "pure":
            return []
        # And framewire's own dependencies: mypy follows the compiled modules'
        # imports (the engine reaches the metrics, which import
        # prometheus_client) and stops at a module it cannot find. Without
        # them it would find whatever the target environment happens to hold.
        return [*MYPYC_REQUIREMENTS, *self.metadata.core.dependencies]

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Compile into a scratch folder and add what it made to the wheel."""
        choice = _choice()
        if version == "editable" or choice == "pure":
            return
        self._scratch = Path(tempfile.mkdtemp(prefix="framewire-mypyc-"))
        try:
            made = self._compile(self._scratch)
        except _CompileFailed as failed:
            if choice == "compiled":
                raise RuntimeError(f"framewire: {CHOICE}=compiled, but mypyc failed: {failed}") from None
            self.app.display_warning(
                f"framewire: could not compile the hot path ({failed}); building the pure-Python wheel"
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        for path in made:
            build_data["force_include"][str(path)] = str(path.relative_to(self._scratch))
        self.app.display_info("framewire: compiled with mypyc: " + ", ".join(p.name for p in made))

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        """The scratch folder goes once the wheel holds its files."""
        scratch = getattr(self, "_scratch", None)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def _compile(self, scratch: Path) -> list[Path]:
        root = Path(self.root)
        # A copy of the package alone: mypyc then reads no project config and
        # writes its build folder and extensions nowhere in the source tree.
        shutil.copytree(
            root / "src/framewire",
            scratch / "framewire",
            ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd"),
        )
        modules = compiled_modules(root)
        sources = [name.replace(".", "/") + ".py" for name in modules]
        try:
            done = subprocess.run(
                [sys.executable, "-m", "mypyc", *sources],
                cwd=scratch,
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as error:
            raise _CompileFailed(str(error)) from None
        if done.returncode != 0:
            lines = (done.stdout + done.stderr).strip().splitlines()
            errors = [line for line in lines if "error" in line.lower()]
            raise _CompileFailed((errors or lines or [f"mypyc exited with {done.returncode}"])[0])
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        made = sorted(p for p in scratch.rglob("*" + suffix) if "build" not in p.relative_to(scratch).parts)
        expected = {name.rsplit(".", 1)[1] for name in modules}
        found = {p.name.split(".", 1)[0] for p in made}
        if not expected <= found:
            raise _CompileFailed(f"mypyc made {sorted(found)}, not {sorted(expected)}")
        return made


class _CompileFailed(Exception):
    """mypyc could not compile: the reason, in one line."""
