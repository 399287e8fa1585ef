"""Inbound HBONE (:15008): mTLS as the destination workload, CONNECT, authorization, upstream."""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mesh.errors import CAError, IdentityError
from mesh.hbone import protocol as p
from mesh.hbone.splice import SocketSide, splice_tunnel
from mesh.hbone.tls import peer_identity
from mesh.hbone.transport import H2Transport, TunnelStream
from mesh.identity.spiffe import SpiffeId
from mesh.rbac.authz import ConnectionAttrs
from mesh.state.registry import MeshState, Service, Workload
from mesh.tls_server import TlsServerLayer, accept_forever
from mesh.ztunnel.capture import local_destination
from mesh.ztunnel.certs import CertManager
from mesh.ztunnel.listen import bind
from mesh.ztunnel.metrics import ConnectionLabels, TcpMetrics
from ports import PortInUse

log = logging.getLogger(__name__)

UPSTREAM_CONNECT_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
# ztunnel's own ports: a CONNECT to them would loop back into the proxy (SelfCall -> 503).
ILLEGAL_PORTS = frozenset({15001, 15006, 15008})


@dataclass(slots=True)
class LiveConnection:
    """An accepted tunnel, kept so a policy change can close it."""

    attrs: ConnectionAttrs
    workload: Workload
    stream: TunnelStream
    upstream: SocketSide


