"""MkDocs hook: the docstrings' Sphinx roles (``:class:`Client```, ``~a.b.Client``) read as
plain code on the site (mkdocstrings shows them as written)."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:meth|class|func|attr|mod|data|exc|obj):(?=<code>)")
# Sphinx's ``~a.b.Name``: shown as its last part, ``Name``.
_TILDE = re.compile(r"<code>~(?:[A-Za-z_][\w]*\.)+([A-Za-z_][\w]*)</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _TILDE.sub(r"<code>\1</code>", _ROLE.sub("", html))
