"""GAMMA: routes attached to Services, compiled per destination a waypoint serves.

In waypoint mode (a Gateway of class ``istio-waypoint`` among the resources) the mesh objects in
the same files (Namespaces, Pods, Services, EndpointSlices) are read as the ztunnel reads them
(``mesh.state``). Each port of a Service that names a waypoint (``istio.io/use-waypoint``), and
each Pod that does, becomes a *destination*: the original destination an HBONE CONNECT names.
A destination gets a router of its own under a routing key that stands in for a listener port:
the HTTPRoutes and GRPCRoutes whose ``parentRefs`` name the Service (``group: ""``, ``kind:
Service``, optional ``port``), or, when none does, one rule sending everything to the Service
itself (to the Pod, for a Pod), as traffic would have gone without a waypoint.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.compile.attach import Attachment, Route, parent_label
from gateway.compile.refs import RefResolver
from gateway.compile.rules import RuleResult, compile_rule
from gateway.compile.status import accepted
from gateway.config.models import EndpointSlice, HttpRoute, ParentRef
from gateway.config.resources import ResourceSet
from gateway.routing.match import PATH_PREFIX, MatchEntry
from gateway.routing.router import RouterBuilder
from gateway.snapshot import BackendChoice, CompiledRule, PortRouter, RouteRef
from gateway.waypoint.peer import MeshDestination
from gateway.waypoint.workload_backend import WorkloadBackend
from mesh.errors import MeshError
from mesh.state.registry import MeshState, Service, Workload, parse_mesh
from mesh.state.waypoints import WAYPOINT_CLASS, Waypoint, WaypointIndex

log = logging.getLogger(__name__)

# Routing keys of destinations sit above every TCP port, so they never meet a listener's.
KEY_BASE = 1 << 32
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_MESH_KINDS = (
    ("", "Namespace"),
    ("", "Pod"),
    ("", "Service"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("security.istio.io", "AuthorizationPolicy"),
)


@dataclass(frozen=True, slots=True)
class MeshTable:
    """The mesh as the waypoint sees it: workloads, waypoints, and the destinations they serve."""

    state: MeshState
    waypoints: tuple[Waypoint, ...]
    destinations: Mapping[tuple[str, int], MeshDestination]
    # Pod IP -> (routing key, Pod) for Pods whose own waypoint serves workloads.
    pods: Mapping[str, tuple[int, Workload]] = field(default_factory=dict)

    def destination(self, host: str, port: int) -> MeshDestination | None:
        """The destination a CONNECT's ``:authority`` names, if any waypoint serves it."""
        found = self.destinations.get((host, port))
        if found is not None:
            return found
        pod = self.pods.get(host)
        if pod is None:
            return None
        key, workload = pod
        assert workload.waypoint is not None
        return MeshDestination(key, (host, port), None, workload.waypoint.key, workload)


def is_service_parent(ref: ParentRef) -> bool:
    """Whether a parentRef names a Service (GAMMA) rather than a Gateway."""
    return (ref.group, ref.kind) == ("", "Service")


def mesh_table(resources: ResourceSet, trust_domain: str = "cluster.local") -> MeshTable | None:
    """The mesh read from the resources, or None without a waypoint Gateway (not a waypoint)."""
    if not any(g.spec.gateway_class_name == WAYPOINT_CLASS for g in resources.gateways):
        return None
    docs = [obj for group, kind in _MESH_KINDS for obj in resources.list(group, kind)]
    try:
        state = parse_mesh(docs, trust_domain)
    except MeshError as exc:
        log.error("waypoint mode: the mesh objects are invalid: %s", exc)
        return None
    gateways = resources.list("gateway.networking.k8s.io", "Gateway")
    index = WaypointIndex(gateways, resources.list("", "Service"), state.workloads)
    destinations: dict[tuple[str, int], MeshDestination] = {}
    for service in state.services:
        if service.waypoint is None or service.vip is None:
            continue
        for sp in service.ports:
            key = _key(f"{service.namespace}/{service.name}:{sp.port}", destinations)
            destinations[(service.vip, sp.port)] = MeshDestination(
                key, (service.vip, sp.port), service, service.waypoint.key
            )
    pods = {
        w.ip: (KEY_BASE - 1 - (zlib.crc32(w.key.encode()) & 0x7FFFFFFF), w)
        for w in state.workloads
        if w.waypoint is not None
    }
    return MeshTable(state, index.gateway_waypoints(), destinations, pods)


def _key(name: str, taken: Mapping[tuple[str, int], MeshDestination]) -> int:
    """A routing key stable across reloads (a hash of the name), probing past a collision."""
    used = {d.key for d in taken.values()}
    key = KEY_BASE + zlib.crc32(name.encode())
    while key in used:
        key += 1 << 32
    return key


