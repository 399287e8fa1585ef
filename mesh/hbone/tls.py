"""TLS for HBONE: TLS 1.3 only, ALPN h2, mutual certificates, SPIFFE peer identity checks."""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from mesh.errors import IdentityError
from mesh.identity.spiffe import SpiffeId, parse_identity

ALPN = "h2"


@dataclass(frozen=True, slots=True)
class Credentials:
    """A workload's private key, its chain (leaf first, no root) and the trust bundle."""

    key_pem: bytes
    chain_pem: tuple[str, ...]
    roots_pem: tuple[str, ...]


def load_chain(ctx: ssl.SSLContext, key_pem: bytes, chain_pem: Iterable[str]) -> None:
    """Load a private key and its chain (leaf first) into ``ctx``.

    ``ssl`` can only load key material from files: they live in a private directory for the
    duration of the call.
    """
    directory = tempfile.mkdtemp(prefix="mesh-tls-")
    try:
        cert_path = os.path.join(directory, "chain.pem")
        key_path = os.path.join(directory, "key.pem")
        for path, data in (
            (cert_path, "".join(chain_pem).encode()),
            (key_path, key_pem),
        ):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        ctx.load_cert_chain(cert_path, key_path)
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


def _base(ctx: ssl.SSLContext, creds: Credentials) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata="".join(creds.roots_pem))
    ctx.set_alpn_protocols([ALPN])
    ctx.options |= ssl.OP_NO_TICKET
    load_chain(ctx, creds.key_pem, creds.chain_pem)
    return ctx


def server_context(creds: Credentials) -> ssl.SSLContext:
    """Inbound: present the destination workload's SVID, require a client certificate."""
    return _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), creds)


def client_context(creds: Credentials) -> ssl.SSLContext:
    """Outbound: present the source workload's SVID; the peer identity is checked afterwards."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    return _base(ctx, creds)


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> SpiffeId:
    """The SPIFFE id (the single URI SAN) in the peer's verified leaf certificate.

    ``getpeercert()`` decodes the SANs of a verified certificate, so the data path needs no
    certificate parser of its own.
    """
    if ssl_object is None:
        raise IdentityError("connection is not TLS")
    cert = ssl_object.getpeercert()
    if not cert:
        raise IdentityError("peer presented no certificate")
    if ssl_object.selected_alpn_protocol() != ALPN:
        raise IdentityError("peer did not negotiate ALPN h2")
    sans = cert.get("subjectAltName", ())
    uris = [str(san[1]) for san in sans if isinstance(san, tuple) and san[0] == "URI"]
    if len(uris) != 1:
        raise IdentityError(f"certificate must carry exactly one URI SAN, found {len(uris)}")
    identity = parse_identity(uris[0])
    if not isinstance(identity, SpiffeId):
        raise IdentityError(f"{identity} is a node identity, not a workload's")
    return identity


def check_server_identity(peer: SpiffeId, expected: Iterable[SpiffeId]) -> None:
    """Raise unless the server's identity is one we expect for the destination."""
    allowed = set(expected)
    if peer not in allowed:
        names = ", ".join(sorted(str(e) for e in allowed))
        raise IdentityError(f"server identity {peer} is not the expected {names}")
