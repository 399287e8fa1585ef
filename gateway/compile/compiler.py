"""compile_snapshot: resources -> listeners, routers and pre-route stages per port, responder
apps, status, dump."""

from __future__ import annotations

import math
import ssl
from datetime import UTC
from typing import Any

from gateway.compile.attach import Attachment, Listeners, Route, plan
from gateway.compile.backend_tls import compile_backend_tls, route_services
from gateway.compile.conflicts import settle_conflicts
from gateway.compile.dump import DumpWriter, condition_view
from gateway.compile.gamma import (
    MeshTable,
    ServiceAttachment,
    add_mesh_endpoints,
    build_routers,
    is_service_parent,
    mesh_table,
    plan_service,
)
from gateway.compile.grants import GrantIndex
from gateway.compile.grpc_rules import GRPC_ROUTE, compile_grpc_rule
from gateway.compile.listeners import ListenerState, listener_states
from gateway.compile.memo import CompileMemo, MemoPass, RouteWork
from gateway.compile.mesh_policies import waypoint_policies
from gateway.compile.policies import compile_policies
from gateway.compile.refs import Problem, RefResolver
from gateway.compile.reports import BackendReference, run_reports
from gateway.compile.rules import RuleResult, compile_rule
from gateway.compile.status import accepted, partially_invalid, rejected_status, resolved_refs
from gateway.config.gc_pause import paused_gc
from gateway.config.models import GATEWAY_GROUP, GrpcRoute, HttpRoute
from gateway.config.resources import ResourceSet
from gateway.routing.router import RouterBuilder
from gateway.snapshot import Condition, ParentStatus, PortRouter, RouteStatus, Snapshot
from gateway.tls.contexts import TlsListener, port_context

HTTP_ROUTE = "HTTPRoute"


def compile_snapshot(
    resources: ResourceSet, version: int, memo: CompileMemo | None = None
) -> Snapshot:
    """Compile validated resources into the immutable snapshot the data path reads.

    With ``memo`` (cluster mode), routes unchanged since the memo's last compile are reused
    when nothing but routes changed (``gateway.compile.memo``); the snapshot is the same.
    """
    with paused_gc():
        mesh = mesh_table(resources)
        memo_pass = (memo or CompileMemo()).begin(resources, full=mesh is not None)
        snapshot = _compile(resources, version, mesh, memo_pass)
        if memo is not None:
            memo.commit(memo_pass)
        return snapshot


