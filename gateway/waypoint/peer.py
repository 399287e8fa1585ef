"""Who a mesh request comes from and where its tunnel was going (on each of its requests)."""

from __future__ import annotations

from dataclasses import dataclass

from mesh.identity.spiffe import SpiffeId
from mesh.state.registry import MeshState, Service, Workload


@dataclass(frozen=True, slots=True)
class MeshDestination:
    """The original destination a CONNECT named: a Service port, or a Pod (any port), that this
    waypoint serves.

    ``key`` is the routing key its requests are matched under (the snapshot's router and
    pre-route stages for it), standing in for a listener port.
    """

    key: int
    address: tuple[str, int]
    service: Service | None
    waypoint: str  # namespace/name of the waypoint that serves it
    workload: Workload | None = None  # the Pod, when the CONNECT named a Pod IP


@dataclass(frozen=True, slots=True)
class MeshPeer:
    """The TLS peer of an HBONE connection (the source workload's identity) and its tunnel."""

    identity: SpiffeId
    ip: str
    source: Workload | None
    destination: MeshDestination
    state: MeshState

    @property
    def principal(self) -> str:
        """The identity as AuthorizationPolicy principals spell it (no ``spiffe://``)."""
        return self.identity.principal
