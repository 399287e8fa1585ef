"""compile_snapshot: resources -> listeners, a router per port, route statuses and the JSON dump."""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

from gateway.compile.dump import DumpWriter, condition_view, status_view
from gateway.compile.grants import GrantIndex
from gateway.compile.hostnames import intersect
from gateway.compile.listeners import ROUTE_KIND, ListenerState, admits_namespace, listener_states
from gateway.compile.refs import Problem, RefResolver
from gateway.compile.rules import RuleResult, compile_rule
from gateway.compile.status import accepted, partially_invalid, resolved_refs
from gateway.config.gc_pause import paused_gc
from gateway.config.models import GATEWAY_GROUP, HttpRoute, ParentRef
from gateway.config.resources import ResourceSet
from gateway.routing.router import RouterBuilder
from gateway.snapshot import Condition, ParentStatus, PortRouter, RouteStatus, Snapshot

Listeners = dict[tuple[str, str], list[ListenerState]]


def compile_snapshot(resources: ResourceSet, version: int) -> Snapshot:
    """Compile validated resources into the immutable snapshot the data path reads."""
    with paused_gc():
        return _compile(resources, version)


def _compile(resources: ResourceSet, version: int) -> Snapshot:
    states = listener_states(resources)
    refs = RefResolver(resources, GrantIndex(resources.grants))
    builders: dict[int, RouterBuilder] = {}
    for listeners in states.values():
        for state in listeners:
            if state.served:
                builders.setdefault(state.listener.port, RouterBuilder()).add_listener(
                    state.listener.hostname
                )

    route_statuses: list[RouteStatus] = []
    route_views: list[dict[str, Any]] = []
    writer = DumpWriter()
    for route in sorted(resources.routes, key=lambda r: (r.metadata.namespace, r.metadata.name)):
        meta = route.metadata
        age = _age(route)
        results = [
            compile_rule(route, i, rule, age, refs) for i, rule in enumerate(route.spec.rules)
        ]
        route_views.append(writer.route(route, results))
        parents = tuple(
            _parent(route, ref, results, states, resources, builders)
            for ref in route.spec.parent_refs
        )
        if not parents:
            parents = (
                ParentStatus(
                    "-",
                    (
                        accepted("NoMatchingParent", "the route has no parentRefs"),
                        resolved_refs(_problems(results)),
                    ),
                ),
            )
        route_statuses.append(RouteStatus("HTTPRoute", meta.namespace, meta.name, parents))

    gateway_statuses = [_gateway_status(listeners) for listeners in states.values()]
    statuses = tuple(gateway_statuses + route_statuses)
    listeners_info = tuple(s.info for ls in states.values() for s in ls if s.served)
    routers: dict[int, PortRouter] = {port: b.build() for port, b in sorted(builders.items())}
    dump = {
        "version": version,
        "listeners": [_listener_view(s) for ls in states.values() for s in ls],
        "routes": route_views,
        "statuses": [status_view(s) for s in statuses],
    }
    return Snapshot(version, listeners_info, routers, statuses, dump)


def _age(route: HttpRoute) -> float:
    """creationTimestamp as epoch seconds; routes without one sort after every stamped route."""
    stamp = route.metadata.creation_timestamp
    if stamp is None:
        return math.inf
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _problems(results: list[RuleResult]) -> list[Problem]:
    return [p for r in results if r.rule is not None for p in r.problems]


def _parent(
    route: HttpRoute,
    ref: ParentRef,
    results: list[RuleResult],
    states: Listeners,
    resources: ResourceSet,
    builders: dict[int, RouterBuilder],
) -> ParentStatus:
    """Attach a route to one parentRef's listeners and report its conditions there."""
    meta = route.metadata
    namespace = ref.namespace or meta.namespace
    label = f"{namespace}/{ref.name}" + (f"/{ref.section_name}" if ref.section_name else "")
    label += f":{ref.port}" if ref.port else ""
    refs_condition = resolved_refs(_problems(results))
    condition = _attach(route, ref, namespace, results, states, resources, builders)
    conditions: tuple[Condition, ...] = (condition, refs_condition)
    dropped = [r.invalid.message for r in results if r.invalid is not None]
    if condition.status == "True" and dropped:
        conditions += (partially_invalid(dropped),)
    return ParentStatus(label, conditions)


def _attach(
    route: HttpRoute,
    ref: ParentRef,
    namespace: str,
    results: list[RuleResult],
    states: Listeners,
    resources: ResourceSet,
    builders: dict[int, RouterBuilder],
) -> Condition:
    """The Accepted condition for one parentRef; on success the rules join the port routers."""
    if (ref.group, ref.kind) != (GATEWAY_GROUP, "Gateway"):
        return accepted(
            "NoMatchingParent", f"parentRef kind {ref.group or 'core'}/{ref.kind} is not supported"
        )
    listeners = states.get((namespace, ref.name))
    if listeners is None:
        return accepted("NoMatchingParent", f"Gateway {namespace}/{ref.name} not found")
    selected = [
        s
        for s in listeners
        if (ref.section_name is None or s.listener.name == ref.section_name)
        and (ref.port is None or s.listener.port == ref.port)
    ]
    if not selected:
        wanted = " and ".join(
            part
            for part in (
                f"named {ref.section_name!r}" if ref.section_name else "",
                f"on port {ref.port}" if ref.port else "",
            )
            if part
        )
        return accepted(
            "NoMatchingParent", f"Gateway {namespace}/{ref.name} has no listener {wanted}"
        )
    meta = route.metadata
    admitted = [
        s
        for s in selected
        if ROUTE_KIND in s.kinds and admits_namespace(s, meta.namespace, resources)
    ]
    if not admitted:
        return accepted(
            "NotAllowedByListeners",
            f"no listener of Gateway {namespace}/{ref.name} admits HTTPRoutes "
            f"from namespace {meta.namespace}",
        )
    served = [s for s in admitted if s.served]
    if not served:
        return accepted(
            "NotAllowedByListeners",
            "the selected listeners are not served yet: "
            + ", ".join(f"{s.listener.name} ({s.listener.protocol})" for s in admitted),
        )
    bindings = [(s, intersect(s.listener.hostname, route.spec.hostnames)) for s in served]
    bindings = [(s, hostnames) for s, hostnames in bindings if hostnames]
    if not bindings:
        return accepted(
            "NoMatchingListenerHostname",
            "no route hostname intersects the hostnames of the selected listeners",
        )
    valid = [r for r in results if r.rule is not None]
    if not valid:
        invalid = [r.invalid for r in results if r.invalid is not None]
        if not invalid:
            return accepted("UnsupportedValue", "the route has no rules")
        return accepted(invalid[0].reason, "; ".join(i.message for i in invalid))
    for state, hostnames in bindings:
        builder = builders[state.listener.port]
        for hostname in hostnames:
            for result in valid:
                for entry in result.entries:
                    builder.add(state.listener.hostname, hostname, entry)
        key = (meta.namespace, meta.name)
        if key not in state.route_keys:
            state.route_keys.add(key)
            state.attached += 1
    return accepted()


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
    return {
        "gateway": f"{info.gateway_namespace}/{info.gateway_name}",
        "name": info.name,
        "port": info.port,
        "protocol": info.protocol,
        "hostname": info.hostname,
        "served": state.served,
        "attachedRoutes": state.attached,
        "conditions": [condition_view(c) for c in state.conditions],
    }
