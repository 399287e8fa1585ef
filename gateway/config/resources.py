"""The loaded configuration: validated objects of the kinds compile uses, plus every raw object."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gateway.config.errors import ConfigError
from gateway.config.models import (
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

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, slots=True)
class Loaded:
    """One validated object with where it came from (for messages)."""

    source: str
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An object left out of the configuration, and why (the message names file and fields)."""

    kind: str
    namespace: str
    name: str
    source: str
    message: str


@dataclass(slots=True)
class ResourceSet:
    """Everything read from the YAML files; implements ``backends.base.ResolveContext``."""

    gateways: list[Gateway] = field(default_factory=list)
    routes: list[HttpRoute] = field(default_factory=list)
    grpc_routes: list[GrpcRoute] = field(default_factory=list)
    grants: list[ReferenceGrant] = field(default_factory=list)
    backend_tls_policies: list[BackendTlsPolicy] = field(default_factory=list)
    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    slices: dict[tuple[str, str], list[EndpointSlice]] = field(default_factory=dict)
    namespaces: dict[str, Namespace] = field(default_factory=dict)
    secrets: dict[tuple[str, str], Secret] = field(default_factory=dict)
    # (api group, kind) -> (namespace, name) -> raw object; the group has no version.
    raw: dict[tuple[str, str], dict[tuple[str, str], Loaded]] = field(default_factory=dict)
    # The same index for the kinds validated at load (core and plugin-registered): the models.
    typed_objects: dict[tuple[str, str], dict[tuple[str, str], BaseModel]] = field(
        default_factory=dict
    )
    # Objects left out for unknown or repeated fields (strict field validation), with why.
    rejected: builtins.list[Rejected] = field(default_factory=list)

    def find(
        self, api_group: str, kind: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        """The raw resource (a dict as in the YAML), or None."""
        loaded = self.raw.get((api_group, kind), {}).get((namespace, name))
        return loaded.raw if loaded else None

    def list(
        self, api_group: str, kind: str, namespace: str | None = None
    ) -> list[Mapping[str, Any]]:
        """Every raw resource of a kind, optionally within one namespace."""
        objects = self.raw.get((api_group, kind), {})
        return [o.raw for (ns, _), o in objects.items() if namespace is None or ns == namespace]

    def typed(self, api_group: str, kind: str, namespace: str, name: str) -> BaseModel | None:
        """The validated model of an object of a kind validated at load, or None."""
        return self.typed_objects.get((api_group, kind), {}).get((namespace, name))

    def typed_list(
        self, api_group: str, kind: str, namespace: str | None = None
    ) -> builtins.list[BaseModel]:
        """Every validated model of a kind, optionally within one namespace, by namespace/name."""
        objects = self.typed_objects.get((api_group, kind), {})
        return [objects[key] for key in sorted(objects) if namespace is None or key[0] == namespace]

    def source_of(self, api_group: str, kind: str, namespace: str, name: str) -> str | None:
        """The file an object came from."""
        loaded = self.raw.get((api_group, kind), {}).get((namespace, name))
        return loaded.source if loaded else None

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """A namespace's labels, with the ``kubernetes.io/metadata.name`` label a cluster adds."""
        declared = self.namespaces.get(namespace)
        labels = dict(declared.metadata.labels) if declared else {}
        labels.setdefault(NAMESPACE_NAME_LABEL, namespace)
        return labels

    def slices_for(self, namespace: str, service: str) -> builtins.list[EndpointSlice]:
        """EndpointSlices labelled for a Service."""
        return self.slices.get((namespace, service), [])

    def merge(self, other: ResourceSet) -> None:
        """Add another file's objects; the same kind/namespace/name twice is an error."""
        for key, objects in other.raw.items():
            mine = self.raw.setdefault(key, {})
            for ident, loaded in objects.items():
                if ident in mine:
                    raise ConfigError(
                        [
                            f"{loaded.source}: {key[1]} {ident[0]}/{ident[1]}: "
                            f"duplicate of the object in {mine[ident].source}"
                        ]
                    )
                mine[ident] = loaded
        for key, models in other.typed_objects.items():
            self.typed_objects.setdefault(key, {}).update(models)
        self.gateways += other.gateways
        self.routes += other.routes
        self.grpc_routes += other.grpc_routes
        self.grants += other.grants
        self.backend_tls_policies += other.backend_tls_policies
        self.services.update(other.services)
        for key, slices in other.slices.items():
            self.slices.setdefault(key, []).extend(slices)
        self.namespaces.update(other.namespaces)
        self.secrets.update(other.secrets)
        self.rejected += other.rejected
