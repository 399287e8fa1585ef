"""AuthorizationPolicies a waypoint enforces, compiled into one pre-route stage per destination."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.compile.gamma import MeshTable
from gateway.compile.status import accepted
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition, ParentStatus, RouteStatus
from gateway.stages import PortStages
from gateway.waypoint.authz import (
    L7Policy,
    PolicyError,
    compile_policy,
    deny_all,
    policy_targets,
    stage_for,
)
from mesh.state.registry import Service

AUTHZ_GROUP = "security.istio.io"
AUTHZ_KIND = "AuthorizationPolicy"


@dataclass(slots=True)
class WaypointPolicies:
    """Stages by destination key, and the status of every policy that targets a waypoint."""

    stages: dict[int, PortStages] = field(default_factory=dict)
    statuses: list[RouteStatus] = field(default_factory=list)


def waypoint_policies(resources: ResourceSet, mesh: MeshTable) -> WaypointPolicies:
    """Compile the policies with ``targetRefs``; an invalid one is reported, not ignored.

    Leaving out an invalid DENY would let through what it meant to stop, so the targets of an
    invalid policy answer every request 403 until it is fixed (fail closed), as its status says.
    """
    out = WaypointPolicies()
    policies: list[L7Policy] = []
    for raw in resources.list(AUTHZ_GROUP, AUTHZ_KIND):
        meta = raw.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or "default"), str(meta.get("name", ""))
        try:
            policy = compile_policy(raw)
        except PolicyError as exc:
            out.statuses.append(_status(namespace, name, accepted("Invalid", str(exc))))
            try:
                policies.append(deny_all(namespace, name, policy_targets(raw)))
            except PolicyError:
                pass  # no target can be named: nothing to close
            continue
        if policy is not None:
            policies.append(policy)
            out.statuses.append(_status(namespace, name, accepted()))
    for destination in mesh.destinations.values():
        _add_stage(out, policies, destination.waypoint, destination.key, destination.service)
    for key, workload in mesh.pods.values():
        assert workload.waypoint is not None
        _add_stage(out, policies, workload.waypoint.key, key, None)
    return out


def _add_stage(
    out: WaypointPolicies,
    policies: list[L7Policy],
    waypoint: str,
    key: int,
    service: Service | None,
) -> None:
    """The stage of one destination: policies on its waypoint, and on its Service if any."""
    wp_namespace, _, wp_name = waypoint.partition("/")
    target = (service.namespace, service.name) if service is not None else None
    stage = stage_for(policies, (wp_namespace, wp_name), target)
    if stage is not None:
        out.stages[key] = PortStages.of([(None, (stage,))])


def _status(namespace: str, name: str, condition: Condition) -> RouteStatus:
    return RouteStatus(AUTHZ_KIND, namespace, name, (ParentStatus("-", (condition,)),))
