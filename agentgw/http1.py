"""A lean HTTP/1.1 client for the agent gateway's upstreams (MCP servers, A2A agents).

httpx costs more CPU per call than the rest of the MCP path together; this client does only
what the path needs: one request at a time per connection, a body given whole, the answer's
body streamed as it arrives (SSE included, chunked or not), idle timeouts on every wait,
connections kept per (scheme, host, port) and reused. A request that meets a kept connection the
server closed while idle (it ends with no byte of an answer) is sent once more on a new one.
While more than ``_HIGH_WATER`` body pieces wait unread the socket is not read.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser

_HIGH_WATER = 64
_IDLE_KEPT = 32  # idle connections kept per origin
_END = b""


class HttpError(Exception):
    """The request failed: no connection, a timeout, a broken or unparsable answer."""


class HttpTimeout(HttpError):
    """Nothing moved for the idle timeout."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host, port, and the path of the URL."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.scheme, parts.hostname or "", port, path)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One upstream connection and the answer it is reading."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pieces: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self.headers: dict[str, str] = {}
        self.complete = False
        self.closed = False
        self.received = False  # any byte of the current answer
        self.paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:
            self._fail(HttpError(f"bad answer: {exc}"))
            return
        if not self.paused and self.pieces.qsize() > _HIGH_WATER and self.transport:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(HttpError(f"the connection closed: {exc or 'by the server'}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.pieces.put_nowait(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.pieces.put_nowait(_END)

    def _fail(self, exc: BaseException) -> None:
        if not self.head.done():
            self.head.set_exception(exc)
        else:
            self.pieces.put_nowait(exc)
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Ready for the next request on this connection."""
        self.parser = HttpResponseParser(self)
        self.head = asyncio.get_running_loop().create_future()
        self.pieces = asyncio.Queue()
        self.headers = {}
        self.complete = self.received = False

    def resume(self) -> None:
        if self.paused and self.pieces.qsize() <= _HIGH_WATER // 2 and self.transport:
            self.paused = False
            self.transport.resume_reading()


@dataclass(slots=True)
class Response:
    """An answer whose body is read as it comes; ``close`` returns the connection or drops it."""

    status: int
    headers: dict[str, str]
    _conn: _Connection
    _pool: Http1Pool
    _key: tuple[str, str, int]
    _idle: float | None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces until its end."""
        conn = self._conn
        while True:
            try:
                piece = await asyncio.wait_for(conn.pieces.get(), self._idle)
            except TimeoutError as exc:
                conn._fail(HttpTimeout("idle timeout"))
                raise HttpTimeout("idle timeout: the upstream stopped sending") from exc
            conn.resume()
            if isinstance(piece, BaseException):
                raise piece
            if piece is _END:
                return
            yield piece

    async def read(self) -> bytes:
        """The whole body."""
        return b"".join([piece async for piece in self.chunks()])

    def close(self) -> None:
        """Give the connection back when the answer was read to its end, else close it."""
        conn = self._conn
        if conn.complete and not conn.closed and conn.parser.should_keep_alive():
            self._pool.release(self._key, conn)
        elif conn.transport is not None:
            conn.transport.close()


@dataclass(slots=True)
class Http1Pool:
    """Keep-alive connections per origin."""

    tls: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    idle: dict[tuple[str, str, int], list[_Connection]] = field(default_factory=dict)

    async def request(
        self,
        method: str,
        origin: Origin,
        headers: dict[str, str],
        body: bytes,
        connect_timeout: float,
        idle_timeout: float | None,
    ) -> Response:
        """Send the request; the answer once its head arrived."""
        lines = [f"{method} {origin.path} HTTP/1.1", f"host: {origin.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"content-length: {len(body)}")
        wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        key = (origin.scheme, origin.host, origin.port)
        for reused in (True, False):
            conn = self._idle_connection(key) if reused else None
            if reused and conn is None:
                continue
            if conn is None:
                conn = await self._connect(origin, connect_timeout)
            assert conn.transport is not None
            conn.transport.write(wire)
            try:
                await asyncio.wait_for(asyncio.shield(conn.head), idle_timeout)
            except TimeoutError as exc:
                conn._fail(HttpTimeout("idle timeout"))
                raise HttpTimeout("no answer (idle timeout)") from exc
            except HttpError:
                if reused and not conn.received:
                    continue  # closed while idle: once more on a new connection
                raise
            status = conn.parser.get_status_code()
            return Response(status, conn.headers, conn, self, key, idle_timeout)
        raise HttpError("unreachable")  # the loop returns or raises

    def _idle_connection(self, key: tuple[str, str, int]) -> _Connection | None:
        kept = self.idle.get(key)
        while kept:
            conn = kept.pop()
            if not conn.closed:
                conn.reset()
                return conn
        return None

    async def _connect(self, origin: Origin, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self.tls if origin.scheme == "https" else None
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Connection,
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls else None,
                ),
                timeout,
            )
        except TimeoutError as exc:
            raise HttpTimeout(f"connect to {origin.host}:{origin.port} timed out") from exc
        except OSError as exc:
            raise HttpError(f"connect to {origin.host}:{origin.port}: {exc}") from exc
        return conn

    def release(self, key: tuple[str, str, int], conn: _Connection) -> None:
        kept = self.idle.setdefault(key, [])
        if len(kept) < _IDLE_KEPT:
            kept.append(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def close(self) -> None:
        """Close every kept connection."""
        for kept in self.idle.values():
            for conn in kept:
                if conn.transport is not None:
                    conn.transport.close()
        self.idle.clear()
