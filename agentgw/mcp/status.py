"""MCPBackend statuses: ``ResolvedRefs`` says which ``backendRef`` targets do not resolve.

Each MCPBackend gets ``Accepted=True`` (it passed validation at load) and ``ResolvedRefs``:
``True``, or ``False (BackendNotFound)`` naming every backendRef target whose Service (or port,
or BackendTLSPolicy) does not resolve; such a target fails its sessions per ``failureMode``.
One entry per Gateway whose accepted routes reference the backend (``-`` when none does).
"""

from __future__ import annotations

from collections.abc import Sequence

from agentgw.mcp.api import GROUP, KIND, MCPBackend
from gateway.backends.base import BackendRef, BackendResolveError
from gateway.compile.refs import resolve_service_ref
from gateway.compile.reports import BackendReference, PluginReport
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition, ParentStatus, RouteStatus

ACCEPTED = Condition("Accepted", "True", "Accepted")


def mcp_report(resources: ResourceSet, references: Sequence[BackendReference]) -> PluginReport:
    """Every MCPBackend's status."""
    statuses = []
    for (namespace, name), obj in sorted(resources.typed_objects.get((GROUP, KIND), {}).items()):
        if not isinstance(obj, MCPBackend):
            continue
        problems = unresolved(resources, namespace, obj)
        resolved = (
            Condition("ResolvedRefs", "False", "BackendNotFound", "; ".join(problems))
            if problems
            else Condition("ResolvedRefs", "True", "ResolvedRefs")
        )
        gateways = sorted(
            {
                gateway
                for ref in references
                if (ref.group, ref.kind, ref.namespace, ref.name) == (GROUP, KIND, namespace, name)
                for gateway in ref.gateways
            }
        ) or ["-"]
        parents = tuple(ParentStatus(gateway, (ACCEPTED, resolved)) for gateway in gateways)
        statuses.append(RouteStatus(KIND, namespace, name, parents))
    return PluginReport(statuses)


def unresolved(resources: ResourceSet, namespace: str, backend: MCPBackend) -> list[str]:
    """What is wrong with each backendRef target that does not resolve."""
    problems = []
    for i, target in enumerate(backend.spec.targets):
        config = target.backend_ref
        if config is None:
            continue
        ref = BackendRef("", "Service", config.name, namespace, config.port)
        try:
            resolve_service_ref(ref, resources)
        except BackendResolveError as exc:
            problems.append(f"spec.targets[{i}] {target.name}: {exc.message}")
    return problems
