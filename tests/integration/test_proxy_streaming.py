"""Streaming: SSE timing, cancel on client disconnect, upstream death, backpressure, WebSocket."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import pytest
import websockets

from gateway.demo.echo import EchoServer
from gateway.proxy.listeners import ListenerManager
from tests.fixtures.proxy import StaticBackend, choice, holder, rule, wait_for


@pytest.fixture
async def gateway(echo: EchoServer, gateway_factory, free_port: int) -> ListenerManager:
    """A gateway routing everything to ``echo``."""
    return await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    )


def _url(gateway: ListenerManager, path: str) -> str:
    return f"http://127.0.0.1:{gateway.ports[0]}{path}"


async def test_sse_events_arrive_as_written(gateway: ListenerManager) -> None:
    arrivals: list[tuple[float, float]] = []
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("GET", _url(gateway, "/sse?events=10&interval_ms=50")) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                arrivals.append((time.time(), json.loads(line[6:])["t"]))
    assert len(arrivals) == 10
    delays = sorted(received - sent for received, sent in arrivals)
    assert delays[len(delays) // 2] < 0.01 and delays[-1] < 0.1, delays
    # Forwarded as written, not batched: arrivals keep the 50 ms rhythm of the upstream.
    gaps = sorted(b[0] - a[0] for a, b in itertools.pairwise(arrivals))
    assert gaps[0] > 0.02 and gaps[len(gaps) // 2] > 0.04, gaps


async def test_client_disconnect_cancels_upstream_stream(
    gateway: ListenerManager, echo: EchoServer
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports[0])
    writer.write(b"GET /sse?events=0&interval_ms=20 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"data: "), 5)
    assert echo.stats.sse_open == 1
    writer.transport.abort()
    left = time.monotonic()
    await wait_for(lambda: echo.stats.sse_open == 0, timeout=2)
    assert time.monotonic() - left < 0.5
    assert echo.stats.sse_closed == 1


async def test_client_disconnect_while_waiting_closes_upstream(
    gateway: ListenerManager, echo: EchoServer
) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports[0])
    writer.write(b"GET /slow?delay_ms=10000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: echo.stats.open_connections == 1)
    writer.close()
    await wait_for(lambda: echo.stats.open_connections == 0, timeout=2)


async def test_many_streams_all_cancelled(gateway: ListenerManager, echo: EchoServer) -> None:
    writers = []
    for _ in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports[0])
        writer.write(b"GET /sse?events=0&interval_ms=50 HTTP/1.1\r\nHost: x\r\n\r\n")
        writers.append((reader, writer))
    for reader, _ in writers:
        await asyncio.wait_for(reader.readuntil(b"data: "), 5)
    assert echo.stats.sse_open == 50
    for _, writer in writers:
        writer.close()
    await wait_for(lambda: echo.stats.sse_open == 0, timeout=3)


async def test_upstream_dying_mid_stream_ends_client_stream(gateway: ListenerManager) -> None:
    events = 0
    async with httpx.AsyncClient(timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream(
                "GET", _url(gateway, "/sse?events=0&interval_ms=10&die_after=3")
            ) as r:
                async for line in r.aiter_lines():
                    events += line.startswith("data: ")
        assert events == 3
        assert (await client.get(_url(gateway, "/next"))).status_code == 200


async def test_backpressure_bounds_gateway_buffer(gateway: ListenerManager) -> None:
    size = 20_000_000
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.ports[0], limit=2**16)
    writer.transport.pause_reading()  # a client that does not read
    writer.write(b"GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
    (conn,) = gateway.connections
    await wait_for(lambda: conn.transport.get_write_buffer_size() > 0)
    await asyncio.sleep(0.3)  # let the upstream push as much as the gateway would take
    assert conn.transport.get_write_buffer_size() < 2_000_000
    writer.transport.resume_reading()
    await reader.readuntil(b"\r\n\r\n")
    assert len(await asyncio.wait_for(reader.readexactly(size), 20)) == size
    writer.close()


async def test_websocket_echo_through_gateway(gateway: ListenerManager, echo: EchoServer) -> None:
    uri = f"ws://127.0.0.1:{gateway.ports[0]}/ws"
    async with websockets.connect(uri) as ws:
        await ws.send("hello")
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
        await ws.send(b"\x00\x01" * 50_000)
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01" * 50_000
        assert echo.stats.ws_open == 1
    await wait_for(lambda: echo.stats.ws_open == 0)


async def test_websocket_to_non_websocket_path(gateway: ListenerManager) -> None:
    uri = f"ws://127.0.0.1:{gateway.ports[0]}/not-ws"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(uri):
            pass


async def test_request_body_backpressure(gateway_factory, free_port: int) -> None:
    """An upstream that reads nothing makes the gateway stop reading the client's body."""
    stalled = asyncio.Event()

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stalled.wait()
        writer.close()

    server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    backend = StaticBackend("stuck", [server.sockets[0].getsockname()[1]])
    gateway = await gateway_factory(holder(free_port, {"/": rule(choice(backend))}))
    size = 50_000_000
    _reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
    writer.write(b"u" * size)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(writer.drain(), 1.0)  # the gateway stopped reading us
    (conn,) = gateway.connections
    attempt = conn.current.attempt if conn.current is not None else None
    assert attempt is not None and attempt.conn is not None
    upstream = attempt.conn.transport
    assert upstream is not None and upstream.get_write_buffer_size() < 5_000_000
    assert conn.current.record.request_bytes < 20_000_000
    writer.transport.abort()
    stalled.set()
    server.close()
