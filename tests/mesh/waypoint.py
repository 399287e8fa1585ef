"""A stand-in waypoint for tests (not Envoy): it accepts HBONE as the waypoint's SVID, records
every CONNECT (authority, headers, client identity), then carries the tunnel on to a Service
endpoint through the destination node's ztunnel under its own identity, as a waypoint does at
L4. It does no L7 processing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mesh.errors import HboneError
from mesh.hbone import protocol as p
from mesh.hbone.client import dial
from mesh.hbone.tls import Credentials, client_context, peer_identity, server_context
from mesh.hbone.transport import H2Transport, TunnelStream
from mesh.identity import SpiffeId

# (host, port) from the CONNECT -> (endpoint ip, endpoint port, endpoint identity)
Resolver = Callable[[str, int], tuple[str, int, SpiffeId]]


@dataclass(frozen=True)
class Connect:
    """One CONNECT the waypoint received."""

    authority: str
    headers: Mapping[str, str]
    client: SpiffeId


@dataclass
class StandInWaypoint:
    """Listens on the waypoint Pod's IP at the HBONE port."""

    creds: Credentials
    resolve: Resolver
    hbone_port: int
    seen: list[Connect] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    connections: list[H2Transport] = field(default_factory=list)

    async def start(self, host: str) -> None:
        """Listen on ``host``:hbone_port."""
        loop = asyncio.get_running_loop()

        def accepted() -> H2Transport:
            conn = H2Transport(client_side=False, on_request=self._on_request, ping_interval=0)
            self.connections.append(conn)
            return conn

        self.server = await loop.create_server(
            accepted,
            host,
            self.hbone_port,
            ssl=server_context(self.creds),
        )

    async def _on_request(self, stream: TunnelStream, request: p.TunnelRequest) -> None:
        ssl_object = stream.transport.get_extra_info("ssl_object")
        client = peer_identity(ssl_object)  # type: ignore[arg-type]
        authority = p.format_authority(request.host, request.port)
        self.seen.append(Connect(authority, dict(request.headers), client))
        ip, port, identity = self.resolve(request.host, request.port)
        try:
            conn = await dial(ip, self.hbone_port, client_context(self.creds), [identity])
            self.connections.append(conn)
            headers = p.ConnectHeaders(request.headers.get("forwarded", "").split('"')[1])
            upstream = await conn.open_tunnel(p.format_authority(ip, port), headers)
        except HboneError:
            stream.transport.conn.reject(stream.stream_id, 503)
            stream.transport.flush()
            return
        stream.transport.conn.accept(stream.stream_id)
        stream.transport.flush()

        async def pump(src: TunnelStream, dst: TunnelStream) -> None:
            while data := await src.read():
                await dst.write(data)
            dst.end()

        try:
            await asyncio.gather(pump(stream, upstream), pump(upstream, stream))
        finally:
            conn.release(upstream)
            conn.close()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self.server is not None:
            self.server.close()
        for conn in self.connections:
            conn.close()
