"""The conformance suite's reports: the terminal table, JSON, and an HTML page."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any

from framewire.tools.conformance import Result
from framewire.tools.rules import RULES, SECTIONS

__all__ = ["dump", "html_report", "json_report", "summary", "table_lines"]

_MARK = {"PASS": "PASS", "FAIL": "FAIL", "NOT-APPLICABLE": "N/A "}


def dump(data: bytes, limit: int = 512) -> list[str]:
    """Hex and text, 16 bytes a line (the first ``limit`` bytes)."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:06x}  {chunk.hex(' '):<47}  {text}")
    if len(data) > limit:
        lines.append(f"... {len(data) - limit} more bytes")
    return lines or ["(nothing)"]


def summary(results: list[Result]) -> dict[str, int]:
    """How many cases passed, failed, and did not apply."""
    counts = {"PASS": 0, "FAIL": 0, "NOT-APPLICABLE": 0}
    for result in results:
        counts[result.outcome.status] += 1
    return counts


def table_lines(result: Result, group_changed: bool) -> Iterable[str]:
    """The terminal lines of one case (its group's title first, if new)."""
    if group_changed:
        yield result.case.group
    outcome = result.outcome
    yield f"  {_MARK[outcome.status]}  {result.case.name:<24} {outcome.why}"
    if outcome.status == "FAIL":
        for rule in result.case.rules:
            yield f"        broken: §{rule} {RULES[rule]}"
        yield "        sent:"
        yield from (f"          {line}" for line in dump(outcome.sent))
        yield "        received:"
        yield from (f"          {line}" for line in dump(outcome.received))


def json_report(results: list[Result], target: dict[str, Any]) -> str:
    """The whole run as JSON."""
    return json.dumps(
        {"target": target, "summary": summary(results), "cases": [r.as_json() for r in results]}, indent=2
    )


_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#222}
h1{font-size:1.4rem}.bar{display:flex;height:1.6rem;border-radius:.3rem;overflow:hidden;margin:1rem 0}
.bar div{color:#fff;text-align:center;font-weight:600;line-height:1.6rem}
.PASS{background:#2e7d32}.FAIL{background:#c62828}.NA{background:#9e9e9e}
table{border-collapse:collapse;width:100%}td,th{padding:.35rem .6rem;border-bottom:1px solid #ddd;
vertical-align:top;text-align:left}td.s{color:#fff;font-weight:600;width:6rem;text-align:center}
tr.sec th{background:#e3e7f3;font-size:1.05rem}
tr.g th{background:#f3f3f3;font-size:.95rem;font-weight:500}
pre{font-size:12px;background:#fafafa;padding:.5rem;
overflow-x:auto}summary{cursor:pointer;color:#555}
"""


def html_report(results: list[Result], target: dict[str, Any]) -> str:
    """A page a person would rather look at: a summary bar, the table by
    group, each failure's bytes in a collapsible block."""
    counts = summary(results)
    total = max(1, len(results))
    bar = "".join(
        f'<div class="{cls}" style="width:{100 * counts[key] / total:.2f}%">{counts[key]}</div>'
        for key, cls in (("PASS", "PASS"), ("FAIL", "FAIL"), ("NOT-APPLICABLE", "NA"))
        if counts[key]
    )
    rows = []
    # By the rule of docs/protocol.md each case checks (a case checking two
    # rules shows under both), in the order of the rules.
    section = None
    for rule, text in RULES.items():
        checked = [result for result in results if rule in result.case.rules]
        if not checked:
            continue
        number = rule.split(".")[0]
        if number != section:
            section = number
            rows.append(
                f'<tr class="sec"><th colspan="3">§{number} {html.escape(SECTIONS[number])}</th></tr>'
            )
        rows.append(f'<tr class="g"><th colspan="3">§{rule} {html.escape(text)}</th></tr>')
        rows.extend(_row(result) for result in checked)
    where = html.escape(f"{target.get('address')} (level {target.get('level')}, app {target.get('app')})")
    return (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>framewire conformance: {where}</title><style>{_STYLE}</style>"
        f"<h1>framewire conformance: {where}</h1>"
        f"<p>{counts['PASS']} passed, {counts['FAIL']} failed, {counts['NOT-APPLICABLE']} not applicable</p>"
        f'<div class="bar">{bar}</div><table>{"".join(rows)}</table></html>\n'
    )


def _row(result: Result) -> str:
    # One case's row: its outcome, its name and what it checks, why, and a
    # failure's bytes.
    outcome = result.outcome
    cls = "NA" if outcome.status == "NOT-APPLICABLE" else outcome.status
    detail = ""
    if outcome.status == "FAIL":
        sent = html.escape("\n".join(dump(outcome.sent)))
        received = html.escape("\n".join(dump(outcome.received)))
        detail = (
            f"<details><summary>bytes</summary><p>sent</p><pre>{sent}</pre>"
            f"<p>received</p><pre>{received}</pre></details>"
        )
    return (
        f'<tr><td class="s {cls}">{html.escape(outcome.status)}</td>'
        f"<td><b>{html.escape(result.case.name)}</b><br><small>{html.escape(result.case.about)}</small></td>"
        f"<td>{html.escape(outcome.why)}{detail}</td></tr>"
    )
