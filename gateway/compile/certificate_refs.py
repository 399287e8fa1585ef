"""Resolving an HTTPS listener's ``tls.certificateRefs`` to validated certificates.

A Secret in another namespace needs a ReferenceGrant from the Gateway's namespace (kind Gateway)
to the Secret. Any reference that does not resolve leaves the listener unprogrammed: serving a
subset of the certificates asked for would present the wrong one to some clients.
"""

from __future__ import annotations

import ssl

from gateway.compile.grants import GrantIndex
from gateway.compile.refs import Problem
from gateway.config.models import GATEWAY_GROUP, Gateway, Listener, SecretObjectRef
from gateway.config.models.core import TLS_CERT_KEY, TLS_PRIVATE_KEY, TLS_SECRET_TYPE
from gateway.config.resources import ResourceSet
from gateway.tls.certificates import Certificate, CertificateError, parse_certificate
from gateway.tls.contexts import server_context

INVALID_REF = "InvalidCertificateRef"
NOT_PERMITTED = "RefNotPermitted"


class CertificateResolver:
    """Turns certificateRefs into Certificates, parsing each Secret once per compile."""

    __slots__ = ("_cache", "grants", "resources")

    def __init__(self, resources: ResourceSet, grants: GrantIndex) -> None:
        self.resources = resources
        self.grants = grants
        self._cache: dict[tuple[str, str], Certificate | Problem] = {}

    def listener(
        self, gateway: Gateway, listener: Listener
    ) -> tuple[tuple[Certificate, ...], Problem | None]:
        """The certificates of an HTTPS listener, or the first problem (reason, message)."""
        tls = listener.tls
        if tls is None or not tls.certificate_refs:
            return (), (INVALID_REF, "protocol HTTPS needs tls.certificateRefs (a Secret)")
        certificates: list[Certificate] = []
        for i, ref in enumerate(tls.certificate_refs):
            resolved = self._ref(gateway, ref)
            if not isinstance(resolved, Certificate):
                reason, message = resolved
                return (), (reason, f"tls.certificateRefs[{i}]: {message}")
            certificates.append(resolved)
        return tuple(certificates), None

    def _ref(self, gateway: Gateway, ref: SecretObjectRef) -> Certificate | Problem:
        namespace = ref.namespace or gateway.metadata.namespace
        if (ref.group, ref.kind) != ("", "Secret"):
            return INVALID_REF, f"{ref.group or 'core'}/{ref.kind} {ref.name}: only Secrets"
        if not self.grants.permits(
            GATEWAY_GROUP, "Gateway", gateway.metadata.namespace, "", "Secret", namespace, ref.name
        ):
            return NOT_PERMITTED, (
                f"Secret {namespace}/{ref.name} is in another namespace and no ReferenceGrant "
                f"in {namespace} permits Gateways from {gateway.metadata.namespace}"
            )
        key = (namespace, ref.name)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._load(namespace, ref.name)
            self._cache[key] = cached
        return cached

    def _load(self, namespace: str, name: str) -> Certificate | Problem:
        secret = self.resources.secrets.get((namespace, name))
        label = f"Secret {namespace}/{name}"
        if secret is None:
            return INVALID_REF, f"{label} not found"
        if secret.type != TLS_SECRET_TYPE:
            return INVALID_REF, f"{label} has type {secret.type!r}, expected {TLS_SECRET_TYPE!r}"
        chain, key = secret.value(TLS_CERT_KEY), secret.value(TLS_PRIVATE_KEY)
        if chain is None or key is None:  # the model refuses this; kept for type narrowing
            return INVALID_REF, f"{label} lacks {TLS_CERT_KEY} or {TLS_PRIVATE_KEY}"
        try:
            certificate = parse_certificate(f"{namespace}/{name}", chain, key)
            server_context([certificate])  # OpenSSL may still refuse it (e.g. too weak a key)
        except CertificateError as exc:
            return INVALID_REF, f"{label}: {exc}"
        except ssl.SSLError as exc:
            return INVALID_REF, f"{label}: OpenSSL refuses the certificate: {exc}"
        return certificate