def _compile(
    resources: ResourceSet, version: int, mesh: MeshTable | None, memo: MemoPass
) -> Snapshot:
    if mesh is not None:
        add_mesh_endpoints(resources, mesh)
    grants = GrantIndex(resources.grants)
    states = memo.states
    if states is None:
        states = memo.states = listener_states(resources, grants)
    else:  # the same listeners: only what joining routes counts starts again
        for listeners in states.values():
            for state in listeners:
                state.attached = 0
                state.route_keys = set()
    backend_tls = compile_backend_tls(resources)
    refs = RefResolver(resources, grants, backend_tls, memo.backends)
    served = [s for listeners in states.values() for s in listeners if s.served]
    builders: dict[int, RouterBuilder] = {}
    for state in served:
        builders.setdefault(state.listener.port, RouterBuilder()).add_listener(
            state.listener.hostname
        )

    writer = DumpWriter()
    route_views: list[dict[str, Any]] = []
    compiled: list[tuple[str, Route, list[RuleResult], list[Attachment]]] = []
    service_parents: list[ServiceAttachment] = []
    works: dict[int, RouteWork] = {}
    for kind, route in _routes(resources):
        age = _age(route)
        work = memo.get(route)
        if work is None:
            results = _rules(kind, route, age, refs)
            work = RouteWork(route, results, writer.route(route, results, kind))
            memo.put(work)
        works[id(route)] = work
        results = work.results
        route_views.append(work.view)
        attachments = work.attachments
        if attachments is None:
            attachments = []
            for ref in route.spec.parent_refs:
                if is_service_parent(ref):
                    service_parent = plan_service(kind, route, ref, results, age, mesh)
                    service_parents.append(service_parent)
                    attachments.append(service_parent.attachment)
                else:
                    attachments.append(plan(kind, route, ref, results, age, states, resources))
            work.parents = None
            if not any(is_service_parent(ref) for ref in route.spec.parent_refs):
                work.attachments = attachments
        compiled.append((kind, route, results, attachments))
    settled = settle_conflicts([a for *_, attachments in compiled for a in attachments])
    if settled:  # attachments changed by conflicts between routes: plan them all again next time
        for work in works.values():
            work.attachments = work.parents = None

    route_statuses: list[RouteStatus] = []
    ancestors: dict[tuple[str, str], set[str]] = {}  # Service -> Gateways of routes using it
    for kind, route, results, attachments in compiled:
        for attachment in attachments:
            _join(attachment, builders)
        meta = route.metadata
        work = works[id(route)]
        parents = work.parents or _parents(attachments, results)
        if work.attachments is not None:
            work.parents = parents
        status, _ = memo.status(RouteStatus(kind, meta.namespace, meta.name, parents))
        route_statuses.append(status)
        if work.ancestry is None:
            work.ancestry = (
                _gateways(route, states),
                route_services(meta.namespace, route.spec.rules),
            )
        gateways, services = work.ancestry
        if gateways:
            for service in services:
                ancestors.setdefault(service, set()).update(gateways)

    policies = compile_policies(resources, states, writer)
    gateway_statuses = [_gateway_status(listeners) for listeners in states.values()]
    policy_statuses = backend_tls.statuses(ancestors)
    references = [
        ref
        for (kind, route, _, _), status in zip(compiled, route_statuses, strict=True)
        for ref in _references(kind, route, status, works[id(route)])
    ]
    plugin_statuses, plugin_dumps = run_reports(resources, references)
    statuses = tuple(
        gateway_statuses
        + route_statuses
        + policies.statuses
        + policy_statuses
        + plugin_statuses
        + [rejected_status(r) for r in resources.rejected]
    )
    routers: dict[int, PortRouter] = {port: b.build() for port, b in sorted(builders.items())}
    pre_route = dict(policies.pre_route)
    if mesh is not None:
        routers.update(build_routers(mesh, service_parents, refs))
        authz = waypoint_policies(resources, mesh)
        pre_route.update(authz.stages)
        statuses += tuple(authz.statuses)
    interned = [memo.status(s) for s in statuses]
    statuses = tuple(status for status, _ in interned)
    protocols = {s.listener.port: s.listener.protocol for s in served}
    dump = {
        "version": version,
        "listeners": [_listener_view(s) for ls in states.values() for s in ls],
        "routes": route_views,
        "policies": policies.views,
        "preRoute": policies.port_views,
        "backendTLSPolicies": backend_tls.describe(),
        **plugin_dumps,
        "statuses": [view for _, view in interned],
    }
    return Snapshot(
        version,
        tuple(s.info for s in served),
        routers,
        statuses,
        dump,
        tls=_tls_contexts(served),
        port_protocols=dict(sorted(protocols.items())),
        pre_route=pre_route,
        responders=_responders(compiled, {id(p.attachment) for p in service_parents}),
        mesh=mesh,
    )


def _responders(
    compiled: list[tuple[str, Route, list[RuleResult], list[Attachment]]],
    on_services: set[int],
) -> tuple[Any, ...]:
    """The ASGI app of every responder backend a served rule may choose, each app once (a
    route serves through a listener it is bound to, or, in waypoint mode, through a Service
    it is accepted on: ``on_services`` holds the ids of those attachments)."""
    apps: dict[int, Any] = {}  # by identity: the same app in two rules runs once
    for _, _, results, attachments in compiled:
        if not any(
            a.condition.status == "True" and (a.bindings or id(a) in on_services)
            for a in attachments
        ):
            continue  # neither a listener nor a Service serves this route
        for result in results:
            if result.rule is None:
                continue
            for choice in result.rule.choices:
                if choice.responder is not None:
                    apps.setdefault(id(choice.responder), choice.responder)
    return tuple(apps.values())


def _routes(resources: ResourceSet) -> list[tuple[str, Route]]:
    """HTTPRoutes then GRPCRoutes, each sorted by namespace/name (the status order)."""
    http: list[tuple[str, Route]] = [(HTTP_ROUTE, r) for r in resources.routes]
    grpc: list[tuple[str, Route]] = [(GRPC_ROUTE, r) for r in resources.grpc_routes]
    key = _name_key
    return sorted(http, key=key) + sorted(grpc, key=key)


def _name_key(item: tuple[str, Route]) -> tuple[str, str]:
    meta = item[1].metadata
    return meta.namespace, meta.name


def _rules(kind: str, route: Route, age: float, refs: RefResolver) -> list[RuleResult]:
    """Compile every rule of a route of either kind."""
    if isinstance(route, GrpcRoute):
        return [compile_grpc_rule(route, i, r, age, refs) for i, r in enumerate(route.spec.rules)]
    assert isinstance(route, HttpRoute) and kind == HTTP_ROUTE
    return [compile_rule(route, i, r, age, refs) for i, r in enumerate(route.spec.rules)]


