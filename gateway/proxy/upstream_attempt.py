"""The upstream attempt: one try at one endpoint, from its connection to its response head.

An :class:`UpstreamAttempt` takes a connection from the pool (or dials one), sends the request's
head and whatever body the exchange holds, streams the rest of the body as it arrives, and owns
the connection until the final response head. Then it either starts another try (a retryable
status, before any byte reached the client) or hands the connection to the response relay. A
failed try (connect error, reset, bad response, per-try timeout) is retried when the route's
policy allows, else answered (502, 503 or 504 naming the problem).

The attempt is also the try's :class:`~gateway.backends.base.Outcome`: when it ends, its backend
learns status, bytes, timings, whether the client left, and the state its pick returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gateway.proxy.dial import upstream_failed
from gateway.proxy.h2_client import H2ClientStream
from gateway.proxy.headers import upstream_request_fields, upstream_request_head
from gateway.proxy.states import WAITING
from gateway.request import error_response

if TYPE_CHECKING:
    import asyncio

    from gateway.backends.base import Endpoint
    from gateway.proxy.exchange import Exchange
    from gateway.proxy.pool import ConnectAttempt
    from gateway.proxy.upstream import Http1Connection

log = logging.getLogger(__name__)

_TERMINAL_CHUNK = b"0\r\n\r\n"
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


_now = time.perf_counter


def start_try(exchange: Exchange, endpoint: Endpoint, state: Any) -> None:
    """Start a try at ``endpoint`` as the exchange's current one: take a pooled connection and
    send, or dial one (``state`` is the backend's own, from ``Pick.state``)."""
    # UpstreamAttempt(...) without type.__call__: __new__, then __init__ as a plain function
    # (once per proxied request: python -m bench.instructions).
    attempt: UpstreamAttempt = _new_attempt(UpstreamAttempt)
    _init_attempt(attempt, exchange, endpoint, state)
    exchange.attempt = attempt
    held = exchange.staged
    if held is not None:
        body = exchange.body
        if body is not None and body is not held.whole:
            exchange.restage_body()  # the pick replaced it (e.g. a model rewrite)
        held.sent = 0  # a new try gets the whole body held for replay
    exchange.tried += (endpoint,)
    exchange.record.endpoint = endpoint
    down = exchange.down
    per_try = exchange.rule.timeouts.backend_request  # type: ignore[union-attr]
    if per_try:
        attempt.timer = down.loop.call_later(per_try, attempt.timeout)
    attempt.start = _now()
    conn = down.pool.acquire(endpoint)
    if conn is not None:
        attempt.send(conn)
    else:
        attempt.dial = down.pool.connect(endpoint, attempt.connected)


class UpstreamAttempt:
    """One try: its endpoint, connection, per-try timer, and (once ended) its outcome.

    Made and started by :func:`start_try`.
    """

    __slots__ = (
        "aborted",
        "conn",
        "dial",
        "end",
        "endpoint",
        "exchange",
        "failure",
        "first_byte_at",
        "ok",
        "redialled",
        "start",
        "state",
        "status",
        "timer",
    )

    def __init__(self, exchange: Exchange, endpoint: Endpoint, state: Any) -> None:
        self.exchange = exchange
        self.endpoint = endpoint
        self.state = state  # the backend's own, from Pick.state
        self.conn: Http1Connection | None = None
        self.dial: ConnectAttempt | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.redialled = False
        self.start = 0.0
        self.first_byte_at = 0.0
        # The outcome, set by finish() (declared here, not stored: once per request).
        self.end: float
        self.status: int
        self.ok: bool
        self.aborted: bool
        self.failure: str

    # -- Outcome -------------------------------------------------------------------------------

    @property
    def request_bytes(self) -> int:
        """Request body bytes received from the client (when the backend is told)."""
        return self.exchange.record.request_bytes

    @property
    def response_bytes(self) -> int:
        """Response body bytes sent to the client (when the backend is told; 0 for a try that
        ended before its response was relayed)."""
        return self.exchange.record.response_bytes

    @property
    def first_byte(self) -> float:
        """Seconds from the try's start to its response head; -1.0 when none arrived."""
        return self.first_byte_at - self.start if self.first_byte_at else -1.0

    @property
    def duration(self) -> float:
        """Seconds from the try's start to its end."""
        return self.end - self.start

    # -- the try -------------------------------------------------------------------------------

    def connected(self, conn: Http1Connection | None, error: BaseException | None) -> None:
        self.dial = None
        if conn is None:
            exchange = self.exchange
            failure = upstream_failed(exchange.down.telemetry, exchange.backend, error)
            self.failed("UF", 503, f"upstream connect error: {error}", failure)
        elif self.exchange.attempt is not self or self.exchange.state != WAITING:
            self.exchange.down.pool.release(conn, True)
        else:
            self.send(conn)

    def send(self, conn: Http1Connection) -> None:
        """Send the request on a connection (or HTTP/2 stream): head, and the body held so far."""
        exchange = self.exchange
        self.conn = conn
        conn.owner = self
        conn.served += 1
        held = exchange.staged
        chunks: Sequence[bytes] = () if held is None else held.unsent()
        if type(conn) is H2ClientStream:
            self._send_h2(conn, chunks)
        else:
            conn.no_body = exchange.head_only
            head = exchange.head_bytes
            if head is None:
                head = exchange.head_bytes = upstream_request_head(exchange)
                exchange.forward = None
            if chunks or (exchange.request_done and exchange.chunked):
                out = [head]
                if exchange.chunked:
                    for chunk in chunks:
                        out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
                    if exchange.request_done:
                        out.append(_TERMINAL_CHUNK)
                else:
                    out.extend(chunks)
                conn.send_many(out)
            elif conn.transport is not None:
                conn.transport.write(head)  # Http1Connection.send, inlined
        if held is not None:
            held.sent_all()
            exchange.down.pause_reading_for(exchange, False)
        if exchange.down.client_paused:
            conn.pause_reading()

    def _send_h2(self, stream: H2ClientStream, chunks: Sequence[bytes]) -> None:
        """The request on an HTTP/2 upstream stream: fields, the body so far, maybe its end."""
        ended = self.body_ended()
        stream.send_request(upstream_request_fields(self.exchange), end_stream=ended and not chunks)
        if chunks:
            last = len(chunks) - 1
            for i, chunk in enumerate(chunks):
                stream.send_data(chunk, end_stream=ended and i == last)

    def body_ended(self) -> bool:
        """Whether the whole request body was received (HTTP/2 upstreams need END_STREAM)."""
        exchange = self.exchange
        if exchange.request_done:
            return True
        if exchange.chunked:
            return False
        return (exchange.content_length or 0) <= exchange.record.request_bytes

    def send_body(self, data: bytes) -> None:
        """A request body chunk, straight to the connected upstream."""
        conn = self.conn
        if conn is None:
            return
        if type(conn) is H2ClientStream:
            conn.send_data(data, end_stream=self.body_ended())
        elif self.exchange.chunked:
            conn.send_many([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            conn.send(data)

    def end_body(self) -> None:
        """The client's request body ended."""
        conn = self.conn
        if conn is None:
            return
        if type(conn) is H2ClientStream:
            conn.end_request()
        elif self.exchange.chunked:
            conn.send(_TERMINAL_CHUNK)

    def may_redial(self) -> bool:
        """An idempotent, bodiless request not re-sent yet (safe whatever the retry policy)."""
        exchange = self.exchange
        return (
            not self.redialled
            and exchange.head.method in _IDEMPOTENT
            and not exchange.chunked
            and not exchange.content_length
            and exchange.tunnel is None
        )

    # -- endings -------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the try: its timer, its dial, its connection (reset: the response is unwanted)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.dial is not None:
            self.dial.cancel()
            self.dial = None
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.abort()

    def finish(
        self, status: int, ok: bool, aborted: bool = False, failure: str = "", end: float = 0.0
    ) -> None:
        """The try ended (at ``end``, now by default): stop its timer, record its outcome, tell
        its backend."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        exchange = self.exchange
        if exchange.attempt is self:
            exchange.attempt = None
        self.end = end or _now()
        self.status = status
        self.ok = ok
        self.aborted = aborted
        self.failure = failure
        backend = exchange.backend
        if backend is not None:
            try:
                backend.done(self.endpoint, self)
            except Exception:
                log.exception("backend %r failed to take an outcome", backend)

    def failed(self, flags: str, status: int, message: str, failure: str, ok: bool = False) -> None:
        """The try failed before a response head: retry it if allowed, else answer the client."""
        self.cancel()
        self.finish(0, ok, failure=failure)
        exchange = self.exchange
        if exchange.state != WAITING:
            return
        delay = exchange.retry_delay()
        if delay is not None:
            exchange.retry_later(delay)
            return
        if len(exchange.tried) > 1 and flags == "-":
            flags = "URX"
        exchange.record.upstream_failure = failure
        exchange.answer(error_response(status, message), flags)

    def timeout(self) -> None:
        self.timer = None
        exchange = self.exchange
        if exchange.state == WAITING and exchange.relay is None:
            self.failed("UT", 504, "upstream request timeout", "timeout")
        else:
            exchange.cut("UT", self, failure="timeout")

    # -- the connection's events until the response head (UpstreamOwner) -----------------------

    def upstream_informational(self, status: int) -> None:
        """Relay ``100 Continue`` to a client that asked for it."""
        exchange = self.exchange
        if status == 100 and exchange.expect_continue and exchange.state == WAITING:
            exchange.down.interim(100)

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        """An HTTP/1.1 upstream's response head, as received."""
        self.first_byte_at = _now()
        exchange = self.exchange
        retries = exchange.retries
        if retries is not None and status in retries.codes and self._retried(status):
            return
        exchange.down.relay_raw(exchange, self, conn, status, raw)

    def upstream_head(
        self, conn: Http1Connection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """A response head as fields (HTTP/2 upstreams)."""
        self.first_byte_at = _now()
        exchange = self.exchange
        retries = exchange.retries
        if retries is not None and status in retries.codes and self._retried(status):
            return
        exchange.down.relay_fields(exchange, self, conn, status, reason, headers)

    def _retried(self, status: int) -> bool:
        """Start another try instead of relaying this retryable status, when allowed."""
        exchange = self.exchange
        delay = exchange.retry_delay()
        if delay is None:
            return False
        self.cancel()
        self.finish(status, status < 500)
        exchange.retry_later(delay)
        return True

    def upstream_body(self, data: bytes) -> None:
        """Never called before the head."""

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Never called before the head."""

    def upstream_complete(self, conn: Http1Connection) -> None:
        """Never called before the head (the relay owns the connection from then on)."""

    def upstream_flush(self) -> None:
        """Nothing to write before the head."""

    def upstream_lost(self, conn: Http1Connection, reason: str) -> None:
        """The connection closed or broke framing before the response head."""
        if conn is not self.conn:
            return
        self.conn = None
        exchange = self.exchange
        if exchange.state != WAITING:
            return
        if (reason == "refused" or (reason == "closed" and conn.served > 1)) and self.may_redial():
            # The upstream closed (FIN, not reset) an idle keep-alive connection just as we
            # reused it: the request was never processed, so send it once on a new one.
            self.redialled = True
            self.dial = exchange.down.pool.connect(conn.endpoint, self.connected)
        elif reason == "bad-response":
            self.failed("UPE", 502, "bad response from upstream", "bad_response")
        else:
            self.failed("UC", 502, "upstream connection closed before responding", "reset")

    def upstream_write_paused(self, paused: bool) -> None:
        """Request-body backpressure: stop reading the client while the upstream is full."""
        self.exchange.down.pause_reading_for(self.exchange, paused)

    def upstream_upgraded(
        self, conn: Http1Connection, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """101 from the upstream: the tunnel takes the connection over."""
        exchange = self.exchange
        tunnel = exchange.tunnel
        if conn is not self.conn or exchange.state != WAITING or tunnel is None:
            self.failed("UPE", 502, "unexpected 101 from upstream", "bad_response")
            return
        self.first_byte_at = _now()
        tunnel.upgraded(self, conn, reason, headers, rest)

    def tunnel_data(self, data: bytes) -> None:
        """Never called: the tunnel owns an upgraded connection."""


# The class's own __new__ (object.__new__ here; a mypyc-compiled build has its own).
_new_attempt = UpstreamAttempt.__new__
_init_attempt = UpstreamAttempt.__init__
