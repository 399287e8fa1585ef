"""Outbound: resolve the destination, check its identity, tunnel over pooled HBONE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TypeGuard

from mesh.errors import CAError, ConfigError, HboneError, IdentityError, MeshError
from mesh.hbone import protocol as p
from mesh.hbone.client import dial
from mesh.hbone.pool import HbonePool, PoolKey
from mesh.hbone.splice import SocketSide, splice_sockets, splice_tunnel
from mesh.hbone.transport import H2Transport
from mesh.state.registry import MeshState, Service, Workload
from mesh.state.waypoints import Waypoint
from mesh.ztunnel.capture import original_destination
from mesh.ztunnel.certs import CertManager
from mesh.ztunnel.listen import bind
from mesh.ztunnel.metrics import ConnectionLabels, TcpMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Forward:
    """Explicit mode: ``LOCALPORT=svc.ns:port``."""

    local_port: int
    service: str
    namespace: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Forward:
        """Parse the ``--forward`` flag value."""
        try:
            local, target = text.split("=", 1)
            host, port = target.rsplit(":", 1)
            service, namespace = host.split(".", 1)
            return cls(int(local), service, namespace.split(".", 1)[0], int(port))
        except ValueError as exc:
            raise ConfigError(f"--forward {text!r}: expected LOCALPORT=svc.ns:port") from exc


@dataclass(frozen=True, slots=True)
class Route:
    """Where an outbound connection goes.

    ``address`` is the final destination: the HBONE ``:authority``, or the passthrough target.
    ``destination`` is the workload the HBONE connection is made to and whose identity is
    expected: the destination Pod, or an instance of ``waypoint`` when there is one (then
    ``address`` is the original Service VIP:port, or Pod IP:port, as Istio sends it).
    """

    address: tuple[str, int]
    destination: Workload | None
    service: Service | None
    hbone: bool
    waypoint: Waypoint | None = None


class Outbound:
    """Carries local workloads' connections to their destinations."""

    def __init__(
        self,
        node: str,
        state: Callable[[], MeshState],
        certs: CertManager,
        metrics: TcpMetrics,
        hbone_port: int = 15008,
        pool_idle_timeout: float = 300.0,
        ping_interval: float = 10.0,
    ) -> None:
        self.node = node
        self.state = state
        self.certs = certs
        self.metrics = metrics
        self.hbone_port = hbone_port
        self.ping_interval = ping_interval
        self.pool = HbonePool(self._dial, idle_timeout=pool_idle_timeout)
        self._servers: list[asyncio.Server] = []
        self._setups: set[asyncio.Task[None]] = set()

    async def _dial(self, key: PoolKey) -> H2Transport:
        cert = await self.certs.get(key.source)
        return await dial(
            key.address[0], key.address[1], cert.client, key.destinations, self.ping_interval
        )

    def resolve(self, ip: str, port: int, source: Workload | None = None) -> Route:
        """Service VIP -> its waypoint or a ready endpoint; pod IP -> its waypoint or the pod.

        A waypoint is used only for a mesh source (HBONE needs its identity) that is not the
        waypoint itself, as ztunnel does to avoid loops.
        """
        state = self.state()
        service = state.service_by_vip(ip)
        if service is not None:
            if _via(service.waypoint, source):
                return _to_waypoint(service.waypoint, (ip, port), service)
            return self._to_endpoint(service, port)
        workload = state.workload_by_ip(ip)
        if workload is not None and _via(workload.waypoint, source):
            return _to_waypoint(workload.waypoint, (ip, port), None)
        hbone = workload is not None and workload.enrolled
        return Route((ip, port), workload, None, hbone)

    def _to_endpoint(self, service: Service, port: int) -> Route:
        endpoints = service.endpoints.get(port, ())
        if not endpoints:
            raise MeshError(f"service {service.namespace}/{service.name}:{port} has no endpoints")
        ep = random.choice(endpoints)
        workload = self.state().workload_by_ip(ep.ip)
        hbone = workload is not None and workload.enrolled
        return Route((ep.ip, ep.port), workload, service, hbone)

    def resolve_service(self, forward: Forward, source: Workload | None = None) -> Route:
        """Explicit mode: Service by name and port, through its waypoint or to an endpoint."""
        service = self.state().service(forward.service, forward.namespace)
        if service is None:
            raise MeshError(f"service {forward.namespace}/{forward.service} not found")
        if service.vip is not None and _via(service.waypoint, source):
            return _to_waypoint(service.waypoint, (service.vip, forward.port), service)
        return self._to_endpoint(service, forward.port)

    async def handle(self, side: SocketSide, source: Workload | None, route: Route) -> None:
        """Carry one accepted connection along ``route``; returns once it is spliced."""
        assert side.transport is not None
        peer = side.transport.get_extra_info("peername")
        client_addr = p.format_authority(str(peer[0]), int(peer[1]))
        labels = ConnectionLabels(
            "source",
            source,
            source.identity.uri if source else None,
            route.destination,
            route.service,
            route.hbone and source is not None,
        )
        self.metrics.open(labels)
        flags = "CONNECT"
        try:
            if route.hbone and source is not None and route.destination is not None:
                spliced = await self._tunnel(side, source, route, client_addr)
            else:
                spliced = await self._passthrough(side, route)
        except BaseException:
            side.close()
            self.metrics.close(labels, 0, 0, flags)
            raise
        if not spliced:
            side.refuse()
            self.metrics.close(labels, 0, 0, flags)
            return
        side.on_lost = lambda s: self.metrics.close(labels, s.received, s.sent, "-")

    async def _tunnel(
        self, side: SocketSide, source: Workload, route: Route, client_addr: str
    ) -> bool:
        assert route.destination is not None
        dest = route.destination
        key = PoolKey(source.identity, frozenset({dest.identity}), (dest.ip, self.hbone_port))
        headers = p.ConnectHeaders(
            client_addr=client_addr,
            service_host=route.service.hostname if route.service else None,
            baggage=_baggage(source),
        )
        authority = p.format_authority(*route.address)
        try:
            stream = await self.pool.open(key, authority, headers)
        except (HboneError, IdentityError, CAError, OSError, TimeoutError) as exc:
            log.info("outbound %s -> %s refused: %s", source.key, authority, exc)
            return False
        splice_tunnel(stream, side)
        return True

    async def _passthrough(self, side: SocketSide, route: Route) -> bool:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await asyncio.wait_for(
                loop.create_connection(SocketSide, *route.address), 10
            )
        except (OSError, TimeoutError):
            return False
        splice_sockets(side, upstream)
        return True

    def _setup(
        self, side: SocketSide, resolve: Callable[[SocketSide], Coroutine[None, None, None]]
    ) -> None:
        """Run a connection's setup in a task; the spliced connection needs none."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(resolve(side))
        self._setups.add(task)
        task.add_done_callback(self._setups.discard)

    async def listen_forward(
        self, forward: Forward, source: Callable[[], Workload | None], host: str = "127.0.0.1"
    ) -> int:
        """Explicit mode listener; returns the bound port."""

        async def accept(side: SocketSide) -> None:
            local = source()
            try:
                route = self.resolve_service(forward, local)
            except MeshError as exc:
                log.info("forward %d: %s", forward.local_port, exc)
                side.refuse()
                return
            await self.handle(side, local, route)

        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SocketSide(lambda side: self._setup(side, accept)),
            sock=bind(host, forward.local_port),
        )
        self._servers.append(server)
        port = int(server.sockets[0].getsockname()[1])
        log.info(
            "forwarding %s:%d to %s.%s:%d",
            host,
            port,
            forward.service,
            forward.namespace,
            forward.port,
        )
        return port

    async def listen_capture(self, host: str, port: int) -> int:
        """Transparent capture listener on ``host:port``; returns the bound port."""
        server = await self.serve_capture(bind(host, port))
        bound = int(server.sockets[0].getsockname()[1])
        log.info("outbound capture listening on %s:%d", host, bound)
        return bound

    async def serve_capture(self, sock: socket.socket) -> asyncio.Server:
        """Serve a bound transparent capture socket (nftables REDIRECT target, SO_ORIGINAL_DST),
        in whichever network namespace it was created."""

        async def accept(side: SocketSide) -> None:
            assert side.transport is not None
            sock: socket.socket = side.transport.get_extra_info("socket")
            original = original_destination(sock)
            local = sock.getsockname()[:2]
            if original is None or (original[0], original[1]) == (local[0], local[1]):
                log.info("capture: connection without an original destination; closing")
                side.close()
                return
            peer_ip = str(side.transport.get_extra_info("peername")[0])
            state = self.state()
            source = state.workload_by_ip(peer_ip)
            if source is not None and (source.node != self.node or not source.enrolled):
                source = None
            try:
                route = self.resolve(original[0], original[1], source)
            except MeshError as exc:
                log.info("capture %s -> %s: %s", peer_ip, original, exc)
                side.refuse()
                return
            await self.handle(side, source, route)

        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SocketSide(lambda side: self._setup(side, accept)), sock=sock
        )
        self._servers.append(server)
        return server

    def forget(self, server: asyncio.Server) -> None:
        """Drop a closed capture server (its Pod left)."""
        with contextlib.suppress(ValueError):
            self._servers.remove(server)

    async def close(self) -> None:
        """Stop listening and drain the pool."""
        for server in self._servers:
            server.close()
        await self.pool.close()


def _via(waypoint: Waypoint | None, source: Workload | None) -> TypeGuard[Waypoint]:
    """Whether traffic from ``source`` goes through ``waypoint``."""
    return waypoint is not None and source is not None and not waypoint.is_instance(source)


def _to_waypoint(waypoint: Waypoint, address: tuple[str, int], service: Service | None) -> Route:
    """HBONE to a waypoint instance's :15008 with ``:authority`` = the original destination."""
    if not waypoint.instances:
        raise MeshError(f"waypoint {waypoint.key} has no instances")
    instance = random.choice(waypoint.instances)
    return Route(address, instance, service, True, waypoint)


def _baggage(source: Workload) -> dict[str, str]:
    return {
        "k8s.cluster.name": "Kubernetes",
        "k8s.namespace.name": source.namespace,
        "k8s.pod.name": source.name,
        "service.name": source.labels.get("app", source.name),
        "service.version": source.labels.get("version", "latest"),
    }
