"""The response relay for HTTP/2 clients: a response leaves as frames on the request's stream.

Same job as :mod:`gateway.proxy.response_relay` (head rewriting, streaming, taps, the end), but the
response fields become a HEADERS frame (sent with the first body bytes, or alone with END_STREAM:
gRPC's trailers-only form), body bytes become DATA and upstream trailers (gRPC's
``grpc-status``) go out as trailers. A response that cannot finish resets the stream, not the
connection. gRPC clients that the gateway answers itself (no route, no healthy upstream, a
timeout) get a trailers-only gRPC status, which they read as an error code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from gateway.proxy.h2_common import CANCEL
from gateway.proxy.headers import check_response_fields
from gateway.proxy.response_relay import AfterTheHead, Fields, relay_fields, response_fields
from gateway.proxy.states import STREAMING
from gateway.proxy.upstream import split_head

if TYPE_CHECKING:
    from gateway.proxy.exchange import Exchange
    from gateway.proxy.h2_server import ServerStream
    from gateway.proxy.upstream import Http1Connection
    from gateway.proxy.upstream_attempt import UpstreamAttempt
    from gateway.request import DirectResponse

# gRPC's mapping of HTTP statuses to status codes (doc/http-grpc-status-mapping.md), used for the
# answers the gateway gives gRPC clients itself; a timeout the gateway enforces is a deadline.
_GRPC_FOR_HTTP = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 4}
_GRPC_UNKNOWN = 2


def grpc_status_for(status: int) -> int:
    """The gRPC status code a gateway-made HTTP answer becomes for a gRPC client."""
    return _GRPC_FOR_HTTP.get(status, _GRPC_UNKNOWN)


class H2Relay(AfterTheHead):
    """The response side of one HTTP/2 request stream.

    A base of :class:`gateway.proxy.h2_downstream.StreamDown`, which provides ``exchange`` and
    ``stream``: a stream carries one response, so it costs no object of its own.
    """

    __slots__ = ("head", "out", "trailer_fields")

    # Provided by the stream handler.
    exchange: Exchange
    stream: ServerStream

    def relay_init(self) -> None:
        """The relay's state before the response (called by the handler's constructor)."""
        self.head: tuple[int, Fields] | None = None  # fields not sent yet
        self.out: list[bytes] = []
        self.trailer_fields: Fields | None = None  # the upstream's, sent after the body

    def relay_begin(self, exchange: Exchange, conn: Http1Connection | None) -> None:
        """The response starts: own its upstream connection."""
        exchange.relay = self
        exchange.state = STREAMING
        if conn is not None:
            conn.owner = self

    def start(self, status: int, reason: bytes, headers: Fields) -> None:
        """Keep the response fields until the first body bytes or the end (trailers-only)."""
        fields, _, _ = response_fields(self.exchange, status, headers)
        fields = [(name.lower(), value) for name, value in fields]
        self.head = (status, fields)
        if self.exchange.taps is not None:
            for tap in self.exchange.taps:
                tap.response_head(status, fields)

    def upstream_body(self, data: bytes) -> None:
        """Response body bytes, sent at the end of the upstream read."""
        exchange = self.exchange
        if exchange.state != STREAMING:
            return
        exchange.record.response_bytes += len(data)
        self.out.append(data)

    def upstream_trailers(self, headers: Fields) -> None:
        """Response trailers (gRPC status): sent after the body."""
        self.trailer_fields = headers
        exchange = self.exchange
        if exchange.grpc:
            for name, value in headers:
                if name == b"grpc-status":
                    exchange.record.grpc_status = value.decode("latin-1")
        if exchange.taps is not None:
            for tap in exchange.taps:
                tap.response_trailers(headers)

    def upstream_flush(self) -> None:
        """Send what the last upstream read produced: the head if pending, then the data."""
        exchange = self.exchange
        if exchange.state != STREAMING:
            return
        stream = self.stream
        if self.head is not None:
            status, fields = self.head
            self.head = None
            stream.send_headers(status, fields)
        out = self.out
        if out:
            self.out = []
            stream.send_data(out[0] if len(out) == 1 else b"".join(out))
            if exchange.taps is not None:
                for tap in exchange.taps:
                    for chunk in out:
                        tap.response_body(chunk)

    def upstream_complete(self, conn: Http1Connection) -> None:
        """The response ended: send its end and let the exchange finish."""
        exchange = self.exchange
        if exchange.state != STREAMING:
            return
        self.write_end()
        exchange.response_complete(conn)

    def write_end(self) -> None:
        """The rest of the body, then trailers or END_STREAM (trailers-only when nothing else)."""
        stream = self.stream
        out = self.out
        body = (out[0] if len(out) == 1 else b"".join(out)) if out else b""
        self.out = []
        trailers = self.trailer_fields
        if self.head is not None:
            status, fields = self.head
            self.head = None
            if not body and trailers is None:
                if self.exchange.grpc:
                    for name, value in fields:
                        if name == b"grpc-status":
                            self.exchange.record.grpc_status = value.decode("latin-1")
                stream.send_headers(status, fields, end_stream=True)  # trailers-only
                return
            stream.send_headers(status, fields)
        if trailers is not None:
            if body:
                stream.send_data(body)
            stream.send_trailers(trailers)
        else:
            stream.send_data(body, end_stream=True)
        if body and self.exchange.taps is not None:
            for tap in self.exchange.taps:
                for chunk in out:
                    tap.response_body(chunk)

    def upstream_lost(self, conn: Http1Connection, reason: str) -> None:
        """The upstream failed mid-response: reset the stream."""
        exchange = self.exchange
        if exchange.state != STREAMING:
            return
        attempt = exchange.attempt
        if attempt is not None:
            attempt.conn = None
        exchange.cut("UC", attempt, failure="reset")

    def upstream_write_paused(self, paused: bool) -> None:
        """Request-body backpressure."""
        self.exchange.down.pause_reading_for(self.exchange, paused)

    # -- in-gateway responders (gateway.proxy.responder) ---------------------------------------

    def responder_head(self, exchange: Exchange, status: int, headers: Fields) -> None:
        """An in-gateway responder's response head: relayed like a proxied one (filters, taps),
        sent as HEADERS with the first body bytes, or alone once flushed."""
        self.relay_begin(exchange, None)
        exchange.record.status = status
        self.start(status, b"", headers)

    def responder_chunk(self, data: bytes) -> None:
        """A responder's body bytes after its head: DATA at once (after the head if it is
        still pending, and through the taps when one looks)."""
        exchange = self.exchange
        if exchange.taps is not None or self.head is not None or self.out:
            self.upstream_body(data)
            self.upstream_flush()
            return
        exchange.record.response_bytes += len(data)
        self.stream.send_data(data)

    def responder_whole(
        self, exchange: Exchange, status: int, headers: Fields, body: bytes
    ) -> bool:
        """A responder's whole response: HEADERS (with a content-length unless the app gave
        one) and DATA with END_STREAM, when nothing looks at it on the way (no response filter,
        tap or session cookie; not gRPC); False, with nothing sent, otherwise. Fields that are
        not valid, or a Content-Length the body does not have, raise RuntimeError."""
        if (
            not exchange.choice.verbatim  # type: ignore[union-attr]
            or exchange.extra_response is not None
            or exchange.grpc
        ):
            return False
        check_response_fields(headers)
        fields = [(name.lower(), value) for name, value in headers]
        if not exchange.head_only and status != 204 and status != 304:
            for name, value in fields:
                if name == b"content-length":
                    if not value.isdigit() or int(value) != len(body):
                        raise RuntimeError(
                            f"response content-length {value!r}, body of {len(body)} bytes"
                        )
                    break
            else:
                fields.append((b"content-length", b"%d" % len(body)))
        record = exchange.record
        record.status = status
        record.response_bytes += len(body)
        stream = self.stream
        stream.send_headers(status, fields, end_stream=not body)
        if body:
            stream.send_data(body, end_stream=True)
        return True

    def cut(self) -> None:
        """A response that already started cannot finish: reset the stream (not the connection)."""
        if self.head is not None or self.out:
            self.upstream_flush()
        self.stream.reset(CANCEL)


def relay_raw(
    exchange: Exchange,
    attempt: UpstreamAttempt,
    conn: Http1Connection,
    status: int,
    raw: bytes,
) -> None:
    """An HTTP/1.1 upstream's head: its fields become the response HEADERS."""
    reason, headers = split_head(raw)
    relay_fields(exchange, attempt, conn, status, reason, headers)


def answer(exchange: Exchange, response: DirectResponse, close: bool) -> bool:
    """Answer on the stream: a gRPC status for gRPC clients, else status, fields and body."""
    record = exchange.record
    stream: ServerStream = exchange.down.stream  # type: ignore[attr-defined]
    if exchange.grpc:
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
        body = b"" if exchange.head_only else response.body
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
    # An unread request body is refused by the engine once the response ended (RST_STREAM
    # NO_ERROR, RFC 9113 8.1): the connection itself stays open either way.
    return True
