"""Upstream connections: one class per wire protocol, chosen by ``Endpoint.protocol``.

A connection parses responses and hands events to its current *owner* (a request exchange or a
mirror copy). It never decides what to do with them: owners do, so the same connection class
serves the main path, retries and mirrors.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING, Protocol

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint
    from gateway.proxy.pool import UpstreamPool


# A response head larger than this (status line and fields) is refused as a bad response.
MAX_RESPONSE_HEAD = 256 * 1024


class ConnState(enum.Enum):
    """Where a connection is in its life; the pool only hands out IDLE ones."""

    CONNECTING = "connecting"
    IDLE = "idle"
    ACTIVE = "active"
    TUNNEL = "tunnel"
    CLOSED = "closed"


# Plain module globals for the hot path: ``ConnState.X`` goes through the Enum metaclass's
# ``__getattr__`` hook on every load (unspecialised, ~10x a global load).
CONNECTING = ConnState.CONNECTING
IDLE = ConnState.IDLE
ACTIVE = ConnState.ACTIVE
TUNNEL = ConnState.TUNNEL
CLOSED = ConnState.CLOSED


class UpstreamOwner(Protocol):
    """What a connection reports to whoever sent the current request."""

    def upstream_informational(self, status: int) -> None:
        """A 1xx (other than 101) arrived."""

    def upstream_head(
        self, conn: Http1Connection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """The final response head arrived."""

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        """The final response head as received: status line and fields, each ending in CRLF.

        HTTP/1.1 connections report heads this way (no per-field parsing on the hot path);
        owners that need the fields call :func:`split_head`.
        """

    def upstream_body(self, data: bytes) -> None:
        """Response body bytes (de-chunked)."""

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Response trailers (HTTP/2 upstreams; HTTP/1.1 chunked trailers are dropped)."""

    def upstream_complete(self, conn: Http1Connection) -> None:
        """The response ended; the connection is detached from the owner."""

    def upstream_lost(self, conn: Http1Connection, reason: str) -> None:
        """The connection closed or sent garbage before the response ended."""

    def upstream_flush(self) -> None:
        """One upstream read was parsed: write out what it produced."""

    def upstream_write_paused(self, paused: bool) -> None:
        """The upstream socket buffer filled (True) or drained (False)."""

    def upstream_upgraded(
        self,
        conn: Http1Connection,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
        rest: bytes,
    ) -> None:
        """A 101 arrived: from now on bytes are spliced; ``rest`` came after the head."""

    def tunnel_data(self, data: bytes) -> None:
        """Raw bytes from an upgraded connection."""


