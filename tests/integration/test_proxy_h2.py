"""HTTP/2 clients through the gateway's cleartext listener: prior knowledge and ``Upgrade: h2c``.

httpx (``http2=True``) for ordinary use; a raw client on the ``h2`` library where the test must
control frames (upgrade, stream resets, floods, unread streams).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from hyperframe.frame import DataFrame, Frame, GoAwayFrame

from gateway.demo.echo import EchoServer
from gateway.observability.telemetry import build_telemetry
from gateway.proxy.listeners import ListenerManager
from tests.fixtures.gateway_process import free_port as another_free_port
from tests.fixtures.proxy import (
    HeldStreams,
    StaticBackend,
    choice,
    holder,
    rule,
    snapshot,
    wait_for,
)
from tests.fixtures.raw_h2 import RawH2

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)


@pytest.fixture
async def gateway(echo: EchoServer, gateway_factory, free_port: int) -> ListenerManager:
    return await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    )


@pytest.fixture
async def client(gateway: ListenerManager, free_port: int) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        http1=False, http2=True, base_url=f"http://127.0.0.1:{free_port}", timeout=5
    ) as c:
        yield c


async def test_prior_knowledge_multiplexes_requests_on_one_connection(
    client: httpx.AsyncClient, gateway: ListenerManager
) -> None:
    responses = await asyncio.gather(*(client.get(f"/bytes/{i * 100}") for i in range(40)))
    assert [len(r.content) for r in responses] == [i * 100 for i in range(40)]
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert len(gateway.connections) == 1  # all 40 streams on one client connection


async def test_bodies_both_ways(client: httpx.AsyncClient) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the stream's flow-control window
    response = await client.post("/echo", content=payload)
    seen = json.loads(response.content)
    assert response.status_code == 200
    assert seen["body_length"] == len(payload)
    assert seen["headers"]["x-forwarded-for"] == "127.0.0.1"
    big = await client.get("/bytes/3000000")
    assert len(big.content) == 3_000_000


async def test_request_framing_for_http11_upstream(client: httpx.AsyncClient) -> None:
    """END_STREAM on HEADERS: no body upstream; a body of unknown length: chunked upstream."""
    bodiless = json.loads((await client.get("/echo")).content)
    assert "transfer-encoding" not in bodiless["headers"]
    assert "content-length" not in bodiless["headers"]

    async def parts() -> AsyncIterator[bytes]:
        for i in range(5):
            yield b"%d" % i * 1000

    streamed = json.loads((await client.post("/echo", content=parts())).content)
    assert streamed["headers"]["transfer-encoding"] == "chunked"
    assert streamed["body_length"] == 5000


async def test_upgrade_h2c_answers_the_request_on_stream_1(
    gateway: ListenerManager, free_port: int
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    client = RawH2(reader, writer)
    settings = client.conn.initiate_upgrade_connection()
    writer.write(
        b"GET /bytes/10 HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\n\r\n"
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ")
    await client.flush()
    response = await client.until(lambda e: isinstance(e, ResponseReceived))
    assert response.stream_id == 1 and dict(response.headers)[b":status"] == b"200"
    data = await client.until(lambda e: isinstance(e, DataReceived))
    assert data.data == b"x" * 10
    # The upgraded connection takes further requests as HTTP/2 streams.
    sid = client.request("/bytes/5")
    await client.flush()
    later = await client.until(lambda e: isinstance(e, ResponseReceived) and e.stream_id == sid)
    assert dict(later.headers)[b":status"] == b"200"
    client.close()
    assert base64.urlsafe_b64decode(settings + b"=" * (-len(settings) % 4))  # a real SETTINGS


async def test_stream_reset_cancels_the_upstream_stream(
    gateway: ListenerManager, echo: EchoServer, free_port: int
) -> None:
    client = await RawH2.open(free_port)
    sid = client.request("/sse?events=0&interval_ms=20")
    await client.flush()
    await client.until(lambda e: isinstance(e, DataReceived) and e.stream_id == sid)
    assert echo.stats.sse_open == 1
    client.conn.reset_stream(sid, ErrorCodes.CANCEL)
    await client.flush()
    await wait_for(lambda: echo.stats.sse_open == 0, timeout=2)
    # The connection is still good for other streams.
    other = client.request("/bytes/3")
    await client.flush()
    response = await client.until(
        lambda e: isinstance(e, ResponseReceived) and e.stream_id == other
    )
    assert dict(response.headers)[b":status"] == b"200"
    client.close()


async def test_unread_stream_does_not_stall_the_connection(
    gateway: ListenerManager, free_port: int
) -> None:
    """A stream whose client never opens its window stops at the window; another stream on the
    same connection still gets its whole response."""
    client = await RawH2.open(free_port)
    stuck = client.request("/bytes/2000000")  # far more than the 65,535-byte default window
    await client.flush()
    flowing = client.request("/bytes/300000")
    await client.flush()
    received = 0
    while True:
        event = await client.until(lambda e: isinstance(e, (DataReceived, StreamEnded)))
        if isinstance(event, DataReceived) and event.stream_id == flowing:
            received += len(event.data)
            client.conn.acknowledge_received_data(event.flow_controlled_length, flowing)
            await client.flush()
        elif isinstance(event, DataReceived):
            # Buffered by the client: the connection window reopens, the stream's does not.
            client.conn.increment_flow_control_window(event.flow_controlled_length)
            await client.flush()
        if isinstance(event, StreamEnded) and event.stream_id == flowing:
            break
        assert not (isinstance(event, StreamEnded) and event.stream_id == stuck)
    assert received == 300_000
    client.close()


async def test_rapid_reset_flood_gets_goaway_and_spares_others(
    gateway: ListenerManager, free_port: int, client: httpx.AsyncClient
) -> None:
    """CVE-2023-44487: streams opened and reset at once. The flooding connection is told to
    calm down (GOAWAY ENHANCE_YOUR_CALM); a stream on another connection keeps streaming."""
    async with client.stream("GET", "/sse?events=30&interval_ms=20") as well_behaved:
        flood = await RawH2.open(free_port)
        for _ in range(600):
            sid = flood.request("/bytes/10")
            flood.conn.reset_stream(sid, ErrorCodes.CANCEL)
        await flood.flush()
        goaway = await flood.until(lambda e: isinstance(e, ConnectionTerminated))
        assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        flood.close()
        body = b"".join([chunk async for chunk in well_behaved.aiter_bytes()])
    assert body.count(b"data:") == 30


async def test_flood_is_counted_as_a_refused_connection(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    """The flooding connection shows in ``ambient_gateway_refused_connections{reason="h2_flood"}``
    once it is closed, and the listener's active connections are back at 0."""
    telemetry = build_telemetry()
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))}),
        telemetry=telemetry,
    )
    flood = await RawH2.open(free_port)
    for _ in range(600):
        flood.conn.reset_stream(flood.request("/bytes/10"), ErrorCodes.CANCEL)
    await flood.flush()
    await flood.until(lambda e: isinstance(e, ConnectionTerminated))
    flood.close()
    metrics = telemetry.metrics
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while metrics.export_state()["connections_closed"] != [[free_port, 1]]:
        assert loop.time() < deadline, metrics.export_state()
        await asyncio.sleep(0.01)
    assert metrics.export_state()["refused"] == {"h2_flood": 1}
    assert metrics.export_state()["connections_opened"] == [[free_port, 1]]


