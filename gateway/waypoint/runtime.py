"""Waypoint mode wired into a gateway process: its identity, HBONE in, HBONE out.

``ambient gateway --node N --ca HOST:PORT`` with a Gateway of class ``istio-waypoint`` in its
files runs as that waypoint: the instance is the waypoint's Pod on node N (``--waypoint ns/name``
picks among several), its SVID comes from the CA (rotated like the ztunnel's) with the node's
token, or in cluster mode with its own ServiceAccount token, which the CA accepts for the
waypoint's own identity only (not for its node's Pods, as a ztunnel's); HBONE is served on the
Pod's IP at ``--hbone-port``, and upstream connections to mesh workloads go through HBONE to
their node's ztunnel.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from gateway.proxy.listeners import ListenerManager
from gateway.waypoint.inbound import WaypointInbound
from gateway.waypoint.outbound import WaypointOutbound
from mesh.ca.client import CAClient
from mesh.errors import ConfigError
from mesh.identity.spiffe import NodeId, SpiffeId
from mesh.state.registry import Workload
from mesh.ztunnel.certs import CertManager, Issuer
from ports import bind_listener

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WaypointOptions:
    """The waypoint flags of ``ambient gateway``."""

    node: str
    ca_address: str = "127.0.0.1:15012"
    ca_root: Path = Path("ca/root-cert.pem")
    token_file: Path | None = None
    trust_domain: str = "cluster.local"
    hbone_port: int = 15008
    waypoint: str | None = None  # namespace/name of the waypoint Gateway
    cert_ttl: int = 86400
    rotate_fraction: float = 0.5
    # Cluster mode: ``token_file`` is the waypoint's projected ServiceAccount token, sent on
    # every call (no node certificate): it obtains the waypoint's own identity and nothing else.
    own_token: bool = False


class WaypointRuntime:
    """Runs the waypoint's HBONE listener and HBONE upstreams for one gateway process."""

    def __init__(
        self, options: WaypointOptions, listeners: ListenerManager, issuer: Issuer | None = None
    ) -> None:
        self.options = options
        self.listeners = listeners
        self._instance = self.instance()
        self._ca: CAClient | None = None
        if issuer is None:
            token = (
                options.token_file or options.ca_root.parent / "tokens" / f"{options.node}.token"
            )
            node = None if options.own_token else NodeId(options.trust_domain, options.node)
            self._ca = CAClient.from_files(options.ca_address, options.ca_root, token, node)
            issuer = self._ca
        self.certs = CertManager(issuer, options.cert_ttl, options.rotate_fraction)
        key = f"{self._instance.namespace}/{self._waypoint_name()}"
        self.inbound = WaypointInbound(
            listeners, self.certs, self.identity, key, options.hbone_port
        )
        self.outbound = WaypointOutbound(
            listeners.holder, self.certs, self.identity, self.address, options.hbone_port
        )

    def _waypoint_name(self) -> str:
        return self._instance.labels["gateway.networking.k8s.io/gateway-name"]

    def instance(self) -> Workload:
        """This node's instance of the waypoint; ConfigError naming what is missing."""
        mesh = self.listeners.holder.current.mesh
        if mesh is None:
            raise ConfigError(
                "waypoint mode (--node) needs a Gateway with gatewayClassName: istio-waypoint "
                "and valid mesh objects (Pods, Services) in the -f files"
            )
        if self.options.trust_domain != mesh.state.trust_domain:
            raise ConfigError(
                f"--trust-domain {self.options.trust_domain}: waypoint mode reads the mesh in "
                f"trust domain {mesh.state.trust_domain} only"
            )
        wanted = self.options.waypoint
        candidates = [
            w for w in mesh.waypoints if wanted is None or f"{w.namespace}/{w.name}" == wanted
        ]
        if not candidates:
            raise ConfigError(
                f"--waypoint {wanted}: no Gateway of class istio-waypoint by that name"
            )
        mine = [(w, i) for w in candidates for i in w.instances if i.node == self.options.node]
        if not mine:
            names = ", ".join(f"{w.namespace}/{w.name}" for w in candidates)
            raise ConfigError(
                f"no Pod of waypoint {names} runs on node {self.options.node} "
                "(label gateway.networking.k8s.io/gateway-name, spec.nodeName)"
            )
        if len({w.key for w, _ in mine}) > 1:
            names = ", ".join(sorted({w.key for w, _ in mine}))
            raise ConfigError(
                f"several waypoints run on node {self.options.node} ({names}): "
                "choose one with --waypoint ns/name"
            )
        return mine[0][1]

    def identity(self) -> SpiffeId:
        """The waypoint's SPIFFE identity (its Pod's service account)."""
        return self._instance.identity

    def address(self) -> str:
        """The waypoint Pod's IP."""
        return self._instance.ip

    async def start(self) -> None:
        """Obtain the SVID, listen for HBONE, send mesh upstreams through HBONE."""
        self.certs.ensure([self.identity()])
        listener = bind_listener(
            self.address(),
            self.options.hbone_port,
            4096,
            setting=f"--hbone-port {self.options.hbone_port}",
        )
        self.inbound.start(listener)
        self.listeners.pool.tunnels = self.outbound
        # What start allocated (modules, plugins, the first snapshot) lives for the whole run:
        # out of the collector's generations, full collections stay short. Without this their
        # pauses (tens of ms with the plugins loaded) decided the waypoint's p99 in
        # bench.waypoint, +1.2 to +2.3 ms over two ztunnels against +0.2 to -0.7 with it. The
        # ztunnel does the same.
        gc.collect()
        gc.freeze()
        log.info(
            "waypoint %s (%s) serving HBONE on %s:%d",
            self.inbound.waypoint,
            self.identity(),
            self.address(),
            self.options.hbone_port,
        )

    def has_certificate(self) -> bool:
        """Whether the waypoint holds a valid SVID (it is ready to serve HBONE)."""
        return self.certs.current(self.identity()) is not None

    def drain(self) -> None:
        """Stop taking new tunnels; those open carry on (see ``stop``)."""
        self.inbound.drain()

    async def stop(self) -> None:
        """Close what the drain left open, and the upstream tunnels."""
        await self.inbound.close()
        await self.outbound.close()
        await self.certs.close()
        if self._ca is not None:
            await self._ca.close()
