"""What ``ambient gateway --kubeconfig`` (or ``--in-cluster``) is told."""

from __future__ import annotations

from dataclasses import dataclass

# The GatewayClass controllerName whose Gateways this controller serves.
CONTROLLER_NAME = "ambient.dev/gateway-controller"


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """Where the API is, the leader Lease, and the timing (seconds)."""

    kubeconfig: str | None  # None: the in-cluster config of the pod we run in
    lease_namespace: str = "ambient-system"
    lease_name: str = "ambient-gateway-controller"
    identity: str = ""  # "" : hostname and pid
    lease_duration: float = 15.0
    lease_renew: float = 2.0
    coalesce: float = 0.05  # changes within this window make one recompile
    watch_timeout: int = 300
    backoff_initial: float = 0.2
    backoff_max: float = 30.0
