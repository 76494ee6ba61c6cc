"""TLS helpers: certs."""

from __future__ import annotations

from pathlib import Path

import click

from framewire.cli.common import _fail, main
from framewire.io.netio import describe


@main.command("certs")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help="Another host name or IP address the server certificate is valid for (repeatable).",
)
@click.option(
    "--client-name",
    default="framewire-client",
    show_default=True,
    help="The client certificate's common name (what a mutual-TLS server sees).",
)
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True, help="Validity.")
@click.option("--force", is_flag=True, help="Replace certificates already in DIR.")  # fmt: skip
def certs_command(folder: Path, names: tuple[str, ...], client_name: str, days: int, force: bool) -> None:
    """Write a development CA and certificates for TLS and mutual TLS.

    \b
    DIR gets ca.pem, server.pem, server-key.pem, client.pem, client-key.pem;
    the server's is valid for localhost, 127.0.0.1 and ::1 (and --name ...).

    \b
    Example:
      framewire certs certs
      framewire serve --tls-cert certs/server.pem --tls-key certs/server-key.pem
      framewire request localhost 65432 --tls-ca certs/ca.pem search ring
    """
    from framewire.tools.certs import write_certificates

    try:
        written = write_certificates(folder, names=names, client_name=client_name, days=days, force=force)
    except OSError as exc:
        raise _fail(describe(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    for path in written.paths:
        click.echo(str(path))
    click.echo(
        f"server certificate valid for {', '.join(written.names)} until {written.not_after:%Y-%m-%d}",
        err=True,
    )
