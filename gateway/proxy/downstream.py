"""The client side: one asyncio protocol per accepted connection, parsing HTTP/1.1 with httptools.

Requests are answered strictly in order. Pipelined requests are parsed as they arrive and queue
behind the active one (their bodies buffered, bounded); the connection keeps reading while a
response streams, so a client that leaves is noticed at once and its upstream request dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from httptools import HttpParserError, HttpParserUpgrade, HttpRequestParser

from gateway.observability.propagation import NoopTelemetry
from gateway.proxy import response_relay
from gateway.proxy.buffer_budget import BufferBudget
from gateway.proxy.exchange import Exchange
from gateway.proxy.h2_common import is_h2_preface
from gateway.proxy.h2_downstream import H2Downstream
from gateway.proxy.headers import (
    HOP_BY_HOP,
    REQUEST_SKIP,
    connection_tokens,
    direct_response_bytes,
)
from gateway.proxy.options import IDLE_TICKS
from gateway.proxy.response_relay import Http1Relay
from gateway.request import error_response, parsed_head

if TYPE_CHECKING:
    from gateway.observability.record import Telemetry
    from gateway.proxy.lifespan import Lifespans
    from gateway.proxy.options import ProxyOptions
    from gateway.proxy.pool import UpstreamPool
    from gateway.proxy.upstream import Http1Connection
    from gateway.proxy.upstream_attempt import UpstreamAttempt
    from gateway.proxy.websocket import Tunnel
    from gateway.request import DirectResponse, RequestHead
    from gateway.snapshot import SnapshotHolder
    from gateway.waypoint.peer import MeshPeer

log = logging.getLogger(__name__)

_QUEUE_FULL = "queue"
_NO_NAMES: frozenset[str] = frozenset()
# Request fields the connection itself looks at (framing, smuggling checks, forwarding).
_SPECIAL = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "x-forwarded-for",
        "x-request-id",
        "connection",
        "upgrade",
        "expect",
    }
)
_SPECIAL_OR_SKIP = _SPECIAL | REQUEST_SKIP
# Searched for as an int (memchr): CPython's bytes.__contains__ tries its operand as an int first,
# so ``b"#" in url`` raises and clears a TypeError on every request (~2k instructions).
_HASH = ord("#")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The class's own __new__ (object.__new__ here; a mypyc-compiled build has its own).
_new_exchange = Exchange.__new__
_init_exchange = Exchange.__init__
# How long, and how many bytes, a connection closing after an early answer (an error, a 413)
# discards of what the client still sends before it closes (nginx's lingering close).
LINGER_SECONDS = 5.0
LINGER_BYTES = 1024 * 1024


class ClientSide(Protocol):
    """What an exchange uses of its client: an HTTP/1.1 connection or an HTTP/2 stream."""

    ctx: ListenerContext
    loop: asyncio.AbstractEventLoop
    options: ProxyOptions
    pool: UpstreamPool
    telemetry: Telemetry
    client_paused: bool
    activity: int

    # The module functions of gateway.proxy.response_relay(_h2) for this client's protocol.
    @property
    def relay_raw(self) -> Callable[[Exchange, UpstreamAttempt, Http1Connection, int, bytes], None]:
        """Start relaying a response whose head came raw (an HTTP/1.1 upstream)."""
        ...

    @property
    def relay_fields(
        self,
    ) -> Callable[
        [Exchange, UpstreamAttempt, Http1Connection, int, bytes, list[tuple[bytes, bytes]]], None
    ]:
        """Start relaying a response whose head came as fields (an HTTP/2 upstream)."""
        ...

    @property
    def answer_direct(self) -> Callable[[Exchange, DirectResponse, bool], bool]:
        """Write a whole response the gateway makes; True when the connection stays open."""
        ...

    def interim(self, status: int) -> None:
        """Send a 1xx interim response (100 Continue), where the protocol has one."""

    def pause_reading_for(self, key: object, paused: bool) -> None:
        """Stop reading the request while ``key`` asks (body backpressure)."""

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """The exchange finished its response."""

    def start_tunnel(self, tunnel: Tunnel) -> None:
        """The exchange switched protocols (HTTP/1.1 only)."""


class ListenerContext:
    """What every connection of one listener port shares."""

    __slots__ = (
        "buffer_budget",
        "connections",
        "draining",
        "holder",
        "lifespans",
        "loop",
        "options",
        "peer",
        "pool",
        "port",
        "telemetry",
        "tls",
    )

    def __init__(
        self,
        holder: SnapshotHolder,
        telemetry: Telemetry,
        pool: UpstreamPool,
        options: ProxyOptions,
        port: int,
        connections: set[DownstreamConnection],
    ) -> None:
        self.holder = holder
        self.telemetry = telemetry
        self.pool = pool
        self.options = options
        self.port = port
        self.connections = connections
        self.loop = asyncio.get_running_loop()
        self.draining = False
        self.tls = False  # the port terminates TLS
        # The process's responder lifespans (None: responders are served without lifespan).
        self.lifespans: Lifespans | None = None
        # Response bytes held for HTTP/2 clients, against the process's cap (the listener
        # manager shares one among its ports).
        self.buffer_budget = BufferBudget(options.max_buffered_total)
        # Waypoint mode: the mesh peer of the tunnel this context serves (see gateway.waypoint).
        self.peer: MeshPeer | None = None

    def connection_opened(self) -> None:
        """Count a connection accepted on this port (once per TCP connection, at accept)."""
        metrics = getattr(self.telemetry, "metrics", None)
        if metrics is not None:
            metrics.connection_opened(self.port)

    def connection_closed(self) -> None:
        """Count a connection of this port that closed (by whichever protocol held it last)."""
        metrics = getattr(self.telemetry, "metrics", None)
        if metrics is not None:
            metrics.connection_closed(self.port)

    def refused(self, reason: str) -> None:
        """Count a connection refused for ``reason`` (TLS handshake, HTTP/2 flood or error)."""
        metrics = getattr(self.telemetry, "metrics", None)
        if metrics is not None:
            metrics.refused(reason)


class BadRequest(Exception):
    """A request the gateway refuses to parse further; the connection closes after the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# Set as the connection's error while it discards a request body it answered early.