class Http1Connection(asyncio.Protocol):
    """An HTTP/1.1 connection to one endpoint, reused across requests (no pipelining)."""

    __slots__ = (
        "_awaiting_head",
        "_head_at",
        "_head_buf",
        "_interim",
        "_upgrade_head",
        "_upgrading",
        "endpoint",
        "idle_list",
        "idle_since",
        "keep_alive",
        "no_body",
        "owner",
        "parser",
        "pool",
        "reading_paused",
        "served",
        "state",
        "transport",
    )

    def __init__(self, pool: UpstreamPool, endpoint: Endpoint) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.owner: UpstreamOwner | None = None
        self.state = CONNECTING
        self.idle_since = 0.0
        self.idle_list: list[Http1Connection] = []  # the pool's idle list for this endpoint
        self.keep_alive = True
        self.no_body = False  # the request was HEAD: the head ends the response
        self.reading_paused = False
        self.served = 0  # requests sent on this connection
        # Response heads are sliced from the received bytes rather than collected field by field
        # (httptools calls Python once per field): bytes since the head began, and where it is.
        self._awaiting_head = True
        self._head_buf = b""
        self._head_at = 0
        self._upgrade_head = b""
        self._upgrading = False
        self._interim = False

    # -- used by owners ------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Write bytes to the upstream."""
        if self.transport is not None:
            self.transport.write(data)

    def send_many(self, chunks: list[bytes]) -> None:
        """Write several buffers in one call."""
        if self.transport is not None:
            self.transport.writelines(chunks)

    def pause_reading(self) -> None:
        """Stop reading responses (the client cannot take more)."""
        if self.transport is not None and self.state is not CLOSED:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read responses again."""
        if self.transport is not None and self.state is not CLOSED:
            self.reading_paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the owner and reset the connection at once (its response is unwanted)."""
        self.owner = None
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close gracefully (idle expiry, pool shutdown)."""
        self.owner = None
        self.state = CLOSED
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        owner = self.owner
        if self.state is TUNNEL:
            if owner is not None:
                owner.tunnel_data(data)
            return
        if owner is None:
            # Bytes on an idle connection mean the upstream broke framing: never reuse it.
            self.close()
            return
        if self._awaiting_head:
            buf = self._head_buf
            buf = self._head_buf = buf + data if buf else data
            head_at = self._head_at
            if len(buf) - head_at > MAX_RESPONSE_HEAD and buf.find(b"\r\n\r\n", head_at) == -1:
                self._lost("bad-response")  # an endless head
                return
        try:
            self.parser.feed_data(data)
        except HttpParserUpgrade as exc:
            if self._upgrading and self.owner is owner:
                self.state = TUNNEL
                reason, headers = split_head(self._upgrade_head)
                owner.upstream_upgraded(self, reason, headers, data[exc.args[0] :])
        except HttpParserError:
            self._lost("bad-response")
        else:
            # The owner now: the relay when this read carried the head. None when the response
            # ended (flushed by upstream_complete).
            current = self.owner
            if current is not None:
                current.upstream_flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.pool.forget(self)
        self._lost("closed" if exc is None else "reset")

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.upstream_write_paused(False)

    # -- httptools callbacks -------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        # llhttp accepted the head, so it is in strict form (CRLF line ends, no folding, no space
        # before a colon): slicing it at the first empty line agrees with the parser.
        buf = self._head_buf
        start = self._head_at
        end = buf.find(b"\r\n\r\n", start)
        raw = buf[start : end + 2]
        self._head_at = end + 4
        owner = self.owner
        if owner is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                self._upgrading = True
                self._upgrade_head = raw
            else:
                self._interim = True  # the final head follows, maybe in the same bytes
                owner.upstream_informational(status)
            return
        self._awaiting_head = False
        self._head_buf = b""
        self._head_at = 0
        self.keep_alive = self.parser.should_keep_alive()
        owner.upstream_head_raw(self, status, raw)
        if self.no_body and self.owner is not None:
            # httptools cannot be told a response answers HEAD, so it would wait for the body
            # Content-Length announces: end the response here and never reuse the connection.
            self.keep_alive = False
            self._complete()

    def on_body(self, body: bytes) -> None:
        owner = self.owner
        if owner is not None:
            owner.upstream_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False  # a 1xx ended; the final response follows
            return
        if not self._upgrading:
            self._awaiting_head = True  # the next response's head
            owner = self.owner  # _complete(), inlined
            if owner is not None:
                self.owner = None
                owner.upstream_complete(self)

    # -- internals -----------------------------------------------------------------------------

    def _complete(self) -> None:
        self._awaiting_head = True
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.upstream_complete(self)

    def _lost(self, reason: str) -> None:
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.upstream_lost(self, reason)
        if self.state is not CLOSED and self.transport is not None:
            self.state = CLOSED
            self.transport.abort()


def split_head(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The reason phrase and the fields of a raw response head (as llhttp accepted it)."""
    lines = raw.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    reason = parts[2] if len(parts) > 2 else b""
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers.append((name, value.strip(b" \t")))
    return reason, headers


# The connection class for each Endpoint.protocol; h2c slots in here.
CONNECTION_CLASSES: dict[str, type[Http1Connection]] = {"http/1.1": Http1Connection}
