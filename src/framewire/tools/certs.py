"""A development certificate authority: TLS in two commands.

``framewire certs DIR`` writes a CA and, signed by it, a server certificate
(valid for ``localhost``, ``127.0.0.1`` and ``::1``, plus any names asked)
and a client certificate for mutual TLS. Keys are ECDSA P-256 (small, and
the fastest handshakes), written readable by their owner only, the CA's
too (``ca-key.pem``): ``framewire certs issue DIR NAME`` signs more client
or server certificates with it, without replacing those already deployed.
For production, use certificates from your own CA.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["FILES", "Written", "issue_certificate", "write_certificates"]

#: What :func:`write_certificates` writes, in this order.
FILES = ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem", "ca-key.pem")
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Written:
    """The files written, and what the server certificate is valid for."""

    paths: tuple[Path, ...]
    names: tuple[str, ...]
    not_after: datetime.datetime


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "framewire development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_certificates(
    folder: Path,
    *,
    names: Iterable[str] = (),
    client_name: str = "framewire-client",
    days: int = 365,
    force: bool = False,
    now: datetime.datetime | None = None,
) -> Written:
    """Write :data:`FILES` into ``folder`` (created if missing). Refuses
    (``FileExistsError``) to replace existing files unless ``force``."""
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create the folder {folder}: {exc.strerror}") from exc
    paths = tuple(folder / name for name in FILES)
    present = [path.name for path in paths if path.exists()]
    if present and not force:
        raise FileExistsError(f"{folder} already has {', '.join(present)} (--force replaces them)")
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    end = start + datetime.timedelta(days=days)
    all_names = tuple(dict.fromkeys([*DEFAULT_NAMES, *names]))

    ca_key = _key()
    ca_name = _name("framewire development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key, client_key = _key(), _key()
    server_usage, client_usage = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    server = _leaf(ca, ca_key, all_names[0], server_key, server_usage, list(all_names), end, now)
    client = _leaf(ca, ca_key, client_name, client_key, client_usage, [], end, now)
    contents = (
        ca.public_bytes(serialization.Encoding.PEM),
        server.public_bytes(serialization.Encoding.PEM),
        _pem_key(server_key),
        client.public_bytes(serialization.Encoding.PEM),
        _pem_key(client_key),
        _pem_key(ca_key),
    )
    for path, data in zip(paths, contents, strict=True):
        try:
            _write_new(path, data, 0o600 if path.name.endswith("-key.pem") else 0o644)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc
    return Written(paths, all_names, end)


def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    alt: list[str],
    end: datetime.datetime,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    # A certificate for ``key``, signed by the CA, for ``usage``, valid for
    # the ``alt`` names, until ``end`` (never past the CA's own end).
    start = (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(end, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if alt:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_alt_name(name) for name in alt]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def issue_certificate(
    folder: Path,
    name: str,
    *,
    client: bool = False,
    names: Iterable[str] = (),
    days: int = 365,
    force: bool = False,
) -> Written:
    """Sign one more certificate with the CA :func:`write_certificates`
    left in ``folder``: ``NAME.pem`` and ``NAME-key.pem`` there, for a
    client (``client``: its common name ``name``) or a server (valid for
    ``name`` and ``names``). Refuses to replace them unless ``force``;
    raises ``FileNotFoundError`` worded for a person when the CA's files are
    not there, ``ValueError`` for a name that cannot be a file's."""
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if not name or "/" in name or name.startswith(".") or name in ("ca", "ca-key"):
        raise ValueError(f"{name!r} cannot name the certificate's files")
    try:
        ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((folder / "ca-key.pem").read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            exc.errno,
            f"{folder} has no {Path(exc.filename).name}: make the CA first (framewire certs {folder})",
        ) from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{folder / 'ca-key.pem'} is not the key framewire certs writes")
    paths = (folder / f"{name}.pem", folder / f"{name}-key.pem")
    present = [path.name for path in paths if path.exists()]
    if present and not force:
        raise FileExistsError(f"{folder} already has {', '.join(present)} (--force replaces them)")
    end = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=days)
    key = _key()
    if client:
        alt: list[str] = []
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    else:
        alt = list(dict.fromkeys([name, *names]))
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    made = _leaf(ca, ca_key, name, key, usage, alt, end)
    for path, data, mode in (
        (paths[0], made.public_bytes(serialization.Encoding.PEM), 0o644),
        (paths[1], _pem_key(key), 0o600),
    ):
        try:
            _write_new(path, data, mode)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc
    return Written(paths, tuple(alt), made.not_valid_after_utc)


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # A new file, with its final mode from its creation (a key is never
    # readable by others, not even for a moment), then renamed over the old
    # one. Writing in place (--force) would let a descriptor opened on the
    # old, readable file read the new key, and would follow a symbolic link
    # planted in the key's place; a rename replaces the name, never a target.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