_DISCARDING = BadRequest(0, "discarding the rest of a request answered early")


class DownstreamConnection(Http1Relay, asyncio.Protocol):
    """A client connection: parses requests, runs their exchanges in order, writes responses
    (the response side is :class:`~gateway.proxy.response_relay.Http1Relay`)."""

    __slots__ = (
        "_discarded",
        "_error",
        "_h2c",
        "_head_mark",
        "_head_size",
        "_head_ticks",
        "_headers",
        "_in_head",
        "_pausers",
        "_quiet_ticks",
        "_raw_head",
        "_seen_activity",
        "_upgrade_candidate",
        "_url",
        "activity",
        "client_ip",
        "client_paused",
        "closed",
        "ctx",
        "current",
        "loop",
        "options",
        "parser",
        "parsing",
        "pool",
        "queue",
        "sni",
        "telemetry",
        "tls",
        "transport",
        "tunnel",
        "upgrade_wait",
    )

    # How responses reach this client (see gateway.proxy.response_relay).
    relay_raw = staticmethod(response_relay.relay_raw)
    relay_fields = staticmethod(response_relay.relay_fields)
    answer_direct = staticmethod(response_relay.answer)

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx  # shared by the listener's connections (exchanges read ctx.draining)
        self.loop = ctx.loop
        self.options = ctx.options
        self.pool = ctx.pool
        self.telemetry = ctx.telemetry
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = HttpRequestParser(self)
        self.client_ip = ""
        self.current: Exchange | None = None  # the exchange whose response is being written
        self.parsing: Exchange | None = None  # the exchange whose request body is being read
        # Pipelined requests waiting their turn (a list: a deque costs ~600 bytes per connection).
        self.queue: list[Exchange] = []
        self.tunnel: Tunnel | None = None  # an upgraded (WebSocket) connection
        self.upgrade_wait: Tunnel | None = None  # an upgrade request waiting for its answer
        self.client_paused = False
        self.closed = False
        self.activity = 0
        self._seen_activity = -1
        self._quiet_ticks = 0
        self._pausers: set[object] | None = None  # created on first pause: most never pause
        self._error: BadRequest | None = None
        self._discarded = 0  # request bytes dropped after an early answer
        self._head_mark: object = None  # the unfinished head head_tick saw last
        self._head_ticks = 0
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._raw_head = 0
        self._in_head = False
        self._upgrade_candidate: Exchange | None = None
        # An "Upgrade: h2c" request waiting for the parser to stop: (HTTP2-Settings, its fields).
        self._h2c: tuple[bytes, list[tuple[bytes, bytes]]] | None = None
        self.tls = False  # set by the TLS dispatcher, with the client's server name
        self.sni: str | None = None
        self.relay_init()

    @property
    def draining(self) -> bool:
        """True while the listener shuts down: responses carry ``Connection: close``."""
        return self.ctx.draining

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.ctx.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.activity += 1
        if self.activity == 1 and data[:3] == b"PRI" and is_h2_preface(data):
            self._switch_to_h2(data)  # h2c with prior knowledge
            return
        if self.tunnel is not None:
            self.tunnel.client_data(data)
            return
        if self.upgrade_wait is not None:
            self.upgrade_wait.client_data(data)
            return
        if self._error is not None:
            # Answering a bad request, or lingering after the answer: what follows is not parsed,
            # and only so much of it is read.
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES and self._error is _DISCARDING:
                self._close()
            return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0] :])
        except HttpParserError as exc:
            error = self._error or BadRequest(400, f"malformed request: {exc}")
            self._error = None
            self._reject(error)
        except Exception:
            log.exception("unexpected error handling a request from %s", self.client_ip)
            self._reject(BadRequest(500, "internal error"))
        else:
            if self._in_head:
                # httptools buffers an unfinished header line without calling us: bound it here
                # (the exact limit is applied per header in the callbacks).
                self._raw_head += len(data)
                if self._raw_head > 2 * self.options.max_header_bytes:
                    self._reject(BadRequest(431, "request header fields too large"))

    def eof_received(self) -> bool:
        # A client that half-closes is treated as gone: its upstream request is dropped now.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.ctx.connections.discard(self)
        # Only the transport's current protocol hears of the end: after a switch to HTTP/2 the
        # HTTP/2 side counts it instead.
        self.ctx.connection_closed()
        exchanges = [self.current, *self.queue]
        self.current = None
        self.queue.clear()
        for exchange in exchanges:
            if exchange is not None:
                exchange.abort()

    def pause_writing(self) -> None:
        self.client_paused = True
        if self.current is not None:
            self.current.client_write_paused(True)

    def resume_writing(self) -> None:
        self.client_paused = False
        if self.current is not None:
            self.current.client_write_paused(False)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._raw_head = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > self.options.max_header_bytes:
            self._fail(431, "request header fields too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # trailers are dropped
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.options.max_header_bytes:
            self._fail(431, "request header fields too large")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self.parser
        method = parser.get_method().decode("ascii", "replace")
        if method == "CONNECT":
            self._fail(405, "CONNECT is not supported")
        host = xff = request_id = connection = upgrade = None
        content_length: int | None = None
        chunked = expect_continue = proxy_connection = False
        headers = self._headers
        # One pass does everything per header: the lower-case index RequestHead.get uses (first
        # value wins), the framing and smuggling checks, and the lines forwarded upstream as they
        # are (the Exchange uses them when no filter edits the head).
        index: dict[str, str] = {}
        forward: list[str] = []
        for name, value in headers:
            lower = name.lower()
            if lower not in index:
                index[lower] = value
            if lower not in _SPECIAL_OR_SKIP:
                forward.append(f"{name}: {value}\r\n")
                continue
            if lower not in _SPECIAL:
                if lower == "proxy-connection":
                    proxy_connection = True  # llhttp reads it like Connection (keep-alive)
                continue  # hop-by-hop or rewritten by the proxy: not forwarded as it is
            if lower == "host":
                if host is not None:  # RFC 9112 3.2: identical copies too
                    self._fail(400, "more than one Host header")
                host = value
                forward.append(f"{name}: {value}\r\n")
            elif lower == "content-length":
                if content_length is not None or chunked:
                    self._fail(400, "conflicting Content-Length / Transfer-Encoding")
                if not value.strip().isdigit():
                    self._fail(400, "invalid Content-Length")
                content_length = int(value)
            elif lower == "transfer-encoding":
                if content_length is not None or chunked or value.strip().lower() != "chunked":
                    self._fail(
                        400,
                        "only 'Transfer-Encoding: chunked' is accepted (once, no Content-Length)",
                    )
                chunked = True
            elif lower == "x-forwarded-for":
                xff = value if xff is None else f"{xff}, {value}"
            elif lower == "x-request-id":
                request_id = value
                forward.append(f"{name}: {value}\r\n")
            elif lower == "connection":
                connection = value if connection is None else f"{connection}, {value}"
            elif lower == "upgrade":
                upgrade = value
            elif lower == "expect":
                expect_continue = value.lower() == "100-continue"
                forward.append(f"{name}: {value}\r\n")
        keep_alive = parser.should_keep_alive()
        if keep_alive and connection is None and not proxy_connection:
            # llhttp keeps an HTTP/1.0 (or 0.9) connection alive only when a Connection header
            # asks: this is HTTP/1.1, no need to format the version (str.format in httptools).
            http10 = False
        else:
            http10 = parser.get_http_version() == "1.0"
        if host is None and not http10:
            self._fail(400, "missing Host header")
        url = self._url
        if _HASH in url:
            self._fail(400, "a request target must not contain a fragment ('#')")
        if url[:1] == b"/":  # origin form, nearly every request
            path, _, query = url.decode("latin-1").partition("?")
            authority = host or ""
        else:
            path, query, authority = _split_target(url, host or "")
            if host is not None and authority != host:
                # RFC 9112 3.2.2: the absolute-form target's authority replaces the Host header.
                forward = [line for line in forward if line[:5].lower() != "host:"]
                forward.append(f"host: {authority}\r\n")
                index["host"] = authority
                headers = [(n, authority if n.lower() == "host" else v) for n, v in headers]
        # Keyword arguments cost a dict per call through type.__call__: set them after instead
        # (scheme keeps its "http" default).
        head = parsed_head(
            method, path, query, authority, headers, index, self.client_ip, self.ctx.port
        )
        head.peer = self.ctx.peer
        if self.tls:
            head.scheme = "https"
            head.sni = self.sni
        elif (
            upgrade is not None
            and upgrade.strip().lower() == "h2c"
            and "http2-settings" in index
            and not chunked
            and not content_length
            and self.current is None
            and not self.queue
        ):
            # RFC 7540 3.2: answered over HTTP/2 as stream 1 once the parser stops at the upgrade.
            listed = connection_tokens(connection) if connection else _NO_NAMES
            self._h2c = (index["http2-settings"].encode("latin-1"), _h2_fields(head, listed))
            return
        if host is None and authority:
            forward.append(f"host: {authority}\r\n")  # HTTP/1.0 without Host, absolute form
        extra_hop = connection_tokens(connection) if connection else _NO_NAMES
        websocket = (
            upgrade is not None
            and upgrade.lower() == "websocket"
            and connection is not None
            and "upgrade" in connection.lower()
        )
        try:
            trace = self.telemetry.start(head)
        except Exception:
            log.exception("telemetry start failed; continuing the trace without it")
            trace = NoopTelemetry().start(head)
        # Exchange(...) without type.__call__: __new__, then __init__ as a plain function
        # (a vectorcall, no argument tuple) — once per request.
        exchange = _new_exchange(Exchange)
        _init_exchange(
            exchange,
            self,
            head,
            self.ctx.holder.current,  # read once: the request keeps this snapshot to the end
            trace,
            keep_alive,
            http10,
            content_length,
            chunked,
            expect_continue,
            websocket,
            extra_hop,
            f"{xff}, {self.client_ip}" if xff else self.client_ip,
            request_id,
            forward if not extra_hop else None,
        )
        if websocket:
            self._upgrade_candidate = exchange
        self.parsing = exchange
        if self.current is None:
            self.current = exchange
            exchange.start()
        else:
            self.queue.append(exchange)
            if len(self.queue) >= self.options.max_pipelined:
                self.pause_reading_for(_QUEUE_FULL, True)

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.request_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        self.parsing = None
        if exchange is not None:
            if exchange.end_hook:
                exchange.request_complete()
            else:
                exchange.request_done = True  # all request_complete() would do

    # -- used by exchanges ---------------------------------------------------------------------

    def exchange_done(self, exchange: Exchange, keep_alive: bool) -> None:
        """The active exchange finished writing its response: start the next queued one."""
        if exchange is not self.current:
            return
        self.current = None
        if self._pausers:
            self.pause_reading_for(exchange, False)
        if self.closed:
            return
        if not keep_alive:
            if (
                self.tunnel is not None
                or self.upgrade_wait is not None
                or (
                    exchange.request_done
                    and not self.queue
                    and not self._in_head
                    and self._error is None  # else bytes after it were refused, and may still come
                )
            ):
                self._close()
            else:
                self._linger()  # request bytes unread, or pipelined ones still coming
            return
        if self.upgrade_wait is not None and self.upgrade_wait.exchange is exchange:
            self.upgrade_wait = None
        if self._pausers:
            self.pause_reading_for(_QUEUE_FULL, False)
        while self.current is None and self.queue:
            nxt = self.queue.pop(0)
            self.current = nxt
            nxt.start()
        if self.current is None and self._error is not None:
            self._write_error()

    def start_tunnel(self, tunnel: Tunnel) -> None:
        """The exchange switched protocols: client bytes go straight to its tunnel from now on."""
        self.upgrade_wait = None
        self.tunnel = tunnel
        self.pause_reading_for(tunnel.exchange, False)

    def interim(self, status: int) -> None:
        """``100 Continue`` to a client that asked for it."""
        if status == 100 and not self.closed:
            self.transport.write(_CONTINUE)

    def pause_reading_for(self, key: object, paused: bool) -> None:
        """Reading pauses while anyone (an exchange, a full queue) asks, and resumes after all."""
        pausers = self._pausers
        if paused:
            if pausers is None:
                pausers = self._pausers = set()
            if not pausers and not self.closed:
                self.transport.pause_reading()
            pausers.add(key)
        elif pausers and key in pausers:
            pausers.discard(key)
            if not pausers and not self.closed:
                self.transport.resume_reading()

    def drain(self) -> None:
        """Shutdown: close now when idle, else after the response in flight (a request still
        waiting for an awaited endpoint choice is answered 503 at once)."""
        if self.current is None and not self.queue:
            self._close()
        elif self.current is not None:
            self.current.drain()

    # -- internals -----------------------------------------------------------------------------

    def _fail(self, status: int, message: str) -> None:
        self._error = BadRequest(status, message)
        raise self._error

    def _reject(self, error: BadRequest) -> None:
        """Stop parsing; answer the error once earlier requests are answered, then close."""
        self._error = error
        broken, self.parsing = self.parsing, None
        self._in_head = False
        if broken is not None:
            # The request whose body was malformed: drop its upstream request.
            if broken is self.current:
                self._error = None
                broken.request_malformed(error.status, error.message)
                return
            if broken in self.queue:
                self.queue.remove(broken)
                broken.abort()
        if self.current is None:
            self._write_error()

    def _write_error(self) -> None:
        error = self._error
        if error is None or error is _DISCARDING or self.closed:
            return
        response = error_response(error.status, error.message)
        self.transport.write(direct_response_bytes(response, head_only=False, close=True))
        # The client may still be sending the request we refused: closing now would reset the
        # connection, and a reset can destroy the answer before the client read it.
        self._linger()

    def _upgrade(self, rest: bytes) -> None:
        exchange = self._upgrade_candidate
        self._upgrade_candidate = None
        if self.closed:
            return
        if self._h2c is not None:
            settings, fields = self._h2c
            self._h2c = None
            self._take_over_h2(settings, fields, rest)
            return
        tunnel = exchange.tunnel if exchange is not None else None
        if tunnel is not None and tunnel.waiting():
            self.upgrade_wait = tunnel
            if rest:
                tunnel.client_data(rest)
            return
        # Not a WebSocket upgrade (h2c, ...): it was answered as a plain request; carry on parsing.
        self.parser = HttpRequestParser(self)
        if rest:
            self.data_received(rest)

    def _switch_to_h2(self, data: bytes) -> None:
        """The client spoke the HTTP/2 preface: an HTTP/2 connection takes this one over."""
        self.closed = True
        self.ctx.connections.discard(self)
        h2 = H2Downstream(self.ctx, self.client_ip, "https" if self.tls else "http", self.sni)
        self.transport.set_protocol(h2.engine)
        h2.engine.connection_made(self.transport)
        h2.engine.data_received(data)

    def _take_over_h2(
        self, settings: bytes, fields: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """Switch protocols to h2c: the upgrade request becomes stream 1."""
        self.closed = True
        self.ctx.connections.discard(self)
        h2 = H2Downstream(self.ctx, self.client_ip)
        try:
            h2.engine.take_over(self.transport, settings, fields)
        except Exception as exc:  # an invalid HTTP2-Settings value
            log.debug("h2c upgrade from %s refused: %s", self.client_ip, exc)
            self.ctx.connections.discard(h2)
            self.transport.close()
            return
        if rest:
            h2.engine.data_received(rest)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.close()

    def _linger(self) -> None:
        """Close after an answer that left request bytes unread (413, an early error, a
        ``Connection: close`` answer with requests pipelined behind it).

        Closing at once would reset the connection while the client still sends, and a reset
        can destroy the answer before the client read it. So, as nginx's lingering close does:
        stop parsing, end our side (FIN), and discard what the client still sends, for at most
        ``LINGER_SECONDS`` and ``LINGER_BYTES``; a client that closes its side ends it sooner.
        """
        self.parsing = None
        self._error = _DISCARDING  # data_received drops what follows
        queued, self.queue = self.queue, []
        for exchange in queued:
            exchange.abort()  # pipelined behind an answer that closes: never started
        if self._pausers:
            self._pausers.clear()
            self.transport.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self._close)

    def head_tick(self) -> None:
        """Called every ``header_timeout / IDLE_TICKS`` s; cuts a request head (or a new
        connection's wait for its first) unfinished after a whole header timeout.

        A head that began gets 408 (then the lingering close); a connection that never sent a
        byte is just closed. Kept-alive connections between requests, and requests whose
        response is under way, are the idle timeout's."""
        if self.closed or self._error is not None or self.current is not None:
            return
        if self._in_head:
            mark: object = self._headers  # a new list per request head
        elif not self.activity and self.tunnel is None:
            mark = self  # no byte yet
        else:
            self._head_mark = None
            return
        if mark is not self._head_mark:
            self._head_mark = mark
            self._head_ticks = 0
            return
        self._head_ticks += 1
        if self._head_ticks < IDLE_TICKS:
            return
        log.debug("request head from %s not received in time", self.client_ip)
        if mark is self:
            self._close()
        else:
            self._reject(BadRequest(408, "the request head did not arrive in time"))

    def idle_tick(self) -> None:
        """Called every ``idle_timeout / IDLE_TICKS`` s; closes after a whole timeout of quiet."""
        if self.closed:
            return
        if self.activity != self._seen_activity:
            self._seen_activity = self.activity
            self._quiet_ticks = 0
            return
        self._quiet_ticks += 1
        if self._quiet_ticks >= IDLE_TICKS:
            log.debug("closing idle connection from %s", self.client_ip)
            exchange = self.tunnel.exchange if self.tunnel is not None else self.current
            if exchange is not None:
                exchange.idle_timeout()
            self._close()


_H2C_SKIP = frozenset({"host", "http2-settings", "te"})


def _h2_fields(head: RequestHead, extra_hop: frozenset[str]) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 upgrade request's head as an HTTP/2 header block (pseudo-headers first)."""
    fields = [
        (b":method", head.method.encode("latin-1")),
        (b":scheme", b"http"),
        (b":authority", head.authority.encode("latin-1")),
        (b":path", head.target.encode("latin-1")),
    ]
    for name, value in head.headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in _H2C_SKIP or lower in extra_hop:
            continue
        fields.append((lower.encode("latin-1"), value.encode("latin-1")))
    return fields


def _split_target(url: bytes, host: str) -> tuple[str, str, str]:
    """Path, query and authority from a request target (origin or absolute form)."""
    target = url.decode("latin-1")
    if not target.startswith("/"):
        scheme_end = target.find("://")
        if scheme_end != -1:
            rest = target[scheme_end + 3 :]
            slash = rest.find("/")
            host, target = (rest, "/") if slash == -1 else (rest[:slash], rest[slash:])
    path, _, query = target.partition("?")
    return path, query, host
