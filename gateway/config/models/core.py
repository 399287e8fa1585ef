"""Kubernetes core models: Service, EndpointSlice, Namespace, Secret (what the gateway reads)."""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, field_validator, model_validator

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


TLS_SECRET_TYPE = "kubernetes.io/tls"
TLS_CERT_KEY = "tls.crt"
TLS_PRIVATE_KEY = "tls.key"


class Secret(Model):
    """v1 Secret: ``data`` is base64 as in Kubernetes, ``stringData`` plain text and wins."""

    metadata: Metadata
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict)
    string_data: dict[str, str] = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _base64(cls, data: dict[str, str]) -> dict[str, str]:
        for key, value in data.items():
            try:
                _decode(value)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"{key!r}: not valid base64 ({exc})") from exc
        return data

    @model_validator(mode="after")
    def _tls_keys(self) -> Secret:
        # The API server refuses a kubernetes.io/tls Secret without both keys.
        if self.type == TLS_SECRET_TYPE:
            missing = [k for k in (TLS_CERT_KEY, TLS_PRIVATE_KEY) if self.value(k) is None]
            if missing:
                raise ValueError(
                    f"a {TLS_SECRET_TYPE} Secret needs data (or stringData) "
                    f"{' and '.join(repr(k) for k in missing)}"
                )
        return self

    def value(self, key: str) -> bytes | None:
        """A key's bytes: from ``stringData`` if set there, else decoded from ``data``."""
        if key in self.string_data:
            return self.string_data[key].encode()
        if key in self.data:
            return _decode(self.data[key])
        return None


def _decode(value: str) -> bytes:
    """Strict base64, ignoring the line breaks YAML block scalars leave in."""
    return base64.b64decode("".join(value.split()), validate=True)
