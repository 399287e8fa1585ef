"""One request's way through the gateway: the stages in order, and how the request ends.

::

    parse (downstream.py, downstream_h2.py)
      -> pre-route stages, route + filters ........ route_stage.py
      -> request-body staging ...................... body_stage.py   (only when something asks)
      -> endpoint choice (sync or awaited, retries)  endpoint_choice.py
      -> upstream attempt .......................... upstream_attempt.py   | in-gateway responder
      -> response relay (+ taps) ................... response_relay.py, response_relay_h2.py
      -> telemetry record (once) ................... gateway/observability/record.py

An :class:`Exchange` holds what the stages share about one request and runs them in order; each
stage's work, and any state of its own, lives in its module. It is driven by callbacks from the
client connection and the upstream connection, so a request that finds an idle pooled connection
and a synchronous pick runs without creating a task. States: see :mod:`gateway.proxy.states`.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any

from gateway.backends.base import Endpoint, PickRefused
from gateway.observability.record import RequestRecord
from gateway.proxy import body_stage, endpoint_choice, route_stage
from gateway.proxy.mirror import start_mirrors
from gateway.proxy.responder import AsgiCall
from gateway.proxy.retry import schedule_for
from gateway.proxy.states import DONE, STREAMING, TUNNEL, WAITING
from gateway.proxy.upstream_attempt import start_try
from gateway.proxy.websocket import Tunnel
from gateway.request import error_response

if TYPE_CHECKING:
    import asyncio

    from gateway.backends.base import Backend
    from gateway.observability.record import TraceContext
    from gateway.proxy.downstream import ClientSide
    from gateway.proxy.endpoint_choice import Retries
    from gateway.proxy.mirror import MirrorCopy
    from gateway.proxy.response_relay import Http1Relay
    from gateway.proxy.response_relay_h2 import H2Relay
    from gateway.proxy.upstream import Http1Connection
    from gateway.proxy.upstream_attempt import UpstreamAttempt
    from gateway.request import DirectResponse, RequestHead
    from gateway.snapshot import BackendChoice, CompiledRule, Snapshot
    from gateway.taps import ResponseTap

__all__ = ["DONE", "STREAMING", "TUNNEL", "WAITING", "Exchange", "new_request_id"]

log = logging.getLogger(__name__)

_now = time.perf_counter
_new_record = RequestRecord.__new__
_init_record = RequestRecord.__init__
# Status recorded when the client left before any response (nginx's convention).
CLIENT_CLOSED = 499
# Where a request resumes once a stage's wait for the whole body is over.
_PRE_ROUTE, _BODY = 0, 2


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
    """A client request and its way through the gateway to an answer.

    Besides what the client sent (the head, framing, forwarding facts), it holds each stage's
    result: the rule, the backendRef and backend (route), the held body (body stage), the
    endpoints tried and an awaited pick (endpoint choice), the current try (attempt), the relay
    (response), and the optional parts a request may grow: retries, mirrors, taps, a WebSocket
    tunnel, an ASGI responder. ``grpc`` marks HTTP/2 gRPC clients (answered in gRPC statuses).
    """

    __slots__ = (
        "attempt",
        "backend",
        "body",
        "choice",
        "chunked",
        "content_length",
        "down",
        "end_hook",
        "expect_continue",
        "extra_hop",
        "extra_response",
        "forward",
        "forwarded_for",
        "grpc",
        "head",
        "head_bytes",
        "head_only",
        "http10",
        "keep_alive",
        "mirrors",
        "new_request_id",
        "record",
        "relay",
        "request_done",
        "request_id",
        "responder",
        "retries",
        "rule",
        "snapshot",
        "staged",
        "state",
        "taps",
        "timer",
        "trace",
        "tried",
        "tunnel",
        "waiting",
    )

    def __init__(
        self,
        down: ClientSide,
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
        self.extra_hop = extra_hop
        self.forwarded_for = forwarded_for
        self.forward = forward  # head lines to pass as they are (see upstream_request_head)
        if request_id is None:
            self.new_request_id = True
            # new_request_id(), inlined: once per request.
            self.request_id = _id_prefix + hex(next(_id_counter))[2:]
        else:
            self.new_request_id = False
            self.request_id = request_id
        self.head_only = head.method == "HEAD"
        # RequestRecord(...) without type.__call__ (see DownstreamConnection): once per request.
        self.record = record = _new_record(RequestRecord)
        _init_record(record, head, _now(), self.request_id)
        self.state = WAITING
        self.request_done = False
        # request_complete() must be called at the end of the body (else the flag is enough).
        self.end_hook = chunked
        self.grpc = False
        self.rule: CompiledRule | None = None
        self.choice: BackendChoice | None = None
        self.backend: Backend | None = None
        self.body: bytes | None = None  # the whole body, when a stage asked for it
        self.staged: body_stage.RequestBody | None = None
        self.tried: tuple[Endpoint, ...] = ()
        self.attempt: UpstreamAttempt | None = None
        self.waiting: asyncio.Future[object] | None = None  # an awaited pick
        self.retries: Retries | None = None
        self.timer: asyncio.TimerHandle | None = None  # the route's request timeout
        self.head_bytes: bytes | None = None  # the HTTP/1.1 upstream head, built once
        self.extra_response: tuple[str, str] | None = None
        self.mirrors: list[MirrorCopy] | None = None
        self.taps: tuple[ResponseTap, ...] | None = None
        self.relay: Http1Relay | H2Relay | None = None
        self.responder: AsgiCall | None = None
        self.tunnel: Tunnel | None = None
        if websocket:
            self.tunnel = Tunnel(self)

    # -- the stages up to the first try ------------------------------------------------------------

    def start(self) -> None:
        """Run the stages until one answers, one waits for the body, or a try starts (called
        when the request reaches the head of its connection's queue)."""
        try:
            if self.snapshot.pre_route and not self._pre_route():
                return
            if not route_stage.route(self):
                return
            timeout = self.rule.timeouts.request  # type: ignore[union-attr]
            if timeout:
                self.timer = self.down.loop.call_later(timeout, self._request_timeout)
            choice = self.choice
            if choice.plain:  # type: ignore[union-attr]
                # endpoint_choice.choose, inlined for the path most requests take.
                try:
                    result = choice.backend.pick(self, self.tried)  # type: ignore[union-attr]
                except PickRefused as refused:
                    endpoint_choice.refuse(self, refused)
                    return
                if result.__class__ is Endpoint:
                    start_try(self, result, None)
                else:
                    endpoint_choice.picked(self, result)
                return
            self._after_route()
        except Exception:
            log.exception("request %s failed before its first try", self.request_id)
            self.fail_internal("internal error while routing the request")

    def resume(self, step: int) -> None:
        """The whole body a stage waited for is here: carry on from ``step``."""
        try:
            if step == _PRE_ROUTE:
                self.start()
            else:
                self._after_route()
        except Exception:
            log.exception("request %s failed after its body arrived", self.request_id)
            self.fail_internal("internal error after reading the request body")

    def _pre_route(self) -> bool:
        """The listener's pre-route stages (after the body, when one asks); False if answered
        or waiting for the body."""
        stages = route_stage.pre_route_stages(self)
        if not stages:
            return True
        if self.body is None and any(stage.needs_body for stage in stages):
            limit = self.down.options.max_request_body
            if not body_stage.collect(self, limit, _PRE_ROUTE):
                return False
        if not route_stage.run_pre_route(self, stages):
            return False
        if self.body is not None:
            self._body_in_hand()  # a stage may have replaced it
        return True

    def _after_route(self) -> None:
        """The body stage (when the rule or backend asks), then the first try."""
        choice, rule = self.choice, self.rule
        assert choice is not None and rule is not None
        if choice.needs_body or rule.body_filters:
            if self.body is None:
                limit = choice.max_body or self.down.options.max_request_body
                if not body_stage.collect(self, limit, _BODY):
                    return
            if not route_stage.run_body_filters(self):
                return
            self._body_in_hand()
        self._first_try(rule, choice)

    def _body_in_hand(self) -> None:
        """The upstream gets the (maybe replaced) whole body with a length of its own."""
        body = self.body or b""
        self.content_length = len(body) if body or self.content_length is not None else None
        self.chunked = False
        held = body_stage.staged(self)
        held.chunks = [body] if body else []
        held.size = len(body)
        held.sent = 0
        held.whole = self.body
        if self.expect_continue:
            # The body is here: the upstream must not wait to be asked for it.
            self.head.remove_header("expect")
            self.expect_continue = False

    def restage_body(self) -> None:
        """The backend's pick replaced ``body``: every try sends the new bytes and their length."""
        self._body_in_hand()
        self.head_bytes = None  # a mirror may have built it with the old length

    def _first_try(self, rule: CompiledRule, choice: BackendChoice) -> None:
        """Mirrors, retries and taps as the rule says; then the responder or an endpoint."""
        tunnel = self.tunnel
        if (rule.mirrors or choice.mirrors) and tunnel is None:
            start_mirrors(self, rule.mirrors + choice.mirrors)
        if rule.retry is not None and tunnel is None:
            from gateway.proxy.endpoint_choice import Retries

            self.retries = Retries(schedule_for(rule.retry))
            body_stage.keep_for_replay(self)
        if choice.taps or rule.taps:
            taps = [make(self) for make in rule.taps + choice.taps]
            made = tuple(tap for tap in taps if tap is not None)
            self.taps = made or None
        if choice.responder is not None:
            AsgiCall.start(self, choice.responder)
            return
        endpoint_choice.choose(self)

    # -- the request body from the client --------------------------------------------------------

    def request_body(self, data: bytes) -> None:
        """A chunk of the request body (de-chunked by the parser)."""
        self.record.request_bytes += len(data)
        if self.state == DONE:
            return
        if self.mirrors is not None:
            for copy in self.mirrors:
                copy.body(data)
        attempt = self.attempt
        if self.staged is None and attempt is not None and attempt.conn is not None:
            attempt.send_body(data)
        elif self.responder is not None:
            self.responder.body(data)
        else:
            body_stage.hold(self, data)

    def request_complete(self) -> None:
        """The client's request message ended."""
        self.request_done = True
        if self.mirrors is not None:
            for copy in self.mirrors:
                copy.complete()
        if self.state == DONE:
            return
        held = self.staged
        if held is not None and held.collecting:
            self.resume(body_stage.collected(self))
            return
        if self.responder is not None:
            self.responder.body_end()
            return
        attempt = self.attempt
        if attempt is not None:
            attempt.end_body()

    # -- the response ---------------------------------------------------------------------------

    def response_complete(self, conn: Http1Connection | None) -> None:
        """The relay wrote the response's end: recycle the connection, report, finish."""
        down = self.down
        request_done = self.request_done
        if conn is not None:
            down.pool.release(conn, conn.keep_alive and request_done)
        record = self.record
        record.end = end = _now()
        attempt = self.attempt
        if attempt is not None:  # its connection went back to the pool above
            attempt.finish(record.status, record.status < 500, False, "", end)
        if self.timer is not None or self.retries is not None:
            self.cancel_timers()
        self.state = DONE
        self.relay = None  # relay <-> exchange: no cycle left for the garbage collector
        if self.taps is not None:
            self._end_taps(True)
        try:
            down.telemetry.finish(self.trace, record)
        except Exception:
            log.exception("telemetry failed for request %s", self.request_id)
        down.exchange_done(self, self.keep_alive and request_done)

    def responded(self, complete: bool) -> None:
        """An in-gateway responder ended the response it started: ``complete``, or cut short
        (the client sees it cut: HTTP/1.1 closes the connection, HTTP/2 resets the stream)."""
        if self.state == DONE:
            return
        self.responder = None
        if complete:
            # An HTTP/1.1 request body the responder did not read to its end closes the
            # connection (response_complete keeps it only once the request is done).
            self.response_complete(None)
        else:
            self.cut("UC", None)

    def cut(self, flags: str, attempt: UpstreamAttempt | None, failure: str = "") -> None:
        """End a response that already started (upstream lost, timeout): the client sees it end
        abnormally (HTTP/1.1: the connection closes; HTTP/2: the stream is reset)."""
        if self.state == DONE:
            return
        if attempt is not None:
            attempt.cancel()
            attempt.finish(self.record.status, False, aborted=True, failure=failure)
        self.record.response_flags = flags
        relay = self.relay
        if relay is not None:
            relay.cut()
        elif self.state == TUNNEL:
            self.down.transport.close()  # type: ignore[attr-defined]
        self.keep_alive = False
        self._finish(False, complete=False)

    def end_tunnel(self) -> None:
        """The upstream closed an upgraded connection: close the client's too."""
        attempt = self.attempt
        if attempt is not None:
            attempt.finish(101, True)
        self.keep_alive = False
        self.down.transport.close()  # type: ignore[attr-defined]
        self._finish(False, complete=True)

    def annotate(self, key: str, value: str | int | float | bool) -> None:
        """Add an attribute to the request's span and access-log line (see ProxyRequest)."""
        record = self.record
        if record.attributes is None:
            record.attributes = {}
        record.attributes[key] = value

    def link(self, traceparent: str, attributes: dict[str, Any] | None = None) -> None:
        """Link the request's span to the span of ``traceparent`` (W3C), with ``attributes``."""
        record = self.record
        if record.links is None:
            record.links = []
        record.links.append((traceparent, attributes or {}))

    def retry_delay(self) -> float | None:
        """Seconds before another try when the route's retry policy allows one now, else None."""
        return endpoint_choice.retry_delay(self)

    def retry_later(self, delay: float) -> None:
        """Start the next try (a new endpoint choice) after ``delay`` seconds."""
        endpoint_choice.retry_later(self, delay)

    def client_write_paused(self, paused: bool) -> None:
        """Response backpressure: stop reading the upstream while the client is full."""
        attempt = self.attempt
        if attempt is not None and attempt.conn is not None:
            if paused:
                attempt.conn.pause_reading()
            else:
                attempt.conn.resume_reading()
        if self.responder is not None:
            self.responder.writable(not paused)

    # -- endings ----------------------------------------------------------------------------------

    def answer(self, response: DirectResponse, flags: str, close: bool = False) -> None:
        """Answer the request from the gateway itself (before any response byte was sent)."""
        if self.state != WAITING:
            return
        self._stop_tries()
        self.record.status = response.status
        self.record.response_flags = flags
        kept = self.down.answer_direct(self, response, close)
        self._finish(kept, complete=True)

    def fail_internal(self, message: str) -> None:
        """A bug ended the request: 500 if nothing was sent yet, else cut the response."""
        if self.state == WAITING:
            self.answer(error_response(500, message), "-")
        elif self.state != DONE:
            self.cut("-", self.attempt, failure="internal")

    def abort(self) -> None:
        """The client went away: drop every try, mirror and wait at once, and account for it."""
        if self.state == DONE:
            return
        attempt = self.attempt
        if attempt is not None:
            attempt.cancel()
            attempt.finish(self.record.status, True, aborted=True)
        self._stop_tries()
        if self.mirrors is not None and not self.request_done:
            for copy in self.mirrors:
                copy.abort()
        record = self.record
        record.response_flags = "DC"
        if not record.status:
            record.status = CLIENT_CLOSED
        self._report(False)

    def drain(self) -> None:
        """The listener drains: a request still waiting for an awaited pick gets 503 now."""
        if self.waiting is not None and self.state == WAITING:
            self.answer(error_response(503, "the gateway is shutting down"), "-", close=True)

    def request_malformed(self, status: int, message: str) -> None:
        """The request body broke HTTP framing: answer the error (or cut the response), close."""
        if self.state == WAITING:
            self.answer(error_response(status, message), "-", close=True)
        else:
            self.cut("-", self.attempt)

    def idle_timeout(self) -> None:
        """Nothing moved either way for the idle timeout."""
        if self.state == WAITING:
            self.answer(
                error_response(504, "idle timeout waiting for the upstream"), "UT", close=True
            )
        elif self.state != DONE:
            self.cut("UT", self.attempt, failure="idle_timeout")

    def _request_timeout(self) -> None:
        self.timer = None
        if self.state == WAITING:
            if self.retries is not None:
                self.retries.lost_replay = True  # the request timeout bounds every try
            self.answer(error_response(504, "request timeout"), "UT")
        elif self.state != DONE:
            self.cut("UT", self.attempt, failure="request_timeout")

    def _stop_tries(self) -> None:
        """No more tries: cancel an awaited pick, the current try and the timers."""
        waiting = self.waiting
        if waiting is not None:
            self.waiting = None
            waiting.cancel()
        attempt = self.attempt
        if attempt is not None:
            attempt.cancel()
            attempt.finish(self.record.status, True, aborted=True)
        self.cancel_timers()

    def cancel_timers(self) -> None:
        """The request timeout and a pending retry backoff."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.retries is not None:
            self.retries.cancel()

    def _end_taps(self, complete: bool) -> None:
        taps, self.taps = self.taps, None
        for tap in taps or ():
            try:
                tap.response_end(complete)
            except Exception:
                log.exception("response tap %r failed", tap)

    def _report(self, complete: bool) -> None:
        self.state = DONE
        responder = self.responder
        if responder is not None:
            # Ended without the responder (client gone, timeout, reset): its sends now fail.
            self.responder = None
            responder.disconnect()
        # The relay and the tunnel point back here: leave no cycle for the garbage collector.
        self.relay = None
        self.tunnel = None
        self.cancel_timers()
        record = self.record
        record.end = time.perf_counter()
        if self.taps is not None:
            self._end_taps(complete)
        try:
            self.down.telemetry.finish(self.trace, record)
        except Exception:
            log.exception("telemetry failed for request %s", self.request_id)

    def _finish(self, keep_alive: bool, complete: bool) -> None:
        if self.state == DONE:
            return
        self._report(complete)
        self.down.exchange_done(self, keep_alive)
