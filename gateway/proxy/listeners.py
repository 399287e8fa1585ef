"""Listener management: bind each Gateway listener port, follow config changes, drain on close."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING

from gateway.proxy.downstream import IDLE_TICKS, DownstreamConnection, ListenerContext
from gateway.proxy.options import ProxyOptions
from gateway.proxy.pool import UpstreamPool

if TYPE_CHECKING:
    from gateway.observability.record import Telemetry
    from gateway.snapshot import SnapshotHolder

__all__ = ["ListenerManager", "ProxyOptions", "reuseport_socket"]

log = logging.getLogger(__name__)

# Listener protocols this data path serves; HTTPS arrives with TLS termination next.
SERVED_PROTOCOLS = frozenset({"HTTP"})


def reuseport_socket(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A listening TCP socket with SO_REUSEPORT, so worker processes share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets that say they are TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ListenerManager:
    """Binds the current snapshot's listener ports and serves them with the proxy protocol."""

    def __init__(
        self,
        holder: SnapshotHolder,
        telemetry: Telemetry,
        bind_address: str = "0.0.0.0",
        options: ProxyOptions | None = None,
    ) -> None:
        self.holder = holder
        self.telemetry = telemetry
        self.bind_address = bind_address
        self.options = options or ProxyOptions()
        self.pool = UpstreamPool(self.options.pool, self.options.connect_timeout)
        self.connections: set[DownstreamConnection] = set()
        self._servers: dict[int, tuple[asyncio.Server, ListenerContext]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def ports(self) -> list[int]:
        """The ports currently bound."""
        return sorted(self._servers)

    async def sync(self) -> None:
        """Bind listener ports that are new in the current snapshot; close those that went away."""
        wanted: set[int] = set()
        for listener in self.holder.current.listeners:
            if listener.protocol.upper() not in SERVED_PROTOCOLS:
                log.warning(
                    "listener %s/%s %s: protocol %s is not served yet",
                    listener.gateway_namespace,
                    listener.gateway_name,
                    listener.name,
                    listener.protocol,
                )
                continue
            wanted.add(listener.port)
        for port in sorted(wanted - self._servers.keys()):
            await self._bind(port)
        for port in sorted(self._servers.keys() - wanted):
            server, _ctx = self._servers.pop(port)
            server.close()
            log.info("listener port %d closed", port)

    async def close(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for up to ``grace`` seconds, then close."""
        servers = list(self._servers.values())
        self._servers.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for server, ctx in servers:
            ctx.draining = True
            server.close()
        for conn in list(self.connections):
            conn.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connections and loop.time() < deadline:
            await asyncio.sleep(min(0.05, max(deadline - loop.time(), 0)))
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        self.pool.close()
        for server, _ in servers:
            await server.wait_closed()

    async def _bind(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        sock = reuseport_socket(self.bind_address, port)
        ctx = ListenerContext(
            self.holder, self.telemetry, self.pool, self.options, port, self.connections
        )
        server = await loop.create_server(lambda: DownstreamConnection(ctx), sock=sock)
        self._servers[port] = (server, ctx)
        log.info("listening on %s:%d", self.bind_address, port)
        if self._sweeper is None:
            self._sweep()

    def _sweep(self) -> None:
        """Idle-timeout bookkeeping for every connection, then again in a tick."""
        for conn in list(self.connections):
            conn.idle_tick()
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self.options.idle_timeout / IDLE_TICKS, self._sweep)
