"""The backend of a Pod addressed by IP through its waypoint: that Pod, at the port named."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.backends.base import Destination, Endpoint, Outcome, ProxyRequest
from mesh.state.registry import Workload


class WorkloadBackend:
    """Sends each request to the Pod at the port its tunnel's CONNECT named."""

    __slots__ = ("_endpoints", "destination", "workload")

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.destination = Destination(workload.name, workload.namespace, workload.ip, "Pod")
        # One Endpoint object per port: the upstream pool finds its connections by identity.
        self._endpoints: dict[int, Endpoint] = {}

    def pick(self, request: ProxyRequest, tried: tuple[Endpoint, ...]) -> Endpoint | None:
        """The Pod at the CONNECT's port (None for a request that came in no tunnel)."""
        peer = request.head.peer
        if peer is None:
            return None
        port = peer.destination.address[1]
        endpoint = self._endpoints.get(port)
        if endpoint is None:
            endpoint = self._endpoints[port] = Endpoint(self.workload.ip, port)
        return endpoint

    def done(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """Nothing to balance: there is one Pod."""

    def describe(self) -> Mapping[str, Any]:
        """A JSON-able view for /config_dump."""
        return {"kind": "Pod", "pod": self.workload.key, "address": self.workload.ip}
