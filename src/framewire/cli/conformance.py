"""framewire conformance: hold any server to the protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from framewire.cli.common import (
    PORT,
    ClientCommand,
    _fail,
    friendly_errors,
    main,
    server_address,
    tls_client_options,
    tls_for,
)
from framewire.core import limits
from framewire.io.netio import connect, describe, where

#: The exit status when the suite could not run at all (nothing listening):
#: above any count of failed cases, which is capped below it.
CANNOT_RUN = 125
MAX_FAILED_STATUS = 100


@main.command(cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.option("--level", type=click.Choice(["guide", "strict"]), default="strict", show_default=True,
              help="guide: what the guide's server can be expected to pass; strict: all.")  # fmt: skip
@click.option("--app", type=click.Choice(["none", "echo", "search", "conformance", "pubsub"]), default="none",
              show_default=True,
              help="The application the server runs, for the cases that check its answers "
                   "(conformance: framewire serve --app conformance, or the same actions, which reach "
                   "every error code; pubsub: a broker, sent publishes).")  # fmt: skip
@click.option("--message-timeout", type=click.FloatRange(min=0, min_open=True),
              default=limits.MESSAGE_TIMEOUT, show_default=True,
              help="The server's message deadline (the trickle case waits for it).")  # fmt: skip
@click.option("--max-header-size", type=click.IntRange(2, 65535), default=limits.MAX_HEADER_SIZE,
              show_default=True, help="The server's header limit.")  # fmt: skip
@click.option("--max-content-length", type=click.IntRange(0), default=limits.MAX_CONTENT_LENGTH,
              show_default=True, help="The server's content limit.")  # fmt: skip
@click.option("--patience", type=click.FloatRange(min=0, min_open=True), default=5.0, show_default=True,
              help="Seconds any one wait of a case may take.")  # fmt: skip
@click.option("--only", default=None, metavar="TEXT", help="Run only the cases whose name contains TEXT.")
@click.option("--extensions", is_flag=True,
              help="The server knows framewire's extensions (ids, unordered, streams, cancel, "
                   "describe): check them too.")  # fmt: skip
@click.option("--request", "request_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None,
              help="A well-formed request to this server: a file holding one framed message, or a JSON "
                   "value (an action) to send as text/json. The framing cases send it and judge its "
                   "answers by their framing, error answers included.")  # fmt: skip
@click.option("--action", default=None, metavar="NAME",
              help="As --request, the request {\"action\": NAME, \"value\": VALUE}.")  # fmt: skip
@click.option("--value", default=None, metavar="JSON", help="The --action's value, as JSON (default: null).")
@click.option("--proxy-protocol", is_flag=True,
              help="The server expects a PROXY header first (from this address): every connection sends one, "
                   "and the PROXY cases run.")  # fmt: skip
@click.option(
    "--max-connections",
    type=click.IntRange(1, 64),
    default=None,
    help="The server's connection limit, if 64 or less: the server-busy case reaches it.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True, max=30),
    default=None,
    help="The server's idle timeout, if 30 s or less: the idle case waits for it.",
)
@click.option("--list", "list_rules", is_flag=True,
              help="Print the protocol's numbered rules (docs/protocol.md) with the cases that check each, "
                   "and exit.")  # fmt: skip
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results as JSON to this file.")  # fmt: skip
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write an HTML report to this file.")  # fmt: skip
@tls_client_options
@friendly_errors
def conformance(
    host: str,
    port: int,
    level: str,
    app: str,
    message_timeout: float,
    max_header_size: int,
    max_content_length: int,
    patience: float,
    only: str | None,
    extensions: bool,
    request_file: Path | None,
    action: str | None,
    value: str | None,
    proxy_protocol: bool,
    max_connections: int | None,
    idle_timeout: float | None,
    list_rules: bool,
    json_file: Path | None,
    html_file: Path | None,
    tls: tuple[Any, str | None] | None,
) -> None:
    """Run the conformance suite against a server and print what holds.

    Each case is PASS, FAIL (with the bytes sent and received) or N/A.
    The exit status is the number of failed cases (0: conformant; at most
    100), or 125 when the suite cannot run at all (nothing listening, or a
    --request / --action that is not a request).

    \b
    Example:
      framewire serve --app echo --port 65432 --message-timeout 2 &
      framewire conformance 127.0.0.1 65432 --app echo --message-timeout 2
      framewire conformance 127.0.0.1 65432 --level guide --html report.html
      framewire conformance 127.0.0.1 65432 --app echo --extensions
      framewire conformance 127.0.0.1 65432 --action get --value '"a"'
    """
    from framewire.tools import conformance as suite
    from framewire.tools import conformance_report as report

    if list_rules:
        for line in suite.rule_lines():
            click.echo(line)
        return
    request = _request(suite, request_file, action, value)

    host, port = server_address(host, port)
    context, name = tls_for(host, tls)
    try:
        connect(host, port, patience, context, name, keepalive=0).close()
    except OSError as exc:
        raise _fail(f"cannot run the suite: {describe(exc)}", CANNOT_RUN) from None
    target = suite.Target(
        host,
        port,
        context,
        name,
        app=app,  # type: ignore[arg-type]
        message_timeout=message_timeout,
        max_header_size=max_header_size,
        max_content_length=max_content_length,
        patience=patience,
        extensions=extensions,
        request=request,
        proxy_protocol=proxy_protocol,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
    )
    asked = "" if request is None else f", the server's own request ({about_request(request_file, action)})"
    click.echo(f"framewire conformance: {where(host, port)}, level {level}, app {app}{asked}")
    results = []
    group = None
    for result in suite.run_suite(target, level, only):  # type: ignore[arg-type]
        results.append(result)
        for line in report.table_lines(result, result.case.group != group):
            click.echo(line)
        group = result.case.group
    counts = report.summary(results)
    click.echo(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['NOT-APPLICABLE']} not applicable")
    about = {"address": where(host, port), "level": level, "app": app}
    if request is not None:
        about["request"] = about_request(request_file, action)
    if json_file is not None:
        json_file.write_text(report.json_report(results, about), "utf-8")
    if html_file is not None:
        html_file.write_text(report.html_report(results, about), "utf-8")
    raise click.exceptions.Exit(min(counts["FAIL"], MAX_FAILED_STATUS))


def _request(suite: Any, request_file: Path | None, action: str | None, value: str | None) -> bytes | None:
    # The server's own well-formed request, from --request or --action/--value.
    if request_file is not None and (action is not None or value is not None):
        raise _fail("give --request or --action, not both", CANNOT_RUN)
    if value is not None and action is None:
        raise _fail("--value is the value of an --action: give --action NAME too", CANNOT_RUN)
    if request_file is not None:
        try:
            return suite.request_from(request_file.read_bytes())  # type: ignore[no-any-return]
        except OSError as exc:
            raise _fail(f"cannot read {request_file}: {describe(exc)}", CANNOT_RUN) from None
        except ValueError as exc:
            raise _fail(f"--request {request_file}: {exc}", CANNOT_RUN) from None
    if action is None:
        return None
    try:
        parsed = None if value is None else json.loads(value)
    except ValueError as exc:
        raise _fail(f"--value is not JSON ({exc})", CANNOT_RUN) from None
    return suite.action_request(action, parsed)  # type: ignore[no-any-return]


def about_request(request_file: Path | None, action: str | None) -> str:
    """How the report names the request it was given."""
    return str(request_file) if request_file is not None else f"action {action}"
