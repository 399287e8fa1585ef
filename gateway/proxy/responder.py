"""In-gateway responders: an ASGI 3 application answers a request where an upstream would.

A backend that declares ``responder = app`` (see :class:`gateway.backends.base.Backend`) has its
requests answered by ``app`` in the gateway's own event loop, one task per request
(:class:`AsgiCall`), through the same response relay as proxied responses: the same framing,
response filters, taps, metrics, traces and access log.

The call speaks the ASGI HTTP protocol, spec version 2.4:

- the scope is a plain dict built once; ``receive`` and ``send`` are bound methods;
- ``receive`` hands out the request body as it arrives (``http.request``, ``more_body``); while
  more than ``max_buffered_body`` bytes wait for the app, the client is not read (HTTP/1.1 pauses
  the socket, HTTP/2 withholds the stream's window). Once the request body was received and the
  response is over, or the client left, it returns ``http.disconnect``;
- ``send`` keeps the response head until the first body message, or until the app yields to the
  loop, so a whole-body response goes out in one write with a Content-Length; it awaits while
  the client cannot take more (HTTP/1.1 transport paused, HTTP/2 stream blocked), so a fast
  producer never buffers without bound; after the client left it raises
  :class:`ClientDisconnected`, an ``OSError`` (spec 2.4; Starlette turns it into its
  ``ClientDisconnect``). HTTP/2 clients get the ``http.response.trailers`` extension.

Failures: an exception, a protocol violation (body before start, start twice, a field that is
not a token or holds a control character, more or less body than the Content-Length the app
declared) or a return without a complete response answers 500 naming the exception's type while
nothing was sent (details go to the log), and cuts the response otherwise (HTTP/1.1 closes the
connection, HTTP/2 resets the stream). After the client
left, the app's exceptions are expected and logged at debug level only. Apps whose lifespan
startup failed answer 503 naming the failure (see :mod:`gateway.proxy.lifespan`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from gateway.proxy.headers import check_response_fields
from gateway.proxy.lifespan import AppLifespan
from gateway.proxy.states import WAITING
from gateway.request import error_response

if TYPE_CHECKING:
    from gateway.proxy.exchange import Exchange
    from gateway.proxy.response_relay import Http1Relay
    from gateway.proxy.response_relay_h2 import H2Relay

__all__ = ["AsgiCall", "ClientDisconnected"]

log = logging.getLogger(__name__)

Message = dict[str, Any]
Fields = list[tuple[bytes, bytes]]

_DISCONNECT: Message = {"type": "http.disconnect"}
_EMPTY_END: Message = {"type": "http.request", "body": b"", "more_body": False}
_NO_BODY_STATUS = frozenset({204, 304})
PEER_IDENTITY = "ambient.peer_identity"  # the scope extension naming a mesh peer (SpiffeId)

# The states of the response (``AsgiCall.phase``).
_IDLE, _STARTED, _STREAMING, _TRAILERS, _DONE = 0, 1, 2, 3, 4

# Request field names as the scope has them (lower-case bytes), by the name as received: most
# requests repeat a few names. Bounded: names are the client's to choose.
_FIELD_NAMES: dict[str, bytes] = {}
_FIELD_NAMES_KEPT = 512

# Calls of apps served without a lifespan manager (a ListenerManager built without one): this
# entry has no state and only keeps their tasks alive.
_UNMANAGED = AppLifespan(None)


class ClientDisconnected(OSError):
    """``send()`` after the client left (ASGI HTTP spec 2.4); never logged as an error."""


class AsgiCall:
    """One request answered by an ASGI app: its scope, its task, ``receive`` and ``send``."""

    __slots__ = (
        "app",
        "asked_continue",
        "bodiless",
        "body_done",
        "buffered",
        "chunks",
        "delivered",
        "drained",
        "entry",
        "exchange",
        "gone",
        "headers",
        "paused",
        "phase",
        "reading_paused",
        "relay",
        "remaining",
        "status",
        "task",
        "trailers",
        "waiter",
    )

    def __init__(self, exchange: Exchange, app: Any, entry: AppLifespan) -> None:
        down = exchange.down
        self.exchange = exchange
        self.app = app
        self.entry = entry
        self.relay: Http1Relay | H2Relay = down  # type: ignore[assignment]  # the client side
        self.task: asyncio.Task[None] | None = None
        self.phase = _IDLE
        self.gone = False  # the exchange ended without us (client left, timeout, reset)
        # Response side: the head kept until the first body, and the client's backpressure.
        self.status = 0
        self.bodiless = False  # HEAD, 204, 304: no body goes out, whatever the app sends
        self.headers: Fields = []
        self.trailers = False  # the app sends http.response.trailers (HTTP/2 clients)
        self.remaining = -1  # body bytes the app's Content-Length still owes (-1: none given)
        self.paused = down.client_paused
        self.drained: asyncio.Future[None] | None = None  # a send() waiting for the client
        # Request side: body chunks not received by the app yet (a whole body a stage read, or
        # chunks held before the call: a pipelined request waiting its turn).
        self.chunks: list[bytes] = []
        self.buffered = 0
        # An HTTP/1.1 request framed with no body is complete with its head.
        self.body_done = exchange.request_done or not (
            exchange.content_length or exchange.chunked or exchange.staged
        )
        self.delivered = False  # the last http.request (more_body False) was received
        self.reading_paused = False
        self.asked_continue = False  # 100 Continue sent
        self.waiter: asyncio.Future[None] | None = None  # a receive() waiting for the client
        held = exchange.staged
        if held is not None:
            body = exchange.body
            chunks = self.chunks = held.unsent() if body is None else [body] if body else []
            held.chunks = []
            held.size = held.sent = 0
            self.buffered = sum(map(len, chunks))
            if self.buffered <= down.options.max_buffered_body:
                down.pause_reading_for(exchange, False)  # held chunks may have paused it
            else:
                self.reading_paused = True
        # Body chunks and the body's end come to this call from now on (request_complete).
        exchange.responder = self
        if not self.body_done:
            exchange.end_hook = True

    @classmethod
    def start(cls, exchange: Exchange, app: Any) -> None:
        """Answer ``exchange`` with ``app`` (called by the exchange instead of choosing an
        endpoint): a 503 when the app's lifespan failed or ended, else a task running it."""
        down = exchange.down
        lifespans = down.ctx.lifespans
        if lifespans is None:
            entry = _UNMANAGED
        else:
            found = lifespans.get(app)
            if found is None or found.stopped or found.failure is not None:
                why = "it was shut down" if found is None or found.stopped else found.failure
                exchange.answer(error_response(503, f"{_backend_name(exchange)}: {why}"), "UH")
                return
            entry = found
        call = cls(exchange, app, entry)
        call.task = down.loop.create_task(call.run(_scope(exchange, entry.state)))
        entry.calls.add(call)

    async def run(self, scope: Message) -> None:
        """Run the app to its end, then make sure the exchange ends too."""
        try:
            await self.app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            self._failed("cancelled (the gateway is stopping the app)", None)
            raise
        except Exception as exc:
            self._failed(f"raised {type(exc).__name__}", exc)
        else:
            if self.phase != _DONE:
                self._failed("returned without completing its response", None)
        finally:
            self.entry.call_ended(self)

    # -- receive --------------------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next ``http.request`` (body bytes as they came), then ``http.disconnect``."""
        while True:
            chunks = self.chunks
            if chunks:
                body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self.chunks = []
                self.buffered = 0
                if self.reading_paused:
                    self.reading_paused = False
                    if not self.gone:
                        self.exchange.down.pause_reading_for(self.exchange, False)
                if self.body_done:
                    self.delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return {"type": "http.request", "body": body, "more_body": True}
            if self.gone or self.phase == _DONE:
                return dict(_DISCONNECT)
            if self.body_done and not self.delivered:
                self.delivered = True
                return dict(_EMPTY_END)
            exchange = self.exchange
            if not self.body_done and exchange.expect_continue and not self.asked_continue:
                self.asked_continue = True
                exchange.down.interim(100)  # the client waits for this before its body
            waiter = self.waiter = exchange.down.loop.create_future()
            try:
                await waiter
            finally:
                self.waiter = None

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Called by the exchange.

    def body(self, data: bytes) -> None:
        """A request body chunk from the client."""
        self.chunks.append(data)
        self.buffered += len(data)
        if not self.reading_paused and self.buffered > self.exchange.down.options.max_buffered_body:
            self.reading_paused = True
            self.exchange.down.pause_reading_for(self.exchange, True)
        self._wake()

    def body_end(self) -> None:
        """The request body ended."""
        self.body_done = True
        self._wake()

    def disconnect(self) -> None:
        """The exchange ended without this call (the client left, a timeout, a reset)."""
        if self.gone:
            return
        self.gone = True
        self._wake()
        drained = self.drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def writable(self, writable: bool) -> None:
        """Client write backpressure: ``send`` waits while the client cannot take more."""
        self.paused = not writable
        if writable:
            drained = self.drained
            if drained is not None and not drained.done():
                drained.set_result(None)

    # -- send -----------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """``http.response.start``, ``http.response.body``, ``http.response.trailers``."""
        if self.paused and not self.gone and self.phase != _DONE:
            await self._drain()
        kind = message["type"]
        phase = self.phase
        if kind == "http.response.body" and phase in (_STREAMING, _STARTED):
            if self.gone:
                raise ClientDisconnected("the client disconnected")
            more = message.get("more_body", False)
            if more and phase == _STREAMING and self.remaining < 0 and not self.bodiless:
                # A stream's next chunk (an SSE event): straight to the client.
                body = message.get("body", b"")
                if body:
                    self.relay.responder_chunk(body)
                return
            self._body(message.get("body", b""), more)
        elif kind == "http.response.start" and phase == _IDLE:
            if self.gone:
                raise ClientDisconnected("the client disconnected")
            status = message["status"]
            if status.__class__ is not int:
                if not isinstance(status, int):  # an IntEnum (HTTPStatus) is fine
                    raise TypeError(f"ASGI response status {status!r} is not an int")
                status = int(status)
            if not 200 <= status <= 999:
                raise RuntimeError(f"invalid ASGI response status {status}")
            self.status = status
            self.bodiless = self.exchange.head_only or status in _NO_BODY_STATUS
            # The app's list, kept as it is: the relays check its fields when they write them.
            self.headers = message.get("headers") or self.headers
            if message.get("trailers"):
                self.trailers = self.exchange.record.version == "2"
            self.phase = _STARTED
            # Sent with the first body message, or alone once the app yields to the loop.
            self.exchange.down.loop.call_soon(self._head_due)
        elif kind == "http.response.trailers" and phase == _TRAILERS:
            if self.gone:
                raise ClientDisconnected("the client disconnected")
            self._trailers(message.get("headers") or [], message.get("more_trailers", False))
        elif kind == "http.response.trailers" and phase == _DONE and not self.trailers:
            pass  # trailers the client's protocol does not carry (HTTP/1.1): dropped
        else:
            expected = ("http.response.start", "http.response.body", "http.response.trailers")
            if kind not in expected:
                raise RuntimeError(f"unexpected ASGI message {kind!r}")
            if phase == _IDLE:
                raise RuntimeError(f"ASGI message {kind!r} before 'http.response.start'")
            if phase == _DONE:
                raise RuntimeError(f"ASGI message {kind!r} after the response completed")
            raise RuntimeError(f"ASGI message {kind!r} out of order")

    async def _drain(self) -> None:
        """Wait until the client can take more (or left)."""
        drained = self.drained = self.exchange.down.loop.create_future()
        try:
            await drained
        finally:
            self.drained = None

    def _head_due(self) -> None:
        """The app yielded after ``http.response.start`` without a body: send the head alone."""
        if self.phase == _STARTED and not self.gone:
            try:
                self._write_head(None)
            except (RuntimeError, TypeError, ValueError):
                return  # a head that cannot be written: the app's next send raises it
            self.relay.upstream_flush()

    def _write_head(self, length: int | None) -> None:
        """Queue the head on the relay, its fields checked (``length``: a Content-Length to
        add when the app gave none), and note the Content-Length the app declared."""
        exchange = self.exchange
        headers = self.headers
        check_response_fields(headers)
        bodiless = self.bodiless
        for name, value in headers:
            if name.lower() == b"content-length":
                if not value.isdigit():
                    raise RuntimeError(f"invalid response content-length {value!r}")
                if not bodiless:
                    self.remaining = int(value)
                break
        else:
            if length is not None and not bodiless:
                headers = [*headers, (b"content-length", b"%d" % length)]
        self.phase = _STREAMING
        self.relay.responder_head(exchange, self.status, headers)

    def _body(self, body: bytes, more: bool) -> None:
        exchange = self.exchange
        relay = self.relay
        if self.bodiless:
            body = b""
        if self.phase == _STARTED:
            if more or self.trailers:
                self._write_head(None)
            elif relay.responder_whole(exchange, self.status, self.headers, body):
                self._ended()
                return
            else:
                self._write_head(len(body))
        if self.remaining >= 0:
            remaining = self.remaining = self.remaining - len(body)
            if remaining < 0:
                raise RuntimeError("response body longer than its Content-Length")
            if remaining and not more:
                raise RuntimeError("response body shorter than its Content-Length")
        if more:
            if body:
                relay.responder_chunk(body)
            else:
                relay.upstream_flush()  # the head, when it is still queued
            return
        if body:
            relay.upstream_body(body)
        if self.trailers:
            relay.upstream_flush()
            self.phase = _TRAILERS
            return
        relay.write_end()
        self._ended()

    def _trailers(self, headers: Any, more: bool) -> None:
        self.relay.upstream_trailers([(bytes(n).lower(), bytes(v)) for n, v in headers])
        if not more:
            self.relay.write_end()
            self._ended()

    def _ended(self) -> None:
        """The response's end went out: the exchange finishes."""
        self.phase = _DONE
        self.exchange.responded(True)
        self._wake()  # a receive() waiting for the request body gets http.disconnect

    # -- failures -------------------------------------------------------------------------------

    def _failed(self, what: str, exc: Exception | None) -> None:
        """The app ended (or was cancelled) without completing its response."""
        exchange = self.exchange
        name = _backend_name(exchange)
        if self.gone:
            # The client left or the exchange timed out: what the app does now is expected.
            log.debug("responder %s %s after request %s ended", name, what, exchange.request_id)
            return
        if exc is not None:
            log.error(
                "responder %s %s on request %s", name, what, exchange.request_id, exc_info=exc
            )
        elif self.phase != _DONE:
            log.error("responder %s %s on request %s", name, what, exchange.request_id)
        if self.phase == _DONE:
            return  # the response was complete before the exception
        self.phase = _DONE
        exchange.responder = None
        if exchange.state == WAITING:
            exchange.answer(error_response(500, f"{name} {what}"), "-")
        else:
            exchange.responded(False)


