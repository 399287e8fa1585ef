"""The response relay: a response on its way to the client, and the gateway's own answers.

Once the final response head of a try is accepted (no retry), the relay owns the upstream
connection: it rewrites the head for the client (hop-by-hop fields out, response filters and a
session cookie applied, framing chosen), streams body bytes as they arrive (flushed once per
upstream read: one write), shows the response to the exchange's taps, and hands the end to the
exchange. An in-gateway responder writes through the same relay, so its responses get the same
framing, metrics and traces. Direct answers (404, 503, redirects ...) are written whole by
:meth:`Http1Relay.answer`.

This module is the HTTP/1.1 client's relay; :mod:`gateway.proxy.response_relay_h2` answers HTTP/2
clients through their stream. Both take upstream heads raw (HTTP/1.1 upstreams) or as fields
(HTTP/2 upstreams).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from gateway.proxy.headers import (
    RESPONSE_SKIP,
    TOKEN_NAMES,
    check_response_fields,
    connection_tokens,
    direct_response_bytes,
    is_token_name,
    reason_bytes,
    response_head_bytes,
)
from gateway.proxy.states import STREAMING
from gateway.proxy.upstream import split_head

if TYPE_CHECKING:
    import asyncio

    from gateway.proxy.exchange import Exchange
    from gateway.proxy.response_relay_h2 import H2Relay
    from gateway.proxy.upstream import Http1Connection
    from gateway.proxy.upstream_attempt import UpstreamAttempt
    from gateway.request import DirectResponse

Fields = list[tuple[bytes, bytes]]

_TERMINAL_CHUNK = b"0\r\n\r\n"
# Response chunks up to this size are re-framed into one buffer; larger ones are written as parts.
_FRAME_COPY_LIMIT = 16 * 1024
# A hop-by-hop field in a lower-cased raw response head (llhttp allows no space before ':').
_HOP_FIELD = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade):"
)


def response_fields(exchange: Exchange, status: int, headers: Fields) -> tuple[Fields, bool, bool]:
    """The upstream's fields as the client gets them (hop-by-hop dropped, filters applied,
    session cookie added), whether the upstream chunked the body, and whether it had a length.
    """
    kept: Fields = []
    chunked = has_length = False
    connection: bytes | None = None
    for name, value in headers:
        lower = name.lower()
        if lower in RESPONSE_SKIP:
            if lower == b"transfer-encoding":
                chunked = True
            elif lower == b"connection":
                connection = value
            continue
        if lower == b"content-length":
            has_length = True
        kept.append((name, value))
    if connection is not None:
        listed = connection_tokens(connection.decode("latin-1"))
        if listed:
            kept = [(n, v) for n, v in kept if n.decode("latin-1").lower() not in listed]
    rule, choice = exchange.rule, exchange.choice
    if (
        rule is not None
        and choice is not None
        and (rule.response_filters or choice.response_filters)
    ):
        edited = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in kept]
        for response_filter in rule.response_filters:
            response_filter.apply(exchange.head, status, edited)
        for response_filter in choice.response_filters:
            response_filter.apply(exchange.head, status, edited)
        kept = [(n.encode("latin-1", "replace"), v.encode("latin-1", "replace")) for n, v in edited]
    if exchange.extra_response is not None:
        extra_name, extra_value = exchange.extra_response
        kept.append((extra_name.encode("latin-1"), extra_value.encode("latin-1", "replace")))
    return kept, chunked, has_length


class AfterTheHead:
    """The connection events a relay never acts on: once the final head arrived, neither an
    interim response, another head nor a protocol switch can follow (a 101 is the tunnel's)."""

    __slots__ = ()

    def upstream_informational(self, status: int) -> None:
        """Ignored."""

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        """Not called."""

    def upstream_head(
        self, conn: Http1Connection, status: int, reason: bytes, headers: Fields
    ) -> None:
        """Not called."""

    def upstream_upgraded(
        self, conn: Http1Connection, reason: bytes, headers: Fields, rest: bytes
    ) -> None:
        """Not called."""

    def tunnel_data(self, data: bytes) -> None:
        """Not called."""


class Http1Relay(AfterTheHead):
    """The response side of an HTTP/1.1 client connection: head, body (re-chunked when needed),
    end, one response at a time.

    A base of :class:`gateway.proxy.downstream.DownstreamConnection`: HTTP/1.1 answers requests in
    order, so the response being relayed is always the connection's ``current`` exchange's, and a
    response costs no object of its own. From the response head on, the connection is the
    upstream connection's owner (the exchange's current try keeps a reference for backpressure
    and endings).
    """

    __slots__ = ("chunked", "out", "tap_chunks", "until_eof")

    # Provided by the connection.
    current: Exchange | None
    transport: asyncio.Transport

    def relay_init(self) -> None:
        """The relay's state before any response (called by the connection's constructor)."""
        self.out: list[bytes] = []  # what the current upstream read produced
        self.chunked = False  # re-chunking for the client
        self.until_eof = False  # the upstream's body ends when it closes
        self.tap_chunks: list[bytes] | None = None  # chunks written, not yet shown to taps

    def relay_begin(self, exchange: Exchange, conn: Http1Connection | None) -> None:
        """A response of ``exchange`` (the current one) starts: own its upstream connection."""
        self.chunked = self.until_eof = False
        exchange.relay = self
        exchange.state = STREAMING
        if conn is not None:
            conn.owner = self

    def start(self, status: int, reason: bytes, headers: Fields) -> None:
        """Queue the head for the client (written with the first body bytes or the end)."""
        exchange = self.current
        assert exchange is not None
        kept, chunked, has_length = response_fields(exchange, status, headers)
        if exchange.tunnel is not None:
            exchange.keep_alive = False  # the client's parser stopped at the upgrade request
        kept += self.framing(status, chunked, has_length)
        self.out.append(response_head_bytes(status, reason, kept))
        if exchange.taps is not None:
            for tap in exchange.taps:
                tap.response_head(status, kept)

    def framing(self, status: int, chunked: bool, has_length: bool) -> Fields:
        """The framing fields the client gets, deciding re-chunking and keep-alive on the way."""
        exchange = self.current
        assert exchange is not None
        fields: Fields = []
        if exchange.head_only or status == 204 or status == 304:
            pass
        elif chunked or not has_length:
            self.until_eof = not chunked
            if exchange.http10:
                exchange.keep_alive = False  # HTTP/1.0 clients read to EOF
            else:
                self.chunked = True
                fields.append((b"transfer-encoding", b"chunked"))
        if not exchange.keep_alive or exchange.down.ctx.draining:
            exchange.keep_alive = False
            fields.append((b"connection", b"close"))
        elif exchange.http10:
            fields.append((b"connection", b"keep-alive"))
        return fields

    # -- the body (the upstream connection's owner from now on) ---------------------------------

    def upstream_body(self, data: bytes) -> None:
        """Response bytes: queued for the client, written once per upstream read."""
        exchange = self.current
        if exchange is None or exchange.state != STREAMING:
            return
        size = len(data)
        exchange.record.response_bytes += size
        exchange.down.activity += 1
        if not self.chunked:
            self.out.append(data)
        elif size <= _FRAME_COPY_LIMIT:
            # One buffer per chunk (an SSE event): one small copy beats three list entries.
            self.out.append(b"%x\r\n%b\r\n" % (size, data))
        else:
            self.out += (b"%x\r\n" % size, data, b"\r\n")
        if exchange.taps is not None:
            if self.tap_chunks is None:
                self.tap_chunks = []
            self.tap_chunks.append(data)

    def upstream_flush(self) -> None:
        """Write what the last upstream read produced in one call (one syscall), then tap it."""
        out = self.out
        if out:
            self.out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)
        if self.tap_chunks is not None:
            self.show_taps()

    def show_taps(self) -> None:
        """Give the taps the chunks just written (after the write: a tap never delays bytes)."""
        chunks, self.tap_chunks = self.tap_chunks, None
        exchange = self.current
        for tap in (exchange.taps if exchange is not None else None) or ():
            for chunk in chunks or ():
                tap.response_body(chunk)

    def upstream_trailers(self, headers: Fields) -> None:
        """Response trailers from an HTTP/2 upstream: an HTTP/1.1 client does not get them."""
        exchange = self.current
        if exchange is not None and exchange.taps is not None:
            for tap in exchange.taps:
                tap.response_trailers(headers)

    def upstream_complete(self, conn: Http1Connection) -> None:
        """The response ended: write its end and let the exchange finish."""
        exchange = self.current
        if exchange is None or exchange.state != STREAMING:
            return
        self.write_end()
        exchange.response_complete(conn)

    def write_end(self) -> None:
        """Write the rest of the response and its end (the last chunk when re-chunking)."""
        out = self.out
        if self.chunked:
            out.append(_TERMINAL_CHUNK)
        # upstream_flush's body, inlined: this runs once per request (bench.instructions).
        if out:
            self.out = []
            if len(out) == 1:
                self.transport.write(out[0])
            else:
                self.transport.writelines(out)
        if self.tap_chunks is not None:
            self.show_taps()

    def upstream_lost(self, conn: Http1Connection, reason: str) -> None:
        """The upstream closed or broke framing before the response ended."""
        exchange = self.current
        if exchange is None or exchange.state != STREAMING:
            return
        attempt = exchange.attempt
        if attempt is not None:
            attempt.conn = None
        if self.until_eof and reason == "closed":
            self.write_end()  # a close-delimited body ends at EOF: a normal end
            exchange.response_complete(None)
        else:
            exchange.cut("UC", attempt, failure="reset")

    def upstream_write_paused(self, paused: bool) -> None:
        """Request-body backpressure: stop reading the client while the upstream is full."""
        exchange = self.current
        if exchange is not None:
            exchange.down.pause_reading_for(exchange, paused)

    # -- in-gateway responders (gateway.proxy.responder) ---------------------------------------

    def responder_head(self, exchange: Exchange, status: int, headers: Fields) -> None:
        """An in-gateway responder's response head: relayed like a proxied one (hop-by-hop
        fields out, filters and taps, framing chosen), written with the first body bytes."""
        self.relay_begin(exchange, None)
        exchange.record.status = status
        self.start(status, b"", headers)

    def responder_chunk(self, data: bytes) -> None:
        """A responder's body bytes after its head, written at once (re-chunked when the
        framing says so); through the taps' way when a tap looks or the head is still queued."""
        exchange = self.current
        if exchange is None or exchange.taps is not None or self.out:
            self.upstream_body(data)
            self.upstream_flush()
            return
        size = len(data)
        exchange.record.response_bytes += size
        exchange.down.activity += 1
        if not self.chunked:
            self.transport.write(data)
        elif size <= _FRAME_COPY_LIMIT:
            self.transport.write(b"%x\r\n%b\r\n" % (size, data))
        else:
            self.transport.writelines((b"%x\r\n" % size, data, b"\r\n"))

    def responder_whole(
        self, exchange: Exchange, status: int, headers: Fields, body: bytes
    ) -> bool:
        """A responder's whole response in one write, when nothing looks at it on the way (no
        response filter, tap or session cookie) and the app set no hop-by-hop field; False,
        with nothing written, when it must take :meth:`responder_head`'s way.

        The same bytes as that way: the app's fields, a Content-Length for the body unless the
        app gave one, ``connection: close`` when the connection closes after it. A field that
        would break the head, or a Content-Length the body does not have, raises RuntimeError.
        """
        if (
            not exchange.choice.verbatim  # type: ignore[union-attr]
            or exchange.extra_response is not None
            or exchange.http10
            or exchange.tunnel is not None
        ):
            return False
        out = [b"HTTP/1.1 %d %s\r\n" % (status, reason_bytes(status))]
        declared: bytes | None = None
        for name, value in headers:
            lower = name.lower()
            if lower in RESPONSE_SKIP:
                return False
            if lower == b"content-length":
                declared = value
            elif lower not in TOKEN_NAMES and not is_token_name(lower):
                check_response_fields(headers)  # raises, naming the field
            out += (name, b": ", value, b"\r\n")
        lines = len(headers) + 2  # and the status line and the blank line
        if exchange.head_only or status == 204 or status == 304:
            pass
        elif declared is None:
            out.append(b"content-length: %d\r\n" % len(body))
            lines += 1
        elif not declared.isdigit() or int(declared) != len(body):
            raise RuntimeError(f"response content-length {declared!r}, body of {len(body)} bytes")
        if not exchange.keep_alive or exchange.down.ctx.draining:
            exchange.keep_alive = False
            out.append(b"connection: close\r\n")
            lines += 1
        out.append(b"\r\n")
        head = b"".join(out)
        # Each line ends with our CRLF: any other CR or LF came in a value of the app's.
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            check_response_fields(headers)  # raises, naming the field
        record = exchange.record
        record.status = status
        record.response_bytes += len(body)
        exchange.down.activity += 1
        if len(body) <= _FRAME_COPY_LIMIT:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        return True

    # -- ending early ---------------------------------------------------------------------------

    def cut(self) -> None:
        """End a response that already started: the client sees the connection close."""
        self.upstream_flush()
        if self.current is not None:
            self.current.keep_alive = False
        self.transport.close()


