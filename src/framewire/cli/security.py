"""TLS helpers: certs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from framewire.cli.common import _fail, main
from framewire.io.netio import describe


class _Certs(click.Group):
    # `framewire certs DIR` (as before: a new CA and its certificates) or
    # `framewire certs issue DIR NAME`: a first word that is no subcommand
    # is the folder of `new`.
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["new", *args]
        return super().parse_args(ctx, args)


@main.group("certs", cls=_Certs)
def certs_group() -> None:
    """A development CA: `certs DIR` makes it and its first certificates,
    `certs issue DIR NAME` signs more.

    \b
    Example:
      framewire certs certs
      framewire serve --tls-cert certs/server.pem --tls-key certs/server-key.pem
      framewire request localhost 65432 --tls-ca certs/ca.pem search ring
      framewire certs issue certs bob --client          (bob.pem, bob-key.pem)
    """


@certs_group.command("new")
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
    DIR gets ca.pem, server.pem, server-key.pem, client.pem, client-key.pem
    and ca-key.pem (the CA's key, for certs issue; readable by you only);
    the server's is valid for localhost, 127.0.0.1 and ::1 (and --name ...).

    \b
    Example:
      framewire certs certs
      framewire serve --tls-cert certs/server.pem --tls-key certs/server-key.pem
      framewire request localhost 65432 --tls-ca certs/ca.pem search ring
    """
    from framewire.tools.certs import write_certificates

    _report(lambda: write_certificates(folder, names=names, client_name=client_name, days=days, force=force))


@certs_group.command("issue")
@click.argument("folder", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.argument("name")
@click.option("--client", is_flag=True, help="A client certificate (its common name NAME), for mutual TLS.")
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="NAME",
    help="Another host name or IP address a server certificate is valid for (repeatable).",
)
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True, help="Validity.")
@click.option("--force", is_flag=True, help="Replace NAME.pem and NAME-key.pem if DIR has them.")
def certs_issue(
    folder: Path, name: str, client: bool, names: tuple[str, ...], days: int, force: bool
) -> None:
    """Sign one more certificate with the CA in DIR: NAME.pem and NAME-key.pem.

    A server certificate valid for NAME (and --name ...), or with --client a
    client certificate whose common name is NAME (what a mutual-TLS server
    sees). The certificates already in DIR stay as they are.

    \b
    Example:
      framewire certs issue certs bob --client
      framewire request localhost 65432 --tls-ca certs/ca.pem \\
          --tls-cert certs/bob.pem --tls-key certs/bob-key.pem search ring
    """
    from framewire.tools.certs import issue_certificate

    _report(
        lambda: issue_certificate(folder, name, client=client, names=names, days=days, force=force),
        f"client certificate for {name}" if client else None,
    )


def _report(make: Callable[[], Any], what: str | None = None) -> None:
    # Make the files, each failure one line; print their paths, then what
    # the certificate is for (a server's: the names it is valid for).
    try:
        written = make()
    except OSError as exc:
        raise _fail(describe(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    for path in written.paths:
        click.echo(str(path))
    what = what or f"server certificate valid for {', '.join(written.names)}"
    click.echo(f"{what} until {written.not_after:%Y-%m-%d}", err=True)