def add_mesh_endpoints(resources: ResourceSet, table: MeshTable) -> None:
    """EndpointSlices for Services selecting Pods (as a cluster's controller would write them),
    so Service backendRefs resolve to the Pods the ztunnel knows."""
    for service in table.state.services:
        if resources.slices_for(service.namespace, service.name):
            continue
        if (service.namespace, service.name) not in resources.services:
            continue
        slices = resources.slices.setdefault((service.namespace, service.name), [])
        for sp in service.ports:
            endpoints = service.endpoints.get(sp.port, ())
            for port in sorted({e.port for e in endpoints}):
                slices.append(
                    EndpointSlice.model_validate(
                        {
                            "apiVersion": "discovery.k8s.io/v1",
                            "kind": "EndpointSlice",
                            "metadata": {
                                "name": f"{service.name}-{sp.port}-{port}",
                                "namespace": service.namespace,
                                "labels": {SERVICE_NAME_LABEL: service.name},
                            },
                            "addressType": "IPv4",
                            "ports": [{"name": sp.name, "port": port}],
                            "endpoints": [
                                {"addresses": [e.ip]} for e in endpoints if e.port == port
                            ],
                        }
                    )
                )


@dataclass(slots=True)
class ServiceAttachment:
    """A route attached to a Service: its status entry and the Service ports it serves."""

    attachment: Attachment
    service: tuple[str, str]
    port: int | None


def plan_service(
    kind: str,
    route: Route,
    ref: ParentRef,
    results: list[RuleResult],
    age: float,
    table: MeshTable | None,
) -> ServiceAttachment:
    """Decide whether a route attaches to the Service a parentRef names (GAMMA)."""
    out = Attachment(kind, route, age, parent_label(route, ref), results, accepted())
    namespace = ref.namespace or route.metadata.namespace
    target = ServiceAttachment(out, (namespace, ref.name), ref.port)
    service = table.state.service(ref.name, namespace) if table is not None else None
    if table is None:
        out.condition = accepted(
            "NoMatchingParent",
            f"parentRef kind core/Service ({namespace}/{ref.name}) is not supported outside "
            f"waypoint mode (a Gateway of class {WAYPOINT_CLASS})",
        )
    elif service is None:
        out.condition = accepted("NoMatchingParent", f"Service {namespace}/{ref.name} not found")
    elif ref.port is not None and all(sp.port != ref.port for sp in service.ports):
        out.condition = accepted(
            "NoMatchingParent", f"Service {namespace}/{ref.name} has no port {ref.port}"
        )
    elif namespace != route.metadata.namespace:
        out.condition = accepted(
            "NotAllowedByParent",
            f"route in namespace {route.metadata.namespace} attaches to Service "
            f"{namespace}/{ref.name}: consumer routes are not supported, only producer routes",
        )
    elif not any(r.rule is not None for r in results):
        invalid = [r.invalid for r in results if r.invalid is not None]
        out.condition = (
            accepted(invalid[0].reason, "; ".join(i.message for i in invalid))
            if invalid
            else accepted("UnsupportedValue", "the route has no rules")
        )
    return target


def build_routers(
    table: MeshTable, attached: list[ServiceAttachment], refs: RefResolver
) -> dict[int, PortRouter]:
    """A router per destination: its Service's routes, or the default route to the Service."""
    routers: dict[int, PortRouter] = {key: pod_router(w) for key, w in table.pods.values()}
    for destination in table.destinations.values():
        service = destination.service
        assert service is not None
        port = destination.address[1]
        builder = RouterBuilder()
        builder.add_listener(None)
        routes = [
            a
            for a in attached
            if a.attachment.condition.status == "True"
            and a.service == (service.namespace, service.name)
            and a.port in (None, port)
        ]
        for item in routes:
            for result in item.attachment.results:
                if result.rule is None:
                    continue
                for entry in result.entries:
                    builder.add(None, None, entry)
        if not routes:
            for entry in _default_route(service, port, refs).entries:
                builder.add(None, None, entry)
        routers[destination.key] = builder.build()
    return routers


def pod_router(workload: Workload) -> PortRouter:
    """Everything to the Pod at the port the CONNECT named (a workload waypoint's default)."""
    rule = CompiledRule(
        ref=RouteRef("HTTPRoute", workload.namespace, f"{workload.name}-waypoint-default", 0),
        choices=(BackendChoice(1, WorkloadBackend(workload), name=workload.name),),
    )
    builder = RouterBuilder()
    builder.add_listener(None)
    entry = MatchEntry(
        rule=rule,
        match_index=0,
        path_type=PATH_PREFIX,
        path="/",
        path_regex=None,
        method=None,
        headers=(),
        query=(),
        key=(1, 0, 0, 0.0, workload.key, 0, 0),
    )
    builder.add(None, None, entry)
    return builder.build()


def _default_route(service: Service, port: int, refs: RefResolver) -> RuleResult:
    """Everything to the Service itself: the waypoint's behaviour without a route."""
    route = HttpRoute.model_validate(_default_route_doc(service, port))
    return compile_rule(route, 0, route.spec.rules[0], 0.0, refs)


def _default_route_doc(service: Service, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"{service.name}-waypoint-default", "namespace": service.namespace},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": service.name, "port": port}],
            "rules": [{"backendRefs": [{"name": service.name, "port": port}]}],
        },
    }
