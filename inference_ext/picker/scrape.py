"""Scraping the model servers' metrics: one keep-alive HTTP/1.1 connection per server, polled.

Every ``interval`` (50 ms by default) each server of a pool is asked for ``GET /metrics`` on the
connection it already has (a small asyncio protocol with httptools' response parser: an httpx
request costs ~1 ms of CPU here, which at 20 scrapes a second per server would be a core for a
16-server fleet). A server that does not answer within the interval keeps its last signals,
which go stale (the picker then treats it as saturated); its connection is dropped and made
again on the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from httptools import HttpParserError, HttpResponseParser

log = logging.getLogger(__name__)

MAX_METRICS_BYTES = 4 * 1024 * 1024


class ScrapeError(Exception):
    """A scrape that gave no usable answer."""


class _MetricsConnection(asyncio.Protocol):
    """One server's connection: sends a GET per scrape and collects the response body."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.body: list[bytes] = []
        self.size = 0
        self.waiter: asyncio.Future[bytes] | None = None
        self.closed = False
        self.keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:
            self._fail(ScrapeError(f"bad metrics response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ScrapeError("connection closed"))

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_METRICS_BYTES:
            self._fail(ScrapeError(f"metrics response over {MAX_METRICS_BYTES} bytes"))
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        waiter, self.waiter = self.waiter, None
        body, self.body, self.size = b"".join(self.body), [], 0
        if waiter is not None and not waiter.done():
            if status == 200:
                waiter.set_result(body)
            else:
                waiter.set_exception(ScrapeError(f"metrics answered {status}"))

    def get(self, request: bytes) -> asyncio.Future[bytes]:
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.body, self.size = [], 0
        assert self.transport is not None
        self.transport.write(request)
        return self.waiter

    def _fail(self, error: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class MetricsClient:
    """GET /metrics from one ``host:port``, over a connection kept between scrapes."""

    def __init__(self, host: str, port: int, path: str = "/metrics") -> None:
        self.host = host
        self.port = port
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: ambient-picker\r\n"
            "Accept: text/plain\r\n\r\n"
        ).encode()
        self._conn: _MetricsConnection | None = None

    async def scrape(self, timeout: float) -> bytes:
        """The exposition, or ScrapeError (connect failure, timeout, not 200)."""
        try:
            async with asyncio.timeout(timeout):
                conn = self._conn
                if conn is None or conn.closed or not conn.keep_alive:
                    if conn is not None:
                        conn.close()
                    loop = asyncio.get_running_loop()
                    _, conn = await loop.create_connection(_MetricsConnection, self.host, self.port)
                    self._conn = conn
                return await conn.get(self._request)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ScrapeError(f"{type(exc).__name__}: {exc}") from exc
        except ScrapeError:
            self.close()
            raise

    def close(self) -> None:
        """Drop the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Scraper:
    """Polls a changing set of servers; hands each answer to ``on_metrics(server, text)`` and
    each failure to ``on_error(server, error)``, then ``on_round()`` after every round."""

    def __init__(
        self,
        interval: float,
        on_metrics: Callable[[str, bytes], None],
        on_error: Callable[[str, Exception], None],
        on_round: Callable[[], None],
    ) -> None:
        self.interval = interval
        self._on_metrics = on_metrics
        self._on_error = on_error
        self._on_round = on_round
        self._targets: dict[str, tuple[str, int]] = {}
        self._clients: dict[str, MetricsClient] = {}
        self._task: asyncio.Task[None] | None = None

    def set_targets(self, targets: dict[str, tuple[str, int]]) -> None:
        """The servers to poll (``"ip:port"`` -> address); may be called from any thread."""
        self._targets = dict(targets)

    @property
    def running(self) -> bool:
        """Whether the polling task runs."""
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start polling in the running loop (no-op when already running)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling and close the connections."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    async def scrape_once(self) -> None:
        """One round over every server, concurrently."""
        targets = self._targets
        for gone in [s for s in self._clients if s not in targets]:
            self._clients.pop(gone).close()
        names = list(targets)
        for name in names:
            if name not in self._clients:
                host, port = targets[name]
                self._clients[name] = MetricsClient(host, port)
        results = await asyncio.gather(
            *(self._clients[n].scrape(self.interval) for n in names), return_exceptions=True
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, bytes):
                self._on_metrics(name, result)
            elif isinstance(result, Exception):
                self._on_error(name, result)
        self._on_round()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.scrape_once()
            except Exception:
                log.exception("metrics scrape round failed")
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))
