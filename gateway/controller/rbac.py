"""The API access the controller needs, as RBAC rules: what ``deploy/`` must grant, no more."""

from __future__ import annotations

from gateway.config.models import GATEWAY_GROUP
from gateway.controller.crds import plural
from gateway.controller.kinds import REFERENCED_KINDS, watched_kinds
from gateway.plugins import status_kinds

READ = ("get", "list", "watch")
# Kinds whose status the leader writes (PUT on the status subresource).
STATUS_KINDS = ((GATEWAY_GROUP, "GatewayClass"), (GATEWAY_GROUP, "Gateway"))
STATUS_ROUTE_KINDS = ((GATEWAY_GROUP, "HTTPRoute"), (GATEWAY_GROUP, "GRPCRoute"))
# InferencePools: parents[] per Gateway whose routes use the pool (both API groups).
STATUS_POOL_KINDS = (
    ("inference.networking.k8s.io", "InferencePool"),
    ("inference.networking.x-k8s.io", "InferencePool"),
)
LEASE_VERBS = ("get", "create", "update")

Rule = tuple[str, str, tuple[str, ...]]  # (apiGroup, resource, verbs)


def cluster_rules() -> set[Rule]:
    """Cluster-wide: read every watched kind (Secrets and ConfigMaps too: read by name, but a
    name cannot be known in advance); update the status of the kinds we report on, plugins'
    run-time statuses included."""
    rules: set[Rule] = set()
    for group, kind in watched_kinds():
        rules.add((group, plural(kind), READ))
    for group, kind in (*STATUS_KINDS, *STATUS_ROUTE_KINDS, *STATUS_POOL_KINDS, *status_kinds()):
        rules.add((group, f"{plural(kind)}/status", ("update",)))
    assert all((g, k) in watched_kinds() or k == "GatewayClass" for g, k in REFERENCED_KINDS)
    return rules


def lease_rules() -> set[Rule]:
    """In the Lease's namespace only: the leader election Lease."""
    return {("coordination.k8s.io", "leases", LEASE_VERBS)}
