"""One ztunnel process: state, certificates, inbound, outbound and admin wired together."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.ca.client import CAClient
from mesh.errors import ConfigError
from mesh.identity.spiffe import NodeId
from mesh.state.cluster import ClusterMeshWatcher
from mesh.state.registry import MeshState, Workload
from mesh.state.watch import MeshWatcher
from mesh.ztunnel.admin import AdminServer, Response
from mesh.ztunnel.certs import CertManager, Issuer
from mesh.ztunnel.inbound import Inbound
from mesh.ztunnel.inpod import InPodCapture
from mesh.ztunnel.metrics import TcpMetrics
from mesh.ztunnel.outbound import Forward, Outbound

log = logging.getLogger(__name__)


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"address {address!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True, slots=True)
class ZtunnelOptions:
    """Settings of ``ambient ztunnel``; every port is configurable (0 = any free port)."""

    node: str
    mesh_file: Path | None  # None in cluster mode
    ca_address: str = "127.0.0.1:15012"
    ca_root: Path = Path("ca/root-cert.pem")
    token_file: Path | None = None
    trust_domain: str = "cluster.local"
    hbone_port: int = 15008
    inbound_bind: str | None = None
    capture: str | None = None
    # Cluster mode: redirect and listen inside each enrolled local Pod (mesh.ztunnel.inpod).
    in_pod_capture: bool = False
    in_pod_capture_port: int = 15001
    forwards: tuple[Forward, ...] = ()
    forward_as: str | None = None
    forward_host: str = "127.0.0.1"
    admin: str = "127.0.0.1:15000"
    metrics: str = "127.0.0.1:15020"
    ready: str = "127.0.0.1:15021"
    cert_ttl: int = 86400
    rotate_fraction: float = 0.5
    pool_idle_timeout: float = 300.0
    ping_interval: float = 10.0
    reload_interval: float = 1.0
    # Cluster mode: this node's Pods, Services, ... from the Kubernetes API (mesh.state.cluster).
    cluster: bool = False
    kubeconfig: str | None = None  # None in cluster mode: the pod's in-cluster config


@dataclass(slots=True)
class BoundPorts:
    """Ports actually bound (useful when 0 was asked for)."""

    admin: int = 0
    metrics: int = 0
    ready: int = 0
    capture: int = 0
    forwards: dict[int, int] = field(default_factory=dict)


class Ztunnel:
    """The node proxy."""

    def __init__(self, options: ZtunnelOptions, issuer: Issuer | None = None) -> None:
        self.options = options
        self.watcher: MeshWatcher | ClusterMeshWatcher
        if options.cluster:
            self.watcher = ClusterMeshWatcher(options.kubeconfig, options.trust_domain)
        elif options.mesh_file is not None:
            self.watcher = MeshWatcher(
                options.mesh_file, options.trust_domain, options.reload_interval
            )
        else:
            raise ConfigError("ztunnel: no mesh file and not in cluster mode")
        token = options.token_file or options.ca_root.parent / "tokens" / f"{options.node}.token"
        self._ca: CAClient | None = None
        if issuer is None:
            node = NodeId(options.trust_domain, options.node)
            self._ca = CAClient.from_files(options.ca_address, options.ca_root, token, node)
            issuer = self._ca
        self.certs = CertManager(issuer, options.cert_ttl, options.rotate_fraction)
        self.metrics = TcpMetrics()
        self.inbound = Inbound(
            options.node,
            self.state,
            self.certs,
            self.metrics,
            options.hbone_port,
            options.inbound_bind,
            ping_interval=options.ping_interval,
            listen_on_pod_ips=not options.in_pod_capture,
        )
        self.outbound = Outbound(
            options.node,
            self.state,
            self.certs,
            self.metrics,
            options.hbone_port,
            options.pool_idle_timeout,
            options.ping_interval,
        )
        self.in_pod: InPodCapture | None = None
        if options.in_pod_capture:
            self.in_pod = InPodCapture(
                options.node, self.state, self.outbound, self.inbound, options.in_pod_capture_port
            )
        self.ports = BoundPorts()
        self._admin: list[AdminServer] = []
        self._reconcile_task: asyncio.Task[None] | None = None

    def state(self) -> MeshState:
        """The current mesh snapshot."""
        return self.watcher.state

    def local_workloads(self) -> list[Workload]:
        """Enrolled Pods on this node."""
        return self.state().node_workloads(self.options.node)

    def forward_source(self) -> Workload | None:
        """The local workload explicit-mode traffic is sent as."""
        local = sorted(self.local_workloads(), key=lambda w: w.key)
        if self.options.forward_as:
            return next((w for w in local if w.key == self.options.forward_as), None)
        return local[0] if local else None

    def _on_state(self, state: MeshState) -> None:
        self.certs.ensure(w.identity for w in self.local_workloads())
        self.inbound.recheck()
        loop = asyncio.get_running_loop()
        self._reconcile_task = loop.create_task(self.inbound.reconcile())
        if self.in_pod is not None:
            self.in_pod.changed()

    async def start(self) -> None:
        """Fetch certificates, open every listener and begin watching mesh.yaml."""
        opts = self.options
        if isinstance(self.watcher, ClusterMeshWatcher):
            await self.watcher.sync()
        self.certs.ensure(w.identity for w in self.local_workloads())
        await self.inbound.reconcile(fail_fast=True)
        for fwd in opts.forwards:
            self.ports.forwards[fwd.local_port] = await self.outbound.listen_forward(
                fwd, self.forward_source, opts.forward_host
            )
        if self.in_pod is not None:
            await self.in_pod.reconcile()
        if opts.capture:
            self.ports.capture = await self.outbound.listen_capture(*_split(opts.capture))
        admin = AdminServer({"/config_dump": self._config_dump})
        metrics = AdminServer({"/metrics": self._metrics, "/stats/prometheus": self._metrics})
        ready = AdminServer({"/healthz/ready": self._ready})
        self.ports.admin = await admin.start(*_split(opts.admin))
        self.ports.metrics = await metrics.start(*_split(opts.metrics))
        self.ports.ready = await ready.start(*_split(opts.ready))
        self._admin = [admin, metrics, ready]
        self.watcher.subscribe(self._on_state)
        self.watcher.start()
        log.info(
            "ztunnel for node %s started (%d local workloads)",
            opts.node,
            len(self.local_workloads()),
        )

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until every local workload has a certificate."""
        for w in self.local_workloads():
            await self.certs.get(w.identity, timeout)

    def _pending(self) -> list[str]:
        return [w.key for w in self.local_workloads() if self.certs.current(w.identity) is None]

    def _ready(self, headers: Mapping[str, str]) -> Response:
        pending = self._pending()
        if pending:
            return 500, f"not ready, pending: {', '.join(pending)}\n".encode(), "text/plain"
        return 200, b"ready\n", "text/plain"

    def _metrics(self, headers: Mapping[str, str]) -> Response:
        body, ctype = self.metrics.render(headers.get("accept", ""))
        return 200, body, ctype

    def config_dump(self) -> dict[str, Any]:
        """Workloads, services, policies and certificates as JSON-ready data."""
        state = self.state()
        return {
            "node": self.options.node,
            "trustDomain": state.trust_domain,
            "workloads": [
                {
                    "name": w.name,
                    "namespace": w.namespace,
                    "serviceAccount": w.service_account,
                    "node": w.node,
                    "workloadIps": [w.ip],
                    "protocol": "HBONE" if w.enrolled else "TCP",
                    "identity": w.identity.uri,
                    "waypoint": w.waypoint.key if w.waypoint else None,
                }
                for w in state.workloads
            ],
            "services": [
                {
                    "name": s.name,
                    "namespace": s.namespace,
                    "hostname": s.hostname,
                    "vips": [s.vip] if s.vip else [],
                    "ports": {str(sp.port): sp.target_port for sp in s.ports},
                    "endpoints": {
                        str(port): [f"{e.ip}:{e.port}" for e in eps]
                        for port, eps in s.endpoints.items()
                    },
                    "waypoint": s.waypoint.key if s.waypoint else None,
                }
                for s in state.services
            ],
            "policies": [
                {
                    "name": pol.name,
                    "namespace": pol.namespace,
                    "action": pol.action.value,
                    "scope": pol.scope.value,
                    "rules": len(pol.rules),
                    "dryRun": pol.dry_run,
                }
                for pol in state.policies
            ],
            "certificates": self.certs.dump(),
            "pool": {"connections": len(self.outbound.pool.connections())},
        }

    def _config_dump(self, headers: Mapping[str, str]) -> Response:
        return 200, json.dumps(self.config_dump(), indent=2).encode(), "application/json"

    async def stop(self) -> None:
        """Stop everything."""
        await self.watcher.stop()
        for server in self._admin:
            server.close()
        if self.in_pod is not None:
            await self.in_pod.close()
        await self.outbound.close()
        await self.inbound.close()
        await self.certs.close()
        if self._ca:
            await self._ca.close()
