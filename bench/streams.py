"""Many concurrent SSE streams through the gateway: memory, CPU per event, added latency, leaks.

Run ``python -m bench.streams``. For 1,000 and 5,000 streams against the same echo upstream:

* idle: open N streams that send one event and then stay quiet; gateway RSS growth / N;
* active: N streams each sending an event every ``interval`` ms, direct and through the gateway;
  per-event delivery latency (client receive time minus the upstream's send timestamp) p50/p99,
  the gateway's CPU per event delivered, and beside it the CPU per event of ``bench.floor_proxy``
  (the least a uvloop + httptools proxy can do) carrying the same streams in the same run;
* leaks: after every client left, the upstream SSE streams the echo backend still has open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
import urllib.request
from dataclasses import dataclass

import uvloop

from bench.processes import (
    Service,
    cpu_seconds,
    rss_bytes,
    start_echo,
    start_floor,
    start_gateway,
)

_STAMP = b'"t": '


class StreamClient(asyncio.Protocol):
    """One SSE stream: records the delivery latency of every event it receives."""

    def __init__(self, request: bytes, sink: list[float], first: asyncio.Future[None]) -> None:
        self.request = request
        self.sink = sink
        self.first = first
        self.transport: asyncio.Transport | None = None
        self.events = 0
        self.recording = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        start = data.find(_STAMP)
        while start != -1:
            end = data.find(b"}", start)
            self.events += 1
            if self.recording:
                self.sink.append(now - float(data[start + len(_STAMP) : end]))
            start = data.find(_STAMP, end)
        if self.events and not self.first.done():
            self.first.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first.done():
            self.first.set_exception(ConnectionError("stream closed before its first event"))


async def open_streams(
    port: int, count: int, interval_ms: int, sink: list[float]
) -> list[StreamClient]:
    """Open ``count`` streams (bounded concurrency while connecting) and wait for a first event."""
    loop = asyncio.get_running_loop()
    request = (
        f"GET /sse?events=0&interval_ms={interval_ms} HTTP/1.1\r\nHost: bench\r\n\r\n"
    ).encode()
    clients: list[StreamClient] = []
    gate = asyncio.Semaphore(200)

    async def one() -> None:
        async with gate:
            first: asyncio.Future[None] = loop.create_future()
            _, client = await loop.create_connection(
                lambda: StreamClient(request, sink, first), "127.0.0.1", port
            )
            clients.append(client)
            await asyncio.wait_for(first, 30)

    await asyncio.gather(*(one() for _ in range(count)))
    return clients


def close_all(clients: list[StreamClient]) -> None:
    """Every client leaves at once."""
    for client in clients:
        if client.transport is not None:
            client.transport.close()


def echo_stats(port: int) -> dict[str, int]:
    """The echo backend's counters."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        stats: dict[str, int] = json.loads(response.read())
        return stats


async def wait_streams_closed(echo_port: int, expected_open: int, timeout: float) -> int:
    """Poll until the echo's open SSE streams drop to ``expected_open``; the final count."""
    deadline = time.monotonic() + timeout
    while True:
        open_now = echo_stats(echo_port)["sse_open"]
        if open_now <= expected_open or time.monotonic() > deadline:
            return open_now
        await asyncio.sleep(0.1)


@dataclass
class Row:
    """One line of the results table."""

    streams: int
    rss_per_stream_kb: float
    cpu_us_per_event: float
    floor_cpu_us_per_event: float
    direct_p50_ms: float
    direct_p99_ms: float
    gateway_p50_ms: float
    gateway_p99_ms: float
    leaked: int


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure_active(port: int, count: int, interval_ms: int, seconds: float) -> list[float]:
    """Delivery latencies over ``seconds`` of N active streams (after a 1 s settling time)."""
    sink: list[float] = []
    clients = await open_streams(port, count, interval_ms, sink)
    await asyncio.sleep(1.0)
    for client in clients:
        client.recording = True
    await asyncio.sleep(seconds)
    for client in clients:
        client.recording = False
    close_all(clients)
    return sink


