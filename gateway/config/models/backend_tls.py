"""BackendTLSPolicy models (gateway.networking.k8s.io v1, and v1alpha3 of the same shape).

What the API server's schema and CEL rules reject is rejected here: a missing hostname, both or
neither of ``caCertificateRefs`` and ``wellKnownCACertificates``, a subjectAltName whose fields
do not fit its type, targetRefs that are not distinct. What the spec makes a *status* (an
unsupported target kind, a CA reference that does not resolve, a ``wellKnownCACertificates``
value the gateway does not know) is left to compile (``gateway.compile.backend_tls``).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from gateway.config.models.base import Metadata, Model, check_hostname
from gateway.config.models.policy import PolicyTargetRef

SAN_TYPES = ("Hostname", "URI")
# AbsoluteURI: a scheme, then "//" and the rest (RFC 3986 as the CRD's pattern has it).
_ABSOLUTE_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*[^?#]*(\?[^#]*)?(#.*)?$")
# wellKnownCACertificates: "System" or a domain-prefixed name, as the CRD's pattern has it.
_WELL_KNOWN = re.compile(
    r"^(System|([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]))$"
)


class CaCertificateRef(Model):
    """``validation.caCertificateRefs[]``: a local object (a ConfigMap with ``ca.crt``)."""

    group: str
    kind: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=253)


class SubjectAltName(Model):
    """``validation.subjectAltNames[]``: ``type: Hostname`` with ``hostname``, or URI with
    ``uri``."""

    type: str
    hostname: str | None = None
    uri: str | None = None

    @model_validator(mode="after")
    def _fields_fit_type(self) -> SubjectAltName:
        if self.type not in SAN_TYPES:
            raise ValueError(f"type: {self.type!r} is not one of {', '.join(SAN_TYPES)}")
        if self.type == "Hostname":
            if not self.hostname:
                raise ValueError("hostname: required when type is Hostname")
            if self.uri:
                raise ValueError("uri: must not be set when type is Hostname")
            check_hostname(self.hostname)
        else:
            if not self.uri:
                raise ValueError("uri: required when type is URI")
            if self.hostname:
                raise ValueError("hostname: must not be set when type is URI")
            if len(self.uri) > 253 or not _ABSOLUTE_URI.match(self.uri):
                raise ValueError(
                    f"uri: {self.uri!r} is not an absolute URI (scheme://...), e.g. spiffe://td/ns/a"
                )
        return self

    @property
    def value(self) -> str:
        """The hostname or the URI, whichever the type uses."""
        return (self.hostname if self.type == "Hostname" else self.uri) or ""


class BackendTlsValidation(Model):
    """``spec.validation``: trust anchors (CA refs xor well-known set), hostname, SANs."""

    ca_certificate_refs: list[CaCertificateRef] = Field(default_factory=list, max_length=8)
    well_known_ca_certificates: str | None = Field(default=None, alias="wellKnownCACertificates")
    hostname: str
    subject_alt_names: list[SubjectAltName] = Field(default_factory=list, max_length=5)

    @field_validator("hostname")
    @classmethod
    def _precise_hostname(cls, value: str) -> str:
        if value.startswith("*."):
            raise ValueError(f"{value!r}: must be a precise hostname (no wildcard)")
        return check_hostname(value)

    @field_validator("well_known_ca_certificates")
    @classmethod
    def _well_known(cls, value: str | None) -> str | None:
        if value and (len(value) > 253 or not _WELL_KNOWN.match(value)):
            raise ValueError(f"{value!r}: must be System or a domain-prefixed name (example.com/x)")
        return value

    @model_validator(mode="after")
    def _one_trust_source(self) -> BackendTlsValidation:
        if self.ca_certificate_refs and self.well_known_ca_certificates:
            raise ValueError("must not contain both caCertificateRefs and wellKnownCACertificates")
        if not self.ca_certificate_refs and not self.well_known_ca_certificates:
            raise ValueError("must specify either caCertificateRefs or wellKnownCACertificates")
        return self


class BackendTlsPolicySpec(Model):
    """BackendTLSPolicy spec."""

    target_refs: list[PolicyTargetRef] = Field(min_length=1, max_length=16)
    validation: BackendTlsValidation
    options: dict[str, str] = Field(default_factory=dict, max_length=16)

    @field_validator("target_refs")
    @classmethod
    def _distinct(cls, refs: list[PolicyTargetRef]) -> list[PolicyTargetRef]:
        seen: dict[tuple[str, str, str], list[str | None]] = {}
        for ref in refs:
            seen.setdefault((ref.group, ref.kind, ref.name), []).append(ref.section_name)
        for (_, kind, name), sections in seen.items():
            if len(sections) < 2:
                continue
            if None in sections:
                raise ValueError(
                    f"{kind} {name}: sectionName must be specified when targetRefs includes "
                    "2 or more references to the same target"
                )
            if len(set(sections)) != len(sections):
                raise ValueError(
                    f"{kind} {name}: sectionName must be unique when targetRefs includes "
                    "2 or more references to the same target"
                )
        return refs


class BackendTlsPolicy(Model):
    """gateway.networking.k8s.io BackendTLSPolicy: how the gateway speaks TLS to a Service."""

    metadata: Metadata
    spec: BackendTlsPolicySpec
