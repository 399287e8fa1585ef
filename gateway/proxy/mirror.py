"""RequestMirror: a fire-and-forget copy of a request whose response is read and thrown away.

A mirror backend is chosen like any backend (its pick may be awaited); the copy buffers the body,
bounded, until it is connected, and gives up rather than wait or grow. Nothing here can delay or
fail the main request.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.backends.base import Endpoint, Pick
from gateway.proxy.h2_client import H2ClientStream
from gateway.proxy.headers import upstream_request_fields, upstream_request_head

if TYPE_CHECKING:
    from gateway.backends.base import Backend
    from gateway.proxy.exchange import Exchange
    from gateway.proxy.pool import ConnectAttempt, UpstreamPool
    from gateway.proxy.upstream import Http1Connection
    from gateway.snapshot import Mirror

log = logging.getLogger(__name__)


def start_mirrors(exchange: Exchange, mirrors: tuple[Mirror, ...]) -> None:
    """Start a copy of the request for each mirror (``fraction`` of requests each)."""
    options = exchange.down.options
    copies = []
    for mirror in mirrors:
        if mirror.fraction < 1.0 and random.random() >= mirror.fraction:
            continue
        try:
            head = exchange.head_bytes
            if head is None:
                head = exchange.head_bytes = upstream_request_head(exchange)
                exchange.forward = None
            copy = MirrorCopy(
                exchange.down.pool,
                mirror.backend,
                head,
                chunked=exchange.chunked,
                limit=options.max_buffered_body,
                deadline=options.idle_timeout,
                h2_fields=lambda: upstream_request_fields(exchange),
            )
            copy.choose(exchange)
        except Exception:
            log.exception("request %s: mirror failed to start", exchange.request_id)
            continue
        if copy.done:
            continue
        held = exchange.staged
        for chunk in held.chunks if held is not None else ():
            copy.body(chunk)
        if exchange.request_done:
            copy.complete()
        copies.append(copy)
    if copies:
        exchange.mirrors = copies
        exchange.end_hook = True


class MirrorCopy:
    """One mirrored request. It buffers (bounded) until connected and gives up rather than wait.

    It is also the outcome its backend learns when the copy ends (see ``Backend.done``).
    """

    __slots__ = (
        "_attempt",
        "_backend",
        "_buffer",
        "_buffered",
        "_chunked",
        "_conn",
        "_deadline",
        "_endpoint",
        "_h2_fields",
        "_head",
        "_limit",
        "_pick",
        "_pool",
        "_request_done",
        "_start",
        "aborted",
        "done",
        "end",
        "failure",
        "first_byte_at",
        "ok",
        "request_bytes",
        "response_bytes",
        "state",
        "status",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        backend: Backend,
        head: bytes,
        *,
        chunked: bool,
        limit: int,
        deadline: float,
        h2_fields: Callable[[], list[tuple[bytes, bytes]]],
    ) -> None:
        self._pool = pool
        self._backend = backend
        self._head = head  # the HTTP/1.1 request head; h2c mirror backends get fields instead
        self._h2_fields = h2_fields
        self._chunked = chunked
        self._limit = limit
        self._buffer: list[bytes] = []  # body chunks, unframed, until connected
        self._buffered = 0
        self._endpoint: Endpoint | None = None
        self._conn: Http1Connection | None = None
        self._attempt: ConnectAttempt | None = None
        self._pick: asyncio.Future[Any] | None = None
        self._request_done = False
        self._start = time.perf_counter()
        self.done = False
        self.state: Any = None
        self.status = 0
        self.ok = True
        self.aborted = False
        self.failure = ""
        self.request_bytes = 0
        self.response_bytes = 0
        self.first_byte_at = 0.0
        self.end = 0.0
        self._deadline = asyncio.get_running_loop().call_later(deadline, self.abort)

    # -- Outcome -------------------------------------------------------------------------------

    @property
    def first_byte(self) -> float:
        """Seconds from the copy's start to its response head; -1.0 when none arrived."""
        return self.first_byte_at - self._start if self.first_byte_at else -1.0

    @property
    def duration(self) -> float:
        """Seconds from the copy's start to its end."""
        return self.end - self._start

    # -- choosing and connecting ---------------------------------------------------------------

    def choose(self, exchange: Exchange) -> None:
        """Ask the mirror backend for an endpoint (awaiting its pick if it must)."""
        result = self._backend.pick(exchange, ())
        if inspect.isawaitable(result):
            future = self._pick = asyncio.ensure_future(result)
            future.add_done_callback(self._picked)
        else:
            self._connect(result)

    def _picked(self, future: asyncio.Future[Any]) -> None:
        if self._pick is not future:
            return
        self._pick = None
        if future.cancelled() or self.done:
            return
        if future.exception() is not None:
            log.debug("mirror pick failed: %r", future.exception())
            self._finish(ok=True, aborted=True, failure="pick_failed")
            return
        self._connect(future.result())

    def _connect(self, result: object) -> None:
        if isinstance(result, Pick):
            self.state = result.state
            result = result.endpoint
        if not isinstance(result, Endpoint):
            self._finish(ok=True, aborted=True, failure="no_endpoint")
            return
        self._endpoint = result
        conn = self._pool.acquire(result)
        if conn is not None:
            self._attach(conn)
        else:
            self._attempt = self._pool.connect(result, self._connected)

    def _connected(self, conn: Http1Connection | None, error: BaseException | None) -> None:
        self._attempt = None
        if conn is None:
            log.debug("mirror to %s failed to connect: %s", self._endpoint, error)
            self._finish(ok=False, failure="connect_error")
        elif self.done:
            self._pool.release(conn, True)
        else:
            self._attach(conn)

    def _attach(self, conn: Http1Connection) -> None:
        self._conn = conn
        conn.owner = self
        body, self._buffer = self._buffer, []
        done = self._request_done
        if type(conn) is H2ClientStream:
            conn.send_request(self._h2_fields(), end_stream=done and not body)
            for i, chunk in enumerate(body):
                conn.send_data(chunk, end_stream=done and i == len(body) - 1)
            return
        out = [self._head]
        for chunk in body:
            out += self._framed(chunk)
        if done and self._chunked:
            out.append(b"0\r\n\r\n")
        conn.send_many(out)

    def _framed(self, data: bytes) -> list[bytes]:
        return [b"%x\r\n" % len(data), data, b"\r\n"] if self._chunked else [data]

    # -- the request body ------------------------------------------------------------------------

    def body(self, data: bytes) -> None:
        """A request body chunk for the copy."""
        if self.done:
            return
        self.request_bytes += len(data)
        conn = self._conn
        if conn is not None and type(conn) is H2ClientStream:
            conn.send_data(data)  # a full window pauses the stream: upstream_write_paused aborts
            return
        if conn is not None:
            transport = conn.transport
            if transport is not None and transport.get_write_buffer_size() > self._limit:
                self.abort()  # a slow mirror is dropped rather than buffered without bound
                return
            conn.send_many(self._framed(data))
            return
        self._buffered += len(data)
        if self._buffered > self._limit:
            self.abort()
            return
        self._buffer.append(data)

    def complete(self) -> None:
        """The request body ended."""
        self._request_done = True
        conn = self._conn
        if conn is None or self.done:
            return
        if type(conn) is H2ClientStream:
            conn.end_request()
        elif self._chunked:
            conn.send(b"0\r\n\r\n")

    def abort(self) -> None:
        """Give the copy up (the client went away mid-body, or the deadline passed)."""
        if self.done:
            return
        if self._pick is not None:
            pick, self._pick = self._pick, None
            pick.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.abort()
        self._finish(ok=True, aborted=True)

    def _finish(self, ok: bool, aborted: bool = False, failure: str = "") -> None:
        if self.done:
            return
        self.done = True
        self._deadline.cancel()
        self.ok = ok
        self.aborted = aborted
        self.failure = failure
        self.end = time.perf_counter()
        if self._endpoint is not None:
            try:
                self._backend.done(self._endpoint, self)
            except Exception:
                log.exception("mirror backend %r failed to take an outcome", self._backend)

    # -- UpstreamOwner -------------------------------------------------------------------------

    def upstream_informational(self, status: int) -> None:
        """Ignored."""

    def upstream_head(
        self, conn: Http1Connection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Remember the status for the outcome."""
        self.status = status
        self.first_byte_at = time.perf_counter()

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        """Remember the status for the outcome."""
        self.status = status
        self.first_byte_at = time.perf_counter()

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Discarded."""

    def upstream_body(self, data: bytes) -> None:
        """Discarded (counted)."""
        self.response_bytes += len(data)

    def upstream_complete(self, conn: Http1Connection) -> None:
        """Return the connection when the copy was fully sent."""
        self._conn = None
        self._pool.release(conn, conn.keep_alive and self._request_done)
        self._finish(ok=self.status < 500)

    def upstream_lost(self, conn: Http1Connection, reason: str) -> None:
        """The mirror backend failed; nobody waits for it."""
        self._conn = None
        self._finish(ok=False, aborted=True, failure=reason)

    def upstream_flush(self) -> None:
        """Nothing is forwarded."""

    def upstream_write_paused(self, paused: bool) -> None:
        """Mirrors never hold the main request back: a copy that cannot keep up is dropped."""
        if paused and type(self._conn) is H2ClientStream:
            self.abort()

    def upstream_upgraded(
        self, conn: Http1Connection, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """Upgrades are not mirrored."""
        self._conn = None
        conn.abort()
        self._finish(ok=True, aborted=True)

    def tunnel_data(self, data: bytes) -> None:
        """Never called: upgrades are not mirrored."""
