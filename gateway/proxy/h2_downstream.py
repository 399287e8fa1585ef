"""HTTP/2 clients: each request stream of an :class:`H2ServerConnection` runs as an Exchange.

The engine (:mod:`gateway.proxy.h2_server`) speaks the protocol; this module turns a request stream
into a :class:`RequestHead` and an :class:`Exchange`, which runs the same stages as an HTTP/1.1
request and answers through the stream (:mod:`gateway.proxy.response_relay_h2`): response fields
as a HEADERS frame, body bytes as DATA, upstream trailers (gRPC's ``grpc-status``) as trailers.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from gateway.observability.propagation import NoopTelemetry
from gateway.proxy import response_relay, response_relay_h2
from gateway.proxy.exchange import Exchange
from gateway.proxy.h2_common import H2Limits
from gateway.proxy.h2_server import H2ServerConnection, ServerStream
from gateway.proxy.options import IDLE_TICKS
from gateway.proxy.response_relay_h2 import H2Relay
from gateway.request import parsed_head

if TYPE_CHECKING:
    import asyncio

    from gateway.proxy.downstream import ListenerContext
    from gateway.proxy.websocket import Tunnel

log = logging.getLogger(__name__)

_NO_NAMES: frozenset[str] = frozenset()


class H2Downstream:
    """One HTTP/2 client connection of a listener: the engine, and what its exchanges share."""

    __slots__ = (
        "_head_mark",
        "_head_ticks",
        "_quiet_ticks",
        "_seen",
        "ctx",
        "engine",
        "scheme",
        "sni",
    )

    def __init__(
        self, ctx: ListenerContext, client_ip: str, scheme: str = "http", sni: str | None = None
    ) -> None:
        self.ctx = ctx
        self.scheme = scheme
        self.sni = sni
        self._seen = -1
        self._quiet_ticks = 0
        self._head_mark: object = None
        self._head_ticks = 0
        self.engine = H2ServerConnection(
            self._open_stream,
            H2Limits(
                max_header_list_size=ctx.options.max_header_bytes,
                write_high_water=ctx.options.max_buffered_body,
                connection_buffer=ctx.options.max_buffered_per_connection,
            ),
            client_ip=client_ip,
            on_close=self._closed,
            budget=ctx.buffer_budget,
        )
        ctx.connections.add(self)  # type: ignore[arg-type]

    @property
    def transport(self) -> asyncio.Transport | None:
        """The client connection's transport (the listener manager aborts it at the end)."""
        return self.engine.transport

    def _open_stream(self, stream: ServerStream, headers: list[tuple[bytes, bytes]]) -> StreamDown:
        return StreamDown(self, stream, headers)

    def _closed(self, engine: H2ServerConnection) -> None:
        self.ctx.connections.discard(self)
        self.ctx.connection_closed()
        # Counted once per connection, at its end: the engine keeps the tallies meanwhile.
        if engine.flood_goaways:
            self.ctx.refused("h2_flood")
        if engine.protocol_errors:
            self.ctx.refused("h2_protocol_error")

    def drain(self) -> None:
        """Shutdown: GOAWAY, let open streams finish, then close (a stream still waiting for an
        awaited endpoint choice is answered 503 at once)."""
        self.engine.drain()
        for handler in self.engine.handlers():
            if isinstance(handler, StreamDown):
                handler.exchange.drain()

    def head_tick(self) -> None:
        """Called every ``header_timeout / IDLE_TICKS`` s: a connection whose preface and
        SETTINGS, or a header block awaiting CONTINUATION, stay unfinished for a whole header
        timeout is closed (GOAWAY first)."""
        mark = self.engine.unfinished_opening()
        if mark is None:
            self._head_mark = None
            return
        if mark is not self._head_mark:
            self._head_mark = mark
            self._head_ticks = 0
            return
        self._head_ticks += 1
        if self._head_ticks >= IDLE_TICKS:
            log.debug(
                "HTTP/2 preface or header block from %s not received in time", self.engine.client_ip
            )
            self.engine.give_up()

    def idle_tick(self) -> None:
        """Close after a whole idle timeout with no frame either way and no open stream."""
        activity = self.engine.activity
        if activity != self._seen or self.engine.active_streams:
            self._seen = activity
            self._quiet_ticks = 0
            return
        self._quiet_ticks += 1
        if self._quiet_ticks >= IDLE_TICKS:
            self.engine.drain()


