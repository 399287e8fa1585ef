"""The header timeout: request heads, and HTTP/2 prefaces, that do not arrive in time are cut;
streaming responses and kept-alive connections are the idle timeout's, not its."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.demo.echo import EchoServer
from gateway.proxy.h2_common import PREFACE
from gateway.proxy.options import ProxyOptions
from tests.fixtures.proxy import StaticBackend, choice, holder, rule

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)

HEADER_TIMEOUT = 0.4
# The sweeper checks four times per timeout: a head is cut between 1 and 1.25 timeouts after it
# began; the upper bound leaves room for a loaded 2-core machine.
CUT_WITHIN = (HEADER_TIMEOUT * 0.9, HEADER_TIMEOUT * 4)


@pytest.fixture
async def port(echo: EchoServer, gateway_factory, free_port: int) -> int:
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))}),
        ProxyOptions(header_timeout=HEADER_TIMEOUT, idle_timeout=60),
    )
    return free_port


async def until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the gateway sends until it closes, and how long that took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            received += chunk
    except ConnectionResetError:
        pass
    return received, loop.time() - started


async def get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str) -> bytes:
    """One keep-alive GET on an open connection: the response head and body."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


async def test_half_a_head_gets_408_while_a_long_stream_and_a_kept_alive_connection_live(
    port: int,
) -> None:
    """Slowloris: a head that stops half-way is answered 408 and closed after about the header
    timeout, while an event stream three times as long on another connection is not cut, and a
    kept-alive connection idle for as long still serves its next request."""
    kept_reader, kept_writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await get(kept_reader, kept_writer, "/first")).startswith(b"HTTP/1.1 200 ")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        async with client.stream("GET", "/sse?events=12&interval_ms=100") as stream:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            data, took = await until_closed(reader)
            writer.close()
            body = b"".join([chunk async for chunk in stream.aiter_bytes()])
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert b"did not arrive in time" in data
        assert CUT_WITHIN[0] <= took <= CUT_WITHIN[1], took
        assert body.count(b"data:") == 12  # 1.2 s, three header timeouts: not cut
    # the kept-alive connection waited as long between requests: the idle timeout's case
    assert (await get(kept_reader, kept_writer, "/second")).startswith(b"HTTP/1.1 200 ")
    kept_writer.close()


async def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data, took = await until_closed(reader)
    writer.close()
    assert data == b""
    assert CUT_WITHIN[0] <= took <= CUT_WITHIN[1], took


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(PREFACE, id="preface without SETTINGS"),
        pytest.param(PREFACE[:10], id="half a preface"),
        # SETTINGS (empty), then HEADERS on stream 1 without END_HEADERS: CONTINUATION never comes
        pytest.param(
            PREFACE
            + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
            + b"\x00\x00\x01\x01\x00\x00\x00\x00\x01\x82",
            id="header block without its CONTINUATION",
        ),
    ],
)
async def test_an_http2_connection_that_does_not_finish_its_opening_is_closed(
    port: int, sent: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    data, took = await until_closed(reader)
    writer.close()
    assert CUT_WITHIN[0] <= took <= CUT_WITHIN[1], took
    if sent.startswith(PREFACE):
        assert b"\x00\x00\x08\x07\x00\x00\x00\x00\x00" in data  # a GOAWAY frame
