"""Malformed requests, smuggling attempts, oversized heads and broken upstreams."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.demo.echo import EchoServer
from gateway.proxy.downstream import LINGER_BYTES, LINGER_SECONDS
from gateway.proxy.options import ProxyOptions
from tests.fixtures.proxy import StaticBackend, choice, holder, raw_request, rule

CHUNKED = b"Transfer-Encoding: chunked\r\n"
SMUGGLING = {
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
    + CHUNKED
    + b"\r\n0\r\n\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\nHost: x\r\n"
    + CHUNKED
    + b"Content-Length: 4\r\n\r\n0\r\n\r\n",
    "two-cl": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "te-gzip": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
    + b"0\r\n\r\n",
    "te-twice": b"POST / HTTP/1.1\r\nHost: x\r\n" + CHUNKED + CHUNKED + b"\r\n0\r\n\r\n",
    "cl-garbage": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\nab",
    "bad-chunk": b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
    "no-host": b"GET / HTTP/1.1\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "two-identical-hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "bad-url": b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
    "space-in-name": b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n",
    "bare-lf-version": b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    "fragment": b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.fixture
async def port(echo: EchoServer, gateway_factory, free_port: int) -> int:
    """A gateway routing everything to ``echo``, with a 4 KiB header limit."""
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))}),
        ProxyOptions(max_header_bytes=4096),
    )
    return free_port


@pytest.mark.parametrize("name", sorted(SMUGGLING))
async def test_bad_requests_get_400_and_close(port: int, name: str, echo: EchoServer) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as bystander:
        assert (await bystander.get("/before")).status_code == 200
        data, closed = await raw_request(port, SMUGGLING[name])
        assert data.startswith(b"HTTP/1.1 400 "), data
        assert b"connection: close" in data.lower()
        assert closed
        # the other client's keep-alive connection is unaffected
        assert (await bystander.get("/after")).status_code == 200
    assert all(r["path"] in ("/before", "/after") for r in echo.stats.recent)


@pytest.mark.parametrize("second", [b"Host: a", b"host: a", b"Host: b"])
async def test_more_than_one_host_is_refused_by_name(port: int, second: bytes) -> None:
    """RFC 9112 3.2: more than one Host field is a 400, identical copies included."""
    data, closed = await raw_request(port, b"GET / HTTP/1.1\r\nHost: a\r\n" + second + b"\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"more than one Host header" in data
    assert closed


async def test_bad_request_after_good_pipelined_one(port: int) -> None:
    data, closed = await raw_request(
        port, b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n" + SMUGGLING["cl-and-te"]
    )
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 400 " in data and data.index(b"/first") < data.index(b"HTTP/1.1 400")
    assert closed


async def test_oversized_header_431(port: int) -> None:
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n"
    data, closed = await raw_request(port, big)
    assert data.startswith(b"HTTP/1.1 431 ") and closed
    many = (
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(600))
        + b"\r\n"
    )
    data, closed = await raw_request(port, many)
    assert data.startswith(b"HTTP/1.1 431 ") and closed
    long_url = b"GET /" + b"u" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    data, closed = await raw_request(port, long_url)
    assert data.startswith(b"HTTP/1.1 431 ") and closed


async def read_response_then_eof(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One whole response (head, and a body of its Content-Length), then the gateway's EOF."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = await reader.readexactly(length)
    assert await reader.read() == b"", "the connection carried on after the error"
    return head, body


@pytest.mark.parametrize(
    ("name", "start", "status"),
    [
        ("431", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n", b"431"),
        ("400 head", b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n", b"400"),
        ("400 body", b"POST / HTTP/1.1\r\nHost: x\r\n" + CHUNKED + b"\r\nzz\r\n", b"400"),
    ],
)
async def test_an_error_answer_reaches_a_client_that_is_still_sending(
    gateway_factory, echo: EchoServer, free_port: int, name: str, start: bytes, status: bytes
) -> None:
    """The gateway answers while the client still sends (a 64 KiB header block, a body it will
    not take): closing at once would reset the connection and the client would lose the answer.
    With a lingering close it reads the whole answer, then EOF, every time."""
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))}),
        ProxyOptions(max_header_bytes=32 * 1024),
    )
    more = (b"X-More: " + b"m" * 16 * 1024 + b"\r\n") * 16  # 256 KiB the client keeps sending
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    for attempt in range(50):
        assert loop.time() < deadline, f"50 attempts took over 60 s (at {attempt})"
        reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
        try:
            writer.write(start)  # in one go
            writer.write(more)
            await writer.drain()
            head, body = await asyncio.wait_for(read_response_then_eof(reader), 10)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise AssertionError(f"attempt {attempt}: the {name} was lost: {exc!r}") from exc
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 " + status), head
        assert body, head


async def test_lingering_after_an_error_is_bounded_in_bytes(port: int) -> None:
    """A client that goes on sending after its 431 is read and discarded only up to
    LINGER_BYTES, then cut, long before the linger's time bound."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8192 + b"\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 431 ")
    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    with pytest.raises(ConnectionError):
        while sent < 64 * LINGER_BYTES:  # bounded: far past the cap
            writer.write(b"x" * 65536)
            await asyncio.wait_for(writer.drain(), 5)
            sent += 65536
    assert loop.time() - started < LINGER_SECONDS
    assert sent >= LINGER_BYTES
    writer.close()


async def test_never_ending_header_line_is_bounded(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    for _ in range(20):
        writer.write(b"a" * 1024)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 431 ")
    writer.close()


async def test_connect_method_refused(port: int) -> None:
    data, closed = await raw_request(
        port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    )
    assert data.startswith(b"HTTP/1.1 405 ") and closed


async def test_garbage_upstream_response_is_502(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        response = await client.get("/garbage")
        assert response.status_code == 502 and "bad response" in response.text
        assert (await client.get("/fine")).status_code == 200


async def test_upstream_truncating_content_length_closes_client(port: int) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get("/truncate?length=100&send=10")
        assert (await client.get("/fine")).status_code == 200


async def test_unreachable_upstream_is_503(gateway_factory, free_port: int) -> None:
    from tests.fixtures.gateway_process import free_port as another_port

    dead = StaticBackend("dead", [another_port()])
    await gateway_factory(holder(free_port, {"/": rule(choice(dead))}))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as client:
        response = await client.get("/x")
    assert response.status_code == 503 and "connect" in response.text


async def test_stale_pooled_connection_is_redialled(gateway_factory, free_port: int) -> None:
    """An upstream that closes a kept-alive connection instead of answering its next request."""

    async def once_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(once_per_connection, "127.0.0.1", 0)
    backend = StaticBackend("flaky", [server.sockets[0].getsockname()[1]])
    await gateway_factory(holder(free_port, {"/": rule(choice(backend))}))
    async with server, httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as c:
        assert [(await c.get(f"/{i}")).status_code for i in range(4)] == [200] * 4
        assert (await c.post("/body", content=b"x")).status_code == 502  # a body is not re-sent


async def test_absolute_form_target_authority_replaces_host(port: int, echo: EchoServer) -> None:
    data, _closed = await raw_request(
        port,
        b"GET http://other.example/abs?q=1 HTTP/1.1\r\n"
        b"Host: a.example\r\nConnection: close\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 200 "), data
    seen = echo.stats.recent[-1]
    assert seen["path"] == "/abs?q=1"
    assert seen["headers"]["host"] == "other.example"
