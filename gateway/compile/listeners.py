"""Gateway listeners: which are served, which routes they admit, and their status."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.config.models import GATEWAY_GROUP, Gateway, LabelSelector, Listener
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition, ListenerInfo

ROUTE_KIND = (GATEWAY_GROUP, "HTTPRoute")
_SUPPORTED_KINDS = frozenset({ROUTE_KIND})
_ROUTE_PROTOCOLS = frozenset({"HTTP", "HTTPS"})


@dataclass(slots=True)
class ListenerState:
    """One Gateway listener during compile."""

    gateway: Gateway
    listener: Listener
    info: ListenerInfo
    served: bool  # bound by this gateway now (plain HTTP)
    kinds: frozenset[tuple[str, str]]
    conditions: list[Condition]
    attached: int = 0
    route_keys: set[tuple[str, str]] = field(default_factory=set)

    @property
    def label(self) -> str:
        """``namespace/gateway/listener``."""
        meta = self.gateway.metadata
        return f"{meta.namespace}/{meta.name}/{self.listener.name}"


def listener_states(resources: ResourceSet) -> dict[tuple[str, str], list[ListenerState]]:
    """Every Gateway's listeners with their conditions, keyed by (namespace, gateway name)."""
    out: dict[tuple[str, str], list[ListenerState]] = {}
    for gateway in resources.gateways:
        meta = gateway.metadata
        states = out.setdefault((meta.namespace, meta.name), [])
        for listener in gateway.spec.listeners:
            states.append(_state(gateway, listener))
    return out


def _state(gateway: Gateway, listener: Listener) -> ListenerState:
    """Conditions and admitted kinds for one listener."""
    meta = gateway.metadata
    info = ListenerInfo(
        meta.namespace,
        meta.name,
        listener.name,
        listener.port,
        listener.protocol,
        listener.hostname,
    )
    conditions: list[Condition] = []
    protocol = listener.protocol
    served = protocol == "HTTP"
    if protocol in _ROUTE_PROTOCOLS:
        conditions.append(Condition("Accepted", "True", "Accepted"))
    else:
        conditions.append(
            Condition(
                "Accepted",
                "False",
                "UnsupportedProtocol",
                f"protocol {protocol!r} is not supported",
            )
        )
    if served:
        conditions.append(Condition("Programmed", "True", "Programmed"))
    elif protocol == "HTTPS":
        conditions.append(
            Condition("Programmed", "False", "Pending", "HTTPS listeners are not served yet")
        )
    else:
        conditions.append(
            Condition("Programmed", "False", "Invalid", f"protocol {protocol!r} is not served")
        )

    requested = listener.allowed_routes.kinds
    if not requested:
        kinds = _SUPPORTED_KINDS if protocol in _ROUTE_PROTOCOLS else frozenset()
        conditions.append(Condition("ResolvedRefs", "True", "ResolvedRefs"))
    else:
        wanted = {(k.group, k.kind) for k in requested}
        kinds = frozenset(wanted & _SUPPORTED_KINDS)
        bad = sorted(f"{g}/{k}" for g, k in wanted - _SUPPORTED_KINDS)
        if bad:
            conditions.append(
                Condition(
                    "ResolvedRefs",
                    "False",
                    "InvalidRouteKinds",
                    f"unsupported route kinds: {', '.join(bad)}",
                )
            )
        else:
            conditions.append(Condition("ResolvedRefs", "True", "ResolvedRefs"))
    return ListenerState(gateway, listener, info, served, kinds, conditions)


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
