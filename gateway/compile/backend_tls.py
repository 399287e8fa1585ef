"""BackendTLSPolicy: which Service ports the gateway speaks TLS to, how, and each policy's status.

Rules (Gateway API v1, GEP-1897 and GEP-713):

- A policy targets core Services in its own namespace. Without ``sectionName`` it applies to
  every port of the Service; with one, to the port of that name. For a port, a policy naming it
  takes precedence over one targeting the whole Service (both are Accepted).
- Policies with the same target (Service and sectionName) conflict: the oldest by
  ``creationTimestamp`` wins, then the first by ``namespace/name``; the others get
  ``Accepted=False (Conflicted)`` and do not apply there.
- Trust comes from ``caCertificateRefs`` (ConfigMaps holding PEM under ``ca.crt``) or
  ``wellKnownCACertificates: System``. A reference of another kind is ``ResolvedRefs=False
  (InvalidKind)``; a missing ConfigMap, a missing ``ca.crt`` or a PEM that does not parse is
  ``ResolvedRefs=False (InvalidCACertificateRef)``; when no reference is valid the policy is also
  ``Accepted=False (NoValidCACertificate)``. Valid references alongside invalid ones still apply.
- ``Accepted=False (Invalid)``: a ``wellKnownCACertificates`` other than ``System`` (or
  ``System`` on a host without a CA store), or a target port that is UDP.
  ``Accepted=False (TargetNotFound)``: no targetRef names an existing Service (or port).
- A policy that wins a target but is not valid (Invalid, NoValidCACertificate) still claims it:
  the gateway must neither fall back to cleartext nor guess. Every backendRef to such a port is
  invalid: the route gets ``ResolvedRefs=False (InvalidBackendTLS)`` and requests to that
  backendRef get the 500 the spec gives invalid backendRefs.

A policy's status is written once per ancestor, the Gateways whose routes reference one of its
target Services (``-`` when none does), as GEP-713 recommends.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from cryptography import x509

from gateway.config.models import BackendTlsPolicy, Metadata, ServicePort
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition, ParentStatus, RouteStatus
from gateway.tls.upstream import SYSTEM, UpstreamTls, client_context, system_trust_available

KIND = "BackendTLSPolicy"
CA_KEY = "ca.crt"
INVALID_BACKEND_TLS = "InvalidBackendTLS"  # the route's ResolvedRefs reason

ACCEPTED = "Accepted"
CONFLICTED = "Conflicted"
INVALID = "Invalid"
TARGET_NOT_FOUND = "TargetNotFound"
NO_VALID_CA = "NoValidCACertificate"
RESOLVED_REFS = "ResolvedRefs"
INVALID_KIND = "InvalidKind"
INVALID_CA_REF = "InvalidCACertificateRef"

# (namespace, Service name, sectionName or None for the whole Service)
TargetKey = tuple[str, str, str | None]
Problem = tuple[str, str]  # (condition reason, message)


@dataclass(slots=True)
class PolicyTls:
    """A valid policy's TLS settings; builds one UpstreamTls (one SSLContext) per ALPN choice."""

    source: str  # "BackendTLSPolicy namespace/name"
    server_name: str
    subject_alt_names: tuple[tuple[str, str], ...]
    ca_pem: bytes | None  # None: the system store
    _built: dict[bool, UpstreamTls] = field(default_factory=dict, repr=False)

    def upstream(self, http2: bool) -> UpstreamTls:
        """The settings for HTTP/2 (ALPN h2) or HTTP/1.1 (ALPN http/1.1) endpoints."""
        built = self._built.get(http2)
        if built is None:
            built = self._built[http2] = UpstreamTls.build(
                self.server_name,
                ca_pem=self.ca_pem,
                subject_alt_names=self.subject_alt_names,
                http2=http2,
                source=self.source,
            )
        return built


