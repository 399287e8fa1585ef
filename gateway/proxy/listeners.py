"""Listener management: bind each Gateway listener port, follow config changes, drain on close."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from gateway.proxy.buffer_budget import BufferBudget
from gateway.proxy.downstream import DownstreamConnection, ListenerContext
from gateway.proxy.h2_downstream import H2Downstream
from gateway.proxy.options import IDLE_TICKS, ProxyOptions
from gateway.proxy.pool import UpstreamPool
from gateway.tls.contexts import ALPN_PROTOCOLS, TLS12_CIPHERS, server_name
from ports import PortInUse, bind_listener

if TYPE_CHECKING:
    from gateway.observability.record import Telemetry
    from gateway.proxy.lifespan import Lifespans
    from gateway.snapshot import Snapshot, SnapshotHolder

__all__ = ["ListenerManager", "ProxyOptions", "SocketSource", "bind_here", "served_ports"]

log = logging.getLogger(__name__)

# Seconds a client has to complete the TLS handshake.
TLS_HANDSHAKE_TIMEOUT = 10.0
# Listener protocols this data path serves.
SERVED_PROTOCOLS = frozenset({"HTTP", "HTTPS"})
# Connections the kernel queues before they are accepted (capped by net.core.somaxconn).
LISTEN_BACKLOG = 4096


class TlsAccept(asyncio.Protocol):
    """Accepted on a TLS port: runs the handshake, then hands over to HTTP/2 or HTTP/1.1.

    ALPN decides (``h2`` or ``http/1.1``); the server name the client sent travels with the
    requests so routing can answer 421 to a Host another listener serves. A failed handshake
    (a bad client, plain text on the TLS port, a timeout) is counted and the connection closed.

    ``loop.start_tls`` takes the connection over from a task, and uvloop may deliver the
    ClientHello to this protocol first: those bytes are handed to the TLS layer once it is in
    place (through the buffered-protocol interface both event loops' TLS protocols implement).
    """

    __slots__ = ("_context", "_early", "_ended", "_task", "ctx")

    def __init__(self, ctx: ListenerContext, context: ssl.SSLContext) -> None:
        self.ctx = ctx
        self._context = context
        self._early: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._ended = False  # the connection ended before HTTP took it over (counted closed)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._task = self.ctx.loop.create_task(self._handshake(transport))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._early.append(data)  # read before start_tls switched the protocol

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()  # closed during the handshake (once HTTP holds it, HTTP hears of the end)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.ctx.connection_closed()

    async def _handshake(self, transport: asyncio.Transport) -> None:
        loop = self.ctx.loop
        starting = asyncio.ensure_future(
            loop.start_tls(
                transport,
                self,
                self._context,
                server_side=True,
                ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            )
        )
        # One loop turn: start_tls has paused reading, installed its protocol and queued its
        # connection_made; the early bytes are queued after it, before reading resumes.
        await asyncio.sleep(0)
        if self._early:
            early, self._early = b"".join(self._early), []
            loop.call_soon(_feed, transport.get_protocol(), early)
        try:
            tls = await starting
        except (OSError, TimeoutError, EOFError) as exc:
            log.debug("TLS handshake failed: %s", exc)
            self.ctx.refused("tls_handshake")
            transport.abort()
            self._end()
            return
        if tls is None or tls.is_closing():
            self._end()
            return
        self._ended = True  # from here the HTTP protocol counts the close
        self._dispatch(tls)

    def _dispatch(self, transport: asyncio.Transport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        sni = server_name(ssl_object) if ssl_object is not None else None
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        peer = transport.get_extra_info("peername")
        protocol: asyncio.Protocol
        if alpn == "h2":
            protocol = H2Downstream(self.ctx, peer[0] if peer else "", "https", sni).engine
        else:
            conn = DownstreamConnection(self.ctx)
            conn.tls = True
            conn.sni = sni
            protocol = conn
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        early, self._early = self._early, []  # application bytes that beat the hand-over
        for data in early:
            protocol.data_received(data)


def _feed(protocol: asyncio.BaseProtocol, data: bytes) -> None:
    """Give bytes to a buffered protocol (the TLS layer) as if they had just been read."""
    get_buffer = getattr(protocol, "get_buffer", None)  # uvloop's is no BufferedProtocol subclass
    if get_buffer is None:
        protocol.data_received(data)  # type: ignore[attr-defined]
        return
    view = memoryview(data)
    while view:
        buffer = get_buffer(len(view))
        size = min(len(buffer), len(view))
        memoryview(buffer)[:size] = view[:size]
        protocol.buffer_updated(size)  # type: ignore[attr-defined]
        view = view[size:]


def front_context(holder: SnapshotHolder, port: int) -> ssl.SSLContext:
    """The context a TLS port is bound with: each handshake switches to the context of the
    snapshot current at that moment, so certificates reload with the configuration."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))

    def select(ssl_object: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> int | None:
        current = holder.current.tls.get(port)
        if current is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME  # no certificate serves this port now
        ssl_object.context = current
        choose = current.sni_callback
        if choose is not None:
            choose(ssl_object, name, current)  # type: ignore[arg-type]
        return None

    context.sni_callback = select
    return context


SocketSource = Callable[[str, int, str], Awaitable[socket.socket]]
"""Gives the listening socket for (host, port, what chose the port); raises PortInUse."""


async def bind_here(host: str, port: int, setting: str) -> socket.socket:
    """The one-process socket source: bind the port in this process."""
    return bind_listener(host, port, LISTEN_BACKLOG, setting=setting)


def served_ports(snapshot: Snapshot) -> dict[int, str]:
    """The ports the data path serves for ``snapshot``, each with the listeners that chose it
    (``Gateway ns/name listener l``); listeners it does not serve are left out."""
    ports: dict[int, list[str]] = {}
    for listener in snapshot.listeners:
        protocol = listener.protocol.upper()
        if protocol not in SERVED_PROTOCOLS:
            continue
        if protocol == "HTTPS" and listener.port not in snapshot.tls:
            continue
        name = f"{listener.gateway_namespace}/{listener.gateway_name} listener {listener.name}"
        ports.setdefault(listener.port, []).append(name)
    return {port: "Gateway " + ", ".join(names) for port, names in ports.items()}


class ListenerManager:
    """Binds the current snapshot's listener ports and serves them with the proxy protocol.

    ``lifespans`` is the process's responder lifespan manager, which requests look their
    responder app up in (None: responders are served without a lifespan). ``sockets`` gives the
    listening sockets: bound here by default, handed over by the supervisor in a worker.
    """

    def __init__(
        self,
        holder: SnapshotHolder,
        telemetry: Telemetry,
        bind_address: str = "0.0.0.0",
        options: ProxyOptions | None = None,
        lifespans: Lifespans | None = None,
        sockets: SocketSource = bind_here,
    ) -> None:
        self.holder = holder
        self.sockets = sockets
        self.lifespans = lifespans
        self.telemetry = telemetry
        self.bind_address = bind_address
        self.options = options or ProxyOptions()
        self.pool = UpstreamPool(self.options.pool, self.options.connect_timeout)
        self.buffer_budget = BufferBudget(self.options.max_buffered_total)
        self.connections: set[DownstreamConnection] = set()
        self._servers: dict[int, tuple[asyncio.Server, ListenerContext]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._head_sweeper: asyncio.TimerHandle | None = None

    @property
    def ports(self) -> list[int]:
        """The ports currently bound."""
        return sorted(self._servers)

    async def sync(self, fail_fast: bool = False) -> None:
        """Bind listener ports that are new in the current snapshot; close those that went away.

        A port something else holds raises :class:`PortInUse` with ``fail_fast`` (at start);
        on a reload it is logged and the other ports are served.
        """
        snapshot = self.holder.current
        for listener in snapshot.listeners:
            protocol = listener.protocol.upper()
            name = f"{listener.gateway_namespace}/{listener.gateway_name} {listener.name}"
            if protocol not in SERVED_PROTOCOLS:
                log.warning("listener %s: protocol %s is not served", name, listener.protocol)
            elif protocol == "HTTPS" and listener.port not in snapshot.tls:
                log.warning("listener %s: no valid certificate, port not served", name)
        served = served_ports(snapshot)
        wanted = {port: port in snapshot.tls for port in served}  # port -> TLS
        for port in sorted(self._servers):
            tls = self._servers[port][1].tls
            if wanted.get(port) != tls:
                server, ctx = self._servers.pop(port)
                server.close()
                # Its connections finish what they carry and close (HTTP/2: GOAWAY first).
                ctx.draining = True
                for conn in list(self.connections):
                    if conn.ctx is ctx:
                        conn.drain()
                log.info("listener port %d closed", port)
        for port in sorted(wanted.keys() - self._servers.keys()):
            try:
                sock = await self.sockets(self.bind_address, port, served[port])
            except PortInUse as exc:
                if fail_fast:
                    raise
                log.error("%s; the port is not served", exc)
                continue
            await self._serve(port, sock)

    async def close(self, grace: float) -> None:
        """Stop accepting, let requests in flight finish for up to ``grace`` seconds, then close."""
        servers = list(self._servers.values())
        self._servers.clear()
        for sweeper in (self._sweeper, self._head_sweeper):
            if sweeper is not None:
                sweeper.cancel()
        self._sweeper = self._head_sweeper = None
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

    async def _serve(self, port: int, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ctx = ListenerContext(
            self.holder, self.telemetry, self.pool, self.options, port, self.connections
        )
        ctx.tls = port in self.holder.current.tls
        ctx.lifespans = self.lifespans
        ctx.buffer_budget = self.buffer_budget
        # create_server listens on the socket again, with its own default backlog (100) unless
        # told: pass ours through, or the kernel queue shrinks to 100.
        factory: Callable[[], asyncio.Protocol]
        if ctx.tls:
            context = front_context(self.holder, port)

            def factory() -> asyncio.Protocol:
                ctx.connection_opened()
                return TlsAccept(ctx, context)
        else:

            def factory() -> asyncio.Protocol:
                ctx.connection_opened()
                return DownstreamConnection(ctx)

        server = await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG)
        self._servers[port] = (server, ctx)
        log.info(
            "listening on %s:%d%s",
            self.bind_address,
            port,
            " (TLS)" if port in self.holder.current.tls else "",
        )
        if self._sweeper is None:
            self._sweep()
            self._sweep_heads()

    def _sweep(self) -> None:
        """Idle-timeout bookkeeping for every connection, then again in a tick."""
        for conn in list(self.connections):
            conn.idle_tick()
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self.options.idle_timeout / IDLE_TICKS, self._sweep)

    def _sweep_heads(self) -> None:
        """Header-timeout bookkeeping for every connection, then again in a tick."""
        for conn in list(self.connections):
            conn.head_tick()
        loop = asyncio.get_running_loop()
        self._head_sweeper = loop.call_later(
            self.options.header_timeout / IDLE_TICKS, self._sweep_heads
        )
