"""MkDocs hook: the docstrings' Sphinx roles (``:class:`Client```) read as
plain code on the site (mkdocstrings shows them as written)."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:meth|class|func|attr|mod|data|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _ROLE.sub("", html)
