"""Reusing the previous compile's per-route work while only routes changed (cluster mode).

A route's compiled rules and dump view depend on the route itself and on the objects its
backendRefs and filters resolve against (Services, EndpointSlices, ReferenceGrants,
BackendTLSPolicies, ConfigMaps, Secrets, plugin kinds), never on another route. So while every
object other than the HTTPRoutes and GRPCRoutes is the very same validated object as in the
previous compile (``gateway.controller.validated`` keeps one model per object version), an
unchanged route's rules are taken as they were, and new or changed routes resolve against the
same backends (one balancer per backendRef, as in one compile). Listener states depend on no
route, so they are kept too, and with them where an unchanged route attaches and its status
parents, unless HTTPRoute/GRPCRoute conflicts were settled (other routes change those). Any other
object changing, or a waypoint's mesh, makes the compile a full one. What spans routes (conflicts,
precedence in the port routers, attachedRoutes, statuses) is always computed over every route.

Statuses equal to the previous compile's are replaced by those very objects, with their dump
views, after any compile: the leader's status pass then compares them by identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.compile.dump import status_view
from gateway.config.models import GATEWAY_GROUP
from gateway.config.resources import Loaded, ResourceSet
from gateway.snapshot import ParentStatus, RouteStatus

if TYPE_CHECKING:
    from gateway.compile.attach import Attachment, Listeners, Route
    from gateway.compile.reports import BackendReference
    from gateway.compile.rules import RuleResult

ROUTE_KINDS = frozenset({(GATEWAY_GROUP, "HTTPRoute"), (GATEWAY_GROUP, "GRPCRoute")})
Inputs = dict[tuple[str, str], dict[tuple[str, str], Loaded]]
StatusKey = tuple[str, str, str]  # (kind, namespace, name)
Statuses = dict[StatusKey, tuple[RouteStatus, dict[str, Any]]]


@dataclass(slots=True)
class RouteWork:
    """One route's compiled rules and dump view, for the route model they were made from, and
    what later steps derived from them while the other objects stay the same."""

    route: Route
    results: list[RuleResult]
    view: dict[str, Any]
    # Where it attaches (no Service parentRef; unsettled by conflicts), and its status parents.
    attachments: list[Attachment] | None = None
    parents: tuple[ParentStatus, ...] | None = None
    # The served Gateways its parentRefs name, and the Services it references.
    ancestry: tuple[set[str], set[tuple[str, str]]] | None = None
    # Its backendRefs for the report producers, for the status parents they were made from.
    references: tuple[tuple[ParentStatus, ...], list[BackendReference]] | None = None


@dataclass(slots=True)
class MemoPass:
    """One compile's use of the memo; :meth:`CompileMemo.commit` keeps it once it succeeded."""

    inputs: Inputs
    backends: dict[Any, Any]
    previous: dict[int, RouteWork]
    previous_statuses: Statuses
    # The previous compile's listener states (they depend on no route), or None: make new ones.
    states: Listeners | None = None
    routes: dict[int, RouteWork] = field(default_factory=dict)
    statuses: Statuses = field(default_factory=dict)
    reused: int = 0

    def get(self, route: Route) -> RouteWork | None:
        """The previous compile's work for this very route model, or None."""
        work = self.previous.get(id(route))
        if work is None or work.route is not route:
            return None
        self.routes[id(route)] = work
        self.reused += 1
        return work

    def put(self, work: RouteWork) -> None:
        """Remember a route compiled in this pass."""
        self.routes[id(work.route)] = work

    def status(self, status: RouteStatus) -> tuple[RouteStatus, dict[str, Any]]:
        """The previous compile's equal status object and view, else ``status`` and its view."""
        key = (status.kind, status.namespace, status.name)
        kept = self.statuses.get(key)
        if kept is not None and kept[0] is status:
            return kept  # interned already in this pass
        kept = self.previous_statuses.get(key)
        if kept is None or kept[0] != status:
            kept = (status, status_view(status))
        self.statuses[key] = kept
        return kept


class CompileMemo:
    """What the next compile may reuse: the last successful compile's routes and backends."""

    def __init__(self) -> None:
        self._inputs: Inputs | None = None
        self._backends: dict[Any, Any] = {}
        self._routes: dict[int, RouteWork] = {}
        self._statuses: Statuses = {}
        self._states: Listeners | None = None
        self.reused = 0  # routes taken from the previous compile, in the last compile

    def begin(self, resources: ResourceSet, full: bool = False) -> MemoPass:
        """A pass over ``resources``: reusing nothing when any non-route object differs."""
        inputs = {key: objs for key, objs in resources.raw.items() if key not in ROUTE_KINDS}
        if full or self._inputs is None or not _same(self._inputs, inputs):
            return MemoPass(inputs, {}, {}, self._statuses)
        return MemoPass(inputs, dict(self._backends), self._routes, self._statuses, self._states)

    def commit(self, memo_pass: MemoPass) -> None:
        """Keep a finished pass for the next compile (a failed compile leaves the memo as it
        was)."""
        self._inputs = memo_pass.inputs
        self._backends = memo_pass.backends
        self._routes = memo_pass.routes
        self._statuses = memo_pass.statuses
        self._states = memo_pass.states
        self.reused = memo_pass.reused


def _same(old: Inputs, new: Inputs) -> bool:
    """Whether both hold the same objects (by identity: one model per object version)."""
    if old.keys() != new.keys():
        return False
    for key, objects in new.items():
        before = old[key]
        if len(before) != len(objects):
            return False
        for ident, loaded in objects.items():
            if before.get(ident) is not loaded:
                return False
    return True
