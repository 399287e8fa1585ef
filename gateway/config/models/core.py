"""Kubernetes core models: Service, EndpointSlice and Namespace (the parts the gateway reads)."""

from __future__ import annotations

from pydantic import Field

from gateway.config.models.base import Metadata, Model, Port


class ServicePort(Model):
    """A Service port."""

    name: str | None = None
    port: Port
    target_port: int | str | None = None
    app_protocol: str | None = None
    protocol: str = "TCP"


class ServiceSpec(Model):
    """Service spec (the parts routing needs)."""

    ports: list[ServicePort] = Field(default_factory=list)
    type: str = "ClusterIP"


class Service(Model):
    """v1 Service."""

    metadata: Metadata
    spec: ServiceSpec = Field(default_factory=ServiceSpec)


class EndpointConditions(Model):
    """Endpoint conditions; ``ready`` absent counts as ready."""

    ready: bool | None = None


class SliceEndpoint(Model):
    """One EndpointSlice endpoint."""

    addresses: list[str] = Field(min_length=1)
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)


class SlicePort(Model):
    """One EndpointSlice port."""

    name: str | None = None
    port: Port
    protocol: str = "TCP"
    app_protocol: str | None = None


class EndpointSlice(Model):
    """discovery.k8s.io/v1 EndpointSlice."""

    metadata: Metadata
    address_type: str = "IPv4"
    endpoints: list[SliceEndpoint] = Field(default_factory=list)
    ports: list[SlicePort] = Field(default_factory=list)


class Namespace(Model):
    """v1 Namespace: only its labels matter (allowedRoutes selectors)."""

    metadata: Metadata
