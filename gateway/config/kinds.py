"""Which kinds the loader validates: the core kinds, plus the typed kinds plugins register.

A kind in this table is validated at load (its apiVersion must be served, its pydantic model must
accept it, an unknown field rejects the object: see ``loader``) and the validated model is kept in
``ResourceSet.typed_objects``; any other kind is kept raw only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel

from gateway.config.models import (
    GATEWAY_GROUP,
    BackendTlsPolicy,
    EndpointSlice,
    Gateway,
    GrpcRoute,
    HttpRoute,
    Namespace,
    ReferenceGrant,
    Secret,
    Service,
)


@dataclass(frozen=True, slots=True)
class KindSpec:
    """How one (group, kind) is validated: served versions, model, scope."""

    versions: frozenset[str]
    model: type[BaseModel]
    cluster_scoped: bool = False
    core: bool = False


_KINDS: dict[tuple[str, str], KindSpec] = {
    (GATEWAY_GROUP, "Gateway"): KindSpec(frozenset({"v1", "v1beta1"}), Gateway, core=True),
    (GATEWAY_GROUP, "HTTPRoute"): KindSpec(frozenset({"v1", "v1beta1"}), HttpRoute, core=True),
    (GATEWAY_GROUP, "GRPCRoute"): KindSpec(frozenset({"v1"}), GrpcRoute, core=True),
    (GATEWAY_GROUP, "ReferenceGrant"): KindSpec(
        frozenset({"v1", "v1beta1", "v1alpha2"}), ReferenceGrant, core=True
    ),
    (GATEWAY_GROUP, "BackendTLSPolicy"): KindSpec(
        frozenset({"v1", "v1alpha3"}), BackendTlsPolicy, core=True
    ),
    ("", "Service"): KindSpec(frozenset({"v1"}), Service, core=True),
    ("", "Namespace"): KindSpec(frozenset({"v1"}), Namespace, cluster_scoped=True, core=True),
    ("", "Secret"): KindSpec(frozenset({"v1"}), Secret, core=True),
    ("discovery.k8s.io", "EndpointSlice"): KindSpec(frozenset({"v1"}), EndpointSlice, core=True),
}
# Kept raw, cluster-scoped, and not worth a warning: every Gateway API install has them.
_RAW_CLUSTER_SCOPED = frozenset({(GATEWAY_GROUP, "GatewayClass")})
# Kept raw and read by a factory: ConfigMaps (a BackendTLSPolicy's ``ca.crt``), the mesh objects
# waypoint mode reads (gateway.compile.gamma), and what a plugin's backend, filter or stage kind
# declares.
_READ_RAW: set[tuple[str, str]] = {
    ("", "ConfigMap"),
    ("", "Pod"),
    ("security.istio.io", "AuthorizationPolicy"),
}


def register_resource_kind(
    group: str,
    kind: str,
    versions: Iterable[str],
    model: type[BaseModel],
    *,
    cluster_scoped: bool = False,
) -> None:
    """Validate ``kind`` at load with ``model``; raises ValueError if it is already registered."""
    served = frozenset(versions)
    if not served:
        raise ValueError(f"resource kind {group or 'core'}/{kind}: no served versions given")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"resource kind {group or 'core'}/{kind}: model must be a pydantic model")
    if (group, kind) in _KINDS or (group, kind) in _RAW_CLUSTER_SCOPED:
        raise ValueError(f"resource kind {group or 'core'}/{kind} is already registered")
    _KINDS[(group, kind)] = KindSpec(served, model, cluster_scoped)


def kind_spec(group: str, kind: str) -> KindSpec | None:
    """The validation rule for a kind, or None when it is kept raw only."""
    return _KINDS.get((group, kind))


def is_cluster_scoped(group: str, kind: str) -> bool:
    """Whether objects of a kind have no namespace."""
    spec = _KINDS.get((group, kind))
    return spec.cluster_scoped if spec else (group, kind) in _RAW_CLUSTER_SCOPED


def note_raw_kind(group: str, kind: str) -> None:
    """Objects of this kind are read raw by a registered factory: load them without a warning."""
    _READ_RAW.add((group, kind))


def is_quiet_raw_kind(group: str, kind: str) -> bool:
    """A raw kind the loader should not warn about: GatewayClass, or one a factory reads."""
    return (group, kind) in _RAW_CLUSTER_SCOPED or (group, kind) in _READ_RAW


def registered_resource_kinds() -> list[tuple[str, str]]:
    """Every (group, kind) validated at load, core and registered."""
    return sorted(_KINDS)


def read_raw_kinds() -> list[tuple[str, str]]:
    """Every (group, kind) loaded raw for a factory or the compiler (ConfigMap, plugins' kinds)."""
    return sorted(_READ_RAW | _RAW_CLUSTER_SCOPED)
