"""Certificates from kubernetes.io/tls Secrets, validated with ``cryptography`` before use.

A certificate is accepted when its PEM chain and private key parse, the key belongs to the first
(leaf) certificate and the leaf is inside its validity period. An expired (or not yet valid)
certificate is refused like a malformed one: every client would reject it anyway, and refusing
it makes the listener's status say so instead of failing handshakes one by one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization


class CertificateError(ValueError):
    """A certificate or key that cannot be served; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """A validated leaf (plus chain) and its private key, as PEM; the key never leaves memory."""

    source: str  # "namespace/name" of the Secret
    chain_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    sha256: str  # fingerprint of the leaf (DER)

    def describe(self) -> dict[str, Any]:
        """A JSON-able view for /config_dump: never the key."""
        return {
            "secret": self.source,
            "subject": self.subject,
            "issuer": self.issuer,
            "dnsNames": list(self.dns_names),
            "ipAddresses": list(self.ip_addresses),
            "notBefore": self.not_before.isoformat(),
            "notAfter": self.not_after.isoformat(),
            "sha256": self.sha256,
        }


def parse_certificate(
    source: str, chain_pem: bytes, key_pem: bytes, now: datetime | None = None
) -> Certificate:
    """Validate a PEM chain and key; raises CertificateError naming the problem."""
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise CertificateError(f"tls.crt is not a PEM certificate: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"tls.key is not an unencrypted PEM private key: {exc}") from exc
    leaf = chain[0]
    public = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*public) != leaf.public_key().public_bytes(*public):
        raise CertificateError("tls.key does not match the certificate in tls.crt")
    now = now or datetime.now(UTC)
    not_before, not_after = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    if now > not_after:
        raise CertificateError(f"the certificate expired on {not_after.isoformat()}")
    if now < not_before:
        raise CertificateError(f"the certificate is not valid before {not_before.isoformat()}")
    dns_names, ip_addresses = _subject_alt_names(leaf)
    return Certificate(
        source=source,
        chain_pem=chain_pem,
        key_pem=key_pem,
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        not_before=not_before,
        not_after=not_after,
        sha256=hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def _subject_alt_names(leaf: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The DNS names and IP addresses of the subjectAltName extension (empty without one)."""
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    dns = tuple(sans.get_values_for_type(x509.DNSName))
    ips = tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
    return dns, ips
