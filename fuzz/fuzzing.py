"""What every fuzz target shares: running a one-input check under atheris."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run(test_one_input: Callable[[bytes], None]) -> None:
    """Fuzz ``test_one_input`` with the command line's libFuzzer options."""
    import atheris  # noqa: PLC0415  (only the fuzzer needs it)

    atheris.instrument_all()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
