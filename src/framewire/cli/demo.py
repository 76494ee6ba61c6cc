"""framewire demo: the protocol core alone."""

from __future__ import annotations

import random

import click

from framewire.cli.common import (
    main,
)
from framewire.core.decoder import Decoder, encode_many
from framewire.core.message import Message


@main.command()
@click.option("--seed", type=int, default=None, help="Seed for the random split points.")
def demo(seed: int | None) -> None:
    """Encode three messages, split the bytes at random, decode them again.

    A look at the protocol core with no network: what goes on the wire and
    how the decoder puts it back together whatever way TCP splits it.

    \b
    Example:
      framewire demo --seed 7
    """
    rng = random.Random(seed)
    messages = [
        Message.from_json({"action": "search", "value": "morpheus"}),
        Message.from_text("Hello, world \N{DOG FACE}", encoding="utf-16"),
        Message.from_bytes(b"\x00\x01binary\xff", content_type="binary/custom-client-binary-type"),
    ]
    wire = encode_many(messages)
    click.echo(f"{len(messages)} messages encode to {len(wire)} bytes:")
    for message in messages:
        head, content = message.wire_parts()
        click.echo(f"  {head[:2].hex(' ')} | {head[2:].decode()} | {content!r}")
    cuts = sorted(rng.sample(range(1, len(wire)), 5))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    click.echo(f"Split into {len(pieces)} reads of {', '.join(str(len(p)) for p in pieces)} bytes.")
    decoder = Decoder()
    decoded: list[Message] = []
    for piece in pieces:
        for message in decoder.feed(piece):
            shown = (
                message.json() if message.is_json else message.text() if message.is_text else message.content
            )
            click.echo(f"  decoded {message.content_type} ({message.content_encoding}): {shown!r}")
            decoded.append(message)
    decoder.feed(b"")
    if decoded != messages:
        raise click.ClickException("the decoded messages differ from those sent")
    click.echo("Every message decoded, identical to what was sent.")
