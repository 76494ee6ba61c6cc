"""Check the built documentation site (``make docs-check``).

Every page of ``site/`` is loaded in headless Chromium, as a reader's
browser would load it, and must render: its DOM, after scripts ran, has
the page's title heading and an article with text. Every link and image of
every page that points inside the site must reach a file that exists, and
a ``#fragment`` an element with that id. Prints one line per problem and
exits 1 if there is any.

    python dev/check_site.py [SITE_DIR]
"""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

#: Links that leave the site (checked by nobody here: no network in CI).
_EXTERNAL = ("http:", "https:", "mailto:", "data:", "javascript:")


class _Page(html.parser.HTMLParser):
    """The links, image sources and element ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "a" and found.get("name"):
            self.ids.add(str(found["name"]))
        for key in ("href", "src"):
            value = found.get(key)
            if value and tag in ("a", "img", "link", "script"):
                self.links.append(value)


def _parsed(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text("utf-8", "replace"))
    return page


def _prefix(site: Path) -> str | None:
    # The path the site is published under (its site_url's), from the
    # sitemap mkdocs writes: root-absolute links must begin with it.
    sitemap = site / "sitemap.xml"
    if not sitemap.exists():
        return None
    found = re.search(r"<loc>([^<]+)</loc>", sitemap.read_text("utf-8"))
    # (The first entry is the home page: the site_url itself.)
    return urllib.parse.urlsplit(found.group(1)).path if found else None


def broken_links(site: Path) -> list[str]:
    """Links inside the site that reach no file, or no element of that id."""
    problems = []
    prefix = _prefix(site)
    pages = {path: _parsed(path) for path in sorted(site.rglob("*.html"))}
    for path, page in pages.items():
        for link in page.links:
            if link.startswith(_EXTERNAL) or link.startswith("//"):
                continue
            parts = urllib.parse.urlsplit(link)
            target = path if not parts.path else (path.parent / urllib.parse.unquote(parts.path))
            if parts.path.startswith("/"):
                # Only the 404 page may (any path may show it), and only under
                # the site's own path (mkdocs.yml's site_url).
                if path.name != "404.html" or prefix is None or not parts.path.startswith(prefix):
                    problems.append(
                        f"{path.relative_to(site)}: {link}: root-absolute, outside the site's path"
                    )
                    continue
                target = site / urllib.parse.unquote(parts.path[len(prefix) :])
            target = target.resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                problems.append(f"{path.relative_to(site)}: {link}: no such file")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parsed(target).ids
                if urllib.parse.unquote(parts.fragment) not in ids:
                    problems.append(f"{path.relative_to(site)}: {link}: no element with that id")
    return problems


#: Docstring markup that should never reach a reader as it was written.
_RAW = re.compile(
    r"<code>~[\w.]+</code>|:(?:class|meth|func|attr|mod|exc):`|doctest: \+|^\s*&gt;&gt;&gt; ", re.M
)


def raw_markup(site: Path) -> list[str]:
    """Pages showing docstring markup as written (a Sphinx role, a
    ``~module.Name``, a doctest directive or prompt)."""
    problems = []
    for path in sorted(site.rglob("*.html")):
        found = _RAW.search(path.read_text("utf-8", "replace"))
        if found is not None:
            problems.append(f"{path.relative_to(site)}: raw docstring markup: {found.group(0).strip()!r}")
    return problems


def unrendered(site: Path, chromium: str) -> list[str]:
    """Pages whose DOM, after Chromium ran their scripts, lacks a title
    heading or an article with text."""
    problems = []
    with tempfile.TemporaryDirectory() as profile:
        for path in sorted(site.rglob("*.html")):
            if path.name == "404.html":
                continue
            done = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                 "--virtual-time-budget=3000", "--dump-dom", path.as_uri()],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            dom = done.stdout
            if done.returncode != 0 or "<h1" not in dom or "<article" not in dom:
                problems.append(f"{path.relative_to(site)}: did not render (exit {done.returncode})")
                continue
            article = _text_of(dom[dom.index("<article") :])
            if len(article.split()) < 20:
                problems.append(f"{path.relative_to(site)}: its article is nearly empty")
    return problems


def _text_of(markup: str) -> str:
    # The text of some HTML, tags dropped.
    class Text(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    parser = Text()
    parser.feed(markup)
    return " ".join(parser.parts)


def main() -> int:
    site = Path(sys.argv[1] if len(sys.argv) > 1 else "site").resolve()
    if not (site / "index.html").exists():
        print(f"check_site: no built site in {site} (make docs)", file=sys.stderr)
        return 1
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("check_site: no chromium (apt-get install chromium)", file=sys.stderr)
        return 1
    problems = broken_links(site) + raw_markup(site) + unrendered(site, chromium)
    for problem in problems:
        print(problem)
    pages = len(list(site.rglob("*.html")))
    print(f"check_site: {pages} pages, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
