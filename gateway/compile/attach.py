"""Attaching a route to one parentRef's listeners: which listeners and hostnames, or why not.

Planning is separate from joining the port routers so that HTTPRoute/GRPCRoute conflicts can be
settled (``conflicts``) before any rule is added.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.compile.hostnames import intersect
from gateway.compile.listeners import ListenerState, admits_namespace
from gateway.compile.rules import RuleResult
from gateway.compile.status import accepted
from gateway.config.models import GATEWAY_GROUP, GrpcRoute, HttpRoute, ParentRef
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition

Route = HttpRoute | GrpcRoute
Listeners = dict[tuple[str, str], list[ListenerState]]


@dataclass(slots=True)
class Binding:
    """A listener a route joins, with the effective hostnames there (None: every host)."""

    state: ListenerState
    hostnames: list[str | None]


@dataclass(slots=True)
class Attachment:
    """One (route, parentRef): its Accepted condition and, when accepted, where it binds."""

    kind: str  # "HTTPRoute" | "GRPCRoute"
    route: Route
    age: float
    parent: str  # the parentRef as status shows it
    results: list[RuleResult]
    condition: Condition
    bindings: list[Binding] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def name_key(self) -> str:
        """``namespace/name``."""
        meta = self.route.metadata
        return f"{meta.namespace}/{meta.name}"


def parent_label(route: Route, ref: ParentRef) -> str:
    """``namespace/name[/section][:port]`` of a parentRef."""
    namespace = ref.namespace or route.metadata.namespace
    label = f"{namespace}/{ref.name}" + (f"/{ref.section_name}" if ref.section_name else "")
    return label + (f":{ref.port}" if ref.port else "")


def plan(
    kind: str,
    route: Route,
    ref: ParentRef,
    results: list[RuleResult],
    age: float,
    states: Listeners,
    resources: ResourceSet,
) -> Attachment:
    """Decide where a route attaches for one parentRef (nothing is added to routers here)."""
    out = Attachment(kind, route, age, parent_label(route, ref), results, accepted())
    namespace = ref.namespace or route.metadata.namespace
    if (ref.group, ref.kind) != (GATEWAY_GROUP, "Gateway"):
        out.condition = accepted(
            "NoMatchingParent", f"parentRef kind {ref.group or 'core'}/{ref.kind} is not supported"
        )
        return out
    listeners = states.get((namespace, ref.name))
    if listeners is None:
        out.condition = accepted("NoMatchingParent", f"Gateway {namespace}/{ref.name} not found")
        return out
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
        out.condition = accepted(
            "NoMatchingParent", f"Gateway {namespace}/{ref.name} has no listener {wanted}"
        )
        return out
    route_namespace = route.metadata.namespace
    admitted = [
        s
        for s in selected
        if (GATEWAY_GROUP, kind) in s.kinds and admits_namespace(s, route_namespace, resources)
    ]
    if not admitted:
        out.condition = accepted(
            "NotAllowedByListeners",
            f"no listener of Gateway {namespace}/{ref.name} admits {kind}s "
            f"from namespace {route_namespace}",
        )
        return out
    served = [s for s in admitted if s.served]
    if not served:
        out.condition = accepted(
            "NotAllowedByListeners",
            "the selected listeners are not programmed: "
            + "; ".join(f"{s.listener.name} ({s.listener.protocol}: {_why(s)})" for s in admitted),
        )
        return out
    bindings = [Binding(s, intersect(s.listener.hostname, route.spec.hostnames)) for s in served]
    out.bindings = [b for b in bindings if b.hostnames]
    if not out.bindings:
        out.condition = accepted(
            "NoMatchingListenerHostname",
            "no route hostname intersects the hostnames of the selected listeners",
        )
        return out
    if not any(r.rule is not None for r in results):
        out.bindings = []
        invalid = [r.invalid for r in results if r.invalid is not None]
        if not invalid:
            out.condition = accepted("UnsupportedValue", "the route has no rules")
        else:
            out.condition = accepted(invalid[0].reason, "; ".join(i.message for i in invalid))
    return out


def _why(state: ListenerState) -> str:
    """The listener's Programmed message."""
    return next(
        (c.message for c in state.conditions if c.type == "Programmed" and c.message),
        "not programmed",
    )
