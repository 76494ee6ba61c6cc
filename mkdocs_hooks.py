"""MkDocs hooks.

- The docstrings' Sphinx roles (``:class:`Client```, ``~a.b.Client``) read
  as plain code on the site (mkdocstrings shows them as written).
- A file of the repository a page names in code (``deploy/haproxy.cfg``,
  ``examples/kv.py``, ``benchmarks/results/...json``) is a link to a copy
  of that file the site carries (``files/...``): an operator reads the
  deploy file the page describes, as it is shipped.
"""

from __future__ import annotations

import html as html_lib
import re
import shutil
from pathlib import Path
from typing import Any

_ROLE = re.compile(r":(?:meth|class|func|attr|mod|data|exc|obj):(?=<code>)")
# Sphinx's ``~a.b.Name``: shown as its last part, ``Name``.
_TILDE = re.compile(r"<code>~(?:[A-Za-z_][\w]*\.)+([A-Za-z_][\w]*)</code>")
# A repository file named in code, outside a link already.
_FILE = re.compile(r'(?<!">)<code>((?:deploy|examples|benchmarks)/[\w./-]+)</code>')
_ROOT = Path(__file__).resolve().parent
#: The files linked so far in this build, copied into the site at its end.
_LINKED: set[str] = set()


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    html = _TILDE.sub(r"<code>\1</code>", _ROLE.sub("", html))
    depth = page.url.count("/")  # "deploy/" -> 1: the site's root is "../"
    root = "../" * depth

    def link(found: re.Match[str]) -> str:
        name = html_lib.unescape(found.group(1))
        if not (_ROOT / name).is_file():
            return found.group(0)  # a folder, or a file not in the repository: text
        _LINKED.add(name)
        return f'<a href="{root}files/{name}">{found.group(0)}</a>'

    return _FILE.sub(link, html)


def on_post_build(config: Any, **kwargs: Any) -> None:
    site = Path(config["site_dir"])
    for name in sorted(_LINKED):
        target = site / "files" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_ROOT / name, target)
