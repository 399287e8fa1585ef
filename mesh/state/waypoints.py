"""Waypoints: which Services and Pods send their traffic through which waypoint.

``istio.io/use-waypoint: <name>`` on a Service, Pod or Namespace names the waypoint (the object's
own label wins over its namespace's; ``none`` opts out), in the namespace given by
``istio.io/use-waypoint-namespace`` or else the labelled object's. The name refers to a Gateway
of class ``istio-waypoint`` or to a Service; the waypoint's instances are the Pods labelled
``gateway.networking.k8s.io/gateway-name: <name>`` (as Istio's waypoint Deployments are) or
selected by that Service. ``istio.io/waypoint-for`` on the Gateway or Service says what it
serves: ``service`` (the default), ``workload``, ``all`` or ``none``.

A label naming a waypoint that does not exist is reported and ignored, as istiod does (the
traffic goes direct); a waypoint without instances refuses the traffic at connect time instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mesh.errors import ConfigError

if TYPE_CHECKING:
    from mesh.state.registry import Workload

log = logging.getLogger(__name__)

USE_WAYPOINT = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR = "istio.io/waypoint-for"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
WAYPOINT_CLASS = "istio-waypoint"
_SERVES = ("service", "workload", "all", "none")


@dataclass(frozen=True, slots=True)
class Waypoint:
    """A waypoint and the Pods that serve it; ztunnel tunnels to one of them on :15008."""

    name: str
    namespace: str
    serves: str
    instances: tuple[Workload, ...]

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def serves_services(self) -> bool:
        """Whether traffic addressed to a Service VIP goes through it."""
        return self.serves in ("service", "all")

    @property
    def serves_workloads(self) -> bool:
        """Whether traffic addressed to a Pod IP goes through it."""
        return self.serves in ("workload", "all")

    def is_instance(self, workload: Workload | None) -> bool:
        """Whether ``workload`` is this waypoint itself (its own traffic must not loop back)."""
        return workload is not None and any(
            i.ip == workload.ip and i.identity == workload.identity for i in self.instances
        )


def _meta(obj: Mapping[str, Any]) -> tuple[str, str, Mapping[str, str]]:
    meta = obj.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return str(meta.get("name") or ""), str(meta.get("namespace") or "default"), labels


class WaypointIndex:
    """The waypoints a snapshot declares, looked up by the labels that name them."""

    def __init__(
        self,
        gateways: Sequence[Mapping[str, Any]],
        services: Sequence[Mapping[str, Any]],
        workloads: Sequence[Workload],
    ) -> None:
        self._workloads = workloads
        self._services = {
            (ns, name): (obj, labels) for obj in services for name, ns, labels in [_meta(obj)]
        }
        self._waypoints: dict[tuple[str, str], Waypoint] = {}
        self._gateway_keys: set[tuple[str, str]] = set()
        for gw in gateways:
            if (gw.get("spec") or {}).get("gatewayClassName") != WAYPOINT_CLASS:
                continue
            name, ns, labels = _meta(gw)
            instances = tuple(
                w
                for w in workloads
                if w.namespace == ns and w.labels.get(GATEWAY_NAME_LABEL) == name
            )
            self._waypoints[(ns, name)] = Waypoint(
                name, ns, _serves(labels, f"Gateway {ns}/{name}"), instances
            )
            self._gateway_keys.add((ns, name))

    def gateway_waypoints(self) -> tuple[Waypoint, ...]:
        """The waypoints declared as Gateways of class ``istio-waypoint``."""
        return tuple(self._waypoints[key] for key in sorted(self._gateway_keys))

    def _get(self, namespace: str, name: str) -> Waypoint | None:
        if (namespace, name) in self._waypoints:
            return self._waypoints[(namespace, name)]
        found = self._services.get((namespace, name))
        if found is None:
            return None
        obj, labels = found
        selector = (obj.get("spec") or {}).get("selector") or {}
        instances = tuple(
            w
            for w in self._workloads
            if selector
            and w.namespace == namespace
            and all(w.labels.get(str(k)) == str(v) for k, v in selector.items())
        )
        waypoint = Waypoint(
            name, namespace, _serves(labels, f"Service {namespace}/{name}"), instances
        )
        self._waypoints[(namespace, name)] = waypoint
        return waypoint

    def lookup(
        self,
        labels: Mapping[str, str],
        namespace_labels: Mapping[str, str],
        namespace: str,
        where: str,
    ) -> Waypoint | None:
        """The waypoint an object's (or its namespace's) ``istio.io/use-waypoint`` names."""
        source = labels if USE_WAYPOINT in labels else namespace_labels
        name = source.get(USE_WAYPOINT)
        if not name or name == "none":
            return None
        wp_namespace = source.get(USE_WAYPOINT_NAMESPACE) or namespace
        waypoint = self._get(wp_namespace, name)
        if waypoint is None:
            log.warning(
                "%s: %s names %s/%s, which is no waypoint Gateway or Service; traffic goes direct",
                where,
                USE_WAYPOINT,
                wp_namespace,
                name,
            )
        return waypoint


def _serves(labels: Mapping[str, str], where: str) -> str:
    serves = labels.get(WAYPOINT_FOR, "service")
    if serves not in _SERVES:
        raise ConfigError(
            f"{where}: metadata.labels[{WAYPOINT_FOR}] must be one of {', '.join(_SERVES)}, "
            f"got {serves!r}"
        )
    return serves