def _age(route: Route) -> float:
    """creationTimestamp as epoch seconds; routes without one sort after every stamped route."""
    stamp = route.metadata.creation_timestamp
    if stamp is None:
        return math.inf
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _references(
    kind: str, route: Route, status: RouteStatus, work: RouteWork
) -> list[BackendReference]:
    """A route's backendRefs, with the Gateways that accepted the route."""
    if work.references is not None and work.references[0] is status.parents:
        return work.references[1]
    meta = route.metadata
    gateways = frozenset(
        "/".join(parent.parent.split("/")[:2])
        for parent in status.parents
        if any(c.type == "Accepted" and c.status == "True" for c in parent.conditions)
    )
    out = [
        BackendReference(
            kind,
            meta.namespace,
            meta.name,
            ref.group,
            ref.kind,
            ref.namespace or meta.namespace,
            ref.name,
            gateways,
        )
        for rule in route.spec.rules
        for ref in rule.backend_refs
    ]
    work.references = (status.parents, out)
    return out


def _gateways(route: Route, states: Listeners) -> set[str]:
    """``namespace/name`` of the Gateways (served here) a route's parentRefs name."""
    out = set()
    for ref in route.spec.parent_refs:
        namespace = ref.namespace or route.metadata.namespace
        if (ref.group, ref.kind) == (GATEWAY_GROUP, "Gateway") and (namespace, ref.name) in states:
            out.add(f"{namespace}/{ref.name}")
    return out


def _problems(results: list[RuleResult]) -> list[Problem]:
    return [p for r in results if r.rule is not None for p in r.problems]


def _join(attachment: Attachment, builders: dict[int, RouterBuilder]) -> None:
    """Add an accepted attachment's match entries to its listeners' port routers."""
    if attachment.condition.status != "True":
        return
    meta = attachment.route.metadata
    valid = [r for r in attachment.results if r.rule is not None]
    for binding in attachment.bindings:
        state = binding.state
        builder = builders[state.listener.port]
        for hostname in binding.hostnames:
            for result in valid:
                for entry in result.entries:
                    builder.add(state.listener.hostname, hostname, entry)
        key = (attachment.kind, meta.namespace, meta.name)
        if key not in state.route_keys:
            state.route_keys.add(key)
            state.attached += 1


def _parents(attachments: list[Attachment], results: list[RuleResult]) -> tuple[ParentStatus, ...]:
    """A route's status entries: one per parentRef."""
    return tuple(_parent_status(a, results) for a in attachments) or (
        ParentStatus(
            "-",
            (
                accepted("NoMatchingParent", "the route has no parentRefs"),
                resolved_refs(_problems(results)),
            ),
        ),
    )


def _parent_status(attachment: Attachment, results: list[RuleResult]) -> ParentStatus:
    """A route's conditions for one parentRef."""
    condition = attachment.condition
    conditions: tuple[Condition, ...] = (condition, resolved_refs(_problems(results)))
    dropped = [r.invalid.message for r in results if r.invalid is not None]
    if condition.status == "True" and dropped:
        conditions += (partially_invalid(dropped),)
    return ParentStatus(attachment.parent, conditions)


def _tls_contexts(served: list[ListenerState]) -> dict[int, ssl.SSLContext]:
    """A server context per HTTPS port, choosing among the port's listeners by SNI."""
    per_port: dict[int, list[TlsListener]] = {}
    for state in served:
        if state.listener.protocol == "HTTPS":
            per_port.setdefault(state.listener.port, []).append(
                TlsListener(state.label, state.listener.hostname, state.certificates)
            )
    return {port: port_context(listeners) for port, listeners in sorted(per_port.items())}


def _gateway_status(listeners: list[ListenerState]) -> RouteStatus:
    """A Gateway's listener conditions, in the same shape as route statuses."""
    meta = listeners[0].gateway.metadata
    parents = tuple(
        ParentStatus(f"listener {s.listener.name} :{s.listener.port}", tuple(s.conditions))
        for s in listeners
    )
    return RouteStatus("Gateway", meta.namespace, meta.name, parents)


def _listener_view(state: ListenerState) -> dict[str, Any]:
    info = state.info
    view: dict[str, Any] = {
        "gateway": f"{info.gateway_namespace}/{info.gateway_name}",
        "name": info.name,
        "port": info.port,
        "protocol": info.protocol,
        "hostname": info.hostname,
        "served": state.served,
        "attachedRoutes": state.attached,
        "conditions": [condition_view(c) for c in state.conditions],
    }
    tls = state.listener.tls
    if tls is not None:
        view["tls"] = {
            "mode": tls.mode,
            "certificateRefs": [
                f"{r.namespace or info.gateway_namespace}/{r.name}" for r in tls.certificate_refs
            ],
            "certificates": [c.describe() for c in state.certificates],
        }
    return view


__all__ = ["Listeners", "compile_snapshot"]