class Inbound:
    """Accepts HBONE for this node's workloads; one listener per local pod IP (or a wildcard)."""

    def __init__(
        self,
        node: str,
        state: Callable[[], MeshState],
        certs: CertManager,
        metrics: TcpMetrics,
        port: int = 15008,
        bind: str | None = None,
        illegal_ports: frozenset[int] = ILLEGAL_PORTS,
        ping_interval: float = 10.0,
        listen_on_pod_ips: bool = True,
    ) -> None:
        self.node = node
        self.state = state
        self.certs = certs
        self.metrics = metrics
        self.port = port
        self.bind = bind
        self.illegal_ports = illegal_ports | {port}
        self.ping_interval = ping_interval
        self._servers: dict[str, tuple[socket.socket, asyncio.Task[None]]] = {}
        self._adopted: dict[socket.socket, asyncio.Task[None]] = {}
        # False with in-pod capture: it listens in each Pod's namespace instead (serve).
        self.listen_on_pod_ips = listen_on_pod_ips
        self._live: dict[int, LiveConnection] = {}
        self._ids = itertools.count()
        self.transports: set[H2Transport] = set()
        self._accepting: set[asyncio.Task[None]] = set()

    async def reconcile(self, fail_fast: bool = False) -> None:
        """Listen on every local enrolled pod IP (or the wildcard bind address); a port already
        taken raises PortInUse with ``fail_fast`` (at start), else it is logged."""
        hosts = {self.bind} if self.bind else set()
        if not self.bind and self.listen_on_pod_ips:
            hosts = {w.ip for w in self.state().node_workloads(self.node)}
        loop = asyncio.get_running_loop()
        for host in hosts - self._servers.keys():
            try:
                listener = bind(host, self.port, 4096)
            except OSError as exc:
                if fail_fast and isinstance(exc, PortInUse):
                    raise
                log.error("cannot listen for HBONE on %s:%d: %s", host, self.port, exc)
                continue
            # Accepted by hand: the TLS context is picked per connection from its original
            # destination; uvloop's start_tls cannot resume a paused transport, so
            # connect_accepted_socket does the handshake (in _accept).
            accepting = accept_forever(listener, self._accept, self._accepting, "HBONE")
            self._servers[host] = (listener, loop.create_task(accepting))
            log.info("inbound HBONE listening on %s:%d", host, self.port)
        for host in set(self._servers) - hosts:
            listener, task = self._servers.pop(host)
            task.cancel()
            listener.close()

    def serve(self, listener: socket.socket) -> Callable[[], None]:
        """Accept HBONE on a listener bound elsewhere (in a Pod's network namespace, by in-pod
        capture); returns what stops it."""
        task = asyncio.get_running_loop().create_task(
            accept_forever(listener, self._accept, self._accepting, "HBONE")
        )
        self._adopted[listener] = task

        def stop() -> None:
            if self._adopted.pop(listener, None) is not None:
                task.cancel()
                listener.close()

        return stop

    def recheck(self) -> None:
        """Close established connections the current policies deny ("policy change")."""
        state = self.state()
        authz = state.authorizer
        for conn_id, live in list(self._live.items()):
            decision = authz.check(
                live.workload.namespace,
                live.workload.labels,
                live.attrs,
                state.waypoint_identities(live.workload),
            )
            if not decision.allowed:
                log.info("connection closed due to policy change: %s", decision.reason)
                self._live.pop(conn_id, None)
                live.stream.abort()
                live.upstream.close()

    async def _accept(self, sock: socket.socket) -> None:
        dst_ip, _ = local_destination(sock)
        workload = self.state().workload_by_ip(dst_ip)
        if workload is None or workload.node != self.node or not workload.enrolled:
            log.info("inbound HBONE for %s: no local workload", dst_ip)
            sock.close()
            return
        loop = asyncio.get_running_loop()
        transport = H2Transport(client_side=False, ping_interval=self.ping_interval)
        failed = ConnectionLabels("destination", None, None, workload, None, True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            cert = await self.certs.get(workload.identity)
            # Our TLS layer rather than ssl=: a refused handshake still sends its alert.
            tls = TlsServerLayer(
                cert.server,
                transport,
                HANDSHAKE_TIMEOUT,
                on_failure=lambda exc: self.metrics.failed(failed, "TLS_FAILURE"),
            )
            await loop.connect_accepted_socket(lambda: tls, sock)
            await tls.handshake
            ssl_object = transport.get_extra_info("ssl_object")
            assert ssl_object is None or isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket)
            peer = peer_identity(ssl_object)
            if peer.trust_domain != workload.identity.trust_domain:
                raise IdentityError(
                    f"client trust domain {peer.trust_domain} is not "
                    f"{workload.identity.trust_domain}"
                )
        except (CAError, IdentityError, ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("inbound TLS for %s refused: %r", workload.key, exc)
            if isinstance(exc, IdentityError):  # handshake failures were counted by the layer
                self.metrics.failed(failed, "TLS_FAILURE")
            transport.close()
            sock.close()
            return
        peer_addr = transport.get_extra_info("peername")
        peer_ip = str(peer_addr[0]) if isinstance(peer_addr, tuple) else ""

        async def on_request(stream: TunnelStream, request: p.TunnelRequest) -> None:
            await self._tunnel(stream, request, workload, dst_ip, peer, peer_ip)

        self.transports.add(transport)
        transport.on_close = self.transports.discard
        transport.set_handler(on_request)
        await transport.start()
        await transport.wait_closed()

    async def _tunnel(
        self,
        stream: TunnelStream,
        request: p.TunnelRequest,
        workload: Workload,
        dst_ip: str,
        peer: SpiffeId,
        peer_ip: str,
    ) -> None:
        conn = stream.transport.conn
        state = self.state()
        forwarded_ip = _forwarded_ip(request.headers)
        source = state.workload_by_ip(forwarded_ip) if forwarded_ip else None
        service = _service_from_forwarded(state, request.headers)
        labels = ConnectionLabels("destination", source, peer.uri, workload, service, True)
        self.metrics.open(labels)
        flags, spliced = "-", False
        try:
            if request.host != dst_ip:
                conn.reject(stream.stream_id, 400)
                return
            if request.port in self.illegal_ports:
                conn.reject(stream.stream_id, 503)
                return
            attrs = ConnectionAttrs(peer, peer_ip, request.host, request.port)
            decision = state.authorizer.check(
                workload.namespace, workload.labels, attrs, state.waypoint_identities(workload)
            )
            if not decision.allowed:
                log.info(
                    "inbound %s -> %s:%d: %s", peer, request.host, request.port, decision.reason
                )
                flags = "DENY"
                conn.reject(stream.stream_id, 401)
                return
            loop = asyncio.get_running_loop()
            try:
                _, upstream = await asyncio.wait_for(
                    loop.create_connection(SocketSide, request.host, request.port),
                    UPSTREAM_CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError) as exc:
                log.info("inbound upstream %s:%d failed: %s", request.host, request.port, exc)
                flags = "CONNECT"
                conn.reject(stream.stream_id, 503)
                return
            if stream.reset_code is not None:  # the client gave up while we connected
                upstream.close()
                return
            conn.accept(stream.stream_id)
            conn_id = next(self._ids)
            self._live[conn_id] = LiveConnection(attrs, workload, stream, upstream)

            def finished(side: SocketSide) -> None:
                self._live.pop(conn_id, None)
                # received = downstream (tunnel) -> upstream (pod); sent = pod -> tunnel.
                self.metrics.close(labels, side.sent, side.received, "-")

            upstream.on_lost = finished
            spliced = True
            splice_tunnel(stream, upstream)
        finally:
            stream.transport.flush()
            if not spliced:
                self.metrics.close(labels, 0, 0, flags)

    async def close(self) -> None:
        """Stop listening and drain connections."""
        for listener, task in self._servers.values():
            task.cancel()
            listener.close()
        self._servers.clear()
        for listener, task in list(self._adopted.items()):
            task.cancel()
            listener.close()
        self._adopted.clear()
        for task in list(self._accepting):
            task.cancel()
        for transport in list(self.transports):
            transport.goaway()
            transport.close()


def _forwarded_ip(headers: Mapping[str, str]) -> str | None:
    value = headers.get("forwarded", "")
    for part in value.split(";"):
        part = part.strip()
        if part.startswith("for="):
            addr = part[4:].strip('"')
            host, _, _ = addr.rpartition(":")
            return host.strip("[]") or addr
    return None


def _service_from_forwarded(state: MeshState, headers: Mapping[str, str]) -> Service | None:
    value = headers.get("forwarded", "")
    for part in value.split(";"):
        part = part.strip()
        if part.startswith("host="):
            host = part[5:].strip('"')
            for svc in state.services:
                if svc.hostname == host:
                    return svc
    return None