def relay_raw(
    exchange: Exchange,
    attempt: UpstreamAttempt,
    conn: Http1Connection,
    status: int,
    raw: bytes,
) -> None:
    """An HTTP/1.1 upstream's head: relay it, passed on as received when nothing needs to
    change it.

    That is when no filter, session cookie or tap looks at it, the client speaks HTTP/1.1, and
    the upstream framed the body with Content-Length and sent no hop-by-hop field; the connection
    header is added when the client connection closes after it.
    """
    relay: Http1Relay = exchange.down  # type: ignore[assignment]
    out = relay.out
    # relay_begin, inlined: once per proxied request.
    relay.chunked = relay.until_eof = False
    exchange.relay = relay
    exchange.state = STREAMING
    conn.owner = relay
    exchange.record.status = status
    if (
        exchange.choice.verbatim  # type: ignore[union-attr]
        and not exchange.head_only
        and not exchange.http10
        and exchange.tunnel is None
        and raw.startswith(b"HTTP/1.1 ")
    ):
        lowered = raw.lower()
        # find(), not ``in``: bytes.__contains__ raises and clears a TypeError for a bytes key.
        if lowered.find(b"\r\ncontent-length:") != -1 and _HOP_FIELD.search(lowered) is None:
            if exchange.keep_alive and not exchange.down.ctx.draining:
                out.append(raw + b"\r\n")
            else:
                exchange.keep_alive = False
                out.append(raw + b"connection: close\r\n\r\n")
            return
    reason, headers = split_head(raw)
    relay.start(status, reason, headers)


def relay_fields(
    exchange: Exchange,
    attempt: UpstreamAttempt,
    conn: Http1Connection,
    status: int,
    reason: bytes,
    headers: Fields,
) -> None:
    """A response head given as fields (an HTTP/2 upstream; any HTTP/1.1 upstream for an HTTP/2
    client): the client side's relay (HTTP/1.1 or HTTP/2) takes it."""
    exchange.record.status = status
    relay: Http1Relay | H2Relay = exchange.down  # type: ignore[assignment]
    relay.relay_begin(exchange, conn)
    relay.start(status, reason, headers)


def answer(exchange: Exchange, response: DirectResponse, close: bool) -> bool:
    """Write a whole response the gateway makes itself; True when the connection stays open."""
    # A client that asked for 100-continue may or may not send its body now: close.
    close = (
        close
        or not exchange.keep_alive
        or exchange.down.ctx.draining
        or exchange.tunnel is not None
        or (not exchange.request_done and exchange.expect_continue)
    )
    exchange.record.response_bytes = 0 if exchange.head_only else len(response.body)
    exchange.down.transport.write(  # type: ignore[attr-defined]
        direct_response_bytes(response, head_only=exchange.head_only, close=close)
    )
    return not close
