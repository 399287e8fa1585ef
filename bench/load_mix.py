"""A steady mix through the gateway: short GETs at a fixed rate plus long SSE streams kept open.

Used by the fault drills (``tests/e2e/test_fault_drills.py``) and ``bench.soak``. Every request
and stream is accounted: a short GET succeeds with a 200; a stream succeeds when it delivered
every event it asked the echo backend for, numbered 0..N-1 with none missing, and ended cleanly.
Anything else is a :class:`Failure` with the time it started and ended, so a drill can tell which
failures its fault explains. The load is bounded in time (``run(seconds)``) and in concurrency.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx

__all__ = ["Failure", "LoadReport", "MixedLoad"]


@dataclass(frozen=True, slots=True)
class Failure:
    """One short request or stream that did not end as it should."""

    kind: str  # "short" or "stream"
    started: float  # time.monotonic()
    ended: float
    error: str


@dataclass
class LoadReport:
    """What a run sent and how it ended."""

    shorts_ok: int = 0
    streams_ok: int = 0
    events: int = 0
    skipped: int = 0  # short GETs not sent because too many were in flight (a stalled gateway)
    failures: list[Failure] = field(default_factory=list)
    backends: dict[str, int] = field(default_factory=dict)  # x-echo-backend -> short GETs

    @property
    def requests(self) -> int:
        """Requests that ended, well or not."""
        return self.shorts_ok + self.streams_ok + len(self.failures)


class MixedLoad:
    """``rate`` short GETs per second and ``streams`` concurrent SSE streams against ``base``.

    Each stream asks for ``events`` events ``interval_ms`` apart, then the next one starts on the
    same slot. ``http2`` speaks cleartext HTTP/2 (prior knowledge) for the streams.
    """

    def __init__(
        self,
        base: str,
        *,
        rate: float = 190.0,
        streams: int = 8,
        events: int = 40,
        interval_ms: int = 50,
        short_path: str = "/short",
        http2_streams: bool = False,
        max_in_flight: int = 128,
        timeout: float = 10.0,
    ) -> None:
        self.base = base
        self.rate = rate
        self.streams = streams
        self.events = events
        self.interval_ms = interval_ms
        self.short_path = short_path
        self.http2_streams = http2_streams
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.report = LoadReport()
        self._stop = asyncio.Event()
        self._in_flight = 0

    def stop(self) -> None:
        """End the run early: short GETs stop being sent, streams finish the one they carry."""
        self._stop.set()

    async def run(self, seconds: float) -> LoadReport:
        """Send the mix for ``seconds`` (or until :meth:`stop`), then wait for what is in flight
        (at most ``timeout`` more)."""
        limits = httpx.Limits(max_connections=self.max_in_flight, max_keepalive_connections=64)
        timeout = httpx.Timeout(self.timeout)
        async with (
            httpx.AsyncClient(base_url=self.base, limits=limits, timeout=timeout) as shorts,
            httpx.AsyncClient(
                base_url=self.base,
                timeout=timeout,
                http1=not self.http2_streams,
                http2=self.http2_streams,
                limits=httpx.Limits(max_connections=self.streams + 4),
            ) as streams,
        ):
            loop = asyncio.get_running_loop()
            end = loop.time() + seconds
            slots = [
                asyncio.create_task(self._stream_slot(streams, end)) for _ in range(self.streams)
            ]
            sending: set[asyncio.Task[None]] = set()
            step = 1.0 / self.rate if self.rate > 0 else seconds
            due = loop.time()
            i = 0
            while not self._stop.is_set() and loop.time() < end:
                if self._in_flight >= self.max_in_flight:
                    self.report.skipped += 1
                else:
                    task = asyncio.create_task(self._short(shorts, i))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                i += 1
                due += step
                delay = due - loop.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), delay)
                    except TimeoutError:
                        pass
            await asyncio.wait([*slots, *sending], timeout=self.timeout + 5)
        return self.report

    async def _short(self, client: httpx.AsyncClient, i: int) -> None:
        started = time.monotonic()
        self._in_flight += 1
        try:
            response = await client.get(f"{self.short_path}/{i}")
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}")
        except Exception as exc:  # every way a request can fail is a failure to count
            self.report.failures.append(Failure("short", started, time.monotonic(), _name(exc)))
        else:
            self.report.shorts_ok += 1
            backend = response.headers.get("x-echo-backend", "")
            self.report.backends[backend] = self.report.backends.get(backend, 0) + 1
        finally:
            self._in_flight -= 1

    async def _stream_slot(self, client: httpx.AsyncClient, end: float) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set() and loop.time() < end:
            await self.stream(client)

    async def stream(self, client: httpx.AsyncClient) -> bool:
        """One SSE stream, accounted; True when it delivered every event and ended cleanly."""
        started = time.monotonic()
        params = {"events": self.events, "interval_ms": self.interval_ms}
        seen = 0
        try:
            async with client.stream("GET", "/sse", params=params) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"status {response.status_code}")
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        number = json.loads(line[5:])["i"]
                        if number != seen:
                            raise RuntimeError(f"event {seen} missing (got {number})")
                        seen += 1
            if seen != self.events:
                raise RuntimeError(f"stream ended after {seen} of {self.events} events")
        except Exception as exc:
            error = f"{_name(exc)} after {seen} events"
            self.report.failures.append(Failure("stream", started, time.monotonic(), error))
            return False
        finally:
            self.report.events += seen
        self.report.streams_ok += 1
        return True


def _name(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]
