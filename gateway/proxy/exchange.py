"""One request/response transaction: routing, filters, backend choice, tries and streaming.

An :class:`Exchange` is driven entirely by callbacks from the client connection and from the
upstream connection it owns, so a request that finds an idle pooled connection runs without
creating a task. States: ``WAITING`` (routed, no response byte sent yet; retries allowed),
``STREAMING`` (the response head went to the client), ``TUNNEL`` (upgraded), ``DONE``.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.lb.consistent_hash import cookie_value
from gateway.observability.record import RequestRecord
from gateway.proxy.dial import upstream_failed
from gateway.proxy.headers import (
    RESPONSE_SKIP,
    connection_tokens,
    direct_response_bytes,
    response_head,
    response_head_bytes,
    upstream_request_fields,
    upstream_request_head,
)
from gateway.proxy.mirror import MirrorCopy
from gateway.proxy.retry import schedule_for
from gateway.proxy.upstream import split_head
from gateway.proxy.upstream_wire import H2ClientStream
from gateway.request import error_response

if TYPE_CHECKING:
    import asyncio

    from gateway.backends.base import Backend, Endpoint
    from gateway.observability.record import TraceContext
    from gateway.proxy.downstream import DownstreamConnection
    from gateway.proxy.pool import ConnectAttempt
    from gateway.proxy.retry import RetrySchedule
    from gateway.proxy.upstream import Http1Connection
    from gateway.request import DirectResponse, RequestHead
    from gateway.snapshot import BackendChoice, CompiledRule, Mirror, SessionAffinity, Snapshot

log = logging.getLogger(__name__)

WAITING, STREAMING, TUNNEL, DONE = 0, 1, 2, 3
_TERMINAL_CHUNK = b"0\r\n\r\n"
# Response chunks up to this size are re-framed into one buffer; larger ones are written as parts.
_FRAME_COPY_LIMIT = 16 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Status recorded when the client left before any response (nginx's convention).
CLIENT_CLOSED = 499
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# A hop-by-hop field in a lower-cased raw response head (llhttp allows no space before ':').
_HOP_FIELD = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade):"
)


# X-Request-Id values: 64 random bits per process, then a 64-bit counter (32 hex digits in all).
# Unique without a 128-bit draw per request; the prefix is drawn again in a forked child, so
# worker processes never share it. The counter starts in [2**60, 2**63): hex() of it always has 16
# digits (it would take centuries of requests to leave that range), so no format spec is parsed.
_id_prefix = ""
_id_counter = itertools.count()


def _reseed_request_ids() -> None:
    global _id_prefix, _id_counter
    system = random.SystemRandom()
    _id_prefix = f"{system.getrandbits(64):016x}"
    _id_counter = itertools.count((1 << 60) + system.getrandbits(62))


_reseed_request_ids()
os.register_at_fork(after_in_child=_reseed_request_ids)


def new_request_id() -> str:
    """A fresh X-Request-Id: 32 lower-case hex digits, unique per process and across workers."""
    return _id_prefix + hex(next(_id_counter))[2:]


class Exchange:
    """A client request and its way through the gateway to an upstream and back."""

    __slots__ = (
        "_attempt",
        "_out",
        "_out_chunked",
        "_passthrough",
        "_pending",
        "_pending_size",
        "_redialled",
        "_replay",
        "_request_timer",
        "_retry",
        "_retry_handle",
        "_try_timer",
        "_until_eof",
        "backend",
        "choice",
        "chunked",
        "content_length",
        "down",
        "endpoint",
        "expect_continue",
        "extra_hop",
        "extra_response",
        "forward",
        "forwarded_for",
        "head",
        "head_bytes",
        "head_only",
        "http10",
        "keep_alive",
        "mirrors",
        "new_request_id",
        "record",
        "request_done",
        "request_id",
        "rule",
        "snapshot",
        "state",
        "trace",
        "tried",
        "tunnel_pending",
        "upstream",
        "websocket",
    )

    def __init__(
        self,
        down: DownstreamConnection,
        head: RequestHead,
        snapshot: Snapshot,
        trace: TraceContext,
        keep_alive: bool,
        http10: bool,
        content_length: int | None,
        chunked: bool,
        expect_continue: bool,
        websocket: bool,
        extra_hop: frozenset[str],
        forwarded_for: str,
        request_id: str | None,
        forward: list[str] | None = None,
    ) -> None:
        self.down = down
        self.head = head
        self.snapshot = snapshot
        self.trace = trace
        self.keep_alive = keep_alive
        self.http10 = http10
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.websocket = websocket
        self.extra_hop = extra_hop
        self.forwarded_for = forwarded_for
        self.forward = forward  # head lines to pass as they are (see upstream_request_head)
        self.new_request_id = request_id is None
        self.request_id = request_id if request_id is not None else new_request_id()
        self.head_only = head.method == "HEAD"
        self.record = RequestRecord(head, time.perf_counter(), self.request_id)
        self._out: list[bytes] = []  # response bytes of the current upstream read
        self.state = WAITING
        self.request_done = False
        self.rule: CompiledRule | None = None
        self.choice: BackendChoice | None = None
        self.backend: Backend | None = None
        self.endpoint: Endpoint | None = None
        self.upstream: Http1Connection | None = None
        self.tried: tuple[Endpoint, ...] = ()
        self.head_bytes = b""
        self.extra_response: tuple[str, str] | None = None
        self.mirrors: list[MirrorCopy] | None = None
        self.tunnel_pending: list[bytes] | None = None
        self._attempt: ConnectAttempt | None = None
        self._pending: list[bytes] | None = None  # body chunks not yet sent to the current try
        self._pending_size = 0
        self._replay: list[bytes] | None = None  # every body chunk, while the request is retryable
        self._retry: RetrySchedule | None = None
        self._retry_handle: asyncio.TimerHandle | None = None
        self._request_timer: asyncio.TimerHandle | None = None
        self._try_timer: asyncio.TimerHandle | None = None
        self._out_chunked = False
        self._passthrough = False  # the response head may go to the client as received
        self._until_eof = False
        self._redialled = False

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Route the request and send the first try (called when it reaches the queue's head)."""
        try:
            self._route()
        except Exception:
            log.exception("request %s failed while routing", self.request_id)
            if self.state == WAITING:
                self._release_try(ok=True)
                self._direct(error_response(500, "internal error while routing the request"), "-")

    def _route(self) -> None:
        head = self.head
        router = self.snapshot.routers.get(head.listener_port)
        rule = router.match(head) if router is not None else None
        if rule is None:
            message = f"no route matches {head.method} {head.authority}{head.path}"
            self._direct(error_response(404, message), "NR")
            return
        self.rule = rule
        self.record.rule = rule
        for request_filter in rule.request_filters:
            answer = request_filter.apply(head)
            if answer is not None:
                self._direct(answer, "-")
                return
        if rule.affinity is None:
            choice = rule.choose()
        else:
            # A session sticks to one backendRef too: choose by weight with the session as seed.
            session = self._apply_affinity(rule.affinity)
            choice = rule.choose(random.Random(session)) if len(rule.choices) > 1 else rule.choose()
        if choice is None:
            self._direct(
                error_response(
                    500, f"no backend: {_rule_name(rule)} has no backendRef with weight > 0"
                ),
                "-",
            )
            return
        if choice.backend is None:
            self._direct(
                error_response(500, choice.error or f"invalid backendRef in {_rule_name(rule)}"),
                "-",
            )
            return
        self.choice = choice
        self.backend = choice.backend
        self.record.backend = choice.backend
        for request_filter in choice.request_filters:
            answer = request_filter.apply(head)
            if answer is not None:
                self._direct(answer, "-")
                return
        edited = rule.request_filters or choice.request_filters or rule.affinity is not None
        self.head_bytes = upstream_request_head(
            head,
            extra_hop=self.extra_hop,
            forwarded_for=self.forwarded_for,
            request_id=self.request_id if self.new_request_id else None,
            traceparent=self.trace.traceparent,
            content_length=self.content_length,
            chunked=self.chunked,
            websocket=self.websocket,
            forward=None if edited else self.forward,
        )
        self.forward = None
        self._passthrough = not (
            rule.response_filters
            or choice.response_filters
            or self.extra_response is not None
            or self.websocket
            or self.head_only
            or self.http10
            or rule.retry is not None
        )
        if (rule.mirrors or choice.mirrors) and not self.websocket:
            self._start_mirrors(rule.mirrors + choice.mirrors)
        loop = self.down.loop
        if rule.timeouts.request:
            self._request_timer = loop.call_later(rule.timeouts.request, self._request_timeout)
        if rule.retry is not None and not self.websocket:
            self._retry = schedule_for(rule.retry)
            self._replay = list(self._pending or ())
        self._try()

    def _apply_affinity(self, affinity: SessionAffinity) -> str:
        """The session key; a new session gets one, set on the request and the response."""
        head = self.head
        if affinity.type == "Header":
            value = head.get(affinity.name.lower())
            if value is None:
                value = f"{random.getrandbits(64):016x}"
                head.set_header(affinity.name, value)
                self.extra_response = (affinity.name, value)
            return value
        value = cookie_value(head, affinity.name)
        if value is not None:
            return value
        # A new session: the balancer hashes this request on the fresh cookie, as on later ones.
        value = f"{random.getrandbits(64):016x}"
        existing = head.get("cookie")
        pair = f"{affinity.name}={value}"
        head.set_header("cookie", f"{existing}; {pair}" if existing else pair)
        cookie = f"{pair}; Path={affinity.path}; HttpOnly"
        if affinity.max_age is not None:
            cookie += f"; Max-Age={affinity.max_age}"
        self.extra_response = ("set-cookie", cookie)
        return value

    def _start_mirrors(self, mirrors: tuple[Mirror, ...]) -> None:
        options = self.down.options
        copies = []
        for mirror in mirrors:
            if mirror.fraction < 1.0 and random.random() >= mirror.fraction:
                continue
            try:
                copy = MirrorCopy.start(
                    self.down.pool,
                    mirror.backend,
                    self.head,
                    self.head_bytes,
                    chunked=self.chunked,
                    limit=options.max_buffered_body,
                    deadline=options.idle_timeout,
                    h2_fields=self._h2_fields,
                )
            except Exception:
                log.exception("request %s: mirror failed to start", self.request_id)
                continue
            if copy is not None:
                for chunk in self._pending or ():
                    copy.body(chunk)
                if self.request_done:
                    copy.complete()
                copies.append(copy)
        self.mirrors = copies or None

    # -- tries ---------------------------------------------------------------------------------

    def _try(self) -> None:
        self._retry_handle = None
        if self.state != WAITING:
            return
        backend = self.backend
        assert backend is not None and self.rule is not None
        endpoint = backend.pick(self.head, self.tried)
        if endpoint is None:
            destination = backend.destination
            self._direct(
                error_response(
                    503,
                    f"no healthy upstream for {destination.namespace}/{destination.service_name}",
                ),
                "UH",
            )
            return
        self.endpoint = endpoint
        self.record.endpoint = endpoint
        if not self.tried:
            self.record.upstream_start = time.perf_counter()
        self.tried += (endpoint,)
        per_try = self.rule.timeouts.backend_request
        if per_try:
            self._try_timer = self.down.loop.call_later(per_try, self._try_timeout)
        conn = self.down.pool.acquire(endpoint)
        if conn is not None:
            self._send(conn)
        else:
            self._attempt = self.down.pool.connect(endpoint, self._connected)

    def _connected(self, conn: Http1Connection | None, error: BaseException | None) -> None:
        self._attempt = None
        if conn is None:
            self.record.upstream_failure = upstream_failed(self.down.telemetry, self.backend, error)
            self._try_failed("UF", 503, f"upstream connect error: {error}", ok=False)
        elif self.state != WAITING:
            self.down.pool.release(conn, True)
        else:
            self._send(conn)

    def _may_redial(self) -> bool:
        """An idempotent, bodiless request not re-sent yet (safe whatever the retry policy)."""
        return (
            not self._redialled
            and self.head.method in _IDEMPOTENT
            and not self.chunked
            and not self.content_length
            and not self.websocket
            and self.endpoint is not None
        )

    def _send(self, conn: Http1Connection) -> None:
        """Send the request on an upstream connection (or HTTP/2 stream): head, body so far."""
        self.upstream = conn
        conn.owner = self
        conn.served += 1
        chunks = self._replay if self._replay is not None else self._pending or ()
        if type(conn) is H2ClientStream:
            self._send_h2(conn, chunks)
        elif chunks or (self.request_done and self.chunked):
            conn.no_body = self.head_only
            out = [self.head_bytes]
            if self.chunked:
                for chunk in chunks:
                    out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
                if self.request_done:
                    out.append(_TERMINAL_CHUNK)
            else:
                out.extend(chunks)
            conn.send_many(out)
        else:
            conn.no_body = self.head_only
            if conn.transport is not None:
                conn.transport.write(self.head_bytes)  # Http1Connection.send, inlined
        self._pending = None
        if self._pending_size:
            self._pending_size = 0
            self.down.pause_reading_for(self, False)
        if self.down.client_paused:
            conn.pause_reading()

    def _send_h2(self, stream: H2ClientStream, chunks: Sequence[bytes]) -> None:
        """The request on an HTTP/2 upstream stream: fields, the body so far, maybe its end."""
        ended = self._body_ended()
        stream.send_request(self._h2_fields(), end_stream=ended and not chunks)
        if chunks:
            last = len(chunks) - 1
            for i, chunk in enumerate(chunks):
                stream.send_data(chunk, end_stream=ended and i == last)

    def _h2_fields(self) -> list[tuple[bytes, bytes]]:
        """The request's header block for an HTTP/2 upstream."""
        return upstream_request_fields(
            self.head,
            extra_hop=self.extra_hop,
            forwarded_for=self.forwarded_for,
            request_id=self.request_id if self.new_request_id else None,
            traceparent=self.trace.traceparent,
            content_length=None if self.chunked else self.content_length,
        )

    def _body_ended(self) -> bool:
        """Whether the whole request body was received (HTTP/2 upstreams need END_STREAM)."""
        if self.request_done:
            return True
        if self.chunked:
            return False
        return (self.content_length or 0) <= self.record.request_bytes

    def _retried(self, status: int) -> bool:
        """Whether this response status starts another try (the policy retries it and may)."""
        retry = self._retry
        if retry is not None and status in retry.codes:
            delay = self._can_retry()
            if delay is not None:
                self._release_try(ok=status < 500)
                self._retry_after(delay)
                return True
        return False

    def _can_retry(self) -> float | None:
        """Seconds before the next try when one is allowed, else None."""
        if self._retry is None or self.state != WAITING or self._replay is None:
            return None
        return self._retry.delay_after(len(self.tried))

    def _retry_after(self, delay: float) -> None:
        self._retry_handle = self.down.loop.call_later(delay, self._try)

    def _release_try(self, ok: bool) -> None:
        """End the current try: cancel its timer and dial, drop its connection, tell the backend."""
        if self._try_timer is not None:
            self._try_timer.cancel()
            self._try_timer = None
        if self._attempt is not None:
            self._attempt.cancel()
            self._attempt = None
        conn = self.upstream
        if conn is not None:
            self.upstream = None
            conn.abort()
        if self.endpoint is not None and self.backend is not None:
            self.backend.release(self.endpoint, ok)
            self.endpoint = None

    def _try_failed(self, flags: str, status: int, message: str, ok: bool) -> None:
        self._release_try(ok)
        delay = self._can_retry()
        if delay is not None:
            self._retry_after(delay)
            return
        if len(self.tried) > 1:
            flags = "URX" if flags == "-" else flags
        self._direct(error_response(status, message), flags)

    # -- request body from the client ----------------------------------------------------------

    def request_body(self, data: bytes) -> None:
        """A chunk of the request body (de-chunked by the parser)."""
        self.record.request_bytes += len(data)
        if self.state == DONE:
            return
        if self.mirrors is not None:
            for copy in self.mirrors:
                copy.body(data)
        replay = self._replay
        if replay is not None:
            if self.record.request_bytes > self.down.options.max_retry_body:
                # Too big to replay: stream it and give up on retries for this request.
                if self.upstream is None:
                    self._pending = replay
                self._replay = replay = None
            else:
                replay.append(data)
        conn = self.upstream
        if conn is not None:
            if type(conn) is H2ClientStream:
                conn.send_data(data, end_stream=self._body_ended())
            elif self.chunked:
                conn.send_many([b"%x\r\n" % len(data), data, b"\r\n"])
            else:
                conn.send(data)
        elif replay is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > self.down.options.max_buffered_body:
                self.down.pause_reading_for(self, True)

    def request_complete(self) -> None:
        """The client's request message ended."""
        self.request_done = True
        if self.mirrors is not None:
            for copy in self.mirrors:
                copy.complete()
        conn = self.upstream
        if conn is not None and self.state != DONE:
            if type(conn) is H2ClientStream:
                conn.end_request()
            elif self.chunked:
                conn.send(_TERMINAL_CHUNK)

    # -- upstream events (UpstreamOwner) -------------------------------------------------------

    def upstream_informational(self, status: int) -> None:
        """Relay ``100 Continue`` to a client that asked for it."""
        if status == 100 and self.expect_continue and self.state == WAITING:
            self.down.transport.write(_CONTINUE)

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        """A response head as received: passed on as it is when nothing needs to change it.

        That is when no filter, session cookie or retry policy looks at it, the client speaks
        HTTP/1.1, and the upstream framed the body with Content-Length and sent no hop-by-hop
        field; the connection header is added when the client connection closes after it.
        """
        if self._passthrough and raw.startswith(b"HTTP/1.1 "):
            lowered = raw.lower()
            # find(), not ``in``: bytes.__contains__ raises and clears a TypeError for a bytes key.
            has_length = lowered.find(b"\r\ncontent-length:") != -1
            if has_length and _HOP_FIELD.search(lowered) is None:
                self.state = STREAMING
                self.record.status = status
                if self.keep_alive and not self.down.ctx.draining:
                    self._out.append(raw + b"\r\n")
                else:
                    self.keep_alive = False
                    self._out.append(raw + b"connection: close\r\n\r\n")
                return
        reason, headers = split_head(raw)
        self.upstream_head(conn, status, reason, headers)

    def upstream_head(
        self, conn: Http1Connection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Forward the response head, or retry when the status is retryable and nothing was sent."""
        if self._retry is not None and self._retried(status):
            return
        self.state = STREAMING
        self.record.status = status
        self._start_response(status, reason, headers)

    def _start_response(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Queue the response head for the client: HTTP/1.1 bytes, written with the first body."""
        self._out.append(self._response_head(status, reason, headers))

    def _response_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> bytes:
        """The response head from the upstream's fields (a head passed on verbatim does not come
        here): hop-by-hop fields dropped, filters and a session cookie applied, framing added."""
        kept, chunked, has_length = self._response_fields(status, headers)
        if self.websocket:
            self.keep_alive = False  # the client's parser stopped at the upgrade request
        kept += self._framing(status, chunked, has_length)
        return response_head_bytes(status, reason, kept)

    def _response_fields(
        self, status: int, headers: list[tuple[bytes, bytes]]
    ) -> tuple[list[tuple[bytes, bytes]], bool, bool]:
        """The upstream's fields as the client gets them (hop-by-hop dropped, filters applied,
        session cookie added), whether the upstream chunked the body, and whether it had a length.
        """
        kept: list[tuple[bytes, bytes]] = []
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
        rule, choice = self.rule, self.choice
        assert rule is not None and choice is not None
        if rule.response_filters or choice.response_filters:
            edited = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in kept]
            for response_filter in rule.response_filters:
                response_filter.apply(self.head, status, edited)
            for response_filter in choice.response_filters:
                response_filter.apply(self.head, status, edited)
            kept = [
                (n.encode("latin-1", "replace"), v.encode("latin-1", "replace")) for n, v in edited
            ]
        if self.extra_response is not None:
            extra_name, extra_value = self.extra_response
            kept.append((extra_name.encode("latin-1"), extra_value.encode("latin-1", "replace")))
        return kept, chunked, has_length

    def _framing(self, status: int, chunked: bool, has_length: bool) -> list[tuple[bytes, bytes]]:
        """The framing fields the client gets, deciding re-chunking and keep-alive on the way."""
        fields: list[tuple[bytes, bytes]] = []
        if self.head_only or status == 204 or status == 304:
            pass
        elif chunked or not has_length:
            self._until_eof = not chunked
            if self.http10:
                self.keep_alive = False  # HTTP/1.0 clients read to EOF
            else:
                self._out_chunked = True
                fields.append((b"transfer-encoding", b"chunked"))
        if not self.keep_alive or self.down.ctx.draining:
            self.keep_alive = False
            fields.append((b"connection", b"close"))
        elif self.http10:
            fields.append((b"connection", b"keep-alive"))
        return fields

    def upstream_body(self, data: bytes) -> None:
        """Stream response bytes to the client as they come (flushed once per upstream read)."""
        if self.state != STREAMING:
            return
        size = len(data)
        self.record.response_bytes += size
        self.down.activity += 1
        if not self._out_chunked:
            self._out.append(data)
        elif size <= _FRAME_COPY_LIMIT:
            # One buffer per chunk (an SSE event): one small copy beats three list entries.
            self._out.append(b"%x\r\n%b\r\n" % (size, data))
        else:
            self._out += (b"%x\r\n" % size, data, b"\r\n")

    def upstream_flush(self) -> None:
        """Write what the last upstream read produced in one call (one syscall)."""
        out = self._out
        if out:
            self._out = []
            if len(out) == 1:
                self.down.transport.write(out[0])
            else:
                self.down.transport.writelines(out)

    def upstream_complete(self, conn: Http1Connection) -> None:
        """The response ended: recycle the connection and finish."""
        if self.state != STREAMING:
            return
        self._write_end()
        down = self.down
        self.upstream = None
        request_done = self.request_done
        down.pool.release(conn, conn.keep_alive and request_done)
        record = self.record
        # _end_try and _finish, inlined: this runs once per proxied request.
        if self._try_timer is not None:
            self._try_timer.cancel()
            self._try_timer = None
        endpoint = self.endpoint
        if endpoint is not None and self.backend is not None:
            self.backend.release(endpoint, record.status < 500)
            self.endpoint = None
        if self._request_timer is not None or self._retry_handle is not None:
            self._cancel_timers()
        self.state = DONE
        record.end = time.perf_counter()
        try:
            down.telemetry.finish(self.trace, record)
        except Exception:
            log.exception("telemetry failed for request %s", self.request_id)
        down.exchange_done(self, self.keep_alive and request_done)

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Response trailers from an HTTP/2 upstream: an HTTP/1.1 client does not get them."""

    def _write_end(self) -> None:
        """Write the rest of the response and its end (the last chunk when re-chunking)."""
        out = self._out
        if self._out_chunked:
            out.append(_TERMINAL_CHUNK)
        # upstream_flush's body, inlined: this runs once per request, and calling it instead
        # costs ~360 instructions per request (python -m bench.instructions).
        if out:
            self._out = []
            if len(out) == 1:
                self.down.transport.write(out[0])
            else:
                self.down.transport.writelines(out)

    def upstream_lost(self, conn: Http1Connection, reason: str) -> None:
        """The upstream closed or broke framing before its response ended."""
        if conn is not self.upstream:
            return
        self.upstream = None
        if self.state == WAITING:
            if (
                reason == "refused" or (reason == "closed" and conn.served > 1)
            ) and self._may_redial():
                # The upstream closed (FIN, not reset) an idle keep-alive connection just as we
                # reused it: the request was never processed, so send it once on a new one.
                self._redialled = True
                self._attempt = self.down.pool.connect(conn.endpoint, self._connected)
            elif reason == "bad-response":
                self._try_failed("UPE", 502, "bad response from upstream", ok=False)
            else:
                self._try_failed(
                    "UC", 502, "upstream connection closed before responding", ok=False
                )
        elif self.state == STREAMING:
            if self._until_eof and reason == "closed":
                # A close-delimited body ends at EOF: a normal end.
                if self._out_chunked:
                    self._out.append(_TERMINAL_CHUNK)
                self.upstream_flush()
                self._end_try(ok=True)
                self._finish(self.keep_alive and self.request_done)
            else:
                self._end_try(ok=False)
                self.record.response_flags = "UC"
                self._close_client()
        elif self.state == TUNNEL:
            self._end_try(ok=True)
            self._close_client()

    def upstream_write_paused(self, paused: bool) -> None:
        """Request-body backpressure: stop reading the client while the upstream is full."""
        self.down.pause_reading_for(self, paused)

    def upstream_upgraded(
        self, conn: Http1Connection, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """101 from the upstream: send it on and splice bytes both ways from now on."""
        if conn is not self.upstream or self.state != WAITING or not self.websocket:
            self._try_failed("UPE", 502, "unexpected 101 from upstream", ok=False)
            return
        self._cancel_timers()
        self.state = TUNNEL
        self.record.status = 101
        out = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in headers
            if name.lower() not in RESPONSE_SKIP
        ]
        out += (("connection", "upgrade"), ("upgrade", "websocket"))
        transport = self.down.transport
        transport.write(response_head(101, reason.decode("latin-1") or "Switching Protocols", out))
        if rest:
            transport.write(rest)
        pending = self.tunnel_pending or []
        self.tunnel_pending = None
        if pending:
            conn.send_many(pending)
        self._pending_size = 0
        self.down.start_tunnel(self)

    def tunnel_data(self, data: bytes) -> None:
        """Upstream → client bytes of an upgraded connection."""
        self.record.response_bytes += len(data)
        self.down.activity += 1
        self.down.transport.write(data)

    def tunnel_client_data(self, data: bytes) -> None:
        """Client → upstream bytes of an upgraded connection (or buffered until the 101)."""
        self.record.request_bytes += len(data)
        if self.state == TUNNEL and self.upstream is not None:
            self.upstream.send(data)
        elif self.tunnel_pending is not None:
            self.tunnel_pending.append(data)
            self._pending_size += len(data)
            if self._pending_size > self.down.options.max_buffered_body:
                self.down.pause_reading_for(self, True)

    # -- client-side events --------------------------------------------------------------------

    def client_write_paused(self, paused: bool) -> None:
        """Response backpressure: stop reading the upstream while the client is full."""
        conn = self.upstream
        if conn is not None:
            if paused:
                conn.pause_reading()
            else:
                conn.resume_reading()

    def abort(self) -> None:
        """The client went away: drop the upstream request at once and account for it."""
        if self.state == DONE:
            return
        self._release_try(ok=True)
        self._cancel_timers()
        if self.mirrors is not None and not self.request_done:
            for copy in self.mirrors:
                copy.abort()
        record = self.record
        record.response_flags = "DC"
        if not record.status:
            record.status = CLIENT_CLOSED
        self._report()

    def request_malformed(self, status: int, message: str) -> None:
        """The request body broke HTTP framing: answer the error (or cut the response) and close."""
        self._release_try(ok=True)
        if self.state == WAITING:
            self._direct(error_response(status, message), "-", close=True)
        else:
            self._close_client()

    def idle_timeout(self) -> None:
        """Nothing moved either way for the idle timeout."""
        if self.state == WAITING:
            self._release_try(ok=True)
            self._direct(
                error_response(504, "idle timeout waiting for the upstream"), "UT", close=True
            )
        elif self.state != DONE:
            self._release_try(ok=True)
            self.record.response_flags = "UT"
            self._close_client()

    # -- timeouts ------------------------------------------------------------------------------

    def _request_timeout(self) -> None:
        self._request_timer = None
        if self.state == WAITING:
            self._replay = None  # the request timeout bounds every try: no more retries
            self._release_try(ok=True)
            self._direct(error_response(504, "request timeout"), "UT")
        elif self.state != DONE:
            self._release_try(ok=True)
            self.record.response_flags = "UT"
            self._close_client()

    def _try_timeout(self) -> None:
        self._try_timer = None
        if self.state == WAITING:
            self._try_failed("UT", 504, "upstream request timeout", ok=True)
        elif self.state == STREAMING:
            self._release_try(ok=True)
            self.record.response_flags = "UT"
            self._close_client()

    # -- endings -------------------------------------------------------------------------------

    def _direct(self, response: DirectResponse, flags: str, close: bool = False) -> None:
        """Answer the request from the gateway itself."""
        # A client that asked for 100-continue may or may not send its body now: close.
        close = close or not self.keep_alive or self.down.ctx.draining or self.websocket
        if not self.request_done and self.expect_continue:
            close = True
        self.record.status = response.status
        self.record.response_flags = flags
        self.record.response_bytes = 0 if self.head_only else len(response.body)
        self.down.transport.write(
            direct_response_bytes(response, head_only=self.head_only, close=close)
        )
        self._finish(not close)

    def _end_try(self, ok: bool) -> None:
        if self._try_timer is not None:
            self._try_timer.cancel()
            self._try_timer = None
        if self.endpoint is not None and self.backend is not None:
            self.backend.release(self.endpoint, ok)
            self.endpoint = None

    def _close_client(self) -> None:
        """End a response that already started: the client sees the connection close."""
        self.upstream_flush()
        self.keep_alive = False
        self.down.transport.close()
        self._finish(False)

    def _cancel_timers(self) -> None:
        if self._request_timer is None and self._try_timer is None and self._retry_handle is None:
            return
        for timer in (self._request_timer, self._try_timer, self._retry_handle):
            if timer is not None:
                timer.cancel()
        self._request_timer = self._try_timer = self._retry_handle = None

    def _report(self) -> None:
        self.state = DONE
        self.record.end = time.perf_counter()
        try:
            self.down.telemetry.finish(self.trace, self.record)
        except Exception:
            log.exception("telemetry failed for request %s", self.request_id)

    def _finish(self, keep_alive: bool) -> None:
        if self.state == DONE:
            return
        self._cancel_timers()
        self._report()
        self.down.exchange_done(self, keep_alive)


def _rule_name(rule: CompiledRule) -> str:
    ref = rule.ref
    return f"{ref.kind} {ref.namespace}/{ref.name} rule {ref.rule_index}"
