"""``security.istio.io`` AuthorizationPolicy as the API spells it: the schema of the CRD that
``deploy/`` installs for clusters without Istio.

The ztunnel (:mod:`mesh.rbac.authz`) and the waypoint (``gateway.waypoint.authz``) read policies
raw and name a bad field themselves; this model only says what the API server should accept.
Fields follow Istio's ``security/v1`` API.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

AUTHZ_GROUP = "security.istio.io"
AUTHZ_VERSIONS = ("v1", "v1beta1")


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow"
    )


class WorkloadSelector(_Model):
    """The workloads (by Pod labels) a policy applies to."""

    match_labels: dict[str, str] | None = None


class PolicyTargetReference(_Model):
    """A Gateway (a waypoint) or Service the policy attaches to."""

    group: str | None = None
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    namespace: str | None = None


class Source(_Model):
    """Who sends: peer identities, namespaces, addresses (``not*``: anything but)."""

    principals: list[str] | None = None
    not_principals: list[str] | None = None
    request_principals: list[str] | None = None
    not_request_principals: list[str] | None = None
    namespaces: list[str] | None = None
    not_namespaces: list[str] | None = None
    ip_blocks: list[str] | None = None
    not_ip_blocks: list[str] | None = None
    remote_ip_blocks: list[str] | None = None
    not_remote_ip_blocks: list[str] | None = None


class Operation(_Model):
    """What is asked: hosts, ports, methods, paths (``not*``: anything but)."""

    hosts: list[str] | None = None
    not_hosts: list[str] | None = None
    ports: list[str] | None = None
    not_ports: list[str] | None = None
    methods: list[str] | None = None
    not_methods: list[str] | None = None
    paths: list[str] | None = None
    not_paths: list[str] | None = None


class RuleFrom(_Model):
    """One ``from`` entry."""

    source: Source | None = None


class RuleTo(_Model):
    """One ``to`` entry."""

    operation: Operation | None = None


class Condition(_Model):
    """A ``when`` condition: ``key`` has one of ``values`` and none of ``notValues``."""

    key: str = Field(min_length=1)
    values: list[str] | None = None
    not_values: list[str] | None = None


class Rule(_Model):
    """Matches when every present part matches (each part: any of its entries)."""

    from_: list[RuleFrom] | None = Field(default=None, alias="from")
    to: list[RuleTo] | None = None
    when: list[Condition] | None = None


class ExtensionProvider(_Model):
    """The external authorizer of a ``CUSTOM`` policy."""

    name: str | None = None


class AuthorizationPolicySpec(_Model):
    """Which workloads, what to do, and when."""

    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: list[PolicyTargetReference] | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: ExtensionProvider | None = None
    rules: list[Rule] | None = None


class AuthorizationPolicy(_Model):
    """``security.istio.io/v1`` AuthorizationPolicy."""

    spec: AuthorizationPolicySpec = Field(default_factory=AuthorizationPolicySpec)