async def test_shutdown_sends_goaway_and_finishes_streams(
    gateway: ListenerManager, free_port: int
) -> None:
    """GOAWAY(NO_ERROR) first, then the stream in flight runs to its end. Read as raw frames:
    the h2 library refuses frames after a GOAWAY (python-hyper/h2#1199)."""
    client = await RawH2.open(free_port)
    sid = client.request("/sse?events=5&interval_ms=30")
    await client.flush()
    await client.until(lambda e: isinstance(e, DataReceived) and e.stream_id == sid)
    closing = asyncio.ensure_future(gateway.close(grace=5))
    buffer, goaway_code, ended = b"", None, False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while not ended:
        data = await asyncio.wait_for(client.reader.read(65536), deadline - loop.time())
        assert data, "closed before the stream ended"
        buffer += data
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            if isinstance(frame, GoAwayFrame):
                goaway_code = frame.error_code
            elif isinstance(frame, DataFrame) and frame.stream_id == sid:
                assert goaway_code == ErrorCodes.NO_ERROR  # the GOAWAY came before the end
                ended = "END_STREAM" in frame.flags
    await closing
    client.close()


async def test_stream_reset_by_gateway_when_upstream_dies(
    gateway: ListenerManager, free_port: int
) -> None:
    client = await RawH2.open(free_port)
    sid = client.request("/sse?events=10&interval_ms=10&die_after=2")
    await client.flush()
    reset = await client.until(lambda e: isinstance(e, StreamReset) and e.stream_id == sid)
    assert reset.error_code == ErrorCodes.CANCEL
    client.close()