@dataclass(slots=True)
class _Compiled:
    """One policy as compile sees it: its settings (or why it has none), targets, conditions."""

    policy: BackendTlsPolicy
    label: str
    age: float
    tls: PolicyTls | None = None
    invalid: Problem | None = None  # (Accepted reason, message) when it cannot apply TLS
    ref_problems: list[Problem] = field(default_factory=list)
    targets: list[TargetKey] = field(default_factory=list)  # resolved, in targetRefs order
    missing: list[str] = field(default_factory=list)  # unresolved targetRefs, as messages
    lost: list[str] = field(default_factory=list)  # targets another policy holds
    notes: list[str] = field(default_factory=list)  # Accepted=True caveats


class BackendTlsTable:
    """The compiled policies: TLS (or refusal) per Service port, and the policies' statuses."""

    __slots__ = ("_claims", "_policies")

    def __init__(self, policies: list[_Compiled], claims: dict[TargetKey, _Compiled]) -> None:
        self._policies = policies
        self._claims = claims

    def for_port(
        self, namespace: str, service: str, port_name: str | None
    ) -> PolicyTls | str | None:
        """The TLS settings for a Service port; a message when its policy is invalid (refuse the
        backendRef); None when no policy applies (cleartext)."""
        if not self._claims:
            return None
        winner = self._claims.get((namespace, service, port_name)) if port_name else None
        if winner is None:
            winner = self._claims.get((namespace, service, None))
        if winner is None:
            return None
        if winner.tls is not None:
            return winner.tls
        assert winner.invalid is not None
        reason, message = winner.invalid
        return (
            f"{winner.label} targets Service {namespace}/{service} but is not valid "
            f"({reason}: {message}); the gateway neither speaks TLS nor falls back to cleartext"
        )

    def statuses(self, ancestors: Mapping[tuple[str, str], set[str]]) -> list[RouteStatus]:
        """A status per policy, one entry per ancestor Gateway (``namespace/name``)."""
        out = []
        for item in sorted(self._policies, key=lambda c: c.label):
            conditions = (_accepted(item), _resolved_refs(item.ref_problems))
            gateways: set[str] = set()
            for namespace, service, _ in item.targets:
                gateways |= ancestors.get((namespace, service), set())
            parents = tuple(ParentStatus(g, conditions) for g in sorted(gateways)) or (
                ParentStatus("-", conditions),
            )
            meta = item.policy.metadata
            out.append(RouteStatus(KIND, meta.namespace, meta.name, parents))
        return out

    def describe(self) -> list[dict[str, Any]]:
        """A JSON-able view for /config_dump: each policy's targets and what it applies."""
        out = []
        for item in sorted(self._policies, key=lambda c: c.label):
            meta = item.policy.metadata
            tls = item.tls
            out.append(
                {
                    "namespace": meta.namespace,
                    "name": meta.name,
                    "targets": [
                        {
                            "service": f"{ns}/{svc}",
                            "sectionName": section,
                            "applied": self._claims.get((ns, svc, section)) is item,
                        }
                        for ns, svc, section in item.targets
                    ],
                    "sni": item.policy.spec.validation.hostname,
                    "subjectAltNames": [{"type": k, "value": v} for k, v in tls.subject_alt_names]
                    if tls
                    else [],
                    "trust": (SYSTEM if tls.ca_pem is None else "caCertificateRefs")
                    if tls
                    else None,
                    "invalid": list(item.invalid) if item.invalid else None,
                }
            )
        return out


def compile_backend_tls(
    resources: ResourceSet, service: tuple[str, str] | None = None
) -> BackendTlsTable:
    """Resolve every BackendTLSPolicy (``service``: only those targeting that namespace/name
    Service): settings, targets, precedence and conditions."""
    policies = resources.backend_tls_policies
    if service is not None:
        policies = [p for p in policies if _targets(p, service)]
    compiled = [_compile(policy, resources) for policy in policies]
    claims: dict[TargetKey, _Compiled] = {}
    for item in sorted(compiled, key=lambda c: (c.age, c.label)):
        for key in item.targets:
            holder = claims.get(key)
            if holder is None:
                claims[key] = item
            else:
                item.lost.append(
                    f"{_target_text(key)}: {holder.label} takes precedence (older, or first "
                    "by namespace/name)"
                )
    return BackendTlsTable(compiled, claims)


