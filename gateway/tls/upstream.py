"""TLS to upstreams: the client settings an Endpoint carries, and the subjectAltName check.

An :class:`UpstreamTls` is built once per compile for each BackendTLSPolicy and ALPN choice, or
by a backend kind for its own endpoints (:meth:`UpstreamTls.system`). It is part of the
:class:`~gateway.backends.base.Endpoint`, so of the pool key: endpoints that differ only in TLS
settings never share a connection. Equality and hashing use the settings (server name,
subjectAltNames, ALPN, a fingerprint of the trust anchors), not the ``SSLContext`` object, so a
reload that compiles the same policy again keeps the pooled connections.

The chain is always verified (TLS 1.2 or later) against the trust anchors: a CA bundle from the
config, or the system store. Without ``subject_alt_names``, OpenSSL checks the certificate
against ``server_name`` during the handshake. With them, the handshake checks the chain only and
:meth:`UpstreamTls.check` runs right after it, before any HTTP byte is written: the certificate
must carry one of the names (DNS names with RFC 6125 wildcards, URIs exactly; Python's ``ssl``
cannot be told to check URIs, so the certificate is read with ``cryptography``).
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509

HOSTNAME = "Hostname"
URI = "URI"
SYSTEM = "System"
HTTP11 = "http/1.1"
H2 = "h2"


class UpstreamTlsError(ssl.SSLCertVerificationError):
    """The upstream's certificate verified but carries none of the subjectAltNames asked for."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.verify_message = message
        self.reason = "CERTIFICATE_VERIFY_FAILED"

    def __str__(self) -> str:
        return str(self.verify_message)


class UpstreamHandshakeError(ssl.SSLError):
    """The TLS handshake with an upstream failed for another reason than its certificate."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How to speak TLS to an endpoint: SNI, accepted names, ALPN, trust anchors; hashable."""

    server_name: str  # sent as SNI; the name verified unless subject_alt_names is set
    context: ssl.SSLContext = field(compare=False, repr=False)
    subject_alt_names: tuple[tuple[str, str], ...] = ()  # ("Hostname" | "URI", value)
    alpn: tuple[str, ...] = (HTTP11,)
    trust: str = SYSTEM  # "System", or "sha256:<hex>" of the CA bundle
    source: str = field(default="", compare=False)  # e.g. "BackendTLSPolicy default/api"

    @classmethod
    def build(
        cls,
        server_name: str,
        *,
        ca_pem: bytes | None = None,
        subject_alt_names: Sequence[tuple[str, str]] = (),
        http2: bool = False,
        source: str = "",
    ) -> UpstreamTls:
        """Settings with their context: trust ``ca_pem`` (a PEM bundle), or the system store."""
        alpn = (H2,) if http2 else (HTTP11,)
        sans = tuple(subject_alt_names)
        context = client_context(ca_pem, alpn, check_hostname=not sans)
        trust = SYSTEM if ca_pem is None else "sha256:" + hashlib.sha256(ca_pem).hexdigest()
        return cls(server_name, context, sans, alpn, trust, source)

    @classmethod
    def system(cls, hostname: str, *, http2: bool = False) -> UpstreamTls:
        """TLS to ``hostname`` verified with the system CA store (for backend kinds' endpoints)."""
        return cls.build(hostname, http2=http2)

    @property
    def protocol(self) -> str:
        """The ``Endpoint.protocol`` these settings speak: ``"h2"`` or ``"http/1.1"``."""
        return H2 if H2 in self.alpn else HTTP11

    def check(self, ssl_object: ssl.SSLObject | ssl.SSLSocket) -> None:
        """After the handshake: the peer certificate must carry one of ``subject_alt_names``."""
        if not self.subject_alt_names:
            return  # OpenSSL checked server_name during the handshake
        der = ssl_object.getpeercert(binary_form=True)
        try:
            dns, uris = peer_names(der) if der else ((), ())
        except ValueError as exc:
            raise UpstreamTlsError(f"certificate verify failed: unreadable: {exc}") from exc
        for kind, wanted in self.subject_alt_names:
            if kind == URI and wanted in uris:
                return
            if kind == HOSTNAME and any(hostname_matches(wanted, name) for name in dns):
                return
        wanted_text = ", ".join(f"{kind} {value}" for kind, value in self.subject_alt_names)
        has = ", ".join([f"DNS:{n}" for n in dns] + [f"URI:{u}" for u in uris]) or "none"
        raise UpstreamTlsError(
            f"certificate verify failed: no subjectAltName matches {wanted_text} "
            f"(the certificate has {has})"
        )

    def describe(self) -> dict[str, Any]:
        """A JSON-able view for /config_dump."""
        return {
            "source": self.source,
            "sni": self.server_name,
            "subjectAltNames": [{"type": k, "value": v} for k, v in self.subject_alt_names],
            "alpn": list(self.alpn),
            "trust": self.trust,
        }


def client_context(
    ca_pem: bytes | None, alpn: Sequence[str], *, check_hostname: bool
) -> ssl.SSLContext:
    """A verifying TLS 1.2+ client context offering ``alpn``; raises ssl.SSLError on a bad PEM."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, hostname checking on
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.hostname_checks_common_name = False  # RFC 6125: subjectAltName only
    if ca_pem is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.load_verify_locations(cadata=ca_pem.decode("ascii"))
    context.check_hostname = check_hostname
    context.set_alpn_protocols(list(alpn))
    return context


def system_trust_available() -> bool:
    """Whether this host has a system CA store OpenSSL will read (file or hashed directory)."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and os.path.isfile(paths.cafile):
        return True
    return bool(paths.capath and os.path.isdir(paths.capath) and os.listdir(paths.capath))


def peer_names(der: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The DNS names and URIs of a DER certificate's subjectAltName extension."""
    certificate = x509.load_der_x509_certificate(der)
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = tuple(sans.get_values_for_type(x509.DNSName))
    uris = tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))
    return dns, uris


def hostname_matches(wanted: str, presented: str) -> bool:
    """RFC 6125 matching of a policy name against a certificate DNS name, case-insensitively.

    A wildcard (``*.example.com``) stands for exactly one leftmost label, on either side: a
    certificate's ``*.example.com`` covers ``api.example.com`` (not ``example.com`` nor
    ``a.b.example.com``), and a policy's ``*.example.com`` accepts any certificate name it
    covers, or the same wildcard.
    """
    wanted, presented = wanted.lower().rstrip("."), presented.lower().rstrip(".")
    if wanted == presented:
        return True
    if presented.startswith("*."):
        return _covers(presented[2:], wanted)
    if wanted.startswith("*."):
        return _covers(wanted[2:], presented)
    return False


def _covers(parent: str, name: str) -> bool:
    """Whether ``name`` is exactly one non-wildcard label under ``parent``."""
    label, dot, rest = name.partition(".")
    return bool(dot) and bool(label) and label != "*" and rest == parent and "." in parent