async def test_listener_removed_by_reload_drains_its_connections(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    """A reload that drops the listener's port: its HTTP/2 clients get GOAWAY(NO_ERROR)."""
    routes = {"/": rule(choice(StaticBackend("echo", [echo.port])))}
    config = holder(free_port, routes)
    manager = await gateway_factory(config)
    client = await RawH2.open(free_port)
    sid = client.request("/bytes/1")
    await client.flush()
    await client.until(lambda e: isinstance(e, StreamEnded) and e.stream_id == sid)
    config.current = snapshot(another_free_port(), routes, 2)
    await manager.sync()
    goaway = await client.until(lambda e: isinstance(e, ConnectionTerminated))
    assert goaway.error_code == ErrorCodes.NO_ERROR
    client.close()


@pytest.fixture
async def held() -> AsyncIterator[HeldStreams]:
    upstream = await HeldStreams().start()
    yield upstream
    upstream.release()
    await upstream.close()


async def test_streams_past_the_limit_are_refused_and_the_accepted_ones_complete(
    held: HeldStreams, gateway_factory, free_port: int
) -> None:
    """200 streams on one connection (128 allowed): 72 are refused with REFUSED_STREAM, and the
    client retries them three times (refused streams are safe to retry): our refusals are not
    the client's resets, so the 128 accepted streams run to their end with no GOAWAY."""
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("held", [held.port])))})
    )
    client = await RawH2.open(free_port, greedy=True)
    opened = [client.request(f"/s{i}") for i in range(200)]
    await client.flush()

    def refused() -> list[int]:
        return [
            e.stream_id
            for e in client.events
            if isinstance(e, StreamReset) and e.error_code == ErrorCodes.REFUSED_STREAM
        ]

    def answered() -> set[int]:
        return {e.stream_id for e in client.events if isinstance(e, ResponseReceived)}

    await client.collect(lambda: len(refused()) + len(answered()) >= 200)
    assert len(answered()) == 128 and len(refused()) == 72
    assert all(dict(e.headers)[b":status"] == b"200" for e in client.of(ResponseReceived))
    for round_ in range(1, 4):
        for _ in range(72):
            client.request("/retry")
        await client.flush()
        await client.collect(lambda r=round_: len(refused()) >= 72 * (r + 1))
    await wait_for(lambda: held.held == 128)
    held.release()
    accepted = sorted(answered())
    await client.collect(lambda: {e.stream_id for e in client.of(StreamEnded)} >= set(accepted))
    assert not client.of(ConnectionTerminated), "the client got a GOAWAY"
    for sid in accepted:
        body = b"".join(e.data for e in client.of(DataReceived) if e.stream_id == sid)
        assert body == b"data: start\n\ndata: end\n\n", (sid, body)
    assert set(accepted) | set(refused()[:72]) == set(opened)
    client.close()


async def test_a_client_that_keeps_opening_past_the_limit_gets_goaway(
    held: HeldStreams, gateway_factory, free_port: int
) -> None:
    """The refusals have their own budget: thousands of streams past the limit in a burst are a
    flood (GOAWAY ENHANCE_YOUR_CALM), as rapid resets are."""
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("held", [held.port])))})
    )
    client = await RawH2.open(free_port, greedy=True)
    for i in range(128):
        client.request(f"/s{i}")
    await client.flush()
    await wait_for(lambda: held.held == 128)
    for _ in range(3000):
        client.request("/more")
    await client.flush()
    with contextlib.suppress(ConnectionError):
        await client.collect(lambda: bool(client.of(ConnectionTerminated)))
    goaway = client.of(ConnectionTerminated)
    assert goaway and goaway[0].error_code == ErrorCodes.ENHANCE_YOUR_CALM
    client.close()
