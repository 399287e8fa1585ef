"""HBONE in: accept tunnels as the waypoint's SVID and run their bytes through the request path.

Each CONNECT names the original destination (a Service VIP:port). A destination this waypoint
serves is answered 200 and its stream becomes a client connection of the gateway (HTTP/1.1, or
HTTP/2 when it starts with the preface), routed with the destination's router and carrying the
TLS peer's identity on every request; any other destination is answered 400, as ztunnel does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Mapping

from gateway.proxy.downstream import DownstreamConnection, ListenerContext
from gateway.proxy.listeners import ListenerManager
from gateway.waypoint.peer import MeshDestination, MeshPeer
from mesh.errors import CAError, IdentityError
from mesh.hbone import protocol as p
from mesh.hbone.stream_transport import TunnelTransport
from mesh.hbone.tls import peer_identity
from mesh.hbone.transport import H2Transport, TunnelStream
from mesh.identity.spiffe import SpiffeId
from mesh.tls_server import TlsServerLayer, accept_forever
from mesh.ztunnel.certs import CertManager

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
_PEER_CACHE_LIMIT = 4096


class TunnelContext(ListenerContext):
    """The listener context of one destination's tunnels: connections count under the HBONE
    port, requests route under the destination's key and carry the peer."""

    __slots__ = ("count_port",)
    count_port: int

    def connection_opened(self) -> None:
        """Count a tunnel accepted on the HBONE port."""
        metrics = getattr(self.telemetry, "metrics", None)
        if metrics is not None:
            metrics.connection_opened(self.count_port)

    def connection_closed(self) -> None:
        """Count a tunnel of the HBONE port that closed."""
        metrics = getattr(self.telemetry, "metrics", None)
        if metrics is not None:
            metrics.connection_closed(self.count_port)


