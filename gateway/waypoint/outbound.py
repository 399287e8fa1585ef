"""HBONE out: upstream connections to mesh endpoints ride a tunnel to the destination's ztunnel.

The upstream pool asks, per endpoint, how to reach it (``UpstreamPool.tunnels``). An endpoint
that is an enrolled workload gets a CONNECT to ``<pod IP>:<hbone port>`` with ``:authority`` =
the pod IP and port, over the mesh's pooled, multiplexed HBONE connections, sent as the
waypoint's own identity and checking the destination workload's. Other endpoints are dialled
directly (plain TCP), as ztunnel passes non-mesh traffic through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.backends.base import Endpoint
from gateway.proxy.dial import TunnelOpen
from gateway.snapshot import SnapshotHolder
from mesh.errors import CAError, HboneError, IdentityError
from mesh.hbone import protocol as p
from mesh.hbone.client import dial
from mesh.hbone.pool import HbonePool, PoolKey
from mesh.hbone.stream_transport import TunnelTransport
from mesh.hbone.transport import H2Transport
from mesh.identity.spiffe import SpiffeId
from mesh.state.registry import Workload
from mesh.ztunnel.certs import CertManager


class WaypointOutbound:
    """Gives the upstream pool an HBONE dialer for endpoints inside the mesh."""

    def __init__(
        self,
        holder: SnapshotHolder,
        certs: CertManager,
        identity: Callable[[], SpiffeId],
        address: Callable[[], str],
        hbone_port: int,
        pool_idle_timeout: float = 300.0,
    ) -> None:
        self.holder = holder
        self.certs = certs
        self.identity = identity
        self.address = address
        self.hbone_port = hbone_port
        self.pool = HbonePool(self._dial, idle_timeout=pool_idle_timeout)

    async def _dial(self, key: PoolKey) -> H2Transport:
        cert = await self.certs.get(key.source)
        return await dial(key.address[0], key.address[1], cert.client, key.destinations)

    def __call__(self, endpoint: Endpoint) -> TunnelOpen | None:
        """A tunnel opener for an enrolled workload's endpoint; None to dial it directly."""
        mesh = self.holder.current.mesh
        workload = mesh.state.workload_by_ip(endpoint.address) if mesh is not None else None
        if workload is None or not workload.enrolled or endpoint.tls is not None:
            return None

        async def open_tunnel(
            factory: Callable[[], asyncio.Protocol],
        ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
            return await self._open(workload, endpoint, factory)

        return open_tunnel

    async def _open(
        self, workload: Workload, endpoint: Endpoint, factory: Callable[[], asyncio.Protocol]
    ) -> tuple[asyncio.BaseTransport, asyncio.Protocol]:
        source = self.identity()
        key = PoolKey(source, frozenset({workload.identity}), (workload.ip, self.hbone_port))
        headers = p.ConnectHeaders(client_addr=p.format_authority(self.address(), 0))
        authority = p.format_authority(endpoint.address, endpoint.port)
        try:
            stream = await self.pool.open(key, authority, headers)
        except (HboneError, IdentityError, CAError) as exc:
            raise ConnectionError(f"HBONE to {workload.key} ({authority}): {exc}") from exc
        protocol = factory()
        transport = TunnelTransport(
            stream, protocol, {"peername": (endpoint.address, endpoint.port)}
        )
        transport.start()
        return transport, protocol

    async def close(self) -> None:
        """Drain the pooled HBONE connections."""
        await self.pool.close()
