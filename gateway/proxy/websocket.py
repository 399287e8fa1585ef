"""WebSocket upgrades: an HTTP/1.1 request answered with 101 becomes a byte tunnel both ways.

The client's bytes after its upgrade request wait here (bounded: reading pauses past the body
buffer) until the upstream answers; a 101 is relayed and from then on the tunnel owns the
upstream connection and splices bytes in both directions until either side closes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.proxy.headers import RESPONSE_SKIP, response_head
from gateway.proxy.states import DONE, TUNNEL

if TYPE_CHECKING:
    from gateway.proxy.exchange import Exchange
    from gateway.proxy.upstream import Http1Connection
    from gateway.proxy.upstream_attempt import UpstreamAttempt


class Tunnel:
    """One upgrade request and, after a 101, its spliced connection."""

    __slots__ = ("attempt", "conn", "exchange", "pending", "pending_size")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.pending: list[bytes] | None = []  # client bytes received before the 101
        self.pending_size = 0
        self.conn: Http1Connection | None = None
        self.attempt: UpstreamAttempt | None = None

    @property
    def open(self) -> bool:
        """True once the upstream switched protocols."""
        return self.conn is not None

    def waiting(self) -> bool:
        """True while the upgrade request waits for its answer (client bytes are buffered)."""
        return self.pending is not None and self.exchange.state != DONE

    def client_data(self, data: bytes) -> None:
        """Client → upstream bytes (buffered until the 101)."""
        exchange = self.exchange
        exchange.record.request_bytes += len(data)
        if self.conn is not None:
            self.conn.send(data)
        elif self.pending is not None:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > exchange.down.options.max_buffered_body:
                exchange.down.pause_reading_for(exchange, True)

    def upgraded(
        self,
        attempt: UpstreamAttempt,
        conn: Http1Connection,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        rest: bytes,
    ) -> None:
        """101 from the upstream: send it on and splice bytes both ways from now on."""
        exchange = self.exchange
        exchange.cancel_timers()
        if attempt.timer is not None:
            attempt.timer.cancel()
            attempt.timer = None
        exchange.state = TUNNEL
        exchange.record.status = 101
        self.conn = conn
        self.attempt = attempt
        conn.owner = self
        out = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in headers
            if name.lower() not in RESPONSE_SKIP
        ]
        out += (("connection", "upgrade"), ("upgrade", "websocket"))
        transport = exchange.down.transport  # type: ignore[attr-defined]
        transport.write(response_head(101, reason.decode("latin-1") or "Switching Protocols", out))
        if rest:
            transport.write(rest)
        pending, self.pending = self.pending or [], None
        if pending:
            conn.send_many(pending)
        self.pending_size = 0
        exchange.down.start_tunnel(self)

    # -- the upgraded connection's events (UpstreamOwner) -----------------------------------------

    def tunnel_data(self, data: bytes) -> None:
        """Upstream → client bytes."""
        exchange = self.exchange
        exchange.record.response_bytes += len(data)
        exchange.down.activity += 1
        exchange.down.transport.write(data)  # type: ignore[attr-defined]

    def upstream_lost(self, conn: Http1Connection, reason: str) -> None:
        """The upstream closed the tunnel: close the client too."""
        if conn is not self.conn:
            return
        self.conn = None
        if self.attempt is not None:
            self.attempt.conn = None
        self.exchange.end_tunnel()

    def upstream_write_paused(self, paused: bool) -> None:
        """Client → upstream backpressure."""
        self.exchange.down.pause_reading_for(self.exchange, paused)

    def upstream_flush(self) -> None:
        """Bytes are written as they come."""

    def upstream_informational(self, status: int) -> None:
        """Not after a 101."""

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        """Not after a 101."""

    def upstream_head(
        self, conn: Http1Connection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Not after a 101."""

    def upstream_body(self, data: bytes) -> None:
        """Not after a 101."""

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Not after a 101."""

    def upstream_complete(self, conn: Http1Connection) -> None:
        """Not after a 101."""

    def upstream_upgraded(
        self, conn: Http1Connection, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """Not after a 101."""
