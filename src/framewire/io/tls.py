"""TLS contexts for servers and clients, and what a handshake tells.

The defaults are the standard library's (``ssl.create_default_context``):
certificate and host name checks on the client, TLS 1.2 at the oldest, the
system's trust store unless a CA file is given, and ``SSLKEYLOGFILE``
honoured on both sides, so that Wireshark can decrypt a capture. Mutual TLS
is a server context given the CA its clients' certificates must chain to.
"""

from __future__ import annotations

import errno
import os
import ssl
from collections.abc import Mapping
from typing import Any

__all__ = ["client_context", "peer_certificate", "server_context", "tls_version"]


def _load_chain(context: ssl.SSLContext, cert: str, key: str | None, whose: str) -> None:
    for path in (cert, key):
        if path is not None and not os.path.isfile(path):
            raise FileNotFoundError(errno.ENOENT, f"cannot read the {whose} certificate or key: {path}")
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        raise OSError(
            0, f"the {whose} certificate {cert} and key {key or cert} do not load ({exc.reason or exc})"
        ) from exc
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read the {whose} certificate or key: {exc.strerror}") from exc


def _load_ca(context: ssl.SSLContext, cafile: str) -> None:
    if not os.path.isfile(cafile):
        raise FileNotFoundError(errno.ENOENT, f"cannot read the CA file {cafile}")
    try:
        context.load_verify_locations(cafile=cafile)
    except ssl.SSLError as exc:
        raise OSError(0, f"the CA file {cafile} does not load ({exc.reason or exc})") from exc
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read the CA file {cafile}: {exc.strerror}") from exc


def server_context(cert: str, key: str | None = None, client_ca: str | None = None) -> ssl.SSLContext:
    """A server's context: its certificate chain and key (PEM files); with
    ``client_ca``, mutual TLS: every client must present a certificate
    signed by that CA. Raises ``OSError`` with a sentence when a file is
    missing or does not load."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, cert, key, "server")
    if client_ca is not None:
        _load_ca(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: str | None = None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client's context: the server's certificate checked against ``ca``
    (a PEM file) or the system's trust store; with ``cert`` (and ``key``),
    this client's certificate, for servers that require one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        _load_ca(context, ca)
    if cert is not None:
        _load_chain(context, cert, key, "client")
    return context


def peer_certificate(ssl_object: Any) -> Mapping[str, str] | None:
    """The subject of the certificate the peer presented and the handshake
    verified (``{"commonName": ..., "organizationName": ...}``), or None."""
    if ssl_object is None:
        return None
    certificate = ssl_object.getpeercert()
    if not certificate:
        return None
    subject: dict[str, str] = {}
    for rdn in certificate.get("subject", ()):
        for name, value in rdn:
            subject[name] = value
    return subject


def tls_version(ssl_object: Any) -> str | None:
    """The TLS version a handshake agreed (``"TLSv1.3"``), or None."""
    if ssl_object is None:
        return None
    version: str | None = ssl_object.version()
    return version


# A TLS record carries at most 16 KiB: parts smaller than that are joined
# (many small answers in few records), larger ones are written as they are
# (a 1 MiB content is not copied to be sent).
_SMALL = 16 * 1024
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def send_parts(sock: ssl.SSLSocket, parts: list[bytes | memoryview]) -> int:
    """Write ``parts`` in order on a non-blocking TLS socket, as far as it
    takes them; returns the bytes written (raises only for real errors).

    A write that must wait is retried by the next call with the same bytes
    first, as OpenSSL requires: what was not counted is where the next call
    starts, and runs of small parts are joined the same way each time."""
    sent = 0
    run: list[bytes | memoryview] = []
    run_size = 0
    try:
        for part in parts:
            size = len(part)
            if size < _SMALL and run_size < _SMALL:
                run.append(part)
                run_size += size
                continue
            if run:
                chunk = run[0] if len(run) == 1 else b"".join(run)
                written = sock.send(chunk)
                sent += written
                if written < len(chunk):
                    return sent
                run, run_size = [], 0
            if size < _SMALL:
                run.append(part)
                run_size = size
                continue
            written = sock.send(part)
            sent += written
            if written < size:
                return sent
        if run:
            sent += sock.send(run[0] if len(run) == 1 else b"".join(run))
    except _WOULD_BLOCK:
        pass
    return sent
