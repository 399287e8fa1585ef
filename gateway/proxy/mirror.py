"""RequestMirror: a fire-and-forget copy of a request whose response is read and thrown away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.proxy.upstream_wire import H2ClientStream

if TYPE_CHECKING:
    from gateway.backends.base import Backend, Endpoint
    from gateway.proxy.pool import ConnectAttempt, UpstreamPool
    from gateway.proxy.upstream import Http1Connection
    from gateway.request import RequestHead

log = logging.getLogger(__name__)


class MirrorCopy:
    """One mirrored request. It buffers (bounded) until connected and gives up rather than wait.

    Nothing here can delay or fail the main request: errors only end the copy.
    """

    __slots__ = (
        "_attempt",
        "_backend",
        "_buffer",
        "_buffered",
        "_chunked",
        "_conn",
        "_deadline",
        "_done",
        "_endpoint",
        "_fields",
        "_limit",
        "_pool",
        "_request_done",
        "_status",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        backend: Backend,
        endpoint: Endpoint,
        head: bytes,
        *,
        chunked: bool,
        limit: int,
        deadline: float,
        fields: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self._pool = pool
        self._backend = backend
        self._endpoint = endpoint
        # An HTTP/2 (h2c) mirror backend gets the head as fields and the body unframed.
        self._fields = fields
        self._chunked = chunked and fields is None
        self._limit = limit
        self._buffer: list[bytes] = [head] if fields is None else []
        self._buffered = len(head)
        self._conn: Http1Connection | None = None
        self._attempt: ConnectAttempt | None = None
        self._request_done = False
        self._done = False
        self._status = 0
        self._deadline = asyncio.get_running_loop().call_later(deadline, self.abort)

    @classmethod
    def start(
        cls,
        pool: UpstreamPool,
        backend: Backend,
        request: RequestHead,
        head: bytes,
        *,
        chunked: bool,
        limit: int,
        deadline: float,
        h2_fields: Callable[[], list[tuple[bytes, bytes]]] | None = None,
    ) -> MirrorCopy | None:
        """Pick an endpoint and send; None when the mirror backend has no endpoint.

        ``head`` is the HTTP/1.1 request head; ``h2_fields`` makes the HTTP/2 header block for a
        mirror backend that speaks HTTP/2.
        """
        endpoint = backend.pick(request)
        if endpoint is None:
            return None
        fields = None
        if endpoint.protocol in ("h2c", "h2"):
            if h2_fields is None:
                backend.release(endpoint, True)
                return None
            fields = h2_fields()
        copy = cls(
            pool,
            backend,
            endpoint,
            head,
            chunked=chunked,
            limit=limit,
            deadline=deadline,
            fields=fields,
        )
        conn = pool.acquire(endpoint)
        if conn is not None:
            copy._attach(conn)
        else:
            copy._attempt = pool.connect(endpoint, copy._connected)
        return copy

    def body(self, data: bytes) -> None:
        """A request body chunk for the copy."""
        if self._done:
            return
        framed = [b"%x\r\n" % len(data), data, b"\r\n"] if self._chunked else [data]
        conn = self._conn
        if conn is not None and type(conn) is H2ClientStream:
            conn.send_data(data)  # a full window pauses the stream: upstream_write_paused aborts
            return
        if conn is not None:
            transport = conn.transport
            if transport is not None and transport.get_write_buffer_size() > self._limit:
                self.abort()  # a slow mirror is dropped rather than buffered without bound
                return
            conn.send_many(framed)
            return
        self._buffered += len(data)
        if self._buffered > self._limit:
            self.abort()
            return
        self._buffer.extend(framed)

    def complete(self) -> None:
        """The request body ended."""
        self._request_done = True
        conn = self._conn
        if conn is not None and type(conn) is H2ClientStream and not self._done:
            conn.end_request()
            return
        if self._chunked and not self._done:
            if self._conn is not None:
                self._conn.send(b"0\r\n\r\n")
            else:
                self._buffer.append(b"0\r\n\r\n")

    def abort(self) -> None:
        """Give the copy up (the client went away mid-body, or the deadline passed)."""
        if self._done:
            return
        if self._attempt is not None:
            self._attempt.cancel()
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.abort()
        self._end(ok=True)

    def _connected(self, conn: Http1Connection | None, error: BaseException | None) -> None:
        self._attempt = None
        if conn is None:
            log.debug("mirror to %s failed to connect: %s", self._endpoint, error)
            self._end(ok=False)
        elif self._done:
            self._pool.release(conn, True)
        else:
            self._attach(conn)

    def _attach(self, conn: Http1Connection) -> None:
        self._conn = conn
        conn.owner = self
        if type(conn) is H2ClientStream:
            assert self._fields is not None
            body, self._buffer = self._buffer, []
            done = self._request_done
            conn.send_request(self._fields, end_stream=done and not body)
            for i, chunk in enumerate(body):
                conn.send_data(chunk, end_stream=done and i == len(body) - 1)
            return
        conn.send_many(self._buffer)
        self._buffer = []

    def _end(self, ok: bool) -> None:
        if not self._done:
            self._done = True
            self._deadline.cancel()
            self._backend.release(self._endpoint, ok)

    # -- UpstreamOwner -------------------------------------------------------------------------

    def upstream_informational(self, status: int) -> None:
        """Ignored."""

    def upstream_head(
        self, conn: Http1Connection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """Remember the status for passive health."""
        self._status = status

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        """Remember the status for passive health."""
        self._status = status

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """Discarded."""

    def upstream_body(self, data: bytes) -> None:
        """Discarded."""

    def upstream_complete(self, conn: Http1Connection) -> None:
        """Return the connection when the copy was fully sent."""
        self._conn = None
        self._pool.release(conn, conn.keep_alive and self._request_done)
        self._end(ok=self._status < 500)

    def upstream_lost(self, conn: Http1Connection, reason: str) -> None:
        """The mirror backend failed; nobody waits for it."""
        self._conn = None
        self._end(ok=False)

    def upstream_flush(self) -> None:
        """Nothing is forwarded."""

    def upstream_write_paused(self, paused: bool) -> None:
        """Mirrors never hold the main request back: a copy that cannot keep up is dropped."""
        if paused and self._fields is not None:
            self.abort()

    def upstream_upgraded(
        self, conn: Http1Connection, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """Upgrades are not mirrored."""
        self._conn = None
        conn.abort()
        self._end(ok=True)

    def tunnel_data(self, data: bytes) -> None:
        """Never called: upgrades are not mirrored."""
