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