class WaypointInbound:
    """The waypoint's HBONE listener on its pod IP."""

    def __init__(
        self,
        listeners: ListenerManager,
        certs: CertManager,
        identity: Callable[[], SpiffeId],
        waypoint: str,
        port: int,
    ) -> None:
        self.listeners = listeners
        self.certs = certs
        self.identity = identity
        self.waypoint = waypoint  # namespace/name
        self.port = port
        self.transports: set[H2Transport] = set()
        self._accepting: set[asyncio.Task[None]] = set()
        self._listener: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        # (peer identity, client ip, baggage pod, destination address, snapshot version) -> context:
        # tunnels of one
        # client to one destination share it (and its MeshPeer) instead of building one each.
        self._contexts: dict[
            tuple[SpiffeId, str, tuple[str, str] | None, tuple[str, int], int], TunnelContext
        ] = {}

    def start(self, listener: socket.socket) -> None:
        """Accept HBONE on an already bound, listening socket."""
        self._listener = listener
        self._task = asyncio.get_running_loop().create_task(
            accept_forever(listener, self._accept, self._accepting, "waypoint HBONE")
        )

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        transport = H2Transport(client_side=False, ping_interval=10.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            me = self.identity()
            cert = await self.certs.get(me)
            tls = TlsServerLayer(
                cert.server,
                transport,
                HANDSHAKE_TIMEOUT,
                on_failure=lambda exc: self._refused("hbone_tls"),
            )
            await loop.connect_accepted_socket(lambda: tls, sock)
            await tls.handshake
            ssl_object = transport.get_extra_info("ssl_object")
            assert ssl_object is None or isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket)
            peer = peer_identity(ssl_object)
            if peer.trust_domain != me.trust_domain:
                raise IdentityError(
                    f"client trust domain {peer.trust_domain} is not {me.trust_domain}"
                )
        except (CAError, IdentityError, ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("waypoint HBONE connection refused: %r", exc)
            transport.close()
            sock.close()
            return
        address = transport.get_extra_info("peername")
        peer_ip = str(address[0]) if isinstance(address, tuple) else ""

        async def on_request(stream: TunnelStream, request: p.TunnelRequest) -> None:
            self._tunnel(stream, request, peer, peer_ip)

        self.transports.add(transport)
        transport.on_close = self.transports.discard
        transport.set_handler(on_request)
        await transport.start()
        await transport.wait_closed()

    def _refused(self, reason: str) -> None:
        metrics = getattr(self.listeners.telemetry, "metrics", None)
        if metrics is not None:
            metrics.refused(reason)

    def _tunnel(
        self, stream: TunnelStream, request: p.TunnelRequest, peer: SpiffeId, peer_ip: str
    ) -> None:
        conn = stream.transport.conn
        snapshot = self.listeners.holder.current
        mesh = snapshot.mesh
        destination = mesh.destination(request.host, request.port) if mesh else None
        if mesh is None or destination is None or destination.waypoint != self.waypoint:
            log.info(
                "waypoint: CONNECT from %s to %s:%d, which it does not serve",
                peer,
                request.host,
                request.port,
            )
            conn.reject(stream.stream_id, 400)
            stream.transport.flush()
            return
        client = _forwarded_for(request.headers) or (peer_ip, 0)
        pod = _baggage_pod(request.headers)
        ctx = self._context(peer, client[0], pod, destination, snapshot.version)
        conn.accept(stream.stream_id)
        stream.transport.flush()
        ctx.connection_opened()
        downstream = DownstreamConnection(ctx)
        extra = {"peername": client, "sockname": destination.address, "mesh_peer": ctx.peer}
        TunnelTransport(stream, downstream, extra).start()

    def _context(
        self,
        peer: SpiffeId,
        client_ip: str,
        pod: tuple[str, str] | None,
        destination: MeshDestination,
        version: int,
    ) -> TunnelContext:
        key = (peer, client_ip, pod, destination.address, version)
        ctx = self._contexts.get(key)
        if ctx is not None:
            return ctx
        manager = self.listeners
        mesh = manager.holder.current.mesh
        assert mesh is not None
        source = mesh.state.workload_by_ip(client_ip)
        if source is None and pod is not None:
            source = next((w for w in mesh.state.workloads if (w.namespace, w.name) == pod), None)
        if source is not None and source.identity != peer:
            source = None  # the workload named is not the identity's: name none
        ctx = TunnelContext(
            manager.holder,
            manager.telemetry,
            manager.pool,
            manager.options,
            destination.key,
            manager.connections,
        )
        ctx.count_port = self.port
        ctx.lifespans = manager.lifespans
        ctx.buffer_budget = manager.buffer_budget
        ctx.peer = MeshPeer(peer, client_ip, source, destination, mesh.state)
        if len(self._contexts) >= _PEER_CACHE_LIMIT:
            self._contexts.clear()
        self._contexts[key] = ctx
        return ctx

    def drain(self) -> None:
        """Stop accepting; GOAWAY tells clients to open no more tunnels here (the open ones
        finish, and each connection closes when its last tunnel ends)."""
        if self._task is not None:
            self._task.cancel()
        if self._listener is not None:
            self._listener.close()
        for transport in list(self.transports):
            transport.goaway()

    async def close(self) -> None:
        """Close every HBONE connection still open (after the drain's grace)."""
        self.drain()
        for task in list(self._accepting):
            task.cancel()
        for transport in list(self.transports):
            transport.close()


def _forwarded_for(headers: Mapping[str, str]) -> tuple[str, int] | None:
    """The client address ztunnel put in ``Forwarded: for="ip:port"``."""
    for part in headers.get("forwarded", "").split(";"):
        part = part.strip()
        if part.startswith("for="):
            address = part[4:].strip('"')
            host, _, port = address.rpartition(":")
            if host and port.isdigit():
                return host.strip("[]"), int(port)
    return None


def _baggage_pod(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(namespace, pod) the source ztunnel named in ``baggage`` (explicit-mode clients connect
    from the node's loopback, so their address names no Pod)."""
    items = dict(
        item.strip().split("=", 1) for item in headers.get("baggage", "").split(",") if "=" in item
    )
    namespace, pod = items.get("k8s.namespace.name"), items.get("k8s.pod.name")
    return (namespace, pod) if namespace and pod else None
