"""``python -m framewire``: the same as the ``framewire`` command."""

import os
import sys

# python -m puts the current folder first on the path (unless -P): a
# resource.py there would be imported in place of the standard module the
# server imports later. Only --app MODULE:CALLABLE adds a folder, at the end.
if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from framewire.cli import main

main()
