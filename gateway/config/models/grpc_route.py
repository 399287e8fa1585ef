"""GRPCRoute v1 models (shape and types only); parentRefs, hostnames, filters and refs as HTTPRoute.

Enum-like ``type`` fields stay plain strings (compile judges them, so an unknown value makes a rule
not Accepted instead of breaking the config). The service and method patterns are the API
server's and apply to Exact matches only.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from gateway.config.models.base import Metadata, Model
from gateway.config.models.gateway_api import (
    SECTION_NAME,
    CommonRouteSpec,
    Filter,
    HttpBackendRef,
    NameValueMatch,
    SessionPersistence,
    check_rules,
)

_SERVICE = re.compile(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", re.IGNORECASE)
_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")


class GrpcMethodMatch(Model):
    """``matches[].method``: service and/or method, Exact (default) or RegularExpression."""

    type: str = "Exact"
    service: str | None = Field(default=None, max_length=1024)
    method: str | None = Field(default=None, max_length=1024)

    @model_validator(mode="after")
    def _service_or_method(self) -> GrpcMethodMatch:
        if self.service is None and self.method is None:
            raise ValueError("one or both of service and method must be set")
        if self.type == "Exact":
            if self.service is not None and not _SERVICE.match(self.service):
                raise ValueError(
                    f"service: {self.service!r} is not a valid gRPC service name "
                    "(dot-separated identifiers)"
                )
            if self.method is not None and not _METHOD.match(self.method):
                raise ValueError(
                    f"method: {self.method!r} is not a valid gRPC method name (an identifier)"
                )
        return self


class GrpcRouteMatch(Model):
    """``rules[].matches[]``: method AND headers; neither set matches every gRPC request."""

    method: GrpcMethodMatch | None = None
    headers: list[NameValueMatch] = Field(default_factory=list, max_length=16)


class GrpcRouteRule(Model):
    """``spec.rules[]``: like an HTTPRoute rule without timeouts and retry."""

    name: str | None = Field(default=None, min_length=1, max_length=253, pattern=SECTION_NAME)
    matches: list[GrpcRouteMatch] = Field(default_factory=lambda: [GrpcRouteMatch()], max_length=64)
    filters: list[Filter] = Field(default_factory=list, max_length=16)
    backend_refs: list[HttpBackendRef] = Field(default_factory=list, max_length=16)
    session_persistence: SessionPersistence | None = None

    @field_validator("matches")
    @classmethod
    def _match_all(cls, matches: list[GrpcRouteMatch]) -> list[GrpcRouteMatch]:
        # "If no matches are specified, the implementation MUST match every gRPC request":
        # an explicit [] included.
        return matches or [GrpcRouteMatch()]


class GrpcRouteSpec(CommonRouteSpec):
    """GRPCRoute spec."""

    rules: list[GrpcRouteRule] = Field(default_factory=lambda: [GrpcRouteRule()], max_length=16)

    @field_validator("rules")
    @classmethod
    def _rules(cls, rules: list[GrpcRouteRule]) -> list[GrpcRouteRule]:
        check_rules(rules)
        return rules


class GrpcRoute(Model):
    """gateway.networking.k8s.io GRPCRoute."""

    metadata: Metadata
    spec: GrpcRouteSpec = Field(default_factory=GrpcRouteSpec)
