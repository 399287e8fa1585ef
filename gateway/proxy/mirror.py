"""RequestMirror: a fire-and-forget copy of a request whose response is read and thrown away."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

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
    ) -> None:
        self._pool = pool
        self._backend = backend
        self._endpoint = endpoint
        self._chunked = chunked
        self._limit = limit
        self._buffer: list[bytes] = [head]
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
    ) -> MirrorCopy | None:
        """Pick an endpoint and send; None when the mirror backend has no endpoint."""
        endpoint = backend.pick(request)
        if endpoint is None:
            return None
        if endpoint.protocol != "http/1.1":
            # Copies are written as HTTP/1.1 bytes; an h2c mirror backend is not served yet.
            backend.release(endpoint, True)
            log.warning(
                "mirror to %s skipped: %s mirrors are not supported", endpoint, endpoint.protocol
            )
            return None
        copy = cls(pool, backend, endpoint, head, chunked=chunked, limit=limit, deadline=deadline)
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
        """Mirrors never hold the main request back."""

    def upstream_upgraded(
        self, conn: Http1Connection, reason: bytes, headers: list[tuple[bytes, bytes]], rest: bytes
    ) -> None:
        """Upgrades are not mirrored."""
        self._conn = None
        conn.abort()
        self._end(ok=True)

    def tunnel_data(self, data: bytes) -> None:
        """Never called: upgrades are not mirrored."""