def route_services(route_namespace: str, rules: Iterable[Any]) -> set[tuple[str, str]]:
    """The Services a route's rules reference (backendRefs and mirror backendRefs)."""
    out: set[tuple[str, str]] = set()
    for rule in rules:
        refs = list(rule.backend_refs)
        filters = list(rule.filters) + [f for ref in rule.backend_refs for f in ref.filters]
        refs += [f.request_mirror.backend_ref for f in filters if f.request_mirror is not None]
        for ref in refs:
            if ref.group == "" and ref.kind == "Service":
                out.add((ref.namespace or route_namespace, ref.name))
    return out


# -- one policy --------------------------------------------------------------------------------


def _targets(policy: BackendTlsPolicy, service: tuple[str, str]) -> bool:
    namespace, name = service
    return policy.metadata.namespace == namespace and any(
        (ref.group, ref.kind, ref.name) == ("", "Service", name) for ref in policy.spec.target_refs
    )


def _compile(policy: BackendTlsPolicy, resources: ResourceSet) -> _Compiled:
    meta = policy.metadata
    item = _Compiled(policy, f"{KIND} {meta.namespace}/{meta.name}", _age(meta))
    validation = policy.spec.validation
    ca_pem = _trust(item, resources)
    for i, ref in enumerate(policy.spec.target_refs):
        where = f"targetRefs[{i}]"
        if (ref.group, ref.kind) != ("", "Service"):
            item.missing.append(
                f"{where}: {ref.group or 'core'}/{ref.kind} {ref.name}: only core Services "
                "can be targeted"
            )
            continue
        service = resources.services.get((meta.namespace, ref.name))
        if service is None:
            item.missing.append(f"{where}: Service {meta.namespace}/{ref.name} not found")
            continue
        ports = service.spec.ports
        if ref.section_name is not None:
            port = next((p for p in ports if p.name == ref.section_name), None)
            if port is None:
                item.missing.append(
                    f"{where}: Service {meta.namespace}/{ref.name} has no port named "
                    f"{ref.section_name!r}"
                )
                continue
            ports = [port]
        udp = [p for p in ports if p.protocol.upper() == "UDP"]
        if udp and len(udp) == len(ports):
            if item.invalid is None or item.invalid[0] != INVALID:
                item.invalid = (
                    INVALID,
                    f"{where}: {_ports_text(udp)} of Service {meta.namespace}/{ref.name}: "
                    "a BackendTLSPolicy applies to TCP only",
                )
            continue
        if udp:
            item.notes.append(
                f"{where}: {_ports_text(udp)} of Service {meta.namespace}/{ref.name} "
                "ignored (UDP): the policy applies to its TCP ports"
            )
        item.targets.append((meta.namespace, ref.name, ref.section_name))
    if policy.spec.options:
        names = ", ".join(sorted(policy.spec.options))
        item.notes.append(f"options ignored (none is supported): {names}")
    if item.invalid is None:
        item.tls = PolicyTls(
            item.label,
            validation.hostname,
            tuple((san.type, san.value) for san in validation.subject_alt_names),
            ca_pem,
        )
    return item


