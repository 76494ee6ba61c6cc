"""Copy the compiled modules of a framewire wheel into a source folder.

``make compiled`` and ``make compiled-copy`` build the wheel as pip does
(hatch_build.py compiles the hot path into it), then put its extension
modules beside the Python sources, where Python imports them first::

    python dev/wheel_extensions.py build/wheel/framewire-*.whl src
"""

from __future__ import annotations

import sys
import sysconfig
import zipfile
from pathlib import Path


def extract(wheel: Path, into: Path) -> list[str]:
    """The wheel's extension modules written under ``into``; their names."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if name.endswith(suffix)]
        for name in names:
            archive.extract(name, into)
    return names


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: wheel_extensions.py WHEEL FOLDER", file=sys.stderr)
        return 2
    wheel, into = Path(argv[0]), Path(argv[1])
    if not wheel.is_file():
        print(f"wheel_extensions.py: no wheel at {wheel} (make compiled-wheel)", file=sys.stderr)
        return 1
    names = extract(wheel, into)
    if not names:
        print(f"wheel_extensions.py: {wheel.name} is a pure-Python wheel", file=sys.stderr)
        return 1
    print(f"{len(names)} compiled modules from {wheel.name} into {into}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
