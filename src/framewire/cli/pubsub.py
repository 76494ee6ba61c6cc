"""Publish and subscribe through a broker: ``framewire publish``, ``framewire subscribe``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from framewire.cli.common import (
    PORT,
    ClientCommand,
    _fail,
    friendly_errors,
    json_or_text,
    main,
    plain_hint,
    server_address,
    tls_client_options,
    tls_for,
)


@main.command("publish", cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.argument("topic")
@click.argument("value")
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for the broker."
)
@tls_client_options
@friendly_errors
def publish(host: str, port: int, topic: str, value: str, timeout: float, tls: Any) -> None:
    """Publish VALUE on TOPIC through a broker (framewire serve --app pubsub).

    VALUE is read as JSON when it is JSON ('{"t": 21.5}', '3', 'true'),
    else sent as a string. Every subscriber of TOPIC gets it.

    \b
    Example:
      framewire publish 127.0.0.1 65432 news "the server is up"
    """
    from framewire.client import Client
    from framewire.core.errors import ErrorResponse

    host, port = server_address(host, port)
    context, name = tls_for(host, tls)
    client = Client(host, port, timeout=timeout, ssl_context=context, server_hostname=name)
    try:
        with plain_hint(tls), client:
            client.publish(topic, json_or_text(value))
    except ErrorResponse as exc:
        raise _fail(f"publish failed: {exc.code}: {exc.message}") from None


@main.command("subscribe", cls=ClientCommand)
@click.argument("host")
@click.argument("port", type=PORT)
@click.argument("topics", nargs=-1, required=True)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Each event as a JSON line: {"topic": T, "value": V} ("dropped": N after a gap).',
)
@click.option("-n", "--count", type=click.IntRange(1), default=None, help="Stop after this many events.")
@click.option(
    "--timeout", type=float, default=None, help="The longest wait for an event, in seconds (default: none)."
)
@tls_client_options
@friendly_errors
def subscribe(
    host: str,
    port: int,
    topics: tuple[str, ...],
    as_json: bool,
    count: int | None,
    timeout: float | None,
    tls: Any,
) -> None:
    """Print every event published on TOPICS, as it comes (Ctrl-C to stop).

    A topic ending in * takes every topic with that prefix ('sensors.*',
    '*'). Each event is a line, TOPIC VALUE (the value as JSON, unless it
    is a string); when events were dropped before one (this subscriber fell
    too far behind), a line on stderr says how many.

    \b
    Example:
      framewire subscribe 127.0.0.1 65432 news 'sensors.*'
    """
    from framewire.client import Client
    from framewire.core.errors import ErrorResponse

    host, port = server_address(host, port)
    context, name = tls_for(host, tls)
    client = Client(host, port, timeout=10.0, ssl_context=context, server_hostname=name)
    seen = 0
    try:
        with plain_hint(tls), client:
            for event in client.subscribe(*topics, timeout=timeout):
                if event.dropped:
                    missed = "some events" if event.dropped is True else f"{event.dropped} events"
                    click.echo(
                        f"framewire: {missed} dropped before this one (too slow a subscriber)", err=True
                    )
                if as_json:
                    line: dict[str, Any] = {"topic": event.topic, "value": event.value}
                    if event.dropped:
                        line["dropped"] = event.dropped
                    click.echo(json.dumps(line, ensure_ascii=False))
                else:
                    shown = (
                        event.value
                        if isinstance(event.value, str)
                        else json.dumps(event.value, ensure_ascii=False)
                    )
                    click.echo(f"{event.topic} {shown}")
                sys.stdout.flush()  # each event as it comes, into a pipe too
                seen += 1
                if count is not None and seen >= count:
                    return
    except ErrorResponse as exc:
        raise _fail(f"subscribe failed: {exc.code}: {exc.message}") from None
    except KeyboardInterrupt:
        return  # Ctrl-C: the way to stop
    raise _fail("the broker ended the subscription")
