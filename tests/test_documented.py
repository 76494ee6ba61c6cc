"""What the documentation promises, held to the code: every default in
docs/limits.md is the one ServerConfig has (a changed default must change
the document too), and malformed error responses are read safely."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from framewire import Message
from framewire.core.errors import ProtocolError
from framewire.server.config import ServerConfig, settings

ROOT = Path(__file__).resolve().parent.parent


def _number(text: str) -> float:
    # "64 MiB", "1 MiB", "10,000", "0 (inline)", "65535 (the field's maximum)"
    match = re.match(r"([\d,.]+)\s*(MiB|KiB)?", text)
    assert match, text
    value = float(match.group(1).replace(",", ""))
    return value * {"MiB": 1 << 20, "KiB": 1 << 10, None: 1}[match.group(2)]


def test_every_default_in_docs_limits_is_the_config_s() -> None:
    rows = [
        line.split("|")
        for line in (ROOT / "docs/limits.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    checked = 0
    defaults = ServerConfig()
    for cells in rows[1:]:  # the header row first
        argument = cells[2].strip().strip("`")
        if not hasattr(defaults, argument):
            continue
        assert getattr(defaults, argument) == _number(cells[4].strip()), argument
        checked += 1
    assert checked == len(settings())  # every setting has its row


@pytest.mark.parametrize(
    "content",
    [b"{}", b'{"error": {"code": "x"}}', b'{"error": "oops"}', b"not json", b'{"error": {"message": "m"}}'],
)
def test_a_malformed_error_response_reads_as_a_protocol_error(content: bytes) -> None:
    message = Message(content, "text/json", "utf-8", extensions={"status": "error"})
    error = message.error()
    assert type(error) is ProtocolError
    assert (
        error.code == "protocol-error" and error.message == "The error response did not say what went wrong."
    )


def test_a_message_that_is_not_an_error_has_none() -> None:
    assert Message.from_json({"error": {"code": "x", "message": "m"}}).error() is None
    error = Message.error_response("not-found", "No key.").error()
    assert error is not None and (error.code, error.message) == ("not-found", "No key.")


def test_the_site_check_finds_a_broken_link_a_missing_anchor_and_a_stray_absolute_one(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_site", ROOT / "dev" / "check_site.py")
    assert spec is not None and spec.loader is not None
    check_site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_site)
    (tmp_path / "index.html").write_text(
        '<h1 id="top">Home</h1><a href="page/">page</a><a href="page/#there">x</a>'
    )
    (tmp_path / "page").mkdir()
    (tmp_path / "page" / "index.html").write_text('<h1 id="there">Page</h1><a href="../#top">home</a>')
    assert check_site.broken_links(tmp_path) == []
    (tmp_path / "page" / "index.html").write_text(
        '<h1>Page</h1><a href="../gone/">gone</a><a href="../#nowhere">x</a><img src="/logo.png">'
    )
    problems = check_site.broken_links(tmp_path)
    assert [p.split(": ")[-1] for p in problems] == [
        "no element with that id",  # index.html's page/#there: that heading lost its id
        "no such file",
        "no element with that id",
        "root-absolute, outside the site's path",
    ]
    (tmp_path / "api.html").write_text("<p>a <code>~framewire.client.pool.Pool</code> shares connections</p>")
    (raw,) = check_site.raw_markup(tmp_path)
    assert raw == "api.html: raw docstring markup: '<code>~framewire.client.pool.Pool</code>'"


def test_every_public_name_is_on_the_api_page() -> None:
    # framewire.__all__ is the public API; the API page documents each name
    # (the errors through their module), and nothing private is promised.
    import framewire
    from framewire.core import errors

    text = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: [\w.]+\.(\w+)$", text, re.M))
    documented |= {name for name in dir(errors) if isinstance(getattr(errors, name), type)}
    missing = [name for name in framewire.__all__ if name not in documented and name != "__version__"]
    assert missing == []


def test_a_repository_file_a_page_names_is_a_link_to_its_copy_on_the_site(tmp_path: Path) -> None:
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = SimpleNamespace(url="deploy/")
    html = "<p><code>deploy/kubernetes.yaml</code> and <code>deploy/nothing.yaml</code></p>"
    done = hooks.on_page_content(html, page=page)
    assert '<a href="../files/deploy/kubernetes.yaml"><code>deploy/kubernetes.yaml</code></a>' in done
    assert "<code>deploy/nothing.yaml</code> " not in done and "<code>deploy/nothing.yaml</code></p>" in done
    hooks.on_post_build({"site_dir": str(tmp_path)})
    copied = tmp_path / "files" / "deploy" / "kubernetes.yaml"
    assert copied.read_bytes() == (ROOT / "deploy" / "kubernetes.yaml").read_bytes()