def _backend_name(exchange: Exchange) -> str:
    """``Kind namespace/name`` of the exchange's backend, for messages."""
    backend = exchange.backend
    if backend is None:
        return "the in-gateway responder"
    dest = backend.destination
    return f"{dest.kind} {dest.namespace}/{dest.service_name}"


def _scope(exchange: Exchange, state: dict[str, Any]) -> Message:
    """The ASGI HTTP connection scope of a request."""
    head = exchange.head
    down = exchange.down
    h2 = exchange.record.version == "2"
    path = head.path
    names = _FIELD_NAMES
    headers: Fields = []
    for name, value in head.headers:
        key = names.get(name)
        if key is None:
            key = name.lower().encode("latin-1")
            if len(names) < _FIELD_NAMES_KEPT:
                names[name] = key
        if key != b"traceparent":
            headers.append((key, value.encode("latin-1")))
    # As an upstream would: the gateway's span is the parent of the app's, and a request id
    # the gateway made up is the app's too.
    headers.append((b"traceparent", exchange.trace.traceparent.encode("latin-1")))
    if exchange.new_request_id:
        headers.append((b"x-request-id", exchange.request_id.encode("latin-1")))
    if h2:
        # :authority stands for Host.
        if head.get("host") is None and head.authority:
            headers.insert(0, (b"host", head.authority.encode("latin-1")))
        transport = down.conn.transport  # type: ignore[attr-defined]
    else:
        transport = down.transport  # type: ignore[attr-defined]
    peer = transport.get_extra_info("peername") if transport is not None else None
    sock = transport.get_extra_info("sockname") if transport is not None else None
    scope: Message = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "2" if h2 else ("1.0" if exchange.http10 else "1.1"),
        "method": head.method,
        "scheme": head.scheme,
        "path": unquote(path) if "%" in path else path,
        "raw_path": path.encode("latin-1"),
        "query_string": head.query.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": (peer[0], peer[1]) if peer else None,
        "server": (sock[0], sock[1]) if sock else None,
        "state": state.copy(),
    }
    # ``ambient.annotate``: ``annotate(key, value)`` adds an attribute to the request's span and
    # access-log line, as a backend or a tap can (an LLM answer's provider, model and tokens).
    # ``ambient.link``: ``link(traceparent, attributes)`` links the request's span to another
    # (an MCP tool call to the LLM answer that asked for it). ``ambient.peer_identity``: the
    # SpiffeId of the mesh peer when the request came over HBONE mTLS (waypoint mode).
    extensions: dict[str, Any] = {
        "ambient.annotate": exchange.annotate,
        "ambient.link": exchange.link,
    }
    if head.peer is not None:
        extensions[PEER_IDENTITY] = head.peer.identity
    if h2:
        extensions["http.response.trailers"] = {}
    scope["extensions"] = extensions
    return scope