async def measure_proxy(
    port: int, pids: list[int], count: int, interval_ms: int, seconds: float
) -> tuple[list[float], float]:
    """Delivery latencies of N active streams through a proxy, and its CPU µs per event."""
    sink: list[float] = []
    clients = await open_streams(port, count, interval_ms, sink)
    await asyncio.sleep(1.0)
    events_before = sum(c.events for c in clients)
    cpu_start = cpu_seconds(pids)
    for client in clients:
        client.recording = True
    await asyncio.sleep(seconds)
    for client in clients:
        client.recording = False
    cpu_end = cpu_seconds(pids)
    events = sum(c.events for c in clients) - events_before
    close_all(clients)
    return sink, (cpu_end - cpu_start) / max(events, 1) * 1e6


async def run_size(
    echo: Service, gateway: Service, floor: Service, count: int, interval_ms: int, seconds: float
) -> Row:
    """Idle, direct-active and gateway-active phases for one stream count."""
    pids = gateway.refresh_pids()
    baseline_open = echo_stats(echo.port)["sse_open"]

    rss_before = rss_bytes(pids)
    idle = await open_streams(gateway.port, count, 3_600_000, [])
    await asyncio.sleep(1.0)
    rss_idle = rss_bytes(pids)
    close_all(idle)
    await wait_streams_closed(echo.port, baseline_open, 20)

    direct = await measure_active(echo.port, count, interval_ms, seconds)
    await wait_streams_closed(echo.port, baseline_open, 20)

    sink, cpu_us = await measure_proxy(gateway.port, pids, count, interval_ms, seconds)
    leaked = await wait_streams_closed(echo.port, baseline_open, 20) - baseline_open
    # The floor: the same streams through the least a Python proxy can do (bench.floor_proxy).
    _, floor_cpu_us = await measure_proxy(
        floor.port, floor.refresh_pids(), count, interval_ms, seconds
    )
    await wait_streams_closed(echo.port, baseline_open, 20)
    return Row(
        streams=count,
        rss_per_stream_kb=(rss_idle - rss_before) / count / 1024,
        cpu_us_per_event=cpu_us,
        floor_cpu_us_per_event=floor_cpu_us,
        direct_p50_ms=_percentile(direct, 0.50),
        direct_p99_ms=_percentile(direct, 0.99),
        gateway_p50_ms=_percentile(sink, 0.50),
        gateway_p99_ms=_percentile(sink, 0.99),
        leaked=leaked,
    )


def raise_nofile() -> None:
    """Two descriptors per stream per process: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    """Start echo and gateway, run each size, print the table."""
    parser = argparse.ArgumentParser(description="SSE streams benchmark")
    parser.add_argument("--sizes", default="1000,5000")
    parser.add_argument("--events-per-second", type=int, default=5000, help="total, across streams")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured window per phase")
    args = parser.parse_args(argv)
    raise_nofile()  # inherited by the echo and gateway processes started below
    echo = start_echo()
    gateway = start_gateway(echo.port)
    floor = start_floor(echo.port)
    rows: list[Row] = []
    try:
        for count in (int(s) for s in args.sizes.split(",")):
            interval_ms = max(1, round(count * 1000 / args.events_per_second))
            rows.append(
                uvloop.run(run_size(echo, gateway, floor, count, interval_ms, args.seconds))
            )
    finally:
        floor.stop()
        gateway.stop()
        echo.stop()
    print(
        f"\nSSE through ambient gateway (1 worker); active phases at {args.events_per_second} "
        f"events/s in total, {args.seconds:g}s measured\n"
    )
    header = (
        f"{'streams':>7} {'RSS KB/idle stream':>19} {'CPU us/event':>13} {'floor us/event':>15} "
        f"{'direct p50/p99 ms':>18} "
        f"{'gateway p50/p99 ms':>19} {'added p50/p99 ms':>17} {'leaked upstream':>16}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        added_p50 = row.gateway_p50_ms - row.direct_p50_ms
        added = f"{added_p50:+.2f}/{row.gateway_p99_ms - row.direct_p99_ms:+.2f}"
        print(
            f"{row.streams:7d} {row.rss_per_stream_kb:19.1f} {row.cpu_us_per_event:13.1f} "
            f"{row.floor_cpu_us_per_event:15.1f} "
            f"{row.direct_p50_ms:8.2f}/{row.direct_p99_ms:<9.2f} "
            f"{row.gateway_p50_ms:9.2f}/{row.gateway_p99_ms:<9.2f} {added:>17} {row.leaked:16d}"
        )
    print(
        "\ntargets: <= 10 KB RSS per idle stream, <= 25 us CPU per event, p99 added < 5 ms at "
        "5,000 streams, 0 leaked"
    )


if __name__ == "__main__":
    main()
