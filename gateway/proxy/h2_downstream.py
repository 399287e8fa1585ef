"""HTTP/2 clients: each request stream of an :class:`H2ServerConnection` runs as an Exchange.

The engine (:mod:`gateway.proxy.h2_wire`) speaks the protocol; this module turns a request stream
into a :class:`RequestHead` and an :class:`H2Exchange`, which routes, balances, retries and
streams exactly like an HTTP/1.1 exchange but answers through the stream: response fields as a
HEADERS frame, body bytes as DATA, upstream trailers (gRPC's ``grpc-status``) as trailers.
Requests of gRPC clients that the gateway answers itself (no route, no healthy upstream, a
timeout) get a gRPC *trailers-only* response, which gRPC clients read as a status.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from gateway.proxy.exchange import DONE, STREAMING, Exchange
from gateway.proxy.h2_common import CANCEL, H2Limits
from gateway.proxy.h2_wire import H2ServerConnection, ServerStream
from gateway.proxy.options import IDLE_TICKS
from gateway.proxy.telemetry import NoopTelemetry
from gateway.proxy.upstream import split_head
from gateway.request import RequestHead

if TYPE_CHECKING:
    import asyncio

    from gateway.proxy.downstream import ListenerContext
    from gateway.proxy.upstream import Http1Connection
    from gateway.request import DirectResponse

log = logging.getLogger(__name__)

_NO_NAMES: frozenset[str] = frozenset()
# gRPC's mapping of HTTP statuses to status codes (doc/http-grpc-status-mapping.md), used for the
# answers the gateway gives gRPC clients itself; a timeout the gateway enforces is a deadline.
_GRPC_FOR_HTTP = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 4}
_GRPC_UNKNOWN = 2


def grpc_status_for(status: int) -> int:
    """The gRPC status code a gateway-made HTTP answer becomes for a gRPC client."""
    return _GRPC_FOR_HTTP.get(status, _GRPC_UNKNOWN)


class H2Downstream:
    """One HTTP/2 client connection of a listener: the engine, and what its exchanges share."""

    __slots__ = ("_quiet_ticks", "_seen", "ctx", "engine", "scheme", "sni")

    def __init__(
        self, ctx: ListenerContext, client_ip: str, scheme: str = "http", sni: str | None = None
    ) -> None:
        self.ctx = ctx
        self.scheme = scheme
        self.sni = sni
        self._seen = -1
        self._quiet_ticks = 0
        self.engine = H2ServerConnection(
            self._open_stream,
            H2Limits(
                max_header_list_size=ctx.options.max_header_bytes,
                write_high_water=ctx.options.max_buffered_body,
            ),
            client_ip=client_ip,
            on_close=self._closed,
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

    def drain(self) -> None:
        """Shutdown: GOAWAY, let open streams finish, then close."""
        self.engine.drain()

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


class StreamDown:
    """One request stream: the ``down`` its exchange writes to, and the engine's handler."""

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
        self.exchange = self._exchange(headers)
        self.exchange.start()

    def _exchange(self, block: list[tuple[bytes, bytes]]) -> H2Exchange:
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
        head = RequestHead(method, target, query, authority, headers)
        head.scheme = scheme
        head.client_ip = self.conn.engine.client_ip
        head.listener_port = self.ctx.port
        head.sni = self.conn.sni
        head.seed_index(index)
        try:
            trace = self.telemetry.start(head)
        except Exception:
            log.exception("telemetry start failed; continuing the trace without it")
            trace = NoopTelemetry().start(head)
        ended = self.stream.bodiless
        client_ip = head.client_ip
        exchange = H2Exchange(
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

    def start_tunnel(self, exchange: Exchange) -> None:
        """Never called: HTTP/2 requests are not upgraded."""


class H2Exchange(Exchange):
    """An exchange whose client is an HTTP/2 stream: responses leave as frames, not bytes."""

    __slots__ = ("_head", "_trailers", "grpc")

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.grpc = False  # a gRPC client: the gateway's own answers are gRPC statuses
        self._head: tuple[int, list[tuple[bytes, bytes]]] | None = None  # not sent yet
        self._trailers: list[tuple[bytes, bytes]] | None = None

    @property
    def _stream(self) -> ServerStream:
        return self.down.stream  # type: ignore[attr-defined]

    # -- upstream events -----------------------------------------------------------------------

    def upstream_informational(self, status: int) -> None:
        """1xx responses are not relayed to HTTP/2 clients."""

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        """An HTTP/1.1 upstream's head: its fields become the response HEADERS."""
        reason, headers = split_head(raw)
        self.upstream_head(conn, status, reason, headers)

    def _start_response(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Keep the response fields until the first body bytes or the end (trailers-only)."""
        fields, _, _ = self._response_fields(status, headers)
        self._head = (status, [(name.lower(), value) for name, value in fields])

    def upstream_body(self, data: bytes) -> None:
        """Response body bytes, sent at the end of the upstream read."""
        if self.state != STREAMING:
            return
        self.record.response_bytes += len(data)
        self._out.append(data)

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Response trailers (gRPC status): sent after the body."""
        self._trailers = headers
        if self.grpc:
            for name, value in headers:
                if name == b"grpc-status":
                    self.record.grpc_status = value.decode("latin-1")

    def upstream_flush(self) -> None:
        """Send what the last upstream read produced: the head if pending, then the data."""
        if self.state != STREAMING:
            return
        stream = self._stream
        if self._head is not None:
            status, fields = self._head
            self._head = None
            stream.send_headers(status, fields)
        out = self._out
        if out:
            self._out = []
            stream.send_data(out[0] if len(out) == 1 else b"".join(out))

    def _write_end(self) -> None:
        stream = self._stream
        out = self._out
        body = (out[0] if len(out) == 1 else b"".join(out)) if out else b""
        self._out = []
        trailers = self._trailers
        if self._head is not None:
            status, fields = self._head
            self._head = None
            if not body and trailers is None:
                if self.grpc:
                    self._grpc_status_from(fields)
                stream.send_headers(status, fields, end_stream=True)  # trailers-only
                return
            stream.send_headers(status, fields)
        if trailers is not None:
            if body:
                stream.send_data(body)
            stream.send_trailers(trailers)
        else:
            stream.send_data(body, end_stream=True)

    def _grpc_status_from(self, fields: list[tuple[bytes, bytes]]) -> None:
        for name, value in fields:
            if name == b"grpc-status":
                self.record.grpc_status = value.decode("latin-1")

    # -- the gateway's own answers and endings -------------------------------------------------

    def _direct(self, response: DirectResponse, flags: str, close: bool = False) -> None:
        """Answer on the stream: a gRPC status for gRPC clients, else status, fields and body."""
        record = self.record
        record.status = response.status
        record.response_flags = flags
        stream = self._stream
        if self.grpc:
            code = grpc_status_for(response.status)
            record.grpc_status = str(code)
            message = response.body.decode("utf-8", "replace").strip()
            record.response_bytes = 0
            stream.send_headers(
                200,
                [
                    (b"content-type", b"application/grpc"),
                    (b"grpc-status", str(code).encode()),
                    (b"grpc-message", quote(message, safe=" ").encode("ascii")),
                ],
                end_stream=True,
            )
        else:
            body = b"" if self.head_only else response.body
            record.response_bytes = len(body)
            fields = [
                (name.lower().encode("latin-1"), value.encode("latin-1", "replace"))
                for name, value in response.headers
                if name.lower() not in ("content-length", "connection")
            ]
            fields.append((b"content-length", b"%d" % len(response.body)))
            stream.send_headers(response.status, fields, end_stream=not body)
            if body:
                stream.send_data(body, end_stream=True)
        self._finish(True)

    def _close_client(self) -> None:
        """A response that already started cannot finish: reset the stream (not the connection)."""
        if self._head is not None or self._out:
            self.upstream_flush()
        self._stream.reset(CANCEL)
        self._finish(False)

    def abort(self) -> None:
        """The client reset the stream or left."""
        if self.state != DONE:
            super().abort()