class StreamDown(H2Relay):
    """One request stream: the ``down`` its exchange writes to (its response side is
    :class:`~gateway.proxy.response_relay_h2.H2Relay`), and the engine's handler."""

    __slots__ = (
        "_owed",
        "_pausers",
        "activity",
        "client_paused",
        "closed",
        "conn",
        "ctx",
        "exchange",
        "loop",
        "options",
        "pool",
        "stream",
        "telemetry",
    )

    # How responses reach this client (see gateway.proxy.response_relay_h2).
    relay_raw = staticmethod(response_relay_h2.relay_raw)
    relay_fields = staticmethod(response_relay.relay_fields)
    answer_direct = staticmethod(response_relay_h2.answer)

    def __init__(
        self, conn: H2Downstream, stream: ServerStream, headers: list[tuple[bytes, bytes]]
    ) -> None:
        ctx = conn.ctx
        self.conn = conn
        self.ctx = ctx
        self.stream = stream
        self.loop = ctx.loop
        self.options = ctx.options
        self.pool = ctx.pool
        self.telemetry = ctx.telemetry
        self.client_paused = False
        self.closed = False
        self.activity = 0
        self._owed = 0  # request bytes received while reading was paused, not yet credited
        self._pausers: set[object] | None = None
        self.relay_init()
        self.exchange = self._exchange(headers)
        self.exchange.start()

    def _exchange(self, block: list[tuple[bytes, bytes]]) -> Exchange:
        method = path = authority = ""
        scheme = self.conn.scheme
        headers: list[tuple[str, str]] = []
        cookies: list[str] = []
        index: dict[str, str] = {}
        content_length: int | None = None
        xff = request_id = None
        for raw_name, raw_value in block:
            value = raw_value.decode("latin-1")
            if raw_name[:1] == b":":
                if raw_name == b":method":
                    method = value
                elif raw_name == b":path":
                    path = value
                elif raw_name == b":authority":
                    authority = value
                continue
            name = raw_name.decode("latin-1")
            if name == "cookie":
                cookies.append(value)  # HTTP/2 may split cookies; HTTP/1.1 wants one field
                continue
            if name == "content-length":
                content_length = int(value)  # validated by the engine
            elif name == "x-forwarded-for":
                xff = value if xff is None else f"{xff}, {value}"
            elif name == "x-request-id":
                request_id = value
            elif name == "host" and not authority:
                authority = value
            headers.append((name, value))
            index.setdefault(name, value)
        if cookies:
            joined = "; ".join(cookies)
            headers.append(("cookie", joined))
            index["cookie"] = joined
        target, _, query = path.partition("?")
        head = parsed_head(
            method,
            target,
            query,
            authority,
            headers,
            index,
            self.conn.engine.client_ip,
            self.ctx.port,
        )
        head.scheme = scheme
        head.sni = self.conn.sni
        head.peer = self.ctx.peer
        try:
            trace = self.telemetry.start(head)
        except Exception:
            log.exception("telemetry start failed; continuing the trace without it")
            trace = NoopTelemetry().start(head)
        ended = self.stream.bodiless
        client_ip = head.client_ip
        exchange = Exchange(
            self,
            head,
            self.ctx.holder.current,  # read once: the request keeps this snapshot to the end
            trace,
            True,
            False,
            content_length,
            not ended and content_length is None,  # a body of unknown length: chunked upstream
            False,
            False,
            _NO_NAMES,
            f"{xff}, {client_ip}" if xff else client_ip,
            request_id,
        )
        exchange.record.version = "2"
        if ended:
            exchange.request_done = True
        if index.get("content-type", "").startswith("application/grpc"):
            exchange.grpc = True
            exchange.record.protocol = "grpc"
        return exchange

    # -- StreamHandler (called by the engine) --------------------------------------------------

    def data(self, data: bytes) -> None:
        """Request body bytes: to the exchange; credited back unless reading is paused."""
        self.activity += 1
        self.exchange.request_body(data)
        if self._pausers:
            self._owed += len(data)
        else:
            self.stream.consumed(len(data))

    def end(self) -> None:
        """The client finished its request body."""
        if not self.exchange.request_done:
            self.exchange.request_complete()

    def trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Request trailers are not forwarded (HTTP/1.1 upstreams would need chunked trailers)."""

    def reset(self, error_code: int) -> None:
        """The client reset the stream or left: drop the upstream request now."""
        self.closed = True
        self.exchange.abort()

    def write_paused(self, paused: bool) -> None:
        """Response backpressure from the client's window: pause the upstream read."""
        self.client_paused = paused
        self.exchange.client_write_paused(paused)

    # -- used by the exchange (as DownstreamConnection's counterparts) -------------------------

    def pause_reading_for(self, key: object, paused: bool) -> None:
        """Request-body backpressure: hold this stream's window while anyone asks."""
        pausers = self._pausers
        if paused:
            if pausers is None:
                pausers = self._pausers = set()
            pausers.add(key)
        elif pausers and key in pausers:
            pausers.discard(key)
            if not pausers and self._owed:
                owed, self._owed = self._owed, 0
                self.stream.consumed(owed)

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """The response ended; the stream is finished (the connection stays)."""
        self.closed = True

    def start_tunnel(self, tunnel: Tunnel) -> None:
        """Never called: HTTP/2 requests are not upgraded."""

    def interim(self, status: int) -> None:
        """1xx responses are not sent to HTTP/2 clients (they send bodies without waiting)."""
