"""Gateway listeners: which are served, which routes they admit, and their status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.compile.certificate_refs import CertificateResolver
from gateway.compile.grants import GrantIndex
from gateway.compile.refs import Problem
from gateway.compile.status import resolved_refs
from gateway.config.models import GATEWAY_GROUP, Gateway, LabelSelector, Listener
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition, ListenerInfo
from gateway.tls.certificates import Certificate

HTTP_ROUTE = (GATEWAY_GROUP, "HTTPRoute")
GRPC_ROUTE = (GATEWAY_GROUP, "GRPCRoute")
_SUPPORTED_KINDS = frozenset({HTTP_ROUTE, GRPC_ROUTE})
_ROUTE_PROTOCOLS = frozenset({"HTTP", "HTTPS"})
WAYPOINT_CLASS = "istio-waypoint"


@dataclass(slots=True)
class ListenerState:
    """One Gateway listener during compile."""

    gateway: Gateway
    listener: Listener
    info: ListenerInfo
    served: bool  # bound by this gateway now: HTTP, or HTTPS with valid certificates
    kinds: frozenset[tuple[str, str]]
    conditions: list[Condition]
    certificates: tuple[Certificate, ...] = ()
    attached: int = 0
    route_keys: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, ns, name)

    @property
    def label(self) -> str:
        """``namespace/gateway/listener``."""
        meta = self.gateway.metadata
        return f"{meta.namespace}/{meta.name}/{self.listener.name}"

    def set_condition(self, condition: Condition) -> None:
        """Replace the condition of the same type (or add it)."""
        self.conditions = [c for c in self.conditions if c.type != condition.type]
        self.conditions.append(condition)


def listener_states(
    resources: ResourceSet, grants: GrantIndex
) -> dict[tuple[str, str], list[ListenerState]]:
    """Every Gateway's listeners with their conditions, keyed by (namespace, gateway name)."""
    certificates = CertificateResolver(resources, grants)
    out: dict[tuple[str, str], list[ListenerState]] = {}
    for gateway in resources.gateways:
        meta = gateway.metadata
        states = out.setdefault((meta.namespace, meta.name), [])
        for listener in gateway.spec.listeners:
            states.append(_state(gateway, listener, certificates))
    _mark_protocol_conflicts([s for states in out.values() for s in states])
    return out


def _state(gateway: Gateway, listener: Listener, resolver: CertificateResolver) -> ListenerState:
    """Conditions, admitted kinds and certificates for one listener."""
    meta = gateway.metadata
    info = ListenerInfo(
        meta.namespace,
        meta.name,
        listener.name,
        listener.port,
        listener.protocol,
        listener.hostname,
    )
    protocol = listener.protocol
    problems: list[Problem] = []
    certificates: tuple[Certificate, ...] = ()
    if protocol == "HBONE" and gateway.spec.gateway_class_name == WAYPOINT_CLASS:
        # A waypoint's mesh port: served by waypoint mode (gateway.waypoint), not as a listener
        # routes attach to (they attach to Services instead).
        accepted = Condition("Accepted", "True", "Accepted")
        programmed = Condition(
            "Programmed", "True", "Programmed", "HBONE, served by 'ambient gateway --node'"
        )
        conditions = [accepted, programmed, resolved_refs([])]
        return ListenerState(gateway, listener, info, False, frozenset(), conditions)
    if protocol not in _ROUTE_PROTOCOLS:
        accepted = Condition(
            "Accepted", "False", "UnsupportedProtocol", f"protocol {protocol!r} is not supported"
        )
    elif protocol == "HTTPS" and listener.tls is not None and listener.tls.mode != "Terminate":
        accepted = Condition(
            "Accepted",
            "False",
            "UnsupportedValue",
            f"tls.mode {listener.tls.mode!r} is not supported for HTTPS (only Terminate)",
        )
    else:
        accepted = Condition("Accepted", "True", "Accepted")
        if protocol == "HTTPS":
            certificates, problem = resolver.listener(gateway, listener)
            if problem is not None:
                problems.append(problem)

    requested = listener.allowed_routes.kinds
    if not requested:
        kinds = _SUPPORTED_KINDS if protocol in _ROUTE_PROTOCOLS else frozenset()
    else:
        wanted = {(k.group, k.kind) for k in requested}
        kinds = frozenset(wanted & _SUPPORTED_KINDS)
        bad = sorted(f"{g}/{k}" for g, k in wanted - _SUPPORTED_KINDS)
        if bad:
            problems.append(("InvalidRouteKinds", f"unsupported route kinds: {', '.join(bad)}"))

    cert_problems = [m for r, m in problems if r != "InvalidRouteKinds"]
    served = accepted.status == "True" and not cert_problems
    if served:
        programmed = Condition("Programmed", "True", "Programmed")
    elif accepted.status != "True":
        programmed = Condition("Programmed", "False", "Invalid", accepted.message)
    else:
        programmed = Condition("Programmed", "False", "Invalid", "; ".join(cert_problems))
    conditions = [accepted, programmed, resolved_refs(problems)]
    return ListenerState(gateway, listener, info, served, kinds, conditions, certificates)


def _mark_protocol_conflicts(states: list[ListenerState]) -> None:
    """Listeners sharing a port must share a protocol: the first one written sets it."""
    first: dict[int, ListenerState] = {}
    for state in states:
        if state.listener.protocol not in _ROUTE_PROTOCOLS:
            continue
        owner = first.setdefault(state.listener.port, state)
        if owner.listener.protocol == state.listener.protocol:
            continue
        message = (
            f"port {state.listener.port} already serves {owner.listener.protocol} "
            f"(listener {owner.label}); {state.listener.protocol} cannot share it"
        )
        state.served = False
        state.set_condition(Condition("Conflicted", "True", "ProtocolConflict", message))
        state.set_condition(Condition("Programmed", "False", "Invalid", message))


def admits_namespace(state: ListenerState, route_namespace: str, resources: ResourceSet) -> bool:
    """allowedRoutes.namespaces: Same (default), All, or Selector on the Namespace labels."""
    namespaces = state.listener.allowed_routes.namespaces
    policy = namespaces.from_
    if policy == "All":
        return True
    if policy == "Selector":
        selector = namespaces.selector
        return selector is not None and selects(
            selector, resources.namespace_labels(route_namespace)
        )
    if policy == "Same":
        return route_namespace == state.gateway.metadata.namespace
    return False


def selects(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes label selector matches a label set."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    for expression in selector.match_expressions:
        present = expression.key in labels
        actual = labels.get(expression.key)
        operator = expression.operator
        if operator == "In" and actual not in expression.values:
            return False
        if operator == "NotIn" and present and actual in expression.values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True