def _trust(item: _Compiled, resources: ResourceSet) -> bytes | None:
    """The CA bundle from the valid caCertificateRefs, or None for the system store; sets
    ``item.invalid`` and ``item.ref_problems`` as the spec says."""
    validation = item.policy.spec.validation
    well_known = validation.well_known_ca_certificates
    if well_known:
        if well_known != SYSTEM:
            item.invalid = (
                INVALID,
                f"wellKnownCACertificates {well_known!r} is not supported (only {SYSTEM})",
            )
        elif not system_trust_available():
            item.invalid = (
                INVALID,
                f"wellKnownCACertificates {SYSTEM}: this host has no system CA certificates",
            )
        return None
    namespace = item.policy.metadata.namespace
    bundle: list[bytes] = []
    for i, ref in enumerate(validation.ca_certificate_refs):
        where = f"caCertificateRefs[{i}]"
        if (ref.group, ref.kind) != ("", "ConfigMap"):
            item.ref_problems.append(
                (
                    INVALID_KIND,
                    f"{where}: {ref.group or 'core'}/{ref.kind} {ref.name}: only ConfigMaps are "
                    "supported",
                )
            )
            continue
        pem, problem = _ca_bundle(resources, namespace, ref.name)
        if problem is not None:
            item.ref_problems.append((INVALID_CA_REF, f"{where}: {problem}"))
        else:
            bundle.append(pem)
    if not bundle:
        item.invalid = (
            NO_VALID_CA,
            "no caCertificateRefs entry is valid: "
            + "; ".join(message for _, message in item.ref_problems),
        )
        return None
    return b"\n".join(bundle)


def _ca_bundle(resources: ResourceSet, namespace: str, name: str) -> tuple[bytes, str | None]:
    """A ConfigMap's ``ca.crt`` as validated PEM, or why it cannot be used."""
    label = f"ConfigMap {namespace}/{name}"
    config_map = resources.find("", "ConfigMap", namespace, name)
    if config_map is None:
        return b"", f"{label} not found"
    data = config_map.get("data") or {}
    text = data.get(CA_KEY) if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        return b"", f"{label} has no key {CA_KEY!r}"
    pem = text.encode()
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        return b"", f"{label}: {CA_KEY} is not PEM certificates: {exc}"
    if not certificates:
        return b"", f"{label}: {CA_KEY} holds no certificate"
    try:
        client_context(pem, ("http/1.1",), check_hostname=True)
    except (ssl.SSLError, ValueError) as exc:
        return b"", f"{label}: OpenSSL refuses {CA_KEY}: {exc}"
    return pem, None


# -- conditions --------------------------------------------------------------------------------


def _accepted(item: _Compiled) -> Condition:
    """Accepted, with the first reason that applies: Invalid, NoValidCACertificate,
    TargetNotFound, Conflicted."""
    if item.invalid is not None and item.invalid[0] == INVALID:
        return Condition("Accepted", "False", INVALID, item.invalid[1])
    if item.invalid is not None and item.invalid[0] == NO_VALID_CA:
        return Condition("Accepted", "False", NO_VALID_CA, item.invalid[1])
    if not item.targets:
        return Condition("Accepted", "False", TARGET_NOT_FOUND, "; ".join(item.missing))
    if len(item.lost) == len(item.targets):
        return Condition("Accepted", "False", CONFLICTED, "; ".join(item.lost))
    notes = item.missing + item.lost + item.notes
    return Condition("Accepted", "True", ACCEPTED, "; ".join(notes))


def _resolved_refs(problems: list[Problem]) -> Condition:
    """ResolvedRefs=True, or False with the first problem's reason and every message."""
    if not problems:
        return Condition(RESOLVED_REFS, "True", RESOLVED_REFS)
    return Condition(RESOLVED_REFS, "False", problems[0][0], "; ".join(m for _, m in problems))


def _age(meta: Metadata) -> float:
    """creationTimestamp as epoch seconds; policies without one sort after every stamped one."""
    stamp = meta.creation_timestamp
    if stamp is None:
        return math.inf
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _target_text(key: TargetKey) -> str:
    namespace, service, section = key
    return f"Service {namespace}/{service}" + (f" port {section!r}" if section else "")


def _ports_text(ports: list[ServicePort]) -> str:
    return ", ".join(f"port {p.name or p.port}" for p in ports)
